"""``mean_pool``: the mean over the window, as a sum requantised by ``1/L``."""
from __future__ import annotations

from .. import intops
from . import OpKind, register


@register
class MeanPool(OpKind):
    kind = "mean_pool"
    params = ("multiplier", "shift")
    hw_block = "hw.pool:MeanPool"

    def run(self, op, ins, types, out):
        return intops.mean_pool(ins[0], types[0], op.params["multiplier"], op.params["shift"], out)

    def convert(self, ctx, spec):
        m, s = intops.quantize_multiplier(
            ctx.s_in(spec)[0] / (spec.dims["length"] * ctx.s_out(spec)))
        return {"multiplier": m, "shift": s}, {}

    def synthetic_params(self, ctx, spec, out):
        acc_std = spec.dims["length"] * ctx.std[spec.inputs[0]]
        m, s = ctx.multiplier(ctx.target_std(out) / acc_std * 2)
        return {"multiplier": m, "shift": s}, {}
