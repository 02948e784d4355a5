"""Linear layer (``intops.linear`` applied token by token) with FINN-style PE x SIMD folding.

Dataflow, per token of ``In`` input elements producing ``Out`` output elements:

* **Loader** — writes the element-serial input into a double-buffered input store (two halves
  of ``In`` entries), split into ``simd`` banks so that ``simd`` consecutive inputs can be read
  per cycle. Token ``t+1`` is loaded while token ``t`` is computed.
* **Compute** — ``G = Out/pe`` output groups; for each group ``K = In/simd`` cycles each read one
  weight word (``pe*simd`` weights, pre-offset by the weight zero point) and ``simd`` inputs and
  advance ``pe`` accumulators by ``simd`` products. Pipeline: read | multiply (registered) |
  adder tree of ``simd`` products (registered) | accumulate. A group occupies ``P = max(K, pe)``
  issue slots (idle slots when ``K < pe``), so that group results never arrive faster than the
  element-serial output can drain them.
* **Serialiser + requantisation** — at the end of a group its ``pe`` accumulators are copied to a
  shift register and leave one per cycle: + bias (from a ROM) | x multiplier (registered) |
  round, saturate (ReLU: lower bound = zero point) into the output queue.

Flow control uses credits (see :mod:`hw.plumbing`): a group starts only when ``pe`` places are
reserved in the output queue, so the whole datapath after the issue stage never stalls and
``i.ready`` / ``o.valid`` are registers.

Throughput per token: ``max(In, G*P) = max(In, Out*In/(pe*simd), Out)`` cycles.
"""
from __future__ import annotations

import numpy as np
from amaranth import Array, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from model import intops
from model.intops import QType
from hw.block import Block
from hw.common import (Buffer, Rom, Storage, check_lane_mul, check_mul, const,
                       element_stream, mul, mul_const, pack_words, packing, qshape, requantiser,
                       round_saturate, tree_sum, union_shape, unpack_products)
from hw.plumbing import CreditQueue, checked_init


