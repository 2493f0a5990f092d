"""A tiny timm ViT with the statistics of large real models (issue 14).

:func:`stress_vit` builds timm's ``test_vit`` (6 blocks, 2 heads, width 64, patch
16) at 64 x 64 pixels (a 4 x 4 grid) with one register token (P = 2, T = 18),
``pretrained=False``, seeded, and then sets a few weights by hand so that it has

(a) **massive activations**: block 1's MLP adds :data:`MASSIVE` to residual
    channels :data:`MASSIVE_CHANNELS` of every token, so from block 1's output on
    those channels are hundreds of times larger than the others;
(b) **attention sinks**: in block 1 head 1 every spatial query puts almost all of
    its mass on CLS: on the right half of the grid the CLS logit is 35 to 65 above
    the largest spatial one (spatial mass 1e-28 to 1e-15, so >= 0.999999 on CLS),
    on the left half 135 to 170 above, so the spatial mass underflows to exactly 0 in
    float32 (zero-mass rows, docs/attention.md); in block 1 head 2 every spatial
    query puts 1 - 3e-10 of its mass on the register token (gap about 25);
(c) **high-norm spatial tokens**: the spatial tokens at :data:`HIGH_NORM_TOKENS`
    carry a large position embedding on one channel, so their norm is many times
    that of the other spatial tokens.

Everything is deterministic (fixed seed, fixed weights). :func:`write_stress_checkpoint`
saves the weights as a plain timm state dict, so a workflow config can use the model as
``{arch: test_vit, image_size: 64, model_kwargs: {reg_tokens: 1}, weights: checkpoint,
format: timm, checkpoint: <file>}`` (:data:`MODEL_ENTRY` plus the file).
tests/test_stress.py measures (a) to (c).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

ARCH = "test_vit"
IMAGE_SIZE = 64
#: the config entry of the stress model, without ``checkpoint``
MODEL_ENTRY: dict[str, Any] = {
    "arch": ARCH,
    "image_size": IMAGE_SIZE,
    "model_kwargs": {"reg_tokens": 1},
    "weights": "checkpoint",
    "format": "timm",
}
#: residual channels that carry the massive activations from block 1's output on
MASSIVE_CHANNELS = (7, 41)
MASSIVE = 600.0
#: spatial tokens (row-major, 0-based among the G spatial tokens) with a large norm
HIGH_NORM_TOKENS = (5, 10)
HIGH_NORM = 20000.0
#: channels that mark CLS and the register in the first LayerNorm's input, and the
#: channel of the position ramp that sets each spatial query's logit gap
CLS_CHANNEL, REG_CHANNEL, RAMP_CHANNEL, NORM_CHANNEL = 60, 61, 62, 63
SEED = 0
#: query bias of the two sink heads and ramp weight of head 1 (the logit gaps above; tests measure them)
Q_BIAS, Q_RAMP = (40.0, 18.0), 40.0


def stress_vit(seed: int = SEED) -> nn.Module:
    """The stress model (module docstring), in eval mode, no classifier head."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = timm.create_model(ARCH, pretrained=False, num_classes=0, img_size=IMAGE_SIZE, reg_tokens=1)
    model.eval()
    d = model.embed_dim
    heads = model.blocks[0].attn.num_heads
    hd = d // heads
    g = model.patch_embed.num_patches
    p = model.num_prefix_tokens
    gw = model.patch_embed.grid_size[1]
    marked = (CLS_CHANNEL, REG_CHANNEL, RAMP_CHANNEL, NORM_CHANNEL)
    with torch.no_grad():
        # keep the marker channels out of the patch embedding and the learnt tokens
        model.patch_embed.proj.weight[list(marked)] = 0.0
        model.patch_embed.proj.bias[list(marked)] = 0.0
        pos = model.pos_embed  # (1, P + G, D): no_embed_class is False, prefix tokens included
        pos[..., list(marked)] = 0.0
        model.cls_token[..., list(marked)] = 0.0
        model.reg_token[..., list(marked)] = 0.0
        pos[0, 0, CLS_CHANNEL] = 8.0
        pos[0, 1, REG_CHANNEL] = 8.0
        for k in range(g):  # left half of the grid: ramp 1, right half: 0
            pos[0, p + k, RAMP_CHANNEL] = 1.0 if k % gw < gw // 2 else 0.0
        for k in HIGH_NORM_TOKENS:
            pos[0, p + k, NORM_CHANNEL] = HIGH_NORM
        # block 1 attention: head 1 keys read the CLS marker, head 2 keys the register
        # marker; queries carry a constant plus the ramp (LayerNorm keeps the markers'
        # sign and roughly their scale)
        block = model.blocks[0]
        block.norm1.weight.fill_(1.0)
        block.norm1.bias.zero_()
        qkv_w, qkv_b = block.attn.qkv.weight, block.attn.qkv.bias
        qkv_w[: 2 * d] = 0.0
        qkv_b[: 2 * d] = 0.0
        for head, channel in ((0, CLS_CHANNEL), (1, REG_CHANNEL)):
            q_row, k_row = head * hd, d + head * hd
            qkv_b[q_row] = Q_BIAS[head]
            qkv_w[q_row, RAMP_CHANNEL] = Q_RAMP if head == 0 else 0.0
            qkv_w[k_row, channel] = 1.0
        # block 1 MLP: the massive channels
        block.mlp.fc2.bias[list(MASSIVE_CHANNELS)] = MASSIVE
    return model


def write_stress_checkpoint(path: str | Path, seed: int = SEED) -> Path:
    """Save :func:`stress_vit`'s state dict (format ``timm``) to ``path``, as safetensors when the name
    ends in ``.safetensors`` (what that format reads by the suffix), else with ``torch.save``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = stress_vit(seed).state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


if __name__ == "__main__":  # python -m vitscope.testing.stress PATH: write the checkpoint for a config entry
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m vitscope.testing.stress CHECKPOINT_PATH")
    print(write_stress_checkpoint(sys.argv[1]))
