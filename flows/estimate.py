"""Resource estimation before synthesis: what a configuration costs on the XC7S15 or the UP5K.

``estimate(model, hw, device)`` returns an :class:`Estimate` (per block and in total) in well
under a second, without Yosys.

How it works
------------
1. **Structure.** The accelerator is elaborated (Amaranth only, no netlist) and every block's
   statements are walked once (:func:`block_features`). The walk counts what synthesis will
   build, in bits, with the widths synthesis keeps (only the low bits an expression's user
   reads): flip-flops, adders (variable or constant operand), magnitude and equality
   comparators, bitwise logic, multiplexers (value selects and the priority muxes of
   multiply-assigned signals), variable shifts, multipliers, and every memory with its shape,
   its storage and, for ROMs, its contents.
2. **Memories and multipliers are counted exactly** by the device's mapping rules, the same
   choices Yosys' ``memory_libmap`` and DSP mapping make: block RAM tiles (RAMB18E1/RAMB36E1,
   SB_RAM40_4K), LUT RAM cells (RAM32M/RAM64M), LUT ROM columns (one LUT6 per output bit per
   64 words, minus the constant columns; on the XC7S15 minus only the constant bits), DSP
   tiles (DSP48E1 25x18, SB_MAC16 16x16). On the XC7S15 a register loaded with a DSP product
   plus something goes into the DSP48E1's post-adder and P register (Yosys' ``xilinx_dsp``):
   that adder and register leave the logic.
3. **Logic is a calibrated sum.** LUT and FF counts are a linear function of the bit counts,
   one coefficient per feature and device, times one factor per component kind (the class of
   the module: ``Linear``, ``Fifo``, ...), fitted (non-negative, least absolute relative
   error) against Yosys synthesis of the calibration designs in ``flows/calibration.py``; the
   coefficients live in ``flows/data/estimator_<device>.json``. ``python -m flows.calibration
   fit`` refits them, ``python -m flows.calibration bench`` prints estimate against synthesis
   per design.
4. **Blocks seen before are not elaborated again.** A search estimates designs that differ in
   a knob or a layer: :func:`estimate` keeps each top-level block's counts, keyed by a digest
   of its class and constructor arguments (:func:`fingerprint`), and elaborates only the
   blocks it has not met (:func:`cached_block_features`, same counts as the whole walk;
   ``cache=False`` walks everything, :func:`clear_cache` forgets).
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from amaranth.hdl import Fragment, Module, Shape

from hw.amaranth_adapter import (ArrayProxy, Assign, Concat, Const, MemoryInstance, Operator,
                                 Part, Signal, Slice, Switch, SwitchValue, Value,
                                 comb_only_named_submodules, discard, lhs_signals, memory_attrs,
                                 memory_data, memory_ports)

from hw.common import Recorded
from model.intmodel import IntModel

DEVICES = ("xc7s15", "ice40up5k")
CAPACITY = {
    "xc7s15": {"LUT": 8000, "FF": 16000, "BRAM36": 10, "DSP": 20},
    "ice40up5k": {"LC": 5280, "BRAM": 30, "DSP": 8},
}
DATA_DIR = Path(__file__).parent / "data"

#: Features of the logic walk, in bits (see module doc).
#: Registers come from few features: fitting them on all would chase noise.
FF_FEATURES = ("ff", "rom", "bram", "lutmul", "wmux", "blocks")
#: ``rom``: the LUTs of the ROMs in logic up to 64 words (weights, biases); ``table``: of the
#: deeper ones (XC7S15: softmax exponentials, activation and norm tables), apart because their
#: cost in a flattened design follows their content and the logic that addresses them (a
#: trained model's 8-bit softmax table is 150 to 256 words where every synthetic "converter"
#: model of a width has the same one), not the weights' share.
LOGIC_FEATURES = ("ff", "add", "addc", "cmp", "eq", "logic", "mux", "wmux", "amux", "shift", "rom",
                  "ram", "lutmul", "booth", "cmul", "bram", "blocks", "table")


@dataclass
class Estimate:
    device: str
    used: dict                           # resource -> estimated count (total)
    per_block: dict                      # block name -> {resource: count}
    detail: dict = field(default_factory=dict)   # extra totals (LUTRAM LUTs, carry cells, ...)

    @property
    def capacity(self) -> dict:
        return CAPACITY[self.device]

    @property
    def fits(self) -> bool:
        return not self.over()

    def over(self) -> list:
        return [f"{k}: {self.used[k]:g} estimated > {cap:g} available "
                f"(over by {self.used[k] - cap:g})"
                for k, cap in self.capacity.items() if self.used[k] > cap]

    def utilisation(self) -> dict:
        return {k: self.used[k] / cap for k, cap in self.capacity.items()}

    def to_dict(self) -> dict:
        return {"device": self.device, "used": self.used, "capacity": self.capacity,
                "fits": self.fits, "detail": self.detail, "per_block": self.per_block}

    def summary(self) -> str:
        parts = [f"{k} {self.used[k]:g}/{cap:g}" for k, cap in self.capacity.items()]
        return f"{self.device} estimate: " + ", ".join(parts) + ("" if self.fits else " (does not fit)")


# ---------------------------------------------------------------------------------------------
# The structural walk
# ---------------------------------------------------------------------------------------------

class _Counts:
    """Bit counts of one block (see LOGIC_FEATURES), its multipliers and its memories."""

    def __init__(self):
        self.bits = defaultdict(float)
        # [width a, width b, signed a, signed b, product width, constant, output register
        #  bits, (feature, bits) of the post-adder or None]
        self.muls = []
        self.mems = []                   # dicts: depth, width, rom(init)|None, style, async_read
        self.kind = ""                   # the class of the component (module walks only)

    def merge(self, other: "_Counts") -> None:
        for k, v in other.bits.items():
            self.bits[k] += v
        self.muls += other.muls
        self.mems += other.mems

    def as_dict(self):
        return {"bits": dict(self.bits), "muls": self.muls, "mems": self.mems, "kind": self.kind}


def _is_const(v) -> bool:
    return isinstance(v, Const)


def _unify(shapes) -> tuple:
    """``Shape._unify`` on (width, signed) pairs."""
    unsigned_width = signed_width = 0
    has_signed = False
    for w, signed in shapes:
        if signed:
            has_signed = True
            signed_width = max(signed_width, w)
        else:
            unsigned_width = max(unsigned_width, w)
    if not has_signed:
        return unsigned_width, False
    return max(signed_width, unsigned_width + 1), True


def _operator_shape(o: str, shapes: list):
    """(width, signed) of Amaranth operator ``o`` on operands of ``shapes`` (the rules of
    ``Operator.shape``), None for an operator not listed here."""
    if len(shapes) == 1:
        (w, s), = shapes
        if o in ("+", "~"):
            return w, s
        if o == "-":
            return w + 1, True
        if o in ("b", "r|", "r&", "r^"):
            return 1, False
        if o == "u":
            return w, False
        if o == "s":
            return w, True
    elif len(shapes) == 2:
        (wa, sa), (wb, sb) = shapes
        if o == "+":
            w, s = _unify(shapes)
            return w + 1, s
        if o == "-":
            return _unify(shapes)[0] + 1, True
        if o == "*":
            return wa + wb, sa or sb
        if o in ("<", "<=", "==", "!=", ">", ">="):
            return 1, False
        if o in ("&", "|", "^"):
            return _unify(shapes)
        if o == "<<" and not sb:
            return wa + 2 ** wb - 1, sa
        if o == ">>" and not sb:
            return wa, sa
    return None


class _Walker:
    """Counts one fragment's logic into a :class:`_Counts` (expressions shared by several
    statements are counted once)."""

    def __init__(self, counts: _Counts):
        self.c = counts
        self.seen = {}
        self.mul_of = {}                 # id(product expression) -> index in counts.muls
        self.mreg = {}                   # id(register loaded from a product) -> its index
        self.sums = []                   # registered sums: (operand ids, feature, bits)
        self.registered = set()          # ids of the signals loaded whole into a register
        self.loading = None              # right-hand side of the register being walked
        self.shapes = {}                 # id(value) -> (value, (width, signed))

    def shape(self, v) -> tuple:
        """(width, signed) of ``v``, as ``v.shape()``, once per value: Amaranth computes an
        expression's shape from its operands' every time it is asked."""
        hit = self.shapes.get(id(v))
        if hit is not None:
            return hit[1]
        t = type(v)
        s = None
        if t is Operator:
            s = _operator_shape(v.operator, [self.shape(x) for x in v.operands])
        elif t is Concat:
            s = (sum(self.shape(x)[0] for x in v.parts), False)
        elif t is SwitchValue:
            s = _unify(self.shape(x) for _, x in v.cases)
        if s is None:
            sh = v.shape()
            s = (sh.width, sh.signed)
        self.shapes[id(v)] = (v, s)          # keeps v alive: its id is not reused
        return s

    def width(self, v) -> int:
        return self.shape(v)[0]

    def value(self, v, need: int | None = None):
        """Walk value ``v`` of which the user reads the ``need`` low bits."""
        if isinstance(v, (Const, Signal)):
            return
        if isinstance(v, ArrayProxy):
            v = Value.cast(v)
        width = self.width(v)
        need = width if need is None else max(0, min(need, width))
        if need == 0:
            return
        key = id(v)
        if self.seen.get(key, -1) >= need:
            return
        self.seen[key] = need
        b = self.c.bits
        hint = getattr(v, "resource_hint", None)
        if hint is not None and hint[0] == "lut_mul":      # hw.common.mul(..., "lut")
            _, x, y = hint
            # hw.common.mul's Booth: ceil(w/2) partial products of the narrower operand, each a
            # select as wide as the other operand + 1, summed by an adder tree of the ``need``
            # bits read; the cost grows with both widths (a flat count per product bit made
            # 4-bit products too dear and 12-bit ones too cheap, hw/PERFORMANCE.md)
            wn, ww = sorted((self.width(x), self.width(y)))
            pps = (wn + 1) // 2
            b["booth"] += pps * min(ww + 1, need) + (pps - 1) * need
            self.value(x, need)
            self.value(y, need)
            return
        if hint is not None and hint[0] == "const_mul":    # hw.common.mul_const(..., "lut")
            _, x, digits = hint
            b["cmul"] += need * max(0, digits - 1)
            self.value(x, need)
            return
        if isinstance(v, Operator):
            ops, o = v.operands, v.operator
            if len(ops) == 1:
                a = ops[0]
                if o in ("u", "s", "+"):
                    self.value(a, need)
                elif o == "~":
                    b["logic"] += need
                    self.value(a, need)
                elif o == "-":
                    b["addc"] += need
                    self.value(a, need)
                else:                               # reductions and bool
                    b["logic"] += self.width(a)
                    self.value(a)
            elif o in ("+", "-"):
                b["addc" if any(_is_const(x) for x in ops) else "add"] += need
                for x in ops:
                    self.value(x, need)
            elif o == "*":
                # Synthesis trims the operands to the bits that carry information and the
                # product to the ``need`` bits read; a constant that is a power of two is a shift.
                consts = [x for x in ops if _is_const(x)]
                if consts and _power_of_two(consts[0].value):
                    other = ops[0] if consts[0] is ops[1] else ops[1]
                    self.value(other, need)
                else:
                    # a constant's trailing zero bits become a shift of the product (Yosys'
                    # wreduce), so x * 24 is (x * 3) << 3: a product 3 bits narrower
                    cval = consts[0].value if consts else None
                    tz = (cval & -cval).bit_length() - 1 if cval else 0
                    if tz:
                        cval >>= tz
                    (wa, sa), (wb, sb) = (_operand_width(Const(cval) if _is_const(x) else x,
                                                         self.shape)
                                          for x in ops)
                    self.mul_of[id(v)] = len(self.c.muls)
                    self.c.muls.append([wa, wb, sa, sb, max(1, min(need - tz, wa + wb)), cval, 0,
                                        None])
                    for x in ops:
                        self.value(x, need)
            elif o in ("<", "<=", ">", ">="):
                b["cmp" if not any(_is_const(x) for x in ops) else "addc"] += max(self.width(x)
                                                                                  for x in ops)
                for x in ops:
                    self.value(x)
            elif o in ("==", "!="):
                b["eq"] += max(self.width(x) for x in ops)
                for x in ops:
                    self.value(x)
            elif o in ("&", "|", "^"):
                if not all(_is_const(x) for x in ops):
                    b["logic"] += need
                for x in ops:
                    self.value(x, need)
            elif o in ("<<", ">>") and _is_const(ops[1]):     # wiring
                k = ops[1].value
                self.value(ops[0], need - k if o == "<<" else need + k)
            elif o in ("<<", ">>"):
                b["shift"] += need * max(1, self.width(ops[1]))
                self.value(ops[0])
                self.value(ops[1])
            else:
                for x in ops:
                    self.value(x)
        elif isinstance(v, Slice):
            self.value(v.value, v.start + min(need, v.stop - v.start))
        elif isinstance(v, Part):
            choices = max(1, min(2 ** self.width(v.offset),
                                 math.ceil(self.width(v.value) / v.stride)))
            b["mux" if choices <= 2 else "wmux"] += need * (choices - 1)
            self.value(v.value)
            self.value(v.offset)
        elif isinstance(v, Concat):
            left = need
            for part in v.parts:
                if left <= 0:
                    break
                self.value(part, left)
                left -= self.width(part)
        elif isinstance(v, SwitchValue):
            values = [x for _, x in v.cases]
            if len({id(x) for x in values}) > 1 and not all(_is_const(x) for x in values):
                # two-way selects merge into the surrounding LUTs; a wide select (an array
                # read) is a mux tree of its own
                b["mux" if len(values) <= 2 else "wmux"] += need * (len(values) - 1)
            elif len(values) > 2:                     # a table of constants: a ROM in logic
                mask = (1 << need) - 1
                # loaded straight into a register, Yosys makes it a ROM with a synchronous
                # read (proc_rom, memory_dff) that may go to block RAM
                self.c.mems.append({"depth": len(values), "width": need, "block": False,
                                    "rom": [x.value & mask for x in values], "async_read": True,
                                    "read_ports": 1, "read_registered": v is self.loading,
                                    "logic": False})
            elif len(values) > 1:
                b["logic"] += need
            self.value(v.test)
            for x in values:
                self.value(x, need)
        else:
            for sub in getattr(v, "operands", ()):
                self.value(sub)

    def statements(self, stmts, domain, targets, depth=0):
        for s in stmts:
            if isinstance(s, Assign):
                lhs = s.lhs
                self.loading = s.rhs if domain != "comb" else None
                self.value(s.rhs, self.width(lhs))
                # a register loaded from a narrower (sign-extended) value keeps only the bits
                # that differ: synthesis merges the copies of the sign bit
                kept = _value_width(s.rhs, self.width) if isinstance(lhs, Signal) else None
                product = _product(s.rhs)
                if domain != "comb" and isinstance(s.rhs, Signal):
                    self.registered.add(id(s.rhs))
                if domain != "comb" and id(product) in self.mul_of and isinstance(lhs, Signal):
                    # a register right after a product: the DSP's own output register, if
                    # the product lands in a DSP (decided per device)
                    self.c.muls[self.mul_of[id(product)]][6] = self.width(lhs)
                    self.mreg[id(lhs)] = self.mul_of[id(product)]
                if domain != "comb" and isinstance(lhs, Signal):
                    self._registered_sum(s.rhs, self.width(lhs))
                for sig in lhs_signals(lhs):
                    targets[(domain, id(sig))].append((sig, depth, kept))
                if not isinstance(lhs, Signal):
                    self._lhs_selects(lhs)
            elif isinstance(s, Switch):
                self.value(s.test)
                n_cases = sum(1 for p, _, _ in s.cases if p is not None)
                self.c.bits["eq"] += self.width(s.test) * max(0, n_cases - 1) / 2
                for _, body, _ in s.cases:
                    self.statements(body, domain, targets, depth + 1)

    def _registered_sum(self, rhs, width):
        """Note ``reg <= a + b``: if ``a`` (or ``b``) is a product that lands in a DSP, or its
        register, the DSP's post-adder and P register take the sum (Yosys' ``xilinx_dsp``)."""
        rhs = _uncast(rhs)
        if not (isinstance(rhs, Operator) and rhs.operator in ("+", "-") and len(rhs.operands) == 2):
            return
        ops = rhs.operands
        feature = "addc" if any(_is_const(x) for x in ops) else "add"
        self.sums.append(([id(x) for x in ops] + [id(_product(x)) for x in ops], feature,
                          min(width, self.width(rhs))))

    def absorb_sums(self):
        """Give each product at most one post-adder: the first registered sum that reads it."""
        for ids, feature, bits in self.sums:
            for i in ids:
                k = self.mreg.get(i, self.mul_of.get(i))
                if k is not None and self.c.muls[k][7] is None:
                    self.c.muls[k][7] = (feature, bits)
                    break

    def _lhs_selects(self, lhs):
        """Address decoding of an assigned ``Array[...]`` / ``bit_select``: the index is read."""
        if isinstance(lhs, SwitchValue):
            self.value(lhs.test)
            for _, x in lhs.cases:
                self._lhs_selects(x)
        elif isinstance(lhs, Part):
            self.value(lhs.offset)
        elif isinstance(lhs, (Slice,)):
            self._lhs_selects(lhs.value)
        elif isinstance(lhs, Concat):
            for p in lhs.parts:
                self._lhs_selects(p)


def _power_of_two(c: int) -> bool:
    c = abs(int(c))
    return c & (c - 1) == 0


def _uncast(v):
    """``v`` without its sign casts (``as_signed``, ``as_unsigned``)."""
    while isinstance(v, Operator) and v.operator in ("u", "s") and len(v.operands) == 1:
        v = v.operands[0]
    return v


def _product(v):
    """The product expression ``v`` is (through sign casts), or None."""
    v = _uncast(v)
    return v if isinstance(v, Operator) and v.operator == "*" else None


def _value_width(v, width=len) -> int:
    """Bits that carry information in ``v`` (synthesis trims the rest): ``x - 0`` is ``x``, a
    sum of two values is one bit wider than the wider, a constant shift adds its amount.
    ``width``: the bit width of a value (``len``, or a walker's memoised one)."""
    if isinstance(v, Const):
        return max(1, v.value.bit_length() + (v.value < 0 or v.shape().signed))
    if isinstance(v, Operator):
        ops, o = v.operands, v.operator
        if len(ops) == 1 and o in ("u", "s", "+"):
            return min(width(v), _value_width(ops[0], width))
        if len(ops) == 2 and o in ("+", "-"):
            rest = [x for x in ops if not (_is_const(x) and x.value == 0)]
            if len(rest) == 1:
                # 0 - x needs one more bit; so does x - 0 of an unsigned x, whose signed
                # result Yosys keeps with its (zero) sign bit
                grow = o == "-" and (rest[0] is ops[1] or not rest[0].shape().signed)
                return min(width(v), _value_width(rest[0], width) + grow)
            return min(width(v), max(_value_width(x, width) for x in ops) + 1)
        if len(ops) == 2 and o in ("<<", ">>") and _is_const(ops[1]):
            k = ops[1].value
            return min(width(v), max(1, _value_width(ops[0], width) + (k if o == "<<" else -k)))
    if isinstance(v, SwitchValue):
        return min(width(v), max(_value_width(x, width) for _, x in v.cases))
    if isinstance(v, ArrayProxy):
        return _value_width(Value.cast(v), width)
    return width(v)


def _operand_width(x, shape=None) -> tuple[int, bool]:
    """(bits, signed) of a product operand as the DSP mapping sees it: a non-negative
    constant is unsigned (a DSP that takes unsigned operands needs no sign bit for it).
    ``shape``: a walker's memoised (width, signed) of a value."""
    if _is_const(x):
        c = x.value
        return (max(1, c.bit_length()), False) if c >= 0 else ((~c).bit_length() + 1, True)
    if shape is None:
        return _value_width(x), x.shape().signed
    return _value_width(x, lambda v: shape(v)[0]), shape(x)[1]


def _memory(frag: MemoryInstance, registered: frozenset = frozenset()) -> dict:
    """``registered``: ids of the signals the parent module loads straight into a register
    (an asynchronous read whose data is registered can become a synchronous one)."""
    data = memory_data(frag)
    reads, writes = memory_ports(frag)
    width, depth = len(Value.cast(Signal(data.shape))), data.depth
    rom = None if writes else [int(v) for v in data.init]
    styles = {str(v) for k, v in memory_attrs(frag).items() if k in ("ram_style", "rom_style")}
    comb_ports = [p for p in reads if p.domain == "comb"]
    return {"depth": depth, "width": width, "rom": rom, "async_read": bool(comb_ports),
            "logic": "logic" in styles,
            "block": "block" in styles, "read_ports": len(reads),
            "read_registered": all(id(p.data) in registered for p in comb_ports)}


def _walk(frag, counts: _Counts, modules: dict | None = None, path: str = "",
          registered: frozenset = frozenset()):
    """Count ``frag`` and its subtree into ``counts``; with ``modules``, count each module
    (fragment) into a _Counts of its own instead, keyed by hierarchical path (the names the
    exported Verilog gives its modules; memories belong to the module that holds them)."""
    if modules is not None and not isinstance(frag, MemoryInstance):
        counts = modules.setdefault(path, _Counts())
        counts.kind = type(frag.origins[0]).__name__ if frag.origins else ""
    registered = _walk_own(frag, counts, registered)
    for sub, name, _ in frag.subfragments:
        if isinstance(sub, MemoryInstance) or modules is None:
            _walk(sub, counts, registered=registered)
        else:
            _walk(sub, counts, modules, f"{path}.{name}")


def _walk_own(frag, counts: _Counts, registered: frozenset = frozenset()) -> frozenset:
    """Count ``frag`` itself; returns the ids of the signals it loads whole into registers."""
    counts.bits["blocks"] += 0 if isinstance(frag, MemoryInstance) else 1     # one per module
    if isinstance(frag, MemoryInstance):
        counts.mems.append(_memory(frag, registered))
        w = _Walker(counts)
        reads, writes = memory_ports(frag)
        for p in reads:
            w.value(p.addr)
        for p in writes:
            w.value(p.addr)
            w.value(p.data)
            w.value(p.en)
        return frozenset()
    walker = _Walker(counts)
    targets = defaultdict(list)
    for domain, stmts in frag.statements.items():
        walker.statements(stmts, domain, targets)
    walker.absorb_sums()
    for (domain, _), uses in targets.items():
        sig = uses[0][0]
        w = len(sig)
        if domain != "comb":
            kept = [k for _, _, k in uses]
            counts.bits["ff"] += w if None in kept else min(w, max(kept))
        # a signal assigned in k places needs k-1 priority-mux levels; a register assigned
        # under a condition only once uses the FF's clock enable instead.
        extra = len(uses) - 1
        if domain == "comb" and len(uses) == 1 and uses[0][1] > 0:
            extra = 1
        counts.bits["amux"] += w * max(0, extra)
    return frozenset(walker.registered)


def block_features(design) -> dict:
    """{block name: {component kind: _Counts}} of an elaborated design: one entry per top-level
    submodule (the accelerator's operators, forks and FIFOs), its modules merged per kind
    (the component class: Linear, Buffer, Fifo, ...), whose logic the calibration scales apart."""
    return _by_block(module_features(design, "top"))


def _by_block(modules: dict) -> dict:
    """:func:`block_features` of the {module path: _Counts} of a walk from "top"."""
    out = {}
    for path, counts in modules.items():
        parts = path.split(".")
        if len(parts) < 2:                   # the top module's own wiring: no logic
            continue
        by_kind = out.setdefault(parts[1], {})
        if counts.kind in by_kind:
            by_kind[counts.kind].merge(counts)
        else:
            by_kind[counts.kind] = counts
    return out


def module_features(design, top: str = "intformer_top") -> dict:
    """{module path: _Counts} of an elaborated design, one per module (each without its
    submodules): the calibration points of a synthesis that keeps the hierarchy."""
    modules = {}
    _walk(Fragment.get(design, None), _Counts(), modules, top)
    return modules


# ---------------------------------------------------------------------------------------------
# Per-block cache of the walk
# ---------------------------------------------------------------------------------------------
# A design-space search estimates designs that differ in one knob or one layer: most top-level
# blocks are built exactly as in an earlier estimate. A block built by the same class from the
# same constructor arguments elaborates to the same hardware (hw.common.Recorded), so its
# counts are kept, keyed by a digest of its construction, and only the other blocks are
# elaborated and walked. The counts are the uncached walk's, so the estimate is identical.

#: Blocks kept (least recently used dropped first).
CACHE_SIZE = 256
_cache: OrderedDict = OrderedDict()
_cache_lock = threading.Lock()
_stats = {"hits": 0, "misses": 0, "uncached": 0, "last_elaborated": ()}


def clear_cache() -> None:
    """Forget every cached block (and reset the counters of :func:`cache_info`)."""
    with _cache_lock:
        _cache.clear()
        _stats.update(hits=0, misses=0, uncached=0, last_elaborated=())


def cache_info() -> dict:
    """Counters of the block cache: ``hits`` (blocks reused), ``misses`` (blocks elaborated
    and stored), ``uncached`` (blocks elaborated that cannot be keyed), ``size``, and
    ``last_elaborated``: the names of the blocks the last cached estimate elaborated."""
    with _cache_lock:
        return {**_stats, "size": len(_cache), "max_size": CACHE_SIZE}


class _NoFingerprint(Exception):
    """A value of a type :func:`fingerprint` does not know (its block is not cached)."""


def fingerprint(obj, memo: dict | None = None) -> bytes | None:
    """Digest of ``obj``'s content, or None if it holds a type not known here.

    Known: None, bool, int, float, str, lists, tuples, dicts (in order), enums, numpy arrays
    (dtype, shape, bytes) and scalars, Amaranth shapes, dataclasses (class and fields),
    :class:`model.intmodel.IntModel` (all its attributes) and :class:`hw.common.Recorded`
    components (class and :meth:`construction_key`). Types are part of the digest (1, 1.0
    and True differ). ``memo`` ({} shared by several calls) hashes a model, array or component
    met again only once."""
    h = hashlib.blake2b(digest_size=20)
    try:
        _feed(h, obj, {} if memo is None else memo)
    except (_NoFingerprint, RecursionError):
        return None
    return h.digest()


def _class_tag(h, cls) -> None:
    tag = f"{cls.__module__}.{cls.__qualname__}".encode()
    h.update(b"c%d:" % len(tag))
    h.update(tag)


def _feed(h, x, memo: dict) -> None:
    t = type(x)
    if x is None:
        h.update(b"N")
    elif t is bool:
        h.update(b"T" if x else b"F")
    elif t is int:
        h.update(b"i%d;" % x)
    elif t is float:
        h.update(b"f" + repr(x).encode() + b";")      # repr round-trips
    elif t is str:
        e = x.encode("utf-8", "surrogatepass")
        h.update(b"s%d:" % len(e))
        h.update(e)
    elif t is tuple or t is list:
        h.update((b"(%d:" if t is tuple else b"[%d:") % len(x))
        for v in x:
            _feed(h, v, memo)
    elif t is dict:
        h.update(b"{%d:" % len(x))
        for k, v in x.items():
            _feed(h, k, memo)
            _feed(h, v, memo)
    elif t is Shape:
        h.update(b"S%d%s;" % (x.width, b"s" if x.signed else b"u"))
    elif isinstance(x, enum.Enum):
        h.update(b"e")
        _class_tag(h, t)
        _feed(h, x.value, memo)
    elif isinstance(x, np.generic):
        if x.dtype.hasobject:
            raise _NoFingerprint(t)
        h.update(b"g" + x.dtype.str.encode() + b":")
        h.update(x.tobytes())
    elif t in (np.ndarray, IntModel) or isinstance(x, Recorded):
        h.update(b"#" + _sub_digest(x, memo))
    elif dataclasses.is_dataclass(x) and not isinstance(x, type):
        fields = [f.name for f in dataclasses.fields(x)]
        extra = set(getattr(x, "__dict__", {})) - set(fields)
        if extra:                        # state beyond the fields: not known to be derived
            raise _NoFingerprint(t)
        h.update(b"d")
        _class_tag(h, t)
        for name in fields:
            _feed(h, name, memo)
            _feed(h, getattr(x, name), memo)
    else:
        raise _NoFingerprint(t)


def _sub_digest(x, memo: dict) -> bytes:
    """Digest of an array, model or component, once per ``memo`` (which keeps ``x`` alive, so
    that its id is not reused)."""
    hit = memo.get(id(x))
    if hit is not None:
        if hit[1] is None:               # met inside itself
            raise _NoFingerprint(type(x))
        return hit[1]
    memo[id(x)] = (x, None)
    h = hashlib.blake2b(digest_size=20)
    if type(x) is np.ndarray:
        if x.dtype.hasobject:
            raise _NoFingerprint(np.ndarray)
        h.update(b"a" + x.dtype.str.encode() + repr(x.shape).encode() + b":")
        h.update(np.ascontiguousarray(x).tobytes())
    elif type(x) is IntModel:
        h.update(b"m")
        _feed(h, dict(sorted(vars(x).items())), memo)
    else:
        h.update(b"r")
        _class_tag(h, type(x))
        _feed(h, x.construction_key(), memo)
    d = h.digest()
    memo[id(x)] = (x, d)
    return d


def _cache_get(key):
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
        return hit


def _cache_put(key, value) -> None:
    with _cache_lock:
        _cache[key] = value
        _cache.move_to_end(key)
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)


