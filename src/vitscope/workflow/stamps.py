"""Fingerprints of what a job reads that Snakemake cannot see into (docs/hostile-inputs.md,
"Changed weights and data"): dataset folders, the images an index lists, annotation files, a
checkpoint that may be replaced by an older copy. Each is a param of the rules that read them, so
a changed file reruns them; '' where the workflow makes the data itself (its folder is an input).

:class:`Stamps` holds the config and caches each dataset's folder scan for the planning process.
"""

from __future__ import annotations

import csv
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..io import fingerprint
from . import lookups

Config = Mapping[str, Any]


class Stamps:
    """The fingerprints of ``config``'s inputs; ``require`` stops planning when a needed input is missing."""

    def __init__(self, config: Config, require: lookups.Require) -> None:
        self.config = config
        self.require = require
        self.dataset = functools.cache(self._dataset)  # one pass over the folders per planning process
        self._images_of_index = functools.cache(self._images_of_index_uncached)  # every model's dump asks
        # the same for what every model's job of a dataset asks again (DAVIS: models x sequences)
        self.annotations = functools.cache(self._annotations)
        self.spair = functools.cache(self._spair)
        self.davis_sequence = functools.cache(self._davis_sequence)
        # pure look-ups of the config, keyed by a path or an alias
        self._generated = functools.cache(self._generated_uncached)
        self._checkpoint_file = functools.cache(functools.partial(lookups.checkpoint_file, config))

    def mode(self, dataset: str) -> str:
        return lookups.dataset_entry(self.config, dataset).get("fingerprint", "stat")

    def _generated_uncached(self, path: str) -> str | None:
        return lookups.generated(self.config, path)

    def checkpoint(self, alias: str, trained: bool) -> str:
        """Size and modification time of the model's checkpoint, so a replaced file re-extracts even
        when it is older than the dump (a copy that kept its date); '' for trained or hub weights."""
        path = self._checkpoint_file(alias)
        if path is None or trained:
            return ""
        self.require(lookups.checkpoint_needs(self.config, alias))
        st = os.stat(path)
        return f"{st.st_size}:{st.st_mtime_ns}"

    def _dataset(self, name: str) -> str:
        """Fingerprint of every file the dataset's index is made from (vitscope's fingerprint module), so adding,
        removing or replacing an image, or editing a list or annotation file, re-indexes; '' for a dataset
        the workflow generates (its folder is an input)."""
        entry = lookups.dataset_entry(self.config, name)
        if entry["kind"] in ("synthetic", "spair", "davis") or self._generated(entry.get("root", "")):
            return ""
        self.require(lookups.dataset_needs(self.config, name))
        mode = self.mode(name)
        kind, root = entry["kind"], entry.get("root")
        if kind == "imagefolder":
            classes = entry.get("classes") or sorted(p.name for p in os.scandir(root) if p.is_dir())
            return fingerprint.folders([str(Path(root) / c) for c in sorted(classes)], mode)
        if kind == "imagelist":
            base = Path(root) if root else Path(entry["list"]).parent
            names = [line.strip() for line in Path(entry["list"]).read_text(errors="surrogateescape").splitlines()]
            listed = [str(base / n) for n in names if n and not n.startswith("#")]
            return fingerprint.digest([fingerprint.folders([entry["list"]], mode), fingerprint.files(
                [p for p in listed if os.path.isfile(p)], mode)])
        if kind == "coco":
            return fingerprint.folders([entry["annotations"], root], mode, recursive=True)
        if kind == "revisited":
            base = Path(root) / entry["name"]
            return fingerprint.folders([str(base / f"gnd_{entry['name']}.pkl"), str(base / "jpg")], mode)
        return ""

    def indexed_images(self, dataset: str) -> str:
        """Fingerprint of the images the dataset's index lists (read when the index exists, else '' until
        the index checkpoint has run): a replaced image re-extracts, an image added outside the index does not."""
        entry = lookups.dataset_entry(self.config, dataset)
        index = Path(f"results/index/{dataset}.csv")
        if entry["kind"] == "synthetic" or self._generated(entry.get("root", "")) or not index.is_file():
            return ""
        st = index.stat()  # the index checkpoint may rewrite it while this process plans
        return self._images_of_index(dataset, st.st_size, st.st_mtime_ns)

    def _images_of_index_uncached(self, dataset: str, size: int, mtime_ns: int) -> str:
        self.dataset(dataset)  # the folder scans, whose stamps fingerprint.files reuses
        with open(f"results/index/{dataset}.csv", newline="", encoding="utf-8") as handle:
            paths = [row[0] for row in csv.reader(handle)][1:]
        return fingerprint.files(paths, self.mode(dataset))

    def _annotations(self, dataset: str) -> str:
        """Fingerprint of the annotation file a job reads beside its dump (coco annotations, revisited
        ground truth), so a replaced file reruns it even with an older modification time."""
        entry = lookups.dataset_entry(self.config, dataset)
        if self._generated(entry.get("root", "")) or entry["kind"] not in ("coco", "revisited"):
            return ""
        path = entry["annotations"] if entry["kind"] == "coco" else lookups.gnd_file(self.config, dataset)
        self.require(lookups.dataset_needs(self.config, dataset))
        return fingerprint.folders([path], self.mode(dataset))

    def _spair(self, dataset: str) -> str:
        """Fingerprint of the SPair-71k pair annotations of the split and of every image."""
        entry = lookups.dataset_entry(self.config, dataset)
        if self._generated(entry["root"]):
            return ""
        self.require(lookups.dataset_needs(self.config, dataset))
        split = entry.get("split", "test")
        parts = [f"{entry['root']}/PairAnnotation/{split}", f"{entry['root']}/JPEGImages"]
        return fingerprint.folders(parts, self.mode(dataset), recursive=True)

    def _davis_sequence(self, dataset: str, sequence: str) -> str:
        """Fingerprint of one DAVIS sequence's frames and annotations."""
        entry = lookups.dataset_entry(self.config, dataset)
        if self._generated(entry["root"]):
            return ""
        return fingerprint.folders(lookups.davis_sequence_input(self.config, dataset, sequence), self.mode(dataset))
