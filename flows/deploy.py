"""`intformer deploy` (and the main job, `intformer demo`): one float model, then for each
target device the most accurate design that fits it, fine-tuned, verified and built.

Layout of ``OUT/``:

* ``float.pt``, ``config.json`` — the float model every target's design starts from;
* ``<target>/`` — a complete run directory per device (``intformer train`` / ``verify`` /
  ``build`` / ``report`` work on it as on any run): the QAT model at the chosen width, its
  integer model, ``verify.json``, ``build/<target>/`` and its own report;
* ``deploy.json`` — per target: the widths tried with their estimates, the chosen width,
  accuracy, cycles, time at the device's clock, resources and fit; written last.

How a design is chosen: the target's measured presets (:data:`hw.presets.PRESETS`) are the
candidate designs, widest first (a wider model is the more accurate one: ``intformer
accuracy``), each also with fewer DSPs (:data:`VARIANTS`). For each width, the float model is
quantised to it without fine-tuning and the resource estimator says whether a design fits (within :data:`SYNTHESIS_DECIDES` over, synthesis
is asked); the first that does is fine-tuned with QAT
from the shared float model, verified bit for bit and built. Synthesis (Yosys, and nextpnr for
the UP5K) has the last word: a design it finds over the device is recorded and the next
width is tried.
"""
from __future__ import annotations

import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

from .run import RunError, TrainOptions, load_data, train_config, train_stage, write_json_atomic

TARGETS = ("xc7s15", "ice40up5k")
#: A design the estimate puts over the device by at most this fraction goes to synthesis
#: anyway: the estimate's logic counts are a fit, synthesis is the answer.
SYNTHESIS_DECIDES = 0.10


class DoesNotFitAnyWay(RunError):
    """No candidate design of a target fits it."""


def candidate_widths(target: str) -> list[int]:
    """The widths with a measured preset on ``target``, widest first."""
    from hw.presets import PRESETS
    if target not in PRESETS:
        raise RunError(f"unknown target {target!r}: choose one of {', '.join(TARGETS)}")
    return sorted(PRESETS[target], reverse=True)


#: Variants of a target's preset, tried in this order at each width: the preset, then the
#: multipliers of layers that can spare a DSP moved to LUTs (a model whose types need wider
#: products, e.g. a univariate one, can be a few DSPs over with the preset).
VARIANTS = (
    ("preset", {}),
    ("preset, attn_out multipliers in LUTs", {"*.attn_out": {"mul": "lut"}}),
    ("preset, attn_out and proj multipliers in LUTs", {"*.attn_out": {"mul": "lut"},
                                                       "proj": {"mul": "lut"}}),
)


def designs(target: str, bits: int) -> list[tuple[str, dict]]:
    """The hardware configurations tried for ``target`` at ``bits``, in order."""
    from hw.presets import preset
    out = []
    for label, blocks in VARIANTS:
        hw = preset(target, bits)
        for pattern, knobs in blocks.items():
            hw.setdefault("blocks", {}).setdefault(pattern, {}).update(knobs)
        out.append((label, hw))
    return out


def estimate_width(opts: TrainOptions, data, float_model, target: str, bits: int) -> dict:
    """The design of ``target`` at ``bits`` for the float model quantised to that width
    (calibrated, not fine-tuned: fine-tuning moves scales, not shapes or widths): the first of
    :func:`designs` whose estimate fits, else the one nearest to fitting; with its estimate."""
    from model import train as T
    from model.convert import to_intmodel_for

    from .estimate import estimate
    cfg = train_config(replace(opts, bits=bits), data)
    cfg.qat_epochs = 0
    model = to_intmodel_for(T.train_qat(cfg, data, float_model), data)
    best = None
    for label, hw in designs(target, bits):
        est = estimate(model, hw, target)
        doc = {"bits": bits, "design": label, "hw_config": hw, "fits": est.fits,
               "over": est.over(), "summary": est.summary(), "used": dict(est.used),
               "worst_ratio": max(est.utilisation().values())}
        if est.fits:
            return doc
        if best is None or doc["worst_ratio"] < best["worst_ratio"]:
            best = doc
    return best


