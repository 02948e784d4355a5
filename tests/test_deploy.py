"""`intformer deploy` / `demo`: one float model, per device the widest preset design that fits."""
import json

import pytest

from flows.deploy import DoesNotFitAnyWay, candidate_widths, deploy, render_html
from flows.run import RunError, TrainOptions

QUICK = dict(epochs=2, qat_epochs=1, max_train_windows=600)


def test_candidates_are_the_presets_widest_first():
    from hw.presets import PRESETS
    for target, widths in PRESETS.items():
        assert candidate_widths(target) == sorted(widths, reverse=True)
    with pytest.raises(RunError, match="unknown target 'artix'"):
        candidate_widths("artix")


def test_designs_start_with_the_preset_then_spare_dsps():
    from flows.deploy import designs
    from hw.presets import preset
    for target in ("xc7s15", "ice40up5k"):
        tried = designs(target, 8)
        assert tried[0] == ("preset", preset(target, 8))
        assert all(hw["blocks"]["*.attn_out"]["mul"] == "lut" for _, hw in tried[1:])
        assert tried[-1][1]["blocks"]["proj"]["mul"] == "lut"
        # the preset's other knobs of those blocks stay
        assert {k: v for k, v in tried[-1][1]["blocks"]["proj"].items() if k != "mul"} == \
            {k: v for k, v in preset(target, 8)["blocks"].get("proj", {}).items() if k != "mul"}


def test_unknown_target_fails_before_training(tmp_path):
    with pytest.raises(RunError, match="unknown target"):
        deploy(tmp_path / "d", TrainOptions(**QUICK), ["xc7s15", "artix"], progress=lambda m: None)
    assert not (tmp_path / "d").exists()


def test_a_model_that_fits_no_way_says_what_to_change(tmp_path):
    out = tmp_path / "big"
    opts = TrainOptions(d_model=64, ffn=256, **QUICK)
    with pytest.raises(DoesNotFitAnyWay, match=r"ice40up5k: 8 bits \(LC.*4 bits \(LC.*--d-model"):
        deploy(out, opts, ["ice40up5k"], build_designs=False, progress=lambda m: None)
    assert not (out / "deploy.json").exists() and not (out / "report.html").exists()
    assert not (out / "ice40up5k").exists()


@pytest.mark.slow
@pytest.mark.verilator
def test_deploy_trains_once_and_verifies_each_design(tmp_path):
    out = tmp_path / "d"
    messages = []
    doc = deploy(out, TrainOptions(**QUICK), ["xc7s15"], build_designs=False,
                 progress=messages.append)
    r = doc["targets"]["xc7s15"]
    assert r["bits"] == 8 and r["mismatches"] == 0 and r["verified_windows"] > 0
    assert r["tried"][0]["fits"] and r["tried"][0]["bits"] == 8
    assert sum("float training" in m for m in messages) == 1
    run = out / "xc7s15"
    assert json.loads((run / "targets.json").read_text()) == {"targets": ["xc7s15"]}
    assert (run / "intmodel.json").is_file() and (run / "verify.json").is_file()
    assert json.loads((out / "deploy.json").read_text())["targets"]["xc7s15"]["int_rmse"] == r["int_rmse"]
    page = (out / "report.html").read_text()
    assert "Spartan-7 XC7S15" in page and "iCE40" not in page


def test_page_has_one_column_per_device():
    row = {"bits": 8, "int_rmse": 1.5, "mismatches": 0, "verified_windows": 10,
           "executors": ["amaranth"], "cycles": 5000, "us": 50.0, "clock_mhz": 100.0,
           "fits": True, "synthesis": {"lut": 7000}, "estimate": {"LUT": 6900},
           "tried": [{"bits": 8, "design": "preset", "summary": "xc7s15 estimate: LUT 6900/8000"}], "run": "/x/xc7s15"}
    doc = {"dataset": "d", "target_column": "t", "float_rmse": 1.4, "persistence_rmse": 1.6,
           "targets": {"xc7s15": row, "ice40up5k": {**row, "bits": 4, "fits": False,
                                                     "synthesis": {"lc": 5300}, "estimate": {"LC": 5200},
                                                     "run": "/x/ice40up5k"}}}
    page = render_html(doc)
    assert page.count("<th>Spartan-7 XC7S15</th>") == 1 and page.count("<th>iCE40 UP5K</th>") == 1
    assert "LUT 7,000 (estimate 6,900)" in page and "LC 5,300 (estimate 5,200)" in page
    assert "does not fit" in page and 'href="ice40up5k/report.html"' in page


@pytest.mark.slow
@pytest.mark.verilator
def test_targets_in_parallel_processes_report_a_failure(tmp_path):
    """With several targets each deploys in its own process; a target that fits no way
    (the UP5K with a 128-wide FFN: its weights and buffers need 32 EBR of 30 in every design,
    an exact count) gets its reason in its column, the other target's design stays, and
    demo's exit status says it failed."""
    from flows.demo import summary
    out = tmp_path / "d"
    doc = deploy(out, TrainOptions(**QUICK, ffn=128), ["xc7s15", "ice40up5k"], build_designs=False,
                 parallel=True, progress=print)
    assert doc["targets"]["xc7s15"]["mismatches"] == 0
    assert "fits the ice40up5k" in doc["targets"]["ice40up5k"]["error"]
    assert json.loads((out / "deploy.json").read_text())["targets"]["ice40up5k"] == doc["targets"]["ice40up5k"]
    assert "no design of this model fits the ice40up5k" in (out / "report.html").read_text()
    assert "ice40up5k: NO DESIGN" in summary(doc)


def test_a_worker_failure_comes_back_as_a_picklable_error(tmp_path):
    """A device's worker process can only hand back an exception that pickles (a tool's error
    class need not): any failure there becomes a RunError naming the device and the cause."""
    import pickle

    from flows.deploy import _deploy_target_in_process
    with pytest.raises(RunError, match=r"xc7s15: FileNotFoundError: .*float\.pt") as info:
        _deploy_target_in_process(tmp_path, TrainOptions(**QUICK), "xc7s15", False, lambda m: None)
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)


def test_the_main_job_shows_progress_when_piped(capsys):
    """demo and deploy run for minutes, often with their output in a log: progress lines go to
    stderr even when it is not a terminal, unless --quiet."""
    from flows.cli import Progress
    Progress(quiet=False, verbose=False, piped=True)("float training")
    assert "float training" in capsys.readouterr().err
    Progress(quiet=False, verbose=False)("float training")
    Progress(quiet=True, verbose=False, piped=True)("float training")
    assert capsys.readouterr().err == ""
