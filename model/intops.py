"""The integer arithmetic of intformer: the single definition every executor must reproduce.

Every operator of the integer-only model is defined here, once, on PyTorch ``int64`` tensors,
batched over any leading axes and on any device (CPU, CUDA). The Amaranth hardware (``hw/``),
the compiled RTL simulation and the exported HDL are checked against these functions bit for
bit; nothing else in the project may re-implement them.

Operators take tensors or anything integer-valued :func:`as_int` accepts (NumPy arrays, lists,
Python ints) and return ``int64`` tensors on the device of their first operand; parameters
(weights, tables, per-channel constants) follow that device. No operator uses floating point:
the functions that turn real factors into integers (:func:`quantize_multiplier`,
:func:`softmax_exp_table`, ...) run once, when a model is converted, and return Python or NumPy
integers. The bound functions (``*_bound``) take and return Python ints.

Conventions
-----------
* A quantised tensor has a :class:`QType`: ``bits`` in 2..8 and either *symmetric* (signed
  integers in ``[-2**(b-1), 2**(b-1)-1]``, zero point 0) or *asymmetric* (unsigned integers in
  ``[0, 2**b-1]`` with an integer zero point in that range). Its real value is
  ``scale * (q - zero_point)``; the scale lives in the model file for dequantisation only.
* **Rounding rule** (the only one): :func:`rounding_shift` divides by ``2**shift`` rounding
  half towards +infinity, i.e. ``floor((x + 2**(shift-1)) / 2**shift)``. In hardware this is an
  add of a constant followed by an arithmetic right shift.
* **Saturation**: results are clamped to the output ``QType``'s range, never wrapped.
* Accumulator widths are derived by the ``*_acc_bound`` functions from the operand ranges and
  fan-in; :func:`signed_bits` turns a bound into a register width. Inputs outside the declared
  ranges are rejected (:class:`RangeError`), so an accumulator overflow is impossible.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

MIN_BITS = 2
MAX_BITS = 8
#: Requantisation multipliers are signed and satisfy ``abs(M) < 2**MULT_BITS``.
MULT_BITS = 16
#: Largest right shift of a requantisation (keeps ``acc * M`` well inside 64 bits).
MAX_SHIFT = 40
#: Fraction bits of the layer-norm standard deviation (see :func:`layernorm`).
LN_SD_FRAC_BITS = 4


class RangeError(ValueError):
    """An integer operand lies outside the range its type declares."""


def as_int(x, device=None, name: str = "operand") -> torch.Tensor:
    """``x`` as an ``int64`` tensor (on ``device``; by default a tensor's own device, else the
    CPU). Integer tensors, NumPy integer arrays, Python ints and lists of them are accepted;
    anything else (floats, booleans) is a :class:`RangeError`, since silently truncating a
    float would hide a missed quantisation."""
    if isinstance(x, torch.Tensor):
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise RangeError(f"{name} must be an integer tensor, got dtype {x.dtype}")
        return x.to(device=device if device is not None else x.device, dtype=torch.int64)
    a = np.asarray(x)
    if a.dtype.kind not in "iu":
        raise RangeError(f"{name} must be an integer array, got dtype {a.dtype}")
    return torch.from_numpy(a.astype(np.int64)).to(device or "cpu")


def check_bits(bits: int, what: str = "bit-width") -> int:
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool):
        raise ValueError(f"{what} must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what} must be from {MIN_BITS} to {MAX_BITS}, got {bits}: "
                         f"choose a width in that range")
    return int(bits)


@dataclass(frozen=True)
class QType:
    """Integer format of a quantised tensor."""
    bits: int
    signed: bool
    zero_point: int = 0

    def __post_init__(self):
        check_bits(self.bits)
        if self.signed and self.zero_point != 0:
            raise ValueError("a symmetric (signed) tensor has zero point 0")
        if not self.qmin <= self.zero_point <= self.qmax:
            raise ValueError(f"zero point {self.zero_point} outside [{self.qmin}, {self.qmax}]")

    @property
    def qmin(self) -> int:
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def max_offset(self) -> int:
        """Largest ``abs(q - zero_point)`` a value of this type can have."""
        return max(self.zero_point - self.qmin, self.qmax - self.zero_point)

    def check(self, q, name: str = "tensor", device=None) -> torch.Tensor:
        """``q`` as an ``int64`` tensor (:func:`as_int`) after checking it lies in the range."""
        q = as_int(q, device, name)
        if q.numel():
            lo, hi = (int(v) for v in torch.aminmax(q))
            if lo < self.qmin or hi > self.qmax:
                raise RangeError(f"{name} has values in [{lo}, {hi}] outside "
                                 f"[{self.qmin}, {self.qmax}] of {self}")
        return q

    def to_dict(self) -> dict:
        return {"bits": self.bits, "signed": self.signed, "zero_point": self.zero_point}

    @classmethod
    def from_dict(cls, d: dict) -> "QType":
        return cls(int(d["bits"]), bool(d["signed"]), int(d["zero_point"]))


def signed_bits(bound: int) -> int:
    """Width of a two's-complement register that holds every integer in ``[-bound, bound]``."""
    return max(int(bound), 1).bit_length() + 1


