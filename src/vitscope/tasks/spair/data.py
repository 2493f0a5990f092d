"""SPair-71k in its official layout, and the deterministic choice of pairs.

``{root}/PairAnnotation/{split}/<id>-<src>-<trg>:<category>.json`` (split test, val
or trn) hold ``src_imname``, ``trg_imname``, ``src_kps``, ``trg_kps`` ([[x, y], ...],
row k of both the same keypoint; the official files list only the keypoints
visible in both images, their ids in ``kps_ids``), ``src_bndbox``, ``trg_bndbox``
([x1, y1, x2, y2]), ``category`` and ``mirror``; images are
``{root}/JPEGImages/<category>/<imname>`` (a category that leads outside
``{root}/JPEGImages``, or an image name outside its category's folder, is
refused: :func:`vitscope.io.datasets.inside`). A keypoint written as ``null`` or
with a negative coordinate (as per-image annotations and some conversions mark
an invisible point) is invisible and never scored.

Pairs are chosen per category in sorted file-name order: all of them
(``per_category = None``) or the first N, without replacement (the study drew
20 with replacement). The choice is written with the results.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DatasetError
from ...io.datasets import inside

SPLITS = ("test", "val", "trn")
PAIR_COLUMNS = ("category", "rank", "pair", "source", "target", "mirror", "keypoints", "selection")


@dataclass(frozen=True)
class Pair:
    """One annotated image pair; keypoints in original image pixels, NaN rows invisible."""

    name: str  # the file name without .json, e.g. 000001-2008_000585-2008_008154:aeroplane
    category: str
    source: str  # image paths
    target: str
    source_points: np.ndarray  # (K, 2) (x, y)
    target_points: np.ndarray  # (K, 2)
    source_box: np.ndarray  # (4,) x1, y1, x2, y2
    target_box: np.ndarray  # (4,)
    mirror: int
    keypoint_ids: tuple[int, ...]

    @property
    def visible(self) -> np.ndarray:
        """(K,) keypoints visible in both images."""
        return ~(np.isnan(self.source_points).any(axis=1) | np.isnan(self.target_points).any(axis=1))


def pair_files(root: str | Path, split: str, key: str = "datasets.?") -> dict[str, list[Path]]:
    """Pair annotation files by category (from the name after ':'), categories and files sorted."""
    if split not in SPLITS:
        raise DatasetError(f"{key}.split = {split!r}; expected one of {', '.join(SPLITS)}")
    folder = Path(root) / "PairAnnotation" / split
    if not folder.is_dir():
        raise DatasetError(
            f"{key}: '{folder}' does not exist (expected the SPair-71k layout "
            f"{{root}}/PairAnnotation/{split}/<id>-<src>-<trg>:<category>.json and {{root}}/JPEGImages/)"
        )
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.json"), key=lambda p: p.name):
        if ":" not in path.stem:
            raise DatasetError(f"{key}: pair file '{path}' is not named <id>-<src>-<trg>:<category>.json")
        found.setdefault(path.stem.rsplit(":", 1)[1], []).append(path)
    if not found:
        raise DatasetError(f"{key}: '{folder}' holds no pair annotation (*.json)")
    return dict(sorted(found.items()))


def select(files: Mapping[str, Sequence[Path]], per_category: int | None) -> dict[str, list[Path]]:
    """The first ``per_category`` files of each category in sorted name order (all when None)."""
    if per_category is not None and per_category < 1:
        raise DatasetError(f"analyses.spair.pairs_per_category = {per_category} must be >= 1 or null (all pairs)")
    return {
        category: sorted(paths, key=lambda p: p.name)[:per_category] for category, paths in sorted(files.items())
    }


def _points(value: Any, path: Path, field: str) -> np.ndarray:
    if not isinstance(value, list):
        raise DatasetError(f"pair file '{path}': '{field}' must be a list of [x, y]")
    out = np.full((len(value), 2), np.nan)
    for k, point in enumerate(value):
        if point is None:
            continue
        if not (isinstance(point, list) and len(point) == 2 and all(isinstance(v, (int, float)) for v in point)):
            raise DatasetError(f"pair file '{path}': {field}[{k}] = {point!r} is not [x, y] or null")
        if min(point) >= 0:
            out[k] = point
    return out


def _box(value: Any, path: Path, field: str) -> np.ndarray:
    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value)):
        raise DatasetError(f"pair file '{path}': '{field}' must be [x1, y1, x2, y2]")
    box = np.asarray(value, dtype=np.float64)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise DatasetError(f"pair file '{path}': '{field}' = {value} is empty (x2 <= x1 or y2 <= y1)")
    return box


def read_pair(path: str | Path, root: str | Path) -> Pair:
    """One pair annotation file; its images must exist under ``{root}/JPEGImages/<category>/``."""
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DatasetError(f"pair file '{path}' does not exist") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"pair file '{path}' is not valid JSON: {err}") from err
    if not isinstance(content, dict):
        raise DatasetError(f"pair file '{path}' must hold a JSON object")
    for field in ("src_imname", "trg_imname", "src_kps", "trg_kps", "src_bndbox", "trg_bndbox", "category"):
        if field not in content:
            raise DatasetError(f"pair file '{path}' has no '{field}'")
    category = str(content["category"])
    if ":" in path.stem and path.stem.rsplit(":", 1)[1] != category:
        raise DatasetError(f"pair file '{path}': category '{category}' differs from the one in its name")
    source_points = _points(content["src_kps"], path, "src_kps")
    target_points = _points(content["trg_kps"], path, "trg_kps")
    if len(source_points) != len(target_points):
        raise DatasetError(
            f"pair file '{path}': src_kps has {len(source_points)} keypoints, trg_kps {len(target_points)}"
        )
    images = []
    for field in ("src_imname", "trg_imname"):
        where = f"pair file '{path}': {field} (category {category!r})"
        image = inside(inside(Path(root) / "JPEGImages", category, where), content[field], where)
        if not image.is_file():
            raise DatasetError(f"image '{image}' ({field} of '{path}') does not exist")
        images.append(str(image))
    ids = content.get("kps_ids", list(range(len(source_points))))
    return Pair(
        name=path.stem,
        category=category,
        source=images[0],
        target=images[1],
        source_points=source_points,
        target_points=target_points,
        source_box=_box(content["src_bndbox"], path, "src_bndbox"),
        target_box=_box(content["trg_bndbox"], path, "trg_bndbox"),
        mirror=int(content.get("mirror", 0)),
        keypoint_ids=tuple(int(i) for i in ids),
    )


def read_pairs(
    root: str | Path, split: str, per_category: int | None, key: str = "datasets.?"
) -> dict[str, list[Pair]]:
    """The chosen pairs of every category (see :func:`select`), read and checked."""
    chosen = select(pair_files(root, split, key), per_category)
    return {category: [read_pair(path, root) for path in paths] for category, paths in chosen.items()}


def pair_rows(pairs: Mapping[str, Sequence[Pair]], per_category: int | None) -> list[dict[str, Any]]:
    """The record of the chosen pairs (PAIR_COLUMNS): rank within the category, images, visible keypoints."""
    rule = "all pairs" if per_category is None else f"first {per_category} in sorted file-name order"
    return [
        {"category": category, "rank": rank, "pair": pair.name, "source": Path(pair.source).name,
         "target": Path(pair.target).name, "mirror": pair.mirror, "keypoints": int(pair.visible.sum()),
         "selection": rule}
        for category, chosen in pairs.items()
        for rank, pair in enumerate(chosen)
    ]
