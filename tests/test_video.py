"""The DAVIS layout reader, palette PNGs, and the synthetic videos written in that layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitscope.errors import DatasetError
from vitscope.io import synthetic, synthetic_video, video


@pytest.fixture(scope="module")
def davis_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("davis")
    spec = synthetic.SyntheticSpec(davis_sequences=("one", "two-b", "three"), davis_frames=5, davis_size=(40, 56))
    synthetic_video.write_davis(root, spec)
    return root


def test_synthetic_videos_in_the_davis_layout(davis_root: Path):
    assert video.image_set(davis_root) == ["one", "two-b", "three"]
    for i, name in enumerate(video.image_set(davis_root)):
        seq = video.read_sequence(davis_root, name)
        assert seq.stems == [f"{t:05d}" for t in range(5)]
        first = video.read_annotation(seq.annotations[0])
        assert first.shape == (40, 56) and video.frame_size(seq) == (40, 56)
        assert first.max() == 1 + i  # 1, 2, 3 objects
        with Image.open(seq.annotations[0]) as img:
            assert img.mode == "P"
        masks = [video.read_annotation(p) for p in seq.annotations]
        assert any(not np.array_equal(masks[0], m) for m in masks[1:])  # objects move


def test_synthetic_videos_are_seeded(tmp_path: Path):
    spec = synthetic.SyntheticSpec(davis_sequences=("a",), davis_frames=3, davis_size=(32, 32))
    synthetic_video.write_davis(tmp_path / "x", spec)
    synthetic_video.write_davis(tmp_path / "y", spec)
    for sub in ("JPEGImages/480p/a/00002.jpg", "Annotations/480p/a/00002.png"):
        assert (tmp_path / "x" / sub).read_bytes() == (tmp_path / "y" / sub).read_bytes()


def test_palette_png_round_trip(tmp_path: Path):
    ids = np.array([[0, 1, 2], [255, 3, 0]], np.uint8)
    video.write_palette_png(ids, tmp_path / "a" / "00000.png")
    np.testing.assert_array_equal(video.read_annotation(tmp_path / "a" / "00000.png"), ids)
    pal = video.read_palette(tmp_path / "a" / "00000.png")
    assert pal.shape == (256, 3)
    np.testing.assert_array_equal(pal[:4], [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]])


def test_errors_name_the_missing_file(davis_root: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match="ImageSets/2017/val.txt' does not exist"):
        video.image_set(tmp_path)
    with pytest.raises(DatasetError, match="datasets.d: sequence folder .*nope"):
        video.read_sequence(davis_root, "nope", key="datasets.d")
    note = davis_root / "Annotations" / "480p" / "one" / "00003.png"
    moved = note.with_suffix(".bak")
    note.rename(moved)
    try:
        with pytest.raises(DatasetError, match="Annotations/480p/one/00003.png' of frame"):
            video.read_sequence(davis_root, "one")
    finally:
        moved.rename(note)
    rgb = tmp_path / "rgb.png"
    Image.new("RGB", (4, 4)).save(rgb)
    with pytest.raises(DatasetError, match="expected a palette PNG"):
        video.read_annotation(rgb)


def test_frames_are_the_images_pillow_reads_in_any_case(tmp_path: Path, caplog):
    """Frames in .JPG or .png count (not only .jpg); a stray file is skipped with a warning naming it."""
    spec = synthetic.SyntheticSpec(davis_sequences=("s",), davis_frames=3, davis_size=(16, 16))
    synthetic_video.write_davis(tmp_path, spec)
    frames = tmp_path / "JPEGImages" / "480p" / "s"
    (frames / "00001.jpg").rename(frames / "00001.JPG")
    with Image.open(frames / "00002.jpg") as img:
        img.save(frames / "00002.png")
    (frames / "00002.jpg").unlink()
    (frames / "Thumbs.db").write_bytes(b"x")
    with caplog.at_level("WARNING", logger="vitscope"):
        seq = video.read_sequence(tmp_path, "s", key="datasets.d")
    assert [p.name for p in seq.frames] == ["00000.jpg", "00001.JPG", "00002.png"]  # before: 00000.jpg, 00001.JPG
    assert seq.stems == ["00000", "00001", "00002"]
    [record] = caplog.records
    assert "datasets.d: skipped 1 entries of '" in record.getMessage() and "'Thumbs.db'" in record.getMessage()


def test_sequence_names_stay_inside_the_layout(davis_root: Path, tmp_path: Path):
    (tmp_path / "JPEGImages" / "480p").mkdir(parents=True)
    for name in ("../../../" + davis_root.name + "/JPEGImages/480p/one", str(davis_root / "JPEGImages/480p/one")):
        with pytest.raises(DatasetError, match=r"datasets.d: sequence '.*': the image name .* leads outside"):
            video.read_sequence(tmp_path, name, key="datasets.d")


def test_unreadable_annotation_and_frame_are_named(davis_root: Path, tmp_path: Path, monkeypatch):
    bad = tmp_path / "00000.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DatasetError, match=r"annotation '.*00000.png' is corrupt or unreadable"):
        video.read_annotation(bad)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40 x 56 frames: a "bomb" here
    seq = video.read_sequence(davis_root, "one")
    with pytest.raises(DatasetError, match=r"frame '.*00000.jpg' has 2,240 pixels, more than 200"):
        video.frame_size(seq)
    with pytest.raises(DatasetError, match=r"annotation '.*00000.png' has 2,240 pixels"):
        video.read_annotation(seq.annotations[0])
