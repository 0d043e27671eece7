"""The package layout stays true: imports point down the pipeline, and no module cycle exists.

Layers, top to bottom: cli -> report, integrations, study -> training, engines -> scheduling ->
scoring -> models -> data -> the ground floor (artifacts, schema, errors). Every import of a bss_cli module, at module
level or inside a function, must name a module of the same layer or a lower one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import bss_cli

PKG = Path(bss_cli.__file__).parent
LAYERS = {
    "ground": 0, "data": 1, "tracking": 1, "models": 2, "scoring": 3, "scheduling": 4, "training": 5,
    "engines": 5,
    "report": 6, "integrations": 6, "study": 6, "cli": 7,
}
# Entry points and facades that re-export from above by design.
EXEMPT = {"bss_cli", "bss_cli.__main__", "bss_cli.model"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:
        return LAYERS[parts[1]]
    return LAYERS["ground"]


def _imports(path: Path) -> set[str]:
    """Every bss_cli module that ``path`` imports (resolving ``from pkg import submodule``)."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and getattr(node.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:  # annotations only: no import at run time
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("bss_cli")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bss_cli"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (PKG.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    PKG.parent / Path(*sub.split(".")) / "__init__.py").exists()
                found.add(sub if is_module else node.module)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in sorted(PKG.rglob("*.py"))}


def test_every_subpackage_says_what_it_owns():
    for name in set(LAYERS) - {"ground"}:
        init = PKG / name / "__init__.py"
        if name == "integrations" and not init.exists():
            continue
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and "import" in doc, f"{init} needs a docstring saying what it owns and may import"


def test_imports_point_down_the_pipeline():
    upward = [
        f"{mod} (layer {_layer(mod)}) imports {dep} (layer {_layer(dep)})"
        for mod, deps in _graph().items() if mod not in EXEMPT
        for dep in deps if dep not in EXEMPT and _layer(dep) > _layer(mod)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles():
    graph = {m: {d for d in deps if d != m and d not in EXEMPT} for m, deps in _graph().items() if m not in EXEMPT}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            raise AssertionError("import cycle: " + " -> ".join(cycle))


def test_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from bss_cli.training.trainer import train\n")
    assert "bss_cli.training.trainer" in _imports(bad)
    assert _layer("bss_cli.training.trainer") > _layer("bss_cli.scoring.scores")


def test_public_names_and_light_start():
    code = ("import sys, bss_cli; from bss_cli.cli.app import app; "
            "assert 'torch' not in sys.modules, 'torch imported at start'")
    subprocess.run([sys.executable, "-c", code], check=True)  # a fresh interpreter: nothing imported before
    from bss_cli import ScheduleSampler  # noqa: F401  (the public names import torch: in this process)
    from bss_cli.model import FusionOutput as F2
    from bss_cli.models import FusionOutput, ModelConfig  # noqa: F401

    assert F2 is FusionOutput
