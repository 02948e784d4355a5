"""Building blocks shared by every operator: stream signatures, integer arithmetic as Amaranth
expressions mirroring :mod:`model.intops`, and storage-parametrised memories.

Conventions of ``hw/``
----------------------
* Operators talk through element-serial ``amaranth.lib.stream`` interfaces: one element of the
  tensor per transfer, in row-major order of the tensor's shape (token-major, channel-minor).
  The payload shape is ``signed(bits)`` or ``unsigned(bits)`` of the tensor's :class:`QType`.
* Every memory has a read latency of exactly one cycle, whatever its storage, so that a block's
  schedule (and its cycle formula) does not depend on where its data lives.
* Every stream block keeps one contract, :class:`hw.block.Block` (construction from its
  operator, stream ports, ``output_times`` / ``cycles``, ``reference``); every compute block
  ends in the one :class:`hw.plumbing.CreditQueue`.
"""
from __future__ import annotations

import enum

from amaranth import Array, Cat, Const, Module, Mux, Shape, Signal, Value, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from model import intops
from model.intops import QType, signed_bits


class Storage(enum.Enum):
    """Where a memory lives on the FPGA."""
    BRAM = "bram"            # block RAM (RAMB18E1/RAMB36E1, iCE40 EBR): synchronous read
    LUTRAM = "lutram"        # distributed RAM (RAM32M/RAM64M...) or LUT ROM: asynchronous read + register
    REGISTERS = "registers"  # flip-flops (or constants in logic, for a ROM) + output register

    @classmethod
    def parse(cls, value) -> "Storage":
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            raise ValueError(f"storage must be one of {[s.value for s in cls]}, got {value!r}") from None


class Recorded:
    """Mixin (before ``wiring.Component`` in the bases) that keeps the arguments of the call
    that built the component: ``cls(*args, **kwargs)`` (the outermost constructor call, also
    when it comes through a ``from_op`` class method).

    :func:`flows.estimate.fingerprint` hashes :meth:`construction_key` to recognise a block
    built exactly like one it has already elaborated and reuse its feature counts. The key is
    only right if :meth:`elaborate` reads nothing but what the constructor derived from these
    arguments (no platform, no global state, no attribute set from outside after
    construction)."""

    def __new__(cls, *args, src_loc_at=0, **kwargs):
        # one frame more between the caller and Amaranth's MustUse.__new__, which records
        # the caller's location for its "created but never used" warning
        self = super().__new__(cls, *args, src_loc_at=src_loc_at + 1, **kwargs)
        self._construction = (args, kwargs)
        return self

    def construction_key(self):
        """Everything :meth:`elaborate` depends on: by default the constructor's arguments. A
        component whose constructor takes more than it uses (a whole model) may return less."""
        return self._construction


def qshape(qtype: QType):
    """Amaranth shape of the integer codes of a quantised tensor."""
    return signed(qtype.bits) if qtype.signed else unsigned(qtype.bits)


def union_shape(qtypes) -> Shape:
    """The smallest shape that holds the codes of every type in ``qtypes`` (e.g. signed 5 bits
    for signed and unsigned 4-bit codes): the stream of a linear that computes several
    operators, whose consumers narrow each element back to its own operator's shape."""
    qtypes = list(qtypes)
    return Shape.cast(range(min(t.qmin for t in qtypes), max(t.qmax for t in qtypes) + 1))


def element_stream(qtype: QType) -> stream.Signature:
    """Stream of single elements of a quantised tensor."""
    return stream.Signature(qshape(qtype))


# ---------------------------------------------------------------------------------------------
# Arithmetic: the Amaranth image of model.intops (same rounding, same saturation)
# ---------------------------------------------------------------------------------------------

def rounding_shift(value, shift: int):
    """``floor((value + 2**(shift-1)) / 2**shift)``: intops.rounding_shift."""
    if shift == 0:
        return value
    return (value + (1 << (shift - 1))) >> shift


