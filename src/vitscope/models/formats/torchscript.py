"""The state dict of a TorchScript archive, read without running any of its code.

``torch.jit.load`` compiles the archive's ``code/`` and lets its pickles call that
code (``__setstate__``), so a crafted file runs whatever it holds. This reader
never does: a TorchScript archive (``torch.jit.save``, also by torch 1.x) is a zip
with one top-level folder (``<top>/``, e.g. ``ViT-B-16/`` or ``archive/``) holding

``<top>/data.pkl``
    the module tree, pickled: each module an object of a ``__torch__.*`` class whose
    state is a dict of its attributes (parameters, buffers, submodules, plain values)
    in declaration order; each tensor ``torch._utils._rebuild_tensor_v2(storage,
    offset, size, stride, ...)``, the storage a persistent id ``("storage",
    torch.<Type>Storage, key, location, numel)``;
``<top>/data/<key>``
    the raw bytes of each storage (byte order in ``<top>/byteorder``, little if absent);
``<top>/code/<qualifier path>.py``
    the classes as TorchScript source: a module class ``class Name(Module):`` lists
    its parameter and buffer attributes as ``__parameters__ = [...]`` and
    ``__buffers__ = [...]``.

:func:`state_dict` unpickles ``data.pkl`` with a :class:`~vitscope.io.safe_pickle.RestrictedUnpickler`
(``__torch__`` classes become inert records of their state; only the tensor rebuild
functions, storage types and list helpers are admitted), reads those two lists from
``code/`` as text, and walks the tree as ``Module.state_dict`` does: per module its
parameters, then its buffers (``None`` skipped), then each submodule, keys dotted.
Tensors keep their dtype, size, stride and storage offset, and tensors sharing a
storage share it here too. A module whose class rebuilds its state with code
(``__setstate__``) cannot be read this way and is an error.
"""

from __future__ import annotations

import ast
import collections
import io
import pickle
import re
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from ...io.safe_pickle import RefusedGlobal, RestrictedUnpickler

#: Storage types (``torch.<Name>``) a tensor may live in, with their dtypes.
STORAGE_DTYPES: dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexDoubleStorage": torch.complex128,
    "ComplexFloatStorage": torch.complex64,
}

_CLASS = re.compile(r"class ([A-Za-z_][A-Za-z0-9_]*)(?:\(([^)]*)\))?:")
_LIST = re.compile(r"  (__parameters__|__buffers__) = (\[.*\])\s*$")
_KEY = re.compile(r"[A-Za-z0-9_]+")


class RefusedArchive(ValueError):
    """``data.pkl`` names a global no TorchScript weight archive needs (a crafted file)."""


class UnsupportedArchive(ValueError):
    """A well-formed archive whose state only its code can rebuild, or laid out in a way this reader does not know."""


class ScriptObject:
    """An object of a ``__torch__`` class: records the state pickled for it, nothing more."""

    qualname: ClassVar[str] = ""
    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


@dataclass(frozen=True)
class StorageType:
    """Stand-in for ``torch.<name>`` in a persistent id."""

    name: str
    dtype: torch.dtype


@dataclass(frozen=True, eq=False)
class Storage:
    """One storage record: its key and its elements as a 1-D tensor."""

    key: str
    flat: torch.Tensor


@dataclass(frozen=True)
class ModuleClass:
    """A module class of the archive's ``code/``: its parameter and buffer attribute names."""

    parameters: tuple[str, ...]
    buffers: tuple[str, ...]


def state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """``{dotted name: tensor}`` of the TorchScript archive at ``path``, as ``torch.jit.load(path).state_dict()``.

    Raises :class:`RefusedArchive` for a global outside the admitted ones,
    :class:`UnsupportedArchive` for state only the archive's code can rebuild, and
    ``ValueError`` (naming the record at fault) for a damaged archive; never runs
    code from the file.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            top = top_folder(archive.namelist())
            modules, others = code_classes(archive, top)
            root = _Unpickler(archive, top).load()
    except RefusedGlobal as err:
        raise RefusedArchive(f"{err} in data.pkl; a TorchScript archive read without its code may hold only "
                             "modules, tensors and plain values") from err
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError, RuntimeError,
            OverflowError) as err:
        detail = str(err) if isinstance(err, pickle.UnpicklingError) else f"{type(err).__name__}: {err}"
        raise ValueError(f"data.pkl: {detail}") from err
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as err:
        raise ValueError(f"not a readable zip archive: {err}") from err
    if not isinstance(root, ScriptObject):
        raise ValueError(f"data.pkl holds a {type(root).__name__}, not a TorchScript module")
    out: dict[str, torch.Tensor] = {}
    try:
        _collect(root, modules, others, "", out, ())
    except RecursionError as err:
        raise ValueError("data.pkl nests modules too deeply") from err
    return out


def top_folder(names: list[str]) -> str:
    """The archive's top-level folder (the one holding ``data.pkl``)."""
    tops = sorted({n[: -len("/data.pkl")] for n in names if n.endswith("/data.pkl") and n.count("/") == 1})
    if len(tops) != 1:
        found = f"several ({', '.join(tops)})" if tops else "none"
        raise ValueError(f"expected one <folder>/data.pkl record (a TorchScript archive), found {found}")
    return tops[0]


