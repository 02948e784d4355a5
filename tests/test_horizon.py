"""Multi-step forecasting (``--horizon H``): targets t+1 .. t+H per window, H outputs of the
integer model and of the hardware, per-step RMSE against float and persistence, and a horizon
the data cannot hold refused before anything is written."""
import json

import numpy as np
import pandas as pd
import pytest

from model.data import DataError, build_dataset
from sim import tools


def _series(n=30, gap_after=None):
    """Hourly rows with the target (and only feature) y = i**2; an hour missing after row
    ``gap_after``."""
    t = pd.date_range("2020-01-01", periods=n, freq="h").to_numpy().copy()
    if gap_after is not None:
        t[gap_after + 1:] += np.timedelta64(1, "h")
    y = np.arange(n, dtype=np.float64) ** 2
    return t, pd.DataFrame({"y": y}), y


def test_targets_are_the_next_h_values_and_h1_is_the_one_step_data():
    t, f, y = _series(40)
    one = build_dataset(t, f, y, window=2, horizon=1, freq=pd.Timedelta("1h"), target_name="y")
    three = build_dataset(t, f, y, window=2, horizon=3, freq=pd.Timedelta("1h"), target_name="y")
    assert one.test.y.shape == (len(one.test),)
    assert three.test.y.shape == (len(three.test), 3)
    for ds, h in ((one, 1), (three, 3)):
        for name in ("train", "val", "test"):
            s = ds.split(name)
            last = s.last.astype(np.float64)
            start = np.sqrt(last).round().astype(int) - 1           # row of the window's first input
            want = y[start[:, None] + 2 + np.arange(h)[None, :]]
            got = ds.denormalise_target(s.y).reshape(len(s), h)
            assert np.allclose(got, want, rtol=0, atol=1e-3 * want.max())
            assert np.array_equal(s.times, t[start + 2])           # time of step 1
    # the one-step data is the first step's: same normalisation of the same targets
    tr = one.train
    assert np.allclose(one.denormalise_target(tr.y), y[np.sqrt(tr.last).round().astype(int) + 1])


def test_windows_whose_horizon_crosses_a_gap_or_the_split_are_dropped():
    t, f, y = _series(40, gap_after=10)
    one = build_dataset(t, f, y, window=2, horizon=1, freq=pd.Timedelta("1h"), target_name="y")
    two = build_dataset(t, f, y, window=2, horizon=2, freq=pd.Timedelta("1h"), target_name="y")
    # a window of 2 inputs and H targets crosses the gap after row 10 from 2 + H - 1 starts
    assert one.counts["windows_dropped_gap"] == 2
    assert two.counts["windows_dropped_gap"] == 3
    # and a split boundary from one more start per extra step (two boundaries)
    assert two.counts["windows_dropped_boundary"] == one.counts["windows_dropped_boundary"] + 2


def test_persistence_is_the_last_value_for_every_step():
    from model.train import persistence_metrics
    t, f, y = _series()
    ds = build_dataset(t, f, y, window=2, horizon=2, freq=pd.Timedelta("1h"), target_name="y")
    # test part: rows 26..29, one window: inputs 26, 27; targets 28, 29
    assert len(ds.test) == 1
    m = persistence_metrics(ds, "test")
    assert m["rmse_steps"] == pytest.approx([28 ** 2 - 27 ** 2, 29 ** 2 - 27 ** 2], rel=1e-6)
    assert m["rmse"] == pytest.approx(np.sqrt((55 ** 2 + 112 ** 2) / 2), rel=1e-6)
    one = build_dataset(t, f, y, window=2, horizon=1, freq=pd.Timedelta("1h"), target_name="y")
    assert "rmse_steps" not in persistence_metrics(one, "test")


def _csv(tmp_path, n=30):
    t, f, y = _series(n)
    path = tmp_path / "tiny.csv"
    pd.DataFrame({"time": pd.DatetimeIndex(t).strftime("%Y-%m-%dT%H:%M:%S"), "y": y}).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("horizon, message", [
    (40, "window (2) + horizon (40) = 42 rows are needed but the data has only 30 rows"),
    (5, "no valid window in the val split"),      # rows enough, but not in every split
])
def test_a_horizon_longer_than_the_data_is_refused_and_writes_nothing(horizon, message, tmp_path, capsys):
    from flows.cli import main
    csv = _csv(tmp_path)
    out = tmp_path / "run"
    argv = ["train", "--csv", str(csv), "--time-column", "time", "--features", "y", "--target", "y",
            "--window", "2", "--horizon", str(horizon), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "--horizon" in err and "Traceback" not in err
    assert not out.exists()
    # an existing run directory is left as it was
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    assert main(argv) == 2
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]