def mark_used(obj) -> None:
    """Mark a component that is not elaborated, and every component it holds, as used (else
    Amaranth warns "created but never used" when they are collected)."""
    discard(obj)


def _named_blocks(top) -> dict | None:
    """{name: (block, src_loc)} of an elaborated top ``Module`` made of named blocks and
    combinational wiring only, so that its walk hands its blocks no registered signals and
    each block walked alone counts as in the whole walk; else None."""
    if not isinstance(top, Module):
        return None
    return comb_only_named_submodules(top)


def cached_block_features(design) -> dict:
    """:func:`block_features` of ``design`` (equal counts), elaborating only the top-level
    blocks not met before (see :func:`cache_info`); a block whose construction cannot be
    fingerprinted is elaborated every time. The returned counts are shared with the cache:
    do not modify them."""
    top = design.elaborate(None)
    discard(design, deep=False)                  # what Fragment.get(design) does
    blocks = _named_blocks(top)
    if blocks is None:
        modules = {}
        _walk(Fragment.get(top, None), _Counts(), modules, "top")
        with _cache_lock:
            _stats["last_elaborated"] = ("*",)
        return _by_block(modules)
    discard(top, deep=False)
    out, elaborated, memo = {}, [], {}
    for name, (block, _) in blocks.items():
        digest = fingerprint(block, memo) if isinstance(block, Recorded) else None
        key = None if digest is None else (type(block), digest)
        by_kind = None if key is None else _cache_get(key)
        if by_kind is not None:
            mark_used(block)
            with _cache_lock:
                _stats["hits"] += 1
            out[name] = by_kind
            continue
        modules = {}
        _walk(Fragment.get(block, None), _Counts(), modules, f"top.{name}")
        elaborated.append(name)
        by_kind = _by_block(modules).get(name)
        with _cache_lock:
            _stats["misses" if key is not None else "uncached"] += 1
        if by_kind is None:                  # a bare memory: counted in the top's wiring
            continue
        if key is not None:
            _cache_put(key, by_kind)
        out[name] = by_kind
    with _cache_lock:
        _stats["last_elaborated"] = tuple(elaborated)
    return out


