"""Integer layer-norm (intops.layernorm) over each token of ``channels`` elements.

Why this structure
------------------
``sum(dev**2)`` is always a multiple of n: ``sum(dev**2) = n * (n*sum(xc**2) - sum(xc)**2)``
(because ``sum(dev) = 0``), so ``(sum(dev**2) << 2F) // n`` (F = intops.LN_SD_FRAC_BITS) is
*exactly* ``(n*Q - S*S) << 2F`` with ``S = sum(xc)``, ``Q = sum(xc**2)``: the constant
division by n costs nothing (no divider, no rounding to get wrong) and both sums are
accumulated while the token streams in. What remains per token is one square root and one
reciprocal, done by serial units, and one pass over the stored token for the output. As in
:mod:`hw.softmax` each token moves through stages working on different banks of the token
buffer (tags 0 free, 1 ingested, 2 variance ready, 3 sd ready, 4 reciprocal ready):

0. ingest: store x, accumulate S and Q; ``v = n*Q - S*S`` two edges after the last element;
1. ``sd = max(isqrt(v << 2F), 1)`` digit by digit, ``sqrt_bits`` root bits per cycle;
2. ``r = floor(2**recip_bits / sd)``, ``div_bits`` quotient bits per cycle;
3. output: ``dev = n*xc - S``; ``z = rounding_shift(dev*r, recip_bits - norm_bits - F)``;
   ``saturate(zp + rounding_shift(z*scale[c] + offset[c], shift))`` (read | dev | dev*r |
   z*scale | round+saturate into a credit-checked FIFO).
"""
from __future__ import annotations

import math

import numpy as np
from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model import intops
from model.intops import QType, signed_bits, unsigned_bits

from .amaranth_adapter import discard
from .block import Block
from .common import (Buffer, Rom, Storage, check_mul, element_stream, mul, mul_const, qshape,
                     round_saturate, rounding_shift)
from .plumbing import CreditQueue
from .softmax import Reciprocal, _inc_mod


