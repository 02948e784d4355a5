"""hw.layernorm.LayerNorm against intops.layernorm: synthetic models, extremes, stalls, cycles."""
import numpy as np
import pytest

from model import intops
from model.intops import QType
from model.synthetic import random_inputs, random_intmodel
from hw.layernorm import Isqrt, LayerNorm
from sim.streams import check_against_reference


def config(L=4, d=4):
    return dict(features=3, window=L, d_model=d, heads=1, layers=1, ffn=8,
                norm="layernorm", activation="relu")




@pytest.mark.parametrize("bits", [2, 4, 6, 8])
@pytest.mark.parametrize("name", ["l0.norm1", "l0.norm2"])
def test_synthetic_models_two_windows_with_stalls(bits, name):
    model = random_intmodel(config(), bits=bits, seed=bits)
    v = model.forward(random_inputs(model, 2, seed=bits + 1))
    dut = LayerNorm.from_op(model, name, sqrt_bits=1 + bits % 2, div_bits=1 + bits % 3,
                            weight_storage=["registers", "bram", "lutram"][bits % 3])
    check_against_reference(dut, v[name.replace("norm", "res")], stall=0.3, seed=bits, windows=2)


@pytest.mark.parametrize("sqrt_bits,div_bits,buffer_storage", [(2, 3, "lutram"), (1, 2, "bram"),
                                                              (3, 4, "registers")])
def test_default_dims_cycles(sqrt_bits, div_bits, buffer_storage):
    model = random_intmodel(config(L=24, d=16), bits=8, seed=3)
    v = model.forward(random_inputs(model, 1, seed=3))
    dut = LayerNorm.from_op(model, "l0.norm1", sqrt_bits=sqrt_bits, div_bits=div_bits,
                            buffer_storage=buffer_storage)
    cycles = check_against_reference(dut, v["l0.res1"], exact_cycles=True)
    dq, dd = dut.sqrt.iterations, dut.recip.iterations
    if max(dq, dd) + 1 <= 16:
        assert cycles == (dut.tokens + 1) * 16 + dq + dd + 9


@pytest.mark.parametrize("channels,tokens,banks", [(1, 4, 4), (2, 5, 2), (3, 3, 3)])
def test_short_tokens_cycle_recurrence(channels, tokens, banks):
    xt = QType(6, False, 20)
    rng = np.random.default_rng(channels)
    nb, rb = intops.layernorm_precision(channels, xt, 6)
    dut = LayerNorm(xt, rng.integers(-3000, 3000, channels), rng.integers(-9000, 9000, channels),
                    10, nb, rb, QType(6, True), channels=channels, tokens=tokens, banks=banks)
    x = rng.integers(xt.qmin, xt.qmax + 1, channels * tokens)
    check_against_reference(dut, x, exact_cycles=True)
    check_against_reference(dut, np.concatenate([x, x[::-1]]), stall=0.3, seed=2, windows=2)


@pytest.mark.parametrize("bits,signed,zp", [(2, True, 0), (2, False, 3), (8, False, 0),
                                            (8, False, 255), (8, True, 0), (5, False, 17)])
@pytest.mark.parametrize("mul", ["dsp", "lut"])
def test_extremes(bits, signed, zp, mul):
    """Constant tokens (sd clamps to 1), rails, one outlier, alternating rails; large gains."""
    xt = QType(bits, signed, zp)
    out = QType(bits, not signed or bits % 2 == 0, 0) if signed else QType(bits, False, (1 << bits) // 3)
    n = 6
    nb, rb = intops.layernorm_precision(n, xt, bits)
    rows = [np.full(n, xt.qmin), np.full(n, xt.qmax), np.full(n, xt.zero_point),
            np.where(np.arange(n) % 2, xt.qmax, xt.qmin), np.r_[xt.qmax, np.full(n - 1, xt.qmin)],
            np.r_[np.full(n - 1, xt.qmax), xt.qmin]]
    big = (1 << 15) - 1
    scales = [big, -big, 1, 0, big // 3, -7]
    offsets = [0, big << 6, -(big << 6), 5, -5, 1 << 12]
    dut = LayerNorm(xt, scales, offsets, 8, nb, rb, out, channels=n, tokens=len(rows), div_bits=2,
                    mul=mul)
    check_against_reference(dut, np.concatenate(rows), stall=0.3, seed=bits)


def test_isqrt_exhaustive_small():
    from amaranth.sim import Simulator
    dut = Isqrt(300, bits_per_cycle=2)
    results = {}

    async def bench(ctx):
        for v in range(0, 301, 7):
            ctx.set(dut.start, 1)
            ctx.set(dut.value, v)
            await ctx.tick()
            ctx.set(dut.start, 0)
            while not ctx.get(dut.last):
                await ctx.tick()
            results[v] = ctx.get(dut.result)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert results == {v: int(intops.isqrt(v)) for v in range(0, 301, 7)}


def test_bad_parameters():
    xt = QType(4, True)
    with pytest.raises(ValueError):
        LayerNorm(xt, [1, 2], [0, 0], 4, 6, 20, QType(4, True), channels=3, tokens=2)
    with pytest.raises(ValueError):
        LayerNorm(xt, [1, 2], [0, 0], 4, 6, 7, QType(4, True), channels=2, tokens=2)
