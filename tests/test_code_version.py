"""Every rule's code_version names the package modules its script imports.

code_version (rules/common.smk) hashes the named modules and, found in their source,
everything they import; so a rule reruns when any of that code changes, as long as it
names at least what its script imports directly. errors and logs shape messages only
and are never hashed. The workflow side (an edit reruns the right jobs) is in
tests/test_workflow.py.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "vitscope"
IGNORED = {"errors", "logs"}


def rule_scripts() -> list[tuple[str, Path, list[str] | None]]:
    """(rule, script, code_version names or None) of every rule with a script."""
    found = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for chunk in re.split(r"^(?=(?:(?:local)?rule|checkpoint) \w+:)", smk.read_text(), flags=re.M):
            rule = re.match(r"(?:(?:local)?rule|checkpoint) (\w+):", chunk)
            script = re.search(r'script:\s*"([^"]+)"', chunk)
            if not (rule and script):
                continue
            version = re.search(r"code_version\(([^)]*)\)", chunk)
            names = re.findall(r'"([^"]+)"', version.group(1)) if version else None
            found.append((rule.group(1), (smk.parent / script.group(1)).resolve(), names))
    return found


def is_module(name: str) -> bool:
    path = PACKAGE / name
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def script_modules(script: Path) -> set[str]:
    """Package modules a script imports, as code_version names them ("io/dumps", "tasks/knn")."""
    modules = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            modules |= {"/".join(a.name.split(".")[1:]) for a in node.names if a.name.startswith("vitscope.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "vitscope":
            base = "/".join(node.module.split(".")[1:])
            for alias in node.names:
                name = f"{base}/{alias.name}" if base else alias.name
                modules.add(name if is_module(name) else base)
    return {m for m in modules if m and m not in IGNORED}


RULES = rule_scripts()


def test_rules_were_found() -> None:
    assert len(RULES) > 30
    assert {"extract", "davis_sequence", "plot_cls_maps", "train"} <= {rule for rule, _, _ in RULES}


@pytest.mark.parametrize(("rule", "script", "names"), RULES, ids=[r for r, _, _ in RULES])
def test_code_version_names_what_the_script_imports(rule: str, script: Path, names: list[str] | None) -> None:
    modules = script_modules(script)
    if not modules:
        return
    assert names is not None, f"rule {rule}: its script imports {sorted(modules)} but it has no code_version param"
    missing = sorted(m for m in modules if not any(m == n or m.startswith(n + "/") for n in names))
    assert not missing, f"rule {rule}: add {missing} to its code_version({', '.join(map(repr, names))})"
    assert all(is_module(n) for n in names), f"rule {rule}: code_version names a module that does not exist"


def package_imports_from_common_smk():
    """rules/common.smk's _package_imports (a regular expression over the source), run here."""
    import functools

    source = (REPO / "rules/common.smk").read_text()
    start, end = source.index("def _package_file(parts):"), source.index("def code_version(*modules):")
    namespace = {"functools": functools, "re": re, "PACKAGE": PACKAGE, "Path": Path}
    exec(source[start:end], namespace)
    return namespace["_package_file"], namespace["_package_imports"]


def test_code_version_reads_imports_like_python() -> None:
    """For every package module, the files common.smk finds imported equal those of an ``ast`` walk."""
    package_file, package_imports = package_imports_from_common_smk()
    for file in sorted(PACKAGE.rglob("*.py")):
        package = list(file.relative_to(PACKAGE).with_suffix("").parts[:-1])
        candidates = []
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                candidates += [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "vitscope"]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
                elif node.module and node.module.split(".")[0] == "vitscope":
                    base = node.module.split(".")[1:]
                else:
                    continue
                candidates += [base] + [base + [a.name] for a in node.names]
        expected = {f for f in map(package_file, candidates) if f is not None}
        assert package_imports(file) == expected, file.relative_to(PACKAGE)
    assert package_file(["extract", "fused"]) in package_imports(PACKAGE / "extract" / "hooks.py")
