"""Synthetic integer models: random but well-scaled parameters for any configuration.

Each operator's parameters come from its kind's entry in the registry (:mod:`model.ops`).
Hardware tests need integer models of every shape and bit-width without training one each time.
The parameters here are random; the multipliers are chosen from rough variance estimates so that
every tensor uses a good part of its range instead of saturating or collapsing to zero.
"""
from __future__ import annotations

import math

import numpy as np

from . import intops, ops as registry
from .intmodel import IntModel, Op, TensorInfo, graph_spec, check_config
from .intops import QType


def _qtype(bits: int, signed: bool, rng) -> QType:
    if signed:
        return QType(bits, True, 0)
    hi = (1 << bits) - 1
    return QType(bits, False, int(rng.integers(0, hi // 3 + 1)))


def _std_uniform(q: QType) -> float:
    return (q.qmax - q.qmin + 1) / math.sqrt(12.0)


class SynthContext:
    """What an operator kind's ``synthesize`` (:mod:`model.ops`) works with: the configuration,
    the random generator (drawn from in graph order, so a seed always builds the same model),
    the widths, the fixed types, the tensors declared so far and their expected spread."""

    def __init__(self, config, rng, width, fixed, asymmetric, constant_style):
        self.config, self.rng, self.width, self.fixed = config, rng, width, fixed
        self.asymmetric, self.constant_style = asymmetric, constant_style
        self.tensors: dict = {}
        self.std: dict = {}

    def set_type(self, name, shape, qtype: QType, scale: float):
        self.tensors[name] = TensorInfo(name, tuple(shape), qtype, scale)

    def declare(self, name, shape, signed=True) -> QType:
        """A type for ``name`` (unsigned only if ``signed`` is False and the model is
        asymmetric, unless ``fixed`` gives it) and a random scale."""
        q = _qtype(self.width(name), signed or not self.asymmetric, self.rng)
        q = self.fixed.get(name, q)
        self.set_type(name, shape, q, float(self.rng.uniform(0.01, 0.1)))
        return q

    std_uniform = staticmethod(_std_uniform)

    def multiplier(self, real: float) -> tuple[int, int]:
        """``intops.quantize_multiplier(real)``; in the "trained" style ``real`` times a factor
        drawn log-uniformly over an octave first: a trained model's ratio of scales is a
        product of learned ones, so its fixed-point mantissa is anywhere in its range and has
        as many signed digits as a random one (what a constant multiplier costs in logic)."""
        if self.constant_style == "trained":
            real *= 2.0 ** float(self.rng.uniform(-0.5, 0.5))
        return intops.quantize_multiplier(real)

    def score_scale(self, score_std: float) -> float:
        """The real step of a softmax input of spread ``score_std`` (its exponential table's
        decay, so the table's depth). "converter": a row spreads over four e-folds. "trained":
        over 1 to 8 (log-uniform), as in the trained models of the calibration set (1.7 and 1.9
        at 8 bits, 1.6 to 8 at 4 and 6)."""
        if self.constant_style != "trained":
            return 4.0 / max(score_std, 1.0)
        return 2.0 ** float(self.rng.uniform(0.0, 3.0)) / max(score_std, 1.0)

    @staticmethod
    def target_std(q: QType) -> float:
        return (q.qmax - q.qmin) / 6.0

    def affine(self, gains, offsets):
        """Fixed-point per-channel gains and offsets in the :data:`CONSTANT_STYLES` style."""
        if self.constant_style != "fixed-shift":
            return intops.quantize_affine(gains, offsets)
        shift = 12
        return (np.round(gains * (1 << shift)).astype(np.int64),
                np.round(offsets * (1 << shift)).astype(np.int64), shift)


#: How the constants of the residual adds, affines and layer-norms are fixed-pointed.
#: "converter": as :mod:`model.convert` does for a trained model (the largest factor keeps
#: ``MULT_BITS`` bits), so that synthetic designs cost in hardware what trained ones do.
#: "trained": "converter", and the other constants drawn as training leaves them
#: (:meth:`SynthContext.multiplier`, :meth:`SynthContext.score_scale`). The requantisers'
#: multipliers of "converter" follow from the spreads alone: every linear of a shape gets the
#: same one and a context's is a power of two (shift-only hardware), where a trained model's
#: are arbitrary 16-bit mantissas; its softmax tables are half as deep as trained ones.
#: "fixed-shift": shifts of 14 (adds) and 12 (norms), narrower constants; kept only because
#: calibration records synthesised before the change name it and must rebuild the same design.
CONSTANT_STYLES = ("converter", "trained", "fixed-shift")


def random_intmodel(config: dict, bits: int | dict = 8, seed: int = 0,
                    asymmetric: bool = True, constant_style: str = "converter",
                    qtypes: dict | None = None) -> IntModel:
    """A random integer model. ``bits`` is one width for every tensor or a dict name -> width
    (missing names take ``bits.get("default", 8)``). With ``asymmetric`` some activations get
    unsigned types with non-zero zero points, to exercise that path. ``constant_style`` is one of
    :data:`CONSTANT_STYLES`.

    ``qtypes`` (name -> :class:`QType` or its dict) fixes the whole type of a tensor (width,
    scheme, zero point) instead: any activation, ``"pe"``, ``"input"`` or ``"<linear>.weight"``.
    A softmax output must stay unsigned with zero point 0. (Without ``qtypes`` a seed builds
    the same model as before the option existed.)"""
    if constant_style not in CONSTANT_STYLES:
        raise ValueError(f"constant_style must be one of {CONSTANT_STYLES}, got {constant_style!r}")
    c = check_config(config)
    rng = np.random.default_rng(seed)
    width = (lambda n: bits.get(n, bits.get("default", 8))) if isinstance(bits, dict) else (lambda n: bits)
    fixed = {n: q if isinstance(q, QType) else QType.from_dict(q) for n, q in (qtypes or {}).items()}
    known = {"input", "pe"} | {s.output for s in graph_spec(c)} | {
        s.output + ".weight" for s in graph_spec(c) if s.kind == "linear"}
    if set(fixed) - known:
        raise ValueError(f"qtypes names unknown tensors {sorted(set(fixed) - known)}")
    L, F, d = c["window"], c["features"], c["d_model"]

    ctx = SynthContext(c, rng, width, fixed, asymmetric, constant_style)
    xin = ctx.declare("input", (L, F), signed=bool(rng.integers(0, 2)))
    ctx.std["input"] = _std_uniform(xin)
    pe_t = ctx.declare("pe", (L, d))
    constants = {"pe": rng.integers(pe_t.qmin, pe_t.qmax + 1, size=(L, d))}
    ctx.std["pe"] = _std_uniform(pe_t)

    ops = []
    for spec in graph_spec(c):
        params, arrays = registry.kind(spec.kind).synthesize(ctx, spec)
        ops.append(Op(spec, params, arrays))
    tensors = ctx.tensors

    return IntModel(c, tensors, ops, constants,
                    input_norm={"mean": np.zeros(F), "std": np.ones(F)},
                    target_norm={"mean": 0.0, "std": 1.0}, meta={"synthetic_seed": seed})


def random_inputs(model: IntModel, n: int, seed: int = 0) -> np.ndarray:
    """Random integer input windows (n, L, F) covering the whole input range."""
    q = model.qtype("input")
    rng = np.random.default_rng(seed)
    return rng.integers(q.qmin, q.qmax + 1, size=(n, model.config["window"], model.config["features"]))
