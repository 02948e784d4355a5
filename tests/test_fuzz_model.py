"""Whole-model fuzzing (tests/fuzz_model.py): random heads (forecast horizons, classifiers,
anomaly detectors), shapes, per-tensor widths and schemes, integer parameters at the edges of
their contracts and hardware knobs, simulated in Amaranth on random and extreme windows; every
output equals the integer reference and the latency of one window (to its last output code)
equals ``Accelerator.cycles()``.

A few examples here, reproducible (derandomized, no example database; the longer ones marked
slow, out of ``make test-fast``); many more with
``.venv/bin/python -m tests.fuzz_model --examples N``."""
import zlib

import pytest
from hypothesis import given, strategies as st

from fuzz_model import (HypothesisDraw, RandomDraw, check_model, cost, extreme_windows,
                        fuzz_example, fuzz_settings, hw_configs, perturb, qtypes, shapes,
                        tensor_names)
from flows.estimate import mark_used
from hw.accelerator import Accelerator
from model.intmodel import graph_spec
from model.intops import QType
from model.synthetic import random_inputs, random_intmodel

#: The suite's size bound (``fuzz_model.cost``): a few seconds of simulation per example.
BUDGET = 800


@pytest.mark.slow                       # ~50 s: 8 models simulated
@fuzz_settings(max_examples=8)
@given(st.data())
def test_random_models_are_bit_exact_with_exact_cycles(data):
    fuzz_example(HypothesisDraw(data), budget=BUDGET)


#: The extremes of the shape space, each with drawn widths, parameters and knobs.
CORNERS = {
    "one-feature-window-2-d-1": dict(features=1, window=2, d_model=1, heads=1, layers=1, ffn=1,
                                     norm="layernorm", activation="gelu"),
    "window-64-d-1": dict(features=2, window=64, d_model=1, heads=1, layers=1, ffn=1,
                          norm="batchnorm", activation="relu"),
    "three-layers-d-2": dict(features=3, window=5, d_model=2, heads=2, layers=3, ffn=3,
                             norm="layernorm", activation="relu"),
    "twelve-features-four-heads": dict(features=12, window=3, d_model=8, heads=4, layers=1,
                                       ffn=16, norm="batchnorm", activation="gelu"),
    # the heads' extremes: most steps, most classes, a detector (its threshold drawn)
    "horizon-4": dict(features=2, window=4, d_model=2, heads=1, layers=1, ffn=2,
                      norm="batchnorm", activation="relu", horizon=4),
    "five-classes-d-1": dict(features=1, window=3, d_model=1, heads=1, layers=1, ffn=2,
                             norm="layernorm", activation="silu", task="classify", classes=5),
    "anomaly-d-3": dict(features=3, window=3, d_model=3, heads=3, layers=1, ffn=2,
                        norm="batchnorm", activation="relu", task="anomaly"),
}


@pytest.mark.parametrize("corner", [
    pytest.param(name, marks=pytest.mark.slow) if name in ("window-64-d-1", "three-layers-d-2")
    else name for name in CORNERS])     # the slow two: 15-25 s of simulation each
def test_corner_shapes(corner):
    """One example per corner (seconds of simulation each): every other choice drawn
    uniformly from a fixed seed. (Hypothesis would start from its simplest draws: 2 bits,
    no folding, nothing perturbed.)"""
    fuzz_example(RandomDraw([zlib.crc32(corner.encode()), 0]), config=CORNERS[corner])


@fuzz_settings(max_examples=60)
@given(st.data())
def test_drawn_shapes_and_types_are_valid(data):
    """The strategies alone (no simulation): shapes within the budget and the issue's ranges,
    types the synthetic model honours, perturbed parameters the reference accepts, knobs the
    accelerator accepts."""
    draw = HypothesisDraw(data)
    config = shapes(draw, BUDGET)
    assert cost(config) <= BUDGET
    assert 1 <= config["features"] <= 12 and 2 <= config["window"] <= 64
    assert 1 <= config["layers"] <= 3 and config["d_model"] % config["heads"] == 0
    task = config.get("task", "forecast")
    assert (1 <= config.get("horizon", 1) <= 4 if task == "forecast" else
            2 <= config["classes"] <= 5 if task == "classify" else task == "anomaly")
    types, bits = qtypes(draw, config)
    assert ("pred" in types) == (task == "forecast")    # argmax / threshold derive their type
    model = random_intmodel(config, bits=bits, seed=0, qtypes=types)
    for name, q in types.items():
        if not name.endswith(".weight"):
            assert model.qtype(name) == q
    perturb(draw, model)
    model.forward(extreme_windows(model))
    hw = hw_configs(draw, model)
    head = [s for s in graph_spec(config) if s.kind == "linear"][-1]
    assert head.output == {"forecast": "pred", "classify": "logits", "anomaly": "score"}[task]
    assert "simd" in hw["blocks"][head.output]
    mark_used(Accelerator(model, hw))                        # built for its knobs, not simulated


