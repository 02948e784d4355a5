"""Element-wise operators: residual / positional-encoding add, per-channel affine (folded
batch-norm) and table activations (any registered in :mod:`model.ops`: GELU, SiLU, ...).

All three are fully pipelined (one element per cycle) fixed-latency datapaths that never stall;
flow control is done at the entrance with credits of an :class:`hw.plumbing.CreditQueue`
(``i.ready`` is a function of registers only). Arithmetic uses :mod:`hw.common`'s builders,
i.e. exactly :mod:`model.intops`; every register width comes from an intops bound.
"""
from __future__ import annotations

import numpy as np
from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model import intops
from model.intops import QType
from hw.block import Block
from hw.common import Rom, Storage, check_mul, element_stream, mul, mul_const, qshape, round_saturate
from hw.plumbing import CreditQueue, checked_init


def _check_mult(name, v):
    if not isinstance(v, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {v!r}")
    return int(v)


def _queue_depth(latency: int) -> int:
    """Room for every element in flight plus the 2 in the queue's own pipeline + 1 (the credit
    test ignores the element leaving in the same cycle): full rate with an always-ready sink."""
    return latency + 3


class _OneElementPerCycle(Block):
    """Timing of the element-wise blocks: one element per cycle, each output ``LATENCY``
    datapath edges plus the 2 edges of the output queue behind its input (``length``
    elements: ``cycles(length) = length + LATENCY + 2``)."""

    streaming = True

    def output_times(self, *arrive) -> list:
        """Per-element output edges given the edges at which the input elements (for a
        two-input Add: the later of the pair) are offered, with an ideal sink."""
        return [a + self.LATENCY + 2 for a in self.input_times(*arrive)]


class Add(_OneElementPerCycle):
    """``intops.add``: ``saturate(zo + rounding_shift((a-za)*ma + (b-zb)*mb, shift))``.

    Ports ``a``, ``b`` (In) and ``o`` (Out). With ``const_b`` (integer array of ``b_type``
    codes, e.g. the positional-encoding table (L, d) flattened row-major) there is no ``b``
    port: b is read from a ROM in order, restarting every ``length`` elements.

    Pipeline: accept (ROM read) | operands | products | sum -> round, saturate -> queue.
    """

    LATENCY = 3   # accept edge -> queue write edge

    @checked_init
    def __init__(self, a_type: QType, b_type: QType, ma: int, mb: int, shift: int,
                 out_type: QType, *, const_b=None, length: int | None = None,
                 b_storage=Storage.BRAM, mul: str = "lut"):
        self.a_type, self.b_type, self.out_type = a_type, b_type, out_type
        self.ma, self.mb = _check_mult("ma", ma), _check_mult("mb", mb)
        if not 0 <= shift <= intops.MAX_SHIFT:
            raise ValueError(f"shift must be in [0, {intops.MAX_SHIFT}], got {shift}")
        self.shift = int(shift)
        self.b_storage = Storage.parse(b_storage)
        self.mul = check_mul(mul)
        self.const_b = None
        if const_b is not None:
            table = b_type.check(np.asarray(const_b).reshape(-1), "add constant operand").numpy()
            if length is None:
                length = table.size
            if length != table.size:
                raise ValueError(f"const_b has {table.size} elements but length is {length}")
            self.const_b = table
        self.length = length
        members = {"a": In(element_stream(a_type)), "o": Out(element_stream(out_type))}
        if self.const_b is None:
            members["b"] = In(element_stream(b_type))
        super().__init__(members)

    op_kinds = ("add",)

    @classmethod
    def build(cls, model, op, **knobs):
        a_name, b_name = op.spec.inputs
        kw = {}
        if b_name in model.constants:
            kw["const_b"] = model.constants[b_name].reshape(-1)
            kw["length"] = kw["const_b"].size
        kw.update(knobs)
        return cls(model.qtype(a_name), model.qtype(b_name), op.params["ma"], op.params["mb"],
                   op.params["shift"], model.qtype(op.output), **kw)

    @property
    def window(self):
        """The constant operand's period (``length``), else the operator's tensor."""
        return self.length if self.length is not None else super().window

    def elaborate(self, platform):
        m = Module()
        at, bt, ot = self.a_type, self.b_type, self.out_type
        # Bound: intops.add_acc_bound (|(a-za)*ma| + |(b-zb)*mb|).
        acc_bits = intops.signed_bits(intops.add_acc_bound(at, self.ma, bt, self.mb))
        pa_bits = intops.signed_bits(intops.const_product_bound(at.max_offset, self.ma))
        pb_bits = intops.signed_bits(intops.const_product_bound(bt.max_offset, self.mb))
        lat = self.LATENCY
        m.submodules.q = q = CreditQueue(qshape(ot), _queue_depth(lat), latency=2)

        fire = Signal()
        a1 = Signal(qshape(at))
        b1 = Signal(qshape(bt))
        if self.const_b is None:
            m.d.comb += [
                self.a.ready.eq(q.can_reserve & self.b.valid),
                self.b.ready.eq(q.can_reserve & self.a.valid),
                fire.eq(self.a.valid & self.b.valid & q.can_reserve),
            ]
            with m.If(fire):
                m.d.sync += b1.eq(self.b.payload)
            b_val = b1
        else:
            m.submodules.rom = rom = Rom(self.const_b, qshape(bt), self.b_storage)
            idx = Signal(range(max(self.length, 2)))
            m.d.comb += [self.a.ready.eq(q.can_reserve), fire.eq(self.a.valid & q.can_reserve),
                         rom.addr.eq(idx)]
            with m.If(fire):
                m.d.sync += idx.eq(Mux(idx == self.length - 1, 0, idx + 1))
            b_val = rom.data              # table[idx at the accept edge], aligned with a1
        with m.If(fire):
            m.d.sync += a1.eq(self.a.payload)
        m.d.comb += q.reserve.eq(fire)

        v = Signal(lat)
        m.d.sync += v.eq(Cat(fire, v[:-1]))
        pa = Signal(signed(pa_bits))
        pb = Signal(signed(pb_bits))
        acc = Signal(signed(acc_bits))
        m.d.sync += [
            pa.eq(mul_const(a1 - at.zero_point, self.ma, self.mul)),
            pb.eq(mul_const(b_val - bt.zero_point, self.mb, self.mul)),
            acc.eq(pa + pb),
        ]
        m.d.comb += [q.w_en.eq(v[lat - 1]),
                     q.w_data.eq(round_saturate(acc, self.shift, ot))]
        wiring.connect(m, q.o, wiring.flipped(self.o))
        return m


class Affine(_OneElementPerCycle):
    """``intops.affine`` (folded batch-norm): ``(x-zx)*scales[c] + offsets[c]`` requantised by
    a common shift, ``c`` = element index mod ``channels``. Scales and offsets live in ROMs
    (``storage``) read at the accept edge with the channel counter as address.
    """

    LATENCY = 3

    @checked_init
    def __init__(self, x_type: QType, scales, offsets, shift: int, out_type: QType, *,
                 channels: int, storage=Storage.LUTRAM, mul: str = "dsp"):
        self.x_type, self.out_type = x_type, out_type
        self.mul = check_mul(mul)
        self.scales = np.asarray(scales, np.int64).reshape(-1)
        self.offsets = np.asarray(offsets, np.int64).reshape(-1)
        if self.scales.size != channels or self.offsets.size != channels:
            raise ValueError(f"scales and offsets need {channels} entries, got "
                             f"{self.scales.size} and {self.offsets.size}")
        if not 0 <= shift <= intops.MAX_SHIFT:
            raise ValueError(f"shift must be in [0, {intops.MAX_SHIFT}], got {shift}")
        self.shift = int(shift)
        self.channels = int(channels)
        self.storage = Storage.parse(storage)
        super().__init__({"i": In(element_stream(x_type)), "o": Out(element_stream(out_type))})

    op_kinds = ("affine",)

    @classmethod
    def build(cls, model, op, **knobs):
        return cls(model.qtype(op.spec.inputs[0]), op.arrays["scales"], op.arrays["offsets"],
                   op.params["shift"], model.qtype(op.output), channels=op.spec.shape[-1],
                   **knobs)

    def elaborate(self, platform):
        m = Module()
        xt, ot = self.x_type, self.out_type
        s_bits = intops.signed_bits(int(np.abs(self.scales).max(initial=0)))
        o_bits = intops.signed_bits(int(np.abs(self.offsets).max(initial=0)))
        p_bits = intops.signed_bits(intops.const_product_bound(xt.max_offset, self.scales))
        # Bound: intops.affine_acc_bound.
        acc_bits = intops.signed_bits(intops.affine_acc_bound(xt, self.scales, self.offsets))
        lat = self.LATENCY
        m.submodules.q = q = CreditQueue(qshape(ot), _queue_depth(lat), latency=2)
        m.submodules.srom = srom = Rom(self.scales, signed(s_bits), self.storage)
        m.submodules.orom = orom = Rom(self.offsets, signed(o_bits), self.storage)
        ch = Signal(range(max(self.channels, 2)))
        fire = Signal()
        m.d.comb += [self.i.ready.eq(q.can_reserve), fire.eq(self.i.valid & q.can_reserve),
                     q.reserve.eq(fire), srom.addr.eq(ch), orom.addr.eq(ch)]
        x1 = Signal(qshape(xt))
        with m.If(fire):
            m.d.sync += [x1.eq(self.i.payload),
                         ch.eq(Mux(ch == self.channels - 1, 0, ch + 1))]
        v = Signal(lat)
        m.d.sync += v.eq(Cat(fire, v[:-1]))
        prod = Signal(signed(p_bits))
        off2 = Signal(signed(o_bits))
        acc = Signal(signed(acc_bits))
        m.d.sync += [prod.eq(mul(x1 - xt.zero_point, srom.data, self.mul)), off2.eq(orom.data),
                     acc.eq(prod + off2)]
        m.d.comb += [q.w_en.eq(v[lat - 1]),
                     q.w_data.eq(round_saturate(acc, self.shift, ot))]
        wiring.connect(m, q.o, wiring.flipped(self.o))
        return m


class LutActivation(_OneElementPerCycle):
    """``intops.lut_activation``: ``table[x - qmin]`` from a ROM addressed by the input code."""

    LATENCY = 1

    @checked_init
    def __init__(self, x_type: QType, table, out_type: QType, storage=Storage.LUTRAM):
        self.x_type, self.out_type = x_type, out_type
        table = out_type.check(np.asarray(table).reshape(-1), "activation table").numpy()
        n = x_type.qmax - x_type.qmin + 1
        if table.size != n:
            raise ValueError(f"activation table needs {n} entries, got {table.size}")
        self.table = table
        self.storage = Storage.parse(storage)
        super().__init__({"i": In(element_stream(x_type)), "o": Out(element_stream(out_type))})

    op_kinds = ("lut",)

    @classmethod
    def build(cls, model, op, **knobs):
        return cls(model.qtype(op.spec.inputs[0]), op.arrays["table"], model.qtype(op.output),
                   **knobs)

    def elaborate(self, platform):
        m = Module()
        xt, ot = self.x_type, self.out_type
        m.submodules.q = q = CreditQueue(qshape(ot), _queue_depth(self.LATENCY), latency=2)
        m.submodules.rom = rom = Rom(self.table, qshape(ot), self.storage)
        fire = Signal()
        m.d.comb += [self.i.ready.eq(q.can_reserve), fire.eq(self.i.valid & q.can_reserve),
                     q.reserve.eq(fire),
                     # Unsigned index: the code minus qmin, modulo the table size.
                     rom.addr.eq((self.i.payload - xt.qmin)[:xt.bits])]
        v = Signal()
        m.d.sync += v.eq(fire)
        m.d.comb += [q.w_en.eq(v), q.w_data.eq(rom.data)]
        wiring.connect(m, q.o, wiring.flipped(self.o))
        return m
