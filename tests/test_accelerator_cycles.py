"""Accelerator.cycles(): the cycle count of one window from the blocks' own schedules equals
the count of Amaranth's simulation (always-valid source, always-ready sink)."""
import numpy as np
import pytest

from hw.accelerator import Accelerator
from hw.presets import preset
from model.synthetic import random_inputs, random_intmodel
from sim.streams import run_stream_block

DEFAULT = dict(features=7, window=24, d_model=16, heads=1, layers=1, ffn=64, norm="batchnorm",
               activation="relu")
SMALL = dict(DEFAULT, features=3, window=4, d_model=4, ffn=8)


def simulated_cycles(acc):
    window = np.asarray(random_inputs(acc.model, 1)).reshape(-1).tolist()
    _, cycles = run_stream_block(acc, {"i": window}, {"o": 1})
    return cycles


def check_block_schedules(acc):
    """Every block's per-element schedule, fed by always-valid sources of one window (each
    input port), ends at its own standalone ``cycles()`` (edges counted from 1; the
    hw.block.Block contract)."""
    L, d = acc.model.config["window"], acc.model.config["d_model"]
    for node in acc.nodes:
        blocks = [node.block]
        for blk in blocks:
            if blk.parts:                                 # Attention: its core and linears
                blocks += [blk.core, *blk.proj, blk.out_proj]
            n = blk.window or L * d                       # forks and FIFOs: any length
            ideal = list(range(1, n + 1))
            assert blk.output_times(*[ideal] * len(blk.input_ports))[-1] == blk.cycles(n), blk


@pytest.mark.parametrize("config, hw, bits", [
    pytest.param(DEFAULT, "xc7s15", 8, marks=pytest.mark.slow),     # the default model:
    pytest.param(DEFAULT, "xc7s15", 4, marks=pytest.mark.slow),     # seconds of simulation
    (SMALL, None, 8),
    (dict(SMALL, norm="layernorm", activation="gelu"), None, 8),
    (dict(SMALL, heads=2), None, 8),
    (dict(SMALL, layers=2), None, 8),
    (dict(SMALL, heads=2), {"kinds": {"attention": {"qkv_fused": True}}}, 4),
    # window 2 x d_model 1: a residual FIFO of the window's 2 elements could not take one per
    # cycle, and cycles() had no schedule for it (found by tests/test_fuzz_model.py)
    (dict(SMALL, features=1, window=2, d_model=1, ffn=1), None, 2),
], ids=["xc7s15-8", "xc7s15-4", "small-defaults", "small-layernorm-gelu", "small-2heads",
        "small-2layers", "small-fused-qkv", "tiny-window"])
def test_cycles_equal_simulation(config, hw, bits):
    model = random_intmodel(config, bits=bits)
    hw = preset(hw, bits) if isinstance(hw, str) else hw
    acc = Accelerator(model, hw)
    check_block_schedules(acc)
    assert acc.cycles() == simulated_cycles(acc)


