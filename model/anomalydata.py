"""Labelled series for ``--task anomaly``: a window per time step, scored for its last steps.

:func:`load_anomaly_csv` reads one series with a 0/1 anomaly label per row (the UCR anomaly
archive's layout, e.g. the ``KDD-TSAD_135`` files inside the ``aeon`` wheel) and builds a
:class:`model.data.Dataset` (``task == "anomaly"``):

* features: the value and its first difference (``x[t] - x[t-1]``), normalised on the
  training part (their means, and both divided by the value's standard deviation: one scale,
  as the one input quantiser of the integer model has);
* a window ends at each time step ``t`` (rows ``t-L+1 .. t``); it is *anomalous* when one of its
  last :data:`RECENT` rows is labelled so, and its score is about those rows;
* splits by position: train = the rows before ``train_end`` (the archive's anomaly-free training
  part), validation = the next ``val_fraction`` of the rest, test = what follows (the test
  windows are the real ones with their real labels);
* the archive's training part holds no anomaly, so the windows of train and validation are
  each used twice: as they are (label 0) and with an anomaly injected into their last
  :data:`RECENT` rows (label 1; seeded): a noise burst, a spike or a level shift, of sizes
  drawn relative to the training series' spread (outlier exposure). No flat run (the value
  repeated): to tell one from the series' normal steps, a median of 0.02 of its standard
  deviation, a detector has to resolve steps finer than an 8-bit input's code, so it learns a
  steepness that quantisation turns into false alarms. The detector is
  trained on train, its threshold chosen on validation (the F1-best), and scored on the real
  test labels;
* ``decoys``: a third copy of each train / validation window with the anomaly injected into
  its *older* rows (before the last :data:`RECENT`), labelled 0: a detector trained without
  them learns "an anomaly anywhere in the window" and keeps alarming for the window length
  after a real anomaly (22 of the float detector's 84 false alarms on InternalBleeding16);
* ``prevalence``: the share of anomalous windows the threshold is chosen for (kept in
  ``counts["prevalence"]``; :func:`model.train.choose_threshold` weights the validation's
  clean windows so that its anomalous ones are this share). The injected validation windows
  are half of it, a real series has a handful of anomalies in thousands of windows: the F1-best
  threshold at 50 % trades one false alarm for one detection, which flagged 1.4 % of the clean
  validation windows and filled the test with false alarms. The tasks' 1 %
  (``flows.run.ANOMALY_DATA``) is a prior (the UCR anomaly archive: one anomaly per series),
  not fitted to any split.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from .data import DataError, Dataset, Split

__all__ = ["RECENT", "load_anomaly_csv", "inject", "inject_older"]

#: The rows at the end of a window its score is about (label and injected anomalies).
RECENT = 4
#: The injected anomalies (no flat run: see the module docstring; README, Tasks, has the
#: figures with and without).
KINDS = ("noise", "spike", "shift")


def inject(x: np.ndarray, rng, spread: float) -> np.ndarray:
    """A copy of the window ``x`` (L,) with one anomaly in its last :data:`RECENT` rows."""
    x = np.array(x, np.float64)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    m = int(rng.integers(1, RECENT + 1))          # rows affected, ending at the last
    seg = slice(len(x) - m, len(x))
    if kind == "noise":
        x[seg] += rng.normal(0.0, rng.uniform(0.05, 0.3) * spread, m)
    elif kind == "spike":
        k = len(x) - 1 - int(rng.integers(m))
        x[k] += rng.choice([-1, 1]) * rng.uniform(0.2, 0.8) * spread
    else:                                           # shift
        x[seg] += rng.choice([-1, 1]) * rng.uniform(0.15, 0.5) * spread
    return x


def inject_older(x: np.ndarray, rng, spread: float) -> np.ndarray:
    """A copy of the window ``x`` (L,) with one anomaly (as :func:`inject`) ending at a random
    row before its last :data:`RECENT` rows (a decoy: the window is not anomalous)."""
    x = np.array(x, np.float64)
    if len(x) < 2 * RECENT + 1:
        return x                                           # no older rows to put one in
    end = int(rng.integers(RECENT + 1, len(x) - RECENT + 1))   # rows 0 .. end-1, end <= L - RECENT
    x[:end] = inject(x[:end], rng, spread)   # an event of a few rows; the rows after it as they were
    return x


def load_anomaly_csv(path: str, value_column: str, label_column: str | None, window: int, *,
                     train_end: int | None = None, val_fraction: float = 0.25, seed: int = 0,
                     source: str = "", decoys: bool = False,
                     prevalence: float | None = None) -> Dataset:
    """See the module docstring. ``train_end``: rows of the anomaly-free training part (default
    the first 20 %)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"CSV file not found: {path!r}; check the path")
    from .data import _read_csv
    df = _read_csv(path)
    if not label_column:
        raise DataError("--task anomaly needs the 0/1 anomaly label column of the CSV: give "
                        "--target COLUMN")
    for c, what in ((value_column, "value (--features)"), (label_column, "anomaly label (--target)")):
        if c not in df.columns:
            raise DataError(f"{path} has no {what} column {c!r} (columns: "
                            f"{[str(c) for c in df.columns]})")
    x = pd.to_numeric(df[value_column], errors="coerce").to_numpy(np.float64)
    a = pd.to_numeric(df[label_column], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: column {value_column!r} has missing or non-numeric values")
    if not np.isin(a, (0.0, 1.0)).all():
        raise DataError(f"{path}: the anomaly labels {label_column!r} must be 0 or 1 on every row")
    n, L = len(x), int(window)
    if L < 2:
        raise DataError(f"an anomaly window needs 2 rows at least (--window), got {L}")
    train_end = int(round(0.2 * n)) if train_end is None else int(train_end)
    val_end = train_end + int(round(val_fraction * (n - train_end)))
    parts = {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, n)}
    for nm, (lo, hi) in parts.items():
        if hi - lo < L + 1:
            raise DataError(f"the {nm} part has {hi - lo} rows, fewer than a window of {L} and "
                            f"its first difference: use a shorter --window or a longer series")
    if a[val_end:].sum() == 0:
        raise DataError(f"{path}: no anomaly is labelled in the test part (rows {val_end}..{n - 1}); "
                        f"the detector could not be scored")
    if a[:val_end].any():
        raise DataError(f"{path}: rows before {val_end} (train and validation) are labelled "
                        f"anomalous; they must be anomaly-free (anomalies are injected there)")
    tr = x[:train_end]
    spread = float(tr.max() - tr.min()) or 1.0
    dx = np.diff(tr)
    mean = np.array([tr.mean(), dx.mean()])
    # both features in units of the value's spread: the input quantiser is one per tensor, and
    # with the difference in units of its own (small) spread the injected anomalies reached 90
    # standard deviations, so the range that held them left the value about 9 codes at 8 bits
    std = np.array([tr.std() or 1.0] * 2)
    rng = np.random.default_rng(seed)
    counts = {"rows": n, "train_end": train_end, "val_end": val_end, "recent": RECENT}
    if prevalence is not None:
        if not 0.0 < prevalence < 1.0:
            raise DataError(f"the anomaly prevalence is a share in (0, 1), got {prevalence}")
        counts["prevalence"] = float(prevalence)

    def windows(lo, hi):
        ends = np.arange(lo + L, hi)               # a window and the row before it (difference)
        W = x[ends[:, None] + np.arange(-L, 1)[None, :]]     # (N, L + 1)
        lab = np.array([a[e - RECENT + 1:e + 1].any() for e in ends], np.float32)
        return ends, W, lab

    def features(W):
        return np.stack([W[:, 1:], np.diff(W, axis=1)], axis=-1)

    def make(nm, augment):
        ends, W, lab = windows(*parts[nm])
        if augment:
            Wi = np.stack([np.concatenate([w[:1], inject(w[1:], rng, spread)]) for w in W])
            parts_w, parts_l, parts_e = [W, Wi], [lab, np.ones(len(ends), np.float32)], [ends, ends]
            if decoys:
                Wd = np.stack([np.concatenate([w[:1], inject_older(w[1:], rng, spread)]) for w in W])
                parts_w.append(Wd)
                parts_l.append(np.zeros(len(ends), np.float32))
                parts_e.append(ends)
            W, lab, ends = np.concatenate(parts_w), np.concatenate(parts_l), np.concatenate(parts_e)
        counts[f"windows_{nm}"] = int(len(lab))
        counts[f"anomalous_{nm}"] = int(lab.sum())
        X = ((features(W) - mean) / std).astype(np.float32)
        return Split(X=np.ascontiguousarray(X), y=lab,
                     times=ends.astype("datetime64[s]").astype("datetime64[ns]"),
                     last=x[ends].astype(np.float32))

    splits = {"train": make("train", True), "val": make("val", True), "test": make("test", False)}
    return Dataset(train=splits["train"], val=splits["val"], test=splits["test"],
                   feature_names=[value_column, f"d_{value_column}"], target_name=label_column,
                   window=L, horizon=1, freq=pd.Timedelta(1, unit="s"), feature_mean=mean,
                   feature_std=std, target_mean=0.0, target_std=1.0, counts=counts,
                   source=source or path, task="anomaly")
