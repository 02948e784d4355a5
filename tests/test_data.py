import numpy as np
import pandas as pd
import pytest

from model.data import WEATHER_FEATURES, DataError, load_csv, load_weather


@pytest.fixture(scope="module")
def weather():
    return load_weather()


def test_default_dataset_shapes(weather):
    d = weather
    assert d.feature_names == list(WEATHER_FEATURES) and len(d.feature_names) == 7
    assert d.target_name == "temp" and d.window == 24 and d.horizon == 1
    for s in (d.train, d.val, d.test):
        assert s.X.dtype == np.float32 and s.y.dtype == np.float32
        assert s.X.shape == (len(s), 24, 7) and s.y.shape == (len(s),)
        assert np.isfinite(s.X).all() and np.isfinite(s.y).all() and np.isfinite(s.last).all()
    c = d.counts
    assert c["rows"] == 8706
    assert len(d.train) > 5000 and len(d.val) > 1000 and len(d.test) > 1000
    assert c["windows_train"] + c["windows_val"] + c["windows_test"] + c["windows_dropped_gap"] \
        + c["windows_dropped_missing"] + c["windows_dropped_boundary"] == c["windows_possible"]
    assert c["time_gaps"] > 0 and c["windows_dropped_gap"] > 0
    assert c["missing_values"] > 0


def test_splits_chronological_and_disjoint(weather):
    d, h = weather, pd.Timedelta(hours=1)
    assert d.train.times.max() < d.val.times.min() - 24 * h
    assert d.val.times.max() < d.test.times.min() - 24 * h
    for s in (d.train, d.val, d.test):
        assert (np.diff(s.times.astype("int64")) > 0).all()
    # the first input row of a val window comes after the last training target
    first_val_input = d.val.times.min() - 24 * h
    assert first_val_input > d.train.times.max()


