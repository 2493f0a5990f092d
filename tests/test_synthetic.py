"""The demo's synthetic dataset: layout, masks, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitscope.io import datasets as data
from vitscope.io import synthetic


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.png")):
        h.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return h.hexdigest()


def test_layout_masks_and_determinism(tmp_path: Path) -> None:
    spec = synthetic.SyntheticSpec(classes=3, per_class=2, image_size=32, seed=3)
    paths = synthetic.write_imagefolder(tmp_path / "a", spec)
    synthetic.write_imagefolder(tmp_path / "b", spec)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert len(paths) == 6
    entries = data.index_imagefolder(tmp_path / "a" / "images")
    assert [e.cls for e in entries[::2]] == sorted(spec.class_names())
    for path in paths:
        mask = np.asarray(Image.open(str(path).replace("/images/", "/masks/")))
        assert mask.shape == (32, 32) and set(np.unique(mask)) <= {0, 255}
        assert 0.02 < (mask > 0).mean() < 0.6


def test_shapes_are_distinct() -> None:
    masks = [synthetic.shape_mask(s, 64, 32, 32, 20) for s in synthetic.SHAPES]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            assert (masks[i] != masks[j]).mean() > 0.05


def test_coco_annotations_hold_the_masks(tmp_path: Path) -> None:
    from vitscope.attention import saliency

    spec = synthetic.SyntheticSpec(classes=3, per_class=2, image_size=32, seed=3)
    synthetic.write_imagefolder(tmp_path, spec)
    entries = data.index_coco(tmp_path / "images", tmp_path / "annotations.json")
    assert len(entries) == 6
    coco = data.load_coco(tmp_path / "annotations.json")
    assert sorted(c["name"] for c in coco.cats.values()) == sorted(spec.class_names())
    for image_id, entry in zip(data.coco_image_ids(coco), entries, strict=True):
        mask = np.asarray(Image.open(entry.path.replace("/images/", "/masks/"))) > 0
        np.testing.assert_array_equal(saliency.object_mask(coco, image_id), mask)
        (ann,) = coco.imgToAnns[image_id]
        assert coco.cats[ann["category_id"]]["name"] == entry.path.split("/")[-2]


def _scene_objects(root: Path) -> tuple[dict, list[tuple[int, str, np.ndarray, np.ndarray]]]:
    """The scenes' COCO dict and (image id, category, mask, mean RGB of the object) per annotation."""
    from vitscope.attention import saliency

    coco = data.load_coco(root / "annotations.json")
    objects = []
    for ann in coco.dataset["annotations"]:
        info = coco.imgs[ann["image_id"]]
        image = np.asarray(Image.open(root / "images" / info["file_name"]), dtype=np.float64) / 255
        mask = saliency.instance_mask(coco, ann)
        objects.append((ann["image_id"], coco.cats[ann["category_id"]]["name"], mask, image[mask].mean(axis=0)))
    return coco, objects


@pytest.mark.parametrize("colours", ["random", "grey"])
def test_scenes_hold_several_objects_whose_colours_do_not_give_the_category_away(
    tmp_path: Path, colours: str
) -> None:
    spec = synthetic.SyntheticSpec(classes=4, image_size=48, seed=2, scene_images=12, scene_objects=(2, 3),
                                   scene_colours=colours, class_colours=True)
    synthetic.write_imagefolder(tmp_path, spec)
    root = tmp_path / "scenes"
    entries = data.index_coco(root / "images", root / "annotations.json")
    assert len(entries) == 12
    coco, objects = _scene_objects(root)
    assert sorted(c["name"] for c in coco.cats.values()) == sorted(spec.class_names())
    for image_id in coco.imgs:
        anns = coco.imgToAnns[image_id]
        assert 2 <= len(anns) <= 3  # objects may cover each other, none here entirely
        assert len({a["category_id"] for a in anns}) == len(anns)
        masks = [m for i, _, m, _ in objects if i == image_id]
        assert sum(m.astype(int) for m in masks).max() == 1  # visible masks: disjoint
    for ann, (_, _, mask, _) in zip(coco.dataset["annotations"], objects, strict=True):
        ys, xs = np.nonzero(mask)
        np.testing.assert_allclose(ann["bbox"], [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1])
        assert ann["area"] == mask.sum() and ann["iscrowd"] == 0
    # the same category in other images: colours spread as widely as over all objects
    means = {n: np.array([c for _, name, _, c in objects if name == n]) for n in spec.class_names()}
    spread = np.array([m.std(axis=0).mean() for m in means.values() if len(m) > 2])
    assert len(spread) >= 3 and spread.min() > 0.08
    if colours == "grey":
        assert all(np.ptp(c) < 0.02 for _, _, _, c in objects)


