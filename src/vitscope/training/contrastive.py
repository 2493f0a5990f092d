"""``contrastive``: MoCo-v3-style InfoNCE between two augmented views, no labels.

The query branch is encoder -> projector -> predictor; the key branch is a
momentum (EMA) copy of encoder -> projector, never trained by gradients. For
views v1, v2 the loss is ``ctr(q1, k2) + ctr(q2, k1)`` with
``ctr(q, k) = 2 tau * CE(q k^T / tau, diag)`` over the batch (in-batch
negatives, L2-normalized q and k). The EMA momentum rises from ``momentum``
to 1 along a half cosine over training.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from .augment import Augment


def mlp(dims: list[int], last_bn: bool) -> nn.Sequential:
    """Linear layers of widths ``dims``, BatchNorm + ReLU between them (and BN after the last when ``last_bn``)."""
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        last = i == len(dims) - 2
        layers.append(nn.Linear(dims[i], dims[i + 1], bias=False))
        if not last:
            layers += [nn.BatchNorm1d(dims[i + 1]), nn.ReLU(inplace=True)]
        elif last_bn:
            layers.append(nn.BatchNorm1d(dims[i + 1], affine=False))
    return nn.Sequential(*layers)


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, E) queries and keys -> 2 tau * cross-entropy of matching q_i with k_i among all keys."""
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    logits = q @ k.T / temperature
    return F.cross_entropy(logits, torch.arange(q.shape[0])) * 2 * temperature


class Contrastive(nn.Module):
    """Query encoder, projector and predictor; momentum encoder and projector."""

    def __init__(
        self,
        encoder: nn.Module,
        augment: Augment,
        dim: int = 128,
        temperature: float = 0.2,
        momentum: float = 0.99,
    ):
        super().__init__()
        width = int(encoder.embed_dim)
        hidden = 2 * max(width, dim)
        self.encoder = encoder
        self.projector = mlp([width, hidden, hidden, dim], last_bn=True)
        self.predictor = mlp([dim, hidden, dim], last_bn=False)
        self.momentum_encoder = copy.deepcopy(encoder)
        self.momentum_projector = copy.deepcopy(self.projector)
        for module in (self.momentum_encoder, self.momentum_projector):
            module.requires_grad_(False)
        self.augment = augment
        self.temperature = temperature
        self.base_momentum = momentum
        self.momentum = momentum

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Symmetric InfoNCE of two augmented views of (B, 3, H, W) images in [0, 1]; labels unused."""
        v1, v2 = self.augment(images, generator), self.augment(images, generator)
        q1 = self.predictor(self.projector(self.encoder(v1)))
        q2 = self.predictor(self.projector(self.encoder(v2)))
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_encoder(v1))
            k2 = self.momentum_projector(self.momentum_encoder(v2))
        return info_nce(q1, k2, self.temperature) + info_nce(q2, k1, self.temperature)

    @torch.no_grad()
    def after_step(self, progress: float) -> None:
        """EMA update of the key branch; ``progress`` in [0, 1] sets the momentum (cosine to 1)."""
        self.momentum = 1 - (1 - self.base_momentum) * (math.cos(math.pi * progress) + 1) / 2
        for online, target in ((self.encoder, self.momentum_encoder), (self.projector, self.momentum_projector)):
            for p, t in zip(online.parameters(), target.parameters(), strict=True):
                t.mul_(self.momentum).add_(p.detach(), alpha=1 - self.momentum)
            for b, t in zip(online.buffers(), target.buffers(), strict=True):
                t.copy_(b)
