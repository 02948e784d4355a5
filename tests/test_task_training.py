"""What the classify / anomaly tasks train with (README, 'Tasks'): decoy windows and one
feature scale for the detector, thresholds for a rare anomaly, 8-bit input and output below
8 bits, and `intformer accuracy` on a task."""
import json

import numpy as np
import pytest

from flows.run import ANOMALY_DATA, TrainOptions, load_data, task_bits, train_config
from model.anomalydata import RECENT, load_anomaly_csv
from model.train import choose_threshold
from tests.test_task_anomaly import _csv as anomaly_csv
from tests.test_task_classify import _csv as classes_csv


def test_threshold_for_a_rare_anomaly_counts_false_alarms_more():
    # 10 anomalous windows scored 1..10, 5 clean ones at 5 and 15 below 0
    s = np.r_[np.arange(1, 11), np.full(5, 5.0), -np.arange(1, 16)]
    y = np.r_[np.ones(10), np.zeros(20)]
    assert choose_threshold(s, y) == 1.0               # at 50 %: every detection is worth it
    assert choose_threshold(s, y, prevalence=0.01) == 6.0     # at 1 %: no false alarm
    assert choose_threshold(s, y, prevalence=1 / 3) == choose_threshold(s, y)   # the split's own


def test_decoys_and_one_feature_scale(tmp_path):
    ds = load_anomaly_csv(anomaly_csv(tmp_path / "s.csv"), "v", "is_anomaly", 12, train_end=200,
                          decoys=True, prevalence=0.01)
    assert ds.counts["prevalence"] == 0.01
    assert ds.feature_std[0] == ds.feature_std[1]
    for s in (ds.train, ds.val):
        n = len(s.y) // 3                   # as they are (0), injected (1), decoys (0)
        assert s.y[:n].sum() == 0 and s.y[n:2 * n].all() and s.y[2 * n:].sum() == 0
        clean, decoy = s.X[:n], s.X[2 * n:]
        # the decoy's anomaly is in the older rows: the last rows' values are the clean ones
        assert np.array_equal(clean[:, -RECENT:, 0], decoy[:, -RECENT:, 0])
        assert not np.allclose(clean[:, :-RECENT], decoy[:, :-RECENT])
    plain = load_anomaly_csv(anomaly_csv(tmp_path / "s.csv"), "v", "is_anomaly", 12, train_end=200)
    assert len(plain.train.y) * 3 == len(ds.train.y) * 2 and "prevalence" not in plain.counts


def test_task_data_and_io_bits(tmp_path):
    assert ANOMALY_DATA == {"decoys": True, "prevalence": 0.01}
    assert task_bits("classify", "logits", 4) == {"input": 8, "logits": 8}
    assert task_bits("anomaly", "score", 6) == {"input": 8, "score": 8}
    assert task_bits("classify", "logits", 8) == {} and task_bits("forecast", "pred", 4) == {}
    opts = TrainOptions(task="classify", csv=str(classes_csv(tmp_path / "c.csv")), target_column="label",
                        bits=4)
    data = load_data(opts)
    q = train_config(opts, data).quant
    assert (q.bits_for("input"), q.bits_for("logits"), q.bits_for("l0.q")) == (8, 8, 4)
    q = train_config(TrainOptions(**{**opts.__dict__, "bits_map": {"logits": 4}}), data).quant
    assert (q.bits_for("input"), q.bits_for("logits")) == (8, 4)
    a = TrainOptions(task="anomaly", csv=str(anomaly_csv(tmp_path / "a.csv")), feature_columns=["v"],
                     target_column="is_anomaly", window=8)
    assert load_data(a).counts["prevalence"] == 0.01