def test_class_scene_colours_follow_the_class_hue() -> None:
    import colorsys

    rng = np.random.default_rng(0)
    for hue in (0.0, 0.5):
        a, b = synthetic.scene_colours("class", rng, hue)
        for colour in (a, b):
            h = colorsys.rgb_to_hsv(*colour)[0]
            assert min(abs(h - hue), 1 - abs(h - hue)) <= 0.04 + 1e-9
    with pytest.raises(ValueError, match="scene_colours = 'pink'"):
        synthetic.scene_colours("pink", rng)


def test_scene_objects_must_fit_the_classes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"scene_objects = \[2, 4\]"):
        synthetic.write_scenes(tmp_path, synthetic.SyntheticSpec(classes=3, scene_images=1, scene_objects=(2, 4)))


SCRIPT = Path(__file__).resolve().parents[1] / "workflow" / "scripts" / "synthetic_dataset.py"


@pytest.fixture
def run_script(tmp_path: Path):
    """Run workflow/scripts/synthetic_dataset.py as Snakemake would (its logging set-up undone after)."""
    import logging
    import runpy
    import sys
    from types import SimpleNamespace

    logger, hook = logging.getLogger("vitscope"), sys.excepthook
    handlers, level = list(logger.handlers), logger.level

    def run(output: Path, spec: dict) -> None:
        snakemake = SimpleNamespace(log=[str(tmp_path / "log.txt")], params=SimpleNamespace(spec=spec),
                                    output=[str(output)])
        runpy.run_path(str(SCRIPT), init_globals={"snakemake": snakemake})

    yield run
    for handler in logger.handlers:
        handler.close()
    logger.handlers[:], sys.excepthook = handlers, hook
    logger.setLevel(level)
    logging.captureWarnings(False)


def test_generator_job_writes_its_folder_whole_or_not_at_all(tmp_path: Path, run_script, monkeypatch) -> None:
    out = tmp_path / "results" / "synthetic" / "demo"
    spec = {"classes": 2, "per_class": 2, "image_size": 16, "spair_categories": 1, "spair_images_per_category": 2}

    def fail(*args, **kwargs):
        raise RuntimeError("killed while writing the spair pairs")

    with monkeypatch.context() as patch:
        patch.setattr(synthetic, "write_spair", fail)  # images, masks and annotations.json already written
        with pytest.raises(RuntimeError, match="killed while writing"):
            run_script(out, spec)
    assert list(out.parent.iterdir()) == []  # before: a half-written demo/ was left
    run_script(out, spec)
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo"]
    assert len(data.index_imagefolder(out / "images")) == 4 and (out / "spair" / "PairAnnotation").is_dir()
    (out / "stray.txt").write_text("from an older run")
    run_script(out, spec)  # onto an existing folder: replaced whole
    assert not (out / "stray.txt").exists() and sorted(p.name for p in out.parent.iterdir()) == ["demo"]


def test_spair_photometric_changes_the_light_of_each_image_not_its_annotations(tmp_path: Path) -> None:
    """spair_photometric 0 (the default) draws nothing, so the images are those of before; > 0
    changes brightness, contrast and saturation per image and keeps keypoints, boxes and pairs."""
    import json

    base = {"classes": 2, "image_size": 32, "spair_categories": 2, "spair_images_per_category": 3,
            "class_colours": True}
    plain, zero, lit = tmp_path / "plain", tmp_path / "zero", tmp_path / "lit"
    synthetic.write_spair(plain, synthetic.SyntheticSpec(**base))
    synthetic.write_spair(zero, synthetic.SyntheticSpec(**base, spair_photometric=0.0))
    synthetic.write_spair(lit, synthetic.SyntheticSpec(**base, spair_photometric=0.6))
    files = sorted(p.relative_to(plain) for p in plain.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(lit) for p in lit.rglob("*") if p.is_file())
    for name in files:
        assert (plain / name).read_bytes() == (zero / name).read_bytes()
        if name.suffix == ".json":
            assert json.loads((plain / name).read_text()) == json.loads((lit / name).read_text())
    images = [n for n in files if n.suffix == ".jpg"]
    assert all((plain / n).read_bytes() != (lit / n).read_bytes() for n in images)
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, size=(4, 5, 3))
    out = synthetic.photometric_change(img, 0.5, np.random.default_rng(1))
    assert out.shape == img.shape and out.min() >= 0 and out.max() <= 1 and not np.allclose(out, img)
    np.testing.assert_allclose(synthetic.photometric_change(img, 0.0, rng), img)
