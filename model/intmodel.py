"""The integer-only model: a graph of integer operators, its file format and its forward pass.

The model is a directed acyclic graph of operators (:class:`Op`, each naming the tensors it
reads and the one it writes), held in topological order. The graph has one streamed input,
``input`` (window x features codes), integer constants (``pe``) and one output, ``pred``.
:func:`graph_spec` is the one place where the encoder's shape is written: the QAT converter
and the synthetic-model generator fill in its operators' integer parameters; everything
downstream (the forward pass, the accelerator generator, the estimator, the profiler) walks the
graph the model holds. Arithmetic comes only from :mod:`model.intops`: the forward pass runs on
PyTorch ``int64`` tensors, batched, on the CPU or a CUDA device (``device=``); parameters stay
NumPy arrays, as the file holds them.

File format, loadable with NumPy alone: a directory holding ``intmodel.json`` and
``intmodel.npz``. The JSON holds format, version, config, tensors with their ``QType``, shape
and real scale, operators with their integer parameters, input/target normalisation, and
``forecast``: ``{"kind": "change", "feature": i}`` when the output is a change from input
feature ``i``'s last value (absent for the target itself). The npz holds every array (weights,
biases, tables, constants), keyed ``"<op output>.<array name>"`` or ``"const.<tensor name>"``.

* Version 2 (written): the graph itself. Each operator carries its ``kind``, ``inputs``,
  ``output``, output ``shape`` and ``dims`` besides its ``params`` and ``arrays``, in
  topological order; loading checks that it is a DAG of registered kinds from ``input`` and the
  constants to ``pred`` (:meth:`IntModel.check_graph`), whatever the configuration would build.
* Version 1 (still read): operators without structure; their graph is the one
  :func:`graph_spec` builds from the configuration, and each operator must be the one there.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import intops, ops as registry
from .intops import QType
from .ops.attention import merge_heads, split_heads   # noqa: F401  (their home before the registry)

FORMAT = "intformer-intmodel"
VERSION = 2
READABLE_VERSIONS = (1, 2)

CONFIG_KEYS = ("features", "window", "d_model", "heads", "layers", "ffn", "norm", "activation")
# Optional: "horizon", the steps forecast per window (outputs of "pred"), absent for 1 so that
# one-step models keep the configuration (and files) they had before horizons; "task" and
# "classes": a classifier ("classify", classes >= 2: "pred" is the argmax operator's output, the
# classes' logit codes then the class; "anomaly": "pred" is the threshold operator's output, the
# score code then the flag), absent for a forecaster.
TASKS = ("forecast", "classify", "anomaly")


def check_config(config: dict) -> dict:
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"model configuration lacks {missing}")
    c = {k: config[k] for k in CONFIG_KEYS}
    for k in ("features", "window", "d_model", "heads", "layers", "ffn"):
        if int(c[k]) < 1:
            raise ValueError(f"{k} must be >= 1, got {c[k]}")
        c[k] = int(c[k])
    if c["d_model"] % c["heads"]:
        raise ValueError(f"d_model {c['d_model']} is not divisible by heads {c['heads']}")
    if c["norm"] not in ("batchnorm", "layernorm"):
        raise ValueError(f"norm must be 'batchnorm' or 'layernorm', got {c['norm']!r}")
    registry.activation(c["activation"])   # raises for an unregistered one
    horizon = config.get("horizon", 1)
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    if horizon != 1:
        c["horizon"] = int(horizon)
    task = config.get("task", "forecast")
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "classify":
        classes = config.get("classes")
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
            raise ValueError(f"a classifier needs classes >= 2, got {classes!r}")
        if horizon != 1:
            raise ValueError("a classifier has no horizon")
        c["task"], c["classes"] = task, classes
    elif task == "anomaly":
        if horizon != 1:
            raise ValueError("an anomaly detector has no horizon")
        c["task"] = task
    return c


def horizon(config: dict) -> int:
    """Steps forecast per window (1 for a classifier)."""
    return int(config.get("horizon", 1))


def task(config: dict) -> str:
    """What the model computes: "forecast", "classify" or "anomaly"."""
    return config.get("task", "forecast")


def outputs(config: dict) -> int:
    """Codes of ``pred`` per window, the accelerator's outputs per window: the steps forecast,
    or a classifier's ``classes`` logits and its class."""
    if task(config) == "classify":
        return config["classes"] + 1
    return 2 if task(config) == "anomaly" else horizon(config)


