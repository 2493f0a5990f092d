"""Synthetic datasets for the embedded demo, written in real on-disk layouts.

``imagefolder``: ``{root}/images/<class>/<nnnnn>.png`` with a binary object
mask beside it in ``{root}/masks/<class>/<nnnnn>.png`` (255 = object), and
the same masks as a COCO-format annotation file ``{root}/annotations.json``
(one category per class, id = sorted class index + 1; image ids 1.. in path
order; one RLE instance per image), so ``kind: coco`` with
``root: {root}/images`` reads the demo exactly like COCO val2017. Each
class is a shape with a texture (``circle-stripes``, ``square-dots``, ...);
position, scale, colours and background vary per image, all from one seed.

Optional extras for the downstream tasks (off by default):

- ``val_per_class`` > 0: a held-out split ``{root}/val/<class>/<nnnnn>.png`` of
  the same classes (k-NN: ``images/`` is the memory bank, ``val/`` the queries).
- ``retrieval_per_class`` > 0: a retrieval benchmark in the revisited
  Oxford/Paris layout, ``{root}/revisited/{retrieval_name}/gnd_{name}.pkl`` and
  ``jpg/<stem>.jpg`` (see :func:`write_revisited`).
- ``spair_categories`` > 0: image pairs with keypoints and boxes in the SPair-71k
  layout under ``{root}/spair/`` (see :func:`write_spair`).
- ``scene_images`` > 0: a COCO-format dataset of several objects per image,
  ``{root}/scenes/images/<nnnnn>.png`` and ``{root}/scenes/annotations.json``, the
  objects' colours set by ``scene_colours``, not ``class_colours`` (see :func:`write_scenes`).
- ``davis_sequences`` (names): short videos of moving textured shapes in the
  DAVIS layout under ``{root}/davis/`` (see :mod:`vitscope.io.synthetic_video`).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SHAPES = ("circle", "square", "triangle", "cross", "ring", "diamond")
TEXTURES = ("solid", "stripes", "checker", "dots")


@dataclass(frozen=True)
class SyntheticSpec:
    """Size of a synthetic ImageFolder dataset."""

    classes: int = 6
    per_class: int = 12
    image_size: int = 128
    seed: int = 0
    val_per_class: int = 0
    retrieval_per_class: int = 0
    retrieval_queries_per_class: int = 2
    retrieval_name: str = "rshapes"
    spair_categories: int = 0
    spair_images_per_category: int = 4
    spair_scale: tuple[float, float] = (0.22, 0.36)  # object half-size range, x the image's short side
    spair_aspect: float = 0.75  # short side / long side of the SPair images (landscape and portrait in turn)
    spair_photometric: float = 0.0  # per-image brightness, contrast, saturation factors of SPair images in 1 -/+ this
    davis_sequences: tuple[str, ...] = ()
    davis_frames: int = 8
    davis_size: tuple[int, int] = (96, 128)
    davis_objects: int = 3
    class_colours: bool = False  # object colours around a hue fixed per class (a cue small models learn fast)
    scene_images: int = 0  # images of several objects in a COCO-format dataset under {root}/scenes/
    scene_objects: tuple[int, int] = (2, 3)  # fewest and most objects per scene image (distinct classes)
    scene_colours: str = "random"  # the scene objects' two colours: random RGB, or random grey levels ("grey")

    def hue(self, name: str) -> float | None:
        """The object hue of class ``name`` (its index / classes) with ``class_colours``, else None."""
        return self.class_names().index(name) / self.classes if self.class_colours else None

    def class_names(self) -> list[str]:
        if not 1 <= self.classes <= len(SHAPES) * len(TEXTURES):
            raise ValueError(f"classes = {self.classes} must be in 1..{len(SHAPES) * len(TEXTURES)}")
        return [
            f"{SHAPES[c % len(SHAPES)]}-{TEXTURES[(c // len(SHAPES) + c) % len(TEXTURES)]}" for c in range(self.classes)
        ]


def shape_mask(shape: str, size: int, cy: float, cx: float, radius: float) -> np.ndarray:
    """(size, size) boolean mask of ``shape`` centred at (cy, cx) with half-size ``radius``."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    dy, dx = (y - cy) / radius, (x - cx) / radius
    if shape == "circle":
        return dx**2 + dy**2 <= 1
    if shape == "square":
        return (np.abs(dx) <= 0.85) & (np.abs(dy) <= 0.85)
    if shape == "triangle":
        return (dy <= 0.8) & (dy >= -1 + 2 * np.abs(dx) * 0.9)
    if shape == "cross":
        return ((np.abs(dx) <= 0.3) & (np.abs(dy) <= 1)) | ((np.abs(dy) <= 0.3) & (np.abs(dx) <= 1))
    if shape == "ring":
        r2 = dx**2 + dy**2
        return (r2 <= 1) & (r2 >= 0.45)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1
    raise ValueError(f"unknown shape {shape!r}")


