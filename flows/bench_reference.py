"""Speed of the integer reference: the PyTorch ``IntModel`` against the NumPy one it replaced,
on every test window of the default data (a benchmark, not a test).

    python -m flows.bench_reference [--run RUN] [--repeat N]

The model is a trained run's integer model (``--run``) or, by default, a synthetic model of
the default shape (``flows.bench.DEFAULT_SHAPE``, 8 bits) normalising the inputs as the data's
training split does. Timed, best of ``--repeat``: ``forward`` on the quantised test windows
(the integer pass alone) and ``predict`` on the raw ones (with input quantisation and output
dequantisation), the PyTorch path on the CPU (``--threads``, default one like NumPy's
integer arithmetic) and on CUDA when present.

The baseline is the NumPy reference as it was at :data:`NUMPY_BASELINE` (the last commit
before the move to PyTorch), read from this repository's git history and imported under a
throwaway package name: the tree keeps one definition of each operator, and the comparison
runs on the same machine at the same time. The benchmark also checks that both give the same
prediction codes on every window. Without the git history it times the PyTorch path alone.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

#: The last commit whose integer reference (model/intops.py, model/intmodel.py) is NumPy.
NUMPY_BASELINE = "750a9a4c18518a73cdf23278f146e38f59c3f45b"
_BASELINE_PACKAGE = "_intformer_numpy_baseline"


def numpy_baseline(commit: str = NUMPY_BASELINE):
    """The NumPy-era ``IntModel`` class from git history, or None (with the reason) if the
    history is not there (an installed copy, a shallow clone)."""
    root = Path(__file__).resolve().parents[1]
    sources = {}
    for name in ("intops", "intmodel"):
        try:
            sources[name] = subprocess.run(
                ["git", "-C", str(root), "show", f"{commit}:model/{name}.py"],
                check=True, capture_output=True, text=True).stdout
        except (OSError, subprocess.CalledProcessError) as e:
            return None, f"git show {commit[:10]}:model/{name}.py failed ({e})"
    pkg = types.ModuleType(_BASELINE_PACKAGE)
    pkg.__path__ = []
    sys.modules[_BASELINE_PACKAGE] = pkg
    for name, src in sources.items():
        mod = types.ModuleType(f"{_BASELINE_PACKAGE}.{name}")
        mod.__package__ = _BASELINE_PACKAGE
        mod.__file__ = f"<git {commit[:10]}:model/{name}.py>"
        sys.modules[mod.__name__] = mod      # dataclasses look their module up here
        exec(compile(src, mod.__file__, "exec"), mod.__dict__)
        setattr(pkg, name, mod)
    return pkg.intmodel.IntModel, None


def best_of(repeat: int, fn):
    """(smallest wall-clock seconds of ``repeat`` calls, the last result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def default_model(data):
    from flows.bench import DEFAULT_SHAPE
    from model.synthetic import random_intmodel
    model = random_intmodel(dict(DEFAULT_SHAPE, features=data.n_features, window=data.window),
                            bits=8, seed=0)
    model.input_norm = {"mean": np.asarray(data.feature_mean, np.float64),
                        "std": np.asarray(data.feature_std, np.float64)}
    return model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.bench_reference", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="a run directory (default: a synthetic model of "
                   "the default shape)")
    p.add_argument("--repeat", type=int, default=5, help="timed calls per path (best is kept)")
    p.add_argument("--threads", type=int, default=1,
                   help="PyTorch CPU threads (default 1: NumPy's integer path runs on one core, "
                        "so one thread compares like with like; 0 keeps PyTorch's default)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    from model import data as D
    from model.intmodel import IntModel
    with tempfile.TemporaryDirectory() as tmp:
        if a.run:
            model_dir = a.run
            model = IntModel.load(model_dir)
            data = D.load_weather(window=model.config["window"])
        else:
            data = D.load_weather()
            model = default_model(data)
            model_dir = model.save(tmp)
        raw = data.denormalise_features(data.test.X)
        Baseline, why = numpy_baseline()
        baseline = Baseline.load(model_dir) if Baseline else None

    xq = model.quantize_input(raw)
    c = model.config
    print(f"model: {'run ' + str(a.run) if a.run else 'synthetic, default shape, 8 bits'} "
          f"(window {c['window']}, d_model {c['d_model']}, heads {c['heads']}, "
          f"layers {c['layers']}, ffn {c['ffn']}, {c['norm']}, {c['activation']})")
    print(f"test windows: {len(raw)} (default data); best of {a.repeat}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = []
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    codes = None
    for dev in devices:
        def fwd():
            out = model.forward(xq, device=dev)["pred"]
            if dev == "cuda":
                torch.cuda.synchronize()
            return out
        fwd()                                 # first call: kernels loaded, caches warm
        t_fwd, out = best_of(a.repeat, fwd)
        t_pred, _ = best_of(a.repeat, lambda: model.predict(raw, device=dev))
        rows.append((f"PyTorch ({dev})", t_fwd, t_pred))
        got = out[:, 0].cpu().numpy()
        if codes is not None and not np.array_equal(got, codes):
            raise SystemExit(f"PyTorch on {dev} differs from the CPU: a bug")
        codes = got
    if baseline is None:
        print(f"NumPy baseline unavailable: {why}")
    else:
        xn = xq.numpy()
        baseline.forward(xn)
        t_fwd, out = best_of(a.repeat, lambda: baseline.forward(xn)["pred"])
        t_pred, _ = best_of(a.repeat, lambda: baseline.predict(raw))
        if not np.array_equal(out[:, 0], codes):
            raise SystemExit("the NumPy baseline's prediction codes differ from PyTorch's: a bug")
        rows.append((f"NumPy (git {NUMPY_BASELINE[:7]})", t_fwd, t_pred))
        print(f"prediction codes: identical on all {len(raw)} windows")
    ref = rows[-1][1:] if baseline is not None else None
    print(f"{'path':<24}{'forward s':>11}{'windows/s':>12}{'predict s':>11}"
          + (f"{'speed-up (fwd, pred)':>24}" if ref else ""))
    for name, t_fwd, t_pred in rows:
        line = f"{name:<24}{t_fwd:>11.4f}{len(raw) / t_fwd:>12.0f}{t_pred:>11.4f}"
        if ref:
            line += f"{ref[0] / t_fwd:>15.2f}x, {ref[1] / t_pred:.2f}x"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
