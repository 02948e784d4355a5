"""``--task anomaly`` (issue 20 item 4): a labelled series from a PyPI wheel or a CSV, windows
scored for their last rows, injected anomalies for training and the validation threshold, the
integer model's output the score and the flag (threshold operator), bit-exact hardware with
exact cycles, metrics against the baseline, the report's score trace, bad input refused before
anything is written."""
import json

import numpy as np
import pandas as pd
import pytest

from flows.cli import main
from model.anomalydata import RECENT, load_anomaly_csv
from model.data import DataError
from model.intmodel import IntModel, graph_spec
from model.synthetic import random_inputs, random_intmodel
from model.train import choose_threshold, detection_metrics

SMALL = dict(features=2, window=4, d_model=4, heads=1, layers=1, ffn=8, norm="batchnorm",
             activation="relu", task="anomaly")


def _csv(path, n=600, anomaly=(450, 456), seed=0):
    """A noisy sine with a burst of noise labelled anomalous in rows ``anomaly``."""
    rng = np.random.default_rng(seed)
    x = np.sin(np.arange(n) / 8) + 0.02 * rng.standard_normal(n)
    lab = np.zeros(n, int)
    lab[anomaly[0]:anomaly[1]] = 1
    x[anomaly[0]:anomaly[1]] += rng.normal(0, 0.6, anomaly[1] - anomaly[0])
    pd.DataFrame({"t": np.arange(n), "v": x, "is_anomaly": lab}).to_csv(path, index=False)
    return path


def test_graph_ends_in_score_and_threshold_and_round_trips(tmp_path):
    assert [(s.kind, s.output, s.shape) for s in graph_spec(SMALL)[-2:]] == [
        ("linear", "score", (1,)), ("threshold", "pred", (2,))]
    im = random_intmodel(SMALL, 6, seed=4)
    x = random_inputs(im, 20, seed=1)
    scores, flags = im.detect(x)
    assert np.array_equal(flags, scores >= im.op("pred").params["threshold"])
    im.save(tmp_path)
    assert np.array_equal(IntModel.load(tmp_path).pred_codes(x).numpy(), im.pred_codes(x).numpy())


@pytest.mark.parametrize("bits", [pytest.param(8, marks=pytest.mark.slow), 4])
def test_accelerator_outputs_score_and_flag_bit_exact_with_exact_cycles(bits):
    from sim.streams import check_accelerator
    im = random_intmodel(SMALL, bits, seed=5)
    check_accelerator(im, random_inputs(im, 3, seed=bits))


def test_threshold_is_the_f1_best_and_metrics():
    s = np.array([0.1, 0.9, 0.4, 0.8, 0.2])
    y = np.array([0, 1, 0, 1, 0])
    assert choose_threshold(s, y) == 0.8
    assert choose_threshold([1, 1, 1], [0, 1, 0]) == 1
    m = detection_metrics([1, 1, 0, 0], [1, 0, 1, 0])
    assert (m["precision"], m["recall"], m["f1"]) == (0.5, 0.5, 0.5)


def test_windows_labels_and_injections(tmp_path):
    ds = load_anomaly_csv(_csv(tmp_path / "s.csv"), "v", "is_anomaly", 8, train_end=200)
    assert ds.task == "anomaly" and ds.feature_names == ["v", "d_v"] and ds.window == 8
    # train and validation: each window as it is (0) and with an anomaly injected (1)
    for s in (ds.train, ds.val):
        n = len(s.y) // 2
        assert s.y[:n].sum() == 0 and s.y[n:].all()
        assert not np.allclose(s.X[:n], s.X[n:])
        assert np.allclose(s.X[:n, :-RECENT], s.X[n:, :-RECENT])     # only the last rows move
    # test: the real labels, a window anomalous when one of its last rows is
    assert ds.test.y.sum() == 6 + RECENT - 1


def test_the_aeon_series():
    from flows.datasets import load_task_dataset
    ds = load_task_dataset("ucr-internal-bleeding-16", "anomaly", window=24)
    assert ds.counts["train_end"] == 1200 and ds.counts["rows"] == 7501
    assert ds.test.y.sum() == 12 + RECENT - 1 and "aeon 1.6.0" in ds.source


@pytest.mark.slow
def test_train_and_report_on_a_csv(tmp_path):
    csv = _csv(tmp_path / "s.csv")
    out = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(out), "--task", "anomaly", "--csv", str(csv),
                 "--features", "v", "--target", "is_anomaly", "--window", "8", "--d-model", "4",
                 "--ffn", "8", "--epochs", "4", "--qat-epochs", "1", "--bits", "6"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    for k in ("float", "qat", "int"):
        assert set(m[k]["test"]) >= {"precision", "recall", "f1", "threshold"}
    assert m["baseline"]["test"]["max_abs_diff"]["recall"] > 0
    im = IntModel.load(out)
    assert im.op("pred").params["threshold"] == m["int"]["test"]["threshold"]
    tw = np.load(out / "test_windows.npz")
    assert tw["outputs"].shape[1] == 2
    assert np.array_equal(tw["outputs"][:, 1], np.load(out / "anomaly.npz")["int_flag"])
    from flows import report
    j, h = report.write(out)
    acc = json.loads(j.read_text())["accuracy"]
    assert acc["task"] == "anomaly" and acc["int_f1"] == m["int"]["test"]["f1"]
    assert "Figure 1.</b> The test period" in h.read_text()


@pytest.mark.parametrize("args,message", [
    ([], "no anomaly labels"),
    (["--dataset", "italy-power-demand"], "is for --task classify"),
    (["--dataset", "ucr-internal-bleeding-16", "--window", "2000"], "--window"),
])
def test_unusable_data_is_refused_before_the_run_directory(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert main(["train", "--quiet", "--out", str(out), "--task", "anomaly", *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_csv_without_labels_or_anomalies_is_refused(tmp_path):
    df = pd.read_csv(_csv(tmp_path / "s.csv"))
    df.drop(columns="is_anomaly").to_csv(tmp_path / "nolabel.csv", index=False)
    df.assign(is_anomaly=0).to_csv(tmp_path / "none.csv", index=False)
    with pytest.raises(DataError, match="no anomaly label"):
        load_anomaly_csv(tmp_path / "nolabel.csv", "v", "is_anomaly", 8)
    with pytest.raises(DataError, match="no anomaly is labelled in the test part"):
        load_anomaly_csv(tmp_path / "none.csv", "v", "is_anomaly", 8)
