"""SPair-71k keypoint transfer: letterbox, transfer, PCK, the reader, the demo layout, one model end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vitscope.errors import DatasetError
from vitscope.io import datasets as data
from vitscope.io import synthetic
from vitscope.tasks.spair import data as spair_data
from vitscope.tasks.spair import metric as spair
from vitscope.tasks.spair import run as spair_run

# --------------------------------------------------------------------------- letterbox


def test_letterbox_landscape_by_hand() -> None:
    box = spair.letterbox(400, 200, (224, 224))
    assert box.scale == pytest.approx(0.56)
    assert box.resized == (224, 112) and box.offset == (0, 56)
    np.testing.assert_allclose(box.points([[0, 0], [100, 50]]), [[0, 56], [56, 84]])
    np.testing.assert_allclose(box.box([10, 20, 110, 70]), [5.6, 67.2, 61.6, 95.2])


def test_letterbox_portrait_and_rectangular_canvas() -> None:
    box = spair.letterbox(300, 500, (224, 224))  # s = 0.448, width 134.4 -> 134, offset (224 - 134) // 2
    assert box.resized == (134, 224) and box.offset == (45, 0)
    np.testing.assert_allclose(box.points([[np.nan, 1.0]])[0, 1], 0.448)
    assert np.isnan(box.points([[np.nan, 1.0]])[0, 0])
    wide = spair.letterbox(100, 100, (32, 48))  # s = min(32 / 100, 48 / 100)
    assert wide.scale == pytest.approx(0.32) and wide.resized == (32, 32) and wide.offset == (8, 0)


def test_letterbox_image_pads_with_black() -> None:
    image = Image.new("RGB", (40, 20), (255, 255, 255))
    box = spair.letterbox(40, 20, (16, 16))
    out = np.asarray(spair_run.letterbox_image(image, box))
    assert out.shape == (16, 16, 3) and box.offset == (0, 4)
    assert out[:4].max() == 0 and out[12:].max() == 0 and out[4:12].min() == 255


# --------------------------------------------------------------------------- transfer


@pytest.mark.parametrize(("grid", "size"), [(4, 12), (14, 224), (3, 8), (5, 5)])
def test_bilinear_matrix_matches_torch(grid: int, size: int) -> None:
    values = torch.randn(1, 1, grid, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ref = F.interpolate(values, size=(size, 3), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(spair.bilinear_matrix(grid, size) @ values[0, 0].numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(spair.bilinear_matrix(grid, size).sum(1), 1.0)


def _slow_transfer(source, target, points, canvas, renormalize):
    """Reference: normalise tokens, upsample with torch, (re-normalise), loop over keypoints and pixels.

    Returns the best pixel (x, y) per keypoint and the (h, w) similarity map of each."""
    def up(tokens):
        x = torch.from_numpy(spair.normalize_tokens(tokens)).permute(2, 0, 1)[None]
        out = F.interpolate(x, size=canvas, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
        return spair.normalize_tokens(out) if renormalize else out

    src, trg = up(source), up(target)
    preds, maps = [], []
    for x, y in points:
        q = src[min(max(int(np.floor(y + 0.5)), 0), canvas[0] - 1), min(max(int(np.floor(x + 0.5)), 0), canvas[1] - 1)]
        sim = np.zeros(canvas)
        best, where = -np.inf, None
        for r in range(canvas[0]):
            for c in range(canvas[1]):
                sim[r, c] = float(q @ trg[r, c])
                if sim[r, c] > best:
                    best, where = sim[r, c], (c, r)
        preds.append(where)
        maps.append(sim)
    return np.array(preds), maps


@pytest.mark.parametrize("renormalize", [False, True])
def test_transfer_matches_a_slow_loop(renormalize: bool) -> None:
    rng = np.random.default_rng(0)
    source, target = rng.normal(size=(3, 4, 8)), rng.normal(size=(3, 4, 8))
    canvas = (12, 16)
    points = np.array([[0.0, 0.0], [15.2, 11.7], [7.5, 3.49], [-2.0, 20.0], [9.0, 6.0]])
    fast = spair.transfer(source, target, points, canvas, renormalize, chunk=2)
    slow, maps = _slow_transfer(source, target, points, canvas, renormalize)
    # pixels beyond the outer token centres repeat the border values: exact ties, which the two
    # paths' rounding may break differently; the fast pick must reach the reference's maximum
    for (x, y), (sx, sy), sim in zip(fast, slow, maps, strict=True):
        assert sim[y, x] == pytest.approx(sim[sy, sx], abs=1e-12)
        assert x == sx or abs(int(x) - int(sx)) <= 1
        assert y == sy or abs(int(y) - int(sy)) <= 1


def test_upsample_is_the_matrix_product_with_exact_border_ties() -> None:
    values = np.random.default_rng(4).normal(size=(3, 4, 5))
    up = spair.upsample(values, (12, 20))
    np.testing.assert_allclose(up, spair.bilinear_matrix(4, 12) @ values @ spair.bilinear_matrix(5, 20).T, atol=1e-12)
    # grid 4 -> 12: pixel rows 0, 1 read only token row 0, rows 10, 11 only token row 3 (weight 1): bit-equal
    # whatever the columns' interpolation; the same for columns 0, 1 and 18, 19 (grid 5 -> 20)
    assert np.array_equal(up[:, 0], up[:, 1]) and np.array_equal(up[:, 10], up[:, 11])
    assert np.array_equal(up[:, :, 0], up[:, :, 1]) and np.array_equal(up[:, :, 18], up[:, :, 19])
    np.testing.assert_array_equal(spair.bilinear_taps(4, 12)[1][11], [1.0, 0.0])


def test_border_ties_go_to_the_first_pixel() -> None:
    # an image with itself, keypoints on the border rows (which repeat token rows 0 and 3) at columns
    # between token centres: the best pixel is tied between two rows; the first one wins
    tokens = np.random.default_rng(5).normal(size=(4, 4, 16))
    points = np.array([[5.0, 1.0], [6.0, 0.0], [8.0, 11.0], [2.0, 10.0]])
    got = spair.transfer(tokens, tokens, points, (12, 12), renormalize=True)
    np.testing.assert_array_equal(got, [[5, 0], [6, 0], [8, 10], [2, 10]])


def test_pixel_norms_match_upsampled_features() -> None:
    tokens = spair.normalize_tokens(np.random.default_rng(1).normal(size=(3, 5, 6)))
    x = torch.from_numpy(tokens).permute(2, 0, 1)[None]
    up = F.interpolate(x, size=(9, 20), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(spair.pixel_norms(tokens, (9, 20)), up.norm(dim=0).numpy(), atol=1e-12)


@pytest.mark.parametrize("renormalize", [False, True])
def test_identical_images_map_token_centres_onto_themselves(renormalize: bool) -> None:
    # grid 4 -> 12 pixels: pixel 3i + 1 is exactly token i's centre, where the upsampled
    # feature is the unit token itself; nothing else reaches a dot product of 1
    # (pixel 0 repeats token 0 exactly: a tie, which goes to the first pixel in row-major order)
    tokens = np.random.default_rng(2).normal(size=(4, 4, 16))
    points = np.array([[4.0, 4.0], [4.0, 10.0], [10.0, 7.0], [1.0, 1.0], [1.0, 7.0]])
    np.testing.assert_array_equal(
        spair.transfer(tokens, tokens, points, (12, 12), renormalize), [[4, 4], [4, 10], [10, 7], [0, 0], [0, 7]]
    )


# --------------------------------------------------------------------------- PCK


def test_pck_threshold_is_strict_and_uses_the_longer_box_side() -> None:
    box = np.array([10.0, 20.0, 110.0, 70.0])  # 100 x 50 -> size 100
    gt = np.zeros((4, 2))
    pred = np.array([[10.0, 0.0], [9.99, 0.0], [3.0, 4.0], [0.0, 1.0]])  # errors 10, 9.99, 5, 1
    hits = spair.correct(pred, gt, box, (0.1, 0.05, 0.01))
    np.testing.assert_array_equal(hits, [[False, True, True, True], [False, False, False, True],
                                         [False, False, False, False]])
    np.testing.assert_allclose(spair.pck(pred, gt, box, (0.1, 0.05, 0.01)), [0.75, 0.25, 0.0])
    assert np.isnan(spair.pck(np.zeros((0, 2)), np.zeros((0, 2)), box)).all()
    np.testing.assert_allclose(spair.box_size([0, 0, 3, 7]), 7.0)


def test_categories_are_pooled_then_averaged_and_empty_ones_left_out() -> None:
    per, mean = spair.category_means(
        {"cat": np.array([3, 1]), "dog": np.array([1, 0]), "empty": np.array([0, 0])},
        {"cat": 4, "dog": 1, "empty": 0},
    )
    np.testing.assert_allclose(per["cat"], [0.75, 0.25])
    np.testing.assert_allclose(per["dog"], [1.0, 0.0])
    assert np.isnan(per["empty"]).all()
    np.testing.assert_allclose(mean, [0.875, 0.125])  # not the pooled 4 / 5
    _, none = spair.category_means({"empty": np.array([0])}, {"empty": 0})
    assert np.isnan(none).all()


def test_empty_categories_and_means_carry_a_note(caplog) -> None:
    """A category without keypoints is NaN with note "undefined: no keypoint (empty category)" in
    the per-category rows (left out of the mean); a mean over no category is NaN with its note."""
    tallies = {
        "cat": spair_run._Tally(np.array([[3, 1]]), keypoints=4, pairs=2),
        "empty": spair_run._Tally(np.array([[0, 0]]), keypoints=0, pairs=1),
    }
    with caplog.at_level("WARNING", logger="vitscope.tasks.spair.run"):
        rows, per_category = spair_run.result_rows(tallies, "m", (0.1, 0.05))
    assert set(rows[0]) == set(spair_run.COLUMNS) and set(per_category[0]) == set(spair_run.CATEGORY_COLUMNS)
    assert all(r["note"] == "" and r["categories"] == 1 for r in rows)
    empty = [r for r in per_category if r["category"] == "empty"]
    assert all(np.isnan(r["value"]) and r["note"] == spair_run.EMPTY_CATEGORY for r in empty)
    assert all(r["note"] == "" for r in per_category if r["category"] == "cat")
    assert "categories empty have no keypoint" in caplog.text
    rows, _ = spair_run.result_rows({"empty": tallies["empty"]}, "m", (0.1, 0.05))
    assert all(np.isnan(r["value"]) and r["note"] == spair_run.NO_KEYPOINT for r in rows)


# --------------------------------------------------------------------------- reader


def _layout(root: Path, pairs: dict[str, dict]) -> None:
    for name, content in pairs.items():
        folder = root / "PairAnnotation" / "test"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(content))
        for field in ("src_imname", "trg_imname"):
            image = root / "JPEGImages" / content["category"] / content[field]
            image.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 6)).save(image)


def _pair(category: str, src: str = "a.jpg", trg: str = "b.jpg", **extra) -> dict:
    return {"src_imname": src, "trg_imname": trg, "src_kps": [[1, 2], [3, 4], None],
            "trg_kps": [[5, 6], [-1, -1], [1, 1]], "src_bndbox": [0, 0, 4, 4], "trg_bndbox": [1, 1, 5, 3],
            "category": category, "mirror": 0, **extra}


def test_reader_official_layout_selection_and_invisible_keypoints(tmp_path: Path) -> None:
    _layout(tmp_path, {
        "000003-a-b:cat": _pair("cat"), "000001-a-b:cat": _pair("cat", mirror=1),
        "000002-b-a:cat": _pair("cat", "b.jpg", "a.jpg"), "000010-c-d:bird": _pair("bird", "c.jpg", "d.jpg"),
    })
    files = spair_data.pair_files(tmp_path, "test")
    assert list(files) == ["bird", "cat"]
    assert [p.name for p in files["cat"]] == ["000001-a-b:cat.json", "000002-b-a:cat.json", "000003-a-b:cat.json"]
    pairs = spair_data.read_pairs(tmp_path, "test", 2)
    assert [p.name for p in pairs["cat"]] == ["000001-a-b:cat", "000002-b-a:cat"]
    first = pairs["cat"][0]
    assert first.mirror == 1 and first.keypoint_ids == (0, 1, 2)
    np.testing.assert_array_equal(first.visible, [True, False, False])
    assert len(spair_data.read_pairs(tmp_path, "test", None)["cat"]) == 3
    rows = spair_data.pair_rows(pairs, 2)
    assert rows[0] == {"category": "bird", "rank": 0, "pair": "000010-c-d:bird", "source": "c.jpg", "target": "d.jpg",
                       "mirror": 0, "keypoints": 1, "selection": "first 2 in sorted file-name order"}


def test_reader_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="PairAnnotation/test' does not exist"):
        spair_data.pair_files(tmp_path, "test", key="datasets.sp")
    with pytest.raises(DatasetError, match="datasets.sp.split = 'train'"):
        spair_data.pair_files(tmp_path, "train", key="datasets.sp")
    _layout(tmp_path, {"000001-a-b:cat": _pair("cat")})
    (tmp_path / "JPEGImages/cat/b.jpg").unlink()
    with pytest.raises(DatasetError, match=r"image '.*JPEGImages/cat/b.jpg' \(trg_imname of '.*000001-a-b:cat.json'\)"):
        spair_data.read_pairs(tmp_path, "test", None)
    bad = tmp_path / "PairAnnotation/test/000002-a-b:cat.json"
    bad.write_text(json.dumps({k: v for k, v in _pair("cat").items() if k != "trg_bndbox"}))
    with pytest.raises(DatasetError, match="000002-a-b:cat.json' has no 'trg_bndbox'"):
        spair_data.read_pair(bad, tmp_path)
    bad.write_text(json.dumps(_pair("cat", trg_kps=[[1, 1]])))
    with pytest.raises(DatasetError, match="src_kps has 3 keypoints, trg_kps 1"):
        spair_data.read_pair(bad, tmp_path)
    bad.write_text(json.dumps(_pair("dog")))
    with pytest.raises(DatasetError, match="category 'dog' differs"):
        spair_data.read_pair(bad, tmp_path)
    with pytest.raises(DatasetError, match="datasets.sp: kind 'spair' is read by the spair analysis only"):
        data.index_dataset("sp", {"kind": "spair", "root": str(tmp_path)})
    (tmp_path / "PairAnnotation/test/000003_a_b_cat.json").write_text("{}")
    with pytest.raises(DatasetError, match="is not named <id>-<src>-<trg>:<category>.json"):
        spair_data.pair_files(tmp_path, "test")


def test_reader_refuses_image_names_outside_the_layout(tmp_path: Path) -> None:
    """src_imname / trg_imname and the category come from the pair file: they must stay in JPEGImages/."""
    _layout(tmp_path, {"000001-a-b:cat": _pair("cat")})
    Image.new("RGB", (8, 6)).save(tmp_path / "secret.jpg")
    pair = tmp_path / "PairAnnotation/test/000001-a-b:cat.json"
    for field, value, shown in (("src_imname", "../../secret.jpg", "'../../secret.jpg'"),
                                ("trg_imname", str(tmp_path / "secret.jpg"), ".*secret.jpg'"),
                                ("trg_imname", 5, "5")):
        pair.write_text(json.dumps(_pair("cat", **{field: value})))
        with pytest.raises(DatasetError, match=rf"pair file '.*000001-a-b:cat.json': {field} \(category 'cat'\): "
                                               rf"the image name {shown}"):
            spair_data.read_pair(pair, tmp_path)
    climbing = pair.with_name("000002-a-b:...json")  # category '..' (matching its name)
    climbing.write_text(json.dumps(_pair("..", src="secret.jpg")))
    with pytest.raises(DatasetError, match=r"src_imname \(category '..'\): the image name '..' leads outside"):
        spair_data.read_pair(climbing, tmp_path)


# --------------------------------------------------------------------------- demo data and a model


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spair")
    synthetic.write_spair(root, synthetic.SyntheticSpec(classes=3, image_size=40, spair_categories=2,
                                                        spair_images_per_category=4))
    return root


def test_demo_layout_is_official_and_consistent(demo: Path) -> None:
    files = spair_data.pair_files(demo, "test")
    assert list(files) == ["circle_solid", "square_stripes"] and all(len(v) == 12 for v in files.values())
    pairs = spair_data.read_pairs(demo, "test", None)
    for pair in (p for chosen in pairs.values() for p in chosen):
        assert pair.visible.all() and 4 <= len(pair.keypoint_ids) <= 5  # one occluded keypoint per image
        src = json.loads((demo / "ImageAnnotation" / pair.category / Path(pair.source).with_suffix(".json").name)
                         .read_text())
        np.testing.assert_allclose(pair.source_points, [src["kps"][str(k)] for k in pair.keypoint_ids])
        width, height = Image.open(pair.target).size
        assert (pair.target_points >= 0).all() and (pair.target_points[:, 0] <= width - 1).all()
        assert (pair.target_points[:, 1] <= height - 1).all()
        x1, y1, x2, y2 = pair.target_box
        assert ((pair.target_points[:, 0] >= x1 - 1) & (pair.target_points[:, 0] <= x2 + 1)).all()
        assert ((pair.target_points[:, 1] >= y1 - 1) & (pair.target_points[:, 1] <= y2 + 1)).all()
    assert {p.mirror for chosen in pairs.values() for p in chosen} == {0, 1}


def test_model_end_to_end_and_chunking_does_not_change_results(demo: Path) -> None:
    torch.set_num_threads(1)
    pairs = spair_data.read_pairs(demo, "test", 3)
    entry = {"arch": "test_vit", "weights": "random", "seed": 0, "image_size": [32, 48]}
    rows, per_category = spair_run.run("tiny", entry, pairs, alphas=(0.1, 0.05), device="cpu")
    assert len(rows) == 6 * 2 and {r["block"] for r in rows} == set(range(1, 7))
    assert all(0 <= r["value"] <= 1 and r["categories"] == 2 for r in rows)
    assert len(per_category) == 6 * 2 * 2
    for r in rows:  # the mean over categories of the per-category values
        values = [c["value"] for c in per_category if c["block"] == r["block"] and c["alpha"] == r["alpha"]]
        assert r["value"] == pytest.approx(np.mean(values))
    small, _ = spair_run.run("tiny", entry, pairs, alphas=(0.1, 0.05), device="cpu", max_images=2, batch_size=1)
    assert [r["value"] for r in small] == [r["value"] for r in rows]


def test_block_tokens_are_the_block_outputs() -> None:
    from vitscope.models.registry import build, geometry, spec_from_config

    net, _ = build(spec_from_config("t", {"arch": "test_vit", "weights": "random", "image_size": 32}))
    geom = geometry(net)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = spair_run.block_tokens(net, images, geom)
    assert tokens.shape == (2, geom.blocks, *geom.grid, geom.width)
    with torch.inference_mode():
        x = net.forward_features(images)  # the final norm follows the last block
        normed = net.norm(tokens[:, -1].flatten(1, 2))
    assert not torch.equal(tokens[:, -1].flatten(1, 2), x[:, geom.prefix :])  # block output, not the normed one
    np.testing.assert_allclose(normed.numpy(), x[:, geom.prefix :].numpy(), atol=1e-5)


def test_a_pair_of_one_image_with_itself_transfers_exactly(tmp_path: Path) -> None:
    """Letterbox, keypoint mapping and transfer agree: an image matched with itself (renormalised
    cosine, distinct tokens) puts every keypoint on its own nearest pixel, at any alpha.

    Keypoints stay more than half a patch inside the canvas: beyond the outer token centres the
    upsampled features repeat (exact ties, resolved to the first pixel)."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    image = tmp_path / "JPEGImages" / "noise" / "a.png"
    image.parent.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, size=(60, 100, 3), dtype=np.uint8)).save(image)
    points = [[10.4, 4.0], [89.0, 55.6], [50.0, 30.0], [20.4, 40.5]]
    content = {"src_imname": "a.png", "trg_imname": "a.png", "src_kps": points, "trg_kps": points,
               "src_bndbox": [0, 0, 99, 59], "trg_bndbox": [0, 0, 99, 59], "category": "noise", "mirror": 0}
    (tmp_path / "PairAnnotation/test").mkdir(parents=True)
    (tmp_path / "PairAnnotation/test/000001-a-a:noise.json").write_text(json.dumps(content))
    pairs = spair_data.read_pairs(tmp_path, "test", None)
    entry = {"arch": "test_vit", "weights": "random", "seed": 0, "image_size": 96}
    rows, _ = spair_run.run("tiny", entry, pairs, renormalize=True, device="cpu")
    # canvas 96: scale 0.96, box side 95.04 px, so alpha 0.01 allows 0.95 px (rounding costs < 0.71 px)
    assert {r["value"] for r in rows} == {1.0} and {r["keypoints"] for r in rows} == {4}


