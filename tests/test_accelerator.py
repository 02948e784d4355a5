"""The whole accelerator in Amaranth's simulator equals the integer model on every output."""
import numpy as np
import pytest

from flows.run import load_test_windows
from hw.accelerator import Accelerator, HwConfig
from hw.common import union_shape
from model.intops import QType
from model.intmodel import IntModel
from model.synthetic import random_inputs, random_intmodel
from sim.streams import run_stream_block

SMALL = dict(features=3, window=4, d_model=4, heads=1, layers=1, ffn=8, norm="batchnorm",
             activation="relu")

#: A parallel configuration of the default model (keeps Amaranth's simulation short).
PARALLEL = {"kinds": {"linear": {"pe": 4, "simd": 4}, "attention": {"qk_lanes": 4}},
            "blocks": {"proj": {"pe": 4, "simd": 7}, "pred": {"pe": 1, "simd": 4}}}


def simulate(model, windows, hw=None, **stalls):
    received, cycles = run_stream_block(Accelerator(model, hw), {"i": windows.reshape(-1).tolist()},
                                        {"o": len(windows)}, windows=len(windows), **stalls)
    return np.array(received["o"]), cycles


@pytest.mark.parametrize("bits", [2, 4, 6, 8])
@pytest.mark.parametrize("variant", [
    {},
    {"norm": "layernorm", "activation": "gelu"},
    {"heads": 2, "layers": 2},
    {"norm": "layernorm", "heads": 2, "d_model": 8, "ffn": 16, "window": 6},
])
def test_synthetic_models_are_bit_exact_under_stalls(bits, variant):
    config = {**SMALL, **variant}
    model = random_intmodel(config, bits=bits, seed=bits)
    windows = random_inputs(model, 3, seed=bits + 1)
    expected = model.forward(windows)["pred"][:, 0]
    got, _ = simulate(model, windows, stall_in=0.3, stall_out=0.5, seed=bits)
    assert got.tolist() == expected.tolist()


def test_mixed_precision_model_is_bit_exact():
    bits = {"default": 6, "input": 8, "l0.scores": 4, "l0.attn": 5, "l0.ffn_hidden": 3,
            "l0.q.weight": 2, "pred": 8}
    model = random_intmodel(SMALL, bits=bits, seed=11)
    windows = random_inputs(model, 2, seed=3)
    got, _ = simulate(model, windows)
    assert got.tolist() == model.forward(windows)["pred"][:, 0].tolist()


def test_extreme_inputs_are_bit_exact():
    model = random_intmodel(SMALL, bits=8, seed=5)
    q = model.qtype("input")
    shape = (1, SMALL["window"], SMALL["features"])
    windows = np.concatenate([np.full(shape, q.qmin), np.full(shape, q.qmax),
                              np.full(shape, q.zero_point)])
    got, _ = simulate(model, windows, stall_out=0.3)
    assert got.tolist() == model.forward(windows)["pred"][:, 0].tolist()


def test_cycle_count_is_deterministic_and_backpressure_only_delays():
    # Back-pressure on the output may delay, never change, the results; the cycle count of a
    # stall-free run is deterministic.
    model = random_intmodel(SMALL, bits=4, seed=2)
    windows = random_inputs(model, 2, seed=2)
    got1, c1 = simulate(model, windows)
    got2, c2 = simulate(model, windows)
    got3, c3 = simulate(model, windows, stall_out=0.9, seed=1)
    assert got1.tolist() == got2.tolist() == got3.tolist()
    assert c1 == c2 and c3 >= c1


@pytest.mark.slow
def test_default_model_on_real_test_windows(quick_run):
    run, _ = quick_run
    model = IntModel.load(run)
    tw = load_test_windows(run)
    idx = np.linspace(0, len(tw["inputs"]) - 1, 2).astype(int)   # start and end of the test period
    windows = tw["inputs"][idx]
    expected = model.forward(windows)["pred"][:, 0]
    assert (expected == tw["outputs"][idx]).all()
    got, cycles = simulate(model, windows, PARALLEL, stall_in=0.2, stall_out=0.2)
    assert got.tolist() == expected.tolist()
    # One window without stalls: the latency equals the accelerator's cycle formula.
    from hw.presets import preset
    acc = Accelerator(model, preset("xc7s15", 8))
    received, cycles = run_stream_block(acc, {"i": windows[0].reshape(-1).tolist()}, {"o": 1})
    assert received["o"] == [expected[0]]
    assert cycles == acc.cycles() == 5238