def unsigned_bits(bound: int) -> int:
    """Width of an unsigned register that holds every integer in ``[0, bound]``."""
    return max(int(bound), 1).bit_length()


# ---------------------------------------------------------------------------------------------
# Rounding, requantisation
# ---------------------------------------------------------------------------------------------

# The operators build their accumulators as fresh tensors and finish them in place (the
# trailing-underscore kernels below): a batch's tensors are megabytes, and a new one per step
# made the arithmetic wait on memory. The public functions copy first.

def _rounding_shift_(x, shift: int):
    """:func:`rounding_shift` in place on a tensor the caller owns; a Python int is rebound,
    exact at any size."""
    if shift < 0:
        raise ValueError(f"shift must be >= 0, got {shift}")
    if shift:
        x += 1 << (shift - 1)
        x >>= shift
    return x


def _saturate_(x: torch.Tensor, qtype: QType, relu: bool = False) -> torch.Tensor:
    return x.clamp_(qtype.zero_point if relu else qtype.qmin, qtype.qmax)


def _shift_saturate_(acc: torch.Tensor, shift: int, out: QType, relu: bool = False) -> torch.Tensor:
    """``saturate(out.zero_point + rounding_shift(acc, shift))`` in place: the last step of
    every requantisation."""
    _rounding_shift_(acc, shift)
    if out.zero_point:
        acc += out.zero_point
    return _saturate_(acc, out, relu)


def rounding_shift(x, shift: int):
    """``x / 2**shift`` rounded half towards +infinity (``shift >= 0``).

    A Python int stays a Python int (exact at any size: the bound functions use it), anything
    else becomes an ``int64`` tensor."""
    return _rounding_shift_(x if isinstance(x, int) else as_int(x).clone(), shift)


def saturate(x, qtype: QType, relu: bool = False) -> torch.Tensor:
    """Clamp to ``qtype``'s range; with ``relu`` the lower bound is the zero point (real 0)."""
    return _saturate_(as_int(x).clone(), qtype, relu)


def _offset(x: torch.Tensor, zero_point: int) -> torch.Tensor:
    """``x - zero_point`` (``x`` itself for a zero point of 0: never written to)."""
    return x - zero_point if zero_point else x


def quantize_multiplier(real: float, mult_bits: int = MULT_BITS) -> tuple[int, int]:
    """Approximate a real factor by ``M / 2**shift`` with ``abs(M) < 2**mult_bits``.

    ``M`` keeps as many significant bits as allowed; ``shift`` is within ``[0, MAX_SHIFT]``.
    """
    if not math.isfinite(real):
        raise ValueError(f"cannot represent the factor {real} as a fixed-point multiplier")
    if real == 0.0:
        return 0, 0
    mag = abs(real)
    # Choose shift so that mag * 2**shift lies in [2**(mult_bits-1), 2**mult_bits).
    exp = math.frexp(mag)[1]          # mag = f * 2**exp, f in [0.5, 1)
    shift = mult_bits - exp
    shift = min(max(shift, 0), MAX_SHIFT)
    m = round(mag * (1 << shift))
    if m >= (1 << mult_bits):         # rounding carried into a new bit
        if shift > 0:
            shift -= 1
            m = round(mag * (1 << shift))
        if m >= (1 << mult_bits):
            raise ValueError(f"factor {real} is too large for a {mult_bits}-bit multiplier "
                             f"with a non-negative shift")
    return (m if real > 0 else -m), shift


