"""The anomaly detector's output block (``intops.score_flag``): a score in, the score and its
flag (``score >= threshold``, a constant comparison) out.

The score is passed on as it arrives and the flag follows it one edge later. Back-pressure
through the credits of a :class:`hw.plumbing.CreditQueue` (two reserved per score), so
``i.ready`` depends on registers only; the input pauses for one cycle after each score, while
the flag takes the queue's write port.
"""
from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model.intops import QType
from hw.block import Block
from hw.common import element_stream, qshape
from hw.plumbing import CreditQueue, checked_init


class Threshold(Block):
    """One score in (``i``), two codes out (``o``): the score, then 1 if it is at least
    ``threshold`` else 0. A score accepted at edge ``a`` leaves at ``a + 3``, its flag at
    ``a + 4`` (ideal sink)."""

    QUEUE = 4

    @checked_init
    def __init__(self, x_type: QType, threshold: int):
        self.x_type, self.threshold = x_type, int(threshold)
        super().__init__({"i": In(element_stream(x_type)), "o": Out(element_stream(x_type))})

    op_kinds = ("threshold",)

    @classmethod
    def build(cls, model, op, **knobs):
        """The block of ``model``'s threshold ``op``. It has no knobs: the ones given are not
        its own (a preset's entry for the name "pred", a forecaster's output linear)."""
        src = op.spec.inputs[0]
        if model.tensors[src].shape[-1] != 1:
            raise ValueError(f"threshold takes one score per window, {src!r} has "
                             f"{model.tensors[src].shape[-1]}")
        return cls(model.qtype(src), op.params["threshold"])

    @property
    def window(self):
        """One window: the score at edge 1, its flag leaves at edge 5."""
        return 1

    def output_times(self, arrive) -> list:
        """Output edges (two per score) given the scores' edges (ideal sink)."""
        out, accept, last = [], None, -10 ** 9
        for a in arrive:
            accept = a if accept is None else max(a, accept + 2)   # a pause after each score
            last = max(accept + 3, last + 1)
            out.append(last)
            last = max(accept + 4, last + 1)
            out.append(last)
        return out

    def elaborate(self, platform):
        m = Module()
        xt = self.x_type
        m.submodules.q = q = CreditQueue(qshape(xt), self.QUEUE, latency=2, max_reserve=2)
        x1 = Signal(qshape(xt))
        flag = Signal()
        v1, v2 = Signal(), Signal()
        fire = Signal()
        # The threshold as a constant of the comparison: beyond the type's range it is always
        # (or never) met, as the integer comparison says.
        if self.threshold > xt.qmax:
            ge = 0
        elif self.threshold <= xt.qmin:
            ge = 1
        else:
            ge = self.i.payload >= self.threshold
        m.d.comb += [
            self.i.ready.eq(q.can_reserve & ~v1),
            fire.eq(self.i.valid & self.i.ready),
            q.reserve.eq(fire << 1),
        ]
        m.d.sync += [v1.eq(fire), v2.eq(v1)]
        with m.If(fire):
            m.d.sync += [x1.eq(self.i.payload), flag.eq(ge)]
        with m.If(v2):
            m.d.comb += [q.w_en.eq(1), q.w_data.eq(flag)]
        with m.Elif(v1):
            m.d.comb += [q.w_en.eq(1), q.w_data.eq(x1)]
        wiring.connect(m, q.o, wiring.flipped(self.o))
        return m
