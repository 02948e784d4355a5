"""``--task classify`` (issue 20 item 3): labelled series from a PyPI wheel or a CSV, a
classification head (logits, cross-entropy), the integer model's output the logits and the class
(argmax), bit-exact hardware with exact cycles, metrics against the baselines, the report's
confusion matrices, and bad input refused before anything is written."""
import json

import numpy as np
import pytest

from flows.cli import main
from model.data import DataError
from model.intmodel import IntModel, graph_spec
from model.synthetic import random_inputs, random_intmodel
from model.train import class_metrics

SMALL = dict(features=2, window=4, d_model=4, heads=1, layers=1, ffn=8, norm="batchnorm",
             activation="relu", task="classify", classes=3)


def _csv(path, n=90, classes=("a", "b", "c"), length=8, seed=0):
    """One example per row: a sine (a), a ramp (b) or a square wave (c), with noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    shapes = {"a": np.sin(t), "b": t / length * 2 - 1, "c": np.sign(np.sin(t / 2) + 1e-9)}
    rows = []
    for i in range(n):
        c = classes[i % len(classes)]
        rows.append([*(shapes[c] + 0.2 * rng.standard_normal(length)), c])
    cols = [f"t{k}" for k in range(length)] + ["label"]
    import pandas as pd
    pd.DataFrame(rows, columns=cols).to_csv(path, index=False)
    return path


def test_graph_ends_in_logits_and_argmax_and_round_trips(tmp_path):
    specs = graph_spec(SMALL)
    assert [(s.kind, s.output, s.shape) for s in specs[-2:]] == [
        ("linear", "logits", (3,)), ("argmax", "pred", (4,))]
    im = random_intmodel(SMALL, 4, seed=3)
    x = random_inputs(im, 16, seed=1)
    codes = im.pred_codes(x).numpy()
    assert codes.shape == (16, 4) and im.horizon == 4
    logits, cls = im.classify(x)
    assert np.array_equal(cls, np.argmax(logits, axis=1))      # numpy: first maximum too
    im.save(tmp_path)
    back = IntModel.load(tmp_path)
    assert back.task == "classify" and np.array_equal(back.pred_codes(x).numpy(), codes)
    with pytest.raises(ValueError, match="classify"):
        im.dequantize_output(codes)


@pytest.mark.parametrize("bits", [8, 4])
def test_accelerator_outputs_logits_and_class_bit_exact_with_exact_cycles(bits):
    from sim.streams import check_accelerator
    im = random_intmodel(SMALL, bits, seed=2)
    check_accelerator(im, random_inputs(im, 3, seed=bits))


def test_estimator_covers_the_argmax_block():
    from flows.estimate import estimate
    est = estimate(random_intmodel(SMALL, 8, seed=2), None, "xc7s15")
    assert est.per_block["pred"]["LUT"] > 0 and est.per_block["pred"]["FF"] > 0


def test_class_metrics():
    m = class_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert m["accuracy"] == pytest.approx(0.6)
    # F1: class 0: tp 1, fp 1, fn 1 -> 0.5; class 1: tp 2, fn 1 -> 0.8; class 2: 0
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert m["confusion"] == [[1, 0, 1], [1, 2, 0], [0, 0, 0]]


def test_italy_power_demand_from_the_aeon_wheel():
    from flows.datasets import load_task_dataset
    ds = load_task_dataset("italy-power-demand", "classify")
    assert ds.class_names == ["1", "2"] and ds.window == 24 and ds.n_features == 1
    assert (len(ds.train), len(ds.val), len(ds.test)) == (51, 16, 1029)
    assert set(np.unique(ds.train.y)) == {0, 1} and ds.train.y.dtype == np.int64
    assert "aeon 1.6.0" in ds.source


def test_train_verify_report_on_a_csv(tmp_path):
    csv = _csv(tmp_path / "shapes.csv")
    out = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(out), "--task", "classify", "--csv", str(csv),
                 "--target", "label", "--d-model", "4", "--ffn", "8", "--epochs", "30",
                 "--qat-epochs", "2", "--bits", "6"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for k in ("float", "qat", "int"):
        assert set(m[k]["test"]) >= {"accuracy", "macro_f1", "confusion"}
    assert set(m["baseline"]["test"]) == {"majority", "nearest_centroid"}
    assert m["float"]["test"]["accuracy"] > 0.6        # three shapes well apart
    im = IntModel.load(out)
    assert im.config["classes"] == 3 and im.meta["class_names"] == ["a", "b", "c"]
    tw = np.load(out / "test_windows.npz")
    assert tw["outputs"].shape == (m["int"]["test"]["n"], 4)
    from flows import report
    j, _ = report.write(out)
    acc = json.loads(j.read_text())["accuracy"]
    assert acc["task"] == "classify" and acc["int_confusion"] == m["int"]["test"]["confusion"]


@pytest.mark.parametrize("args,message", [
    ([], "no labels"),
    (["--dataset", "seattle-temps"], "no class labels"),
    (["--dataset", "italy-power-demand", "--horizon", "3"], "--horizon"),
])
def test_unusable_data_is_refused_before_the_run_directory(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(out), "--task", "classify", *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_csv_without_labels_or_with_one_class_is_refused(tmp_path, capsys):
    import pandas as pd
    csv = _csv(tmp_path / "x.csv")
    df = pd.read_csv(csv)
    df.drop(columns="label").to_csv(tmp_path / "nolabel.csv", index=False)
    df.assign(label="a").to_csv(tmp_path / "one.csv", index=False)
    for name, message in (("nolabel.csv", "no class column 'label'"),
                          ("one.csv", "has one class ('a')")):
        out = tmp_path / name.replace(".csv", "")
        assert main(["train", "--quiet", "--out", str(out), "--task", "classify", "--csv",
                     str(tmp_path / name), "--target", "label"]) == 2
        err = capsys.readouterr().err
        assert message in err and "--target" in err or "two classes" in err
        assert not out.exists()
    with pytest.raises(DataError, match="--target"):
        from model.classdata import load_classes_csv
        load_classes_csv(csv, None)
