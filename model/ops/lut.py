"""``lut``: a table activation, ``table[x - qmin]``; the table tabulates a registered
:class:`~model.ops.Activation` (``spec.dims["function"]``) over every input code."""
from __future__ import annotations

import numpy as np
import torch

from .. import intops
from ..qat import dequantize, quantize
from . import OpKind, activation, register


@register
class Lut(OpKind):
    kind = "lut"
    arrays = ("table",)
    hw_block = "hw.elementwise:LutActivation"

    def run(self, op, ins, types, out):
        return intops.lut_activation(ins[0], types[0], op.arrays["table"], out)

    def convert(self, ctx, spec):
        xq, oq = ctx.qp[spec.inputs[0]], ctx.qp[spec.output]
        codes = torch.arange(xq.qmin, xq.qmax + 1)
        fn = activation(spec.dims["function"]).function
        return {}, {"table": quantize(fn(dequantize(codes, xq)), oq).numpy()}

    def synthetic_params(self, ctx, spec, out):
        xq = ctx.tensors[spec.inputs[0]].qtype
        act = activation(spec.dims["function"])
        fn = act.synthetic or (lambda x: act.function(torch.from_numpy(x)).numpy())
        codes = np.arange(xq.qmin, xq.qmax + 1)
        xr = (codes - xq.zero_point) / max(ctx.std[spec.inputs[0]], 1.0)
        table = np.round(fn(xr) * ctx.target_std(out)).astype(np.int64) + out.zero_point
        return {}, {"table": intops.saturate(table, out).numpy()}
