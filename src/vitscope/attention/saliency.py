"""CLS attention saliency: IoU of thresholded CLS attention with object masks (docs/protocols.md#attention-analyses).

Notation: N images, L blocks, H heads, P prefix tokens (CLS first), grid
gh x gw, G = gh * gw spatial tokens, T = P + G; (h, w) the model's input
size, (H0, W0) an original image's size.

1. Ground truth: the union of an image's instance masks (H0, W0), mapped
   exactly like the image (:func:`vitscope.io.datasets.resize_crop_geometry`: resize
   of the shorter side or covering resize, center crop), then averaged over
   the area of each token (:func:`mask_coverage`, exact fractional pixel
   overlap) and thresholded: a token is object when at least ``threshold``
   (0.5) of its area is (:func:`grid_mask`). The study binarised a bicubic
   resize with > 0 instead, which dilates masks (docs/differences.md).
2. Prediction: the CLS query's row over the spatial keys, renormalised; the
   smallest set of tokens holding ``mass`` (0.6) of it (:func:`mass_mask`);
   equal values are taken in token order (row-major), so the set is unique.
3. IoU per image, block and head (:func:`iou`); an image whose grid mask is
   empty has no IoU (NaN) and is left out of every mean and counted. So is a
   CLS row with no spatial mass (the zero-mass rule of docs/attention.md: its
   attention is all on the prefix tokens, so no set of spatial tokens holds any
   share of it): NaN, left out of that block and head's means, counted as ``zero_mass``.

Two summaries per block (:func:`summary_rows`): ``best_head_once`` is the
head with the highest mean IoU over the dataset, chosen once per block;
``per_image_best_head`` is the study's: the best head of every image, then
the mean over images (an oracle choice per image, so never lower).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DatasetError
from ..io.datasets import open_image, resize_crop_geometry

if TYPE_CHECKING:
    from pycocotools.coco import COCO

log = logging.getLogger(__name__)

Grid = tuple[int, int]

#: a row whose spatial mass is below this has no spatial distribution (docs/attention.md's zero-mass
#: rule; the dump stores the CLS rows in float32, so float32's smallest normal number)
ZERO_MASS = float(np.finfo(np.float32).tiny)
#: ``note`` of a table row that is NaN because no image has a non-empty grid mask
NO_MASK = "undefined: every object mask empty"
#: ``note`` of a table row that is NaN because the CLS row has no spatial mass in any image
NO_MASS = "undefined: the CLS attention has no spatial mass in any image"
#: tolerance of the cumulative mass comparison, so float round-off never adds a token
MASS_TOLERANCE = 1e-9
#: a coverage this close below the threshold reaches it: the float64 products of :func:`mask_coverage`
#: are summed in an order the BLAS kernel picks (OpenBLAS's Prescott kernel gives a token covered
#: exactly half 0.49999999999999994), which errs by about (H0 + W0) u, 1e-12 for a 4000-pixel side
COVERAGE_TOLERANCE = 1e-9


def overlap_weights(length: int, start: float, stop: float, cells: int) -> np.ndarray:
    """(cells, length) fraction of each of ``cells`` equal intervals of [start, stop)
    covered by each unit pixel [y, y + 1) of an axis of ``length`` pixels.

    Rows sum to 1 when [start, stop) lies inside [0, length).
    """
    edges = start + (stop - start) * np.arange(cells + 1, dtype=np.float64) / cells
    lo, hi = edges[:-1, None], edges[1:, None]
    pixels = np.arange(length, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, pixels + 1) - np.maximum(lo, pixels), 0.0, None)
    return overlap / (hi - lo)


def mask_coverage(mask: np.ndarray, image_size: tuple[int, int], grid: Grid) -> np.ndarray:
    """Fraction of each token's area covered by ``mask`` after the image's preprocessing.

    mask: (H0, W0) bool or {0, 1}, in original image pixels. The image is
    resized to (rh, rw) and center-cropped to ``image_size`` (h, w) at
    (top, left); token (i, j) covers the resized rows
    [top + i h/gh, top + (i+1) h/gh), i.e. the original rows scaled by H0/rh,
    and likewise for columns. Returns (gh, gw) float64 in [0, 1]: exact area
    averaging of the piecewise-constant mask (separable, so two matrix products).
    """
    height, width = mask.shape
    (rh, rw), (top, left) = resize_crop_geometry(height, width, image_size)
    h, w = image_size
    gh, gw = grid
    rows = overlap_weights(height, top * height / rh, (top + h) * height / rh, gh)
    cols = overlap_weights(width, left * width / rw, (left + w) * width / rw, gw)
    return rows @ np.asarray(mask, dtype=np.float64) @ cols.T


def grid_mask(mask: np.ndarray, image_size: tuple[int, int], grid: Grid, threshold: float = 0.5) -> np.ndarray:
    """(H0, W0) object mask -> (gh, gw) bool: tokens at least ``threshold`` covered.

    "At least" up to :data:`COVERAGE_TOLERANCE` (float64 round-off), so a token covered
    exactly ``threshold`` is object on any CPU.
    """
    return mask_coverage(mask, image_size, grid) >= threshold - COVERAGE_TOLERANCE


def mass_mask(cls_spatial: np.ndarray, mass: float = 0.6) -> np.ndarray:
    """Smallest set of tokens holding ``mass`` of each attention row.

    cls_spatial: (..., G) non-negative attention over the spatial keys (prefix
    keys already dropped); rows are renormalised to sum 1 here, in float64.
    Tokens are ranked by value, larger first, equal values in token order; a
    token is kept while the mass of the tokens ranked before it is below
    ``mass``. Returns (..., G) bool with at least one token per row, except for a
    zero-mass row (total below :data:`ZERO_MASS`, docs/attention.md), which has no
    distribution to take a share of: no token (see :func:`has_mass`).
    """
    values = np.asarray(cls_spatial, dtype=np.float64)
    total = values.sum(axis=-1, keepdims=True)
    ok = total >= ZERO_MASS
    values = np.where(ok, values / np.where(ok, total, 1.0), 0.0)
    order = np.argsort(-values, axis=-1, kind="stable")
    ranked = np.take_along_axis(values, order, axis=-1)
    before = np.cumsum(ranked, axis=-1) - ranked
    keep_ranked = before < mass - MASS_TOLERANCE
    keep = np.empty_like(keep_ranked)
    np.put_along_axis(keep, order, keep_ranked, axis=-1)
    return keep & ok


def has_mass(cls_spatial: np.ndarray) -> np.ndarray:
    """(..., G) -> (...) bool: rows whose spatial mass, summed in float64, is at least
    :data:`ZERO_MASS` (the others are zero-mass rows, docs/attention.md)."""
    return np.asarray(cls_spatial, dtype=np.float64).sum(axis=-1) >= ZERO_MASS


def iou(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """IoU of boolean masks over the last axis (broadcasting); NaN where ``target`` is empty."""
    pred, target = np.asarray(pred, dtype=bool), np.asarray(target, dtype=bool)
    inter = (pred & target).sum(axis=-1)
    union = (pred | target).sum(axis=-1)
    empty = ~target.any(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = inter / union
    return np.where(np.broadcast_to(empty, out.shape), np.nan, out)


def saliency_iou(cls_rows: np.ndarray, masks: np.ndarray, prefix: int = 1, mass: float = 0.6) -> np.ndarray:
    """IoU of the CLS attention's mass set with the object mask, per image, block, head.

    cls_rows: (N, L, H, T) the CLS query's attention over all keys (a dump's
    ``attention/cls``); masks: (N, gh, gw) bool grid masks (:func:`grid_mask`).
    Returns (N, L, H) float64, NaN for images with an empty mask and for CLS
    rows with no spatial mass (:func:`has_mass`; zero-mass rule, docs/attention.md).
    """
    n = cls_rows.shape[0]
    if masks.shape[0] != n:
        raise ValueError(f"{n} attention rows but {masks.shape[0]} masks")
    spatial = cls_rows[..., prefix:]
    pred = mass_mask(spatial, mass)
    target = masks.reshape(n, 1, 1, -1)
    if pred.shape[-1] != target.shape[-1]:
        raise ValueError(f"attention has {pred.shape[-1]} spatial keys, masks {target.shape[-1]} tokens")
    return np.where(has_mass(spatial), iou(pred, target), np.nan)


def summary_rows(ious: np.ndarray, model: str, empty: np.ndarray | None = None) -> list[dict[str, object]]:
    """Tidy rows of an IoU table from per-image IoUs (N, L, H) (NaN = undefined).

    ``empty``: (N,) bool, the images whose grid mask is empty (their IoUs are NaN);
    None: the images whose IoU is NaN at every block and head. Any other NaN is a
    CLS row with no spatial mass (:func:`saliency_iou`).

    ``selection`` says what a row is:
    ``head``: one head's mean IoU over images (``head`` 1-indexed);
    ``best_head_once``: the head with the highest mean IoU, chosen once over the
    dataset for this block (``head`` = the chosen head; ties: the lowest);
    ``per_image_best_head``: the study's oracle, mean over images of the best
    head of each image (``head`` empty: it varies).
    ``iou`` is the mean, ``iou_std`` the standard deviation over the images used,
    ``images`` the images with a non-empty mask, ``empty_masks`` those left out,
    ``zero_mass`` the images of ``images`` left out of this row because the CLS row
    had no spatial mass (for ``per_image_best_head``: at every head of the block).
    A NaN IoU says why in ``note`` (:data:`NO_MASK`, :data:`NO_MASS`); with
    ``images`` = 0, ``best_head_once`` names no head. Each reason is logged.
    """
    ious = np.asarray(ious, dtype=np.float64)
    n, blocks, heads = ious.shape
    if empty is None:
        empty = np.isnan(ious.reshape(n, -1)).all(axis=1) if ious.size else np.ones(n, bool)
    empty = np.asarray(empty, dtype=bool)
    if empty.shape != (n,):
        raise ValueError(f"{n} images of IoUs but an empty-mask flag of shape {empty.shape}")
    kept = ious[~empty]  # (N', L, H)
    images, n_empty = int(len(kept)), int(empty.sum())
    defined = ~np.isnan(kept)
    used = defined.sum(axis=0)  # (L, H)
    rows: list[dict[str, object]] = []
    base = {"model": model, "images": images, "empty_masks": n_empty}
    if n_empty:
        log.warning("saliency IoU of %s: %d of %d images have an empty grid mask and are left out%s", model, n_empty,
                    n, "; every IoU is NaN" if images == 0 else "")
    zero = images - used
    if images and zero.any():
        log.warning("saliency IoU of %s: %d (image, block, head) CLS rows have no spatial mass and are left out "
                    "(zero-mass rule, docs/attention.md); %d block-heads have none left", model, int(zero.sum()),
                    int((used == 0).sum()))

    def mean_std(values: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        count = ok.sum(axis=0)
        safe = np.where(ok, values, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = safe.sum(axis=0) / count
            var = np.where(ok, (safe - mean) ** 2, 0.0).sum(axis=0) / count
        return mean, np.sqrt(var)

    mean, std = mean_std(kept, defined)  # (L, H), NaN where no image is used
    best_of_image = np.where(defined, kept, -np.inf).max(axis=-1) if images else np.zeros((0, blocks))
    image_defined = defined.any(axis=-1)  # (N', L)
    best_image, best_image_std = mean_std(np.where(image_defined, best_of_image, 0.0), image_defined)

    def note(count: int) -> str:
        return NO_MASK if images == 0 else (NO_MASS if count == 0 else "")

    for b in range(blocks):
        for h in range(heads):
            rows.append(
                {**base, "block": b + 1, "selection": "head", "head": h + 1, "iou": float(mean[b, h]),
                 "iou_std": float(std[b, h]), "zero_mass": int(zero[b, h]) if images else 0,
                 "note": note(int(used[b, h]))}
            )
        some = bool(images) and bool((used[b] > 0).any())
        best = int(np.argmax(np.where(used[b] > 0, mean[b], -np.inf))) if some else 0
        rows.append(
            {**base, "block": b + 1, "selection": "best_head_once", "head": best + 1 if some else "",
             "iou": float(mean[b, best]) if some else math.nan, "iou_std": float(std[b, best]) if some else math.nan,
             "zero_mass": int(zero[b, best]) if images else 0, "note": note(int(used[b, best]) if some else 0)}
        )
        with_mass = int(image_defined[:, b].sum())
        rows.append(
            {**base, "block": b + 1, "selection": "per_image_best_head", "head": "",
             "iou": float(best_image[b]), "iou_std": float(best_image_std[b]),
             "zero_mass": images - with_mass, "note": note(with_mass)}
        )
    return rows


COLUMNS = ("model", "block", "selection", "head", "iou", "iou_std", "images", "empty_masks", "zero_mass", "note")


# ------------------------------------------------------------ ground truth from annotations


def object_mask(coco: COCO, image_id: int) -> np.ndarray:
    """(H0, W0) bool union of every instance mask of an image (crowd regions included).

    Polygon parts with fewer than 3 points (malformed, as in some PartImageNet
    annotations) are dropped, the other parts kept (the study skipped an
    annotation whose first part was malformed; docs/differences.md).
    """
    info = coco.imgs[image_id]
    out = np.zeros((int(info["height"]), int(info["width"])), dtype=bool)
    for ann in coco.imgToAnns.get(image_id, []):
        out |= instance_mask(coco, ann)
    return out


def instance_mask(coco: COCO, ann: dict) -> np.ndarray:
    """(H0, W0) bool mask of one annotation; polygon parts with fewer than 3 points
    are dropped (all zero when none is left)."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        seg = [p for p in seg if len(p) >= 6]
        if not seg:
            info = coco.imgs[ann["image_id"]]
            return np.zeros((int(info["height"]), int(info["width"])), dtype=bool)
        ann = {**ann, "segmentation": seg}
    return coco.annToMask(ann).astype(bool)


