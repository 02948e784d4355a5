"""Export a stream component as a self-contained HDL folder.

``export_hdl(component, out_dir)`` writes::

    out_dir/
      <name>.v          Verilog (see below), top module <name> with valid/ready streams
      <name>.vhd        VHDL-93 of the same design (flows/vhdl.py, via Yosys)
      PORTS.md          ports, framing, reset, latency and throughput, dialects
      vectors_in.txt    (optional) one input integer per line
      vectors_out.txt   (optional) one expected output integer per line
      vectors.json      (optional) counts and signedness of the vectors
      MANIFEST.json     file list, port list, timing, tool versions

and, given the framing of a window (``frame=(values in, values out)``), the AXI4-Stream top
(:class:`hw.axis.AxisTop`) and what goes with it::

      <name>_axis.v / <name>_axis.vhd      s_axis_* / m_axis_* top (self-contained: the whole
                                           design again, under its own module names)
      tb/tb_<name>_axis.v / .vhd           self-checking testbenches (flows/testbench.py)
      tb/run_xsim.sh                       both, in Vivado's simulator
      vivado/package_ip.tcl                packages <name>_axis as a Vivado IP (flows/vivado.py)

The Verilog is written by :func:`verilog_text`: Amaranth's RTLIL (``amaranth.back.rtlil``)
through Yosys ``proc`` (with multiplexers) and ``write_verilog``, so that every combinational
signal is a continuous ``assign`` and every register an ``always @(posedge clk)``. Amaranth's
own Verilog backend keeps combinational processes as ``always @*`` blocks that are only
started at time 0 by a Verilog-2005 trick (a ``reg`` with a declaration initialiser, whose
time-0 event SystemVerilog does not have): compiled as SystemVerilog (Icarus ``-g2012``,
xsim/Questa with ``-sv``) those blocks stayed X and the design deadlocked. The file here is
Verilog-2005 and simulates the same as SystemVerilog.

The folder is built in a temporary sibling directory and renamed into place at
the end, so a failure leaves no half-written folder behind (an existing
``out_dir`` is replaced only after the new one is complete).

Port names of the Verilog top (Amaranth flattens the ``i``/``o`` stream
interfaces with a double underscore)::

    clk, rst                       sync domain clock, synchronous active-high reset
    i__payload [W_i-1:0], i__valid  input  (into the design)
    i__ready                        output
    o__payload [W_o-1:0], o__valid  output
    o__ready                        input

In the VHDL entity the double underscores collapse: ``i_payload``,
``i_valid``, ``i_ready``, ``o_payload``, ``o_valid``, ``o_ready``.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from sim.verilog import parse_verilog_ports

__all__ = ["export_hdl", "ExportResult", "Frame", "stream_port_info", "verilog_text",
           "STREAM_PORTS", "AXIS_PORTS"]

STREAM_PORTS = ("clk", "rst", "i__payload", "i__valid", "i__ready",
                "o__payload", "o__valid", "o__ready")
AXIS_PORTS = ("clk", "rst", "s_axis_tdata", "s_axis_tvalid", "s_axis_tready", "s_axis_tlast",
              "m_axis_tdata", "m_axis_tvalid", "m_axis_tready", "m_axis_tlast",
              "event_tlast_unexpected", "event_tlast_missing", "event_tdata_range", "input_error")


def stream_port_info(component):
    """(input payload shape, output payload shape) of a stream component."""
    sig = component.signature
    try:
        ishape = sig.members["i"].signature.members["payload"].shape
        oshape = sig.members["o"].signature.members["payload"].shape
    except KeyError as e:
        raise TypeError("component must have stream ports 'i' (In) and 'o' (Out) "
                        f"with a payload: missing {e}") from None
    from amaranth.hdl import Shape
    return Shape.cast(ishape), Shape.cast(oshape)


@dataclass(frozen=True)
class Frame:
    """How the component's streams are framed: ``n_in`` input values make one window, which
    gives ``n_out`` output values. ``order`` and ``result`` say in words (for PORTS.md) which
    value comes when and what the result is."""
    n_in: int
    n_out: int = 1
    order: str = ""
    result: str = ""

    def __post_init__(self):
        if int(self.n_in) < 1 or int(self.n_out) < 1:
            raise ValueError(f"a window needs at least one input and one output value, got "
                             f"n_in={self.n_in}, n_out={self.n_out}")


@dataclass
class ExportResult:
    out_dir: Path
    name: str
    verilog: Path
    vhdl: Path | None
    ports_md: Path
    ports: dict                      # Verilog port name -> VerilogPort
    vhdl_ports: dict                 # Verilog port name -> VHDL port name
    in_shape: object = None
    out_shape: object = None
    vectors_in: Path | None = None
    vectors_out: Path | None = None
    files: list = field(default_factory=list)
    axis_name: str | None = None     # the AXI4-Stream top (with ``frame``)
    axis_verilog: Path | None = None
    axis_vhdl: Path | None = None
    axis_ports: dict = field(default_factory=dict)
    timing: object = None            # sim.timing.StreamTiming (with ``frame`` and vectors)
    cycles: int | None = None        # the component's cycles(), if it has one


#: Vivado interface attributes of the AXI4-Stream top's clock and reset (UG994, "HDL Parameters
#: for Interface Inference"), so that a module reference in a block design associates both
#: stream interfaces with ``clk`` and knows that ``rst`` is active-high.
def _axis_port_attrs(clock_mhz):
    freq = f", FREQ_HZ {round(clock_mhz * 1e6)}" if clock_mhz else ""
    return {
        "clk": {"X_INTERFACE_INFO": "xilinx.com:signal:clock:1.0 clk CLK",
                "X_INTERFACE_PARAMETER": f"ASSOCIATED_BUSIF s_axis:m_axis, ASSOCIATED_RESET rst{freq}"},
        "rst": {"X_INTERFACE_INFO": "xilinx.com:signal:reset:1.0 rst RST",
                "X_INTERFACE_PARAMETER": "POLARITY ACTIVE_HIGH"},
    }


def verilog_text(component, name: str, port_attrs: dict | None = None) -> str:
    """Verilog-2005 of ``component`` with top module ``name`` that simulates the same when
    compiled as SystemVerilog: Amaranth's RTLIL through Yosys ``proc`` (multiplexers, no
    ``always @*``), ``memory_collect`` and ``write_verilog``. ``port_attrs``:
    ``{port: {attribute: string}}`` Verilog attributes put on top-level ports."""
    from amaranth.back import rtlil
    from sim import tools
    text = rtlil.convert(component, name=name)
    setattrs = []
    for port, attrs in (port_attrs or {}).items():
        for key, value in attrs.items():
            if '"' in value or "\\" in value:
                raise ValueError(f"attribute {key} of {port}: no quotes or backslashes, please")
            setattrs.append(f'setattr -set {key} "{value}" {name}/w:{port}')
    script = "\n".join(["read_rtlil design.il", "proc -norom", "memory_collect", *setattrs,
                        "write_verilog design.v", ""])
    with tempfile.TemporaryDirectory(prefix="intformer_verilog_") as tmp:
        tmp = Path(tmp)
        (tmp / "design.il").write_text(text)
        (tmp / "emit.ys").write_text(script)
        tools.run(tools.yosys(), ["-q", "emit.ys"], cwd=tmp)
        out = (tmp / "design.v").read_text()
    if re.search(r"\balways\s*@\s*\*|\balways\s*@\s*\(\s*\*\s*\)", out):
        raise RuntimeError("Yosys wrote an always @* block: the Verilog would not simulate as "
                           "SystemVerilog (a bug in flows/export.py's emission script)")
    return out


def _vhdl_with_attrs(vhdl_text: str, entity: str, port_attrs: dict) -> str:
    """The same VHDL with the interface attributes on the entity's ports."""
    names = sorted({k for attrs in port_attrs.values() for k in attrs})
    decl = "".join(f"  attribute {k} : string;\n" for k in names)
    spec = "".join(f'  attribute {k} of {port} : signal is "{v}";\n'
                   for port, attrs in port_attrs.items() for k, v in attrs.items())
    end = f"end entity {entity};"
    if vhdl_text.count(end) != 1:
        raise RuntimeError(f"cannot find the end of entity {entity} in the generated VHDL")
    return vhdl_text.replace(end, decl + spec + end)


