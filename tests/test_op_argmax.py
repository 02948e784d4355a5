"""The ``argmax`` operator (model/ops/argmax.py): one tie rule (the lowest index) in
``intops``, the hardware block bit for bit against it on random, tied and extreme logits, with
the cycles its formula gives, under back-pressure too; its derived output type."""
import numpy as np
import pytest
import torch

from hw.argmax import Argmax
from model import intops, ops
from model.intops import QType
from sim.streams import run_stream_block


def test_ties_go_to_the_lowest_index():
    x = torch.tensor([[3, 7, 7, 1], [5, 5, 5, 5], [-8, -8, -9, -8], [0, 1, 2, 3]])
    assert intops.argmax(x).tolist() == [1, 0, 0, 3]
    assert intops.argmax(torch.tensor([4])).tolist() == 0


def test_output_type_holds_the_logits_and_the_index():
    assert intops.argmax_out_type(QType(4, True), 5) == QType(4, True)
    assert intops.argmax_out_type(QType(2, True), 5) == QType(4, True)      # index 4 needs 4 bits
    assert intops.argmax_out_type(QType(3, False, 2), 20) == QType(5, False, 2)
    with pytest.raises(ValueError, match="classes"):
        intops.argmax_out_type(QType(8, True), 200)
    out = intops.logits_argmax(torch.tensor([[1, -2, 1]]), QType(2, True), QType(3, True))
    assert out.tolist() == [[1, -2, 1, 0]]
    assert ops.kind("argmax").hw_block == "hw.argmax:Argmax"


def _windows(x_type, n, count, seed):
    rng = np.random.default_rng(seed)
    lo, hi = x_type.qmin, x_type.qmax
    w = [rng.integers(lo, hi + 1, size=n) for _ in range(count)]
    # ties and extremes: every element equal, the maximum twice, all at qmin / qmax
    w += [np.full(n, lo), np.full(n, hi), np.full(n, rng.integers(lo, hi + 1))]
    if n > 1:
        t = rng.integers(lo, hi, size=n)
        t[[0, n - 1]] = hi
        w.append(t)
        t = np.full(n, lo)
        t[n // 2:] = lo + 1
        w.append(t)
    return np.stack(w)


@pytest.mark.parametrize("x_type,n", [(QType(8, True), 5), (QType(4, True), 2), (QType(2, True), 6),
                                      (QType(3, False, 5), 3), (QType(8, False, 0), 1)])
def test_block_is_bit_exact_with_exact_cycles(x_type, n):
    w = _windows(x_type, n, 6, seed=n)
    out_type = intops.argmax_out_type(x_type, n)
    want = intops.logits_argmax(w, x_type, out_type).numpy()
    blk = Argmax(x_type, out_type, n=n)
    got, cycles = run_stream_block(blk, {"i": w.reshape(-1).tolist()}, {"o": want.size},
                                   windows=len(w))
    assert np.array_equal(np.array(got["o"]).reshape(want.shape), want)
    b1 = Argmax(x_type, out_type, n=n)
    one, c1 = run_stream_block(b1, {"i": w[0].tolist()}, {"o": n + 1})
    assert c1 == b1.cycles() == n + 4
    # back-pressure and a stalling source change nothing but the time
    got, _ = run_stream_block(Argmax(x_type, out_type, n=n), {"i": w.reshape(-1).tolist()},
                              {"o": want.size}, stall_in=0.3, stall_out=0.5, seed=1, windows=len(w))
    assert np.array_equal(np.array(got["o"]).reshape(want.shape), want)


def test_block_refuses_a_type_that_is_not_derived():
    with pytest.raises(ValueError, match="output type"):
        Argmax(QType(8, True), QType(4, True), n=3)
