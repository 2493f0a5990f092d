"""Video datasets in the DAVIS layout, and palette PNGs (protocols.md, section 5).

Layout (DAVIS 2017)::

    {root}/ImageSets/2017/{split}.txt            one sequence name per line
    {root}/JPEGImages/{resolution}/<seq>/00000.jpg ...
    {root}/Annotations/{resolution}/<seq>/00000.png ...

Annotations are palette (or greyscale) PNGs whose value is the object id
(0 background, 255 void). The number of objects of a sequence is the largest
id of its first annotation. Frames are taken in sorted file order; the
annotation of a frame has the frame's stem. Every problem is a
:class:`DatasetError` naming the file or folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .dumps import atomic_path
from .errors import DatasetError


@dataclass(frozen=True)
class VideoSequence:
    """One sequence: its frames (sorted) and their annotation files (same stems)."""

    name: str
    frames: tuple[Path, ...]
    annotations: tuple[Path, ...]

    @property
    def stems(self) -> list[str]:
        return [p.stem for p in self.frames]


def image_set(root: str | Path, split: str = "val", year: str = "2017", key: str = "datasets.?") -> list[str]:
    """Sequence names listed in ``{root}/ImageSets/{year}/{split}.txt`` (blank lines skipped)."""
    path = Path(root) / "ImageSets" / year / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"{key}: '{path}' does not exist (expected the DAVIS layout under {key}.root = '{root}')")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{key}: '{path}' lists no sequences")
    return names


def read_sequence(root: str | Path, name: str, resolution: str = "480p", key: str = "datasets.?") -> VideoSequence:
    """Frames ``JPEGImages/{resolution}/{name}/*.jpg`` and their annotations ``Annotations/.../<stem>.png``.

    Every frame needs its annotation (DAVIS train/val annotate all frames); the scorer
    reads them all and the propagation the first one.
    """
    root = Path(root)
    frames_dir = root / "JPEGImages" / resolution / name
    notes_dir = root / "Annotations" / resolution / name
    if not frames_dir.is_dir():
        raise DatasetError(f"{key}: sequence folder '{frames_dir}' does not exist")
    frames = tuple(sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg")))
    if not frames:
        raise DatasetError(f"{key}: sequence folder '{frames_dir}' holds no .jpg frames")
    annotations = tuple(notes_dir / f"{p.stem}.png" for p in frames)
    for path in annotations:
        if not path.is_file():
            raise DatasetError(f"{key}: annotation '{path}' of frame '{frames_dir / path.stem}.jpg' does not exist")
    return VideoSequence(name, frames, annotations)


def read_annotation(path: str | Path) -> np.ndarray:
    """(H, W) uint8 object ids of a palette or greyscale PNG."""
    try:
        with Image.open(path) as img:
            if img.mode not in ("P", "L"):
                raise DatasetError(f"annotation '{path}' is a {img.mode} image; expected a palette PNG of object ids")
            return np.asarray(img, dtype=np.uint8).copy()
    except FileNotFoundError as err:
        raise DatasetError(f"annotation '{path}' does not exist") from err
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"annotation '{path}' is corrupt or unreadable: {err}") from err


def read_palette(path: str | Path) -> np.ndarray:
    """(256, 3) uint8 palette of a palette PNG (the DAVIS palette when it has none)."""
    with Image.open(path) as img:
        pal = img.getpalette() if img.mode == "P" else None
    if not pal:
        return davis_palette()
    colours = np.zeros(768, dtype=np.uint8)
    colours[: len(pal)] = pal[:768]
    return colours.reshape(256, 3)


def davis_palette() -> np.ndarray:
    """(256, 3) uint8: the PASCAL VOC colour map DAVIS annotations use (0 black, 1 dark red, ...)."""
    out = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, colour = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                colour[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        out[index] = colour
    return out


def write_palette_png(ids: np.ndarray, path: str | Path, palette: np.ndarray | None = None) -> None:
    """Write (H, W) uint8 object ids as a palette PNG (DAVIS results format), atomically."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"write_palette_png: needs an (H, W) array, got {ids.shape}")
    img = Image.fromarray(ids.astype(np.uint8))  # mode L; putpalette makes it P
    img.putpalette((davis_palette() if palette is None else np.asarray(palette, np.uint8)).reshape(-1).tolist())
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def frame_size(sequence: VideoSequence) -> tuple[int, int]:
    """(H, W) of the sequence's first frame."""
    with Image.open(sequence.frames[0]) as img:
        return img.size[1], img.size[0]

