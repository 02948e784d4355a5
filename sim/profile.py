"""Where the cycles go: per-block activity of the whole accelerator in Amaranth's simulator.

For every block the first input transfer and the last output transfer of one window are
recorded; the difference is the block's busy span, and the gaps show which block the others
wait for.
"""
from __future__ import annotations

from amaranth.sim import Simulator

from .limits import CycleLimit


def accelerator_ports(acc):
    """(label, input stream, output stream) of every block of an Accelerator, in topological
    order (the rows of ``Accelerator.stage_times``); a join's input stream is its first."""
    out = []
    for node in acc.nodes:
        if node.role != "op":
            continue
        for part, i, o in node.block.part_ports():
            out.append((f"{node.label}/{part}" if part else node.label, i, o))
    return out


def profile(acc, window, *, limit: CycleLimit | None = None):
    """Simulate one window (a flat list of input codes) with an ideal source and sink.

    Returns ``(prediction, total_cycles, rows)``: the prediction code, or the list of a
    window's codes when the model forecasts several steps (``total_cycles`` up to the last);
    each row is
    ``(label, first_input_edge, last_output_edge, blocked)`` (edges counted from 1;
    ``blocked`` counts the edges where the block offered an output its consumer did not take).
    Stops with :class:`sim.limits.SimulationTimeout` at the limit of ``limit`` (default: from
    ``acc.cycles()``, see :mod:`sim.limits`)."""
    limit = CycleLimit.of(acc, 1) if limit is None else limit
    max_cycles = limit.limit()
    ports = accelerator_ports(acc)
    first_in = {label: None for label, _, _ in ports}
    blocked = {label: 0 for label, _, _ in ports}   # output offered but not taken
    last_out = {label: None for label, _, _ in ports}
    result = {}
    n_out = acc.model.horizon
    got = []

    sim = Simulator(acc)
    sim.add_clock(1e-8)

    async def source(ctx):
        for v in window:
            ctx.set(acc.i.valid, 1)
            ctx.set(acc.i.payload, int(v))
            await ctx.tick().until(acc.i.ready)
        ctx.set(acc.i.valid, 0)

    async def sink_and_monitor(ctx):
        ctx.set(acc.o.ready, 1)
        signals = []
        for label, pi, po in ports:
            signals += [pi.valid, pi.ready, po.valid, po.ready]
        edge = 0
        while True:
            _, _, o_valid, o_payload, *vals = await ctx.tick().sample(acc.o.valid, acc.o.payload,
                                                                      *signals)
            edge += 1
            for n, (label, _, _) in enumerate(ports):
                iv, ir, ov, orr = vals[4 * n: 4 * n + 4]
                if iv and ir and first_in[label] is None:
                    first_in[label] = edge
                if ov and orr:
                    last_out[label] = edge
                if ov and not orr:
                    blocked[label] += 1
            if o_valid:                                 # the sink is always ready
                got.append(int(o_payload))
                if len(got) == n_out:
                    result["pred"] = got[0] if n_out == 1 else got
                    result["cycles"] = edge
                    return
            if edge >= max_cycles:
                raise limit.timeout("Amaranth simulation (profile)", edge, len(got), n_out)

    sim.add_testbench(source, background=True)
    sim.add_testbench(sink_and_monitor)
    sim.run()
    rows = [(label, first_in[label], last_out[label], blocked[label]) for label, _, _ in ports]
    return result["pred"], result["cycles"], rows
