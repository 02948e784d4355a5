"""The integer model tracks the fake-quant (QAT) model it was converted from."""
import numpy as np
import pytest
import torch

from model.convert import to_intmodel
from model.intmodel import IntModel
from model.qat import QuantConfig, quantize, set_observing, set_quantising
from model.transformer import ModelConfig, build_model


def calibrated(cfg: ModelConfig, bits, seed=0, windows=384):
    """A QAT model of ``cfg`` (untrained) whose ranges are observed on ``windows`` random
    windows, quantising; and those windows."""
    torch.manual_seed(seed)
    model = build_model(cfg, QuantConfig(default_bits=bits) if isinstance(bits, int)
                        else QuantConfig(default_bits=8, bits=bits), seed=seed)
    x = torch.randn(windows, cfg.window, cfg.features)
    model.train()
    set_observing(model, True)
    with torch.no_grad():
        for i in range(0, len(x), 64):
            model(x[i:i + 64])
    model.eval()
    set_observing(model, False)
    set_quantising(model, True)
    return model, x


@pytest.mark.parametrize("cfg, bits, within_1", [
    (ModelConfig(), 8, 0.98),
    (ModelConfig(), 4, 0.98),
    # Layer-norm amplifies a one-LSB difference of its input into every channel of the token.
    (ModelConfig(norm="layernorm", activation="gelu", heads=2), 8, 0.9),
    (ModelConfig(layers=2, d_model=8, ffn=16), {"l0.ffn_hidden": 4, "*.weight": 6, "pred": 8}, 0.95),
])
def test_integer_model_agrees_with_fake_quant(cfg, bits, within_1, tmp_path):
    model, x = calibrated(cfg, bits)
    with torch.no_grad():
        qat_codes = quantize(model(x), model.fake_quants()["pred"].qparams()).numpy()
    F = cfg.features
    im = to_intmodel(model, {"mean": np.zeros(F), "std": np.ones(F)}, {"mean": 0.0, "std": 1.0},
                     change_feature=0)
    im.save(tmp_path)
    im = IntModel.load(tmp_path)                 # through the file format
    codes = im.forward(im.quantize_input(x.numpy()))["pred"][:, 0].numpy()
    diff = np.abs(codes - qat_codes)
    # The rest differ by the rounding of the fixed-point multipliers (and, with layer-norm, of
    # the integer square root) propagated to the output; these models are calibrated, untrained.
    assert np.mean(diff <= 1) >= within_1
    assert np.mean(diff == 0) >= 0.5


def test_trained_run_agrees_within_one_lsb(quick_run):
    _, metrics = quick_run
    agree = metrics["int_vs_qat"]
    assert agree["windows"] > 1000
    # QAT's quantised forward is the integer model; what can differ is the input's rounding
    # (float32 normalised windows in training, float64 raw ones in the integer model).
    assert agree["within_1_lsb"] >= 0.999 and agree["exact"] >= 0.99
    # The integer model is as accurate as the QAT model it came from.
    assert abs(metrics["int"]["test"]["rmse"] - metrics["qat"]["test"]["rmse"]) < 0.05 * metrics["qat"]["test"]["rmse"]