def _sh(s):
    return f"{'signed' if s.signed else 'unsigned'}({s.width})"


def _port_table(ports, vports):
    # the canonical order (clock, reset, input stream, output stream, status), then the rest
    canon = {n: k for k, n in enumerate(STREAM_PORTS + AXIS_PORTS[2:])}
    order = sorted(ports.values(), key=lambda p: (canon.get(p.name, len(canon)), p.name))
    rows = "\n".join(f"| `{p.name}` | `{vports[p.name]}` | {p.direction} | {p.width} |"
                      for p in order)
    return f"| Verilog port | VHDL port | direction | width |\n|---|---|---|---|\n{rows}"


def _ports_md(name, ports, vports, ishape, oshape, *, frame=None, axis=None, timing=None,
              cycles=None, clock_mhz=None, n_windows=None, files=()):
    from hw.axis import axis_width
    md = [f"# `{name}`: ports, framing, timing\n",
          "Generated by `flows/export.py` with the design; every figure below is computed from "
          "the design (see *Where the figures come from*).\n"]
    if files:
        md.append("## Files\n")
        what = {f"{name}.v": "plain top: valid/ready streams (Verilog-2005)",
                f"{name}.vhd": "plain top (VHDL-93)",
                "PORTS.md": "this file",
                "vectors_in.txt": "test input values, one integer per line, in stream order",
                "vectors_out.txt": "the integer reference's results for them, one per line",
                "vectors.json": "counts, widths and signedness of the vectors",
                "MANIFEST.json": "files, ports, timing and tool versions (machine-readable)"}
        if axis:
            a = axis["name"]
            what.update({
                f"{a}.v": "AXI4-Stream top (Verilog-2005; self-contained, the whole design)",
                f"{a}.vhd": "AXI4-Stream top (VHDL-93; self-contained)",
                f"tb/tb_{a}.v": "self-checking testbench of the AXI4-Stream top (Verilog-2005)",
                f"tb/tb_{a}.vhd": "self-checking testbench of the AXI4-Stream top (VHDL-2008)",
                "tb/run_xsim.sh": "runs both testbenches in Vivado's simulator",
                "vivado/package_ip.tcl": f"packages `{a}` as a Vivado IP"})
        md.append("| file | what |\n|---|---|\n" +
                  "\n".join(f"| `{f}` | {what.get(f, '')} |" for f in files) + "\n")

    md.append(f"## Plain top `{name}`\n\n{_port_table(ports, vports)}\n")
    md.append(f"""* `clk`: single clock, all state changes on the rising edge.
* `rst`: synchronous, active-high reset (see *Reset*).
* `i` stream (into the design): payload `{_sh(ishape)}`, two's complement if signed.
* `o` stream (out of the design): payload `{_sh(oshape)}`.

A transfer happens on a rising clock edge where both `valid` and `ready` are 1 (the
`amaranth.lib.stream` protocol, the same rules as AXI4-Stream's TVALID/TREADY). The source
drives `payload` and `valid`; once it raises `valid` it must keep `valid` high and `payload`
stable until the transfer happens. The sink may raise and lower `ready` freely; `ready` may
depend combinationally on `valid` (the design's `i__ready` may combinationally depend on
`o__ready`). One value per transfer, in order. The plain top has no start or end marker:
windows are framed by count from reset.
""")
    if axis:
        a = axis["name"]
        wi, wo = axis_width(ishape), axis_width(oshape)
        md.append(f"## AXI4-Stream top `{a}`\n\n{_port_table(axis['ports'], axis['vports'])}\n")
        md.append(f"""* `s_axis` (slave, into the design) and `m_axis` (master, out of it): AXI4-Stream with
  TDATA, TVALID, TREADY, TLAST (no TKEEP/TSTRB/TUSER/TID/TDEST). Vivado's IP Integrator
  infers both interfaces from the names; the Verilog and VHDL also carry `X_INTERFACE_INFO` /
  `X_INTERFACE_PARAMETER` attributes that associate them with `clk` and declare `rst`
  active-high.
* `s_axis_tdata` is {wi} bits (whole bytes): {f"the input value is its low {ishape.width} bits, `{_sh(ishape)}`; the upper {wi - ishape.width} bits must be " + ("its sign extension" if ishape.signed else "zero") if wi > ishape.width else f"the input value, `{_sh(ishape)}`"}.
* `m_axis_tdata` is {wo} bits: the `{_sh(oshape)}` result, {"sign" if oshape.signed else "zero"}-extended.
* `s_axis_tlast`: high on the last value of each window (value {frame.n_in} of {frame.n_in}).
  `m_axis_tlast`: high on the last value of each result (value {frame.n_out} of {frame.n_out}).
* Status outputs (registered, one cycle after the transfer concerned):
  `event_tlast_unexpected` (one-cycle pulse: TLAST high on a value that is not a window's
  last), `event_tlast_missing` (pulse: TLAST low on a window's last value),
  `event_tdata_range` (pulse: TDATA's upper bits are not {"the sign extension" if ishape.signed else "zero"}),
  `input_error` (sticky: any of these since reset).
* Framing is by count: TLAST is checked, never used to realign. After a misplaced TLAST the
  design goes on counting values (it cannot drop a window in flight) and every later TLAST
  may be misplaced too: watch `input_error`, and assert `rst` to start again at a window's
  first value.
* The handshakes pass straight through: the AXI4-Stream top has the plain top's timing.
""")
    if frame:
        md.append(f"""## Framing

* A window is **{frame.n_in} input values**, one per transfer{": " + frame.order if frame.order else "."}
* Its result is **{frame.n_out} output value{"s" if frame.n_out > 1 else ""}**{": " + frame.result if frame.result else "."}
* Windows may follow each other back to back, with no gap and no reset between them; the
  design takes the next window's first values while it still computes the previous one.
* Results come out in window order; a stalled output (`ready` / TREADY low) only delays them.
""")
    md.append("""## Reset

`rst` is synchronous and active-high: hold it for at least one rising edge of `clk`. It may be
asserted at any time; a window in flight is dropped. Registers return to their initial values
(which are also their power-up values); memories (weights, buffers) are not cleared and need
not be. After `rst` falls the design takes the first value of a new window. `i__ready` /
`s_axis_tready` may be high during reset: send nothing until `rst` is low.
""")
    if frame and (timing or cycles):
        unit = lambda c: f"{c / clock_mhz:,.2f} µs" if clock_mhz else "–"
        rows = []
        lat = timing.latency if timing else cycles
        rows.append(f"| latency of an isolated window: rising edges from the one where its first "
                    f"value is offered (edge 1) to the one that transfers its last result value "
                    f"| {lat:,} | {unit(lat)} |")
        if timing:
            rows.append(f"| initiation interval, windows back to back: one result every | "
                        f"{timing.interval:,} | {unit(timing.interval)} |")
            rows.append(f"| back to back: edges from the transfer of a window's first value to "
                        f"the transfer of its last result value, both counted (the design takes "
                        f"a window's first values while it still computes the previous one) | "
                        f"{timing.latency_back_to_back:,} | "
                        f"{unit(timing.latency_back_to_back)} |")
        clock = f"{clock_mhz:g} MHz" if clock_mhz else "not set"
        md.append(f"""## Latency and throughput

Always-valid source, always-ready sink; cycles of `clk`. Clock target: **{clock}**
(the hardware configuration's `clock_mhz`; the synthesis reports say whether it is met).

| | cycles | at the clock target |
|---|---|---|
""" + "\n".join(rows) + "\n")
        src = ["### Where the figures come from\n"]
        if cycles is not None:
            src.append(f"* The isolated latency is the design's `cycles()`: {cycles:,}, the last "
                       "output edge of its per-block schedule (`stage_times`, each block's "
                       "`output_times`)" + (f", and the Amaranth simulation at export gave the "
                       f"same ({timing.latency:,})." if timing else "."))
        if timing:
            src.append(f"* The initiation interval is measured by the Amaranth simulation at "
                       f"export (the schedule covers one window): the first vector window alone, "
                       f"then the other {timing.windows - 1} back to back; the intervals between "
                       f"their results were {', '.join(f'{i:,}' for i in timing.intervals)} "
                       f"cycles, the last is given.")
            src.append("* The testbenches (`tb/`) measure both again on the exported HDL and "
                       "fail if either differs.")
        md.append("\n".join(src) + "\n")
    md.append("""## HDL dialects

* Verilog: **Verilog-2005** (IEEE 1364-2005), no SystemVerilog constructs; it simulates the
  same when compiled as SystemVerilog (IEEE 1800; every combinational signal is a continuous
  `assign`, every register an `always @(posedge clk)`, no `always @*`). Its testbench passes
  under Icarus Verilog `-g2005` and `-g2012`.
* VHDL design files: **VHDL-93** (IEEE 1076-1993) with `ieee.numeric_std`; they also analyse
  as VHDL-2008 (tested with GHDL `--std=08`).
* Testbenches: Verilog-2005 and **VHDL-2008** (`std.env.finish`).
""")
    if axis and f"tb/tb_{axis['name']}.v" in files:
        a = axis["name"]
        md.append(f"""## Testbenches

`tb/tb_{a}.v` (module `tb_{a}`) and `tb/tb_{a}.vhd` (entity `tb_{a}_vhd`) drive the
AXI4-Stream top with `vectors_in.txt` ({n_windows} windows) and check every result against
`vectors_out.txt`, in three phases: the first window alone (checks the latency above), the
others back to back (checks the initiation interval), then, after a reset, all windows with
random input gaps and output back-pressure (parameters/generics `GAP_PCT`, `STALL_PCT`,
`SEED`). They print the cycles per window and `PASS` or `FAIL`. Run them from the export
folder:

```sh
sh tb/run_xsim.sh                                   # Vivado: xvlog/xvhdl, xelab, xsim
iverilog -g2012 -o tb.vvp {a}.v tb/tb_{a}.v && vvp -n tb.vvp
ghdl -a --std=08 {a}.vhd tb/tb_{a}.vhd && ghdl -e --std=08 tb_{a}_vhd && ghdl -r --std=08 tb_{a}_vhd
```
""")
    if axis:
        a = axis["name"]
        vh = f" (or `{a}.vhd`)" if f"{a}.vhd" in files else ""
        md.append(f"""## Vivado

* RTL: add `{a}.v`{vh} to a project; in a block design, *Add Module* gives a
  block with `s_axis`, `m_axis`, `clk` and `rst` interfaces.
* IP: `vivado -mode batch -source vivado/package_ip.tcl` (from the export folder) packages it
  into `ip/`; add that folder as an IP repository (*Settings → IP → Repository*).
""")
    return "\n".join(md)


