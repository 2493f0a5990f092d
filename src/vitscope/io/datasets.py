"""Datasets: index readers, image loading and the preprocessing geometry (no torch).

An *index* is the ordered list of images one dump covers: a CSV with the
columns ``path`` (as opened), ``label`` (integer, -1 if unlabelled) and
``class`` (name, empty if unlabelled), and, only when some image is read
cropped (revisited retrieval queries), a fourth column ``box``: ``x1 y1 x2 y2``
in pixels of the original image, empty for uncropped images. Index order is
dump order.

Feeding images to a model (the study's preprocessing, the torch dataset) is
:mod:`vitscope.io.preprocess`; this module imports no torch, so the jobs that only
index or read images start fast.

What counts as an image in a folder (:func:`image_extensions`), how unusual
pixel formats become RGB (:func:`load_image`) and which names from annotation
files are refused (:func:`inside`) is described in docs/hostile-inputs.md.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import pickle
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import DatasetError, VitscopeError
from . import safe_pickle

if TYPE_CHECKING:
    from pycocotools.coco import COCO

log = logging.getLogger(__name__)

#: skipped names shown in the warning of an index
SHOWN_SKIPPED = 5


def image_extensions() -> frozenset[str]:
    """Lower-case suffixes (``.jpg``) of the image formats this Pillow opens.

    Pillow's registered extensions (after ``Image.init()``, so plugins count),
    less those of formats it only writes (PDF, Palm) and of stub formats that
    need an outside handler to decode (HDF5, GRIB, BUFR, WMF). ``.mpo`` counts:
    Pillow's JPEG opener reads MPO files. Names are matched case-insensitively.
    """
    Image.init()
    found = set()
    for ext, fmt in Image.registered_extensions().items():
        opener = Image.OPEN.get("JPEG" if fmt == "MPO" else fmt)
        if opener is None:
            continue
        if isinstance(opener[0], type) and issubclass(opener[0], ImageFile.StubImageFile):
            continue
        found.add(ext.lower())
    return frozenset(found)


def _utf8(name: str, where: str) -> None:
    """Refuse a name that is not valid UTF-8 (the index CSV, the dumps and reports hold UTF-8 text).

    On Linux a file name is bytes; Python hands undecodable bytes over as lone
    surrogates ('caf\\udce9.jpg'), which no UTF-8 file can hold.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        raise DatasetError(
            f"{where}: the name {name!r} (bytes {raw!r}) is not valid UTF-8; vitscope writes image paths to "
            "UTF-8 files (index CSV, dumps), so rename it (e.g. with convmv)"
        ) from None


def inside(root: str | Path, name: object, what: str) -> Path:
    """``root / name`` for a ``name`` read from an annotation file, refused unless it stays in ``root``.

    ``name`` must be a relative path (a string) that, normalised lexically
    (``a/../b`` is ``b``), stays inside ``root``: absolute names and names that
    climb out with ``..`` are a :class:`DatasetError` starting with ``what``
    (the annotation file and entry). ``root`` itself is resolved first, so a
    dataset folder that is a symbolic link is fine, and links inside ``root``
    are not followed by the check (a dataset may link its image folders
    elsewhere). The returned path is ``root / name`` as given (not resolved).
    """
    if not isinstance(name, str) or not name:
        raise DatasetError(f"{what}: the image name {name!r} is not a non-empty string")
    if "\0" in name:
        raise DatasetError(f"{what}: the image name {name!r} holds a NUL character")
    base = os.path.realpath(root)
    target = os.path.normpath(os.path.join(base, name))
    if os.path.isabs(name) or os.path.commonpath([base, target]) != base:
        raise DatasetError(f"{what}: the image name {name!r} leads outside '{root}' (absolute or '..')")
    return Path(root) / name


@dataclass
class Listing:
    """The images of one folder and the entries skipped there."""

    images: list[str]
    skipped: list[str]