def test_target_matches_raw_and_window_is_contiguous(weather):
    d = weather
    raw = pd.read_csv(__import__("model.data", fromlist=["x"]).weather_csv_path())
    raw = raw[raw.origin == "JFK"]
    t = pd.to_datetime(raw.time_hour, utc=True).dt.tz_localize(None).to_numpy()
    temp = dict(zip(t, raw.temp.to_numpy()))
    for s in (d.train, d.test):
        for i in (0, len(s) // 2, len(s) - 1):
            assert d.denormalise_target(s.y[i]) == pytest.approx(temp[s.times[i]], abs=1e-3)
            # persistence value = temp one hour before the target, also = denormalised input
            assert s.last[i] == pytest.approx(temp[s.times[i] - np.timedelta64(1, "h")], abs=1e-3)
            back = d.denormalise_features(s.X[i, -1])[0]
            assert back == pytest.approx(s.last[i], abs=1e-3)


def test_normalisation_fitted_on_train_only(weather):
    d = weather
    # distinct rows used as inputs by training windows, recovered from target times
    h = np.timedelta64(1, "h")
    rows = {}
    for i, t in enumerate(d.train.times):
        for j in range(d.window):
            rows[t - (d.window - j) * h] = d.train.X[i, j]
    raw = d.denormalise_features(np.stack(list(rows.values())))
    np.testing.assert_allclose(raw.mean(0), d.feature_mean, atol=1e-4, rtol=1e-5)
    np.testing.assert_allclose(raw.std(0), d.feature_std, rtol=1e-4)
    ytr = d.denormalise_target(d.train.y)
    assert ytr.mean() == pytest.approx(d.target_mean, abs=1e-4)
    assert ytr.std() == pytest.approx(d.target_std, rel=1e-4)
    # the training split is normalised to mean 0, the others are not refitted
    assert abs(d.train.y.mean()) < 1e-3
    assert abs(d.test.y.mean()) > 0.05  # test period (Oct-Dec) is colder than the training mean


def test_nan_policies():
    di = load_weather(nan_policy="interpolate")
    dd = load_weather(nan_policy="drop")
    assert di.counts["interpolated_values"] > 0 and dd.counts["interpolated_values"] == 0
    assert dd.counts["windows_dropped_missing"] > di.counts["windows_dropped_missing"]
    assert len(dd.train) < len(di.train)
    with pytest.raises(DataError, match="missing"):
        load_weather(nan_policy="error")


def _write(tmp_path, df, name="data.csv"):
    p = tmp_path / name
    df.to_csv(p, index=False)
    return p


def _series(n, start="2020-01-01 00:00", freq="1h", seed=0):
    rng = np.random.default_rng(seed)
    t = pd.date_range(start, periods=n, freq=freq)
    return pd.DataFrame({"time": t.strftime("%Y-%m-%dT%H:%M:%S"), "a": rng.normal(size=n),
                         "b": np.arange(n, dtype=float), "y": rng.normal(size=n)})


def test_csv_gap_windows_dropped(tmp_path):
    df = _series(200)
    df = df.drop(index=range(100, 103)).reset_index(drop=True)  # 3-hour hole after row 99
    p = _write(tmp_path, df)
    L = 5
    d = load_csv(p, "time", ["a", "b"], "y", window=L, split=(0.6, 0.2, 0.2))
    assert d.counts["time_gaps"] == 1
    # windows whose L+1 rows straddle the hole: starts 95..99 -> L of them
    assert d.counts["windows_dropped_gap"] == L
    h = np.timedelta64(1, "h")
    for s in (d.train, d.val, d.test):
        for i in range(len(s)):
            rows = d.denormalise_features(s.X[i])[:, 1]  # column b = original row index
            assert np.allclose(np.diff(rows), 1.0, atol=1e-6)  # contiguous, no hole
            first = s.times[i] - L * h
            assert not (first < np.datetime64("2020-01-05T04:00") < s.times[i])  # row 100 is 04:00 on day 5


def test_csv_interpolation_and_target_never_interpolated(tmp_path):
    df = _series(120)
    df.loc[50, "a"] = np.nan            # short gap: interpolated
    df.loc[70:75, "a"] = np.nan         # 6 missing: too long, windows touching it dropped
    df.loc[90, "y"] = np.nan            # missing target: never interpolated
    p = _write(tmp_path, df)
    d = load_csv(p, "time", ["a", "b"], "y", window=4, split=(0.5, 0.25, 0.25), max_interp_gap=2)
    assert d.counts["missing_values"] == 8
    assert d.counts["interpolated_values"] == 1
    assert d.counts["windows_dropped_missing"] > 0
    allt = np.concatenate([d.train.times, d.val.times, d.test.times])
    assert np.datetime64(pd.Timestamp(df.time[90])) not in allt
    for s in (d.train, d.val, d.test):
        assert np.isfinite(s.X).all() and np.isfinite(s.y).all()
    with pytest.raises(DataError, match="missing"):
        load_csv(p, "time", ["a", "b"], "y", window=4, nan_policy="error")
    d2 = load_csv(p, "time", ["a", "b"], "y", window=4, split=(0.5, 0.25, 0.25), nan_policy="drop")
    assert d2.counts["interpolated_values"] == 0
    assert len(d2.train) + len(d2.val) + len(d2.test) < len(d.train) + len(d.val) + len(d.test)


def test_csv_errors(tmp_path):
    df = _series(50)
    p = _write(tmp_path, df)
    with pytest.raises(DataError, match="not found"):
        load_csv(tmp_path / "nope.csv", "time", ["a"], "y", window=4)
    with pytest.raises(DataError) as e:
        load_csv(p, "time", ["a", "zzz"], "y", window=4)
    msg = str(e.value)
    assert "zzz" in msg and all(c in msg for c in ("time", "a", "b", "y"))
    assert isinstance(e.value, ValueError)
    with pytest.raises(DataError, match="window"):
        load_csv(p, "time", ["a"], "y", window=60)
    with pytest.raises(DataError, match="no valid window"):
        load_csv(p, "time", ["a"], "y", window=30)  # fits the file but not the val/test parts
    bad = df.copy()
    bad["a"] = bad["a"].astype(object)
    bad.loc[7, "a"] = "twelve"
    with pytest.raises(DataError, match="non-numeric.*twelve"):
        load_csv(_write(tmp_path, bad, "bad.csv"), "time", ["a"], "y", window=4)
    bt = df.copy()
    bt.loc[3, "time"] = "yesterday"
    with pytest.raises(DataError, match="cannot parse time column"):
        load_csv(_write(tmp_path, bt, "bt.csv"), "time", ["a"], "y", window=4)
    dup = df.copy()
    dup.loc[5, "time"] = dup.loc[4, "time"]
    with pytest.raises(DataError, match="duplicate"):
        load_csv(_write(tmp_path, dup, "dup.csv"), "time", ["a"], "y", window=4)
    with pytest.raises(DataError, match="nan_policy"):
        load_csv(p, "time", ["a"], "y", window=4, nan_policy="ignore")


def test_csv_time_format_and_unsorted(tmp_path):
    df = _series(80)
    df["time"] = pd.to_datetime(df["time"]).dt.strftime("%d/%m/%Y %H:%M")
    df = df.sample(frac=1.0, random_state=0)  # shuffled rows are sorted by time
    p = _write(tmp_path, df)
    d = load_csv(p, "time", ["b"], "y", window=6, time_format="%d/%m/%Y %H:%M", split=(0.6, 0.2, 0.2))
    assert d.freq == pd.Timedelta(hours=1)
    assert (np.diff(d.train.times.astype("int64")) > 0).all()
    assert d.counts["time_gaps"] == 0
