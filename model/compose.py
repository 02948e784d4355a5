"""Compose accelerators in PyTorch: any network of intformer's layers becomes an integer model.

A user writes an ordinary ``nn.Module`` whose ``forward`` calls the layers below in any acyclic
arrangement (residuals, several blocks, a different head, layers nested in the user's own
modules); :func:`fit` trains it (float, then quantisation-aware), :func:`to_intmodel` turns it
into an :class:`~model.intmodel.IntModel` whose graph is the module's graph, and
:class:`hw.accelerator.Accelerator` builds the hardware from that graph as for any model::

    model = MyNet()                                   # an nn.Module of compose layers
    fit(model, X, y)                                  # or your own training loop + calibrate()
    intmodel = to_intmodel(model, X[:256], data=data)
    SimulatedAccelerator(intmodel).predict(raw) == intmodel.predict(raw)

How the graph is found: **torch.fx symbolic tracing**. The layers of this module are leaves
(their ``forward`` is not traced into); the user's own modules (a block, a feed-forward made of
layers) are traced through. Tracing records the dataflow without running data, so the graph is
exactly what ``forward`` computes for every window, and anything the integer model could not
compute shows up as a node of its own: a PyTorch function (``torch.sin``, ``x + y``), a method
(``x.mean()``), another module (``nn.Conv1d``), or, raised by fx itself, control flow on
tensor values. Each is refused by :class:`CompositionError`, naming the operation and where it
is in ``forward`` and listing the supported layers. (An explicit walk of ``named_children``
would see the modules but not how ``forward`` wires them.)

Each layer owns its quantisation points (an output :class:`~model.qat.FakeQuant`, its weights',
attention's internal tensors), so the user names none; they are named after the layer's path
in the module (``blocks.0.attn.q``, ``embed.weight``; the returned tensor's layer is
``pred``) when the module is first traced: the names the integer model's tensors carry, and
the keys of a plain quantisation configuration (:func:`configure`). Each layer's
:meth:`Layer.emit` writes the operators it computes as registry kinds (:mod:`model.ops`) and
the conversion fills in their integer parameters with the registry's own ``convert``, as
:func:`model.convert.to_intmodel` does for the fixed-shape forecaster: there is no second list
of operators here (the forecaster written with these layers converts to the identical integer
model; tests/test_compose.py). :func:`fit`'s QAT epochs are integer-valued
(:func:`integer_valued`), as the forecaster's training is.

Layers: :class:`Input` (the window, first), :class:`Linear` (input projection / embedding of
the features, any token-wise or pooled linear, optional fused ReLU), :class:`PositionalEncoding`,
:class:`MultiHeadAttention` (Q/K/V, scores, integer softmax, context, output linear),
:class:`LayerNorm`, :class:`BatchNorm` (folded into a per-channel affine),
:class:`Activation` (:class:`ReLU`, :class:`GELU`, :class:`SiLU`: any registered activation,
a table in hardware), :class:`Add` (two tensors of one shape: residuals), :class:`MeanPool`
(over the window), and the convenience modules :class:`FeedForward` and
:class:`EncoderBlock` (the CLI forecaster's layer), made of the others and traced through.
``nn.Identity`` and ``nn.Dropout`` pass their input on.

A new layer is a :class:`Layer` subclass: its ``forward`` (float / QAT, through its own
quantisers), ``quant_points`` and ``emit``, which writes registry kinds only; an operation the
registry lacks is a new kind there first (one module of :mod:`model.ops` with its integer
function, converter, synthetic generator and hardware block), never a case here.

Limits (of the hardware generator, :mod:`hw.accelerator`, not of this module): an
:class:`Add` in hardware needs one operand to descend from the other through a closed body
(a residual); two parallel branches summed convert to an integer model but the accelerator
refuses them, naming the join. A softmax outside attention is not offered: the hardware's
softmax block takes its rows from an attention's (heads, L, L) shape. The module's output
must be one vector per window (after a :class:`MeanPool`, a :class:`Linear` to the horizon):
the integer model's ``pred``; classification and anomaly heads (the registry's ``argmax`` and
``threshold``) have no layer here yet.
"""
from __future__ import annotations

import contextlib
import math
import operator
import re
import traceback

import numpy as np
import torch
from torch import fx, nn

from . import ops as registry
from .convert import ConvertContext
from .intmodel import IntModel, Op, OpSpec, TensorInfo
from .qat import (FakeQuant, QLinear, QuantConfig, check_bits, integer_softmax, quantize,
                  set_observing, set_quantising)
