"""`intformer accuracy`: how much the integer models lose against the float model (a benchmark).

For each seed the float model is trained once; from it the QAT model of every width is
fine-tuned, converted to the integer model and scored on the test split:

* ``"8"``, ``"6"``: every tensor at that width;
* ``"4io8"``: every weight and hidden activation at 4 bits, the input and the prediction at 8;
* ``"4"``: every tensor at 4 bits.

Baselines on the same test windows: persistence (the next value is the last one) and a linear
model (ridge regression on the flattened window, its strength chosen on the validation split).
The table and ``--json`` give, per width, the mean / min / max test RMSE over the seeds, the
ratio of the mean to the float model's mean, and how often the integer model equals the
fake-quantised one (exactly, within one output code).

``--task classify`` / ``--task anomaly`` (:func:`run_task_accuracy`): the same per seed and
width, scored by the test accuracy (macro-F1 beside it) or the test F1 of the detector (its
threshold chosen on validation); ``"4"`` is every tensor at 4 bits, input and logits / score
included (``--bits 4`` of a task keeps those at 8, as ``"4io8"``); baselines the nearest
centroid or the largest first difference.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .run import TrainOptions, integer_metrics, load_data, train_config, write_json_atomic

#: Width name -> (default bits, per-tensor overrides).
WIDTHS = {
    "8": (8, {}),
    "6": (6, {}),
    "4io8": (4, {"input": 8, "pred": 8}),
    "4": (4, {}),
}


def ridge_rmse(data, lambdas=(1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)) -> dict:
    """Test RMSE (target units) of ridge regression on the flattened normalised window, the
    strength chosen by validation RMSE (the intercept is not penalised)."""
    def design(split):
        X = split.X.reshape(len(split), -1).astype(np.float64)
        return np.hstack([X, np.ones((len(X), 1))])

    Xt, Xv, Xs = design(data.train), design(data.val), design(data.test)
    yt = data.train.y.astype(np.float64)
    gram, rhs = Xt.T @ Xt, Xt.T @ yt
    best = None
    for lam in lambdas:
        pen = lam * np.eye(len(gram))
        pen[-1, -1] = 0.0
        w = np.linalg.solve(gram + pen, rhs)
        val = _rmse(data.denormalise_target(Xv @ w), data.denormalise_target(data.val.y))
        if best is None or val < best[0]:
            best = (val, lam, w)
    val, lam, w = best
    return {"rmse": _rmse(data.denormalise_target(Xs @ w), data.denormalise_target(data.test.y)),
            "val_rmse": val, "lambda": lam}


def _rmse(pred, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - np.asarray(truth, np.float64)) ** 2)))


def _widths_for(task: str, head: str, name: str) -> tuple[int, dict]:
    """(default bits, per-tensor overrides) of width ``name``: "pred" is the task's output
    tensor, and a task's "4" names its input and output too (their task default is 8 bits)."""
    bits, overrides = WIDTHS[name]
    if task == "forecast":
        return bits, overrides
    overrides = {("input" if k == "input" else head): b for k, b in overrides.items()}
    return bits, {"input": bits, head: bits, **overrides}


def _task_scores(task: str, data, T, model) -> dict:
    """A classifier's accuracy / macro-F1, a detector's precision / recall / F1, on test."""
    m = T.evaluate(model, data, "test")
    keys = ("accuracy", "macro_f1") if task == "classify" else ("precision", "recall", "f1")
    return {k: m[k] for k in keys}


