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

import torch

if TYPE_CHECKING:
    from ..features.objects import ImageObjects


def minibatch_grams(x: torch.Tensor, b: int, prefix: int) -> dict[str, torch.Tensor]:
    """(B, T, D) -> {rep: (chunks, b, b)} float64 Gram matrices of the centred features
    of each CKA minibatch (chunks = B // b consecutive runs of b images).

    Each minibatch's features are centred in float64, per feature over its b images,
    before the product: Xc Xc^T with Xc = H X, H = I - 11^T / b. The unbiased HSIC
    (:func:`vitscope.features.cka.hsic1`) is unchanged by it (docs/features.md), and the
    Gram matrix no longer carries the squared feature means, which swamp the
    differences between images when a channel's mean is hundreds of times its
    spread (massive activations). The first image's features are subtracted
    first (exact; it changes nothing after centring), so features identical over
    the images give exactly zero.

    ``all`` = prefix tokens' Gram + spatial tokens' Gram (a Gram matrix of a
    concatenation is the sum of the parts' Gram matrices), so the all-token
    features are never multiplied twice.
    """
    chunks = x.shape[0] // b
    if chunks == 0:  # the tail of the order: fewer than b images form no minibatch
        return {}
    x = x[: chunks * b].to(torch.float64, copy=True).reshape(chunks, b, *x.shape[1:])  # centred in place
    x.sub_(x[:, :1].clone())
    x.sub_(x.mean(dim=1, keepdim=True))
    spatial = x[:, :, prefix:].flatten(2)
    out = {"spatial": spatial @ spatial.transpose(1, 2)}
    if prefix > 0:
        cls = x[:, :, 0]
        out["cls"] = cls @ cls.transpose(1, 2)
        if prefix == 1:
            out["all"] = out["spatial"] + out["cls"]
        else:
            rest = x[:, :, :prefix].flatten(2)
            out["all"] = out["spatial"] + rest @ rest.transpose(1, 2)
    else:
        mean = x.mean(dim=2)
        out["cls"] = mean @ mean.transpose(1, 2)
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


def accumulate(total: torch.Tensor, values: torch.Tensor) -> None:
    """total += values.sum(0), accumulated in float64 (``total``'s dtype).

    On the CPU image by image (torch's float64-dtype reduction of float32 input
    is several times slower there); on an accelerator one float64 reduction.
    """
    if values.device.type == "cpu":
        for value in values:
            total.add_(value)
    else:
        total.add_(values.sum(dim=0, dtype=total.dtype))
