"""The whole accelerator, generated from an integer model and a hardware configuration.

Dataflow: one block per operator of :func:`model.intmodel.graph_spec` (the class its kind's
registry entry names, :mod:`model.ops`; attention's operators in one block), connected by element
streams. Residual branches fork the layer input into a FIFO that holds a whole window, so the
branch that computes (attention, FFN) can run at its own pace without deadlock::

    i -> proj -> +pe -> [ fork -> attention ----------+ -> res1 -> norm1 ->
                          fork -> fifo(L*d) ----------+
                          fork -> ffn1 (-> act) -> ffn2 --+ -> res2 -> norm2 ] x layers
                          fork -> fifo(L*d) --------------+
         -> mean pool -> head -> o

The input stream takes windows of L*F quantised samples back to back (no reset between them),
the output stream gives one quantised prediction per window.
"""
from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass, field

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model import ops as registry
from model.intmodel import IntModel
from .attention import Attention
from .common import Storage, element_stream, qshape
from .plumbing import Fifo, Fork


@dataclass
class HwConfig:
    """Hardware knobs, as a plain structure (``HwConfig.from_dict``).

    ``kinds`` gives defaults per block kind (``linear``, ``attention``, ``add``, ``affine``,
    ``layernorm``, ``lut``, ``mean_pool``); ``blocks`` overrides them per operator output name
    or fnmatch pattern (``"l0.ffn_*": {"pe": 4, "simd": 4}``). The keyword names are those of
    the block constructors (e.g. ``pe``, ``simd``, ``weight_storage``, ``buffer_storage``).
    ``fifo_storage`` is where the residual FIFOs live.
    """
    kinds: dict = field(default_factory=dict)
    blocks: dict = field(default_factory=dict)
    fifo_storage: str = "bram"
    clock_mhz: float = 100.0

    @classmethod
    def from_dict(cls, d: dict | None) -> "HwConfig":
        d = dict(d or {})
        unknown = set(d) - {"kinds", "blocks", "fifo_storage", "clock_mhz"}
        if unknown:
            raise ValueError(f"unknown hardware configuration keys {sorted(unknown)}; "
                             f"use kinds, blocks, fifo_storage, clock_mhz")
        Storage.parse(d.get("fifo_storage", "bram"))
        return cls(**d)

    def to_dict(self) -> dict:
        return {"kinds": self.kinds, "blocks": self.blocks, "fifo_storage": self.fifo_storage,
                "clock_mhz": self.clock_mhz}

    def knobs(self, kind: str, name: str, accepted=None) -> dict:
        """Knobs of operator ``name`` of block ``kind``: kind defaults, then pattern overrides,
        then the exact-name override. A pattern (``"*.ffn_*"``) may also match operators of
        another kind (the GELU table between the two FFN linears): with ``accepted`` (the
        block's parameter names) it only contributes the knobs that block takes."""
        out = dict(self.kinds.get(kind, {}))
        for pattern, kn in self.blocks.items():
            if pattern != name and fnmatch.fnmatchcase(name, pattern):
                out.update({k: v for k, v in kn.items() if accepted is None or k in accepted})
        out.update(self.blocks.get(name, {}))
        return out


def _parameters(cls) -> set:
    """Keyword parameters a block's constructor takes."""
    return set(inspect.signature(cls.__init__).parameters) - {"self"}