def run_task_accuracy(opts: TrainOptions, seeds: int = 3, widths=("8", "4io8", "4"),
                      progress=print) -> dict:
    """:func:`run_accuracy` for ``--task classify`` or ``anomaly``: per seed the float model,
    the integer model of every width and the baseline on the test split."""
    from model import train as T
    from model.convert import to_intmodel_for
    from .run import anomaly_metrics, classify_metrics

    data = load_data(opts)
    task = data.task
    progress(data.summary())
    metric = "accuracy" if task == "classify" else "f1"
    if task == "classify":
        base_test = T.baseline_class_metrics(data, "test")["nearest_centroid"]
        baseline = {"name": "nearest centroid", "accuracy": base_test["accuracy"],
                    "macro_f1": base_test["macro_f1"]}
    else:
        b = T.baseline_anomaly_metrics(data, "test")["max_abs_diff"]
        baseline = {"name": "largest |first difference| over the last rows",
                    **{k: b[k] for k in ("precision", "recall", "f1", "threshold")}}
    per_seed = []
    for k in range(seeds):
        seed = opts.seed + k
        t0 = time.perf_counter()
        base = train_config(replace(opts, seed=seed), data)
        head = base.model.head
        fmodel = T.train_float(base, data)
        row = {"seed": seed, "float": _task_scores(task, data, T, fmodel), "widths": {}}
        progress(f"seed {seed}: float test {metric} {row['float'][metric]:.3f} "
                 f"({time.perf_counter() - t0:.0f} s)")
        for name in widths:
            bits, overrides = _widths_for(task, head, name)
            cfg = train_config(replace(opts, seed=seed, bits=bits,
                                       bits_map={**overrides, **(opts.bits_map or {})}), data)
            t1 = time.perf_counter()
            qmodel = T.train_qat(cfg, data, fmodel)
            im = to_intmodel_for(qmodel, data)
            m = (classify_metrics if task == "classify" else anomaly_metrics)(im, qmodel, data)
            r = {k: m["int"]["test"][k] for k in _task_scores(task, data, T, fmodel)}
            r["qat"] = _task_scores(task, data, T, qmodel)[metric]
            r["val_" + metric] = T.evaluate(qmodel, data, "val")[metric]
            if task == "anomaly":
                r["threshold_code"] = m["int"]["test"]["threshold"]
                r["flagged"] = m["int"]["test"]["flagged"]
            r.update({k2: m["int_vs_qat"][k2] for k2 in ("exact", "within_1_lsb", "max_lsb")})
            row["widths"][name] = r
            progress(f"seed {seed}: {name:>4s} integer test {metric} {r[metric]:.3f} "
                     f"({time.perf_counter() - t1:.0f} s)")
        per_seed.append(row)

    def stats(vals):
        return {"mean": float(np.mean(vals)), "min": float(min(vals)), "max": float(max(vals)),
                "std": float(np.std(vals))}

    doc = {"task": task, "metric": metric, "dataset": data.source,
           "windows": {s: len(data.split(s)) for s in ("train", "val", "test")},
           "seeds": [r["seed"] for r in per_seed],
           "options": {k: getattr(opts, k) for k in ("d_model", "ranges", "scheme", "bits_map", "qat_lr",
                                                     "qat_epochs", "distill", "qat_bn")},
           "bits": {name: dict(zip(("default", "overrides"), _widths_for(task, head, name)))
                    for name in widths},
           "float": stats([r["float"][metric] for r in per_seed]),
           "baseline": baseline,
           "widths": {}, "per_seed": per_seed}
    if task == "anomaly":
        doc["prevalence"] = T.prevalence(data)
    for name in widths:
        vals = [r["widths"][name] for r in per_seed]
        doc["widths"][name] = {**stats([v[metric] for v in vals]),
                               "qat_mean": float(np.mean([v["qat"] for v in vals])),
                               "exact": float(np.mean([v["exact"] for v in vals])),
                               "max_lsb": int(max(v["max_lsb"] for v in vals))}
    return doc


def format_task_table(doc: dict) -> str:
    """The task benchmark's table (Markdown)."""
    mt = doc["metric"]
    lines = [f"{doc['dataset']}: --task {doc['task']}, test windows {doc['windows']['test']}, "
             f"{len(doc['seeds'])} seed(s); test {mt}",
             "", f"| model | {mt} mean | min | max | std | integer = QAT |", "|---|---|---|---|---|---|"]
    f = doc["float"]
    lines.append(f"| float | {f['mean']:.3f} | {f['min']:.3f} | {f['max']:.3f} | {f['std']:.3f} | |")
    for name, w in doc["widths"].items():
        lines.append(f"| integer {name} | {w['mean']:.3f} | {w['min']:.3f} | {w['max']:.3f} "
                     f"| {w['std']:.3f} | {100 * w['exact']:.1f} % |")
    name = doc["baseline"]["name"].replace("|", "\\|")       # a Markdown cell
    lines.append(f"| {name} | {doc['baseline'][mt]:.3f} | | | | |")
    return "\n".join(lines)