def code_classes(archive: zipfile.ZipFile, top: str) -> tuple[dict[str, ModuleClass], set[str]]:
    """Module classes (qualified name -> parameters, buffers) and other classes named in ``<top>/code/``.

    The source is scanned as text, never compiled: ``code/a/b.py`` defines the classes
    ``a.b.<Name>``. A module class without ``__buffers__`` (archives older than torch 1.6)
    has none, as ``torch.jit.load`` reads it.
    """
    prefix = f"{top}/code/"
    modules: dict[str, ModuleClass] = {}
    others: set[str] = set()
    for name in archive.namelist():
        if not (name.startswith(prefix) and name.endswith(".py")):
            continue
        qualifier = name[len(prefix) : -len(".py")].replace("/", ".")
        try:
            text = archive.read(name).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{name} is not UTF-8 text: {err}") from err
        current: str | None = None
        lists: dict[str, tuple[str, ...]] = {}
        for line in [*text.splitlines(), "<end>"]:
            if line and not line[0].isspace():
                if current is not None:
                    modules[current] = ModuleClass(lists.get("__parameters__", ()), lists.get("__buffers__", ()))
                current = None
                match = _CLASS.match(line)
                if match:
                    qualname = f"{qualifier}.{match.group(1)}"
                    if (match.group(2) or "").strip() == "Module":
                        current, lists = qualname, {}
                    else:
                        others.add(qualname)
            elif current is not None and (match := _LIST.match(line)):
                lists[match.group(1)] = _names(match.group(2), name)
    return modules, others


def _names(text: str, record: str) -> tuple[str, ...]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, RecursionError, MemoryError) as err:
        raise ValueError(f"{record}: attribute list {text[:80]!r} is not a list of names") from err
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{record}: attribute list {text[:80]!r} is not a list of names")
    return tuple(value)


def _collect(
    obj: ScriptObject,
    modules: Mapping[str, ModuleClass],
    others: set[str],
    prefix: str,
    out: dict[str, torch.Tensor],
    path: tuple[int, ...],
) -> None:
    """Add the parameters and buffers of ``obj`` and its submodules to ``out`` (state_dict order)."""
    kind = modules.get(obj.qualname)
    if kind is None:
        raise UnsupportedArchive(f"module class {obj.qualname} is not defined in the archive's code/")
    if id(obj) in path:
        raise ValueError(f"module {prefix.rstrip('.') or '<root>'} contains itself")
    state = obj.state
    if not isinstance(state, dict):
        raise UnsupportedArchive(
            f"module {prefix.rstrip('.') or '<root>'} ({obj.qualname}) stores its state through __getstate__, "
            "which only its TorchScript code can rebuild"
        )
    for name in (*kind.parameters, *kind.buffers):
        if name not in state:
            raise ValueError(f"{prefix}{name} is declared in {obj.qualname} but missing from data.pkl")
        value = state[name]
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{prefix}{name} is a {type(value).__name__}, not a tensor")
        out[prefix + name] = value
    for name, value in state.items():
        if isinstance(value, ScriptObject):
            if value.qualname in modules:
                _collect(value, modules, others, f"{prefix}{name}.", out, (*path, id(obj)))
            elif value.qualname not in others:
                raise UnsupportedArchive(f"class {value.qualname} (attribute {prefix}{name}) is not defined in code/")


# --------------------------------------------------------------------------- unpickling


def _identity_list(value: Any, *_: Any) -> Any:
    """``torch.jit._pickle.build_*list`` / ``restore_type_tag``: the value as pickled."""
    return value


def _refuse_tensor_id(*_: Any) -> Any:
    raise UnsupportedArchive("data.pkl: build_tensor_from_id (tensors kept outside the archive's storages)")