def test_chance_by_hand_and_against_every_pixel() -> None:
    """A 10 x 10 canvas, a box of side 10: alpha 0.1 is a radius of 1 (strict), so only the keypoint's
    own pixel counts (1/100); alpha 0.15 (radius 1.5) adds the 4 edge and 4 corner neighbours (9/100);
    in a corner 4 of those 9 lie inside; between pixels (4.5, 4.5) the 4 around it (d = 0.71)."""
    box = np.array([0.0, 0.0, 10.0, 10.0])
    gt = np.array([[5.0, 5.0], [0.0, 0.0], [4.5, 4.5]])
    np.testing.assert_allclose(spair.chance(gt, box, (10, 10), (0.1, 0.15)),
                               [[0.01, 0.01, 0.04], [0.09, 0.04, 0.04]])
    rng = np.random.default_rng(5)
    gt = rng.uniform(-3, 40, size=(6, 2))
    box, canvas, alphas = np.array([3.0, 1.0, 30.0, 20.0]), (24, 36), (0.3, 0.1, 0.05)
    every = np.stack(np.meshgrid(np.arange(36), np.arange(24)), -1).reshape(-1, 2)
    slow = np.stack([spair.correct(every, np.broadcast_to(g, every.shape), box, alphas).mean(axis=1) for g in gt], 1)
    np.testing.assert_array_equal(spair.chance(gt, box, canvas, alphas), slow)


