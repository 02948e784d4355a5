"""Quantisation-aware training: fake quantisation, range observers, the adaptive scheme.

Conventions (shared with :mod:`model.intops` / :mod:`model.intmodel`)
--------------------------------------------------------------------
A quantised tensor has ``bits`` b in 2..8 and a scheme:

* ``symmetric``: signed codes ``q`` in ``[-2**(b-1), 2**(b-1)-1]``, zero point 0,
  ``scale = A / (2**(b-1)-1)`` with ``A = max(|lo|, |hi|)`` (so +A is representable).
* ``asymmetric``: unsigned codes in ``[0, 2**b-1]``, ``scale = (hi-lo) / (2**b-1)``,
  zero point ``z = clamp(round(-lo/scale), 0, 2**b-1)``.

The observed range is first widened to contain 0 (``lo <= 0 <= hi``) so that real 0 is
exactly representable (ReLU clamps at the zero point, zero padding, etc.). Real value =
``scale * (q - z)``. Scales are float32 numbers (exported as the exact float32 value).

Fake quantisation: ``q = clamp(round(x / scale) + z, qmin, qmax)``, ``x_hat = scale*(q - z)``,
computed in float32; ``round`` is ``torch.round`` = round half to even. In the integer model
only the input is quantised from real numbers (:meth:`IntModel.quantize_input`: float64,
``np.round``, also half to even); everything else is integer arithmetic, so this rounding
choice only matters at the input (agreement is exact except at float32/float64 ties).

Gradient: *clipped* straight-through estimator -- the gradient passes unchanged where the
unclamped code ``round(x/scale)+z`` lies in ``[qmin, qmax]`` and is zero outside (the same as
``torch.fake_quantize_per_tensor_affine``). Scales come from observers, not from gradients.

Biases are fake-quantised with scale ``s_w * s_x`` (weight scale times input-activation
scale) to integers saturated at :func:`model.intops.bias_bound` -- exactly what the integer
linear layer adds to its accumulator.

Softmax output (``l{i}.attn``) has a FIXED format: unsigned b bits, scale ``1/2**b``, zero
point 0 (1.0 saturates to ``(2**b-1)/2**b``); it has no observer.

Observers (per tensor, selectable)
----------------------------------
* ``"ema"`` (default for activations): exponential moving average of the per-batch min and
  max, ``r <- r + m_eff*(batch - r)`` with ``m_eff = max(momentum, 1/(n+1))`` after n
  observations, i.e. a plain running average during warm-up (no bias toward the first batch).
* ``"minmax"``: running global min / max of everything seen.
* ``"current"`` (default for weights and the PE constant): the min / max of the tensor itself,
  refreshed on every forward pass whatever the observing flag (weights are known exactly).

Observers update only while ``observing`` is on (:func:`set_observing`); turning it off freezes
the ranges (and hence every adaptive choice).

Adaptive scheme (default)
-------------------------
For a range ``[lo, hi]`` (widened to contain 0) and b bits compare the quantisation steps:
``step_sym = max(|lo|,|hi|) / (2**(b-1)-1)``, ``step_asym = (hi-lo) / (2**b-1)``.
Choose **symmetric iff step_sym <= (1 + tau) * step_asym** (default ``tau = 0.25``), i.e. keep
the cheaper zero-point-free format unless it costs more than ``tau`` relative resolution;
otherwise asymmetric. Consequences at 8 bits: a zero-centred range -> symmetric (ratio ~1.004);
one-sided ranges (ReLU, softmax, uniform[0,1]; ratio ~2) -> asymmetric; ``[-0.1, 5]`` (ratio
~1.96) -> asymmetric; ``[-a, 1]`` is symmetric for ``a`` in ``[0.6, 1.67]`` roughly. At 2 bits
even a perfectly symmetric range picks asymmetric (the signed grid wastes its -2 code: ratio 1.5).
The choice is re-evaluated from the current range on every use, so it is fixed once observers
are frozen; :func:`quant_params` reports the final choice per tensor.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .intops import MAX_BITS, MIN_BITS, QType, bias_bound, check_bits

__all__ = [
    "SCHEMES",
    "OBSERVERS",
    "QuantConfig",
    "QuantParams",
    "check_bits",
    "choose_scheme",
    "compute_qparams",
    "fake_quantize",
    "fake_quantize_bias",
    "quantize",
    "dequantize",
    "FakeQuant",
    "QLinear",
    "fake_quants",
    "set_observing",
    "set_quantising",
    "set_collecting",
    "init_learned_ranges",
    "range_parameters",
    "quant_params",
]

SCHEMES = ("symmetric", "asymmetric", "adaptive")
#: Values kept per calibration batch and tensor for the MSE-optimal initial range.
SAMPLES_PER_BATCH = 4096
OBSERVERS = ("ema", "minmax", "current")
BIAS_BITS = 32


# --------------------------------------------------------------------------------------------
# configuration


@dataclass
class QuantConfig:
    """Per-tensor precision. Keys of ``bits``/``schemes``/``observers`` are tensor names
    (``"l0.scores"``, ``"pred.weight"``) or fnmatch patterns (``"l*.attn"``, ``"*.weight"``);
    an exact name wins over patterns, later patterns over earlier ones."""

    default_bits: int = 8
    bits: dict[str, int] = field(default_factory=dict)
    default_scheme: str = "adaptive"
    schemes: dict[str, str] = field(default_factory=dict)
    default_observer: str = "ema"  # for activations; weights/PE default to "current"
    observers: dict[str, str] = field(default_factory=dict)
    ema_momentum: float = 0.01
    adaptive_tau: float = 0.25
    # Learned step sizes (LSQ / LSQ+): after calibration every range starts at the clipping
    # that minimises the quantisation MSE on the calibration data and is then trained with
    # the weights. False: min/max observers (EMA for activations) set the ranges.
    learn_ranges: bool = True

    def __post_init__(self):
        check_bits(self.default_bits, "default_bits")
        for k, b in self.bits.items():
            check_bits(b, f"bit-width of {k!r}")
        for k, s in [("default_scheme", self.default_scheme), *self.schemes.items()]:
            if s not in SCHEMES:
                raise ValueError(f"scheme of {k!r} is {s!r}; use one of {SCHEMES}")
        for k, o in [("default_observer", self.default_observer), *self.observers.items()]:
            if o not in OBSERVERS:
                raise ValueError(f"observer of {k!r} is {o!r}; use one of {OBSERVERS}")
        if not 0.0 < self.ema_momentum <= 1.0:
            raise ValueError(f"ema_momentum must be in (0, 1], got {self.ema_momentum}")
        if self.adaptive_tau < 0:
            raise ValueError(f"adaptive_tau must be >= 0, got {self.adaptive_tau}")

    @staticmethod
    def _lookup(table: dict, name: str, default):
        if name in table:
            return table[name]
        val = default
        for pat, v in table.items():
            if fnmatch.fnmatchcase(name, pat):
                val = v
        return val

    def bits_for(self, name: str) -> int:
        return int(self._lookup(self.bits, name, self.default_bits))

    def scheme_for(self, name: str) -> str:
        return self._lookup(self.schemes, name, self.default_scheme)

    def observer_for(self, name: str, constant: bool = False) -> str:
        return self._lookup(self.observers, name, "current" if constant else self.default_observer)

    def check_names(self, names) -> None:
        """Every key must match at least one tensor name (catches typos)."""
        names = list(names)
        for table in (self.bits, self.schemes, self.observers):
            for key in table:
                if key not in names and not any(fnmatch.fnmatchcase(n, key) for n in names):
                    raise ValueError(f"quantisation setting for {key!r} matches no tensor; tensors are: {names}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QuantConfig":
        return cls(**{"learn_ranges": False, **d})   # runs saved before learned ranges


# --------------------------------------------------------------------------------------------
# quantisation parameters


@dataclass(frozen=True)
class QuantParams:
    bits: int
    scheme: str  # "symmetric" | "asymmetric" | "fixed"
    scale: float
    zero_point: int
    lo: float  # observed range (before widening to contain 0)
    hi: float

    @property
    def signed(self) -> bool:
        return self.scheme == "symmetric"

    @property
    def qmin(self) -> int:
        return self.qtype().qmin          # integer ranges are defined once, in model.intops

    @property
    def qmax(self) -> int:
        return self.qtype().qmax

    def qtype(self) -> QType:
        return QType(self.bits, self.signed, self.zero_point)

    def to_dict(self) -> dict:
        return {
            "bits": self.bits,
            "scheme": self.scheme,
            "scale": self.scale,
            "zero_point": self.zero_point,
            "min": self.lo,
            "max": self.hi,
            "signed": self.signed,
            "qmin": self.qmin,
            "qmax": self.qmax,
        }


def _f32(v) -> float:
    return float(np.float32(v))


def choose_scheme(lo: float, hi: float, bits: int, tau: float = 0.25) -> str:
    """The adaptive rule (module docstring): symmetric iff its step is at most (1+tau) times
    the asymmetric step on the range widened to contain 0."""
    check_bits(bits)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if hi - lo <= 0:
        return "symmetric"
    step_sym = max(-lo, hi) / ((1 << (bits - 1)) - 1)
    step_asym = (hi - lo) / ((1 << bits) - 1)
    return "symmetric" if step_sym <= (1.0 + tau) * step_asym else "asymmetric"


def compute_qparams(lo: float, hi: float, bits: int, scheme: str, tau: float = 0.25) -> QuantParams:
    """Scale / zero point for the range ``[lo, hi]`` (``scheme`` may be ``"adaptive"``)."""
    check_bits(bits)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme {scheme!r}; use one of {SCHEMES}")
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"invalid range [{lo}, {hi}]")
    if scheme == "adaptive":
        scheme = choose_scheme(lo, hi, bits, tau)
    wl, wh = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
    if scheme == "symmetric":
        scale = np.float32(max(-wl, wh)) / np.float32((1 << (bits - 1)) - 1)
        zp = 0
        if not scale > 0:
            scale = np.float32(1.0)
    else:
        qmax = (1 << bits) - 1
        scale = np.float32(wh - wl) / np.float32(qmax)
        if not scale > 0:
            scale, zp = np.float32(1.0), 0
        else:
            zp = int(min(max(round(float(-wl / scale)), 0), qmax))  # round half to even
    return QuantParams(int(bits), scheme, float(scale), int(zp), lo, hi)


def fixed_softmax_qparams(bits: int) -> QuantParams:
    check_bits(bits)
    return QuantParams(int(bits), "fixed", 1.0 / (1 << bits), 0, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# fake quantisation


class _FakeQuantSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zp, qmin, qmax):
        q = x / scale
        q.round_().add_(zp)  # in place on a fresh tensor: far fewer allocations
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(q.ge(qmin).logical_and_(q.le(qmax)))
        return q.clamp_(qmin, qmax).sub_(zp).mul_(scale)

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None, None, None


class _LearnedFakeQuant(torch.autograd.Function):
    """The forward of :class:`_FakeQuantSTE` (the same operations, so the same values) with
    LSQ gradients for the step size and LSQ+ gradients for the zero point."""

    @staticmethod
    def forward(ctx, x, scale, zp, qmin, qmax):
        s, z = float(scale.detach()), float(round(float(zp.detach())))
        q = x / s
        q.round_().add_(z)
        inside = q.ge(qmin).logical_and_(q.le(qmax))
        q.clamp_(qmin, qmax).sub_(z)
        ctx.save_for_backward(x, q, inside)
        ctx.s = s
        return q.mul(s)

    @staticmethod
    def backward(ctx, grad):
        x, q, inside = ctx.saved_tensors
        s = ctx.s
        # d out / d s: (q - z) - x/s inside the range (the rounding error), (q - z) outside.
        d_scale = (grad * torch.where(inside, q - x / s, q)).sum()
        d_zp = (grad * (~inside)).sum() * -s
        return grad * inside, d_scale.reshape(()), d_zp.reshape(()), None, None


def fake_quantize(x: torch.Tensor, qp: QuantParams) -> torch.Tensor:
    """Quantise-dequantise with the clipped straight-through estimator."""
    return _FakeQuantSTE.apply(x, qp.scale, float(qp.zero_point), float(qp.qmin), float(qp.qmax))


def quantize(x: torch.Tensor, qp: QuantParams) -> torch.Tensor:
    """Integer codes (int64) of ``x`` (float32 ``x / scale``, round half to even)."""
    q = torch.round(x.detach().to(torch.float32) / qp.scale) + qp.zero_point
    return q.clamp(qp.qmin, qp.qmax).to(torch.int64)


def dequantize(q: torch.Tensor, qp: QuantParams) -> torch.Tensor:
    return (q.to(torch.float32) - qp.zero_point) * qp.scale


def bias_scale(w_qp: QuantParams, x_qp: QuantParams) -> float:
    return _f32(np.float32(w_qp.scale) * np.float32(x_qp.scale))


def quantize_bias(bias: torch.Tensor, w_qp: QuantParams, x_qp: QuantParams, fan_in: int) -> torch.Tensor:
    """Integer bias codes: ``clamp(round(b / (s_w*s_x)), -bound, bound)`` (int64)."""
    s = bias_scale(w_qp, x_qp)
    lim = bias_bound(fan_in, x_qp.qtype(), w_qp.qtype())
    return (torch.round(bias.detach() / s).clamp(-lim, lim)).to(torch.int64)


def fake_quantize_bias(bias: torch.Tensor, w_qp: QuantParams, x_qp: QuantParams, fan_in: int) -> torch.Tensor:
    s = bias_scale(w_qp, x_qp)
    lim = float(bias_bound(fan_in, x_qp.qtype(), w_qp.qtype()))
    return _FakeQuantSTE.apply(bias, s, 0.0, -lim, lim)


class FakeQuant(nn.Module):
    """Observer + fake quantiser of one named tensor.

    ``observing``: update the range from each input (not for ``"current"``, which always
    tracks its tensor). ``quantising``: return the fake-quantised tensor, else the input.
    Both are off after construction (float model)."""

    def __init__(self, name: str, bits: int = 8, scheme: str = "adaptive", observer: str = "ema",
                 momentum: float = 0.01, tau: float = 0.25, fixed_softmax: bool = False,
                 learn: bool = False):
        super().__init__()
        self.name = name
        self.bits = check_bits(bits, f"bit-width of {name!r}")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme of {name!r} is {scheme!r}; use one of {SCHEMES}")
        if observer not in OBSERVERS:
            raise ValueError(f"observer of {name!r} is {observer!r}; use one of {OBSERVERS}")
        self.scheme = scheme
        self.observer = observer
        self.momentum = float(momentum)
        self.tau = float(tau)
        self.fixed_softmax = bool(fixed_softmax)
        self.observing = False
        self.quantising = False
        self.register_buffer("lo", torch.zeros((), dtype=torch.float32))
        self.register_buffer("hi", torch.zeros((), dtype=torch.float32))
        self.register_buffer("n_obs", torch.zeros((), dtype=torch.int64))
        self.learn = bool(learn) and not self.fixed_softmax
        self.collecting = False
        # Integer codes this tensor takes its value from (set by the integer-valued forward of
        # the model for one call); the gradient is still that of the fake quantiser.
        self.target: torch.Tensor | None = None
        self._samples: list[torch.Tensor] = []
        if self.learn:
            # Learned step size and zero point, valid once ``learned`` is set (init_learned).
            self.log_scale = nn.Parameter(torch.zeros(()))
            self.zero_point = nn.Parameter(torch.zeros(()))
            self.register_buffer("learned", torch.zeros((), dtype=torch.bool))
            self.register_buffer("asymmetric", torch.zeros((), dtype=torch.bool))

    def extra_repr(self) -> str:
        if self.fixed_softmax:
            return f"{self.name!r}, bits={self.bits}, fixed softmax format"
        return f"{self.name!r}, bits={self.bits}, scheme={self.scheme}, observer={self.observer}"

    @property
    def is_learned(self) -> bool:
        return self.learn and bool(self.learned)

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        if self.fixed_softmax or x.numel() == 0 or self.is_learned:
            return
        if self.collecting:   # a subsample of the values, for the MSE-optimal initial range
            flat = x.detach().reshape(-1).to(torch.float32)
            if flat.numel() > SAMPLES_PER_BATCH:
                flat = flat[torch.randint(flat.numel(), (SAMPLES_PER_BATCH,))]
            self._samples.append(flat.clone())
        lo, hi = x.detach().min().to(torch.float32), x.detach().max().to(torch.float32)
        n = int(self.n_obs)
        if self.observer == "current" or n == 0:
            self.lo.copy_(lo)
            self.hi.copy_(hi)
        elif self.observer == "minmax":
            self.lo.copy_(torch.minimum(self.lo, lo))
            self.hi.copy_(torch.maximum(self.hi, hi))
        else:  # ema with running-average warm-up
            m = max(self.momentum, 1.0 / (n + 1))
            self.lo.add_(m * (lo - self.lo))
            self.hi.add_(m * (hi - self.hi))
        self.n_obs.add_(1)

    @property
    def calibrated(self) -> bool:
        return self.fixed_softmax or int(self.n_obs) > 0

    def qparams(self) -> QuantParams:
        if self.fixed_softmax:
            return fixed_softmax_qparams(self.bits)
        if not self.calibrated:
            raise RuntimeError(f"tensor {self.name!r} has no observed range: calibrate before quantising")
        if self.is_learned:
            scale, zp = (t.detach() for t in self._learned_scale_zp())
            scheme = "asymmetric" if bool(self.asymmetric) else "symmetric"
            qt = QType(self.bits, scheme == "symmetric", int(zp) if scheme == "asymmetric" else 0)
            return QuantParams(self.bits, scheme, float(scale), qt.zero_point,
                               float(scale) * (qt.qmin - qt.zero_point), float(scale) * (qt.qmax - qt.zero_point))
        return compute_qparams(float(self.lo), float(self.hi), self.bits, self.scheme, self.tau)

    def _learned_scale_zp(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The step size (float32, > 0) and the zero point (an integer in the unsigned range for
        an asymmetric tensor, 0 for a symmetric one; straight-through rounded)."""
        scale = self.log_scale.exp()
        if not bool(self.asymmetric):
            return scale, torch.zeros((), device=scale.device)
        z = self.zero_point
        return scale, z + (z.detach().round().clamp(0, (1 << self.bits) - 1) - z.detach())

    @torch.no_grad()
    def init_learned(self) -> None:
        """Start the learned range at the clipping of the observed range that minimises the
        quantisation MSE of the calibration values (the tensor itself for a constant)."""
        if not self.learn:
            return
        samples = torch.cat(self._samples) if self._samples else None
        self._samples, self.collecting = [], False
        if samples is None or samples.numel() == 0:
            raise RuntimeError(f"tensor {self.name!r} saw no data to initialise its range")
        lo, hi = float(self.lo), float(self.hi)
        best = None
        for c in np.linspace(0.2, 1.0, 41):
            qp = compute_qparams(c * lo, c * hi, self.bits, self.scheme, self.tau)
            err = float(torch.mean((fake_quantize(samples, qp) - samples) ** 2))
            if best is None or err < best[0] - 1e-12 * abs(best[0]):
                best = (err, qp)
        qp = best[1]
        self.log_scale.copy_(torch.log(torch.tensor(qp.scale, dtype=torch.float32)))
        self.zero_point.copy_(torch.tensor(float(qp.zero_point)))
        self.asymmetric.fill_(qp.scheme == "asymmetric")
        self.learned.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer == "current" or self.observing:
            self.observe(x)
        if not self.quantising:
            return x
        qp = self.qparams()
        if self.is_learned:
            scale, zp = self._learned_scale_zp()
            out = _LearnedFakeQuant.apply(x, scale, zp, float(qp.qmin), float(qp.qmax))
        else:
            out = fake_quantize(x, qp)
        if self.target is not None:
            value = (self.target.reshape(out.shape).to(out.dtype) - qp.zero_point) * qp.scale
            out = out + (value - out).detach()
        return out


