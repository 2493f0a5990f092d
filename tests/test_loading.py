"""Feeding images to a model: the study's preprocessing and the image dataset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.errors import DatasetError
from vitscope.io import datasets as data
from vitscope.io import preprocess as loading


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
    without torch: importing vitscope.io.datasets must not import it."""
    code = "import sys, vitscope.io.datasets; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# --------------------------------------------------------------------------- pixel formats (docs/hostile-inputs.md)


def _png(path: Path, width: int, height: int, depth: int, colour: int, rows: bytes, extra: bytes = b"") -> Path:
    """A PNG written by hand (Pillow cannot write 16-bit RGB): IHDR, optional chunks, one IDAT."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + extra + chunk(b"IDAT", zlib.compress(rows))
                     + chunk(b"IEND", b""))
    return path


SIXTEEN = np.array([[0, 255, 256, 32896, 40000, 65535]], dtype=np.uint16)
SIXTEEN_TO_8 = [0, 0, 1, 128, 156, 255]  # v >> 8: 40000 = 156 * 256 + 64; 32896 = 128 * 257


def rgb(path: Path) -> np.ndarray:
    image = data.load_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_16_bit_greyscale_is_scaled_not_clipped(tmp_path: Path) -> None:
    Image.fromarray(SIXTEEN).save(tmp_path / "g.png")  # Pillow opens it as I;16
    with Image.open(tmp_path / "g.png") as img:
        assert img.mode == "I;16"
    out = rgb(tmp_path / "g.png")
    np.testing.assert_array_equal(out, np.repeat(np.array(SIXTEEN_TO_8, np.uint8)[None, :, None], 3, -1))
    Image.fromarray(SIXTEEN.astype(">u2")).save(tmp_path / "g.tif")  # big-endian: I;16B
    with Image.open(tmp_path / "g.tif") as img:
        assert img.mode == "I;16B"
    np.testing.assert_array_equal(rgb(tmp_path / "g.tif")[0, :, 0], SIXTEEN_TO_8)
    # the same values as 16-bit RGB, which Pillow itself reads by their high byte, load the same
    rows = b"\x00" + np.repeat(SIXTEEN[0, :, None], 3, -1).astype(">u2").tobytes()
    np.testing.assert_array_equal(rgb(_png(tmp_path / "rgb16.png", 6, 1, 16, 2, rows)), out)


def test_16_bit_pgm_and_32_bit_integers_use_their_type_range(tmp_path: Path) -> None:
    (tmp_path / "g.pgm").write_bytes(b"P5 6 1 65535\n" + SIXTEEN.astype(">u2").tobytes())
    with Image.open(tmp_path / "g.pgm") as img:
        assert img.mode == "I"  # Pillow holds 16-bit PGM samples in int32
    np.testing.assert_array_equal(rgb(tmp_path / "g.pgm")[0, :, 0], SIXTEEN_TO_8)
    # a 12-bit PGM: Pillow scales maxval 4095 to 65535 (4095 -> 65535 -> 255; 2048 -> 32776 -> 128)
    (tmp_path / "g12.pgm").write_bytes(b"P5 3 1 4095\n" + np.array([0, 2048, 4095], ">u2").tobytes())
    np.testing.assert_array_equal(rgb(tmp_path / "g12.pgm")[0, :, 0], [0, 128, 255])
    # signed 16-bit (a TIFF with SampleFormat 2; Pillow holds it in mode I): (v + 32768) >> 8
    signed = np.array([[-32768, -1, 0, 32767]], dtype=np.int16)
    Image.fromarray(signed.view(np.uint16)).save(tmp_path / "s16.tif", tiffinfo={339: 2})
    with Image.open(tmp_path / "s16.tif") as img:
        assert img.mode == "I" and np.asarray(img).min() == -32768
    np.testing.assert_array_equal(rgb(tmp_path / "s16.tif")[0, :, 0], [0, 127, 128, 255])
    # signed 32-bit: (v + 2**31) >> 24
    values = np.array([[-(2**31), -1, 0, 70000, 2**30, 2**31 - 1]], dtype=np.int32)
    Image.fromarray(values).save(tmp_path / "i.tif")
    with Image.open(tmp_path / "i.tif") as img:
        assert img.mode == "I"
    np.testing.assert_array_equal(rgb(tmp_path / "i.tif")[0, :, 0], [0, 127, 128, 128, 192, 255])


def test_float_images_are_taken_in_0_to_1(tmp_path: Path) -> None:
    values = np.array([[-0.5, 0.0, 0.2, 0.25, 1.0, 2.0, np.nan, 0.002]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    with Image.open(tmp_path / "f.tif") as img:
        assert img.mode == "F"
    # round(clip(v, 0, 1) * 255), NaN 0: 0.2 -> 51, 0.25 -> 63.75 -> 64, 0.002 -> 0.51 -> 1
    np.testing.assert_array_equal(rgb(tmp_path / "f.tif")[0, :, 1], [0, 0, 51, 64, 255, 255, 0, 1])


def test_alpha_palette_cmyk_and_bilevel_become_rgb_as_torchvision_reads_them(tmp_path: Path) -> None:
    """Alpha is dropped (not composited), as torchvision's ImageFolder loader (convert("RGB")) does."""
    Image.fromarray(np.array([[[10, 20, 30, 0], [200, 100, 50, 128]]], np.uint8), "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(rgb(tmp_path / "a.png"), [[[10, 20, 30], [200, 100, 50]]])
    Image.fromarray(np.array([[[7, 0], [250, 255]]], np.uint8), "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(rgb(tmp_path / "la.png"), [[[7, 7, 7], [250, 250, 250]]])
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.save(tmp_path / "p.png", transparency=0)  # index 0 transparent
    np.testing.assert_array_equal(rgb(tmp_path / "p.png"), [[[10, 20, 30], [200, 100, 50]]])
    pa = palette.convert("PA")  # no common file format holds PA: the conversion itself
    np.testing.assert_array_equal(np.asarray(data.to_rgb(pa)), [[[10, 20, 30], [200, 100, 50]]])
    # CMYK: (255 - C)(255 - K) / 255 rounded: 245 * 215 / 255 = 206.6, 235 * 215 / 255 = 198.1, 225 * 215 / 255 = 189.7
    Image.new("CMYK", (1, 1), (10, 20, 30, 40)).save(tmp_path / "c.tif")
    np.testing.assert_array_equal(rgb(tmp_path / "c.tif"), [[[207, 198, 190]]])
    Image.fromarray(np.array([[0, 1, 1]], bool)).save(tmp_path / "b.png")
    with Image.open(tmp_path / "b.png") as img:
        assert img.mode == "1"
    np.testing.assert_array_equal(rgb(tmp_path / "b.png")[0, :, 2], [0, 255, 255])


def test_multi_frame_files_give_their_first_frame(tmp_path: Path) -> None:
    red, blue = Image.new("RGB", (4, 3), (255, 0, 0)), Image.new("RGB", (4, 3), (0, 0, 255))
    red.save(tmp_path / "a.gif", save_all=True, append_images=[blue])
    red.save(tmp_path / "a.tif", save_all=True, append_images=[blue])
    for name in ("a.gif", "a.tif"):
        with Image.open(tmp_path / name) as img:
            assert img.n_frames == 2
        np.testing.assert_array_equal(rgb(tmp_path / name), np.asarray(red))


def _bomb(path: Path, width: int, height: int) -> Path:
    """A PNG header claiming width x height (Pillow checks the size before decoding)."""
    return _png(path, width, height, 8, 2, b"")


def test_decompression_bomb_is_named_with_its_size_and_the_limit(tmp_path: Path) -> None:
    bomb = _bomb(tmp_path / "huge.png", 20000, 20000)  # 400 Mpx in 70 bytes
    with pytest.raises(DatasetError, match=r"image '.*huge.png' has 400,000,000 pixels, more than 178,956,970 "
                                           r"\(twice PIL.Image.MAX_IMAGE_PIXELS = 89,478,485\)"):
        data.load_image(bomb)
    ds = loading.ImageDataset([data.Entry(str(bomb), 0, "a")], loading.preprocess((32, 32), (0.5,) * 3, (0.5,) * 3))
    with pytest.raises(DatasetError, match="huge.png"):
        ds[0]


def test_large_image_below_the_error_is_read_with_a_warning_naming_it(tmp_path: Path, monkeypatch, caplog) -> None:
    Image.new("RGB", (30, 20), (1, 2, 3)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 600 pixels: above the limit, below twice it
    with caplog.at_level("WARNING", logger="vitscope"), pytest.warns(Image.DecompressionBombWarning):
        assert data.load_image(tmp_path / "big.png").size == (30, 20)
    [record] = caplog.records
    assert "image '" in record.getMessage() and "big.png' has 30 x 20 = 600 pixels" in record.getMessage()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # the limit is Pillow's, read when called
    with pytest.raises(DatasetError, match=r"big.png' has 600 pixels, more than 400 \(twice"):
        data.load_image(tmp_path / "big.png")
