"""Code versions: the hash of the package code a rule's script runs, so editing that code reruns the rule.

A rule passes ``code=code_of("knn")`` (rules/common.smk) as a param: the hash of every package
module that ``workflow/scripts/knn.py`` imports, directly or not (found in the source, so a new
import is never forgotten and a moved module needs no rule edit), and of the package's
``__init__.py`` (its version). ``errors.py`` and ``logs.py`` at the package's top level are left
out: they shape messages and log files, never an output.

Imports are found by a regular expression over the source, not ``ast``: parsing every module
cost ~1 s of each Snakemake start (tests/test_code_version.py checks that the expression finds
what an ``ast`` walk finds). A line in a docstring that looks like an import can only add a file
to the hash, never drop one. Every file is read once per process (:class:`CodeVersions` caches).
Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from ..errors import ConfigError

#: package modules (at the package's top level) that shape only messages and log files: not hashed
IGNORED = ("errors.py", "logs.py")

#: an import statement at the start of a line (a parenthesised name list may span lines)
_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)|import[ \t]+([^\n]+))", re.M)


class CodeVersions:
    """Code versions of the scripts in ``scripts`` against the package in ``package`` (src/vitscope)."""

    def __init__(self, package: str | Path, scripts: str | Path) -> None:
        self.package = Path(package)
        self.scripts = Path(scripts)
        self._imports: dict[Path, frozenset[Path]] = {}
        self._digests: dict[Path, bytes] = {}

    def module_file(self, parts: list[str]) -> Path | None:
        """``<package>/<parts>.py``, or the ``__init__.py`` when ``parts`` name a subpackage (or None)."""
        path = self.package.joinpath(*parts)
        if path.with_suffix(".py").is_file():
            return path.with_suffix(".py")
        if (path / "__init__.py").is_file():
            return path / "__init__.py"
        return None

    def imports(self, file: Path) -> frozenset[Path]:
        """The package files that ``file`` (a package module or a script) imports, anywhere in it.

        ``from .x import y`` counts for a package module only (a script has no package);
        ``from vitscope.a import b`` names ``a`` (its ``__init__``) and ``a/b`` when that is a module.
        """
        if file not in self._imports:
            self._imports[file] = frozenset(self._scan(file))
        return self._imports[file]

    def _scan(self, file: Path) -> set[Path]:
        inside = file.is_relative_to(self.package)
        package = list(file.relative_to(self.package).with_suffix("").parts[:-1]) if inside else None
        candidates: list[list[str]] = []
        for source, names, plain in _IMPORT.findall(file.read_text()):
            if plain:
                dotted = [n.split()[0].split(".") for n in plain.split(",") if n.split()]
                candidates += [d[1:] for d in dotted if d[0] == "vitscope"]
                continue
            level = len(source) - len(source.lstrip("."))
            dotted = source[level:]
            if level:
                if package is None:
                    continue
                base = package[: len(package) - (level - 1)] + (dotted.split(".") if dotted else [])
            elif dotted.split(".")[0] == "vitscope":
                base = dotted.split(".")[1:]
            else:
                continue
            names = re.sub(r"#[^\n]*", "", names).strip("()").replace("\\", " ")  # comments, continuations
            listed = [n.split()[0] for n in names.split(",") if n.split()]
            candidates += [base] + [base + [n] for n in listed if n.isidentifier()]
        return {f for f in map(self.module_file, candidates) if f is not None}

    def files(self, script: str) -> list[Path]:
        """Every package file ``workflow/scripts/<script>.py`` reaches, sorted (what :meth:`code_of` hashes)."""
        path = self.scripts / f"{script}.py"
        if not path.is_file():
            raise ConfigError(f"code_of({script!r}): no script {path}")
        todo = [self.package / "__init__.py", *self.imports(path)]
        seen: set[Path] = set()
        while todo:
            file = todo.pop()
            if file in seen or (file.name in IGNORED and file.parent == self.package):
                continue
            seen.add(file)
            todo += self.imports(file)
        return sorted(seen)

    def code_of(self, script: str) -> str:
        """16 hex digits: SHA-256 over the name and source of every file in :meth:`files`."""
        digest = hashlib.sha256()
        for file in self.files(script):
            digest.update(self._digest(file))
        return digest.hexdigest()[:16]

    def _digest(self, file: Path) -> bytes:
        if file not in self._digests:
            digest = hashlib.sha256(file.relative_to(self.package).as_posix().encode())
            digest.update(file.read_bytes())
            self._digests[file] = digest.digest()
        return self._digests[file]
