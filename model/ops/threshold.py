"""``threshold``: an anomaly detector's output, its score followed by the flag
``score >= threshold`` (:func:`model.intops.score_flag`).

The output has two codes per window and the score's own type (derived, no quantiser); the
threshold is a code of that type, chosen on the validation split when the model is converted
(:mod:`flows.run`; a converter without one gives ``qmax + 1``: never flagged).
"""
from __future__ import annotations

from .. import intops
from . import OpKind, register


@register
class Threshold(OpKind):
    kind = "threshold"
    params = ("threshold",)
    hw_block = "hw.threshold:Threshold"

    def run(self, op, ins, types, out):
        if out != types[0]:
            raise ValueError(f"threshold output type {out} is not its score's {types[0]}")
        return intops.score_flag(ins[0], types[0], op.params["threshold"])

    def derived_type(self, tensors, spec):
        x = tensors[spec.inputs[0]]
        return x.qtype, x.scale

    def convert(self, ctx, spec):
        q = ctx.qp[spec.inputs[0]].qtype()
        return {"threshold": q.qmax + 1}, {}

    def synthesize(self, ctx, spec):
        x = ctx.tensors[spec.inputs[0]]
        ctx.set_type(spec.output, spec.shape, x.qtype, x.scale)
        ctx.std[spec.output] = ctx.std[spec.inputs[0]]
        q = x.qtype
        return {"threshold": int(ctx.rng.integers(q.qmin, q.qmax + 2))}, {}