def saturate(value, qtype: QType, relu: bool = False):
    """Clamp ``value`` to ``qtype``'s range (lower bound = zero point with ``relu``), cast to
    the tensor's shape: intops.saturate."""
    lo = qtype.zero_point if relu else qtype.qmin
    hi = qtype.qmax
    clamped = Mux(value < lo, lo, Mux(value > hi, hi, value))
    bits = clamped[:qtype.bits]
    return bits.as_signed() if qtype.signed else bits


def const(value: int, width: int | None = None):
    """A signed constant (wide enough for ``value`` unless ``width`` is given)."""
    width = width or max(int(value).bit_length() + 1, 2)
    return Const(int(value), signed(width))


def round_saturate(value, shift: int, out: QType, relu: bool = False):
    """``saturate(zp + rounding_shift(value, shift))``: the last step of every requantisation
    (intops' ``_shift_saturate_``), combinational; every block's output requantisation ends
    here."""
    return saturate(out.zero_point + rounding_shift(value, shift), out, relu)


def requantize(acc, multiplier: int, shift: int, out: QType, relu: bool = False):
    """``saturate(zp + rounding_shift(acc * M, shift))``: intops.requantize (combinational)."""
    return round_saturate(acc * const(multiplier), shift, out, relu)


def requantiser(m, acc, acc_bound: int, multiplier: int, shift: int, out: QType, *,
                mul: str = "lut", relu: bool = False, name: str = "rq_prod"):
    """intops.requantize as the blocks pipeline it: ``acc * M`` (``mul``: see :func:`mul_const`)
    into a register as wide as :func:`model.intops.requant_product_bound` of ``acc_bound``,
    then :func:`round_saturate`. Returns the requantised value, one edge after ``acc``."""
    bits = signed_bits(intops.requant_product_bound(acc_bound, multiplier))
    prod = Signal(signed(bits), name=name)
    m.d.sync += prod.eq(mul_const(acc, multiplier, mul))
    return round_saturate(prod, shift, out, relu)


# ---------------------------------------------------------------------------------------------
# Memories with a storage parameter and a read latency of one cycle
# ---------------------------------------------------------------------------------------------

def _ram_attrs(storage: Storage) -> dict:
    """Synthesis attributes of a RAM. Only block RAM is forced: an asynchronous read port
    already rules out block RAM, and leaving LUT RAM unforced lets a device without it
    (iCE40) fall back to flip-flops instead of failing."""
    return {"ram_style": "block"} if storage is Storage.BRAM else {}


class Rom(wiring.Component):
    """Read-only table (weights, lookup tables). ``data`` is valid one cycle after ``addr``."""

    def __init__(self, init, shape, storage=Storage.BRAM):
        self.init = [int(v) for v in init]
        if not self.init:
            raise ValueError("a ROM needs at least one entry")
        self.shape = shape
        self.storage = Storage.parse(storage)
        super().__init__({"addr": In(range(max(len(self.init), 2))), "data": Out(shape)})

    @property
    def depth(self):
        return len(self.init)

    def elaborate(self, platform):
        m = Module()
        if self.depth == 1:       # a constant: a memory with a zero-width address trips Yosys
            m.d.sync += self.data.eq(Const(self.init[0], self.shape))
            return m
        if self.storage is Storage.REGISTERS:
            table = Array(Const(v, self.shape) for v in self.init)
            m.d.sync += self.data.eq(table[self.addr])
            return m
        # A ROM cannot live in LUT RAM cells without a write port: "distributed" for a ROM
        # means LUTs used as logic (as in Vivado), which Yosys calls "logic".
        style = "block" if self.storage is Storage.BRAM else "logic"
        m.submodules.mem = mem = memory.Memory(shape=self.shape, depth=self.depth, init=self.init,
                                               attrs={"rom_style": style, "ram_style": style})
        if self.storage is Storage.BRAM:
            port = mem.read_port()
            m.d.comb += [port.addr.eq(self.addr), self.data.eq(port.data)]
        else:
            port = mem.read_port(domain="comb")
            m.d.comb += port.addr.eq(self.addr)
            m.d.sync += self.data.eq(port.data)
        return m