# ---------------------------------------------------------------------------------------------
# Exact mapping rules: memories and multipliers
# ---------------------------------------------------------------------------------------------

def _layouts(depth: int):
    """(rows, words per row) of the ways ``memory_libmap`` lays out ``depth`` words: one word
    per row, or the top k address bits choosing a word within a row 2^k words wide, where only
    words that exist take room. Measured: a 768 x 5 table fits one iCE40 EBR as 256 x 15 bits
    (256 x 16 mode), a 3072 x 5 table one RAMB18 as 1024 x 15 (1024 x 18 mode)."""
    yield depth, 1
    abits = (depth - 1).bit_length()
    for k in range(1, abits + 1):
        rows = 1 << (abits - k)
        yield rows, math.ceil(depth / rows)


def _bram_xc7(depth: int, width: int, rom: bool = False) -> float:
    """BRAM36-equivalents of a depth x width memory (RAMB18E1 = 1/2): the cheapest tiling.
    Only a ROM packs several words in a row: a RAM's write would need an enable per word, and
    the byte enables are 9 bits wide (a 3072 x 5 RAM takes a RAMB36)."""
    configs = [(0.5, 16384, 1), (0.5, 8192, 2), (0.5, 4096, 4), (0.5, 2048, 9), (0.5, 1024, 18),
               (0.5, 512, 36), (1.0, 32768, 1), (1.0, 16384, 2), (1.0, 8192, 4), (1.0, 4096, 9),
               (1.0, 2048, 18), (1.0, 1024, 36), (1.0, 512, 72)]
    layouts = _layouts(depth) if rom else [(depth, 1)]
    return min(cost * math.ceil(rows / d) * math.ceil(words * width / w)
               for rows, words in layouts for cost, d, w in configs)


