"""Imports go one way: a script (train.py, sample.py, eval.py, export.py, bench's, data's prepare.py) imports
modules, never another script."""

import ast

import pytest

from tests.helpers import ROOT


def is_script(path):
    return '__name__ == "__main__"' in path.read_text()


# the top-level scripts, bench's (bench/nanogpt_ref.py is a module the benchmarks and tests share), data's prepare.py
SCRIPTS = ["train.py", "sample.py", "eval.py", "export.py",
           *(p.relative_to(ROOT).as_posix() for p in sorted(ROOT.glob("bench/*.py")) if is_script(p)),
           *(p.relative_to(ROOT).as_posix() for p in sorted(ROOT.glob("data/*/prepare.py")))]
NAMES = {path.removesuffix(".py").replace("/", ".") for path in SCRIPTS}  # train, bench.decode, data.tinystories.prepare
# still importing train.py, until its Trainer moves into a module (issue 37): remove them from here then
def imported(path):
    """Every module name the file imports (import a.b; from a.b import c -> a.b and a.b.c)."""
    out = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text(), filename=path)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return out


def test_the_script_list():
    assert {"bench.decode", "bench.eval_throughput", "data.tinystories.prepare", "eval", "train"} <= NAMES
    assert "bench.nanogpt_ref" not in NAMES and all(is_script(ROOT / p) for p in SCRIPTS)


@pytest.mark.parametrize("path", SCRIPTS)
def test_no_script_imports_a_script(path):
    scripts = sorted(imported(path) & NAMES)
    assert not scripts, f"{path} imports the script(s) {scripts}: move what it uses into a module"


def test_the_editable_install_maps_every_module():
    """pyproject's py-modules and packages name every top-level module and package: the editable install maps only
    those, so a script run from a subfolder (python bench/x.py) finds nothing else."""
    import tomllib

    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setup["py-modules"]) == {p.stem for p in ROOT.glob("*.py")}
    assert set(setup["packages"]) == {p.parent.name for p in ROOT.glob("*/__init__.py")}
