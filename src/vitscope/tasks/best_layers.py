"""The best block per model and task ("No single winner", docs/protocols.md#downstream-tasks).

A *task* is a column of the table: a label, the tidy per-block result rows of
every model (columns ``model``, ``block``, ``value`` and any others), a
selection of those rows (e.g. ``metric = top1, k = 20``), and how the score is
shown (``scale``, ``digits``). New tasks (DAVIS, SPair) plug in as one more
:class:`Task`; nothing else changes.

Undefined values (NaN, with the reason in the row's ``note`` column, e.g.
"undefined: 1 class") are never ranked. A model whose every selected value is
undefined gets a row with an empty block, NaN value and score and the reason in
``note``; its cell reads "n/a (1 class)" instead of a score. "-" means no rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

COLUMNS = ("model", "task", "block", "value", "score", "note")


@dataclass(frozen=True, eq=False)  # hashed by identity: a key of the results mapping
class Task:
    """One table column: ``select`` keeps rows whose columns equal the given values (compared as text)."""

    label: str
    select: Mapping[str, Any] = field(default_factory=dict)
    scale: float = 1.0
    digits: int = 2


def best_blocks(rows: Sequence[Mapping[str, Any]], task: Task) -> dict[str, tuple[int, float]]:
    """Model -> (best block, 1-indexed; its value) over the rows that ``task`` selects.

    The highest value wins, the lower block on a tie; NaN values never win (a model
    whose values are all NaN is left out).
    """
    best: dict[str, tuple[int, float]] = {}
    for row in rows:
        if not _selected(row, task):
            continue
        value, block = float(row["value"]), int(row["block"])
        if math.isnan(value):
            continue
        current = best.get(str(row["model"]))
        if current is None or value > current[1] or (value == current[1] and block < current[0]):
            best[str(row["model"])] = (block, value)
    return best


def _selected(row: Mapping[str, Any], task: Task) -> bool:
    return all(str(row[key]) == str(value) for key, value in task.select.items())


def undefined_reasons(rows: Sequence[Mapping[str, Any]], task: Task) -> dict[str, str]:
    """Model -> why its values are undefined, for the models whose every selected value is NaN.

    The reason is the rows' ``note`` without its ``undefined: `` prefix (distinct notes
    joined by "; "), or "undefined" where the rows carry none.
    """
    notes: dict[str, set[str]] = {}
    defined: set[str] = set()
    for row in rows:
        if not _selected(row, task):
            continue
        model = str(row["model"])
        if math.isnan(float(row["value"])):
            note = str(row.get("note") or "").removeprefix("undefined:").strip()
            notes.setdefault(model, set()).add(note or "undefined")
        else:
            defined.add(model)
    return {model: "; ".join(sorted(found)) for model, found in notes.items() if model not in defined}


def best_layer_rows(
    results: Mapping[Task, Sequence[Mapping[str, Any]]], models: Sequence[str]
) -> list[dict[str, Any]]:
    """Tidy rows (COLUMNS) in model order then task order; ``score`` is value x scale."""
    bests = {task: best_blocks(rows, task) for task, rows in results.items()}
    undefined = {task: undefined_reasons(rows, task) for task, rows in results.items()}
    rows = []
    for model in models:
        for task, best in bests.items():
            if model in best:
                block, value = best[model]
                rows.append({"model": model, "task": task.label, "block": block, "value": value,
                             "score": value * task.scale, "note": ""})
            elif model in undefined[task]:
                log.warning("best-layer table: %s, %s is n/a (%s)", model, task.label, undefined[task][model])
                rows.append({"model": model, "task": task.label, "block": "", "value": math.nan,
                             "score": math.nan, "note": f"undefined: {undefined[task][model]}"})
    return rows


def _cells(rows: Sequence[Mapping[str, Any]], tasks: Sequence[Task], models: Sequence[str]) -> list[list[str]]:
    found = {(r["model"], r["task"]): r for r in rows}
    table = []
    for model in models:
        cells = [model]
        for task in tasks:
            r = found.get((model, task.label))
            if r is None:
                cells.append("-")
            elif math.isnan(float(r["score"])):
                cells.append(f"n/a ({str(r.get('note') or 'undefined').removeprefix('undefined:').strip()})")
            else:
                cells.append(f"{float(r['score']):.{task.digits}f} ({int(r['block'])})")
        table.append(cells)
    return table


def markdown(rows: Sequence[Mapping[str, Any]], tasks: Sequence[Task], models: Sequence[str]) -> str:
    """The study's layout: a row per model, a column per task, cells "score (block)"."""
    header = ["model", *(t.label for t in tasks)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _cells(rows, tasks, models)]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def latex(rows: Sequence[Mapping[str, Any]], tasks: Sequence[Task], models: Sequence[str]) -> str:
    """A booktabs tabular of the same table (needs \\usepackage{booktabs})."""
    header = " & ".join(_tex(h) for h in ["model", *(t.label for t in tasks)])
    body = [" & ".join(_tex(c) for c in cells) + r" \\" for cells in _cells(rows, tasks, models)]
    return "\n".join(
        [r"\begin{tabular}{l" + "c" * len(tasks) + "}", r"\toprule", header + r" \\", r"\midrule", *body,
         r"\bottomrule", r"\end{tabular}", ""]
    )