def test_threshold_perturbed_to_its_edges():
    """An anomaly detector's threshold is pushed below qmin, to qmin, to qmax and above qmax
    (near and far) by some of many draws."""
    model = random_intmodel(CORNERS["anomaly-d-3"], bits=4, seed=0)
    q = model.qtype("score")
    seen = set()
    for seed in range(1000):                # one model perturbed over and over: still valid
        if "pred" in perturb(RandomDraw([seed]), model):
            seen.add(model.op("pred").params["threshold"])
    assert {q.qmin - 1, q.qmin, q.qmax, q.qmax + 1} <= seen
    assert min(seen) < q.qmin - 1 and max(seen) > q.qmax + 1
    model.forward(extreme_windows(model))


def test_synthetic_qtypes_override():
    config = dict(features=2, window=3, d_model=2, heads=1, layers=1, ffn=2, norm="layernorm",
                  activation="relu")
    free, softmax = tensor_names(config)
    assert "l0.q.weight" in free and softmax == ["l0.attn"]
    fixed = {"input": QType(3, False, 7), "l0.ffn_hidden": QType(5, True, 0),
             "l0.k.weight": QType(2, False, 1)}
    model = random_intmodel(config, bits=6, seed=1, qtypes=fixed)
    assert model.qtype("input") == QType(3, False, 7)
    assert model.qtype("l0.ffn_hidden") == QType(5, True, 0)           # a signed ReLU output
    assert QType.from_dict(model.op("l0.k").params["weight_type"]) == QType(2, False, 1)
    assert model.qtype("l0.q").bits == 6
    with pytest.raises(ValueError, match="unknown tensors"):
        random_intmodel(config, qtypes={"l0.nothing": QType(4, True, 0)})
    with pytest.raises(ValueError, match="softmax output"):
        random_intmodel(config, qtypes={"l0.attn": QType(4, True, 0)})


def _tiny_model_whose_cycles_are_checked(monkeypatch, **head):
    """A tiny model and window that pass the check, which fails with ``cycles()`` one short."""
    config = dict(features=2, window=2, d_model=2, heads=1, layers=1, ffn=2, norm="batchnorm",
                  activation="relu", **head)
    model = random_intmodel(config, bits=4, seed=2)
    windows = random_inputs(model, 1, seed=2)
    cycles = check_model(model, {}, windows)
    with monkeypatch.context() as m:
        m.setattr(Accelerator, "cycles", lambda self: cycles - 1)
        with pytest.raises(AssertionError, match=f"simulated {cycles} cycles"):
            check_model(model, {}, windows)
    return model, windows


def test_the_check_catches_a_wrong_cycle_count_and_wrong_values(monkeypatch):
    model, windows = _tiny_model_whose_cycles_are_checked(monkeypatch)
    forward = model.forward
    for name, match in [("l0.norm1", r"l0\.norm1 \(l0\.norm1\): window 'random 0', element 0 of 4"),
                        ("pred", r"pred \(pred\): window 'random 0', element 0 of 1")]:
        def wrong(x, name=name):
            v = forward(x)
            v[name] = v[name] ^ 1
            return v
        monkeypatch.setattr(model, "forward", wrong)
        with pytest.raises(AssertionError, match=match):
            check_model(model, {}, windows)


@pytest.mark.parametrize("head", [dict(horizon=3), dict(task="classify", classes=3),
                                  dict(task="anomaly")])
def test_the_check_counts_every_output_code_of_a_window(monkeypatch, head):
    """Several codes per window: the latency is the edge of the last one (one edge less
    fails), and a wrong last code (a step, the class, the flag) is caught."""
    model, windows = _tiny_model_whose_cycles_are_checked(monkeypatch, **head)
    n = model.horizon
    forward = model.forward

    def wrong(x):
        v = forward(x)
        v["pred"][:, -1] ^= 1
        return v
    monkeypatch.setattr(model, "forward", wrong)
    with pytest.raises(AssertionError,
                       match=rf"pred \(pred\): window 'random 0', element {n - 1} of {n}"):
        check_model(model, {}, windows)