class QLinear(nn.Linear):
    """``nn.Linear`` with a fake-quantised weight (``<name>.weight``) and, when both the
    weight and its input are quantised, a bias fake-quantised at scale ``s_w*s_x``."""

    def __init__(self, in_features: int, out_features: int, name: str, quant: QuantConfig):
        super().__init__(in_features, out_features)
        self.name = name
        wname = f"{name}.weight"
        self.wq = FakeQuant(wname, quant.bits_for(wname), quant.scheme_for(wname),
                            quant.observer_for(wname, constant=True), quant.ema_momentum, quant.adaptive_tau,
                            learn=quant.learn_ranges)

    def forward(self, x: torch.Tensor, x_fq: FakeQuant | None = None) -> torch.Tensor:
        w = self.wq(self.weight)
        b = self.bias
        if self.wq.quantising and x_fq is not None and x_fq.quantising:
            b = fake_quantize_bias(b, self.wq.qparams(), x_fq.qparams(), self.in_features)
        return nn.functional.linear(x, w, b)


def integer_softmax(scores: torch.Tensor, scores_qp: QuantParams, attn_bits: int) -> torch.Tensor:
    """Softmax of fake-quantised ``scores`` over the last axis, valued as the integer model
    computes it (:func:`model.intops.softmax`, the one definition) and differentiated as the
    float softmax fake-quantised to the same format (straight-through).

    The integer softmax (table exponential, one reciprocal per row) differs from a rounded
    float softmax by one code on a fraction of a percent of probabilities; every context
    element sums a row of them, so without this the fake-quantised model drifts from the
    integer one by a few output codes on a large share of windows."""
    from . import intops
    out_qp = fixed_softmax_qparams(attn_bits)
    approx = fake_quantize(torch.softmax(scores, dim=-1), out_qp)
    s_type = scores_qp.qtype()
    exp_bits, recip_bits = intops.softmax_precision(attn_bits)
    table = intops.softmax_exp_table(scores_qp.scale, s_type, exp_bits)
    codes = quantize(scores, scores_qp)
    probs = intops.softmax(codes, s_type, table, exp_bits, recip_bits, out_qp.qtype())
    exact = probs.to(scores.dtype) * out_qp.scale
    return approx + (exact - approx).detach()