#: iCE40 has no LUT RAM: ``memory_libmap`` puts a RAM in SB_RAM40_4Ks when their cost (64
#: each, plus 2 per point of emulated port features) is below one per bit in flip-flops. The
#: buffers' read port (a separate port, its asynchronous read made synchronous by merging the
#: data register, with reset and read-old-data emulated) scores between 10 and 15 points: a
#: 14 x 6 queue (84 bits) and an 8 x 10 accumulator stay in flip-flops, a 16 x 6 bank (96 bits)
#: goes to EBR, in every calibration design. 12 is the middle of that bracket.
ICE40_EBR_COST, ICE40_BUFFER_EMULATION = 64, 12
#: ``memory_libmap``'s cost of a ROM bit left in logic (``-logic-cost-rom``, 1/16): on the
#: iCE40 a table read into a register (registers storage, no style attribute) goes to EBR
#: only when big, e.g. 112 x 15 bits but not 25 x 13.
ICE40_ROM_LOGIC_COST = 1 / 16
#: On the XC7S15 such a table takes a RAMB18 when its address space times its width exceeds
#: this many bits. Measured with ``synth_xilinx`` on single tables: 1024 x 8, 600 x 8,
#: 2048 x 4, 512 x 9 and 1024 x 5 stay in LUTs; 1024 x 9, 520 x 9, 1100 x 5, 2048 x 5 and
#: 2048 x 7 go to block RAM.
XC7_ROM_BLOCK_BITS = 8192


