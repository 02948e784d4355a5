"""The float / QAT encoder-only forecaster.

The structure is fixed; the integer model (:func:`model.intmodel.graph_spec`) and the hardware
mirror it operator by operator. Every tensor that exists in hardware passes through a named
:class:`~model.qat.FakeQuant` (identity until quantisation is switched on)::

    input (B,L,F)                          -> fq "input"
    proj   = Linear_proj(input)            -> fq "proj"          weight "proj.weight"
    pe     = sinusoidal table (L,d)        -> fq "pe"            (constant)
    embed  = proj + pe                     -> fq "embed"
    per layer i (post-norm), x = embed or l{i-1}.norm2:
      q, k, v = Linear(x)                  -> fq "l{i}.q", "l{i}.k", "l{i}.v"     weights "l{i}.q.weight", ...
      scores = q_h k_h^T / sqrt(d_head)    -> fq "l{i}.scores"   (B,H,L,L)
      attn   = softmax_keys(scores)        -> fq "l{i}.attn"     FIXED: unsigned b bits, scale 2^-b, z 0
      context= concat_h(attn_h v_h)        -> fq "l{i}.context"
      attn_out = Linear(context)           -> fq "l{i}.attn_out" weight "l{i}.attn_out.weight"
      res1   = x + attn_out                -> fq "l{i}.res1"
      norm1  = Norm(res1)                  -> fq "l{i}.norm1"
      relu:  ffn_hidden = relu(Linear(norm1))          -> fq "l{i}.ffn_hidden"  weight "l{i}.ffn_hidden.weight"
      table activation act (gelu, silu, ...: the registry, model.ops):
             ffn_pre = Linear(norm1)                   -> fq "l{i}.ffn_pre"     weight "l{i}.ffn_pre.weight"
             ffn_hidden = act(ffn_pre)                 -> fq "l{i}.ffn_hidden"  (a LUT in the integer model)
      ffn_out= Linear(ffn_hidden)          -> fq "l{i}.ffn_out"  weight "l{i}.ffn_out.weight"
      res2   = norm1 + ffn_out             -> fq "l{i}.res2"
      norm2  = Norm(res2)                  -> fq "l{i}.norm2"
    pooled = mean_t(norm2)                 -> fq "pooled"
    pred   = Linear(pooled)                -> fq "pred"          weight "pred.weight"   (B,)

``task="classify"`` (``classes`` = C): the head is ``logits = Linear(pooled)`` (fq "logits",
weight "logits.weight", (B, C)), trained with cross-entropy; the integer model's output ``pred``
is the ``argmax`` operator's: the C logit codes, then the class (no float counterpart).
``task="anomaly"``: the head is ``score = Linear(pooled)`` (fq "score", (B,)), a logit trained
with binary cross-entropy; the integer model's ``pred`` is the ``threshold`` operator's: the
score code, then the flag ``score >= threshold``.

Weight names are ``<op output>.weight`` as in the integer-model file. Biases are
fake-quantised at scale ``s_w * s_x`` (see :mod:`model.qat`).

Batch-norm is ``BatchNorm1d`` over the d channels with statistics over batch x time. With
running statistics (eval, or ``freeze_bn``) it is applied as its folded per-channel affine
``a_c*x + b_c`` (``a = gamma/sqrt(var+eps)``, ``b = beta - a*mean``), exactly the integer
model's ``affine`` operator; in training without freezing it uses batch statistics.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch
from torch import nn

from . import ops as registry
from .qat import FakeQuant, QLinear, QuantConfig, fake_quants, integer_softmax, quant_params, quantize

__all__ = ["ModelConfig", "Forecaster", "Norm", "sinusoidal_pe", "quant_point_names", "build_model"]

NORMS = ("batchnorm", "layernorm")
FORECASTS = ("change", "level")
#: What the network is trained for: "forecast" (the default), "classify" (a class per window),
#: "anomaly" (an anomaly score per window).
TASKS = ("forecast", "classify", "anomaly")


@dataclass
class ModelConfig:
    """Field names match :data:`model.intmodel.CONFIG_KEYS` (plus float-only extras)."""

    features: int = 7
    window: int = 24
    d_model: int = 16
    heads: int = 1
    layers: int = 1
    ffn: int | None = None  # None -> 4 * d_model
    norm: str = "batchnorm"
    activation: str = "relu"
    norm_eps: float = 1e-5
    bn_momentum: float = 0.1
    # "change": the network forecasts target(t+h) - target(t), the last observed value of the
    # target (an input feature) is added outside the network; "level": the target itself.
    forecast: str = "change"
    # Steps forecast per window (t+1 .. t+horizon): the outputs of the "pred" linear.
    horizon: int = 1
    # "classify": a class per window, ``classes`` logits from the "logits" linear.
    task: str = "forecast"
    classes: int = 0

    def __post_init__(self):
        if self.ffn is None:
            self.ffn = 4 * int(self.d_model)
        for k in ("features", "window", "d_model", "heads", "layers", "ffn", "horizon"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ModelConfig.{k} must be a positive integer, got {v!r}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        registry.activation(self.activation)   # raises for an unregistered one
        if self.forecast not in FORECASTS:
            raise ValueError(f"forecast must be one of {FORECASTS}, got {self.forecast!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "classify":
            if isinstance(self.classes, bool) or not isinstance(self.classes, int) or self.classes < 2:
                raise ValueError(f"a classifier needs classes >= 2, got {self.classes!r}")
            if self.horizon != 1 or self.forecast != "level":
                raise ValueError("a classifier has no horizon and no change forecast: "
                                 "set horizon=1, forecast='level'")
        elif self.classes:
            raise ValueError(f"classes is for task='classify', not {self.task!r}")
        if self.task == "anomaly" and (self.horizon != 1 or self.forecast != "level"):
            raise ValueError("an anomaly detector has no horizon and no change forecast: "
                             "set horizon=1, forecast='level'")

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["horizon"] == 1:   # absent means 1: one-step configurations read as they did before
            del d["horizon"]
        if d["task"] == "forecast":     # absent means forecast, as before tasks
            del d["task"], d["classes"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {sorted(unknown)}")
        return cls(**{"forecast": "level", **d})   # runs saved before "change" forecast the level

    def intmodel_config(self) -> dict:
        """The dict :func:`model.intmodel.check_config` expects."""
        c = {k: getattr(self, k) for k in ("features", "window", "d_model", "heads", "layers", "ffn", "norm", "activation")}
        if self.horizon != 1:      # absent means 1 (model.intmodel.check_config)
            c["horizon"] = self.horizon
        if self.task == "classify":  # absent means forecast
            c["task"], c["classes"] = self.task, self.classes
        elif self.task == "anomaly":
            c["task"] = self.task
        return c

    @property
    def head(self) -> str:
        """The output linear: "pred" (a forecast), "logits" (a classifier) or "score" (an
        anomaly detector)."""
        return {"classify": "logits", "anomaly": "score"}.get(self.task, "pred")


def sinusoidal_pe(length: int, d: int) -> torch.Tensor:
    """``pe[t, 2i] = sin(t / 10000^(2i/d))``, ``pe[t, 2i+1] = cos(t / 10000^(2i/d))`` (float32)."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    i2 = torch.arange(0, d, 2, dtype=torch.float64)
    ang = pos / torch.pow(10000.0, i2 / d)
    pe = torch.zeros(length, d, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(ang)
    pe[:, 1::2] = torch.cos(ang[:, : d // 2])
    return pe.to(torch.float32)


def quant_point_names(config: ModelConfig) -> list[str]:
    """Activation / constant tensor names in graph order (``input``, ``pe``, then every op output)."""
    names = ["input", "proj", "pe", "embed"]
    for i in range(config.layers):
        p = f"l{i}."
        names += [p + s for s in ("q", "k", "v", "scores", "attn", "context", "attn_out", "res1", "norm1")]
        if registry.activation(config.activation).table:
            names.append(p + "ffn_pre")
        names += [p + s for s in ("ffn_hidden", "ffn_out", "res2", "norm2")]
    return names + ["pooled", config.head]


def linear_names(config: ModelConfig) -> list[str]:
    names = ["proj"]
    for i in range(config.layers):
        p = f"l{i}."
        first = registry.activation(config.activation).first_linear
        names += [p + s for s in ("q", "k", "v", "attn_out", first, "ffn_out")]
    return names + [config.head]


class Norm(nn.Module):
    """Batch-norm over channels (stats over batch x time) or layer-norm, on (B, L, d)."""

    def __init__(self, d: int, kind: str, eps: float, momentum: float):
        super().__init__()
        self.kind = kind
        self.freeze_bn = False  # use running statistics even in training mode (QAT)
        if kind == "batchnorm":
            self.bn = nn.BatchNorm1d(d, eps=eps, momentum=momentum)
        else:
            self.ln = nn.LayerNorm(d, eps=eps)

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(a, b)`` with ``norm(x) = a*x + b`` from the running statistics."""
        if self.kind != "batchnorm":
            raise ValueError("only batch-norm folds into a per-channel affine")
        bn = self.bn
        a = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        return a, bn.bias - a * bn.running_mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "layernorm":
            return self.ln(x)
        if self.training and not self.freeze_bn:
            return self.bn(x.transpose(1, 2)).transpose(1, 2)
        a, b = self.folded()
        return x * a + b


class EncoderLayer(nn.Module):
    def __init__(self, i: int, cfg: ModelConfig, fq: dict, quant: QuantConfig):
        super().__init__()
        self.i, self.cfg = i, cfg
        p = self.prefix = f"l{i}."
        d = cfg.d_model
        self.q = QLinear(d, d, p + "q", quant)
        self.k = QLinear(d, d, p + "k", quant)
        self.v = QLinear(d, d, p + "v", quant)
        self.o = QLinear(d, d, p + "attn_out", quant)
        self.norm1 = Norm(d, cfg.norm, cfg.norm_eps, cfg.bn_momentum)
        self.act = registry.activation(cfg.activation)
        first = p + self.act.first_linear
        self.ffn1 = QLinear(d, cfg.ffn, first, quant)
        self.ffn2 = QLinear(cfg.ffn, d, p + "ffn_out", quant)
        self.norm2 = Norm(d, cfg.norm, cfg.norm_eps, cfg.bn_momentum)
        self._fq = fq  # shared dict name -> FakeQuant (owned by the Forecaster)
        x_name = "embed" if i == 0 else f"l{i - 1}.norm2"  # the layer input
        for lin in (self.q, self.k, self.v):
            lin.input_name = x_name
        self.o.input_name = p + "context"
        self.ffn1.input_name = p + "norm1"
        self.ffn2.input_name = p + "ffn_hidden"

    def forward(self, x: torch.Tensor, x_fq: FakeQuant) -> torch.Tensor:
        f, p, cfg = self._fq, self.prefix, self.cfg
        B, L, d = x.shape
        H = cfg.heads
        dh = d // H
        q = f[p + "q"](self.q(x, x_fq))
        k = f[p + "k"](self.k(x, x_fq))
        v = f[p + "v"](self.v(x, x_fq))
        qh = q.view(B, L, H, dh).transpose(1, 2)  # (B,H,L,dh)
        kh = k.view(B, L, H, dh).transpose(1, 2)
        vh = v.view(B, L, H, dh).transpose(1, 2)
        scores = f[p + "scores"](torch.matmul(qh, kh.transpose(-1, -2)) * (1.0 / math.sqrt(dh)))
        s_fq, a_fq = f[p + "scores"], f[p + "attn"]
        if s_fq.quantising and a_fq.quantising:
            attn = a_fq(integer_softmax(scores, s_fq.qparams(), a_fq.bits))   # on its grid already
        else:
            attn = a_fq(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(attn, vh).transpose(1, 2).reshape(B, L, d)
        ctx = f[p + "context"](ctx)
        ao = f[p + "attn_out"](self.o(ctx, f[p + "context"]))
        r1 = f[p + "res1"](x + ao)
        n1 = f[p + "norm1"](self.norm1(r1))
        if self.act.table:
            pre = f[p + "ffn_pre"](self.ffn1(n1, f[p + "norm1"]))
            h = f[p + "ffn_hidden"](self.act.function(pre))
        else:
            h = f[p + "ffn_hidden"](self.act.function(self.ffn1(n1, f[p + "norm1"])))
        fo = f[p + "ffn_out"](self.ffn2(h, f[p + "ffn_hidden"]))
        r2 = f[p + "res2"](n1 + fo)
        return f[p + "norm2"](self.norm2(r2))


def _key(name: str) -> str:
    return name.replace(".", "_")


class Forecaster(nn.Module):
    """(B, L, F) normalised windows -> (B,) normalised prediction; (B, horizon) for a horizon
    above 1."""

    def __init__(self, config: ModelConfig | None = None, quant: QuantConfig | None = None):
        super().__init__()
        self.config = cfg = config or ModelConfig()
        self.quant_config = quant = quant or QuantConfig()
        names = quant_point_names(cfg)
        quant.check_names(names + [n + ".weight" for n in linear_names(cfg)])
        fqs = {}
        for n in names:
            is_attn = n.endswith(".attn")
            if is_attn and n in quant.schemes:
                raise ValueError(f"{n!r} has the fixed softmax format (unsigned, scale 2^-bits); only its bits can be set")
            fqs[n] = FakeQuant(n, quant.bits_for(n), "adaptive" if is_attn else quant.scheme_for(n),
                               quant.observer_for(n, constant=(n == "pe")), quant.ema_momentum,
                               quant.adaptive_tau, fixed_softmax=is_attn, learn=quant.learn_ranges)
        self.fq = nn.ModuleDict({_key(n): m for n, m in fqs.items()})
        self._fqs = fqs  # plain dict for lookup by tensor name (modules registered above)
        self.proj = QLinear(cfg.features, cfg.d_model, "proj", quant)
        self.proj.input_name = "input"
        self.register_buffer("pe", sinusoidal_pe(cfg.window, cfg.d_model))
        self.layers = nn.ModuleList(EncoderLayer(i, cfg, fqs, quant) for i in range(cfg.layers))
        outputs = cfg.classes if cfg.task == "classify" else cfg.horizon
        self.head = QLinear(cfg.d_model, outputs, cfg.head, quant)
        self.head.input_name = "pooled"

    def fq_point(self, name: str) -> FakeQuant:
        return self._fqs[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg, f = self.config, self._fqs
        if x.dim() != 3 or x.shape[1:] != (cfg.window, cfg.features):
            raise ValueError(f"expected input (B, {cfg.window}, {cfg.features}), got {tuple(x.shape)}")
        fqs = f.values()
        if all(m.quantising for m in fqs) and not any(m.observing for m in fqs):
            return self._integer_valued_forward(x)
        return self._forward(x)

    def _integer_valued_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The quantised forward whose every tensor has the integer model's value.

        The model is converted as it stands (``model.convert``: the multipliers, tables and
        roundings of the integer model) and run on the input's codes; each fake quantiser
        then returns those codes' value, with its own straight-through gradient. So what QAT
        trains, early-stops and reports is the integer model, not an approximation of it
        (float requantisation differs from the fixed-point one by a code on ~0.1 % of values,
        enough to move a fine 8-bit output by a code on ~10 % of windows)."""
        from .convert import to_intmodel
        f = self._fqs
        n_in = self.config.features
        change = 0 if self.config.forecast == "change" else None
        intmodel = to_intmodel(self, {"mean": np.zeros(n_in), "std": np.ones(n_in)},
                               {"mean": 0.0, "std": 1.0}, change_feature=change)
        codes = intmodel.forward(quantize(x, f["input"].qparams()))
        try:
            for name, fq in f.items():
                if name in codes:
                    fq.target = codes[name]
            return self._forward(x)
        finally:
            for fq in f.values():
                fq.target = None

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg, f = self.config, self._fqs
        x = f["input"](x)
        proj = f["proj"](self.proj(x, f["input"]))
        pe = f["pe"](self.pe)
        h = f["embed"](proj + pe)
        h_fq = f["embed"]
        for layer in self.layers:
            h = layer(h, h_fq)
            h_fq = f[f"{layer.prefix}norm2"]
        pooled = f["pooled"](h.mean(dim=1))
        out = f[cfg.head](self.head(pooled, f["pooled"]))
        return out.squeeze(-1) if cfg.head != "logits" and cfg.horizon == 1 else out

    def set_freeze_bn(self, flag: bool = True) -> None:
        for m in self.modules():
            if isinstance(m, Norm):
                m.freeze_bn = bool(flag)

    def fake_quants(self) -> dict[str, FakeQuant]:
        return fake_quants(self)

    def quant_params(self) -> dict[str, dict]:
        return quant_params(self)


def build_model(config: ModelConfig | None = None, quant: QuantConfig | None = None, seed: int | None = None) -> Forecaster:
    if seed is not None:
        torch.manual_seed(seed)
    return Forecaster(config, quant)
