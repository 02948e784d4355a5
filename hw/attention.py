"""Multi-head attention: the core (scores, softmax, context) and the whole attention of one
encoder layer (Q/K/V projections, core, output projection).

Why this structure
------------------
Every query needs every key, so K (and V) must be complete before the first score: the core
buffers a whole window of Q, K and V. It accepts the three streams concurrently and at full
rate (the Q, K and V projections are fed by one Fork and would deadlock if one of them waited
for another), into two window *slots* so the next window loads while this one computes.
For each query row i and head h (this order makes the context leave token-major with the
heads concatenated, as intmodel.merge_heads):

* scores: ``s_ij = requantize(sum_c (q_ic - zq)(k_jc - zk))`` with ``qk_lanes`` channel MACs
  per cycle (read | products | adder tree | accumulate | multiply | round+saturate);
* softmax: a :class:`hw.softmax.Softmax` over rows of L scores;
* context: each probability p_ij updates the head's dh accumulators
  ``acc_c += (p_ij - zp)(v_jc - zv)``, ``pv_lanes`` channels per cycle; a finished row is
  copied to output registers and requantised one channel per cycle while the next row
  accumulates.

The buffers are split into lanes (channel c lives in lane ``c % lanes`` at word
``(slot, token, c // lanes)``), so each lane is an ordinary 1-read 1-write Buffer.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from amaranth import Array, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model import intops
from model.intmodel import merge_heads, split_heads
from model.intops import QType, signed_bits

from .amaranth_adapter import discard
from .block import Block
from .common import (Buffer, Storage, check_lane_mul, check_mul, element_stream, mul,
                     packing, qshape, requantiser, unpack_products)
from .plumbing import CreditQueue, QueueTiming
from .softmax import Softmax, _inc_mod


class AttentionCore(Block):
    """Scores, softmax and context of all heads for windows of ``tokens`` x ``d_model``.

    Streams ``q``, ``k``, ``v`` (In) and ``o`` (Out, the context), token-major. Knobs:
    ``qk_lanes`` / ``pv_lanes`` (MACs per cycle of the two products, divide d_model/heads;
    ``pv_lanes`` defaults to ``qk_lanes``), ``buffer_storage`` (Q/K/V window buffers),
    ``table_storage``, ``div_bits``, ``softmax_banks`` and ``softmax_buffer_storage`` (the
    softmax), ``qk_mul`` / ``softmax_mul`` ("dsp" | "lut"), ``pv_mul`` ("dsp" | "dsp_packed" |
    "lut": the PV lanes share the probability, so they pack into DSPs) and ``requant_mul``
    (score and context requantisers: "lut" = shift-add, "dsp"), ``acc_storage`` (the context
    accumulators and the finished row waiting for its requantiser: "registers", or memories
    with a read-modify-write per step, which needs ``dh / pv_lanes >= 2`` and adds one edge
    of output latency).
    """

    SCORE_LATENCY = 6     # last-step issue edge -> score transferred into the softmax
    SCORE_QUEUE_DEPTH = SCORE_LATENCY + 1
    OUT_QUEUE_DEPTH = 4

    @property
    def out_latency(self) -> int:
        """Edges from a row's last probability issue to its first context element out
        (one more when the finished row is read from a memory)."""
        return 6 if self.acc_storage is Storage.REGISTERS else 7

    def __init__(self, q_type: QType, k_type: QType, v_type: QType, score_multiplier: int,
                 score_shift: int, score_type: QType, exp_table, exp_bits: int, recip_bits: int,
                 attn_type: QType, ctx_multiplier: int, ctx_shift: int, context_type: QType, *,
                 tokens: int, d_model: int, heads: int, qk_lanes: int = 1, pv_lanes: int | None = None,
                 buffer_storage="lutram", table_storage="registers", div_bits: int = 1,
                 softmax_banks: int = 4, qk_mul: str = "dsp", pv_mul: str = "dsp",
                 requant_mul: str = "lut", softmax_mul: str = "dsp",
                 softmax_buffer_storage="lutram", acc_storage="registers"):
        try:
            if tokens < 1 or d_model < 1 or heads < 1 or d_model % heads:
                raise ValueError(f"need tokens, d_model, heads >= 1 and heads | d_model, got "
                                 f"{tokens}, {d_model}, {heads}")
            dh = d_model // heads
            # PV lanes default to the score lanes: a row of probabilities then takes as long
            # as the row of scores that produced it (more PV lanes would only wait).
            pv_lanes = qk_lanes if pv_lanes is None else pv_lanes
            for name, lanes in (("qk_lanes", qk_lanes), ("pv_lanes", pv_lanes)):
                if lanes < 1 or dh % lanes:
                    raise ValueError(f"{name}={lanes} must divide the head width {dh} "
                                     f"(d_model {d_model} / heads {heads})")
            self.acc_storage = Storage.parse(acc_storage)
            if self.acc_storage is not Storage.REGISTERS and dh // pv_lanes < 2:
                raise ValueError(f"acc_storage={acc_storage!r} needs at least 2 context steps "
                                 f"per probability (head width {dh} / pv_lanes {pv_lanes})")
            self.softmax = Softmax(score_type, exp_table, exp_bits, recip_bits, attn_type,
                                   rows=tokens * heads, row_length=tokens,
                                   table_storage=table_storage,
                                   buffer_storage=softmax_buffer_storage,
                                   div_bits=div_bits, banks=softmax_banks, mul=softmax_mul)
            self.qk_mul, self.requant_mul = check_mul(qk_mul), check_mul(requant_mul)
            self.pv_mul = check_lane_mul(pv_mul)
        except ValueError:
            discard(self)                      # a rejected block is not an unused one
            raise
        self.q_type, self.k_type, self.v_type = q_type, k_type, v_type
        self.score_multiplier, self.score_shift, self.score_type = score_multiplier, score_shift, score_type
        self.attn_type = attn_type
        self.ctx_multiplier, self.ctx_shift, self.context_type = ctx_multiplier, ctx_shift, context_type
        self.tokens, self.d_model, self.heads, self.dh = tokens, d_model, heads, dh
        self.qk_lanes, self.pv_lanes = qk_lanes, pv_lanes
        self.buffer_storage = Storage.parse(buffer_storage)
        # Accumulator bounds (intops.dot_acc_bound): scores over dh channels, context over L keys.
        self.score_acc_bound = intops.dot_acc_bound(dh, q_type, k_type)
        self.ctx_acc_bound = intops.dot_acc_bound(tokens, attn_type, v_type)
        self.score_acc_shape = signed(signed_bits(self.score_acc_bound))
        self.ctx_acc_shape = signed(signed_bits(self.ctx_acc_bound))
        super().__init__({"q": In(element_stream(q_type)), "k": In(element_stream(k_type)),
                          "v": In(element_stream(v_type)), "o": Out(element_stream(context_type))})

    op_kinds = ("context",)

    @classmethod
    def from_op(cls, model, output: str, **knobs):
        """Build from the ``l{i}.context`` op; it computes the scores and softmax ops too."""
        block = super().from_op(model, output, **knobs)
        sm = model.op(block.ops[0].spec.inputs[0])
        return block.computing(model, [model.op(sm.spec.inputs[0]), sm, *block.ops])

    @classmethod
    def build(cls, model, op, **knobs):
        attn_name, v_name = op.spec.inputs
        sm = model.op(attn_name)
        sc = model.op(sm.spec.inputs[0])
        q_name, k_name = sc.spec.inputs
        L, d = op.spec.shape
        return cls(model.qtype(q_name), model.qtype(k_name), model.qtype(v_name),
                   sc.params["multiplier"], sc.params["shift"], model.qtype(sc.output),
                   sm.arrays["exp_table"], sm.params["exp_bits"], sm.params["recip_bits"],
                   model.qtype(attn_name), op.params["multiplier"], op.params["shift"],
                   model.qtype(op.output), tokens=L, d_model=d, heads=op.spec.dims["heads"],
                   **knobs)

    def reference(self, q, k, v):
        """intops reference of one or more windows (…, L, d) -> context (…, L, d)."""
        L, d, H = self.tokens, self.d_model, self.heads
        q, k, v = (intops.as_int(t).reshape(-1, L, d) for t in (q, k, v))
        acc = intops.matmul_acc(split_heads(q, H), self.q_type,
                                split_heads(k, H).transpose(-1, -2), self.k_type)
        s = intops.requantize(acc, self.score_multiplier, self.score_shift, self.score_type)
        p = self.softmax.reference(s).reshape(s.shape)
        acc = intops.matmul_acc(p, self.attn_type, split_heads(v, H), self.v_type)
        return merge_heads(intops.requantize(acc, self.ctx_multiplier, self.ctx_shift,
                                             self.context_type))

    # -- timing -------------------------------------------------------------------------------
    @property
    def window(self):
        return self.tokens * self.d_model

    def cycles(self, length: int | None = None) -> int:
        """Cycles for one window (always-valid sources, always-ready sink): the last edge of
        :meth:`output_times` with the three windows offered at edges 1 .. L*d.

        When nothing waits this is: load L*d elements (edge L*d); scores issued from edge
        L*d + 1, ``S = dh / qk_lanes`` edges per score, reaching the softmax
        ``SCORE_LATENCY`` edges after their last step; the softmax's stages; one probability
        every ``Sv = dh / pv_lanes`` edges; the last context element ``dh - 1 + out_latency``
        edges after the last probability's last step. Short rows make stages wait for one
        another (the divider, the softmax banks, the finished row's output registers, the
        credit queues); the edge by edge model takes all of that into account."""
        return super().cycles(length)

    def output_times(self, q, k, v) -> list:
        """Per-element output edges given the edges from which the q, k and v input elements
        are offered (ideal sink), for one window.

        The inputs of one window are never held back (a free slot takes a whole window), so
        the scores start the edge after the last of the three windows is complete. From there
        the control of :meth:`elaborate` is followed edge by edge (score issue and its credit
        queue, :class:`hw.softmax.SoftmaxTiming`, the probability consumer, the finished row
        handed to the output stage, its credit queue): exact whatever waits for what."""
        from .softmax import SoftmaxTiming
        L, d, H, dh = self.tokens, self.d_model, self.heads, self.dh
        S, Sv = dh // self.qk_lanes, dh // self.pv_lanes
        n_scores, n_out = L * H * L, L * d
        sq = QueueTiming(self.SCORE_QUEUE_DEPTH, self.SCORE_LATENCY - 1)
        sm = SoftmaxTiming(self.softmax)
        oq = QueueTiming(self.OUT_QUEUE_DEPTH, self.out_latency - 5)
        ss = scores = 0                   # score side: step, scores issued
        cs = cj = oc = 0                  # context side: step, probability in row, channel out
        out_busy = done_pending = False
        done = deque()                    # edges at which a finished row reaches the output stage
        out = []
        e = max(q[-1], k[-1], v[-1])      # the edge the last input element is stored
        while len(out) < n_out:
            e += 1
            # the cycle before edge e: conditions from registers
            go = scores < n_scores and sq.can_reserve()
            last_step = ss == S - 1
            sq_take = sq.valid() and sm.in_ready()
            take_p = sm.out_valid() and cs == 0 and (cj != L - 1 or not (out_busy or done_pending))
            issue = take_p or cs != 0
            ogo = out_busy and oq.can_reserve()
            take_o = oq.valid()
            # edge e
            if go:
                ss = 0 if last_step else ss + 1
                scores += int(last_step)
            sq.edge(e, go and last_step, sq_take)
            sm.edge(e, sq_take, take_p)
            if take_p and cj == L - 1:
                done_pending = True
            if issue:
                if cs == Sv - 1:
                    if cj == L - 1:       # the row's last step: done3 three edges later
                        done.append(e + 3)
                    cj = (cj + 1) % L
                cs = (cs + 1) % Sv
            if done and done[0] == e:
                done.popleft()
                out_busy, done_pending = True, False
            if ogo:
                oc = (oc + 1) % dh
                out_busy = out_busy and oc != 0
            oq.edge(e, ogo, take_o)
            if take_o:
                out.append(e)
        return out

    # -- hardware -----------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        L, d, H, dh = self.tokens, self.d_model, self.heads, self.dh
        ql, pl = self.qk_lanes, self.pv_lanes
        SLOTS = 2
        m.submodules.softmax = sm = self.softmax

        # ---- window buffers, lane-split ----
        def lane_buffers(name, qtype, lanes):
            bufs = []
            for l in range(lanes):
                b = Buffer(qshape(qtype), SLOTS * L * d // lanes, self.buffer_storage)
                m.submodules[f"{name}{l}"] = b
                bufs.append(b)
            return bufs

        qb, kb = lane_buffers("qbuf", self.q_type, ql), lane_buffers("kbuf", self.k_type, ql)
        vb = lane_buffers("vbuf", self.v_type, pl)
        loaded = {x: Array(Signal(name=f"{x}_loaded{s}") for s in range(SLOTS)) for x in "qkv"}
        release = Signal()            # the context side issued its last V read of a window
        rel_slot = Signal(range(SLOTS))

        for x, bufs, lanes in (("q", qb, ql), ("k", kb, ql), ("v", vb, pl)):
            port = getattr(self, x)
            slot = Signal(range(SLOTS), name=f"{x}_slot")
            lane = Signal(range(lanes), name=f"{x}_lane")
            word = Signal(range(L * d // lanes), name=f"{x}_word")
            take = port.valid & port.ready
            m.d.comb += port.ready.eq(~loaded[x][slot])
            for l, b in enumerate(bufs):
                m.d.comb += [b.w_addr.eq(slot * (L * d // lanes) + word), b.w_data.eq(port.payload),
                             b.w_en.eq(take & (lane == l))]
            with m.If(take):
                m.d.sync += lane.eq(_inc_mod(lane, lanes))
                with m.If(lane == lanes - 1):
                    with m.If(word == L * d // lanes - 1):
                        m.d.sync += [word.eq(0), loaded[x][slot].eq(1), slot.eq(_inc_mod(slot, SLOTS))]
                    with m.Else():
                        m.d.sync += word.eq(word + 1)
            with m.If(release):
                m.d.sync += loaded[x][rel_slot].eq(0)

        # ---- scores: loops i, h, j, step ----
        S = dh // ql
        m.submodules.sq = squeue = CreditQueue(qshape(self.score_type), self.SCORE_QUEUE_DEPTH,
                                              latency=1)
        wiring.connect(m, squeue.o, sm.i)
        s_slot = Signal(range(SLOTS))
        si, sh, sj, ss = Signal(range(L)), Signal(range(H)), Signal(range(L)), Signal(range(S))
        ready_slot = loaded["q"][s_slot] & loaded["k"][s_slot] & loaded["v"][s_slot]
        s_done = Array(Signal(name=f"scored{s}") for s in range(SLOTS))   # slot fully scored
        go = ready_slot & ~s_done[s_slot] & squeue.can_reserve
        last_step = ss == S - 1
        m.d.comb += squeue.reserve.eq(go & last_step)
        words = d // ql
        for b in qb:
            m.d.comb += b.r_addr.eq(s_slot * (L * words) + si * words + sh * S + ss)
        for b in kb:
            m.d.comb += b.r_addr.eq(s_slot * (L * words) + sj * words + sh * S + ss)
        with m.If(go):
            m.d.sync += ss.eq(_inc_mod(ss, S))
            with m.If(last_step):
                m.d.sync += sj.eq(_inc_mod(sj, L))
                with m.If(sj == L - 1):
                    m.d.sync += sh.eq(_inc_mod(sh, H))
                    with m.If(sh == H - 1):
                        m.d.sync += si.eq(_inc_mod(si, L))
                        with m.If(si == L - 1):
                            m.d.sync += [s_done[s_slot].eq(1), s_slot.eq(_inc_mod(s_slot, SLOTS))]
        with m.If(release):
            m.d.sync += s_done[rel_slot].eq(0)
        # read | products | adder tree | accumulate | multiply | round+saturate -> queue
        g1, f1, l1 = Signal(), Signal(), Signal()
        m.d.sync += [g1.eq(go), f1.eq(ss == 0), l1.eq(last_step)]
        qk_bits = signed_bits(intops.product_bound(self.q_type, self.k_type))
        prods = [Signal(signed(qk_bits), name=f"qk{l}") for l in range(ql)]
        g2, f2, l2 = Signal(), Signal(), Signal()
        m.d.sync += [g2.eq(g1), f2.eq(f1), l2.eq(l1)]
        m.d.sync += [p.eq(mul(qb[l].r_data - self.q_type.zero_point,
                              kb[l].r_data - self.k_type.zero_point, self.qk_mul))
                     for l, p in enumerate(prods)]
        tree = Signal(self.score_acc_shape)
        g3, f3, l3 = Signal(), Signal(), Signal()
        m.d.sync += [g3.eq(g2), f3.eq(f2), l3.eq(l2), tree.eq(sum(prods))]
        acc = Signal(self.score_acc_shape)
        g4 = Signal()
        m.d.sync += g4.eq(g3 & l3)
        with m.If(g3):
            m.d.sync += acc.eq(Mux(f3, 0, acc) + tree)
        g5 = Signal()
        m.d.sync += g5.eq(g4)
        m.d.comb += [squeue.w_en.eq(g5),
                     squeue.w_data.eq(requantiser(m, acc, self.score_acc_bound,
                                                  self.score_multiplier, self.score_shift,
                                                  self.score_type, mul=self.requant_mul,
                                                  name="sprod"))]

        # ---- context: loops i, h, j (one probability each), step ----
        Sv = dh // pl
        c_slot = Signal(range(SLOTS))
        ci, ch, cj, cs = Signal(range(L)), Signal(range(H)), Signal(range(L)), Signal(range(Sv))
        p_hold = Signal(qshape(self.attn_type))
        out_busy = Signal()
        done_pending = Signal()           # a finished row is on its way to the output registers
        # Accept a probability at step 0; the last of a row only if the output registers are free.
        m.d.comb += sm.o.ready.eq((cs == 0) & ((cj != L - 1) | ~(out_busy | done_pending)))
        take_p = sm.o.valid & sm.o.ready
        issue = take_p | (cs != 0)
        p_now = Mux(cs == 0, sm.o.payload, p_hold)
        vwords = d // pl
        for b in vb:
            m.d.comb += b.r_addr.eq(c_slot * (L * vwords) + cj * vwords + ch * Sv + cs)
        last_of_window = (ci == L - 1) & (ch == H - 1) & (cj == L - 1) & (cs == Sv - 1)
        m.d.comb += [release.eq(issue & last_of_window), rel_slot.eq(c_slot)]
        with m.If(take_p):
            m.d.sync += p_hold.eq(sm.o.payload)
        with m.If(issue):
            m.d.sync += cs.eq(_inc_mod(cs, Sv))
            with m.If(cs == Sv - 1):
                m.d.sync += cj.eq(_inc_mod(cj, L))
                with m.If(cj == L - 1):
                    m.d.sync += ch.eq(_inc_mod(ch, H))
                    with m.If(ch == H - 1):
                        m.d.sync += ci.eq(_inc_mod(ci, L))
                        with m.If(ci == L - 1):
                            m.d.sync += c_slot.eq(_inc_mod(c_slot, SLOTS))
        with m.If(take_p & (cj == L - 1)):
            m.d.sync += done_pending.eq(1)
        h1, p1, st1, fj1, lr1 = Signal(), Signal(qshape(self.attn_type)), Signal(range(Sv)), Signal(), Signal()
        m.d.sync += [h1.eq(issue), p1.eq(p_now), st1.eq(cs), fj1.eq(cj == 0),
                     lr1.eq((cj == L - 1) & (cs == Sv - 1))]
        if self.acc_storage is not Storage.REGISTERS:
            lj1, lj2 = Signal(), Signal()          # a step of the row's last probability
            m.d.sync += [lj1.eq(cj == L - 1), lj2.eq(lj1)]
        at, vt = self.attn_type, self.v_type
        pv_bits = signed_bits(intops.product_bound(at, vt))
        h2, st2, fj2, lr2 = Signal(), Signal(range(Sv)), Signal(), Signal()
        m.d.sync += [h2.eq(h1), st2.eq(st1), fj2.eq(fj1), lr2.eq(lr1)]
        pdiff = p1 - at.zero_point
        vdiff = [vb[l].r_data - vt.zero_point for l in range(pl)]
        g_pack, k_pack = (packing(intops.offset_bits(at), intops.offset_bits(vt),
                                  intops.product_bound(at, vt))
                          if self.pv_mul == "dsp_packed" else (1, 0))
        pv = [None] * pl
        for s0 in range(0, pl, g_pack):
            grp = list(range(s0, min(s0 + g_pack, pl)))
            if len(grp) == 1:
                pr = Signal(signed(pv_bits), name=f"pv{s0}")
                m.d.sync += pr.eq(mul(pdiff, vdiff[s0], "lut" if self.pv_mul == "lut" else "dsp"))
                pv[s0] = pr
                continue
            # The packed V operand sum(v_l << (g-1-i)*k) is built from the lane values: shifts
            # of sign-extended fields (an adder chain on the V side, off the DSP).
            packed = sum((vdiff[l] << ((len(grp) - 1 - i) * k_pack)) for i, l in enumerate(grp))
            pa = Signal(signed(signed_bits(intops.packed_product_bound(at, vt, len(grp), k_pack))),
                        name=f"pvp{s0}")
            m.d.sync += pa.eq(pdiff * packed)
            for l, v in zip(grp, unpack_products(pa, len(grp), k_pack)):
                pr = Signal(signed(pv_bits), name=f"pv{l}")
                m.d.comb += pr.eq(v)
                pv[l] = pr
        if self.acc_storage is Storage.REGISTERS:
            accs = [Array(Signal(self.ctx_acc_shape, name=f"cacc{s * pl + l}") for s in range(Sv))
                    for l in range(pl)]
            done3 = Signal()
            m.d.sync += done3.eq(h2 & lr2)
            with m.If(h2):
                for l in range(pl):
                    m.d.sync += accs[l][st2].eq(Mux(fj2, 0, accs[l][st2]) + pv[l])
            # Output registers, requantised one channel per cycle into a credit queue.
            outs = Array(Signal(self.ctx_acc_shape, name=f"cout{c}") for c in range(dh))
            with m.If(done3):
                m.d.sync += [outs[s * pl + l].eq(accs[l][s]) for s in range(Sv) for l in range(pl)]
            oqueue, ogo, oc = self._output_stage(m, done3, out_busy, done_pending)
            self._requantise_into(m, oqueue, outs[oc], ogo)
            return m
        done3 = Signal()
        m.d.sync += done3.eq(h2 & lr2)
        oqueue, ogo, _ = self._output_stage(m, done3, out_busy, done_pending)
        og1 = Signal()
        m.d.sync += og1.eq(ogo)
        # Per lane: accumulators read at h1 (data at h2) and written at h2 (Sv >= 2 steps
        # apart, so a read never meets the write of its own address); the last
        # probability's results also go to the finished-row memory, which the output
        # stage reads one channel per cycle (channel c = word c // pl of lane c % pl).
        o_w, o_l = Signal(range(Sv)), Signal(range(pl))
        o_l1 = Signal(range(pl))
        odata = []
        for l in range(pl):
            ab = Buffer(self.ctx_acc_shape, Sv, self.acc_storage)
            ob = Buffer(self.ctx_acc_shape, Sv, self.acc_storage)
            m.submodules[f"cacc{l}"], m.submodules[f"cout{l}"] = ab, ob
            new = Mux(fj2, 0, ab.r_data) + pv[l]
            m.d.comb += [ab.r_addr.eq(st1), ab.w_addr.eq(st2), ab.w_data.eq(new),
                         ab.w_en.eq(h2),
                         ob.w_addr.eq(st2), ob.w_data.eq(new), ob.w_en.eq(h2 & lj2),
                         ob.r_addr.eq(o_w)]
            odata.append(ob.r_data)
        with m.If(ogo):
            m.d.sync += o_l.eq(_inc_mod(o_l, pl))
            with m.If(o_l == pl - 1):
                m.d.sync += o_w.eq(_inc_mod(o_w, Sv))
        m.d.sync += o_l1.eq(o_l)
        self._requantise_into(m, oqueue, Array(odata)[o_l1], og1)
        return m

    def _output_stage(self, m, done, out_busy, done_pending):
        """The context's credit queue and its channel counter: a finished row (``done``) is
        issued one channel per cycle while the queue has credit. Returns (queue, issue, channel)."""
        m.submodules.oq = oqueue = CreditQueue(qshape(self.context_type), self.OUT_QUEUE_DEPTH,
                                              latency=1)
        wiring.connect(m, wiring.flipped(self.o), oqueue.o)
        ogo = out_busy & oqueue.can_reserve
        m.d.comb += oqueue.reserve.eq(ogo)
        oc = Signal(range(self.dh))
        with m.If(done):
            m.d.sync += [out_busy.eq(1), done_pending.eq(0)]
        with m.If(ogo):
            m.d.sync += oc.eq(_inc_mod(oc, self.dh))
            with m.If(oc == self.dh - 1):
                m.d.sync += out_busy.eq(0)
        return oqueue, ogo, oc

    def _requantise_into(self, m, oqueue, acc, valid):
        """Requantise the context accumulator ``acc`` (present while ``valid``) into ``oqueue``
        a cycle later, through the registered product."""
        ovalid = Signal()
        m.d.sync += ovalid.eq(valid)
        m.d.comb += [oqueue.w_en.eq(ovalid),
                     oqueue.w_data.eq(requantiser(m, acc, self.ctx_acc_bound, self.ctx_multiplier,
                                                  self.ctx_shift, self.context_type,
                                                  mul=self.requant_mul, name="oprod"))]


class Attention(Block):
    """One attention of the graph, named by its ``context`` operator (or, for short, its
    encoder layer's index): input ``i`` = the tensor its Q, K and V linears read (tokens x
    d_model), output ``o`` = the output linear that reads the context. A Fork feeds the Q, K
    and V projections (:class:`hw.linear.Linear`), whose outputs stream concurrently into the
    :class:`AttentionCore` (it buffers whole windows, so none of the three waits for another),
    and the context goes through the output projection. The accelerator builds one for each
    region :meth:`region` finds around a context operator (the registry's ``hw_region``).

    Knobs: ``qkv_knobs`` (dict for the three projections: pe, simd, storages), ``out_knobs``
    (output projection), ``qkv_fused`` (one Linear computes the 3·d outputs of Q, K and V per
    token, its output stream split to the core by a :class:`hw.plumbing.Demux`: one block's
    fixed cost instead of three, three times the cycles per token at the same pe·simd),
    every other keyword goes to :class:`AttentionCore`.
    """

    @dataclass(frozen=True)
    class Region:
        """The operators one Attention computes: ``ops`` (outputs, graph order), the streamed
        tensor it reads, the tensor it writes, and ``name``, its knob name (``l0.attention``)."""
        ops: tuple
        input: str
        output: str
        name: str
        q: str
        k: str
        v: str
        context: str

    @classmethod
    def region(cls, model, context: str) -> "Attention.Region":
        """The attention around ``context``: its softmax and scores, the linears that make the
        scores' and the context's operands (all reading one tensor) and the one linear that
        reads the context. Raises ValueError for any other shape."""
        op = model.op(context)
        if op.kind != "context":
            raise ValueError(f"{context!r} is a {op.kind} operator, not a context")
        attn, v = op.spec.inputs
        sm = model.op(attn)
        sc = model.op(sm.spec.inputs[0])
        if sm.kind != "softmax" or sc.kind != "scores":
            raise ValueError(f"{context!r} does not read a softmax of scores")
        q, k = sc.spec.inputs
        projections = [model.op(n) for n in (q, k, v)]
        x = projections[0].spec.inputs[0]
        if any(p.kind != "linear" or p.spec.inputs != (x,) for p in projections):
            raise ValueError(f"the attention of {context!r} needs Q, K and V linears of one input")
        readers = model.consumers(context)
        if len(readers) != 1 or readers[0].kind != "linear":
            raise ValueError(f"the attention of {context!r} needs one output linear reading it")
        inner = {q: [sc], k: [sc], v: [op], sc.output: [sm], attn: [op]}
        for t, want in inner.items():
            if model.consumers(t) != want:
                raise ValueError(f"{t!r} is read outside the attention of {context!r}")
        out = readers[0].output
        ops = tuple(o.output for o in model.ops if o.output in {q, k, v, sc.output, attn, context, out})
        prefix = context[:-len("context")] if context.endswith("context") else context + "."
        return cls.Region(ops, x, out, prefix + "attention", q, k, v, context)

    @classmethod
    def from_region(cls, model, region: "Attention.Region", knobs):
        """Built by the accelerator: ``knobs(kind, name)`` is its configuration's lookup (the
        projections take the ``linear`` knobs of Q and of the output linear, the rest the
        ``attention`` knobs of the region's name)."""
        block = cls(model, region.context, qkv_knobs=knobs("linear", region.q),
                    out_knobs=knobs("linear", region.output), **knobs("attention", region.name))
        return block.computing(model, [model.op(o) for o in region.ops])

    def __init__(self, model, context: str | int, *, qkv_knobs: dict | None = None,
                 out_knobs: dict | None = None, qkv_fused: bool = False, **core_knobs):
        from .linear import Linear
        from .plumbing import Demux, Fork
        self.qkv_fused = bool(qkv_fused)
        try:
            r = self.region(model, f"l{context}.context" if isinstance(context, int) else context)
            self.x_name = r.input
            if self.qkv_fused:
                self.proj = [Linear.fused_from_ops(model, [r.q, r.k, r.v], **(qkv_knobs or {}))]
            else:
                self.proj = [Linear.from_op(model, n, **(qkv_knobs or {})) for n in (r.q, r.k, r.v)]
            self.core = AttentionCore.from_op(model, r.context, **core_knobs)
            self.out_proj = Linear.from_op(model, r.output, **(out_knobs or {}))
        except (ValueError, KeyError):
            discard(self)                      # a rejected block is not an unused one
            raise
        if self.qkv_fused:
            self.fork = None
            # The fused stream holds each of q, k and v (union shape); each output narrows to
            # its own operator's shape, which holds every value its segment carries.
            self.demux = Demux(self.proj[0].out_shape, 3, self.proj[0].n_out // 3,
                               [qshape(model.qtype(n)) for n in (r.q, r.k, r.v)])
        else:
            self.fork = Fork(qshape(model.qtype(self.x_name)), 3)
        self.attention_region = r
        super().__init__({"i": In(element_stream(model.qtype(self.x_name))),
                          "o": Out(element_stream(model.qtype(r.output)))})

    @property
    def parts(self):
        proj = ("proj_qkv",) if self.qkv_fused else ("proj_q", "proj_k", "proj_v")
        return (*proj, "core", "out_proj")

    def part_times(self, arrive) -> list:
        """``(part, input edges, output edges)`` of the projections, the core and the output
        projection, in stream order, given the edges at which the input elements are offered
        (ideal sink): each part's own schedule (``output_times``), composed as
        :meth:`elaborate` connects them. Parts: ``proj_q``, ``proj_k``, ``proj_v`` (or
        ``proj_qkv``), ``core``, ``out_proj``."""
        rows = []
        if self.qkv_fused:                  # fused qkv -> demux -> core
            t_qkv = self.proj[0].output_times(arrive)
            rows.append(("proj_qkv", list(arrive), t_qkv))
            qkv = self.demux.split_times(t_qkv)
        else:                               # fork(3) -> q, k, v -> core
            t_in = self.fork.output_times(arrive)
            qkv = []
            for n, lin in zip("qkv", self.proj):
                qkv.append(lin.output_times(t_in))
                rows.append((f"proj_{n}", t_in, qkv[-1]))
        ctx = self.core.output_times(*qkv)
        rows.append(("core", qkv[0], ctx))
        rows.append(("out_proj", ctx, self.out_proj.output_times(ctx)))
        return rows

    def part_ports(self) -> list:
        return ([(name, lin.i, lin.o) for name, lin in zip(self.parts, self.proj)]
                + [("core", self.core.q, self.core.o), ("out_proj", self.out_proj.i, self.out_proj.o)])

    def output_times(self, arrive) -> list:
        """Per-element output edges given the edges of the input elements (ideal sink)."""
        return self.part_times(arrive)[-1][2]

    @property
    def window(self):
        """One window: tokens x d_model elements."""
        return self.core.window

    def construction_key(self):
        """What :meth:`elaborate` reads: the sub-blocks (each known by its own construction)
        and the port shapes, not the whole model the constructor takes (a change of another
        layer's parameters leaves this block the same)."""
        return ("qkv_fused", self.qkv_fused, self.proj, self.core, self.out_proj, self.fork,
                getattr(self, "demux", None), self.i.payload.shape(), self.o.payload.shape())

    def elaborate(self, platform):
        m = Module()
        if self.qkv_fused:
            m.submodules.core = core = self.core
            m.submodules.out_proj = out_proj = self.out_proj
            m.submodules.proj_qkv = lin = self.proj[0]
            m.submodules.demux = demux = self.demux
            wiring.connect(m, wiring.flipped(self.i), lin.i)
            wiring.connect(m, lin.o, demux.i)
            for n, do in zip("qkv", demux.o):
                wiring.connect(m, do, getattr(core, n))
        else:
            m.submodules.fork = fork = self.fork
            m.submodules.core = core = self.core
            m.submodules.out_proj = out_proj = self.out_proj
            wiring.connect(m, wiring.flipped(self.i), fork.i)
            for n, (lin, fo) in enumerate(zip(self.proj, fork.o)):
                m.submodules[f"proj_{'qkv'[n]}"] = lin
                wiring.connect(m, fo, lin.i)
                wiring.connect(m, lin.o, getattr(core, "qkv"[n]))
        wiring.connect(m, core.o, out_proj.i)
        wiring.connect(m, out_proj.o, wiring.flipped(self.o))
        return m
