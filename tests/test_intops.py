"""Properties of the integer kernels in model/intops.py (the single definition of the arithmetic)."""
from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from model import intops
from model.intops import QType, RangeError

BITS = [2, 3, 4, 5, 6, 7, 8]


@st.composite
def qtypes(draw, bits=None):
    b = draw(st.sampled_from(BITS)) if bits is None else bits
    if draw(st.booleans()):
        return QType(b, True, 0)
    return QType(b, False, draw(st.integers(0, (1 << b) - 1)))


def codes(q: QType, shape, draw):
    n = int(np.prod(shape))
    return np.array(draw(st.lists(st.integers(q.qmin, q.qmax), min_size=n, max_size=n)),
                    dtype=np.int64).reshape(shape)


# -- widths and types ----------------------------------------------------------------------

@pytest.mark.parametrize("bad", [0, 1, 9, 17, -3, 2.5, True, "8"])
def test_bit_width_outside_2_to_8_is_rejected(bad):
    with pytest.raises(ValueError, match="2 to 8|from 2"):
        intops.check_bits(bad)


@pytest.mark.parametrize("bits", BITS)
def test_qtype_ranges(bits):
    s, u = QType(bits, True), QType(bits, False, 1)
    assert (s.qmin, s.qmax) == (-(1 << bits - 1), (1 << bits - 1) - 1)
    assert (u.qmin, u.qmax) == (0, (1 << bits) - 1)
    assert s.max_offset == 1 << bits - 1
    assert u.max_offset == (1 << bits) - 2
    with pytest.raises(ValueError):
        QType(bits, True, 1)
    with pytest.raises(ValueError):
        QType(bits, False, 1 << bits)


def test_out_of_range_codes_are_rejected():
    q = QType(4, True)
    with pytest.raises(RangeError, match="outside"):
        q.check(np.array([8]))
    with pytest.raises(RangeError, match="integer"):
        q.check(np.array([1.0]))


@given(st.integers(0, 1 << 40))
def test_register_widths_hold_their_bound(bound):
    w = intops.signed_bits(bound)
    assert -(1 << (w - 1)) <= -bound and bound <= (1 << (w - 1)) - 1
    u = intops.unsigned_bits(bound)
    assert bound <= (1 << u) - 1


# -- rounding and requantisation ------------------------------------------------------------

@given(st.integers(-(1 << 50), 1 << 50), st.integers(0, 40))
def test_rounding_shift_rounds_half_up(x, s):
    expected = math.floor(Fraction(x, 1 << s) + Fraction(1, 2))
    assert int(intops.rounding_shift(x, s)) == expected


def test_rounding_shift_ties():
    assert intops.rounding_shift(np.array([-3, -1, 1, 3, 5, -5]), 1).tolist() == [-1, 0, 1, 2, 3, -2]
    with pytest.raises(ValueError):
        intops.rounding_shift(3, -1)


@given(st.floats(1e-6, 1e4, allow_nan=False) | st.floats(-1e4, -1e-6, allow_nan=False))
def test_quantize_multiplier_is_accurate(real):
    m, s = intops.quantize_multiplier(real)
    assert abs(m) < 1 << intops.MULT_BITS and 0 <= s <= intops.MAX_SHIFT
    assert (m > 0) == (real > 0)
    if s < intops.MAX_SHIFT:   # full precision unless the shift saturated
        assert abs(m / 2 ** s - real) <= abs(real) * 2.0 ** -(intops.MULT_BITS - 1)


def test_quantize_multiplier_rejects_unrepresentable():
    with pytest.raises(ValueError):
        intops.quantize_multiplier(float("nan"))
    with pytest.raises(ValueError):
        intops.quantize_multiplier(1e9)
    assert intops.quantize_multiplier(0.0) == (0, 0)


@settings(max_examples=200)
@given(st.data())
def test_requantize_matches_exact_rational(data):
    out = data.draw(qtypes())
    acc = data.draw(st.integers(-(1 << 24), 1 << 24))
    m = data.draw(st.integers(-(1 << 16) + 1, (1 << 16) - 1))
    s = data.draw(st.integers(0, 40))
    relu = data.draw(st.booleans())
    exact = out.zero_point + math.floor(Fraction(acc * m, 1 << s) + Fraction(1, 2))
    lo = out.zero_point if relu else out.qmin
    assert int(intops.requantize(acc, m, s, out, relu)) == min(max(exact, lo), out.qmax)


