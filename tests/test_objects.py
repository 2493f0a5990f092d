"""The dump product ``objects`` and object clustering (docs/protocols.md#feature-analyses, docs/dumps.md).

A tiny synthetic COCO dataset (images of several sizes and aspect ratios,
1-3 objects each as RLE or polygons, a crowd region, an object cut away by the
center crop and a sub-pixel object that rasterises to nothing) and a timm
``test_vit`` (6 blocks, width 64, 64 x 64 input, 4 x 4 grid). The stored
object features are recomputed here in float64: the block outputs from our own
forward hooks (timm's fused attention), the masks mapped onto the grid by a
slow loop over original pixels (resize of the shorter side, center crop).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from vitscope.errors import ConfigError
from vitscope.extract import run as extract
from vitscope.features import clustering
from vitscope.features.objects import ObjectMasks, object_weights
from vitscope.io import datasets as data
from vitscope.io import preprocess as loading
from vitscope.models import registry as models

ENTRY = {"arch": "test_vit", "image_size": 64}
CPU = torch.device("cpu")
CATEGORIES = [{"id": 1, "name": "disc"}, {"id": 2, "name": "bar"}, {"id": 5, "name": "blob"},
              {"id": 7, "name": "unused"}]


def _box(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _disc(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] + 0.5
    return (y - cy) ** 2 + (x - cx) ** 2 <= r * r


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


# (height, width, [(category, segmentation kind, mask or polygon, iscrowd), ...]);
# expected: kept objects in annotation order, empty (skipped), crowd (skipped)
IMAGES = [
    (40, 80, [
        (1, "rle", _disc(40, 80, 20, 40, 12), 0),
        (2, "rle", _box(40, 80, 5, 35, 0, 10), 0),          # cut away by the center crop: empty
        (1, "rle", _box(40, 80, 0, 20, 30, 60), 1),         # crowd: skipped
    ]),
    (70, 50, [
        (2, "polygon", [[5.0, 20.0, 45.0, 20.0, 45.0, 30.0, 5.0, 30.0]], 0),
        (5, "polygon", [[10.6, 40.6, 10.9, 40.6, 10.8, 40.9]], 0),  # rasterises to no pixel: empty
        (5, "polygon", [[1.0, 1.0, 2.0, 2.0], [20.0, 40.0, 40.0, 40.0, 30.0, 60.0]], 0),  # a malformed part
    ]),
    (64, 64, [(1, "rle", _disc(64, 64, 30, 34, 20), 0)]),
    (50, 50, [(2, "rle", _box(50, 50, 3, 47, 20, 28), 0), (5, "rle", _disc(50, 50, 12, 12, 6), 0)]),
    (48, 60, [
        (5, "rle", _disc(48, 60, 24, 30, 10), 0),
        (1, "rle", _box(48, 60, 30, 46, 8, 52), 0),
        (2, "rle", _box(48, 60, 2, 12, 40, 58), 0),
    ]),
    (33, 45, [(1, "rle", _disc(33, 45, 16, 22, 3), 0)]),
]
KEPT, EMPTY, CROWD = 10, 2, 1


@pytest.fixture(scope="module")
def coco_dataset(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("coco")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    content: dict = {"images": [], "annotations": [], "categories": CATEGORIES}
    ann_id = 100
    for i, (h, w, objects) in enumerate(IMAGES):
        image_id = 10 + 3 * i  # sorted id order = list order
        name = f"img_{i}.png"
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(root / "images" / name)
        content["images"].append({"id": image_id, "file_name": name, "height": h, "width": w})
        for category, kind, seg, crowd in objects:
            ann_id += 1
            segmentation = _rle(seg) if kind == "rle" else seg
            content["annotations"].append(
                {"id": ann_id, "image_id": image_id, "category_id": category, "segmentation": segmentation,
                 "iscrowd": crowd, "area": 1.0, "bbox": [0, 0, 1, 1]}
            )
    path = root / "annotations.json"
    path.write_text(json.dumps(content))
    return root / "images", path


def reference_mask(info: dict, ann: dict) -> np.ndarray:
    seg = ann["segmentation"]
    h, w = info["height"], info["width"]
    if isinstance(seg, dict):
        return mask_utils.decode(seg).astype(bool)
    parts = [p for p in seg if len(p) >= 6]
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(parts, h, w))).astype(bool)


def reference_weights(mask: np.ndarray, size: int, g: int) -> np.ndarray:
    """(g * g,) token weights by a slow loop: square input ``size``, the shorter side
    resized to ``size`` (longer side truncated), center crop; each pixel's overlap
    with each token's rectangle in original coordinates."""
    h0, w0 = mask.shape
    short, long = min(h0, w0), max(h0, w0)
    new_long = int(size * long / short)
    rh, rw = (size, new_long) if h0 <= w0 else (new_long, size)
    top, left = int(round((rh - size) / 2.0)), int(round((rw - size) / 2.0))
    out = np.zeros((g, g))
    step = size / g
    for i in range(g):
        r0, r1 = (top + i * step) * h0 / rh, (top + (i + 1) * step) * h0 / rh
        for j in range(g):
            c0, c1 = (left + j * step) * w0 / rw, (left + (j + 1) * step) * w0 / rw
            for y, x in zip(*np.nonzero(mask), strict=True):
                dy = max(0.0, min(r1, y + 1) - max(r0, y))
                dx = max(0.0, min(c1, x + 1) - max(c0, x))
                out[i, j] += dy * dx
    total = out.sum()
    return (out / total).ravel() if total > 0 else out.ravel()


