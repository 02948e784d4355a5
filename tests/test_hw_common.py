"""hw.common multipliers: the LUT (Booth) and shift-add constant multipliers are exact."""
import itertools
import random

import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from hw.common import csd_digits, mul, mul_const


def _check(pairs, sa, sb, build):
    a, b = Signal(sa), Signal(sb)
    m = Module()
    out = Signal(signed(len(a) + len(b) + 40))
    m.d.comb += out.eq(build(a, b))
    sim = Simulator(m)
    bad = []

    async def tb(ctx):
        for x, y in pairs:
            ctx.set(a, x)
            ctx.set(b, y)
            if ctx.get(out) != x * y:
                bad.append((x, y, ctx.get(out)))
    sim.add_testbench(tb)
    sim.run()
    assert not bad, bad[:5]


@pytest.mark.parametrize("sa,sb", [(signed(5), signed(5)), (unsigned(4), signed(5)),
                                   (signed(6), unsigned(3)), (unsigned(5), unsigned(4)),
                                   (signed(9), signed(2)), (signed(1), signed(4))])
def test_lut_mul_exhaustive(sa, sb):
    ra = range(-(1 << (sa.width - 1)), 1 << (sa.width - 1)) if sa.signed else range(1 << sa.width)
    rb = range(-(1 << (sb.width - 1)), 1 << (sb.width - 1)) if sb.signed else range(1 << sb.width)
    _check(list(itertools.product(ra, rb)), sa, sb, lambda a, b: mul(a, b, "lut"))


def test_lut_mul_wide_random():
    rng = random.Random(1)
    sa, sb = signed(17), signed(18)
    pairs = [(rng.randrange(-2 ** 16, 2 ** 16), rng.randrange(-2 ** 17, 2 ** 17)) for _ in range(300)]
    pairs += [(-2 ** 16, -2 ** 17), (2 ** 16 - 1, -2 ** 17), (-2 ** 16, 2 ** 17 - 1)]
    _check(pairs, sa, sb, lambda a, b: mul(a, b, "lut"))


@pytest.mark.parametrize("c", [0, 1, -1, 3, 7, -7, 34169, 63630, -50307, 2 ** 15, 12345678])
def test_mul_const(c):
    assert sum(s << k for k, s in csd_digits(c)) == c
    rng = random.Random(c)
    sa = signed(12)
    pairs = [(x, c) for x in [-2048, 2047, 0, -1, 1] + [rng.randrange(-2048, 2048) for _ in range(60)]]
    _check(pairs, sa, unsigned(1), lambda a, b: mul_const(a, c, "lut"))
    _check(pairs[:10], sa, unsigned(1), lambda a, b: mul_const(a, c, "dsp"))


def test_mul_mode_checked():
    with pytest.raises(ValueError):
        mul(Signal(4), Signal(4), "fabric")


@pytest.mark.parametrize("bits,g", [(8, 2), (6, 2), (4, 3), (2, 6)])
def test_packed_products_at_the_rails(bits, g):
    """x * pack_words(ws) split back into every x * w_i, for operands at their rails."""
    from hw.common import pack_words, packing, unpack_products
    xmax, wmax = (1 << bits) - 1, 1 << (bits - 1)          # |x - zx| <= 2^b - 1, |w| <= 2^(b-1)
    gg, k = packing(bits + 1, bits + 1, xmax * wmax)
    assert gg == g
    rails = [-xmax, xmax, 0, -1, 1]
    wsets = [[-wmax] * g, [wmax - 1] * g, ([-wmax, wmax - 1, 0] * g)[:g], ([1, -1, -wmax] * g)[:g]]
    x = Signal(signed(bits + 1))
    w = Signal(signed(bits + 1 + (g - 1) * k))
    outs = [Signal(signed(2 * bits + 4), name=f"o{i}") for i in range(g)]
    m = Module()
    m.d.comb += [o.eq(v) for o, v in zip(outs, unpack_products(x * w, g, k))]
    sim = Simulator(m)
    bad = []

    async def tb(ctx):
        for xv in rails:
            for ws in wsets:
                ctx.set(x, xv)
                ctx.set(w, pack_words(ws, k))
                got = [ctx.get(o) for o in outs]
                if got != [xv * wv for wv in ws]:
                    bad.append((xv, ws, got))
    sim.add_testbench(tb)
    sim.run()
    assert not bad, bad[:3]


def test_union_shape_holds_every_type():
    from amaranth import signed, unsigned
    from hw.common import union_shape
    from model.intops import QType
    assert union_shape([QType(4, True)] * 3) == signed(4)
    assert union_shape([QType(4, False, 9), QType(4, False, 0)]) == unsigned(4)
    assert union_shape([QType(4, True), QType(4, False, 9)]) == signed(5)
    assert union_shape([QType(8, False, 200), QType(3, True)]) == signed(9)
