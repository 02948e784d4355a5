"""Where the project needs more of Amaranth 0.5 than its public API gives, and why.

This is the one module that names Amaranth's private modules and attributes; everything else
imports what it needs from here (``tests/test_public_api.py`` checks that nothing else does).
Each entry says what the public API lacks; when an Amaranth release offers it, only this file
changes.

* **Components never elaborated** (:func:`discard`). Amaranth warns "created but never used"
  when an ``Elaboratable`` is collected unelaborated. Its public ways out are elaborating the
  object (``Fragment.get``) or silencing the warning for everything a source file creates
  (``# amaranth: UnusedElaboratable=no``). Neither fits a block that rejected its arguments
  half-way through ``__init__`` (it cannot be elaborated), nor one built only for what it
  reports (``cycles()``, an estimate), nor should a whole file lose the warning.
* **Reading an elaborated netlist** (the estimator, :mod:`flows.estimate`). Amaranth 0.5 has no
  public API for the statements of a ``Fragment`` (the expression node classes live in
  ``amaranth.hdl._ast``), for a memory's ports in it (``amaranth.hdl._mem``), or for the parts
  of an elaborated ``Module``; the estimator counts exactly those. The node classes are
  re-exported below, and the attributes it reads have accessors here.
"""
from __future__ import annotations

import dataclasses

from amaranth.hdl import Elaboratable
# Expression and statement node classes of an elaborated fragment (no public home in 0.5).
from amaranth.hdl._ast import (ArrayProxy, Assign, Concat, Const, Operator, Part,  # noqa: F401
                               Signal, Slice, Switch, SwitchValue, Value)
from amaranth.hdl._mem import MemoryInstance  # noqa: F401

__all__ = ["discard", "lhs_signals", "memory_ports", "memory_data", "memory_attrs",
           "comb_only_named_submodules", "ArrayProxy", "Assign", "Concat", "Const", "Operator",
           "Part", "Signal", "Slice", "Switch", "SwitchValue", "Value", "MemoryInstance"]


def discard(obj, *, deep: bool = True) -> None:
    """Mark ``obj`` and every component it holds (attributes, lists, tuples, dicts,
    dataclasses) as used: it will not be elaborated, and that is not a mistake. ``deep=False``:
    ``obj`` only (what ``Fragment.get`` does to the object it elaborates)."""
    if not deep:
        obj._MustUse__used = True
        return
    stack, seen = [obj], set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, Elaboratable):
            x._MustUse__used = True
            stack.extend(vars(x).values())
        elif dataclasses.is_dataclass(x) and not isinstance(x, type):
            stack.extend(vars(x).values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, dict):
            stack.extend(x.values())


def lhs_signals(lhs) -> list:
    """The signals an assignment target writes."""
    if isinstance(lhs, Signal):
        return [lhs]
    return list(lhs._lhs_signals())


@dataclasses.dataclass(frozen=True)
class MemoryPort:
    """One port of a :class:`MemoryInstance`: its domain (``"comb"``: asynchronous read),
    address, data and (write ports) enable."""
    domain: str
    addr: Value
    data: Value
    en: Value | None = None


def memory_ports(frag: MemoryInstance) -> tuple[list, list]:
    """``(read ports, write ports)`` of a memory instance, as :class:`MemoryPort`."""
    reads = [MemoryPort(p._domain, p._addr, p._data) for p in frag._read_ports]
    writes = [MemoryPort(p._domain, p._addr, p._data, p._en) for p in frag._write_ports]
    return reads, writes


def memory_data(frag: MemoryInstance):
    """The memory's contents description (``shape``, ``depth``, ``init``)."""
    return frag._data


def memory_attrs(frag: MemoryInstance) -> dict:
    """The memory's attributes (``ram_style``, ``rom_style``, ...)."""
    return dict(frag._attrs)


def comb_only_named_submodules(top) -> dict | None:
    """``{name: (submodule, src_loc)}`` of an elaborated top ``Module`` made only of named
    submodules and combinational statements (no anonymous submodule, no open control block,
    no dotted name), else None."""
    named = getattr(top, "_named_submodules", None)
    if (not isinstance(named, dict) or getattr(top, "_anon_submodules", True)
            or getattr(top, "_ctrl_stack", True)
            or any(domain != "comb" for domain in getattr(top, "_statements", {"?": None}))
            or any("." in name for name in named)):
        return None
    return named
