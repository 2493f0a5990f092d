"""The shipped configs validate against the schema and every model entry resolves."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from vitscope import models

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")
CONFIGS = [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_and_models_resolve(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    validate(config, SCHEMA, set_default=True)
    assert config["extract"]["products"]  # defaults filled in
    for alias, entry in config["models"].items():
        spec = models.spec_from_config(alias, entry)
        assert spec.arch


def test_study_configs_use_the_study_classes() -> None:
    wnids = [line.split()[0] for line in (REPO.parent / "shared/data/imagenet_50.txt").read_text().splitlines()
             if line.strip()] if (REPO.parent / "shared/data/imagenet_50.txt").is_file() else None
    for name in ("study_b16.yaml", "study_all.yaml"):
        config = yaml.safe_load((REPO / "configs" / name).read_text())
        dataset = config["datasets"]["imagenet50"]
        assert dataset["per_class"] == 100 and len(dataset["classes"]) == 50
        if wnids:
            assert dataset["classes"] == wnids
    b16 = yaml.safe_load((REPO / "configs/study_b16.yaml").read_text())["models"]
    assert {e["family"] for e in b16.values()} == {"fs", "clip", "dino", "mocov3", "mae", "beit", "random"}