def list_images(folder: Path, where: str) -> Listing:
    """The images in ``folder``, sorted by name, and what was skipped.

    An image is a regular file (or a link to one) whose suffix is one of
    :func:`image_extensions`, in any case (``.JPEG``, ``.Png``), and whose name
    does not start with a dot. Everything else (``README``, ``.DS_Store``,
    macOS ``._x.jpg`` resource forks, subfolders) is skipped and returned, for
    the caller to report. An image name that is not valid UTF-8, or a link with
    an image suffix that points nowhere, is a :class:`DatasetError` (``where``
    names the dataset key).
    """
    suffixes = image_extensions()
    images, skipped = [], []
    with os.scandir(folder) as found:
        for item in found:
            name = item.name
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in suffixes:
                skipped.append(name)
            elif item.is_file():
                _utf8(name, f"{where}: in folder '{folder}'")
                images.append(name)
            elif item.is_symlink() and not os.path.exists(item.path):
                raise DatasetError(f"{where}: image '{item.path}' is a symbolic link to nothing")
            else:
                skipped.append(name)  # a folder named like an image
    return Listing(sorted(images), sorted(skipped))


def _report_skipped(skipped: Sequence[str], where: str, root: Path) -> None:
    """One warning for the entries an index skipped (count and the first few names)."""
    if not skipped:
        return
    shown = ", ".join(repr(n) for n in skipped[:SHOWN_SKIPPED])
    more = f" and {len(skipped) - SHOWN_SKIPPED} more" if len(skipped) > SHOWN_SKIPPED else ""
    log.warning(
        "%s: skipped %d entries under '%s' that are not images Pillow reads (hidden names, subfolders, "
        "other suffixes; see vitscope.io.datasets.image_extensions): %s%s",
        where, len(skipped), root, shown, more,
    )


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
    class, images (:func:`list_images`: the suffixes Pillow reads, any case)
    are taken in sorted name order and the first ``per_class`` kept (the
    study's ImageNet-50 rule: first 100 per class). Entries that are not
    images are skipped with one warning naming how many and the first few.
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
    skipped: list[str] = []
    for label, name in enumerate(names):
        _utf8(name, f"{key}: class folder in '{root}'")
        found = list_images(root / name, key)
        skipped += [f"{name}/{s}" for s in found.skipped]
        files = found.images
        if not files:
            other = f" (only {len(found.skipped)} other entries, e.g. {found.skipped[0]!r})" if found.skipped else ""
            raise DatasetError(f"{key}: class folder '{root / name}' holds no images Pillow reads{other}")
        if per_class is not None:
            if len(files) < per_class:
                raise DatasetError(
                    f"{key}.per_class = {per_class} but '{root / name}' holds only {len(files)} images"
                )
            files = files[:per_class]
        entries.extend(Entry(str(root / name / f), label, name) for f in files)
    _report_skipped(skipped, key, root)
    return entries


def index_imagelist(list_file: str | Path, root: str | Path | None = None, key: str = "datasets.?") -> list[Entry]:
    """Images named one per line in ``list_file`` (relative to ``root``, default the list's folder), unlabelled.

    Names are taken as written (any suffix; the image is checked when loaded)
    but must stay inside the root (:func:`inside`); the file must be UTF-8.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise DatasetError(f"{key}.list = '{list_file}' does not exist")
    base = Path(root) if root else list_file.parent
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DatasetError(f"{key}.list = '{list_file}' is not UTF-8 text: {err}") from err
    entries = []
    for lineno, line in enumerate(lines, 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        path = inside(base, name, f"{key}.list = '{list_file}' line {lineno}")
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
        name = coco.imgs[i]["file_name"]
        path = inside(root, name, f"{key}.annotations = '{annotations}': image id {i}")
        _utf8(name, f"{key}.annotations = '{annotations}': image id {i}")
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
    :func:`vitscope.io.safe_pickle.load_data` (plain data and numpy arrays only), so a
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
        path = inside(folder, f"{stem}.jpg", f"{key}: gnd_{name}.pkl entry {stem!r}")
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
    """Write an index CSV (UTF-8) atomically (a ``box`` column only when some entry is cropped).

    A path or class that UTF-8 cannot hold is a :class:`DatasetError` before
    anything is written; a failure while writing leaves neither the file nor
    a temporary (:func:`vitscope.io.dumps.atomic_path`).
    """
    from .dumps import atomic_path  # h5py: only the writer needs it

    path = Path(path)
    for e in entries:
        _utf8(e.path, f"index '{path}'")
        _utf8(e.cls, f"index '{path}': class of {e.path!r}")
    boxed = any(e.box is not None for e in entries)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "class"] + (["box"] if boxed else []))
        for e in entries:
            box = ([" ".join(repr(float(v)) for v in e.box) if e.box is not None else ""]) if boxed else []
            writer.writerow([e.path, e.label, e.cls, *box])


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
    with open(path, newline="", encoding="utf-8") as handle:
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
    """Where :func:`vitscope.io.preprocess.preprocess` puts an image of ``height`` x ``width``.

    Returns the resized size (rh, rw) and the center crop's (top, left) offset
    in the resized image, computed exactly as torchvision does (shorter side to
    h with the longer side truncated for a square target; the covering resize
    of :class:`vitscope.io.preprocess.Cover` otherwise; crop offsets rounded). Resized pixel y covers
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


def _bomb(path: str | Path, what: str, err: Exception) -> DatasetError:
    """The error for an image Pillow refuses as a decompression bomb (its message has both numbers)."""
    numbers = re.findall(r"\d+", str(err))
    size = f"{int(numbers[0]):,} pixels" if numbers else "too many pixels"
    limit = f"{int(numbers[1]):,}" if len(numbers) > 1 else "Pillow's limit"
    return DatasetError(
        f"{what} '{path}' has {size}, more than {limit} (twice PIL.Image.MAX_IMAGE_PIXELS = "
        f"{Image.MAX_IMAGE_PIXELS:,}): refused as a possible decompression bomb; shrink the image or raise "
        "PIL.Image.MAX_IMAGE_PIXELS"
    )


@contextlib.contextmanager
def open_image(path: str | Path, what: str = "image") -> Iterator[Image.Image]:
    """``PIL.Image.open(path)`` whose failures are a :class:`DatasetError` naming the file.

    A missing, unidentified, truncated or corrupt file, and one above Pillow's
    decompression-bomb limit (more than twice ``PIL.Image.MAX_IMAGE_PIXELS``,
    Pillow's own rule, read when called), raise; decoding inside the block
    counts too. An image above ``MAX_IMAGE_PIXELS`` itself is read, as Pillow
    does, with a warning in the log naming it (Pillow's own warning does not).
    ``what`` starts the messages ("image", "annotation").
    """
    try:
        img = Image.open(path)
    except FileNotFoundError as err:
        raise DatasetError(f"{what} '{path}' does not exist") from err
    except Image.DecompressionBombError as err:
        raise _bomb(path, what, err) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{what} '{path}' is corrupt or unreadable: {err}") from err
    with img:
        limit = Image.MAX_IMAGE_PIXELS
        if limit and img.width * img.height > limit:
            log.warning(
                "%s '%s' has %d x %d = %s pixels, more than PIL.Image.MAX_IMAGE_PIXELS = %s; read anyway "
                "(Pillow refuses twice that)", what, path, img.width, img.height,
                f"{img.width * img.height:,}", f"{limit:,}",
            )
        try:
            yield img
        except VitscopeError:
            raise
        except Image.DecompressionBombError as err:
            raise _bomb(path, what, err) from err
        except (OSError, SyntaxError, ValueError) as err:
            raise DatasetError(f"{what} '{path}' is corrupt or unreadable: {err}") from err


#: Pillow's unsigned 16-bit greyscale modes (16-bit PNG, TIFF, JPEG 2000)
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def sample_range(img: Image.Image) -> tuple[int, int]:
    """(lowest value, bits) of the samples of a mode ``I`` image, as its file stores them.

    Pillow holds every wider integer image in mode ``I`` (int32); the file's
    raw mode, known until the pixels are loaded, tells their type: 16-bit
    (unsigned, or signed for a raw mode ending in ``S``) for 16-bit PGM/PPM
    files (which Pillow scales to 0..65535 whatever their maxval) and signed
    16-bit TIFFs; anything else is taken as signed 32-bit (unsigned 32-bit
    TIFFs are read as Pillow reads them, as signed).
    """
    if not img.tile:
        return -(1 << 31), 32
    codec, args = img.tile[0][0], img.tile[0][3]
    if codec == "ppm":
        return 0, 16
    raw = args if isinstance(args, str) else next((a for a in args if isinstance(a, str)), "") if args else ""
    match = re.fullmatch(r"I;16[BLN]?(S?)", raw)
    if match:
        return (-(1 << 15) if match.group(1) else 0), 16
    return -(1 << 31), 32


def to_rgb(img: Image.Image, samples: tuple[int, int] | None = None) -> Image.Image:
    """A loaded image as 8-bit RGB; deeper samples are scaled by their type's range, never clipped.

    - 16-bit greyscale (:data:`SIXTEEN_BIT_MODES`): the high byte, ``v >> 8``, which is
      how Pillow itself reads 16-bit RGB(A) PNGs (and how torchvision's ``ToDtype``
      turns uint16 into uint8), so a 16-bit grey and a 16-bit RGB file of the same
      values give the same pixels.
    - mode ``I``: the type's full range (``samples`` = (lowest, bits), from
      :func:`sample_range`; signed 32-bit when not given) mapped the same way,
      ``(v - lowest) >> (bits - 8)``.
    - mode ``F`` (float): values in [0, 1] (the float image convention of torchvision
      and scikit-image) scaled to 0..255 and rounded; outside values are clipped,
      NaN is 0. Pillow's own conversion assumes 0..255 and would make such an image black.
    - everything else by Pillow's ``convert("RGB")``, as torchvision's ImageFolder loader
      does: alpha (RGBA, LA, PA, a palette's transparency) is dropped, not composited;
      CMYK by Pillow's formula (255 - C)(255 - K) / 255; mode 1 as 0 / 255.
    """
    if img.mode in SIXTEEN_BIT_MODES:
        eight = np.asarray(img).astype(np.uint16) >> 8
    elif img.mode == "I":
        lowest, bits = samples or (-(1 << 31), 32)
        eight = np.clip((np.asarray(img).astype(np.int64) - lowest) >> (bits - 8), 0, 255)
    elif img.mode == "F":
        values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        eight = np.rint(np.clip(values, 0.0, 1.0) * 255)
    else:
        return img.convert("RGB")
    return Image.fromarray(eight.astype(np.uint8)).convert("RGB")


def load_image(path: str | Path, box: Sequence[float] | None = None) -> Image.Image:
    """Open an image as 8-bit RGB (:func:`to_rgb`), cropped to ``box`` (x1, y1, x2, y2; PIL's crop,
    as the revisited Oxford/Paris code does) when given.

    A multi-frame file (GIF, APNG, TIFF pages) gives its first frame, where
    Pillow opens it. An unreadable file, or one above Pillow's decompression
    bomb limit, is a :class:`DatasetError` naming it (:func:`open_image`).
    """
    with open_image(path) as img:
        samples = sample_range(img) if img.mode == "I" else None  # the raw mode is gone once loaded
        img.load()
        rgb = to_rgb(img, samples)
    return rgb.crop(tuple(box)) if box is not None else rgb


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