class Buffer(wiring.Component):
    """Activation buffer: one write port, one read port; ``r_data`` valid one cycle after
    ``r_addr``. A read of the address being written returns the old value."""

    def __init__(self, shape, depth: int, storage=Storage.LUTRAM):
        if depth < 1:
            raise ValueError("a buffer needs at least one entry")
        self.shape = shape
        self.depth = depth
        self.storage = Storage.parse(storage)
        super().__init__({
            "w_addr": In(range(max(depth, 2))), "w_data": In(shape), "w_en": In(1),
            "r_addr": In(range(max(depth, 2))), "r_data": Out(shape),
        })

    def elaborate(self, platform):
        m = Module()
        if self.storage is Storage.REGISTERS or self.depth == 1:
            cells = Array(Signal(self.shape, name=f"cell{i}") for i in range(self.depth))
            with m.If(self.w_en):
                m.d.sync += cells[self.w_addr].eq(self.w_data)
            m.d.sync += self.r_data.eq(cells[self.r_addr])
            return m
        m.submodules.mem = mem = memory.Memory(shape=self.shape, depth=self.depth, init=[],
                                               attrs=_ram_attrs(self.storage))
        w = mem.write_port()
        m.d.comb += [w.addr.eq(self.w_addr), w.data.eq(self.w_data), w.en.eq(self.w_en)]
        if self.storage is Storage.BRAM:
            r = mem.read_port()
            m.d.comb += [r.addr.eq(self.r_addr), self.r_data.eq(r.data)]
        else:
            r = mem.read_port(domain="comb")
            m.d.comb += r.addr.eq(self.r_addr)
            m.d.sync += self.r_data.eq(r.data)
        return m


# ---------------------------------------------------------------------------------------------
# Multipliers: one place decides how every product of the design is built
# ---------------------------------------------------------------------------------------------

#: ``mul`` knob values: ``"dsp"`` writes ``a * b`` (Yosys maps every ``$mul`` to DSP48E1 /
#: SB_MAC16), ``"lut"`` builds the product from adders only (radix-4 Booth partial products,
#: balanced adder tree), so that it lands in LUTs + carry chains.
MUL_MODES = ("dsp", "lut")


def _hint(value, kind: str, *args):
    """Tag ``value`` with what it builds (``flows.estimate`` then counts one multiplier instead
    of the adders it is made of). The hardware does not change."""
    value.resource_hint = (kind, *args)
    return value


def check_mul(mode) -> str:
    if mode not in MUL_MODES:
        raise ValueError(f"mul must be one of {MUL_MODES}, got {mode!r}")
    return mode


def _as_signed(v):
    """``v`` as a signed value of the same numeric range (unsigned gains a zero sign bit)."""
    v = Value.cast(v)
    return v if v.shape().signed else Cat(v, Const(0, 1)).as_signed()


def tree_sum(terms):
    """Balanced sum of Amaranth values (the synthesiser maps it to an adder tree)."""
    terms = list(terms)
    while len(terms) > 1:
        terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
    return terms[0]


