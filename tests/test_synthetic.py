"""The demo's synthetic dataset: layout, masks, determinism."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from vitscope import data, synthetic


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
    from vitscope import saliency

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
