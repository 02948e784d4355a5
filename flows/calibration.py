"""Calibration data for the resource estimator: real Yosys results on many varied designs.

:data:`CONFIGS` lists accelerator configurations (synthetic integer model shape, bit-widths
uniform or mixed, hardware knobs) chosen to spread over what the estimator has to predict:
model dimensions (d_model 8-32, window 8-48, FFN 16-128, 1-2 heads and layers, features 3-8,
BatchNorm/LayerNorm, ReLU/GELU), bit-widths (4, 6, 8 and mixed: narrow weights with wide
activations and the reverse, per-layer widths), parallelism (pe, simd, qk/pv lanes), multiplier
modes (dsp, dsp_packed, lut) and storage (bram, lutram, registers for weights, buffers,
tables, FIFOs), plus the measured presets of :mod:`hw.presets`.

:func:`synthesize` runs one device's Yosys synthesis on one configuration:

* ``xc7s15``: :func:`flows.xilinx.synth_xc7s15` (``synth_xilinx -family xc7 -flatten``),
  without the timing pass;
* ``ice40up5k``: ``synth_ice40 -dsp`` exactly as :func:`flows.ice40.synth_up5k` runs it, but
  stopping after synthesis (no nextpnr): cell counts from ``stat -json``.

Command line (one JSON record per (configuration, device) under ``--data``, written
atomically; configurations already recorded are skipped, so a collection can be stopped and
resumed and its partial results are usable)::

    python -m flows.calibration list
    python -m flows.calibration collect --device xc7s15|ice40up5k|all [--only LABEL ...]
    python -m flows.calibration add-trained LABEL MODEL_DIR SYNTH_DIR   # a trained design

Each record holds the whole configuration next to the results, so an estimator can be
re-evaluated on the data set without synthesising anything (:func:`load_records`).
"""
from __future__ import annotations

import argparse
from collections import defaultdict
import copy
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["CONFIGS", "DEVICES", "DATA_DIR", "synthesize", "synth_ice40_cells", "collect",
           "load_records", "build", "check_configs", "size_proxy"]

DEVICES = ("xc7s15", "ice40up5k")
DATA_DIR = Path(__file__).resolve().parent / "data" / "calibration"
REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------

#: The default model of the benches and presets (F=7, L=24, d=16, FFN 64).
DEFAULT = dict(features=7, window=24, d_model=16, heads=1, layers=1, ffn=64,
               norm="batchnorm", activation="relu")
#: Small and medium shapes most calibration points use (quick to synthesise).
SMALL = dict(DEFAULT, features=4, window=8, d_model=8, ffn=16)
MEDIUM = dict(DEFAULT, features=6, window=8, d_model=16, ffn=32)


def _shape(base, **kw):
    return dict(base, **kw)


def _names(shape) -> tuple[list, list]:
    """(activation tensor names, weight tensor names) of a model of ``shape``."""
    from model.intmodel import graph_spec
    ops = graph_spec(shape)
    acts = ["input", "pe"] + [o.output for o in ops]
    weights = [o.output + ".weight" for o in ops if o.kind == "linear"]
    return acts, weights


def _mixed(shape, *, acts: int, weights: int) -> dict:
    """Every weight at ``weights`` bits, every activation at ``acts``."""
    _, w = _names(shape)
    return {"default": acts, **{n: weights for n in w}}


def _per_layer(shape, widths: list, default: int) -> dict:
    """Tensors (activations and weights) of layer i at ``widths[i]``, the rest at ``default``."""
    a, w = _names(shape)
    out = {"default": default}
    for n in a + w:
        if n.startswith("l") and "." in n and n.split(".")[0][1:].isdigit():
            out[n] = widths[int(n.split(".")[0][1:])]
    return out


def _named(default: int, **names) -> dict:
    """``default`` bits except the named tensors (``l0_scores=4`` -> ``"l0.scores": 4``)."""
    def key(k):
        return k.replace("_", ".", 1) if k[:1] == "l" and k[1:2].isdigit() and "." not in k else k
    return {"default": default, **{key(k): v for k, v in names.items()}}


_ALL_LUT = {"linear": {"mul": "lut", "requant_mul": "lut"},
            "attention": {"qk_mul": "lut", "pv_mul": "lut", "requant_mul": "lut",
                          "softmax_mul": "lut"},
            "add": {"mul": "lut"}, "affine": {"mul": "lut"}, "layernorm": {"mul": "lut"},
            "mean_pool": {"requant_mul": "lut"}}
_ALL_DSP = {"linear": {"mul": "dsp", "requant_mul": "dsp"},
            "attention": {"qk_mul": "dsp", "pv_mul": "dsp", "requant_mul": "dsp",
                          "softmax_mul": "dsp"},
            "add": {"mul": "dsp"}, "affine": {"mul": "dsp"}, "layernorm": {"mul": "dsp"},
            "mean_pool": {"requant_mul": "dsp"}}


def _storage(s: str) -> dict:
    """Every memory of the design in storage ``s``: weights, biases, buffers, tables, FIFOs."""
    return {"kinds": {"linear": {"weight_storage": s, "bias_storage": s, "buffer_storage": s},
                      "attention": {"buffer_storage": s, "table_storage": s,
                                    "softmax_buffer_storage": s},
                      "add": {"b_storage": s}, "affine": {"storage": s}, "lut": {"storage": s},
                      "layernorm": {"weight_storage": s, "buffer_storage": s},
                      "mean_pool": {"buffer_storage": s}},
            "fifo_storage": s}


def _merge(*parts) -> dict:
    """Merge hardware dicts (kinds and blocks merged per kind / pattern, scalars: last wins)."""
    out = {"kinds": {}, "blocks": {}}
    for p in parts:
        p = copy.deepcopy(p)
        for sec in ("kinds", "blocks"):
            for k, v in p.pop(sec, {}).items():
                out[sec].setdefault(k, {}).update(v)
        out.update(p)
    return out


def _par(pe=1, simd=1, *, proj=(1, 1), ffn=None, qkv=None, attn_out=None, lanes=None,
         pred_simd=1, mul=None) -> dict:
    """Folding: linear ``pe``/``simd`` defaults (proj and pred get their own, pred has one
    output), optional FFN / QKV / attention-output overrides, ``lanes`` = (qk, pv)."""
    lin = {"pe": pe, "simd": simd}
    if mul:
        lin["mul"] = mul
    blocks = {"proj": {"pe": proj[0], "simd": proj[1]}, "pred": {"pe": 1, "simd": pred_simd}}
    if ffn:
        blocks["*.ffn_*"] = {"pe": ffn[0], "simd": ffn[1]}
    if qkv:
        for n in "qkv":
            blocks[f"*.{n}"] = {"pe": qkv[0], "simd": qkv[1]}
    if attn_out:
        blocks["*.attn_out"] = {"pe": attn_out[0], "simd": attn_out[1]}
    hw = {"kinds": {"linear": lin}, "blocks": blocks}
    if lanes:
        hw["kinds"]["attention"] = {"qk_lanes": lanes[0], "pv_lanes": lanes[1]}
    return hw


