"""Simulate the exported VHDL with GHDL.

* :func:`run_stream` — a generated VHDL testbench streams integers into the
  ``i`` stream of the design and collects the ``o`` stream, with deterministic
  pseudo-random stalls on both sides (valid held until accepted, as the
  stream protocol requires), and reports the cycle count.
* :func:`run_cycles` — a cycle-by-cycle vector testbench for any design with
  a ``clk`` input: apply all other inputs, sample all outputs (after the
  combinational logic settled), clock.  Used by the randomised VHDL-vs-Amaranth
  equivalence tests.

The testbenches are plain VHDL-93 (``std.textio`` only); they are analysed
with the same ``--std`` as the design (default ``08``).
"""
from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from . import tools
from .limits import CycleLimit

__all__ = ["StreamResult", "run_stream", "run_cycles", "parse_entity_ports"]


@dataclass
class StreamResult:
    outputs: list        # integers accepted on the o stream
    cycles: int          # clock cycles from end of reset to the last output handshake
    wall_s: float        # wall-clock seconds of `ghdl -r`
    log: str

    @property
    def cycles_per_s(self):
        return self.cycles / self.wall_s if self.wall_s > 0 else float("inf")


_PORT_RE = re.compile(r"^\s*(\w+)\s*:\s*(in|out)\s+(std_logic_vector\((\d+)\s+downto\s+0\)|std_logic)",
                      re.M | re.I)


def parse_entity_ports(vhdl: str) -> dict:
    """{name: (direction, width, is_vector)} of the first entity in ``vhdl``."""
    ent = vhdl[vhdl.lower().index("entity "):]
    ent = ent[:ent.lower().index("end entity")]
    out = {}
    for m in _PORT_RE.finditer(ent):
        vec = m.group(4) is not None
        out[m.group(1)] = (m.group(2).lower(), int(m.group(4)) + 1 if vec else 1, vec)
    return out


def _entity_name(vhdl: str) -> str:
    return re.search(r"^\s*entity\s+(\w+)\s+is", vhdl, re.M | re.I).group(1)


def _ghdl(workdir: Path, files, top, std="08", run_args=()):
    g = tools.ghdl()
    flags = [f"--std={std}", "--workdir=" + str(workdir)]
    tools.run(g, ["-a", *flags, *map(str, files)], cwd=workdir)
    tools.run(g, ["-e", *flags, top], cwd=workdir)
    t0 = time.perf_counter()
    log = tools.run(g, ["-r", *flags, top, "--ieee-asserts=disable", *run_args], cwd=workdir)
    return log, time.perf_counter() - t0


def _sig(name, width, vec):
    return f"  signal {name} : " + (f"std_logic_vector({width - 1} downto 0)" if vec else "std_logic")


_STREAM_TB = """\
library ieee;
use ieee.std_logic_1164.all;
use ieee.numeric_std.all;
use std.textio.all;

entity tb_stream is
end entity;

architecture sim of tb_stream is
{sigs}
  signal done : boolean := false;
begin
  dut : entity work.{entity} port map (
{pmap}
  );

  clk <= not clk after 5 ns when not done else clk;

  stim : process
    file fin : text open read_mode is "vectors_in.txt";
    file fout : text open write_mode is "vectors_out.txt";
    variable l, lo : line;
    variable x : integer;
    variable have : boolean := false;
    variable lfsr : unsigned(31 downto 0) := to_unsigned({seed}, 32);
    variable nout : natural := 0;
    variable cyc : natural := 0;
    variable last_cyc : natural := 0;
    variable timed_out : boolean := false;
    procedure step(variable r : inout unsigned(31 downto 0)) is
    begin
      -- Galois LFSR, taps 32,22,2,1
      if r(0) = '1' then r := shift_right(r, 1) xor x"80200003";
      else r := shift_right(r, 1); end if;
    end procedure;
  begin
    {rst} <= '1';
    {iv} <= '0';
    {ord} <= '0';
    for k in 1 to 3 loop wait until rising_edge(clk); end loop;
    {rst} <= '0';
    loop
      -- drive (values seen by the DUT at the next rising edge)
      if not have and not endfile(fin) then
        readline(fin, l); read(l, x); have := true;
        {ip} <= {to_vec};
      end if;
      step(lfsr);
      if have and to_integer(lfsr(7 downto 0)) >= {in_stall} then {iv} <= '1';
      elsif {iv} = '0' then {iv} <= '0';
      end if;
      step(lfsr);
      if to_integer(lfsr(7 downto 0)) >= {out_stall} then {ord} <= '1'; else {ord} <= '0'; end if;
      wait until rising_edge(clk);
      cyc := cyc + 1;
      -- sample handshakes with the pre-edge values
      if {iv} = '1' and {ir} = '1' then
        have := false;
        {iv} <= '0';
      end if;
      if {ov} = '1' and {ord} = '1' then
        write(lo, {from_vec});
        writeline(fout, lo);
        nout := nout + 1;
        last_cyc := cyc;
      end if;
      exit when nout >= {n_out};
      if cyc >= {timeout} then
        timed_out := true;
        exit;
      end if;
    end loop;
    if timed_out then
      -- the cycle limit: reported to sim/ghdl.py, which says what the design's formula expected
      write(lo, string'("timeout "));
      write(lo, cyc);
      write(lo, string'(" "));
      write(lo, nout);
      writeline(fout, lo);
    end if;
    write(lo, string'("cycles "));
    write(lo, last_cyc);
    writeline(fout, lo);
    done <= true;
    wait;
  end process;
end architecture;
"""


