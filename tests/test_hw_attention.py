"""hw.attention: AttentionCore against the IntModel scores/softmax/context chain, and the
composed Attention (projections + core + output projection) against ``l{i}.attn_out``."""
import numpy as np
import pytest

from model import intops
from model.intops import QType
from model.synthetic import random_inputs, random_intmodel
from hw.attention import Attention, AttentionCore
from sim.streams import run_stream_block


def config(L=5, d=4, heads=1):
    return dict(features=3, window=L, d_model=d, heads=heads, layers=1, ffn=8,
                norm="layernorm", activation="relu")


def run_core(dut, q, k, v, ref, *, stall=0.0, seed=0, exact_cycles=False):
    windows = np.shape(q)[0] if np.ndim(q) == 3 else 1      # (windows, tokens, d_model)
    got, cycles = run_stream_block(dut, {"q": np.ravel(q), "k": np.ravel(k), "v": np.ravel(v)},
                                   {"o": np.asarray(ref).size}, stall_in=stall, stall_out=stall, seed=seed,
                                   windows=windows)
    np.testing.assert_array_equal(np.array(got["o"]), np.ravel(ref))
    if exact_cycles:
        assert cycles == dut.cycles()
    return cycles


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
@pytest.mark.parametrize("heads", [1, 2])
def test_core_synthetic_two_windows_with_stalls(bits, heads):
    model = random_intmodel(config(heads=heads), bits=bits, seed=10 * bits + heads)
    v = model.forward(random_inputs(model, 2, seed=bits))
    dh = 4 // heads
    dut = AttentionCore.from_op(model, "l0.context", qk_lanes=[1, dh][bits % 2],
                                pv_lanes=[dh, 1][bits // 4 % 2], div_bits=2,
                                buffer_storage=["lutram", "bram", "registers"][bits % 3],
                                qk_mul=["dsp", "lut"][heads - 1],
                                pv_mul=["dsp_packed", "lut", "dsp", "dsp_packed"][bits // 2 - 1],
                                softmax_mul="lut" if bits == 4 else "dsp",
                                requant_mul="dsp" if bits == 6 else "lut")
    assert np.array_equal(dut.reference(v["l0.q"], v["l0.k"], v["l0.v"]), v["l0.context"])
    run_core(dut, v["l0.q"], v["l0.k"], v["l0.v"], v["l0.context"], stall=0.3, seed=bits)


@pytest.mark.parametrize("heads,qk_lanes,pv_lanes", [(1, 1, 4), (1, 2, 2), (1, 4, 1), (2, 1, 1),
                                                     (2, 2, 2), (2, 1, 2)])
def test_core_cycles(heads, qk_lanes, pv_lanes):
    model = random_intmodel(config(L=6, heads=heads), bits=8, seed=heads)
    v = model.forward(random_inputs(model, 1, seed=1))
    dut = AttentionCore.from_op(model, "l0.context", qk_lanes=qk_lanes, pv_lanes=pv_lanes)
    run_core(dut, v["l0.q"], v["l0.k"], v["l0.v"], v["l0.context"], exact_cycles=True)


@pytest.mark.parametrize("acc_storage,heads,pv_lanes,bits,stall", [
    ("bram", 1, 1, 4, 0.0), ("bram", 1, 2, 8, 0.3), ("lutram", 2, 1, 6, 0.0),
    ("bram", 2, 1, 2, 0.3), ("registers", 1, 2, 8, 0.0)])
def test_core_acc_storage(acc_storage, heads, pv_lanes, bits, stall):
    """Context accumulators and the finished row in memories: bit-exact over two windows
    (stalls) and exact cycles (no stalls: one more edge of output latency than registers)."""
    model = random_intmodel(config(L=6, heads=heads), bits=bits, seed=bits + heads)
    v = model.forward(random_inputs(model, 2, seed=bits))
    dut = AttentionCore.from_op(model, "l0.context", qk_lanes=1, pv_lanes=pv_lanes,
                                acc_storage=acc_storage)
    assert dut.out_latency == (6 if acc_storage == "registers" else 7)
    run_core(dut, v["l0.q"], v["l0.k"], v["l0.v"], v["l0.context"], stall=stall, seed=bits)
    if not stall:
        dut = AttentionCore.from_op(model, "l0.context", qk_lanes=1, pv_lanes=pv_lanes,
                                    acc_storage=acc_storage)
        run_core(dut, v["l0.q"][0], v["l0.k"][0], v["l0.v"][0], v["l0.context"][0],
                 exact_cycles=True)
        ideal = list(range(1, v["l0.q"][0].numel() + 1))
        assert dut.output_times(ideal, ideal, ideal)[-1] == dut.cycles()


@pytest.mark.parametrize("L,heads,dh,qk_lanes,pv_lanes,div_bits,banks,acc_storage", [
    (3, 1, 2, 2, 2, 6, 4, "registers"),    # a row's end waits for the output registers
    (2, 2, 4, 4, 4, 6, 4, "registers"),    # ... and for the previous row's output (was 59, is 71)
    (3, 1, 1, 1, 1, 6, 4, "registers"),
    (3, 2, 4, 2, 2, 3, 4, "bram"),
    (5, 2, 4, 4, 4, 3, 2, "registers"),    # two softmax banks fill, the scores wait
])
def test_core_cycles_short_rows(L, heads, dh, qk_lanes, pv_lanes, div_bits, banks, acc_storage):
    """Rows shorter than the core's pipelines: its stages wait for one another (the finished
    row's output registers, the divider, the softmax banks, the credit queues). The closed
    form assumed that none of them waits and was short by up to 25 cycles (found by
    tests/test_fuzz_model.py); ``cycles()`` now follows the control edge by edge."""
    model = random_intmodel(config(L=L, d=heads * dh, heads=heads), bits=4, seed=L + dh)
    v = model.forward(random_inputs(model, 1, seed=2))
    dut = AttentionCore.from_op(model, "l0.context", qk_lanes=qk_lanes, pv_lanes=pv_lanes,
                                div_bits=div_bits, softmax_banks=banks, acc_storage=acc_storage)
    run_core(dut, v["l0.q"], v["l0.k"], v["l0.v"], v["l0.context"], exact_cycles=True)


def test_core_acc_storage_needs_two_steps():
    model = random_intmodel(config(), bits=8, seed=1)
    with pytest.raises(ValueError, match="acc_storage"):
        AttentionCore.from_op(model, "l0.context", pv_lanes=4, acc_storage="bram")


def test_core_default_dims():
    model = random_intmodel(config(L=24, d=16), bits=8, seed=5)
    v = model.forward(random_inputs(model, 1, seed=5))
    dut = AttentionCore.from_op(model, "l0.context", qk_lanes=16, pv_lanes=16)
    cycles = run_core(dut, v["l0.q"], v["l0.k"], v["l0.v"], v["l0.context"], exact_cycles=True)
    assert cycles == 1059          # 384 to load, 576 scores at one per cycle, 99 of latency


def extreme_core(q_type, k_type, v_type, *, L=4, d=4, heads=1, score_scale=0.05, **knobs):
    """A core with hand-made types and a large score multiplier (rails are reached)."""
    st = QType(8, True)
    at = QType(8, False)
    exp_bits, recip_bits = intops.softmax_precision(8)
    table = intops.softmax_exp_table(score_scale, st, exp_bits)
    m_s, s_s = intops.quantize_multiplier(1.0 / (d // heads * 4))
    m_c, s_c = intops.quantize_multiplier(1.0 / 256)
    return AttentionCore(q_type, k_type, v_type, m_s, s_s, st, table, exp_bits, recip_bits, at,
                         m_c, s_c, QType(8, True), tokens=L, d_model=d, heads=heads, pv_lanes=2,
                         **knobs)


@pytest.mark.parametrize("pattern", ["all_min", "all_max", "zero_points", "dominant", "random"])
def test_core_extremes(pattern):
    qt, kt, vt = QType(8, False, 255), QType(8, False, 0), QType(8, True)
    lut = pattern in ("all_max", "dominant")
    dut = extreme_core(qt, kt, vt, qk_mul="lut" if lut else "dsp",
                       pv_mul="lut" if lut else "dsp_packed", softmax_mul="lut" if lut else "dsp")
    L, d = 4, 4
    rng = np.random.default_rng(0)
    if pattern == "all_min":
        q, k, v = (np.full((L, d), t.qmin) for t in (qt, kt, vt))
    elif pattern == "all_max":
        q, k, v = (np.full((L, d), t.qmax) for t in (qt, kt, vt))
    elif pattern == "zero_points":     # all scores equal: uniform attention
        q, k, v = (np.full((L, d), t.zero_point) for t in (qt, kt, vt))
        v = rng.integers(vt.qmin, vt.qmax + 1, (L, d))
    elif pattern == "dominant":        # one key far above the others
        q = np.full((L, d), qt.qmin)
        k = np.full((L, d), kt.qmin)
        k[2] = kt.qmax
        v = np.where(np.arange(d) % 2, vt.qmax, vt.qmin) * np.ones((L, 1), np.int64)
    else:
        q, k, v = (rng.integers(t.qmin, t.qmax + 1, (L, d)) for t in (qt, kt, vt))
    ref = dut.reference(q, k, v)
    run_core(dut, q, k, v, ref, stall=0.3, seed=1)


def test_core_rejects_bad_lanes():
    model = random_intmodel(config(heads=2), bits=4, seed=0)
    with pytest.raises(ValueError, match="must divide"):
        AttentionCore.from_op(model, "l0.context", qk_lanes=3)
    with pytest.raises(ValueError, match="must divide"):
        AttentionCore.from_op(model, "l0.context", pv_lanes=4)


@pytest.mark.parametrize("bits,heads,stall", [(8, 1, 0.0), (4, 2, 0.3), (2, 1, 0.3), (6, 2, 0.0)])
def test_attention_composed(bits, heads, stall):
    model = random_intmodel(config(heads=heads), bits=bits, seed=bits)
    v = model.forward(random_inputs(model, 2, seed=bits))
    dut = Attention(model, 0, qkv_knobs={"pe": 2}, out_knobs={"simd": 2}, qk_lanes=2)
    got, _ = run_stream_block(dut, {"i": v["embed"].ravel()}, {"o": v["l0.attn_out"].numel()},
                              stall_in=stall, stall_out=stall, seed=bits, windows=2)
    np.testing.assert_array_equal(np.array(got["o"]), v["l0.attn_out"].ravel())
