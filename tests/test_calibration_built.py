"""`python -m flows.calibration built`: the estimator against the synthesis of built designs."""
import json

from flows.calibration import built_table
from flows.calibration import main as calibration_main
from flows.estimate import estimate
from model.synthetic import random_intmodel

SHAPE = dict(features=3, window=8, d_model=8, heads=1, layers=1, ffn=16, norm="batchnorm",
             activation="relu")


def test_built_designs_of_a_deploy_directory_are_compared_with_their_synthesis(tmp_path, capsys):
    model = random_intmodel(SHAPE, bits=6, seed=3)
    run = tmp_path / "deploy" / "xc7s15"
    model.save(run)
    (run / "hw_config.json").write_text(json.dumps({"xc7s15": {}}))
    (run / "build" / "xc7s15").mkdir(parents=True)
    (run / "build" / "xc7s15" / "synth.json").write_text(json.dumps({"lut": 1000, "ff": 800}))
    (tmp_path / "deploy" / "ice40up5k").mkdir()          # a device without a design: skipped
    rows = built_table([tmp_path / "deploy"])
    used = estimate(model, {}, "xc7s15", cache=False).used
    assert [(r["resource"], r["synthesis"], r["estimate"]) for r in rows] == [
        ("LUT", 1000, round(used["LUT"])), ("FF", 800, round(used["FF"]))]
    assert rows[0]["error_pct"] == 100.0 * (used["LUT"] - 1000) / 1000
    assert calibration_main(["built", str(tmp_path / "deploy")]) == 0
    assert "LUT: |error| median" in capsys.readouterr().out
    assert calibration_main(["built", str(tmp_path / "deploy" / "ice40up5k")]) == 1


def test_list_describes_every_configuration(capsys):
    """Mixed-width configurations without a "default" width (random_intmodel's 8) included."""
    assert calibration_main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith(" configurations") and len(out) == int(out[-1].split()[0]) + 1
