"""The packages form layers, ``model`` <- ``hw`` <- ``sim`` <- ``flows``: a package imports only
the packages below it (issue 19 item 5). Every import statement of every module counts, also
one inside a function: a deferred import is still a dependency, it only hides the cycle until
run time."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("model", "hw", "sim", "flows")


def _imported(path: Path, root: Path):
    """(line, module) of every import of ``path``, relative imports resolved."""
    here = list(path.relative_to(root).parts[:-1])      # the module's package
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield node.lineno, mod
            if not node.module:        # "from . import x" / "from pkg import x": x may be a module
                for a in node.names:
                    yield node.lineno, f"{mod}.{a.name}"


def violations(root: Path = ROOT) -> list:
    out = []
    for rank, package in enumerate(LAYERS):
        higher = set(LAYERS[rank + 1:])
        for path in sorted((root / package).rglob("*.py")):
            for line, mod in _imported(path, root):
                top = mod.split(".")[0]
                if top in higher:
                    out.append(f"{path.relative_to(root)}:{line}: {package} imports {mod} "
                               f"({top} is above {package})")
    return out


def test_no_package_imports_a_higher_one():
    found = violations()
    assert not found, "layering model <- hw <- sim <- flows broken:\n" + "\n".join(found)


@pytest.mark.parametrize("source,bad", [
    ("from flows import tools\n", "flows"),
    ("def f():\n    from flows.export import parse_verilog_ports\n", "flows.export"),
    ("import sim.compiled\n", "sim.compiled"),
])
def test_the_check_names_file_and_import(tmp_path, source, bad):
    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "x.py").write_text(source)
    for p in LAYERS:
        (tmp_path / p).mkdir(exist_ok=True)
    found = violations(tmp_path)
    assert len(found) == 1 and found[0].startswith("hw/x.py:") and bad in found[0], found
