"""Synthetic integer models: random but well-scaled parameters for any configuration.

Hardware tests need integer models of every shape and bit-width without training one each time.
The parameters here are random; the multipliers are chosen from rough variance estimates so that
every tensor uses a good part of its range instead of saturating or collapsing to zero.
"""
from __future__ import annotations

import math

import numpy as np

from . import intops
from .intmodel import IntModel, Op, TensorInfo, graph_spec, check_config
from .intops import QType


def _qtype(bits: int, signed: bool, rng) -> QType:
    if signed:
        return QType(bits, True, 0)
    hi = (1 << bits) - 1
    return QType(bits, False, int(rng.integers(0, hi // 3 + 1)))


def _std_uniform(q: QType) -> float:
    return (q.qmax - q.qmin + 1) / math.sqrt(12.0)


def _mult(real: float):
    return intops.quantize_multiplier(real)


#: How the constants of the residual adds, affines and layer-norms are fixed-pointed.
#: "converter": as :mod:`model.convert` does for a trained model (the largest factor keeps
#: ``MULT_BITS`` bits), so that synthetic designs cost in hardware what trained ones do.
#: "fixed-shift": shifts of 14 (adds) and 12 (norms), narrower constants; kept only because
#: calibration records synthesised before the change name it and must rebuild the same design.
CONSTANT_STYLES = ("converter", "fixed-shift")


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

    tensors, std = {}, {}

    def declare(name, shape, signed=True):
        q = _qtype(width(name), signed or not asymmetric, rng)
        q = fixed.get(name, q)
        tensors[name] = TensorInfo(name, tuple(shape), q, float(rng.uniform(0.01, 0.1)))
        return q

    def target_std(q):
        return (q.qmax - q.qmin) / 6.0

    def affine(gains, offsets):
        if constant_style == "converter":
            return intops.quantize_affine(gains, offsets)
        shift = 12
        return (np.round(gains * (1 << shift)).astype(np.int64),
                np.round(offsets * (1 << shift)).astype(np.int64), shift)

    xin = declare("input", (L, F), signed=bool(rng.integers(0, 2)))
    std["input"] = _std_uniform(xin)
    pe_t = declare("pe", (L, d))
    constants = {"pe": rng.integers(pe_t.qmin, pe_t.qmax + 1, size=(L, d))}
    std["pe"] = _std_uniform(pe_t)

    ops = []
    for spec in graph_spec(c):
        p, a = {}, {}
        name = spec.output
        if spec.kind == "softmax":
            b = width(name)
            out = QType(b, False, 0)
            if name in fixed:
                if fixed[name].signed or fixed[name].zero_point:
                    raise ValueError(f"the softmax output {name!r} is unsigned with zero point 0, "
                                     f"got {fixed[name]}")
                out = fixed[name]
                b = out.bits
            tensors[name] = TensorInfo(name, spec.shape, out, 1.0 / (1 << b))
            st = tensors[spec.inputs[0]]
            exp_bits, recip_bits = intops.softmax_precision(b)
            # Scale so that the spread of a row covers a few e-folds of the exponential.
            score_scale = 4.0 / max(std[spec.inputs[0]], 1.0)
            a["exp_table"] = intops.softmax_exp_table(score_scale, st.qtype, exp_bits)
            p.update(exp_bits=exp_bits, recip_bits=recip_bits)
            std[name] = (1 << b) / L
            ops.append(Op(spec, p, a))
            continue
        relu = spec.dims.get("relu", False)
        out = declare(name, spec.shape, signed=not relu)
        ins = [tensors[n].qtype for n in spec.inputs]
        if spec.kind == "linear":
            wt = QType(width(name + ".weight"), True, 0) if not asymmetric or rng.integers(0, 3) \
                else QType(width(name + ".weight"), False, int(rng.integers(0, 1 << width(name + ".weight"))))
            wt = fixed.get(name + ".weight", wt)
            fan_in = spec.dims["in"]
            a["weight"] = rng.integers(wt.qmin, wt.qmax + 1, size=(spec.dims["out"], fan_in))
            lim = intops.bias_bound(fan_in, ins[0], wt)
            acc_std = math.sqrt(fan_in) * _std_uniform(wt) * std[spec.inputs[0]]
            a["bias"] = np.clip(np.round(rng.normal(0, acc_std, spec.dims["out"])), -lim, lim).astype(np.int64)
            m, s = _mult(target_std(out) / acc_std)
            p.update(weight_type=wt.to_dict(), multiplier=m, shift=s, relu=bool(relu))
        elif spec.kind == "add":
            acc_std = math.hypot(*(std[n] for n in spec.inputs))
            reals = [target_std(out) / acc_std * rng.uniform(0.7, 1.3) for _ in range(2)]
            if constant_style == "converter":
                (ma, mb), shift = intops.quantize_common_multipliers(reals)
            else:   # exact in floating point: scaling by a power of two commutes with rounding
                shift = 14
                ma, mb = (round(r * (1 << shift)) for r in reals)
            p.update(ma=ma, mb=mb, shift=shift)
        elif spec.kind in ("scores", "context"):
            dh = d // spec.dims["heads"]
            if spec.kind == "scores":
                acc_std = math.sqrt(dh) * std[spec.inputs[0]] * std[spec.inputs[1]]
            else:   # probabilities sum to 2**bits: the context is a weighted mean of v
                acc_std = (1 << ins[0].bits) * std[spec.inputs[1]]
            m, s = _mult(target_std(out) / acc_std)
            p.update(multiplier=m, shift=s)
        elif spec.kind == "affine":
            gains = target_std(out) / std[spec.inputs[0]] * rng.uniform(-1.5, 1.5, d)
            offsets = rng.normal(0, 0.5 * target_std(out), d)
            a["scales"], a["offsets"], p["shift"] = affine(gains, offsets)
        elif spec.kind == "layernorm":
            norm_bits, recip_bits = intops.layernorm_precision(d, ins[0], out.bits)
            gains = target_std(out) / (1 << norm_bits) * rng.uniform(0.5, 1.5, d)
            offsets = rng.normal(0, 0.3 * target_std(out), d)
            a["scales"], a["offsets"], p["shift"] = affine(gains, offsets)
            p.update(norm_bits=norm_bits, recip_bits=recip_bits)
        elif spec.kind == "lut":
            xq = ins[0]
            codes = np.arange(xq.qmin, xq.qmax + 1)
            xr = (codes - xq.zero_point) / max(std[spec.inputs[0]], 1.0)
            gelu = 0.5 * xr * (1 + np.tanh(math.sqrt(2 / math.pi) * (xr + 0.044715 * xr ** 3)))
            a["table"] = intops.saturate(np.round(gelu * target_std(out)).astype(np.int64)
                                         + out.zero_point, out).numpy()
        elif spec.kind == "mean_pool":
            acc_std = spec.dims["length"] * std[spec.inputs[0]]
            m, s = _mult(target_std(out) / acc_std * 2)
            p.update(multiplier=m, shift=s)
        std[name] = target_std(out)
        ops.append(Op(spec, p, a))

    return IntModel(c, tensors, ops, constants,
                    input_norm={"mean": np.zeros(F), "std": np.ones(F)},
                    target_norm={"mean": 0.0, "std": 1.0}, meta={"synthetic_seed": seed})


def random_inputs(model: IntModel, n: int, seed: int = 0) -> np.ndarray:
    """Random integer input windows (n, L, F) covering the whole input range."""
    q = model.qtype("input")
    rng = np.random.default_rng(seed)
    return rng.integers(q.qmin, q.qmax + 1, size=(n, model.config["window"], model.config["features"]))