def build():
    spec = models.spec_from_config("tiny", ENTRY)
    model, _ = models.build(spec)
    return spec, model


def block_outputs(model, spec, entries) -> np.ndarray:
    """(N, L, T, D) float64 block outputs of our own forward (fused attention)."""
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    images = torch.stack([transform(data.load_image(e.path)) for e in entries])
    outputs: dict[int, torch.Tensor] = {}
    handles = [
        block.register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, o.double().clone()))
        for i, block in enumerate(model.blocks)
    ]
    models.set_fused_attention(model, True)
    try:
        with torch.inference_mode():
            model.forward_features(images)
    finally:
        for h in handles:
            h.remove()
    return torch.stack([outputs[i] for i in range(len(model.blocks))], dim=1).numpy()


def extract_objects(path: Path, coco_dataset, products=("objects",), **options) -> tuple[dict, dict]:
    root, annotations = coco_dataset
    spec, model = build()
    entries = data.index_coco(root, annotations)
    masks = ObjectMasks(data.load_coco(annotations), [e.path for e in entries], root, spec.image_size,
                        models.geometry(model).grid)
    with h5py.File(path, "w") as handle:
        extract.run(
            model, entries, loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation), handle,
            extract.ExtractOptions(products=products, **options), CPU, {"model": "tiny", "dataset": "coco"},
            objects=masks,
        )
    with h5py.File(path, "r") as f:
        arrays = {k: f[f"objects/{k}"][...] for k in ("features", "image", "category", "annotation")}
        arrays["category_name"] = f["objects/category_name"].asstr()[...]
        return arrays, dict(f["objects"].attrs)


