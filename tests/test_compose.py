"""Compose accelerators in PyTorch (model.compose): the README's example runs to bit-exact
hardware; other arrangements (one feature, a longer window, batch-norm, a fused ReLU, a
two-step head) convert to the same graph the module computes; unsupported operations are
refused by name."""
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from hw.accelerator import Accelerator
from model import compose as cq
from model.intmodel import IntModel
from sim.streams import run_stream_block

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "compose.py"


def test_the_readme_shows_the_example_file():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Compose an accelerator in Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks and blocks[0] == EXAMPLE.read_text()


@pytest.fixture(scope="module")
def example():
    """The README's example, run as it stands (it asserts the hardware's predictions)."""
    return runpy.run_path(str(EXAMPLE))


def test_the_example_is_bit_exact_in_hardware_with_the_modules_graph(example):
    """The example asserted that the simulated accelerator predicts what the integer model
    does on three windows back to back; here, that its graph is the module's."""
    intmodel, hardware = example["intmodel"], example["hardware"]
    assert hardware.last_cycles > 0
    kinds = [op.kind for op in intmodel.ops]
    # norm first, three residuals, two table activations: no CLI configuration builds this
    assert kinds.count("layernorm") == 3 and kinds.count("add") == 4 and kinds.count("lut") == 2
    assert intmodel.op("adds.0").spec.inputs == ("pe", "attn")
    assert intmodel.op("norms.0").spec.inputs == ("pe",)
    assert intmodel.op("adds.2").spec.inputs == ("adds.1", "ffns.1.down")
    assert [o.spec.inputs for o in intmodel.ops][-2:] == [("adds.2",), ("pool",)]


def test_the_integer_model_tracks_the_qat_module(example, tmp_path):
    model, intmodel, data = example["model"], example["intmodel"], example["data"]
    x = data.test.X[:64]
    with torch.no_grad():
        qat = model(torch.as_tensor(x)).numpy().reshape(-1)
    integer = data.normalise_target(intmodel.predict(data.denormalise_features(x)))
    assert np.sqrt(np.mean((qat - integer) ** 2)) < 0.1     # a few output codes at most
    again = IntModel.load(intmodel.save(tmp_path))            # file format v2: the graph itself
    assert [o.spec for o in again.ops] == [o.spec for o in intmodel.ops]


class OddShape(torch.nn.Module):
    """One feature, a longer window, batch-norm after the attention, a ReLU fused into its
    linear, and a two-layer head forecasting two steps."""

    def __init__(self, window=32, d=4):
        super().__init__()
        self.input, self.embed = cq.Input(1, window, bits=6), cq.Linear(1, d, bits=6)
        self.attn, self.add = cq.MultiHeadAttention(d, heads=1, bits=6), cq.Add(bits=6)
        self.norm, self.drop = cq.BatchNorm(d, bits=6), torch.nn.Dropout(0.1)
        self.pool = cq.MeanPool(bits=6)
        self.hidden, self.out = cq.Linear(d, 3, bits=6, relu=True), cq.Linear(3, 2, bits=6)

    def forward(self, x):
        h = self.embed(self.input(x))
        h = self.norm(self.add(h, self.attn(h)))
        return self.out(self.hidden(self.pool(self.drop(h))))


def test_one_feature_a_long_window_and_a_two_step_head_are_bit_exact():
    torch.manual_seed(1)
    x = torch.randn(64, 32, 1)
    model = cq.fit(OddShape(), x, torch.randn(64, 2), epochs=1, qat_epochs=0)
    intmodel = cq.to_intmodel(model, x)
    assert intmodel.horizon == 2 and intmodel.config["features"] == 1
    assert intmodel.op("hidden").params["relu"] and intmodel.op("norm").kind == "affine"
    xq = intmodel.quantize_input(x[:1].numpy())
    acc = Accelerator(intmodel)
    got, cycles = run_stream_block(acc, {"i": xq.reshape(-1).tolist()}, {"o": 2})
    assert got["o"] == intmodel.pred_codes(xq).reshape(-1).tolist()
    assert cycles == acc.cycles()


class Net(torch.nn.Module):
    """A small valid module whose middle a subclass replaces."""

    def __init__(self):
        super().__init__()
        self.input, self.lin = cq.Input(1, 8), cq.Linear(1, 4)
        self.pool, self.head = cq.MeanPool(), cq.Linear(4, 1)
        self.conv = torch.nn.Conv1d(4, 4, 3, padding=1)

    def middle(self, h):
        return h

    def forward(self, x):
        return self.head(self.pool(self.middle(self.lin(self.input(x)))))


class Sine(Net):
    def middle(self, h):
        return torch.sin(h)


class Convolution(Net):
    def middle(self, h):
        return self.conv(h)


class Branch(Net):
    def middle(self, h):
        if h.sum() > 0:
            return h
        return -h


class PlainSum(Net):
    def middle(self, h):
        return h + h


@pytest.mark.parametrize("module, names", [
    (Sine, ["function torch.sin", "torch.sin(h)"]),
    (Convolution, ["module 'conv' (Conv1d)", "self.conv(h)"]),
    (Branch, ["control flow on a tensor's value", "if h.sum() > 0:"]),
    (PlainSum, ["function operator.add", "h + h", "Add()"]),
])
def test_an_unsupported_operation_is_named_with_what_is_supported(module, names):
    with pytest.raises(cq.CompositionError) as e:
        cq.to_intmodel(module(), torch.randn(4, 8, 1))
    message = str(e.value)
    for text in names + ["test_compose.py"] + cq.supported():
        assert text in message


def test_the_window_must_enter_through_input_and_leave_as_one_vector():
    class NoInput(Net):
        def forward(self, x):
            return self.head(self.pool(self.lin(x)))

    class TokensOut(Net):
        def forward(self, x):
            return self.lin(self.input(x))

    with pytest.raises(cq.CompositionError, match=r"Input\(features, window\)"):
        cq.to_intmodel(NoInput(), torch.randn(4, 8, 1))
    with pytest.raises(cq.CompositionError, match=r"one vector"):
        cq.to_intmodel(TokensOut(), torch.randn(4, 8, 1))
    assert len(cq.to_intmodel(Net(), torch.randn(4, 8, 1)).ops) == 3