def run_stream(vhdl: str, inputs, n_out: int, *, limit: CycleLimit, in_signed=True,
               out_signed=True, in_stall=0.0, out_stall=0.0, seed=1,
               std="08", workdir=None) -> StreamResult:
    """Stream ``inputs`` through the VHDL design and collect ``n_out`` outputs.

    ``in_stall``/``out_stall`` are probabilities (0..1) that the source
    withholds valid / the sink withholds ready in a cycle (LFSR-driven,
    reproducible from ``seed``).  Ports are found by name: ``clk``, ``rst``,
    ``i_payload``/``i_valid``/``i_ready``, ``o_payload``/``o_valid``/``o_ready``
    (see :func:`flows.vhdl.vhdl_port_name`).  ``limit``: the design's cycle
    formula and the windows streamed (:class:`sim.limits.CycleLimit`); past its
    limit the simulation stops with :class:`sim.limits.SimulationTimeout`."""
    ports = parse_entity_ports(vhdl)
    need = ["clk", "rst", "i_payload", "i_valid", "i_ready", "o_payload", "o_valid", "o_ready"]
    missing = [p for p in need if p not in ports]
    if missing:
        raise ValueError(f"design has no port(s) {', '.join(missing)}; has {', '.join(ports)}")
    iw, ow = ports["i_payload"][1], ports["o_payload"][1]
    if max(iw, ow) > 31:
        raise ValueError("run_stream supports payloads of at most 31 bits (VHDL integer)")
    entity = _entity_name(vhdl)
    sigs = []
    for name, (d, w, vec) in ports.items():
        init = " := '0'" if not vec else " := (others => '0')"
        sigs.append(_sig(name, w, vec) + init + ";")
    pmap = ",\n".join(f"    {n} => {n}" for n in ports)

    def tovec(w, signed_, vec, expr):
        f = "to_signed" if signed_ else "to_unsigned"
        v = f"std_logic_vector({f}({expr}, {w}))"
        return v if vec else f"{v}(0)"

    ivec, ovec = ports["i_payload"][2], ports["o_payload"][2]
    oexpr = "o_payload" if ovec else "(0 => o_payload)"
    from_vec = (f"to_integer(signed({oexpr}))" if out_signed else f"to_integer(unsigned({oexpr}))")
    timeout = limit.limit(in_stall, out_stall)
    tb = _STREAM_TB.format(
        sigs="\n".join(sigs), entity=entity, pmap=pmap, seed=int(seed) & 0x7FFFFFFF or 1,
        rst="rst", iv="i_valid", ir="i_ready", ip="i_payload", ov="o_valid", ord="o_ready",
        to_vec=tovec(iw, in_signed, ivec, "x"), from_vec=from_vec,
        in_stall=int(round(in_stall * 256)), out_stall=int(round(out_stall * 256)),
        n_out=n_out, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="intformer_ghdl_", dir=workdir) as tmp:
        tmp = Path(tmp)
        (tmp / "dut.vhd").write_text(vhdl)
        (tmp / "tb.vhd").write_text(tb)
        (tmp / "vectors_in.txt").write_text("".join(f"{int(v)}\n" for v in inputs))
        log, wall = _ghdl(tmp, ["dut.vhd", "tb.vhd"], "tb_stream", std=std)
        lines = (tmp / "vectors_out.txt").read_text().split("\n")
    outs, cycles = [], None
    for ln in lines:
        ln = ln.strip()
        if ln.startswith("timeout"):
            ran, got = map(int, ln.split()[1:3])
            raise limit.timeout("GHDL", ran, got, n_out, in_stall, out_stall)
        if ln.startswith("cycles"):
            cycles = int(ln.split()[1])
        elif ln:
            outs.append(int(ln))
    return StreamResult(outs, cycles, wall, log)