def _bram_ice40(depth: int, width: int) -> int:
    """SB_RAM40_4Ks of a depth x width memory: the cheapest tiling of its cheapest layout (the
    EBR's write mask is per bit, so RAMs pack words in a row too: 768 x 5 takes one)."""
    configs = [(256, 16), (512, 8), (1024, 4), (2048, 2)]
    return min(math.ceil(rows / d) * math.ceil(words * width / w)
               for rows, words in _layouts(depth) for d, w in configs)


#: Yosys ``memory_libmap`` prices a mapping as the cells' cost plus, for a memory split over
#: several address tiles, 0.5 per bit of read multiplexer and 0.5 per write-enable of the
#: write demultiplexer (FACTOR_MUX, FACTOR_DEMUX). LUT RAMs (``lutrams_xc5v.txt``, simple dual
#: port): RAM32M is 32 x 6 and RAM64M 64 x 3, cost 8 of which 7 scale with the bits used
#: (``widthscale 7``); a RAMB18 costs 129. A RAM without a forced style takes the cheaper.
LUTRAM_COST, LUTRAM_WIDTHSCALE, RAMB18_COST = 8, 7, 129
MUX_FACTOR, DEMUX_FACTOR = 0.5, 0.5


def _lutram_options_xc7(depth: int, width: int) -> list[tuple[float, int]]:
    """(libmap cost, LUTs) of a depth x width simple dual-port RAM as RAM32M and as RAM64M."""
    out = []
    for tile_depth, tile_width in ((32, 6), (64, 3)):
        tiles = math.ceil(depth / tile_depth)                 # address tiles (mult_a)
        padded = math.ceil(width / tile_width) * tile_width   # the word padded to whole cells
        cells = math.ceil(tiles * padded / tile_width)
        cost = ((LUTRAM_COST - LUTRAM_WIDTHSCALE) * cells
                + LUTRAM_WIDTHSCALE * tiles * width / tile_width)
        if tiles > 1:
            cost += MUX_FACTOR * (tiles - 1) * width + DEMUX_FACTOR * tiles
        out.append((cost, 4 * cells))
    return out


