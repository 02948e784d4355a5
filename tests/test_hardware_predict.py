"""predict() of the integer model and of the simulated hardware give the same numbers."""
import numpy as np
import pytest

from model.intmodel import IntModel
from model.synthetic import random_intmodel
from sim.hardware import SimulatedAccelerator

SMALL = dict(features=3, window=4, d_model=4, heads=1, layers=1, ffn=8, norm="batchnorm",
             activation="relu")


@pytest.mark.parametrize("simulator", ["amaranth", pytest.param("verilator", marks=[pytest.mark.verilator, pytest.mark.slow])])
def test_predict_matches_integer_model(simulator):
    model = random_intmodel(SMALL, bits=6, seed=4)
    raw = np.random.default_rng(0).normal(0, 1, size=(5, 4, 3))
    hw = SimulatedAccelerator(model, {"kinds": {"linear": {"pe": 2, "simd": 2}},
                                      "blocks": {"proj": {"simd": 1}, "pred": {"pe": 1}}}, simulator)
    assert np.array_equal(hw.predict(raw), model.predict(raw))
    assert hw.last_cycles > 0


def test_predict_rejects_bad_input():
    model = random_intmodel(SMALL, bits=6, seed=4)
    with pytest.raises(ValueError, match="NaN"):
        SimulatedAccelerator(model).predict(np.full((1, 4, 3), np.nan))
    with pytest.raises(ValueError, match="simulator"):
        SimulatedAccelerator(model, simulator="vcs")


@pytest.mark.slow
@pytest.mark.verilator
def test_trained_model_on_real_windows_in_verilator(quick_run):
    run, _ = quick_run
    model = IntModel.load(run)
    from flows.run import load_test_windows
    tw = load_test_windows(run)
    from flows.build import hw_config
    hw = SimulatedAccelerator(model, hw_config(run, "xc7s15"))
    assert np.array_equal(hw.predict_codes(tw["inputs"][:50]), tw["outputs"][:50])
