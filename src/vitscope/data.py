"""Datasets: index readers, image loading and the preprocessing geometry (no torch).

An *index* is the ordered list of images one dump covers: a CSV with the
columns ``path`` (as opened), ``label`` (integer, -1 if unlabelled) and
``class`` (name, empty if unlabelled), and, only when some image is read
cropped (revisited retrieval queries), a fourth column ``box``: ``x1 y1 x2 y2``
in pixels of the original image, empty for uncropped images. Index order is
dump order.

Feeding images to a model (the study's preprocessing, the torch dataset) is
:mod:`vitscope.loading`; this module imports no torch, so the jobs that only
index or read images start fast.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from . import safe_pickle
from .errors import DatasetError

if TYPE_CHECKING:
    from pycocotools.coco import COCO

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG", ".JPG", ".PNG")


@dataclass(frozen=True)
class Entry:
    path: str
    label: int
    cls: str
    box: tuple[float, float, float, float] | None = None  # crop (x1, y1, x2, y2) applied before preprocessing


def index_imagefolder(
    root: str | Path,
    classes: Sequence[str] | None = None,
    per_class: int | None = None,
    key: str = "datasets.?",
) -> list[Entry]:
    """Images of an ImageFolder layout ``root/<class>/<image>``.

    ``classes`` selects and orders nothing: labels are the index of each class
    in the *sorted* class list (ImageNet convention: sorted WNIDs). Within a
    class, files are taken in sorted name order and the first ``per_class``
    kept (the study's ImageNet-50 rule: first 100 per class).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{key}.root = '{root}' does not exist or is not a directory")
    if classes is None:
        names = sorted(p.name for p in root.iterdir() if p.is_dir())
        if not names:
            raise DatasetError(f"{key}.root = '{root}' has no class folders (expected '{root}/<class>/<image>')")
    else:
        names = sorted(set(classes))
        if len(names) != len(classes):
            raise DatasetError(f"{key}.classes lists a class twice")
        for name in names:
            if not (root / name).is_dir():
                raise DatasetError(f"{key}: class folder '{root / name}' does not exist")
    entries: list[Entry] = []
    for label, name in enumerate(names):
        files = sorted(p.name for p in (root / name).iterdir() if p.suffix in IMAGE_EXTENSIONS)
        if not files:
            raise DatasetError(
                f"{key}: class folder '{root / name}' holds no images ({', '.join(IMAGE_EXTENSIONS[:5])})"
            )
        if per_class is not None:
            if len(files) < per_class:
                raise DatasetError(
                    f"{key}.per_class = {per_class} but '{root / name}' holds only {len(files)} images"
                )
            files = files[:per_class]
        entries.extend(Entry(str(root / name / f), label, name) for f in files)
    return entries


def index_imagelist(list_file: str | Path, root: str | Path | None = None, key: str = "datasets.?") -> list[Entry]:
    """Images named one per line in ``list_file`` (relative to ``root``), unlabelled."""
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DatasetError(f"{key}.list = '{list_file}' does not exist")
    base = Path(root) if root else list_file.parent
    entries = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        path = base / name
        if not path.is_file():
            raise DatasetError(f"{key}.list = '{list_file}' line {lineno}: image '{path}' does not exist")
        entries.append(Entry(str(path), -1, ""))
    if not entries:
        raise DatasetError(f"{key}.list = '{list_file}' names no images")
    return entries


def load_coco(annotations: str | Path, key: str = "datasets.?") -> COCO:
    """A COCO-format annotation file (COCO, PartImageNet) as a pycocotools ``COCO``.

    The file must be JSON with the lists ``images`` (``id``, ``file_name``,
    ``height``, ``width``), ``annotations`` (``image_id``, ``segmentation``)
    and ``categories``; anything else is a :class:`DatasetError` naming the
    file and the key.
    """
    from pycocotools.coco import COCO

    path = Path(annotations)
    if not path.is_file():
        raise DatasetError(f"{key}.annotations = '{path}' does not exist")
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{key}.annotations = '{path}' is not valid JSON: {err}") from err
    if not isinstance(content, dict):
        raise DatasetError(f"{key}.annotations = '{path}' must hold a JSON object with images, annotations, categories")
    for name in ("images", "annotations", "categories"):
        if not isinstance(content.get(name), list):
            raise DatasetError(f"{key}.annotations = '{path}' has no list '{name}' (not a COCO-format file)")
    fields = {"images": ("id", "file_name", "height", "width"), "annotations": ("image_id", "segmentation")}
    for field, required in fields.items():
        for i, item in enumerate(content[field]):
            missing = [k for k in required if k not in item]
            if missing:
                raise DatasetError(f"{key}.annotations = '{path}': {field}[{i}] has no '{missing[0]}'")
    coco = COCO()
    coco.dataset = content
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


def coco_image_ids(coco: COCO, max_images: int | None = None) -> list[int]:
    """The study's order: sorted image id, images without annotations skipped, first ``max_images``."""
    ids = sorted(i for i in coco.imgs if coco.imgToAnns.get(i))
    return ids if max_images is None else ids[:max_images]


def index_coco(
    root: str | Path,
    annotations: str | Path,
    max_images: int | None = None,
    key: str = "datasets.?",
) -> list[Entry]:
    """Images of a COCO-format annotation file, ``root/<file_name>``, unlabelled.

    Order: sorted image id, images without annotations skipped, the first
    ``max_images`` kept (the study: COCO val2017, 5000 images).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{key}.root = '{root}' does not exist or is not a directory")
    coco = load_coco(annotations, key)
    ids = coco_image_ids(coco, max_images)
    if not ids:
        raise DatasetError(f"{key}.annotations = '{annotations}' has no image with annotations")
    entries = []
    for i in ids:
        path = root / coco.imgs[i]["file_name"]
        if not path.is_file():
            raise DatasetError(
                f"{key}: image '{path}' (id {i} in '{annotations}') does not exist under {key}.root = '{root}'"
            )
        entries.append(Entry(str(path), -1, ""))
    return entries


REVISITED_NAMES = ("roxford5k", "rparis6k")


def read_gnd(root: str | Path, name: str, key: str = "datasets.?") -> dict:
    """The ground truth ``{root}/{name}/gnd_{name}.pkl`` of a revisited Oxford/Paris dataset.

    Checks the layout: ``imlist``, ``qimlist`` and per query (``gnd``) ``bbx``,
    ``easy``, ``hard``, ``junk``; indices within imlist. A bad layout is a
    :class:`DatasetError` naming the expected path. The pickle is read with
    :func:`vitscope.safe_pickle.load_data` (plain data and numpy arrays only), so a
    crafted file cannot run code: any other global is a :class:`DatasetError` naming
    the file and the global.
    """
    path = Path(root) / name / f"gnd_{name}.pkl"
    if not path.is_file():
        raise DatasetError(
            f"{key}: '{path}' does not exist (expected the revisited layout {{root}}/{name}/gnd_{name}.pkl "
            f"with images in {{root}}/{name}/jpg/)"
        )
    try:
        with open(path, "rb") as handle:
            gnd = safe_pickle.load_data(handle)
    except safe_pickle.RefusedGlobal as err:
        raise DatasetError(
            f"{key}: '{path}': {err}; ground-truth pickles may hold only {safe_pickle.DATA_KINDS}"
        ) from err
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError, IndexError, KeyError) as err:
        raise DatasetError(f"{key}: '{path}' is not a readable pickle: {err}") from err
    if not isinstance(gnd, dict) or not all(k in gnd for k in ("imlist", "qimlist", "gnd")):
        raise DatasetError(f"{key}: '{path}' must hold a dict with imlist, qimlist and gnd")
    if len(gnd["gnd"]) != len(gnd["qimlist"]):
        raise DatasetError(f"{key}: '{path}' has {len(gnd['qimlist'])} qimlist entries but {len(gnd['gnd'])} gnd")
    n = len(gnd["imlist"])
    for i, query in enumerate(gnd["gnd"]):
        for field in ("bbx", "easy", "hard", "junk"):
            if field not in query:
                raise DatasetError(f"{key}: '{path}' gnd[{i}] has no '{field}'")
        if len(query["bbx"]) != 4:
            raise DatasetError(f"{key}: '{path}' gnd[{i}].bbx must be [x1, y1, x2, y2]")
        for field in ("easy", "hard", "junk"):
            if any(not 0 <= int(j) < n for j in query[field]):
                raise DatasetError(f"{key}: '{path}' gnd[{i}].{field} has an index outside imlist (0..{n - 1})")
    return gnd


def index_revisited(
    root: str | Path, name: str, crop: bool = True, key: str = "datasets.?"
) -> tuple[list[Entry], list[Entry]]:
    """The database and the query index of a revisited Oxford/Paris dataset (DINO's layout).

    Images are ``{root}/{name}/jpg/<imlist entry>.jpg``; database in imlist order, queries
    in qimlist order, unlabelled. With ``crop`` (the official protocol) each query carries its
    ``bbx`` as the crop box; without it the whole query image is used (the study's variant).
    """
    gnd = read_gnd(root, name, key)
    folder = Path(root) / name / "jpg"

    def image(stem: str) -> str:
        path = folder / f"{stem}.jpg"
        if not path.is_file():
            raise DatasetError(f"{key}: image '{path}' (listed in gnd_{name}.pkl) does not exist")
        return str(path)

    database = [Entry(image(stem), -1, "") for stem in gnd["imlist"]]
    queries = [
        Entry(image(stem), -1, "", tuple(float(v) for v in q["bbx"]) if crop else None)
        for stem, q in zip(gnd["qimlist"], gnd["gnd"], strict=True)
    ]
    return database, queries


def write_index(entries: Sequence[Entry], path: str | Path) -> None:
    """Write an index CSV atomically (a ``box`` column only when some entry is cropped)."""
    path = Path(path)
    boxed = any(e.box is not None for e in entries)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "class"] + (["box"] if boxed else []))
        for e in entries:
            box = ([" ".join(repr(float(v)) for v in e.box) if e.box is not None else ""]) if boxed else []
            writer.writerow([e.path, e.label, e.cls, *box])
    tmp.replace(path)


def _box(text: str, path: Path, line: int) -> tuple[float, float, float, float] | None:
    if not text.strip():
        return None
    values = text.split()
    try:
        x1, y1, x2, y2 = (float(v) for v in values)
    except ValueError as err:
        raise DatasetError(f"index '{path}' line {line}: box must be 'x1 y1 x2 y2', found {text!r}") from err
    return x1, y1, x2, y2


def read_index(path: str | Path) -> list[Entry]:
    """Read an index CSV written by :func:`write_index`."""
    path = Path(path)
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames not in (["path", "label", "class"], ["path", "label", "class", "box"]):
            raise DatasetError(
                f"index '{path}' must have the columns path,label,class[,box]; found {reader.fieldnames}"
            )
        return [
            Entry(row["path"], int(row["label"]), row["class"], _box(row.get("box") or "", path, line))
            for line, row in enumerate(reader, 2)
        ]


def resize_crop_geometry(
    height: int, width: int, image_size: tuple[int, int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where :func:`vitscope.loading.preprocess` puts an image of ``height`` x ``width``.

    Returns the resized size (rh, rw) and the center crop's (top, left) offset
    in the resized image, computed exactly as torchvision does (shorter side to
    h with the longer side truncated for a square target; the covering resize
    of :class:`vitscope.loading.Cover` otherwise; crop offsets rounded). Resized pixel y covers
    the original rows [y * height / rh, (y + 1) * height / rh).
    """
    h, w = image_size
    if h == w:
        short, long = min(height, width), max(height, width)
        new_long = int(h * long / short)
        rh, rw = (h, new_long) if height <= width else (new_long, h)
    else:
        rh, rw = cover_size((height, width), (h, w))
    return (rh, rw), (int(round((rh - h) / 2.0)), int(round((rw - w) / 2.0)))


def cover_size(image: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """Size (h, w) of ``image`` (h, w) resized, aspect kept, just enough to cover ``size``."""
    ih, iw = image
    scale = max(size[0] / ih, size[1] / iw)
    return max(size[0], round(ih * scale)), max(size[1], round(iw * scale))


def load_image(path: str | Path, box: Sequence[float] | None = None) -> Image.Image:
    """Open an image as RGB, cropped to ``box`` (x1, y1, x2, y2; PIL's crop, as the revisited
    Oxford/Paris code does) when given; an unreadable file is a :class:`DatasetError` naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert("RGB")
            return img.crop(tuple(box)) if box is not None else img
    except FileNotFoundError as err:
        raise DatasetError(f"image '{path}' does not exist") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"image '{path}' is corrupt or unreadable: {err}") from err


def index_dataset(name: str, entry: dict, synthetic_root: Sequence[str] = ()) -> list[Entry]:
    """The index of ``datasets.<name>`` (config entry ``entry``) by its ``kind``."""
    key = f"datasets.{name}"
    kind = entry.get("kind")
    if kind == "synthetic":
        if not synthetic_root:
            raise DatasetError(f"{key}: kind 'synthetic' needs the generated folder as input")
        return index_imagefolder(Path(synthetic_root[0]) / "images", key=key)
    if kind == "imagefolder":
        if "root" not in entry:
            raise DatasetError(f"{key}.root is required for kind 'imagefolder'")
        return index_imagefolder(entry["root"], entry.get("classes"), entry.get("per_class"), key=key)
    if kind == "imagelist":
        if "list" not in entry:
            raise DatasetError(f"{key}.list is required for kind 'imagelist'")
        return index_imagelist(entry["list"], entry.get("root"), key=key)
    if kind == "coco":
        for name in ("root", "annotations"):
            if name not in entry:
                raise DatasetError(f"{key}.{name} is required for kind 'coco'")
        return index_coco(entry["root"], entry["annotations"], entry.get("max_images"), key=key)
    if kind == "revisited":
        for name in ("root", "name"):
            if name not in entry:
                raise DatasetError(f"{key}.{name} is required for kind 'revisited'")
        database, queries = index_revisited(entry["root"], entry["name"], entry.get("crop_queries", True), key=key)
        return database + queries
    if kind == "spair":
        raise DatasetError(f"{key}: kind 'spair' is read by the spair analysis only; it has no image index or dump")
    raise DatasetError(f"{key}.kind = {kind!r}; expected imagefolder, imagelist, coco, revisited or synthetic")
