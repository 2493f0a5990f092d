"""The model zoo: family/size table, config expansion, timm tags and architectures."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from timm.layers import QuickGELU

from vitscope.errors import ConfigError
from vitscope.models import registry as models
from vitscope.models import zoo

STUDY_SIZES = {
    "fs": ["S/16", "B/32", "B/16", "B/8", "L/16"],
    "clip": ["B/32", "B/16", "L/14"],
    "dino": ["S/16", "S/8", "B/16", "B/8"],
    "mocov3": ["S/16", "B/16"],
    "mae": ["B/16", "L/16", "H/14"],
    "beit": ["B/16", "L/16"],
    "random": ["S/16", "S/8", "B/32", "B/16", "B/8", "L/16", "L/14", "H/14"],
}
ROWS = zoo.table()
TAGGED = [r for r in ROWS if r.tag]


def _id(row: zoo.Release) -> str:
    return f"{row.family}-{row.size}"


def test_table_covers_the_study() -> None:
    found: dict[str, list[str]] = {}
    for row in ROWS:
        found.setdefault(row.family, []).append(row.size)
    assert found == STUDY_SIZES
    assert "| dino | B/16 | `vit_base_patch16_224` | dino | dino_vitbase16_pretrain.pth |" in zoo.table_markdown()


def test_spec_table_for_b16() -> None:
    b16 = {r.family: r for r in ROWS if r.size == "B/16"}
    assert b16["fs"].timm_name == "vit_base_patch16_224.augreg_in21k_ft_in1k"
    assert b16["clip"].timm_name == "vit_base_patch16_clip_224.openai"
    assert b16["dino"].timm_name == "vit_base_patch16_224.dino"
    assert b16["mae"].timm_name == "vit_base_patch16_224.mae"
    assert b16["mocov3"].tag is None and b16["beit"].tag is None and b16["random"].tag is None
    assert b16["fs"].mean == b16["beit"].std == (0.5, 0.5, 0.5)
    assert b16["clip"].mean == (0.48145466, 0.4578275, 0.40821073)
    assert b16["clip"].std == (0.26862954, 0.26130258, 0.27577711)
    for name in ("dino", "mocov3", "mae", "random"):
        assert (b16[name].mean, b16[name].std) == (models.IMAGENET_MEAN, models.IMAGENET_STD)
    assert [b16[n].format for n in ("fs", "clip", "dino", "mocov3", "mae", "beit")] == [
        "augreg_npz",
        "openai_clip",
        "dino",
        "mocov3",
        "mae",
        "beit",
    ]
    assert b16["mocov3"].release == "vit-b-300ep.pth.tar"
    assert b16["beit"].release == "beit_base_patch16_224_pt22k.pth"


def test_expand_gives_flat_keys() -> None:
    out = zoo.expand("dino", {"family": "dino", "size": "B/16", "checkpoint": "weights/dino.pth"})
    assert out == {
        "arch": "vit_base_patch16_224",
        "weights": "checkpoint",
        "tag": None,
        "checkpoint": "weights/dino.pth",
        "format": "dino",
        "seed": 0,
        "image_size": 224,
        "mean": models.IMAGENET_MEAN,
        "std": models.IMAGENET_STD,
        "interpolation": "bicubic",
        "model_kwargs": {},
    }
    spec = models.spec_from_config("dino", {"family": "dino", "size": "B/16", "weights": "timm"})
    assert (spec.arch, spec.tag, spec.weights) == ("vit_base_patch16_224", "dino", "timm")


def test_explicit_keys_override_the_family() -> None:
    entry = {
        "family": "clip",
        "size": "b/16",
        "weights": "random",
        "seed": 3,
        "image_size": [32, 48],
        "mean": [0.5, 0.5, 0.5],
        "model_kwargs": {"depth": 2},
        "label": "CLIP",
    }
    out = zoo.expand("c", entry)
    assert out["model_kwargs"] == {"act_layer": "quick_gelu", "depth": 2}
    assert out["label"] == "CLIP" and "family" not in out and out["tag"] is None
    spec = models.spec_from_config("c", entry)
    assert spec.seed == 3 and spec.image_size == (32, 48) and spec.mean == (0.5, 0.5, 0.5)
    assert spec.std == zoo.OPENAI_CLIP_STD and spec.arch == "vit_base_patch16_clip_224"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"family": "dino", "size": "B/99"}, "models.m.size = 'B/99'; dino has S/16, S/8, B/16, B/8"),
        ({"family": "simclr", "size": "B/16"}, "models.m.family = 'simclr'; known families: fs, clip"),
        ({"family": "dino"}, r"models.m.size is required .*dino has S/16"),
        ({"family": "mocov3", "size": "B/16"}, r"models.m.checkpoint is required: timm hosts no MoCo-v3 .*vit-b-300ep"),
        (
            {"family": "beit", "size": "B/16", "weights": "timm"},
            r"models.m.weights = 'timm'; timm hosts only fine-tuned BEiT",
        ),
        (
            {"family": "dino", "size": "B/16", "weights": "checkpoint"},
            r"models.m.checkpoint is required .*dino_vitbase16",
        ),
        ({"family": "random", "size": "B/16", "weights": "timm"}, "models.m.weights = 'timm'; the random family"),
        ({"family": "clip", "size": "L/16"}, "models.m.size = 'L/16'; clip has B/32, B/16, L/14"),
        ({"family": "dino", "size": "B/16", "model_kwargs": [1]}, "models.m.model_kwargs"),
    ],
)
def test_config_errors_name_the_key(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        models.spec_from_config("m", entry)


def test_beit_self_supervised_weights_are_not_in_timm() -> None:
    names = timm.list_pretrained("beit_*")
    assert names and not [n for n in names if "pt22k" in n or n.endswith((".pt", "_pt"))]
    assert all("ft" in n.split(".")[1] for n in names if n.startswith("beit_"))


def test_fs_tag_is_not_timms_default() -> None:
    default = timm.models.get_pretrained_cfg("vit_base_patch16_224").tag
    assert default.startswith("augreg2") and default != zoo.release("fs", "B/16").tag


@pytest.mark.parametrize("row", TAGGED, ids=_id)
def test_timm_tag_exists_and_agrees(row: zoo.Release) -> None:
    assert row.timm_name in timm.list_pretrained(row.arch + "*")
    cfg = timm.models.get_pretrained_cfg(row.timm_name)
    assert tuple(cfg.mean) == pytest.approx(row.mean) and tuple(cfg.std) == pytest.approx(row.std)
    assert tuple(cfg.input_size) == (3, row.image_size, row.image_size)
    assert cfg.interpolation == "bicubic"
    if cfg.url:  # timm records the original release for these
        assert Path(cfg.url).name == row.release


@pytest.mark.parametrize("row", ROWS, ids=_id)
def test_arch_builds_with_the_sizes_geometry(row: zoo.Release) -> None:
    entry = {"family": row.family, "size": row.size, "weights": "random"}
    spec = models.spec_from_config(row.family, entry)
    with torch.device("meta"):
        model = models.create(spec)
    geo = models.geometry(model)
    shape = zoo.SIZES[row.size]
    heads = 12 if (row.family, row.size) == ("mocov3", "S/16") else shape.heads
    assert (geo.width, geo.blocks, geo.heads, geo.patch[0]) == (shape.width, shape.depth, heads, shape.patch)
    assert geo.grid == (224 // shape.patch,) * 2 and geo.prefix == 1
    eps = {m.eps for m in model.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == ({1e-5} if row.family == "clip" else {1e-6})
    block = model.blocks[0]
    if row.family == "clip":
        assert isinstance(block.mlp.act, QuickGELU) and model.norm_pre is not None
    if row.family == "beit":
        assert model.pos_embed is None and model.rel_pos_bias is None
        assert all(b.attn.relative_position_bias_table is not None for b in model.blocks)
        assert "norm.weight" in model.state_dict() and "fc_norm.weight" not in model.state_dict()
    else:
        assert block.attn.qkv.bias is not None and model.pos_embed is not None


def test_random_family_is_seeded() -> None:
    tiny = {"embed_dim": 32, "depth": 1, "num_heads": 2, "patch_size": 8}

    def state(seed: int) -> dict[str, torch.Tensor]:
        entry = {"family": "random", "size": "B/16", "seed": seed, "image_size": 32, "model_kwargs": tiny}
        model, report = models.build(models.spec_from_config("random", entry))
        assert report.source == "random" and f"seed={seed}" in report.notes
        return model.state_dict()

    a, b, c = state(1), state(1), state(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["blocks.0.attn.qkv.weight"], c["blocks.0.attn.qkv.weight"])


@pytest.mark.slow
@pytest.mark.parametrize("family", list(zoo.FAMILIES))
def test_full_size_b16_runs(family: str) -> None:
    spec = models.spec_from_config(family, {"family": family, "size": "B/16", "weights": "random"})
    model, _ = models.build(spec)
    with torch.no_grad():
        tokens = model.forward_features(torch.randn(1, 3, 224, 224))
    assert tokens.shape == (1, 197, 768) and torch.isfinite(tokens).all()


def test_the_config_check_reads_each_rows_patch() -> None:
    """vitscope.workflow.configcheck reads the patch from a family's size (no torch at DAG time): the zoo's."""
    from vitscope.workflow import configcheck

    for row in ROWS:
        entry = {"family": row.family, "size": row.size}
        patch = zoo.SIZES[row.size].patch
        assert configcheck.model_patch(entry) == (patch, "size", row.size)
        expanded = zoo.expand("m", {**entry, "checkpoint": "w"})  # arch and model_kwargs as the model is built
        assert configcheck.model_patch(expanded) == (patch, "arch", row.arch)
        with torch.device("meta"):  # no weights allocated: the patch embedding's geometry only
            model = timm.create_model(row.arch, pretrained=False, num_classes=0, **expanded["model_kwargs"], depth=1)
        assert tuple(model.patch_embed.patch_size) == (patch, patch)
