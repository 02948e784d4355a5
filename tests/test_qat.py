import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from model.qat import (
    FakeQuant,
    QuantConfig,
    choose_scheme,
    compute_qparams,
    dequantize,
    fake_quantize,
    fake_quants,
    quant_params,
    quantize,
    init_learned_ranges,
    range_parameters,
    set_collecting,
    set_observing,
    set_quantising,
)
from model.transformer import Forecaster, ModelConfig, quant_point_names

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def range_and_bits(draw):
    a = draw(finite)
    b = draw(finite)
    lo, hi = min(a, b), max(a, b)
    if hi - lo < 1e-3:
        hi = lo + 1.0
    bits = draw(st.integers(2, 8))
    scheme = draw(st.sampled_from(["symmetric", "asymmetric", "adaptive"]))
    return lo, hi, bits, scheme


@settings(max_examples=200, deadline=None)
@given(range_and_bits(), st.lists(finite, min_size=1, max_size=40))
def test_fake_quant_round_trip(rb, xs):
    lo, hi, bits, scheme = rb
    qp = compute_qparams(lo, hi, bits, scheme)
    assert qp.scheme in ("symmetric", "asymmetric")
    assert qp.scale > 0 and qp.qmin <= qp.zero_point <= qp.qmax
    if qp.scheme == "symmetric":
        assert qp.zero_point == 0 and (qp.qmin, qp.qmax) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    else:
        assert (qp.qmin, qp.qmax) == (0, 2**bits - 1)
    x = torch.tensor(xs, dtype=torch.float32)
    y = fake_quantize(x, qp)
    q = quantize(x, qp)
    # on the grid, codes in range, consistent with quantize/dequantize
    assert q.min() >= qp.qmin and q.max() <= qp.qmax
    torch.testing.assert_close(y, dequantize(q, qp), rtol=0, atol=0)
    # idempotent
    torch.testing.assert_close(fake_quantize(y, qp), y, rtol=0, atol=1e-6 * qp.scale)
    # zero is exact
    assert fake_quantize(torch.zeros(1), qp).item() == 0.0
    # error <= half a step inside the representable range
    rep_lo, rep_hi = qp.scale * (qp.qmin - qp.zero_point), qp.scale * (qp.qmax - qp.zero_point)
    inside = (x >= rep_lo) & (x <= rep_hi)
    if inside.any():
        err = (y - x).abs()[inside].max().item()
        assert err <= 0.5 * qp.scale * (1 + 1e-4) + 1e-6
    # the observed range is (nearly) covered: clipping error <= one step at the edges
    assert rep_lo <= min(lo, 0.0) + qp.scale and rep_hi >= max(hi, 0.0) - qp.scale
    # monotone
    xs_sorted, _ = torch.sort(x)
    assert (torch.diff(fake_quantize(xs_sorted, qp)) >= 0).all()


def test_round_half_to_even():
    qp = compute_qparams(-1.0, 1.0, 8, "symmetric")
    s = qp.scale
    x = torch.tensor([0.5 * s, 1.5 * s, 2.5 * s, -0.5 * s], dtype=torch.float32)
    assert quantize(x, qp).tolist() == [0, 2, 2, 0]


def test_ste_gradient_inside_and_clipped():
    qp = compute_qparams(-1.0, 1.0, 8, "symmetric")
    x = torch.tensor([-3.0, -0.5, 0.0, 0.3, 0.99, 2.0], requires_grad=True)
    fake_quantize(x, qp).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    # gradient is passed through unchanged (not scaled)
    x2 = torch.tensor([0.1, 0.2], requires_grad=True)
    (fake_quantize(x2, qp) * torch.tensor([3.0, -2.0])).sum().backward()
    assert x2.grad.tolist() == [3.0, -2.0]


