"""Stream plumbing: FIFOs, broadcast, and the credit-based output queue of every compute block.

Why credits: a compute block's datapath (multipliers, requantisation) is a fixed-latency
pipeline that never stalls, which keeps it short and fast. Back-pressure is handled at the
*entrance*: before an element (or a group of outputs) enters the pipeline, room for its results
is reserved in a :class:`CreditQueue` at the exit. ``i.ready`` of a block then depends only on
registers, never combinationally on ``o.ready``, so chains of blocks cannot form ready loops and
the ready path is one register deep.
"""
from __future__ import annotations

import functools
from collections import deque

from amaranth import Array, Module, Mux, Shape, Signal
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.amaranth_adapter import discard
from hw.block import Block
from hw.common import Buffer, Storage


def checked_init(init):
    """Decorate a component's ``__init__``: when it rejects its arguments (raises), mark the
    half-built object as used so that Amaranth does not also warn "created but never used"."""
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except Exception:
            discard(self)
            raise
    return wrapper


class Fifo(Block):
    """Stream FIFO of ``depth`` elements on a :class:`hw.common.Buffer` (storage selectable).

    Ports: ``i`` (In stream), ``o`` (Out stream). ``i.ready`` and ``o.valid`` are registers.
    An element written at an edge is offered on ``o`` two edges later (memory read latency +
    valid register). Sustained throughput is one element per cycle when ``depth >= 3``
    (2 entries are in flight in the steady state); smaller depths work at a reduced rate.

    The memory output register is read at address ``r_ptr_next`` every cycle, so ``o.payload``
    always shows the head element one edge after it is known to be written (a read of the
    address being written returns the old value, hence the conservative ``o.valid``).
    """

    streaming = True

    @checked_init
    def __init__(self, shape, depth: int, storage=Storage.LUTRAM):
        if depth < 1:
            raise ValueError(f"a FIFO needs depth >= 1, got {depth}")
        self.shape = shape
        self.depth = depth
        self.storage = Storage.parse(storage)
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def cycles(self, length: int | None = None) -> int:
        """``length`` elements through an empty FIFO: 2 edges of latency, then one element per
        cycle (depth >= 3); depth 2 sustains 2 elements per 3 cycles, depth 1 one per 3."""
        length = self.stream_length(length)
        if self.depth >= 3:
            return length + 2
        if self.depth == 2:
            return length + 2 + (length - 1) // 2
        return 3 * length

    def output_times(self, arrive) -> list:
        """Per-element output edges given the input edges (ideal sink, depth >= 3): an element
        is offered two edges after it is written, one element per edge."""
        if self.depth < 3:
            raise NotImplementedError("output_times models depth >= 3 only")
        out, last = [], -10 ** 9
        for a in arrive:
            last = max(a + 2, last + 1)
            out.append(last)
        return out

    def elaborate(self, platform):
        m = Module()
        n = self.depth
        m.submodules.mem = mem = Buffer(self.shape, n, self.storage)
        w_ptr = Signal(range(max(n, 2)))
        r_ptr = Signal(range(max(n, 2)))
        count = Signal(range(n + 1))      # elements stored, written at an earlier edge or now
        w_fire = Signal()
        r_fire = Signal()

        def inc(p):
            return Mux(p == n - 1, 0, p + 1)

        r_next = Signal.like(r_ptr)
        m.d.comb += [
            self.i.ready.eq(count < n),
            w_fire.eq(self.i.valid & self.i.ready),
            r_fire.eq(self.o.valid & self.o.ready),
            r_next.eq(Mux(r_fire, inc(r_ptr), r_ptr)),
            mem.w_addr.eq(w_ptr), mem.w_data.eq(self.i.payload), mem.w_en.eq(w_fire),
            mem.r_addr.eq(r_next),
            self.o.payload.eq(mem.r_data),
        ]
        m.d.sync += [
            r_ptr.eq(r_next),
            count.eq(count + w_fire - r_fire),
            # The head is visible in r_data after this edge iff it was written before it.
            self.o.valid.eq((count - r_fire) != 0),
        ]
        with m.If(w_fire):
            m.d.sync += w_ptr.eq(inc(w_ptr))
        return m


