"""A run saved by an earlier version still loads and predicts bit for bit the same.

``tests/data/saved_run_v1`` holds the integer model of a briefly trained run (window 12,
d_model 8, 2 heads, layer-norm, GELU table, 6 bits; ``intmodel.json`` + ``intmodel.npz`` as
``IntModel.save`` wrote them before the integer reference moved from NumPy to PyTorch), 32 raw
test windows of the default data, and the prediction codes and predictions that version gave.
"""
from pathlib import Path

import numpy as np

from model.intmodel import IntModel

RUN = Path(__file__).parent / "data" / "saved_run_v1"


def saved():
    with np.load(RUN / "windows.npz") as z:
        return {k: z[k] for k in z.files}


def test_saved_run_gives_the_same_codes_and_predictions():
    model = IntModel.load(RUN)
    want = saved()
    codes = model.forward(model.quantize_input(want["raw"]))["pred"][:, 0]
    assert np.asarray(codes).tolist() == want["codes"].tolist()
    pred = model.predict(want["raw"])
    assert pred.dtype == np.float64
    assert np.array_equal(pred, want["predictions"])
