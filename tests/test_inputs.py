"""What a config reads from disk: checkpoints of every entry kind, dataset paths, one list of all that is missing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from vitscope.models import zoo
from vitscope.workflow import inputs

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ({"family": "dino", "size": "B/16", "checkpoint": "w/dino.pth"}, "w/dino.pth"),  # zoo entry
        ({"family": "mocov3", "size": "B/16", "checkpoint": "w/moco.tar"}, "w/moco.tar"),
        ({"arch": "vit_small_patch16_224", "weights": "checkpoint", "checkpoint": "w/s.pth"}, "w/s.pth"),  # flat
        ({"family": "dino", "size": "B/16"}, None),  # the timm hub
        ({"family": "random", "size": "B/16", "seed": 0}, None),
        ({"arch": "vit_small_patch16_224", "weights": "random"}, None),
        ({"family": "dino", "size": "B/16", "weights": "timm", "checkpoint": "w/unused.pth"}, None),
    ],
)
def test_every_entry_kind_resolves_its_checkpoint(entry: dict, expected: str | None) -> None:
    assert inputs.checkpoint_of("m", entry) == expected


def test_zoo_is_importable_without_torch() -> None:
    """The workflow reads the zoo while it plans: torch must not come with it (seconds per start)."""
    import subprocess

    code = "import sys, vitscope.workflow.inputs, vitscope.io.fingerprint; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_study_config_lists_every_missing_input_with_its_publisher(tmp_path: Path) -> None:
    config = yaml.safe_load((REPO / "configs/study_b16.yaml").read_text())
    missing = inputs.missing_inputs(config)
    keys = [need.key for need in missing]
    for alias in ("fs", "clip", "dino", "mocov3", "mae", "beit"):
        assert f"models.{alias}.checkpoint" in keys
    assert "models.random.checkpoint" not in keys
    for dataset in config["datasets"]:
        assert any(key.startswith(f"datasets.{dataset}.") for key in keys), dataset
    message = inputs.missing_message(missing, tmp_path)
    assert message.startswith(f"{len(missing)} input(s) of this config do not exist (relative paths are from")
    clip = zoo.release("clip", "B/16")
    assert f"published by openai/CLIP at {clip.url}, SHA-256 {clip.sha256}" in message
    assert "dino_vitbase16_pretrain.pth is published by facebookresearch/dino at https://" in message
    # a derived path names the key's own value and the path that is missing
    gnd = "/path/to/revisited/roxford5k/gnd_roxford5k.pkl"
    assert f"datasets.roxford5k.root = '/path/to/revisited': no file {gnd}" in message


def test_present_generated_and_trained_inputs_are_not_reported(tmp_path: Path) -> None:
    weights = tmp_path / "dino.pth"
    weights.write_bytes(b"")
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    config = {
        "models": {
            "here": {"family": "dino", "size": "B/16", "checkpoint": str(weights)},
            "made": {"arch": "test_vit", "weights": "checkpoint", "checkpoint": "results/checkpoints/made.safetensors"},
            "gone": {"family": "dino", "size": "S/16", "checkpoint": str(tmp_path / "gone.pth")},
        },
        "datasets": {
            "ok": {"kind": "imagefolder", "root": str(tmp_path / "imgs"), "classes": ["a"]},
            "no_class": {"kind": "imagefolder", "root": str(tmp_path / "imgs"), "classes": ["a", "zz"]},
            "demo": {"kind": "imagefolder", "root": "results/synthetic/demo/val"},
            "gen": {"kind": "synthetic"},
            "no_root": {"kind": "coco", "root": str(tmp_path / "coco"), "annotations": str(tmp_path / "c.json")},
        },
    }
    missing = inputs.missing_inputs(
        config, generated=lambda p: p.startswith("results/"), trained=frozenset({"made"})
    )
    assert [(n.key, n.path) for n in missing] == [
        ("models.gone.checkpoint", str(tmp_path / "gone.pth")),
        ("datasets.no_class.classes", str(tmp_path / "imgs" / "zz")),
        ("datasets.no_root.root", str(tmp_path / "coco")),
        ("datasets.no_root.annotations", str(tmp_path / "c.json")),
    ]
    assert "dino_deitsmall16_pretrain.pth is published by facebookresearch/dino" in missing[0].line()
    only = inputs.missing_inputs(config, models=["here"], datasets=["ok"])
    assert only == []


def test_a_missing_root_hides_the_paths_below_it(tmp_path: Path) -> None:
    entry = {"kind": "imagefolder", "root": str(tmp_path / "none"), "classes": ["a", "b"]}
    missing = inputs.missing_inputs({"models": {}, "datasets": {"d": entry}})
    assert [n.key for n in missing] == ["datasets.d.root"]


def test_every_release_names_its_publisher_and_address() -> None:
    for row in zoo.table():
        if row.release:
            assert row.url and row.url.startswith("https://") and row.url.endswith(row.release), row
    assert zoo.release("clip", "L/14").sha256 == "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836"
    docs = (REPO / "docs/models.md").read_text()
    assert zoo.releases_markdown() in docs, "docs/models.md: paste vitscope.models.zoo.releases_markdown()"
    assert zoo.table_markdown() in docs, "docs/models.md: paste vitscope.models.zoo.table_markdown()"