def test_a_bad_horizon_is_refused():
    t, f, y = _series()
    with pytest.raises(DataError, match="horizon must be >= 1"):
        build_dataset(t, f, y, window=2, horizon=0, target_name="y")


H = 3


@pytest.fixture(scope="module")
def horizon_run(tmp_path_factory):
    """A small model trained briefly to forecast the next 3 hours of the default data."""
    from flows.run import TrainOptions, train_stage
    out = tmp_path_factory.mktemp("horizon_run")
    opts = TrainOptions(window=12, d_model=8, horizon=H, bits=8, epochs=2, qat_epochs=1,
                        max_train_windows=600, seed=0)
    return out, train_stage(out, opts)


def test_per_step_metrics_of_every_model(horizon_run):
    from flows.run import load_test_windows
    from model.intmodel import IntModel
    run, m = horizon_run
    for name in ("float", "qat", "int", "persistence"):
        test = m[name]["test"]
        assert len(test["rmse_steps"]) == H and len(test["mae_steps"]) == H
        # the overall RMSE is the root of the steps' mean square
        assert test["rmse"] == pytest.approx(np.sqrt(np.mean(np.square(test["rmse_steps"]))), rel=1e-9)
    # hourly temperature: persistence degrades with the step
    p = m["persistence"]["test"]["rmse_steps"]
    assert p[0] < p[1] < p[2]
    assert json.loads((run / "metrics.json").read_text())["int"]["test"]["rmse_steps"] == m["int"]["test"]["rmse_steps"]
    model = IntModel.load(run)
    assert model.horizon == H and model.tensors["pred"].shape == (H,)
    tw = load_test_windows(run)
    assert tw["outputs"].shape == (len(tw["inputs"]), H) and tw["truth"].shape == tw["outputs"].shape
    assert np.array_equal(model.pred_codes(tw["inputs"]).numpy(), tw["outputs"])
    with np.load(run / "predictions.npz") as z:
        assert z["int"].shape == z["truth"].shape == z["persistence"].shape == tw["outputs"].shape
        assert np.array_equal(z["persistence"], np.repeat(z["persistence"][:, :1], H, axis=1))


def test_the_accelerator_streams_h_outputs_per_window_bit_exact_with_exact_cycles(horizon_run):
    from flows.run import load_test_windows
    from hw.accelerator import Accelerator
    from model.intmodel import IntModel
    from sim.profile import profile
    run, _ = horizon_run
    model = IntModel.load(run)
    tw = load_test_windows(run)
    acc = Accelerator(model)
    got, cycles, _ = profile(acc, tw["inputs"][0].reshape(-1).tolist())
    assert got == tw["outputs"][0].tolist()
    assert cycles == acc.cycles()
    # windows back to back: H outputs each, in order
    from sim.hardware import SimulatedAccelerator
    hw = SimulatedAccelerator(model, simulator="amaranth")
    assert np.array_equal(hw.predict_codes(tw["inputs"][-2:]), tw["outputs"][-2:])


def test_report_and_ports_show_the_steps(horizon_run, tmp_path):
    import shutil
    from flows import report
    from flows.build import frame
    from model.intmodel import IntModel
    run = tmp_path / "run"
    shutil.copytree(horizon_run[0], run)
    f = frame(IntModel.load(run))
    assert f.n_out == H and "next 3 steps" in f.result
    jpath, hpath = report.write(run)
    acc = json.loads(jpath.read_text())["accuracy"]
    assert len(acc["int_rmse_steps"]) == H and len(acc["persistence_rmse_steps"]) == H
    assert f"per step t+1..t+{H}" in hpath.read_text()


@pytest.mark.slow
@pytest.mark.verilator
def test_every_executor_agrees_on_every_step(horizon_run, tmp_path):
    import shutil
    from flows.build import verify
    run = tmp_path / "run"
    shutil.copytree(horizon_run[0], run)
    doc = verify(run, amaranth_windows=2, compiled_windows=100, ghdl_windows=1, progress=lambda m: None)
    want = {"intmodel", "amaranth"} | {n for n in ("verilator", "ghdl") if tools.available(n)}
    assert set(doc["executors"]) == want
    assert doc["mismatches"] == 0 and all(e["mismatches"] == 0 for e in doc["executors"].values())
    if "verilator" in want:
        assert doc["executors"]["verilator"]["windows"] == 100
    assert doc["latency"]["cycles"] == doc["latency"]["formula_cycles"]