# -- linear / matmul: worst-case accumulations at every width ---------------------------------

@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("fan_in", [1, 7, 16, 64])
def test_linear_worst_case_accumulator_reaches_and_respects_bound(bits, fan_in):
    for xq in (QType(bits, True), QType(bits, False, 0), QType(bits, False, (1 << bits) - 1)):
        for wq in (QType(bits, True), QType(bits, False, 0)):
            bound = intops.dot_acc_bound(fan_in, xq, wq, with_bias=True)
            blim = intops.bias_bound(fan_in, xq, wq)
            # Extremes: every operand at the rail farthest from its zero point.
            xe = xq.qmin if xq.zero_point - xq.qmin >= xq.qmax - xq.zero_point else xq.qmax
            we = wq.qmin if wq.zero_point - wq.qmin >= wq.qmax - wq.zero_point else wq.qmax
            x = np.full((1, fan_in), xe)
            w = np.full((2, fan_in), we)
            sign = np.sign((xe - xq.zero_point) * (we - wq.zero_point)) or 1
            acc = intops.linear_acc(x, xq, w, wq, np.array([blim, -blim]) * sign)
            assert abs(acc).max() == bound
            assert abs(acc).max() < 1 << (intops.signed_bits(bound) - 1)


def test_linear_rejects_oversized_bias():
    q = QType(4, True)
    with pytest.raises(RangeError, match="bias"):
        intops.linear_acc(np.zeros((1, 2), np.int64), q, np.zeros((1, 2), np.int64), q,
                          np.array([intops.bias_bound(2, q, q) + 1]))


@settings(max_examples=60)
@given(st.data())
def test_linear_matches_loops(data):
    xq, wq, oq = data.draw(qtypes()), data.draw(qtypes()), data.draw(qtypes())
    n_in, n_out = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    x, w = codes(xq, (2, n_in), data.draw), codes(wq, (n_out, n_in), data.draw)
    lim = intops.bias_bound(n_in, xq, wq)
    b = np.array(data.draw(st.lists(st.integers(-lim, lim), min_size=n_out, max_size=n_out)))
    m, s = data.draw(st.integers(1, 1 << 15)), data.draw(st.integers(0, 30))
    got = intops.linear(x, xq, w, wq, b, m, s, oq)
    for t in range(2):
        for o in range(n_out):
            acc = sum((int(x[t, i]) - xq.zero_point) * (int(w[o, i]) - wq.zero_point)
                      for i in range(n_in)) + int(b[o])
            assert got[t, o] == intops.requantize(acc, m, s, oq)


# -- element-wise ------------------------------------------------------------------------------

@settings(max_examples=100)
@given(st.data())
def test_add_matches_definition_and_bound(data):
    aq, bq, oq = data.draw(qtypes()), data.draw(qtypes()), data.draw(qtypes())
    a, b = codes(aq, (5,), data.draw), codes(bq, (5,), data.draw)
    ma, mb = data.draw(st.integers(-(1 << 15), 1 << 15)), data.draw(st.integers(-(1 << 15), 1 << 15))
    s = data.draw(st.integers(0, 20))
    got = intops.add(a, aq, b, bq, ma, mb, s, oq)
    acc = (a - aq.zero_point) * ma + (b - bq.zero_point) * mb
    assert np.abs(acc).max() <= intops.add_acc_bound(aq, ma, bq, mb)
    assert (got == intops.saturate(oq.zero_point + intops.rounding_shift(acc, s), oq)).all()


def test_affine_is_per_channel():
    xq, oq = QType(8, True), QType(8, False, 128)
    x = np.array([[1, 2, 3], [-128, 127, 0]])
    got = intops.affine(x, xq, [256, -256, 0], [0, 128, 1000], 8, oq)
    assert got.tolist() == [[129, 127, 132], [0, 2, 132]]


def test_lut_activation_indexes_by_code():
    xq, oq = QType(2, True), QType(2, False, 0)
    assert intops.lut_activation(np.array([-2, -1, 0, 1]), xq, [0, 0, 1, 3], oq).tolist() == [0, 0, 1, 3]
    with pytest.raises(ValueError, match="entries"):
        intops.lut_activation(np.array([0]), xq, [0, 1], oq)


