"""The integer model on PyTorch: integer tensors only after the input is quantised, batched,
the same on every device."""
import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from model import intops
from model.intops import QType, RangeError
from model.synthetic import random_intmodel, random_inputs

CONFIGS = [
    dict(features=3, window=6, d_model=8, heads=2, layers=1, ffn=16, norm="layernorm",
         activation="gelu"),
    dict(features=2, window=5, d_model=4, heads=1, layers=2, ffn=8, norm="batchnorm",
         activation="relu"),
]


class DtypeRecorder(TorchFunctionMode):
    """Every dtype a torch function returns while the mode is active."""

    def __init__(self):
        super().__init__()
        self.dtypes = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.dtypes.add(t.dtype)
        return out


@pytest.mark.parametrize("config", CONFIGS)
def test_forward_computes_on_integers_only(config):
    model = random_intmodel(config, bits=6, seed=3)
    x = random_inputs(model, 4, seed=1)
    with DtypeRecorder() as rec:
        values = model.forward(x)
    assert rec.dtypes <= {torch.int64, torch.bool}
    assert all(v.dtype == torch.int64 for v in values.values())


@pytest.mark.parametrize("config", CONFIGS)
def test_a_batch_gives_what_each_window_gives_alone(config):
    model = random_intmodel(config, bits=5, seed=4)
    x = random_inputs(model, 6, seed=2)
    batch = model.forward(x)
    for i in range(len(x)):
        alone = model.forward(x[i])
        for name in alone:
            if name != "pe":
                assert torch.equal(alone[name], batch[name][i]), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("config", CONFIGS)
def test_cuda_gives_the_cpu_values(config):
    model = random_intmodel(config, bits=7, seed=5)
    x = random_inputs(model, 8, seed=3)
    cpu, cuda = model.forward(x), model.forward(x, device="cuda")
    for name, v in cpu.items():
        assert cuda[name].device.type == "cuda" and torch.equal(cuda[name].cpu(), v), name
    raw = np.random.default_rng(0).normal(size=(3, config["window"], config["features"]))
    assert np.array_equal(model.predict(raw, device="cuda"), model.predict(raw))


def test_operands_must_be_integers():
    q = QType(4, True)
    for bad in (torch.tensor([1.0]), torch.tensor([True]), np.array([0.5])):
        with pytest.raises(RangeError, match="integer"):
            q.check(bad)
    with pytest.raises(RangeError, match="integer"):
        intops.saturate(torch.tensor([2.0]), q)
    assert q.check(np.array([3], np.uint8)).dtype == torch.int64


@pytest.mark.parametrize("x", [0, 1, 2, 3, 4, 15, 16, 17, (1 << 31) - 1, (1 << 62) - 1, 1 << 62,
                               (3037000499 ** 2), (3037000499 ** 2) - 1, (1 << 63) - 1])
def test_isqrt_is_exact_across_int64(x):
    r = int(intops.isqrt(torch.tensor([x, 0, 1]))[0])
    assert r * r <= x < (r + 1) * (r + 1)


def test_isqrt_rejects_negative_numbers():
    with pytest.raises(RangeError, match="negative"):
        intops.isqrt(torch.tensor([4, -1]))


@pytest.mark.parametrize("zero_point", [0, 3])
def test_operators_leave_their_operands_unchanged(zero_point):
    """Results are built in place on fresh tensors; an operand (which with a zero point of 0
    enters the arithmetic as it is) must never be written to."""
    g = torch.Generator().manual_seed(zero_point)
    t = QType(6, zero_point == 0, zero_point)
    x = torch.randint(t.qmin, t.qmax + 1, (3, 5, 4), generator=g)
    w = torch.randint(t.qmin, t.qmax + 1, (2, 4), generator=g)
    pe = torch.randint(t.qmin, t.qmax + 1, (5, 4), generator=g)
    table = torch.arange(t.qmax - t.qmin + 1) % (t.qmax + 1)
    exp_table = torch.tensor([1 << 12, 3000, 1000, 200, 10, 0])
    norm_bits, recip_bits = intops.layernorm_precision(4, t, 6)
    before = [v.clone() for v in (x, w, pe, table, exp_table)]
    calls = [
        lambda: intops.rounding_shift(x, 2),
        lambda: intops.saturate(x, QType(4, True)),
        lambda: intops.requantize(x, 3, 1, t),
        lambda: intops.linear(x, t, w, t, torch.tensor([5, -5]), 300, 9, t, relu=True),
        lambda: intops.matmul_acc(x, t, x.transpose(-1, -2), t),
        lambda: intops.add(pe, t, x, t, 7, 9, 3, t),
        lambda: intops.add(x, t, x, t, 7, 9, 3, t),
        lambda: intops.affine(x, t, torch.tensor([1, 2, 3, 4]), torch.tensor([9, 8, 7, 6]), 2, t),
        lambda: intops.lut_activation(x, t, table, QType(6, False, 0)),
        lambda: intops.softmax(x, t, exp_table, 12, 26, QType(6, False, 0)),
        lambda: intops.layernorm(x, t, [1, 2, 3, 4], [0, 1, 2, 3], 3, norm_bits, recip_bits, t),
        lambda: intops.mean_pool(x, t, 300, 10, t),
    ]
    for call in calls:
        first = call()
        assert torch.equal(call(), first)
        assert all(torch.equal(a, b) for a, b in zip(before, (x, w, pe, table, exp_table)))
    assert intops.add(pe, t, x, t, 7, 9, 3, t).shape == x.shape
    assert torch.equal(intops.add(pe, t, x, t, 7, 9, 3, t), intops.add(x, t, pe, t, 9, 7, 3, t))