from .transformer import Norm, sinusoidal_pe

__all__ = ["CompositionError", "QuantConfig", "Layer", "Input", "Linear", "PositionalEncoding",
           "MultiHeadAttention", "LayerNorm", "BatchNorm", "Activation", "ReLU", "GELU", "SiLU",
           "Add", "MeanPool", "FeedForward", "EncoderBlock", "supported", "configure",
           "quant_names", "calibrate", "fit", "integer_valued", "to_intmodel"]


class CompositionError(ValueError):
    """A module that cannot become an integer model: names the operation and what is supported."""


def _fake_quant(bits: int, *, constant: bool = False, fixed_softmax: bool = False) -> FakeQuant:
    # Named for real when the module is traced (_prepare): the layer does not know its path in
    # the user's module yet.
    return FakeQuant("?", bits, "adaptive", "current" if constant else "ema",
                     fixed_softmax=fixed_softmax)


def _qlinear(n_in: int, n_out: int, bits: int) -> QLinear:
    return QLinear(n_in, n_out, "?", QuantConfig(default_bits=bits, learn_ranges=False))


class Layer(nn.Module):
    """A quantisation-aware layer the integer model has operators for.

    ``quant_points()``: its quantisers by the suffix of their tensor's name ("" is the layer's
    output); ``emit(graph, inputs, name)``: the operators it computes, written into ``graph``
    (:class:`_Graph`) from the tensors ``inputs``; returns the tensor it outputs."""

    def __init__(self):
        super().__init__()
        # The quantiser of each input tensor (set when the module is traced), for the biases'
        # scale s_w * s_x. A tuple: not registered as submodules of this layer.
        self._input_quant: tuple = ()

    def input_quant(self, k: int = 0) -> FakeQuant | None:
        return self._input_quant[k] if len(self._input_quant) > k else None

    def quant_points(self) -> dict:
        return {"": self.out}

    def emit(self, graph: "_Graph", inputs: list, name: str) -> str:
        raise NotImplementedError


class Input(Layer):
    """The window (B, ``window``, ``features``) of normalised features, quantised: the first
    layer of every composed module; its tensor is the integer model's ``input``."""

    def __init__(self, features: int, window: int, bits: int = 8):
        super().__init__()
        self.features, self.window = int(features), int(window)
        self.out = _fake_quant(bits)

    def forward(self, x):
        if x.dim() != 3 or tuple(x.shape[1:]) != (self.window, self.features):
            raise ValueError(f"expected windows (B, {self.window}, {self.features}), "
                             f"got {tuple(x.shape)}")
        return self.out(x)

    def emit(self, graph, inputs, name):
        return "input"      # no operator: the streamed input itself


class Linear(Layer):
    """``y = x W^T + b`` on the last axis (each token of a (L, n) tensor, or a pooled vector);
    ``relu=True`` clamps it in the same operator. Also the input projection (embedding) of
    the features."""

    def __init__(self, in_features: int, out_features: int, bits: int = 8, relu: bool = False):
        super().__init__()
        self.linear = _qlinear(in_features, out_features, bits)
        self.relu = bool(relu)
        self.out = _fake_quant(bits)

    def quant_points(self):
        return {"": self.out, ".weight": self.linear.wq}

    def forward(self, x):
        y = self.linear(x, self.input_quant())
        return self.out(torch.relu(y) if self.relu else y)

    def emit(self, graph, inputs, name):
        dims = {"in": self.linear.in_features, "out": self.linear.out_features}
        if self.relu:
            dims["relu"] = True
        return graph.op("linear", inputs, name, graph.shape(inputs[0])[:-1] + (dims["out"],),
                        dims, linear=self.linear)


class PositionalEncoding(Layer):
    """Adds the sinusoidal positional encoding (a constant of ``window`` x ``d``);
    ``learned=True``: a trained embedding of the positions, starting sinusoidal (a constant of
    the integer model all the same)."""

    def __init__(self, window: int, d: int, bits: int = 8, learned: bool = False):
        super().__init__()
        if learned:
            self.pe = nn.Parameter(sinusoidal_pe(window, d))
        else:
            self.register_buffer("pe", sinusoidal_pe(window, d))
        self.pe_quant = _fake_quant(bits, constant=True)
        self.out = _fake_quant(bits)

    def quant_points(self):
        return {"": self.out, ".pe": self.pe_quant}

    def forward(self, x):
        return self.out(x + self.pe_quant(self.pe))

    def emit(self, graph, inputs, name):
        pe = graph.constant(name + ".pe", quantize(self.pe, self.pe_quant.qparams()))
        return graph.op("add", [inputs[0], pe], name, graph.shape(inputs[0]))