class CreditQueue(wiring.Component):
    """Exit of a fixed-latency compute pipeline: a FIFO plus a credit counter. Every compute
    block ends in one.

    The producer asks ``can_reserve`` (a function of registers only) before starting work that
    will produce up to ``max_reserve`` results, pulses ``reserve`` with the number of results it
    commits to (0 .. max_reserve), and later writes them with ``w_en``/``w_data`` without any
    flow control: room was guaranteed by the reservation. A credit is returned when an element
    leaves on ``o``.

    ``latency``: edges from a write to the first edge the element can leave on ``o``. The two
    blocks' families were designed around different FIFOs, and each latency is part of their
    cycle formulas and timing models, so both are kept:

    * 2: a :class:`Fifo` (``o.valid`` a register; ``storage`` selectable), behind the
      element-wise blocks, the linear and the mean pool;
    * 1: Amaranth's ``SyncFIFO`` (first-word fall-through, ``o.valid`` from its level; always
      in registers), behind the row-wise blocks (softmax, layer-norm, the attention core),
      whose :class:`QueueTiming` models count one edge.
    """

    LATENCIES = (1, 2)

    @checked_init
    def __init__(self, shape, depth: int, *, latency: int, max_reserve: int = 1,
                 storage=Storage.REGISTERS):
        if latency not in self.LATENCIES:
            raise ValueError(f"a credit queue has latency 1 or 2, got {latency}")
        if depth < max_reserve or max_reserve < 1:
            raise ValueError("the credit queue must hold at least one reservation")
        self.storage = Storage.parse(storage)
        if latency == 1 and self.storage is not Storage.REGISTERS:
            raise ValueError("a credit queue of latency 1 lives in registers")
        self.shape = shape
        self.depth = depth
        self.latency = latency
        self.max_reserve = max_reserve
        super().__init__({
            "reserve": In(range(max_reserve + 1)), "can_reserve": Out(1),
            "w_en": In(1), "w_data": In(shape),
            "o": Out(stream.Signature(shape)),
        })

    def elaborate(self, platform):
        m = Module()
        used = Signal(range(self.depth + 1))      # reserved or stored, not yet sent
        out_fire = Signal()
        if self.latency == 2:
            m.submodules.fifo = q = Fifo(self.shape, self.depth, self.storage)
            m.d.comb += [q.i.valid.eq(self.w_en), q.i.payload.eq(self.w_data)]
            wiring.connect(m, q.o, wiring.flipped(self.o))
        else:
            m.submodules.fifo = q = fifo.SyncFIFO(width=Shape.cast(self.shape).width,
                                                  depth=self.depth)
            m.d.comb += [q.w_en.eq(self.w_en), q.w_data.eq(self.w_data),
                         self.o.valid.eq(q.r_rdy), self.o.payload.eq(q.r_data),
                         q.r_en.eq(self.o.ready)]
        m.d.comb += [out_fire.eq(self.o.valid & self.o.ready),
                     self.can_reserve.eq(used <= self.depth - self.max_reserve)]
        m.d.sync += used.eq(used + self.reserve - out_fire)
        return m


class QueueTiming:
    """Edge-by-edge model of a :class:`CreditQueue` of ``depth`` entries and ``queue_latency``
    behind a pipeline of fixed ``latency`` (reserve edge -> write edge): what its handshakes
    do, without the data. The timing models of the blocks built on them (:class:`hw.softmax.
    SoftmaxTiming`, the attention core's) drive it with the same decisions as the hardware, so
    their schedules are exact in every case, back-pressure included.

    Per edge: :meth:`can_reserve` and :meth:`valid` are the registered conditions of the cycle
    before the edge; :meth:`edge` then applies the edge's reservation and take."""

    def __init__(self, depth: int, latency: int, queue_latency: int = 1):
        self.depth, self.latency = depth, latency
        self.visible = latency + queue_latency - 1    # reserve edge -> counted as offered
        self.count = 0                    # reserved, not yet taken (the credit counter)
        self.level = 0                    # offered, not yet taken
        self.writes = deque()             # edges from which the pending writes are offered

    def can_reserve(self) -> bool:
        return self.count < self.depth

    def valid(self) -> bool:
        return self.level > 0

    def edge(self, e: int, reserve: bool, take: bool) -> None:
        self.count += int(reserve) - int(take)
        if reserve:
            self.writes.append(e + self.visible)
        while self.writes and self.writes[0] == e:
            self.writes.popleft()
            self.level += 1
        self.level -= int(take)


class _Skid(wiring.Component):
    """Two-entry register queue: ``i.ready`` and ``o.valid`` are registers, full rate."""

    @checked_init
    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        head = Signal(self.shape)
        tail = Signal(self.shape)
        count = Signal(range(3))
        push = self.i.valid & self.i.ready
        pop = self.o.valid & self.o.ready
        m.d.comb += [self.i.ready.eq(count != 2), self.o.valid.eq(count != 0),
                     self.o.payload.eq(head)]
        m.d.sync += count.eq(count + push - pop)
        with m.If(pop):
            with m.If(count == 2):
                m.d.sync += head.eq(tail)
                with m.If(push):
                    m.d.sync += tail.eq(self.i.payload)
            with m.Elif(push):                      # count == 1
                m.d.sync += head.eq(self.i.payload)
        with m.Elif(push):
            with m.If(count == 0):
                m.d.sync += head.eq(self.i.payload)
            with m.Else():
                m.d.sync += tail.eq(self.i.payload)
        return m


