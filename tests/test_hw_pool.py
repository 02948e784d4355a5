"""MeanPool against intops.mean_pool, bit for bit, window after window."""
import numpy as np
import pytest

from model import intops
from model.intops import QType
from model.synthetic import random_intmodel, random_inputs
from hw.pool import MeanPool
from sim.streams import run_stream_block

SMALL = dict(features=3, window=5, d_model=4, heads=2, layers=1, ffn=8,
             norm="batchnorm", activation="relu")
DEFAULT = dict(features=7, window=24, d_model=16, heads=2, layers=1, ffn=64,
               norm="batchnorm", activation="relu")


def _run(dut, x, n, stall, seed):
    windows = np.shape(x)[0] if np.ndim(x) == 3 else 1      # (windows, length, channels)
    got, cycles = run_stream_block(dut, {"i": np.asarray(x).reshape(-1)}, {"o": n},
                                   stall_in=stall, stall_out=stall, seed=seed, windows=windows)
    return np.array(got["o"]), cycles


@pytest.mark.parametrize("bits,seed,stall,storage", [
    (8, 0, 0.0, "lutram"), (8, 1, 0.3, "bram"), (6, 2, 0.3, "registers"),
    (4, 3, 0.3, "lutram"), (2, 4, 0.3, "bram")])
def test_mean_pool_from_model(bits, seed, stall, storage):
    model = random_intmodel(SMALL, bits=bits, seed=seed)
    v = model.forward(random_inputs(model, 3, seed=seed))      # 3 windows back to back
    dut = MeanPool.from_op(model, "pooled", buffer_storage=storage)
    got, cycles = _run(dut, v["l0.norm2"], v["pooled"].numel(), stall, seed)
    assert (got == v["pooled"].reshape(-1)).all()
    if stall == 0:
        # Windows follow each other without a bubble: 3 windows cost 2 windows of input more.
        assert cycles == dut.cycles() + 2 * 5 * 4


def test_mean_pool_default_dims():
    model = random_intmodel(DEFAULT, bits=8, seed=7)
    v = model.forward(random_inputs(model, 1, seed=7))
    dut = MeanPool.from_op(model, "pooled")
    got, cycles = _run(dut, v["l0.norm2"], 16, 0.0, 0)
    assert (got == v["pooled"].reshape(-1)).all()
    assert cycles == dut.cycles() == 24 * 16 + 5


@pytest.mark.parametrize("xt,ot,length,channels,mult,shift", [
    (QType(8, False, 255), QType(8, True), 24, 2, (1 << 16) - 1, 20),
    (QType(8, True), QType(8, False, 200), 7, 1, -(1 << 16) + 1, 12),   # channels == 1: forwarding
    (QType(2, False, 0), QType(2, True), 3, 3, 3, 1),
    (QType(8, False, 0), QType(4, False, 15), 16, 1, 1, 0),
])
@pytest.mark.parametrize("stall,rq", [(0.0, "lut"), (0.3, "dsp")])
def test_mean_pool_extremes(xt, ot, length, channels, mult, shift, stall, rq):
    rng = np.random.default_rng(length + channels)
    windows = [np.full((length, channels), xt.qmin), np.full((length, channels), xt.qmax),
               rng.integers(xt.qmin, xt.qmax + 1, (length, channels))]
    x = np.stack(windows)
    want = intops.mean_pool(x, xt, mult, shift, ot)
    dut = MeanPool(xt, mult, shift, ot, length=length, channels=channels, buffer_storage="registers",
                   requant_mul=rq)
    got, cycles = _run(dut, x, want.numel(), stall, 3)
    assert (got == want.reshape(-1)).all()
    if stall == 0:
        assert cycles == dut.cycles() + 2 * length * channels


def test_bad_arguments():
    with pytest.raises(ValueError):
        MeanPool(QType(8, True), 1, 0, QType(8, True), length=0, channels=4)
