"""Object features: per annotated instance, the mask-weighted mean of the spatial tokens.

Notation as in :mod:`vitscope.attention.saliency`: grid gh x gw, G = gh * gw spatial
tokens, (h, w) the model's input size, (H0, W0) an original image's size; O_i
objects of image i.

Each instance mask (H0, W0) is mapped exactly like the image (resize and
center crop, :func:`vitscope.attention.saliency.mask_coverage`: exact area averaging per
token) and normalised to sum 1 over the G tokens (:func:`object_weights`).
An object none of whose pixels survives the resize and crop (or whose mask
rasterises to no pixel) has an empty grid mask: it is skipped and counted.
Crowd annotations (``iscrowd = 1``, a region of many instances) are no single
object: skipped and counted too.

The weights are prepared on the host, one image at a time, by
:class:`ObjectMasks` (called by the image dataset, so DataLoader workers share
the decoding); :mod:`vitscope.extract.run` applies them to every block's spatial
tokens with one batched matmul per block (``objects/features`` of a dump,
docs/dumps.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..attention.saliency import instance_mask, mask_coverage
from ..errors import DatasetError

if TYPE_CHECKING:
    from pycocotools.coco import COCO

Grid = tuple[int, int]


def object_weights(masks: Sequence[np.ndarray], image_size: tuple[int, int], grid: Grid) -> np.ndarray:
    """(O, G) float64 token weights of O instance masks of one image, rows summing to 1.

    masks: O arrays (H0, W0) bool in original image pixels. Row o is the mask's
    coverage of each token (:func:`vitscope.attention.saliency.mask_coverage`), flattened
    row-major and divided by its sum; a row whose coverage is all zero (empty
    grid mask) stays all zero.
    """
    g = grid[0] * grid[1]
    out = np.zeros((len(masks), g), dtype=np.float64)
    for o, mask in enumerate(masks):
        coverage = mask_coverage(mask, image_size, grid).reshape(g)
        total = coverage.sum()
        if total > 0:
            out[o] = coverage / total
    return out


@dataclass(frozen=True)
class ImageObjects:
    """The objects of one image that are kept, and how many were skipped."""

    weights: np.ndarray  # (O, G) float32, rows sum to 1
    category: np.ndarray  # (O,) int64 COCO category id
    annotation: np.ndarray  # (O,) int64 COCO annotation id
    empty: int  # objects skipped: empty grid mask
    crowd: int  # annotations skipped: iscrowd = 1

    @property
    def count(self) -> int:
        return len(self.category)

    def index_only(self) -> ImageObjects:
        """A copy without the weights (what the dump's object index needs)."""
        return replace(self, weights=np.zeros((0, 0), dtype=np.float32))


class ObjectMasks:
    """Host-side object weights of the images of a dataset, by dataset position.

    paths: the dataset's image paths in index order, each ``root/<file_name>`` of
    an image of ``coco``. Calling ``masks(position, size)`` decodes that image's
    instance masks and returns its :class:`ImageObjects`; ``size`` (w, h), the
    opened image's size, is checked against the annotation's.
    """

    def __init__(
        self,
        coco: COCO,
        paths: Sequence[str],
        root: str | Path,
        image_size: tuple[int, int],
        grid: Grid,
        annotations: str = "annotations",
    ):
        by_path = {str(Path(root) / info["file_name"]): i for i, info in coco.imgs.items()}
        missing = next((p for p in paths if p not in by_path), None)
        if missing is not None:
            raise DatasetError(f"image '{missing}' of the dataset is not in '{annotations}' under root '{root}'")
        self.coco, self.annotations = coco, annotations
        self.image_ids = [by_path[p] for p in paths]
        self.image_size, self.grid = tuple(image_size), tuple(grid)

    def category_names(self) -> dict[int, str]:
        return {int(i): str(c.get("name", i)) for i, c in self.coco.cats.items()}

    def __call__(self, position: int, size: tuple[int, int] | None = None) -> ImageObjects:
        image_id = self.image_ids[position]
        info = self.coco.imgs[image_id]
        if size is not None and tuple(size) != (int(info["width"]), int(info["height"])):
            raise DatasetError(
                f"image {image_id} is {size[0]} x {size[1]} but '{self.annotations}' says "
                f"{info['width']} x {info['height']}"
            )
        anns = self.coco.imgToAnns.get(image_id, [])
        kept = [a for a in anns if not a.get("iscrowd", 0)]
        masks = [instance_mask(self.coco, a) for a in kept]
        weights = object_weights(masks, self.image_size, self.grid)
        valid = weights.sum(axis=1) > 0
        return ImageObjects(
            weights=weights[valid].astype(np.float32),
            category=np.array([a["category_id"] for a in kept], dtype=np.int64)[valid],
            annotation=np.array([a.get("id", -1) for a in kept], dtype=np.int64)[valid],
            empty=int((~valid).sum()),
            crowd=len(anns) - len(kept),
        )