# --------------------------------------------------------------------------------------------
# whole-model helpers


def fake_quants(model: nn.Module) -> dict[str, FakeQuant]:
    """Every fake quantiser of ``model`` by tensor name."""
    return {m.name: m for m in model.modules() if isinstance(m, FakeQuant)}


def set_observing(model: nn.Module, flag: bool = True) -> None:
    for m in fake_quants(model).values():
        m.observing = bool(flag)


def set_collecting(model: nn.Module, flag: bool = True) -> None:
    """Keep a subsample of every observed tensor (for :func:`init_learned_ranges`)."""
    for m in fake_quants(model).values():
        m.collecting = bool(flag) and m.learn
        if not flag:
            m._samples = []


def init_learned_ranges(model: nn.Module) -> None:
    """Every learned range starts at its MSE-optimal clipping (after calibration)."""
    for m in fake_quants(model).values():
        if m.learn and not m.is_learned:
            if m.observer == "current" and not m._samples:
                m.collecting = True   # a constant (weight, positional encoding): itself
                src = _constant_of(model, m)
                m.observe(src)
            m.init_learned()


def _constant_of(model: nn.Module, fq: "FakeQuant") -> torch.Tensor:
    for mod in model.modules():
        if isinstance(mod, QLinear) and mod.wq is fq:
            return mod.weight.detach()
    if fq.name == "pe" and hasattr(model, "pe"):
        return model.pe
    raise RuntimeError(f"no constant tensor found for {fq.name!r}")


