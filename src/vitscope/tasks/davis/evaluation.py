"""DAVIS-2017 semi-supervised video object segmentation (docs/protocols.md#downstream-tasks).

Two halves, both pure (arrays in, arrays out):

Scoring, the official davis2017-evaluation definition
    :func:`j_measure` (region similarity, IoU; 1 when both masks are empty),
    :func:`f_measure` (boundary F-measure: one-pixel boundaries from the east,
    south and south-east shifts, each dilated by a disk of radius
    ceil(0.008 x image diagonal), precision / recall with the official empty
    cases), :func:`statistics` (per object: mean, recall = share of frames
    above 0.5, decay = mean of the first quarter minus the last quarter),
    :func:`evaluate_sequence` (per object and frame; the first and the last
    frames are excluded) and :func:`pooled` (every object of every sequence
    pooled; J&F = (mean J + mean F) / 2).

    The official evaluator sets void pixels (255) of the ground truth to
    background before splitting objects, so its void exclusion never applies
    in the semi-supervised task; :func:`evaluate_sequence` does the same. The
    measures still accept a void mask (the official ``db_eval_iou`` /
    ``f_measure`` semantics) for other uses.

Label propagation, DINO's parameters
    :class:`Propagator`: each target token takes the labels of its top-k
    sources (jointly over the context frames, ties at the k-th value kept)
    weighted by exp(<f_t, f_s> / T) within a (2r + 1)^2 neighbourhood on the
    feature grid; context = the first frame (its annotation, one-hot) and the
    last ``context`` predicted frames (their soft labels). :func:`to_mask`
    turns soft labels into a mask of the original size: bilinear upsampling by
    the patch size, per-channel min-max, argmax, nearest resize.

Shapes: G = gh * gw tokens, D width, C = 1 + objects channels (background
first), S context frames, N frames of H x W pixels, K objects.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image
from scipy import ndimage

from ... import cosine

VOID = 255
BOUND_TH = 0.008
TEMPERATURE = 0.1
TOPK = 5
CONTEXT = 7
RADIUS = 12

#: per-sequence table: one row per block, object, measure and statistic
OBJECT_COLUMNS = ("model", "block", "sequence", "object", "frames", "measure", "metric", "value")
#: pooled table: one row per block, measure and statistic
COLUMNS = ("model", "block", "measure", "metric", "objects", "value", "sequences", "frames")
STATISTICS = ("mean", "recall", "decay")


# --------------------------------------------------------------------------- scoring


def j_measure(pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None) -> np.ndarray:
    """Region similarity J (intersection over union) of binary masks.

    pred, gt: (..., H, W) boolean (anything non-zero is foreground); void: (..., H, W)
    pixels left out of both the intersection and the union, or None. Returns (...)
    float64; 1 where the union is empty (both masks empty), as the official code.
    """
    pred, gt = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"j_measure: prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    keep = np.ones_like(gt) if void is None else ~np.asarray(void).astype(bool)
    inter = np.sum(pred & gt & keep, axis=(-2, -1), dtype=np.float64)
    union = np.sum((pred | gt) & keep, axis=(-2, -1), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union == 0, 1.0, inter / np.where(union == 0, 1.0, union))


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary (H, W) mask, as the official ``seg2bmap``.

    A pixel is on the boundary when it differs from its east, south or south-east
    neighbour (pixels beyond the image count as background); in the last row only the
    east neighbour counts, in the last column only the south one, and the bottom-right
    pixel never. Boundaries thus sit half a pixel towards the origin. Returns (H, W) bool.
    """
    m = np.asarray(mask).astype(bool)
    east, south, south_east = np.zeros_like(m), np.zeros_like(m), np.zeros_like(m)
    east[:, :-1] = m[:, 1:]
    south[:-1, :] = m[1:, :]
    south_east[:-1, :-1] = m[1:, 1:]
    edge = (m ^ east) | (m ^ south) | (m ^ south_east)
    edge[-1, :] = m[-1, :] ^ east[-1, :]
    edge[:, -1] = m[:, -1] ^ south[:, -1]
    edge[-1, -1] = False
    return edge


