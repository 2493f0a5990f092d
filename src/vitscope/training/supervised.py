"""``fs``: supervised classification of the synthetic classes (cross-entropy, linear head on the CLS token)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .augment import Augment


class Supervised(nn.Module):
    """Encoder + linear classifier on its final-norm CLS token; only the encoder is kept."""

    def __init__(self, encoder: nn.Module, num_classes: int, augment: Augment, label_smoothing: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.embed_dim), num_classes)
        self.augment = augment
        self.label_smoothing = label_smoothing

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalized images -> (B, C) class logits."""
        return self.head(self.encoder(images))

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Cross-entropy of one augmented view of (B, 3, H, W) images in [0, 1] against (B,) labels."""
        return F.cross_entropy(
            self.logits(self.augment(images, generator)), labels, label_smoothing=self.label_smoothing
        )

    def after_step(self, progress: float) -> None:
        """Nothing to update between steps."""
