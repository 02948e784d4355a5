"""Compose accelerators in PyTorch (model.compose): the README's example runs to bit-exact
hardware; other arrangements (one feature, a longer window, batch-norm, a fused ReLU, a
two-step head) convert to the same graph the module computes, parallel branches summed too;
unsupported operations are refused by name."""
import re
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.estimate import mark_used
from hw.accelerator import Accelerator
from model import compose as cq
from model.intmodel import IntModel
from model.qat import quantize
from model.transformer import sinusoidal_pe
from sim.streams import check_accelerator, run_stream_block

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
    pred = intmodel.tensors["pred"]          # the network's output (the change), normalised
    codes = intmodel.pred_codes(intmodel.quantize_input(data.denormalise_features(x))).numpy()
    integer = pred.scale * (codes - pred.qtype.zero_point)
    assert np.sqrt(np.mean((qat - integer) ** 2)) < 0.1     # a few output codes at most
    again = IntModel.load(intmodel.save(tmp_path))            # file format v2: the graph itself
    assert [o.spec for o in again.ops] == [o.spec for o in intmodel.ops]


class OddShape(torch.nn.Module):
    """One feature, a longer window, a learned position embedding, batch-norm after the
    attention, a ReLU fused into its linear, and a two-layer head forecasting two steps."""

    def __init__(self, window=32, d=4):
        super().__init__()
        self.input, self.embed = cq.Input(1, window, bits=6), cq.Linear(1, d, bits=6)
        self.pe = cq.PositionalEncoding(window, d, bits=6, learned=True)
        self.attn, self.add = cq.MultiHeadAttention(d, heads=1, bits=6), cq.Add(bits=6)
        self.norm, self.drop = cq.BatchNorm(d, bits=6), torch.nn.Dropout(0.1)
        self.pool = cq.MeanPool(bits=6)
        self.hidden, self.out = cq.Linear(d, 3, bits=6, relu=True), cq.Linear(3, 2, bits=6)

    def forward(self, x):
        h = self.pe(self.embed(self.input(x)))
        h = self.norm(self.add(h, self.attn(h)))
        return self.out(self.hidden(self.pool(self.drop(h))))


def test_one_feature_a_long_window_and_a_two_step_head_are_bit_exact():
    torch.manual_seed(1)
    x = torch.randn(64, 32, 1)
    model = cq.fit(OddShape(), x, torch.randn(64, 2), epochs=1, qat_epochs=0)
    intmodel = cq.to_intmodel(model, x)
    assert intmodel.horizon == 2 and intmodel.config["features"] == 1
    assert intmodel.op("hidden").params["relu"] and intmodel.op("norm").kind == "affine"
    trained = quantize(model.pe.pe, model.pe.pe_quant.qparams()).numpy()
    assert (intmodel.constants["pe.pe"] == trained).all()
    assert not torch.equal(model.pe.pe, sinusoidal_pe(32, 4))     # it was trained
    xq = intmodel.quantize_input(x[:1].numpy())
    acc = Accelerator(intmodel)
    got, cycles = run_stream_block(acc, {"i": xq.reshape(-1).tolist()}, {"o": 2})
    assert got["o"] == intmodel.pred_codes(xq).reshape(-1).tolist()
    assert cycles == acc.cycles()


class VectorHead(torch.nn.Module):
    """A ReLU table on the tokens, then a residual MLP on the pooled vector."""

    def __init__(self, d=4):
        super().__init__()
        self.input, self.embed, self.relu = cq.Input(3, 5), cq.Linear(3, d), cq.ReLU()
        self.pool, self.up, self.act = cq.MeanPool(), cq.Linear(d, 6), cq.GELU()
        self.down, self.add, self.head = cq.Linear(6, d), cq.Add(), cq.Linear(d, 1)

    def forward(self, x):
        p = self.pool(self.relu(self.embed(self.input(x))))
        return self.head(self.add(p, self.down(self.act(self.up(p)))))


def test_a_residual_on_the_pooled_vector_is_bit_exact():
    torch.manual_seed(0)
    x = torch.randn(32, 5, 3)
    model = cq.fit(VectorHead(), x, torch.randn(32), epochs=1)
    intmodel = cq.to_intmodel(model, x)
    assert intmodel.op("relu").kind == "lut" and intmodel.op("add").spec.shape == (4,)
    with cq.integer_valued(model, x[:8]):       # what fit's QAT epochs train: the integer model
        out = model(x[:8])
    pred = intmodel.tensors["pred"]
    codes = intmodel.pred_codes(intmodel.quantize_input(x[:8].numpy())).numpy()
    assert np.allclose(out.detach().numpy().reshape(-1), pred.scale * (codes - pred.qtype.zero_point),
                       rtol=0, atol=1e-3 * pred.scale)     # float32 sums: far below a code
    check_accelerator(intmodel, intmodel.quantize_input(x[:2].numpy()), stall_out=0.0)


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


