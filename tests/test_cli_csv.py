"""The command line end to end on a user's own CSV, as a new user would run it (issue 18):
generated data with 1 and with 12 features, irregular time steps, a gap, missing values and
rows out of order; `train` (a tiny model, few epochs), `verify` with every executor that is
installed, `build` (one target per test, the cheaper flow where it suffices) and `report`.

The single-feature case is the one whose GHDL testbench used to time out: a window of few
values has a latency far above the old limit of 200 + 50 x (inputs + outputs) cycles."""
import json

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from sim import tools

WINDOW = 6
TINY = ["--window", str(WINDOW), "--d-model", "8", "--ffn", "16", "--epochs", "2",
        "--qat-epochs", "1", "--max-train-windows", "200", "--seed", "1"]


def make_csv(path, n_features: int, rows: int = 700, seed: int = 0) -> dict:
    """Hourly data with what real files have, written in shuffled row order. Returns what was
    put in (for the checks): irregular steps, the gap, missing input and target values."""
    rng = np.random.default_rng(seed)
    t = pd.Timestamp("2023-03-01") + pd.to_timedelta(np.arange(rows), unit="h")
    hour = np.arange(rows)
    cols = {}
    for j in range(n_features):
        cols[f"x{j}"] = (np.sin(2 * np.pi * (hour + 3 * j) / 24) * (1 + j % 3)
                         + 0.2 * rng.standard_normal(rows) + 0.05 * np.cumsum(rng.standard_normal(rows)))
    df = pd.DataFrame(cols)
    # The target: the first feature (univariate) or a column of its own computed from them.
    target = "x0" if n_features == 1 else "load"
    if n_features > 1:
        df[target] = df.mean(axis=1) + 0.1 * rng.standard_normal(rows)
    # Irregular steps: three readings taken 20 or 35 minutes late.
    late = [90, 91, 420]
    times = t.to_series().reset_index(drop=True)
    times[late] = times[late] + pd.to_timedelta([20, 20, 35], unit="min")
    df.insert(0, "timestamp", times.dt.strftime("%Y-%m-%d %H:%M:%S"))
    # Missing values: a short run in an input (interpolated), a long one (windows dropped),
    # one missing target.
    df.loc[[200, 201], "x0" if n_features == 1 else f"x{n_features - 1}"] = np.nan
    df.loc[250:258, "x0"] = np.nan
    df.loc[600, target] = np.nan
    # A gap: twelve hours without readings.
    df = df.drop(index=range(300, 312))
    df = df.sample(frac=1.0, random_state=seed)            # rows out of order
    df.to_csv(path, index=False, na_rep="")
    return {"target": target, "features": [f"x{j}" for j in range(n_features)], "rows": len(df)}


def cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def executors_available() -> set:
    return {"intmodel", "amaranth"} | {t for t in ("verilator", "ghdl") if tools.available(t)}


@pytest.mark.slow
@pytest.mark.verilator
@pytest.mark.ghdl
@pytest.mark.yosys
@pytest.mark.parametrize("n_features, target, train_args", [
    # The UP5K: 4 bits is the width whose preset fits, so nextpnr and icepack run too.
    # (Symmetric scheme: the preset fuses Q/K/V, which needs one output type for the three.)
    pytest.param(1, "ice40up5k", ["--bits", "4", "--scheme", "symmetric"],
                 marks=pytest.mark.nextpnr, id="1-feature-ice40up5k"),
    pytest.param(12, "xc7s15", [], id="12-features-xc7s15"),
])
def test_cli_train_verify_build_report_on_a_generated_csv(n_features, target, train_args,
                                                          tmp_path, capsys):
    csv = tmp_path / "data.csv"
    made = make_csv(csv, n_features)
    run = tmp_path / "run"

    # train
    code, out, err = cli(["train", "--out", str(run), "--csv", str(csv), "--time-column",
                          "timestamp", "--features", ",".join(made["features"]), "--target",
                          made["target"], "--quiet", *TINY, *train_args], capsys)
    assert code == 0, err
    assert out.startswith("test RMSE: float ")
    metrics = json.loads((run / "metrics.json").read_text())
    for k in ("float", "qat", "int", "persistence"):
        assert np.isfinite(metrics[k]["test"]["rmse"]), k
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["feature_names"] == made["features"] and data["target_name"] == made["target"]
    assert data["freq_seconds"] == 3600                     # inferred despite the odd steps
    c = data["counts"]
    assert c["rows"] == made["rows"]
    assert c["time_gaps"] == 5                  # the gap; before and after rows 90-91 and 420
    # the short run (and, univariate, the input copy of the missing target)
    assert c["interpolated_values"] == (3 if n_features == 1 else 2)
    assert c["windows_dropped_missing"] > 0 and c["windows_dropped_gap"] > 0
    assert c["windows_test"] > 0
    model = json.loads((run / "intmodel.json").read_text())
    assert model["config"]["features"] == n_features and model["config"]["window"] == WINDOW

    # verify: every executor available, bit for bit, on the formula's latency
    code, out, err = cli(["verify", str(run), "--target", target, "--windows", "40",
                          "--amaranth-windows", "1", "--ghdl-windows", "2", "--quiet"], capsys)
    assert code == 0, err
    assert "0 mismatching windows" in out
    ver = json.loads((run / "verify.json").read_text())
    assert set(ver["executors"]) == executors_available()
    assert ver["mismatches"] == 0 and all(e["mismatches"] == 0 for e in ver["executors"].values())
    assert ver["latency"]["cycles"] == ver["latency"]["formula_cycles"]
    n_in = WINDOW * n_features
    if "ghdl" in ver["executors"] and n_features == 1:
        # the case of the issue: the old GHDL limit was below one window's latency
        assert ver["latency"]["cycles"] > 200 + 50 * (2 * n_in + 2)
        assert ver["executors"]["ghdl"]["windows"] == 2

    # build one target
    code, out, err = cli(["build", str(run), "--target", target, "--quiet"], capsys)
    assert code == 0, err
    assert out.startswith(f"{target}: ")
    if target == "xc7s15":
        doc = json.loads((run / "build" / "xc7s15" / "synth.json").read_text())
        assert doc["lut"] > 0 and doc["ff"] > 0
        assert doc["fits"] == all(doc[k] <= doc["capacity"][k] for k in doc["capacity"])
        assert (run / "build" / "hdl" / "xc7s15" / "intformer_top.vhd").is_file()
        assert ("fits" if doc["fits"] else "DOES NOT FIT") in out
    else:
        doc = json.loads((run / "build" / "ice40up5k" / "pnr.json").read_text())
        assert doc["counts_from"] == "nextpnr" and doc["fits"] and doc["fmax_mhz"] > 0
        assert doc["lc"] <= doc["capacity"]["lc"]
        assert (run / "build" / "ice40up5k" / "top.bin").stat().st_size > 0
    assert (run / "build" / "hdl" / target / "intformer_top.v").is_file()

    # report: everything above, the other target named as missing
    code, out, err = cli(["report", str(run), "--quiet"], capsys)
    assert code == 0, err
    rep = json.loads((run / "report.json").read_text())
    other = {"xc7s15": "ice40up5k", "ice40up5k": "xc7s15"}[target]
    assert rep[target] is not None and rep[other] is None
    assert rep["bitexact"] is not None and rep["latency"] is not None
    missing = [m for m in rep["missing"] if not m["optional"]]
    assert missing and all(other in json.dumps(m) for m in missing)
    html = (run / "report.html").read_text()
    assert made["target"] in html and html.startswith("<!DOCTYPE html>")
