"""Element-wise blocks (Add, Affine, LutActivation) against model.intops, bit for bit."""
import numpy as np
import pytest

from model import intops
from model.intops import QType
from model.synthetic import random_intmodel, random_inputs
from hw.elementwise import Add, Affine, LutActivation
from sim.streams import run_stream_block

SMALL = dict(features=3, window=4, d_model=4, heads=2, layers=1, ffn=8,
             norm="batchnorm", activation="gelu")
DEFAULT = dict(features=7, window=24, d_model=16, heads=2, layers=1, ffn=64,
               norm="batchnorm", activation="gelu")


def _model(bits, seed, config=SMALL):
    model = random_intmodel(config, bits=bits, seed=seed)
    v = model.forward(random_inputs(model, 2, seed=seed + 100))
    return model, v


def _run(dut, inputs, n, stall, seed):
    got, cycles = run_stream_block(dut, inputs, {"o": n}, stall_in=stall, stall_out=stall,
                                   seed=seed)
    return np.array(got["o"]), cycles


# ------------------------------------------------------------------------------------- Add

@pytest.mark.parametrize("bits,seed,stall,storage", [
    (8, 0, 0.0, "bram"), (6, 1, 0.3, "lutram"), (4, 2, 0.3, "registers"), (2, 3, 0.3, "bram")])
def test_add_residual_from_model(bits, seed, stall, storage):
    model, v = _model(bits, seed)
    dut = Add.from_op(model, "l0.res1", b_storage=storage)
    a, b = v["embed"], v["l0.attn_out"]                  # two windows back to back
    got, cycles = _run(dut, {"a": a.reshape(-1), "b": b.reshape(-1)}, a.numel(), stall, seed)
    assert (got == v["l0.res1"].reshape(-1)).all()
    if stall == 0:
        assert cycles == dut.cycles(a.numel())


@pytest.mark.parametrize("bits,seed,stall,storage", [
    (8, 0, 0.0, "bram"), (6, 1, 0.3, "lutram"), (4, 2, 0.3, "registers"), (2, 4, 0.3, "lutram")])
def test_add_positional_constant(bits, seed, stall, storage):
    model, v = _model(bits, seed)
    dut = Add.from_op(model, "embed", b_storage=storage)
    assert not hasattr(dut, "b")
    a = v["proj"]                                        # 2 windows: the ROM wraps
    got, cycles = _run(dut, {"a": a.reshape(-1)}, a.numel(), stall, seed)
    assert (got == v["embed"].reshape(-1)).all()
    if stall == 0:
        assert cycles == dut.cycles(a.numel())


def test_add_default_dims_cycles():
    model, v = _model(8, 5, DEFAULT)
    dut = Add.from_op(model, "embed")
    a = v["proj"][0]
    got, cycles = _run(dut, {"a": a.reshape(-1)}, a.numel(), 0.0, 0)
    assert (got == v["embed"][0].reshape(-1)).all()
    assert cycles == dut.cycles() == 24 * 16 + 5


@pytest.mark.parametrize("at,bt,ot", [
    (QType(8, False, 0), QType(8, False, 255), QType(8, False, 255)),
    (QType(8, True), QType(8, False, 0), QType(2, False, 3)),
    (QType(2, False, 3), QType(2, True), QType(4, True)),
])
def test_add_extremes(at, bt, ot):
    rng = np.random.default_rng(0)
    n = 12
    a = np.array([at.qmin] * 4 + [at.qmax] * 4 + list(rng.integers(at.qmin, at.qmax + 1, 4)))
    b = np.array([bt.qmin, bt.qmax] * 2 + [bt.qmax] * 4 + list(rng.integers(bt.qmin, bt.qmax + 1, 4)))
    for (ma, mb, shift), mul in zip([((1 << 16) - 1, -((1 << 16) - 1), 3), (-70000, 1, 0), (5, 7, 2),
                                     ((1 << 16) - 1, -((1 << 16) - 1), 3)],
                                    ["lut", "lut", "lut", "dsp"]):
        dut = Add(at, bt, ma, mb, shift, ot, mul=mul)
        got, _ = _run(dut, {"a": a, "b": b}, n, 0.3, 1)
        assert (got == intops.add(a, at, b, bt, ma, mb, shift, ot)).all()