def deploy(out: Path, opts: TrainOptions, targets=TARGETS, *, build_designs: bool = True,
           progress=print, parallel: bool | None = None) -> dict:
    """Train the float model once, then deploy it to every target (see the module's doc).
    ``parallel``: one process per target (default: when there are several targets and
    cores; ``progress`` must then be picklable). Returns the ``deploy.json`` document."""
    from model import train as T

    from .build import build, verify

    targets = list(targets)
    for t in targets:
        candidate_widths(t)                      # unknown targets fail before any training
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("deploy.json", "report.html"):
        (out / stale).unlink(missing_ok=True)
    data = load_data(opts)
    progress(data.summary())
    t0 = time.perf_counter()
    base = train_config(opts, data)
    progress("float training")
    float_model = T.train_float(base, data, emit=getattr(progress, "training_event", None))
    float_rmse = T.evaluate(float_model, data, "test")["rmse"]
    progress(f"float model: test RMSE {float_rmse:.3f} ({time.perf_counter() - t0:.0f} s)")
    import torch
    torch.save(float_model.state_dict(), out / "float.pt")

    doc = {"dataset": data.source, "target_column": data.target_name,
           "float_rmse": float_rmse,
           "persistence_rmse": T.persistence_metrics(data, "test")["rmse"], "targets": {}}
    workers = min(len(targets), os.cpu_count() or 1) if parallel is None else (2 if parallel else 1)
    if workers > 1 and len(targets) > 1:
        # Each device's design is independent once the float model exists: one process per
        # device (QAT, simulations and synthesis are single-threaded; two cores halve the time).
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {t: pool.submit(_deploy_target_in_process, out, opts, t, build_designs, progress)
                       for t in targets}
        outcomes = {t: f.exception() or f.result() for t, f in futures.items()}
    else:
        outcomes = {}
        for target in targets:
            try:
                outcomes[target] = _deploy_target(out, opts, data, float_model, target,
                                                  build_designs, progress, build, verify)
            except RunError as e:
                outcomes[target] = e
    failed = {t: e for t, e in outcomes.items() if isinstance(e, BaseException)}
    if len(failed) == len(outcomes):        # nothing to show: the (first) reason is the answer
        raise next(iter(failed.values()))
    # A device that fits no way (or whose flow failed) does not hide the others' designs: its
    # column says why, and the command exits non-zero.
    doc["targets"] = {t: ({"error": str(e)} if t in failed else e) for t, e in outcomes.items()}
    from .report import _write_atomic
    _write_atomic(out / "report.html", render_html(doc))
    write_json_atomic(out / "deploy.json", doc)
    return doc


def _deploy_target_in_process(out, opts, target, build_designs, progress):
    """:func:`_deploy_target` in a worker process: the data and the float model (from
    ``OUT/float.pt``) are loaded again there."""
    import torch

    from model.transformer import Forecaster

    from .build import build, verify
    try:
        data = load_data(opts)
        cfg = train_config(opts, data)
        float_model = Forecaster(cfg.model, cfg.quant)
        float_model.load_state_dict(torch.load(Path(out) / "float.pt", weights_only=True))
        float_model.eval()
        return _deploy_target(out, opts, data, float_model, target, build_designs, progress, build,
                              verify)
    except RunError:
        raise
    except Exception as e:
        # What crosses back to the parent must pickle (a tool's error class need not): its
        # message and where it came from, as the error of this target.
        import traceback
        raise RunError(f"{target}: {type(e).__name__}: {e}\n"
                       + "".join(traceback.format_tb(e.__traceback__)[-3:])) from None


def _deploy_target(out, opts, data, float_model, target, build_designs, progress, build, verify):
    tried = []
    for bits in candidate_widths(target):
        est = estimate_width(opts, data, float_model, target, bits)
        tried.append(est)
        progress(f"{target}: {bits} bits, {est['design']}: {est['summary']}")
        borderline = not est["fits"] and est["worst_ratio"] <= 1 + SYNTHESIS_DECIDES
        if not (est["fits"] or (borderline and build_designs)):
            continue
        if borderline:
            progress(f"{target}: {bits} bits is within {SYNTHESIS_DECIDES:.0%} of the device by "
                     f"the estimate: synthesis decides")
        run = out / target
        if run.exists():
            shutil.rmtree(run)                  # a previous width's files are not this design's
        progress(f"{target}: QAT at {bits} bits from the shared float model")
        metrics = train_stage(run, replace(opts, bits=bits), data=data, float_model=float_model)
        write_json_atomic(run / "targets.json", {"targets": [target]})
        write_json_atomic(run / "hw_config.json", {target: est["hw_config"]})
        ver = verify(run, target=target, progress=progress)
        result = {"bits": bits, "design": est["design"], "run": str(run), "tried": tried,
                  "int_rmse": metrics["int"]["test"]["rmse"],
                  "qat_rmse": metrics["qat"]["test"]["rmse"],
                  "mismatches": ver["mismatches"], "verified_windows": ver["windows"],
                  "executors": sorted(ver["executors"]),
                  "cycles": ver["latency"]["cycles"], "clock_mhz": ver["latency"]["clock_mhz"],
                  "us": ver["latency"]["us"], "estimate": est["used"]}
        if not build_designs:
            return {**result, "fits": None, "built": False}
        res = build(run, target, progress=progress)
        # The estimate beside synthesis is the built (fine-tuned) design's, as in synth.json.
        result.update(built=True, fits=bool(res["fits"]), synthesis=_resources(target, res),
                      estimate=dict(res["estimate"]["used"]))
        if res["fits"]:
            from . import report
            report.write(run)
            return result
        tried[-1] = {**est, "synthesis_fits": False, "synthesis": res.get("summary")}
        progress(f"{target}: synthesis finds {bits} bits ({est['design']}) over the device "
                 f"({res.get('summary')}); trying the next width")
    widths = ", ".join(f"{t['bits']} bits ({'; '.join(t['over']) or t.get('synthesis')})"
                       for t in tried)
    raise DoesNotFitAnyWay(
        f"no design of this model fits the {target}: {widths}. Make the model smaller "
        f"(--d-model, --ffn, --layers, --window) or choose the other target")


