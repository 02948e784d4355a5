"""Stream testbenches for Amaranth's simulator: drive element streams with random stalls and
count cycles, so that every block is checked against the integer reference the same way."""
from __future__ import annotations

import random

from amaranth.sim import Simulator

from .limits import CycleLimit


def _port(dut, name: str):
    """The stream ``name`` of ``dut``; ``"o[2]"``: element 2 of the port array ``o``."""
    base, _, index = name.partition("[")
    port = getattr(dut, base)
    return port[int(index.rstrip("]"))] if index else port


def run_stream_block(dut, inputs: dict, outputs: dict, *, stall_in: float = 0.0,
                     stall_out: float = 0.0, seed: int = 0, windows: int = 1,
                     limit: CycleLimit | None = None, vcd: str | None = None,
                     domain_clock: float = 1e-8):
    """Simulate ``dut`` with element streams.

    ``inputs`` maps an input-stream attribute name of ``dut`` (``"o[k]"``: an element of a port
    array) to the integers to send;
    ``outputs`` maps an output-stream name to the number of elements to collect. A source
    withholds ``valid`` with probability ``stall_in`` each cycle, a sink withholds ``ready``
    with probability ``stall_out``. Returns ``(received, cycles)`` where ``cycles`` is the
    number of clock edges up to and including the one that transfers the last output.

    The simulation stops with :class:`sim.limits.SimulationTimeout` at the limit
    ``limit`` gives (default: from ``dut.cycles()`` for ``windows`` windows back to back, or
    ``dut.cycles(length)`` of the longest input stream for a streaming block; see
    :mod:`sim.limits`).
    """
    sim = Simulator(dut)                # elaborates dut (also when no limit can be derived)
    sim.add_clock(domain_clock)
    inputs = {name: list(values) for name, values in inputs.items()}
    if limit is None:
        length = max((len(v) for v in inputs.values()), default=0)
        limit = CycleLimit.of(dut, windows, length=length)
    max_cycles = limit.limit(stall_in, stall_out)
    rng = random.Random(seed)
    received = {name: [] for name in outputs}
    last_transfer = {name: 0 for name in outputs}

    def make_source(name, values):
        port = _port(dut, name)

        async def source(ctx):
            for v in values:
                while rng.random() < stall_in:
                    ctx.set(port.valid, 0)
                    await ctx.tick()
                ctx.set(port.valid, 1)
                ctx.set(port.payload, int(v))
                await ctx.tick().until(port.ready)
            ctx.set(port.valid, 0)
        return source

    def make_sink(name, count):
        port = _port(dut, name)

        async def sink(ctx):
            # One iteration per clock edge, so the edge count is exact.
            edge = 0
            while len(received[name]) < count:
                ready = not (rng.random() < stall_out)
                ctx.set(port.ready, ready)
                _, _, valid, payload = await ctx.tick().sample(port.valid, port.payload)
                edge += 1
                if valid and ready:
                    received[name].append(int(payload))
                    last_transfer[name] = edge
                if len(received[name]) < count and edge >= max_cycles:
                    raise limit.timeout("Amaranth simulation", edge, len(received[name]), count,
                                        stall_in, stall_out, what=f"outputs on {name}")
            ctx.set(port.ready, 0)
        return sink

    for name, values in inputs.items():
        sim.add_testbench(make_source(name, values), background=True)
    for name, count in outputs.items():
        sim.add_testbench(make_sink(name, count))
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    return received, max(last_transfer.values(), default=0)


def check_against_reference(dut, inputs, *, stall: float = 0.0, seed: int = 0,
                            exact_cycles: bool = False, windows: int = 1) -> int:
    """Stream ``inputs`` (``windows`` windows back to back) through a single-input block whose
    ``reference(inputs)`` gives the integer model's result; require equality (and, with
    ``exact_cycles``, that the simulated cycles equal ``dut.cycles()``). Returns the cycle
    count."""
    import numpy as np
    x = np.asarray(inputs).ravel()
    ref = np.asarray(dut.reference(x)).ravel()
    got, cycles = run_stream_block(dut, {"i": x}, {"o": len(ref)}, stall_in=stall,
                                   stall_out=stall, seed=seed, windows=windows)
    np.testing.assert_array_equal(np.array(got["o"]), ref)
    if exact_cycles:
        assert cycles == dut.cycles(), f"simulated {cycles} cycles, formula {dut.cycles()}"
    return cycles


def check_accelerator(model, windows, hw=None, *, stall_in: float = 0.0, stall_out: float = 0.3,
                      seed: int = 1) -> int:
    """Stream integer ``windows`` (N, L, F) back to back through the accelerator of ``model``
    (with ``hw``) under random stalls and require every output code to equal the integer
    model's ``pred_codes``; then require one window alone to take exactly the accelerator's
    ``cycles()``. Returns that cycle count."""
    import numpy as np
    from hw.accelerator import Accelerator
    windows = np.asarray(windows)
    want = model.pred_codes(windows).numpy()
    got, _ = run_stream_block(Accelerator(model, hw), {"i": windows.reshape(-1).tolist()},
                              {"o": want.size}, windows=len(windows), stall_in=stall_in,
                              stall_out=stall_out, seed=seed)
    np.testing.assert_array_equal(np.array(got["o"]).reshape(want.shape), want)
    acc = Accelerator(model, hw)
    _, cycles = run_stream_block(acc, {"i": windows[0].reshape(-1).tolist()},
                                 {"o": want[0].size})
    assert cycles == acc.cycles(), f"simulated {cycles} cycles, formula {acc.cycles()}"
    return cycles