class Isqrt(wiring.Component):
    """``floor(sqrt(value))`` digit by digit (restoring), ``bits_per_cycle`` root bits per
    clock. Same protocol as :class:`hw.softmax.Reciprocal`: ``start`` samples ``value``; after
    ``iterations`` more edges the root is done; ``last`` marks the final iteration's cycle,
    when the combinational ``result`` holds the root."""

    def __init__(self, value_max: int, bits_per_cycle: int = 1):
        if bits_per_cycle < 1:
            raise ValueError(f"bits_per_cycle must be >= 1, got {bits_per_cycle}")
        self.vw = unsigned_bits(value_max)
        root_bits = -(-self.vw // 2)
        self.k = min(bits_per_cycle, root_bits)
        self.iterations = -(-root_bits // self.k)
        self.rw = self.iterations * self.k          # root register width (padded)
        self.rootw = unsigned_bits(math.isqrt(value_max))
        super().__init__({"start": In(1), "value": In(unsigned(self.vw)), "busy": Out(1),
                          "last": Out(1), "result": Out(unsigned(self.rootw))})

    def elaborate(self, platform):
        m = Module()
        val = Signal(unsigned(2 * self.rw))       # radicand, consumed two bits at a time
        rem = Signal(unsigned(self.rw + 2))       # remainder <= 2*root
        root = Signal(unsigned(self.rw))
        cnt = Signal(range(self.iterations + 1))
        v, r, q = val, rem, root
        for _ in range(self.k):
            r2 = Cat(v[-2:], r)                   # 4*rem + next two radicand bits
            trial = Cat(Const(1, 2), q)           # 4*root + 1
            ge = r2 >= trial
            r = Mux(ge, r2 - trial, r2)[:self.rw + 2]
            q = Cat(ge, q)[:self.rw]
            v = Cat(Const(0, 2), v)[:2 * self.rw]
        m.d.comb += [self.last.eq(self.busy & (cnt == 1)), self.result.eq(q)]
        with m.If(self.busy):
            m.d.sync += [val.eq(v), rem.eq(r), root.eq(q), cnt.eq(cnt - 1)]
            with m.If(cnt == 1):
                m.d.sync += self.busy.eq(0)
        with m.Elif(self.start):
            m.d.sync += [val.eq(self.value), rem.eq(0), root.eq(0), cnt.eq(self.iterations),
                         self.busy.eq(1)]
        return m


class LayerNorm(Block):
    """intops.layernorm per token: ``i`` streams ``tokens`` x ``channels`` elements of ``x_type``,
    ``o`` the normalised tokens in ``out_type``. Knobs: ``weight_storage`` (scales/offsets
    ROMs), ``buffer_storage`` (token banks), ``sqrt_bits`` / ``div_bits`` (bits per cycle of the
    serial units), ``banks`` (tokens in flight)."""

    STATS_LATENCY = 2     # last input edge -> variance stored
    OUT_LATENCY = 5       # output issue edge -> transfer edge

    def __init__(self, x_type: QType, scales, offsets, shift: int, norm_bits: int, recip_bits: int,
                 out_type: QType, *, channels: int, tokens: int, weight_storage="registers",
                 buffer_storage="lutram", sqrt_bits: int = 2, div_bits: int = 3, banks: int = 4,
                 mul: str = "dsp"):
        scales = [int(v) for v in np.asarray(scales).ravel()]
        offsets = [int(v) for v in np.asarray(offsets).ravel()]
        try:
            if channels < 1 or tokens < 1:
                raise ValueError("channels and tokens must be >= 1")
            if len(scales) != channels or len(offsets) != channels:
                raise ValueError(f"scales and offsets need {channels} entries")
            if recip_bits < norm_bits + intops.LN_SD_FRAC_BITS or shift < 0:
                raise ValueError("need recip_bits >= norm_bits + LN_SD_FRAC_BITS and shift >= 0")
            if banks < 2:
                raise ValueError("banks must be >= 2")
        except ValueError:
            discard(self)                      # a rejected block is not an unused one
            raise
        self.x_type, self.scales, self.offsets, self.shift = x_type, scales, offsets, shift
        self.norm_bits, self.recip_bits, self.out_type = norm_bits, recip_bits, out_type
        self.channels, self.tokens, self.banks = channels, tokens, banks
        self.weight_storage = Storage.parse(weight_storage)
        self.buffer_storage = Storage.parse(buffer_storage)
        self.mul = check_mul(mul)
        b = intops.layernorm_bounds(channels, x_type, norm_bits, recip_bits)
        self.bounds = b
        # Widths from intops.layernorm_bounds.
        self.xc_shape = signed(signed_bits(b["xc"]))
        self.s_shape = signed(signed_bits(b["sum"]))
        self.q_shape = unsigned(unsigned_bits(b["sq_acc"]))
        self.frac = intops.LN_SD_FRAC_BITS
        self.var_shape = unsigned(unsigned_bits(b["var_n"]))        # v = n*Q - S*S
        self.dev_shape = signed(signed_bits(b["dev"]))
        self.prod_shape = signed(signed_bits(b["dev_recip"]))         # dev * r
        self.z_bound = b["z"]
        self.z_shape = signed(signed_bits(b["z"]))
        self.acc_shape = signed(signed_bits(intops.affine_bound(b["z"], scales, offsets)))
        self.sqrt = Isqrt(b["var"], sqrt_bits)
        self.recip = Reciprocal(recip_bits, 1, max(b["sd"], 1), div_bits)
        super().__init__({"i": In(element_stream(x_type)), "o": Out(element_stream(out_type))})

    op_kinds = ("layernorm",)

    @classmethod
    def build(cls, model, op, **knobs):
        L, d = op.spec.shape
        p = op.params
        return cls(model.qtype(op.spec.inputs[0]), op.arrays["scales"], op.arrays["offsets"],
                   p["shift"], p["norm_bits"], p["recip_bits"], model.qtype(op.output),
                   channels=d, tokens=L, **knobs)

    def reference(self, x):
        return intops.layernorm(intops.as_int(x).reshape(-1, self.channels), self.x_type,
                                self.scales, self.offsets, self.shift, self.norm_bits,
                                self.recip_bits, self.out_type)

    # -- timing -------------------------------------------------------------------------------
    def token_times(self, ingest_end):
        """Exact schedule: per token, the edge of its last output transfer, given the edge at
        which its last input can arrive (sink always ready)."""
        N, B = self.channels, self.banks
        dq, dd = self.sqrt.iterations, self.recip.iterations
        ie = q_e = v_e = o_e = -10 ** 9
        free, out = [], []
        for t, arrive in enumerate(ingest_end):
            start = max(ie + 1, free[t - B] + 1 if t >= B else 1)
            ie = max(start + N - 1, arrive)
            q_e = max(q_e + 1, ie + self.STATS_LATENCY + 1) + dq
            v_e = max(v_e + 1, q_e + 1) + dd
            o_e = max(o_e + 1, v_e + 1) + N - 1
            free.append(o_e)
            out.append(o_e + self.OUT_LATENCY)
        return out

    @property
    def window(self):
        return self.tokens * self.channels

    def cycles(self, length: int | None = None) -> int:
        """Cycles for one window (always-valid source, always-ready sink). While the serial
        units keep up (``Dq + 1 <= N`` and ``Dd + 1 <= N``, banks not exhausted) this is
        ``(tokens + 1) * N + Dq + Dd + 9`` with ``Dq``/``Dd`` the square-root/division
        iterations: N edges per token to stream in, one token more to stream the last one out,
        plus hand-over and pipeline latency. :meth:`token_times` is exact in every case."""
        self.stream_length(length)
        N = self.channels
        return self.token_times([(t + 1) * N for t in range(self.tokens)])[-1]

    def output_times(self, arrive) -> list:
        """Per-element output edges given the edges of the input elements (ideal sink): per
        token, :meth:`token_times` of its last input; its N outputs leave one per edge."""
        N = self.channels
        ends = self.token_times([arrive[(t + 1) * N - 1] for t in range(self.tokens)])
        return [e - (N - 1) + j for e in ends for j in range(N)]

    # -- hardware -----------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        N, B = self.channels, self.banks
        xshape = qshape(self.x_type)
        zx = self.x_type.zero_point
        m.submodules.buf = buf = Buffer(xshape, B * N, self.buffer_storage)
        mscale = max(max(abs(v) for v in self.scales), 1)
        moff = max(max(abs(v) for v in self.offsets), 1)
        scale_shape, off_shape = signed(signed_bits(mscale)), signed(signed_bits(moff))
        m.submodules.scales = rscale = Rom(self.scales, scale_shape, self.weight_storage)
        m.submodules.offsets = roff = Rom(self.offsets, off_shape, self.weight_storage)
        m.submodules.sqrt = sq = self.sqrt
        m.submodules.recip = div = self.recip
        m.submodules.queue = queue = CreditQueue(qshape(self.out_type), self.OUT_LATENCY + 2, latency=1)
        wiring.connect(m, wiring.flipped(self.o), queue.o)

        tag = Array(Signal(range(5), name=f"tag{b}") for b in range(B))
        s_arr = Array(Signal(self.s_shape, name=f"s{b}") for b in range(B))
        var_arr = Array(Signal(self.var_shape, name=f"var{b}") for b in range(B))
        sd_arr = Array(Signal(sq.result.shape(), name=f"sd{b}") for b in range(B))
        r_arr = Array(Signal(div.result.shape(), name=f"r{b}") for b in range(B))

        # Stage 0: ingest, S = sum(xc), Q = sum(xc**2), var = n*Q - S*S.
        p0, j0 = Signal(range(B)), Signal(range(N))
        take = self.i.valid & self.i.ready
        xc = Signal(self.xc_shape)
        m.d.comb += [self.i.ready.eq(tag[p0] == 0), xc.eq(self.i.payload - zx),
                     buf.w_addr.eq(p0 * N + j0), buf.w_data.eq(self.i.payload), buf.w_en.eq(take)]
        s_acc, s_last = Signal(self.s_shape), Signal(self.s_shape)
        s_new = Mux(j0 == 0, 0, s_acc) + xc
        v1, first1, last1, bank1 = Signal(), Signal(), Signal(), Signal(range(B))
        xc1 = Signal(self.xc_shape)
        m.d.sync += [v1.eq(take), first1.eq(j0 == 0), last1.eq(j0 == N - 1), bank1.eq(p0), xc1.eq(xc)]
        with m.If(take):
            m.d.sync += s_acc.eq(s_new)
            with m.If(j0 == N - 1):
                m.d.sync += [j0.eq(0), s_arr[p0].eq(s_new), s_last.eq(s_new), tag[p0].eq(1),
                             p0.eq(_inc_mod(p0, B))]
            with m.Else():
                m.d.sync += j0.eq(j0 + 1)
        v2, first2, last2, bank2 = Signal(), Signal(), Signal(), Signal(range(B))
        sq2 = Signal(unsigned(unsigned_bits(self.bounds["sq"])))
        ss2 = Signal(unsigned(unsigned_bits(self.bounds["sum_sq"])))
        q_acc = Signal(self.q_shape)
        m.d.sync += [v2.eq(v1), first2.eq(first1), last2.eq(last1), bank2.eq(bank1),
                     sq2.eq(mul(xc1, xc1, self.mul)), ss2.eq(mul(s_last, s_last, self.mul))]
        q_new = Mux(first2, 0, q_acc) + sq2
        with m.If(v2):
            m.d.sync += q_acc.eq(q_new)
            with m.If(last2):
                m.d.sync += [var_arr[bank2].eq(mul_const(q_new, N, "lut") - ss2), tag[bank2].eq(2)]

        # Stage 1: sd = max(isqrt(var), 1).
        p1 = Signal(range(B))
        m.d.comb += [sq.start.eq(~sq.busy & (tag[p1] == 2)), sq.value.eq(var_arr[p1] << (2 * self.frac))]
        with m.If(sq.last):
            m.d.sync += [sd_arr[p1].eq(Mux(sq.result == 0, 1, sq.result)), tag[p1].eq(3),
                         p1.eq(_inc_mod(p1, B))]

        # Stage 2: r = floor(2**recip_bits / sd).
        p2 = Signal(range(B))
        m.d.comb += [div.start.eq(~div.busy & (tag[p2] == 3)), div.divisor.eq(sd_arr[p2])]
        with m.If(div.last):
            m.d.sync += [r_arr[p2].eq(div.result), tag[p2].eq(4), p2.eq(_inc_mod(p2, B))]

        # Stage 3: output pipeline.
        p3, j3 = Signal(range(B)), Signal(range(N))
        go = (tag[p3] == 4) & queue.can_reserve
        m.d.comb += [buf.r_addr.eq(p3 * N + j3), rscale.addr.eq(j3), roff.addr.eq(j3),
                     queue.reserve.eq(go)]
        with m.If(go):
            with m.If(j3 == N - 1):
                m.d.sync += [j3.eq(0), tag[p3].eq(0), p3.eq(_inc_mod(p3, B))]
            with m.Else():
                m.d.sync += j3.eq(j3 + 1)
        rshape = div.result.shape()
        u1, s1, r1 = Signal(), Signal(self.s_shape), Signal(rshape)
        m.d.sync += [u1.eq(go), s1.eq(s_arr[p3]), r1.eq(r_arr[p3])]
        u2, dev2, r2, sc2, of2 = Signal(), Signal(self.dev_shape), Signal(rshape), Signal(scale_shape), Signal(off_shape)
        m.d.sync += [u2.eq(u1), dev2.eq(mul_const(buf.r_data - zx, N, "lut") - s1), r2.eq(r1),
                     sc2.eq(rscale.data), of2.eq(roff.data)]
        u3, prod3, sc3, of3 = Signal(), Signal(self.prod_shape), Signal(scale_shape), Signal(off_shape)
        m.d.sync += [u3.eq(u2), prod3.eq(mul(dev2, r2, self.mul)), sc3.eq(sc2), of3.eq(of2)]
        # |z * scale| <= layernorm_bounds' z times the largest scale.
        u4, zs4, of4 = Signal(), Signal(signed(signed_bits(intops.const_product_bound(self.z_bound, mscale)))), Signal(off_shape)
        z = rounding_shift(prod3, self.recip_bits - self.norm_bits - self.frac)
        m.d.sync += [u4.eq(u3), zs4.eq(mul(z, sc3, self.mul)), of4.eq(of3)]
        acc = Signal(self.acc_shape)
        m.d.comb += acc.eq(zs4 + of4)
        m.d.comb += [queue.w_en.eq(u4),
                     queue.w_data.eq(round_saturate(acc, self.shift, self.out_type))]
        return m
