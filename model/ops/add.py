"""``add``: the residual and positional-encoding sum of two requantised operands."""
from __future__ import annotations

import math

from .. import intops
from . import OpKind, register


@register
class Add(OpKind):
    kind = "add"
    params = ("ma", "mb", "shift")
    hw_block = "hw.elementwise:Add"

    def run(self, op, ins, types, out):
        p = op.params
        return intops.add(ins[0], types[0], ins[1], types[1], p["ma"], p["mb"], p["shift"], out)

    def convert(self, ctx, spec):
        s_out = ctx.s_out(spec)
        (ma, mb), s = intops.quantize_common_multipliers([x / s_out for x in ctx.s_in(spec)])
        return {"ma": ma, "mb": mb, "shift": s}, {}

    def synthetic_params(self, ctx, spec, out):
        acc_std = math.hypot(*(ctx.std[n] for n in spec.inputs))
        reals = [ctx.target_std(out) / acc_std * ctx.rng.uniform(0.7, 1.3) for _ in range(2)]
        if ctx.constant_style != "fixed-shift":
            (ma, mb), shift = intops.quantize_common_multipliers(reals)
        else:   # exact in floating point: scaling by a power of two commutes with rounding
            shift = 14
            ma, mb = (round(r * (1 << shift)) for r in reals)
        return {"ma": ma, "mb": mb, "shift": shift}, {}
