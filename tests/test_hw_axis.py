"""The AXI4-Stream top (hw/axis.py) in Amaranth's simulator: bit-exact against the integer
model under input gaps and output back-pressure, TLAST on every result, and every misplaced
TLAST or out-of-range TDATA reported on the status outputs."""
import random

import numpy as np
import pytest
from amaranth import ResetInserter, Signal
from amaranth.sim import Simulator

from hw.accelerator import Accelerator
from hw.axis import AxisTop, axis_width
from hw.common import qshape
from model.synthetic import random_inputs, random_intmodel
from sim.limits import CycleLimit
from sim.timing import stream_timing

SMALL = dict(features=3, window=4, d_model=4, heads=1, layers=1, ffn=8, norm="batchnorm",
             activation="relu")


def run_axis(top, values, tlasts, n_results, *, gap=0.0, stall=0.0, seed=0, windows=1,
             tdata=None):
    """Drive ``values`` (with ``tlasts``) into ``s_axis``, collect ``n_results`` values from
    ``m_axis``. Returns (values, tlasts, the status events seen as (edge, name), input_error
    at the end, edges)."""
    rng = random.Random(seed)
    limit = CycleLimit.of(top.core, windows)
    max_edges = limit.limit(gap, stall)
    got, lasts, events = [], [], []
    state = {"edges": 0, "error": 0}
    raw = list(tdata) if tdata is not None else None

    async def source(ctx):
        for k, (v, last) in enumerate(zip(values, tlasts)):
            while rng.random() < gap:
                ctx.set(top.s_axis_tvalid, 0)
                await ctx.tick()
            ctx.set(top.s_axis_tdata, raw[k] if raw is not None else
                    int(v) & ((1 << len(top.s_axis_tdata)) - 1))
            ctx.set(top.s_axis_tlast, int(last))
            ctx.set(top.s_axis_tvalid, 1)
            await ctx.tick().until(top.s_axis_tready)
        ctx.set(top.s_axis_tvalid, 0)

    async def sink(ctx):
        shape = top.out_shape
        w = len(top.m_axis_tdata)
        while len(got) < n_results:
            ctx.set(top.m_axis_tready, int(rng.random() >= stall))
            _, _, valid, ready, data, last, *ev = await ctx.tick().sample(
                top.m_axis_tvalid, top.m_axis_tready, top.m_axis_tdata, top.m_axis_tlast,
                top.event_tlast_unexpected, top.event_tlast_missing, top.event_tdata_range)
            state["edges"] += 1
            assert state["edges"] <= max_edges, "the AXI4-Stream top hangs"
            for name, e in zip(("unexpected", "missing", "range"), ev):
                if e:
                    events.append((state["edges"], name))
            if valid and ready:
                value = data - (1 << w) if shape.signed and data >> (w - 1) else data
                got.append(value)
                lasts.append(last)
        # the events of the last inputs come one edge after their transfer
        for _ in range(2):
            _, _, *ev = await ctx.tick().sample(top.event_tlast_unexpected,
                                               top.event_tlast_missing, top.event_tdata_range)
            events.extend((None, n) for n, e in zip(("unexpected", "missing", "range"), ev) if e)
        state["error"] = ctx.get(top.input_error)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.run()
    return got, lasts, events, state["error"], state["edges"]


def framed(windows):
    values = windows.reshape(-1).tolist()
    n = windows[0].size
    return values, [k % n == n - 1 for k in range(len(values))]


@pytest.mark.parametrize("bits, variant", [
    (8, {}),
    (4, {"norm": "layernorm", "activation": "gelu"}),
    (6, {"heads": 2}),
])
def test_axis_top_is_bit_exact_under_gaps_and_backpressure(bits, variant):
    model = random_intmodel({**SMALL, **variant}, bits=bits, seed=bits)
    windows = random_inputs(model, 3, seed=bits + 1)
    expected = model.forward(windows)["pred"][:, 0].tolist()
    top = AxisTop(Accelerator(model), windows[0].size, 1)
    values, tlasts = framed(windows)
    got, lasts, events, error, _ = run_axis(top, values, tlasts, len(expected), gap=0.3,
                                            stall=0.5, seed=bits, windows=3)
    assert got == expected
    assert lasts == [1] * len(expected)
    assert events == [] and error == 0
    # TDATA in whole bytes; the result sign- or zero-extended into it
    assert len(top.s_axis_tdata) == axis_width(qshape(model.qtype("input"))) == 8
    assert len(top.m_axis_tdata) == axis_width(qshape(model.qtype("pred"))) == 8


def test_axis_top_has_the_plain_tops_timing():
    model = random_intmodel(SMALL, bits=8, seed=1)
    acc = Accelerator(model)
    windows = random_inputs(model, 1, seed=2)
    values, tlasts = framed(windows)
    got, _, _, _, edges = run_axis(AxisTop(acc, windows[0].size, 1), values, tlasts, 1)
    assert got == model.forward(windows)["pred"][:, 0].tolist()
    assert edges == acc.cycles()


