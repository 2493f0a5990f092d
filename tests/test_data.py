"""Dataset readers: ImageFolder subset rules, image lists, COCO, bad input (preprocessing: test_loading)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitscope import data
from vitscope.errors import DatasetError


def make_folder(root: Path, classes: dict[str, int], size=(30, 40)) -> Path:
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / name / f"img_{i:03d}.png")
    return root


def test_imagefolder_first_k_sorted_and_labels_by_sorted_class(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "train", {"n02": 4, "n01": 3, "n03": 2})
    (root / "n01" / "notes.txt").write_text("not an image")
    entries = data.index_imagefolder(root, classes=["n02", "n01"], per_class=2)
    assert [(Path(e.path).parent.name, Path(e.path).name, e.label) for e in entries] == [
        ("n01", "img_000.png", 0),
        ("n01", "img_001.png", 0),
        ("n02", "img_000.png", 1),
        ("n02", "img_001.png", 1),
    ]
    assert len(data.index_imagefolder(root)) == 9


def test_imagefolder_errors_name_the_path(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "train", {"a": 2})
    with pytest.raises(DatasetError, match=r"datasets.x.root = '.*missing' does not exist"):
        data.index_imagefolder(tmp_path / "missing", key="datasets.x")
    with pytest.raises(DatasetError, match=r"class folder '.*train/b' does not exist"):
        data.index_imagefolder(root, classes=["a", "b"], key="datasets.x")
    with pytest.raises(DatasetError, match=r"per_class = 5 but '.*train/a' holds only 2"):
        data.index_imagefolder(root, per_class=5, key="datasets.x")


def test_imagelist_and_index_roundtrip(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", {"a": 3})
    listing = tmp_path / "list.txt"
    listing.write_text("# comment\na/img_002.png\n\na/img_000.png\n")
    entries = data.index_imagelist(listing, root)
    assert [Path(e.path).name for e in entries] == ["img_002.png", "img_000.png"]
    assert all(e.label == -1 for e in entries)
    data.write_index(entries, tmp_path / "index.csv")
    assert data.read_index(tmp_path / "index.csv") == entries
    listing.write_text("a/nope.png\n")
    with pytest.raises(DatasetError, match="line 1: image '.*nope.png' does not exist"):
        data.index_imagelist(listing, root)


def test_index_dataset_dispatches_on_kind(tmp_path: Path) -> None:
    make_folder(tmp_path / "syn" / "images", {"x": 2})
    assert len(data.index_dataset("s", {"kind": "synthetic"}, [str(tmp_path / "syn")])) == 2
    with pytest.raises(DatasetError, match="datasets.f.root is required"):
        data.index_dataset("f", {"kind": "imagefolder"})


def make_coco(tmp_path: Path) -> tuple[Path, Path]:
    """Images 5, 2, 9 (9 has no annotation) under root; ids out of file order."""
    root = make_folder(tmp_path / "coco", {"val": 3})
    files = sorted(p.name for p in (root / "val").iterdir())
    images = [
        {"id": i, "file_name": f"val/{f}", "height": 30, "width": 40} for i, f in zip((5, 2, 9), files, strict=True)
    ]
    poly = [[1, 1, 10, 1, 10, 10, 1, 10]]
    anns = [{"id": k, "image_id": i, "category_id": 1, "segmentation": poly, "iscrowd": 0} for k, i in ((1, 5), (2, 2))]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}))
    return root, path


def test_coco_sorted_image_id_skips_unannotated_and_caps(tmp_path: Path) -> None:
    root, path = make_coco(tmp_path)
    entries = data.index_coco(root, path)
    assert [Path(e.path).name for e in entries] == ["img_001.png", "img_000.png"]  # ids 2, 5; id 9 skipped
    assert all(e.label == -1 and e.cls == "" for e in entries)
    assert len(data.index_coco(root, path, max_images=1)) == 1
    entry = {"kind": "coco", "root": str(root), "annotations": str(path), "max_images": 1}
    assert data.index_dataset("c", entry) == entries[:1]


def test_coco_errors_name_the_file_or_key(tmp_path: Path) -> None:
    root, path = make_coco(tmp_path)
    with pytest.raises(DatasetError, match="datasets.c.annotations is required"):
        data.index_dataset("c", {"kind": "coco", "root": str(root)})
    with pytest.raises(DatasetError, match=r"datasets.c.annotations = '.*nope.json' does not exist"):
        data.index_coco(root, tmp_path / "nope.json", key="datasets.c")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DatasetError, match=r"'.*bad.json' is not valid JSON"):
        data.index_coco(root, bad)
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DatasetError, match=r"'.*bad.json' has no list 'categories'"):
        data.index_coco(root, bad)
    content = json.loads(path.read_text())
    del content["images"][0]["file_name"]
    bad.write_text(json.dumps(content))
    with pytest.raises(DatasetError, match=r"'.*bad.json': images\[0\] has no 'file_name'"):
        data.index_coco(root, bad)
    (root / "val" / "img_000.png").unlink()
    with pytest.raises(DatasetError, match=r"image '.*img_000.png' \(id 5 in '.*instances.json'\) does not exist"):
        data.index_coco(root, path, key="datasets.c")
