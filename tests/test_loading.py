"""Feeding images to a model: the study's preprocessing and the image dataset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitscope import data, loading
from vitscope.errors import DatasetError


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DatasetError, match=r"image '.*bad.jpg' is corrupt or unreadable"):
        data.load_image(bad)
    ds = loading.ImageDataset([data.Entry(str(bad), 0, "a")], loading.preprocess((32, 32), (0.5,) * 3, (0.5,) * 3))
    with pytest.raises(DatasetError, match="bad.jpg"):
        ds[0]


def test_preprocess_shorter_side_then_center_crop() -> None:
    # A 40 x 80 image with a left half of 0 and right half of 255: resizing the
    # shorter side to 20 gives 20 x 40, the center crop keeps columns 10..29.
    img = np.zeros((40, 80, 3), dtype=np.uint8)
    img[:, 40:] = 255
    out = loading.preprocess((20, 20), (0.0,) * 3, (1.0,) * 3)(Image.fromarray(img))
    assert out.shape == (3, 20, 20) and out.dtype == torch.float32
    assert out[0, 10, 0] < 0.05 and out[0, 10, -1] > 0.95
    assert abs(out[0].mean().item() - 0.5) < 0.05


def test_preprocess_non_square_covers_the_target() -> None:
    img = Image.fromarray(np.full((50, 50, 3), 128, dtype=np.uint8))
    out = loading.preprocess((24, 40), (0.5,) * 3, (0.5,) * 3)(img)
    assert out.shape == (3, 24, 40)
    assert torch.allclose(out, torch.full_like(out, 128 / 255 * 2 - 1), atol=1e-2)


def test_preprocess_matches_its_geometry() -> None:
    """data.resize_crop_geometry (torch-free) says where loading.preprocess puts an image:
    with nearest resizing, crop pixel (y, x) comes from original row
    floor((y + top) * height / rh) and column floor((x + left) * width / rw)."""
    for height, width, size in ((40, 80, (20, 20)), (81, 33, (16, 16)), (50, 70, (24, 40)), (64, 30, (40, 24))):
        (rh, rw), (top, left) = data.resize_crop_geometry(height, width, size)
        rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
        img = np.stack([rows, cols, np.zeros_like(rows)], -1).astype(np.uint8)  # pixel = its own (row, col)
        out = loading.preprocess(size, (0.0,) * 3, (1.0,) * 3, "nearest")(Image.fromarray(img))
        got_rows = np.rint(out[0, :, 0].numpy() * 255)
        got_cols = np.rint(out[1, 0, :].numpy() * 255)
        np.testing.assert_array_equal(got_rows, np.floor((np.arange(size[0]) + top) * height / rh))
        np.testing.assert_array_equal(got_cols, np.floor((np.arange(size[1]) + left) * width / rw))


def test_data_imports_no_torch() -> None:
    """Jobs that only index or read images (index_dataset, retrieval, saliency_iou) start
    without torch: importing vitscope.data must not import it."""
    code = "import sys, vitscope.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