def test_a_calibrated_module_keeps_its_ranges():
    """Conversion calibrates a module only if it has not been: the ranges QAT trained with are
    the integer model's, whatever unused layer the module also holds."""
    model = Net()                      # its Conv1d is never called; add an unused layer too
    model.spare = cq.LayerNorm(4)
    cq.calibrate(model, torch.randn(16, 8, 1))
    before = {n: (float(q.lo), float(q.hi)) for n, q in cq._quant_points(model).items()}
    cq.to_intmodel(model, torch.randn(16, 8, 1) * 5)
    assert {n: (float(q.lo), float(q.hi)) for n, q in cq._quant_points(model).items()
            if not n.endswith(".weight")} == {n: r for n, r in before.items()
                                              if not n.endswith(".weight")}


def test_the_window_must_enter_through_input_and_leave_as_one_vector():
    class NoInput(Net):
        def forward(self, x):
            return self.head(self.pool(self.lin(x)))

    class TokensOut(Net):
        def forward(self, x):
            return self.lin(self.input(x))

    with pytest.raises(cq.CompositionError, match=r"Input\(features, window\)"):
        cq.to_intmodel(NoInput(), torch.randn(4, 8, 1))
    class Twice(Net):
        def middle(self, h):
            return self.lin(h)

    class NormOfPooled(Net):
        def __init__(self):
            super().__init__()
            self.norm = cq.LayerNorm(4)

        def forward(self, x):
            return self.head(self.norm(self.pool(self.lin(self.input(x)))))

    with pytest.raises(cq.CompositionError, match=r"'norm' reads 'pool' of shape \(4,\)"):
        cq.to_intmodel(NormOfPooled(), torch.randn(4, 8, 1))
    with pytest.raises(cq.CompositionError, match=r"one vector"):
        cq.to_intmodel(TokensOut(), torch.randn(4, 8, 1))
    with pytest.raises(cq.CompositionError, match=r"layer 'lin' is called twice at .*self.lin\(h\)"):
        cq.to_intmodel(Twice(), torch.randn(4, 8, 1))
    assert len(cq.to_intmodel(Net(), torch.randn(4, 8, 1)).ops) == 3


class ComposedForecaster(torch.nn.Module):
    """The CLI's forecaster (model.transformer.Forecaster, a level forecast) written with the
    composed layers."""

    def __init__(self, c):
        super().__init__()
        self.input, self.proj = cq.Input(c.features, c.window), cq.Linear(c.features, c.d_model)
        self.pe = cq.PositionalEncoding(c.window, c.d_model)
        self.layers = torch.nn.ModuleList(cq.EncoderBlock(c.d_model, c.heads, c.ffn, c.norm, c.activation)
                                          for _ in range(c.layers))
        self.pool, self.head = cq.MeanPool(), cq.Linear(c.d_model, c.horizon)

    def forward(self, x):
        h = self.pe(self.proj(self.input(x)))
        for layer in self.layers:
            h = layer(h)
        return self.head(self.pool(h))


def copy_forecaster(f, c):
    """A composed twin of the calibrated forecaster ``f``: its weights, norms and ranges."""
    twin = ComposedForecaster(f.config)
    cq.trace(twin)
    lin = {"proj": (twin.proj, f.proj), "pred": (twin.head, f.head)}
    fq = {"input": twin.input.out, "proj": twin.proj.out, "pe": twin.pe.pe_quant,
          "embed": twin.pe.out, "pooled": twin.pool.out, "pred": twin.head.out}
    for i, (t, s) in enumerate(zip(twin.layers, f.layers)):
        p, table = f"l{i}.", not isinstance(t.ffn.act, torch.nn.Identity)
        lin.update({p + "q": (t.attn.q, s.q), p + "k": (t.attn.k, s.k), p + "v": (t.attn.v, s.v),
                    p + "attn_out": (t.attn.o, s.o), p + "ffn1": (t.ffn.up, s.ffn1),
                    p + "ffn_out": (t.ffn.down, s.ffn2)})
        fq.update({p + "q": t.attn.q_out, p + "k": t.attn.k_out, p + "v": t.attn.v_out,
                   p + "scores": t.attn.scores_out, p + "attn": t.attn.attn_out,
                   p + "context": t.attn.context_out, p + "attn_out": t.attn.out,
                   p + "res1": t.res1.out, p + "norm1": t.norm1.out, p + "ffn_out": t.ffn.down.out,
                   p + "res2": t.res2.out, p + "norm2": t.norm2.out,
                   p + "ffn_hidden": t.ffn.act.out if table else t.ffn.up.out})
        if table:
            fq[p + "ffn_pre"] = t.ffn.up.out
        t.norm1.norm.load_state_dict(s.norm1.state_dict())
        t.norm2.norm.load_state_dict(s.norm2.state_dict())
    with torch.no_grad():
        for t, s in lin.values():
            (t.linear if isinstance(t, cq.Linear) else t).weight.copy_(s.weight)
            (t.linear if isinstance(t, cq.Linear) else t).bias.copy_(s.bias)
        for name, m in fq.items():
            src = f.fq_point(name)
            m.lo.copy_(src.lo), m.hi.copy_(src.hi), m.n_obs.copy_(src.n_obs)
    return twin