class _Unpickler(RestrictedUnpickler):
    """``data.pkl`` of one archive: ``__torch__`` classes as :class:`ScriptObject`, storages from the zip."""

    def __init__(self, archive: zipfile.ZipFile, top: str) -> None:
        record = f"{top}/data.pkl"
        table: dict[tuple[str, str], Any] = {
            ("collections", "OrderedDict"): lambda: collections.OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): lambda: self._rebuild_tensor,
            ("torch._utils", "_rebuild_tensor"): lambda: self._rebuild_tensor,
            **{("torch.jit._pickle", f"build_{k}list"): (lambda: _identity_list)
               for k in ("int", "float", "double", "bool", "tensor", "str")},
            ("torch.jit._pickle", "restore_type_tag"): lambda: _identity_list,
            ("torch.jit._pickle", "build_tensor_from_id"): lambda: _refuse_tensor_id,
            **{("torch", name): (lambda name=name, dtype=dtype: StorageType(name, dtype))
               for name, dtype in STORAGE_DTYPES.items()},
        }
        super().__init__(io.BytesIO(archive.read(record)), table)
        self._archive, self._top = archive, top
        self._classes: dict[str, type[ScriptObject]] = {}
        self._storages: dict[str, Storage] = {}
        order = _read_text(archive, f"{top}/byteorder") or "little"
        if order not in ("little", "big"):
            raise ValueError(f"{top}/byteorder is {order!r}, not little or big")
        self._swap = order != sys.byteorder

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            if qualname not in self._classes:
                self._classes[qualname] = type(name, (ScriptObject,), {"qualname": qualname, "__slots__": ()})
            return self._classes[qualname]
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], StorageType)):
            raise pickle.UnpicklingError(f"refused persistent id {str(pid)[:80]!r} (expected a storage)")
        _, kind, key, _location, numel = pid
        if not (isinstance(key, str) and _KEY.fullmatch(key) and isinstance(numel, int) and numel >= 0):
            raise pickle.UnpicklingError(f"malformed storage id {str(pid)[:80]!r}")
        if key not in self._storages:
            self._storages[key] = Storage(key, self._read_storage(key, kind.dtype, numel))
        storage = self._storages[key]
        if storage.flat.dtype != kind.dtype or storage.flat.numel() != numel:
            raise pickle.UnpicklingError(f"storage {key} is referenced with two different types or sizes")
        return storage

    def _read_storage(self, key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        """The 1-D tensor of storage ``key`` (``numel`` elements of ``dtype``), native byte order."""
        record = f"{self._top}/data/{key}"
        try:
            info = self._archive.getinfo(record)
        except KeyError as err:
            raise pickle.UnpicklingError(f"storage {key} is referenced, but {record} is missing") from err
        itemsize = torch.empty((), dtype=dtype).element_size()
        if info.file_size != numel * itemsize:
            raise pickle.UnpicklingError(
                f"{record} holds {info.file_size} bytes, not the {numel} x {itemsize}-byte elements declared"
            )
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        buffer = bytearray(info.file_size)
        with self._archive.open(info) as handle:
            view, done = memoryview(buffer), 0
            while done < len(buffer):
                n = handle.readinto(view[done:])
                if not n:
                    raise pickle.UnpicklingError(f"{record} is truncated")
                done += n
        raw = torch.frombuffer(buffer, dtype=torch.uint8)
        if self._swap:
            raw = swap_bytes(raw, dtype)
        return raw.view(dtype)

    def _rebuild_tensor(
        self,
        storage: Any,
        offset: Any,
        size: Any,
        stride: Any,
        requires_grad: Any = False,
        hooks: Any = None,
        metadata: Any = None,
    ) -> torch.Tensor:
        """``torch._utils._rebuild_tensor_v2`` on a storage read here, bounds checked."""
        if not isinstance(storage, Storage):
            raise pickle.UnpicklingError(f"tensor storage is a {type(storage).__name__}, not a storage id")
        flat = storage.flat
        if not (_ints(offset) and isinstance(size, tuple) and isinstance(stride, tuple)):
            raise pickle.UnpicklingError(f"malformed tensor: offset {offset!r}, size {size!r}, stride {stride!r}")
        if not (all(map(_ints, size)) and all(map(_ints, stride)) and len(size) == len(stride)):
            raise pickle.UnpicklingError(f"malformed tensor: size {size!r}, stride {stride!r}")
        if hooks or metadata:
            raise UnsupportedArchive("data.pkl: a tensor with backward hooks or metadata (not plain weights)")
        if 0 not in size:
            end = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
            if end >= flat.numel():
                raise pickle.UnpicklingError(
                    f"tensor of size {size}, stride {stride}, offset {offset} reaches past its "
                    f"storage {storage.key} of {flat.numel()} elements"
                )
        return flat.as_strided(size, stride, offset)


def _ints(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _read_text(archive: zipfile.ZipFile, record: str) -> str:
    try:
        return archive.read(record).decode("ascii", errors="replace").strip()
    except KeyError:
        return ""


def swap_bytes(raw: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``raw`` (uint8, whole elements of ``dtype``) with each element's bytes reversed.

    Complex elements swap their real and imaginary parts separately.
    """
    width = torch.empty((), dtype=dtype).element_size() // (2 if dtype.is_complex else 1)
    if width == 1:
        return raw
    return raw.view(-1, width).flip(1).reshape(-1)
