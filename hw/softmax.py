"""Integer softmax (intops.softmax) over rows of scores, plus the serial arithmetic units
(the reciprocal divider) that the row-wise blocks share.

Why this structure
------------------
A softmax row needs its maximum before any exponential, and the sum of every exponential
before any output: three passes over the row with a division in between. To make the block
keep up with one score per cycle, each row moves through four *stages*, each working on a
different row held in its own *bank* of the score buffer (``banks`` = 4 by default):

0. ingest: write the scores into bank b, track the running maximum;
1. exponentials: re-read bank b, ``e = table[min(max - s, len - 1)]``, sum them;
2. reciprocal: ``r = floor(2**recip_bits / sum)`` by restoring division, ``div_bits``
   quotient bits per cycle (one division per row, not per element);
3. output: re-read bank b, recompute ``e``, ``p = saturate(rounding_shift(e*r, ...))``.

A per-bank tag (0 free, 1 scored, 2 summing, 3 summed, 4 divided) passes each bank from stage
to stage; every stage walks the banks in order, so rows leave in the order they arrived.
The output pipeline only issues a read when a small FIFO has room for it (credit counting),
so a stalled sink never loses an element and ``i.ready`` never depends on ``o.ready``.
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
from amaranth import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model import intops
from model.intops import QType, unsigned_bits

from .amaranth_adapter import discard
from .block import Block
from .common import Buffer, Rom, Storage, check_mul, element_stream, mul, qshape, rounding_shift, saturate
from .plumbing import CreditQueue, QueueTiming


def _inc_mod(sig, n: int):
    """``(sig + 1) % n`` for a counter in ``range(n)``."""
    return Mux(sig == n - 1, 0, sig + 1)


class Reciprocal(wiring.Component):
    """``floor(2**numer_log2 / divisor)`` by restoring division, ``bits_per_cycle`` quotient
    bits per clock (a chain of that many compare-subtract steps).

    Protocol: ``start`` (while not ``busy``) samples ``divisor`` at that edge; the following
    ``iterations`` edges each retire ``bits_per_cycle`` quotient bits. ``last`` is high during
    the cycle whose edge performs the final iteration; ``result`` (combinational) then holds
    the quotient, so the caller stores it at that edge. Occupancy per division:
    ``iterations + 1`` cycles.
    """

    def __init__(self, numer_log2: int, divisor_min: int, divisor_max: int, bits_per_cycle: int = 1):
        if divisor_min < 1:
            raise ValueError("the divisor must be at least 1")
        if bits_per_cycle < 1:
            raise ValueError(f"bits_per_cycle must be >= 1, got {bits_per_cycle}")
        self.numer_log2 = numer_log2
        self.divisor_max = divisor_max
        # Quotient bound: 2**numer_log2 // divisor_min (smallest divisor -> largest quotient).
        self.qw = unsigned_bits((1 << numer_log2) // divisor_min)
        self.dw = unsigned_bits(divisor_max)
        self.k = min(bits_per_cycle, self.qw)
        self.iterations = -(-self.qw // self.k)
        self.qwp = self.iterations * self.k
        # The partial remainder starts as numer >> qwp, which is < divisor_min (so < divisor).
        assert ((1 << numer_log2) >> self.qwp) < divisor_min
        super().__init__({"start": In(1), "divisor": In(unsigned(self.dw)), "busy": Out(1),
                          "last": Out(1), "result": Out(unsigned(self.qw))})

    def elaborate(self, platform):
        m = Module()
        numer = 1 << self.numer_log2
        a_reg = Signal(unsigned(self.dw))        # partial remainder < divisor
        q_reg = Signal(unsigned(self.qwp))       # low dividend bits shifted out, quotient in
        d_reg = Signal(unsigned(self.dw))
        cnt = Signal(range(self.iterations + 1))
        a, q = a_reg, q_reg
        for _ in range(self.k):
            a2 = Cat(q[-1], a)                   # 2*a + next dividend bit
            ge = a2 >= d_reg
            a = Mux(ge, a2 - d_reg, a2)[:self.dw]
            q = Cat(ge, q[:-1])
        m.d.comb += [self.last.eq(self.busy & (cnt == 1)), self.result.eq(q[:self.qw])]
        with m.If(self.busy):
            m.d.sync += [a_reg.eq(a), q_reg.eq(q), cnt.eq(cnt - 1)]
            with m.If(cnt == 1):
                m.d.sync += self.busy.eq(0)
        with m.Elif(self.start):
            m.d.sync += [a_reg.eq(numer >> self.qwp), q_reg.eq(numer & ((1 << self.qwp) - 1)),
                         d_reg.eq(self.divisor), cnt.eq(self.iterations), self.busy.eq(1)]
        return m


class SoftmaxTiming:
    """Edge-by-edge model of the control of a :class:`Softmax` (bank tags, stage counters,
    divider, output queue): ``in_ready()`` / ``out_valid()`` for the cycle before an edge,
    then ``edge(e, take_in, take_out)``. Mirrors :meth:`Softmax.elaborate` statement for
    statement (a bank tag written by two stages at one edge takes the later statement's)."""

    def __init__(self, sm: "Softmax"):
        self.N, self.B, self.D = sm.row_length, sm.banks, sm.div_cycles
        self.tag = [0] * self.B
        self.p0 = self.j0 = self.p1 = self.j1 = self.p2 = self.p3 = self.j3 = 0
        self.busy, self.cnt = False, 0
        self.summed = deque()             # (edge, bank): the sum of a row is stored (tag 3)
        self.queue = QueueTiming(sm.QUEUE_DEPTH, sm.OUT_LATENCY - 1)

    def in_ready(self) -> bool:
        return self.tag[self.p0] == 0

    def out_valid(self) -> bool:
        return self.queue.valid()

    def edge(self, e: int, take_in: bool, take_out: bool) -> None:
        N, B, tag = self.N, self.B, self.tag
        go1 = tag[self.p1] == 1
        last = self.busy and self.cnt == 1
        start = not self.busy and tag[self.p2] == 3
        go3 = tag[self.p3] == 4 and self.queue.can_reserve()
        new = {}
        if take_in:                                       # stage 0: ingest
            if self.j0 == N - 1:
                self.j0, new[self.p0], self.p0 = 0, 1, (self.p0 + 1) % B
            else:
                self.j0 += 1
        if go1:                                           # stage 1: exponentials, sum
            if self.j1 == N - 1:
                self.summed.append((e + Softmax.SUM_LATENCY, self.p1))
                self.j1, new[self.p1], self.p1 = 0, 2, (self.p1 + 1) % B
            else:
                self.j1 += 1
        while self.summed and self.summed[0][0] == e:
            new[self.summed.popleft()[1]] = 3
        if self.busy:                                     # stage 2: the divider
            self.cnt -= 1
            if last:
                self.busy, new[self.p2], self.p2 = False, 4, (self.p2 + 1) % B
        elif start:
            self.busy, self.cnt = True, self.D
        if go3:                                           # stage 3: output
            if self.j3 == N - 1:
                self.j3, new[self.p3], self.p3 = 0, 0, (self.p3 + 1) % B
            else:
                self.j3 += 1
        self.queue.edge(e, go3, take_out)
        for b, t in new.items():
            tag[b] = t


class Softmax(Block):
    """intops.softmax over consecutive rows of ``row_length`` scores (``rows`` rows per window).

    ``i``: scores (``score_type``), ``o``: probabilities (``out_type``, unsigned, zero point 0),
    one element per transfer in row order. Knobs: ``table_storage`` (exp table ROM, two
    copies: stage 1 and stage 3), ``buffer_storage`` (score banks, two copies: one read port per
    reading stage), ``div_bits`` (reciprocal quotient bits per cycle), ``banks`` (rows in flight).
    """

    OUT_LATENCY = 4       # output stage: issue edge -> transfer edge (read, table, multiply, FIFO)
    SUM_LATENCY = 2       # stage 1: last issue edge -> sum stored (read, table)
    QUEUE_DEPTH = OUT_LATENCY + 2

    def __init__(self, score_type: QType, exp_table, exp_bits: int, recip_bits: int, out_type: QType,
                 *, rows: int, row_length: int, table_storage="registers", buffer_storage="lutram",
                 div_bits: int = 1, banks: int = 4, mul: str = "dsp"):
        table = [int(v) for v in np.asarray(exp_table).ravel()]
        try:
            self._check(table, exp_bits, recip_bits, out_type, rows, row_length, banks)
        except ValueError:
            discard(self)                      # a rejected block is not an unused one
            raise
        self.score_type, self.table, self.exp_bits = score_type, table, exp_bits
        self.recip_bits, self.out_type = recip_bits, out_type
        self.rows, self.row_length, self.banks = rows, row_length, banks
        self.table_storage = Storage.parse(table_storage)
        self.mul = check_mul(mul)
        self.buffer_storage = Storage.parse(buffer_storage)
        self.bounds = b = intops.softmax_bounds(row_length, exp_bits, recip_bits)
        self.e_shape = unsigned(unsigned_bits(b["e"]))
        self.sum_shape = unsigned(unsigned_bits(b["sum"]))
        self.recip = Reciprocal(recip_bits, b["sum_min"], b["sum"], div_bits)
        super().__init__({"i": In(element_stream(score_type)), "o": Out(element_stream(out_type))})

    @staticmethod
    def _check(table, exp_bits, recip_bits, out_type, rows, row_length, banks):
        if not table or table[0] != (1 << exp_bits):
            raise ValueError("exp_table[0] must equal 2**exp_bits")
        if min(table) < 0 or max(table) > (1 << exp_bits):
            raise ValueError("exp_table entries must lie in [0, 2**exp_bits]")
        if out_type.signed or out_type.zero_point != 0:
            raise ValueError("the softmax output is unsigned with zero point 0")
        if recip_bits < exp_bits + out_type.bits:
            raise ValueError("recip_bits must be at least exp_bits + out.bits")
        if rows < 1 or row_length < 1:
            raise ValueError("rows and row_length must be >= 1")
        if banks < 2:
            raise ValueError("banks must be >= 2")

    op_kinds = ("softmax",)

    @classmethod
    def build(cls, model, op, **knobs):
        # Rows over the last axis, as the integer softmax: an attention's (heads, L, L) or any
        # other shape.
        *outer, n = op.spec.shape
        return cls(model.qtype(op.spec.inputs[0]), op.arrays["exp_table"], op.params["exp_bits"],
                   op.params["recip_bits"], model.qtype(op.output), rows=math.prod(outer),
                   row_length=n, **knobs)

    def reference(self, scores):
        return intops.softmax(intops.as_int(scores).reshape(-1, self.row_length), self.score_type,
                              self.table, self.exp_bits, self.recip_bits, self.out_type)

    # -- timing -------------------------------------------------------------------------------
    @property
    def div_cycles(self) -> int:
        """Edges a division occupies after its start edge."""
        return self.recip.iterations

    @property
    def window(self):
        return self.rows * self.row_length

    def output_times(self, arrive) -> list:
        """Per-element output edges given the edges from which the input elements are offered
        (each stays offered until taken), ideal sink: :class:`SoftmaxTiming` edge by edge."""
        t = SoftmaxTiming(self)
        out, n, e = [], 0, 0
        total = len(arrive)
        while len(out) < total:
            e += 1
            take_in = n < total and arrive[n] <= e and t.in_ready()
            take_out = t.out_valid()
            t.edge(e, take_in, take_out)
            n += int(take_in)
            if take_out:
                out.append(e)
        return out

    def cycles(self, length: int | None = None) -> int:
        """Cycles for one window (always-valid source, always-ready sink).

        When the divider keeps up (``D + 1 <= N`` and ``D + 4 <= N + 1`` with 4 banks) this is
        ``(rows + 2) * N + D + 7``: N edges per row through ingest, plus one row each for the
        exponential and output passes, the division ``D = ceil(qbits / div_bits)`` and 7 edges of
        hand-over and pipeline latency. Otherwise the slowest stage sets the pace; the edge by
        edge model of :meth:`output_times` is exact in every case."""
        return super().cycles(length)

    # -- hardware -----------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        N, B, T = self.row_length, self.banks, len(self.table)
        sshape = qshape(self.score_type)
        m.submodules.buf1 = buf1 = Buffer(sshape, B * N, self.buffer_storage)
        m.submodules.buf3 = buf3 = Buffer(sshape, B * N, self.buffer_storage)
        m.submodules.rom1 = rom1 = Rom(self.table, self.e_shape, self.table_storage)
        m.submodules.rom3 = rom3 = Rom(self.table, self.e_shape, self.table_storage)
        m.submodules.recip = div = self.recip
        m.submodules.queue = queue = CreditQueue(qshape(self.out_type), self.QUEUE_DEPTH, latency=1)
        wiring.connect(m, wiring.flipped(self.o), queue.o)

        tag = Array(Signal(range(5), name=f"tag{b}") for b in range(B))
        max_arr = Array(Signal(sshape, name=f"max{b}") for b in range(B))
        sum_arr = Array(Signal(self.sum_shape, name=f"sum{b}") for b in range(B))
        r_arr = Array(Signal(div.result.shape(), name=f"r{b}") for b in range(B))

        def table_index(mx, s):
            diff = mx - s                       # in [0, qmax - qmin]
            return Mux(diff > T - 1, T - 1, diff)

        # Stage 0: ingest and running maximum.
        p0, j0 = Signal(range(B)), Signal(range(N))
        run_max = Signal(sshape)
        take = self.i.valid & self.i.ready
        new_max = Mux((j0 == 0) | (self.i.payload > run_max), self.i.payload, run_max)
        m.d.comb += self.i.ready.eq(tag[p0] == 0)
        for buf in (buf1, buf3):
            m.d.comb += [buf.w_addr.eq(p0 * N + j0), buf.w_data.eq(self.i.payload), buf.w_en.eq(take)]
        with m.If(take):
            m.d.sync += run_max.eq(new_max)
            with m.If(j0 == N - 1):
                m.d.sync += [j0.eq(0), max_arr[p0].eq(new_max), tag[p0].eq(1), p0.eq(_inc_mod(p0, B))]
            with m.Else():
                m.d.sync += j0.eq(j0 + 1)

        # Stage 1: exponentials and their sum (read | table | accumulate).
        p1, j1 = Signal(range(B)), Signal(range(N))
        go1 = tag[p1] == 1
        v1, first1, last1, bank1, max1 = (Signal(), Signal(), Signal(), Signal(range(B)), Signal(sshape))
        v2, first2, last2, bank2 = Signal(), Signal(), Signal(), Signal(range(B))
        acc = Signal(self.sum_shape)
        m.d.comb += buf1.r_addr.eq(p1 * N + j1)
        m.d.sync += [v1.eq(go1), first1.eq(j1 == 0), last1.eq(j1 == N - 1), bank1.eq(p1),
                     max1.eq(max_arr[p1])]
        with m.If(go1):
            with m.If(j1 == N - 1):
                m.d.sync += [j1.eq(0), tag[p1].eq(2), p1.eq(_inc_mod(p1, B))]
            with m.Else():
                m.d.sync += j1.eq(j1 + 1)
        m.d.comb += rom1.addr.eq(table_index(max1, buf1.r_data))
        m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1), bank2.eq(bank1)]
        total = Mux(first2, 0, acc) + rom1.data
        with m.If(v2):
            m.d.sync += acc.eq(total)
            with m.If(last2):
                m.d.sync += [sum_arr[bank2].eq(total), tag[bank2].eq(3)]

        # Stage 2: one reciprocal per row.
        p2 = Signal(range(B))
        m.d.comb += [div.start.eq(~div.busy & (tag[p2] == 3)), div.divisor.eq(sum_arr[p2])]
        with m.If(div.last):
            m.d.sync += [r_arr[p2].eq(div.result), tag[p2].eq(4), p2.eq(_inc_mod(p2, B))]

        # Stage 3: output (read | table | multiply | round+saturate into the queue).
        p3, j3 = Signal(range(B)), Signal(range(N))
        go3 = (tag[p3] == 4) & queue.can_reserve
        u1, u2, u3 = Signal(), Signal(), Signal()
        max3 = Signal(sshape)
        r3a, r3b = Signal(div.result.shape()), Signal(div.result.shape())
        prod = Signal(unsigned(unsigned_bits(self.bounds["product"])))
        m.d.comb += [buf3.r_addr.eq(p3 * N + j3), queue.reserve.eq(go3)]
        m.d.sync += [u1.eq(go3), max3.eq(max_arr[p3]), r3a.eq(r_arr[p3])]
        with m.If(go3):
            with m.If(j3 == N - 1):
                m.d.sync += [j3.eq(0), tag[p3].eq(0), p3.eq(_inc_mod(p3, B))]
            with m.Else():
                m.d.sync += j3.eq(j3 + 1)
        m.d.comb += rom3.addr.eq(table_index(max3, buf3.r_data))
        m.d.sync += [u2.eq(u1), r3b.eq(r3a)]
        m.d.sync += [u3.eq(u2), prod.eq(mul(rom3.data, r3b, self.mul))]
        m.d.comb += [queue.w_en.eq(u3),
                     queue.w_data.eq(saturate(rounding_shift(prod, self.recip_bits - self.out_type.bits),
                                              self.out_type))]
        return m
