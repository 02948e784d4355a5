"""`intformer search`: a multi-objective design-space search over bit-widths and hardware knobs.

Each candidate (an Optuna trial) is a choice of

* bit-widths (4, 6 or 8) per tensor group: the weights and the outputs of every linear group
  (``proj``, ``l{i}.qkv``, ``l{i}.attn_out``, ``l{i}.ffn_in``, ``l{i}.ffn_out``, ``pred``), the
  input, and the activation groups in between (embedding, attention, residual path, pooling);
* hardware knobs (:class:`hw.accelerator.HwConfig`) per linear group (``pe`` / ``simd`` among
  the divisors of its outputs / inputs, the multiplier ``mul``, weight and buffer storage) and
  per attention (``qk_lanes`` / ``pv_lanes`` among the divisors of the head width, ``qk_mul``,
  ``pv_mul``, buffer and table storage), and the residual FIFO storage. Knobs not searched
  (requantisers, biases, element-wise blocks, clock) come from the target preset
  (:func:`hw.presets.preset`) for the candidate's dominant width.

A candidate is first checked without any training: the resource estimator
(:func:`flows.estimate.estimate`) on a synthetic integer model of the candidate's shape and
widths; one that does not fit the device is *pruned* with the excess as its reason. A fitting
candidate is fine-tuned with quantisation-aware training from one shared float model (trained
once per output directory), converted to the integer model and scored on the *validation*
split. The two objectives, both minimised, are the integer model's validation RMSE (target
units) and the exact latency ``Accelerator(model, hw).cycles()``. Every study starts with the
target preset at uniform 8 and uniform 4 bits, so the front is anchored by the known designs;
new designs are small steps from the front (:class:`NeighbourSampler`).

Files in ``OUT/`` (see :func:`search`)::

    search.db            the Optuna study (default storage; any SQLAlchemy URL with --storage)
    float/               the shared float model (a `train_run` directory without QAT)
    trials/STUDY/NNNN/   per trained trial: qat.pt, history.json
    search.json          every trial, the Pareto front and the choice (written atomically)
    pareto.csv           the front, one row per design
    pareto.png           validation RMSE vs cycles, front highlighted (pruned trials not shown)
    chosen/              the chosen design as a normal run directory (+ hw_config.json), ready
                         for `intformer verify / build / report`
    .float.lock, .ask.lock   locks between the worker processes

Several local worker processes (``workers``) can share one study: each loads it from the
storage and runs its share of the trials. SQLite is fine for that (a 60 s lock timeout); for
several machines use a PostgreSQL server (``--storage postgresql://...``, README "Design-space
search"): every machine runs the same command with its own ``OUT``, and the database keeps
them apart (the study is set up under an advisory lock, an enqueued trial is taken with
``SELECT ... FOR UPDATE``, each trial number has its own random stream).
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import inspect
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import optuna

from model import ops as registry

from .run import TrainOptions, load_data, write_json_atomic

DEVICES = ("xc7s15", "ice40up5k")
BIT_CHOICES = (4, 6, 8)
STORAGES = ("bram", "lutram", "registers")   # on the iCE40 (no LUTRAM) "lutram" means logic
#: Multipliers of lanes that share an operand (Linear PEs, attention PV lanes). ``dsp_packed``
#: packs 2-3 products into one DSP48E1 (25 x 18); the iCE40's SB_MAC16 has no such packing.
LANE_MULS = {"xc7s15": ("dsp", "dsp_packed", "lut"), "ice40up5k": ("dsp", "lut")}
MULS = ("dsp", "lut")                        # score lanes (q.k: no shared operand)
#: Largest pe / simd / lanes offered. Sixteen lanes in every linear (x 8 linears) already need
#: far more multipliers than either device holds; larger folds would only be pruned.
MAX_FOLD = 16
#: The searched knobs of each block (names of the block constructors' keywords).
LINEAR_KNOBS = ("pe", "simd", "mul", "weight_storage", "buffer_storage")
ATTENTION_KNOBS = ("qk_lanes", "pv_lanes", "qk_mul", "pv_mul", "buffer_storage", "table_storage")


class SearchError(ValueError):
    """Bad search options, an unusable storage, or a search without any fitting design."""


class CandidateError(RuntimeError):
    """The hardware rejected a trained candidate (recorded as a failed trial, search goes on)."""


@dataclass
class SearchOptions:
    """What `intformer search` takes. ``train`` gives the model shape, the data and the seed
    (its bit-width fields are not used: the search chooses them)."""
    device: str
    out: Path
    trials: int = 30
    storage: str | None = None          # default sqlite:///OUT/search.db
    study: str | None = None            # default "intformer-<device>"
    workers: int = 1
    epochs: int = 3                     # QAT fine-tuning epochs per candidate
    float_epochs: int | None = None     # shared float model (None: TrainConfig's default)
    max_cycles: int | None = None       # choose the most accurate design within this latency
    verify: bool = True
    verify_windows: int | None = 200    # test windows for the compiled simulation in verify
    build: bool = False
    train: TrainOptions = field(default_factory=TrainOptions)


# =============================================================================================
# The search space
# =============================================================================================

@dataclass(frozen=True)
class LinearGroup:
    """Linear operators that share their bit-widths and hardware knobs (Q, K and V run side
    by side with one setting in the accelerator)."""
    name: str
    ops: tuple          # linear operator outputs
    outputs: tuple      # activation tensors whose width is the group's output width
    n_in: int
    n_out: int


def _divisors(n: int) -> tuple:
    return tuple(k for k in range(1, min(n, MAX_FOLD) + 1) if n % k == 0)


def _linear_groups(c: dict) -> list[LinearGroup]:
    d, ffn = c["d_model"], c["ffn"]
    groups = [LinearGroup("proj", ("proj",), ("proj",), c["features"], d)]
    for i in range(c["layers"]):
        p = f"l{i}."
        # With a table activation the first FFN linear is ffn_pre and the table makes
        # ffn_hidden: both are that linear's outputs for the width.
        first = p + registry.activation(c["activation"]).first_linear
        groups += [
            LinearGroup(p + "qkv", (p + "q", p + "k", p + "v"), (p + "q", p + "k", p + "v"), d, d),
            LinearGroup(p + "attn_out", (p + "attn_out",), (p + "attn_out",), d, d),
            LinearGroup(p + "ffn_in", (first,), tuple(dict.fromkeys((first, p + "ffn_hidden"))),
                        d, ffn),
            LinearGroup(p + "ffn_out", (p + "ffn_out",), (p + "ffn_out",), ffn, d)]
    if c.get("task") == "classify":       # the classifier's head linear (argmax follows it)
        return groups + [LinearGroup("logits", ("logits",), ("logits",), d, c["classes"])]
    if c.get("task") == "anomaly":        # the detector's score linear (threshold follows it)
        return groups + [LinearGroup("score", ("score",), ("score",), d, 1)]
    return groups + [LinearGroup("pred", ("pred",), ("pred",), d, 1)]


def _activation_groups(c: dict) -> dict:
    """Activation tensors outside the linear groups, in groups sharing one width."""
    groups = {"input": ("input",), "embed": ("pe", "embed")}
    for i in range(c["layers"]):
        p = f"l{i}."
        groups[p + "attention"] = (p + "scores", p + "attn", p + "context")
        groups[p + "residual"] = (p + "res1", p + "norm1", p + "res2", p + "norm2")
    groups["pooled"] = ("pooled",)
    return groups


def _defaults(cls) -> dict:
    """Keyword defaults of a block constructor: the knob values a configuration leaves out."""
    from hw.common import Storage
    out = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if p.default is not inspect.Parameter.empty:
            out[name] = p.default.value if isinstance(p.default, Storage) else p.default
    return out


@dataclass
class Candidate:
    """One point of the space: every tensor's width and a complete hardware configuration."""
    params: dict        # the Optuna parameters it was built from
    bits: dict          # tensor name (activations and "<linear>.weight") -> width
    hw: dict            # HwConfig dict

    @property
    def dominant_bits(self) -> int:
        return dominant_bits(self.bits)

    def quant_config(self, scheme: str = "adaptive"):
        from model.qat import QuantConfig
        return QuantConfig(default_bits=self.dominant_bits, bits=dict(self.bits),
                           default_scheme=scheme)


