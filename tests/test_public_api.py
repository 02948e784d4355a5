"""Amaranth's private names appear in one module only, hw/amaranth_adapter.py, which says for
each why the public API does not do (issue 19: public APIs only)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADAPTER = ROOT / "hw" / "amaranth_adapter.py"
# Private modules (amaranth.hdl._ast, ._mem, ...), the MustUse flags, and the private
# attributes of Module and MemoryInstance the estimator reads.
PRIVATE = re.compile(r"amaranth(\.\w+)*\._\w|_MustUse__|\._(mem|ast|ir|unused)\b|"
                     r"\._(named_submodules|anon_submodules|ctrl_stack|read_ports|write_ports"
                     r"|lhs_signals)\b")


def sources():
    for folder in ("model", "hw", "sim", "flows", "tests"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_private_names_only_in_the_adapter():
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in sources() if path not in (ADAPTER, Path(__file__).resolve())
             for n, line in enumerate(path.read_text().splitlines(), 1) if PRIVATE.search(line)]
    assert found == []


def test_the_adapter_says_why():
    """Its docstring names the public ways it does not take, and what 0.5 lacks."""
    import hw.amaranth_adapter as adapter
    for why in ("Fragment.get", "UnusedElaboratable=no", "amaranth.hdl._ast", "amaranth.hdl._mem",
                "no\npublic API"):
        assert why.replace("\n", " ") in " ".join(adapter.__doc__.split()), why
