"""The ``threshold`` operator (model/ops/threshold.py, the anomaly detector's output): the flag
``score >= threshold`` in ``intops``, the hardware block bit for bit against it for thresholds
inside, at and beyond the type's range, with exact cycles, under back-pressure too."""
import numpy as np
import pytest
import torch

from hw.threshold import Threshold
from model import intops, ops
from model.intops import QType
from sim.streams import run_stream_block


def test_flag_is_score_at_least_threshold():
    x = torch.tensor([[-3], [2], [5], [6]])
    assert intops.score_flag(x, QType(4, True), 5).tolist() == [[-3, 0], [2, 0], [5, 1], [6, 1]]
    with pytest.raises(ValueError, match="one score"):
        intops.score_flag(torch.tensor([[1, 2]]), QType(4, True), 0)
    assert ops.kind("threshold").hw_block == "hw.threshold:Threshold"


@pytest.mark.parametrize("x_type,threshold", [
    (QType(8, True), 17), (QType(4, True), -8), (QType(4, True), 8), (QType(3, False, 2), 7),
    (QType(3, False, 2), 8), (QType(2, True), 1), (QType(6, False, 0), 0)])
def test_block_is_bit_exact_with_exact_cycles(x_type, threshold):
    scores = np.array([x_type.qmin, x_type.qmax, threshold, threshold - 1, threshold + 1,
                       *np.random.default_rng(threshold % 7).integers(x_type.qmin, x_type.qmax + 1, 8)])
    scores = np.clip(scores, x_type.qmin, x_type.qmax)[:, None]
    want = intops.score_flag(scores, x_type, threshold).numpy()
    got, _ = run_stream_block(Threshold(x_type, threshold), {"i": scores.reshape(-1).tolist()},
                              {"o": want.size}, windows=len(scores))
    assert np.array_equal(np.array(got["o"]).reshape(want.shape), want)
    got, _ = run_stream_block(Threshold(x_type, threshold), {"i": scores.reshape(-1).tolist()},
                              {"o": want.size}, windows=len(scores), stall_in=0.3, stall_out=0.5,
                              seed=2)
    assert np.array_equal(np.array(got["o"]).reshape(want.shape), want)
    b = Threshold(x_type, threshold)
    _, cycles = run_stream_block(b, {"i": [int(scores[0, 0])]}, {"o": 2})
    assert cycles == b.cycles() == 5