@pytest.mark.parametrize("config", [
    dict(),
    dict(norm="layernorm", activation="gelu", heads=2, layers=2, d_model=8, ffn=12, horizon=3),
])
def test_the_forecaster_composed_converts_to_the_same_integer_model(config):
    """One conversion path: the CLI's forecaster written with the composed layers converts
    (trace, registry) to the integer model model.convert makes of it, operator by operator
    (names aside), with the same outputs."""
    from model.convert import to_intmodel
    from model.transformer import ModelConfig
    from tests.test_convert import calibrated
    cfg = ModelConfig(forecast="level", **config)
    f, x = calibrated(cfg, 8, windows=128)
    norm = ({"mean": np.zeros(cfg.features), "std": np.ones(cfg.features)}, {"mean": 0.0, "std": 1.0})
    want = to_intmodel(f, *norm)
    got = cq.to_intmodel(copy_forecaster(f, cfg), x)
    assert [o.kind for o in got.ops] == [o.kind for o in want.ops]
    names = {"input": "input", "pe.pe": "pe"} | {g.output: w.output for g, w in zip(got.ops, want.ops)}
    for g, w in zip(got.ops, want.ops):
        assert tuple(names[n] for n in g.spec.inputs) == w.spec.inputs
        assert (g.spec.shape, g.params, sorted(g.arrays)) == (w.spec.shape, w.params, sorted(w.arrays))
        assert all((g.arrays[k] == w.arrays[k]).all() for k in g.arrays), g.output
    for n, t in got.tensors.items():
        assert (t.shape, t.qtype, t.scale) == (want.tensors[names[n]].shape,) + \
            (want.tensors[names[n]].qtype, want.tensors[names[n]].scale)
    assert (got.constants["pe.pe"] == want.constants["pe"]).all()
    xq = want.quantize_input(x[:32].numpy())
    assert torch.equal(got.pred_codes(xq), want.pred_codes(xq))


def test_a_plain_configuration_sets_the_precision_by_name():
    model = OddShape()
    names = cq.quant_names(model)
    assert {"input", "embed", "embed.weight", "attn.q", "attn.attn", "attn.weight", "pred",
            "pred.weight", "hidden"} <= set(names)
    cq.configure(model, cq.QuantConfig(default_bits=8, bits={"attn.*": 5, "*.weight": 4,
                                                              "pred": 7}))
    intmodel = cq.to_intmodel(model, torch.randn(16, 32, 1))
    bits = {n: t.qtype.bits for n, t in intmodel.tensors.items()}
    assert bits["attn.q"] == bits["attn.attn"] == 5 and bits["pred"] == 7 and bits["embed"] == 8
    assert intmodel.op("hidden").params["weight_type"]["bits"] == 4
    with pytest.raises(ValueError, match="matches no tensor"):
        cq.configure(OddShape(), cq.QuantConfig(bits={"atn.*": 5}))


def test_two_parallel_branches_summed_become_bit_exact_hardware():
    """The README's word: two attentions on one stream, summed, are a join of parallel
    branches; the accelerator builds it (a window FIFO in front of each attention and on each
    operand of the sum), bit-exact with exact cycles."""
    class Parallel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.input, self.embed = cq.Input(2, 6), cq.Linear(2, 4)
            self.a, self.b, self.add = cq.MultiHeadAttention(4), cq.MultiHeadAttention(4, 2), cq.Add()
            self.pool, self.head = cq.MeanPool(), cq.Linear(4, 1)

        def forward(self, x):
            h = self.embed(self.input(x))
            return self.head(self.pool(self.add(self.a(h), self.b(h))))

    intmodel = cq.to_intmodel(Parallel(), torch.randn(8, 6, 2))
    assert intmodel.op("add").spec.inputs == ("a", "b")
    q = intmodel.qtype("input")
    windows = np.random.default_rng(0).integers(q.qmin, q.qmax + 1, size=(2, 6, 2))
    check_accelerator(intmodel, windows, stall_in=0.3, stall_out=0.4)
    acc = Accelerator(intmodel)
    mark_used(acc)                  # looked at, not simulated
    assert sorted(n.name for n in acc.nodes if n.role == "fifo") == [
        "a_attention_in_fifo", "add_fifo0", "add_fifo1", "b_attention_in_fifo"]