def test_adaptive_rule_known_cases():
    g = torch.Generator().manual_seed(0)
    normal = torch.randn(10000, generator=g)
    relu = torch.relu(torch.randn(10000, generator=g))
    unif = torch.rand(10000, generator=g)
    for bits in (4, 6, 8):
        assert choose_scheme(normal.min(), normal.max(), bits) == "symmetric"
        assert choose_scheme(relu.min(), relu.max(), bits) == "asymmetric"
        assert choose_scheme(unif.min(), unif.max(), bits) == "asymmetric"
        assert choose_scheme(-0.1, 5.0, bits) == "asymmetric"
        assert choose_scheme(-5.0, 0.1, bits) == "asymmetric"
        assert choose_scheme(-1.0, 1.1, bits) == "symmetric"
    # the threshold: [-a, 1] is symmetric up to about a = (1+tau)/(1-tau) (large b)
    assert choose_scheme(-1.6, 1.0, 8, tau=0.25) == "symmetric"
    assert choose_scheme(-1.75, 1.0, 8, tau=0.25) == "asymmetric"
    assert choose_scheme(-1.2, 1.0, 8, tau=0.0) == "asymmetric"
    # observer + adaptive FakeQuant end to end
    for data, want in ((normal, "symmetric"), (relu, "asymmetric"), (unif, "asymmetric")):
        fq = FakeQuant("t", 8, "adaptive", "minmax")
        fq.observing = True
        for chunk in data.split(1000):
            fq(chunk)
        assert fq.qparams().scheme == want
    skew = FakeQuant("s", 8, "adaptive", "ema")
    skew.observing = True
    skew(torch.tensor([-0.1, 5.0]))
    qp = skew.qparams()
    assert qp.scheme == "asymmetric" and qp.zero_point == 5  # round(0.1 / (5.1/255))


def test_asymmetric_zero_point_and_one_sided():
    qp = compute_qparams(0.0, 1.0, 8, "asymmetric")
    assert qp.zero_point == 0 and qp.scale == pytest.approx(1 / 255)
    qp = compute_qparams(-2.0, -1.0, 8, "asymmetric")  # widened to [-2, 0]
    assert qp.zero_point == 255
    qp = compute_qparams(-1.0, 3.0, 4, "asymmetric")
    assert qp.zero_point == round(1.0 / (4.0 / 15))


@pytest.mark.parametrize("bits", [1, 9, 0, 16])
def test_bits_out_of_range_rejected(bits):
    with pytest.raises(ValueError, match="2 to 8"):
        FakeQuant("x", bits)
    with pytest.raises(ValueError, match="2 to 8"):
        QuantConfig(default_bits=bits)
    with pytest.raises(ValueError, match="2 to 8"):
        QuantConfig(bits={"l0.q": bits})
    with pytest.raises(ValueError, match="2 to 8"):
        compute_qparams(-1, 1, bits, "symmetric")


def test_config_validation():
    with pytest.raises(ValueError, match="scheme"):
        QuantConfig(schemes={"pred": "log"})
    with pytest.raises(ValueError, match="observer"):
        QuantConfig(observers={"pred": "median"})
    with pytest.raises(ValueError, match="matches no tensor"):
        Forecaster(ModelConfig(), QuantConfig(bits={"l0.querry": 4}))
    with pytest.raises(ValueError, match="fixed softmax"):
        Forecaster(ModelConfig(), QuantConfig(schemes={"l0.attn": "symmetric"}))


def test_observers():
    x1, x2 = torch.tensor([-1.0, 2.0]), torch.tensor([-3.0, 1.0])
    mm = FakeQuant("m", observer="minmax")
    mm.observing = True
    mm(x1), mm(x2)
    assert (mm.lo.item(), mm.hi.item()) == (-3.0, 2.0)
    ema = FakeQuant("e", observer="ema", momentum=0.1)
    ema.observing = True
    ema(x1), ema(x2)  # warm-up: running average of the first observations
    assert ema.lo.item() == pytest.approx(-2.0) and ema.hi.item() == pytest.approx(1.5)
    for _ in range(20):
        ema(x2)
    assert -3.0 < ema.lo.item() < -2.5
    ema.observing = False  # frozen
    lo = ema.lo.item()
    ema(torch.tensor([-100.0, 100.0]))
    assert ema.lo.item() == lo
    with pytest.raises(RuntimeError, match="calibrate"):
        FakeQuant("n").qparams()


def _calibrated_model(cfg=None, quant=None):
    torch.manual_seed(0)
    m = Forecaster(cfg or ModelConfig(), quant)
    x = torch.randn(64, m.config.window, m.config.features)
    m.eval()
    set_observing(m, True)
    set_collecting(m, True)
    m(x)
    set_observing(m, False)
    init_learned_ranges(m)
    set_quantising(m, True)
    return m, x


