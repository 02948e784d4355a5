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