def _lutram_xc7(depth: int, width: int) -> int:
    """LUTs of a simple dual-port LUT RAM: RAM32M or RAM64M for the whole memory, whichever
    ``memory_libmap`` prices lower (RAM32M on a tie). Checked: 96 x 8 takes 6 RAM32M,
    160 x 8 takes 9 RAM64M, 40 x 8 takes 3 RAM64M."""
    return min(_lutram_options_xc7(depth, width))[1]


def _ram_xc7(depth: int, width: int) -> tuple[int, float]:
    """(LUTRAM LUTs, BRAM36) of a RAM without a forced style: a 480 x 6 FIFO goes to a RAMB18
    (129) rather than 16 RAM64M (128 plus 25 of multiplexers; 15 RAM32M: 120 plus 49.5)."""
    lut_cost, luts = min(_lutram_options_xc7(depth, width))
    bram = _bram_xc7(depth, width)
    if lut_cost > RAMB18_COST * 2 * bram:
        return 0, bram
    return luts, 0.0


def _rom_columns(init: list, width: int, rows: int) -> float:
    """Non-constant output-bit columns of a ROM, per chunk of ``rows`` words (each chunk of a
    column is one LUT when it is not constant)."""
    n = 0
    for start in range(0, len(init), rows):
        chunk = init[start:start + rows]
        ones = 0
        allv = (1 << width) - 1
        zeros = 0
        for v in chunk:
            ones |= v & allv
            zeros |= ~v & allv
        n += bin(ones & zeros).count("1")        # bits that take both values in the chunk
    return n


def _rom_luts_xc7(init: list, width: int) -> float:
    """LUT6s of a ROM in logic on the XC7S15: per output bit that is not constant, one LUT6 per
    64 words (a deeper table's LUT6s are joined by MUXF7 / MUXF8, which are not LUTs). A
    64-word chunk that is constant within a varying bit still costs about its LUT: Yosys
    does not keep the mux tree of such a bit and maps it to LUTs (hw/PERFORMANCE.md, Storage,
    has the tables measured)."""
    chunks = math.ceil(len(init) / 64)
    return _rom_columns(init, width, max(1, len(init))) * chunks