# -- softmax -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bits", BITS)
def test_softmax_uniform_and_dominant_rows(bits):
    sq, out = QType(bits, True), QType(bits, False, 0)
    exp_bits, recip_bits = intops.softmax_precision(bits)
    table = intops.softmax_exp_table(0.5, sq, exp_bits)
    assert table[0] == 1 << exp_bits and (np.diff(table) <= 0).all()
    n = 8
    uniform = intops.softmax(np.full((1, n), sq.qmax), sq, table, exp_bits, recip_bits, out)
    assert (uniform == ((1 << bits) + n // 2) // n).all() or bits <= 3
    dominant = np.full((1, n), sq.qmin)
    dominant[0, 3] = sq.qmax
    p = intops.softmax(dominant, sq, table, exp_bits, recip_bits, out)
    assert p[0, 3] == max(p[0]) and p[0, 3] >= out.qmax - (n if bits > 3 else out.qmax)


@settings(max_examples=100)
@given(st.data())
def test_softmax_is_a_distribution_and_monotone(data):
    bits = data.draw(st.sampled_from([4, 6, 8]))
    sq, out = data.draw(qtypes(bits)), QType(bits, False, 0)
    exp_bits, recip_bits = intops.softmax_precision(bits)
    table = intops.softmax_exp_table(data.draw(st.floats(0.01, 2.0)), sq, exp_bits)
    n = data.draw(st.integers(1, 24))
    s = codes(sq, (n,), data.draw)
    p = intops.softmax(s, sq, table, exp_bits, recip_bits, out)
    # Rounding each term moves the sum by at most half an LSB per term (plus saturation).
    assert abs(int(p.sum()) - (1 << bits)) <= n
    order = np.argsort(s, kind="stable")
    assert (np.diff(p[order]) >= 0).all()


def test_softmax_rejects_bad_precision():
    sq, out = QType(8, True), QType(8, False, 0)
    table = intops.softmax_exp_table(0.1, sq, 14)
    with pytest.raises(ValueError):
        intops.softmax(np.zeros((1, 4), np.int64), sq, table, 13, 30, out)
    with pytest.raises(ValueError):
        intops.softmax(np.zeros((1, 4), np.int64), sq, table, 14, 20, out)


# -- layer-norm and square root ----------------------------------------------------------------

@given(st.integers(0, 1 << 60))
def test_isqrt_is_floor(x):
    r = int(intops.isqrt(np.array([x]))[0])
    assert r * r <= x < (r + 1) * (r + 1)


@settings(max_examples=60)
@given(st.data())
def test_layernorm_is_shift_invariant_and_bounded(data):
    bits = data.draw(st.sampled_from([4, 6, 8]))
    xq, oq = QType(bits, True), data.draw(qtypes(bits))
    n = data.draw(st.integers(2, 16))
    x = codes(QType(bits - 1, True), (3, n), data.draw)      # room to shift by a constant
    norm_bits, recip_bits = intops.layernorm_precision(n, xq, bits)
    scales = np.array(data.draw(st.lists(st.integers(-(1 << 12), 1 << 12), min_size=n, max_size=n)))
    offsets = np.array(data.draw(st.lists(st.integers(-(1 << 16), 1 << 16), min_size=n, max_size=n)))
    y = intops.layernorm(x, xq, scales, offsets, 12, norm_bits, recip_bits, oq)
    k = data.draw(st.integers(-(1 << (bits - 2)), (1 << (bits - 2)) - 1))
    assert (intops.layernorm(x + k, xq, scales, offsets, 12, norm_bits, recip_bits, oq) == y).all()
    b = intops.layernorm_bounds(n, xq, norm_bits, recip_bits)
    xc = x - xq.zero_point
    dev = n * xc - xc.sum(-1, keepdims=True)
    assert np.abs(dev).max() <= b["dev"] and (dev * dev).sum(-1).max() <= b["sq_sum"]


def test_layernorm_of_a_constant_row_is_beta():
    xq, oq = QType(8, True), QType(8, True)
    y = intops.layernorm(np.full((1, 4), 17), xq, [100] * 4, [256, -512, 0, 1280], 8, 10, 30, oq)
    assert y.tolist() == [[1, -2, 0, 5]]


def test_mean_pool():
    xq, oq = QType(4, False, 3), QType(8, True)
    x = np.array([[[3, 5], [7, 9], [11, 15]]])       # (1, L=3, d=2)
    m, s = intops.quantize_multiplier(1 / 3)
    assert intops.mean_pool(x, xq, m, s, oq).tolist() == [[4, 7]]


def test_common_multipliers_share_the_shift_of_the_largest():
    (ma, mb), shift = intops.quantize_common_multipliers([0.403, -0.25])
    assert (ma, shift) == intops.quantize_multiplier(0.403)
    assert mb == round(-0.25 * (1 << shift))
    assert 1 << (intops.MULT_BITS - 1) <= abs(ma) < 1 << intops.MULT_BITS


def test_affine_constants_take_the_largest_gain_to_full_width():
    scales, offsets, shift = intops.quantize_affine([0.1, -3.0, 0.5], [1.0, 0.0, -2.5])
    assert abs(scales).max() == abs(intops.quantize_multiplier(-3.0)[0])
    assert list(offsets) == [1 << shift, 0, round(-2.5 * (1 << shift))]
    assert intops.quantize_affine([0.0, 0.0], [0.5, 0.0])[2] == intops.quantize_multiplier(1.0)[1]


def test_synthetic_constants_are_as_wide_as_the_converters():
    """Synthetic models stand in for trained ones in the hardware cost calibration: their
    residual-add and norm constants must be fixed-pointed the same way."""
    from model.synthetic import random_intmodel
    config = dict(features=3, window=8, d_model=8, heads=1, layers=1, ffn=16, norm="layernorm",
                  activation="gelu")
    full = 1 << (intops.MULT_BITS - 1)
    model = random_intmodel(config, bits=6, seed=5)
    kinds = set()
    for op in model.ops:
        if op.kind == "add":
            assert full <= max(abs(op.params["ma"]), abs(op.params["mb"])) < 2 * full
        elif op.kind in ("affine", "layernorm"):
            assert full <= abs(op.arrays["scales"]).max() < 2 * full
        kinds.add(op.kind)
    assert {"add", "layernorm"} <= kinds
    old = random_intmodel(config, bits=6, seed=5, constant_style="fixed-shift")
    assert {op.params["shift"] for op in old.ops if op.kind == "add"} == {14}


def test_trained_style_constants_are_like_a_trained_models():
    """Constant style "trained": the context requantiser's multiplier is not a power of two
    (with "converter" it always is), the linears' multipliers differ from one another, and the
    softmax tables' depths vary."""
    from hw.common import csd_digits
    from model.synthetic import random_intmodel
    config = dict(features=7, window=24, d_model=16, heads=1, layers=1, ffn=64,
                  norm="batchnorm", activation="relu")
    conv = random_intmodel(config, bits=8, seed=4)
    trained = random_intmodel(config, bits=8, seed=4, constant_style="trained")

    def op(model, kind):
        return [o for o in model.ops if o.kind == kind]
    assert len(csd_digits(op(conv, "context")[0].params["multiplier"])) == 1
    assert len(csd_digits(op(trained, "context")[0].params["multiplier"])) > 1
    assert len({o.params["multiplier"] for o in op(trained, "linear")}) > 1
    depths = {len(op(random_intmodel(config, bits=8, seed=s, constant_style="trained"),
                     "softmax")[0].arrays["exp_table"]) for s in range(6)}
    assert len(depths) > 2 and max(depths) > 1.5 * len(op(conv, "softmax")[0].arrays["exp_table"])


@given(st.data())
@settings(max_examples=60)
def test_product_and_packed_product_bounds_are_tight(data):
    """The worst-case operands reach product_bound and packed_product_bound and never exceed
    them; offset_bits holds every x - zero_point."""
    a, b = data.draw(qtypes()), data.draw(qtypes())
    g, k = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 20))
    xs = [a.qmin - a.zero_point, a.qmax - a.zero_point]
    ys = [b.qmin - b.zero_point, b.qmax - b.zero_point]
    assert max(abs(x * y) for x in xs for y in ys) == intops.product_bound(a, b)
    for q, offs in ((a, xs), (b, ys)):
        w = intops.offset_bits(q)
        assert all(-(1 << (w - 1)) <= o < (1 << (w - 1)) for o in offs)
    packed = max(abs(x * sum(y << ((g - 1 - i) * k) for i in range(g))) for x in xs for y in ys)
    assert packed == intops.packed_product_bound(a, b, g, k)


@pytest.mark.parametrize("n,exp_bits,recip_bits", [(1, 4, 12), (6, 8, 16), (24, 10, 20)])
def test_softmax_bounds_hold(n, exp_bits, recip_bits):
    b = intops.softmax_bounds(n, exp_bits, recip_bits)
    for total in (b["sum_min"], b["sum"]):
        r = (1 << recip_bits) // total
        assert r <= b["recip"] and min(total, b["e"]) * r <= b["product"]
