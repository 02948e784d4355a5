"""Whole-model fuzzing: random integer models and hardware configurations, simulated in
Amaranth and compared with the integer reference bit for bit, with ``Accelerator.cycles()``
exact.

Every example draws (from hypothesis, or from a seeded generator for long runs):

* a head, one of three kinds alike: a forecaster of horizon 1-4 (a linear ``pred`` of that
  many outputs), a classifier of 2-5 classes (a linear ``logits``, then the ``argmax``
  operator ``pred``: the logit codes, then the class) or an anomaly detector (a linear
  ``score`` of one output, then the ``threshold`` operator ``pred``: the score code, then the
  flag);
* a shape: features 1-12, window 2-64, d_model (heads x head width), heads, layers 1-3, FFN
  width, batch-norm / layer-norm, any registered activation (ReLU, GELU, ...); its simulated
  size, head included, is bounded by a cycle ``budget`` (a minimal-folding estimate,
  :func:`cost`), so long windows come with small d_model and three layers with tiny ones;
* a type per tensor (activations, positional encoding, input, every weight): widths 2-8, one
  width for the model or one per tensor, symmetric or asymmetric with any zero point (softmax
  outputs: unsigned, zero point 0, by definition; the output of ``argmax`` and ``threshold``
  has no type of its own: it is derived from their input's);
* a synthetic model (:func:`model.synthetic.random_intmodel`, random seed) whose integer
  parameters may then be pushed to the edges of their contracts (:func:`perturb`): extreme
  weights and biases, negative / out-of-scale requantisation multipliers and shifts, random
  exponential and activation tables, softmax and layer-norm precisions, extreme affine
  constants and positional encodings, an anomaly threshold below qmin, at qmin or qmax, or
  above qmax (a synthetic model's is anywhere from qmin to qmax + 1);
* hardware knobs per block (:func:`hw_configs`): ``pe`` / ``simd`` divisors, lane and
  requantisation multipliers (``dsp`` / ``dsp_packed`` / ``lut``), every storage (``bram`` /
  ``lutram`` / ``registers``), attention lanes, softmax / layer-norm serial widths and banks,
  fused Q/K/V, context accumulators in memory, FIFO storage (the head's linear by its own
  name; ``argmax`` and ``threshold`` have no knobs, and sometimes get a forecaster's ``pred``
  knobs, as a preset names them, which they must ignore);

and simulates it in Amaranth (one simulation): a random window alone, whose latency (the edge
of its last output code: the head streams ``IntModel.horizon`` codes per window) must equal
``Accelerator.cycles()``, then more random windows and the extreme ones (all qmin, all qmax,
alternating qmin / qmax both ways, all zero point) back to back under random stalls on both
sides. Every element every block streams out, for every window, must equal the integer
reference's tensor (``IntModel.forward``), not only the prediction: a synthetic model's
prediction is often the same for all windows, which would hide a wrong block upstream.

The suite runs a few examples with hypothesis (``tests/test_fuzz_model.py``); many more::

    .venv/bin/python -m tests.fuzz_model --examples 200 [--seed 1] [--budget 4000]

draws each example from its own generator (seeded with the run's seed and the example's index:
independent, uniform, reproducible), prints every configuration checked and every failure
(with the first block whose schedule leaves the model, and the flags that replay it:
``--seed S --only I`` prints all its draws), then the number of configurations and windows
checked and of failures. ``--hypothesis`` draws with hypothesis's engine instead and shrinks
the first failure to a minimal example (its generator repeats and mutates earlier examples,
so a run sees fewer different models).
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from hypothesis import seed as hypothesis_seed

from hw.accelerator import Accelerator
from model import intops, ops as registry
from model.intmodel import graph_spec, outputs
from model.intops import QType
from model.synthetic import random_inputs, random_intmodel

STORAGES = ("bram", "lutram", "registers")
MULS = ("dsp", "lut")
LANE_MULS = ("dsp", "dsp_packed", "lut")
M_MAX = (1 << intops.MULT_BITS) - 1       # |M| of a requantisation multiplier


# -------------------------------------------------------------------------------------------
# Where the choices come from
# -------------------------------------------------------------------------------------------

class HypothesisDraw:
    """Choices from hypothesis (``data`` of ``st.data()``): shrinkable, and printed (with
    their labels) when an example fails."""

    def __init__(self, data):
        self.data = data

    def int(self, lo: int, hi: int, label: str) -> int:
        return self.data.draw(st.integers(lo, hi), label=label)

    def bool(self, label: str) -> bool:
        return self.data.draw(st.booleans(), label=label)

    def choice(self, options, label: str):
        return self.data.draw(st.sampled_from(list(options)), label=label)

    def permutation(self, items, label: str) -> list:
        return self.data.draw(st.permutations(list(items)), label=label)


class RandomDraw:
    """Choices from NumPy's generator seeded with ``seed``: uniform and independent (no
    shrinking), each recorded with its label in ``log`` to show what a failing example drew."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.log = []

    def _note(self, label, value):
        self.log.append((label, value))
        return value

    def int(self, lo: int, hi: int, label: str) -> int:
        return self._note(label, int(self.rng.integers(lo, hi + 1)))

    def bool(self, label: str) -> bool:
        return self._note(label, bool(self.rng.integers(0, 2)))

    def choice(self, options, label: str):
        options = list(options)
        return self._note(label, options[int(self.rng.integers(0, len(options)))])

    def permutation(self, items, label: str) -> list:
        items = list(items)
        return self._note(label, [items[i] for i in self.rng.permutation(len(items))])