def test_accuracy_benchmark_of_a_task(tmp_path):
    from flows.accuracy import format_task_table, run_task_accuracy
    opts = TrainOptions(task="classify", csv=str(classes_csv(tmp_path / "c.csv")), target_column="label",
                        d_model=4, ffn=8, epochs=2, qat_epochs=1)
    doc = run_task_accuracy(opts, seeds=2, widths=("8", "4"), progress=lambda m: None)
    assert doc["metric"] == "accuracy" and doc["seeds"] == [0, 1]
    assert doc["bits"]["4"] == {"default": 4, "overrides": {"input": 4, "logits": 4}}
    for w in (doc["float"], *doc["widths"].values()):
        assert 0.0 <= w["min"] <= w["mean"] <= w["max"] <= 1.0
    assert 0.0 <= doc["baseline"]["accuracy"] <= 1.0
    json.dumps(doc)
    assert "| integer 4 |" in format_task_table(doc) and "nearest centroid" in format_task_table(doc)


def test_detector_training_defaults(tmp_path):
    from model.train import TrainConfig
    a = TrainOptions(task="anomaly", csv=str(anomaly_csv(tmp_path / "a.csv")), feature_columns=["v"],
                     target_column="is_anomaly", window=8, bits=4)
    data = load_data(a)
    c4 = train_config(a, data)
    assert (c4.label_smoothing, c4.qat_lr, c4.qat_epochs, c4.qat_patience) == (0.1, 1e-3, 40, 10)
    c8 = train_config(TrainOptions(**{**a.__dict__, "bits": 8}), data)
    assert (c8.label_smoothing, c8.qat_lr, c8.qat_epochs) == (0.1, TrainConfig().qat_lr, TrainConfig().qat_epochs)
    c = train_config(TrainOptions(**{**a.__dict__, "qat_lr": 5e-4, "qat_epochs": 3}), data)
    assert (c.qat_lr, c.qat_epochs) == (5e-4, 3)
    assert train_config(TrainOptions(task="classify", csv=str(classes_csv(tmp_path / "c.csv")),
                                     target_column="label", bits=4),
                        load_data(TrainOptions(task="classify", csv=str(tmp_path / "c.csv"),
                                               target_column="label"))).label_smoothing == 0.0
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)


@pytest.mark.slow
def test_smoothed_detector_scores_stay_bounded():
    """Smoothed 0 / 1 targets (0.05 / 0.95) pull a detector's logits towards +-log(19) ~ 2.9
    (the typical one: the median magnitude)."""
    import torch
    from model.train import _fit
    from model.transformer import Forecaster, ModelConfig
    torch.manual_seed(0)
    X = torch.randn(64, 4, 2)
    y = (X[:, -1, 0] > 0).float()
    out = {}
    for e in (0.0, 0.1):
        torch.manual_seed(0)
        m = Forecaster(ModelConfig(features=2, window=4, d_model=4, ffn=8, task="anomaly", forecast="level"))
        _fit(m, X, y, X, y, lr=1e-2, epochs=40, patience=40, batch_size=64, weight_decay=0.0,
             grad_clip=None, gen=torch.Generator().manual_seed(0), phase="float", history=[],
             emit=lambda ev: None, label_smoothing=e)
        m.eval()
        with torch.no_grad():
            out[e] = m(X).abs().median().item()
    assert out[0.1] < 0.9 * out[0.0], out


@pytest.mark.parametrize("task,head", [("classify", "logits"), ("anomaly", "score")])
def test_accelerator_of_the_task_default_widths_is_bit_exact(task, head):
    """A task's --bits 4: a 4-bit body with 8-bit input and output, bit-exact with exact cycles."""
    from model.synthetic import random_inputs, random_intmodel
    from sim.streams import check_accelerator
    cfg = dict(features=2, window=4, d_model=4, heads=1, layers=1, ffn=8, norm="batchnorm",
               activation="relu", task=task, **({"classes": 3} if task == "classify" else {}))
    im = random_intmodel(cfg, {"default": 4, **task_bits(task, head, 4)}, seed=7)
    assert im.qtype("input").bits == 8 and im.qtype(head).bits == 8 and im.qtype("l0.q").bits == 4
    check_accelerator(im, random_inputs(im, 3, seed=2))
