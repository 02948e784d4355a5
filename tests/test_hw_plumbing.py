"""Fifo, Fork and CreditQueue: no loss, no duplication, order kept, under random stalls."""
import numpy as np
import pytest
from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import Out
from amaranth.sim import Simulator

from hw.plumbing import CreditQueue, Fifo, Fork, QueueTiming
from sim.streams import run_stream_block


@pytest.mark.parametrize("storage", ["registers", "lutram", "bram"])
@pytest.mark.parametrize("depth", [1, 2, 3, 7])
def test_fifo_order_and_cycles(storage, depth):
    rng = np.random.default_rng(depth)
    data = list(rng.integers(-128, 128, 40))
    dut = Fifo(signed(8), depth, storage)
    got, cycles = run_stream_block(dut, {"i": data}, {"o": len(data)})
    assert got["o"] == data
    assert cycles == dut.cycles(len(data))


@pytest.mark.parametrize("storage", ["registers", "lutram", "bram"])
@pytest.mark.parametrize("seed", [0, 1])
def test_fifo_stalls(storage, seed):
    rng = np.random.default_rng(seed)
    data = list(rng.integers(0, 256, 120))
    got, _ = run_stream_block(Fifo(unsigned(8), 5, storage), {"i": data}, {"o": len(data)},
                              stall_in=0.3, stall_out=0.3, seed=seed)
    assert got["o"] == data


def test_fifo_holds_residual_window():
    """A FIFO of L*d elements (the residual branch) fills completely while its reader is blocked."""
    depth = 24 * 16
    dut = Fifo(signed(8), depth, "bram")
    data = [(i * 7) % 256 - 128 for i in range(depth)]
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        for v in data:
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, v)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        await ctx.tick()
        assert not ctx.get(dut.i.ready)          # full: exactly depth elements held
        ctx.set(dut.o.ready, 1)
        out = []
        while len(out) < depth:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                out.append(payload)
        assert out == data
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_fork(n, stall):
    rng = np.random.default_rng(n)
    data = list(rng.integers(-8, 8, 60))
    dut = Fork(signed(4), n)
    assert len(dut.o) == n and dut.signature.members["o"].dimensions == (n,)
    got, cycles = run_stream_block(dut, {"i": data}, {f"o[{k}]": len(data) for k in range(n)},
                                   stall_in=stall, stall_out=stall, seed=n)
    for k in range(n):
        assert got[f"o[{k}]"] == data
    if stall == 0:
        assert cycles == dut.cycles(len(data))


def test_fork_slack_for_a_stalled_consumer():
    """With o[1] blocked, o[0] still receives two elements (one per output queue entry)."""
    dut = Fork(signed(8), 2)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bench(ctx):
        ctx.set(dut.o[0].ready, 1)
        ctx.set(dut.o[1].ready, 0)
        ctx.set(dut.i.valid, 1)
        received = []
        for v in range(6):
            ctx.set(dut.i.payload, v)
            _, _, valid, payload = await ctx.tick().sample(dut.o[0].valid, dut.o[0].payload)
            if valid:
                received.append(payload)
        assert received == [0, 1]
    sim.add_testbench(bench)
    sim.run()


def test_bad_arguments():
    with pytest.raises(ValueError):
        Fifo(signed(8), 0)
    with pytest.raises(ValueError):
        Fork(signed(8), 0)


@pytest.mark.parametrize("n,segment,stall", [(3, 4, 0.0), (3, 4, 0.4), (2, 1, 0.3), (1, 5, 0.2)])
def test_demux(n, segment, stall):
    """Runs of ``segment`` elements go to o0, o1, ... in turn; nothing lost, order kept, and
    with ideal consumers every element leaves at the edge it is offered."""
    from hw.plumbing import Demux
    rng = np.random.default_rng(segment)
    data = list(rng.integers(-8, 8, 2 * n * segment * 3))
    dut = Demux(signed(4), n, segment)
    assert len(dut.o) == n and dut.o[0] is dut.o0
    want = dut.split_times(data)
    got, cycles = run_stream_block(dut, {"i": data}, {f"o{k}": len(want[k]) for k in range(n)},
                                   stall_in=stall, stall_out=stall, seed=n)
    for k in range(n):
        assert got[f"o{k}"] == want[k]
    assert sum(map(len, want)) == len(data)
    if stall == 0:
        assert cycles == len(data) == dut.cycles(len(data))


class _Producer(wiring.Component):
    """A fixed-latency pipeline behind a CreditQueue: reserves whenever it may (up to
    ``count`` elements), writes the element ``latency`` edges later."""

    def __init__(self, queue_latency, depth, latency, count):
        self.queue = CreditQueue(unsigned(8), depth, latency=queue_latency)
        self.latency, self.count = latency, count
        super().__init__({"o": Out(stream.Signature(unsigned(8))), "reserve": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.q = q = self.queue
        n = Signal(range(self.count + 1))
        m.d.comb += [self.reserve.eq(q.can_reserve & (n < self.count)), q.reserve.eq(self.reserve)]
        valid, data = self.reserve, n
        for k in range(self.latency):
            v, d = Signal(name=f"v{k}"), Signal(8, name=f"d{k}")
            m.d.sync += [v.eq(valid), d.eq(data)]
            valid, data = v, d
        m.d.sync += n.eq(n + self.reserve)
        m.d.comb += [q.w_en.eq(valid), q.w_data.eq(data)]
        wiring.connect(m, q.o, wiring.flipped(self.o))
        return m


@pytest.mark.parametrize("queue_latency", CreditQueue.LATENCIES)
@pytest.mark.parametrize("depth,latency,stall", [(3, 1, 0.0), (4, 3, 0.3), (7, 5, 0.5), (2, 2, 0.6)])
def test_credit_queue_and_its_timing_model(queue_latency, depth, latency, stall):
    """Nothing lost, order kept under random sink stalls, and :class:`QueueTiming` predicts
    ``can_reserve`` and ``o.valid`` of every cycle for both latencies."""
    import random
    count = 30
    dut = _Producer(queue_latency, depth, latency, count)
    model = QueueTiming(depth, latency, queue_latency)
    rng = random.Random(depth)
    got, issued = [], [0]

    async def bench(ctx):
        for e in range(1, 40 * count):
            ready = rng.random() >= stall
            ctx.set(dut.o.ready, ready)
            _, _, reserve, valid, payload = await ctx.tick().sample(dut.reserve, dut.o.valid,
                                                                  dut.o.payload)
            assert valid == model.valid(), e
            assert reserve == (model.can_reserve() and issued[0] < count), e
            issued[0] += reserve
            model.edge(e, bool(reserve), bool(valid and ready))
            if valid and ready:
                got.append(payload)
            if len(got) == count:
                return

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == list(range(count))


def test_credit_queue_bad_arguments():
    for kw in (dict(latency=3), dict(latency=2, max_reserve=4), dict(latency=1, storage="bram")):
        with pytest.raises(ValueError):
            CreditQueue(unsigned(8), 3, **kw)
