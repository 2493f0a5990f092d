"""Dataset readers: ImageFolder subset rules, image lists, COCO, bad input (preprocessing: test_loading)."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitscope.errors import DatasetError
from vitscope.io import datasets as data


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


# --------------------------------------------------------------------------- careless and hostile files
# (docs/hostile-inputs.md, "Careless and hostile dataset files")

SAVE_AS = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF",
           ".tiff": "TIFF", ".gif": "GIF"}


def test_image_suffixes_are_what_pillow_opens() -> None:
    suffixes = data.image_extensions()
    assert {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".mpo"} <= suffixes
    assert all(s == s.lower() for s in suffixes)
    assert not {".pdf", ".h5", ".txt", ""} & suffixes  # written only, a stub needing a handler, not images


def test_imagefolder_reads_every_suffix_pillow_opens_in_any_case(tmp_path: Path, caplog) -> None:
    names = ["a.jpg", "b.Jpeg", "c.BMP", "d.WEBP", "e.Png", "f.tif", "g.tiff", "h.gif", "i.png", "j.JPEG"]
    (tmp_path / "x").mkdir()
    for name in names:
        Image.new("RGB", (6, 4), (10, 20, 30)).save(tmp_path / "x" / name, format=SAVE_AS[Path(name).suffix.lower()])
    with caplog.at_level("WARNING", logger="vitscope"):
        entries = data.index_imagefolder(tmp_path)
    assert [Path(e.path).name for e in entries] == sorted(names)  # 3 of 10 before
    assert not caplog.records
    for e in entries:
        assert data.load_image(e.path).size == (6, 4)


def test_imagefolder_skips_non_images_with_one_warning(tmp_path: Path, caplog) -> None:
    root = make_folder(tmp_path / "train", {"n01": 2, "n02": 1})
    stray = {"n01": ["README.txt", ".DS_Store", "._img_000.png", "notes"], "n02": ["labels.csv", "sub.png"]}
    for cls, names in stray.items():
        for name in names:
            (root / cls / name).write_bytes(b"not an image")
    (root / "n02" / "sub.png").unlink()
    (root / "n02" / "sub.png").mkdir()  # a folder named like an image
    (root / "n02" / "deeper").mkdir()
    with caplog.at_level("WARNING", logger="vitscope"):
        entries = data.index_imagefolder(root, key="datasets.inet")
    assert [Path(e.path).name for e in entries] == ["img_000.png", "img_001.png", "img_000.png"]
    [record] = caplog.records
    message = record.getMessage()
    assert "datasets.inet: skipped 7 entries under" in message and str(root) in message
    assert "'n01/.DS_Store', 'n01/._img_000.png', 'n01/README.txt', 'n01/notes', 'n02/deeper' and 2 more" in message
    # a folder with no image at all is an error naming it and what it holds
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "README").write_text("x")
    with pytest.raises(DatasetError, match=r"class folder '.*empty/a' holds no images Pillow reads \(only 1 other"):
        data.index_imagefolder(tmp_path / "empty")


def test_imagefolder_broken_link_is_an_error(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "train", {"a": 1})
    (root / "a" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(DatasetError, match=r"image '.*a/gone.jpg' is a symbolic link to nothing"):
        data.index_imagefolder(root)


def test_non_utf8_file_name_is_refused_and_nothing_written(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "train", {"a": 1})
    raw = os.fsencode(root / "a") + b"/caf\xe9.png"
    with open(raw, "wb") as handle:
        handle.write((root / "a" / "img_000.png").read_bytes())
    with pytest.raises(DatasetError, match=r"in folder '.*train/a': the name 'caf\\udce9.png' "
                                           r"\(bytes b'caf\\xe9.png'\) is not valid UTF-8"):
        data.write_index(data.index_imagefolder(root), tmp_path / "out" / "index.csv")
    # and write_index itself refuses before writing (paths from anywhere else)
    with pytest.raises(DatasetError, match=r"index '.*x.csv': the name '.*caf\\udce9.png'"):
        data.write_index([data.Entry(os.fsdecode(raw), 0, "a")], tmp_path / "x.csv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]
    os.remove(raw)
    (root / "\udcff").mkdir()  # a class folder named by an undecodable byte
    (root / "\udcff" / "i.png").write_bytes((root / "a" / "img_000.png").read_bytes())
    with pytest.raises(DatasetError, match=r"class folder in '.*train': the name '\\udcff'"):
        data.index_imagefolder(root)


def test_index_round_trips_odd_but_valid_names(tmp_path: Path) -> None:
    names = ["café ü.png", 'comma, "quote".png', "new\nline.png", "tab\t and  spaces .png", "日本.png"]
    (tmp_path / "c, d").mkdir()
    for name in names:
        Image.new("RGB", (4, 4)).save(tmp_path / "c, d" / name)
    entries = data.index_imagefolder(tmp_path)
    assert len(entries) == len(names)
    data.write_index(entries, tmp_path / "index.csv")
    assert data.read_index(tmp_path / "index.csv") == entries


class Exploding:
    """A class name whose text cannot be made: the CSV writer fails midway."""

    def encode(self, *args):
        return b""

    def __str__(self) -> str:
        raise RuntimeError("exploded while writing rows")


def test_a_failure_mid_write_leaves_neither_index_nor_temporary(tmp_path: Path) -> None:
    out = tmp_path / "index"
    out.mkdir()
    entries = [data.Entry(f"img_{i}.png", 0, "a") for i in range(1000)] + [data.Entry("x.png", 1, Exploding())]
    with pytest.raises(RuntimeError, match="exploded while writing rows"):
        data.write_index(entries, out / "d.csv")
    assert list(out.iterdir()) == []  # before: d.csv.tmp was left
    data.write_index(entries[:3], out / "d.csv")
    (out / ".d.csv.tmp-otherhost-1").write_text("stale")  # a killed writer's temporary elsewhere
    data.write_index(entries[:2], out / "d.csv")
    assert [p.name for p in out.iterdir()] == ["d.csv"] and len(data.read_index(out / "d.csv")) == 2


def test_coco_file_names_outside_the_root_are_refused(tmp_path: Path) -> None:
    root, path = make_coco(tmp_path)
    (tmp_path / "secret.png").write_bytes((root / "val" / "img_000.png").read_bytes())
    content = json.loads(path.read_text())
    for name in ("../secret.png", str(tmp_path / "secret.png"), "val/../../secret.png", 7, None, "val/a\0.png"):
        content["images"][1]["file_name"] = name  # image id 2
        path.write_text(json.dumps(content))
        with pytest.raises(DatasetError, match=r"datasets.c.annotations = '.*instances.json': image id 2: the image "
                                               rf"name {re.escape(repr(name))} "):
            data.index_coco(root, path, key="datasets.c")
    content["images"][1]["file_name"] = "val/../val/img_001.png"  # stays inside: fine, kept as written
    path.write_text(json.dumps(content))
    assert data.index_coco(root, path)[0].path == str(root / "val/../val/img_001.png")


def test_symlinked_roots_and_folders_inside_them_are_read(tmp_path: Path) -> None:
    """Real datasets are often links: a linked root, and a linked folder inside it that points elsewhere."""
    real, path = make_coco(tmp_path / "real")
    (tmp_path / "elsewhere").mkdir()
    (real / "val").rename(tmp_path / "elsewhere" / "val")
    (real / "val").symlink_to(tmp_path / "elsewhere" / "val")
    (tmp_path / "link").symlink_to(real)
    entries = data.index_coco(tmp_path / "link", path)
    assert [e.path for e in entries] == [str(tmp_path / "link" / "val" / n) for n in ("img_001.png", "img_000.png")]
    assert len(data.index_imagefolder(tmp_path / "link")) == 3


def test_imagelist_names_outside_the_root_are_refused(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "imgs", {"a": 1})
    listing = tmp_path / "list.txt"
    Image.new("RGB", (4, 4)).save(tmp_path / "outside.png")
    for line in ("../outside.png", "a/../../outside.png", str(tmp_path / "outside.png")):
        listing.write_text(f"a/img_000.png\n{line}\n")
        with pytest.raises(DatasetError, match=r"datasets.l.list = '.*list.txt' line 2: the image name .* leads out"):
            data.index_imagelist(listing, root, key="datasets.l")
    listing.write_bytes(b"a/caf\xe9.png\n")
    with pytest.raises(DatasetError, match=r"list.txt' is not UTF-8 text"):
        data.index_imagelist(listing, root)


def test_revisited_names_outside_the_layout_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "rox" / "jpg"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "a.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.jpg")
    gnd = {"imlist": ["a", "../../outside"], "qimlist": ["a"], "gnd": [{"bbx": [0, 0, 4, 4], "easy": [0], "hard": [],
                                                                          "junk": []}]}
    with open(tmp_path / "rox" / "gnd_rox.pkl", "wb") as handle:
        pickle.dump(gnd, handle)
    with pytest.raises(DatasetError, match=r"datasets.r: gnd_rox.pkl entry '../../outside': the image name "
                                           r"'../../outside.jpg' leads outside '.*rox/jpg'"):
        data.index_revisited(tmp_path, "rox", key="datasets.r")