def disk(radius: int) -> np.ndarray:
    """(2r + 1, 2r + 1) boolean disk: offsets (dy, dx) with dy^2 + dx^2 <= r^2."""
    r = int(radius)
    y, x = np.mgrid[-r : r + 1, -r : r + 1]
    return (y * y + x * x) <= r * r


def bound_pixels(shape: tuple[int, int], bound_th: float = BOUND_TH) -> int:
    """Dilation radius in pixels: ``bound_th`` itself when >= 1, else ceil(bound_th x diagonal)."""
    return int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(*shape)))


def _dilate(edge: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    if not edge.any():
        return edge.copy()
    return ndimage.binary_dilation(edge, structure=footprint, border_value=0)


def _f_from_boundaries(
    pred_edge: np.ndarray, pred_dil: np.ndarray, gt_edge: np.ndarray, gt_dil: np.ndarray
) -> float:
    n_pred, n_gt = int(pred_edge.sum()), int(gt_edge.sum())
    if n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    elif n_pred == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        precision = float(np.sum(pred_edge & gt_dil)) / n_pred
        recall = float(np.sum(gt_edge & pred_dil)) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def f_measure(
    pred: np.ndarray, gt: np.ndarray, void: np.ndarray | None = None, bound_th: float = BOUND_TH
) -> float:
    """Boundary F-measure of two binary (H, W) masks (official davis2017-evaluation).

    Both boundaries (:func:`boundary_map`, after void pixels are cleared from both masks)
    are dilated by a disk of radius :func:`bound_pixels`; precision = share of predicted
    boundary pixels within the dilated true boundary, recall = share of true boundary
    pixels within the dilated predicted one; F = 2PR / (P + R), 0 when P + R = 0. Empty
    boundaries: none predicted and none true -> P = R = 1; none predicted -> P = 1, R = 0;
    none true -> P = 0, R = 1.
    """
    pred, gt = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"f_measure: needs two (H, W) masks of one shape, got {pred.shape} and {gt.shape}")
    if void is not None:
        keep = ~np.asarray(void).astype(bool)
        pred, gt = pred & keep, gt & keep
    footprint = disk(bound_pixels(gt.shape, bound_th))
    pred_edge, gt_edge = boundary_map(pred), boundary_map(gt)
    return _f_from_boundaries(pred_edge, _dilate(pred_edge, footprint), gt_edge, _dilate(gt_edge, footprint))


def decay_bins(n: int) -> list[tuple[int, int]]:
    """The official four (overlapping) frame bins [start, stop) of the decay over n frames."""
    edges = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    return [(int(edges[i]), int(edges[i + 1]) + 1) for i in range(4)]