def dominant_bits(bits: dict) -> int:
    """The most common activation width (as :func:`hw.presets.model_bits` counts it)."""
    counts = Counter(b for name, b in bits.items() if not name.endswith(".weight"))
    return counts.most_common(1)[0][0]


class SearchSpace:
    """Parameters (all categorical) of a model shape on a device, and the candidates they make.

    Parameter names: ``bits.<group>`` (activation groups), ``bits.<linear>.weight`` and
    ``bits.<linear>.out``; ``hw.<linear>.{pe,simd,mul,weight_storage,buffer_storage}``;
    ``hw.l<i>.attention.{qk_lanes,pv_lanes,qk_mul,pv_mul,buffer_storage,table_storage}``;
    ``hw.fifo_storage``. A parameter with a single possible value (``pe`` of ``pred``) is fixed,
    not searched."""

    def __init__(self, shape: dict, device: str):
        from model.intmodel import check_config
        if device not in DEVICES:
            raise SearchError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
        self.device = device
        try:
            self.shape = check_config(shape)
        except ValueError as e:
            raise SearchError(f"model shape: {e}") from None
        self.linears = _linear_groups(self.shape)
        self.activations = _activation_groups(self.shape)
        self.choices = self._choices()
        folds = [k for k in self.choices
                 if k.split(".")[-1] in ("pe", "simd", "qk_lanes", "pv_lanes")]
        if all(len(self.choices[k]) == 1 for k in folds):
            raise SearchError(f"the shape {self.shape} allows no parallelism knob other than 1 "
                              f"(pe/simd/lanes must divide the layer widths): nothing to search "
                              f"in the hardware; use larger widths")

    def _choices(self) -> dict:
        ch = {f"bits.{g}": BIT_CHOICES for g in self.activations}
        for g in self.linears:
            ch[f"bits.{g.name}.weight"] = BIT_CHOICES
            ch[f"bits.{g.name}.out"] = BIT_CHOICES
        lane_muls = LANE_MULS[self.device]
        for g in self.linears:
            h = f"hw.{g.name}"
            ch.update({f"{h}.pe": _divisors(g.n_out), f"{h}.simd": _divisors(g.n_in),
                       f"{h}.mul": lane_muls, f"{h}.weight_storage": STORAGES,
                       f"{h}.buffer_storage": STORAGES})
        head = _divisors(self.shape["d_model"] // self.shape["heads"])
        for i in range(self.shape["layers"]):
            a = f"hw.l{i}.attention"
            ch.update({f"{a}.qk_lanes": head, f"{a}.pv_lanes": head, f"{a}.qk_mul": MULS,
                       f"{a}.pv_mul": lane_muls, f"{a}.buffer_storage": STORAGES,
                       f"{a}.table_storage": STORAGES})
        ch["hw.fifo_storage"] = STORAGES
        return ch

    @property
    def searched(self) -> dict:
        """The parameters with more than one choice (what the sampler sees)."""
        return {k: v for k, v in self.choices.items() if len(v) > 1}

    def suggest(self, trial) -> Candidate:
        params = {k: (trial.suggest_categorical(k, v) if len(v) > 1 else v[0])
                  for k, v in self.choices.items()}
        return self.candidate(params)

    def candidate(self, params: dict) -> Candidate:
        """The candidate of ``params`` (fixed parameters may be left out, as Optuna does)."""
        params = {**{k: v[0] for k, v in self.choices.items() if len(v) == 1}, **params}
        bits = {}
        for g, tensors in self.activations.items():
            bits.update(dict.fromkeys(tensors, params[f"bits.{g}"]))
        for g in self.linears:
            bits.update(dict.fromkeys(g.outputs, params[f"bits.{g.name}.out"]))
            bits.update(dict.fromkeys((op + ".weight" for op in g.ops),
                                      params[f"bits.{g.name}.weight"]))
        return Candidate(dict(params), bits, self._hw_config(params, dominant_bits(bits)))

    def _hw_config(self, params: dict, bits: int) -> dict:
        """The preset for the dominant width, with every searched knob set per operator by
        exact name (exact names win over the preset's patterns, see HwConfig.knobs)."""
        from hw.presets import preset
        hw = preset(self.device, bits)
        blocks = hw.setdefault("blocks", {})
        for g in self.linears:
            knobs = {k: params[f"hw.{g.name}.{k}"] for k in LINEAR_KNOBS}
            for op in g.ops:
                blocks[op] = {**blocks.get(op, {}), **knobs}
        for i in range(self.shape["layers"]):
            a = f"l{i}.attention"
            blocks[a] = {**blocks.get(a, {}), **{k: params[f"hw.{a}.{k}"] for k in ATTENTION_KNOBS}}
        hw["fifo_storage"] = params["hw.fifo_storage"]
        return hw

    def anchor(self, bits: int) -> dict:
        """Parameters of the target preset at uniform ``bits``: each operator's resolved preset
        knobs (a pe/simd/lanes the shape does not allow becomes the largest divisor below it)."""
        from hw.accelerator import HwConfig
        from hw.attention import AttentionCore
        from hw.linear import Linear
        from hw.presets import preset
        hw = HwConfig.from_dict(preset(self.device, bits))
        params = {k: bits for k in self.choices if k.startswith("bits.")}
        lin, att = _defaults(Linear), _defaults(AttentionCore)
        for g in self.linears:
            kn = {**lin, **hw.knobs("linear", g.ops[0])}
            for k in LINEAR_KNOBS:
                params[f"hw.{g.name}.{k}"] = self._allowed(f"hw.{g.name}.{k}", kn[k])
        for i in range(self.shape["layers"]):
            a = f"l{i}.attention"
            kn = {**att, **hw.knobs("attention", a)}
            kn["pv_lanes"] = kn["pv_lanes"] or kn["qk_lanes"]      # None: as many as qk_lanes
            for k in ATTENTION_KNOBS:
                params[f"hw.{a}.{k}"] = self._allowed(f"hw.{a}.{k}", kn[k])
        params["hw.fifo_storage"] = self._allowed("hw.fifo_storage", hw.fifo_storage)
        return params

    def _allowed(self, name: str, value):
        choices = self.choices[name]
        if value in choices:
            return value
        if isinstance(value, int):
            return max(c for c in choices if c <= value)
        return choices[0]       # e.g. dsp_packed on the iCE40 -> dsp


# =============================================================================================
# Cost before training: resources (estimator) and latency
# =============================================================================================

def estimate(model, hw, device):
    """The resource estimator of ``flows/estimate.py`` (imported on use). The tests of the
    pruning logic replace this name with a fake; the search itself always calls the real one."""
    from .estimate import estimate as resource_estimate
    return resource_estimate(model, hw, device)


def latency_cycles(model, hw: dict) -> int:
    """Exact cycles of one window (:meth:`hw.accelerator.Accelerator.cycles`)."""
    from hw.accelerator import Accelerator
    from .estimate import mark_used
    acc = Accelerator(model, hw)
    try:
        return acc.cycles()
    finally:
        # the search only times a design (cycles()), it never elaborates it
        mark_used(acc)


@dataclass
class FitCheck:
    fits: bool
    reason: str             # why it does not fit ("" if it fits)
    resources: dict         # Estimate.to_dict()
    utilisation: dict       # resource -> used / capacity
    cycles: int | None      # latency of the synthetic model (the trained one may differ slightly)


def check_fit(space: SearchSpace, cand: Candidate) -> FitCheck:
    """Resources and latency of a candidate from a synthetic integer model of its shape and
    widths: no training needed."""
    from model.synthetic import random_intmodel
    model = random_intmodel(space.shape, bits=cand.bits, seed=0)
    try:
        cycles = latency_cycles(model, cand.hw)
    except ValueError as e:
        return FitCheck(False, f"the hardware rejects this configuration: {e}", {}, {}, None)
    est = estimate(model, cand.hw, space.device)
    used, capacity = dict(est.used), dict(est.capacity)
    util = {k: round(used[k] / capacity[k], 4) for k in capacity
            if isinstance(used.get(k), (int, float)) and isinstance(capacity[k], (int, float))
            and capacity[k]}
    reason = "" if est.fits else ("; ".join(est.over()) or "does not fit")
    return FitCheck(bool(est.fits), reason, est.to_dict(), util, cycles)


# =============================================================================================
# Training: one shared float model, a QAT fine-tune per candidate, integer validation RMSE
# =============================================================================================

def model_config(opts: TrainOptions, data):
    from .run import train_config
    try:
        return train_config(opts, data).model       # the model `intformer train` would build
    except ValueError as e:
        raise SearchError(f"model shape: {e}") from None


def float_config(opts: SearchOptions, data):
    """The TrainConfig of the shared float model (independent of the QAT options, so that
    searches with other --epochs can share it)."""
    from model import train as T
    cfg = T.TrainConfig(model=model_config(opts.train, data), seed=opts.train.seed,
                        max_train_windows=opts.train.max_train_windows,
                        threads=1)     # one torch thread per process: workers run side by side
    if opts.float_epochs is not None:
        cfg.epochs = opts.float_epochs
    return cfg


def qat_config(opts: SearchOptions, data, cand: Candidate):
    """The TrainConfig of a candidate's QAT fine-tuning: its widths, ``opts.epochs`` epochs."""
    cfg = float_config(opts, data)
    cfg.quant = cand.quant_config(opts.train.scheme)
    cfg.qat_epochs = opts.epochs
    return cfg


@contextlib.contextmanager
def _file_lock(path: Path):
    """An exclusive lock between processes (two searches starting at once on one OUT)."""
    import fcntl
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _jsonable(doc):
    return json.loads(json.dumps(doc))


def _check_float_cache(opts: SearchOptions, data) -> None:
    """A float model already in ``OUT/float`` must be the one these options would train."""
    final = Path(opts.out) / "float"
    if not (final / "config.json").is_file():
        return
    expected = _jsonable({"train": float_config(opts, data).to_dict(), "data": data.stats()})
    cached = json.loads((final / "config.json").read_text())
    if {k: cached.get(k) for k in expected} != expected:
        raise SearchError(f"{final} holds a float model trained with other options (shape, data, "
                          f"seed or epochs): use another --out, or delete {final}")


def shared_float_model(opts: SearchOptions, data, progress=print):
    """The float model every candidate starts from: trained once into ``OUT/float`` (under a
    lock, so that workers starting at once train it once; into a temporary directory renamed
    into place, so that an interrupted training leaves nothing), then loaded from there."""
    from model import train as T
    out = Path(opts.out)
    final = out / "float"
    with _file_lock(out / ".float.lock"):
        if not (final / "config.json").is_file():      # written last by train_run
            progress(f"training the shared float model into {final}")
            tmp = Path(tempfile.mkdtemp(dir=out, prefix=".float."))
            try:
                T.train_run(float_config(opts, data), data, tmp, qat=False)
                shutil.rmtree(final, ignore_errors=True)
                os.replace(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    _check_float_cache(opts, data)
    model, _ = T.load_run(final, "float")
    history = json.loads((final / "history.json").read_text())
    return model, history


@dataclass
class TrainingContext:
    """What a worker needs to train candidates: the data and the shared float model."""
    opts: SearchOptions
    data: object
    float_model: object
    float_history: list

    def finetune(self, cand: Candidate):
        """QAT of the candidate's widths from the shared float model: (QAT model, history)."""
        from model import train as T
        history = []
        cfg = qat_config(self.opts, self.data, cand)
        return T.train_qat(cfg, self.data, self.float_model, history=history), history


class SharedContext:
    """The :class:`TrainingContext` of a process, made on first use: the float model is only
    trained (once per OUT, under a lock) when a first candidate fits, so a search whose
    candidates are all pruned trains nothing."""

    def __init__(self, opts: SearchOptions, progress, data=None):
        self.opts, self.progress, self._data, self._ctx = opts, progress, data, None

    def __call__(self) -> TrainingContext:
        if self._ctx is None:
            data = self._data if self._data is not None else load_data(self.opts.train)
            model, history = shared_float_model(self.opts, data, self.progress)
            self._ctx = TrainingContext(self.opts, data, model, history)
        return self._ctx


def to_integer(qat_model, data):
    """The integer model of a trained QAT model (as `intformer train` converts it)."""
    from model.convert import to_intmodel_for
    return to_intmodel_for(qat_model, data)


def integer_rmse(intmodel, data, split: str = "val") -> float:
    """RMSE of the integer model in target units (as flows/run.py scores the test split); a
    classifier's error rate, 1 - accuracy, an anomaly detector's 1 - F1 with its threshold
    chosen on the validation split (the search's accuracy objective, "val_rmse")."""
    import numpy as np
    s = data.split(split)
    if data.task == "anomaly":
        from model import train as T
        from .run import set_threshold
        set_threshold(intmodel, data)
        _, flags = intmodel.detect(intmodel.quantize_input(data.denormalise_features(s.X)))
        return 1.0 - T.detection_metrics(flags, s.y)["f1"]
    if data.task == "classify":
        _, classes = intmodel.classify(intmodel.quantize_input(data.denormalise_features(s.X)))
        return float(np.mean(classes != s.y))
    pred = intmodel.predict(data.denormalise_features(s.X))
    return float(np.sqrt(np.mean((pred - data.denormalise_target(s.y)) ** 2)))


# =============================================================================================
# The objective
# =============================================================================================

def _trial_dir(out: Path, study: str, number: int) -> Path:
    """Where a trained trial keeps its weights (trial numbers are per study)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in study)
    return Path(out) / "trials" / safe / f"{number:04d}"


def _save_trial(d: Path, qat_model, history: list) -> None:
    import torch
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / ".qat.pt.tmp"
    torch.save(qat_model.state_dict(), tmp)
    os.replace(tmp, d / "qat.pt")
    write_json_atomic(d / "history.json", history)


class Objective:
    """(validation RMSE, cycles) of a trial; non-fitting candidates are pruned untrained.

    ``context``: a callable giving the :class:`TrainingContext` (a :class:`SharedContext`),
    called only for candidates that fit."""

    def __init__(self, space: SearchSpace, opts: SearchOptions, context, progress=print,
                 worker: int = 0):
        self.space, self.opts, self.context, self.progress = space, opts, context, progress
        self.worker = worker

    def __call__(self, trial) -> tuple[float, int]:
        t0 = time.perf_counter()
        cand = self.space.suggest(trial)
        trial.set_user_attr("worker", self.worker)
        trial.set_user_attr("bits", cand.bits)
        trial.set_user_attr("hw", cand.hw)
        fit = check_fit(self.space, cand)
        trial.set_user_attr("resources", fit.resources)
        trial.set_user_attr("utilisation", fit.utilisation)
        trial.set_user_attr("cycles_estimate", fit.cycles)
        if not fit.fits:
            trial.set_user_attr("pruned_reason", fit.reason)
            self.progress(f"trial {trial.number}: does not fit ({fit.reason}): pruned, not trained")
            raise optuna.TrialPruned(fit.reason)

        ctx = self.context()
        qat_model, history = ctx.finetune(cand)
        intmodel = to_integer(qat_model, ctx.data)
        try:
            cycles = latency_cycles(intmodel, cand.hw)
        except ValueError as e:
            raise CandidateError(f"trial {trial.number}: the hardware rejects the trained "
                                 f"model: {e}") from None
        rmse = integer_rmse(intmodel, ctx.data, "val")
        _save_trial(_trial_dir(self.opts.out, study_name(self.opts), trial.number), qat_model,
                    history)
        clock = float(cand.hw.get("clock_mhz", 100.0))
        trial.set_user_attr("val_rmse", rmse)
        trial.set_user_attr("cycles", cycles)
        trial.set_user_attr("us", cycles / clock)
        trial.set_user_attr("clock_mhz", clock)
        trial.set_user_attr("seconds", round(time.perf_counter() - t0, 2))
        what = {"classify": "validation error rate", "anomaly": "validation 1 - F1"}.get(
            ctx.data.task, "validation RMSE")
        self.progress(f"trial {trial.number}: {what} {rmse:.3f}, {cycles:,} cycles "
                      f"({cycles / clock:.1f} us at {clock:g} MHz)")
        return rmse, cycles


# =============================================================================================
# Study, storage, workers
# =============================================================================================

def redact(url: str) -> str:
    """A storage URL without its password (for messages and search.json)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:       # not a URL SQLAlchemy can parse: nothing to hide in it
        return url


#: The pip package of a database driver module SQLAlchemy imports for a storage URL.
#: (SQLAlchemy 2.1's postgresql:// is psycopg 3, intformer's [postgres] extra.)
DRIVER_PACKAGES = {"psycopg": "'psycopg[binary]' (or: pip install 'intformer[postgres]')",
                   "psycopg2": "psycopg2-binary", "pg8000": "pg8000", "pymysql": "PyMySQL",
                   "MySQLdb": "mysqlclient", "mysql": "mysql-connector-python"}


def _storage_error(url: str, e: BaseException) -> SearchError:
    """The SearchError of a storage that cannot be opened; a missing driver says what to
    install."""
    cause = e
    while cause is not None and not isinstance(cause, ModuleNotFoundError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None and cause.name:
        module = cause.name.split(".")[0]
        package = DRIVER_PACKAGES.get(module, module)
        return SearchError(f"cannot open the Optuna storage {redact(url)}: its database driver "
                           f"(Python module {module!r}) is not installed: pip install {package}")
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return SearchError(f"cannot open the Optuna storage {redact(url)}: {first}")


def open_storage(url: str):
    """Optuna's RDB storage for ``url``. SQLite waits up to 60 s for a lock held by another
    worker instead of failing with 'database is locked', and runs in write-ahead-log mode:
    readers do not block the writer, and a commit (Optuna makes one per parameter) costs one
    sync instead of several (a trial's bookkeeping went from 1.3 s to 0.5 s here). A server
    database's connections are checked before use (``pool_pre_ping``): one the server closed
    (a restart, an idle timeout) during a long trial is replaced instead of failing it."""
    from sqlalchemy.exc import SQLAlchemyError
    sqlite = url.startswith("sqlite")
    try:
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": 60}} if sqlite
            else {"pool_pre_ping": True})
        if sqlite:
            with storage.engine.connect() as connection:   # persistent: stored in the file
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        return storage
    except (SQLAlchemyError, ImportError, ValueError, OSError) as e:
        raise _storage_error(url, e) from None


def default_storage(out: Path) -> str:
    return f"sqlite:///{(Path(out) / 'search.db').resolve()}"


def study_name(opts: SearchOptions) -> str:
    return opts.study or f"intformer-{opts.device}"


def setup_fingerprint(opts: SearchOptions, space: SearchSpace, data) -> dict:
    """What makes trials comparable: a study only takes trials made with the same setup."""
    stats = data.stats()
    return _jsonable({
        "device": opts.device, "model": space.shape,
        "data": {k: stats[k]
                 for k in ("source", "feature_names", "target_name", "window", "counts")},
        "seed": opts.train.seed, "scheme": opts.train.scheme, "qat_epochs": opts.epochs,
        "float_epochs": opts.float_epochs, "max_train_windows": opts.train.max_train_windows})


class NeighbourSampler(optuna.samplers.BaseSampler):
    """New designs from the Pareto front: a front design (half of the time crossed with
    another, parameter by parameter), then one to three parameters changed, numbers by one
    step to a neighbouring choice (pe 4 -> 2 or 8, bits 6 -> 4 or 8), names to any other.

    Why not TPE or NSGA-II: both start from random designs, and in this space almost none fit
    (XC7S15, default model: 0 of 8 random designs fitted, and 1 of 14 TPE designs after the two
    presets; NSGA-II stays in its random first generation until ``population_size`` designs
    complete). Small steps from the designs that fit, starting from the presets, kept 8 of 18
    new designs within the device in the same test. Before any design completes (or on a
    device where none fits), designs are drawn at random."""

    def __init__(self, choices: dict, seed: int | None = None, max_changes: int = 3):
        self.choices = {k: tuple(v) for k, v in choices.items() if len(v) > 1}
        self.max_changes = max_changes
        self.seed = abs(int(seed or 0))

    def _rng(self, trial, *salt):
        """The random stream of one trial: seeded by the trial number, which the storage makes
        unique in the study. Workers (on one machine or several, all with the same seed) never
        draw from the same stream, and one worker's search is reproducible."""
        import numpy as np
        return np.random.default_rng([self.seed, trial.number, *salt])

    def infer_relative_search_space(self, study, trial) -> dict:
        from optuna.distributions import CategoricalDistribution
        return {k: CategoricalDistribution(v) for k, v in self.choices.items()}

    def sample_relative(self, study, trial, search_space) -> dict:
        from optuna.trial import TrialState
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not done or not search_space:
            return {}
        front = [t for t in done if not any(_dominates(o.values, t.values) for o in done)]
        tried = {_key(t.params) for t in study.get_trials(deepcopy=False)}
        rng = self._rng(trial)
        for _ in range(20):                   # a design not tried yet, if one comes up
            child = self._child(rng, front, list(search_space))
            if _key(child) not in tried:
                break
        return child

    @staticmethod
    def _parent(rng, front: list) -> dict:
        return front[rng.integers(len(front))].params

    def _child(self, rng, front: list, names: list) -> dict:
        child = dict(self._parent(rng, front))
        if len(front) > 1 and rng.random() < 0.5:          # crossover
            other = self._parent(rng, front)
            for k in names:
                if k in other and rng.random() < 0.5:
                    child[k] = other[k]
        changes = min(len(names), int(rng.integers(1, self.max_changes + 1)))
        for i in rng.choice(len(names), size=changes, replace=False):   # mutation
            child[names[i]] = self._step(rng, names[i], child.get(names[i]))
        return {k: child[k] for k in names if k in child}

    def _step(self, rng, name: str, value):
        choices = self.choices[name]
        if value in choices and all(isinstance(c, int) for c in choices):
            i = choices.index(value)
            near = [choices[j] for j in (i - 1, i + 1) if 0 <= j < len(choices)]
            return near[rng.integers(len(near))]
        others = [c for c in choices if c != value]
        return others[rng.integers(len(others))]

    def sample_independent(self, study, trial, param_name, param_distribution):
        """A uniform random choice (before any design completes), from the trial's stream."""
        import zlib
        choices = param_distribution.choices
        return choices[self._rng(trial, zlib.crc32(param_name.encode())).integers(len(choices))]


def _dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and list(a) != list(b)


def _key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


def _sampler(space: SearchSpace, seed: int):
    # Every worker has the same seed: the sampler's streams are per trial number, so two
    # workers asking at the same time (on any machine) do not draw the same points.
    return NeighbourSampler(space.choices, seed=seed)


#: PostgreSQL advisory lock key of the study setup (a signed 64-bit number other programs of
#: the database are unlikely to use).
SETUP_LOCK_KEY = int.from_bytes(hashlib.sha256(b"intformer search setup").digest()[:8], "big",
                                signed=True)


@contextlib.contextmanager
def _setup_lock(opts: SearchOptions):
    """Held while a search creates the storage's tables and sets the study up. Searches that
    start together on several machines would otherwise race: two ``CREATE TABLE`` of Optuna's
    schema in a new PostgreSQL database fail one of them (duplicate key in pg_type), and two
    searches could both enqueue the preset anchors. PostgreSQL: a session-level advisory lock
    on a connection of its own (autocommit, so it is not an idle transaction); other
    databases: a file lock in OUT (SQLite is on one machine)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError
    from sqlalchemy.pool import NullPool
    try:
        backend = make_url(opts.storage).get_backend_name()
    except ArgumentError:
        backend = None          # open_storage says what is wrong with the URL
    if backend != "postgresql":
        with _file_lock(Path(opts.out) / ".ask.lock"):
            yield
        return
    engine = connection = None
    try:
        engine = create_engine(opts.storage, poolclass=NullPool)
        connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        connection.exec_driver_sql(f"SELECT pg_advisory_lock({SETUP_LOCK_KEY})")
    except (SQLAlchemyError, ImportError, ValueError, OSError) as e:
        if connection is not None:
            connection.close()
        if engine is not None:
            engine.dispose()
        raise _storage_error(opts.storage, e) from None
    try:
        yield
    finally:
        try:
            connection.exec_driver_sql(f"SELECT pg_advisory_unlock({SETUP_LOCK_KEY})")
        except SQLAlchemyError:
            pass                # the connection is gone, and its lock with it
        finally:
            connection.close()
            engine.dispose()


def open_study(opts: SearchOptions, space: SearchSpace, setup: dict):
    """(storage, study): the storage opened (its tables created if new) and the study created
    or reopened under :func:`_setup_lock`, so that searches starting together do both once.
    The caller disposes of ``storage.engine`` when done."""
    with _setup_lock(opts):
        storage = open_storage(opts.storage)
        try:
            return storage, create_study(opts, space, setup, storage)
        except BaseException:
            storage.engine.dispose()
            raise


def create_study(opts: SearchOptions, space: SearchSpace, setup: dict, storage):
    """Create (or reopen) the study in ``storage``; a new one gets the two preset anchors
    enqueued. Under :func:`_setup_lock` (:func:`open_study`)."""
    study = optuna.create_study(storage=storage, study_name=study_name(opts),
                                directions=["minimize", "minimize"],
                                sampler=_sampler(space, opts.train.seed), load_if_exists=True)
    existing = study.user_attrs.get("setup")
    if existing is None:
        study.set_user_attr("setup", setup)
        study.set_user_attr("objectives", ["validation RMSE", "cycles"])
        for bits in (8, 4):
            study.enqueue_trial(space.anchor(bits), skip_if_exists=True,
                                user_attrs={"anchor": f"{opts.device} preset, uniform {bits} bits"})
    elif existing != setup:
        diff = sorted(k for k in set(existing) | set(setup) if existing.get(k) != setup.get(k))
        raise SearchError(f"study {study_name(opts)!r} in {redact(opts.storage)} was made with "
                          f"other settings ({', '.join(diff)} differ): choose another --study "
                          f"or --storage")
    return study


def _split(n: int, k: int) -> list[int]:
    return [n // k + (i < n % k) for i in range(k)]


def run_worker(opts: SearchOptions, space: SearchSpace, index: int, n_trials: int, progress,
               context: SharedContext | None = None) -> None:
    """One worker: load the study from the storage and run ``n_trials`` of it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)   # our own one line per trial
    storage = open_storage(opts.storage)
    try:
        study = optuna.load_study(study_name=study_name(opts), storage=storage,
                                  sampler=_sampler(space, opts.train.seed))
        objective = Objective(space, opts, context or SharedContext(opts, progress), progress,
                              index)
        for _ in range(n_trials):
            run_trial(study, objective, Path(opts.out) / ".ask.lock")
    finally:
        storage.engine.dispose()        # its connections closed now, not when collected


def run_trial(study, objective, ask_lock: Path) -> None:
    """One trial, ask and tell. Asking happens under a lock between the local workers: SQLite
    has no SELECT ... FOR UPDATE, so two workers could otherwise both pop the same enqueued
    trial (Optuna issue #4621)."""
    from optuna.trial import TrialState
    with _file_lock(ask_lock):
        trial = study.ask()
    try:
        values = objective(trial)
    except optuna.TrialPruned:
        study.tell(trial, state=TrialState.PRUNED)
    except CandidateError as e:         # recorded, and the search goes on
        trial.set_user_attr("fail_reason", str(e))
        study.tell(trial, state=TrialState.FAIL)
    except BaseException:
        study.tell(trial, state=TrialState.FAIL)
        raise
    else:
        study.tell(trial, values)


def _worker_process(opts: SearchOptions, shape: dict, index: int, n_trials: int,
                    verbose: bool) -> None:
    """Entry point of a spawned worker process."""
    t0 = time.perf_counter()

    def progress(msg):
        if verbose:
            print(f"[worker {index} {time.perf_counter() - t0:7.1f}s] {msg}", file=sys.stderr,
                  flush=True)
    run_worker(opts, SearchSpace(shape, opts.device), index, n_trials, progress)


def run_workers(opts: SearchOptions, space: SearchSpace, context: SharedContext,
                progress=print, verbose: bool = False) -> None:
    """``opts.trials`` split over ``opts.workers`` workers on the one study: this process is
    worker 0, the others are spawned processes (spawned, not forked: a fork of a process that
    has used torch threads can hang)."""
    shares = _split(opts.trials, opts.workers)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker_process, args=(opts, space.shape, i, n, verbose),
                         name=f"intformer-search-{i}")
             for i, n in enumerate(shares) if i > 0 and n > 0]
    try:
        for p in procs:
            p.start()
        if procs:
            progress(f"{len(procs) + 1} workers on the study (this process and {len(procs)} more)")
        run_worker(opts, space, 0, shares[0], progress, context=context)
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    failed = [p.name for p in procs if p.exitcode != 0]
    if failed:
        raise SearchError(f"worker process(es) {', '.join(failed)} failed (see their messages "
                          f"above); the trials they finished are in the study")


