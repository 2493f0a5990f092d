"""SPair-71k keypoint transfer and PCK (docs/protocols.md#downstream-tasks).

Each image is letterboxed into the model's canvas (h, w): scaled by
s = min(h / height, w / width), the resized image (round(width s), round(height s))
centred with zero (black) padding, keypoints and boxes mapped by p -> p s + offset.
Per block, the spatial tokens (gh, gw, D) are L2-normalised per token and
bilinearly upsampled to pixels (align_corners = False, as ``F.interpolate``);
each source keypoint reads the upsampled source map at its nearest pixel, and
its prediction is the target pixel of highest similarity (argmax over all h x w
pixels, padding included; ties go to the first pixel in row-major order).

The similarity map is never materialised as (D, h, w): bilinear upsampling is
linear, so <q, up(F)>(y, x) = (Uh S Uw^T)(y, x) with S = F q on the token grid
and Uh (h, gh), Uw (w, gw) the interpolation matrices, applied as their two taps
per pixel in a fixed order (:func:`upsample`, not a BLAS product), so that tied
border pixels are bit-equal on any CPU. With ``renormalize``
the upsampled target features are L2-normalised again (an exact per-pixel
cosine); the study did not (its dot product of interpolated unit tokens equals
the cosine at token centres), which is the default.

A keypoint is correct when ||pred - gt||_2 < alpha * max(box h, box w) of the
target box in the letterboxed frame (strict). PCK pools the keypoints of a
category, then averages the categories; a category without a keypoint visible
in both images is NaN and left out of the mean.

Chance (:func:`chance`): the PCK of a prediction drawn uniformly from the h x w canvas
pixels (the pixels the transfer chooses from, padding included), exactly: per keypoint, the
share of canvas pixels the same test counts correct; pooled and averaged like PCK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ALPHAS = (0.1, 0.05, 0.01)


# --------------------------------------------------------------------------- letterbox


@dataclass(frozen=True)
class Letterbox:
    """Where an image of ``size`` = (width, height) lands in a (h, w) canvas."""

    scale: float
    resized: tuple[int, int]  # (width, height) of the scaled image
    offset: tuple[int, int]  # (x, y) of its top-left corner in the canvas
    canvas: tuple[int, int]  # (h, w)

    def points(self, points: np.ndarray) -> np.ndarray:
        """(K, 2) (x, y) image pixels -> (K, 2) canvas pixels, float64 (NaN stays NaN)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return p * self.scale + np.asarray(self.offset, dtype=np.float64)

    def box(self, box: Sequence[float]) -> np.ndarray:
        """(4,) [x1, y1, x2, y2] -> the same box in the canvas, float64."""
        return self.points(np.asarray(box, dtype=np.float64).reshape(2, 2)).reshape(4)


