"""The accuracy recipe (change forecast, learned ranges, whole mini-batches) and the
`intformer accuracy` benchmark's document."""
import json

import numpy as np
import pytest
import torch

from flows.accuracy import WIDTHS, format_table, ridge_rmse, run_accuracy
from flows.run import TrainOptions, train_config
from model import train as T
from model.convert import to_intmodel_for
from model.data import load_weather
from model.intmodel import IntModel
from model.qat import FakeQuant, QuantParams, compute_qparams, fake_quantize


@pytest.fixture(scope="module")
def data():
    return load_weather()


def test_ragged_last_batch_is_dropped():
    gen = torch.Generator().manual_seed(0)
    sizes = [len(b) for b in T._batches(130, 64, gen)]
    assert sizes == [64, 64]
    assert [len(b) for b in T._batches(10, 64, gen)] == [10]     # fewer windows than a batch


def test_learned_fake_quant_has_the_observer_values_and_lsq_gradients():
    torch.manual_seed(0)
    x = torch.randn(4000) * 2 + 0.5          # within one batch's sample: the MSE is over x itself
    for bits in (2, 4, 8):
        fq = FakeQuant("t", bits, "adaptive", "ema", learn=True)
        fq.collecting = fq.observing = True
        fq(x)
        fq.observing = False
        fq.init_learned()
        fq.quantising = True
        qp = fq.qparams()
        xg = x.clone().requires_grad_(True)
        y = fq(xg)
        # the same numbers as the plain fake quantiser with the same parameters (so as the
        # integer model's codes)
        assert torch.equal(y.detach(), fake_quantize(x, qp))
        # MSE-optimal clipping is no worse than the observed min/max range
        plain = compute_qparams(float(x.min()), float(x.max()), bits, "adaptive")
        assert torch.mean((y.detach() - x) ** 2) <= torch.mean((fake_quantize(x, plain) - x) ** 2)
        # LSQ: d out / d s = round(x/s) - x/s inside the range, the clamped code outside
        y.sum().backward()
        s, z = qp.scale, qp.zero_point
        q = torch.round(x / s) + z
        inside = (q >= qp.qmin) & (q <= qp.qmax)
        want = torch.where(inside, q - z - x / s, q.clamp(qp.qmin, qp.qmax) - z).sum() * s
        assert fq.log_scale.grad.item() == pytest.approx(want.item(), rel=1e-3, abs=1e-3)
        assert torch.equal(xg.grad, inside.float())


def test_change_forecast_round_trips_and_adds_the_last_value(data, tmp_path):
    cfg = train_config(TrainOptions(epochs=1, qat_epochs=0, max_train_windows=300), data)
    assert cfg.model.forecast == "change"
    fm = T.train_float(cfg, data)
    qm = T.train_qat(cfg, data, fm)
    im = to_intmodel_for(qm, data)
    assert im.change_feature == data.feature_names.index("temp")
    im.save(tmp_path)
    back = IntModel.load(tmp_path)
    raw = data.denormalise_features(data.test.X[:50])
    codes = back.forward(back.quantize_input(raw))["pred"][:, 0].numpy()
    t = back.tensors["pred"]
    delta = t.scale * (codes - t.qtype.zero_point) * data.target_std
    np.testing.assert_allclose(back.predict(raw), raw[:, -1, im.change_feature] + delta)
    with pytest.raises(ValueError, match="windows"):
        back.dequantize_output(codes)
    # a file without the key (saved before change forecasts) is a level forecast
    doc = json.loads((tmp_path / "intmodel.json").read_text())
    del doc["forecast"]
    (tmp_path / "intmodel.json").write_text(json.dumps(doc))
    assert IntModel.load(tmp_path).change_feature is None


def test_change_forecast_needs_the_target_among_the_features(tmp_path):
    import pandas as pd
    from model.data import load_csv
    t = pd.date_range("2024-01-01", periods=400, freq="h")
    rng = np.random.default_rng(0)
    pd.DataFrame({"time": t, "a": rng.normal(size=400), "y": rng.normal(size=400)}).to_csv(tmp_path / "d.csv", index=False)
    d = load_csv(tmp_path / "d.csv", "time", ["a"], "y", window=8)
    cfg = train_config(TrainOptions(window=8, epochs=1), d)
    assert cfg.model.forecast == "level"                       # auto
    cfg.model.forecast = "change"
    with pytest.raises(ValueError, match="not among the input features"):
        T.train_float(cfg, d)


@pytest.mark.slow
def test_learned_ranges_beat_observers_at_4_bits(data):
    """A short 4-bit QAT run from one float model on a fixed slice: the learned ranges end at a
    lower validation loss than min/max observers."""
    losses = {}
    base = train_config(TrainOptions(epochs=6, max_train_windows=1500, seed=1), data)
    fm = T.train_float(base, data)
    for ranges in ("learned", "observed"):
        cfg = train_config(TrainOptions(bits=4, qat_epochs=3, max_train_windows=1500, seed=1,
                                        ranges=ranges), data)
        qm = T.train_qat(cfg, data, fm)
        losses[ranges] = T.evaluate(qm, data, "val")["loss"]
    assert losses["learned"] < losses["observed"], losses


@pytest.mark.slow
def test_benchmark_document(data):
    opts = TrainOptions(epochs=1, qat_epochs=1, max_train_windows=300)
    doc = run_accuracy(opts, seeds=2, widths=("8", "4io8"), progress=lambda m: None)
    for key in ("float_rmse", "persistence_rmse", "linear_rmse"):
        assert np.isfinite(doc[key]) and doc[key] > 0
    assert set(doc["widths"]) == {"8", "4io8"} and doc["seeds"] == [0, 1]
    for w in doc["widths"].values():
        assert set(w) >= {"rmse_mean", "rmse_min", "rmse_max", "ratio_to_float"}
        assert w["rmse_min"] <= w["rmse_mean"] <= w["rmse_max"]
        assert w["ratio_to_float"] == pytest.approx(w["rmse_mean"] / doc["float_rmse"])
    for w in doc["widths"].values():
        assert 0.0 <= w["exact"] <= w["within_1_lsb"] <= 1.0
    json.dumps(doc)
    assert "| integer 4io8 |" in format_table(doc)
    assert set(WIDTHS) == {"8", "6", "4io8", "4"}


def test_ridge_baseline_beats_persistence_on_the_default_data(data):
    assert ridge_rmse(data)["rmse"] < T.persistence_metrics(data, "test")["rmse"]


@pytest.mark.parametrize("bits", [8, 4])
def test_quantised_forward_is_the_integer_model(data, bits):
    """The QAT model's quantised forward has the integer model's values (its gradients are the
    fake quantisers'): on the same input codes, the same output codes."""
    from model.qat import quantize
    cfg = train_config(TrainOptions(bits=bits, epochs=1, qat_epochs=1, max_train_windows=300), data)
    qm = T.train_qat(cfg, data, T.train_float(cfg, data))
    im = to_intmodel_for(qm, data)
    X = torch.as_tensor(data.test.X[:300])
    fqs = qm.fake_quants()
    with torch.no_grad():
        qat_codes = quantize(qm(X), fqs["pred"].qparams()).numpy()
    int_codes = im.forward(quantize(X, fqs["input"].qparams()))["pred"][:, 0].numpy()
    np.testing.assert_array_equal(qat_codes, int_codes)