def statistics(values: np.ndarray) -> dict[str, float]:
    """Mean, recall and decay of one object's per-frame values (n,), float64.

    recall = share of frames with a value above 0.5; decay = mean over the first of the
    four :func:`decay_bins` minus the mean over the last (the official ``db_statistics``;
    NaN values are ignored).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise ValueError("statistics: no frames to summarise")
    bins = decay_bins(values.size)
    first, last = values[slice(*bins[0])], values[slice(*bins[3])]
    return {
        "mean": float(np.nanmean(values)),
        "recall": float(np.mean(values > 0.5)),
        "decay": float(np.nanmean(first) - np.nanmean(last)),
    }


def object_masks(labels: np.ndarray, num_objects: int) -> np.ndarray:
    """(..., H, W) object ids -> (K, ..., H, W) boolean masks of ids 1..K (void 255 and 0: none)."""
    labels = np.asarray(labels)
    ids = np.arange(1, num_objects + 1).reshape((-1,) + (1,) * labels.ndim)
    return labels[None] == ids


class FrameScorer:
    """J and F of every object in one frame, for several predictions of it (e.g. one per block).

    The ground truth's boundaries and their dilations are computed once per frame.
    ``gt``: (H, W) object ids (void 255 counts as background, as the official evaluator).
    """

    def __init__(self, gt: np.ndarray, num_objects: int, bound_th: float = BOUND_TH):
        gt = np.asarray(gt)
        self.num_objects = num_objects
        self.gt = object_masks(gt, num_objects)
        self.footprint = disk(bound_pixels(gt.shape, bound_th))
        self.gt_edges = [boundary_map(m) for m in self.gt]
        self.gt_dilated = [_dilate(e, self.footprint) for e in self.gt_edges]

    def __call__(self, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """pred: (H, W) predicted object ids -> J (K,), F (K,) float64."""
        pred = np.asarray(pred)
        if pred.shape != self.gt.shape[1:]:
            raise ValueError(f"prediction {pred.shape} and ground truth {self.gt.shape[1:]} differ in shape")
        masks = object_masks(pred, self.num_objects)
        j = j_measure(masks, self.gt)
        f = np.empty(self.num_objects, dtype=np.float64)
        for k, mask in enumerate(masks):
            edge = boundary_map(mask)
            f[k] = _f_from_boundaries(edge, _dilate(edge, self.footprint), self.gt_edges[k], self.gt_dilated[k])
        return j, f


def evaluate_sequence(
    pred: np.ndarray, gt: np.ndarray, num_objects: int | None = None, bound_th: float = BOUND_TH
) -> tuple[np.ndarray, np.ndarray]:
    """Per-object, per-frame J and F of one sequence (semi-supervised protocol).

    pred, gt: (N, H, W) object ids (gt void 255 = background); ``num_objects`` defaults
    to the largest id of the first ground-truth frame. The first and the last frames are
    excluded: returns J, F of shape (K, N - 2), float64. A predicted id above K is an
    error (the official evaluator refuses such files).
    """
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"evaluate_sequence: needs (N, H, W) arrays of one shape, got {pred.shape}, {gt.shape}")
    if pred.shape[0] < 3:
        raise ValueError(f"evaluate_sequence: {pred.shape[0]} frames; the first and last are excluded, need >= 3")
    if num_objects is None:
        num_objects = first_frame_objects(gt[0])
    inner = pred[1:-1]
    if inner.size and int(inner.max()) > num_objects:
        raise ValueError(f"evaluate_sequence: a predicted id {int(inner.max())} exceeds the {num_objects} objects")
    j = np.empty((num_objects, len(inner)), dtype=np.float64)
    f = np.empty_like(j)
    for t in range(len(inner)):
        j[:, t], f[:, t] = FrameScorer(gt[t + 1], num_objects, bound_th)(inner[t])
    return j, f


def first_frame_objects(annotation: np.ndarray) -> int:
    """Number of objects of a sequence: the largest id of its first annotation (void 255 ignored)."""
    ids = np.asarray(annotation)
    ids = ids[ids != VOID]
    return int(ids.max()) if ids.size else 0


def object_rows(
    j: np.ndarray, f: np.ndarray, model: str, block: int, sequence: str
) -> list[dict[str, Any]]:
    """Tidy rows (OBJECT_COLUMNS) of one block and sequence from J, F of shape (K, n); block 1-indexed,
    objects 1-indexed."""
    rows = []
    for k in range(j.shape[0]):
        for measure, values in (("J", j[k]), ("F", f[k])):
            stats = statistics(values)
            rows += [
                {"model": model, "block": block, "sequence": sequence, "object": k + 1, "frames": values.size,
                 "measure": measure, "metric": name, "value": stats[name]}
                for name in STATISTICS
            ]
    return rows


def pooled(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Pool per-object rows (OBJECT_COLUMNS, any sequences) into rows (COLUMNS) per model and block.

    J and F: the mean over objects of each statistic; J&F: (mean J + mean F) / 2 (only
    the mean, as the official evaluator). Objects are weighted equally, whatever their
    sequence or number of frames; sums in float64. ``sequences`` counts the sequences pooled and
    ``frames`` the frames scored in them (each sequence's first and last frames excluded).
    """
    groups: dict[tuple[str, int, str, str], list[float]] = {}
    scored: dict[tuple[str, int], dict[str, int]] = {}
    for row in rows:
        scored.setdefault((str(row["model"]), int(row["block"])), {})[str(row["sequence"])] = int(row["frames"])
        key = (str(row["model"]), int(row["block"]), str(row["measure"]), str(row["metric"]))
        groups.setdefault(key, []).append(float(row["value"]))
    out = []
    for model, block in dict.fromkeys((m, b) for m, b, _, _ in groups):
        means = {}
        for measure in ("J", "F"):
            for metric in STATISTICS:
                values = groups.get((model, block, measure, metric))
                if values is None:
                    raise ValueError(f"pooled: no {measure} {metric} rows for model {model} block {block}")
                means[measure, metric] = float(np.mean(np.asarray(values, dtype=np.float64)))
        objects = len(groups[model, block, "J", "mean"])
        counts = {"sequences": len(scored[model, block]), "frames": sum(scored[model, block].values())}
        out.append({"model": model, "block": block, "measure": "J&F", "metric": "mean", "objects": objects,
                    "value": (means["J", "mean"] + means["F", "mean"]) / 2, **counts})
        out += [
            {"model": model, "block": block, "measure": measure, "metric": metric, "objects": objects,
             "value": means[measure, metric], **counts}
            for measure in ("J", "F")
            for metric in STATISTICS
        ]
    return sorted(out, key=lambda r: (r["model"], r["block"]))


