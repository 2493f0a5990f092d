"""Every rule's code param hashes the package code its script runs (vitscope.workflow.versions).

A rule passes ``code=code_of("<its script>")``: the hash of every package module the script
imports, directly or not (found in the source), so a rule reruns when any of that code changes
and no rule names a module (a moved module needs no rule edit). errors and logs (top level)
shape messages only and are never hashed. The workflow side (an edit reruns the right jobs) is
in tests/test_workflow.py.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import pytest

from vitscope.errors import ConfigError
from vitscope.workflow.versions import IGNORED, CodeVersions

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "vitscope"
SCRIPTS = REPO / "workflow" / "scripts"


def rule_scripts() -> list[tuple[str, Path, str | None]]:
    """(rule, script, the code_of argument or None) of every rule with a script."""
    found = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for chunk in re.split(r"^(?=(?:local)?(?:rule|checkpoint) \w+:)", smk.read_text(), flags=re.M):
            rule = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", chunk)
            script = re.search(r'script:\s*"([^"]+)"', chunk)
            if not (rule and script):
                continue
            version = re.search(r'code=code_of\("(\w+)"\)', chunk)
            found.append((rule.group(1), (smk.parent / script.group(1)).resolve(), version and version.group(1)))
    return found


RULES = rule_scripts()


def test_rules_were_found() -> None:
    assert len(RULES) > 30
    assert {"extract", "davis_sequence", "plot_cls_maps", "train", "index_dataset"} <= {rule for rule, _, _ in RULES}


@pytest.mark.parametrize(("rule", "script", "name"), RULES, ids=[r for r, _, _ in RULES])
def test_code_param_hashes_the_rules_own_script(rule: str, script: Path, name: str | None) -> None:
    assert name is not None, f"rule {rule}: add the param code=code_of({script.stem!r})"
    assert name == script.stem, f"rule {rule} runs {script.name}: its param is code=code_of({script.stem!r})"


def test_rules_name_no_module() -> None:
    """code_of finds the modules itself: a rule file that lists them would go stale when one moves."""
    for smk in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        assert "code_version(" not in smk.read_text(), smk.name


def ast_imports(file: Path, versions: CodeVersions) -> set[Path]:
    """The package files ``file`` imports, found by an ``ast`` walk (what the regular expression must find)."""
    inside = file.is_relative_to(versions.package)
    package = list(file.relative_to(versions.package).with_suffix("").parts[:-1]) if inside else None
    candidates = []
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            candidates += [a.name.split(".")[1:] for a in node.names if a.name.split(".")[0] == "vitscope"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if package is None:
                    continue
                base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "vitscope":
                base = node.module.split(".")[1:]
            else:
                continue
            candidates += [base] + [base + [a.name] for a in node.names]
    return {f for f in map(versions.module_file, candidates) if f is not None}


def test_code_version_reads_imports_like_python() -> None:
    """For every package module and script, the files the regular expression finds equal those of an ``ast`` walk."""
    versions = CodeVersions(PACKAGE, SCRIPTS)
    for file in [*sorted(PACKAGE.rglob("*.py")), *sorted(SCRIPTS.glob("*.py"))]:
        assert versions.imports(file) == ast_imports(file, versions), file.relative_to(REPO)
    assert any(f.stem == "fused" for f in versions.files("extract"))  # imported by extraction, named by no rule


@pytest.mark.parametrize(("rule", "script", "name"), RULES, ids=[r for r, _, _ in RULES])
def test_code_of_covers_every_module_the_script_reaches(rule: str, script: Path, name: str | None) -> None:
    """Closed under imports (an ast walk), the package's __init__ in, top-level errors and logs out."""
    versions = CodeVersions(PACKAGE, SCRIPTS)
    files = set(versions.files(script.stem))
    todo, reached = list(ast_imports(script, versions)), {PACKAGE / "__init__.py"}
    while todo:
        file = todo.pop()
        if file in reached or (file.parent == PACKAGE and file.name in IGNORED):
            continue
        reached.add(file)
        todo += ast_imports(file, versions)
    assert files == reached, rule
    assert not {PACKAGE / name for name in IGNORED} & files


@pytest.fixture
def package_copy(tmp_path: Path) -> CodeVersions:
    shutil.copytree(PACKAGE, tmp_path / "src" / "vitscope", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(SCRIPTS, tmp_path / "scripts")
    return CodeVersions(tmp_path / "src" / "vitscope", tmp_path / "scripts")


def fresh(versions: CodeVersions) -> CodeVersions:
    return CodeVersions(versions.package, versions.scripts)  # caches files for its process


def test_editing_an_imported_module_changes_the_hash(package_copy: CodeVersions) -> None:
    before = {script: package_copy.code_of(script) for script in ("extract", "knn", "plot_cls_maps")}
    deep = next(f for f in package_copy.files("extract") if f.stem == "fused")  # imported by extraction's code
    with open(deep, "a") as handle:
        handle.write("\n# edited\n")
    after = {script: fresh(package_copy).code_of(script) for script in before}
    assert after["extract"] != before["extract"], deep
    for script in ("knn", "plot_cls_maps"):
        assert (after[script] != before[script]) == (deep in package_copy.files(script)), script
    with open(package_copy.package / "__init__.py", "a") as handle:
        handle.write("\n# edited\n")
    assert all(fresh(package_copy).code_of(s) != after[s] for s in before)  # the package version counts


def test_editing_errors_or_logs_changes_no_hash(package_copy: CodeVersions) -> None:
    scripts = sorted(p.stem for p in package_copy.scripts.glob("*.py"))
    before = {script: package_copy.code_of(script) for script in scripts}
    for name in IGNORED:
        with open(package_copy.package / name, "a") as handle:
            handle.write("\n# edited\n")
    assert {script: fresh(package_copy).code_of(script) for script in scripts} == before


def test_a_new_import_joins_the_hash(package_copy: CodeVersions) -> None:
    """A script that starts importing a module hashes it from then on, with no rule edit."""
    script = package_copy.scripts / "best_layers.py"
    files = package_copy.files("best_layers")
    module = next(p for p in sorted(package_copy.package.glob("*.py")) if p not in files and p.name not in IGNORED)
    before = package_copy.code_of("best_layers")
    script.write_text(script.read_text() + f"\nfrom vitscope import {module.stem}  # noqa\n")
    assert module in fresh(package_copy).files("best_layers")
    assert fresh(package_copy).code_of("best_layers") != before


def test_unknown_script_is_refused(package_copy: CodeVersions) -> None:
    with pytest.raises(ConfigError, match=r"code_of\('nope'\): no script .*nope.py"):
        package_copy.code_of("nope")