# =============================================================================================
# Results: search.json, pareto.csv, pareto.png, the chosen run
# =============================================================================================

def trial_doc(t) -> dict:
    a = t.user_attrs
    bits = a.get("bits") or {}
    weights = [b for n, b in bits.items() if n.endswith(".weight")]
    acts = [b for n, b in bits.items() if not n.endswith(".weight")]
    return {"number": t.number, "state": t.state.name,
            "val_rmse": a.get("val_rmse"), "cycles": a.get("cycles"), "us": a.get("us"),
            "cycles_estimate": a.get("cycles_estimate"), "anchor": a.get("anchor"),
            "worker": a.get("worker"),
            "pruned_reason": a.get("pruned_reason"), "fail_reason": a.get("fail_reason"),
            "seconds": a.get("seconds"),
            "mean_weight_bits": round(sum(weights) / len(weights), 3) if weights else None,
            "mean_activation_bits": round(sum(acts) / len(acts), 3) if acts else None,
            "utilisation": a.get("utilisation"), "resources": a.get("resources"),
            "params": dict(t.params), "bits": bits, "hw": a.get("hw")}


def pareto_front(docs: list[dict]) -> list[dict]:
    """Completed trials that no other completed trial dominates (both objectives minimised),
    sorted by cycles."""
    done = [d for d in docs if d["state"] == "COMPLETE"]

    def dominates(a, b):
        return (a["val_rmse"] <= b["val_rmse"] and a["cycles"] <= b["cycles"]
                and (a["val_rmse"], a["cycles"]) != (b["val_rmse"], b["cycles"]))
    front = [d for d in done if not any(dominates(o, d) for o in done)]
    return sorted(front, key=lambda d: (d["cycles"], d["val_rmse"], d["number"]))