@pytest.mark.parametrize(
    ("products", "options"),
    [
        (("objects",), {"batch_size": 4}),
        # with gram the images are fed in a seeded permutation, several batches
        (("tokens", "gram", "objects"), {"batch_size": 4, "cka_batch_size": 4}),
        (("objects", "cls_attention"), {"batch_size": 6}),
    ],
)
def test_object_features_match_slow_recomputation(tmp_path, coco_dataset, products, options):
    root, annotations = coco_dataset
    got, attrs = extract_objects(tmp_path / "dump.h5", coco_dataset, products, **options)
    spec, model = build()
    entries = data.index_coco(root, annotations)
    blocks = block_outputs(model, spec, entries)  # (N, L, T, D)
    content = json.loads(annotations.read_text())
    images = {info["id"]: info for info in content["images"]}
    by_ann = {ann["id"]: ann for ann in content["annotations"]}
    order = {Path(e.path).name: n for n, e in enumerate(entries)}

    want_ids = [
        a["id"] for info in content["images"] for a in content["annotations"]
        if a["image_id"] == info["id"] and not a["iscrowd"]
        and reference_weights(reference_mask(info, a), 64, 4).sum() > 0
    ]
    assert sorted(got["annotation"].tolist()) == sorted(want_ids)
    assert len(want_ids) == KEPT
    assert attrs["objects"] == KEPT and attrs["skipped_empty"] == EMPTY and attrs["skipped_crowd"] == CROWD
    assert attrs["annotations"] == KEPT + EMPTY + CROWD and attrs["categories"] == 3
    assert got["features"].shape == (KEPT, 6, 64) and got["features"].dtype == np.float32
    names = {c["id"]: c["name"] for c in CATEGORIES}
    for row, ann_id in enumerate(got["annotation"].tolist()):
        ann = by_ann[ann_id]
        info = images[ann["image_id"]]
        position = order[info["file_name"]]
        assert got["image"][row] == position
        assert got["category"][row] == ann["category_id"]
        assert got["category_name"][row] == names[ann["category_id"]]
        weights = reference_weights(reference_mask(info, ann), 64, 4)
        want = np.einsum("g,lgd->ld", weights, blocks[position, :, 1:])
        np.testing.assert_allclose(got["features"][row], want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    # rows follow the order the images were fed, objects in annotation order within an image
    fed = extract.image_order(len(entries), extract.ExtractOptions(products=products, **options))
    rank = np.argsort(fed)[got["image"]]
    assert np.all(np.diff(rank) >= 0)


def test_cropped_and_subpixel_objects_are_empty(coco_dataset):
    root, annotations = coco_dataset
    coco = data.load_coco(annotations)
    entries = data.index_coco(root, annotations)
    masks = ObjectMasks(coco, [e.path for e in entries], root, (64, 64), (4, 4))
    first, second = masks(0), masks(1, (50, 70))
    assert first.count == 1 and first.empty == 1 and first.crowd == 1
    assert second.count == 2 and second.empty == 1 and second.category.tolist() == [2, 5]
    np.testing.assert_allclose(first.weights.sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(Exception, match="70 x 50"):
        masks(1, (70, 50))  # (w, h) swapped: the annotation's size is checked
    assert not object_weights([np.zeros((10, 10), bool)], (64, 64), (4, 4)).any()


def test_extraction_is_deterministic(tmp_path, coco_dataset):
    a, attrs_a = extract_objects(tmp_path / "a.h5", coco_dataset, batch_size=4)
    b, attrs_b = extract_objects(tmp_path / "b.h5", coco_dataset, batch_size=3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key]) if key != "features" else np.testing.assert_allclose(
            a[key], b[key], rtol=1e-5, atol=1e-6)
    assert attrs_a == attrs_b
    c, _ = extract_objects(tmp_path / "c.h5", coco_dataset, batch_size=4)
    np.testing.assert_array_equal(a["features"], c["features"])


def test_objects_need_annotations(tmp_path, coco_dataset):
    root, annotations = coco_dataset
    spec, model = build()
    entries = data.index_coco(root, annotations)
    with h5py.File(tmp_path / "x.h5", "w") as handle, pytest.raises(ConfigError, match="kind coco"):
        extract.run(model, entries, loading.preprocess(spec.image_size, spec.mean, spec.std), handle,
                    extract.ExtractOptions(products=("objects",)), CPU, {"dataset": "coco"})
    assert "objects" not in extract.ExtractOptions().products


def test_object_clustering_k_is_categories_present(tmp_path, coco_dataset, monkeypatch):
    extract_objects(tmp_path / "dump.h5", coco_dataset, batch_size=4)
    seen: list[int] = []
    original = clustering.kmeans

    def spy(values, k, seed, n_init):
        seen.append(k)
        return original(values, k, seed, n_init)

    monkeypatch.setattr(clustering, "kmeans", spy)
    with h5py.File(tmp_path / "dump.h5", "r") as dump:
        rows = clustering.object_clustering_rows(dump, "tiny", seed=0, n_init=3)
        again = clustering.object_clustering_rows(dump, "tiny", seed=0, n_init=3)
    assert set(seen) == {3}  # categories 1, 2, 5 present; 7 defined but unused
    assert rows == again
    assert {r["representation"] for r in rows} == {"object"}
    assert sorted({r["block"] for r in rows}) == list(range(1, 7))
    assert len(rows) == 6 * len(clustering.METRICS)
    assert all(0 <= r["value"] <= 1 for r in rows if r["metric"] != "ari")


def test_objects_of_one_category_are_undefined_not_perfect(tmp_path) -> None:
    """Every kept object of one category: KMeans with k = 1 would score 1.0; NaN with a note."""
    path = tmp_path / "one.h5"
    with h5py.File(path, "w") as f:
        f["objects/features"] = np.random.default_rng(0).normal(size=(6, 2, 4)).astype(np.float32)
        f["objects/category"] = np.full(6, 3, dtype=np.int64)
    with h5py.File(path) as dump:
        rows = clustering.object_clustering_rows(dump, "tiny", seed=0, n_init=2)
    assert len(rows) == 2 * 3 and all(np.isnan(r["value"]) and r["note"] == "undefined: 1 class" for r in rows)


def test_objects_dump_is_checksummed_and_validates(tmp_path, coco_dataset):
    """A dump with objects written as extract_dump writes it opens through vitscope.io.dumps.open_dump
    (O rows of every objects/ dataset consistent); a flipped bit in objects/features fails the
    object clustering naming the dump, and a short objects/category fails the open."""
    from test_dumps import flip_bit

    from vitscope.errors import DumpError
    from vitscope.io import dumps

    root, annotations = coco_dataset
    spec, model = build()
    entries = data.index_coco(root, annotations)
    masks = ObjectMasks(data.load_coco(annotations), [e.path for e in entries], root, spec.image_size,
                        models.geometry(model).grid)
    meta = {"model": "tiny", "dataset": "coco", **{k: v for k, v in spec.describe().items() if k != "alias"}}
    path = tmp_path / "dump.h5"
    with dumps.create_file(path) as handle:
        extract.run(
            model, entries, loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation), handle,
            extract.ExtractOptions(products=("objects", "tokens"), batch_size=4), CPU, meta, objects=masks,
        )
    with dumps.open_dump(path) as dump:
        assert all(dump[f"objects/{k}"].fletcher32 for k in ("features", "image", "category", "category_name"))
        assert set(dump["objects/category_name"].asstr()[...]) <= {c["name"] for c in CATEGORIES}
        clustering.object_clustering_rows(dump, "tiny", seed=0, n_init=1)
    damaged = tmp_path / "damaged.h5"
    damaged.write_bytes(path.read_bytes())
    flip_bit(damaged, "objects/features", 0)
    with dumps.open_dump(damaged) as dump, pytest.raises(DumpError, match=f"{damaged}': dataset objects/features"):
        clustering.object_clustering_rows(dump, "tiny", seed=0, n_init=1)
    with h5py.File(damaged, "r+") as f:
        values = f["objects/category"][...][:-1]
        del f["objects/category"]
        dumps.create_dataset(f, "objects/category", values.shape, values.dtype, data=values)
        dumps.seal(f)
    with pytest.raises(DumpError, match=r"dataset objects/category has shape"):
        dumps.open_dump(damaged)