class Fork(Block):
    """Broadcast one stream to the ``n`` streams of the port array ``o`` (``o[0] .. o[n-1]``).

    Each output has its own two-entry register queue, and an input element is taken when every
    queue has room. One stalled consumer therefore does not block the others until it is two
    elements behind (a per-output pending flag with one element of slack per output, without
    any combinational path from an ``o*.ready`` to ``i.ready``). Latency: one cycle.
    """

    @checked_init
    def __init__(self, shape, n: int):
        if n < 1:
            raise ValueError(f"a fork needs at least one output, got {n}")
        self.shape = shape
        self.n = n
        super().__init__({"i": In(stream.Signature(shape)),
                          "o": Out(stream.Signature(shape)).array(n)})

    streaming = True

    def output_times(self, arrive) -> list:
        """Per-element output edges (every output) given the input edges: one edge later
        (``length`` elements: ``cycles(length) = length + 1``)."""
        return [a + 1 for a in arrive]

    def elaborate(self, platform):
        m = Module()
        skids = []
        for k in range(self.n):
            s = _Skid(self.shape)
            m.submodules[f"skid{k}"] = s
            wiring.connect(m, s.o, wiring.flipped(self.o[k]))
            skids.append(s)
        ready = skids[0].i.ready
        for s in skids[1:]:
            ready = ready & s.i.ready
        m.d.comb += self.i.ready.eq(ready)
        for s in skids:
            m.d.comb += [s.i.valid.eq(self.i.valid & ready), s.i.payload.eq(self.i.payload)]
        return m


class Demux(Block):
    """Split one stream into ``n`` streams ``o0 .. o{n-1}`` (also ``o``, a list) by position:
    consecutive runs of ``segment`` elements go to o0, o1, ..., o{n-1}, then o0 again (the
    outputs of a fused linear to the operators it computes). No storage and no latency: an
    element is transferred at the edge its output takes it (``i.ready`` is that output's
    ``ready``). ``out_shapes``: each output's shape (default ``shape``); an element is
    converted to it as Amaranth assigns, so it must hold every value its output receives.
    (Not a port array, ``.array(n)``: the outputs' signatures differ when their shapes do.)"""

    @checked_init
    def __init__(self, shape, n: int, segment: int, out_shapes=None):
        if n < 1 or segment < 1:
            raise ValueError(f"a demux needs n >= 1 outputs and segments >= 1, got {n}, {segment}")
        out_shapes = [shape] * n if out_shapes is None else list(out_shapes)
        if len(out_shapes) != n:
            raise ValueError(f"a demux of {n} outputs needs {n} output shapes, got {len(out_shapes)}")
        self.shape, self.n, self.segment, self.out_shapes = shape, n, segment, out_shapes
        members = {"i": In(stream.Signature(shape))}
        members.update({f"o{k}": Out(stream.Signature(s)) for k, s in enumerate(out_shapes)})
        super().__init__(members)
        self.o = [getattr(self, f"o{k}") for k in range(n)]

    streaming = True

    def cycles(self, length: int | None = None) -> int:
        """``length`` elements through the demux with ideal consumers: ``length`` (no latency)."""
        return self.stream_length(length)

    def split_times(self, arrive) -> list:
        """The edges of ``arrive`` (one per input element) split per output, in order (ideal
        consumers: no latency)."""
        out = [[] for _ in range(self.n)]
        for idx, t in enumerate(arrive):
            out[(idx // self.segment) % self.n].append(t)
        return out

    def elaborate(self, platform):
        m = Module()
        sel = Signal(range(max(self.n, 2)))
        pos = Signal(range(max(self.segment, 2)))
        for k, o in enumerate(self.o):
            m.d.comb += [o.payload.eq(self.i.payload), o.valid.eq(self.i.valid & (sel == k))]
        m.d.comb += self.i.ready.eq(Array(o.ready for o in self.o)[sel])
        with m.If(self.i.valid & self.i.ready):
            with m.If(pos == self.segment - 1):
                m.d.sync += [pos.eq(0), sel.eq(Mux(sel == self.n - 1, 0, sel + 1))]
            with m.Else():
                m.d.sync += pos.eq(pos + 1)
        return m
