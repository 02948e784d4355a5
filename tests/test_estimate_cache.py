"""The estimator's per-block cache (flows/estimate.py): along a design-space walk the cached
estimate equals the uncached one exactly, and a design that differs from an earlier one in
one knob or one layer elaborates only the blocks that changed."""
import gc

import numpy as np
import pytest
from amaranth import Elaboratable, Module, Signal, signed, unsigned

from flows import calibration
from flows import estimate as E
from flows.deployability import _minimal
from flows.search import SearchSpace
from hw.amaranth_adapter import discard
from hw.common import Storage
from hw.plumbing import Fifo, Fork
from hw.presets import preset
from model.synthetic import random_intmodel

SHAPE = dict(calibration.SMALL, layers=2)


def _same(a, b) -> bool:
    return (a.device, a.used, a.per_block, a.detail) == (b.device, b.used, b.per_block, b.detail)


def _blocks_of(param: str, layers: int) -> set:
    """Top-level block names a search parameter ``hw.<...>`` changes."""
    parts = param.split(".")
    if parts[1] == "fifo_storage":
        return {f"l{i}_res{r}_fifo" for i in range(layers) for r in (1, 2)}
    if parts[1] in ("proj", "pred"):
        return {parts[1]}
    layer, group = parts[1], parts[2]
    if group in ("qkv", "attn_out", "attention"):
        return {f"{layer}_res1_body0"}
    return {f"{layer}_res2_body0" if group == "ffn_in" else f"{layer}_res2_body1"}


@pytest.mark.parametrize("device, stride", [pytest.param("xc7s15", 1, marks=pytest.mark.slow),
                                            ("ice40up5k", 3)])
def test_cached_estimates_equal_uncached_along_a_coordinate_descent(device, stride):
    """deployability's coordinate descent (every change kept): each design differs from the
    previous one in one knob or one group's widths; the cached estimate is the uncached one,
    and a knob change elaborates at most the blocks of that knob. The knobs of the second
    layer, the first layer's attention, proj, pred, the FIFOs, then three width groups (on
    the iCE40 every third of these steps)."""
    E.clear_cache()
    space = SearchSpace(SHAPE, device)
    params = _minimal(space, space.anchor(8))
    keys = [k for k in space.searched if k.startswith("hw.")
            and k.split(".")[-1] not in ("pe", "simd", "qk_lanes", "pv_lanes")
            and not (k.startswith("hw.l0.") and not k.startswith("hw.l0.attention"))]
    keys += ["bits.l1.ffn_out.out", "bits.pred.weight", "bits.l1.residual"]
    steps = [(None, None)] + [(k, next(v for v in space.choices[k] if v != params[k]))
                              for k in keys[::stride]]
    models = {}
    checked = 0
    for key, value in steps:
        trial = params if key is None else {**params, key: value}
        if key is not None and value == params[key]:
            continue
        cand = space.candidate(trial)
        widths = tuple(sorted(cand.bits.items()))
        if widths not in models:
            models[widths] = random_intmodel(space.shape, bits=cand.bits, seed=0)
        model = models[widths]
        before = E.cache_info()
        try:
            cached = E.estimate(model, cand.hw, device)
        except ValueError:                   # a knob the block rejects: rejected uncached too
            with pytest.raises(ValueError):
                E.estimate(model, cand.hw, device, cache=False)
            continue
        after = E.cache_info()
        assert _same(cached, E.estimate(model, cand.hw, device, cache=False)), (key, value)
        elaborated = set(after["last_elaborated"])
        assert after["misses"] + after["uncached"] - before["misses"] - before["uncached"] \
            == len(elaborated)
        if key is not None and key.startswith("hw.") and cand.dominant_bits == 8:
            assert elaborated <= _blocks_of(key, SHAPE["layers"]), (key, value, elaborated)
        assert after["uncached"] == 0
        params = trial
        checked += 1
    assert checked > 24 // stride
    gc.collect()                             # no "created but never used" for skipped blocks


