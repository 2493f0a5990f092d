"""The package layout (docs/development.md): which subpackage may import which, no import
cycles, and a top level that holds only the shared modules and the subpackages.

Imports are read with ``ast`` from every module of src/vitscope, module-level and
function-level alike (a function-level import is still a dependency). :func:`check_tree`
does the work and returns the problems as sentences, so the synthetic tree below can show
that each rule fails when broken.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vitscope"

#: modules allowed at the top level of the package, besides the subpackages
TOP_LEVEL = frozenset({"__init__", "errors", "logs", "cosine"})

#: group -> the groups it may import (a group is a subpackage or a top-level module; the
#: package's own __init__, group "vitscope", holds only ``__version__`` and may be imported
#: by anyone). Imports inside a group are always allowed (the cycle check covers them).
ALLOWED: Mapping[str, frozenset[str]] = {
    "vitscope": frozenset(),
    "errors": frozenset(),
    "logs": frozenset({"errors"}),  # a function-level import: uncaught VitscopeErrors logged as one line
    "cosine": frozenset(),
    "io": frozenset({"errors", "logs", "cosine"}),
    "models": frozenset({"io", "errors", "logs"}),
    "attention": frozenset({"io", "errors", "logs"}),
    "features": frozenset({"io", "attention", "errors", "logs"}),
    "extract": frozenset({"models", "io", "attention", "features", "errors", "logs"}),
    "tasks": frozenset({"io", "models", "extract", "attention", "features", "cosine", "errors", "logs"}),
    "training": frozenset({"models", "io", "errors", "logs"}),
    "plots": frozenset({"io", "attention", "features", "tasks", "errors", "logs"}),
    "workflow": frozenset({"io", "models", "attention", "features", "extract", "tasks", "training", "testing",
                           "cosine", "errors", "logs"}),
    "testing": frozenset({"models", "io"}),
}

#: (group, imported group) -> the only modules of the imported group it may use
ONLY: Mapping[tuple[str, str], frozenset[str]] = {
    ("extract", "features"): frozenset({"vitscope.features.objects"}),
}

#: deliberate cycles, each broken by a function-level import (importer, imported): the
#: registry imports the formats package (whose modules register themselves with it) when a
#: format is first needed; the synthetic images write their videos with synthetic_video,
#: which draws with the image module's shapes
LAZY: frozenset[tuple[str, str]] = frozenset({
    ("vitscope.models.registry", "vitscope.models.formats"),
    ("vitscope.io.synthetic", "vitscope.io.synthetic_video"),
})


@dataclass(frozen=True)
class Edge:
    """One import: ``source`` imports ``target`` (dotted module names) at ``line``."""

    source: str
    target: str
    line: int
    function_level: bool


def module_name(root: Path, path: Path) -> str:
    """src/vitscope/io/dumps.py -> vitscope.io.dumps; a package's __init__.py -> the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (the package folder)."""
    return {module_name(root, p): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def _imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a module, with whether it sits inside a function."""

    def walk(node: ast.AST, inside: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, inside
            yield from walk(child, inside or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))

    yield from walk(tree, False)


def edges(root: Path) -> list[Edge]:
    """Every import of a package module by a package module (relative imports resolved).

    ``from a import b`` is an edge to ``a.b`` where that is a module, else to ``a``.
    """
    known = modules(root)
    top = root.name
    out = []
    for name, path in known.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node, inside in _imports(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == top]
            else:
                if node.level:
                    base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                elif node.module and node.module.split(".")[0] == top:
                    base = node.module.split(".")
                else:
                    continue
                for alias in node.names:
                    dotted = ".".join([*base, alias.name])
                    targets.append(dotted if dotted in known else ".".join(base))
            out += [Edge(name, t, node.lineno, inside) for t in dict.fromkeys(targets) if t != name]
    return out


def group(name: str) -> str:
    """vitscope.io.dumps -> io; vitscope.errors -> errors; vitscope -> vitscope."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_problems(found: list[Edge]) -> list[str]:
    """Imports across groups that :data:`ALLOWED` (and :data:`ONLY`) do not list."""
    problems = []
    for e in found:
        source, target = group(e.source), group(e.target)
        if source == target or target == "vitscope":
            continue
        if source not in ALLOWED:
            problems.append(f"{e.source}: group {source!r} is not in the layout table")
        elif target not in ALLOWED[source]:
            problems.append(f"{e.source} (line {e.line}) imports {e.target}: {source} may not import {target}")
        elif (source, target) in ONLY and e.target not in ONLY[source, target]:
            problems.append(
                f"{e.source} (line {e.line}) imports {e.target}: {source} may use only "
                f"{sorted(ONLY[source, target])} of {target}"
            )
    return problems


def cycle_problems(found: list[Edge]) -> list[str]:
    """Every import cycle between modules, as "a -> b -> a" (the :data:`LAZY` edges left out,
    each only if it is a function-level import)."""
    graph: dict[str, set[str]] = {}
    problems = []
    for e in found:
        if (e.source, e.target) in LAZY:
            if not e.function_level:
                problems.append(f"{e.source} (line {e.line}) imports {e.target} at module level; "
                                "that edge is allowed only inside a function (it closes a cycle)")
            continue
        graph.setdefault(e.source, set()).add(e.target)
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                problems.append("import cycle: " + " -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return problems


def top_level_problems(root: Path) -> list[str]:
    """Modules at the top level beyond :data:`TOP_LEVEL`, and folders that are not a subpackage
    of the layout table (or lack their __init__.py)."""
    problems = []
    for path in sorted(root.iterdir()):
        if path.name == "__pycache__":
            continue
        if path.is_file() and path.suffix == ".py" and path.stem not in TOP_LEVEL:
            problems.append(f"{path.name}: the top level holds only {sorted(TOP_LEVEL)} and the subpackages")
        elif path.is_dir() and any(path.rglob("*.py")):
            if path.name not in ALLOWED or path.name in TOP_LEVEL:
                problems.append(f"{path.name}/: not a subpackage of the layout table")
            elif not (path / "__init__.py").is_file():
                problems.append(f"{path.name}/: a subpackage needs an __init__.py")
    return problems


def check_tree(root: Path) -> list[str]:
    """Every layout problem of the package folder ``root`` (empty when it is in order)."""
    found = edges(root)
    return top_level_problems(root) + layer_problems(found) + cycle_problems(found)


# ------------------------------------------------------------------------------ the package


def test_the_package_follows_the_layout() -> None:
    assert check_tree(PACKAGE) == []


def test_the_checker_sees_the_real_imports() -> None:
    """Guards against a checker that passes because it reads nothing."""
    found = {(e.source, e.target) for e in edges(PACKAGE)}
    assert ("vitscope.extract.hooks", "vitscope.extract.fused") in found  # from . import fused, reductions
    assert ("vitscope.extract.run", "vitscope.features.objects") in found  # function-level
    assert ("vitscope.models.formats.dino", "vitscope.models.registry") in found  # from ..registry import ...
    assert ("vitscope.extract.run", "vitscope") in found  # from .. import __version__
    assert len(modules(PACKAGE)) > 60


def test_the_table_itself_has_no_cycle() -> None:
    graph = {g: set(allowed) for g, allowed in ALLOWED.items()}
    assert cycle_problems([Edge(a, b, 0, False) for a, targets in graph.items() for b in targets]) == []


# ---------------------------------------------------------------------- a synthetic package


def fake_tree(root: Path, files: Mapping[str, str]) -> Path:
    """A package ``vitscope`` under ``root`` holding ``files`` (path -> source), with the
    __init__.py of every folder."""
    package = root / "vitscope"
    for rel, source in {"__init__.py": '__version__ = "0"\n', **files}.items():
        path = package / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for folder in [path.parent, *path.parent.parents]:
            if folder == root:
                break
            (folder / "__init__.py").touch()
        path.write_text(source)
    return package


GOOD = {
    "errors.py": "class VitscopeError(Exception): ...\n",
    "io/dumps.py": "from ..errors import VitscopeError\n",
    "io/tables.py": "from .dumps import VitscopeError\n",
    "attention/metrics.py": "import numpy\nfrom ..io import dumps\n",
    "plots/common.py": "from ..io.tables import VitscopeError\nfrom ..attention import metrics\n",
    "extract/run.py": "from .. import __version__\n\ndef f():\n    from ..features.objects import X\n",
    "features/objects.py": "X = 1\n",
}


def test_a_tree_in_order_has_no_problem(tmp_path: Path) -> None:
    assert check_tree(fake_tree(tmp_path, GOOD)) == []


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # io may not import plots, at module level or inside a function
        ({"io/tables.py": "from ..plots import common\n"}, "vitscope.io.tables (line 1) imports vitscope.plots.common"),
        ({"io/tables.py": "def f():\n    import vitscope.plots.common\n"}, "io may not import plots"),
        # the attention metrics may not import extract
        ({"attention/metrics.py": "from ..extract import run\n"}, "attention may not import extract"),
        # extract may use only the objects of features
        ({"extract/run.py": "from ..features import cka\n", "features/cka.py": ""}, "extract may use only"),
        # a cycle inside a subpackage
        ({"io/dumps.py": "from . import tables\n"}, "import cycle: vitscope.io.dumps -> vitscope.io.tables"),
        # a module at the top level, and a folder outside the table
        ({"data.py": ""}, "data.py: the top level holds only"),
        ({"misc/helpers.py": ""}, "misc/: not a subpackage"),
    ],
    ids=["layer", "layer-in-function", "metrics-extract", "only-objects", "cycle", "top-level-module", "folder"],
)
def test_a_broken_rule_is_named(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    problems = check_tree(fake_tree(tmp_path, {**GOOD, **files}))
    assert any(expected in p for p in problems), problems


def test_a_lazy_edge_must_stay_in_a_function(tmp_path: Path) -> None:
    lazy = {"io/synthetic.py": "def f():\n    from . import synthetic_video\n",
            "io/synthetic_video.py": "from .synthetic import f\n"}
    assert check_tree(fake_tree(tmp_path / "a", {**GOOD, **lazy})) == []
    eager = {**lazy, "io/synthetic.py": "from . import synthetic_video\n"}
    problems = check_tree(fake_tree(tmp_path / "b", {**GOOD, **eager}))
    assert any("allowed only inside a function" in p for p in problems), problems