def _preset(target, bits):
    from hw.presets import preset
    return preset(target, bits)


def _cfg(label, shape, bits, hw, seed=None):
    return {"label": label, "shape": dict(shape), "bits": bits, "seed": seed,
            "constant_style": "converter", "hw": _merge(hw) if hw else {}}


def _configs() -> list[dict]:
    S, M, D = SMALL, MEDIUM, DEFAULT
    c = [
        # -- measured presets on the default model ---------------------------------------
        _cfg("preset-xc7-8b", D, 8, _preset("xc7s15", 8)),
        _cfg("preset-xc7-6b", D, 6, _preset("xc7s15", 6)),
        _cfg("preset-xc7-4b", D, 4, _preset("xc7s15", 4)),
        _cfg("preset-up5k-8b", D, 8, _preset("ice40up5k", 8)),
        _cfg("preset-up5k-4b", D, 4, _preset("ice40up5k", 4)),
        # -- small model, one MAC per linear: widths, multiplier modes ---------------------
        _cfg("s-defaults-8b", S, 8, {}),
        _cfg("s-defaults-6b", S, 6, {}),
        _cfg("s-defaults-4b", S, 4, {}),
        _cfg("s-lut-8b", S, 8, {"kinds": _ALL_LUT}),
        _cfg("s-lut-6b", S, 6, {"kinds": _ALL_LUT}),
        _cfg("s-lut-4b", S, 4, {"kinds": _ALL_LUT}),
        _cfg("s-dsp-8b", S, 8, {"kinds": _ALL_DSP}),
        _cfg("s-dsp-4b", S, 4, {"kinds": _ALL_DSP}),
        _cfg("s-packed-pe2-8b", S, 8, _merge(_par(2, 1, mul="dsp_packed", lanes=(2, 2)),
                                             {"kinds": {"attention": {"pv_mul": "dsp_packed"}}})),
        _cfg("s-packed-pe4-4b", S, 4, _merge(_par(4, 1, mul="dsp_packed", lanes=(4, 4)),
                                             {"kinds": {"attention": {"pv_mul": "dsp_packed"}}})),
        # -- small model, storage -------------------------------------------------------------
        _cfg("s-regs-8b", S, 8, _storage("registers")),
        _cfg("s-regs-4b", S, 4, _storage("registers")),
        _cfg("s-lutram-8b", S, 8, _storage("lutram")),
        _cfg("s-lutram-6b", S, 6, _storage("lutram")),
        _cfg("s-bram-8b", S, 8, _storage("bram")),
        _cfg("s-bram-4b", S, 4, _storage("bram")),
        _cfg("s-fifo-lutram-w-regs-6b", S, 6, {"kinds": {"linear": {"weight_storage": "registers",
                                                                    "bias_storage": "registers"}},
                                               "fifo_storage": "lutram"}),
        # -- medium model (d 16): folding and lanes --------------------------------------------
        _cfg("m-p1-8b", M, 8, _par(1, 1, lanes=(1, 1))),
        _cfg("m-p2s2-8b", M, 8, _par(2, 2, proj=(2, 2), lanes=(2, 2))),
        _cfg("m-p4s4-8b", M, 8, _merge(_par(4, 4, proj=(4, 3), lanes=(4, 2)), _storage("lutram"))),
        _cfg("m-p2s8-lut-6b", M, 6, _merge(_par(2, 8, proj=(2, 6), pred_simd=4, lanes=(8, 4)),
                                           {"kinds": _ALL_LUT})),
        _cfg("m-p8-lut-4b", M, 4, _merge(_par(8, 1, ffn=(8, 2), lanes=(8, 8)), {"kinds": _ALL_LUT},
                                         {"kinds": {"linear": {"weight_storage": "lutram"}}})),
        _cfg("m-p8s8-lut-4b", M, 4, _merge(_par(8, 8, proj=(8, 2), pred_simd=8, lanes=(16, 16)),
                                           {"kinds": _ALL_LUT},
                                           {"kinds": {"linear": {"weight_storage": "lutram"}}})),
        _cfg("m-ffn-packed-8b", M, 8, _merge(_par(1, 1, ffn=(4, 4), lanes=(4, 4)),
                                             {"blocks": {"*.ffn_*": {"mul": "dsp_packed"}},
                                              "kinds": {"attention": {"pv_mul": "dsp_packed"}}})),
        _cfg("m-qkv-packed-6b", M, 6, _merge(_par(1, 2, qkv=(4, 2), attn_out=(2, 2), lanes=(2, 4)),
                                             {"kinds": {"linear": {"mul": "dsp_packed"},
                                                        "attention": {"pv_mul": "dsp_packed"}}})),
        _cfg("m-lanes16-8b", M, 8, _merge(_par(1, 1, lanes=(16, 8)),
                                          {"kinds": {"attention": {"qk_mul": "lut",
                                                                   "buffer_storage": "registers"}}})),
        _cfg("m-h2-8b", _shape(M, heads=2), 8, _par(2, 2, lanes=(4, 4))),
        _cfg("m-h2-lanes8-6b", _shape(M, heads=2), 6,
             _merge(_par(1, 1, lanes=(8, 8)), {"kinds": {"attention": {"table_storage": "lutram",
                                                                       "pv_mul": "lut"}}})),
        # -- mixed widths -------------------------------------------------------------------
        _cfg("mix-w4a8-s", S, _mixed(S, acts=8, weights=4), {}),
        _cfg("mix-w8a4-s", S, _mixed(S, acts=4, weights=8), {"kinds": _ALL_LUT}),
        _cfg("mix-w4a8-m", M, _mixed(M, acts=8, weights=4),
             _par(2, 2, proj=(2, 2), lanes=(2, 2))),
        _cfg("mix-w6a8-m", M, _mixed(M, acts=8, weights=6),
             _merge(_par(4, 1, lanes=(4, 4)), {"kinds": {"linear": {"mul": "dsp_packed"}}})),
        _cfg("mix-w4a6-m-lut", M, _mixed(M, acts=6, weights=4),
             _merge(_par(4, 2, lanes=(4, 4)), {"kinds": _ALL_LUT})),
        _cfg("mix-layers-8-4", _shape(S, layers=2), _per_layer(_shape(S, layers=2), [8, 4], 8), {}),
        _cfg("mix-layers-4-6-lutram", _shape(S, layers=2),
             _per_layer(_shape(S, layers=2), [4, 6], 6),
             _merge(_par(2, 2, proj=(2, 2), lanes=(2, 2)), _storage("lutram"))),
        _cfg("mix-attn4-8b", M, _named(8, l0_scores=4, l0_attn=4, l0_context=4),
             _par(2, 1, lanes=(2, 2))),
        _cfg("mix-io8-4b", S, _named(4, input=8, proj=8, pooled=8, pred=8), {}),
        _cfg("mix-ffn4-8b", M, _named(8, **{"l0.ffn_hidden": 4, "l0.ffn_hidden.weight": 4,
                                            "l0.ffn_out.weight": 4}), _par(1, 1, ffn=(4, 2))),
        # -- LayerNorm / GELU ---------------------------------------------------------------
        _cfg("ln-8b", _shape(S, norm="layernorm"), 8, {}),
        _cfg("ln-4b", _shape(S, norm="layernorm"), 4, {}),
        _cfg("ln-lut-regs-6b", _shape(S, norm="layernorm"), 6,
             _merge({"kinds": _ALL_LUT}, {"kinds": {"layernorm": {"weight_storage": "lutram",
                                                                  "buffer_storage": "registers"}}})),
        _cfg("gelu-8b", _shape(S, activation="gelu"), 8, {}),
        _cfg("gelu-4b", _shape(S, activation="gelu"), 4,
             {"kinds": {"lut": {"storage": "registers"}}}),
        _cfg("gelu-bram-6b", _shape(S, activation="gelu"), 6,
             {"kinds": {"lut": {"storage": "bram"}}}),
        _cfg("ln-gelu-m-8b", _shape(M, norm="layernorm", activation="gelu"), 8,
             _merge(_par(2, 2, proj=(2, 1), lanes=(2, 2)),
                    {"kinds": {"lut": {"storage": "lutram"}, "layernorm": {"mul": "lut"}}})),
        # -- windows, features, d_model 24 ----------------------------------------------------
        _cfg("w12-f3-8b", _shape(S, window=12, features=3), 8, _par(1, 1, proj=(2, 3))),
        _cfg("w24-f5-6b", _shape(M, window=24, features=5, ffn=48), 6,
             _merge(_par(2, 2, proj=(2, 5), lanes=(4, 4)), {"fifo_storage": "lutram"})),
        _cfg("w48-f8-8b", _shape(S, window=48, features=8), 8,
             _merge(_par(2, 2, proj=(4, 4), lanes=(2, 2)), {"kinds": {"attention": {
                 "buffer_storage": "bram", "softmax_buffer_storage": "bram"}}})),
        _cfg("w48-f3-4b-regs-fifo", _shape(S, window=48, features=3, ffn=24), 4,
             {"fifo_storage": "registers"}),
        _cfg("d24-h2-8b", _shape(M, d_model=24, heads=2, window=12, ffn=48), 8,
             _par(3, 2, proj=(3, 2), lanes=(3, 6))),
        _cfg("d24-ffn96-4b", _shape(M, d_model=24, window=12, ffn=96, features=8), 4,
             _merge(_par(6, 1, ffn=(6, 4), proj=(6, 4), lanes=(6, 6)), {"kinds": _ALL_LUT})),
        _cfg("d24-ln-6b", _shape(M, d_model=24, window=8, ffn=72, norm="layernorm"), 6,
             _par(2, 3, proj=(2, 2), lanes=(3, 3))),
        # -- larger: d_model 32 / FFN 128 / two layers ---------------------------------------
        _cfg("l-d32-xc7-8b", _shape(D, d_model=32, ffn=128), 8, _preset("xc7s15", 8)),
        _cfg("l-d32-xc7-4b", _shape(D, d_model=32, ffn=128), 4, _preset("xc7s15", 4)),
        _cfg("l-2layers-xc7-4b", _shape(D, layers=2), 4, _preset("xc7s15", 4)),
        _cfg("l-2layers-up5k-8b", _shape(D, layers=2), 8, _preset("ice40up5k", 8)),
        _cfg("l-d32-2l-ln-gelu-6b", _shape(D, d_model=32, ffn=128, layers=2, window=12,
                                           norm="layernorm", activation="gelu", heads=2), 6,
             _merge(_par(4, 2, ffn=(8, 4), lanes=(4, 4)),
                    {"kinds": {"linear": {"mul": "dsp_packed", "weight_storage": "bram",
                                          "buffer_storage": "lutram"},
                               "attention": {"pv_mul": "dsp_packed", "qk_mul": "lut"},
                               "lut": {"storage": "lutram"}}})),
        _cfg("l-d32-mix-w4a8", _shape(D, d_model=32, ffn=128, window=12), _mixed(
            _shape(D, d_model=32, ffn=128, window=12), acts=8, weights=4),
             _merge(_par(4, 4, ffn=(8, 4), lanes=(8, 8)), {"kinds": _ALL_LUT},
                    {"kinds": {"linear": {"weight_storage": "lutram"}}})),
        # -- two layers at d_model 20 / 24, window 16-24 (the shapes of flows.deployability,
        #    at the smallest folding its searches start from) -------------------------------
        _cfg("l-2l-d24-ffn48-6b", _shape(D, layers=2, d_model=24, ffn=48), 6,
             _merge(_par(1, 1, lanes=(1, 1)),
                    {"kinds": {"linear": {"mul": "dsp_packed", "weight_storage": "bram"}}})),
        _cfg("l-2l-d24-ffn96-w4a6", _shape(D, layers=2, d_model=24, ffn=96),
             _mixed(_shape(D, layers=2, d_model=24, ffn=96), acts=6, weights=4),
             _merge(_par(1, 1, lanes=(1, 1)),
                    {"kinds": {"linear": {"weight_storage": "lutram"},
                               "attention": {"table_storage": "registers"}},
                     "fifo_storage": "bram"})),
        _cfg("l-2l-d24-ffn32-w16-4b", _shape(D, layers=2, d_model=24, ffn=32, window=16), 4,
             _merge(_par(1, 1, lanes=(1, 1)), {"kinds": _ALL_LUT})),
        _cfg("l-2l-d20-ffn80-8b", _shape(D, layers=2, d_model=20, ffn=80), 8,
             _par(2, 2, lanes=(2, 2))),
    ]
    c += _search_like()
    # The presets on other data shapes: what the main job builds for users' data (own seeds,
    # so that adding them changed no earlier configuration's).
    c += [_cfg(f"preset-{t}-{b}b-f{f}-w{w}", _shape(D, features=f, window=w), b,
               _preset("xc7s15" if t == "xc7" else "ice40up5k", b), seed=2000 + j)
          for j, (t, b, f, w) in enumerate((("xc7", 8, 1, 48), ("xc7", 8, 4, 24),
                                            ("xc7", 8, 12, 12), ("xc7", 6, 4, 24),
                                            ("up5k", 4, 1, 48), ("up5k", 4, 4, 24),
                                            ("up5k", 4, 12, 12), ("up5k", 8, 4, 24)))]
    # Designs above with the constants of trained models (constant style "trained": arbitrary
    # requantiser mantissas, softmax tables of trained depths), own seeds. With the
    # "converter" constants alone the calibration never sees a context requantiser that is
    # not a shift, nor a softmax table of other than one depth per width.
    c += [dict(get_from(c, label), label=f"tr-{label}", seed=3000 + j, constant_style="trained")
          for j, label in enumerate(TRAINED_STYLE_LABELS)]
    for i, cfg in enumerate(c):      # deterministic, distinct seeds
        if cfg["seed"] is None:
            cfg["seed"] = 1000 + i
    labels = [cfg["label"] for cfg in c]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise AssertionError(f"duplicate calibration labels {sorted(dup)}")
    return c