# -------------------------------------------------------------------------------------------
# Shapes
# -------------------------------------------------------------------------------------------

def head_width(c: dict) -> int:
    """Outputs of the head's linear: the horizon, the classes, or the one anomaly score."""
    return {"classify": c.get("classes"), "anomaly": 1}.get(c.get("task"), c.get("horizon", 1))


def cost(c: dict) -> int:
    """Rough cycles of one window at the smallest folding (one MAC per linear and attention
    product, one cycle per output code): the size measure the budget bounds (Amaranth
    simulates ~2,000 cycles/s here)."""
    L, F, d, ffn = c["window"], c["features"], c["d_model"], c["ffn"]
    return (L * (F * d + c["layers"] * (3 * d * d + L * d + 2 * d * ffn))
            + d * head_width(c) + outputs(c))


def head_keys(draw) -> dict:
    """The configuration keys of a head, each kind alike: a forecaster of horizon 1-4 (the key
    left out for 1, as :func:`model.intmodel.check_config` writes it), a classifier of 2-5
    classes, or an anomaly detector."""
    task = draw.choice(["forecast", "classify", "anomaly"], "task")
    if task == "classify":
        return {"task": task, "classes": draw.int(2, 5, "classes")}
    if task == "anomaly":
        return {"task": task}
    h = draw.int(1, 4, "horizon")
    return {"horizon": h} if h > 1 else {}