def letterbox(width: int, height: int, canvas: tuple[int, int]) -> Letterbox:
    """Letterbox geometry of a ``width`` x ``height`` image in a ``canvas`` = (h, w).

    Scale s = min(h / height, w / width) (the long side fills a square canvas); the
    resized size is rounded (half to even, as the study's ``np.around``), the offset
    is the floor of half the padding.
    """
    h, w = canvas
    if width < 1 or height < 1 or h < 1 or w < 1:
        raise ValueError(f"letterbox: image {width} x {height} and canvas {h} x {w} must be positive")
    scale = min(h / height, w / width)
    rw = min(w, max(1, round(width * scale)))
    rh = min(h, max(1, round(height * scale)))
    return Letterbox(scale, (rw, rh), ((w - rw) // 2, (h - rh) // 2), (h, w))


def box_size(box: np.ndarray) -> np.ndarray:
    """max(height, width) of boxes (..., 4) [x1, y1, x2, y2]."""
    box = np.asarray(box, dtype=np.float64)
    return np.maximum(box[..., 2] - box[..., 0], box[..., 3] - box[..., 1])


# --------------------------------------------------------------------------- transfer


def bilinear_taps(grid: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The two source cells and weights of every output pixel of a 1-D bilinear upsampling.

    Returns indices (size, 2) int64 and weights (size, 2) float64 (rows sum to 1), exactly
    ``F.interpolate(mode="bilinear", align_corners=False)`` from ``grid`` to ``size``:
    src = max((dst + 0.5) grid / size - 0.5, 0), cells floor(src) and the next (clamped;
    a pixel past the last cell's centre gets weights (1, 0) on it).
    """
    src = np.maximum((np.arange(size, dtype=np.float64) + 0.5) * (grid / size) - 0.5, 0.0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, grid - 1)
    frac = np.where(hi == lo, 0.0, src - lo)  # clamped at the last cell: weight 1 on it, exactly
    return np.stack([lo, hi], 1), np.stack([1.0 - frac, frac], 1)


def bilinear_matrix(grid: int, size: int) -> np.ndarray:
    """(size, grid) interpolation matrix U: upsampled = U @ values (see :func:`bilinear_taps`)."""
    index, weight = bilinear_taps(grid, size)
    u = np.zeros((size, grid), dtype=np.float64)
    np.add.at(u, (np.repeat(np.arange(size), 2), index.ravel()), weight.ravel())
    return u


def upsample(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., gh, gw) -> (..., h, w) bilinear upsampling (:func:`bilinear_taps`), rows then columns.

    Each output is its two taps added in a fixed order (elementwise, never a matrix product,
    whose summation order the BLAS kernel picks by position), and a clamped tap has the
    weight 1 exactly: pixels that read the same cells with the same weights (the border
    pixels beyond the outer token centres) get bit-equal values on any CPU, so their tie
    goes to the first pixel.
    """
    (rows, row_w), (cols, col_w) = bilinear_taps(values.shape[-2], size[0]), bilinear_taps(values.shape[-1], size[1])
    rows_up = values[..., rows[:, 0], :] * row_w[:, 0, None] + values[..., rows[:, 1], :] * row_w[:, 1, None]
    return rows_up[..., cols[:, 0]] * col_w[:, 0] + rows_up[..., cols[:, 1]] * col_w[:, 1]


def normalize_tokens(tokens: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """(..., D) scaled to unit L2 norm along the last axis (zero vectors stay zero), float64."""
    x = np.asarray(tokens, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def pixel_norms(tokens: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    """(h, w) L2 norms of the bilinearly upsampled features of unit ``tokens`` (gh, gw, D).

    Uses the token Gram matrix and the (at most) 2 x 2 taps of each pixel, so the
    (D, h, w) upsampled map is never formed.
    """
    gh, gw, _ = tokens.shape
    rows, row_w = bilinear_taps(gh, canvas[0])
    cols, col_w = bilinear_taps(gw, canvas[1])
    gram = np.einsum("ijd,kld->ijkl", tokens, tokens)
    total = np.zeros(canvas, dtype=np.float64)
    for a in range(2):
        for b in range(2):
            for c in range(2):
                for d in range(2):
                    weight = (row_w[:, a] * row_w[:, b])[:, None] * (col_w[:, c] * col_w[:, d])[None, :]
                    total += weight * gram[rows[:, a][:, None], cols[:, c][None, :], rows[:, b][:, None],
                                           cols[:, d][None, :]]
    return np.sqrt(np.maximum(total, 0.0))


def nearest_pixel(points: np.ndarray, canvas: tuple[int, int]) -> np.ndarray:
    """(K, 2) (x, y) canvas coordinates -> (K, 2) int64 pixel (column, row): rounded half up, clipped."""
    p = np.floor(np.asarray(points, dtype=np.float64) + 0.5).astype(np.int64)
    return np.stack([np.clip(p[:, 0], 0, canvas[1] - 1), np.clip(p[:, 1], 0, canvas[0] - 1)], 1)


def transfer(
    source: np.ndarray,
    target: np.ndarray,
    points: np.ndarray,
    canvas: tuple[int, int],
    renormalize: bool = False,
    chunk: int = 32,
) -> np.ndarray:
    """Nearest-neighbour keypoint transfer from dense features.

    source, target: (gh, gw, D) spatial tokens of one block (any scale; L2-normalised
    here); points: (K, 2) source keypoints (x, y) in canvas pixels; canvas: (h, w).
    Returns (K, 2) int64 predicted target pixels (x, y). Keypoints are processed
    ``chunk`` at a time, so memory is O(chunk x h x w).
    """
    src, trg = normalize_tokens(source), normalize_tokens(target)
    if src.shape != trg.shape:
        raise ValueError(f"transfer: source tokens {src.shape} and target tokens {trg.shape} differ")
    gh, gw, _ = src.shape
    h, w = canvas
    uh, uw = bilinear_matrix(gh, h), bilinear_matrix(gw, w)
    pix = nearest_pixel(np.asarray(points).reshape(-1, 2), canvas)
    # features of the upsampled source map at the keypoints' pixels: (K, D)
    query = np.einsum("ki,kj,ijd->kd", uh[pix[:, 1]], uw[pix[:, 0]], src)
    norms = pixel_norms(trg, canvas) if renormalize else None
    out = np.empty((len(pix), 2), dtype=np.int64)
    for start in range(0, len(pix), chunk):
        on_grid = np.einsum("ijd,kd->kij", trg, query[start : start + chunk])  # (k, gh, gw)
        sim = upsample(on_grid, canvas)  # (k, h, w)
        if norms is not None:
            sim = sim / np.maximum(norms, 1e-12)
        best = sim.reshape(len(sim), -1).argmax(axis=1)
        out[start : start + chunk] = np.stack([best % w, best // w], 1)
    return out


# --------------------------------------------------------------------------- scoring


def correct(
    pred: np.ndarray, gt: np.ndarray, box: np.ndarray, alphas: Sequence[float] = ALPHAS
) -> np.ndarray:
    """(A, K) bool: keypoint k is within alpha * max(h, w) of the target box (strictly).

    pred, gt: (K, 2) (x, y); box: (4,) [x1, y1, x2, y2] or (K, 4), in the frame of gt.
    """
    pred, gt = np.asarray(pred, dtype=np.float64).reshape(-1, 2), np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    if pred.shape != gt.shape:
        raise ValueError(f"pck: {len(pred)} predictions for {len(gt)} ground-truth keypoints")
    error = np.linalg.norm(pred - gt, axis=1)
    size = np.broadcast_to(box_size(box), error.shape)
    return error[None, :] < np.asarray(alphas, dtype=np.float64)[:, None] * size[None, :]


def chance(gt: np.ndarray, box: np.ndarray, canvas: tuple[int, int], alphas: Sequence[float] = ALPHAS) -> np.ndarray:
    """(A, K) exact PCK of a uniformly random predicted pixel: for each ground-truth keypoint, the
    share of the canvas's h x w pixels (x, y integer, as :func:`transfer` predicts) that
    :func:`correct` counts correct at each alpha.

    gt: (K, 2) (x, y); box: (4,) [x1, y1, x2, y2] in the canvas frame; canvas: (h, w). Only the
    pixels of the square around each keypoint that can be within the largest threshold are tested.
    """
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    alphas = np.asarray(alphas, dtype=np.float64)
    h, w = canvas
    radius = float(alphas.max(initial=0.0)) * float(box_size(box))
    out = np.zeros((alphas.size, len(gt)), dtype=np.float64)
    for k, (x, y) in enumerate(gt):
        xs = np.arange(max(0, int(np.floor(x - radius)) - 1), min(w, int(np.ceil(x + radius)) + 2))
        ys = np.arange(max(0, int(np.floor(y - radius)) - 1), min(h, int(np.ceil(y + radius)) + 2))
        if xs.size == 0 or ys.size == 0:
            continue
        pixels = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
        hits = correct(pixels, np.broadcast_to([x, y], pixels.shape), box, alphas)
        out[:, k] = hits.sum(axis=1) / (h * w)
    return out


def pck(pred: np.ndarray, gt: np.ndarray, box: np.ndarray, alphas: Sequence[float] = ALPHAS) -> np.ndarray:
    """(A,) fraction of keypoints correct at each alpha (see :func:`correct`); NaN without keypoints."""
    hits = correct(pred, gt, box, alphas)
    if hits.shape[1] == 0:
        return np.full(len(alphas), np.nan)
    return hits.sum(axis=1, dtype=np.float64) / hits.shape[1]


def category_means(
    correct_counts: Mapping[str, np.ndarray], keypoints: Mapping[str, int]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-category PCK (keypoints pooled) and their mean over categories.

    correct_counts: category -> (A,) number of correct keypoints; keypoints: category ->
    number of keypoints evaluated. Returns ({category: (A,) fraction, NaN when it has no
    keypoint}, (A,) mean over the categories that have keypoints; NaN if none has).
    """
    per = {
        name: (np.asarray(hits, dtype=np.float64) / keypoints[name]) if keypoints[name] > 0
        else np.full(np.shape(hits), np.nan)
        for name, hits in correct_counts.items()
    }
    kept = [v for name, v in per.items() if keypoints[name] > 0]
    if not kept:
        width = len(next(iter(correct_counts.values()))) if correct_counts else 0
        return per, np.full(width, np.nan)
    return per, np.mean(np.stack(kept), axis=0, dtype=np.float64)