@dataclass(frozen=True)
class OpSpec:
    """Structure of one operator: what it computes from which tensors, without parameters."""
    kind: str            # a kind of the registry, model.ops
    inputs: tuple
    output: str
    shape: tuple         # shape of the output tensor for one window
    dims: dict = field(default_factory=dict)


def graph_spec(config: dict) -> list[OpSpec]:
    """The operator sequence of the encoder-only forecaster (one window, batch dims omitted)."""
    c = check_config(config)
    L, F, d, H, ffn = c["window"], c["features"], c["d_model"], c["heads"], c["ffn"]
    specs = [OpSpec("linear", ("input",), "proj", (L, d), {"in": F, "out": d}),
             OpSpec("add", ("proj", "pe"), "embed", (L, d))]
    x = "embed"
    norm_kind = "affine" if c["norm"] == "batchnorm" else "layernorm"
    act = registry.activation(c["activation"])
    for i in range(c["layers"]):
        p = f"l{i}."
        specs += [OpSpec("linear", (x,), p + "q", (L, d), {"in": d, "out": d}),
                  OpSpec("linear", (x,), p + "k", (L, d), {"in": d, "out": d}),
                  OpSpec("linear", (x,), p + "v", (L, d), {"in": d, "out": d}),
                  OpSpec("scores", (p + "q", p + "k"), p + "scores", (H, L, L), {"heads": H}),
                  OpSpec("softmax", (p + "scores",), p + "attn", (H, L, L)),
                  OpSpec("context", (p + "attn", p + "v"), p + "context", (L, d), {"heads": H}),
                  OpSpec("linear", (p + "context",), p + "attn_out", (L, d), {"in": d, "out": d}),
                  OpSpec("add", (x, p + "attn_out"), p + "res1", (L, d)),
                  OpSpec(norm_kind, (p + "res1",), p + "norm1", (L, d))]
        if act.table:
            specs += [OpSpec("linear", (p + "norm1",), p + "ffn_pre", (L, ffn), {"in": d, "out": ffn}),
                      OpSpec("lut", (p + "ffn_pre",), p + "ffn_hidden", (L, ffn), {"function": act.name})]
        else:
            specs.append(OpSpec("linear", (p + "norm1",), p + "ffn_hidden", (L, ffn),
                                {"in": d, "out": ffn, "relu": True}))
        specs += [OpSpec("linear", (p + "ffn_hidden",), p + "ffn_out", (L, d), {"in": ffn, "out": d}),
                  OpSpec("add", (p + "norm1", p + "ffn_out"), p + "res2", (L, d)),
                  OpSpec(norm_kind, (p + "res2",), p + "norm2", (L, d))]
        x = p + "norm2"
    specs.append(OpSpec("mean_pool", (x,), "pooled", (d,), {"length": L}))
    if task(c) == "classify":
        C = c["classes"]
        specs += [OpSpec("linear", ("pooled",), "logits", (C,), {"in": d, "out": C}),
                  OpSpec("argmax", ("logits",), "pred", (C + 1,))]
    elif task(c) == "anomaly":
        specs += [OpSpec("linear", ("pooled",), "score", (1,), {"in": d, "out": 1}),
                  OpSpec("threshold", ("score",), "pred", (2,))]
    else:
        specs.append(OpSpec("linear", ("pooled",), "pred", (horizon(c),),
                            {"in": d, "out": horizon(c)}))
    return specs


@dataclass
class TensorInfo:
    name: str
    shape: tuple
    qtype: QType
    scale: float          # real value = scale * (q - zero_point)

    def to_dict(self):
        return {"shape": list(self.shape), "scale": self.scale, **self.qtype.to_dict()}


@dataclass
class Op:
    spec: OpSpec
    params: dict          # integers / booleans / QType dicts, JSON-serialisable
    arrays: dict          # name -> int64 ndarray

    @property
    def kind(self):
        return self.spec.kind

    @property
    def output(self):
        return self.spec.output