def export_hdl(component, out_dir, name: str = "intformer_top", test_vectors=None,
               vhdl: bool = True, frame: Frame | None = None, clock_mhz: float | None = None,
               timing: bool = True) -> ExportResult:
    """Write Verilog, VHDL, PORTS.md (and test vectors) of ``component`` to ``out_dir``.

    ``test_vectors``: optional ``(inputs, expected_outputs)`` integer sequences.
    ``vhdl=False`` skips the VHDL. ``frame``: the window framing (:class:`Frame`); with it
    the AXI4-Stream top, the IP packaging script and (with test vectors) the testbenches are
    written too. ``timing``: with a frame and at least 3 windows of vectors, measure the
    latency and initiation interval in Amaranth's simulator (and check the latency against
    the component's ``cycles()``). ``clock_mhz``: the clock target, for PORTS.md and the IP.
    """
    from hw.axis import AxisTop, axis_width
    from sim import tools

    from . import testbench, vhdl as vhdl_mod, vivado

    out_dir = Path(out_dir)
    ishape, oshape = stream_port_info(component)
    vin = vout = None
    if test_vectors is not None:
        vin, vout = test_vectors
        vin, vout = [int(x) for x in vin], [int(x) for x in vout]
        if frame is not None and (len(vin) % frame.n_in or len(vout) != len(vin) // frame.n_in * frame.n_out):
            raise ValueError(f"test vectors of {len(vin)} inputs and {len(vout)} outputs are not "
                             f"whole windows of {frame.n_in} inputs and {frame.n_out} outputs")
    n_windows = len(vin) // frame.n_in if frame is not None and vin is not None else None
    cycles = int(component.cycles()) if callable(getattr(component, "cycles", None)) else None

    measured = None
    if frame is not None and timing and n_windows is not None and n_windows >= 3:
        from sim.timing import stream_timing
        windows = [vin[k * frame.n_in:(k + 1) * frame.n_in] for k in range(n_windows)]
        measured = stream_timing(component, windows, frame.n_out)
        if cycles is not None and measured.latency != cycles:
            raise RuntimeError(f"simulated latency {measured.latency} cycles differs from the "
                               f"design's cycles() {cycles}: a bug in hw/ (please report it)")

    vtext = verilog_text(component, name)
    ports = parse_verilog_ports(vtext, name)
    missing = [p for p in STREAM_PORTS if p not in ports]
    if missing:
        raise ValueError(f"exported top {name} lacks stream ports {missing}")
    vports = {p: vhdl_mod.vhdl_port_name(p) for p in ports}
    axis = None
    if frame is not None:
        aname = f"{name}_axis"
        attrs = _axis_port_attrs(clock_mhz)
        atext = verilog_text(AxisTop(component, frame.n_in, frame.n_out), aname, attrs)
        aports = parse_verilog_ports(atext, aname)
        axis = {"name": aname, "verilog": atext, "ports": aports, "attrs": attrs,
                "vports": {p: vhdl_mod.vhdl_port_name(p) for p in aports}}
        missing = [p for p in AXIS_PORTS if p not in aports]
        if missing:
            raise ValueError(f"AXI4-Stream top {aname} lacks ports {missing}")

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp", dir=out_dir.parent))
    try:
        files = []
        (tmp / f"{name}.v").write_text(vtext)
        files.append(f"{name}.v")
        if vhdl:
            (tmp / f"{name}.vhd").write_text(vhdl_mod.verilog_to_vhdl(vtext, name))
            files.append(f"{name}.vhd")
        if axis:
            a = axis["name"]
            (tmp / f"{a}.v").write_text(axis["verilog"])
            files.append(f"{a}.v")
            if vhdl:
                (tmp / f"{a}.vhd").write_text(_vhdl_with_attrs(
                    vhdl_mod.verilog_to_vhdl(axis["verilog"], a), a, axis["attrs"]))
                files.append(f"{a}.vhd")
        if vin is not None:
            (tmp / "vectors_in.txt").write_text("".join(f"{x}\n" for x in vin))
            (tmp / "vectors_out.txt").write_text("".join(f"{x}\n" for x in vout))
            (tmp / "vectors.json").write_text(json.dumps({
                "n_in": len(vin), "n_out": len(vout), "windows": n_windows,
                "in_signed": ishape.signed, "in_width": ishape.width,
                "out_signed": oshape.signed, "out_width": oshape.width}, indent=2))
            files += ["vectors_in.txt", "vectors_out.txt", "vectors.json"]
        if axis and vhdl and n_windows:
            a = axis["name"]
            testbench.write_testbenches(
                tmp, a, n_in=frame.n_in, n_out=frame.n_out, windows=n_windows,
                in_shape=ishape, out_shape=oshape, tdata_in=axis_width(ishape),
                tdata_out=axis_width(oshape),
                latency=measured.latency if measured else (cycles or 0),
                interval=measured.interval if measured else 0)
            files += [f"tb/tb_{a}.v", f"tb/tb_{a}.vhd", "tb/run_xsim.sh"]
        if axis:
            vivado.write_ip_package(tmp, axis["name"], clock_mhz=clock_mhz)
            files.append("vivado/package_ip.tcl")
        files_md = ["PORTS.md", *files, "MANIFEST.json"]
        (tmp / "PORTS.md").write_text(_ports_md(
            name, ports, vports, ishape, oshape, frame=frame, axis=axis, timing=measured,
            cycles=cycles, clock_mhz=clock_mhz, n_windows=n_windows, files=files_md))
        files.insert(0, "PORTS.md")
        manifest = {
            "top": name, "files": files + ["MANIFEST.json"],
            "ports": {p.name: {"direction": p.direction, "width": p.width, "vhdl": vports[p.name]}
                      for p in ports.values()},
            "in_shape": {"signed": ishape.signed, "width": ishape.width},
            "out_shape": {"signed": oshape.signed, "width": oshape.width},
            "tools": {"yosys": tools.tool_version("yosys")},
        }
        if axis:
            manifest["axis_top"] = axis["name"]
            manifest["axis_ports"] = {p.name: {"direction": p.direction, "width": p.width,
                                               "vhdl": axis["vports"][p.name]}
                                      for p in axis["ports"].values()}
        if frame:
            manifest["frame"] = {"n_in": frame.n_in, "n_out": frame.n_out}
            manifest["timing"] = {"cycles": cycles, "clock_mhz": clock_mhz,
                                  **(measured.to_dict() if measured else {})}
        (tmp / "MANIFEST.json").write_text(json.dumps(manifest, indent=2))
        files.append("MANIFEST.json")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            if old.exists():
                shutil.rmtree(old)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    a = axis["name"] if axis else None
    return ExportResult(
        out_dir=out_dir, name=name, verilog=out_dir / f"{name}.v",
        vhdl=out_dir / f"{name}.vhd" if vhdl else None, ports_md=out_dir / "PORTS.md",
        ports=ports, vhdl_ports=vports, in_shape=ishape, out_shape=oshape,
        vectors_in=out_dir / "vectors_in.txt" if vin is not None else None,
        vectors_out=out_dir / "vectors_out.txt" if vin is not None else None,
        files=files, axis_name=a, axis_verilog=out_dir / f"{a}.v" if a else None,
        axis_vhdl=out_dir / f"{a}.vhd" if a and vhdl else None,
        axis_ports=axis["ports"] if axis else {}, timing=measured, cycles=cycles)
