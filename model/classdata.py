"""Labelled series for ``--task classify``: one window per example, one class per window.

Two sources build the same :class:`model.data.Dataset` (``task == "classify"``):

* :func:`load_ts` -- a pair of UCR/UEA ``.ts`` files (``*_TRAIN.ts``, ``*_TEST.ts``), as
  the classification archives ship them (e.g. inside the ``aeon`` wheel);
* :func:`load_classes_csv` -- a CSV file with one example per row: its value columns (in time
  order) and a class column.

Splits: the training examples are split, stratified and seeded, into train and validation
(``val_fraction`` of each class); the test set is the archive's own test file (a CSV is split
in three, stratified). Labels become class indices ``0 .. C-1`` in the sorted order of the
class names (``Dataset.class_names``). Every class must be in the training split, and there must
be two classes at least. Normalisation as for forecasting: per-feature mean / std of the
training windows' values (UCR series come z-normalised per series already).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from .data import DataError, Dataset, Split

__all__ = ["read_ts", "load_ts", "load_classes_csv", "build_classes"]


def read_ts(path: str) -> tuple[np.ndarray, list[str]]:
    """A ``.ts`` file -> (series (N, length, dims) float64, labels as strings). Equal-length
    series with a class label only."""
    if not os.path.isfile(path):
        raise DataError(f"series file not found: {path!r}")
    series, labels, has_labels, in_data = [], [], None, False
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                low = line.lower()
                if low.startswith("@classlabel"):
                    has_labels = low.split()[1] == "true"
                elif low.startswith("@data"):
                    in_data = True
                continue
            if not has_labels:
                raise DataError(f"{path} has no class labels (@classLabel false): a classifier "
                                f"needs a class per series")
            *dims, label = line.split(":")
            try:
                series.append([[float(v) for v in d.split(",")] for d in dims])
            except ValueError:
                raise DataError(f"{path}, line {lineno}: a value is not a number") from None
            labels.append(label.strip())
    if not series:
        raise DataError(f"{path} holds no series")
    lengths = {len(d) for s in series for d in s}
    if len(lengths) != 1 or len({len(s) for s in series}) != 1:
        raise DataError(f"{path}: series of unequal length or dimension are not supported")
    return np.asarray(series, np.float64).transpose(0, 2, 1), labels


def load_ts(train_path: str, test_path: str, *, val_fraction: float = 0.25, seed: int = 0,
            source: str = "") -> Dataset:
    """Train / validation from ``train_path`` (stratified), test from ``test_path``."""
    Xtr, ytr = read_ts(train_path)
    Xte, yte = read_ts(test_path)
    if Xtr.shape[1:] != Xte.shape[1:]:
        raise DataError(f"the train and test series differ in shape: {Xtr.shape[1:]} vs {Xte.shape[1:]}")
    tr, va = _stratified(ytr, [1.0 - val_fraction, val_fraction], seed, train_path)
    names = [f"x{d}" for d in range(Xtr.shape[2])] if Xtr.shape[2] > 1 else ["x"]
    return build_classes({"train": (Xtr[tr], [ytr[i] for i in tr]),
                          "val": (Xtr[va], [ytr[i] for i in va]),
                          "test": (Xte, yte)}, names, "class", source or train_path)


def load_classes_csv(path: str, label_column: str | None, value_columns: Sequence[str] | None = None,
                     *, split: Sequence[float] = (0.70, 0.15, 0.15), seed: int = 0) -> Dataset:
    """One example per row: ``value_columns`` (default: every column but the label) are the
    series in time order, ``label_column`` its class. Split stratified and seeded."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"CSV file not found: {path!r}; check the path")
    from .data import _read_csv
    df = _read_csv(path)
    if not label_column:
        raise DataError("--task classify needs the class column of the CSV: give --target COLUMN")
    if label_column not in df.columns:
        raise DataError(f"{path} has no class column {label_column!r} (columns: "
                        f"{[str(c) for c in df.columns]}): a classifier needs a class per row; "
                        f"name it with --target")
    cols = [c for c in df.columns if c != label_column] if not value_columns else list(value_columns)
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"column(s) {missing} not found in {path}")
    if not cols:
        raise DataError(f"{path} has no value columns besides the class {label_column!r}")
    if df[label_column].isna().any():
        raise DataError(f"{path}: {int(df[label_column].isna().sum())} rows have no class in "
                        f"{label_column!r}; label every row or remove it")
    vals = df[cols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if not np.isfinite(vals).all():
        raise DataError(f"{path}: the value columns hold missing or non-numeric values; "
                        f"clean them (a classifier takes complete series)")
    labels = [str(v) for v in df[label_column]]
    _check_classes(labels, label_column)
    fr = [float(s) for s in split]
    if len(fr) != 3 or min(fr) <= 0 or abs(sum(fr) - 1) > 1e-6:
        raise DataError(f"split={tuple(split)} must be three positive fractions summing to 1")
    parts = _stratified(labels, fr, seed, path)
    X = vals[:, :, None]
    return build_classes({nm: (X[p], [labels[i] for i in p])
                          for nm, p in zip(("train", "val", "test"), parts)},
                         ["x"], label_column, path)


def _check_classes(labels, where) -> None:
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DataError(f"the class column {where!r} has one class ({classes[0]!r}): a classifier "
                        f"needs two classes at least; choose another column or add examples of "
                        f"other classes")


def _stratified(labels, fractions, seed, where) -> list[np.ndarray]:
    """Indices per part: each class's examples shuffled (seeded) and cut by ``fractions``."""
    labels = np.asarray(labels)
    _check_classes(list(labels), where)
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    cuts = np.cumsum(fractions)[:-1]
    for c in sorted(set(labels.tolist())):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        bounds = [0, *np.round(cuts * len(idx)).astype(int), len(idx)]
        for k in range(len(fractions)):
            parts[k].extend(idx[bounds[k]:bounds[k + 1]].tolist())
    return [np.asarray(sorted(p), np.int64) for p in parts]


def build_classes(parts: dict, feature_names: list, label_name: str, source: str) -> Dataset:
    """``parts``: split name -> (series (N, L, F), labels). Indices, normalisation, checks."""
    train_labels = list(parts["train"][1])
    _check_classes(train_labels, label_name)
    names = sorted(set(train_labels))
    index = {c: i for i, c in enumerate(names)}
    for nm in ("val", "test"):
        unseen = sorted(set(parts[nm][1]) - set(names))
        if unseen:
            raise DataError(f"classes {unseen} of the {nm} split are not in the training split; "
                            f"a classifier only knows the classes it was trained on")
    for nm in ("train", "val", "test"):
        if len(parts[nm][1]) == 0:
            raise DataError(f"the {nm} split is empty: more examples or other split fractions")
    Xtr = parts["train"][0]
    F = Xtr.shape[2]
    flat = Xtr.reshape(-1, F)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    counts = {"classes": len(names)}

    def make(nm):
        X, labels = parts[nm]
        y = np.asarray([index[c] for c in labels], np.int64)
        counts[f"windows_{nm}"] = int(len(y))
        n = len(y)
        return Split(X=np.ascontiguousarray(((X - mean) / std).astype(np.float32)), y=y,
                     times=np.arange(n).astype("datetime64[s]").astype("datetime64[ns]"),
                     last=np.zeros(n, np.float32))

    splits = {nm: make(nm) for nm in ("train", "val", "test")}
    return Dataset(train=splits["train"], val=splits["val"], test=splits["test"],
                   feature_names=list(feature_names), target_name=label_name,
                   window=int(Xtr.shape[1]), horizon=1, freq=pd.Timedelta(1, unit="s"),
                   feature_mean=mean, feature_std=std, target_mean=0.0, target_std=1.0,
                   counts=counts, source=source, task="classify", class_names=names)
