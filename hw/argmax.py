"""The classifier's output block (``intops.logits_argmax``): ``n`` logits in, the same ``n``
logits then the index of the largest out.

Each logit is passed on as it arrives while the largest so far and its index are kept in
registers; a logit replaces them only when it is strictly larger (so ties keep the lowest index,
:func:`model.intops.argmax`). After the last logit the index follows it. Back-pressure through
the credits of a :class:`hw.plumbing.CreditQueue` (reserved on entry: one per logit, two for
the last, which also brings the index), so ``i.ready`` depends on registers only. The input pauses for one
cycle after a window's last logit: the index takes the queue's write port then.
"""
from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model import intops
from model.intops import QType
from hw.block import Block
from hw.common import element_stream, qshape
from hw.plumbing import CreditQueue, checked_init


class Argmax(Block):
    """``n`` elements in (``i``), ``n + 1`` out (``o``): the inputs, then the argmax.

    Timing: a logit accepted at edge ``a`` is written to the queue at ``a + 1`` and leaves at
    ``a + 3`` (ideal sink); the index is written one edge after the last logit and leaves one
    edge after it."""

    QUEUE = 6    # in flight with an ideal sink: three logits and the last one's two reservations

    @checked_init
    def __init__(self, x_type: QType, out_type: QType, *, n: int):
        if n < 1:
            raise ValueError(f"argmax needs n >= 1 inputs, got {n}")
        if out_type != intops.argmax_out_type(x_type, n):
            raise ValueError(f"output type {out_type} is not {intops.argmax_out_type(x_type, n)}")
        self.x_type, self.out_type, self.n = x_type, out_type, int(n)
        super().__init__({"i": In(element_stream(x_type)), "o": Out(element_stream(out_type))})

    op_kinds = ("argmax",)

    @classmethod
    def build(cls, model, op, **knobs):
        """The block of ``model``'s argmax ``op``. It has no knobs: the ones given are not its
        own (a preset's entry for the name "pred", a forecaster's output linear)."""
        src = op.spec.inputs[0]
        return cls(model.qtype(src), model.qtype(op.output), n=model.tensors[src].shape[-1])

    @property
    def window(self):
        """One window: inputs at edges 1 .. n, the index leaves at edge ``n + 4``."""
        return self.n

    def output_times(self, arrive) -> list:
        """Output edges (``n + 1`` per window) given the input elements' edges (ideal sink)."""
        out, accept, last = [], None, -10 ** 9
        for k, a in enumerate(arrive):
            accept = a if accept is None else max(a, accept + 1)
            last = max(accept + 3, last + 1)
            out.append(last)
            if (k + 1) % self.n == 0:
                last = max(accept + 4, last + 1)
                out.append(last)
                accept += 1                     # the pause after a window's last logit
        return out

    def elaborate(self, platform):
        m = Module()
        n = self.n
        m.submodules.q = q = CreditQueue(qshape(self.out_type), self.QUEUE, latency=2,
                                         max_reserve=2)
        k = Signal(range(max(n, 2)))
        best = Signal(qshape(self.x_type))
        best_k = Signal(range(max(n, 2)))
        x1 = Signal(qshape(self.x_type))
        v1, last1, v2 = Signal(), Signal(), Signal()
        fire = Signal()
        is_last = Signal()
        m.d.comb += [
            is_last.eq(k == n - 1),
            self.i.ready.eq(q.can_reserve & ~(v1 & last1)),
            fire.eq(self.i.valid & self.i.ready),
            q.reserve.eq(fire + (fire & is_last)),
        ]
        m.d.sync += [v1.eq(fire), v2.eq(v1 & last1)]
        with m.If(fire):
            m.d.sync += [x1.eq(self.i.payload), last1.eq(is_last)]
            with m.If(is_last):
                m.d.sync += k.eq(0)
            with m.Else():
                m.d.sync += k.eq(k + 1)
            with m.If((k == 0) | (self.i.payload > best)):
                m.d.sync += [best.eq(self.i.payload), best_k.eq(k)]
        with m.If(v2):
            m.d.comb += [q.w_en.eq(1), q.w_data.eq(best_k)]
        with m.Elif(v1):
            m.d.comb += [q.w_en.eq(1), q.w_data.eq(x1)]
        wiring.connect(m, q.o, wiring.flipped(self.o))
        return m
