"""Video datasets in the DAVIS layout, and palette PNGs (docs/protocols.md#downstream-tasks).

Layout (DAVIS 2017)::

    {root}/ImageSets/2017/{split}.txt            one sequence name per line
    {root}/JPEGImages/{resolution}/<seq>/00000.jpg ...
    {root}/Annotations/{resolution}/<seq>/00000.png ...

Annotations are palette (or greyscale) PNGs whose value is the object id
(0 background, 255 void). The number of objects of a sequence is the largest
id of its first annotation. Frames are the images of the sequence folder
(:func:`vitscope.io.datasets.list_images`: the suffixes Pillow reads, any case;
anything else there is skipped with a warning) in sorted file order; the
annotation of a frame has the frame's stem. A sequence name (from the
ImageSets list or the config) must stay inside the layout's folders. Every
problem is a :class:`DatasetError` naming the file or folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from .datasets import inside, list_images, open_image
from .dumps import atomic_path

log = logging.getLogger(__name__)


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
    frames_dir = inside(root / "JPEGImages" / resolution, name, f"{key}: sequence {name!r}")
    notes_dir = inside(root / "Annotations" / resolution, name, f"{key}: sequence {name!r}")
    if not frames_dir.is_dir():
        raise DatasetError(f"{key}: sequence folder '{frames_dir}' does not exist")
    found = list_images(frames_dir, key)
    if found.skipped:
        log.warning("%s: skipped %d entries of '%s' that are not images Pillow reads: %s", key,
                    len(found.skipped), frames_dir, ", ".join(repr(n) for n in found.skipped[:5]))
    frames = tuple(frames_dir / f for f in found.images)
    if not frames:
        raise DatasetError(f"{key}: sequence folder '{frames_dir}' holds no frames (images Pillow reads)")
    annotations = tuple(notes_dir / f"{p.stem}.png" for p in frames)
    for path in annotations:
        if not path.is_file():
            raise DatasetError(f"{key}: annotation '{path}' of frame '{frames_dir / path.stem}.jpg' does not exist")
    return VideoSequence(name, frames, annotations)


def read_annotation(path: str | Path) -> np.ndarray:
    """(H, W) uint8 object ids of a palette or greyscale PNG."""
    with open_image(path, "annotation") as img:
        if img.mode not in ("P", "L"):
            raise DatasetError(f"annotation '{path}' is a {img.mode} image; expected a palette PNG of object ids")
        return np.asarray(img, dtype=np.uint8).copy()


def read_palette(path: str | Path) -> np.ndarray:
    """(256, 3) uint8 palette of a palette PNG (the DAVIS palette when it has none)."""
    with open_image(path, "annotation") as img:
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
    with open_image(sequence.frames[0], "frame") as img:
        return img.size[1], img.size[0]

