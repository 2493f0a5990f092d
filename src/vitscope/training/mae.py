"""``mae``: masked-patch reconstruction (He et al. 2022), no labels.

A random ``mask_ratio`` of the patches is dropped per image; the encoder (the
timm ViT, its own blocks) sees the CLS token and the visible patches only. A
light decoder embeds the encoded tokens, puts a shared mask token at every
dropped position, adds a fixed 2-D sin-cos position embedding, runs a few
transformer blocks and predicts each patch's pixels. The loss is the mean
squared error on the dropped patches of the per-patch normalized pixels
(each patch's pixels minus their mean, over their standard deviation).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from ..models.formats.mocov3 import sincos_pos_embed
from .augment import Augment


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, N, patch * patch * C), patches row-major, pixels (py, px, c) within a patch."""
    b, c, h, w = images.shape
    gh, gw = h // patch, w // patch
    x = images[:, :, : gh * patch, : gw * patch].reshape(b, c, gh, patch, gw, patch)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, patch * patch * c)


def normalized_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(B, N, P) -> each patch's values standardized over its P values (MAE's norm_pix_loss target)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=True)
    return (patches - mean) / (var + eps).sqrt()


def random_keep(batch: int, tokens: int, keep: int, generator: torch.Generator) -> torch.Tensor:
    """(B, keep) indices of the visible patches of each image, uniformly without replacement, sorted."""
    noise = torch.rand(batch, tokens, generator=generator)
    return torch.argsort(noise, dim=1)[:, :keep].sort(dim=1).values


class MaskedAutoencoder(nn.Module):
    """The timm encoder run on visible patches, and a light pixel decoder."""

    def __init__(
        self,
        encoder: nn.Module,
        augment: Augment,
        mask_ratio: float = 0.75,
        decoder_width: int = 64,
        decoder_depth: int = 2,
    ):
        super().__init__()
        if getattr(encoder, "cls_token", None) is None or getattr(encoder, "reg_token", None) is not None:
            raise ValueError("mae training needs a ViT with a CLS token and no register tokens")
        if getattr(encoder, "no_embed_class", False) or getattr(encoder, "dynamic_img_size", False):
            raise ValueError("mae training needs a ViT whose pos_embed covers the CLS token (fixed image size)")
        self.encoder = encoder
        self.patch = int(encoder.patch_embed.patch_size[0])
        self.grid = tuple(int(v) for v in encoder.patch_embed.grid_size)
        tokens = self.grid[0] * self.grid[1]
        self.keep = max(1, int(round(tokens * (1 - mask_ratio))))
        width = int(encoder.embed_dim)
        heads = max(1, decoder_width // 32)
        self.decoder_embed = nn.Linear(width, decoder_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_width))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("decoder_pos_embed", sincos_pos_embed(self.grid, decoder_width), persistent=False)
        self.decoder_blocks = nn.Sequential(
            *[Block(decoder_width, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(decoder_depth)]
        )
        self.decoder_norm = nn.LayerNorm(decoder_width, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_width, self.patch * self.patch * 3)
        self.augment = augment

    def encode(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalized images, (B, K) visible patch indices -> (B, 1 + K, D) final-norm tokens."""
        enc = self.encoder
        x = enc.patch_embed(images) + enc.pos_embed[:, 1:]
        x = torch.gather(x, 1, keep[..., None].expand(-1, -1, x.shape[-1]))
        cls = (enc.cls_token + enc.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = enc.norm_pre(torch.cat([cls, x], dim=1))
        return enc.norm(enc.blocks(x))

    def decode(self, latent: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(B, 1 + K, D) encoded tokens -> (B, N, patch * patch * 3) predicted pixels of every patch."""
        y = self.decoder_embed(latent)
        b, _, width = y.shape
        tokens = self.grid[0] * self.grid[1]
        full = self.mask_token.expand(b, tokens, width).scatter(1, keep[..., None].expand(-1, -1, width), y[:, 1:])
        y = torch.cat([y[:, :1], full], dim=1) + self.decoder_pos_embed
        y = self.decoder_norm(self.decoder_blocks(y))
        return self.decoder_pred(y[:, 1:])

    def masked_error(self, images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Mean squared error on the dropped patches of (B, 3, H, W) normalized images (per-patch normalized pixels)."""
        pred = self.decode(self.encode(images, keep), keep)
        target = normalized_patches(patchify(images, self.patch))
        dropped = torch.ones(target.shape[:2])
        dropped.scatter_(1, keep, 0.0)
        error = ((pred - target) ** 2).mean(dim=-1)
        return (error * dropped).sum() / dropped.sum()

    def loss(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Masked-patch reconstruction of one cropped and flipped view of (B, 3, H, W) images in [0, 1]."""
        x = self.augment(images, generator, jitter=False)
        keep = random_keep(x.shape[0], self.grid[0] * self.grid[1], self.keep, generator)
        return self.masked_error(x, keep)

    def after_step(self, progress: float) -> None:
        """Nothing to update between steps."""