def test_misplaced_tlast_is_reported_not_realigned():
    model = random_intmodel(SMALL, bits=8, seed=3)
    windows = random_inputs(model, 2, seed=4)
    n = windows[0].size
    values, tlasts = framed(windows)
    tlasts[n // 2] = True          # early TLAST inside window 0
    tlasts[n - 1] = False          # ... and none on its last value
    top = AxisTop(Accelerator(model), n, 1)
    got, lasts, events, error, _ = run_axis(top, values, tlasts, 2, windows=2)
    # framing stays by count: the results are those of the two windows as sent
    assert got == model.forward(windows)["pred"][:, 0].tolist()
    assert sorted(name for _, name in events) == ["missing", "unexpected"]
    assert error == 1


def test_out_of_range_tdata_is_reported():
    model = random_intmodel(SMALL, bits=4, seed=5)     # 4-bit input codes in an 8-bit TDATA
    q = model.qtype("input")
    windows = random_inputs(model, 1, seed=6)
    values, tlasts = framed(windows)
    top = AxisTop(Accelerator(model), len(values), 1)
    assert len(top.s_axis_tdata) == 8
    raw = [v & 0xFF for v in values]
    raw[0] = (values[0] & 0xF) | (0x50 if q.signed else 0x10)   # upper bits not an extension
    got, _, events, error, _ = run_axis(top, values, tlasts, 1, tdata=raw)
    assert got == model.forward(windows)["pred"][:, 0].tolist()     # the low 4 bits are used
    assert [name for _, name in events] == ["range"] and error == 1


def test_bad_framing_is_a_clear_error():
    with pytest.raises(ValueError, match="at least one input"):
        AxisTop(object(), 0, 1)
    with pytest.raises(TypeError, match="streams 'i'"):
        AxisTop(object(), 4, 1)


def test_stream_timing_latency_is_cycles():
    # The schedule (cycles()) and the simulation agree on the isolated window; back to back the
    # results come out at a steady interval, shorter than the latency.
    model = random_intmodel(SMALL, bits=8, seed=1)
    acc = Accelerator(model)
    windows = random_inputs(model, 4, seed=2).reshape(4, -1).tolist()
    t = stream_timing(acc, windows)
    assert t.latency == acc.cycles()
    assert len(set(t.intervals)) == 1 and t.interval == t.intervals[-1] < t.latency
    assert t.latency_back_to_back >= t.latency
    with pytest.raises(ValueError, match="at least 3"):
        stream_timing(acc, windows[:2])
    np.testing.assert_equal(t.to_dict()["intervals"], list(t.intervals))


def test_reset_mid_window_starts_a_new_window():
    # PORTS.md: rst may come at any time; the window in flight is dropped, input_error cleared,
    # and the next value is the first of a new window.
    model = random_intmodel(SMALL, bits=8, seed=7)
    windows = random_inputs(model, 2, seed=8)
    n = windows[0].size
    rst = Signal()
    top = AxisTop(Accelerator(model), n, 1)
    sim = Simulator(ResetInserter(rst)(top))
    sim.add_clock(1e-8)
    got, state = [], {}
    max_edges = CycleLimit.of(top.core, 3).limit()

    async def send(ctx, values, tlasts):
        for v, last in zip(values, tlasts):
            ctx.set(top.s_axis_tdata, int(v) & 0xFF)
            ctx.set(top.s_axis_tlast, int(last))
            ctx.set(top.s_axis_tvalid, 1)
            await ctx.tick().until(top.s_axis_tready)
        ctx.set(top.s_axis_tvalid, 0)

    async def bench(ctx):
        first = windows[0].reshape(-1).tolist()
        await send(ctx, first[: n // 2], [True] + [False] * (n // 2 - 1))  # misplaced TLAST
        await ctx.tick().repeat(3)
        state["error_before"] = ctx.get(top.input_error)
        ctx.set(rst, 1)
        await ctx.tick().repeat(2)
        ctx.set(rst, 0)
        state["error_after"] = ctx.get(top.input_error)
        values, tlasts = framed(windows)
        await send(ctx, values, tlasts)
        edges = 0
        while len(got) < 2:
            await ctx.tick()
            edges += 1
            assert edges <= max_edges, "no result after the reset"

    async def monitor(ctx):
        ctx.set(top.m_axis_tready, 1)
        async for _clk, _rst, valid, data in ctx.tick().sample(top.m_axis_tvalid,
                                                                top.m_axis_tdata):
            if valid:
                got.append(data - 256 if data >= 128 else data)

    sim.add_testbench(bench)
    sim.add_process(monitor)
    sim.run()
    assert state == {"error_before": 1, "error_after": 0}
    assert got == model.forward(windows)["pred"][:, 0].tolist()
