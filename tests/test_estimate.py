"""vitscope.workflow.estimate: dump sizes against dumps of the real extraction, image counts,
geometry from the config alone, rates, and `snakemake estimate` on the TINY config."""

from __future__ import annotations

import csv
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from vitscope.errors import ConfigError
from vitscope.io import datasets as data
from vitscope.io import dumps
from vitscope.workflow import configcheck, estimate

REPO = Path(__file__).resolve().parents[1]
RATES = {"cuda": {"B/16": 972.0}, "cpu": {"S/16": 13.6}}


def config_of(entry: dict[str, Any], root: Path, products: list[str] | None = None,
              storage: dict[str, str] | None = None, **extract: Any) -> dict[str, Any]:
    dataset = {"kind": "imagefolder", "root": str(root), **({"products": products} if products else {}),
               **(storage or {})}
    return {
        "models": {"m": entry},
        "datasets": {"d": dataset},
        "extract": {"device": "cpu", "exemplars": 4, "cka_batch_size": 8, "products": list(dumps.DEFAULT_PRODUCTS),
                    **extract},
        "analyses": {"cls_maps": {"datasets": ["d"]}},
        "estimate": {"rates": RATES},
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, Path, list[data.Entry]]:
    from test_extract import make_folder

    root = tmp_path_factory.mktemp("estimate")
    entries = make_folder(root / "images", (20, 20))
    data.write_index(entries, root / "index.csv")
    return root / "images", root / "index.csv", entries


@pytest.mark.parametrize(
    ("entry", "products", "storage"),
    [
        ({"arch": "test_vit", "image_size": 64}, None, None),
        ({"arch": "test_vit", "image_size": [48, 80], "model_kwargs": {"reg_tokens": 2}}, None, None),
        ({"arch": "test_vit", "image_size": 64}, ["tokens"], None),
        ({"arch": "test_vit", "image_size": 64}, ["tokens"], {"tokens": "cls", "token_dtype": "float16"}),
    ],
    ids=["every-default-product", "registers-wide", "tokens-only", "cls-float16"],
)
def test_the_estimate_is_the_real_dump_size_within_a_few_percent(tmp_path, images, entry, products, storage) -> None:
    """Real extractions of test_vit (40 images): every dataset's bytes exactly, the file within 3 % (10 % asked)."""
    import h5py
    from test_extract import build, extract_to

    root, index, entries = images
    spec, model = build(entry, alias="m")
    options = {"batch_size": 8, "cka_batch_size": 8, "exemplars": 4}
    if products:
        options["products"] = tuple(products)
    if storage:
        options.update(tokens=storage["tokens"], token_dtype=storage["token_dtype"])
    path = tmp_path / "m.h5"
    extract_to(path, model, spec, entries, **options)
    (row,) = estimate.estimate(config_of(entry, root, products, storage), {"d": str(index)})
    if storage:  # what the dump keeps, at float16's 2 bytes (the equality below checks the bytes)
        assert "tokens/spatial_mean" not in row.datasets
    assert row.images == 40 and row.images_from == "index"
    with h5py.File(path) as handle:
        real: dict[str, int] = {}
        handle.visititems(lambda name, obj: real.__setitem__(name, obj.size * obj.dtype.itemsize)
                          if isinstance(obj, h5py.Dataset) else None)
        if storage:
            assert handle["tokens/cls"].dtype.itemsize == 2
    assert row.datasets == real
    size = os.path.getsize(path)
    # 3 %, or the issue's 10 % for the 55 kB cls-only float16 file, where HDF5's own bytes are most of it
    assert abs(row.bytes / size - 1) < (0.10 if storage else 0.03), (row.bytes, size)


def test_the_image_count_comes_from_the_index_then_the_config(tmp_path, images) -> None:
    root, index, _ = images
    config = config_of({"arch": "test_vit"}, root)
    assert estimate.count_images(config, "d", index).source == "index"
    with pytest.raises(ConfigError, match=r"set datasets\.d\.estimate\.images"):
        estimate.count_images(config, "d", tmp_path / "absent.csv")
    config["datasets"]["d"]["estimate"] = {"images": 1234}
    count = estimate.count_images(config, "d", tmp_path / "absent.csv")
    assert (count.images, count.source) == (1234, "datasets.d.estimate.images")
    config["datasets"]["d"] = {"kind": "imagefolder", "root": "x", "classes": ["a", "b"], "per_class": 7}
    assert estimate.count_images(config, "d").images == 14
    config["datasets"]["d"] = {"kind": "synthetic", "synthetic": {"classes": 3, "per_class": 4}}
    assert estimate.count_images(config, "d").images == 12