def quantize_common_multipliers(reals) -> tuple[list[int], int]:
    """Several real factors as integers over one power of two, so that one adder sums their
    products: the largest keeps :data:`MULT_BITS` significant bits, as in
    :func:`quantize_multiplier`."""
    _, shift = quantize_multiplier(max(abs(float(r)) for r in reals))
    return [round(float(r) * (1 << shift)) for r in reals], shift


def quantize_affine(gains, offsets) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-channel ``gain * x + offset`` as integer scales and offsets over a common shift
    (chosen for the largest gain)."""
    gains = np.asarray(gains, np.float64)
    _, shift = quantize_multiplier(float(np.abs(gains).max()) or 1.0)
    return (np.round(gains * (1 << shift)).astype(np.int64),
            np.round(np.asarray(offsets, np.float64) * (1 << shift)).astype(np.int64), shift)


def const_product_bound(x_bound: int, constants) -> int:
    """Largest ``abs`` of ``x * c`` for ``|x| <= x_bound`` and ``c`` one constant multiplier
    or any of an array of them (per channel)."""
    return int(x_bound) * int(np.abs(np.asarray(constants, np.int64)).max(initial=0))


def requant_product_bound(acc_bound: int, multiplier: int) -> int:
    """``|acc * multiplier|`` for ``|acc| <= acc_bound``: what a requantiser's product holds."""
    return const_product_bound(acc_bound, multiplier)


def requantize(acc, multiplier, shift: int, out: QType, relu: bool = False) -> torch.Tensor:
    """``saturate(zero_point + rounding_shift(acc * multiplier, shift))``.

    ``multiplier`` may be a scalar or an array broadcast against ``acc`` (per channel).
    """
    acc = as_int(acc)
    return _shift_saturate_(acc * as_int(multiplier, acc.device), shift, out, relu)


# ---------------------------------------------------------------------------------------------
# Linear layers and matrix products
# ---------------------------------------------------------------------------------------------

def offset_bits(qtype: QType) -> int:
    """Width of ``x - zero_point`` for the codes ``x`` of ``qtype`` (the operand of every
    product)."""
    return signed_bits(qtype.max_offset)


def product_bound(a: QType, b: QType) -> int:
    """Largest ``abs`` of one product ``(x - za) * (y - zb)`` of codes of ``a`` and ``b``."""
    return a.max_offset * b.max_offset


def packed_product_bound(a: QType, b: QType, g: int, k: int) -> int:
    """Largest ``abs`` of ``(x - za) * sum_i (y_i - zb) * 2**((g-1-i)*k)``: ``g`` products that
    share the operand ``x``, computed as one multiplication by their other operands packed
    ``k`` bits apart (each is then read from its own ``k``-bit field)."""
    return product_bound(a, b) * sum(1 << (i * k) for i in range(g))


def bias_bound(fan_in: int, a: QType, b: QType) -> int:
    """Bias magnitudes are saturated to this bound when the model is converted."""
    return fan_in * product_bound(a, b)


def dot_acc_bound(fan_in: int, a: QType, b: QType, with_bias: bool = False) -> int:
    """Largest ``abs`` of ``sum((a - za) * (b - zb)) [+ bias]`` over ``fan_in`` terms."""
    bound = fan_in * product_bound(a, b)
    return bound + (bias_bound(fan_in, a, b) if with_bias else 0)


