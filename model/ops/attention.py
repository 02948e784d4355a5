"""``scores`` (``q_h k_h^T``, requantised) and ``context`` (``attn_h v_h``, requantised, heads
merged): the two matrix products of attention. Their hardware is one
:class:`hw.attention.AttentionCore` (scores, softmax, context), built from the context operator;
the accelerator wraps it with the layer's Q/K/V and output linears (:class:`hw.attention.Attention`)."""
from __future__ import annotations

import math

import torch

from .. import intops
from . import OpKind, register


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., L, d) -> (..., H, L, d/H)."""
    *lead, L, d = x.shape
    return x.reshape(*lead, L, heads, d // heads).transpose(-3, -2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., H, L, dh) -> (..., L, H*dh)."""
    *lead, H, L, dh = x.shape
    return x.transpose(-3, -2).reshape(*lead, L, H * dh)


class _Product(OpKind):
    params = ("multiplier", "shift")

    def synthetic_params(self, ctx, spec, out):
        m, s = ctx.multiplier(ctx.target_std(out) / self.acc_std(ctx, spec))
        return {"multiplier": m, "shift": s}, {}


@register
class Scores(_Product):
    kind = "scores"

    def run(self, op, ins, types, out):
        q, k = (split_heads(t, op.spec.dims["heads"]) for t in ins)
        acc = intops.matmul_acc(q, types[0], k.transpose(-1, -2), types[1])
        return intops.requantize(acc, op.params["multiplier"], op.params["shift"], out)

    def convert(self, ctx, spec):
        dh = ctx.tensors[spec.inputs[0]].shape[-1] // spec.dims["heads"]
        s_q, s_k = ctx.s_in(spec)
        m, s = intops.quantize_multiplier(s_q * s_k / math.sqrt(dh) / ctx.s_out(spec))
        return {"multiplier": m, "shift": s}, {}

    def acc_std(self, ctx, spec):
        dh = ctx.config["d_model"] // spec.dims["heads"]
        return math.sqrt(dh) * ctx.std[spec.inputs[0]] * ctx.std[spec.inputs[1]]


@register
class Context(_Product):
    kind = "context"
    hw_block = "hw.attention:AttentionCore"
    hw_region = "hw.attention:Attention"

    def run(self, op, ins, types, out):
        acc = intops.matmul_acc(ins[0], types[0], split_heads(ins[1], op.spec.dims["heads"]), types[1])
        return merge_heads(intops.requantize(acc, op.params["multiplier"], op.params["shift"], out))

    def convert(self, ctx, spec):
        s_p, s_v = ctx.s_in(spec)
        m, s = intops.quantize_multiplier(s_p * s_v / ctx.s_out(spec))
        return {"multiplier": m, "shift": s}, {}

    def acc_std(self, ctx, spec):
        # Probabilities sum to 2**bits: the context is a weighted mean of v.
        return (1 << ctx.tensors[spec.inputs[0]].qtype.bits) * ctx.std[spec.inputs[1]]