#: Configurations also calibrated with constants drawn as training leaves them ("tr-" labels).
TRAINED_STYLE_LABELS = ("preset-xc7-8b", "preset-xc7-6b", "preset-xc7-4b", "preset-xc7-8b-f4-w24",
                        "preset-xc7-8b-f12-w12", "preset-xc7-8b-f1-w48", "s-lut-8b", "s-lut-6b",
                        "s-defaults-8b", "m-p2s2-8b", "m-h2-8b", "ln-8b", "gelu-8b", "w12-f3-8b",
                        "mix-attn4-8b", "d24-h2-8b", "mix-w4a8-m", "l-d32-xc7-8b")


def get_from(configs: list, label: str) -> dict:
    """A copy of the configuration ``label`` of ``configs``."""
    return copy.deepcopy(next(c for c in configs if c["label"] == label))


#: Two-layer shapes of ``flows.deployability`` whose trained designs the estimator judged.
SEARCH_LIKE_SHAPES = {
    "d20-ffn40": dict(DEFAULT, layers=2, d_model=20, ffn=40),
    "d20-ffn40-w32": dict(DEFAULT, layers=2, d_model=20, ffn=40, window=32),
    "d24-ffn48": dict(DEFAULT, layers=2, d_model=24, ffn=48),
    "d24-ffn32": dict(DEFAULT, layers=2, d_model=24, ffn=32),
    "ffn128": dict(DEFAULT, layers=2, ffn=128),
    "w48": dict(DEFAULT, layers=2, window=48),
}