def choose(front: list[dict], max_cycles: int | None = None) -> dict | None:
    """The front point with the lowest validation RMSE (with at most ``max_cycles`` cycles if
    given; None if no point qualifies)."""
    pool = [d for d in front if max_cycles is None or d["cycles"] <= max_cycles]
    return min(pool, key=lambda d: (d["val_rmse"], d["cycles"], d["number"])) if pool else None


def _utilisation_text(d: dict) -> str:
    return " ".join(f"{k} {100 * v:.0f}%" for k, v in (d.get("utilisation") or {}).items())


def front_table(front: list[dict], chosen: int | None) -> str:
    """The Pareto front as a plain-text table."""
    head = (f"{'':2}{'trial':>6} {'val RMSE':>9} {'cycles':>9} {'us':>9}  {'w bits':>6} "
            f"{'a bits':>6}  estimated resources")
    rows = [head, "-" * len(head)]
    for d in front:
        mark = "* " if d["number"] == chosen else "  "
        anchor = f"  ({d['anchor']})" if d.get("anchor") else ""
        rows.append(f"{mark}{d['number']:>6} {d['val_rmse']:>9.4f} {d['cycles']:>9,} "
                    f"{d['us']:>9.1f}  {d['mean_weight_bits']:>6.2f} "
                    f"{d['mean_activation_bits']:>6.2f}  {_utilisation_text(d)}{anchor}")
    return "\n".join(rows)