class ModelFileError(ValueError):
    """A model directory is missing a file or holds something malformed."""


class IntModel:
    """Integer-only model: ``forward`` runs the graph with :mod:`model.intops` only."""

    def __init__(self, config: dict, tensors: dict[str, TensorInfo], ops: list[Op],
                 constants: dict[str, np.ndarray], input_norm: dict, target_norm: dict,
                 meta: dict | None = None, change_feature: int | None = None):
        self.config = check_config(config)
        # Forecasts of the change: the prediction is the output plus the last value of this
        # input feature (the target's own column), added on the host where the output is
        # de-normalised. None: the output is the target itself.
        if change_feature is not None and not 0 <= int(change_feature) < self.config["features"]:
            raise ModelFileError(f"change_feature {change_feature} is not an input feature index")
        self.change_feature = None if change_feature is None else int(change_feature)
        self.tensors = tensors
        self.ops = ops
        self.constants = {k: np.asarray(v, np.int64) for k, v in constants.items()}
        self.input_norm = {k: np.asarray(v, np.float64) for k, v in input_norm.items()}
        self.target_norm = {k: float(v) for k, v in target_norm.items()}
        self.meta = dict(meta or {})
        self._validate()

    # -- structure ------------------------------------------------------------------------
    def _validate(self):
        self.check_graph()
        for op in self.ops:
            k = registry.kind(op.kind)
            missing = ((set(k.params) - set(k.optional_params) - set(op.params))
                       | (set(k.arrays) - set(op.arrays)))
            if missing:
                raise ModelFileError(f"operator {op.output!r} ({op.kind}) lacks {sorted(missing)}")

    def check_graph(self):
        """The operators form a DAG in topological order: every operator reads ``input``, a
        constant or an earlier operator's output, writes a tensor of its own with a type and the
        shape it declares, and contributes to ``pred``; ``input`` is (window, features)."""
        c = self.config
        defined = {"input", *self.constants}
        for name in defined:
            if name not in self.tensors:
                raise ModelFileError(f"tensor {name!r} has no type")
        if tuple(self.tensors["input"].shape) != (c["window"], c["features"]):
            raise ModelFileError(f"input shape {tuple(self.tensors['input'].shape)} is not "
                                 f"(window, features) = {(c['window'], c['features'])}")
        for op in self.ops:
            registry.kind(op.kind)
            late = [n for n in op.spec.inputs if n not in defined]
            if late:
                raise ModelFileError(f"operator {op.output!r} reads {late}, not written before it "
                                     f"(the operators must be a DAG in topological order)")
            if op.output in defined:
                raise ModelFileError(f"tensor {op.output!r} is written twice")
            if op.output not in self.tensors:
                raise ModelFileError(f"tensor {op.output!r} has no type")
            if tuple(self.tensors[op.output].shape) != tuple(op.spec.shape):
                raise ModelFileError(f"operator {op.output!r} declares shape {tuple(op.spec.shape)}"
                                     f" but its tensor has {tuple(self.tensors[op.output].shape)}")
            defined.add(op.output)
        if "pred" not in defined - {"input", *self.constants}:
            raise ModelFileError("no operator writes the output 'pred'")
        if tuple(self.tensors["pred"].shape) != (self.horizon,):
            raise ModelFileError(f"the output 'pred' has shape {tuple(self.tensors['pred'].shape)}, "
                                 f"not ({self.horizon},) (the "
                                 + {"classify": "classes and the class",
                                    "anomaly": "score and the flag"}.get(self.task, "horizon")
                                 + ")")
        # Every operator contributes to the prediction: hardware would leave a dead one's
        # stream without a consumer.
        live = {"pred"}
        for op in reversed(self.ops):
            if op.output in live:
                live.update(op.spec.inputs)
        dead = [op.output for op in self.ops if op.output not in live]
        if dead:
            raise ModelFileError(f"operators {dead} do not contribute to 'pred'")

    def consumers(self, name: str) -> list:
        """The operators reading tensor ``name``, in graph order (once per operand)."""
        return [op for op in self.ops for n in op.spec.inputs if n == name]

    def qtype(self, name: str) -> QType:
        return self.tensors[name].qtype

    def op(self, output: str) -> Op:
        for o in self.ops:
            if o.output == output:
                return o
        raise KeyError(output)

    @property
    def horizon(self) -> int:
        """Codes of ``pred`` per window (:func:`outputs`): the steps forecast, or a classifier's
        logits and class; what the accelerator streams per window."""
        return outputs(self.config)

    @property
    def task(self) -> str:
        return task(self.config)

    def classify(self, xq, device=None) -> tuple[np.ndarray, np.ndarray]:
        """A classifier's integer input codes (N, L, F) -> (logit codes (N, C), classes (N,))."""
        if self.task != "classify":
            raise ValueError("this model is not a classifier (task 'classify')")
        codes = self.pred_codes(xq, device=device).cpu().numpy()
        return codes[:, :-1], codes[:, -1]

    def detect(self, xq, device=None) -> tuple[np.ndarray, np.ndarray]:
        """An anomaly detector's integer input codes (N, L, F) -> (score codes (N,), flags (N,))."""
        if self.task != "anomaly":
            raise ValueError("this model is not an anomaly detector (task 'anomaly')")
        codes = self.pred_codes(xq, device=device).cpu().numpy()
        return codes[:, 0], codes[:, 1]

    def pred_codes(self, xq, device=None) -> torch.Tensor:
        """Integer input codes (N, L, F) -> prediction codes: (N,) for a one-step model,
        (N, horizon) otherwise (a classifier: (N, classes + 1), the logits then the class)."""
        codes = self.forward(xq, device=device)["pred"]
        return codes[..., 0] if self.horizon == 1 else codes

    # -- boundary: the only float arithmetic ----------------------------------------------
    def quantize_input(self, x) -> torch.Tensor:
        """Raw features (..., L, F) -> integer input codes (normalise, scale, round half to
        even), an ``int64`` tensor on the CPU."""
        x = np.asarray(x, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError("input contains NaN or infinity")
        t = self.tensors["input"]
        z = (x - self.input_norm["mean"]) / self.input_norm["std"]
        # Clamped while still float so that no value is out of int64's range when cast;
        # on the integers that remain this is intops.saturate.
        q = np.clip(np.round(z / t.scale) + t.qtype.zero_point, t.qtype.qmin, t.qtype.qmax)
        return torch.from_numpy(q.astype(np.int64))

    def dequantize_output(self, q, windows=None) -> np.ndarray:
        """Integer prediction codes ((N,), or (N, horizon) beyond one step) -> target in its own
        units. A change forecast needs the raw ``windows`` (N, L, F) the codes were computed
        from: their last value is added (to every step)."""
        if self.task != "forecast":
            raise ValueError(f"a {self.task} model's output is no forecast: IntModel."
                             + ("classify" if self.task == "classify" else "detect"))
        t = self.tensors["pred"]
        if isinstance(q, torch.Tensor):
            q = q.cpu().numpy()
        z = t.scale * (np.asarray(q, np.float64) - t.qtype.zero_point) * self.target_norm["std"]
        if self.change_feature is None:
            return z + self.target_norm["mean"]
        if windows is None:
            raise ValueError("this model forecasts the change from the last value: pass the raw "
                             "windows the codes were computed from")
        last = np.asarray(windows, np.float64)[..., -1, self.change_feature]
        return z + (last if self.horizon == 1 else last[..., None])

    def predict(self, x, device=None) -> np.ndarray:
        """Raw windows (N, L, F) -> predictions (N,), or (N, horizon), in target units (NumPy
        ``float64``); the integer forward pass runs on ``device``."""
        codes = self.pred_codes(self.quantize_input(x), device=device)
        return self.dequantize_output(codes, x)

    # -- the integer forward pass -----------------------------------------------------------
    def forward(self, xq, device=None) -> dict[str, torch.Tensor]:
        """Integer input codes (..., L, F) -> every tensor of the graph (``int64`` tensors on
        ``device``: by default the input tensor's, the CPU for anything else)."""
        v = {"input": self.qtype("input").check(xq, "input", device)}
        v.update({k: intops.as_int(c, v["input"].device) for k, c in self.constants.items()})
        for op in self.ops:
            v[op.output] = self._run(op, v)
        return v

    def _run(self, op: Op, v: dict) -> torch.Tensor:
        ins = [v[n] for n in op.spec.inputs]
        types = [self.qtype(n) for n in op.spec.inputs]
        return registry.kind(op.kind).run(op, ins, types, self.qtype(op.output))

    # -- files ------------------------------------------------------------------------------
    def save(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"const.{k}": v for k, v in self.constants.items()}
        ops = []
        for op in self.ops:
            ops.append({"kind": op.kind, "inputs": list(op.spec.inputs), "output": op.output,
                        "shape": list(op.spec.shape), "dims": op.spec.dims,
                        "params": op.params, "arrays": sorted(op.arrays)})
            arrays.update({f"{op.output}.{k}": np.asarray(x, np.int64) for k, x in op.arrays.items()})
        doc = {"format": FORMAT, "version": VERSION, "config": self.config,
               "tensors": {k: t.to_dict() for k, t in self.tensors.items()},
               "ops": ops,
               "input_norm": {k: v.tolist() for k, v in self.input_norm.items()},
               "target_norm": self.target_norm, "meta": self.meta}
        if self.change_feature is not None:
            doc["forecast"] = {"kind": "change", "feature": self.change_feature}
        # Write both files under temporary names, then rename: no half-written model.
        _atomic_write(directory / "intmodel.npz", lambda f: np.savez(f, **arrays), binary=True)
        _atomic_write(directory / "intmodel.json", lambda f: json.dump(doc, f, indent=1))
        return directory

    @classmethod
    def load(cls, directory) -> "IntModel":
        directory = Path(directory)
        jpath, npath = directory / "intmodel.json", directory / "intmodel.npz"
        for f in (jpath, npath):
            if not f.is_file():
                raise ModelFileError(f"{f} is missing: run `intformer train` to create it")
        try:
            doc = json.loads(jpath.read_text())
        except json.JSONDecodeError as e:
            raise ModelFileError(f"{jpath} is not valid JSON: {e}") from None
        if doc.get("format") != FORMAT or doc.get("version") not in READABLE_VERSIONS:
            raise ModelFileError(f"{jpath} is not a {FORMAT} file of version "
                                 f"{' or '.join(map(str, READABLE_VERSIONS))}")
        try:
            with np.load(npath) as z:
                arrays = {k: z[k] for k in z.files}
            tensors = {k: TensorInfo(k, tuple(t["shape"]), QType.from_dict(t), float(t["scale"]))
                       for k, t in doc["tensors"].items()}
            if doc["version"] == 1:
                specs = _v1_specs(jpath, doc)
            else:
                specs = [OpSpec(o["kind"], tuple(o["inputs"]), o["output"], tuple(o["shape"]),
                                dict(o["dims"])) for o in doc["ops"]]
            ops = [Op(spec, o["params"], {n: arrays[f"{spec.output}.{n}"] for n in o["arrays"]})
                   for spec, o in zip(specs, doc["ops"])]
            constants = {k[len("const."):]: v for k, v in arrays.items() if k.startswith("const.")}
            forecast = doc.get("forecast", {"kind": "level"})
            return cls(doc["config"], tensors, ops, constants, doc["input_norm"],
                       doc["target_norm"], doc.get("meta"),
                       forecast["feature"] if forecast["kind"] == "change" else None)
        except (KeyError, TypeError, ValueError) as e:
            if isinstance(e, ModelFileError):
                raise
            raise ModelFileError(f"{directory}: malformed integer model ({type(e).__name__}: {e})") from None


def _v1_specs(jpath, doc) -> list:
    """A version 1 file's operators hold no structure: it is the configuration's graph."""
    specs = graph_spec(doc["config"])
    if len(specs) != len(doc["ops"]):
        raise ModelFileError(f"{jpath}: operator count does not match the configuration")
    for spec, o in zip(specs, doc["ops"]):
        if o["output"] != spec.output or o["kind"] != spec.kind:
            raise ModelFileError(f"{jpath}: operator {o['output']!r} is not {spec.output!r}")
    return specs


def _atomic_write(path: Path, write, binary: bool = False):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
