"""The best block per model and task ("No single winner", docs/protocols.md#best-layer-table).

A *task* is a column of the table: a label, the tidy per-block result rows of
every model (columns ``model``, ``block``, ``value`` and any others), a
selection of those rows (e.g. ``metric = top1, k = 20``), and how the score is
shown: ``score = value x scale`` in ``unit`` (every column of the workflow's table
is in %), rounded to ``digits`` decimals. ``legend`` explains the abbreviations
its label uses (e.g. "(M)"). New tasks plug in as one more :class:`Task`.

**Ties.** Blocks tie when their scores are equal *as the table shows them*
(rounded to ``digits`` decimals): the table cannot tell them apart, so it lists
every tied block ("45.00 (tie: 10, 12)", or "(all blocks tie)" when every block
with a value has the best score) instead of crowning the lowest. The best model
of a column is found the same way on the shown scores (tied models are all marked;
none when every model has the same score).

Undefined values (NaN, with the reason in the row's ``note`` column, e.g.
"undefined: 1 class") are never ranked. A model whose every selected value is
undefined gets a row with no blocks, NaN value and score and the reason in
``note``; its cell reads "n/a (1 class)" instead of a score. "-" means no rows.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

#: the CSV: one row per model and task; ``blocks`` the best block(s), ";"-separated
COLUMNS = ("model", "task", "value", "score", "unit", "blocks", "tie", "all_blocks_tie", "best_model", "note")


@dataclass(frozen=True, eq=False)  # hashed by identity: a key of the results mapping
class Task:
    """One table column: ``select`` keeps rows whose columns equal the given values (compared as text)."""

    label: str
    select: Mapping[str, Any] = field(default_factory=dict)
    scale: float = 1.0
    digits: int = 2
    unit: str = ""
    legend: tuple[str, ...] = ()  # abbreviations of the label, e.g. "(M): ... Medium protocol"

    @property
    def header(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    def shown(self, score: float) -> str:
        """The score as the table writes it (what ties are decided on)."""
        return f"{score:.{self.digits}f}"


@dataclass(frozen=True)
class Best:
    """A model's best score on a task: every block that reaches it as shown, and how many blocks have a value."""

    blocks: tuple[int, ...]  # 1-indexed, ascending
    value: float  # the highest value among them (unscaled)
    defined: int  # blocks with a value

    @property
    def tie(self) -> bool:
        return len(self.blocks) > 1

    @property
    def all_blocks_tie(self) -> bool:
        return self.tie and len(self.blocks) == self.defined


def _selected(row: Mapping[str, Any], task: Task) -> bool:
    return all(str(row[key]) == str(value) for key, value in task.select.items())


def best_blocks(rows: Sequence[Mapping[str, Any]], task: Task) -> dict[str, Best]:
    """Model -> its :class:`Best` over the rows that ``task`` selects.

    The highest score as shown (value x scale, rounded to ``task.digits``) wins; every
    block that shows it ties. NaN values never win (a model whose values are all NaN is
    left out).
    """
    values: dict[str, dict[int, float]] = {}
    for row in rows:
        if not _selected(row, task):
            continue
        value = float(row["value"])
        if not math.isnan(value):
            values.setdefault(str(row["model"]), {})[int(row["block"])] = value
    best = {}
    for model, by_block in values.items():
        shown = {block: float(task.shown(value * task.scale)) for block, value in by_block.items()}
        top = max(shown.values())
        blocks = tuple(sorted(block for block, s in shown.items() if s == top))
        best[model] = Best(blocks, max(by_block[b] for b in blocks), len(by_block))
    return best


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
    """Tidy rows (COLUMNS) in model order then task order; ``score`` is value x scale, in ``unit``.

    ``best_model`` marks the models whose shown score is the column's highest, unless every model
    with a score has it (then no model is better than another, as with a single model).
    """
    bests = {task: best_blocks(rows, task) for task, rows in results.items()}
    undefined = {task: undefined_reasons(rows, task) for task, rows in results.items()}
    top = {}
    for task, best in bests.items():
        shown = [float(task.shown(b.value * task.scale)) for b in best.values()]
        top[task] = max(shown) if shown and min(shown) < max(shown) else math.nan  # nan: no model is best
    rows = []
    for model in models:
        for task, best in bests.items():
            if model in best:
                b = best[model]
                score = b.value * task.scale
                rows.append({
                    "model": model, "task": task.label, "value": b.value, "score": score, "unit": task.unit,
                    "blocks": ";".join(map(str, b.blocks)), "tie": b.tie, "all_blocks_tie": b.all_blocks_tie,
                    "best_model": float(task.shown(score)) == top[task], "note": "",
                })
            elif model in undefined[task]:
                log.warning("best-layer table: %s, %s is n/a (%s)", model, task.label, undefined[task][model])
                rows.append({
                    "model": model, "task": task.label, "value": math.nan, "score": math.nan, "unit": task.unit,
                    "blocks": "", "tie": False, "all_blocks_tie": False, "best_model": False,
                    "note": f"undefined: {undefined[task][model]}",
                })
    return rows


def _flag(value: Any) -> bool:
    """A flag of a row, as built (bool) or read back from the CSV ("True"/"False")."""
    return value is True or str(value) == "True"


