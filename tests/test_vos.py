"""One DAVIS sequence end to end (tiny model, synthetic video), pooling, and the per-block results layout."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from vitscope.errors import DatasetError
from vitscope.io import synthetic, synthetic_video, tables, video
from vitscope.tasks.davis import evaluation as davis
from vitscope.tasks.davis import propagation as vos

TINY = {"arch": "test_vit", "weights": "random", "seed": 0, "image_size": 32}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("vos")
    spec = synthetic.SyntheticSpec(davis_sequences=("a", "b"), davis_frames=5, davis_size=(40, 56))
    synthetic_video.write_davis(root / "davis", spec)
    rows = vos.run_sequence("m", TINY, "d", {"root": str(root / "davis")}, "b", root / "out" / "sequences" / "b",
                            vos.DavisOptions(short_side=48, radius=2), "cpu", 1)
    return root, rows


def test_masks_are_palette_pngs_of_every_block_and_frame(run):
    root, rows = run
    out = root / "out" / "sequences" / "b"
    blocks = sorted(p.name for p in out.iterdir())
    assert blocks == [f"block{b:02d}" for b in range(1, 7)]  # test_vit: 6 blocks
    first = video.read_annotation(root / "davis/Annotations/480p/b/00000.png")
    for block in blocks:
        files = sorted(p.name for p in (out / block).iterdir())
        assert files == [f"{t:05d}.png" for t in range(5)]
        np.testing.assert_array_equal(video.read_annotation(out / block / "00000.png"), first)
        mask = video.read_annotation(out / block / "00004.png")
        assert mask.shape == (40, 56) and mask.max() <= 2
    assert not list(out.parent.glob(".b.tmp-*"))


def test_rows_score_every_object_without_first_and_last(run):
    root, rows = run
    assert {r["block"] for r in rows} == set(range(1, 7))
    assert {r["object"] for r in rows} == {1, 2}
    assert {r["frames"] for r in rows} == {3}
    assert len(rows) == 6 * 2 * 2 * 3  # blocks x objects x (J, F) x statistics
    assert all(0 <= r["value"] <= 1 for r in rows if r["metric"] != "decay")
    # the rows agree with scoring the written masks afresh
    out = root / "out" / "sequences" / "b" / "block03"
    pred = np.stack([video.read_annotation(out / f"{t:05d}.png") for t in range(5)])
    gt = np.stack([video.read_annotation(root / f"davis/Annotations/480p/b/{t:05d}.png") for t in range(5)])
    j, f = davis.evaluate_sequence(pred, gt)
    got = {(r["object"], r["measure"]): r["value"] for r in rows if r["block"] == 3 and r["metric"] == "mean"}
    assert got[1, "J"] == pytest.approx(j[0].mean()) and got[2, "F"] == pytest.approx(f[1].mean())


def test_pool_and_link(run, tmp_path: Path):
    root, rows = run
    table = tmp_path / "b.csv"
    tables.write_csv(rows, table, columns=davis.OBJECT_COLUMNS)
    pooled = vos.pool_tables([table])
    assert len(pooled) == 6 * 7 and {r["measure"] for r in pooled} == {"J&F", "J", "F"}
    jf = [r for r in pooled if r["measure"] == "J&F"]
    assert all(r["objects"] == 2 for r in jf)
    masks = root / "out" / "masks"
    assert vos.link_results([root / "out" / "sequences" / "b"], masks) == 6
    assert (masks / "block02" / "b" / "00004.png").is_file()
    assert (masks / "block02" / "b").is_symlink()
    with open(table, newline="") as handle:
        assert next(csv.reader(handle)) == list(davis.OBJECT_COLUMNS)


def test_too_short_sequence_is_an_error(tmp_path: Path):
    spec = synthetic.SyntheticSpec(davis_sequences=("s",), davis_frames=3, davis_size=(32, 32))
    synthetic_video.write_davis(tmp_path, spec)
    for t in (1, 2):
        (tmp_path / f"JPEGImages/480p/s/{t:05d}.jpg").unlink()
        (tmp_path / f"Annotations/480p/s/{t:05d}.png").unlink()
    with pytest.raises(DatasetError, match="sequence 's' has 1 frames"):
        vos.run_sequence("m", TINY, "d", {"root": str(tmp_path)}, "s", tmp_path / "o", vos.DavisOptions(), "cpu", 1)


def test_a_failure_mid_sequence_leaves_no_folder_and_no_temporary(tmp_path: Path):
    """A frame that cannot be read midway: neither the masks folder nor its temporary survives; a killed
    writer's temporary folder is removed by the next run, which replaces an older output whole (links too)."""
    spec = synthetic.SyntheticSpec(davis_sequences=("s",), davis_frames=5, davis_size=(32, 32))
    synthetic_video.write_davis(tmp_path / "davis", spec)
    frame = tmp_path / "davis/JPEGImages/480p/s/00003.jpg"
    good = frame.read_bytes()
    frame.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out" / "s"
    args = ("m", TINY, "d", {"root": str(tmp_path / "davis")}, "s", out, vos.DavisOptions(short_side=32), "cpu", 1)
    with pytest.raises(DatasetError, match=r"image '.*00003.jpg' is corrupt or unreadable"):
        vos.run_sequence(*args)
    assert list(out.parent.iterdir()) == []
    frame.write_bytes(good)
    (out.parent / ".s.tmp-otherhost-1" / "block01").mkdir(parents=True)  # a killed writer's temporary folder
    vos.run_sequence(*args)
    assert [p.name for p in out.parent.iterdir()] == ["s"]
    (out / "block01" / "stale.png").write_bytes(b"x")
    vos.run_sequence(*args)
    assert not (out / "block01" / "stale.png").exists() and [p.name for p in out.parent.iterdir()] == ["s"]
    masks = tmp_path / "masks"
    assert vos.link_results([out], masks) == vos.link_results([out], masks) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["davis", "masks", "out"]
