"""The shipped configs validate against the schema and every model entry resolves."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from snakemake.utils import validate

from vitscope.models import registry as models
from vitscope.workflow import configcheck

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The schema as the Snakefile loads it (configcheck fills in the package's product lists), as a file."""
    path = tmp_path_factory.mktemp("schema") / "config.schema.yaml"
    path.write_text(yaml.safe_dump(configcheck.load_schema(REPO / "workflow/schemas/config.schema.yaml")))
    return str(path)

CONFIGS = [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_validates_and_models_resolve(path: Path, schema: str) -> None:
    config = yaml.safe_load(path.read_text())
    validate(config, schema, set_default=True)
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


@pytest.mark.workflow
def test_dry_run_takes_nested_config_overrides(tmp_path: Path) -> None:
    """`--config extract='{batch_size: 8}'` reaches the schema as 8, not '8' (docs/hostile-inputs.md)."""
    from test_workflow import TINY, copy_workflow, snakemake

    workdir = copy_workflow(tmp_path, TINY)
    proc = snakemake(workdir, "--dry-run", "--config", "extract={batch_size: 8, cka_batch_size: 4}",
                     "analyses={knn: {ks: [1, 3]}, spair: {pairs_per_category: null}}", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.workflow
def test_dry_run_refuses_colliding_dataset_names_in_a_few_lines(tmp_path: Path) -> None:
    """Datasets toy and toy_heads: the same attention-distance figure (was an AmbiguousRuleException)."""
    from test_workflow import TINY, copy_workflow, snakemake

    config = copy.deepcopy(TINY)
    config["datasets"]["toy_heads"] = {"kind": "synthetic"}
    config["analyses"]["attention_distance"]["datasets"] = ["toy", "toy_heads"]
    workdir = copy_workflow(tmp_path, config)
    proc = snakemake(workdir, "--dry-run", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config error: datasets.toy_heads: a dataset name may not end in '_heads'" in text
    assert "of dataset 'toy'" in text and "Ambiguous" not in text
    assert len(text.splitlines()) <= 8, text
    assert not (workdir / "results").exists()