def texture(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) pattern in [0, 1]."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    period = rng.uniform(5, 9)
    angle = rng.uniform(0, np.pi)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = -x * np.sin(angle) + y * np.cos(angle)
    if kind == "solid":
        return np.ones((size, size))
    if kind == "stripes":
        return (np.sin(2 * np.pi * u / period) > 0).astype(np.float64)
    if kind == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float64)
    if kind == "dots":
        return (((u % period) - period / 2) ** 2 + ((v % period) - period / 2) ** 2 <= (period / 3.2) ** 2).astype(
            np.float64
        )
    raise ValueError(f"unknown texture {kind!r}")


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random colour field (size, size, 3) in [0, 1]."""
    coarse = rng.uniform(0.1, 0.9, size=(4, 4, 3))
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC)
    noise = rng.normal(0, 0.03, size=(size, size, 3))
    return np.clip(np.asarray(img, dtype=np.float64) / 255 + noise, 0, 1)


def class_colours(
    hue: float, rng: np.random.Generator, saturation: tuple[float, float] = (0.6, 1.0),
    value: tuple[float, float] = (0.7, 1.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Two RGB colours in [0, 1] of one class: one within 0.04 of ``hue`` (a turn = 1), its
    saturation and value drawn from the given ranges, and a darker one of the same hue (the
    texture's two colours)."""
    import colorsys

    h = (hue + rng.uniform(-0.04, 0.04)) % 1.0
    s, v = rng.uniform(*saturation), rng.uniform(*value)
    return np.array(colorsys.hsv_to_rgb(h, s, v)), np.array(colorsys.hsv_to_rgb(h, s, v * 0.45))


def render(
    name: str, size: int, rng: np.random.Generator, scale: tuple[float, float] = (0.18, 0.34),
    hue: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One image of class ``name``: ((size, size, 3) uint8 image, (size, size) bool mask).

    The object's half-size is drawn from ``scale`` x size; its two colours are random, or
    around ``hue`` when given (:func:`class_colours`)."""
    shape, kind = name.split("-")
    radius = rng.uniform(*scale) * size
    cy, cx = rng.uniform(radius, size - radius, size=2)
    mask = shape_mask(shape, size, cy, cx, radius)
    pattern = texture(kind, size, rng)
    if hue is None:
        colour_a, colour_b = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
    else:
        colour_a, colour_b = class_colours(hue, rng)
    fg = pattern[..., None] * colour_a + (1 - pattern[..., None]) * colour_b
    img = np.where(mask[..., None], fg, _background(size, rng))
    return (img * 255).round().astype(np.uint8), mask


def coco_annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int) -> dict:
    """One COCO instance annotation of a boolean (h, w) mask, as compressed RLE."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "area": float(mask_utils.area(rle)),
        "bbox": [x, y, w, h],
        "iscrowd": 0,
    }


