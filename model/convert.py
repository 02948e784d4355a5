"""Conversion of a calibrated QAT forecaster into the integer-only model.

Each operator's parameters come from its kind's entry in the registry (:mod:`model.ops`).
Every real factor between a tensor and the next (scale ratios, 1/sqrt(d_head), folded
batch-norm, layer-norm gamma/beta, 1/L of the pooling) becomes a fixed-point multiplier and
shift (:func:`model.intops.quantize_multiplier`); weights, biases and the positional encoding
become integer codes with the very quantisers QAT used. After this point no float is needed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import ops as registry
from .intmodel import IntModel, Op, TensorInfo, graph_spec
from .qat import QuantParams, quantize
from .transformer import Forecaster, ModelConfig


@dataclass
class ConvertContext:
    """What an operator kind's ``convert`` (:mod:`model.ops`) reads of the QAT model: its
    configuration (None for a composed module, :mod:`model.compose`), every tensor's
    quantisation, its linears and norms by output name, and the tensors declared so far
    (shapes come from there, not from the configuration, so that any graph converts)."""
    cfg: ModelConfig | None
    qp: dict
    linears: dict
    norms: dict
    tensors: dict

    def s_in(self, spec) -> list:
        return [self.qp[n].scale for n in spec.inputs]

    def s_out(self, spec) -> float:
        return self.qp[spec.output].scale


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

    ctx = ConvertContext(cfg, qp, linears, norms, tensors)
    ops = []
    for spec in graph_spec(icfg):
        derived = registry.kind(spec.kind).derived_type(tensors, spec)
        if derived is None:
            declare(spec.output, spec.shape)
        else:           # no quantiser: a type from its inputs' (argmax)
            tensors[spec.output] = TensorInfo(spec.output, tuple(spec.shape), *derived)
        params, arrays = registry.kind(spec.kind).convert(ctx, spec)
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
                             "target": data.target_name,
                             **({"class_names": list(data.class_names)}
                                if getattr(data, "class_names", None) else {})},
                       change_feature=data.target_feature if model.config.forecast == "change" else None)