def test_model_quant_points_and_export():
    cfg = ModelConfig()
    m, x = _calibrated_model(cfg, QuantConfig(bits={"l0.scores": 6, "*.weight": 4}))
    names = set(fake_quants(m))
    acts = quant_point_names(cfg)
    expected_acts = {"input", "proj", "pe", "embed", "pooled", "pred"} | {
        f"l0.{s}" for s in ("q", "k", "v", "scores", "attn", "context", "attn_out", "res1", "norm1",
                            "ffn_hidden", "ffn_out", "res2", "norm2")}
    assert set(acts) == expected_acts
    weights = {f"{n}.weight" for n in ("proj", "l0.q", "l0.k", "l0.v", "l0.attn_out", "l0.ffn_hidden", "l0.ffn_out", "pred")}
    assert names == expected_acts | weights
    qp = quant_params(m)
    for n in names:
        assert set(qp[n]) >= {"bits", "scheme", "scale", "zero_point", "min", "max"}
    assert qp["l0.scores"]["bits"] == 6 and qp["proj.weight"]["bits"] == 4 and qp["proj"]["bits"] == 8
    a = qp["l0.attn"]
    assert (a["scheme"], a["scale"], a["zero_point"], a["signed"]) == ("fixed", 1 / 256, 0, False)
    assert qp["l0.ffn_hidden"]["scheme"] == "asymmetric" and qp["l0.ffn_hidden"]["zero_point"] == 0
    assert qp["proj.bias"]["scale"] == pytest.approx(qp["proj.weight"]["scale"] * qp["input"]["scale"], rel=1e-6)
    # every quantised tensor really is on its grid: check a few via forward hooks
    seen = {}
    for n in ("l0.q", "l0.attn", "pooled", "pred"):
        m.fq_point(n).register_forward_hook(lambda mod, i, o: seen.__setitem__(mod.name, o.detach()))
    m(x)
    for n, t in seen.items():
        p = qp[n]
        codes = t / p["scale"] + p["zero_point"]
        assert torch.allclose(codes, codes.round(), atol=1e-3)
        assert codes.min() >= p["qmin"] - 1e-3 and codes.max() <= p["qmax"] + 1e-3
    assert seen["l0.attn"].max() <= 255 / 256


@pytest.mark.slow
def test_gelu_layernorm_multihead_points():
    cfg = ModelConfig(activation="gelu", norm="layernorm", heads=2, layers=2, d_model=8)
    m, x = _calibrated_model(cfg)
    names = set(fake_quants(m))
    assert {"l0.ffn_pre", "l1.ffn_pre", "l1.norm2", "l0.ffn_pre.weight"} <= names
    y = m(x)
    assert y.shape == (64,) and torch.isfinite(y).all()


@pytest.mark.slow
def test_qat_matches_float_closely_and_grads_flow():
    m, x = _calibrated_model()
    with torch.no_grad():
        yq = m(x)
        set_quantising(m, False)
        yf = m(x)
    assert (yq - yf).abs().max() < 0.1 * yf.abs().max() + 0.05
    set_quantising(m, True)
    m.train()
    m.set_freeze_bn(True)
    m(x).pow(2).mean().backward()
    ranges = {id(p) for p in range_parameters(m)}
    for n, p in m.named_parameters():
        if id(p) not in ranges:
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert m.proj.weight.grad.abs().sum() > 0
    # every learned step size gets a gradient; zero points of asymmetric tensors too
    for fq in fake_quants(m).values():
        if fq.learn:
            assert fq.log_scale.grad is not None and torch.isfinite(fq.log_scale.grad), fq.name
            if fq.qparams().scheme == "asymmetric":
                assert fq.zero_point.grad is not None, fq.name


def test_batchnorm_fold_matches_eval():
    torch.manual_seed(0)
    m = Forecaster(ModelConfig())
    m.train()
    for _ in range(5):
        m(torch.randn(32, 24, 7) * 2 + 1)
    norm = m.layers[0].norm1
    a, b = norm.folded()
    xin = torch.randn(4, 24, 16)
    with torch.no_grad():
        m.eval()
        ref = norm.bn.eval()(xin.transpose(1, 2)).transpose(1, 2)
        torch.testing.assert_close(norm(xin), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xin * a + b, ref, rtol=1e-5, atol=1e-5)


def test_pe_table():
    from model.transformer import sinusoidal_pe
    pe = sinusoidal_pe(24, 16)
    assert pe.shape == (24, 16)
    assert pe[5, 2].item() == pytest.approx(math.sin(5 / 10000 ** (2 / 16)), abs=1e-6)
    assert pe[5, 3].item() == pytest.approx(math.cos(5 / 10000 ** (2 / 16)), abs=1e-6)
    assert np.allclose(pe[0, 1::2].numpy(), 1.0)


def test_matches_intmodel_graph():
    intmodel = pytest.importorskip("model.intmodel")
    for cfg in (ModelConfig(), ModelConfig(activation="gelu", layers=2, heads=2)):
        outs = {"input", "pe"} | {o.output for o in intmodel.graph_spec(cfg.intmodel_config())}
        assert outs == set(quant_point_names(cfg))