def write_imagefolder(root: str | Path, spec: SyntheticSpec) -> list[Path]:
    """Write the dataset under ``root`` (``images/``, ``masks/``, ``annotations.json``); return the image paths."""
    root = Path(root)
    rng = np.random.default_rng(spec.seed)
    paths = []
    names = spec.class_names()
    coco: dict = {
        "info": {"description": f"vitscope synthetic demo dataset ({spec})"},
        "images": [],
        "annotations": [],
        "categories": [{"id": c + 1, "name": n, "supercategory": "shape"} for c, n in enumerate(sorted(names))],
    }
    category = {n: c + 1 for c, n in enumerate(sorted(names))}
    for name in names:
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        (root / "masks" / name).mkdir(parents=True, exist_ok=True)
        for i in range(spec.per_class):
            img, mask = render(name, spec.image_size, rng, hue=spec.hue(name))
            path = root / "images" / name / f"{i:05d}.png"
            Image.fromarray(img).save(path)
            Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / name / f"{i:05d}.png")
            paths.append(path)
            image_id = len(paths)
            coco["images"].append(
                {"id": image_id, "file_name": f"{name}/{i:05d}.png", "height": img.shape[0], "width": img.shape[1]}
            )
            coco["annotations"].append(coco_annotation(mask, image_id, image_id, category[name]))
    (root / "annotations.json").write_text(json.dumps(coco, indent=1))
    if spec.val_per_class:
        val_rng = np.random.default_rng([spec.seed, 1])
        for name in names:
            (root / "val" / name).mkdir(parents=True, exist_ok=True)
            for i in range(spec.val_per_class):
                img, _ = render(name, spec.image_size, val_rng, hue=spec.hue(name))
                Image.fromarray(img).save(root / "val" / name / f"{i:05d}.png")
    if spec.retrieval_per_class:
        write_revisited(root / "revisited", spec)
    if spec.spair_categories:
        write_spair(root / "spair", spec)
    if spec.scene_images:
        write_scenes(root / "scenes", spec)
    if spec.davis_sequences:
        from .synthetic_video import write_davis  # it imports this module

        write_davis(root / "davis", spec)
    return paths


SCENE_SCALE = (0.13, 0.22)  # half-size of a scene's objects, x image size


SCENE_COLOURS = ("random", "grey", "class")
SCENE_SATURATION = SCENE_VALUE = (0.3, 1.0)  # ranges of the "class" scene colours (training images: 0.6-1, 0.7-1)