def test_hw_config_validation():
    with pytest.raises(ValueError, match="unknown hardware configuration keys"):
        HwConfig.from_dict({"lanes": 4})
    with pytest.raises(ValueError, match="storage"):
        HwConfig.from_dict({"fifo_storage": "flash"})
    model = random_intmodel(SMALL, bits=8)
    with pytest.raises(ValueError):
        Accelerator(model, {"kinds": {"linear": {"pe": 3}}})
    cfg = HwConfig.from_dict({"kinds": {"linear": {"pe": 2}}, "blocks": {"l0.*": {"pe": 4}, "l0.q": {"simd": 2}}})
    assert cfg.knobs("linear", "l0.q") == {"pe": 4, "simd": 2}
    assert cfg.knobs("linear", "proj") == {"pe": 2}


@pytest.mark.slow          # the default-shaped model in Amaranth
def test_gelu_model_builds_with_the_xc7s15_preset():
    # The preset's "*.ffn_*" pattern also matches the GELU table between the FFN linears:
    # only the knobs a block takes may reach it.
    from hw.presets import preset
    config = dict(features=7, window=24, d_model=16, heads=1, layers=1, ffn=64,
                  norm="batchnorm", activation="gelu")
    model = random_intmodel(config, bits=8, seed=3)
    windows = random_inputs(model, 1, seed=3)
    acc = Accelerator(model, preset("xc7s15", 8))
    received, cycles = run_stream_block(acc, {"i": windows.reshape(-1).tolist()}, {"o": 1})
    assert received["o"] == model.forward(windows)["pred"][:, 0].tolist()
    assert cycles == acc.cycles()


@pytest.mark.parametrize("qkv", [
    (QType(4, True), QType(4, False, 9), QType(4, False, 3)),      # a trained 4-bit model's mix
    (QType(8, False, 200), QType(3, True), QType(6, False, 0)),    # widths differ too
])
def test_fused_qkv_of_different_types(qkv):
    """Adaptive schemes give Q, K and V their own types: the fused linear streams their union
    (signed 5 bits for signed and unsigned 4-bit codes) and the demux narrows each back."""
    model = random_intmodel({**SMALL, "heads": 2, "d_model": 8, "ffn": 16}, bits=4, seed=7,
                            qtypes=dict(zip(("l0.q", "l0.k", "l0.v"), qkv)))
    windows = random_inputs(model, 3, seed=8)
    hw = {"kinds": {"attention": {"qkv_fused": True}}}
    got, _ = simulate(model, windows, hw, stall_in=0.3, stall_out=0.5, seed=9)
    assert got.tolist() == model.forward(windows)["pred"][:, 0].tolist()
    acc = Accelerator(model, hw)
    fused = acc.node("l0.context").block.proj[0]
    assert fused.out_shape == union_shape(qkv)
    _, cycles = run_stream_block(acc, {"i": windows[0].reshape(-1).tolist()}, {"o": 1})
    assert cycles == acc.cycles()


@pytest.mark.parametrize("bits", [4, 8])
def test_fused_qkv_is_bit_exact_under_stalls(bits):
    """``qkv_fused``: one Linear for Q, K and V (each with its own requantisation) feeding the
    attention core through a Demux; the accelerator stays bit-exact and on its cycle formula."""
    model = random_intmodel({**SMALL, "heads": 2, "d_model": 8, "ffn": 16}, bits=bits, seed=bits)
    k, v = model.op("l0.k").params, model.op("l0.v").params
    k["multiplier"] = k["multiplier"] * 3 // 4
    v["multiplier"], v["shift"] = v["multiplier"] * 3 // 2, v["shift"] + 1
    windows = random_inputs(model, 3, seed=bits + 1)
    hw = {"kinds": {"attention": {"qkv_fused": True}, "linear": {"requant_mul": "dsp"}},
          "blocks": {"l0.q": {"pe": 2}}}
    got, _ = simulate(model, windows, hw, stall_in=0.3, stall_out=0.5, seed=bits)
    assert got.tolist() == model.forward(windows)["pred"][:, 0].tolist()
    acc = Accelerator(model, hw)
    assert len(acc.node("l0.context").block.proj) == 1
    _, cycles = run_stream_block(acc, {"i": windows[0].reshape(-1).tolist()}, {"o": 1})
    assert cycles == acc.cycles()
