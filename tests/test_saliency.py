"""CLS attention saliency: mask geometry, mass sets, IoU and summaries against slow loops and hand-built cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.attention import saliency
from vitscope.errors import DatasetError
from vitscope.io import datasets as data
from vitscope.io import preprocess as loading

# ------------------------------------------------------------ slow references


def slow_coverage(mask: np.ndarray, image_size, grid) -> np.ndarray:
    """Token coverage by looping over tokens and original pixels (float64)."""
    height, width = mask.shape
    (rh, rw), (top, left) = data.resize_crop_geometry(height, width, image_size)
    gh, gw = grid
    th, tw = image_size[0] / gh, image_size[1] / gw
    out = np.zeros(grid)
    for i in range(gh):
        y0, y1 = (top + i * th) * height / rh, (top + (i + 1) * th) * height / rh
        for j in range(gw):
            x0, x1 = (left + j * tw) * width / rw, (left + (j + 1) * tw) * width / rw
            total = 0.0
            for y in range(height):
                oy = max(0.0, min(y1, y + 1) - max(y0, y))
                if oy == 0:
                    continue
                for x in range(width):
                    ox = max(0.0, min(x1, x + 1) - max(x0, x))
                    total += oy * ox * mask[y, x]
            out[i, j] = total / ((y1 - y0) * (x1 - x0))
    return out


def slow_mass_set(row: np.ndarray, mass: float) -> np.ndarray:
    """Add tokens one by one, largest first (lowest index on ties), until the mass is reached."""
    row = row.astype(np.float64) / row.sum()
    keep = np.zeros(row.shape, dtype=bool)
    order = sorted(range(len(row)), key=lambda k: (-row[k], k))
    held = 0.0
    for k in order:
        if held >= mass - saliency.MASS_TOLERANCE:
            break
        keep[k] = True
        held += row[k]
    return keep


# ------------------------------------------------------------ geometry


@pytest.mark.parametrize(
    ("shape", "image_size"),
    [((40, 80), (20, 20)), ((81, 37), (24, 24)), ((50, 50), (24, 40)), ((61, 37), (24, 40)), ((30, 90), (32, 16))],
)
def test_resize_crop_geometry_matches_preprocess(shape, image_size) -> None:
    """The geometry equals what loading.preprocess does: resized size and the center crop offsets."""
    height, width = shape
    (rh, rw), (top, left) = data.resize_crop_geometry(height, width, image_size)
    transform = loading.preprocess(image_size, (0.0,) * 3, (1.0,) * 3, "nearest")
    resized = transform.transforms[1](torch.zeros(3, height, width))
    assert tuple(resized.shape[-2:]) == (rh, rw)
    # a resized image whose pixels hold their own row/col survives the crop at (top, left)
    rows = torch.arange(rh, dtype=torch.float32)[:, None].expand(rh, rw)
    cols = torch.arange(rw, dtype=torch.float32)[None, :].expand(rh, rw)
    cropped = transform.transforms[2](torch.stack([rows, cols, rows]))
    assert cropped[0, 0, 0] == top and cropped[1, 0, 0] == left


@pytest.mark.parametrize(
    ("shape", "image_size", "grid"),
    [
        ((40, 80), (20, 20), (4, 4)),
        ((37, 61), (24, 40), (3, 5)),
        ((29, 23), (16, 16), (2, 2)),
        ((50, 30), (32, 16), (4, 2)),
    ],
)
def test_mask_coverage_equals_slow_loop(shape, image_size, grid) -> None:
    rng = np.random.default_rng(0)
    mask = rng.random(shape) < 0.4
    np.testing.assert_allclose(
        saliency.mask_coverage(mask, image_size, grid), slow_coverage(mask, image_size, grid), atol=1e-12
    )


@pytest.mark.parametrize(("shape", "image_size", "grid"), [((60, 100), (32, 32), (4, 4)), ((70, 50), (24, 40), (3, 5))])
def test_mask_coverage_agrees_with_the_image_transform(shape, image_size, grid) -> None:
    """A mask pushed through loading.preprocess like an image, then averaged per token, gives the coverage."""
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    mask[height // 5 : height * 3 // 4, width // 3 : width * 5 // 6] = True
    img = Image.fromarray(np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=-1))
    out = loading.preprocess(image_size, (0.0,) * 3, (1.0,) * 3, "bilinear")(img)[0].clamp(0, 1).numpy()
    gh, gw = grid
    pooled = out.reshape(gh, image_size[0] // gh, gw, image_size[1] // gw).mean(axis=(1, 3))
    np.testing.assert_allclose(saliency.mask_coverage(mask, image_size, grid), pooled, atol=0.04)


def test_known_mask_on_the_grid() -> None:
    """An 80 x 40 (h x w) image, target 20 x 20, grid 2 x 2: resized to 40 x 20, crop rows 10..29,
    i.e. original rows 20..59. An object over original rows 20..39, all columns, is the top row of tokens."""
    mask = np.zeros((80, 40), dtype=bool)
    mask[20:40] = True
    np.testing.assert_allclose(saliency.mask_coverage(mask, (20, 20), (2, 2)), [[1, 1], [0, 0]])
    # a quarter-covered token is background at 0.5, half covered is object
    mask = np.zeros((80, 40), dtype=bool)
    mask[20:30, :20] = True  # half of token (0, 0)
    mask[40:45, 20:] = True  # a quarter of token (1, 1)
    cover = saliency.mask_coverage(mask, (20, 20), (2, 2))
    np.testing.assert_allclose(cover, [[0.5, 0], [0, 0.25]])
    assert saliency.grid_mask(mask, (20, 20), (2, 2)).tolist() == [[True, False], [False, False]]


def test_a_token_covered_exactly_half_is_object_whatever_the_rounding(monkeypatch) -> None:
    """The products of mask_coverage are summed in the BLAS kernel's order: OpenBLAS Prescott gave the
    half-covered token of the test above 0.49999999999999994. One ulp below the threshold still counts."""
    half = np.nextafter(0.5, 0.0)
    monkeypatch.setattr(saliency, "mask_coverage", lambda *_: np.array([[half, 0.5 - 1e-6], [1.0, 0.0]]))
    assert saliency.grid_mask(np.zeros((4, 4), bool), (4, 4), (2, 2)).tolist() == [[True, False], [True, False]]


# ------------------------------------------------------------ mass sets and IoU


def test_mass_mask_equals_slow_loop_with_ties() -> None:
    rng = np.random.default_rng(1)
    rows = rng.random((5, 3, 16)) ** 3
    rows[0, 0] = 1.0  # uniform: all ties
    rows[1, 0, :4] = 0.5  # ties at the top
    rows[2, 0] = np.array([0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1] + [0.0] * 9)  # 0.6 reached exactly at 3 tokens
    got = saliency.mass_mask(rows, 0.6)
    for idx in np.ndindex(rows.shape[:-1]):
        np.testing.assert_array_equal(got[idx], slow_mass_set(rows[idx], 0.6), err_msg=str(idx))
    assert got[2, 0].tolist() == [True] * 3 + [False] * 13


def test_uniform_attention_keeps_ceil_of_mass_tokens_in_token_order() -> None:
    keep = saliency.mass_mask(np.full(16, 1 / 16), 0.6)  # 9.6 tokens -> 10, the first 10
    assert keep.tolist() == [True] * 10 + [False] * 6
    keep = saliency.mass_mask(np.full(10, 3.0), 0.6)  # unnormalised input; exactly 6 tokens hold 0.6
    assert keep.sum() == 6


def test_iou_hand_built_cases() -> None:
    gh = gw = 4
    mask = np.zeros((gh, gw), dtype=bool)
    mask[1:3, 1:3] = True  # 4 object tokens
    prefix = 1
    cls_on_object = np.zeros(1 + gh * gw)
    cls_on_object[0] = 0.5  # CLS key's share is dropped before the mass set
    cls_on_object[1:][mask.ravel()] = 0.125
    uniform = np.full(1 + gh * gw, 1 / 17)
    rows = np.stack([cls_on_object, uniform]).reshape(2, 1, 1, -1)[[0, 1]]
    masks = np.stack([mask, mask])
    ious = saliency.saliency_iou(rows.reshape(2, 1, 1, -1), masks, prefix, mass=0.6)
    # all on the object: 3 of the 4 object tokens hold 0.75 >= 0.6 -> IoU 3/4
    assert ious[0, 0, 0] == pytest.approx(0.75)
    # uniform: the first 10 tokens (rows 0-1 and row 2, cols 0-1) -> intersection 3, union 11
    assert ious[1, 0, 0] == pytest.approx(3 / 11)
    # with mass 1.0 attention all on the object is a perfect match
    assert saliency.saliency_iou(rows[:1], masks[:1], prefix, mass=1.0)[0, 0, 0] == pytest.approx(1.0)


def test_empty_mask_has_no_iou_and_is_counted() -> None:
    rng = np.random.default_rng(2)
    rows = rng.random((3, 2, 4, 1 + 9))
    masks = np.zeros((3, 3, 3), dtype=bool)
    masks[0, 1, 1] = True
    masks[2, :, 0] = True
    ious = saliency.saliency_iou(rows, masks)
    assert np.isnan(ious[1]).all() and not np.isnan(ious[[0, 2]]).any()
    table = saliency.summary_rows(ious, "m")
    assert {r["images"] for r in table} == {2} and {r["empty_masks"] for r in table} == {1}
    assert saliency.summary_rows(ious, "m", ~masks.reshape(3, -1).any(axis=1)) == table


def test_cls_row_with_no_spatial_mass_is_undefined_not_zero() -> None:
    """A CLS query with all of its attention on the prefix tokens (an attention sink; spatial
    mass 0 or subnormal in float32) has no mass set: before, its IoU was 0 and pulled the
    head's mean down. Now it is NaN, left out of that head's means, and counted."""
    rng = np.random.default_rng(5)
    rows = rng.random((3, 1, 2, 1 + 9)).astype(np.float32)
    rows /= rows.sum(axis=-1, keepdims=True)
    rows[1, 0, 0] = 0.0
    rows[1, 0, 0, 0] = 1.0                       # image 2, head 1: everything on CLS
    rows[2, 0, 0, 1:] = np.float32(1e-45)        # image 3, head 1: spatial mass subnormal
    rows[2, 0, 0, 0] = 1.0
    masks = np.zeros((3, 3, 3), dtype=bool)
    masks[:, 1, :] = True
    assert not saliency.mass_mask(rows[1, 0, 0, 1:]).any()
    assert saliency.has_mass(rows[:, 0, :, 1:]).tolist() == [[True, True], [False, True], [False, True]]
    ious = saliency.saliency_iou(rows, masks)
    assert np.isnan(ious[[1, 2], 0, 0]).all() and not np.isnan(ious[0]).any() and not np.isnan(ious[:, 0, 1]).any()
    table = saliency.summary_rows(ious, "m", np.zeros(3, bool))
    head1 = next(r for r in table if r["selection"] == "head" and r["head"] == 1)
    assert head1["iou"] == ious[0, 0, 0] and head1["iou_std"] == 0.0
    assert head1["zero_mass"] == 2 and head1["images"] == 3 and head1["note"] == ""
    head2 = next(r for r in table if r["selection"] == "head" and r["head"] == 2)
    assert head2["zero_mass"] == 0 and head2["iou"] == pytest.approx(ious[:, 0, 1].mean())
    oracle = next(r for r in table if r["selection"] == "per_image_best_head")
    want = np.mean([max(ious[0, 0]), ious[1, 0, 1], ious[2, 0, 1]])
    assert oracle["iou"] == pytest.approx(want) and oracle["zero_mass"] == 0


def test_summary_rows_best_head_once_and_per_image_best() -> None:
    # 2 images, 1 block, 3 heads: head 2 best on average, per-image best differs per image
    ious = np.array([[[0.9, 0.5, 0.0]], [[0.0, 0.6, 0.8]]])
    rows = saliency.summary_rows(ious, "m")
    heads = [r for r in rows if r["selection"] == "head"]
    assert [r["head"] for r in heads] == [1, 2, 3]
    np.testing.assert_allclose([r["iou"] for r in heads], [0.45, 0.55, 0.4])
    once = next(r for r in rows if r["selection"] == "best_head_once")
    assert once["head"] == 2 and once["iou"] == pytest.approx(0.55) and once["block"] == 1
    oracle = next(r for r in rows if r["selection"] == "per_image_best_head")
    assert oracle["iou"] == pytest.approx(0.85) and oracle["head"] == ""
    assert set(rows[0]) == set(saliency.COLUMNS)


def test_summary_equals_slow_loop() -> None:
    rng = np.random.default_rng(3)
    ious = rng.random((7, 3, 4))
    rows = saliency.summary_rows(ious, "m")
    for b in range(3):
        means = [np.mean([ious[n, b, h] for n in range(7)]) for h in range(4)]
        best = max(range(4), key=lambda h: (means[h], -h))
        once = next(r for r in rows if r["selection"] == "best_head_once" and r["block"] == b + 1)
        assert once["head"] == best + 1 and once["iou"] == pytest.approx(means[best])
        oracle = next(r for r in rows if r["selection"] == "per_image_best_head" and r["block"] == b + 1)
        assert oracle["iou"] == pytest.approx(np.mean([max(ious[n, b]) for n in range(7)]))
        assert oracle["iou"] >= once["iou"]


# ------------------------------------------------------------ COCO ground truth


def write_coco(
    tmp_path: Path, masks: dict[str, np.ndarray], polygons: dict[str, list] | None = None
) -> tuple[Path, Path]:
    from vitscope.io.synthetic import coco_annotation

    root = tmp_path / "images"
    root.mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    for i, (name, mask) in enumerate(masks.items(), 1):
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(root / name)
        coco["images"].append({"id": i, "file_name": name, "height": mask.shape[0], "width": mask.shape[1]})
        if mask.any():
            coco["annotations"].append(coco_annotation(mask, len(coco["annotations"]) + 1, i, 1))
        for poly in (polygons or {}).get(name, []):
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": i, "category_id": 1, "segmentation": poly,
                 "iscrowd": 0, "area": 1.0, "bbox": [0, 0, 1, 1]}
            )
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    return root, path


def test_object_mask_is_the_union_of_instances(tmp_path: Path) -> None:
    mask = np.zeros((20, 30), dtype=bool)
    mask[2:8, 3:9] = True
    # a second instance as a polygon (a rectangle 20..28 x 10..18), and a malformed 2-point polygon
    root, path = write_coco(tmp_path, {"a.png": mask}, {"a.png": [[[20, 10, 28, 10, 28, 18, 20, 18]], [[1, 1, 2, 2]]]})
    coco = data.load_coco(path)
    union = saliency.object_mask(coco, 1)
    assert union[2:8, 3:9].all() and union[11:17, 21:27].all()
    assert union.sum() < mask.sum() + 9 * 9 + 1


def test_dataset_grid_masks_follow_the_dump_paths(tmp_path: Path) -> None:
    full = np.ones((16, 16), dtype=bool)
    left = np.zeros((16, 16), dtype=bool)
    left[:, :8] = True
    root, path = write_coco(tmp_path, {"full.png": full, "left.png": left})
    coco = data.load_coco(path)
    paths = [str(root / "left.png"), str(root / "full.png")]
    masks = saliency.dataset_grid_masks(coco, paths, root, (8, 8), (2, 2))
    assert masks[0].tolist() == [[True, False], [True, False]] and masks[1].all()
    with pytest.raises(DatasetError, match=r"image '.*other.png' of the dump is not in"):
        saliency.dataset_grid_masks(coco, [str(root / "other.png")], root, (8, 8), (2, 2))
    Image.fromarray(np.zeros((10, 16, 3), np.uint8)).save(root / "left.png")
    with pytest.raises(DatasetError, match=r"'.*left.png' is 16 x 10 but .* says 16 x 16"):
        saliency.dataset_grid_masks(coco, paths, root, (8, 8), (2, 2))
