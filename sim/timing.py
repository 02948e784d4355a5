"""Latency and initiation interval of a windowed stream component, from Amaranth's simulator.

A window is ``n_in`` input values and gives ``n_out`` output values. :func:`stream_timing`
feeds one window alone (always-valid source, always-ready sink) and, once its result is out,
``back_to_back`` more windows with no gap between them, and reports (edges counted from 1, the
first edge at which the first value is offered, as :func:`sim.streams.run_stream_block` and the
components' ``cycles()`` count them):

* ``latency``: the edge that transfers the isolated window's last output value;
* ``interval``: edges between the last output values of the last two back-to-back windows
  (the initiation interval once the pipeline is full);
* ``latency_back_to_back``: for the last back-to-back window, edges from the transfer of its
  first input value to the transfer of its last output value, both counted (the isolated
  window's is ``latency``);
* ``intervals``: every interval between consecutive back-to-back results.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from amaranth.sim import Simulator

from .limits import CycleLimit

__all__ = ["StreamTiming", "stream_timing"]


@dataclass(frozen=True)
class StreamTiming:
    latency: int
    interval: int
    latency_back_to_back: int
    intervals: tuple
    windows: int

    def to_dict(self) -> dict:
        d = asdict(self)
        d["intervals"] = list(self.intervals)
        return d


def stream_timing(dut, windows, n_out: int = 1, *, limit: CycleLimit | None = None) -> StreamTiming:
    """Timing of ``dut`` (streams ``i`` and ``o``) on ``windows`` (a list of lists of input
    integers, at least 3: one isolated, then the rest back to back)."""
    windows = [[int(x) for x in w] for w in windows]
    if len(windows) < 3:
        raise ValueError("stream_timing needs at least 3 windows (one alone, two back to back)")
    if len({len(w) for w in windows}) != 1:
        raise ValueError("all windows must have the same number of values")
    if limit is None:
        limit = CycleLimit.of(dut, 2 * len(windows))
    max_edges = limit.limit(0.0, 0.0)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    first_in, last_out = [], []          # per window: edge of its first input, last output

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        edge, w, k, outs = 0, 0, 0, 0    # window and value being offered, outputs seen
        while len(last_out) < len(windows):
            # window 0 alone: the others wait until its result is out
            offer = w < len(windows) and (w == 0 or len(last_out) >= 1)
            ctx.set(dut.i.valid, int(offer))
            if offer:
                ctx.set(dut.i.payload, windows[w][k])
            _, _, iv, ir, ov = await ctx.tick().sample(dut.i.valid, dut.i.ready, dut.o.valid)
            edge += 1
            if edge > max_edges:
                raise limit.timeout("Amaranth", edge, len(last_out) * n_out + outs,
                                    len(windows) * n_out, 0.0, 0.0)
            if iv and ir:
                if k == 0:
                    first_in.append(edge)
                k += 1
                if k == len(windows[w]):
                    w, k = w + 1, 0
            if ov:
                outs += 1
                if outs == n_out:
                    last_out.append(edge)
                    outs = 0
        ctx.set(dut.i.valid, 0)

    sim.add_testbench(bench)
    sim.run()
    b2b = last_out[1:]
    intervals = tuple(b - a for a, b in zip(b2b, b2b[1:]))
    return StreamTiming(latency=last_out[0], interval=intervals[-1],
                        latency_back_to_back=last_out[-1] - first_in[-1] + 1,
                        intervals=intervals, windows=len(windows))