def test_a_change_elaborates_only_the_changed_blocks():
    E.clear_cache()
    hw = preset("xc7s15", 8)
    model = random_intmodel(SHAPE, bits=8, seed=0)
    first = E.estimate(model, hw)
    info = E.cache_info()
    names = list(first.per_block)
    # identical blocks (the forks and FIFOs of one shape) are elaborated once
    assert info["misses"] == len(info["last_elaborated"]) < len(names)
    assert info["hits"] == len(names) - info["misses"]

    def step(model, hw, expect):
        before = E.cache_info()["misses"]
        est = E.estimate(model, hw)
        assert set(E.cache_info()["last_elaborated"]) == expect
        assert E.cache_info()["misses"] - before == len(expect)
        assert _same(est, E.estimate(model, hw, cache=False))
        return est

    # the same design again: nothing elaborated
    assert _same(step(model, hw, set()), first)
    # one linear's knob: that block only
    step(model, {**hw, "blocks": {**hw["blocks"], "l1.ffn_hidden": {"pe": 4}}}, {"l1_res2_body0"})
    # one attention knob
    hw_att = {**hw, "blocks": {**hw["blocks"], "l0.attention": {"buffer_storage": "registers"}}}
    step(model, hw_att, {"l0_res1_body0"})
    # the residual FIFOs' storage: the four FIFOs have one shape, one is elaborated
    fifo = step(model, {**hw, "fifo_storage": "registers"}, {"l0_res1_fifo"})
    assert fifo.per_block["l1_res2_fifo"] == fifo.per_block["l0_res1_fifo"]
    # back to the first design: all cached
    step(model, hw, set())
    # one layer's widths (the second layer's FFN): the blocks before it are reused, the
    # second layer's attention too (its key is its parts, not the whole model)
    bits = {"default": 8, "l1.ffn_hidden": 6, "l1.ffn_hidden.weight": 6}
    narrow = random_intmodel(SHAPE, bits=bits, seed=0)
    E.estimate(narrow, hw)
    elaborated = set(E.cache_info()["last_elaborated"])
    assert "l1_res2_body0" in elaborated
    assert not elaborated & {"proj", "embed", "l0_res1_body0", "l0_res2_body0", "l0_res2_body1",
                             "l1_res1_body0", "l1_res1_fork", "l1_res2_fork"}
    assert _same(E.estimate(narrow, hw), E.estimate(narrow, hw, cache=False))
    gc.collect()


class _Str(str):
    """A type the fingerprint does not know."""


def test_blocks_that_cannot_be_keyed_are_elaborated_every_time():
    E.clear_cache()
    model = random_intmodel(calibration.SMALL, bits=8, seed=1)
    hw = {**preset("xc7s15", 8), "fifo_storage": _Str("lutram")}
    for _ in range(2):
        est = E.estimate(model, hw)
        assert {"l0_res1_fifo", "l0_res2_fifo"} <= set(E.cache_info()["last_elaborated"])
        assert _same(est, E.estimate(model, hw, cache=False))
    assert E.cache_info()["uncached"] == 4
    gc.collect()


class _TopWithRegister(Elaboratable):
    """A top with logic of its own (a register): not a top of blocks and wiring only."""

    def __init__(self):
        self.fifo = Fifo(signed(8), 16, "lutram")

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = self.fifo
        r = Signal(8)
        m.d.sync += r.eq(self.fifo.o.payload)
        return m


def test_a_top_with_logic_of_its_own_is_walked_whole():
    E.clear_cache()
    cached = E.estimate_design(_TopWithRegister(), "xc7s15")
    assert E.cache_info()["last_elaborated"] == ("*",)
    assert _same(cached, E.estimate_design(_TopWithRegister(), "xc7s15", cache=False))
    assert "fifo" in cached.per_block


def test_fingerprint_tells_types_and_contents_apart():
    fp = E.fingerprint
    values = [1, 1.0, True, "1", (1,), [1], {1: 1}, None, np.int64(1), np.array([1]),
              np.array([1], np.int32), np.array([[1]]), signed(1), unsigned(1), Storage.BRAM,
              "bram", Fork(signed(8), 2), Fork(signed(8), 3), Fork(unsigned(8), 2),
              Fifo(signed(8), 4, "bram"), Fifo(signed(8), 4, Storage.BRAM)]
    digests = [fp(v) for v in values]
    assert None not in digests and len(set(digests)) == len(values)
    again = [Fork(signed(8), 2), Fork(signed(8), 2)]
    assert fp(again[0]) == fp(again[1]) == digests[16]
    assert fp(np.arange(6).reshape(2, 3)) == fp(np.arange(6).reshape(2, 3).copy())
    m = random_intmodel(calibration.SMALL, bits=8, seed=0)
    assert fp(m) == fp(random_intmodel(calibration.SMALL, bits=8, seed=0))
    assert fp(m) != fp(random_intmodel(calibration.SMALL, bits=8, seed=1))
    assert fp(object()) is None and fp([1, object()]) is None
    assert fp(_Str("x")) is None
    loop = []
    loop.append(loop)
    assert fp(loop) is None
    discard(values + again)                  # never elaborated


def test_cache_is_bounded(monkeypatch):
    E.clear_cache()
    monkeypatch.setattr(E, "CACHE_SIZE", 3)
    model = random_intmodel(calibration.SMALL, bits=8, seed=0)
    E.estimate(model, preset("xc7s15", 8))
    assert E.cache_info()["size"] == 3
    E.clear_cache()
    assert E.cache_info()["size"] == 0 and E.cache_info()["misses"] == 0
