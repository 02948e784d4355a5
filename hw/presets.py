"""Measured hardware configurations per target and model width (see hw/PERFORMANCE.md for the
numbers behind every choice).

``PRESETS[target][bits]`` is an :class:`hw.accelerator.HwConfig` dict for the default-shaped
model (F=7, L=24, d=16, FFN 64) at that width; :func:`preset` picks the nearest width. Knobs
only name divisors that every model of the default family has (pe/simd/lanes of 1, 2, 4, 8, 16;
proj's In = F = 7 is only ever folded with simd = 1), so they also apply to larger models
(d_model 32, FFN 128, more layers), at a cost in resources the benches report.

XC7S15 (8,000 LUT, 16,000 FF, 10 BRAM36, 20 DSP48E1, 100 MHz):

* MAC lanes that share an operand (Linear PEs, attention PV lanes) are packed g to a DSP48E1
  (``mul="dsp_packed"``: 2 products per DSP at 8 and 6 bits, 3 at 4 bits);
* every constant multiplier (requantisation, residual adds, mean pool) is shift-and-add in
  canonical signed digits (``requant_mul="lut"``): DSPs go to the MACs;
* the score lanes (q.k, no shared operand) use LUT multipliers at 4 bits, DSPs where they fit;
* weights in LUT ROMs (``weight_storage="lutram"``: the ROMs are wide and shallow, a LUT6 per
  bit up to 64 words; in BRAM they cost one BRAM18 per 36 bits of width), token buffers in
  LUTRAM (``buffer_storage="lutram"``: half the FFs of register banks), residual FIFOs in BRAM.

iCE40 UP5K (5,280 LC, 30 EBR, 8 SB_MAC16, 16 MHz): the smallest folding (one MAC per layer),
every buffer in EBR; at 4 bits also fewer blocks and register files (fused Q/K/V linear,
context accumulators in EBR), which is what makes it fit. 8 bits does not fit.
"""
from __future__ import annotations

import copy

_LIN = {"requant_mul": "lut", "weight_storage": "bram", "bias_storage": "lutram",
        "buffer_storage": "lutram"}
_ATT = {"qk_mul": "lut", "pv_mul": "dsp_packed", "requant_mul": "lut", "softmax_mul": "dsp"}
_ELT = {"add": {"mul": "lut"}, "affine": {"mul": "lut"}, "mean_pool": {"requant_mul": "lut"}}

#: XC7S15, 8 (and 6) bits: 2 MACs per DSP48E1; 10 MAC-equivalents of DSP per layer stage.
_XC7_8 = {
    "kinds": {"linear": {"pe": 2, "simd": 2, "mul": "dsp_packed", **_LIN},
              "attention": {"qk_lanes": 4, "pv_lanes": 4, **_ATT}, **_ELT},
    "blocks": {"proj": {"pe": 2, "simd": 1}, "*.ffn_*": {"pe": 2, "simd": 4},
               "pred": {"pe": 1, "simd": 1, "mul": "lut", "weight_storage": "lutram"},
               # a classifier's and an anomaly detector's output linears (--task): as "pred"
               "logits": {"pe": 1, "simd": 1, "mul": "lut", "weight_storage": "lutram"},
               "score": {"pe": 1, "simd": 1, "mul": "lut", "weight_storage": "lutram"}},
    "fifo_storage": "bram", "clock_mhz": 100.0}

#: XC7S15, 4 bits: LUT multipliers are cheap (5x5 bits), 3 MACs per DSP48E1.
_XC7_4 = {
    "kinds": {"linear": {"pe": 8, "simd": 1, "mul": "lut", **_LIN},
              "attention": {"qk_lanes": 8, "pv_lanes": 8, **_ATT}, **_ELT},
    "blocks": {"proj": {"pe": 4, "simd": 1}, "*.ffn_*": {"pe": 8, "simd": 2, "mul": "dsp_packed"},
               "*.attn_out": {"mul": "dsp_packed"},
               "pred": {"pe": 1, "simd": 1, "weight_storage": "lutram"},
               "logits": {"pe": 1, "simd": 1, "weight_storage": "lutram"},
               "score": {"pe": 1, "simd": 1, "weight_storage": "lutram"}},
    "fifo_storage": "bram", "clock_mhz": 100.0}

#: iCE40 UP5K: one MAC per linear, SB_MAC16 for the products, buffers in EBR.
_UP5K = {
    "kinds": {"linear": {"pe": 1, "simd": 1, "mul": "dsp", "requant_mul": "lut",
                         "weight_storage": "bram", "bias_storage": "lutram", "buffer_storage": "bram"},
              "attention": {"qk_lanes": 1, "pv_lanes": 1, "qk_mul": "dsp", "pv_mul": "dsp",
                            "requant_mul": "lut", "softmax_mul": "dsp", "buffer_storage": "bram",
                            "table_storage": "bram"},
              "add": {"mul": "lut"}, "affine": {"mul": "dsp"}, "mean_pool": {"requant_mul": "lut"}},
    "blocks": {}, "fifo_storage": "bram", "clock_mhz": 16.0}

#: UP5K at 4 bits (measured: 4,952 LC, 30 EBR, 8 DSP, nextpnr Fmax 32.6 MHz; 45,349 cycles).
#: The fixed cost per block is what does not fit, so fewer and cheaper blocks: Q, K and V in
#: one fused Linear (``qkv_fused``), the context accumulators in EBR (``acc_storage``), two
#: softmax banks. The requantisers of the linears and the mean pool fit one SB_MAC16 each at
#: 4 bits; the 5x5-bit MAC lanes are LUT multipliers (Yosys keeps them out of SB_MAC16); the
#: EBRs the fused linear frees take proj's weights and buffers, pred's buffers and two bias ROMs.
_UP5K_4 = {
    "kinds": {**_UP5K["kinds"],
              "linear": {**_UP5K["kinds"]["linear"], "requant_mul": "dsp"},
              "attention": {**_UP5K["kinds"]["attention"], "table_storage": "lutram",
                            "qkv_fused": True, "softmax_banks": 2, "acc_storage": "bram"},
              "affine": {"mul": "lut"}, "mean_pool": {"requant_mul": "dsp"}},
    "blocks": {"proj": {"weight_storage": "bram"},
               "pred": {"weight_storage": "lutram"}, "logits": {"weight_storage": "lutram"},
               "score": {"weight_storage": "lutram"}, "*.q": {"bias_storage": "bram"}, "*.ffn_hidden": {"bias_storage": "bram"}},
    "fifo_storage": "bram", "clock_mhz": 16.0}

PRESETS = {
    "xc7s15": {8: _XC7_8, 6: _XC7_8, 4: _XC7_4},
    "ice40up5k": {8: _UP5K, 4: _UP5K_4},
}


def preset(target: str, bits: int) -> dict:
    """The configuration for ``target`` at the measured width nearest to ``bits`` (ties: the
    wider one, whose resources bound the narrower)."""
    if target not in PRESETS:
        raise ValueError(f"unknown target {target!r}: choose one of {sorted(PRESETS)}")
    widths = sorted(PRESETS[target])
    best = min(widths, key=lambda w: (abs(w - bits), -w))
    return copy.deepcopy(PRESETS[target][best])


def model_bits(model) -> int:
    """The dominant tensor width of an integer model (most common bits over its tensors)."""
    from collections import Counter
    counts = Counter(t.qtype.bits for t in model.tensors.values())
    return counts.most_common(1)[0][0]
