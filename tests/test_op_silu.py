"""SiLU, added as one registry module (model/ops/silu.py): its table against the float function,
the hardware table against the integer model, a whole accelerator bit for bit with exact
cycles, and QAT training from the command line."""
import json

import numpy as np
import pytest
import torch
from torch.nn import functional as Fn

from flows.cli import build_parser, main
from hw.elementwise import LutActivation
from model import intops, ops
from model.convert import to_intmodel
from model.intmodel import IntModel
from model.qat import dequantize, quantize
from model.synthetic import random_inputs, random_intmodel
from model.transformer import ModelConfig
from sim.streams import check_accelerator, run_stream_block
from test_convert import calibrated

SMALL = dict(features=3, window=4, d_model=4, heads=1, layers=1, ffn=8, norm="batchnorm",
             activation="silu")


def converted(bits, seed=0, **shape):
    """The integer model of a calibrated (untrained) QAT SiLU model, and its inputs."""
    cfg = ModelConfig(**{**SMALL, **shape}, forecast="level")
    model, x = calibrated(cfg, bits, seed, windows=256)
    F = cfg.features
    im = to_intmodel(model, {"mean": np.zeros(F), "std": np.ones(F)}, {"mean": 0.0, "std": 1.0})
    return model, im, x


def test_silu_is_a_registered_table_activation_and_a_cli_choice():
    act = ops.activation("silu")
    assert act.table and act.first_linear == "ffn_pre"
    assert "silu" in ops.activations()
    a = build_parser().parse_args(["train", "--out", "x", "--activation", "silu"])
    assert a.activation == "silu"


@pytest.mark.parametrize("bits", [3, 4, 6, 8])
def test_table_is_silu_within_half_an_output_step(bits):
    model, im, _ = converted(bits)
    op = im.op("l0.ffn_hidden")
    assert op.kind == "lut" and op.spec.dims["function"] == "silu"
    xt, ot = im.tensors["l0.ffn_pre"], im.tensors["l0.ffn_hidden"]
    codes = torch.arange(xt.qtype.qmin, xt.qtype.qmax + 1)
    table = torch.as_tensor(op.arrays["table"])
    # The float function on the input codes' values, limited to what the output can hold.
    lo = (ot.qtype.qmin - ot.qtype.zero_point) * ot.scale
    hi = (ot.qtype.qmax - ot.qtype.zero_point) * ot.scale
    want = Fn.silu(dequantize(codes, model.fq_point("l0.ffn_pre").qparams())).double().clamp(lo, hi)
    got = (table - ot.qtype.zero_point).double() * ot.scale
    assert (got - want).abs().max().item() <= ot.scale / 2 * (1 + 1e-5)
    # SiLU's minimum, -0.278 x, is inside the range the calibrated output type covers.
    assert table.min().item() < ot.qtype.zero_point
    # The integer operator is the table, on every input code.
    assert torch.equal(intops.lut_activation(codes, xt.qtype, op.arrays["table"], ot.qtype), table)


def test_qat_forward_is_the_integer_model():
    model, im, x = converted(6)
    with torch.no_grad():
        qat = quantize(model(x), model.fq_point("pred").qparams())
    assert torch.equal(qat, im.forward(im.quantize_input(x.numpy()))["pred"][:, 0])


@pytest.mark.parametrize("bits,seed,stall,storage", [
    (8, 0, 0.0, "bram"), (6, 1, 0.3, "lutram"), (4, 2, 0.3, "registers"), (3, 3, 0.0, "lutram")])
def test_table_block_equals_the_integer_model(bits, seed, stall, storage):
    _, im, x = converted(bits, seed)
    v = im.forward(im.quantize_input(x[:2].numpy()))
    dut = LutActivation.from_op(im, "l0.ffn_hidden", storage=storage)
    pre, want = v["l0.ffn_pre"].reshape(-1), v["l0.ffn_hidden"].reshape(-1)
    codes = torch.arange(im.qtype("l0.ffn_pre").qmin, im.qtype("l0.ffn_pre").qmax + 1)
    stream = torch.cat([pre, codes])                  # the model's values, then every code
    got, cycles = run_stream_block(dut, {"i": stream.tolist()}, {"o": stream.numel()},
                                   stall_in=stall, stall_out=stall, seed=seed)
    table = torch.as_tensor(dut.table)
    assert got["o"] == torch.cat([want, table]).tolist()
    if stall == 0:
        assert cycles == dut.cycles(stream.numel())


@pytest.mark.parametrize("bits,shape", [(8, {}), (4, {"norm": "layernorm", "heads": 2}),
                                        (6, {"layers": 2, "ffn": 4})])
def test_accelerator_is_bit_exact_with_exact_cycles(bits, shape, tmp_path):
    _, im, x = converted(bits, **shape)
    im = IntModel.load(im.save(tmp_path))             # through the file format
    check_accelerator(im, im.quantize_input(x[:3].numpy()), stall_in=0.3, stall_out=0.4, seed=bits)


def test_synthetic_silu_models_are_bit_exact():
    model = random_intmodel(SMALL, bits=5, seed=4)
    assert model.op("l0.ffn_hidden").kind == "lut"
    check_accelerator(model, random_inputs(model, 2, seed=5),
                      {"kinds": {"lut": {"storage": "registers"}}}, stall_out=0.5)


@pytest.mark.slow
def test_short_qat_training_with_silu(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--activation", "silu", "--bits", "6", "--epochs", "1",
                 "--qat-epochs", "1", "--max-train-windows", "300", "--quiet"])
    assert code == 0 and "test RMSE" in capsys.readouterr().out
    doc = json.loads((out / "intmodel.json").read_text())
    assert doc["config"]["activation"] == "silu"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["int_vs_qat"]["within_1_lsb"] >= 0.99
    im = IntModel.load(out)
    assert im.op("l0.ffn_hidden").kind == "lut" and "l0.ffn_pre" in im.tensors


@pytest.mark.parametrize("device", ["xc7s15", "ice40up5k"])
def test_the_estimator_prices_the_silu_table(device):
    from flows.estimate import estimate
    from hw.presets import preset
    _, im, _ = converted(6)
    est = estimate(im, preset(device, 6), device, cache=False)
    assert all(np.isfinite(v) and v >= 0 for v in est.used.values())
    # The FFN residual's body: linear ffn_pre, the SiLU table, linear ffn_out.
    assert sum(est.per_block["l0_res2_body1"].values()) > 0