def int_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact ``a @ b`` of ``int64`` tensors (batched like ``torch.matmul``). CUDA has no integer
    matrix product, so there the products are summed explicitly; both are exact."""
    if a.device.type != "cpu":
        return (a.unsqueeze(-1) * b.unsqueeze(-3)).sum(-2)
    if b.dim() == 2 and a.dim() > 2:
        # One matrix product over all leading axes: PyTorch's integer kernel is much faster
        # on one tall matrix than batched.
        return (a.reshape(-1, a.shape[-1]) @ b).reshape(*a.shape[:-1], b.shape[-1])
    return a @ b


def linear_acc(x, x_type: QType, w, w_type: QType, bias=None) -> torch.Tensor:
    """Accumulator of a linear layer: ``(x - zx) @ (w - zw).T + bias``.

    ``x`` has shape (..., In), ``w`` (Out, In), ``bias`` (Out,) or None.
    """
    x = x_type.check(x, "linear input")
    w = w_type.check(w, "linear weight", x.device)
    acc = int_matmul(_offset(x, x_type.zero_point), _offset(w, w_type.zero_point).T)
    if bias is not None:
        bias = as_int(bias, x.device, "bias")
        lim = bias_bound(w.shape[1], x_type, w_type)
        if bias.numel() and int(bias.abs().max()) > lim:
            raise RangeError(f"bias exceeds its bound {lim}")
        acc += bias
    return acc


def linear(x, x_type: QType, w, w_type: QType, bias, multiplier: int, shift: int, out: QType,
           relu: bool = False) -> torch.Tensor:
    """Linear layer with fused bias, requantisation and optional ReLU."""
    acc = linear_acc(x, x_type, w, w_type, bias)
    acc *= as_int(multiplier, acc.device)
    return _shift_saturate_(acc, shift, out, relu)


def matmul_acc(a, a_type: QType, b, b_type: QType) -> torch.Tensor:
    """``(a - za) @ (b - zb)`` for activations: a (..., M, K), b (..., K, N)."""
    a = a_type.check(a, "matmul left operand")
    b = b_type.check(b, "matmul right operand", a.device)
    return int_matmul(_offset(a, a_type.zero_point), _offset(b, b_type.zero_point))


# ---------------------------------------------------------------------------------------------
# Residual / positional-encoding add, per-channel affine (folded batch-norm), activations
# ---------------------------------------------------------------------------------------------

def add_acc_bound(a: QType, ma: int, b: QType, mb: int) -> int:
    """Largest ``abs`` of :func:`add`'s sum of products ``(a-za)*ma + (b-zb)*mb``."""
    return const_product_bound(a.max_offset, ma) + const_product_bound(b.max_offset, mb)


def add(a, a_type: QType, b, b_type: QType, ma: int, mb: int, shift: int,
        out: QType) -> torch.Tensor:
    """Sum of two differently scaled tensors: ``(a-za)*ma + (b-zb)*mb`` requantised."""
    a = a_type.check(a, "add left operand")
    b = b_type.check(b, "add right operand", a.device)
    pa, pb = _offset(a, a_type.zero_point) * ma, _offset(b, b_type.zero_point) * mb
    shape = torch.broadcast_shapes(pa.shape, pb.shape)
    # Summed into whichever product already has the result's shape (the positional encoding
    # is one window, the other operand a batch).
    acc = pa.add_(pb) if pa.shape == shape else pb.add_(pa) if pb.shape == shape else pa + pb
    return _shift_saturate_(acc, shift, out)


def affine_bound(x_bound: int, scales, offsets) -> int:
    """Largest ``abs`` of ``x * scales[c] + offsets[c]`` for ``|x| <= x_bound``."""
    return (const_product_bound(x_bound, scales)
            + int(np.abs(np.asarray(offsets, np.int64)).max(initial=0)))


def affine_acc_bound(x_type: QType, scales, offsets) -> int:
    """Largest ``abs`` of :func:`affine`'s ``(x - zx) * scales[c] + offsets[c]``."""
    return affine_bound(x_type.max_offset, scales, offsets)