def _dsp_tiles(mul, device: str) -> int:
    """DSP tiles of one product, as Yosys maps ``$mul`` cells (``mul2dsp``): none when an
    operand is under 2 bits or the product under ``Y_MINWIDTH`` bits (left to LUTs), else
    one tile per partial product of the tile's operand widths (on the iCE40, per partial
    product that is itself wide enough)."""
    wa, wb, sa, sb, y = mul[:5]
    if device == "xc7s15":                   # MUL25X18, signed only, Y_MINWIDTH 9
        if min(wa, wb) < 2 or y < 9:
            return 0
        a, b = wa + (not sa), wb + (not sb)
        a, b = max(a, b), min(a, b)
        if a <= 25 and b <= 18:
            return 1
        return math.ceil((a - 1) / 24) * math.ceil((b - 1) / 17)
    if min(wa, wb) < 2 or y < 11:            # SB_MAC16: 16 x 16, Y_MINWIDTH 11
        return 0

    def slices(n):      # mul2dsp cuts a wider operand into 16-bit slices
        return [16] * (n // 16) + ([n % 16] if n % 16 else [])
    # a partial product with a slice under 2 bits or a product under 11 is left to LUTs
    # (measured: 4 x 22 and 5 x 21 signed take one SB_MAC16, 5 x 22 and 6 x 21 two)
    return sum(1 for x in slices(wa) for z in slices(wb) if min(x, z) >= 2 and x + z >= 11)


def _csd_count(c: int) -> int:
    from hw.common import csd_digits
    return len(csd_digits(c))


def exact_resources(counts: _Counts, device: str) -> dict:
    """Memory and multiplier resources of one block, by the device's mapping rules."""
    r = defaultdict(float)
    for mem in counts.mems:
        d, w = mem["depth"], mem["width"]
        if mem["block"] and mem["rom"] is not None:
            # a block ROM's constant bit columns are removed before mapping (opt_mem)
            w = max(1, int(_rom_columns(mem["rom"], w, max(1, len(mem["rom"])))))
        if device == "xc7s15":
            if mem["block"]:
                r["BRAM36"] += _bram_xc7(d, w, rom=mem["rom"] is not None)
                r["bram_bits"] += w
            elif mem["rom"] is not None:
                if (mem["read_registered"] and not mem["logic"]
                        and (1 << (d - 1).bit_length()) * w > XC7_ROM_BLOCK_BITS):
                    r["BRAM36"] += _bram_xc7(d, w, rom=True)
                    r["bram_bits"] += w
                else:
                    # a table deeper than a LUT6 (softmax, activation, norm) apart from the
                    # weights and biases: its cost depends on its content and on the logic
                    # around it, see LOGIC_FEATURES
                    r["table_luts" if d > 64 else "rom_luts"] += _rom_luts_xc7(mem["rom"], w)
            else:
                luts, bram = _ram_xc7(d, w)
                r["LUTRAM"] += luts
                r["BRAM36"] += bram
                r["bram_bits"] += w if bram else 0
        else:
            ebr_cost = ICE40_EBR_COST * _bram_ice40(d, w) + 2 * ICE40_BUFFER_EMULATION
            if mem["block"]:
                r["BRAM"] += _bram_ice40(d, w)
                r["bram_bits"] += w
            elif mem["rom"] is not None:
                if (mem["read_registered"] and not mem["logic"]
                        and ebr_cost < d * w * ICE40_ROM_LOGIC_COST):
                    r["BRAM"] += _bram_ice40(d, w)
                    r["bram_bits"] += w
                else:
                    r["rom_luts"] += _rom_columns(mem["rom"], w, 16)
            elif mem["read_registered"] and ebr_cost < d * w:   # no LUT RAM: EBR ...
                r["BRAM"] += _bram_ice40(d, w)
                r["bram_bits"] += w
            else:       # ... or, when tiny or read without a register, flip-flops and a mux
                r["ram_ff"] += d * w
                r["ram_mux"] += (d - 1) * w
    for mul in counts.muls:
        tiles = _dsp_tiles(mul, device)
        r["DSP"] += tiles
        if tiles:
            r["ff_in_dsp"] += mul[6]
            if mul[7] is not None and device == "xc7s15":     # post-adder and P register
                feature, bits = mul[7]
                r[feature + "_in_dsp"] += bits
                r["ff_in_dsp"] += bits
        else:                                    # a product in LUTs
            wa, wb, _, _, y, cval = mul[:6]
            if cval is None:
                r["lutmul"] += min(wa, wb) * y
            else:
                r["cmul"] += y * max(0, _csd_count(cval) - 1)
    return dict(r)


def feature_vector(counts: _Counts, device: str, ex: dict | None = None) -> dict:
    """The logic features of one block (bits), including the memories that become logic."""
    ex = exact_resources(counts, device) if ex is None else ex
    f = {k: counts.bits.get(k, 0.0) for k in LOGIC_FEATURES}
    f["rom"] = ex.get("rom_luts", 0.0)
    f["table"] = ex.get("table_luts", 0.0)
    f["ff"] += ex.get("ram_ff", 0.0) - ex.get("ff_in_dsp", 0.0)
    f["add"] -= ex.get("add_in_dsp", 0.0)
    f["addc"] -= ex.get("addc_in_dsp", 0.0)
    f["ram"] = ex.get("ram_mux", 0.0)
    f["lutmul"] = ex.get("lutmul", 0.0)
    f["bram"] = ex.get("bram_bits", 0.0)
    f["cmul"] += ex.get("cmul", 0.0)
    return f


# ---------------------------------------------------------------------------------------------
# Calibrated logic model
# ---------------------------------------------------------------------------------------------

def coefficients(device: str) -> dict:
    """{target: {feature: weight}} of ``device``'s calibration, and under "kind_scale"
    {target: {component kind: factor}} (absent kinds: 1)."""
    path = DATA_DIR / f"estimator_{device}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python -m flows.calibration fit` "
                                f"to calibrate the estimator for {device}")
    data = json.loads(path.read_text())
    return {**data["coefficients"], "kind_scale": data.get("kind_scale", {})}


def _linear(coef: dict, f: dict) -> float:
    return sum(coef.get(k, 0.0) * v for k, v in f.items())


def weighted_features(by_kind: dict, scale: dict) -> dict:
    """Features summed over component kinds, each kind's scaled by its factor of ``scale``."""
    f = defaultdict(float)
    for kind, fv in by_kind.items():
        s = scale.get(kind, 1.0)
        for k, v in fv.items():
            f[k] += s * v
    return dict(f)


def kind_features(by_kind: dict, device: str) -> tuple[dict, dict]:
    """({kind: logic features}, summed exact resources) of one block's modules per kind."""
    feats, exact = {}, defaultdict(float)
    for kind, counts in by_kind.items():
        ex = exact_resources(counts, device)
        feats[kind] = feature_vector(counts, device, ex)
        for k, v in ex.items():
            exact[k] += v
    return feats, dict(exact)


def block_estimate(by_kind: dict, device: str, coef: dict | None = None) -> dict:
    coef = coefficients(device) if coef is None else coef
    feats, ex = kind_features(by_kind, device)
    scale = coef.get("kind_scale", {})

    def logic(target):
        return _linear(coef[target], weighted_features(feats, scale.get(target, {})))

    if device == "xc7s15":
        return {"LUT": logic("LUT") + ex.get("LUTRAM", 0.0), "LUTRAM": ex.get("LUTRAM", 0.0),
                "FF": logic("FF"), "BRAM36": ex.get("BRAM36", 0.0), "DSP": ex.get("DSP", 0.0)}
    return {"LUT4": logic("LUT4"), "FF": logic("FF"), "CARRY": logic("CARRY"), "LC": logic("LC"),
            "BRAM": ex.get("BRAM", 0.0), "DSP": ex.get("DSP", 0.0)}


