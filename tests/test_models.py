"""Model registry: config entries, random seeds, checkpoint loading errors, fused/explicit attention."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vitscope.errors import CheckpointError, CheckpointNotFound, ConfigError
from vitscope.models import registry as models


def test_spec_from_config_defaults_and_errors() -> None:
    spec = models.spec_from_config("a", {"arch": "test_vit", "image_size": [32, 48]})
    assert spec.weights == "random" and spec.image_size == (32, 48) and spec.mean == models.IMAGENET_MEAN
    with pytest.raises(ConfigError, match="models.a.weights = 'hub'"):
        models.spec_from_config("a", {"arch": "test_vit", "weights": "hub"})
    with pytest.raises(ConfigError, match="models.a.checkpoint is required"):
        models.spec_from_config("a", {"arch": "test_vit", "weights": "checkpoint"})
    with pytest.raises(ConfigError, match="models.a.tag is required"):
        models.spec_from_config("a", {"arch": "test_vit", "weights": "timm"})
    with pytest.raises(ConfigError, match="models.a.arch = 'no_such_vit'"):
        models.build(models.spec_from_config("a", {"arch": "no_such_vit"}))


def test_random_weights_are_seeded_and_leave_global_rng_alone() -> None:
    spec = models.spec_from_config("a", {"arch": "test_vit", "image_size": 32, "seed": 7})
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    a, report = models.build(spec)
    after = torch.rand(1)
    b, _ = models.build(spec)
    c, _ = models.build(models.spec_from_config("a", {"arch": "test_vit", "image_size": 32, "seed": 8}))
    assert torch.equal(before, after)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.state_dict()["pos_embed"], c.state_dict()["pos_embed"])
    assert report.source == "random" and not a.training


def test_checkpoint_roundtrip_and_errors(tmp_path: Path) -> None:
    ref, _ = models.build(models.spec_from_config("r", {"arch": "test_vit", "image_size": 32, "seed": 3}))
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {**ref.state_dict(), "head.weight": torch.zeros(10, 64)}}, path)
    entry = {"arch": "test_vit", "image_size": 32, "weights": "checkpoint", "checkpoint": str(path)}
    model, report = models.build(models.spec_from_config("m", entry))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.forward_features(x), ref.forward_features(x))
    assert report.dropped == ["head.weight"] and report.sha256 == models.sha256_file(path)
    assert report.loaded == len(ref.state_dict())

    with pytest.raises(CheckpointNotFound, match=r"models.m.checkpoint = '.*nope.pth' does not exist"):
        models.build(models.spec_from_config("m", {**entry, "checkpoint": str(tmp_path / "nope.pth")}))
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pth"):
        models.build(models.spec_from_config("m", {**entry, "checkpoint": str(truncated)}))
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in ref.state_dict().items() if not k.startswith("blocks.5")}, partial)
    with pytest.raises(CheckpointError, match=r"missing \d+ keys \(blocks.5"):
        models.build(models.spec_from_config("m", {**entry, "checkpoint": str(partial)}))


def test_pos_embed_of_another_grid_is_resampled(tmp_path: Path) -> None:
    ref, _ = models.build(models.spec_from_config("r", {"arch": "test_vit", "image_size": 64}))
    path = tmp_path / "w.pth"
    torch.save(ref.state_dict(), path)
    entry = {"arch": "test_vit", "image_size": 32, "weights": "checkpoint", "checkpoint": str(path)}
    model, report = models.build(models.spec_from_config("m", entry))
    assert model.pos_embed.shape == (1, 5, 64)
    assert any("pos_embed resampled" in note for note in report.notes)


def test_geometry_and_attention_switch() -> None:
    model, _ = models.build(models.spec_from_config("a", {"arch": "test_vit", "image_size": [32, 48]}))
    geom = models.geometry(model)
    assert geom == models.Geometry(grid=(2, 3), patch=(16, 16), prefix=1, blocks=6, heads=2, width=64)
    assert geom.tokens == 7
    assert models.set_fused_attention(model, False) == 6
    assert not model.blocks[0].attn.fused_attn


def test_an_input_size_off_the_patch_is_a_config_error() -> None:
    """timm builds test_vit (patch 16, a name without it) for 40 x 48 and fails only in forward, naming no key."""
    spec = models.spec_from_config("a", {"arch": "test_vit", "image_size": [40, 48]})
    with pytest.raises(ConfigError, match=r"models\.a\.image_size: the model is built for 40x48 pixels, not a multiple "
                                          r"of the patch 16x16 of test_vit .* e\.g\. 32x48"):
        models.build(spec)
    tiny = {"embed_dim": 96, "depth": 1, "num_heads": 3}
    spec = models.spec_from_config("b", {"arch": "vit_small_patch8_224", "model_kwargs": tiny, "image_size": 60})
    with pytest.raises(ConfigError, match=r"models\.b\.image_size: the model is built for 60x60"):
        models.build(spec)
    spec = models.spec_from_config("b", {"arch": "vit_small_patch8_224", "model_kwargs": tiny, "image_size": 64})
    assert models.geometry(models.build(spec)[0]).grid == (8, 8)