def affine(x, x_type: QType, scales, offsets, shift: int, out: QType) -> torch.Tensor:
    """Per-channel affine on the last axis (batch-norm at inference):
    ``(x - zx) * scales[c] + offsets[c]`` requantised with a common shift."""
    x = x_type.check(x, "affine input")
    acc = _offset(x, x_type.zero_point) * as_int(scales, x.device)
    acc += as_int(offsets, x.device)
    return _shift_saturate_(acc, shift, out)


def lut_activation(x, x_type: QType, table, out: QType) -> torch.Tensor:
    """Element-wise function as a table over every input code: ``table[x - qmin]``."""
    x = x_type.check(x, "activation input")
    table = out.check(table, "activation table", x.device)
    if table.shape != (x_type.qmax - x_type.qmin + 1,):
        raise ValueError(f"activation table needs {x_type.qmax - x_type.qmin + 1} entries")
    return table[x - x_type.qmin]


# ---------------------------------------------------------------------------------------------
# Integer softmax
# ---------------------------------------------------------------------------------------------

def softmax_exp_table(score_scale: float, score_type: QType, exp_bits: int) -> np.ndarray:
    """``table[k] = round(2**exp_bits * exp(-k * score_scale))`` for k = 0 .. (first zero).

    ``k`` is the distance of a score below its row maximum, in score LSBs. The table stops at
    its first zero entry (every larger distance also maps to zero), so it is often much
    shorter than the ``2**bits`` possible distances.
    """
    n = score_type.qmax - score_type.qmin + 1
    k = np.arange(n, dtype=np.float64)
    table = np.round(np.exp(-k * score_scale) * float(1 << exp_bits)).astype(np.int64)
    zeros = np.flatnonzero(table == 0)
    if zeros.size:
        table = table[: zeros[0] + 1]
    return table


def softmax_bounds(row_length: int, exp_bits: int, recip_bits: int) -> dict:
    """Bounds of the softmax intermediates over rows of ``row_length`` scores: ``e`` and the
    row's ``sum`` (at least ``sum_min``: ``exp_table[0]`` is in every row), the reciprocal
    ``recip`` and the product ``e * recip`` (at most ``2**recip_bits``, since ``e <= sum``)."""
    return {"e": 1 << exp_bits, "sum_min": 1 << exp_bits, "sum": row_length << exp_bits,
            "recip": (1 << recip_bits) >> exp_bits, "product": 1 << recip_bits}


def softmax(scores, score_type: QType, exp_table, exp_bits: int, recip_bits: int,
            out: QType) -> torch.Tensor:
    """Integer softmax over the last axis.

    1. ``k = max(row) - s`` (>= 0), clipped to the table length;  ``e = exp_table[k]``
       (``exp_table[0] == 2**exp_bits``, so ``sum(e) >= 2**exp_bits``).
    2. One reciprocal per row: ``r = floor(2**recip_bits / sum(e))``.
    3. ``p = saturate(rounding_shift(e * r, recip_bits - out.bits))``: the probability in units
       of ``2**-out.bits`` (``out`` is unsigned with zero point 0).
    """
    s = score_type.check(scores, "softmax input")
    table = as_int(exp_table, s.device, "exp_table")
    if int(table[0]) != (1 << exp_bits):
        raise ValueError("exp_table[0] must equal 2**exp_bits")
    if out.signed or out.zero_point != 0:
        raise ValueError("the softmax output is unsigned with zero point 0")
    if recip_bits < exp_bits + out.bits:
        raise ValueError("recip_bits must be at least exp_bits + out.bits")
    k = torch.clamp(s.amax(dim=-1, keepdim=True) - s, max=len(table) - 1)
    e = table[k]
    total = e.sum(dim=-1, keepdim=True)
    recip = (1 << recip_bits) // total
    e *= recip
    return _shift_saturate_(e, recip_bits - out.bits, out)


# ---------------------------------------------------------------------------------------------
# Integer layer-norm
# ---------------------------------------------------------------------------------------------

