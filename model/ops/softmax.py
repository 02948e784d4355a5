"""``softmax`` over the keys: table exponential, one reciprocal per row; its output is always
unsigned with zero point 0 and scale ``2**-bits``. Its block also runs inside
:class:`hw.attention.AttentionCore`."""
from __future__ import annotations

from .. import intops
from ..intops import QType
from . import OpKind, register


@register
class Softmax(OpKind):
    kind = "softmax"
    params = ("exp_bits", "recip_bits")
    arrays = ("exp_table",)
    hw_block = "hw.softmax:Softmax"

    def run(self, op, ins, types, out):
        p = op.params
        return intops.softmax(ins[0], types[0], op.arrays["exp_table"], p["exp_bits"],
                              p["recip_bits"], out)

    def convert(self, ctx, spec):
        exp_bits, recip_bits = intops.softmax_precision(ctx.qp[spec.output].bits)
        x = spec.inputs[0]
        table = intops.softmax_exp_table(ctx.qp[x].scale, ctx.qp[x].qtype(), exp_bits)
        return {"exp_bits": exp_bits, "recip_bits": recip_bits}, {"exp_table": table}

    def synthesize(self, ctx, spec):
        name, fixed = spec.output, ctx.fixed
        b = ctx.width(name)
        out = QType(b, False, 0)
        if name in fixed:
            if fixed[name].signed or fixed[name].zero_point:
                raise ValueError(f"the softmax output {name!r} is unsigned with zero point 0, "
                                 f"got {fixed[name]}")
            out = fixed[name]
            b = out.bits
        ctx.set_type(name, spec.shape, out, 1.0 / (1 << b))
        st = ctx.tensors[spec.inputs[0]]
        exp_bits, recip_bits = intops.softmax_precision(b)
        # Scale so that the spread of a row covers a few e-folds of the exponential.
        score_scale = ctx.score_scale(ctx.std[spec.inputs[0]])
        table = intops.softmax_exp_table(score_scale, st.qtype, exp_bits)
        ctx.std[name] = (1 << b) / ctx.config["window"]
        return {"exp_bits": exp_bits, "recip_bits": recip_bits}, {"exp_table": table}