# ------------------------------------------------------------------- label propagation


def neighbourhood(grid: tuple[int, int], radius: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(G, G) boolean: source token s lies in the (2r + 1)^2 window around target token t
    (|row difference| <= r and |column difference| <= r); all True when r <= 0 (no restriction,
    DINO's size_mask_neighborhood = 0). Symmetric, so either index may be the source."""
    gh, gw = grid
    if radius <= 0:
        return torch.ones(gh * gw, gh * gw, dtype=torch.bool, device=device)
    rows = torch.arange(gh, device=device).repeat_interleave(gw)
    cols = torch.arange(gw, device=device).repeat(gh)
    near_rows = (rows[:, None] - rows[None, :]).abs() <= radius
    near_cols = (cols[:, None] - cols[None, :]).abs() <= radius
    return near_rows & near_cols


def normalize(features: torch.Tensor) -> torch.Tensor:
    """(..., D) features scaled to unit L2 norm along the last axis."""
    return F.normalize(features, p=2, dim=-1)


def propagate(
    target: torch.Tensor,
    sources: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = TEMPERATURE,
    topk: int = TOPK,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft labels of a target frame from its context frames (one propagation step).

    target: (G, D) and sources: (S, G', D) L2-normalised features; labels: (S, C, G')
    the sources' (soft) labels; mask: (G', G) boolean neighbourhood (source, target) or
    None. Affinity exp(<f_s, f_t> / T), zero outside the neighbourhood; per target,
    the sources below the k-th largest affinity over all S x G' candidates are dropped
    (ties at the k-th kept, zeros count as candidates), the rest normalised to sum 1.
    Returns (C, G) soft labels.

    Only the top-k similarities are exponentiated (exp is monotonic). Which sources are
    kept is decided exactly: the float32 product orders its sums by the BLAS kernel, so
    two identical sources (a repeated frame) may land a few ulp apart there and the tie
    at the k-th would not be one. A target with any candidate within
    :func:`vitscope.cosine.margin` of its k-th value (a tie or a near-tie, or fewer than
    k candidates in its neighbourhood) has those candidates rescored with the fixed-order
    :func:`vitscope.cosine.cosine64` and keeps the ones reaching the k-th rescored value
    (weighted by their affinities as computed), so ties are DINO's thresholding and
    identical sources are kept or dropped together, on any CPU.
    """
    s, g_src, d = sources.shape
    g = target.shape[0]
    flat_sources = sources.reshape(s * g_src, d)
    sim = target @ flat_sources.T  # (G, S G'), rows contiguous
    if mask is not None:
        outside = ~mask.T.reshape(g, 1, g_src)
        sim = sim.view(g, s, g_src).masked_fill(outside, float("-inf")).view(g, s * g_src)
    k = min(topk, s * g_src)
    values, index = torch.topk(sim, k, dim=1)  # (G, k), best first
    weights = torch.exp(values / temperature)  # exp(-inf) = 0: outside the neighbourhood
    weights = weights / weights.sum(dim=1, keepdim=True)
    flat = labels.permute(1, 0, 2).reshape(labels.shape[1], s * g_src).to(weights.dtype)  # (C, S G')
    out = (flat[:, index] * weights).sum(dim=-1)  # (C, G)
    # the top-k and whatever could tie with the k-th: sim >= kth - margin, the bound rounded down
    bound = values[:, -1:].double() - cosine.margin(d, u=torch.finfo(sim.dtype).eps / 2)
    floor = bound.to(sim.dtype)
    floor = torch.where(floor.double() > bound, torch.nextafter(floor, torch.full_like(floor, -math.inf)), floor)
    near = sim >= floor
    ambiguous = (near.sum(dim=1) > k).nonzero().flatten()
    if ambiguous.numel():
        rows = sim[ambiguous]
        keep = _exact_keep(target[ambiguous], flat_sources, rows, near[ambiguous], k)
        aff = torch.where(keep, torch.exp(rows / temperature), torch.zeros((), dtype=rows.dtype, device=rows.device))
        out[:, ambiguous] = flat @ (aff / aff.sum(dim=1, keepdim=True)).T
    return out


def _exact_keep(
    target: torch.Tensor, sources: torch.Tensor, rows: torch.Tensor, candidates: torch.Tensor, k: int
) -> torch.Tensor:
    """(R, S G') bool: the sources of R targets whose exact similarity reaches the k-th exact value.

    target: (R, D); sources: (S G', D); rows: (R, S G') their float32 similarities (-inf outside
    the neighbourhood); candidates: (R, S G') bool, a superset of every source that can reach
    the k-th (:func:`propagate`). Outside sources stay -inf (kept only when fewer than k are
    inside, with weight exp(-inf) = 0, as the dense rule).
    """
    r_idx, c_idx = (candidates & torch.isfinite(rows)).nonzero(as_tuple=True)
    work = torch.float64 if target.dtype == torch.float64 else torch.float32  # float32 holds bf16 / f16 exactly
    pairs_t = target[r_idx].detach().to(work).cpu().numpy()
    pairs_s = sources[c_idx].detach().to(work).cpu().numpy()
    exact = np.full(tuple(rows.shape), -np.inf)
    exact[r_idx.cpu().numpy(), c_idx.cpu().numpy()] = cosine.cosine64(pairs_t, pairs_s)
    kth = -np.partition(-exact, k - 1, axis=1)[:, k - 1 : k]
    return torch.from_numpy(exact >= kth).to(rows.device)


def first_labels(annotation: np.ndarray, grid: tuple[int, int], num_objects: int) -> torch.Tensor:
    """One-hot labels (C, gh * gw) of the first frame: its (H, W) annotation resized to the
    grid with PIL's nearest neighbour (DINO); void 255 counts as background; C = 1 + K."""
    ids = np.asarray(annotation).astype(np.uint8).copy()
    ids[ids == VOID] = 0
    if int(ids.max(initial=0)) > num_objects:
        raise ValueError(f"first_labels: an id {int(ids.max())} exceeds the {num_objects} objects")
    small = np.asarray(Image.fromarray(ids).resize((grid[1], grid[0]), Image.NEAREST))
    one_hot = F.one_hot(torch.from_numpy(small.astype(np.int64)).flatten(), num_objects + 1)
    return one_hot.T.to(torch.float32)


class Propagator:
    """Label propagation through a video, one target frame at a time (one block's features).

    ``features0``: (G, D) features of the first frame (normalised here), ``labels0``: its
    (C, G) one-hot labels (:func:`first_labels`). :meth:`step` takes a frame's (G, D)
    features and returns its (C, G) soft labels; the context of each step is the first
    frame and the soft predictions of the last ``context`` frames (DINO's queue).
    """

    def __init__(
        self,
        features0: torch.Tensor,
        labels0: torch.Tensor,
        grid: tuple[int, int],
        temperature: float = TEMPERATURE,
        topk: int = TOPK,
        context: int = CONTEXT,
        radius: int = RADIUS,
    ):
        if features0.shape[0] != grid[0] * grid[1] or labels0.shape[1] != features0.shape[0]:
            raise ValueError(
                f"Propagator: features {tuple(features0.shape)} and labels {tuple(labels0.shape)} do not fit "
                f"the grid {grid}"
            )
        self.grid, self.temperature, self.topk = grid, temperature, topk
        self.first = (normalize(features0), labels0.to(features0.dtype))
        self.history: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=max(0, context))
        self.context = context
        self.mask = neighbourhood(grid, radius, device=features0.device) if radius > 0 else None

    def step(self, features: torch.Tensor) -> torch.Tensor:
        """(G, D) features of the next frame -> its (C, G) soft labels (kept as context)."""
        target = normalize(features)
        pairs = [self.first, *self.history]
        sources = torch.stack([p[0] for p in pairs])
        labels = torch.stack([p[1] for p in pairs])
        out = propagate(target, sources, labels, self.temperature, self.topk, self.mask)
        if self.context > 0:
            self.history.append((target, out))
        return out


def minmax_channels(x: torch.Tensor) -> torch.Tensor:
    """(C, h, w): each channel whose maximum is positive rescaled to [0, 1] by its min and
    max (DINO's ``norm_mask``); a constant positive channel becomes 0 (DINO divides 0 by 0);
    other channels unchanged."""
    lo = x.amin(dim=(1, 2), keepdim=True)
    hi = x.amax(dim=(1, 2), keepdim=True)
    span = hi - lo
    scaled = torch.where(span > 0, (x - lo) / torch.where(span > 0, span, torch.ones_like(span)), x - lo)
    return torch.where(hi > 0, scaled, x)


def to_mask(soft: torch.Tensor, grid: tuple[int, int], patch: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """(C, G) soft labels -> (H, W) uint8 object ids of the original frame size ``size`` (H, W).

    Bilinear upsampling by the patch size (align_corners False), :func:`minmax_channels`,
    argmax over channels (lowest id on ties), PIL nearest resize to (H, W) (DINO).
    """
    c = soft.shape[0]
    grid_labels = soft.reshape(1, c, *grid).float()
    up = F.interpolate(grid_labels, size=(grid[0] * patch[0], grid[1] * patch[1]), mode="bilinear",
                       align_corners=False)[0]
    ids = minmax_channels(up).argmax(dim=0).to(torch.uint8).cpu().numpy()
    return np.asarray(Image.fromarray(ids).resize((size[1], size[0]), Image.NEAREST))


def propagate_video(
    features: Sequence[torch.Tensor],
    annotation: np.ndarray,
    grid: tuple[int, int],
    patch: tuple[int, int],
    num_objects: int | None = None,
    temperature: float = TEMPERATURE,
    topk: int = TOPK,
    context: int = CONTEXT,
    radius: int = RADIUS,
) -> np.ndarray:
    """Masks (N, H, W) uint8 of a whole video from per-frame (G, D) features (one block) and the
    first frame's (H, W) annotation; frame 0 of the result is the annotation itself."""
    if num_objects is None:
        num_objects = first_frame_objects(annotation)
    prop = Propagator(features[0], first_labels(annotation, grid, num_objects), grid, temperature, topk,
                      context, radius)
    masks = [np.asarray(annotation, dtype=np.uint8)]
    for feats in features[1:]:
        masks.append(to_mask(prop.step(feats), grid, patch, masks[0].shape))
    return np.stack(masks)