def _check_device(device: str) -> None:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: choose one of {list(DEVICES)}")


def estimate_design(design, device: str, coef: dict | None = None, cache: bool = True) -> Estimate:
    """Estimate of an Amaranth design (an :class:`hw.accelerator.Accelerator`). With ``cache``
    the blocks built as in an earlier estimate of this process are not elaborated again
    (:func:`cached_block_features`; same result)."""
    _check_device(device)
    coef = coefficients(device) if coef is None else coef
    features = cached_block_features(design) if cache else block_features(design)
    per_block = {name: block_estimate(c, device, coef) for name, c in features.items()}
    total = defaultdict(float)
    for est in per_block.values():
        for k, v in est.items():
            total[k] += v
    if device == "xc7s15":
        used = {"LUT": round(total["LUT"]), "FF": round(total["FF"]), "BRAM36": total["BRAM36"],
                "DSP": round(total["DSP"])}
        detail = {"LUTRAM": round(total["LUTRAM"])}
    else:
        used = {"LC": round(total["LC"]), "BRAM": round(total["BRAM"]), "DSP": round(total["DSP"])}
        detail = {"LUT4": round(total["LUT4"]), "FF": round(total["FF"]), "CARRY": round(total["CARRY"])}
    per_block = {n: {k: round(v, 1) for k, v in e.items()} for n, e in per_block.items()}
    return Estimate(device, used, per_block, detail)


def estimate(model, hw=None, device: str = "xc7s15", cache: bool = True) -> Estimate:
    """Resources of the accelerator of integer model ``model`` under hardware config ``hw``
    (an :class:`hw.accelerator.HwConfig` or its dict) on ``device``. ``cache``: reuse the
    counts of blocks built as in an earlier estimate (see :func:`estimate_design`)."""
    from hw.accelerator import Accelerator
    _check_device(device)
    coef = coefficients(device)          # before building: a missing file leaves nothing unused
    return estimate_design(Accelerator(model, hw), device, coef, cache)


# ---------------------------------------------------------------------------------------------
# Calibration: fitting the logic coefficients
# ---------------------------------------------------------------------------------------------

def nnls(a, b, iterations: int = 500):
    """Non-negative least squares ``min |a x - b|, x >= 0`` (Lawson-Hanson active set)."""
    import numpy as np
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = a.shape[1]
    x, passive = np.zeros(n), np.zeros(n, bool)
    for _ in range(iterations):
        w = a.T @ (b - a @ x)
        if passive.all() or (w[~passive] <= 1e-10).all():
            break
        j = int(np.argmax(np.where(passive, -np.inf, w)))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            neg = passive & (z <= 0)
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            passive &= x > 1e-12
    return x


def design_features(design, device: str) -> tuple[dict, dict]:
    """({component kind: summed logic features}, summed exact resources) of a whole design."""
    feats, exact = defaultdict(lambda: defaultdict(float)), defaultdict(float)
    for by_kind in block_features(design).values():
        fk, ex = kind_features(by_kind, device)
        for kind, fv in fk.items():
            for k, v in fv.items():
                feats[kind][k] += v
        for k, v in ex.items():
            exact[k] += v
    return {k: dict(v) for k, v in feats.items()}, dict(exact)


#: What a bit of each feature costs when nothing merges (LUT6 per bit, FF per bit): the prior
#: the calibration pulls the fit towards, so that features that move together in the designs
#: (adders and their multiplexers) keep sensible weights instead of trading off wildly.
PRIOR = {
    "LUT": {"ff": 0.05, "add": 1.0, "addc": 0.5, "cmp": 0.5, "eq": 0.2, "logic": 0.3, "mux": 0.5,
            "wmux": 0.33, "amux": 0.5, "shift": 0.3, "rom": 1.0, "ram": 0.33, "lutmul": 1.0,
            "booth": 1.0, "cmul": 1.0, "bram": 0.2, "blocks": 10.0, "table": 1.0},
    "FF": {"ff": 0.9, "rom": 0.1, "bram": 0.1, "lutmul": 0.05, "wmux": 0.0, "blocks": 2.0},
}


#: Relative errors below this count as this in the absolute-error fit (the reweighting's floor:
#: a design predicted to 0.1 % does not get a thousand times the weight of one at 10 %).
L1_FLOOR = 0.01
L1_ITERATIONS = 30


def fit_coefficients(samples, targets, features=LOGIC_FEATURES, prior: dict | None = None,
                     strength: float = 0.05, weights=None) -> dict:
    """Coefficients (feature -> weight, non-negative) minimising the *absolute relative* error of
    ``targets`` (one number per sample) predicted from ``samples`` (feature dicts), plus
    ``strength`` times the squared relative distance to ``prior`` (ridge towards it);
    ``weights``: one per sample, how much its error counts (default 1).

    Absolute, not squared: the estimator is judged by its median error, and under a squared
    loss the few designs two or three times the device's size (whose cost the per-feature model
    predicts worst) bend every coefficient towards themselves. Solved by iteratively
    reweighted least squares: each round weighs a sample by 1 / its last relative error."""
    import numpy as np
    a = np.array([[s.get(k, 0.0) for k in features] for s in samples], float)
    y = np.maximum(np.asarray(targets, float), 1.0)
    base = np.ones(len(y)) if weights is None else np.asarray(weights, float)
    w, x = base, None
    for _ in range(L1_ITERATIONS):
        last = x
        x = _least_squares(a, y, features, prior or {}, strength, w)
        if last is not None and np.allclose(x, last, rtol=1e-6, atol=1e-9):
            break
        w = base / np.maximum(np.abs(a @ x - y) / y, L1_FLOOR)
    return {k: float(v) for k, v in zip(features, x) if v > 0}


def _least_squares(a, y, features, prior: dict, strength: float, weights):
    """Non-negative coefficients minimising the weighted squared relative error plus the ridge
    towards ``prior``."""
    import numpy as np
    w = np.sqrt(np.asarray(weights, float)) / y
    rows, rhs = [a * w[:, None]], [y * w]
    if strength > 0 and prior:
        # one penalty row per feature, scaled by the feature's typical share of a design
        share = np.maximum((a * w[:, None]).mean(axis=0), 1e-9)
        x0 = np.array([prior.get(k, 0.0) for k in features])
        rows.append(np.diag(np.sqrt(strength) * share))
        rhs.append(np.sqrt(strength) * share * x0)
    return nnls(np.vstack(rows), np.concatenate(rhs))