def scene_colours(kind: str, rng: np.random.Generator, hue: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The two RGB colours in [0, 1] of a scene object of class hue ``hue``: uniform random
    RGB (``random``) or two uniform random grey levels (``grey``), both independent of the
    class; or (``class``) :func:`class_colours` around ``hue`` with saturation and value
    from SCENE_SATURATION and SCENE_VALUE, so brightness and saturation vary more than the
    hue that carries the class."""
    if kind == "random":
        return rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
    if kind == "grey":
        a, b = rng.uniform(0, 1, size=2)
        return np.full(3, a), np.full(3, b)
    if kind == "class":
        return class_colours(hue, rng, SCENE_SATURATION, SCENE_VALUE)
    raise ValueError(f"scene_colours = {kind!r}; expected one of {', '.join(SCENE_COLOURS)}")


def write_scenes(root: str | Path, spec: SyntheticSpec) -> dict:
    """Images of several objects in COCO format under ``root``; returns the annotation dict.

    ``scene_images`` images ``images/<nnnnn>.png`` (image ids 1.. in that order), each with
    between ``scene_objects[0]`` and ``scene_objects[1]`` objects of distinct classes (the
    categories of :func:`write_imagefolder`: id = sorted class index + 1). Every object has its
    class's shape and texture, two colours of :func:`scene_colours` (``scene_colours``), a
    half-size of SCENE_SCALE x size and a random position;
    objects drawn later cover earlier ones, and each annotation is the object's visible mask
    (one compressed-RLE instance per object, ``bbox`` [x, y, w, h]; an object left with no
    visible pixel is not annotated). Written to ``annotations.json``.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([spec.seed, 4])
    names, size = spec.class_names(), spec.image_size
    lo, hi = spec.scene_objects
    if not 1 <= lo <= hi <= len(names):
        raise ValueError(f"scene_objects = {list(spec.scene_objects)} must be 1 <= fewest <= most <= classes")
    category = {n: c + 1 for c, n in enumerate(sorted(names))}
    coco: dict = {
        "info": {"description": f"vitscope synthetic scenes ({spec})"},
        "images": [],
        "annotations": [],
        "categories": [{"id": c + 1, "name": n, "supercategory": "shape"} for c, n in enumerate(sorted(names))],
    }
    for i in range(spec.scene_images):
        img = _background(size, rng)
        owner = np.full((size, size), -1)
        chosen = [names[k] for k in rng.choice(len(names), size=int(rng.integers(lo, hi + 1)), replace=False)]
        for o, name in enumerate(chosen):
            shape, kind = name.split("-")
            radius = rng.uniform(*SCENE_SCALE) * size
            cy, cx = rng.uniform(radius, size - radius, size=2)
            mask = shape_mask(shape, size, cy, cx, radius)
            pattern = texture(kind, size, rng)
            colour_a, colour_b = scene_colours(spec.scene_colours, rng, names.index(name) / len(names))
            fg = pattern[..., None] * colour_a + (1 - pattern[..., None]) * colour_b
            img = np.where(mask[..., None], fg, img)
            owner[mask] = o
        image_id = i + 1
        Image.fromarray((img * 255).round().astype(np.uint8)).save(root / "images" / f"{i:05d}.png")
        coco["images"].append({"id": image_id, "file_name": f"{i:05d}.png", "height": size, "width": size})
        for o, name in enumerate(chosen):
            if (owner == o).any():
                ann_id = len(coco["annotations"]) + 1
                coco["annotations"].append(coco_annotation(owner == o, ann_id, image_id, category[name]))
    (root / "annotations.json").write_text(json.dumps(coco, indent=1))
    return coco


EASY_SCALE = 0.27  # database objects at least this large (x image size) are "easy" positives, smaller ones "hard"
JUNK_EVERY = 4  # every 4th database image of the query's class is "junk"


def write_revisited(root: str | Path, spec: SyntheticSpec) -> dict:
    """A retrieval benchmark in the revisited Oxford/Paris layout; returns the gnd dict.

    Database: ``retrieval_per_class`` images per class (stems ``db_<class>_<nnn>``);
    queries: ``retrieval_queries_per_class`` per class (``q_<class>_<n>``) with the
    object's bounding box as ``bbx`` [x1, y1, x2, y2]. For a query, the database images
    of its class are positives, "easy" when their object's half-size is at least
    EASY_SCALE x size and "hard" otherwise; every JUNK_EVERY-th of them is "junk" instead.
    Written to ``{root}/{retrieval_name}/gnd_{retrieval_name}.pkl`` and ``.../jpg/``.
    """
    name = spec.retrieval_name
    folder = Path(root) / name
    (folder / "jpg").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([spec.seed, 2])
    size = spec.image_size
    imlist, classes, large = [], [], []
    for c, cls in enumerate(spec.class_names()):
        for i in range(spec.retrieval_per_class):
            big = i % 2 == 0
            img, _ = render(cls, size, rng, scale=(EASY_SCALE, 0.36) if big else (0.14, EASY_SCALE - 0.01),
                            hue=spec.hue(cls))
            stem = f"db_{cls}_{i:03d}"
            Image.fromarray(img).save(folder / "jpg" / f"{stem}.jpg", quality=95)
            imlist.append(stem)
            classes.append(c)
            large.append(big)
    qimlist, gnd = [], []
    for c, cls in enumerate(spec.class_names()):
        members = [j for j, k in enumerate(classes) if k == c]
        junk = members[JUNK_EVERY - 1 :: JUNK_EVERY]
        easy = [j for j in members if large[j] and j not in junk]
        hard = [j for j in members if not large[j] and j not in junk]
        for i in range(spec.retrieval_queries_per_class):
            img, mask = render(cls, size, rng, scale=(0.16, 0.26), hue=spec.hue(cls))
            ys, xs = np.nonzero(mask)
            bbx = [float(max(xs.min() - 2, 0)), float(max(ys.min() - 2, 0)),
                   float(min(xs.max() + 3, size)), float(min(ys.max() + 3, size))]
            stem = f"q_{cls}_{i}"
            Image.fromarray(img).save(folder / "jpg" / f"{stem}.jpg", quality=95)
            qimlist.append(stem)
            gnd.append({"bbx": bbx, "easy": easy, "hard": hard, "junk": junk})
    content = {"imlist": imlist, "qimlist": qimlist, "gnd": gnd}
    with open(folder / f"gnd_{name}.pkl", "wb") as handle:
        pickle.dump(content, handle)
    return content


# keypoints of a synthetic object: offsets (dx, dy) from its centre in units of its half-size;
# the last one sits on a marker that makes the object asymmetric (so mirroring shows)
SPAIR_KEYPOINTS = ((0.0, 0.0), (0.0, -0.7), (-0.7, 0.0), (0.7, 0.0), (0.0, 0.7), (0.45, -0.45))
SPAIR_MIRROR_EVERY = 4  # every 4th image of a category is mirrored (flipped left-right)


LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 grey


def photometric_change(img: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) image in [0, 1] with brightness, contrast and saturation changed, as a photo of
    the same object under other light: factors b, c, s drawn (in that order) from
    U(1 - strength, 1 + strength); the image is scaled by b, then its distance to its mean grey
    level by c, then each pixel's distance to its grey level by s, clipped to [0, 1] after each."""
    luma = np.asarray(LUMA)
    brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
    img = np.clip(img * brightness, 0, 1)
    mean = (img @ luma).mean()
    img = np.clip((img - mean) * contrast + mean, 0, 1)
    grey = (img @ luma)[..., None]
    return np.clip((img - grey) * saturation + grey, 0, 1)


def _spair_image(
    name: str, width: int, height: int, occluded: int, mirrored: bool, rng: np.random.Generator,
    scale: tuple[float, float] = (0.22, 0.36), hue: float | None = None, photometric: float = 0.0,
    light: np.random.Generator | None = None,
) -> tuple[np.ndarray, list[list[float] | None], list[float]]:
    """One SPair-style image: ((height, width, 3) uint8, keypoints [x, y] or None, box [x1, y1, x2, y2]).

    Coordinates are pixel indices (pixel centres at integers); keypoint ``occluded`` is covered
    by a grey patch and None; a mirrored image is flipped left-right with its annotations.
    With ``photometric`` s > 0 the finished image (object, marker, occluder, background) gets
    :func:`photometric_change` of strength s, its factors drawn from ``light`` (a generator of
    its own, so that the geometry drawn from ``rng`` is the same at any s)."""
    shape, kind = name.split("-")
    side = max(width, height)
    radius = rng.uniform(*scale) * min(width, height)
    cx, cy = rng.uniform(radius, width - radius), rng.uniform(radius, height - radius)
    mask = shape_mask(shape, side, cy, cx, radius)[:height, :width]
    pattern = texture(kind, side, rng)[:height, :width]
    if hue is None:
        colour_a, colour_b = rng.uniform(0, 1, size=3), rng.uniform(0, 1, size=3)
    else:
        colour_a, colour_b = class_colours(hue, rng)
    fg = pattern[..., None] * colour_a + (1 - pattern[..., None]) * colour_b
    img = np.where(mask[..., None], fg, _background(side, rng)[:height, :width])
    y, x = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    mx, my = cx + SPAIR_KEYPOINTS[-1][0] * radius, cy + SPAIR_KEYPOINTS[-1][1] * radius
    img[(x - mx) ** 2 + (y - my) ** 2 <= (0.16 * radius) ** 2] = (1.0, 0.1, 0.1)
    points: list[list[float] | None] = [[cx + dx * radius - 0.5, cy + dy * radius - 0.5] for dx, dy in SPAIR_KEYPOINTS]
    ox, oy = points[occluded]
    half = 0.12 * radius
    img[(np.abs(x - 0.5 - ox) <= half) & (np.abs(y - 0.5 - oy) <= half)] = 0.5
    points[occluded] = None
    if photometric > 0:
        if light is None:
            raise ValueError("_spair_image: photometric > 0 needs its generator 'light'")
        img = photometric_change(img, photometric, light)
    ys, xs = np.nonzero(mask)
    box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
    if mirrored:
        img = img[:, ::-1]
        points = [None if p is None else [width - 1 - p[0], p[1]] for p in points]
        box = [width - 1 - box[2], box[1], width - 1 - box[0], box[3]]
    rounded = [None if p is None else [round(p[0], 2), round(p[1], 2)] for p in points]
    return (img * 255).round().astype(np.uint8), rounded, box


def write_spair(root: str | Path, spec: SyntheticSpec) -> list[Path]:
    """Image pairs with keypoints and boxes in the SPair-71k layout; returns the pair files.

    Categories: the first ``spair_categories`` classes (``-`` written ``_``); per category
    ``spair_images_per_category`` images ``JPEGImages/<category>/<category>_<nn>.jpg``,
    landscape and portrait in turn (short side ``spair_aspect`` x ``image_size``), the object
    at a random position, its half-size ``spair_scale`` x the short side, its colours random
    or (``class_colours``) around its class hue, its brightness, contrast and saturation changed
    per image with ``spair_photometric`` > 0 (:func:`photometric_change`, factors from a generator
    of their own: positions, sizes, colours and keypoints are those of ``spair_photometric`` 0), every
    SPAIR_MIRROR_EVERY-th mirrored, one keypoint per image occluded (``null`` in
    ``ImageAnnotation/<category>/<stem>.json``). Pairs: every ordered pair of distinct
    images, ``PairAnnotation/test/<id>-<src>-<trg>:<category>.json`` with the keypoints
    visible in both (``kps_ids``), both boxes, image sizes [w, h, 3] and ``mirror`` (1 when
    exactly one image is mirrored), as the official files.
    """
    root = Path(root)
    rng = np.random.default_rng([spec.seed, 3])
    light = np.random.default_rng([spec.seed, 3, 1])  # spair_photometric's factors only
    size = spec.image_size
    files, pair_id = [], 0
    for c, name in enumerate(spec.class_names()[: spec.spair_categories]):
        category = name.replace("-", "_")
        for folder in ("JPEGImages", "ImageAnnotation"):
            (root / folder / category).mkdir(parents=True, exist_ok=True)
        images = []
        for i in range(spec.spair_images_per_category):
            short = round(spec.spair_aspect * size)
            width, height = (size, short) if i % 2 == 0 else (short, size)
            mirrored = i % SPAIR_MIRROR_EVERY == SPAIR_MIRROR_EVERY - 1
            img, points, box = _spair_image(
                name, width, height, (c + i) % len(SPAIR_KEYPOINTS), mirrored, rng, spec.spair_scale,
                spec.hue(name), spec.spair_photometric, light,
            )
            stem = f"{category}_{i:02d}"
            Image.fromarray(np.ascontiguousarray(img)).save(root / "JPEGImages" / category / f"{stem}.jpg", quality=95)
            annotation = {"filename": f"{stem}.jpg", "category": category, "image_width": width,
                          "image_height": height, "bndbox": box, "kps": {str(k): p for k, p in enumerate(points)}}
            (root / "ImageAnnotation" / category / f"{stem}.json").write_text(json.dumps(annotation))
            images.append((stem, width, height, points, box, mirrored))
        (root / "PairAnnotation" / "test").mkdir(parents=True, exist_ok=True)
        for s, src in enumerate(images):
            for t, trg in enumerate(images):
                if s == t:
                    continue
                pair_id += 1
                ids = [k for k in range(len(SPAIR_KEYPOINTS)) if src[3][k] is not None and trg[3][k] is not None]
                pair_name = f"{pair_id:06d}-{src[0]}-{trg[0]}:{category}"
                content = {
                    "filename": pair_name, "src_imname": f"{src[0]}.jpg", "trg_imname": f"{trg[0]}.jpg",
                    "src_imsize": [src[1], src[2], 3], "trg_imsize": [trg[1], trg[2], 3],
                    "src_bndbox": src[4], "trg_bndbox": trg[4], "category": category,
                    "src_kps": [src[3][k] for k in ids], "trg_kps": [trg[3][k] for k in ids],
                    "kps_ids": [str(k) for k in ids], "mirror": int(src[5] != trg[5]),
                }
                path = root / "PairAnnotation" / "test" / f"{pair_name}.json"
                path.write_text(json.dumps(content))
                files.append(path)
    return files