def dataset_grid_masks(
    coco: COCO,
    paths: Sequence[str],
    root: str | Path,
    image_size: tuple[int, int],
    grid: Grid,
    threshold: float = 0.5,
    annotations: str = "annotations",
    check_sizes: bool = True,
) -> np.ndarray:
    """(N, gh, gw) bool grid masks of the images ``paths`` (a dump's ``images/path``).

    Each path must be ``root/<file_name>`` of an image of ``coco``. With
    ``check_sizes`` every image's header is read and its size compared with
    the annotation's height and width (a mismatch would misplace the mask).
    """
    by_path = {str(Path(root) / info["file_name"]): i for i, info in coco.imgs.items()}
    out = np.zeros((len(paths), *grid), dtype=bool)
    for n, path in enumerate(paths):
        if path not in by_path:
            raise DatasetError(f"image '{path}' of the dump is not in '{annotations}' under root '{root}'")
        image_id = by_path[path]
        info = coco.imgs[image_id]
        if check_sizes:
            with open_image(path) as img:
                if img.size != (int(info["width"]), int(info["height"])):
                    raise DatasetError(
                        f"image '{path}' is {img.size[0]} x {img.size[1]} but '{annotations}' says "
                        f"{info['width']} x {info['height']} (id {image_id})"
                    )
        out[n] = grid_mask(object_mask(coco, image_id), image_size, grid, threshold)
    return out


def dump_iou(
    dump,
    coco: COCO,
    root: str | Path,
    mass: float = 0.6,
    threshold: float = 0.5,
    annotations: str = "annotations",
    chunk: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image IoU (N, L, H) and grid masks (N, gh, gw) of an open dump.

    Reads ``attention/cls`` in chunks of ``chunk`` images; the masks follow
    the dump's ``image_size`` and grid (:func:`dataset_grid_masks`).
    """
    from ..io.dumps import geometry, require

    geom = geometry(dump)
    cls = require(dump, "attention/cls")
    paths = list(dump["images/path"].asstr()[...])
    image_size = tuple(int(v) for v in dump.attrs["image_size"])
    masks = dataset_grid_masks(coco, paths, root, image_size, geom["grid"], threshold, annotations)
    out = np.empty(cls.shape[:3], dtype=np.float64)
    for start in range(0, len(paths), chunk):
        stop = min(start + chunk, len(paths))
        out[start:stop] = saliency_iou(cls[start:stop], masks[start:stop], geom["prefix"], mass)
    return out, masks