def shapes(draw, budget: int = 1500) -> dict:
    """A model configuration whose :func:`cost` is at most ``budget`` (or that of the
    smallest model: window 2, d_model 1, with its head). The head (:func:`head_keys`) comes
    first; the sizes are drawn in a drawn order, each within what the budget leaves at the
    smallest values of those not drawn yet: whichever comes first may be large (long windows
    with d_model 1, wide models with window 2, 12 features, three layers, wide FFNs), the
    others make do with the rest."""
    c = dict(features=1, window=2, d_model=1, heads=1, layers=1, ffn=1, **head_keys(draw))

    def top(key, values):
        """The largest of ``values`` that fits the budget with the sizes drawn so far."""
        fit = [v for v in values if cost({**c, key: v}) <= budget]
        return fit[-1] if fit else values[0]

    for dim in draw.permutation(["layers", "d_model", "features", "ffn", "window"], "order"):
        if dim == "d_model":
            heads = c["heads"] = draw.int(1, top("d_model", range(1, 5)), "heads")
            widths = range(heads, 8 * heads + 1, heads)
            c["d_model"] = heads * draw.int(1, top("d_model", widths) // heads, "head width")
        else:
            lo, hi = {"layers": (1, 3), "features": (1, 12), "ffn": (1, 64), "window": (2, 64)}[dim]
            c[dim] = draw.int(lo, top(dim, range(lo, hi + 1)), dim)
    c["norm"] = draw.choice(["batchnorm", "layernorm"], "norm")
    c["activation"] = draw.choice(registry.activations(), "activation")
    return c


# -------------------------------------------------------------------------------------------
# Types
# -------------------------------------------------------------------------------------------

def derives_type(kind: str) -> bool:
    """Whether operators of ``kind`` derive their output's type from their input's instead of
    quantising it (``argmax``: the logits' codes and the class; ``threshold``: the score's
    type): a synthetic model ignores a type given for such an output."""
    return type(registry.kind(kind)).derived_type is not registry.OpKind.derived_type


def tensor_names(config: dict) -> tuple[list, list]:
    """(names whose type is free, softmax outputs: width only). Outputs of operators that
    derive their type (:func:`derives_type`) are neither."""
    specs = graph_spec(config)
    free = ["input", "pe"]
    for s in specs:
        if s.kind != "softmax" and not derives_type(s.kind):
            free.append(s.output)
        if s.kind == "linear":
            free.append(s.output + ".weight")
    return free, [s.output for s in specs if s.kind == "softmax"]


def qtypes(draw, config: dict) -> tuple[dict, dict]:
    """``(qtypes, bits)`` for :func:`random_intmodel`: one width for the model or one per
    tensor (2-8); all symmetric or each tensor symmetric or asymmetric with any zero point."""
    free, softmax = tensor_names(config)
    common = draw.int(2, 8, "width") if draw.bool("one width") else None
    symmetric = draw.bool("all symmetric")

    def width(name):
        return common or draw.int(2, 8, name + " bits")

    out = {}
    for name in free:
        b = width(name)
        if symmetric or draw.bool(name + " symmetric"):
            out[name] = QType(b, True, 0)
        else:
            out[name] = QType(b, False, draw.int(0, (1 << b) - 1, name + " zero point"))
    return out, {name: width(name) for name in softmax}


# -------------------------------------------------------------------------------------------
# Parameters at the edges of their contracts
# -------------------------------------------------------------------------------------------

def _requant(draw, p: dict, name: str):
    """A requantisation ``(multiplier, shift)``: kept, rescaled by a power of two, negated, or
    anything a 16-bit signed multiplier and a shift in [0, MAX_SHIFT] allow."""
    how = draw.choice(["keep", "keep", "scale", "negate", "random"], name + " M")
    if how == "scale":
        step = draw.int(-4, 4, name + " shift step")
        p["shift"] = min(max(p["shift"] + step, 0), intops.MAX_SHIFT)
    elif how == "negate":
        p["multiplier"] = -p["multiplier"]
    elif how == "random":
        p["multiplier"] = draw.int(-M_MAX, M_MAX, name + " multiplier")
        p["shift"] = draw.int(0, intops.MAX_SHIFT, name + " shift")


def _codes(draw, q: QType, shape, name: str) -> np.ndarray:
    """Codes of ``q``: all qmin, all qmax, each qmin or qmax, or uniform."""
    how = draw.choice(["qmin", "qmax", "ends", "random"], name)
    rng = np.random.default_rng(draw.int(0, 2 ** 32 - 1, name + " seed"))
    if how == "qmin":
        return np.full(shape, q.qmin, np.int64)
    if how == "qmax":
        return np.full(shape, q.qmax, np.int64)
    if how == "ends":
        return np.where(rng.integers(0, 2, size=shape) == 1, q.qmax, q.qmin).astype(np.int64)
    return rng.integers(q.qmin, q.qmax + 1, size=shape)


def _ints(draw, lim: int, n: int, name: str) -> np.ndarray:
    """``n`` integers within ``[-lim, lim]``: both ends, or uniform."""
    rng = np.random.default_rng(draw.int(0, 2 ** 32 - 1, name + " seed"))
    if draw.bool(name + " at the ends"):
        return np.where(rng.integers(0, 2, size=n) == 1, lim, -lim).astype(np.int64)
    return rng.integers(-lim, lim + 1, size=n)


def perturb(draw, model) -> list:
    """Push some integer parameters of ``model`` (in place) to the edges of what the integer
    model accepts. Returns the names of the operators changed."""
    if not draw.bool("perturb parameters"):
        return []
    changed = []
    def pick(label):                                      # one operator in three
        return draw.choice([False, False, True], label)

    if pick("pe constant"):
        model.constants["pe"] = _codes(draw, model.qtype("pe"), model.constants["pe"].shape, "pe")
        changed.append("pe")
    for op in model.ops:
        if not pick(op.output):
            continue
        changed.append(op.output)
        p, a, name = op.params, op.arrays, op.output
        xt = model.qtype(op.spec.inputs[0])
        out = model.qtype(name)
        if op.kind == "linear":
            wt = QType.from_dict(p["weight_type"])
            if draw.bool(name + " weights"):
                a["weight"] = _codes(draw, wt, a["weight"].shape, name + " weight codes")
            lim = intops.bias_bound(a["weight"].shape[1], xt, wt)
            how = draw.choice(["keep", "+bound", "-bound", "zero", "ends"], name + " bias")
            if how == "ends":
                a["bias"] = _ints(draw, lim, len(a["bias"]), name + " bias")
            elif how != "keep":
                a["bias"] = np.full(len(a["bias"]), {"+bound": lim, "-bound": -lim, "zero": 0}[how],
                                    np.int64)
            _requant(draw, p, name)
        elif op.kind in ("scores", "context", "mean_pool"):
            _requant(draw, p, name)
        elif op.kind == "add":
            for m in ("ma", "mb"):
                how = draw.choice(["keep", "negate", "zero", "random"], f"{name} {m}")
                if how == "negate":
                    p[m] = -p[m]
                elif how == "zero":
                    p[m] = 0
                elif how == "random":
                    p[m] = draw.int(-M_MAX, M_MAX, f"{name} {m} value")
            if draw.bool(name + " new shift"):
                p["shift"] = draw.int(0, intops.MAX_SHIFT, name + " shift")
        elif op.kind == "softmax":
            exp_bits = draw.int(1, out.bits + 8, name + " exp_bits")
            lo = exp_bits + out.bits
            p["exp_bits"] = exp_bits
            p["recip_bits"] = draw.int(lo, lo + 10, name + " recip_bits")
            n = xt.qmax - xt.qmin + 1
            length = draw.int(1, n, name + " table length")
            rng = np.random.default_rng(draw.int(0, 2 ** 32 - 1, name + " table"))
            rest = rng.integers(0, (1 << exp_bits) + 1, size=length - 1)
            if draw.bool(name + " decreasing"):
                rest = np.sort(rest)[::-1]
            a["exp_table"] = np.concatenate([[1 << exp_bits], rest]).astype(np.int64)
        elif op.kind in ("affine", "layernorm"):
            d = len(a["scales"])
            if draw.bool(name + " scales"):
                a["scales"] = _ints(draw, M_MAX, d, name + " scales")
            if draw.bool(name + " offsets"):
                lim = 1 << draw.int(0, 24, name + " offset bits")
                a["offsets"] = _ints(draw, lim, d, name + " offsets")
            if draw.bool(name + " new shift"):
                p["shift"] = draw.int(0, intops.MAX_SHIFT, name + " shift")
            if op.kind == "layernorm" and draw.bool(name + " precision"):
                p["norm_bits"] = draw.int(0, out.bits + 6, name + " norm_bits")
                lo = p["norm_bits"] + intops.LN_SD_FRAC_BITS
                p["recip_bits"] = draw.int(lo, lo + 24, name + " recip_bits")
        elif op.kind == "lut":
            a["table"] = _codes(draw, out, a["table"].shape, name + " table")
        elif op.kind == "threshold":
            # The score's extreme codes, or beyond them (always or never met: the block has
            # no comparator then). A synthetic model's is anywhere in [qmin, qmax + 1].
            how = draw.choice(["below", "qmin", "qmax", "above"], name + " threshold")
            if how in ("below", "above"):
                beyond = draw.choice([1, 2, 1 << 8, 1 << 40], name + " threshold beyond")
                p["threshold"] = xt.qmin - beyond if how == "below" else xt.qmax + beyond
            else:
                p["threshold"] = xt.qmin if how == "qmin" else xt.qmax
    return changed


# -------------------------------------------------------------------------------------------
# Hardware knobs
# -------------------------------------------------------------------------------------------

def divisors(n: int) -> list:
    return [k for k in range(1, n + 1) if n % k == 0]


def hw_configs(draw, model) -> dict:
    """A valid hardware configuration of ``model``: knobs per block, by exact name."""
    c = model.config
    d, H = c["d_model"], c["heads"]
    dh = d // H
    blocks = {}

    def linear(name, n_out, n_in):
        blocks[name] = {"pe": draw.choice(divisors(n_out), name + " pe"),
                        "simd": draw.choice(divisors(n_in), name + " simd"),
                        "mul": draw.choice(LANE_MULS, name + " mul"),
                        "requant_mul": draw.choice(MULS, name + " requant_mul"),
                        "weight_storage": draw.choice(STORAGES, name + " weights"),
                        "bias_storage": draw.choice(STORAGES, name + " bias"),
                        "buffer_storage": draw.choice(STORAGES, name + " buffer")}

    linear("proj", d, c["features"])
    blocks["embed"] = {"mul": draw.choice(MULS, "embed mul"),
                       "b_storage": draw.choice(STORAGES, "embed pe storage")}
    for i in range(c["layers"]):
        p = f"l{i}."
        # Q, K and V fused into one linear (of any three types: the stream takes their union).
        fused = draw.bool(p + "qkv_fused")
        linear(p + "q", 3 * d if fused else d, d)
        pv = draw.choice(divisors(dh), p + "pv_lanes")
        att = {"qk_lanes": draw.choice(divisors(dh), p + "qk_lanes"),
               "pv_lanes": pv, "qkv_fused": fused,
               "qk_mul": draw.choice(MULS, p + "qk_mul"),
               "pv_mul": draw.choice(LANE_MULS, p + "pv_mul"),
               "requant_mul": draw.choice(MULS, p + "att requant_mul"),
               "softmax_mul": draw.choice(MULS, p + "softmax_mul"),
               "buffer_storage": draw.choice(STORAGES, p + "qkv buffers"),
               "table_storage": draw.choice(STORAGES, p + "exp table"),
               "softmax_buffer_storage": draw.choice(STORAGES, p + "score banks"),
               "div_bits": draw.int(1, 6, p + "softmax div_bits"),
               "softmax_banks": draw.int(2, 4, p + "softmax_banks"),
               "acc_storage": draw.choice(STORAGES if dh // pv >= 2 else ("registers",),
                                          p + "acc_storage")}
        blocks[p + "attention"] = att
        linear(p + "attn_out", d, d)
        for res in ("res1", "res2"):
            blocks[p + res] = {"mul": draw.choice(MULS, p + res + " mul")}
        for norm in ("norm1", "norm2"):
            name = p + norm
            if c["norm"] == "batchnorm":
                blocks[name] = {"mul": draw.choice(MULS, name + " mul"),
                                "storage": draw.choice(STORAGES, name + " storage")}
            else:
                blocks[name] = {
                    "mul": draw.choice(MULS, name + " mul"),
                    "weight_storage": draw.choice(STORAGES, name + " weights"),
                    "buffer_storage": draw.choice(STORAGES, name + " buffer"),
                    "sqrt_bits": draw.int(1, 6, name + " sqrt_bits"),
                    "div_bits": draw.int(1, 6, name + " div_bits"),
                    "banks": draw.int(2, 4, name + " banks")}
        if registry.activation(c["activation"]).table:
            linear(p + "ffn_pre", c["ffn"], d)
            blocks[p + "ffn_hidden"] = {"storage": draw.choice(STORAGES, p + "activation table")}
        else:
            linear(p + "ffn_hidden", c["ffn"], d)
        linear(p + "ffn_out", d, c["ffn"])
    blocks["pooled"] = {"buffer_storage": draw.choice(STORAGES, "pool buffer"),
                        "requant_mul": draw.choice(MULS, "pool requant_mul")}
    # The head: its linear by its own name ("pred", "logits" or "score"); an argmax or
    # threshold "pred" after it has no knobs, but a preset may still name "pred" for a
    # forecaster's output linear: the block must ignore those.
    specs = graph_spec(c)
    head = [s for s in specs if s.kind == "linear"][-1]
    linear(head.output, head.dims["out"], head.dims["in"])
    if specs[-1].kind != "linear" and draw.bool("pred: a forecaster's linear knobs"):
        blocks["pred"] = {"pe": 1, "simd": draw.choice(divisors(d), "pred simd"),
                          "mul": draw.choice(LANE_MULS, "pred mul")}
    return {"blocks": blocks, "fifo_storage": draw.choice(STORAGES, "fifo")}


# -------------------------------------------------------------------------------------------
# Windows and the check
# -------------------------------------------------------------------------------------------

def extreme_windows(model) -> np.ndarray:
    """All qmin, all qmax, qmin / qmax alternating (starting with each), all zero point."""
    q = model.qtype("input")
    L, F = model.config["window"], model.config["features"]
    alt = np.where(np.arange(L * F) % 2 == 0, q.qmin, q.qmax).reshape(L, F)
    alt2 = np.where(np.arange(L * F) % 2 == 0, q.qmax, q.qmin).reshape(L, F)
    return np.stack([np.full((L, F), q.qmin), np.full((L, F), q.qmax), alt, alt2,
                     np.full((L, F), q.zero_point)]).astype(np.int64)


class Stats:
    """What the fuzzer has checked so far (configurations and windows that passed) and the
    failures."""

    def __init__(self):
        self.configurations = 0
        self.windows = 0
        self.cycles = 0
        self.failures = []


def describe(model, hw: dict) -> str:
    c = model.config
    widths = sorted({t.qtype.bits for t in model.tensors.values()})
    asym = sum(not t.qtype.signed for t in model.tensors.values())
    linears = {op.output for op in model.ops if op.kind == "linear"}
    lanes = " ".join(f"{n}:{k['pe']}x{k['simd']}" for n, k in hw["blocks"].items()
                     if n in linears)
    q = model.qtype("pred")
    if model.task == "classify":
        head = f"classify {c['classes']} classes, pred {q.bits}b {'s' if q.signed else 'u'}"
    elif model.task == "anomaly":
        head = (f"anomaly, threshold {model.op('pred').params['threshold']} of "
                f"[{q.qmin}, {q.qmax}]")
    else:
        head = f"forecast horizon {model.horizon}"
    if "pred" in hw["blocks"] and "pred" not in linears:
        head += " (given linear knobs)"
    return (f"F={c['features']} L={c['window']} d={c['d_model']} H={c['heads']} "
            f"layers={c['layers']} ffn={c['ffn']} {c['norm']} {c['activation']}, {head}; "
            f"widths {widths}, {asym} unsigned tensors; {lanes}")


def simulate(acc, first: np.ndarray, rest: np.ndarray, *, stall_in: float = 0.0,
             stall_out: float = 0.0, seed: int = 0, watch: bool = True):
    """One simulation of the accelerator ``acc`` (one elaboration, which costs about as much
    as the cycles of a small design): window ``first`` alone, always-valid source and
    always-ready sink, then, once its output codes are out (``IntModel.horizon`` per window:
    the steps forecast, the logits and the class, or the score and the flag), the windows
    ``rest`` back to back with random stalls on both sides. Returns ``(output codes of first,
    its latency, output codes of rest, streams)``; the latency counts the edges up to and
    including the one that transfers the first window's last output code, as
    :func:`sim.streams.run_stream_block` does. With ``watch``,
    ``streams`` maps every block's label (:func:`sim.profile.accelerator_ports`) to the values
    its output stream carried, all windows in order. A hang fails: each phase stops at its
    :class:`sim.limits.CycleLimit` from ``acc.cycles()``."""
    import random

    from amaranth.sim import Simulator
    from sim.limits import CycleLimit
    from sim.profile import accelerator_ports
    rng = random.Random(seed)
    cycles = acc.cycles()
    per = acc.model.horizon                         # output codes per window
    total = per * (1 + len(rest))
    got, state = [], {"latency": None}
    ports = accelerator_ports(acc) if watch else []
    streams = {label: [] for label, _, _ in ports}
    watched = [s for _, _, po in ports for s in (po.valid, po.ready, po.payload)]
    sim = Simulator(acc)
    sim.add_clock(1e-8)

    async def source(ctx):
        for k, window in enumerate([first, rest]):
            for v in np.ravel(window):
                while k and rng.random() < stall_in:
                    ctx.set(acc.i.valid, 0)
                    await ctx.tick()
                ctx.set(acc.i.valid, 1)
                ctx.set(acc.i.payload, int(v))
                await ctx.tick().until(acc.i.ready)
            ctx.set(acc.i.valid, 0)
            while state["latency"] is None:           # the first window alone
                await ctx.tick()

    async def sink(ctx):
        edge = start = 0
        while len(got) < total:
            ready = not (len(got) >= per and rng.random() < stall_out)
            ctx.set(acc.o.ready, ready)
            _, _, valid, payload, *vals = await ctx.tick().sample(acc.o.valid, acc.o.payload,
                                                                  *watched)
            edge += 1
            for n, label in enumerate(streams):
                if vals[3 * n] and vals[3 * n + 1]:
                    streams[label].append(int(vals[3 * n + 2]))
            if valid and ready:
                got.append(int(payload))
                if len(got) == per:
                    state["latency"] = start = edge
            if len(got) < total:
                # phase 1: one window, no stalls; phase 2: the rest, with stalls
                second = len(got) >= per
                windows, stalls = (len(rest), (stall_in, stall_out)) if second else (1, (0.0, 0.0))
                limit = CycleLimit("Accelerator", cycles, windows)
                if edge - start >= limit.limit(*stalls):
                    raise limit.timeout("Amaranth simulation", edge - start,
                                        len(got) - per if second else len(got), windows * per,
                                        *stalls, what="output codes")
        ctx.set(acc.o.ready, 0)

    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return got[:per], state["latency"], got[per:], streams


def stream_tensors(acc) -> dict:
    """Which reference tensor each block's output stream carries, by the labels of
    :func:`sim.profile.accelerator_ports`, read off the accelerator's graph walk (a fused Q/K/V
    linear: q, k and v of each token)."""
    out = {}
    for node in acc.nodes:
        if node.role != "op":
            continue
        r = getattr(node.block, "attention_region", None)
        if r is None:
            out[node.label] = node.tensor
            continue
        out.update({f"{node.label}/proj_{n}": t for n, t in zip("qkv", (r.q, r.k, r.v))})
        out.update({f"{node.label}/proj_qkv": (r.q, r.k, r.v), f"{node.label}/core": r.context,
                    f"{node.label}/out_proj": r.output})
    return out


def expected_stream(values: dict, tensor) -> list:
    """The element stream of ``tensor`` (a name, or names whose rows are concatenated token by
    token) over the windows of ``model.forward``'s ``values``, one window after the other."""
    names = (tensor,) if isinstance(tensor, str) else tensor
    return np.concatenate([values[n] for n in names], axis=-1).reshape(-1).tolist()


def transfer_edges(acc, window) -> dict:
    """Simulate one window (ideal source and sink) and record, for every block of
    :func:`sim.profile.accelerator_ports`, the edges of its output transfers and the number
    of edges its consumer held back an offered output (``{label: (edges, held)}``). For
    diagnosis only."""
    from amaranth.sim import Simulator
    from sim.profile import accelerator_ports
    ports = accelerator_ports(acc)
    seen = {label: ([], 0) for label, _, _ in ports}
    sim = Simulator(acc)
    sim.add_clock(1e-8)
    limit = 4 * acc.cycles() + 1000

    async def source(ctx):
        for v in np.ravel(window):
            ctx.set(acc.i.valid, 1)
            ctx.set(acc.i.payload, int(v))
            await ctx.tick().until(acc.i.ready)
        ctx.set(acc.i.valid, 0)

    async def monitor(ctx):
        ctx.set(acc.o.ready, 1)
        signals = [s for _, _, po in ports for s in (po.valid, po.ready)]
        edge = out = 0
        while edge < limit:
            _, _, o_valid, *vals = await ctx.tick().sample(acc.o.valid, *signals)
            edge += 1
            for n, (label, _, _) in enumerate(ports):
                ov, orr = vals[2 * n: 2 * n + 2]
                if ov and orr:
                    seen[label][0].append(edge)
                elif ov:
                    seen[label] = (seen[label][0], seen[label][1] + 1)
            out += o_valid                  # the sink is always ready
            if out == acc.model.horizon:    # the window's last output code
                return

    sim.add_testbench(source, background=True)
    sim.add_testbench(monitor)
    sim.run()
    return seen


def schedule_divergence(acc, window) -> str:
    """Where the simulated schedule of one window first leaves ``Accelerator.stage_times``:
    the first block (stream order) whose output transfers differ from the predicted ones, and
    how often its consumer held back an output it offered (back-pressure: the consumer's
    schedule assumed what did not happen) or not (the block's own schedule is off)."""
    seen = transfer_edges(acc, window)
    for label, _, t_out in acc.stage_times():
        if label not in seen:
            continue
        got, held = seen[label]
        if list(t_out) != got[:len(t_out)]:
            o = next((k for k, (a, b) in enumerate(zip(t_out, got)) if a != b), len(got))
            return (f"first divergence at {label}: output {o} of {len(t_out)} predicted at edge "
                    f"{t_out[o]}, simulated {got[o] if o < len(got) else '-'}; last predicted "
                    f"{t_out[-1]}, simulated {got[-1] if got else '-'}; consumer held back "
                    f"{held} offers")
    return "no block diverges"


def _final_run() -> bool:
    """Whether hypothesis is replaying the failing example it will report."""
    try:
        from hypothesis.control import current_build_context
        return bool(current_build_context().is_final)
    except Exception:
        return False


def check_model(model, hw: dict, random_windows: np.ndarray, *, stall_in: float = 0.0,
                stall_out: float = 0.0, seed: int = 0, stats: Stats | None = None,
                diagnose: bool = False) -> int:
    """Simulate ``model`` on ``hw`` (:func:`simulate`): the first random window alone, then
    the other random windows and the extreme ones back to back under stalls. Every element
    every block streams out, for every window, must equal the integer reference's tensor
    (so the output codes too), and the latency of the first window (to its last output code)
    ``cycles()``. Returns ``cycles()``."""
    acc = Accelerator(model, hw)
    try:
        cycles = acc.cycles()
    except Exception:
        from flows.estimate import mark_used
        mark_used(acc)                        # failed, not forgotten: no "never used" warnings
        raise
    first = random_windows[0]
    rest = np.concatenate([random_windows[1:], extreme_windows(model)])
    got0, simulated, got, streams = simulate(acc, first, rest, stall_in=stall_in,
                                             stall_out=stall_out, seed=seed)
    windows = np.concatenate([first[None], rest])
    names = ([f"random {k}" for k in range(len(random_windows))]
             + ["all qmin", "all qmax", "alternating qmin, qmax", "alternating qmax, qmin",
                "all zero point"])
    values = model.forward(windows)
    # Every block's output stream, in stream order: the first that differs is the culprit.
    tensors = stream_tensors(acc)
    for label, stream in streams.items():
        want = expected_stream(values, tensors[label])
        bad = next((k for k, (g, e) in enumerate(zip(stream, want)) if g != e), None)
        if bad is not None or len(stream) != len(want):
            per = len(want) // len(windows)
            where = (f"window {names[bad // per]!r}, element {bad % per} of {per}: hardware "
                     f"{stream[bad]}, reference {want[bad]}" if bad is not None else
                     f"{len(stream)} elements, reference {len(want)}")
            raise AssertionError(f"{label} ({tensors[label]}): {where}")
    expected = values["pred"].reshape(-1).tolist()     # every window's codes, in order
    assert got0 + got == expected, f"output codes: hardware {got0 + got}, reference {expected}"
    if simulated != cycles:
        where = (schedule_divergence(Accelerator(model, hw), first)
                 if diagnose or _final_run() else "")
        raise AssertionError(f"simulated {simulated} cycles, Accelerator.cycles() {cycles}; "
                             f"{where}")
    if stats is not None:
        stats.configurations += 1
        stats.windows += len(random_windows) + len(extreme_windows(model))
        stats.cycles += cycles
    return cycles


def draw_case(draw, config: dict | None = None, budget: int = 1500) -> dict:
    """One example's model, hardware configuration, windows and stalls: a shape (``config``
    if given), types, a synthetic model with perturbed parameters, knobs."""
    config = config or shapes(draw, budget)
    types, bits = qtypes(draw, config)
    seed = draw.int(0, 2 ** 32 - 1, "model seed")
    model = random_intmodel(config, bits=bits, seed=seed, qtypes=types)
    perturbed = perturb(draw, model)
    hw = hw_configs(draw, model)
    windows = random_inputs(model, draw.int(1, 3, "random windows"), seed=seed)
    stall = draw.choice([0.0, 0.3, 0.7], "stalls")
    return dict(model=model, hw=hw, windows=windows, stall=stall, seed=seed, perturbed=perturbed)


def fuzz_example(draw, config: dict | None = None, budget: int = 1500,
                 stats: Stats | None = None, diagnose: bool = False) -> dict:
    """Draw an example (:func:`draw_case`) and check it (:func:`check_model`)."""
    case = draw_case(draw, config, budget)
    check_model(case["model"], case["hw"], case["windows"], stall_in=case["stall"],
                stall_out=case["stall"], seed=case["seed"], stats=stats, diagnose=diagnose)
    return case


def fuzz_settings(max_examples: int, derandomize: bool = True) -> settings:
    """No deadline, no database (reproducible from the code and the seed), and the slow-data
    checks off (one example simulates for seconds; the many draws of a big model are fine)."""
    return settings(max_examples=max_examples, deadline=None, derandomize=derandomize,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


# -------------------------------------------------------------------------------------------
# The long run
# -------------------------------------------------------------------------------------------

def run_random(args, stats: Stats) -> None:
    """Examples ``0 .. examples-1`` (or only ``--only``), each from its own generator seeded
    with ``(seed, index)``: independent, uniform draws, every failure recorded (with the
    first block whose schedule leaves the model) and the run going on."""
    indices = [args.only] if args.only is not None else range(args.examples)
    for i in indices:
        draw = RandomDraw([args.seed, i])
        t0 = time.time()
        try:
            case = draw_case(draw, budget=args.budget)
        except Exception as e:               # the strategies themselves: a fuzzer bug
            stats.failures.append((i, "drawing", f"{type(e).__name__}: {e}"))
            print(f"[{i}] FAILED to draw: {type(e).__name__}: {e}", flush=True)
            continue
        what = describe(case["model"], case["hw"]) + (
            f"; perturbed {', '.join(case['perturbed'])}" if case["perturbed"] else "")
        if args.only is not None:
            for label, value in draw.log:
                print(f"  {label}: {value}")
        try:
            cycles = check_model(case["model"], case["hw"], case["windows"],
                                 stall_in=case["stall"], stall_out=case["stall"],
                                 seed=case["seed"], stats=stats, diagnose=True)
        except Exception as e:
            stats.failures.append((i, what, f"{type(e).__name__}: {e}"))
            print(f"[{i}] FAILED: {what}\n  {type(e).__name__}: {e}\n  replay: --seed "
                  f"{args.seed} --only {i}", flush=True)
            continue
        if not args.quiet:
            print(f"[{i}] ok, {cycles} cycles, {time.time() - t0:.0f} s: {what}", flush=True)


def run_hypothesis(args, stats: Stats) -> None:
    """The same examples from hypothesis's engine: the first failure is shrunk and reported
    with its draws; the run stops there."""
    phases = [Phase.generate] if args.no_shrink else [Phase.generate, Phase.shrink]

    @hypothesis_seed(args.seed)
    @settings(fuzz_settings(args.examples, derandomize=False), phases=phases)
    @given(st.data())
    def run(data):
        case = fuzz_example(HypothesisDraw(data), budget=args.budget, stats=stats)
        if not args.quiet:
            print(f"ok: {describe(case['model'], case['hw'])}", flush=True)

    try:
        run()
    except Exception as e:                   # hypothesis notes the falsifying draws on it
        traceback.print_exception(e)
        stats.failures.append((None, "hypothesis", f"{type(e).__name__}: {e}"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=100, help="configurations to draw")
    ap.add_argument("--seed", type=int, default=0, help="seed of the run (same seed, same run)")
    ap.add_argument("--budget", type=int, default=4000,
                    help="largest cost() of a drawn shape (~cycles of one window, unfolded)")
    ap.add_argument("--only", type=int, default=None,
                    help="run only this example of the seed, printing everything it drew")
    ap.add_argument("--hypothesis", action="store_true",
                    help="draw with hypothesis's engine and shrink the first failure (its "
                         "generator repeats and mutates earlier examples: less variety)")
    ap.add_argument("--no-shrink", action="store_true", help="with --hypothesis: do not shrink")
    ap.add_argument("-q", "--quiet", action="store_true", help="only failures and the summary")
    args = ap.parse_args(argv)
    stats = Stats()
    t0 = time.time()
    (run_hypothesis if args.hypothesis else run_random)(args, stats)
    print(f"\nchecked {stats.configurations} configurations and {stats.windows} windows "
          f"({stats.cycles:,} cycles of single-window latency); seed {args.seed}, budget "
          f"{args.budget}, {time.time() - t0:.0f} s; {len(stats.failures)} failures")
    for i, what, msg in stats.failures:
        print(f"failed{'' if i is None else f' [{i}]'}: {what}\n  {msg}")
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