_CYCLE_TB = """\
library ieee;
use ieee.std_logic_1164.all;
use std.textio.all;

entity tb_cycles is
end entity;

architecture sim of tb_cycles is
{sigs}
begin
  dut : entity work.{entity} port map (
{pmap}
  );

  stim : process
    file fin : text open read_mode is "cycles_in.txt";
    file fout : text open write_mode is "cycles_out.txt";
    variable l, lo : line;
{vars}
  begin
    clk <= '0';
    while not endfile(fin) loop
      readline(fin, l);
{reads}
      wait for 1 ns;
{writes}
      writeline(fout, lo);
      clk <= '1';
      wait for 1 ns;
      clk <= '0';
      wait for 1 ns;
    end loop;
    wait;
  end process;
end architecture;
"""


def run_cycles(vhdl: str, cycles, *, std="08", workdir=None):
    """Apply ``cycles`` (a list of {input port: int}) one per clock; return a list
    of {output port: int (unsigned)} sampled before each rising edge.

    Port names are VHDL names; unspecified inputs are 0; ``clk`` is driven by
    the testbench."""
    ports = parse_entity_ports(vhdl)
    entity = _entity_name(vhdl)
    ins = [(n, w, v) for n, (d, w, v) in ports.items() if d == "in" and n != "clk"]
    outs = [(n, w, v) for n, (d, w, v) in ports.items() if d == "out"]
    sigs = "\n".join(_sig(n, w, v) + (" := (others => '0');" if v else " := '0';")
                     for n, (d, w, v) in ports.items())
    pmap = ",\n".join(f"    {n} => {n}" for n in ports)
    vars_ = "\n".join(f"    variable v_{n} : bit_vector({w - 1} downto 0);" for n, w, v in ins)
    reads = "\n".join(
        f"      read(l, v_{n}); {n} <= " + (f"to_stdlogicvector(v_{n});" if v
                                            else f"to_stdulogic(v_{n}(0));")
        for n, w, v in ins)
    writes = "\n".join(
        "      write(lo, " + (f"to_bitvector({n})" if v else f"to_bit({n})") +
        "); write(lo, ' ');" for n, w, v in outs)
    tb = _CYCLE_TB.format(sigs=sigs, entity=entity, pmap=pmap, vars=vars_, reads=reads,
                          writes=writes)
    lines = []
    for cyc in cycles:
        lines.append(" ".join(format(int(cyc.get(n, 0)) & ((1 << w) - 1), f"0{w}b")
                              for n, w, v in ins))
    with tempfile.TemporaryDirectory(prefix="intformer_ghdlc_", dir=workdir) as tmp:
        tmp = Path(tmp)
        (tmp / "dut.vhd").write_text(vhdl)
        (tmp / "tb.vhd").write_text(tb)
        (tmp / "cycles_in.txt").write_text("\n".join(lines) + "\n")
        _ghdl(tmp, ["dut.vhd", "tb.vhd"], "tb_cycles", std=std)
        text = (tmp / "cycles_out.txt").read_text()
    result = []
    for ln in text.splitlines():
        vals = ln.split()
        if len(vals) != len(outs):
            continue
        result.append({n: int(b, 2) for (n, w, v), b in zip(outs, vals)})
    return result
