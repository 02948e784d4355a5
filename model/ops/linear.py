"""``linear``: ``y = requantize(x W^T + b)``, optionally clamped (ReLU fused)."""
from __future__ import annotations

import math

import numpy as np

from .. import intops
from ..intops import QType
from ..qat import quantize, quantize_bias
from . import OpKind, register


@register
class Linear(OpKind):
    kind = "linear"
    params = ("weight_type", "multiplier", "shift", "relu")
    optional_params = ("relu",)
    arrays = ("weight", "bias")
    hw_block = "hw.linear:Linear"

    def run(self, op, ins, types, out):
        p, a = op.params, op.arrays
        return intops.linear(ins[0], types[0], a["weight"], QType.from_dict(p["weight_type"]),
                             a["bias"], p["multiplier"], p["shift"], out, p.get("relu", False))

    def convert(self, ctx, spec):
        lin = ctx.linears[spec.output]
        wq, xq = lin.wq.qparams(), ctx.qp[spec.inputs[0]]
        arrays = {"weight": quantize(lin.weight, wq).numpy(),
                  "bias": quantize_bias(lin.bias, wq, xq, lin.in_features).numpy()}
        m, s = intops.quantize_multiplier(
            float(np.float32(wq.scale) * np.float32(xq.scale)) / ctx.s_out(spec))
        return ({"weight_type": wq.qtype().to_dict(), "multiplier": m, "shift": s,
                 "relu": bool(spec.dims.get("relu", False))}, arrays)

    def output_signed(self, spec):
        return not spec.dims.get("relu", False)

    def synthetic_params(self, ctx, spec, out):
        rng, name, width = ctx.rng, spec.output, ctx.width
        x = ctx.tensors[spec.inputs[0]].qtype
        wt = QType(width(name + ".weight"), True, 0) if not ctx.asymmetric or rng.integers(0, 3) \
            else QType(width(name + ".weight"), False, int(rng.integers(0, 1 << width(name + ".weight"))))
        wt = ctx.fixed.get(name + ".weight", wt)
        fan_in = spec.dims["in"]
        weight = rng.integers(wt.qmin, wt.qmax + 1, size=(spec.dims["out"], fan_in))
        lim = intops.bias_bound(fan_in, x, wt)
        acc_std = math.sqrt(fan_in) * ctx.std_uniform(wt) * ctx.std[spec.inputs[0]]
        bias = np.clip(np.round(rng.normal(0, acc_std, spec.dims["out"])), -lim, lim).astype(np.int64)
        m, s = ctx.multiplier(ctx.target_std(out) / acc_std)
        return ({"weight_type": wt.to_dict(), "multiplier": m, "shift": s,
                 "relu": bool(spec.dims.get("relu", False))}, {"weight": weight, "bias": bias})