def _search_like(per_shape: int = 2, seed: int = 7) -> list[dict]:
    """Designs like the ones the mixed-precision search judges near the XC7S15's size: the
    smallest folding of the 4-bit preset (where ``hardware_search`` starts), every multiplier
    and storage knob changed with probability 1/4 and every width group drawn from 4, 6, 8.
    Drawn once with a fixed seed, not picked by their estimation error."""
    import numpy as np
    from .search import SearchSpace
    rng = np.random.default_rng(seed)
    out = []
    for name, shape in SEARCH_LIKE_SHAPES.items():
        space = SearchSpace(shape, "xc7s15")
        folding = [k for k in space.choices if k.endswith(("pe", "simd", "qk_lanes", "pv_lanes"))]
        start = {**space.anchor(4), **dict.fromkeys(folding, 1)}
        for j in range(per_shape):
            params = dict(start)
            for k, choices in space.searched.items():
                if k.startswith("bits."):
                    params[k] = int(rng.choice(choices))
                elif k not in folding and rng.random() < 0.25:
                    params[k] = choices[int(rng.integers(len(choices)))]
            cand = space.candidate(params)
            out.append(_cfg(f"srch-{name}-{'ab'[j]}", shape, cand.bits, cand.hw))
    return out


CONFIGS: list[dict] = _configs()


def get(label: str) -> dict:
    for c in CONFIGS:
        if c["label"] == label:
            return c
    raise KeyError(f"no calibration configuration {label!r}")


def build(config: dict):
    """(integer model, accelerator) of a configuration; ValueError on an invalid knob. A
    configuration with ``model_dir`` (under the data directory) is a trained model's design,
    with the constants of real training, which synthetic models only imitate."""
    from hw.accelerator import Accelerator
    if "model_dir" in config:
        from model.intmodel import IntModel
        model = IntModel.load(DATA_DIR / config["model_dir"])
    else:
        from model.synthetic import random_intmodel
        # Records collected before synthetic models had the converter's constants say nothing.
        model = random_intmodel(config["shape"], bits=config["bits"], seed=config["seed"],
                                constant_style=config.get("constant_style", "fixed-shift"))
    return model, Accelerator(model, copy.deepcopy(config["hw"]))


def check_configs(configs=None) -> list[tuple[str, str]]:
    """(label, error) of every configuration that does not construct."""
    import gc
    import warnings
    from amaranth.hdl import UnusedElaboratable
    bad = []
    with warnings.catch_warnings():
        # The blocks built here are never elaborated: no "created but never used".
        warnings.simplefilter("ignore", UnusedElaboratable)
        for c in CONFIGS if configs is None else configs:
            try:
                build(c)
            except Exception as e:
                bad.append((c["label"], f"{type(e).__name__}: {e}"))
        gc.collect()
    return bad


def size_proxy(config: dict) -> float:
    """A rough size of the design (for ordering: smallest first). Parameter bits, window
    buffer bits and multiplier lanes, weighted by the width."""
    s = config["shape"]
    bits = config["bits"] if isinstance(config["bits"], int) else config["bits"].get("default", 8)
    d, L, ffn, n = s["d_model"], s["window"], s["ffn"], s["layers"]
    params = s["features"] * d + n * (4 * d * d + 2 * d * ffn)
    buffers = n * (2 * L * d + L * L)
    hw = config["hw"]
    lin = hw.get("kinds", {}).get("linear", {})
    lanes = lin.get("pe", 1) * lin.get("simd", 1)
    for kn in hw.get("blocks", {}).values():
        lanes = max(lanes, kn.get("pe", 1) * kn.get("simd", 1))
    att = hw.get("kinds", {}).get("attention", {})
    lanes += att.get("qk_lanes", 1) + att.get("pv_lanes", att.get("qk_lanes", 1))
    return (params + buffers) * bits + 300 * n * lanes * bits


# ---------------------------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------------------------

def synth_ice40_cells(verilog: str, out_dir, top: str = "intformer_top") -> tuple[dict, float, dict]:
    """``synth_ice40 -dsp`` as :func:`flows.ice40.synth_up5k` runs it (same script), then
    nextpnr's packing only (no placement, so it also answers for designs that do not fit):
    (cells by type, synthesis seconds, packed utilisation {ICESTORM_LC: used, ...})."""
    from sim import tools
    from .ice40 import synth_cells
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "top.v").write_text(verilog)
    (d / "synth.ys").write_text(f"read_verilog -sv top.v\nsynth_ice40 -dsp -top {top} "
                                f"-json netlist.json\ntee -q -o stat.json stat -json\n")
    t0 = time.perf_counter()
    tools.run(tools.yosys(), ["-q", "-l", "yosys.log", "synth.ys"], cwd=d)
    seconds = time.perf_counter() - t0
    tools.run(tools.nextpnr_ice40(), ["--up5k", "--package", "sg48", "--json", "netlist.json",
                                      "--pack-only", "--report", "pack.json",
                                      "--pcf-allow-unconstrained", "--top", top, "-q",
                                      "-l", "pack.log"], cwd=d)
    util = json.loads((d / "pack.json").read_text()).get("utilization", {})
    packed = {k: int(v.get("used", 0)) for k, v in util.items()}
    return synth_cells(json.loads((d / "stat.json").read_text()), top), seconds, packed


