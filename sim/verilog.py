"""The ports of a generated Verilog module, read off its text.

Why here, in ``sim``: the compiled simulator (:mod:`sim.compiled`) wraps the Verilog that
Amaranth/Yosys wrote in a harness built from its ports, and it is the lowest layer that reads
Verilog text (``model`` <- ``hw`` <- ``sim`` <- ``flows``, tests/test_layering.py). The flows
(export, the iCE40 flow) read ports with the same parser.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["VerilogPort", "parse_verilog_ports"]


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