def _resources(target: str, res: dict) -> dict:
    keys = ("lut", "ff", "bram36", "dsp") if target == "xc7s15" else ("lc", "bram", "dsp", "fmax_mhz")
    return {k: res.get(k) for k in keys}


# ---------------------------------------------------------------------------------------------
# the page: one column per device
# ---------------------------------------------------------------------------------------------

DEVICE_NAMES = {"xc7s15": "Spartan-7 XC7S15", "ice40up5k": "iCE40 UP5K"}
_RESOURCE_NAMES = {"lut": "LUT", "ff": "FF", "bram36": "BRAM36", "dsp": "DSP", "lc": "LC",
                   "bram": "EBR", "fmax_mhz": "Fmax (MHz)"}


def render_html(doc: dict) -> str:
    """A page with one column per target: width, accuracy, bit-exactness, latency, resources."""
    from .report import _CSS, _e, _num
    targets = doc["targets"]
    cols = list(targets)

    def row(label, cell):
        def one(r):
            if "error" in r:        # one cell says why; the other rows of the column stay empty
                return f'<b style="color:#e03131">{_e(r["error"])}</b>' if label == "design" else ""
            return cell(r)
        return f"<tr><th>{_e(label)}</th>" + "".join(f"<td>{one(targets[t])}</td>" for t in cols) + "</tr>"

    def resources(r):
        syn = r.get("synthesis") or {}
        est = {k.lower(): v for k, v in r.get("estimate", {}).items()}   # the estimator's names
        return "<br>".join(f"{_RESOURCE_NAMES.get(k, k)} {_num(v)}"
                           + (f" (estimate {_num(est[k])})" if k in est else "")
                           for k, v in syn.items())

    def fits(r):
        ok = r.get("fits")
        colour = "#2f9e44" if ok else "#e03131"
        return f'<b style="color:{colour}">{"fits" if ok else "does not fit"}</b>'

    rows = [
        row("design", lambda r: f"{r['bits']}-bit integer model, {_e(r.get('design', 'preset'))}"),
        row("test RMSE (integer)", lambda r: f"{_num(r['int_rmse'])} ({_num(r['int_rmse'] / doc['float_rmse'])}× float)"),
        row("bit-exact", lambda r: f"{r['mismatches']} mismatches on {r['verified_windows']:,} windows "
                                   f"({_e(', '.join(r['executors']))})"),
        row("latency", lambda r: f"{r['cycles']:,} cycles = {_num(r['us'], 1)} µs at {_num(r['clock_mhz'])} MHz"),
        row("resources (synthesis)", resources),
        row("fit", fits),
        row("designs tried", lambda r: "<br>".join(
            _e(f"{t['bits']} bits, {t.get('design', 'preset')}: {t['summary']}") for t in r["tried"])),
        row("details", lambda r: f'<a href="{_e(Path(r["run"]).name)}/report.html">report</a>'),
    ]
    head = "<tr><th></th>" + "".join(f"<th>{_e(DEVICE_NAMES.get(t, t))}</th>" for t in cols) + "</tr>"
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>intformer deployment</title>"
            f"<style>{_CSS}</style></head><body><main><h1>intformer deployment</h1>"
            f"<p class=\"sub\">{_e(doc['dataset'])}: forecast <b>{_e(doc['target_column'])}</b>; "
            f"float model test RMSE {_num(doc['float_rmse'])}, persistence "
            f"{_num(doc['persistence_rmse'])}. One float model; per device the widest design "
            f"that fits, fine-tuned from it.</p>"
            f"<table>{head}{''.join(rows)}</table></main></body></html>\n")
