"""``argmax``: a classifier's output, its ``n`` logits followed by the index of the largest.

The output has ``n + 1`` codes: the logit codes unchanged, then the class index ``0 .. n-1``
(ties: the lowest index, :func:`model.intops.argmax`). Its type is derived from the logits'
(:func:`model.intops.argmax_out_type`: their signedness and zero point, as many bits as the
logits or the index need), never quantised on its own; its scale is the logits' (meaningful
for the first ``n`` codes only).
"""
from __future__ import annotations

from .. import intops
from . import OpKind, register


@register
class Argmax(OpKind):
    kind = "argmax"
    hw_block = "hw.argmax:Argmax"

    def run(self, op, ins, types, out):
        return intops.logits_argmax(ins[0], types[0], out)

    def derived_type(self, tensors, spec):
        """``(QType, scale)`` of the output, from the logits' type (no quantiser of its own)."""
        x = tensors[spec.inputs[0]]
        return intops.argmax_out_type(x.qtype, x.shape[-1]), x.scale

    def convert(self, ctx, spec):
        return {}, {}

    def synthesize(self, ctx, spec):
        q, scale = self.derived_type(ctx.tensors, spec)
        ctx.set_type(spec.output, spec.shape, q, scale)
        ctx.std[spec.output] = ctx.std[spec.inputs[0]]
        return {}, {}