def block_list(blocks: Sequence[int]) -> str:
    """1, 2, 3, 5 -> "1-3, 5"."""
    runs: list[list[int]] = []
    for block in sorted(blocks):
        if runs and block == runs[-1][-1] + 1:
            runs[-1].append(block)
        else:
            runs.append([block])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


def _cell(row: Mapping[str, Any] | None, task: Task) -> tuple[str, bool]:
    """The cell text of a row and whether it is the column's best."""
    if row is None:
        return "-", False
    if math.isnan(float(row["score"])):
        return f"n/a ({str(row.get('note') or 'undefined').removeprefix('undefined:').strip()})", False
    blocks = [int(b) for b in str(row["blocks"]).split(";")]
    if _flag(row["all_blocks_tie"]):
        where = "all blocks tie"
    elif _flag(row["tie"]):
        where = f"tie: {block_list(blocks)}"
    else:
        where = str(blocks[0])
    return f"{task.shown(float(row['score']))} ({where})", _flag(row["best_model"])


def _cells(
    rows: Sequence[Mapping[str, Any]], tasks: Sequence[Task], models: Sequence[str]
) -> list[tuple[str, list[tuple[str, bool]]]]:
    found = {(r["model"], r["task"]): r for r in rows}
    return [(model, [_cell(found.get((model, task.label)), task) for task in tasks]) for model in models]


def legend(rows: Sequence[Mapping[str, Any]], tasks: Sequence[Task]) -> list[str]:
    """The lines under the table: units, the block in brackets, the marks, what only some tables need."""
    units = sorted({t.unit for t in tasks if t.unit})
    lines = []
    if units == ["%"]:
        lines.append("Scores in % (fractions x 100), rounded to the decimals shown.")
    elif units:
        lines.append(f"Units in each column's header ({', '.join(units)}), rounded to the decimals shown.")
    lines.append("In brackets: the model's best block (1 = the first block).")
    lines.append("Bold: the best model of the column (several when their scores are equal as shown; "
                 "none when every model has the same score).")
    if any(_flag(r["tie"]) and not _flag(r["all_blocks_tie"]) for r in rows):
        lines.append("tie: those blocks share the best score as shown (equal after rounding).")
    if any(_flag(r["all_blocks_tie"]) for r in rows):
        lines.append("all blocks tie: every block of the model has that score; no block is better.")
    if any(str(r.get("note") or "").startswith("undefined") for r in rows):
        lines.append("n/a (reason): every value of the model is undefined.")
    lines.append("-: no results for the model.")
    lines += list(dict.fromkeys(entry for t in tasks for entry in t.legend))
    return lines


def markdown(rows: Sequence[Mapping[str, Any]], tasks: Sequence[Task], models: Sequence[str]) -> str:
    """The study's layout: a row per model, a column per task, cells "score (block)", the best in bold; a legend."""
    header = ["model", *(t.header for t in tasks)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, cells in _cells(rows, tasks, models):
        lines.append("| " + " | ".join([model, *(f"**{text}**" if best else text for text, best in cells)]) + " |")
    lines += ["", *(f"- {line}" for line in legend(rows, tasks))]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(char, escaped)
    return text


def latex(rows: Sequence[Mapping[str, Any]], tasks: Sequence[Task], models: Sequence[str]) -> str:
    """A booktabs tabular of the same table (needs \\usepackage{booktabs}), the legend as a comment."""
    header = " & ".join(_tex(h) for h in ["model", *(t.header for t in tasks)])
    body = [
        " & ".join([_tex(model), *(r"\textbf{" + _tex(text) + "}" if best else _tex(text) for text, best in cells)])
        + r" \\"
        for model, cells in _cells(rows, tasks, models)
    ]
    return "\n".join(
        [r"\begin{tabular}{l" + "c" * len(tasks) + "}", r"\toprule", header + r" \\", r"\midrule", *body,
         r"\bottomrule", r"\end{tabular}", *(f"% {line}" for line in legend(rows, tasks)), ""]
    )


def html_page(rows: Sequence[Mapping[str, Any]], tasks: Sequence[Task], models: Sequence[str]) -> str:
    """The same table as a standalone HTML page (the report shows it), legend below."""
    def row(tag: str, cells: Sequence[tuple[str, bool]]) -> str:
        return "<tr>" + "".join(
            f"<{tag}>" + (f"<strong>{html.escape(t)}</strong>" if best else html.escape(t)) + f"</{tag}>"
            for t, best in cells
        ) + "</tr>"

    head = row("th", [(h, False) for h in ["model", *(t.header for t in tasks)]])
    body = [row("td", [(model, False), *cells]) for model, cells in _cells(rows, tasks, models)]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in legend(rows, tasks))
    style = ("body{font-family:sans-serif;font-size:14px;margin:1em}table{border-collapse:collapse}"
             "th,td{border-bottom:1px solid #ccc;padding:4px 10px;text-align:center}th:first-child,"
             "td:first-child{text-align:left}ul{padding-left:1.2em;color:#333}")
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Best layers</title>'
            f"<style>{style}</style></head><body>\n<table>\n<thead>{head}</thead>\n<tbody>\n"
            + "\n".join(body) + f"\n</tbody>\n</table>\n<ul>{items}</ul>\n</body></html>\n")