def test_geometry_from_the_config_alone() -> None:
    b16 = estimate.geometry("a", {"family": "dino", "size": "B/16"})
    assert (b16.width, b16.depth, b16.heads, b16.prefix, b16.grid, b16.label) == (768, 12, 12, 1, (14, 14), "B/16")
    assert estimate.geometry("a", {"family": "mocov3", "size": "S/16"}).heads == 12
    h14 = estimate.geometry("a", {"arch": "vit_huge_patch14_224", "image_size": 224})
    assert (h14.width, h14.depth, h14.grid, h14.label) == (1280, 32, (16, 16), "H/14")
    own = estimate.geometry("a", {"arch": "vit_small_patch8_224", "image_size": 64,
                                  "model_kwargs": {"embed_dim": 96, "depth": 4, "num_heads": 3, "reg_tokens": 4}})
    assert (own.width, own.depth, own.heads, own.prefix, own.grid) == (96, 4, 3, 5, (8, 8))
    assert estimate.geometry("a", {"arch": "test_vit", "model_kwargs": {"class_token": False}}).prefix == 0
    with pytest.raises(ConfigError, match=r"models\.a\.arch = 'convnext_tiny'"):
        estimate.geometry("a", {"arch": "convnext_tiny"})


def test_rates_scale_up_with_the_forward_never_down() -> None:
    config = {"extract": {"device": "auto"}, "estimate": {"rates": RATES}}
    b16 = estimate.geometry("a", {"family": "fs", "size": "B/16"})
    l16 = estimate.geometry("a", {"family": "fs", "size": "L/16"})
    s16 = estimate.geometry("a", {"family": "fs", "size": "S/16"})
    assert estimate.rate(config, b16) == ("cuda", 972.0, "estimate.rates.cuda.B/16")
    device, slower, _ = estimate.rate(config, l16)
    assert 972.0 / 4 < slower < 972.0 / 3  # ViT-L/16: ~3.5x the multiply-adds of B/16
    assert estimate.rate(config, s16)[1] == 972.0
    assert estimate.rate({**config, "extract": {"device": "cpu"}}, s16) == ("cpu", 13.6, "estimate.rates.cpu.S/16")


def test_the_study_needs_its_terabytes() -> None:
    """configs/study_all.yaml before anything is indexed: the k-NN bank dominates (47 GB of tokens/cls per B/16)."""
    config = yaml.safe_load((REPO / "configs/study_all.yaml").read_text())
    configcheck.prepare(config, REPO / "workflow/schemas/config.schema.yaml")  # the schema's defaults: the rates
    rows = estimate.estimate(config)
    assert {r.dataset for r in rows} == {"imagenet50", "coco_val2017", "imagenet_train", "imagenet_val",
                                         "roxford5k", "rparis6k"}
    assert len(rows) == 27 * 6
    bank = next(r for r in rows if r.model == "dino_b16" and r.dataset == "imagenet_train")
    assert bank.datasets["tokens/cls"] == 1281167 * 12 * 768 * 4
    assert bank.images_from == "datasets.imagenet_train.estimate.images"
    assert 4.0e12 < sum(r.bytes for r in rows) < 4.5e12
    assert 20 < sum(r.hours for r in rows) < 40


def test_coco_objects_are_the_non_crowd_annotations(tmp_path) -> None:
    path = tmp_path / "a.json"
    path.write_text(json.dumps({"annotations": [{"iscrowd": 0}, {"iscrowd": 1}, {}]}))
    assert estimate.coco_objects(path) == 2
    assert estimate.coco_objects(tmp_path / "absent.json") is None


def test_snakemake_estimate_on_the_tiny_config(tmp_path) -> None:
    """`snakemake estimate` runs no other job: a row per model and dumped dataset, and says what is not indexed."""
    from test_workflow import SNAKEMAKE, TINY, copy_workflow

    workdir = copy_workflow(tmp_path, TINY)
    proc = subprocess.run([SNAKEMAKE, "--cores", "1", "estimate"], cwd=workdir, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not indexed yet" in proc.stdout and "1 of 1 steps" in proc.stdout + proc.stderr
    with open(workdir / "results/estimate.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert sorted(r["dataset"] for r in rows if r["model"] == "tiny_a") == ["toy", "toy_coco", "toy_ret", "toy_val"]
    assert rows[-1]["model"] == "total" and int(rows[-1]["bytes"]) == sum(int(r["bytes"]) for r in rows[:-1])
    assert not (workdir / "results/index").exists()


def test_a_sharded_dataset_is_as_many_jobs_as_shards(images) -> None:
    root, index, _ = images
    entry = {"arch": "test_vit", "image_size": 64}
    (plain,) = estimate.estimate(config_of(entry, root), {"d": str(index)})
    (row,) = estimate.estimate(config_of(entry, root, storage={"shards": 3}), {"d": str(index)})
    assert (plain.jobs, row.jobs) == (1, 3) and row.bytes == plain.bytes and row.hours == plain.hours
    assert estimate.table([plain, row])[-1]["jobs"] == 4