# ------------------------------------------------------------------------------------- Affine

@pytest.mark.parametrize("bits,seed,stall,storage", [
    (8, 0, 0.0, "lutram"), (6, 1, 0.3, "bram"), (4, 2, 0.3, "registers"), (2, 3, 0.3, "lutram")])
def test_affine_from_model(bits, seed, stall, storage):
    model, v = _model(bits, seed)
    dut = Affine.from_op(model, "l0.norm1", storage=storage)
    x = v["l0.res1"]
    got, cycles = _run(dut, {"i": x.reshape(-1)}, x.numel(), stall, seed)
    assert (got == v["l0.norm1"].reshape(-1)).all()
    if stall == 0:
        assert cycles == dut.cycles(x.numel())


@pytest.mark.parametrize("xt,ot", [(QType(8, False, 255), QType(8, False, 0)),
                                   (QType(2, False, 0), QType(8, True)),
                                   (QType(8, True), QType(2, True))])
@pytest.mark.parametrize("mul", ["dsp", "lut"])
def test_affine_extremes(xt, ot, mul):
    c = 3
    scales = np.array([(1 << 16) - 1, -(1 << 16), 1])
    offsets = np.array([-(1 << 20), 1 << 20, 0])
    x = np.array([xt.qmin] * 6 + [xt.qmax] * 6 + [xt.zero_point] * 3)
    dut = Affine(xt, scales, offsets, 9, ot, channels=c, storage="registers", mul=mul)
    got, _ = _run(dut, {"i": x}, x.size, 0.3, 2)
    assert (got == intops.affine(x.reshape(-1, c), xt, scales, offsets, 9, ot).reshape(-1)).all()


# ------------------------------------------------------------------------------------- LUT

@pytest.mark.parametrize("bits,seed,stall,storage", [
    (8, 0, 0.0, "bram"), (6, 1, 0.3, "lutram"), (4, 2, 0.3, "registers"), (2, 3, 0.3, "bram")])
def test_lut_from_model(bits, seed, stall, storage):
    model, v = _model(bits, seed)
    dut = LutActivation.from_op(model, "l0.ffn_hidden", storage=storage)
    x = v["l0.ffn_pre"]
    got, cycles = _run(dut, {"i": x.reshape(-1)}, x.numel(), stall, seed)
    assert (got == v["l0.ffn_hidden"].reshape(-1)).all()
    if stall == 0:
        assert cycles == dut.cycles(x.numel())


@pytest.mark.parametrize("xt", [QType(8, True), QType(8, False, 7), QType(2, True), QType(3, False, 7)])
def test_lut_every_code(xt):
    ot = QType(8, False, 0)
    rng = np.random.default_rng(1)
    table = rng.integers(0, 256, xt.qmax - xt.qmin + 1)
    x = np.arange(xt.qmin, xt.qmax + 1)
    dut = LutActivation(xt, table, ot, storage="lutram")
    got, _ = _run(dut, {"i": x}, x.size, 0.3, 4)
    assert (got == intops.lut_activation(x, xt, table, ot)).all()


def test_bad_arguments():
    with pytest.raises(ValueError):
        Affine(QType(8, True), [1, 2], [0, 0], 1, QType(8, True), channels=3)
    with pytest.raises(ValueError):
        LutActivation(QType(4, True), [0] * 3, QType(8, True))
    with pytest.raises(ValueError):
        Add(QType(8, True), QType(8, True), 1, 1, 0, QType(8, True), const_b=[1, 2, 3], length=4)