def range_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learned step sizes and zero points (trained with their own learning rate)."""
    return [p for m in fake_quants(model).values() if m.learn for p in (m.log_scale, m.zero_point)]


def set_quantising(model: nn.Module, flag: bool = True) -> None:
    for m in fake_quants(model).values():
        m.quantising = bool(flag)


def quant_params(model: nn.Module) -> dict[str, dict]:
    """Final choice per tensor: name -> {"bits","scheme","scale","zero_point","min","max",...}.

    Bias entries (``<linear>.bias``) give the int32 scale ``s_w*s_x`` and the saturation bound.
    """
    fqs = fake_quants(model)
    out = {name: fq.qparams().to_dict() for name, fq in fqs.items() if fq.calibrated}
    for m in model.modules():
        if isinstance(m, QLinear):
            inp = getattr(m, "input_name", None)
            if inp in fqs and fqs[inp].calibrated and m.wq.calibrated:
                wq, xq = m.wq.qparams(), fqs[inp].qparams()
                out[f"{m.name}.bias"] = {
                    "bits": BIAS_BITS,
                    "scheme": "symmetric",
                    "scale": bias_scale(wq, xq),
                    "zero_point": 0,
                    "bound": int(bias_bound(m.in_features, xq.qtype(), wq.qtype())),
                    "min": float(m.bias.detach().min()),
                    "max": float(m.bias.detach().max()),
                }
    return out


assert MIN_BITS == 2 and MAX_BITS == 8
