"""Building blocks shared by every operator: stream signatures, integer arithmetic as Amaranth
expressions mirroring :mod:`model.intops`, and storage-parametrised memories.

Conventions of ``hw/``
----------------------
* Operators talk through element-serial ``amaranth.lib.stream`` interfaces: one element of the
  tensor per transfer, in row-major order of the tensor's shape (token-major, channel-minor).
  The payload shape is ``signed(bits)`` or ``unsigned(bits)`` of the tensor's :class:`QType`.
* Every memory has a read latency of exactly one cycle, whatever its storage, so that a block's
  schedule (and its cycle formula) does not depend on where its data lives.
"""
from __future__ import annotations

import enum

from amaranth import Array, Const, Module, Mux, Signal, signed, unsigned
from amaranth.hdl import ShapeCastable
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from model.intops import QType


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


def qshape(qtype: QType):
    """Amaranth shape of the integer codes of a quantised tensor."""
    return signed(qtype.bits) if qtype.signed else unsigned(qtype.bits)


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


def requantize(acc, multiplier: int, shift: int, out: QType, relu: bool = False):
    """``saturate(zp + rounding_shift(acc * M, shift))``: intops.requantize (combinational)."""
    return saturate(out.zero_point + rounding_shift(acc * const(multiplier), shift), out, relu)


# ---------------------------------------------------------------------------------------------
# Memories with a storage parameter and a read latency of one cycle
# ---------------------------------------------------------------------------------------------

_STYLE = {Storage.BRAM: "block", Storage.LUTRAM: "distributed", Storage.REGISTERS: "registers"}


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
                                               attrs={"ram_style": _STYLE[self.storage]})
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
