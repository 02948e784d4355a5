"""Linear (PE x SIMD folded, double-buffered) against intops.linear, bit for bit, token after
token and window after window; cycle formula exact for many foldings."""
import numpy as np
import pytest

from hw.amaranth_adapter import discard
from model import intops
from model.intops import QType
from model.synthetic import random_intmodel, random_inputs
from hw.linear import Linear
from sim.streams import run_stream_block

SMALL = dict(features=3, window=3, d_model=4, heads=2, layers=1, ffn=8,
             norm="batchnorm", activation="relu")
DEFAULT = dict(features=7, window=24, d_model=16, heads=2, layers=1, ffn=64,
               norm="batchnorm", activation="relu")
SOURCE = {"proj": "input", "l0.q": "embed", "l0.attn_out": "l0.context",
          "l0.ffn_hidden": "l0.norm1", "l0.ffn_out": "l0.ffn_hidden", "pred": "pooled"}


def _run(dut, x, n, stall=0.0, seed=0):
    windows = np.shape(x)[0] if np.ndim(x) == 3 else 1      # (windows, tokens, features)
    got, cycles = run_stream_block(dut, {"i": np.asarray(x).reshape(-1)}, {"o": n},
                                   stall_in=stall, stall_out=stall, seed=seed, windows=windows)
    return np.array(got["o"]), cycles


@pytest.mark.parametrize("name,pe,simd,bits,seed,wst,bst", [
    ("proj", 1, 1, 8, 0, "bram", "registers"),
    ("proj", 2, 3, 6, 1, "lutram", "lutram"),
    ("l0.q", 4, 4, 4, 2, "registers", "bram"),
    ("l0.attn_out", 2, 1, 2, 3, "bram", "lutram"),
    ("l0.ffn_hidden", 4, 2, 8, 4, "lutram", "registers"),       # ReLU
    ("l0.ffn_hidden", 8, 1, 2, 5, "bram", "bram"),
    ("l0.ffn_out", 1, 8, 6, 6, "registers", "registers"),
    ("l0.ffn_out", 2, 4, 4, 7, "bram", "lutram"),
    ("pred", 1, 2, 8, 8, "bram", "registers"),
])
def test_linear_from_model_with_stalls(name, pe, simd, bits, seed, wst, bst):
    model = random_intmodel(SMALL, bits=bits, seed=seed)
    n_win = 2 if name != "pred" else 3
    v = model.forward(random_inputs(model, n_win, seed=seed + 10))
    dut = Linear.from_op(model, name, pe=pe, simd=simd, weight_storage=wst, buffer_storage=bst)
    got, _ = _run(dut, v[SOURCE[name]], v[name].numel(), stall=0.3, seed=seed)
    assert (got == v[name].reshape(-1)).all()


@pytest.mark.parametrize("name", ["proj", "l0.q", "l0.ffn_hidden", "l0.ffn_out", "pred"])
def test_linear_cycle_formula_sweep(name):
    """Every legal folding of the small model: exact cycles and exact values, one window."""
    model = random_intmodel(SMALL, bits=8, seed=11)
    v = model.forward(random_inputs(model, 1, seed=12))
    x, y = v[SOURCE[name]][0], v[name][0]
    n_out, n_in = model.op(name).arrays["weight"].shape
    for pe in [d for d in range(1, n_out + 1) if n_out % d == 0]:
        for simd in [d for d in range(1, n_in + 1) if n_in % d == 0]:
            dut = Linear.from_op(model, name, pe=pe, simd=simd)
            got, cycles = _run(dut, x, y.numel())
            assert (got == y.reshape(-1)).all(), (pe, simd)
            assert cycles == dut.cycles(), (pe, simd)


@pytest.mark.parametrize("name,pe,simd,expected", [
    ("l0.q", 4, 4, 412),             # 16 -> 16, L = 24
    ("l0.ffn_out", 16, 16, 1564),    # 64 -> 16: bounded by the element-serial input (64 / token)
    ("proj", 16, 7, 400),            # 7 -> 16: bounded by the element-serial output
])
def test_linear_default_dims(name, pe, simd, expected):
    model = random_intmodel(DEFAULT, bits=8, seed=3)
    v = model.forward(random_inputs(model, 1, seed=4))
    dut = Linear.from_op(model, name, pe=pe, simd=simd)
    got, cycles = _run(dut, v[SOURCE[name]][0], v[name][0].numel())
    assert (got == v[name][0].reshape(-1)).all()
    assert cycles == dut.cycles() == expected


def test_linear_published_budget():
    """pe = simd = 1 beats the published one-MAC design's Out*(In+5) cycles per token."""
    for n_in, n_out in [(7, 16), (16, 16), (16, 64), (64, 16)]:
        w = np.zeros((n_out, n_in), np.int64)
        dut = Linear(w, QType(8, True), None, 1, 0, QType(8, True), QType(8, True), tokens=24)
        discard(dut)
        assert dut.cycles() < 24 * n_out * (n_in + 5)


