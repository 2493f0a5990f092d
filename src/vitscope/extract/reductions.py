"""The on-device reductions the extraction hooks (:mod:`.hooks`) apply to each batch.

- :func:`minibatch_grams`: (B, T, D) block or LayerNorm outputs -> float64 Gram matrices
  of the centred features of each CKA minibatch (``cka/*``);
- :func:`sink_statistics`: (B, H, T, T) attention -> (B, H, P + 1) attention-sink statistics;
- :func:`object_batch`: the padded per-object token weights of a batch (``objects``);
- :func:`accumulate`: float64 sums over images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ..features.objects import ImageObjects


def minibatch_grams(
    x: torch.Tensor, b: int, prefix: int, workspace: dict | None = None
) -> dict[str, torch.Tensor]:
    """(B, T, D) -> {rep: (chunks, b, b)} float64 Gram matrices of the centred features
    of each CKA minibatch (chunks = B // b consecutive runs of b images).

    Each minibatch's features are centred in float64, per feature over its b images,
    before the product: Xc Xc^T with Xc = H X, H = I - 11^T / b. The unbiased HSIC
    (:func:`vitscope.features.cka.hsic1`) is unchanged by it (docs/features.md), and the
    Gram matrix no longer carries the squared feature means, which swamp the
    differences between images when a channel's mean is hundreds of times its
    spread (massive activations). The mean is the float64 sum of the float32 features,
    image by image (exact for any realistic range of values: a float32 has 24 bits, a
    float64 53), divided by b; Xc = X - mean is rounded once. Features identical over the
    images give exactly zero (the sum is b x, and b x / b is x).

    ``workspace``: a dict the caller keeps between calls; the float64 centred features are
    written into a buffer kept there (one per shape and device), so the pass does not allocate
    and fault in a new float64 copy of every block and LayerNorm output.

    ``all`` = prefix tokens' Gram + spatial tokens' Gram (a Gram matrix of a
    concatenation is the sum of the parts' Gram matrices), so the all-token
    features are never multiplied twice.
    """
    chunks = x.shape[0] // b
    if chunks == 0:  # the tail of the order: fewer than b images form no minibatch
        return {}
    x = x[: chunks * b].reshape(chunks, b, *x.shape[1:])
    shape = (chunks, b, *x.shape[2:])
    key = (shape, x.device)
    buffer = workspace.get(key) if workspace is not None else None
    if buffer is None:
        buffer = torch.empty(shape, dtype=torch.float64, device=x.device)
        if workspace is not None:
            workspace.clear()  # one buffer: a short last batch replaces it
            workspace[key] = buffer
    if x.device.type == "cpu":  # image by image: torch's float64-dtype sum of float32 is slow on the CPU
        mean = x[:, :1].to(torch.float64, copy=True)
        for image in range(1, b):
            mean.add_(x[:, image : image + 1])
    else:  # one reduction (the sum is exact either way, so the order does not matter)
        mean = x.sum(dim=1, keepdim=True, dtype=torch.float64)
    mean.div_(b)
    xc = buffer.copy_(x).sub_(mean)
    spatial = xc[:, :, prefix:].flatten(2)
    out = {"spatial": spatial @ spatial.transpose(1, 2)}
    if prefix > 0:
        cls = xc[:, :, 0]
        out["cls"] = cls @ cls.transpose(1, 2)
        if prefix == 1:
            out["all"] = out["spatial"] + out["cls"]
        else:
            rest = xc[:, :, :prefix].flatten(2)
            out["all"] = out["spatial"] + rest @ rest.transpose(1, 2)
    else:
        mean_token = xc.mean(dim=2)
        out["cls"] = mean_token @ mean_token.transpose(1, 2)
        out["all"] = out["spatial"]
    return out


def sink_statistics(attn: torch.Tensor, prefix: int) -> torch.Tensor:
    """attn (B, H, T, T) -> (B, H, P + 1) attention-sink statistics of each image and head.

    Entry j < P: the mean over the G spatial queries of their attention on prefix
    token j (0 = CLS, then the registers); entry P: the mean over the spatial queries
    of their attention on the image's top spatial token, the spatial key with the
    largest such mean (the one the spatial queries attend to most; ties: any, the
    value is the same). Raw probabilities (no renormalisation; zero-mass rows
    included), in the attention's precision.
    """
    received = attn[:, :, prefix:, :].mean(dim=2)  # (B, H, T): mean over spatial queries
    return torch.cat([received[..., :prefix], received[..., prefix:].amax(dim=-1, keepdim=True)], dim=-1)


def object_batch(objects: Sequence[ImageObjects], tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad the object weights of a batch: (B, O_max, G) float32 and the (O,) int64 rows
    of the flattened (B * O_max) that hold objects, image by image, objects in order."""
    width = max((o.count for o in objects), default=0)
    weights = torch.zeros(len(objects), width, tokens, dtype=torch.float32)
    rows = []
    for b, image in enumerate(objects):
        if image.count:
            weights[b, : image.count] = torch.from_numpy(image.weights)
            rows.extend(range(b * width, b * width + image.count))
    return weights, torch.tensor(rows, dtype=torch.int64)


_NUMPY = (torch.float32, torch.float64)  # dtypes numpy adds (bfloat16 has no numpy type)


def accumulate(total: torch.Tensor, values: torch.Tensor) -> None:
    """total += values.sum(0), accumulated in float64 (``total``'s dtype).

    On the CPU image by image (torch's float64-dtype reduction of float32 input
    is several times slower there), through numpy, whose mixed float64 += float32 add is
    vectorised (torch's took 1.4x as long on (6, 196, 196) rows: benchmarks/blockwise.py);
    the same IEEE additions in the same order, so the same bits. On an accelerator one
    float64 reduction.
    """
    if values.device.type == "cpu" and values.dtype in _NUMPY and total.dtype in _NUMPY and not (
        values.requires_grad or total.requires_grad
    ):
        out = total.numpy()
        for value in values:
            np.add(out, value.numpy(), out=out)
    elif values.device.type == "cpu":
        for value in values:
            total.add_(value)
    else:
        total.add_(values.sum(dim=0, dtype=total.dtype))