class Linear(Block):
    """``tokens`` vectors of ``In`` elements in (port ``i``), ``tokens`` vectors of ``Out``
    elements out (port ``o``): ``o = intops.linear(i, ...)`` token by token."""

    #: Edges from the last weight read of a group to the transfer of its first output:
    #: multiply, tree, accumulate, shift register, + bias, x multiplier, queue write, queue valid.
    TAIL = 8

    @checked_init
    def __init__(self, weight, weight_type: QType, bias, multiplier: int, shift: int,
                 in_type: QType, out_type: QType, relu: bool = False, *, tokens: int,
                 pe: int = 1, simd: int = 1, weight_storage=Storage.BRAM,
                 buffer_storage=Storage.REGISTERS, mul: str = "dsp", requant_mul: str = "lut",
                 bias_storage=None, requants=None):
        # ``weight_type`` may be a list: one type per equal segment of the output rows (a
        # fused linear, see fused_from_ops).
        wtypes = list(weight_type) if isinstance(weight_type, (list, tuple)) else [weight_type]
        w = np.asarray(weight)
        if w.ndim != 2 or w.shape[0] % len(wtypes):
            raise ValueError(f"weight must be a 2-D (Out, In) array with Out a multiple of "
                             f"{len(wtypes)}, got shape {w.shape}")
        seg = w.shape[0] // len(wtypes)
        w = np.concatenate([t.check(w[i * seg:(i + 1) * seg], "linear weight").numpy()
                            for i, t in enumerate(wtypes)])
        self.n_out, self.n_in = (int(s) for s in w.shape)
        if not isinstance(pe, int) or not isinstance(simd, int) or pe < 1 or simd < 1:
            raise ValueError(f"pe and simd must be positive integers, got pe={pe!r}, simd={simd!r}")
        if self.n_out % pe:
            raise ValueError(f"pe={pe} must divide the number of outputs {self.n_out}")
        if self.n_in % simd:
            raise ValueError(f"simd={simd} must divide the number of inputs {self.n_in}")
        if tokens < 1:
            raise ValueError(f"tokens must be >= 1, got {tokens}")
        b = np.zeros(self.n_out, np.int64) if bias is None else np.asarray(bias, np.int64).reshape(-1)
        if b.shape != (self.n_out,):
            raise ValueError(f"bias needs {self.n_out} entries, got {b.size}")
        for i, t in enumerate(wtypes):
            lim = intops.bias_bound(self.n_in, in_type, t)
            if np.abs(b[i * seg:(i + 1) * seg]).max(initial=0) > lim:
                raise ValueError(f"bias exceeds its bound {lim} (intops.bias_bound)")
        if not 0 <= shift <= intops.MAX_SHIFT:
            raise ValueError(f"shift must be in [0, {intops.MAX_SHIFT}], got {shift}")
        self.weight, self.weight_types, self.weight_type, self.bias = w, wtypes, wtypes[0], b
        self.multiplier, self.shift = int(multiplier), int(shift)
        self.in_type, self.out_type, self.relu = in_type, out_type, bool(relu)
        self.tokens, self.pe, self.simd = int(tokens), pe, simd
        self.weight_storage = Storage.parse(weight_storage)
        self.buffer_storage = Storage.parse(buffer_storage)
        # The bias ROM is narrow and shallow: one BRAM18 each is a waste, LUTs cost a few.
        self.bias_storage = self.weight_storage if bias_storage is None else Storage.parse(bias_storage)
        self.mul, self.requant_mul = check_lane_mul(mul), check_mul(requant_mul)
        # Several linears of one input fused into one (Q, K, V): consecutive equal segments of
        # the outputs, each with its own (multiplier, shift, out_type) requantisation.
        if requants is None:
            requants = [(self.multiplier, self.shift, out_type)]
        self.requants = [(int(mu), int(sh), qt) for mu, sh, qt in requants]
        if not self.requants or self.n_out % len(self.requants):
            raise ValueError(f"{len(self.requants)} requantisation segments must divide the "
                             f"{self.n_out} outputs")
        for mu, sh, qt in self.requants:
            if not 0 <= sh <= intops.MAX_SHIFT:
                raise ValueError(f"shift must be in [0, {intops.MAX_SHIFT}], got {sh}")
        # Segments of different types (adaptive schemes pick one per tensor) share a stream
        # wide enough for each; the consumer narrows every element back to its own shape.
        self.out_shape = union_shape(qt for _, _, qt in self.requants)
        super().__init__({"i": In(element_stream(in_type)), "o": Out(stream.Signature(self.out_shape))})

    op_kinds = ("linear",)

    @classmethod
    def build(cls, model, op, **knobs):
        p = op.params
        shape = op.spec.shape
        kw = {"tokens": shape[0] if len(shape) == 2 else 1}
        kw.update(knobs)
        return cls(op.arrays["weight"], QType.from_dict(p["weight_type"]), op.arrays["bias"],
                   p["multiplier"], p["shift"], model.qtype(op.spec.inputs[0]),
                   model.qtype(op.output), p.get("relu", False), **kw)

    @classmethod
    def fused_from_ops(cls, model, output_names, **knobs):
        """One Linear computing the outputs of several linear operators that read the same
        input (e.g. ``l0.q``, ``l0.k``, ``l0.v``): weights stacked, outputs of each operator a
        consecutive segment of every token, each requantised with its own parameters."""
        ops = [model.op(n) for n in output_names]
        if any(op.kind != "linear" for op in ops):
            raise ValueError(f"{output_names} are not all linear operators")
        if len({op.spec.inputs[0] for op in ops}) != 1:
            raise ValueError(f"{output_names} do not share one input")
        if len({op.arrays["weight"].shape for op in ops}) != 1 or any(
                op.params.get("relu", False) for op in ops):
            raise ValueError(f"{output_names} need one weight shape and no ReLU to be fused")
        shape = ops[0].spec.shape
        kw = {"tokens": shape[0] if len(shape) == 2 else 1}
        kw.update(knobs)
        p = ops[0].params
        bias = [np.zeros(op.arrays["weight"].shape[0], np.int64) if op.arrays["bias"] is None
                else np.asarray(op.arrays["bias"], np.int64).reshape(-1) for op in ops]
        return cls(np.concatenate([op.arrays["weight"] for op in ops]),
                   [QType.from_dict(op.params["weight_type"]) for op in ops],
                   np.concatenate(bias), p["multiplier"], p["shift"],
                   model.qtype(ops[0].spec.inputs[0]), model.qtype(output_names[0]), False,
                   requants=[(op.params["multiplier"], op.params["shift"], model.qtype(n))
                             for op, n in zip(ops, output_names)], **kw)

    # -- schedule ---------------------------------------------------------------------------
    @property
    def groups(self):
        """G: output groups of ``pe`` lanes per token."""
        return self.n_out // self.pe

    @property
    def folds(self):
        """K: weight words (cycles of ``simd`` inputs) per output group."""
        return self.n_in // self.simd

    @property
    def slots(self):
        """P: issue slots per output group (>= pe: the serial output drains pe results)."""
        return max(self.folds, self.pe)

    def token_period(self) -> int:
        """Steady-state cycles per token: loading (In) or computing (G*P), whichever is longer."""
        return max(self.n_in, self.groups * self.slots)

    @property
    def window(self):
        return self.tokens * self.n_in

    def cycles(self, length: int | None = None) -> int:
        """Exact cycles for one window (always-valid source, always-ready sink):

        the first token is loaded (In cycles), compute starts the cycle after; token t starts
        computing ``t * token_period`` later; the last token's last group reads its last weight
        ``(G-1)*P + K - 1`` cycles after its start; then its pe results drain serially
        (pe - 1 cycles after the first) behind a fixed tail of ``TAIL`` edges.
        """
        self.stream_length(length)
        G, K, P, pe = self.groups, self.folds, self.slots, self.pe
        return (self.n_in + 1 + (self.tokens - 1) * self.token_period()
                + (G - 1) * P + K - 1 + self.TAIL + pe - 1 + 1)

    def queue_depth(self) -> int:
        """Output-queue entries: enough reservations in flight that an always-ready sink never
        throttles the issue (up to ~2 groups plus the tail latency)."""
        return 2 * self.pe + self.TAIL + 4

    def output_times(self, arrive) -> list:
        """Per-element output edges of one window given the edges at which its input elements
        are offered (``arrive``, one per input element; ideal sink). Same schedule as
        :meth:`Linear.cycles`: token t starts computing the edge after its last input is loaded
        (and ``G*P`` after the previous token started); group g, lane i of that token leaves
        ``g*P + K + TAIL + i`` edges after the start. The double buffer lets token t+2 load only
        after token t's last weight read; an input that comes earlier is held back (``load``)."""
        N, G, K, P, pe = self.n_in, self.groups, self.folds, self.slots, self.pe
        start, load, starts, out = -10 ** 9, -10 ** 9, [], []
        for t in range(self.tokens):
            # half t % 2 is free the edge after token t-2's last weight read
            free = starts[t - 2] + (G - 1) * P + K if t >= 2 else 0
            for j in range(N):
                load = max(arrive[t * N + j], load + 1, free)
            start = max(load + 1, start + G * P)
            starts.append(start)
            out += [start + g * P + K + self.TAIL + i for g in range(G) for i in range(pe)]
        return out

    # -- hardware ---------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        it, wt, ot = self.in_type, self.weight_type, self.out_type
        pe, simd, G, K, P = self.pe, self.simd, self.groups, self.folds, self.slots

        # Widths, all from intops bounds.
        wts = self.weight_types
        wt = max(wts, key=lambda t: t.max_offset)          # the widest w - zw of the segments
        wb = intops.offset_bits(wt)                        # w - zw
        prod_bound = intops.product_bound(it, wt)
        row_zp = [wts[r * len(wts) // self.n_out].zero_point for r in range(self.n_out)]
        prod_bits = intops.signed_bits(prod_bound)
        tree_bits = intops.signed_bits(simd * prod_bound)
        acc_bits = intops.signed_bits(intops.dot_acc_bound(self.n_in, it, wt))
        accb_bound = intops.dot_acc_bound(self.n_in, it, wt, with_bias=True)
        accb_bits = intops.signed_bits(accb_bound)
        bias_bits = max(intops.signed_bits(intops.bias_bound(self.n_in, it, t)) for t in wts)
        mul_bits = max(intops.signed_bits(intops.requant_product_bound(accb_bound, mu))
                       for mu, _, _ in self.requants)

        # ---- memories
        # Lane groups: with mul="dsp_packed" the pe lanes (which share the input element) go
        # g to a DSP, their weights pre-packed in the ROM word; otherwise one lane per group.
        x_bits = intops.offset_bits(it)
        g_pack, k_pack = (packing(x_bits, wb, prod_bound) if self.mul == "dsp_packed" else (1, 0))
        lane_groups = [list(range(s0, min(s0 + g_pack, pe))) for s0 in range(0, pe, g_pack)]

        # Weights of zero point 0 in block RAM are stored as they are (bits wide, not bits + 1):
        # 4-bit words fill an iCE40 EBR in 1024 x 4 mode instead of two in 512 x 8. (LUT ROMs
        # keep bits + 1: narrower there measured no better, the XC7S15 8-bit preset 46 LUTs worse.)
        narrow = (self.weight_storage is Storage.BRAM
                  and all(t.signed and t.zero_point == 0 for t in wts))

        def fwidth(grp):
            if len(grp) == 1:
                return wb - 1 if narrow else wb
            return wb + (len(grp) - 1) * k_pack

        words = []
        for g in range(G):
            for k in range(K):
                word, off = 0, 0
                for j in range(simd):
                    for grp in lane_groups:
                        ws = [int(self.weight[g * pe + p, k * simd + j]) - row_zp[g * pe + p] for p in grp]
                        v = pack_words(ws, k_pack) if len(grp) > 1 else ws[0]
                        word |= (v & ((1 << fwidth(grp)) - 1)) << off
                        off += fwidth(grp)
                words.append(word)
        word_bits = simd * sum(fwidth(grp) for grp in lane_groups)
        m.submodules.wrom = wrom = Rom(words, unsigned(word_bits), self.weight_storage)
        m.submodules.brom = brom = Rom(self.bias, signed(bias_bits), self.bias_storage)
        banks = []
        for j in range(simd):
            bank = Buffer(qshape(it), 2 * K, self.buffer_storage)
            m.submodules[f"bank{j}"] = bank
            banks.append(bank)
        m.submodules.q = q = CreditQueue(self.out_shape, self.queue_depth(), latency=2, max_reserve=pe,
                                         storage=self.buffer_storage)

        # ---- loader: element-serial input into the half h_w of the double buffer
        full = Signal(2)                  # half h holds a complete token not yet fully read
        h_w = Signal()
        w_lane = Signal(range(max(simd, 2)))
        w_word = Signal(range(max(K, 2)))
        load = Signal()
        m.d.comb += [self.i.ready.eq(~full.bit_select(h_w, 1)), load.eq(self.i.valid & self.i.ready)]
        for j, bank in enumerate(banks):
            m.d.comb += [bank.w_addr.eq(h_w * K + w_word),
                         bank.w_data.eq(self.i.payload),
                         bank.w_en.eq(load & (w_lane == j))]
        set_full = Signal(2)
        clr_full = Signal(2)
        with m.If(load):
            with m.If(w_lane == simd - 1):
                m.d.sync += w_lane.eq(0)
                with m.If(w_word == K - 1):
                    m.d.sync += [w_word.eq(0), h_w.eq(~h_w)]
                    m.d.comb += set_full.eq(Mux(h_w, 0b10, 0b01))
                with m.Else():
                    m.d.sync += w_word.eq(w_word + 1)
            with m.Else():
                m.d.sync += w_lane.eq(w_lane + 1)
        m.d.sync += full.eq((full | set_full) & ~clr_full)

        # ---- compute issue: slot k of group g of the token in half h_c
        h_c = Signal()
        g = Signal(range(max(G, 2)))
        k = Signal(range(max(P, 2)))
        w_addr = Signal(range(max(G * K, 2)))
        go = Signal()
        issue = Signal()
        first = Signal()
        last = Signal()
        m.d.comb += [
            go.eq((k != 0) | (full.bit_select(h_c, 1) & q.can_reserve)),
            issue.eq(go & (k < K)),
            first.eq(k == 0),
            last.eq(k == K - 1),
            q.reserve.eq(Mux(go & (k == 0), pe, 0)),
            wrom.addr.eq(w_addr),
        ]
        for bank in banks:
            m.d.comb += bank.r_addr.eq(h_c * K + k)
        with m.If(go):
            with m.If(k == P - 1):
                m.d.sync += k.eq(0)
                m.d.sync += g.eq(Mux(g == G - 1, 0, g + 1))
            with m.Else():
                m.d.sync += k.eq(k + 1)
        with m.If(issue):
            m.d.sync += w_addr.eq(Mux(w_addr == G * K - 1, 0, w_addr + 1))
            with m.If(last & (g == G - 1)):          # last read of this token: free its half
                m.d.comb += clr_full.eq(Mux(h_c, 0b10, 0b01))
                m.d.sync += h_c.eq(~h_c)

        # ---- stage 1: memory data; multiply (registered into stage 2)
        v1, f1, l1 = Signal(), Signal(), Signal()
        m.d.sync += [v1.eq(issue), f1.eq(first), l1.eq(last)]
        v2, f2, l2 = Signal(), Signal(), Signal()
        m.d.sync += [v2.eq(v1), f2.eq(f1), l2.eq(l1)]
        prods = [[None] * simd for _ in range(pe)]
        off = 0
        for j in range(simd):
            xj = (banks[j].r_data - it.zero_point)
            for grp in lane_groups:
                fw = fwidth(grp)
                wv = wrom.data[off:off + fw].as_signed()
                off += fw
                if len(grp) == 1:
                    pr = Signal(signed(prod_bits), name=f"prod_{grp[0]}_{j}")
                    m.d.sync += pr.eq(mul(xj, wv, "lut" if self.mul == "lut" else "dsp"))
                    prods[grp[0]][j] = pr
                else:
                    pk = Signal(signed(x_bits + fw), name=f"pprod_{grp[0]}_{j}")
                    m.d.sync += pk.eq(xj * wv)
                    for p, v in zip(grp, unpack_products(pk, len(grp), k_pack)):
                        prods[p][j] = v

        # ---- stage 2: adder tree of simd products (registered into stage 3)
        v3, f3, l3 = Signal(), Signal(), Signal()
        m.d.sync += [v3.eq(v2), f3.eq(f2), l3.eq(l2)]
        sums = [Signal(signed(tree_bits), name=f"sum_{p}") for p in range(pe)]
        for p in range(pe):
            m.d.sync += sums[p].eq(tree_sum(prods[p]))

        # ---- stage 3: accumulate; at the group's end hand the results to the shift register
        accs = [Signal(signed(acc_bits), name=f"acc_{p}") for p in range(pe)]
        shadow = [Signal(signed(acc_bits), name=f"shadow_{p}") for p in range(pe)]
        remaining = Signal(range(pe + 1))
        emit = Signal()
        m.d.comb += emit.eq(remaining != 0)
        r1 = Signal(signed(acc_bits))
        rv1 = Signal()
        m.d.sync += rv1.eq(emit)
        with m.If(emit):
            m.d.sync += r1.eq(shadow[0])
        new = [Signal(signed(acc_bits), name=f"new_{p}") for p in range(pe)]
        for p in range(pe):
            m.d.comb += new[p].eq(Mux(f3, 0, accs[p]) + sums[p])
            with m.If(v3):
                m.d.sync += accs[p].eq(new[p])
        with m.If(v3 & l3):
            # P >= pe slots per group: the previous group has at most its last element left,
            # which leaves through r1 in this very cycle.
            m.d.sync += [s.eq(n) for s, n in zip(shadow, new)]
            m.d.sync += remaining.eq(pe)
        with m.Elif(emit):
            m.d.sync += [shadow[p].eq(shadow[p + 1]) for p in range(pe - 1)]
            m.d.sync += remaining.eq(remaining - 1)

        # ---- requantisation: + bias | x multiplier | round, saturate -> queue
        b_idx = Signal(range(max(self.n_out, 2)))
        m.d.comb += brom.addr.eq(b_idx)
        with m.If(emit):
            m.d.sync += b_idx.eq(Mux(b_idx == self.n_out - 1, 0, b_idx + 1))
        r2 = Signal(signed(accb_bits))
        rv2 = Signal()
        rv3 = Signal()
        segs = self.requants
        if len(set(segs)) == 1:
            m.d.sync += [r2.eq(r1 + brom.data), rv2.eq(rv1), rv3.eq(rv2)]
            m.d.comb += [q.w_en.eq(rv3),
                         q.w_data.eq(requantiser(m, r2, accb_bound, self.multiplier, self.shift,
                                                 ot, mul=self.requant_mul, relu=self.relu,
                                                 name="r3"))]
        else:
            m.d.sync += [r2.eq(r1 + brom.data), rv2.eq(rv1), rv3.eq(rv2)]
            # Segment of the element in r2 (seg2) and r3 (seg3), from the bias index at emit.
            seg_len = self.n_out // len(segs)
            seg1, seg2, seg3 = (Signal(range(len(segs)), name=f"seg{i}") for i in (1, 2, 3))
            with m.If(emit):
                m.d.sync += seg1.eq(sum((b_idx >= k * seg_len).as_unsigned()
                                        for k in range(1, len(segs))))
            m.d.sync += [seg2.eq(seg1), seg3.eq(seg2)]
            mults = sorted({mu for mu, _, _ in segs})
            if len(mults) == 1:
                prod = mul_const(r2, mults[0], self.requant_mul)
            elif self.requant_mul == "dsp":
                prod = r2 * Array(const(mu) for mu, _, _ in segs)[seg2]
            else:
                prod = Array(mul_const(r2, mu, "lut") for mu, _, _ in segs)[seg2]
            r3 = Signal(signed(mul_bits))
            m.d.sync += r3.eq(prod)
            outs = [round_saturate(r3, sh, qt, self.relu) for _, sh, qt in segs]
            m.d.comb += [q.w_en.eq(rv3), q.w_data.eq(Array(outs)[seg3])]
        wiring.connect(m, q.o, wiring.flipped(self.o))
        return m
