"""Checkers for the documentation (tests/test_docs.py): plain functions that take a doc's text
(and the repository root) and return a list of problems, one line each; an empty list is a pass.

The documents are README.md, docs/**/*.md and the report captions workflow/report/*.rst. What
they cite must exist:

- relative links and images resolve to files of the repository, and ``#anchor``s into a .md
  file name one of its headings (GitHub's slugs);
- repository paths (``src/...``, ``docs/...``, ``Makefile``, ...; ``{x}``, ``<x>``, ``*`` and
  ``...`` are wildcards) exist;
- ``results/...`` and ``logs/...`` paths are outputs, logs or benchmarks of some rule
  (rules/*.smk, the Snakefile) or the Makefile;
- ``vitscope.x.y`` names a module or attribute of the package;
- the code examples (fenced blocks) name models and datasets of the config they run with
  (config.yaml unless ``--configfile``), rule names as targets, and files those make;
- ``protocols.md`` is cited only as docs/protocols.md; no sentence of 60+ characters is
  written twice in one doc, and no list links the same target twice (merge artefacts).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import os
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

#: first segments of a path in the repository that the docs cite
REPO_DIRS = ("src", "docs", "tests", "benchmarks", "configs", "rules", "workflow", "envs", "profiles", ".ci")
#: top-level files the docs cite by name
REPO_FILES = ("Makefile", "Snakefile", "config.yaml", "pyproject.toml", "README.md")
#: folders never searched for files (build outputs, environments)
SKIP_DIRS = {".git", ".venv", ".venv-slurm", "results", "logs", ".snakemake", "__pycache__", ".pytest_cache",
             ".ruff_cache", "node_modules"}
#: a sentence at least this long written twice in one doc is a merge artefact
MIN_DUPLICATE = 60

STAR = "\x01"  # matches any characters but "/" (a wildcard, a placeholder)
DSTAR = "\x02"  # matches anything, "/" included ("...", "**")

_FENCE = re.compile(r"^( {0,3})(```+|~~~+)([^\n]*)\n(.*?)^\1\2[ \t]*$", re.S | re.M)
_MD_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_RST_LINK = re.compile(r"`[^`<]*<([^>`]+)>`__?")
_MD_CODE = re.compile(r"(`+)(.+?)\1", re.S)
_RST_CODE = re.compile(r"``(.+?)``", re.S)
_PATH_END = "`'\"()[],;<>|"
_SEGMENT = r"(?:\{[^{}\s]*\}|<[\w -]+>|[^\s" + re.escape(_PATH_END) + r"{}])"
_REPO_PATH = re.compile(
    r"(?<![\w./{}<>-])((?:" + "|".join(re.escape(d) for d in REPO_DIRS) + r")/" + _SEGMENT + r"*|(?:"
    + "|".join(re.escape(f) for f in REPO_FILES) + r")(?![\w.-]))"
)
_OUTPUT_PATH = re.compile(r"(?<![\w./{}<>-])((?:results|logs)/" + _SEGMENT + r"*)")
_DOTTED = re.compile(r"(?<![\w./-])(vitscope(?:\.[A-Za-z_]\w*)+)")
_DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


# --------------------------------------------------------------------------- reading docs


@dataclass(frozen=True)
class Doc:
    """One document: its path relative to the repository root and its text."""

    path: str
    text: str

    @property
    def rst(self) -> bool:
        return self.path.endswith(".rst")


def doc_paths(root: Path = ROOT) -> list[str]:
    """README.md, docs/**/*.md and workflow/report/*.rst, relative to ``root``, sorted."""
    found = ["README.md"] if (root / "README.md").exists() else []
    found += sorted(p.relative_to(root).as_posix() for p in (root / "docs").rglob("*.md"))
    found += sorted(p.relative_to(root).as_posix() for p in (root / "workflow/report").glob("*.rst"))
    return found


def read_docs(root: Path = ROOT) -> list[Doc]:
    return [Doc(path, (root / path).read_text(encoding="utf-8")) for path in doc_paths(root)]


def fences(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a markdown text: (info string, code)."""
    return [(m.group(3).strip(), m.group(4)) for m in _FENCE.finditer(text)]


def without_fences(text: str) -> str:
    """The text with its fenced code blocks blanked (line count kept)."""
    return _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def code_spans(doc: Doc) -> list[str]:
    """Inline code outside fenced blocks: ``x`` in rst, `x` (any number of backticks) in markdown."""
    prose = without_fences(doc.text)
    if doc.rst:
        return [m.group(1) for m in _RST_CODE.finditer(prose)]
    return [m.group(2).strip() for m in _MD_CODE.finditer(prose)]


def link_targets(doc: Doc) -> list[str]:
    """Targets of the markdown links and images (or rst hyperlinks) outside fenced blocks."""
    prose = without_fences(doc.text)
    if doc.rst:
        return [m.group(1).strip() for m in _RST_LINK.finditer(prose)]
    prose = _MD_CODE.sub("", prose)
    return [m.group(1) for m in _MD_LINK.finditer(prose)]


def headings(text: str) -> list[str]:
    """The ATX headings (``#`` to ``######``) of a markdown text, outside fenced blocks."""
    out = []
    for line in without_fences(text).splitlines():
        m = re.match(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            out.append(m.group(1))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation but "-" and "_"
    removed, spaces to "-"."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a markdown text: heading slugs, repeated ones numbered -1, -2, ... as GitHub does."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(text):
        base = slug(heading)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    out |= {m.group(1) for m in re.finditer(r"<a\s+(?:name|id)=\"([^\"]+)\"", text)}
    return out


def paragraphs(text: str) -> list[str]:
    """Prose paragraphs: fenced code and table rows dropped, each heading and list item its own
    paragraph, lines joined with spaces."""
    out: list[str] = []
    current: list[str] = []
    for line in without_fences(text).splitlines():
        stripped = line.strip()
        item = re.match(r"^(?:[-*+]|\d+\.)\s+(.*)$", stripped)
        head = re.match(r"^#{1,6}\s+(.*)$", stripped)
        if not stripped or stripped.startswith("|") or item or head:
            if current:
                out.append(" ".join(current))
            current = []
            if item or head:
                current = [(item or head).group(1)]
            continue
        current.append(stripped)
    if current:
        out.append(" ".join(current))
    return out


def sentences(text: str) -> list[str]:
    """The sentences of the prose (:func:`paragraphs` split after ".", "!" or "?")."""
    out = []
    for paragraph in paragraphs(text):
        out += [s.strip() for s in re.split(r"(?<=[.!?])\s+(?=\S)", paragraph) if s.strip()]
    return out


def sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of every level-2 section of a markdown text ("" for the part before the first)."""
    out = []
    heading, body = "", []
    for line in text.splitlines():
        m = re.match(r"^##\s+(.*)$", line)
        if m:
            out.append((heading, "\n".join(body)))
            heading, body = m.group(1).strip(), []
        else:
            body.append(line)
    out.append((heading, "\n".join(body)))
    return out


# --------------------------------------------------------------------------- patterns


def _strip_path(token: str) -> str:
    """A cited path without trailing punctuation, a ``::test`` suffix or a ``#anchor``."""
    token = token.split("::")[0]
    while token and token[-1] in ".,:;!?)'\"`":
        if token.endswith("...") and len(token) > 3:  # "results/attention/..." keeps its ellipsis
            break
        token = token[:-1]
    return token


def expand_braces(path: str) -> list[str]:
    """``a.{csv,md}`` -> ``a.csv``, ``a.md`` (a brace group with a comma is an alternation)."""
    m = re.search(r"\{([^{}]*,[^{}]*)\}", path)
    if not m:
        return [path]
    out = []
    for option in m.group(1).split(","):
        out += expand_braces(path[: m.start()] + option.strip() + path[m.end():])
    return out


def to_tokens(pattern: str) -> str:
    """A cited path or rule pattern as a match string: ``{x}``, ``{x:02d}``, ``<x>``, ``*`` -> STAR,
    ``...`` and ``**`` -> DSTAR, ``{{`` / ``}}`` (escaped braces in expand) -> a placeholder."""
    pattern = pattern.replace("{{", "{").replace("}}", "}")
    pattern = pattern.replace("**", DSTAR).replace("...", DSTAR)
    pattern = re.sub(r"\{[^{}/]*\}", STAR, pattern)
    pattern = re.sub(r"<[\w -]+>", STAR, pattern)
    return pattern.replace("*", STAR)


def compatible(a: str, b: str) -> bool:
    """Whether two token strings (:func:`to_tokens`) can match one and the same path."""

    @functools.cache
    def match(i: int, j: int) -> bool:
        ta = a[i] if i < len(a) else None
        tb = b[j] if j < len(b) else None
        if ta is None and tb is None:
            return True
        if ta in (STAR, DSTAR):
            if match(i + 1, j):
                return True
            # the wildcard of a takes b's next token: a STAR takes no "/" and no DSTAR
            if tb is not None and not (ta == STAR and tb in ("/", DSTAR)) and match(i, j + 1):
                return True
        if tb in (STAR, DSTAR):
            if match(i, j + 1):
                return True
            if ta is not None and not (tb == STAR and ta in ("/", DSTAR)) and match(i + 1, j):
                return True
        if ta is not None and tb is not None and ta not in (STAR, DSTAR) and tb not in (STAR, DSTAR):
            return ta == tb and match(i + 1, j + 1)
        return False

    return match(0, 0)


@dataclass(frozen=True)
class Output:
    """An output, log or benchmark pattern of a rule (``directory`` outputs hold any file below them)."""

    pattern: str
    rule: str
    directory: bool = False

    def tokens(self) -> list[str]:
        base = to_tokens(self.pattern.rstrip("/"))
        return [base, base + "/" + DSTAR] if self.directory else [base]

    def regex(self) -> tuple[re.Pattern[str], list[str]]:
        """A regex of the pattern with one group per wildcard, and the wildcards' names."""
        names: list[str] = []
        parts = []
        text = self.pattern.replace("{{", "{").replace("}}", "}")
        pos = 0
        for m in re.finditer(r"\{([^{}/:]*)(?::[^{}]*)?\}", text):
            parts.append(re.escape(text[pos: m.start()]))
            parts.append(r"([^/]+)")
            names.append(m.group(1))
            pos = m.end()
        parts.append(re.escape(text[pos:]))
        tail = r"(?:/.*)?" if self.directory else ""
        return re.compile("".join(parts) + tail, re.S), names


_RULE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.M)
_SECTION = re.compile(r"^( {4}|\t)(\w+):")
_QUOTED = re.compile(r"(directory\(\s*)?f?\"((?:results|logs)/[^\"]*)\"")


def rule_names(root: Path = ROOT) -> set[str]:
    """Every rule and checkpoint name of the Snakefile and rules/*.smk."""
    names: set[str] = set()
    for path in [root / "Snakefile", *sorted((root / "rules").glob("*.smk"))]:
        if path.exists():
            names |= set(_RULE.findall(path.read_text(encoding="utf-8")))
    if root.resolve() == ROOT.resolve():  # rules/targets.smk makes the target rules from the registry
        from vitscope.workflow import registry

        for analysis in registry.ANALYSES.values():
            names |= {figure.target_rule.format(task=analysis.name) for figure in analysis.figures}
            names |= {analysis.target} if analysis.target else set()
    return names


def rule_outputs(root: Path = ROOT) -> list[Output]:
    """The quoted ``results/...`` and ``logs/...`` strings of every rule's output, log and benchmark
    sections (rules/*.smk and the Snakefile), and the ``results/...`` names of the Makefile."""
    out: list[Output] = []
    for path in [root / "Snakefile", *sorted((root / "rules").glob("*.smk"))]:
        if not path.exists():
            continue
        rule, section = "", ""
        for line in path.read_text(encoding="utf-8").splitlines():
            m = _RULE.match(line)
            if m:
                rule, section = m.group(1), ""
                continue
            if line and not line[0].isspace():
                rule, section = "", ""
                continue
            s = _SECTION.match(line)
            if s:
                section = s.group(2)
            if rule and section in ("output", "log", "benchmark"):
                for q in _QUOTED.finditer(line):
                    out.append(Output(q.group(2), rule, directory=bool(q.group(1))))
    makefile = root / "Makefile"
    if makefile.exists():
        for m in re.finditer(r"(results/[^\s)\"']+)", makefile.read_text(encoding="utf-8")):
            out.append(Output(m.group(1), "Makefile"))
    return out


def repo_entries(root: Path) -> list[str]:
    """Every file and folder of the repository (build outputs and environments left out)."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        rel = Path(folder).relative_to(root).as_posix()
        prefix = "" if rel == "." else rel + "/"
        found += [prefix + d for d in dirs] + [prefix + f for f in files]
    return found


# --------------------------------------------------------------------------- what a doc cites


def _candidates(doc: Doc) -> Iterator[tuple[str, bool]]:
    """Every piece of a doc a path may sit in: (text, in a fenced block). Link targets are left out
    (:func:`check_links` resolves them relative to the doc)."""
    prose = without_fences(doc.text)
    if doc.rst:
        prose = re.sub(r"\{\{.*?\}\}", "{x}", prose)  # Jinja: {{ snakemake.wildcards.dataset }} is a wildcard
    else:
        prose = _MD_LINK.sub(lambda m: m.group(0).split("](")[0], prose)  # link text only
    yield prose, False
    for _, code in fences(doc.text):
        yield code, True


def cited_repo_paths(doc: Doc) -> list[str]:
    """Repository paths cited anywhere in a doc but its link targets (deduplicated, in order)."""
    seen: dict[str, None] = {}
    for text, _ in _candidates(doc):
        for m in _REPO_PATH.finditer(text):
            token = _strip_path(m.group(1))
            if token and token not in ("docs", "src"):
                seen.setdefault(token, None)
    return list(seen)


def cited_outputs(doc: Doc) -> list[tuple[str, bool]]:
    """``results/...`` and ``logs/...`` paths cited in a doc: (path, in a fenced block)."""
    seen: dict[tuple[str, bool], None] = {}
    for text, fenced in _candidates(doc):
        for m in _OUTPUT_PATH.finditer(text):
            token = _strip_path(m.group(1))
            if "/" in token.rstrip("/"):
                seen.setdefault((token, fenced), None)
    return list(seen)


# --------------------------------------------------------------------------- checks


def check_links(doc: Doc, root: Path = ROOT) -> list[str]:
    """Every relative link (and image) resolves to a file or folder inside ``root``; an ``#anchor``
    into a .md file (or into this doc) is one of its heading slugs."""
    problems = []
    base = (root / doc.path).parent
    for target in link_targets(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        if not path:
            if anchor and not doc.rst and anchor not in anchors(doc.text):
                problems.append(f"{doc.path}: link '#{anchor}': no such heading in this doc")
            continue
        resolved = (base / path).resolve()
        try:
            resolved.relative_to(root.resolve())
        except ValueError:
            problems.append(f"{doc.path}: link '{target}' points outside the repository")
            continue
        if not resolved.exists():
            problems.append(f"{doc.path}: link '{target}': no such file")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text(encoding="utf-8")):
            problems.append(f"{doc.path}: link '{target}': {path} has no heading with anchor #{anchor}")
    return problems


def check_repo_paths(doc: Doc, root: Path = ROOT, entries: Sequence[str] | None = None) -> list[str]:
    """Every cited repository path exists; one with wildcards (``{x}``, ``<x>``, ``*``, ``...``)
    matches at least one file or folder. An ``#anchor`` after a .md path names one of its headings."""
    problems = []
    listing: list[str] | None = list(entries) if entries is not None else None
    for cited in cited_repo_paths(doc):
        path, _, anchor = cited.partition("#")
        options = expand_braces(path)
        found = False
        for option in options:
            tokens = to_tokens(option.rstrip("/"))
            if STAR not in tokens and DSTAR not in tokens:
                found = (root / option).exists()
            else:
                if listing is None:
                    listing = repo_entries(root)
                found = any(compatible(tokens, entry) for entry in listing)
            if not found:
                problems.append(f"{doc.path}: cites '{cited}', which the repository does not hold")
                break
        if found and anchor and path.endswith(".md") and (root / path).exists():
            if anchor not in anchors((root / path).read_text(encoding="utf-8")):
                problems.append(f"{doc.path}: cites '{cited}': {path} has no heading with anchor #{anchor}")
    return problems


def check_outputs(doc: Doc, outputs: Sequence[Output]) -> list[str]:
    """Every cited ``results/...`` or ``logs/...`` path can be made by some rule (or the Makefile).
    A trailing "/" cites a folder: some output must lie below it."""
    problems = []
    tokens = [(t, o) for o in outputs for t in o.tokens()]
    for cited, _ in cited_outputs(doc):
        for option in expand_braces(cited):
            want = to_tokens(option)
            if option.endswith("/"):
                want = want + DSTAR
            # a folder may be cited without its "/": a last segment with no suffix
            folder = want + "/" + DSTAR if "." not in option.rstrip("/").rsplit("/", 1)[-1] else want
            if not any(compatible(want, t) or compatible(folder, t) for t, _ in tokens):
                problems.append(f"{doc.path}: cites '{cited}', which no rule writes (rules/*.smk outputs and logs)")
                break
    return problems


def check_block_format(doc: Doc, formats: Iterable[str]) -> list[str]:
    """A block folder in a cited path is written with the code's format (``block{b:02d}``, i.e.
    ``block01``), never ``block{b}``: ``formats`` are the specs the package uses (:func:`block_formats`)."""
    formats = set(formats)
    problems = []
    for text, _ in _candidates(doc):
        for m in re.finditer(r"(?:results|logs|masks|sequences)/\S*?block(\{[^}]*\}|\d+)", text):
            field = m.group(1)
            if field.startswith("{"):
                spec = field[1:-1].partition(":")[2]
                if spec not in formats:
                    problems.append(f"{doc.path}: '{m.group(0)}': block folders are named with "
                                    f"{' or '.join(sorted(':' + f for f in formats))} (e.g. block01)")
            elif formats and not any(len(field) == int(re.sub(r'\D', '', f) or 0) for f in formats):
                problems.append(f"{doc.path}: '{m.group(0)}': block folders have {sorted(formats)} digits")
    return problems


def block_formats(root: Path = ROOT) -> set[str]:
    """The format specs of block folder names in the package (``f"block{block + 1:02d}"`` -> ``02d``)."""
    specs = set()
    for path in (root / "src").rglob("*.py"):
        specs |= set(re.findall(r"f[\"']block\{[^}:]*:(\w+)\}", path.read_text(encoding="utf-8")))
    return specs


def module_attribute(dotted: str, src: Path = ROOT / "src") -> bool:
    """Whether ``vitscope.a.b`` names a module, package or attribute (of a module or a class in it).
    Read from the source where it can be (no import: fast, no torch); imported otherwise."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        base = src.joinpath(*parts[:cut])
        module = base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
        if module.exists():
            rest = parts[cut:]
            if not rest:
                return True
            if _static_attribute(module, rest):
                return True
            if src.resolve() != (ROOT / "src").resolve():
                return False  # another tree (a test's): importing would find this checkout's package
            return _imported_attribute(".".join(parts[:cut]), rest)
    return False


def _static_attribute(module: Path, rest: Sequence[str]) -> bool:
    body: list[ast.stmt] = ast.parse(module.read_text(encoding="utf-8")).body
    for i, name in enumerate(rest):
        found = None
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
                found = node
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    found = node
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                    found = node
        if found is None:
            return False
        if i == len(rest) - 1:
            return True
        if not isinstance(found, ast.ClassDef):
            return False
        body = found.body
    return True


def _imported_attribute(module: str, rest: Sequence[str]) -> bool:
    try:
        obj: Any = importlib.import_module(module)
    except Exception:  # a module that fails to import names nothing the docs may cite
        return False
    for name in rest:
        if not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True


def check_dotted(doc: Doc, src: Path = ROOT / "src") -> list[str]:
    """Every ``vitscope.x.y`` of a doc names a module or attribute that exists."""
    problems = []
    seen = set()
    for text, _ in _candidates(doc):
        for m in _DOTTED.finditer(text):
            dotted = m.group(1)
            if dotted not in seen:
                seen.add(dotted)
                if not module_attribute(dotted, src):
                    problems.append(f"{doc.path}: '{dotted}' is no module or attribute of the package")
    return problems


def check_protocols(doc: Doc, root: Path = ROOT) -> list[str]:
    """``protocols.md`` is cited only as the repository's docs/protocols.md: a link resolving to it,
    or (in the report captions, which have no links) the literal ``docs/protocols.md#anchor``."""
    problems = []
    target = (root / "docs/protocols.md").resolve()
    text = without_fences(doc.text)
    allowed: list[tuple[int, int]] = []
    if doc.rst:
        for m in _RST_CODE.finditer(text):
            if m.group(1).split("#")[0] == "docs/protocols.md":
                allowed.append(m.span())
        for m in _RST_LINK.finditer(text):
            allowed.append(m.span())
    else:
        for m in _MD_LINK.finditer(text):
            path = m.group(1).split("#")[0]
            if path and ((root / doc.path).parent / path).resolve() == target:
                allowed.append(m.span())
    for m in re.finditer(r"protocols\.md", text):
        if not any(a <= m.start() < b for a, b in allowed):
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"{doc.path}:{line}: cites protocols.md without a link to docs/protocols.md")
    return problems


def check_duplicates(doc: Doc, minimum: int = MIN_DUPLICATE) -> list[str]:
    """No sentence of ``minimum``+ characters (inline code counted as one symbol) twice in one doc,
    whole or inside another sentence; no list that links the same target from two items."""
    problems = []
    prose = sentences(doc.text)
    keyed = [(s, re.sub(r"`[^`]*`", "`", s)) for s in prose]
    long = [(s, k) for s, k in keyed if len(k) >= minimum]
    for i, (s, _) in enumerate(long):
        for j, (t, _) in enumerate(long):
            if i != j and (s == t and i < j or s != t and s in t):
                problems.append(f"{doc.path}: written twice: '{s[:100]}'")
                break
    items: dict[str, int] = {}
    block = 0
    for line in without_fences(doc.text).splitlines():
        m = re.match(r"^\s*[-*+]\s+\[[^\]]*\]\(([^)#]+)", line)
        if not line.strip() or line.lstrip().startswith("#"):
            block += 1
        if m:
            key = f"{block}:{m.group(1)}"
            items[key] = items.get(key, 0) + 1
            if items[key] == 2:
                problems.append(f"{doc.path}: one list links {m.group(1)} from two items")
    return problems


def check_quoted_sections(doc: Doc, root: Path = ROOT) -> list[str]:
    """A cited section (`docs/x.md`, "Heading" or `x.md`, "Heading") begins one of that doc's headings."""
    problems = []
    text = without_fences(doc.text)
    for m in re.finditer(r"`{0,2}((?:docs/)?[\w-]+\.md)`{0,2},?\s+\"([^\"]+)\"", text):
        path = m.group(1) if m.group(1).startswith("docs/") else f"docs/{m.group(1)}"
        if not (root / path).exists():
            continue  # check_repo_paths reports it
        titles = headings((root / path).read_text(encoding="utf-8"))
        quoted = " ".join(m.group(2).split())
        if not any(t.startswith(quoted) for t in titles):
            problems.append(f"{doc.path}: cites section \"{quoted}\" of {path}, which has no such heading")
    return problems


# --------------------------------------------------------------------------- code examples


@dataclass(frozen=True)
class Vocabulary:
    """The models and datasets a config makes outputs for."""

    models: frozenset[str]
    datasets: frozenset[str]

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> Vocabulary:
        models = frozenset(config.get("models") or {})
        datasets = config.get("datasets") or {}
        used = set()
        for analysis in (config.get("analyses") or {}).values():
            if isinstance(analysis, Mapping):
                used |= set(analysis.get("datasets") or [])
                if isinstance(analysis.get("train"), str):
                    used.add(analysis["train"])
        # generated datasets are written (and indexed) too, and so is every training set
        used |= {n for n, d in datasets.items() if isinstance(d, Mapping) and d.get("kind") == "synthetic"}
        for entry in (config.get("models") or {}).values():
            train = entry.get("train") if isinstance(entry, Mapping) else None
            if isinstance(train, Mapping) and train.get("dataset"):
                used.add(train["dataset"])
        return cls(models, frozenset(used & set(datasets)))


MODEL_WILDCARDS = ("model", "model_a", "model_b", "alias")
DATASET_WILDCARDS = ("dataset",)

# snakemake options that take one value, and those that take every following key=value
_ONE_VALUE = {"--cores", "-c", "--jobs", "-j", "--configfile", "--profile", "--report", "--directory", "-d",
              "--sdm", "--software-deployment-method", "--until", "--omit-from", "--workflow-profile",
              "--snakefile", "-s", "--rerun-triggers", "--executor", "-e", "--local-cores"}
_MANY_VALUES = {"--config", "-C", "--default-resources", "--set-resources", "--set-threads", "--configfiles",
                "--forcerun", "-R", "--allowed-rules"}


def check_output_names(path: str, outputs: Sequence[Output], vocabulary: Vocabulary) -> str | None:
    """Problem with one concrete (or partly concrete) output path of a code example, or None: it must
    be a rule's output with model and dataset wildcards bound to the vocabulary's names."""
    sentinel = "\x00"
    want = to_tokens(path)
    if path.endswith("/"):
        want += DSTAR
    candidates = [o for o in outputs if any(compatible(want, t) for t in o.tokens())]
    if not candidates:
        return f"'{path}' is written by no rule"
    concrete = re.sub(r"\{[^{}/]*\}|<[\w -]+>", sentinel, path)
    bad = []
    for output in candidates:
        regex, names = output.regex()
        m = regex.fullmatch(concrete) or (regex.match(concrete) if path.endswith("/") else None)
        if m is None:
            if sentinel in concrete:
                return None  # a placeholder stands for a literal of the rule: nothing concrete to check
            continue
        wrong = [
            f"{kind} '{value}'"
            for name, value in zip(names, m.groups(), strict=True)
            if sentinel not in value
            for kind, allowed in (("model", vocabulary.models if name in MODEL_WILDCARDS else None),
                                  ("dataset", vocabulary.datasets if name in DATASET_WILDCARDS else None))
            if allowed is not None and value not in allowed
        ]
        if not wrong:
            return None
        bad += wrong
    if not bad:
        return None
    return f"'{path}' names {', '.join(sorted(set(bad)))}, which the config does not make"


def _commands(code: str) -> Iterator[list[str]]:
    """The shell words of each command line of a code block (continuations joined, comments dropped)."""
    code = re.sub(r"\\\n", " ", code)
    for line in code.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if words:
            yield words


def snakemake_arguments(words: Sequence[str]) -> tuple[list[str], dict[str, list[str]]] | None:
    """(targets, options) of a snakemake command line, None for another command."""
    start = next((i for i, w in enumerate(words) if w.split("/")[-1] == "snakemake"), None)
    if start is None:
        return None
    targets: list[str] = []
    options: dict[str, list[str]] = {}
    i = start + 1
    while i < len(words):
        word = words[i]
        if word in _ONE_VALUE and i + 1 < len(words):
            options.setdefault(word, []).append(words[i + 1])
            i += 2
            continue
        if word in _MANY_VALUES:
            i += 1
            while i < len(words) and not words[i].startswith("-"):
                options.setdefault(word, []).append(words[i])
                i += 1
            continue
        if word.startswith("-"):
            options.setdefault(word, [])
        elif word in ("&&", "|", ";"):
            break
        else:
            targets.append(word)
        i += 1
    return targets, options


def check_code_examples(doc: Doc, root: Path, outputs: Sequence[Output], rules: set[str],
                        default_config: Mapping[str, Any]) -> list[str]:
    """The fenced code blocks of a doc: snakemake targets are rules of the workflow or files it makes;
    ``--config`` keys exist (models.<name> a model of the config); every ``results/...`` path names
    models and datasets of the config the example runs with (config.yaml unless ``--configfile``)."""
    problems = []
    default = Vocabulary.of(default_config)
    for _, code in fences(doc.text):
        checked: set[str] = set()
        for words in _commands(code):
            parsed = snakemake_arguments(words)
            if parsed is None:
                continue
            targets, options = parsed
            config: Mapping[str, Any] = default_config
            if "--configfile" in options:
                config_path = root / options["--configfile"][-1]
                if not config_path.exists():
                    continue  # check_repo_paths reports a missing config
                config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
            vocabulary = Vocabulary.of(config)
            for setting in options.get("--config", []):
                key = setting.split("=")[0].split(".")
                if "=" not in setting:
                    problems.append(f"{doc.path}: --config takes KEY=VALUE, and would read '{setting}' as one")
                elif key[0] not in config and key[0] not in ("analyses", "extract", "figures", "datasets", "models"):
                    problems.append(f"{doc.path}: --config {setting}: no config key {key[0]}")
                elif key[0] == "models" and len(key) > 1 and key[1] not in vocabulary.models:
                    problems.append(f"{doc.path}: --config {setting}: no model {key[1]} in the config")
            for target in targets:
                if "/" in target or "." in target:
                    checked.add(target)
                    problem = check_output_names(target, outputs, vocabulary)
                    if problem:
                        problems.append(f"{doc.path}: snakemake target {problem}")
                elif target not in rules:
                    problems.append(f"{doc.path}: snakemake target '{target}' is no rule of the workflow")
        for m in _OUTPUT_PATH.finditer(code):
            path = _strip_path(m.group(1))
            if "/" not in path.rstrip("/") or path in checked:
                continue
            problem = check_output_names(path, outputs, default)
            if problem:
                problems.append(f"{doc.path}: code example: {problem}")
    return problems


# --------------------------------------------------------------------------- claims about the demo


def check_demo_claims(doc: Doc, config: Mapping[str, Any]) -> list[str]:
    """Claims about the demo's models agree with config.yaml: when it trains its models, no doc
    may say the demo's models are random or untrained (as an earlier demo's were)."""
    trained = [n for n, m in (config.get("models") or {}).items()
               if isinstance(m, Mapping) and isinstance(m.get("train"), Mapping)
               and m["train"].get("objective") not in (None, "random")]
    if not trained:
        return []
    problems = []
    claims = re.compile(
        r"demo'?s? (?:\w+ ){0,2}models (?:are|were) (?:all )?(?:random|randomly|untrained)"
        r"|both random models|(?:two|the) random (?:demo )?models"
    )
    for sentence in sentences(doc.text):
        flat = sentence.replace("\n", " ")
        if claims.search(flat):
            problems.append(f"{doc.path}: '{flat[:100]}': config.yaml trains the demo's {', '.join(trained)}")
    return problems


_MEASURED = re.compile(r"\b\d+\.\d+\b|\b\d+(?:\.\d+)? ?%|\b\d+ (?:s|min|px)\b")


def check_dated_numbers(doc: Doc, settings_sections: Sequence[str] = ("The models",)) -> list[str]:
    """Numbers measured on the demo say when they were measured: in docs/demo.md every paragraph,
    elsewhere every paragraph of a section whose heading names the demo, that states measured
    numbers (decimals, percentages, seconds, pixels) holds a YYYY-MM-DD date, so a reader can tell
    a fresh run's numbers from an older one's. ``settings_sections`` (headings of docs/demo.md)
    state configuration, not measurements."""
    problems = []
    whole = doc.path == "docs/demo.md"
    for heading, body in sections(doc.text):
        if not heading or (whole and heading in settings_sections) or (not whole and "demo" not in heading.lower()):
            continue
        for paragraph in paragraphs(body):
            numbers = _MEASURED.findall(paragraph)
            if numbers and not _DATE.search(paragraph):
                problems.append(f"{doc.path}: section '{heading}': '{paragraph[:60]}...' states "
                                f"{', '.join(numbers[:4])} without the date it measured them")
    return problems


# --------------------------------------------------------------------------- everything


def load_config(root: Path = ROOT) -> dict[str, Any]:
    return yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8")) or {}


def all_problems(root: Path = ROOT) -> dict[str, list[str]]:
    """Every check over every doc of the repository at ``root``: check name -> problems."""
    docs = read_docs(root)
    outputs = rule_outputs(root)
    rules = rule_names(root)
    config = load_config(root)
    entries = repo_entries(root)
    formats = block_formats(root)
    out: dict[str, list[str]] = {}
    for doc in docs:
        for name, problems in (
            ("links", check_links(doc, root)),
            ("repo_paths", check_repo_paths(doc, root, entries)),
            ("outputs", check_outputs(doc, outputs)),
            ("block_format", check_block_format(doc, formats)),
            ("dotted", check_dotted(doc, root / "src")),
            ("protocols", check_protocols(doc, root)),
            ("duplicates", check_duplicates(doc)),
            ("sections", check_quoted_sections(doc, root)),
            ("code_examples", check_code_examples(doc, root, outputs, rules, config)),
            ("demo_claims", check_demo_claims(doc, config)),
        ):
            out.setdefault(name, []).extend(problems)
        if not doc.rst:
            out.setdefault("dated_numbers", []).extend(check_dated_numbers(doc))
    return out
