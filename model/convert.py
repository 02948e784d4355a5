"""Conversion of a calibrated QAT forecaster into the integer-only model.

Every real factor between a tensor and the next (scale ratios, 1/sqrt(d_head), folded
batch-norm, layer-norm gamma/beta, 1/L of the pooling) becomes a fixed-point multiplier and
shift (:func:`model.intops.quantize_multiplier`); weights, biases and the positional encoding
become integer codes with the very quantisers QAT used. After this point no float is needed.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as Fn

from . import intops
from .intmodel import IntModel, Op, TensorInfo, graph_spec
from .qat import QuantParams, dequantize, quantize, quantize_bias
from .transformer import Forecaster


@torch.no_grad()
def to_intmodel(model: Forecaster, input_norm: dict, target_norm: dict,
                meta: dict | None = None, change_feature: int | None = None) -> IntModel:
    """Integer model of a calibrated QAT ``model`` (observers must have seen data).
    ``change_feature``: the input feature a change forecast adds its output to (required
    exactly when the model forecasts the change)."""
    if (model.config.forecast == "change") != (change_feature is not None):
        raise ValueError("a change forecast needs change_feature (the target's input feature), "
                         "a level forecast none")
    cfg = model.config
    icfg = cfg.intmodel_config()
    qp: dict[str, QuantParams] = {n: fq.qparams() for n, fq in model.fake_quants().items()}
    linears = {m.name: m for m in model.modules() if hasattr(m, "wq")}
    norms = {}
    for i, layer in enumerate(model.layers):
        norms[f"l{i}.norm1"], norms[f"l{i}.norm2"] = layer.norm1, layer.norm2

    tensors = {}

    def declare(name, shape):
        p = qp[name]
        tensors[name] = TensorInfo(name, tuple(shape), p.qtype(), float(p.scale))

    declare("input", (cfg.window, cfg.features))
    declare("pe", (cfg.window, cfg.d_model))
    constants = {"pe": quantize(model.pe, qp["pe"]).numpy()}

    ops = []
    for spec in graph_spec(icfg):
        name, ins = spec.output, spec.inputs
        declare(name, spec.shape)
        s_out = qp[name].scale
        s_in = [qp[n].scale for n in ins]
        params, arrays = {}, {}
        if spec.kind == "linear":
            lin = linears[name]
            wq, xq = lin.wq.qparams(), qp[ins[0]]
            arrays["weight"] = quantize(lin.weight, wq).numpy()
            arrays["bias"] = quantize_bias(lin.bias, wq, xq, lin.in_features).numpy()
            m, s = intops.quantize_multiplier(float(np.float32(wq.scale) * np.float32(xq.scale)) / s_out)
            params = {"weight_type": wq.qtype().to_dict(), "multiplier": m, "shift": s,
                      "relu": bool(spec.dims.get("relu", False))}
        elif spec.kind == "add":
            (ma, mb), s = intops.quantize_common_multipliers([s_in[0] / s_out, s_in[1] / s_out])
            params = {"ma": ma, "mb": mb, "shift": s}
        elif spec.kind == "scores":
            dh = cfg.d_model // cfg.heads
            m, s = intops.quantize_multiplier(s_in[0] * s_in[1] / math.sqrt(dh) / s_out)
            params = {"multiplier": m, "shift": s}
        elif spec.kind == "softmax":
            exp_bits, recip_bits = intops.softmax_precision(qp[name].bits)
            arrays["exp_table"] = intops.softmax_exp_table(s_in[0], qp[ins[0]].qtype(), exp_bits)
            params = {"exp_bits": exp_bits, "recip_bits": recip_bits}
        elif spec.kind == "context":
            m, s = intops.quantize_multiplier(s_in[0] * s_in[1] / s_out)
            params = {"multiplier": m, "shift": s}
        elif spec.kind == "affine":
            a, b = (t.double().numpy() for t in norms[name].folded())
            scales, offsets, s = intops.quantize_affine(a * s_in[0] / s_out, b / s_out)
            arrays = {"scales": scales, "offsets": offsets}
            params = {"shift": s}
        elif spec.kind == "layernorm":
            ln = norms[name].ln
            norm_bits, recip_bits = intops.layernorm_precision(cfg.d_model, qp[ins[0]].qtype(), qp[name].bits)
            gamma = ln.weight.double().numpy() / (s_out * (1 << norm_bits))
            scales, offsets, s = intops.quantize_affine(gamma, ln.bias.double().numpy() / s_out)
            arrays = {"scales": scales, "offsets": offsets}
            params = {"shift": s, "norm_bits": norm_bits, "recip_bits": recip_bits}
        elif spec.kind == "lut":
            xq, oq = qp[ins[0]], qp[name]
            codes = torch.arange(xq.qmin, xq.qmax + 1)
            arrays["table"] = quantize(Fn.gelu(dequantize(codes, xq)), oq).numpy()
        elif spec.kind == "mean_pool":
            m, s = intops.quantize_multiplier(s_in[0] / (spec.dims["length"] * s_out))
            params = {"multiplier": m, "shift": s}
        else:
            raise ValueError(f"no conversion for operator kind {spec.kind!r}")
        ops.append(Op(spec, params, arrays))

    meta = dict(meta or {})
    meta["quant_params"] = {n: p.to_dict() for n, p in qp.items()}
    return IntModel(icfg, tensors, ops, constants, input_norm, target_norm, meta, change_feature)


def to_intmodel_for(model: Forecaster, data) -> IntModel:
    """The integer model of a QAT ``model`` trained on ``data`` (a :class:`model.data.Dataset`):
    its normalisation, its target column for a change forecast, and where it came from."""
    return to_intmodel(model, {"mean": data.feature_mean, "std": data.feature_std},
                       {"mean": data.target_mean, "std": data.target_std},
                       meta={"source": data.source, "features": list(data.feature_names),
                             "target": data.target_name},
                       change_feature=data.target_feature if model.config.forecast == "change" else None)
