"""`intformer demo`: the main job, from the default dataset to a verified, synthesised design
for every target device (`intformer deploy` on both targets; see :mod:`flows.deploy`).

``OUT/deploy.json`` and ``OUT/report.html`` (one column per device) are written last, so an
interrupted demo never leaves them behind; ``OUT/<target>/`` is each device's run directory.
"""
from __future__ import annotations

import time
from pathlib import Path

from .run import TrainOptions, write_json_atomic


def demo(out: Path, opts: TrainOptions, progress=print, targets=None) -> int:
    from .deploy import TARGETS, deploy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "timings.json").unlink(missing_ok=True)
    t0 = time.perf_counter()
    doc = deploy(out, opts, targets or TARGETS, progress=progress)
    write_json_atomic(out / "timings.json", {"seconds": {"total": round(time.perf_counter() - t0, 1)}})
    print(summary(doc))
    print(f"report: {out / 'report.html'}")
    return 0 if all("error" not in r and r["mismatches"] == 0 and r.get("fits") is not False
                    for r in doc["targets"].values()) else 1


def summary(doc: dict) -> str:
    """A few lines per device: the design, its accuracy, bit-exactness, latency and fit."""
    lines = [f"float model: test RMSE {doc['float_rmse']:.3f} (persistence {doc['persistence_rmse']:.3f})"]
    for target, r in doc["targets"].items():
        if "error" in r:
            lines.append(f"{target}: NO DESIGN: {r['error']}")
            continue
        syn = r.get("synthesis") or {}
        res = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in syn.items())
        fit = {True: "fits", False: "DOES NOT FIT", None: "not built"}[r.get("fits")]
        lines.append(f"{target}: {r['bits']}-bit integer model, test RMSE {r['int_rmse']:.3f} "
                     f"({r['int_rmse'] / doc['float_rmse']:.3f}x float); bit-exact: "
                     f"{r['verified_windows']} windows, {r['mismatches']} mismatches "
                     f"({', '.join(r['executors'])}); {r['cycles']} cycles = {r['us']:.1f} us at "
                     f"{r['clock_mhz']:g} MHz; {res} -> {fit}")
    return "\n".join(lines)