class MultiHeadAttention(Layer):
    """Self-attention over the window, ``heads`` heads of ``d / heads`` channels: Q, K, V
    linears, scores ``q k^T / sqrt(d_head)``, the integer softmax (:func:`model.intops.softmax`,
    the same in QAT), context, output linear. One attention block in hardware."""

    def __init__(self, d: int, heads: int = 1, bits: int = 8):
        super().__init__()
        if d % heads:
            raise ValueError(f"d ({d}) must be divisible by heads ({heads})")
        self.d, self.heads = int(d), int(heads)
        self.q, self.k, self.v, self.o = (_qlinear(d, d, bits) for _ in range(4))
        self.q_out, self.k_out, self.v_out, self.scores_out, self.context_out = (
            _fake_quant(bits) for _ in range(5))
        self.attn_out = _fake_quant(bits, fixed_softmax=True)
        self.out = _fake_quant(bits)

    def quant_points(self):
        return {"": self.out, ".q": self.q_out, ".k": self.k_out, ".v": self.v_out,
                ".scores": self.scores_out, ".attn": self.attn_out, ".context": self.context_out,
                ".q.weight": self.q.wq, ".k.weight": self.k.wq, ".v.weight": self.v.wq,
                ".weight": self.o.wq}

    def forward(self, x):
        B, L, d = x.shape
        H, x_fq = self.heads, self.input_quant()
        heads = [f(lin(x, x_fq)).view(B, L, H, d // H).transpose(1, 2)
                 for lin, f in ((self.q, self.q_out), (self.k, self.k_out), (self.v, self.v_out))]
        qh, kh, vh = heads
        scores = self.scores_out(qh @ kh.transpose(-1, -2) * (1.0 / math.sqrt(d // H)))
        if self.scores_out.quantising and self.attn_out.quantising:
            attn = self.attn_out(integer_softmax(scores, self.scores_out.qparams(), self.attn_out.bits))
        else:
            attn = self.attn_out(torch.softmax(scores, dim=-1))
        context = self.context_out((attn @ vh).transpose(1, 2).reshape(B, L, d))
        return self.out(self.o(context, self.context_out))

    def emit(self, graph, inputs, name):
        x, (L, d), H = inputs[0], graph.tokens(inputs[0], name), self.heads
        if d != self.d:
            raise CompositionError(f"{name!r}: attention of {self.d} channels reads {x!r} of {d}")
        p = name + "."
        for part, lin in (("q", self.q), ("k", self.k), ("v", self.v)):
            graph.op("linear", [x], p + part, (L, d), {"in": d, "out": d}, linear=lin)
        graph.op("scores", [p + "q", p + "k"], p + "scores", (H, L, L), {"heads": H})
        graph.op("softmax", [p + "scores"], p + "attn", (H, L, L))
        graph.op("context", [p + "attn", p + "v"], p + "context", (L, d), {"heads": H})
        return graph.op("linear", [p + "context"], name, (L, d), {"in": d, "out": d}, linear=self.o)


class _Norm(Layer):
    kind = ""

    def __init__(self, d: int, bits: int, eps: float, momentum: float):
        super().__init__()
        self.norm = Norm(d, self.norm_kind, eps, momentum)
        self.out = _fake_quant(bits)

    def forward(self, x):
        return self.out(self.norm(x))

    def emit(self, graph, inputs, name):
        return graph.op(self.kind, inputs, name, graph.tokens(inputs[0], name), norm=self.norm)


class LayerNorm(_Norm):
    """Layer-norm over the channels of each token (integer mean, standard deviation, affine)."""
    kind, norm_kind = "layernorm", "layernorm"

    def __init__(self, d: int, bits: int = 8, eps: float = 1e-5):
        super().__init__(d, bits, eps, 0.1)


class BatchNorm(_Norm):
    """Batch-norm over the channels (statistics over batch and time); a per-channel affine of
    its running statistics in the integer model (frozen by :func:`fit` for QAT)."""
    kind, norm_kind = "affine", "batchnorm"

    def __init__(self, d: int, bits: int = 8, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__(d, bits, eps, momentum)


class Activation(Layer):
    """An element-wise activation registered in :mod:`model.ops` (``relu``, ``gelu``, ``silu``,
    ...): a table over its input's codes in the integer model and the hardware."""

    def __init__(self, function: str, bits: int = 8):
        super().__init__()
        self.function = registry.activation(function).name     # raises for an unknown one
        self.out = _fake_quant(bits)

    def forward(self, x):
        return self.out(registry.activation(self.function).function(x))

    def emit(self, graph, inputs, name):
        return graph.op("lut", inputs, name, graph.shape(inputs[0]), {"function": self.function})


class ReLU(Activation):
    def __init__(self, bits: int = 8):
        super().__init__("relu", bits)


class GELU(Activation):
    def __init__(self, bits: int = 8):
        super().__init__("gelu", bits)


class SiLU(Activation):
    def __init__(self, bits: int = 8):
        super().__init__("silu", bits)


class Add(Layer):
    """``a + b`` of two tensors of one shape (a residual), requantised to its own scale."""

    def __init__(self, bits: int = 8):
        super().__init__()
        self.out = _fake_quant(bits)

    def forward(self, a, b):
        return self.out(a + b)

    def emit(self, graph, inputs, name):
        if len(inputs) != 2 or graph.shape(inputs[0]) != graph.shape(inputs[1]):
            raise CompositionError(f"{name!r} adds {[(n, graph.shape(n)) for n in inputs]}: "
                                   f"two tensors of one shape")
        return graph.op("add", inputs, name, graph.shape(inputs[0]))


class MeanPool(Layer):
    """The mean over the window: (L, d) -> (d,)."""

    def __init__(self, bits: int = 8):
        super().__init__()
        self.out = _fake_quant(bits)

    def forward(self, x):
        return self.out(x.mean(dim=1))

    def emit(self, graph, inputs, name):
        L, d = graph.tokens(inputs[0], name)
        return graph.op("mean_pool", inputs, name, (d,), {"length": L})


class FeedForward(nn.Module):
    """``Linear(d, hidden) -> activation -> Linear(hidden, d)``: a module made of layers (traced
    through, like any of the user's own). ReLU is fused into the first linear."""

    def __init__(self, d: int, hidden: int, activation: str = "relu", bits: int = 8):
        super().__init__()
        fused = not registry.activation(activation).table
        self.up = Linear(d, hidden, bits, relu=fused)
        self.act = nn.Identity() if fused else Activation(activation, bits)
        self.down = Linear(hidden, d, bits)

    def forward(self, x):
        return self.down(self.act(self.up(x)))


class EncoderBlock(nn.Module):
    """The CLI forecaster's encoder layer (:mod:`model.transformer`), post-norm, as layers:
    ``norm1(x + attention(x))``, then ``norm2(h + ffn(h))``; ``norm`` is ``"batchnorm"`` or
    ``"layernorm"``."""

    def __init__(self, d: int, heads: int, ffn: int, norm: str = "batchnorm",
                 activation: str = "relu", bits: int = 8):
        super().__init__()
        make_norm = {"batchnorm": BatchNorm, "layernorm": LayerNorm}[norm]
        self.attn, self.res1, self.norm1 = MultiHeadAttention(d, heads, bits), Add(bits), make_norm(d, bits)
        self.ffn, self.res2, self.norm2 = FeedForward(d, ffn, activation, bits), Add(bits), make_norm(d, bits)

    def forward(self, x):
        h = self.norm1(self.res1(x, self.attn(x)))
        return self.norm2(self.res2(h, self.ffn(h)))


#: Modules that pass their input on (in eval mode), besides the layers.
_PASS_THROUGH = (nn.Identity, nn.Dropout)


def supported() -> list:
    """Names of the layers a composed module may call (what the errors list)."""
    return [c.__name__ for c in (Input, Linear, PositionalEncoding, MultiHeadAttention, LayerNorm,
                                 BatchNorm, Activation, ReLU, GELU, SiLU, Add, MeanPool)] + \
           [f"{c.__name__} (passes its input on)" for c in _PASS_THROUGH]


# -- tracing ----------------------------------------------------------------------------------

class _Tracer(fx.Tracer):
    """Layers are leaves; everything else (the user's modules) is traced through."""

    def __init__(self):
        super().__init__()
        self.record_stack_traces = True

    def is_leaf_module(self, m, qualname):
        return isinstance(m, (Layer, *_PASS_THROUGH)) or super().is_leaf_module(m, qualname)


_HINTS = {operator.add: "a sum is the layer Add(), which owns its quantisation point",
          torch.add: "a sum is the layer Add(), which owns its quantisation point",
          "mean": "the mean over the window is the layer MeanPool()",
          torch.relu: "use ReLU() or Linear(..., relu=True)",
          torch.softmax: "softmax is inside MultiHeadAttention"}


def _where(text: str | None) -> str:
    """``file:line: code`` of the user's line a node came from (fx's recorded stack, whose
    innermost frames are fx's own)."""
    frames = re.findall(r'File "([^"]+)", line (\d+), in [^\n]*\n\s*([^\n]*)', text or "")
    frames = [f for f in frames if "/torch/" not in f[0].replace("\\", "/")]
    return f" at {frames[-1][0]}:{frames[-1][1]}: {frames[-1][2].strip()}" if frames else ""


def _refuse(what: str, where: str = "", hint: str = "") -> CompositionError:
    return CompositionError(
        f"{what}{where} cannot become an integer model"
        + (f" ({hint})" if hint else "")
        + f". A composed module's forward may call only these layers of model.compose: "
        + ", ".join(supported()) + "; and combine them in any acyclic arrangement "
        "without control flow on tensor values")


def trace(module: nn.Module) -> fx.GraphModule:
    """The module's dataflow graph (torch.fx), every node checked to be a supported layer."""
    tracer = _Tracer()
    try:
        graph = tracer.trace(module)
    except fx.proxy.TraceError as e:
        frames = [f for f in traceback.extract_tb(e.__traceback__)
                  if "/torch/" not in f.filename.replace("\\", "/")]
        where = f" at {frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line}" if frames else ""
        raise _refuse(f"control flow on a tensor's value ({e})", where,
                      "the integer model computes one fixed graph for every window") from None
    gm = fx.GraphModule(module, graph)
    modules = dict(gm.named_modules())
    called = set()
    for node in graph.nodes:
        where = _where(node.stack_trace)
        if node.op in ("placeholder", "output"):
            continue
        if node.op == "call_module":
            m = modules[node.target]
            if not isinstance(m, (Layer, *_PASS_THROUGH)):
                twin = type(m).__name__ if type(m).__name__ in supported() else ""
                raise _refuse(f"module {node.target!r} ({type(m).__name__})", where,
                              f"use model.compose.{twin}, which owns its quantisation points"
                              if twin else "")
            if isinstance(m, Layer) and node.target in called:
                raise CompositionError(f"layer {node.target!r} is called twice{where}: each call "
                                       f"needs a layer of its own (a layer owns the quantisation "
                                       f"point of its output, and names its tensor)")
            called.add(node.target)
            if node.kwargs or any(not isinstance(a, fx.Node) for a in node.args):
                raise _refuse(f"calling {node.target!r} with non-tensor arguments "
                              f"{[a for a in node.args if not isinstance(a, fx.Node)]}{list(node.kwargs)}",
                              where)
            continue
        target = node.target
        module_name = (getattr(target, "__module__", "") or "").replace("_operator", "operator")
        name = target if isinstance(target, str) else f"{module_name}.{getattr(target, '__name__', target)}"
        kind = {"call_function": "function", "call_method": "tensor method",
                "get_attr": "attribute"}.get(node.op, node.op)
        raise _refuse(f"{kind} {name.lstrip('.')}", where, _HINTS.get(target, ""))
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise CompositionError(f"a composed module takes one input, the window; forward takes "
                               f"{[n.target for n in placeholders]}")
    return gm


def _output_producer(gm: fx.GraphModule, modules: dict) -> fx.Node:
    """The node whose tensor the module returns (past pass-through modules): the integer
    model's ``pred``."""
    result = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    if not isinstance(result, fx.Node):
        raise CompositionError(f"a composed module returns one tensor, got {result!r}")
    while result.op == "call_module" and isinstance(modules[result.target], _PASS_THROUGH):
        result = result.args[0]
    return result


def _prepare(module: nn.Module) -> fx.GraphModule:
    """Trace, name every quantisation point after its layer's path, and give each layer the
    quantisers of its inputs (its biases are quantised at s_w * s_x)."""
    gm = trace(module)
    modules = dict(gm.named_modules())
    producer = _output_producer(gm, modules)
    output_layer = modules.get(producer.target) if producer.op == "call_module" else None
    for path, m in module.named_modules():
        if isinstance(m, Layer):
            base = "input" if isinstance(m, Input) else "pred" if m is output_layer else path
            for suffix, fq in m.quant_points().items():
                fq.name = base + suffix
    quant_of = {}
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        m = modules[node.target]
        ins = [quant_of.get(a) for a in node.args]
        raw = [a for a in node.args if a.op == "placeholder"]
        if raw and not isinstance(m, Input):
            raise CompositionError(f"{node.target!r} reads the raw window: quantise it with "
                                   f"Input(features, window) first")
        if isinstance(m, Layer):
            m._input_quant = tuple(ins)
            quant_of[node] = m.out
        else:                               # passes its input on
            quant_of[node] = ins[0] if ins else None
    inputs = [m for m in module.modules() if isinstance(m, Input)]
    first = [node for node in gm.graph.nodes if node.op == "call_module"][:1]
    if not first or not isinstance(modules[first[0].target], Input) or len(inputs) != 1:
        raise CompositionError("a composed module calls one Input(features, window) layer, first, "
                               "on the window")
    return gm


def configure(module: nn.Module, quant: QuantConfig) -> nn.Module:
    """Set the precision of a composed module's quantisation points from a plain
    :class:`~model.qat.QuantConfig` (bits and schemes by tensor name or pattern, as
    ``--bits-map`` does for the CLI's model: ``{"attn.*": 6, "*.weight": 4}``), before it is
    calibrated. The names are the layers' paths (``quant_names``); a key matching none is an
    error. The attention's probabilities keep their fixed format (only their bits are set)."""
    _prepare(module)
    points = _quant_points(module)
    quant.check_names(points)
    for name, fq in points.items():
        if int(fq.n_obs) and fq.observer != "current":
            raise ValueError(f"{name!r} is calibrated already: configure before calibrating")
        fq.bits = check_bits(quant.bits_for(name), f"bit-width of {name!r}")
        if not fq.fixed_softmax:
            fq.scheme = quant.scheme_for(name)
    return module


def quant_names(module: nn.Module) -> list:
    """The names of a composed module's quantisation points (what :func:`configure` keys on)."""
    _prepare(module)
    return list(_quant_points(module))


def _quant_points(module: nn.Module) -> dict:
    return {fq.name: fq for m in module.modules() if isinstance(m, Layer)
            for fq in m.quant_points().values()}


# -- training and calibration -----------------------------------------------------------------

def _set_freeze_bn(module: nn.Module, flag: bool):
    for m in module.modules():
        if isinstance(m, Norm):
            m.freeze_bn = bool(flag)


@torch.no_grad()
def calibrate(module: nn.Module, windows, batch: int = 256) -> nn.Module:
    """Observe every quantisation point's range on ``windows`` (normalised, (N, L, F)) in
    float, then switch quantisation on (what QAT fine-tunes and the conversion reads)."""
    _prepare(module)
    x = torch.as_tensor(np.asarray(windows, np.float32))
    was_training = module.training
    module.eval()
    set_quantising(module, False)
    set_observing(module, True)
    for i in range(0, len(x), batch):
        module(x[i:i + batch])
    set_observing(module, False)
    set_quantising(module, True)
    module.train(was_training)
    return module


def fit(module: nn.Module, windows, targets, *, epochs: int = 3, qat_epochs: int = 1,
        lr: float = 3e-3, batch: int = 64, calibration: int = 512, seed: int = 0) -> nn.Module:
    """A short training of a composed module on normalised ``windows`` (N, L, F) and
    ``targets`` (N,) or (N, horizon): Adam on the mean squared error, ``epochs`` in float,
    then :func:`calibrate` on the first ``calibration`` windows and ``qat_epochs`` of
    quantisation-aware fine-tuning (batch-norm statistics frozen), in which every tensor
    takes the integer model's value (:func:`integer_valued`). Returns ``module``."""
    _prepare(module)
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(np.asarray(windows, np.float32))
    y = torch.as_tensor(np.asarray(targets, np.float32)).reshape(len(x), -1)
    opt = torch.optim.Adam(module.parameters(), lr=lr)

    def run(n_epochs, exact=False):
        for _ in range(n_epochs):
            for idx in torch.randperm(len(x), generator=gen).split(batch):
                opt.zero_grad()
                if exact:
                    with integer_valued(module, x[idx]):
                        out = module(x[idx])
                else:
                    out = module(x[idx])
                loss = torch.mean((out.reshape(len(idx), -1) - y[idx]) ** 2)
                loss.backward()
                opt.step()

    module.train()
    run(epochs)
    calibrate(module, x[:calibration])
    _set_freeze_bn(module, True)
    module.train()
    run(qat_epochs, exact=True)
    module.eval()
    return module


@contextlib.contextmanager
def integer_valued(module: nn.Module, windows):
    """Within it, a forward pass of the calibrated, quantising ``module`` on ``windows`` gives
    every tensor the integer model's value (each quantiser returns the codes the module's
    integer model computes, with its own straight-through gradient), as the CLI's forecaster
    does in QAT: fake quantisation requantises in floating point, the integer model in fixed
    point, and the two differ by a code on a fraction of the values, enough to move an output."""
    windows = torch.as_tensor(np.asarray(windows, np.float32))
    was_training = module.training
    intmodel = to_intmodel(module, windows[:1])
    module.train(was_training)
    points = _quant_points(module)
    codes = intmodel.forward(quantize(windows, points["input"].qparams()))
    try:
        for name, fq in points.items():
            if name in codes:
                fq.target = codes[name]
        yield
    finally:
        for fq in points.values():
            fq.target = None


# -- conversion -------------------------------------------------------------------------------

class _Graph:
    """The integer graph being written by the layers' :meth:`Layer.emit`: operator specs,
    tensor types from the quantisers, constants, and the QAT modules the registry's
    ``convert`` reads (:class:`model.convert.ConvertContext`)."""

    def __init__(self):
        self.specs, self.shapes, self.qp = [], {}, {}
        self.constants, self.linears, self.norms = {}, {}, {}

    def shape(self, name: str) -> tuple:
        return self.shapes[name]

    def tokens(self, name: str, reader: str) -> tuple:
        """The (L, d) shape of ``name``, which ``reader`` needs a window of tokens of."""
        shape = self.shapes[name]
        if len(shape) != 2:
            raise CompositionError(f"{reader!r} reads {name!r} of shape {shape} per window: it "
                                   f"works on a window of tokens, (L, d)")
        return shape

    def constant(self, name: str, codes: torch.Tensor) -> str:
        self.constants[name] = codes.numpy()
        self.shapes[name] = tuple(codes.shape)
        return name

    def op(self, kind, inputs, output, shape, dims=None, *, linear=None, norm=None) -> str:
        registry.kind(kind)
        self.specs.append(OpSpec(kind, tuple(inputs), output, tuple(int(s) for s in shape),
                                 dict(dims or {})))
        self.shapes[output] = tuple(int(s) for s in shape)
        if linear is not None:
            self.linears[output] = linear
        if norm is not None:
            self.norms[output] = norm
        return output


class _ShapeRecorder(fx.Interpreter):
    """Runs one window through the traced module, keeping each node's output shape."""

    def __init__(self, gm):
        super().__init__(gm)
        self.shapes = {}

    def run_node(self, n):
        out = super().run_node(n)
        if isinstance(out, torch.Tensor):
            self.shapes[n] = tuple(out.shape[1:])
        return out


@torch.no_grad()
def to_intmodel(module: nn.Module, calibration_windows, *, data=None, forecast: str = "level",
                meta: dict | None = None) -> IntModel:
    """The integer model of a composed module, its graph the module's graph.

    ``calibration_windows``: normalised windows (N, L, F); quantisation points without a range
    yet (a module trained in float only) observe them first (:func:`calibrate`), and one of
    them gives every tensor's shape. ``data``: the :class:`model.data.Dataset` the module was
    trained on, for the input / target normalisation (``predict`` then takes raw windows and
    gives the target in its units) and the model's provenance; without it, identity
    normalisation. ``forecast``: what the module was trained to output, one value per step of
    the horizon: ``"level"``, the normalised target; ``"change"``, its change from the window's
    last value (:func:`model.train.training_target`), which ``predict`` adds back (needs
    ``data``, whose target is an input feature)."""
    if forecast not in ("level", "change"):
        raise ValueError(f"forecast must be 'level' or 'change', got {forecast!r}")
    if forecast == "change" and (data is None or data.target_feature is None):
        raise ValueError("a change forecast needs data= whose target is an input feature "
                         "(its last value is what the change is added to)")
    gm = _prepare(module)
    # Calibrate only a module that has not been: the ranges QAT trained with are the model's.
    # Layers forward never calls are never observed; weights and constants ("current"
    # observers) follow their tensor on every forward pass.
    called = [gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"]
    if not all(fq.calibrated for m in called if isinstance(m, Layer)
               for fq in m.quant_points().values() if fq.observer != "current"):
        calibrate(module, calibration_windows)
    module.eval()
    set_quantising(module, True)
    x = torch.as_tensor(np.asarray(calibration_windows, np.float32))
    recorder = _ShapeRecorder(gm)
    recorder.run(x[:1])

    modules = dict(gm.named_modules())
    graph = _Graph()
    tensor_of = {}
    producer = _output_producer(gm, modules)
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            tensor_of[node] = None          # the raw window: only Input may read it
            continue
        if node.op != "call_module":
            continue
        m = modules[node.target]
        ins = [tensor_of[a] for a in node.args]
        if isinstance(m, _PASS_THROUGH):
            tensor_of[node] = ins[0]
            continue
        if isinstance(m, Input):
            if ins != [None]:
                raise CompositionError(f"{node.target!r}: Input reads the window, nothing else")
        elif None in ins:
            raise CompositionError(f"{node.target!r} reads the raw window: quantise it with "
                                   f"Input(features, window) first")
        name = "pred" if node is producer else node.target
        if isinstance(m, Input):
            graph.shapes["input"] = recorder.shapes[node]
        tensor_of[node] = m.emit(graph, ins, name)
        if not isinstance(m, Input) and graph.shapes[tensor_of[node]] != recorder.shapes[node]:
            raise CompositionError(f"{node.target!r} ({type(m).__name__}) writes a tensor of "
                                   f"shape {recorder.shapes[node]}, its operators "
                                   f"{graph.shapes[tensor_of[node]]}")
        for fq in m.quant_points().values():     # named as the tensors (_prepare)
            graph.qp["input" if isinstance(m, Input) else fq.name] = fq.qparams()
    if tensor_of[producer] != "pred":
        raise CompositionError("the module's output is its input window: no operator computes it")
    pred_shape = graph.shapes["pred"]
    if len(pred_shape) != 1:
        raise CompositionError(f"the module's output has shape {pred_shape} per window: it must be "
                               f"one vector (the horizon's values), e.g. MeanPool() then "
                               f"Linear(d, horizon)")

    tensors = {}
    for name, shape in graph.shapes.items():
        p = graph.qp[name]
        tensors[name] = TensorInfo(name, tuple(shape), p.qtype(), float(p.scale))
    ctx = ConvertContext(None, graph.qp, graph.linears, graph.norms, tensors)
    ops = [Op(spec, *registry.kind(spec.kind).convert(ctx, spec)) for spec in graph.specs]
    config = _summary_config(graph, tensors)
    meta = dict(meta or {})
    meta["composed"] = type(module).__qualname__
    meta["quant_params"] = {n: p.to_dict() for n, p in graph.qp.items()}
    features = config["features"]
    input_norm = {"mean": np.zeros(features), "std": np.ones(features)}
    target_norm = {"mean": 0.0, "std": 1.0}
    if data is not None:
        input_norm = {"mean": data.feature_mean, "std": data.feature_std}
        target_norm = {"mean": data.target_mean, "std": data.target_std}
        meta.update({"source": data.source, "features": list(data.feature_names),
                     "target": data.target_name})
    return IntModel(config, tensors, ops, graph.constants, input_norm, target_norm, meta,
                    data.target_feature if forecast == "change" else None)


def _summary_config(graph: _Graph, tensors: dict) -> dict:
    """The configuration an integer model carries (:data:`model.intmodel.CONFIG_KEYS`). For a
    composed module the graph is the model; these describe it for reports and file readers:
    window and features of the input, the first attention's width (else the widest token)
    and heads, the number of attentions, the widest linear output, the first norm and
    activation."""
    L, F = tensors["input"].shape
    token_widths = [s[-1] for s in graph.shapes.values() if len(s) == 2]
    attentions = [s for s in graph.specs if s.kind == "context"]
    heads = attentions[0].dims["heads"] if attentions else 1
    d = tensors[attentions[0].output].shape[-1] if attentions else max(token_widths)
    if d % heads:
        heads = 1
    norms = [s.kind for s in graph.specs if s.kind in ("layernorm", "affine")]
    acts = [s.dims["function"] for s in graph.specs if s.kind == "lut"]
    acts += ["relu" for s in graph.specs if s.dims.get("relu")]
    hidden = [s.dims["out"] for s in graph.specs if s.kind == "linear"]
    config = {"features": F, "window": L, "d_model": d, "heads": heads,
              "layers": max(len(attentions), 1), "ffn": max(hidden, default=d),
              "norm": "batchnorm" if norms[:1] == ["affine"] else "layernorm",
              "activation": acts[0] if acts else "relu"}
    if graph.shapes["pred"][0] != 1:
        config["horizon"] = graph.shapes["pred"][0]
    return config
