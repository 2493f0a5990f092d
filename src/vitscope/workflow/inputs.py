"""What a config reads from disk, found before any job runs (no torch).

The workflow plans its jobs from the config alone; this module tells it which
files each model and dataset needs (:func:`checkpoint_of`, :func:`dataset_paths`)
and lists every one that is missing (:func:`missing_inputs`), so one dry run
names all of them at once, each with its config key (and, for a zoo release,
who publishes the file, where, and its digest). Files the workflow makes itself
(trained checkpoints, synthetic datasets) are never reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models import zoo

#: a predicate: is this path made by the workflow (so it need not exist yet)?
Generated = Callable[[str], bool]


@dataclass(frozen=True)
class Need:
    """One file or folder a config reads: its key, its path, and what it is."""

    key: str
    path: str
    kind: str  # "file" or "dir"
    hint: str = ""  # where to get it (a zoo release's publisher), or what it should hold
    value: str | None = None  # the key's value when the path is derived from it (root -> root/jpg)

    def exists(self) -> bool:
        path = Path(self.path)
        return path.is_dir() if self.kind == "dir" else path.is_file()

    def line(self) -> str:
        what = "folder" if self.kind == "dir" else "file"
        if self.value is None or self.value == self.path:
            text = f"{self.key} = '{self.path}': no such {what}"
        else:
            text = f"{self.key} = '{self.value}': no {what} {self.path}"
        return text + (f" ({self.hint})" if self.hint else "")


def checkpoint_of(alias: str, entry: Mapping[str, Any]) -> str | None:
    """The local checkpoint file ``models.<alias>`` loads, or None (timm hub or random weights).

    Zoo entries (``family``/``size``) are expanded first, so both entry kinds
    resolve alike.
    """
    if "family" in entry:
        entry = zoo.expand(alias, entry)
    if entry.get("weights", "random") != "checkpoint" or not entry.get("checkpoint"):
        return None
    return str(entry["checkpoint"])


def release_of(entry: Mapping[str, Any]) -> zoo.Release | None:
    """The zoo release an entry names (family and size), or None."""
    if "family" not in entry or "size" not in entry:
        return None
    try:
        row = zoo.release(entry["family"], entry["size"])
    except ConfigError:
        return None
    return row if row.release else None


def checkpoint_need(alias: str, entry: Mapping[str, Any]) -> Need | None:
    """The checkpoint of ``models.<alias>`` as a :class:`Need` (with its publisher), or None."""
    path = checkpoint_of(alias, entry)
    if path is None:
        return None
    row = release_of(entry)
    hint = ""
    if row:
        hint = f"{row.release} is published by {row.source}" + (f" at {row.url}" if row.url else "")
        hint += f", SHA-256 {row.sha256}" if row.sha256 else ""
    return Need(f"models.{alias}.checkpoint", path, "file", hint)


def dataset_paths(name: str, entry: Mapping[str, Any]) -> list[Need]:
    """The files and folders ``datasets.<name>`` is read from, by its kind (none for synthetic)."""
    key = f"datasets.{name}"
    kind = entry.get("kind")
    root = entry.get("root")
    needs: list[Need] = []
    if kind == "imagefolder" and root:
        needs.append(Need(f"{key}.root", str(root), "dir", "expected class folders: root/<class>/<image>"))
        for cls in entry.get("classes") or []:
            needs.append(Need(f"{key}.classes", str(Path(root) / str(cls)), "dir", "a class folder of root", str(cls)))
    elif kind == "imagelist" and entry.get("list"):
        needs.append(Need(f"{key}.list", str(entry["list"]), "file", "one image path per line"))
        if root:
            needs.append(Need(f"{key}.root", str(root), "dir"))
    elif kind == "coco":
        if root:
            needs.append(Need(f"{key}.root", str(root), "dir", "the folder of the annotated images"))
        if entry.get("annotations"):
            needs.append(Need(f"{key}.annotations", str(entry["annotations"]), "file", "a COCO-format JSON file"))
    elif kind == "revisited" and root and entry.get("name"):
        base = Path(root) / str(entry["name"])
        gnd = f"gnd_{entry['name']}.pkl"
        needs.append(Need(f"{key}.root", str(base / gnd), "file", "the revisited ground truth", str(root)))
        needs.append(Need(f"{key}.root", str(base / "jpg"), "dir", "the images", str(root)))
    elif kind == "spair" and root:
        split = entry.get("split", "test")
        needs.append(
            Need(f"{key}.root", str(Path(root) / "PairAnnotation" / split), "dir", "SPair-71k pair annotations",
                 str(root))
        )
        needs.append(Need(f"{key}.root", str(Path(root) / "JPEGImages"), "dir", "SPair-71k images", str(root)))
    elif kind == "davis" and root:
        res = entry.get("resolution", "480p")
        if not entry.get("sequences"):
            split = entry.get("split", "val")
            needs.append(
                Need(f"{key}.root", str(Path(root) / "ImageSets" / "2017" / f"{split}.txt"), "file",
                     f"the DAVIS sequence list, or list datasets.{name}.sequences", str(root))
            )
        for part in ("JPEGImages", "Annotations"):
            needs.append(Need(f"{key}.root", str(Path(root) / part / res), "dir", f"DAVIS {part}/{res}/<sequence>/",
                              str(root)))
    return needs


def missing_inputs(
    config: Mapping[str, Any],
    generated: Generated = lambda path: False,
    trained: frozenset[str] = frozenset(),
    models: list[str] | None = None,
    datasets: list[str] | None = None,
) -> list[Need]:
    """Every checkpoint and dataset path of ``config`` that does not exist, in config order.

    ``generated`` says which paths the workflow makes itself (never reported);
    models in ``trained`` get their checkpoint from the train rule. ``models``
    and ``datasets`` restrict the check (default: all).
    """
    missing: list[Need] = []
    for alias in models if models is not None else list(config.get("models", {})):
        if alias in trained:
            continue
        need = checkpoint_need(alias, config["models"][alias])
        if need is not None and not generated(need.path) and not need.exists():
            missing.append(need)
    for name in datasets if datasets is not None else list(config.get("datasets", {})):
        entry = config["datasets"][name]
        if entry.get("kind") == "synthetic" or generated(str(entry.get("root", ""))):
            continue
        seen = set()
        for need in dataset_paths(name, entry):
            parent_missing = any(Path(need.path).is_relative_to(p) for p in seen)
            if not generated(need.path) and not parent_missing and not need.exists():
                missing.append(need)
                seen.add(Path(need.path))
    return missing


def missing_message(missing: list[Need], cwd: str | Path) -> str:
    """One message listing every missing input (relative paths are from ``cwd``)."""
    lines = [f"{len(missing)} input(s) of this config do not exist (relative paths are from {cwd}):"]
    lines += [f"  - {need.line()}" for need in missing]
    lines.append("Download or move them there, or point the keys at them (docs/models.md lists every release).")
    return "\n".join(lines)