def isqrt(x) -> torch.Tensor:
    """Floor of the square root of non-negative integers (element-wise).

    Digit by digit (two bits of the radicand per step, from the highest power of four present):
    exact on all of ``int64``, integer operations only."""
    x = as_int(x, name="isqrt operand")
    root = torch.zeros_like(x)
    if not x.numel():
        return root
    lo, hi = (int(v) for v in torch.aminmax(x))
    if lo < 0:
        raise RangeError("isqrt of a negative number")
    rest = x.clone()
    bit = 1 << ((hi.bit_length() - 1) & ~1) if hi else 0
    while bit:
        trial = root + bit
        take = rest >= trial
        rest = torch.where(take, rest - trial, rest)
        root = torch.where(take, (root >> 1) + bit, root >> 1)
        bit >>= 2
    return root


def layernorm(x, x_type: QType, scales, offsets, shift: int, norm_bits: int, recip_bits: int,
              out: QType):
    """Integer layer-norm over the last axis (n channels).

    ``xc = x - zx``;  ``dev = n*xc - sum(xc)`` (n times the deviation from the mean);
    ``sd = max(isqrt((sum(dev**2) << 2*LN_SD_FRAC_BITS) // n), 1)`` (n times the standard
    deviation, with ``LN_SD_FRAC_BITS`` fraction bits so that the floor of the root costs
    little); ``r = floor(2**recip_bits / sd)``;
    ``z = rounding_shift(dev * r, recip_bits - norm_bits - LN_SD_FRAC_BITS)``
    (the normalised value with ``norm_bits`` fraction bits); then a per-channel affine
    ``(z * scales[c] + offsets[c])`` requantised by ``shift`` (gamma and beta live there).
    """
    x = x_type.check(x, "layer-norm input")
    n = x.shape[-1]
    xc = _offset(x, x_type.zero_point)
    dev = n * xc
    dev -= xc.sum(dim=-1, keepdim=True)
    var_n = ((dev * dev).sum(dim=-1, keepdim=True) << (2 * LN_SD_FRAC_BITS)) // n
    sd = torch.clamp(isqrt(var_n), min=1)
    recip = (1 << recip_bits) // sd
    z = _rounding_shift_(dev * recip, recip_bits - norm_bits - LN_SD_FRAC_BITS)
    z *= as_int(scales, x.device)
    z += as_int(offsets, x.device)
    return _shift_saturate_(z, shift, out)


def layernorm_bounds(n: int, x_type: QType, norm_bits: int, recip_bits: int) -> dict:
    """Worst-case magnitudes of the layer-norm intermediates, for register widths."""
    m = x_type.max_offset
    dev = 2 * n * m                       # |n*xc - sum(xc)| <= n*m + n*m
    sq_sum = n * dev * dev
    # |dev| / sd <= sqrt(n) * n ... bounded by |dev| * r with sd >= 1.
    z = rounding_shift(dev * (1 << recip_bits), recip_bits - norm_bits - LN_SD_FRAC_BITS)
    var = (sq_sum << (2 * LN_SD_FRAC_BITS)) // n
    # xc = x - zx; sum = sum(xc), sq = xc**2 and sq_acc = sum(xc**2) (the hardware's running
    # statistics), sum_sq = sum**2, var_n = n*sq_acc - sum**2 (var without its fraction bits)
    return {"xc": m, "sum": n * m, "sq": m * m, "sq_acc": n * m * m, "sum_sq": (n * m) ** 2,
            "dev": dev, "sq_sum": sq_sum, "var": var, "var_n": var >> (2 * LN_SD_FRAC_BITS),
            "sd": math.isqrt(var), "recip": 1 << recip_bits, "dev_recip": dev << recip_bits,
            "z": int(z)}


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------

def mean_pool_acc_bound(length: int, x_type: QType) -> int:
    """Largest ``abs`` of :func:`mean_pool`'s sum ``sum_t (x - zx)`` over ``length`` tokens."""
    return length * x_type.max_offset


def mean_pool(x, x_type: QType, multiplier: int, shift: int, out: QType) -> torch.Tensor:
    """Mean over the time axis (second to last): ``sum_t (x - zx)`` requantised
    (``multiplier / 2**shift`` includes the 1/L and the scale ratio)."""
    x = x_type.check(x, "pooling input")
    acc = _offset(x, x_type.zero_point).sum(dim=-2)
    acc *= as_int(multiplier, acc.device)
    return _shift_saturate_(acc, shift, out)


