"""The package's layers: ``cpi <- theory, fullscale <- mechinterp <- experiments``, and light imports.

Every module's imports are read with ``ast`` (including imports inside functions and under
``TYPE_CHECKING``) and checked against the layers: a package may import itself and the packages
in lower layers only; ``theory`` and ``fullscale`` share a layer and do not import each other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYER = {"cpi": 0, "theory": 1, "fullscale": 1, "mechinterp": 2, "experiments": 3}
#: the one module allowed to import every package: the ``cpi`` command line registers each package's
#: subcommands (the console script's composition root; it imports them inside ``build_parser``)
COMPOSITION_ROOTS = {"cpi/cli.py"}


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """``(line, top-level package)`` of every import in ``path`` that names one of the layered packages."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n.split(".")[0]) for n in names if n.split(".")[0] in LAYER]
    # importlib.import_module("pkg...") with a literal name counts too
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "import_module" and node.args
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            top = node.args[0].value.split(".")[0]
            if top in LAYER:
                found.append((node.lineno, top))
    return found


def package_files(root: Path = ROOT):
    """``(package, path, path relative to root)`` of every module of the layered packages."""
    for pkg in LAYER:
        for path in sorted((root / pkg).rglob("*.py")):
            yield pkg, path, path.relative_to(root).as_posix()


def layer_violations(root: Path = ROOT) -> list[str]:
    out = []
    for pkg, path, rel in package_files(root):
        if rel in COMPOSITION_ROOTS:
            continue
        for line, target in imported_packages(path):
            if target != pkg and LAYER[target] >= LAYER[pkg]:
                out.append(f"{rel}:{line}: {pkg} (layer {LAYER[pkg]}) imports {target} (layer {LAYER[target]})")
    return out


def test_no_import_against_the_layers():
    assert layer_violations() == []


def test_the_checker_sees_imports_inside_functions(tmp_path):
    """The check can fail: a fullscale module importing mechinterp inside a function is reported."""
    for pkg in LAYER:
        (tmp_path / pkg).mkdir()
    (tmp_path / "fullscale" / "bad.py").write_text(
        "import cpi\n\ndef f():\n    from mechinterp.probe import probe\n    import theory.simulator\n")
    (tmp_path / "experiments" / "ok.py").write_text("from mechinterp import probe\nimport fullscale, theory, cpi\n")
    (tmp_path / "cpi" / "lazy.py").write_text("import importlib\nimportlib.import_module('experiments.organism')\n")
    assert layer_violations(tmp_path) == [
        "cpi/lazy.py:2: cpi (layer 0) imports experiments (layer 3)",
        "fullscale/bad.py:4: fullscale (layer 1) imports mechinterp (layer 2)",
        "fullscale/bad.py:5: fullscale (layer 1) imports theory (layer 1)",
    ]


#: (statement, modules it must not import): the package ``__init__``s and the CLI stay light
LIGHT = [
    ("import theory; theory.SimConfig()", ("torch", "transformers", "transformer_lens")),
    ("import fullscale; fullscale.format_prompt; assert 'score_logprob' in fullscale.__all__",
     ("torch", "transformers", "transformer_lens")),
    ("import mechinterp, mechinterp.cli; assert 'run_probe' in dir(mechinterp) and 'probe' not in mechinterp.__all__", ("torch", "transformers", "transformer_lens")),
    ("import experiments, experiments.organism, experiments.cli; assert 'run_organism' in dir(experiments)",
     ("torch", "transformers", "transformer_lens", "pandas")),
    ("import cpi.cli; cpi.cli.build_parser()", ("torch", "transformers", "transformer_lens")),
]


@pytest.mark.parametrize("statement,heavy", LIGHT, ids=[s.split(";")[0] for s, _ in LIGHT])
def test_import_stays_light(statement, heavy):
    code = f"import sys\n{statement}\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "[]", f"`{statement}` imported {out.stdout.strip()}"


def module_getattr_sites(root: Path = ROOT) -> list[str]:
    """Modules that define a module-level ``__getattr__``: only package ``__init__``s may, and only
    through :func:`cpi.lazy.lazy_exports` (one lazy mechanism)."""
    out = []
    for _, path, rel in package_files(root):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "__getattr__":
                out.append(f"{rel}:{node.lineno}: def __getattr__")
            elif isinstance(node, ast.Assign) and any("__getattr__" in ast.dump(t) for t in node.targets):
                via_lazy = isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "lazy_exports"
                if path.name != "__init__.py" or not via_lazy:
                    out.append(f"{rel}:{node.lineno}: __getattr__ assigned")
    return out


def test_one_lazy_mechanism():
    assert module_getattr_sites() == []


def test_the_getattr_check_can_fail(tmp_path):
    for pkg in LAYER:
        (tmp_path / pkg).mkdir()
    (tmp_path / "fullscale" / "finetune.py").write_text("def __getattr__(name):\n    raise AttributeError(name)\n")
    (tmp_path / "theory" / "__init__.py").write_text("from cpi.lazy import lazy_exports\n"
                                                     "__getattr__, __dir__ = lazy_exports(__name__, {})\n")
    (tmp_path / "mechinterp" / "__init__.py").write_text("__getattr__ = lambda name: None\n")
    assert module_getattr_sites(tmp_path) == ["fullscale/finetune.py:1: def __getattr__",
                                              "mechinterp/__init__.py:1: __getattr__ assigned"]


PACKAGES = ["cpi", "theory", "fullscale", "mechinterp", "experiments", "experiments.organism", "experiments.controlled"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_export_shadows_a_submodule(package):
    """``from pkg import name`` must not mean a function or a module depending on what was imported first
    (``mechinterp.probe`` was both): no name in ``__all__`` is also a submodule's name."""
    import importlib
    import pkgutil

    mod = importlib.import_module(package)
    submodules = {m.name for m in pkgutil.iter_modules(mod.__path__)}
    assert sorted(set(mod.__all__) & submodules) == []
