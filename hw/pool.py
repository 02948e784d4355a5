"""Mean pooling over time (``intops.mean_pool``): per-channel sums over a window, requantised.

The input arrives token-major, so the sums of one window are completed in channel order while
the last token streams in: each final sum goes straight into the requantisation pipeline, so the
``channels`` outputs leave one per cycle right behind the last token's elements. There is no
separate emission phase, and the next window's first token is accepted immediately (its elements
overwrite the accumulators, ``t == 0`` restarts every sum): windows follow each other without a
bubble. Only the last token's elements need room in the output queue (credits).
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model import intops
from model.intops import QType
from hw.block import Block
from hw.common import Buffer, Storage, check_mul, element_stream, qshape, requantiser
from hw.plumbing import CreditQueue, checked_init


class MeanPool(Block):
    """``length`` tokens of ``channels`` elements in (``i``), ``channels`` elements out (``o``).

    Pipeline: accept (accumulator read) | add, write back | x multiplier (registered) |
    round, saturate -> output queue. Consecutive elements of the same channel (``channels == 1``)
    are handled by forwarding the value being written.
    """

    LATENCY = 3    # accept edge -> queue write edge

    @checked_init
    def __init__(self, x_type: QType, multiplier: int, shift: int, out_type: QType, *,
                 length: int, channels: int, buffer_storage=Storage.LUTRAM,
                 requant_mul: str = "lut"):
        if length < 1 or channels < 1:
            raise ValueError(f"length and channels must be >= 1, got {length} and {channels}")
        if not 0 <= shift <= intops.MAX_SHIFT:
            raise ValueError(f"shift must be in [0, {intops.MAX_SHIFT}], got {shift}")
        self.x_type, self.out_type = x_type, out_type
        self.multiplier, self.shift = int(multiplier), int(shift)
        self.length, self.channels = int(length), int(channels)
        self.buffer_storage = Storage.parse(buffer_storage)
        self.requant_mul = check_mul(requant_mul)
        super().__init__({"i": In(element_stream(x_type)), "o": Out(element_stream(out_type))})

    op_kinds = ("mean_pool",)

    @classmethod
    def build(cls, model, op, **knobs):
        src = op.spec.inputs[0]
        length, channels = model.tensors[src].shape[-2:]
        return cls(model.qtype(src), op.params["multiplier"], op.params["shift"],
                   model.qtype(op.output), length=length, channels=channels, **knobs)

    @property
    def window(self):
        return self.length * self.channels

    def cycles(self, length: int | None = None) -> int:
        """One window: ``length * channels`` input cycles + ``LATENCY`` + 2 (output queue)."""
        return self.stream_length(length) + self.LATENCY + 2

    def output_times(self, arrive) -> list:
        """Per-channel output edges given the edges of the input elements (ideal sink): the
        last token's element of channel c leaves ``LATENCY + 2`` edges after it arrives."""
        first_last = (self.length - 1) * self.channels
        return [a + self.LATENCY + 2 for a in arrive[first_last:]]

    def elaborate(self, platform):
        m = Module()
        xt, ot = self.x_type, self.out_type
        L, C = self.length, self.channels
        acc_bound = intops.mean_pool_acc_bound(L, xt)
        acc_bits = intops.signed_bits(acc_bound)
        m.submodules.q = q = CreditQueue(qshape(ot), self.LATENCY + 3, latency=2)
        m.submodules.acc = acc = Buffer(signed(acc_bits), C, self.buffer_storage)

        c = Signal(range(max(C, 2)))
        t = Signal(range(max(L, 2)))
        fire = Signal()
        is_last = Signal()
        m.d.comb += [
            is_last.eq(t == L - 1),
            self.i.ready.eq(~is_last | q.can_reserve),
            fire.eq(self.i.valid & self.i.ready),
            q.reserve.eq(fire & is_last),
            acc.r_addr.eq(c),
        ]
        x1 = Signal(qshape(xt))
        c1 = Signal.like(c)
        v1, first1, last1 = Signal(), Signal(), Signal()
        fwd = Signal()
        fwd_data = Signal(signed(acc_bits))
        new = Signal(signed(acc_bits))
        m.d.sync += v1.eq(fire)
        with m.If(fire):
            m.d.sync += [x1.eq(self.i.payload), c1.eq(c), first1.eq(t == 0), last1.eq(is_last),
                         # The read at this edge misses a write of the same address at this edge.
                         fwd.eq(v1 & (c1 == c)), fwd_data.eq(new)]
            with m.If(c == C - 1):
                m.d.sync += [c.eq(0), t.eq(Mux(is_last, 0, t + 1))]
            with m.Else():
                m.d.sync += c.eq(c + 1)
        old = Mux(fwd, fwd_data, acc.r_data)
        m.d.comb += [new.eq(Mux(first1, 0, old) + (x1 - xt.zero_point)),
                     acc.w_en.eq(v1), acc.w_addr.eq(c1), acc.w_data.eq(new)]

        s2 = Signal(signed(acc_bits))
        v2 = Signal()
        v3 = Signal()
        m.d.sync += [s2.eq(new), v2.eq(v1 & last1), v3.eq(v2)]
        m.d.comb += [q.w_en.eq(v3),
                     q.w_data.eq(requantiser(m, s2, acc_bound, self.multiplier, self.shift, ot,
                                             mul=self.requant_mul, name="prod"))]
        wiring.connect(m, q.o, wiring.flipped(self.o))
        return m