# ---------------------------------------------------------------------------------------------
# Classification head
# ---------------------------------------------------------------------------------------------

def argmax(x) -> torch.Tensor:
    """Index of the largest element along the last axis. **Ties go to the lowest index** (the
    first of the equal maxima in stream order): the one tie-breaking rule of every executor."""
    x = as_int(x, name="argmax input")
    n = x.shape[-1]
    if n < 1:
        raise ValueError("argmax of an empty axis")
    top = x.max(dim=-1, keepdim=True).values
    idx = torch.arange(n, device=x.device).expand_as(x)
    return torch.where(x == top, idx, torch.full_like(idx, n)).min(dim=-1).values


def argmax_out_type(x_type: QType, n: int) -> QType:
    """Type of :func:`logits_argmax`'s output for ``n`` logits of type ``x_type``: the logits'
    own codes (same signedness and zero point) and the index ``0 .. n-1``, so as many bits as
    the logits have or as the index needs, whichever is more."""
    if n < 1:
        raise ValueError(f"argmax needs at least one input, got {n}")
    need = signed_bits(n - 1) if x_type.signed else unsigned_bits(n - 1)
    bits = max(x_type.bits, need)
    if bits > MAX_BITS:
        raise ValueError(f"{n} classes need {bits}-bit codes, more than {MAX_BITS}: "
                         f"use at most {(1 << (MAX_BITS - 1)) if x_type.signed else 1 << MAX_BITS} classes")
    return QType(bits, x_type.signed, x_type.zero_point)


def logits_argmax(x, x_type: QType, out: QType) -> torch.Tensor:
    """``n`` logit codes (..., n) -> (..., n + 1): the logits unchanged, then :func:`argmax`'s
    index (the classifier's output: scores and class)."""
    x = x_type.check(x, "argmax input")
    if out != argmax_out_type(x_type, x.shape[-1]):
        raise ValueError(f"argmax output type {out} is not {argmax_out_type(x_type, x.shape[-1])}")
    return out.check(torch.cat([x, argmax(x)[..., None]], dim=-1), "argmax output")


def score_flag(x, x_type: QType, threshold: int) -> torch.Tensor:
    """An anomaly score code (..., 1) -> (..., 2): the score unchanged, then the flag, 1 when
    ``score >= threshold`` (a code of ``x_type``; compared as integers), else 0. The output has
    the score's type (0 and 1 are codes of every type)."""
    x = x_type.check(x, "score")
    if x.shape[-1] != 1:
        raise ValueError(f"score_flag takes one score per window, got {x.shape[-1]}")
    return torch.cat([x, (x >= int(threshold)).to(torch.int64)], dim=-1)


# ---------------------------------------------------------------------------------------------
# Default internal precisions (derived from the bit-widths; stored in the model file)
# ---------------------------------------------------------------------------------------------

def softmax_precision(out_bits: int) -> tuple[int, int]:
    """``(exp_bits, recip_bits)``: exponentials carry 6 bits more than the output, and the
    reciprocal keeps 8 guard bits, so ``e * r`` stays below ``2**(2*out_bits + 15)``."""
    exp_bits = out_bits + 6
    return exp_bits, exp_bits + out_bits + 8


def layernorm_precision(n: int, x_type: QType, out_bits: int) -> tuple[int, int]:
    """``(norm_bits, recip_bits)`` for an n-channel layer-norm: the normalised value keeps
    ``out_bits + 2`` fraction bits; the reciprocal of ``sd <= n * max_offset * 2**LN_SD_FRAC_BITS``
    keeps 4 guard bits."""
    norm_bits = out_bits + 2
    sd_max = n * x_type.max_offset << LN_SD_FRAC_BITS
    return norm_bits, norm_bits + LN_SD_FRAC_BITS + unsigned_bits(sd_max) + 4
