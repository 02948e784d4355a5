import json

import numpy as np
import pytest
import torch

from model.data import load_weather
from model.train import TrainConfig, evaluate, load_run, persistence_metrics, predict, train_run


@pytest.fixture(scope="module")
def data():
    return load_weather()


@pytest.fixture(scope="module")
def short_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = TrainConfig(epochs=4, patience=4, qat_epochs=1, calib_batches=4, max_train_windows=1200, seed=3)
    events = []
    res = train_run(cfg, data, out, callback=events.append)
    return res, out, events


def test_short_training_lowers_val_loss(short_run):
    res, out, events = short_run
    hist = [h for h in res.history if h["phase"] == "float"]
    assert hist[0]["epoch"] == 0 and hist[0]["train_loss"] is None
    best = min(h["val_loss"] for h in hist[1:])
    assert best < 0.5 * hist[0]["val_loss"]
    assert any(e.get("phase") == "qat" for e in events) and all("elapsed" in e for e in events)
    m = res.metrics
    for k in ("float", "qat", "persistence"):
        assert np.isfinite(m[k]["test"]["rmse"]) and m[k]["test"]["rmse"] > 0
    # RMSE in deg F is sqrt(normalised MSE) * target std
    d = load_weather()
    assert m["float"]["val"]["rmse"] == pytest.approx(np.sqrt(m["float"]["val"]["loss"]) * d.target_std, rel=1e-4)


def test_checkpoints_round_trip(short_run, data):
    res, out, _ = short_run
    for f in ("float.pt", "qat.pt", "config.json", "metrics.json", "qparams.json"):
        assert (out / f).is_file()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["train"]["model"]["d_model"] == 16 and cfg["data"]["feature_names"][0] == "temp"
    qp = json.loads((out / "qparams.json").read_text())
    assert qp["l0.attn"]["scheme"] == "fixed" and "pred.weight" in qp
    for which, model in (("float", res.float_model), ("qat", res.qat_model)):
        loaded, _ = load_run(out, which)
        np.testing.assert_array_equal(predict(loaded, data.test.X[:200]), predict(model, data.test.X[:200]))
    assert evaluate(res.qat_model, data, "test")["rmse"] == pytest.approx(res.metrics["qat"]["test"]["rmse"])


def test_deterministic(data):
    cfg = TrainConfig(epochs=1, max_train_windows=300, seed=7)
    a = train_run(cfg, data, None, qat=False).float_model
    b = train_run(cfg, data, None, qat=False).float_model
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n


def test_persistence_baseline(data):
    m = persistence_metrics(data, "test")
    assert 1.0 < m["rmse"] < 2.5 and m["n"] == len(data.test)


def test_shape_mismatch_message(data):
    from model.transformer import ModelConfig
    with pytest.raises(ValueError, match="window=24"):
        train_run(TrainConfig(model=ModelConfig(window=12), epochs=1), data, None)


@pytest.mark.slow
def test_qat_mixed_precision_and_frozen_observers(short_run, data):
    from model.qat import QuantConfig, fake_quants
    from model.train import train_qat

    res, _, _ = short_run
    quant = QuantConfig(default_bits=6, bits={"l*.attn": 7, "*.weight": 4})
    cfg = TrainConfig(qat_epochs=1, calib_batches=4, max_train_windows=600, freeze_observers_after=0, quant=quant)
    q = train_qat(cfg, data, res.float_model)
    # ranges are exactly those of the calibration (observers frozen from the first epoch)
    ref = train_qat(TrainConfig(qat_epochs=0, calib_batches=4, max_train_windows=600, quant=quant), data, res.float_model)
    fq, fr = fake_quants(q), fake_quants(ref)
    for name in ("l0.scores", "pooled", "embed"):
        assert fq[name].lo.item() == fr[name].lo.item() and fq[name].hi.item() == fr[name].hi.item()
    qp = q.quant_params()
    assert qp["l0.attn"]["bits"] == 7 and qp["l0.q.weight"]["bits"] == 4 and qp["pooled"]["bits"] == 6
    assert qp["l0.attn"]["scale"] == 2**-7
    assert np.isfinite(evaluate(q, data, "val")["rmse"])
    assert res.float_model.fq_point("pooled").quantising is False  # float model untouched


def test_variant_architecture_trains(data):
    from model.transformer import ModelConfig
    cfg = TrainConfig(model=ModelConfig(activation="gelu", norm="layernorm", heads=2, layers=2, d_model=8),
                      epochs=2, qat_epochs=1, calib_batches=2, max_train_windows=256)
    res = train_run(cfg, data, None)
    qp = res.qat_model.quant_params()
    assert "l1.ffn_pre" in qp and "l1.ffn_pre.bias" in qp and qp["l1.ffn_pre.bias"]["min"] <= qp["l1.ffn_pre.bias"]["max"]
    assert np.isfinite(res.metrics["qat"]["test"]["rmse"])


def test_distillation_pulls_towards_the_float_model(data):
    """With weight 1 the QAT loss is the distance to the float model's outputs, which an 8-bit
    copy of that model starts close to; the loss on the targets is the forecast error."""
    from model.train import train_float, train_qat
    base = TrainConfig(epochs=2, qat_epochs=1, calib_batches=2, max_train_windows=300, seed=5)
    fmodel = train_float(base, data)
    losses = {}
    for weight in (0.0, 1.0):
        history = []
        train_qat(TrainConfig(**{**base.to_dict(), "qat_distill": weight}), data, fmodel, history=history)
        losses[weight] = next(h["train_loss"] for h in history if h["epoch"] == 1)
    assert losses[1.0] < 0.5 * losses[0.0]


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_distillation_weight_is_checked(weight):
    with pytest.raises(ValueError, match="qat_distill"):
        TrainConfig(qat_distill=weight)


def test_qat_options_reach_the_training_config(data):
    from flows.run import TrainOptions, train_config
    cfg = train_config(TrainOptions(qat_lr=1e-3, distill=0.25, qat_bn="train"), data)
    assert (cfg.qat_lr, cfg.qat_distill, cfg.qat_freeze_bn) == (1e-3, 0.25, False)
    assert train_config(TrainOptions(), data).qat_freeze_bn
