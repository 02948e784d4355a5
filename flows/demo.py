"""`intformer demo`: the main job, from the default dataset to verified, synthesised hardware.

Stages (each also a command of its own): train -> verify -> build xc7s15 -> build ice40up5k ->
report. Their durations go to ``timings.json``; ``report.json`` is written last, so an
interrupted demo never leaves one behind.
"""
from __future__ import annotations

import time
from pathlib import Path

from .run import TrainOptions, write_json_atomic


def demo(out: Path, opts: TrainOptions, progress=print) -> int:
    from . import report
    from .build import build, verify
    from .run import train_stage

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("report.json", "report.html", "timings.json", "verify.json"):
        (out / stale).unlink(missing_ok=True)
    timings = {}

    def stage(name, fn):
        progress(f"== {name}")
        t0 = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - t0, 1)
        progress(f"== {name} done in {timings[name]:.0f} s")
        return result

    metrics = stage("train", lambda: train_stage(out, opts, callback=progress.training_event
                                                 if hasattr(progress, "training_event") else None))
    ver = stage("verify", lambda: verify(out, progress=progress))
    xc = stage("build xc7s15", lambda: build(out, "xc7s15", progress=progress))
    ice = stage("build ice40up5k", lambda: build(out, "ice40up5k", progress=progress))
    timings["total"] = round(sum(timings.values()), 1)
    write_json_atomic(out / "timings.json", {"seconds": timings})
    json_path, html_path = stage("report", lambda: report.write(out))

    acc = {k: metrics[k]["test"]["rmse"] for k in ("float", "qat", "int", "persistence")}
    print(f"accuracy (test RMSE): float {acc['float']:.3f}, QAT {acc['qat']:.3f}, "
          f"integer {acc['int']:.3f}, persistence {acc['persistence']:.3f}")
    print(f"bit-exact: {ver['windows']} windows, {ver['mismatches']} mismatches "
          f"({', '.join(ver['executors'])})")
    print(f"latency: {ver['latency']['cycles']} cycles = {ver['latency']['us']:.2f} us "
          f"at {ver['latency']['clock_mhz']:g} MHz")
    print(f"xc7s15: {xc['summary']} -> {'fits' if xc['fits'] else 'DOES NOT FIT'}")
    print(f"ice40up5k: {ice['summary']} -> {'fits' if ice['fits'] else 'DOES NOT FIT'}")
    print(f"report: {html_path}")
    return 0 if ver["mismatches"] == 0 else 1
