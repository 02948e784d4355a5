"""``affine``: the per-channel ``a_c x + b_c`` of a folded batch-norm, one common shift."""
from __future__ import annotations

from .. import intops
from . import OpKind, register


@register
class Affine(OpKind):
    kind = "affine"
    params = ("shift",)
    arrays = ("scales", "offsets")
    hw_block = "hw.elementwise:Affine"

    def run(self, op, ins, types, out):
        return intops.affine(ins[0], types[0], op.arrays["scales"], op.arrays["offsets"],
                             op.params["shift"], out)

    def convert(self, ctx, spec):
        a, b = (t.double().numpy() for t in ctx.norms[spec.output].folded())
        s_out = ctx.s_out(spec)
        scales, offsets, s = intops.quantize_affine(a * ctx.s_in(spec)[0] / s_out, b / s_out)
        return {"shift": s}, {"scales": scales, "offsets": offsets}

    def synthetic_params(self, ctx, spec, out):
        d = ctx.config["d_model"]
        gains = ctx.target_std(out) / ctx.std[spec.inputs[0]] * ctx.rng.uniform(-1.5, 1.5, d)
        offsets = ctx.rng.normal(0, 0.5 * ctx.target_std(out), d)
        scales, offsets, shift = ctx.affine(gains, offsets)
        return {"shift": shift}, {"scales": scales, "offsets": offsets}
