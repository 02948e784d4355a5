"""``layernorm``: integer mean and standard deviation per token, then a per-channel affine."""
from __future__ import annotations

from .. import intops
from . import OpKind, register


@register
class LayerNorm(OpKind):
    kind = "layernorm"
    params = ("shift", "norm_bits", "recip_bits")
    arrays = ("scales", "offsets")
    hw_block = "hw.layernorm:LayerNorm"

    def run(self, op, ins, types, out):
        p, a = op.params, op.arrays
        return intops.layernorm(ins[0], types[0], a["scales"], a["offsets"], p["shift"],
                                p["norm_bits"], p["recip_bits"], out)

    def convert(self, ctx, spec):
        ln = ctx.norms[spec.output].ln
        s_out = ctx.s_out(spec)
        norm_bits, recip_bits = intops.layernorm_precision(
            spec.shape[-1], ctx.qp[spec.inputs[0]].qtype(), ctx.qp[spec.output].bits)
        gamma = ln.weight.double().numpy() / (s_out * (1 << norm_bits))
        scales, offsets, s = intops.quantize_affine(gamma, ln.bias.double().numpy() / s_out)
        return ({"shift": s, "norm_bits": norm_bits, "recip_bits": recip_bits},
                {"scales": scales, "offsets": offsets})

    def synthetic_params(self, ctx, spec, out):
        d = ctx.config["d_model"]
        x = ctx.tensors[spec.inputs[0]].qtype
        norm_bits, recip_bits = intops.layernorm_precision(d, x, out.bits)
        gains = ctx.target_std(out) / (1 << norm_bits) * ctx.rng.uniform(0.5, 1.5, d)
        offsets = ctx.rng.normal(0, 0.3 * ctx.target_std(out), d)
        scales, offsets, shift = ctx.affine(gains, offsets)
        return ({"shift": shift, "norm_bits": norm_bits, "recip_bits": recip_bits},
                {"scales": scales, "offsets": offsets})