def run_accuracy(opts: TrainOptions, seeds: int = 3, widths=tuple(WIDTHS), progress=print) -> dict:
    """Train and score every width for ``seeds`` seeds; the JSON document of the benchmark."""
    from model import train as T
    from model.convert import to_intmodel_for

    unknown = [w for w in widths if w not in WIDTHS]
    if unknown:
        raise ValueError(f"unknown widths {unknown}; use some of {list(WIDTHS)}")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    data = load_data(opts)
    progress(data.summary())
    per_seed = []
    for k in range(seeds):
        seed = opts.seed + k
        t0 = time.perf_counter()
        base = train_config(replace(opts, seed=seed), data)
        fmodel = T.train_float(base, data)
        row = {"seed": seed, "float": T.evaluate(fmodel, data, "test")["rmse"], "widths": {}}
        progress(f"seed {seed}: float test RMSE {row['float']:.3f} ({time.perf_counter() - t0:.0f} s)")
        for name in widths:
            bits, overrides = WIDTHS[name]
            cfg = train_config(replace(opts, seed=seed, bits=bits, bits_map={**overrides, **(opts.bits_map or {})}), data)
            t1 = time.perf_counter()
            qmodel = T.train_qat(cfg, data, fmodel)
            m = integer_metrics(to_intmodel_for(qmodel, data), qmodel, data)
            row["widths"][name] = {"rmse": m["int"]["test"]["rmse"],
                                   "qat_rmse": T.evaluate(qmodel, data, "test")["rmse"],
                                   **{k2: m["int_vs_qat"][k2] for k2 in ("exact", "within_1_lsb", "max_lsb")}}
            progress(f"seed {seed}: {name:>4s} integer test RMSE {row['widths'][name]['rmse']:.3f} "
                     f"({time.perf_counter() - t1:.0f} s)")
        per_seed.append(row)

    float_rmse = float(np.mean([r["float"] for r in per_seed]))
    doc = {
        "dataset": data.source, "target": data.target_name, "features": list(data.feature_names),
        "windows": {s: len(data.split(s)) for s in ("train", "val", "test")},
        "forecast": base.model.forecast, "seeds": [r["seed"] for r in per_seed],
        "options": {k: getattr(opts, k) for k in ("ranges", "scheme", "bits_map", "qat_lr", "qat_epochs",
                                                  "distill", "qat_bn")},
        "float_rmse": float_rmse,
        "float_rmse_min": float(min(r["float"] for r in per_seed)),
        "float_rmse_max": float(max(r["float"] for r in per_seed)),
        "persistence_rmse": T.persistence_metrics(data, "test")["rmse"],
        "linear_rmse": ridge_rmse(data)["rmse"],
        "widths": {},
        "per_seed": per_seed,
    }
    for name in widths:
        vals = [r["widths"][name] for r in per_seed]
        rm = [v["rmse"] for v in vals]
        doc["widths"][name] = {
            "rmse_mean": float(np.mean(rm)), "rmse_min": float(min(rm)), "rmse_max": float(max(rm)),
            "ratio_to_float": float(np.mean(rm)) / float_rmse,
            "qat_rmse_mean": float(np.mean([v["qat_rmse"] for v in vals])),
            "exact": float(np.mean([v["exact"] for v in vals])),
            "within_1_lsb": float(np.mean([v["within_1_lsb"] for v in vals])),
            "max_lsb": int(max(v["max_lsb"] for v in vals)),
        }
    return doc


def format_table(doc: dict) -> str:
    """The benchmark's table (Markdown)."""
    n = len(doc["seeds"])
    lines = [f"{doc['dataset']}: target {doc['target']}, {len(doc['features'])} feature(s), "
             f"forecast {doc['forecast']}, test windows {doc['windows']['test']}, {n} seed(s)",
             "",
             "| model | test RMSE mean | min | max | × float | integer = QAT | within 1 code |",
             "|---|---|---|---|---|---|---|",
             f"| float | {doc['float_rmse']:.3f} | {doc['float_rmse_min']:.3f} | "
             f"{doc['float_rmse_max']:.3f} | 1.000 | | |"]
    for name, w in doc["widths"].items():
        lines.append(f"| integer {name} | {w['rmse_mean']:.3f} | {w['rmse_min']:.3f} | {w['rmse_max']:.3f} "
                     f"| {w['ratio_to_float']:.3f} | {100 * w['exact']:.1f} % | {100 * w['within_1_lsb']:.1f} % |")
    for name, key in (("persistence", "persistence_rmse"), ("linear (ridge)", "linear_rmse")):
        lines.append(f"| {name} | {doc[key]:.3f} | | | {doc[key] / doc['float_rmse']:.3f} | | |")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=3, help="seeds (float model trained once per seed)")
    p.add_argument("--widths", default=None,
                   help=f"comma-separated widths to score, of {','.join(WIDTHS)} (default all; "
                        f"for --task classify / anomaly 8,4io8,4)")
    p.add_argument("--json", default=None, help="write the figures to this JSON file")


def main(a, opts: TrainOptions, progress=print) -> int:
    task = opts.task != "forecast"
    widths = a.widths or ("8,4io8,4" if task else ",".join(WIDTHS))
    widths = tuple(w for w in widths.split(",") if w)
    unknown = [w for w in widths if w not in WIDTHS]
    if unknown:
        raise ValueError(f"unknown widths {unknown}; use some of {list(WIDTHS)}")
    if task:
        doc = run_task_accuracy(opts, a.seeds, widths, progress)
        print(format_task_table(doc))
    else:
        doc = run_accuracy(opts, a.seeds, widths, progress)
        print(format_table(doc))
    if a.json:
        path = Path(a.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, doc)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":   # a plain JSON dump of a stored result, as a table
    import sys
    d = json.loads(Path(sys.argv[1]).read_text())
    print(format_task_table(d) if "task" in d else format_table(d))