def test_result_rows_pool_the_chance_like_pck() -> None:
    tallies = {
        "cat": spair_run._Tally(np.array([[3, 1]]), keypoints=4, pairs=2, chance=np.array([0.4, 0.1])),
        "dog": spair_run._Tally(np.array([[1, 0]]), keypoints=2, pairs=1, chance=np.array([0.1, 0.02])),
    }
    rows, per_category = spair_run.result_rows(tallies, "m", (0.1, 0.05))
    assert [r["chance"] for r in per_category] == pytest.approx([0.1, 0.05, 0.025, 0.01])
    assert [r["chance"] for r in rows] == pytest.approx([(0.1 + 0.05) / 2, (0.025 + 0.01) / 2])
    assert {r["pairs"] for r in rows} == {3}


def test_the_demos_pck_threshold_exceeds_half_a_patch_at_its_canvas(tmp_path: Path) -> None:
    """PCK@0.1 is solvable on the demo: 0.1 x every target box, in the canvas the spair analysis
    letterboxes into, is more than half a patch (the nearest token centre can be within it), and
    a patch or more for most pairs (docs/demo.md)."""
    import re

    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    wanted = {k: v for k, v in config["datasets"]["demo"]["synthetic"].items() if k.startswith("spair_")}
    spec = synthetic.SyntheticSpec(**{k: config["datasets"]["demo"]["synthetic"][k]
                                      for k in ("classes", "image_size", "seed", "class_colours")}, **wanted)
    synthetic.write_spair(tmp_path, spec)
    size = config["analyses"]["spair"].get("image_size") or config["models"]["fs"]["image_size"]
    patch = int(re.search(r"patch(\d+)", config["models"]["fs"]["arch"]).group(1))
    pairs = spair_data.read_pairs(tmp_path, "test", None)
    thresholds = np.array([
        0.1 * spair.box_size(spair.letterbox(*Image.open(p.target).size, (size, size)).box(p.target_box))
        for chosen in pairs.values() for p in chosen
    ])
    assert len(thresholds) >= 100
    assert thresholds.min() > patch / 2
    assert np.median(thresholds) >= patch
