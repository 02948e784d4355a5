"""The command line: help with examples, clear errors, a short end-to-end training."""
import json

import pytest

from flows.cli import main


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_every_stage_with_an_example(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for stage in ("train", "build", "verify", "report", "demo"):
        assert stage in out
    assert "intformer demo --out" in out
    for stage in ("train", "build", "verify", "report", "demo"):
        with pytest.raises(SystemExit):
            main([stage, "--help"])
        assert "example:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "--bits", "9", "--out", "{tmp}/r"], "from 2 to 8"),
    (["train", "--bits", "1", "--out", "{tmp}/r"], "from 2 to 8"),
    (["train", "--csv", "{tmp}/missing.csv", "--time-column", "t", "--features", "a",
      "--target", "a", "--out", "{tmp}/r"], "missing.csv"),
    (["train", "--window", "100000", "--out", "{tmp}/r"], "window"),
    (["build", "{tmp}", "--target", "xc7s15"], "intmodel.json is missing"),
    (["verify", "{tmp}"], "intmodel.json is missing"),
])
def test_bad_input_gives_a_clear_error(argv, message, tmp_path, capsys):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_broken_run_file_is_named(quick_run, tmp_path, capsys):
    import shutil
    run_dir, _ = quick_run
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    (broken / "intmodel.json").write_text("{ not json")
    code, _, err = run(["verify", str(broken)], capsys)
    assert code == 2 and "intmodel.json" in err and "not valid JSON" in err


def test_short_training_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(["train", "--out", str(out), "--bits", "6", "--epochs", "1",
                           "--qat-epochs", "1", "--max-train-windows", "300", "--quiet"], capsys)
    assert code == 0 and "test RMSE" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"float", "qat", "int", "persistence", "int_vs_qat"} <= set(metrics)
    doc = json.loads((out / "intmodel.json").read_text())
    assert doc["format"] == "intformer-intmodel" and doc["version"] == 2
    assert all(t["bits"] == 6 for n, t in doc["tensors"].items() if not n.endswith(".attn"))