def _ice40_summary(cells: dict) -> dict:
    return {"SB_LUT4": cells.get("SB_LUT4", 0), "SB_CARRY": cells.get("SB_CARRY", 0),
            "FF": sum(n for k, n in cells.items() if k.startswith("SB_DFF")),
            "EBR": cells.get("SB_RAM40_4K", 0), "DSP": cells.get("SB_MAC16", 0),
            "SPRAM": cells.get("SB_SPRAM256KA", 0)}


def _xc7_summary(r) -> dict:
    return {"LUT": r.luts, "lut_logic": r.lut_logic, "lutram_luts": r.lutram_luts,
            "srl_luts": r.srl_luts, "FF": r.ff, "BRAM36": r.bram36, "DSP": r.dsp,
            "CARRY4": r.carry4, "MUXF7": r.muxf7, "MUXF8": r.muxf8}


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                             cwd=REPO, capture_output=True, text=True, timeout=20,
                             check=False)
        return out.stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def synthesize(config: dict, device: str, work_dir) -> dict:
    """Build ``config``, convert it to Verilog and run ``device``'s Yosys synthesis in
    ``work_dir``: the record (label, device, cells, summary, synth_s, yosys_version)."""
    from amaranth.back import verilog as vlog
    from sim import tools
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: choose one of {DEVICES}")
    t0 = time.perf_counter()
    _, acc = build(config)
    v = vlog.convert(acc, name="intformer_top")
    convert_s = time.perf_counter() - t0
    work = Path(work_dir)
    if device == "xc7s15":
        from .xilinx import synth_xc7s15
        r = synth_xc7s15(v, work, timing=False)
        cells, summary, synth_s = dict(r.cells), _xc7_summary(r), r.times["synth_s"]
    else:
        cells, synth_s, packed = synth_ice40_cells(v, work)
        summary = _ice40_summary(cells)
        summary["LC"] = packed.get("ICESTORM_LC", 0)
    return {"label": config["label"], "device": device, "cells": cells, "summary": summary,
            "synth_s": round(synth_s, 2), "convert_s": round(convert_s, 2),
            "verilog_bytes": len(v), "yosys_version": tools.tool_version("yosys")}


#: Designs also synthesised module by module (hierarchy kept): each Amaranth module becomes a
#: calibration point of its own, which is what makes the per-feature costs identifiable.
MODULE_LABELS = ("s-lut-6b", "s-dsp-8b", "s-regs-4b", "ln-4b", "s-lutram-8b", "m-p8-lut-4b",
                 "m-h2-lanes8-6b", "s-bram-4b", "preset-xc7-8b", "l-2l-d24-ffn96-w4a6",
                 "l-2l-d24-ffn32-w16-4b", "tr-preset-xc7-8b")


def synthesize_modules(config: dict, device: str, work_dir) -> dict:
    """Like :func:`synthesize` but without flattening: the cells of every module (by its
    hierarchical name, e.g. ``intformer_top.proj.q``), each without its submodules."""
    from amaranth.back import verilog as vlog
    from sim import tools
    _, acc = build(config)
    v = vlog.convert(acc, name="intformer_top")
    d = Path(work_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "top.v").write_text(v)
    synth = ("synth_xilinx -family xc7 -top intformer_top" if device == "xc7s15"
             else "synth_ice40 -dsp -top intformer_top")
    (d / "synth.ys").write_text(f"read_verilog -sv top.v\n{synth}\ntee -q -o stat.json stat -json\n")
    t0 = time.perf_counter()
    tools.run(tools.yosys(), ["-q", "-l", "yosys.log", "synth.ys"], cwd=d)
    modules = {}
    for name, m in json.loads((d / "stat.json").read_text())["modules"].items():
        cells = {k.lstrip("\\"): int(n) for k, n in m.get("num_cells_by_type", {}).items()
                 if not k.lstrip("\\").startswith("intformer_top")}
        modules[name.lstrip("\\")] = cells
    return {"label": config["label"], "device": device + "-modules", "modules": modules,
            "synth_s": round(time.perf_counter() - t0, 2), "config": config,
            "yosys_version": tools.tool_version("yosys")}


# ---------------------------------------------------------------------------------------------
# Collection
# ---------------------------------------------------------------------------------------------

def trained_record(label: str, model_dir, synth_dir, data_dir=DATA_DIR) -> dict:
    """An XC7S15 record of a trained design: its integer model and hardware configuration
    (``model_dir``: ``intmodel.*``, ``hw_config.json``) copied under ``data_dir/models/label``,
    with the Yosys result of ``synth_dir/stat.json`` (a ``flows.xilinx`` synthesis of it)."""
    from .xilinx import parse_stat
    model_dir, synth_dir, data_dir = Path(model_dir), Path(synth_dir), Path(data_dir)
    dst = data_dir / "models" / label
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("intmodel.json", "intmodel.npz"):
        shutil.copy(model_dir / name, dst / name)
    r = parse_stat(json.loads((synth_dir / "stat.json").read_text()))
    return {"label": label, "device": "xc7s15", "cells": r.cells, "summary": _xc7_summary(r),
            "config": {"label": label, "model_dir": f"models/{label}",
                       "hw": _xc7_hw(json.loads((model_dir / "hw_config.json").read_text()))},
            "source": f"{synth_dir}: the trained design of {model_dir}"}


def _xc7_hw(hw_config: dict) -> dict:
    """The XC7S15 design of a run's ``hw_config.json``: a deploy run's holds one per device."""
    return hw_config["xc7s15"] if set(hw_config) and set(hw_config) <= set(DEVICES) else hw_config


def record_path(data_dir, label: str, device: str) -> Path:
    return Path(data_dir) / f"{label}__{device}.json"


def _line(rec: dict) -> str:
    s = rec["summary"]
    if rec["device"] == "xc7s15":
        res = (f"LUT {s['LUT']} (logic {s['lut_logic']}, LUTRAM {s['lutram_luts']}, "
               f"SRL {s['srl_luts']}) FF {s['FF']} BRAM36 {s['BRAM36']:g} DSP {s['DSP']} "
               f"CARRY4 {s['CARRY4']}")
    else:
        res = (f"LUT4 {s['SB_LUT4']} CARRY {s['SB_CARRY']} FF {s['FF']} EBR {s['EBR']} "
               f"DSP {s['DSP']}")
    return f"{rec['label']:<26} {rec['device']:<10} {res}  synth {rec['synth_s']:.1f}s"


