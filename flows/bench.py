"""`intformer bench`: cycles per inference, resources and speed-up of the accelerator for a
list of model configurations (synthetic integer models of the given shape and width).

For each configuration and target the table gives

* cycles for one window (input of L*F samples to the prediction), from a compiled Verilator
  simulation of the exported Verilog (``sim.compiled.run_stream``), checked bit-exact against
  the integer model (``IntModel.forward``); falls back to Amaranth's simulator if Verilator is
  missing;
* microseconds at the target clock (hw config ``clock_mhz``: 100 MHz XC7S15, 16 MHz UP5K);
* XC7S15: Yosys ``synth_xilinx`` LUT (incl. LUTRAM/SRL), FF, BRAM36-equivalents, DSP48E1 and
  the logic-delay estimate (``flows.xilinx``); UP5K: nextpnr LC, EBR, DSP and Fmax
  (``flows.ice40``);
* the speed-up over the published design, for the default model only: 127,344 cycles at 8 bits
  and 123,630 at 4 bits, measured with the published design's own generator and testbench at
  100 MHz (the published paper's accelerator, its RTL simulated cycle count per inference).

``--quick`` skips synthesis (cycles only). ``--json PATH`` writes every number.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

#: Published design, cycles per inference of the default model (see module doc).
PUBLISHED_CYCLES = {8: 127_344, 4: 123_630}
DEFAULT_SHAPE = dict(features=7, window=24, d_model=16, heads=1, layers=1, ffn=64,
                     norm="batchnorm", activation="relu")

#: The benchmark list: (label, model shape, bits).
CONFIGS = [
    ("default-8b", DEFAULT_SHAPE, 8),
    ("default-6b", DEFAULT_SHAPE, 6),
    ("default-4b", DEFAULT_SHAPE, 4),
    ("d32-8b", dict(DEFAULT_SHAPE, d_model=32, ffn=128), 8),
    ("2layers-4b", dict(DEFAULT_SHAPE, layers=2), 4),
    # --task classify: the ItalyPowerDemand classifier's shape (README, "Tasks"): 2 logits and
    # the class out
    ("classify-8b", dict(DEFAULT_SHAPE, features=1, d_model=8, ffn=32, task="classify",
                         classes=2), 8),
    # --task anomaly: the InternalBleeding16 detector's shape (value and its difference in,
    # the score and the flag out)
    ("anomaly-8b", dict(DEFAULT_SHAPE, features=2, d_model=8, ffn=32, task="anomaly"), 8),
]
TARGETS = ("xc7s15", "ice40up5k")


def _model(shape, bits, seed=0):
    from model.synthetic import random_intmodel
    return random_intmodel(shape, bits=bits, seed=seed)


def _inputs(model, windows, seed=1):
    from model.synthetic import random_inputs
    x = np.asarray(random_inputs(model, windows, seed=seed))
    return x, model.forward(x)["pred"].numpy().reshape(windows, -1)


def simulate(model, hw: dict, *, windows: int = 1, compiled: bool = True):
    """(cycles of the first window, bit-exact?, simulator name) for ``model`` under ``hw``."""
    from amaranth.back import verilog as vlog
    from hw.accelerator import Accelerator
    x, want = _inputs(model, windows)
    flat = x.reshape(-1)
    n_out = want.size
    if compiled:
        try:
            from sim.compiled import run_stream
            from sim.limits import CycleLimit
            qi, qo = model.qtype("input"), model.qtype("pred")
            acc = Accelerator(model, hw)
            one = CycleLimit.of(acc, 1)
            v = vlog.convert(acc, name="intformer_top")
            first = run_stream(v, flat[: flat.size // windows], want.shape[1], in_signed=qi.signed,
                               out_signed=qo.signed, limit=one)
            ok = list(first.outputs) == [int(t) for t in want[0]]
            if windows > 1:
                allr = run_stream(v, flat, n_out, in_signed=qi.signed, out_signed=qo.signed,
                                  limit=CycleLimit(one.design, one.cycles, windows))
                ok = ok and list(allr.outputs) == [int(t) for t in want.reshape(-1)]
            return first.cycles, ok, "verilator"
        except Exception as e:           # no Verilator / compiler: Amaranth's simulator
            print(f"bench: compiled simulation unavailable ({e}); using Amaranth", file=sys.stderr)
    from sim.profile import profile
    pred, cycles, _ = profile(Accelerator(model, hw), flat[: flat.size // windows])
    return cycles, pred == int(want[0][0]), "amaranth"


def synth(model, hw: dict, target: str, out_dir: Path) -> dict:
    from amaranth.back import verilog as vlog
    from hw.accelerator import Accelerator
    v = vlog.convert(Accelerator(model, hw), name="intformer_top")
    if target == "xc7s15":
        from .xilinx import synth_xc7s15
        r = synth_xc7s15(v, out_dir)
        return {"lut": r.luts, "lutram": r.lutram_luts, "ff": r.ff, "bram36": r.bram36,
                "dsp": r.dsp, "delay_ns": round(r.delay_est_ns, 2), "fits": r.fits,
                "seconds": round(sum(r.times.values()), 1)}
    from . import ice40
    from .ice40 import UP5K, synth_up5k
    try:
        r = synth_up5k(v, out_dir, freq_mhz=hw.get("clock_mhz", 16.0), pack=False)
    except getattr(ice40, "DoesNotFit", ()) as e:
        cells = getattr(e, "cells", {}) or {}
        ff = sum(n for k, n in cells.items() if k.startswith("SB_DFF"))
        return {"fits": False, "error": str(e).splitlines()[0][:300],
                "lut4": cells.get("SB_LUT4"), "ff": ff, "ebr": cells.get("SB_RAM40_4K"),
                "dsp": cells.get("SB_MAC16")}
    used = {k: r.used(k) for k in ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP")}
    return {"lc": used["ICESTORM_LC"], "ebr": used["ICESTORM_RAM"], "dsp": used["ICESTORM_DSP"],
            "fmax_mhz": round(r.fmax, 1), "fits": all(used[k] <= UP5K[k] for k in used),
            "seconds": round(sum(r.times.values()), 1)}


def bench(configs=None, targets=TARGETS, *, quick: bool = False, out_dir=None, windows: int = 1,
          compiled: bool = True, progress=print) -> list[dict]:
    """One row per (configuration, target): see the module doc."""
    from hw.presets import preset
    configs = CONFIGS if configs is None else configs
    out_dir = Path(out_dir or Path.home() / ".cache" / "intformer" / "bench")
    rows = []
    for label, shape, bits in configs:
        model = _model(shape, bits)
        for target in targets:
            hw = preset(target, bits)
            t0 = time.perf_counter()
            row = {"config": label, "shape": shape, "bits": bits, "target": target, "hw": hw}
            try:
                cycles, ok, simname = simulate(model, hw, windows=windows, compiled=compiled)
            except Exception as e:              # e.g. a preset knob that does not divide a dim
                row["error"] = f"{type(e).__name__}: {e}"
                rows.append(row)
                progress(f"{label} {target}: {row['error']}")
                continue
            clock = float(hw.get("clock_mhz", 100.0))
            row.update(cycles=cycles, bit_exact=ok, simulator=simname, clock_mhz=clock,
                       us=round(cycles / clock, 2))
            pub = PUBLISHED_CYCLES.get(bits) if shape == DEFAULT_SHAPE else None
            if pub:
                row["published_cycles"] = pub
                row["speedup_cycles"] = round(pub / cycles, 1)
                # The published design runs at 100 MHz.
                row["speedup_time"] = round((pub / 100.0) / (cycles / clock), 1)
            if not quick:
                try:
                    row["resources"] = synth(model, hw, target, out_dir / f"{label}_{target}")
                except Exception as e:
                    row["resources"] = {"error": f"{type(e).__name__}: {e}"}
            row["seconds"] = round(time.perf_counter() - t0, 1)
            rows.append(row)
            progress(format_row(row))
    return rows


def format_row(r: dict) -> str:
    if "error" in r:
        return f"{r['config']:<12} {r['target']:<10} ERROR {r['error']}"
    s = (f"{r['config']:<12} {r['target']:<10} {r['cycles']:>7} cyc "
         f"{r['us']:>8.2f} us @{r['clock_mhz']:g}MHz exact={'yes' if r['bit_exact'] else 'NO'}")
    if "speedup_cycles" in r:
        s += f"  x{r['speedup_cycles']:g} cycles (x{r['speedup_time']:g} time)"
    res = r.get("resources")
    if res and "error" in res:
        if res.get("lut4") is not None:
            s += (f"  after synthesis: LUT4 {res['lut4']} FF {res['ff']} EBR {res['ebr']} "
                  f"DSP {res['dsp']}")
        s += f"  {res['error']}"
    elif res and r["target"] == "xc7s15":
        s += (f"  LUT {res['lut']} FF {res['ff']} BRAM36 {res['bram36']:g} DSP {res['dsp']} "
              f"delay {res['delay_ns']}ns {'fits' if res['fits'] else 'DOES NOT FIT'}")
    elif res:
        s += (f"  LC {res['lc']} EBR {res['ebr']} DSP {res['dsp']} Fmax {res['fmax_mhz']}MHz "
              f"{'fits' if res['fits'] else 'DOES NOT FIT'}")
    return s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="intformer bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="cycles only (no synthesis)")
    ap.add_argument("--json", metavar="PATH", help="write the rows as JSON")
    ap.add_argument("--target", choices=TARGETS, action="append",
                    help="only this target (repeatable; default both)")
    ap.add_argument("--config", action="append", metavar="LABEL",
                    help=f"only these configurations ({', '.join(c[0] for c in CONFIGS)})")
    ap.add_argument("--windows", type=int, default=1, help="windows to check bit-exactness on")
    ap.add_argument("--amaranth", action="store_true", help="use Amaranth's simulator")
    ap.add_argument("--out", metavar="DIR", help="synthesis work directory")
    a = ap.parse_args(argv)
    configs = CONFIGS
    if a.config:
        unknown = set(a.config) - {c[0] for c in CONFIGS}
        if unknown:
            ap.error(f"unknown configuration(s) {sorted(unknown)}")
        configs = [c for c in CONFIGS if c[0] in a.config]
    rows = bench(configs, tuple(a.target or TARGETS), quick=a.quick, out_dir=a.out,
                 windows=a.windows, compiled=not a.amaranth)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2, default=str))
    bad = [r for r in rows if "error" in r or not r.get("bit_exact", False)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