class Accelerator(wiring.Component):
    """Integer-model accelerator: ``i`` takes windows (L*F elements, token-major), ``o`` gives
    one prediction code per window."""

    def __init__(self, model: IntModel, hw: HwConfig | dict | None = None):
        self.model = model
        self.hw = hw if isinstance(hw, HwConfig) else HwConfig.from_dict(hw)
        self._built = []
        try:
            self.stages = self._plan()
        except Exception:
            # A rejected knob: the blocks built so far (and this object) will never be
            # elaborated; say so, so that Amaranth does not add "created but never used".
            for blk in self._built + [self]:
                blk._MustUse__used = True
            raise
        super().__init__({"i": In(element_stream(model.qtype("input"))),
                          "o": Out(element_stream(model.qtype("pred")))})

    def _block(self, kind: str, name: str):
        cls = registry.kind(kind).block_class()
        m, kn = self.model, self.hw.knobs(kind, name, _parameters(cls))
        return self._keep(cls.from_op(m, name, **kn))

    def _keep(self, block):
        self._built.append(block)
        return block

    def _plan(self):
        """Blocks in stream order; residual branches as ("residual", fork, body, fifo, add)."""
        m, c = self.model, self.model.config
        # A residual FIFO holds a whole window, and at least 3 elements: below that it cannot
        # take one element per cycle, back-pressures the fork and so the body, which the
        # composed schedule (stage_times) does not model (window 2, d_model 1 has 2 elements).
        window = max(c["window"] * c["d_model"], 3)
        stages = [("proj", self._block("linear", "proj")), ("embed", self._block("add", "embed"))]
        x = "embed"
        for i in range(c["layers"]):
            p = f"l{i}."
            # The Q, K and V projections share one setting (same shape, run side by side).
            attn = self._keep(Attention(m, i, qkv_knobs=self.hw.knobs("linear", p + "q"),
                                        out_knobs=self.hw.knobs("linear", p + "attn_out"),
                                        **self.hw.knobs("attention", p + "attention")))
            stages.append(("residual", self._residual(x, [attn], p + "res1", window)))
            stages.append((p + "norm1", self._block(m.op(p + "norm1").kind, p + "norm1")))
            # The FFN's operators in graph order, whatever the activation makes of them.
            ffn = [self._block(n.kind, n.output) for n in m.ops
                   if n.output in (p + "ffn_pre", p + "ffn_hidden", p + "ffn_out")]
            stages.append(("residual", self._residual(p + "norm1", ffn, p + "res2", window)))
            stages.append((p + "norm2", self._block(m.op(p + "norm2").kind, p + "norm2")))
            x = p + "norm2"
        stages.append(("pooled", self._block("mean_pool", "pooled")))
        stages.append(("pred", self._block("linear", "pred")))
        return stages

    def _residual(self, x: str, body: list, add_name: str, depth: int):
        shape = qshape(self.model.qtype(x))
        return {"fork": self._keep(Fork(shape, 2)), "body": body,
                "fifo": self._keep(Fifo(shape, depth, self.hw.fifo_storage)),
                "add": self._block("add", add_name), "name": add_name}

    # -- timing -------------------------------------------------------------------------------
    def stage_times(self, arrive=None) -> list:
        """Per-element transfer edges along the dataflow, from the blocks' own schedules.

        ``arrive``: edges at which the input elements are offered (default: an always-valid
        source, edges 1 .. L*F). Each block maps the edges at which its input elements arrive
        to the edges at which its outputs leave (``output_times``, ideal sink); a residual
        fork feeds its body and its FIFO, and the Add takes the pair when both are there.
        Returns ``(label, input edges, output edges)`` per block, in stream order (the labels
        of :func:`sim.profile.accelerator_ports`)."""
        c = self.model.config
        t = list(range(1, c["window"] * c["features"] + 1)) if arrive is None else list(arrive)
        rows = []

        def step(label, blk, t_in):
            t_out = blk.output_times(t_in)
            rows.append((label, t_in, t_out))
            return t_out

        for name, stage in self.stages:
            if name != "residual":
                t = step(name, stage, t)
                continue
            r = stage
            forked = r["fork"].output_times(t)
            body = forked
            for k, blk in enumerate(r["body"]):
                if hasattr(blk, "core"):            # Attention: its parts, one row each
                    for part, t_in, t_out in blk.part_times(body):
                        rows.append((f"{r['name']}/{part}", t_in, t_out))
                    body = rows[-1][2]
                else:
                    body = step(f"{r['name']}/body{k}", blk, body)
            skip = r["fifo"].output_times(forked)
            t = step(r["name"], r["add"], [max(a, b) for a, b in zip(skip, body)])
        return rows

    def cycles(self) -> int:
        """Exact cycles for one window (always-valid source of L*F elements, always-ready sink):
        the clock edges up to and including the one that transfers the prediction, as
        :func:`sim.streams.run_stream_block` counts them. The edge of the last output of
        :meth:`stage_times`."""
        return self.stage_times()[-1][2][-1]

    def elaborate(self, platform):
        m = Module()
        src = wiring.flipped(self.i)
        for name, stage in self.stages:
            if name == "residual":
                r = stage
                base = r["name"].replace(".", "_")
                m.submodules[base + "_fork"] = r["fork"]
                m.submodules[base + "_fifo"] = r["fifo"]
                m.submodules[base] = r["add"]
                wiring.connect(m, src, r["fork"].i)
                body_src = r["fork"].o[0]
                for k, blk in enumerate(r["body"]):
                    m.submodules[f"{base}_body{k}"] = blk
                    wiring.connect(m, body_src, blk.i)
                    body_src = blk.o
                wiring.connect(m, r["fork"].o[1], r["fifo"].i)
                wiring.connect(m, r["fifo"].o, r["add"].a)
                wiring.connect(m, body_src, r["add"].b)
                src = r["add"].o
            else:
                m.submodules[name.replace(".", "_")] = stage
                # A constant-operand Add (the positional encoding) streams in through ``a``.
                wiring.connect(m, src, stage.i if hasattr(stage, "i") else stage.a)
                src = stage.o
        wiring.connect(m, src, wiring.flipped(self.o))
        return m