@pytest.mark.parametrize("xt,wt,ot,relu", [
    (QType(8, False, 255), QType(8, True), QType(8, False, 0), False),     # zero point at the rail
    (QType(8, False, 0), QType(8, False, 255), QType(8, True), True),
    (QType(2, True), QType(2, False, 3), QType(2, False, 1), True),
    (QType(4, False, 15), QType(6, True), QType(4, True), False),
])
@pytest.mark.parametrize("pe,simd,mul,rq", [(1, 1, "dsp", "dsp"), (2, 4, "dsp", "lut"),
                                           (4, 2, "dsp_packed", "lut"), (4, 1, "dsp_packed", "lut"),
                                           (2, 2, "lut", "lut")])
def test_linear_extremes(xt, wt, ot, relu, pe, simd, mul, rq):
    """Largest accumulations: inputs and weights at their rails, biases at their bound, the
    largest multiplier magnitudes, ReLU."""
    n_in, n_out, tokens = 8, 4, 3
    far_w = wt.qmin if wt.zero_point - wt.qmin >= wt.qmax - wt.zero_point else wt.qmax
    w = np.full((n_out, n_in), far_w)
    w[1] = wt.qmax if far_w == wt.qmin else wt.qmin
    w[3, ::2] = wt.qmin
    lim = intops.bias_bound(n_in, xt, wt)
    bias = np.array([lim, -lim, lim // 3, -1])
    x = np.stack([np.full(n_in, xt.qmin), np.full(n_in, xt.qmax),
                  np.resize([xt.qmin, xt.qmax], n_in)])
    for mult, shift in [((1 << 16) - 1, 24), (-(1 << 16) + 1, 30), (1, 0)]:
        dut = Linear(w, wt, bias, mult, shift, xt, ot, relu, tokens=tokens, pe=pe, simd=simd,
                     weight_storage="registers", buffer_storage="lutram", mul=mul,
                     requant_mul=rq)
        want = intops.linear(x, xt, w, wt, bias, mult, shift, ot, relu)
        got, _ = _run(dut, x, want.numel(), stall=0.3, seed=mult & 7)
        assert (got == want.reshape(-1)).all()


def test_bad_foldings():
    w = np.zeros((4, 6), np.int64)
    t = QType(8, True)
    with pytest.raises(ValueError, match="pe=3"):
        Linear(w, t, None, 1, 0, t, t, tokens=1, pe=3)
    with pytest.raises(ValueError, match="simd=4"):
        Linear(w, t, None, 1, 0, t, t, tokens=1, simd=4)
    with pytest.raises(ValueError, match="bias"):
        Linear(w, t, [1 << 30] * 4, 1, 0, t, t, tokens=1)


def _distinct_qkv(model):
    """Give K and V their own requantisation (synthetic models share Q's): a fused linear must
    apply each segment's multiplier and shift."""
    k, v = model.op("l0.k").params, model.op("l0.v").params
    k["multiplier"] = k["multiplier"] * 3 // 4
    v["multiplier"], v["shift"] = v["multiplier"] * 3 // 2, v["shift"] + 1
    return model


@pytest.mark.parametrize("pe,simd,bits,seed,rq,bst", [
    (1, 1, 4, 0, "dsp", "bram"),
    (3, 2, 8, 1, "lut", "registers"),
    (2, 4, 6, 2, "lut", "lutram"),
    (1, 2, 2, 3, "dsp", "registers"),
])
def test_fused_qkv_linear(pe, simd, bits, seed, rq, bst):
    """Q, K and V in one Linear: each token gives q, k and v one after the other, each bit-exact
    with its own operator (own weight type, multiplier and shift), at the cycle formula."""
    model = _distinct_qkv(random_intmodel(SMALL, bits=bits, seed=seed))
    v = model.forward(random_inputs(model, 2, seed=seed + 10))
    names = ["l0.q", "l0.k", "l0.v"]
    want = np.concatenate([v[n] for n in names], axis=-1)          # (windows, L, 3d)

    def fused():        # a fresh component per simulation
        return Linear.fused_from_ops(model, names, pe=pe, simd=simd, requant_mul=rq,
                                     buffer_storage=bst)
    dut = fused()
    assert dut.n_out == 3 * model.config["d_model"]
    got, _ = _run(dut, v["embed"], want.size, stall=0.3, seed=seed)
    assert (got == want.reshape(-1)).all()
    dut = fused()
    got, cycles = _run(dut, v["embed"][0], want[0].size)
    assert (got == want[0].reshape(-1)).all()
    assert cycles == dut.cycles() == dut.output_times(list(range(1, v["embed"][0].numel() + 1)))[-1]


def test_fused_rejects_unfusable_operators():
    model = random_intmodel(SMALL, bits=8, seed=0)
    with pytest.raises(ValueError, match="share one input"):
        Linear.fused_from_ops(model, ["l0.q", "l0.ffn_out"])