def write_pareto_csv(path: Path, front: list[dict]) -> None:
    keys = sorted({k for d in front for k in (d.get("utilisation") or {})})
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["trial", "val_rmse", "cycles", "us", "mean_weight_bits",
                    "mean_activation_bits", *[f"util_{k}" for k in keys], "anchor"])
        for d in front:
            util = d.get("utilisation") or {}
            w.writerow([d["number"], d["val_rmse"], d["cycles"], d["us"], d["mean_weight_bits"],
                        d["mean_activation_bits"], *[util.get(k, "") for k in keys],
                        d.get("anchor") or ""])
    os.replace(tmp, path)


def write_pareto_png(path: Path, docs: list[dict], front: list[dict], chosen: int | None,
                     device: str, target: str) -> None:
    """Validation RMSE vs cycles of the trained trials, the front as a staircase (matplotlib's
    Agg canvas directly: no pyplot, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    done = [d for d in docs if d["state"] == "COMPLETE"]
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.scatter([d["cycles"] for d in done], [d["val_rmse"] for d in done], s=18,
               color="#9aa0a6", label="trained candidates", zorder=2)
    if front:
        ax.step([d["cycles"] for d in front], [d["val_rmse"] for d in front], where="post",
                color="#e8590c", lw=1.2, zorder=3)
        ax.scatter([d["cycles"] for d in front], [d["val_rmse"] for d in front], s=36,
                   color="#e8590c", label="Pareto front", zorder=4)
    for d in done:
        if d.get("anchor"):
            ax.annotate(d["anchor"].replace(f"{device} ", ""), (d["cycles"], d["val_rmse"]),
                        fontsize=7, xytext=(4, 4), textcoords="offset points")
    pick = [d for d in done if d["number"] == chosen]
    if pick:
        ax.scatter([pick[0]["cycles"]], [pick[0]["val_rmse"]], s=140, facecolors="none",
                   edgecolors="#1f6fd1", lw=1.6, label=f"chosen (trial {chosen})", zorder=5)
    pruned = sum(d["state"] == "PRUNED" for d in docs)
    ax.set_title(f"{device}: {len(done)} trained designs ({pruned} pruned: do not fit)")
    ax.set_xlabel("latency (cycles per window)")
    ax.set_ylabel(f"validation RMSE of {target} (integer model)" if target is not None
                  else "validation error, 1 - accuracy or 1 - F1 (integer model)")
    ax.grid(True, color="#e6e6e6")
    ax.legend(fontsize=8, frameon=False)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110, facecolor="white")
    os.replace(tmp, path)


def write_chosen_run(run: Path, ctx: TrainingContext, space: SearchSpace, doc: dict) -> dict:
    """The chosen trial as a normal run directory (what `intformer train` writes, plus
    ``hw_config.json`` and ``search_trial.json``), assembled in a temporary directory and
    renamed into place. Returns its metrics."""
    import torch

    from hw.presets import preset
    from model import train as T
    from model.qat import quant_params

    from .run import (anomaly_metrics, classify_metrics, integer_metrics, save_anomaly_scores,
                      save_predictions, save_test_windows)

    run = Path(run)
    data = ctx.data
    cand = Candidate(doc["params"], doc["bits"], doc["hw"])      # as the trial recorded it
    cfg = qat_config(ctx.opts, data, cand)
    tmp = Path(tempfile.mkdtemp(dir=run.parent, prefix=f".{run.name}."))
    try:
        saved = _trial_dir(ctx.opts.out, study_name(ctx.opts), doc["number"])
        if (saved / "qat.pt").is_file():
            shutil.copyfile(saved / "qat.pt", tmp / "qat.pt")
            qat_history = json.loads((saved / "history.json").read_text())
        else:     # a trial of another worker machine: QAT is seeded, so train it again
            qat_model, qat_history = ctx.finetune(cand)
            torch.save(qat_model.state_dict(), tmp / "qat.pt")
        torch.save(ctx.float_model.state_dict(), tmp / "float.pt")
        write_json_atomic(tmp / "config.json", {"train": cfg.to_dict(), "data": data.stats(),
                                                "qat": True, "search": {"trial": doc["number"]}})
        qat_model, _ = T.load_run(tmp, "qat")
        write_json_atomic(tmp / "qparams.json", quant_params(qat_model))
        write_json_atomic(tmp / "history.json", ctx.float_history + qat_history)
        intmodel = to_integer(qat_model, data)
        classify = data.task == "classify"
        metrics = {"float": {s: T.evaluate(ctx.float_model, data, s) for s in ("val", "test")},
                   "qat": {s: T.evaluate(qat_model, data, s) for s in ("val", "test")}}
        if data.task == "anomaly":
            metrics["baseline"] = {"test": T.baseline_anomaly_metrics(data, "test")}
            metrics.update(anomaly_metrics(intmodel, qat_model, data))    # sets the threshold
            metrics["int"]["val"] = {"f1": 1.0 - integer_rmse(intmodel, data, "val")}
        elif classify:
            metrics["baseline"] = {s: T.baseline_class_metrics(data, s) for s in ("val", "test")}
            metrics.update(classify_metrics(intmodel, qat_model, data))
            metrics["int"]["val"] = {"accuracy": 1.0 - integer_rmse(intmodel, data, "val")}
        else:
            metrics["persistence"] = {s: T.persistence_metrics(data, s) for s in ("val", "test")}
            metrics.update(integer_metrics(intmodel, qat_model, data))
            metrics["int"]["val"] = {"rmse": integer_rmse(intmodel, data, "val")}
        metrics["seconds"] = {"search_trial": doc.get("seconds")}
        intmodel.save(tmp)
        save_test_windows(tmp, intmodel, data)
        if data.task == "anomaly":
            save_anomaly_scores(tmp, T.TrainResult(ctx.float_model, qat_model, metrics, [], tmp,
                                                   0.0), intmodel, data)
        elif not classify:
            save_predictions(tmp, T.TrainResult(ctx.float_model, qat_model, metrics, [], tmp, 0.0),
                             intmodel, data)
        write_json_atomic(tmp / "metrics.json", metrics)
        other = [t for t in DEVICES if t != space.device]
        write_json_atomic(tmp / "hw_config.json", {space.device: cand.hw, **{
            t: preset(t, cand.dominant_bits) for t in other}})
        write_json_atomic(tmp / "search_trial.json", doc)
        shutil.rmtree(run, ignore_errors=True)
        os.replace(tmp, run)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return metrics


# =============================================================================================
# The whole search
# =============================================================================================

def check_options(opts: SearchOptions) -> None:
    if opts.device not in DEVICES:
        raise SearchError(f"unknown device {opts.device!r}: choose one of {', '.join(DEVICES)}")
    for name, low in (("trials", 1), ("workers", 1), ("epochs", 0)):
        v = getattr(opts, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise SearchError(f"--{name} must be an integer >= {low}, got {v!r}")
    if opts.float_epochs is not None and opts.float_epochs < 1:
        raise SearchError(f"--float-epochs must be >= 1, got {opts.float_epochs}")
    if opts.max_cycles is not None and opts.max_cycles < 1:
        raise SearchError(f"--max-cycles must be >= 1, got {opts.max_cycles}")
    if opts.workers > opts.trials:
        raise SearchError(f"--workers {opts.workers} is more than --trials {opts.trials}")


def search(opts: SearchOptions, progress=print, verbose_workers: bool = False) -> dict:
    """Run the search and write ``OUT/`` (module docstring). Returns the search.json document.

    Order: options -> data and shape -> storage (fail fast, before any training) -> trials
    (this process and ``workers - 1`` spawned processes; the shared float model is trained
    when a first candidate fits) -> results -> chosen run -> verify (``opts.verify``) ->
    build (``opts.build``)."""
    check_options(opts)
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    opts = replace(opts, out=out, storage=opts.storage or default_storage(out))
    data = load_data(opts.train)
    space = SearchSpace(model_config(opts.train, data).intmodel_config(), opts.device)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, study = open_study(opts, space, setup_fingerprint(opts, space, data))
    try:
        _check_float_cache(opts, data)
        done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        progress(f"study {study.study_name!r} in {redact(opts.storage)}: {len(space.searched)} "
                 f"parameters, {done} trials so far; {opts.trials} more")

        for stale in ("search.json", "pareto.csv", "pareto.png"):   # never next to new trials
            (out / stale).unlink(missing_ok=True)

        context = SharedContext(opts, progress, data)
        run_workers(opts, space, context, progress, verbose_workers)

        doc = summarise(opts, space, study, data)
    finally:
        storage.engine.dispose()        # its connections closed now, not when collected
    if doc["chosen"] is None:
        write_json_atomic(out / "search.json", doc)
        raise SearchError(_no_choice(doc, opts, out / "search.json"))
    chosen = next(d for d in doc["trials"] if d["number"] == doc["chosen"]["trial"])
    progress(f"writing the chosen design (trial {chosen['number']}) to {out / 'chosen'}")
    doc["chosen"]["metrics"] = write_chosen_run(out / "chosen", context(), space, chosen)
    write_json_atomic(out / "search.json", doc)
    if opts.verify:
        from .build import verify
        v = verify(out / "chosen", target=opts.device, compiled_windows=opts.verify_windows,
                   progress=progress)
        doc["chosen"]["verify"] = {k: v[k] for k in ("windows", "mismatches", "latency")}
        doc["chosen"]["verify"]["executors"] = list(v["executors"])
        write_json_atomic(out / "search.json", doc)
    if opts.build:
        from .build import build
        b = build(out / "chosen", opts.device, progress=progress)
        doc["chosen"]["build"] = {"fits": b["fits"], "summary": b["summary"]}
        write_json_atomic(out / "search.json", doc)
    return doc


def _no_choice(doc: dict, opts: SearchOptions, path: Path) -> str:
    front = [d for d in doc["trials"] if d["number"] in doc["pareto"]]
    if front:
        fastest = min(d["cycles"] for d in front)
        return (f"no fitting design has at most {opts.max_cycles:,} cycles (the fastest has "
                f"{fastest:,}): raise --max-cycles or run more trials (results in {path})")
    return (f"no candidate was trained: {doc['counts']['PRUNED']} do not fit the {opts.device}, "
            f"{doc['counts']['FAIL']} failed (reasons in {path}); try a smaller model or more "
            f"trials")


def summarise(opts: SearchOptions, space: SearchSpace, study, data) -> dict:
    """The search.json document of every trial of the study; writes pareto.csv and
    pareto.png."""
    out = Path(opts.out)
    docs = [trial_doc(t) for t in study.get_trials(deepcopy=False)]
    front = pareto_front(docs)
    pick = choose(front, opts.max_cycles)
    rule = ("lowest validation RMSE on the Pareto front"
            + (f" with at most {opts.max_cycles:,} cycles" if opts.max_cycles else ""))
    doc = {"device": opts.device, "study": study.study_name, "storage": redact(opts.storage),
           "objectives": {"val_rmse": f"minimise: integer model, validation split, "
                                      + ("error rate (1 - accuracy; a classifier)"
                                         if data.task == "classify" else
                                         "1 - F1 (an anomaly detector, its threshold chosen "
                                         "there)" if data.task == "anomaly" else
                                         f"{data.target_name} units"), "cycles": "minimise: "
                                      "Accelerator.cycles(), one window"},
           "model": space.shape, "setup": study.user_attrs.get("setup"),
           "options": {"trials": opts.trials, "workers": opts.workers, "epochs": opts.epochs,
                       "float_epochs": opts.float_epochs, "max_cycles": opts.max_cycles},
           "counts": {s: sum(d["state"] == s for d in docs)
                      for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")},
           "pareto": [d["number"] for d in front],
           "chosen": {"trial": pick["number"], "rule": rule, "run": str(out / "chosen")}
           if pick else None,
           "trials": docs}
    write_pareto_csv(out / "pareto.csv", front)
    write_pareto_png(out / "pareto.png", docs, front, pick["number"] if pick else None,
                     opts.device, data.target_name if data.task == "forecast" else None)
    return doc