def collect(devices=DEVICES, labels=None, data_dir=DATA_DIR, *, retry_errors=False,
            keep_work=None, progress=print) -> list[dict]:
    """Synthesise every (configuration, device) not yet recorded in ``data_dir``, or recorded
    with a configuration that has changed since, smallest designs first, device by device; one
    JSON file each. Returns the new records."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    from .run import write_json_atomic
    configs = [c for c in CONFIGS if labels is None or c["label"] in labels]
    if labels is not None:
        unknown = set(labels) - {c["label"] for c in CONFIGS}
        if unknown:
            raise KeyError(f"unknown calibration configuration(s) {sorted(unknown)}")
    bad = check_configs(configs)
    if bad:
        raise ValueError("invalid calibration configurations:\n" +
                         "\n".join(f"  {lab}: {err}" for lab, err in bad))
    configs.sort(key=size_proxy)
    commit = _git_commit()
    new = []
    for device in devices:
        for c in configs:
            path = record_path(data_dir, c["label"], device)
            if path.is_file():
                try:
                    old = json.loads(path.read_text())
                except json.JSONDecodeError:
                    old = {"error": "unreadable"}
                if old.get("config", c) == c and ("error" not in old or not retry_errors):
                    continue
            work = (Path(keep_work) / f"{c['label']}__{device}" if keep_work
                    else Path(tempfile.mkdtemp(prefix=f"intformer_calib_{device}_")))
            t0 = time.perf_counter()
            try:
                rec = synthesize(c, device, work)
            except Exception as e:
                rec = {"label": c["label"], "device": device,
                       "error": f"{type(e).__name__}: {str(e)[-2000:]}"}
                first = rec["error"].splitlines()[0][:200]
                progress(f"{c['label']:<26} {device:<10} ERROR {first}")
            else:
                progress(_line(rec))
            finally:
                if not keep_work:
                    shutil.rmtree(work, ignore_errors=True)
            rec.update(config=copy.deepcopy(c), commit=commit,
                       total_s=round(time.perf_counter() - t0, 2),
                       date=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            write_json_atomic(path, rec)
            new.append(rec)
    return new


def load_records(data_dir=DATA_DIR, device: str | None = None, *, errors=False) -> list[dict]:
    """Every record in ``data_dir`` (of ``device`` if given; failed ones only with ``errors``)."""
    out = []
    for p in sorted(Path(data_dir).glob("*__*.json")):
        rec = json.loads(p.read_text())
        if device is not None and rec.get("device") != device:
            continue
        if "error" in rec and not errors:
            continue
        out.append(rec)
    return out


# ---------------------------------------------------------------------------------------------
# Estimator calibration and check
# ---------------------------------------------------------------------------------------------

#: What the estimator predicts per device, and the synthesis figure it is checked against.
#: "logic" targets are fitted; "exact" ones come from the mapping rules and must be equal.
TARGETS = {
    "xc7s15": {"logic": {"LUT": lambda s: s["lut_logic"] + s["srl_luts"], "FF": lambda s: s["FF"]},
               "exact": {"LUTRAM": "lutram_luts", "BRAM36": "BRAM36", "DSP": "DSP"}},
    "ice40up5k": {"logic": {"LUT4": lambda s: s["SB_LUT4"], "FF": lambda s: s["FF"],
                            "CARRY": lambda s: s["SB_CARRY"], "LC": lambda s: s.get("LC", 0)},
                  "exact": {"BRAM": "EBR", "DSP": "DSP"}},
}


def record_features(records, device: str) -> list[tuple[dict, dict, dict]]:
    """(record, {component kind: summed logic features}, summed exact resources) per record."""
    import gc
    from .estimate import design_features
    out = []
    for rec in records:
        _, acc = build(rec["config"])
        feats, exact = design_features(acc, device)
        out.append((rec, feats, exact))
    gc.collect()
    return out


def _predict(coef: dict, feats: dict) -> float:
    return sum(coef.get(k, 0.0) * v for k, v in feats.items())


#: Weight of the prior in the fit, chosen by the leave-one-out error of the benchmark when it
#: had 34 XC7S15 designs and a squared-error fit (LUT median 3.17 % at 0, 3.15 % at 0.03,
#: 3.39 % at 0.1, 3.40 % at 0.3; UP5K LC: 1.51 % at 0.03, 2.75 % at 0.1) and kept since; with
#: the absolute-error fit on 83 designs it hardly matters (LUT 2.22 % at 0.01 and 0.03, 2.25 %
#: at 0.1).
STRENGTH = 0.03

#: Weight of a trained design's record (real constants) in the whole-design fit, against 1 for
#: a synthetic one. The estimator exists to judge trained designs, and the synthetic designs'
#: constants are cheaper than trained ones. Leave-one-out on the 83 XC7S15 designs with the
#: absolute-error fit: at 1, the 5 trained designs come out -2.6 to +0.7 % (LUT median over
#: all designs 2.61 %); at 5, -2.0 to +1.6 % (2.22 %).
TRAINED_WEIGHT = 5.0


def _fit_one(rows, name: str, get, prior: dict | None = None, scale: dict | None = None) -> dict:
    """Whole-design fit of one target, pulled towards ``prior`` (the module fit, if any), on
    the features weighted per component kind by ``scale``."""
    from .estimate import FF_FEATURES, LOGIC_FEATURES, PRIOR, fit_coefficients, weighted_features
    usable = [(weighted_features(f, scale or {}), get(r["summary"]),
               TRAINED_WEIGHT if "model_dir" in r["config"] else 1.0)
              for r, f, _ in rows if get(r["summary"]) > 0]
    if prior is None:
        prior = PRIOR.get("FF" if name == "FF" else "LUT")
    return fit_coefficients([f for f, _, _ in usable], [t for _, t, _ in usable],
                            FF_FEATURES if name == "FF" else LOGIC_FEATURES,
                            prior=prior, strength=STRENGTH, weights=[w for *_, w in usable])


#: Per-module targets of a hierarchical synthesis (the cells of the module itself).
MODULE_TARGETS = {
    "xc7s15": {"LUT": lambda c: sum(c.get(f"LUT{n}", 0) for n in range(1, 7))
                      + c.get("SRL16E", 0) + c.get("SRLC32E", 0),
               "FF": lambda c: sum(c.get(k, 0) for k in ("FDRE", "FDSE", "FDCE", "FDPE"))},
}


def module_rows(device: str, data_dir=DATA_DIR) -> list[tuple[str, str, dict, dict]]:
    """(design label, component kind, logic features, {target: count}) of every module of the
    hierarchical records."""
    import gc
    from .estimate import feature_vector, module_features
    out = []
    for rec in load_records(data_dir, device + "-modules"):
        _, acc = build(rec["config"])
        for path, counts in module_features(acc).items():
            cells = rec["modules"].get(path)
            if cells is None:
                continue
            out.append((rec["label"], counts.kind, feature_vector(counts, device),
                        {n: get(cells) for n, get in MODULE_TARGETS[device].items()}))
    gc.collect()
    return out


#: Cells of evidence a kind's factor needs to move away from 1 (a shrinkage: kinds seen in few
#: small modules keep the shared coefficients).
KIND_SHRINK = 50.0


def fit_modules(mrows, device: str, rounds: int = 4) -> tuple[dict, dict]:
    """Per target: (coefficients, {component kind: factor}) fitted on the modules, alternating
    the shared coefficients (absolute error, damped for big modules) and each kind's factor
    (its synthesised over its estimated cells, shrunk towards 1)."""
    import numpy as np
    from .estimate import FF_FEATURES, LOGIC_FEATURES, nnls
    coef, scale = {}, {}
    for name in MODULE_TARGETS[device]:
        feats = FF_FEATURES if name == "FF" else LOGIC_FEATURES
        y = np.array([t[name] for *_, t in mrows], float)
        w = 1.0 / np.sqrt(y + 20.0)
        s = {}
        for _ in range(rounds):
            a = np.array([[s.get(k, 1.0) * f.get(x, 0.0) for x in feats] for _, k, f, _ in mrows])
            c = dict(zip(feats, nnls(a * w[:, None], y * w)))
            got, est = defaultdict(float), defaultdict(float)
            for (_, k, f, _), yi in zip(mrows, y):
                got[k] += yi
                est[k] += _predict(c, f)
            s = {k: (got[k] + KIND_SHRINK) / (est[k] + KIND_SHRINK) for k in got}
        coef[name] = {k: float(v) for k, v in c.items() if v > 0}
        scale[name] = {k: float(v) for k, v in s.items()}
    return coef, scale


def _scaled(coef: dict, scale: dict) -> dict:
    return {n: {k: v * scale.get(n, 1.0) for k, v in c.items()} for n, c in coef.items()}


def flatten_scale(rows, coef: dict, kind_scale: dict, device: str) -> dict:
    """Whole-design correction of the per-module model (flattening merges logic across module
    boundaries): the median ratio of flattened synthesis to the summed module estimate."""
    import numpy as np
    from .estimate import weighted_features
    out = {}
    for name, get in TARGETS[device]["logic"].items():
        if name not in coef:
            continue
        pred = [(get(rec["summary"]), _predict(coef[name], weighted_features(f, kind_scale[name])))
                for rec, f, _ in rows]
        r = [y / p for y, p in pred if y > 0 and p > 0]
        out[name] = float(np.median(r)) if r else 1.0
    return out


def fit(rows, device: str, mrows=None) -> dict:
    """Coefficients per fitted target: from the modules when there are hierarchical records
    (then scaled to the flattened designs), else from the whole designs; the component kinds'
    factors under "kind_scale"."""
    prior, scale = _module_prior(rows, mrows, device)
    coef = {name: _fit_one(rows, name, get, prior.get(name), scale.get(name))
            for name, get in TARGETS[device]["logic"].items()}
    return {**coef, "kind_scale": scale}


def _module_prior(rows, mrows, device: str) -> tuple[dict, dict]:
    """(the module fit scaled to the flattened designs, the kinds' factors); both empty
    without hierarchical records."""
    if not mrows:
        return {}, {}
    coef, scale = fit_modules(mrows, device)
    return _scaled(coef, flatten_scale(rows, coef, scale, device)), scale


def cross_validate(rows, device: str, mrows=None) -> list[dict]:
    """Leave-one-out check: each design is predicted by coefficients fitted without it (its
    own hierarchical record, if any, left out of the module fit too), so the errors are those
    of an unseen design. One row per design: synthesis, estimate."""
    from .estimate import weighted_features
    logic = TARGETS[device]["logic"]
    table = []
    for i, (rec, feats, exact) in enumerate(rows):
        others = [x for j, x in enumerate(rows) if j != i]
        row = {"label": rec["label"]}
        prior, scale = _module_prior(others, [m for m in mrows or [] if m[0] != rec["label"]],
                                     device)
        for name, get in logic.items():
            coef = _fit_one(others, name, get, prior.get(name), scale.get(name))
            row[name] = (get(rec["summary"]),
                         _predict(coef, weighted_features(feats, scale.get(name, {}))))
        for name, key in TARGETS[device]["exact"].items():
            row[name] = (rec["summary"][key], exact.get(name, 0.0))
        if device == "xc7s15":             # LUT as the device counts it: logic + LUT RAM
            s = rec["summary"]
            row["LUT"] = (s["LUT"], row["LUT"][1] + exact.get("LUTRAM", 0.0))
        table.append(row)
    return table


def error_summary(table, names) -> dict:
    import numpy as np
    out = {}
    for n in names:
        e = np.array([abs(est - act) / act for act, est in (r[n] for r in table) if act > 0])
        if e.size:
            out[n] = {"median_pct": 100 * float(np.median(e)), "mean_pct": 100 * float(e.mean()),
                      "p90_pct": 100 * float(np.percentile(e, 90)), "max_pct": 100 * float(e.max()),
                      "within_3pct": int((e <= 0.03).sum()), "n": int(e.size)}
    return out


def write_coefficients(device: str, coef: dict, summary: dict, n: int) -> Path:
    from .estimate import DATA_DIR as EST_DIR
    from .run import write_json_atomic
    path = EST_DIR / f"estimator_{device}.json"
    coef = dict(coef)
    scale = coef.pop("kind_scale", {})
    write_json_atomic(path, {"device": device, "coefficients": coef, "kind_scale": scale,
                             "designs": n,
                             "leave_one_out_error": summary, "commit": _git_commit(),
                             "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return path


def print_table(table, device: str) -> None:
    names = list(table[0].keys())[1:]
    print(f"{'design':<26}" + "".join(f"{n:>22}" for n in names))
    for r in table:
        cells = []
        for n in names:
            act, est = r[n]
            err = f"{100 * (est - act) / act:+.1f}%" if act else ""
            cells.append(f"{act:>7g} {est:>7.0f} {err:>6}")
        print(f"{r['label']:<26}" + "".join(f"{c:>22}" for c in cells))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def _describe(c: dict) -> str:
    s = c["shape"]
    shape = (f"F{s['features']} L{s['window']} d{s['d_model']} h{s['heads']} x{s['layers']} "
             f"ffn{s['ffn']} {'LN' if s['norm'] == 'layernorm' else 'BN'}/"
             f"{s['activation']}")
    b = c["bits"]
    if isinstance(b, int):
        bits = f"{b}b"
    else:
        others = sorted({v for k, v in b.items() if k != "default"})
        # random_intmodel's default width when a bits dict names none
        bits = f"{b.get('default', 8)}b+{'/'.join(map(str, others))}({len(b) - ('default' in b)})"
    return f"{c['label']:<26} {shape:<40} {bits:<14} seed {c['seed']}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.calibration",
                                 description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="print the configurations (and what is recorded)")
    ls.add_argument("--data", default=str(DATA_DIR))
    ls.add_argument("--check", action="store_true", help="also construct every configuration")
    co = sub.add_parser("collect", help="synthesise the configurations not yet recorded (or changed since)")
    co.add_argument("--device", choices=DEVICES + ("all",), default="all")
    co.add_argument("--only", nargs="+", metavar="LABEL")
    co.add_argument("--data", default=str(DATA_DIR))
    co.add_argument("--retry-errors", action="store_true", help="redo failed records")
    co.add_argument("--keep-work", metavar="DIR", help="keep the Yosys work directories here")
    for name, what in (("fit", "fit the estimator's logic coefficients to the records"),
                       ("bench", "estimate against synthesis, design by design (leave-one-out)")):
        p = sub.add_parser(name, help=what)
        p.add_argument("--device", choices=DEVICES + ("all",), default="all")
        p.add_argument("--data", default=str(DATA_DIR))
        p.add_argument("--json", metavar="PATH", help="also write the table and errors as JSON")
    cm = sub.add_parser("collect-modules", help="synthesise MODULE_LABELS keeping the hierarchy")
    cm.add_argument("--device", choices=DEVICES, default="xc7s15")
    cm.add_argument("--data", default=str(DATA_DIR))
    cm.add_argument("--only", nargs="+", metavar="LABEL",
                    help="these configurations instead of MODULE_LABELS")
    tr = sub.add_parser("add-trained", help="record a trained design and its XC7S15 synthesis")
    tr.add_argument("label")
    tr.add_argument("model_dir", help="intmodel.json/.npz and hw_config.json of the design")
    tr.add_argument("synth_dir", help="the stat.json of its synthesis")
    tr.add_argument("--data", default=str(DATA_DIR))
    bu = sub.add_parser("built", help="estimate against synthesis on built designs (run or "
                        "deploy directories: designs the estimator was not fitted on)")
    bu.add_argument("dirs", nargs="+", metavar="DIR")
    a = ap.parse_args(argv)
    if a.cmd == "built":
        return _print_built(built_table(a.dirs))
    if a.cmd == "add-trained":
        from .run import write_json_atomic
        rec = trained_record(a.label, a.model_dir, a.synth_dir, a.data)
        write_json_atomic(record_path(a.data, a.label, "xc7s15"), rec)
        print(f"{a.label}: {rec['summary']}")
        return 0
    if a.cmd == "collect-modules":
        from .run import write_json_atomic
        for label in a.only or MODULE_LABELS:
            path = record_path(a.data, label, a.device + "-modules")
            if path.is_file() and json.loads(path.read_text())["config"] == get(label):
                continue
            with tempfile.TemporaryDirectory(prefix="intformer_calib_mod_") as work:
                rec = synthesize_modules(get(label), a.device, work)
            write_json_atomic(path, rec)
            print(f"{label:<26} {a.device}-modules {len(rec['modules'])} modules  "
                  f"synth {rec['synth_s']:.1f}s", flush=True)
        return 0
    if a.cmd in ("fit", "bench"):
        return _fit_or_bench(a)
    if a.cmd == "list":
        bad = dict(check_configs()) if a.check else {}
        for c in sorted(CONFIGS, key=size_proxy):
            have = [dv for dv in DEVICES if record_path(a.data, c["label"], dv).is_file()]
            print(f"{_describe(c)}  {'recorded: ' + ','.join(have) if have else ''}"
                  f"{'  INVALID: ' + bad[c['label']] if c['label'] in bad else ''}")
        print(f"{len(CONFIGS)} configurations" + (f", {len(bad)} invalid" if a.check else ""))
        return 1 if bad else 0
    devices = DEVICES if a.device == "all" else (a.device,)
    try:
        collect(devices, a.only, a.data, retry_errors=a.retry_errors, keep_work=a.keep_work,
                progress=lambda s: print(s, flush=True))
    except (KeyError, ValueError) as e:
        print(f"calibration: {e}", file=sys.stderr)
        return 2
    return 0


def built_table(dirs) -> list[dict]:
    """Per built design under ``dirs`` (run directories, or deploy directories holding one run
    per device): the current estimator's figures against its synthesis (Yosys' LUT and FF on
    the XC7S15, nextpnr's packed logic cells on the UP5K)."""
    from hw.accelerator import Accelerator
    from model.intmodel import IntModel
    from .estimate import estimate_design
    runs = []
    for d in map(Path, dirs):
        runs += [r for r in [d, *(d / t for t in DEVICES)] if (r / "hw_config.json").is_file()]
    rows = []
    for run in runs:
        for device, hw in json.loads((run / "hw_config.json").read_text()).items():
            result = run / "build" / device / ("synth.json" if device == "xc7s15" else "pnr.json")
            if not result.is_file():
                continue
            got = json.loads(result.read_text())
            if device == "ice40up5k" and got.get("counts_from") != "nextpnr":
                continue                # not placed: no logic-cell count to compare with
            used = estimate_design(Accelerator(IntModel.load(run), hw), device, cache=False).used
            pairs = ((("LUT", got["lut"], used["LUT"]), ("FF", got["ff"], used["FF"]))
                     if device == "xc7s15" else (("LC", got["lc"], used["LC"]),))
            rows += [{"design": str(run), "device": device, "resource": name, "synthesis": y,
                      "estimate": round(e), "error_pct": 100.0 * (e - y) / y}
                     for name, y, e in pairs]
    return rows


def _print_built(rows) -> int:
    import numpy as np
    for r in rows:
        print(f"{r['design']:<40} {r['device']:<10} {r['resource']:<4} synthesis {r['synthesis']:>6} "
              f"estimate {r['estimate']:>6} {r['error_pct']:+6.1f} %")
    for name in ("LUT", "FF", "LC"):
        errs = [abs(r["error_pct"]) for r in rows if r["resource"] == name]
        if errs:
            print(f"  {name}: |error| median {np.median(errs):.1f} % over {len(errs)} designs")
    return 0 if rows else 1


def _fit_or_bench(a) -> int:
    report = {}
    for device in DEVICES if a.device == "all" else (a.device,):
        records = load_records(a.data, device)
        if len(records) < 5:
            print(f"{device}: {len(records)} records; collect at least 5 first "
                  f"(python -m flows.calibration collect --device {device})", file=sys.stderr)
            continue
        rows = record_features(records, device)
        mrows = module_rows(device, a.data) if device in MODULE_TARGETS else []
        if mrows:
            print(f"{device}: logic coefficients from {len(mrows)} modules of "
                  f"{len(load_records(a.data, device + '-modules'))} hierarchical syntheses")
        table = cross_validate(rows, device, mrows)
        names = list(TARGETS[device]["logic"]) + list(TARGETS[device]["exact"])
        summary = error_summary(table, names)
        exact_ok = {n: sum(1 for r in table if abs(r[n][0] - r[n][1]) < 1e-9)
                    for n in TARGETS[device]["exact"]}
        print(f"\n{device}: {len(rows)} designs, estimate against Yosys (leave-one-out: "
              f"each design predicted by coefficients fitted on the others)")
        print_table(table, device)
        for n, e in summary.items():
            print(f"  {n:7s} |error| median {e['median_pct']:.2f}%  mean {e['mean_pct']:.2f}%  "
                  f"p90 {e['p90_pct']:.2f}%  max {e['max_pct']:.2f}%  within 3%: "
                  f"{e['within_3pct']}/{e['n']}")
        print("  exact: " + ", ".join(f"{n} {k}/{len(table)}" for n, k in exact_ok.items()))
        if a.cmd == "fit":
            path = write_coefficients(device, fit(rows, device, mrows), summary, len(rows))
            print(f"  coefficients written to {path}")
        report[device] = {"table": table, "errors": summary, "exact_matches": exact_ok}
    if a.json:
        from .run import write_json_atomic
        write_json_atomic(Path(a.json), report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