def mul(a, b, mode: str = "dsp"):
    """``a * b`` (signed or unsigned Amaranth values), exactly, built as ``mode`` says.

    ``"lut"``: radix-4 Booth recoding of the narrower operand: ceil((w+1)/2) partial products
    ``d_i * a * 4**i`` with ``d_i`` in {-2..2}, each a select of ``a`` / ``2a`` XOR-ed with the
    digit's sign (the +1 of the two's complements is gathered into one extra term), summed by
    a balanced adder tree. No ``*`` in the netlist."""
    check_mul(mode)
    if mode == "dsp":
        return a * b
    a, b = Value.cast(a), Value.cast(b)
    if len(b) > len(a):
        a, b = b, a
    out_signed = a.shape().signed or b.shape().signed
    a, b = _as_signed(a), _as_signed(b)
    n = len(b) + (len(b) % 2)                       # even number of multiplier bits
    bx = b.as_signed()
    bits = [bx[min(i, len(b) - 1)] for i in range(n)]   # sign-extended multiplier bits
    wa = len(a) + 1                                 # room for 2a
    terms = []
    corr = []
    for i in range(n // 2):
        lo = bits[2 * i - 1] if i else Const(0, 1)
        b0, b1 = bits[2 * i], bits[2 * i + 1]
        one = b0 ^ lo                               # |d| == 1
        two = (b1 & ~b0 & ~lo) | (~b1 & b0 & lo)    # |d| == 2
        neg = b1 & ~(b0 & lo)                       # d < 0 (d == -0 gives an all-ones word + 1 = 0)
        sel = Mux(two, (a << 1), Mux(one, a, 0)).as_signed()
        pp = (sel[:wa] ^ neg.replicate(wa)).as_signed()
        terms.append(pp << (2 * i) if i else pp)
        corr += [neg, Const(0, 1)]
    terms.append(Cat(*corr[:n]))                    # the +1 of every negated partial product
    prod = tree_sum(terms)
    width = len(a) + len(b)
    res = prod[:width].as_signed()
    res = res if out_signed else res.as_unsigned()
    return _hint(res, "lut_mul", a, b)


def csd_digits(c: int):
    """Canonical signed digits of ``c``: list of (shift, sign) with sign in {+1, -1}."""
    c = int(c)
    out, k = [], 0
    while c:
        if c & 1:
            d = 2 - (c & 3)                         # +1 if c % 4 == 1, -1 if c % 4 == 3
            out.append((k, d))
            c -= d
        c >>= 1
        k += 1
    return out


def mul_const(x, c: int, mode: str = "lut"):
    """``x * c`` for an integer constant ``c``: ``"dsp"`` a multiplier, ``"lut"`` shift-and-add
    over the canonical signed digits of ``c`` (about bits/3 adders)."""
    check_mul(mode)
    c = int(c)
    if mode == "dsp":
        return x * const(c)
    x = _as_signed(x)
    if c == 0:
        return Const(0, signed(2))
    digits = csd_digits(c)
    pos = [x << k if k else x for k, s in digits if s > 0]
    neg = [x << k if k else x for k, s in digits if s < 0]
    if not pos:
        return _hint(-tree_sum(neg), "const_mul", x, len(digits))
    total = tree_sum(pos)
    if neg:
        total = total - tree_sum(neg)
    return _hint(total, "const_mul", x, len(digits))


#: ``mul`` knob of blocks whose lanes share one operand (Linear PEs share the input element,
#: AttentionCore PV lanes share the probability): ``"dsp_packed"`` puts ``g`` products
#: ``x * w_i`` into one DSP48E1 (25 x 18) as ``x * sum(w_i << (g-1-i)*k)`` and splits the
#: result exactly (each field is a product bounded by ``2**(k-1)``; the borrow of a negative
#: lower field is added back to the next one).
LANE_MUL_MODES = ("dsp", "dsp_packed", "lut")


def check_lane_mul(mode) -> str:
    if mode not in LANE_MUL_MODES:
        raise ValueError(f"mul must be one of {LANE_MUL_MODES}, got {mode!r}")
    return mode


def packing(x_bits: int, w_bits: int, prod_bound: int, a_width: int = 25, b_width: int = 18):
    """(g, k): products per DSP and field width for ``x`` (``x_bits`` signed) times ``w``
    (``w_bits`` signed) with ``|x*w| <= prod_bound``; g = 1 if packing is impossible."""
    k = signed_bits(prod_bound)
    if x_bits > b_width and w_bits <= b_width:
        x_bits, w_bits = w_bits, x_bits
    if x_bits > b_width or w_bits > a_width:
        return 1, k
    g = 1 + max(0, (a_width - w_bits) // k)
    return g, k


def pack_words(ws, k: int) -> int:
    """The packed operand ``sum(w_i << (g-1-i)*k)`` of integers ``ws`` (first = top field)."""
    g = len(ws)
    return sum(int(w) << ((g - 1 - i) * k) for i, w in enumerate(ws))


def unpack_products(p, g: int, k: int):
    """Split ``P = x * pack_words(ws, k)`` into ``[x*w_0, ..., x*w_{g-1}]`` (exact when every
    ``|x*w_i| < 2**(k-1)``)."""
    p = Value.cast(p)
    out = []
    rest = p.as_signed()
    for _ in range(g - 1):
        lo = rest[:k].as_signed()
        out.append(lo)
        rest = rest[k:].as_signed() + lo[k - 1]
    out.append(rest)
    return out[::-1]
