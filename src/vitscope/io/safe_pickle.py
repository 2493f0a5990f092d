"""Unpickling that cannot run code: a :class:`pickle.Unpickler` admitting only listed globals.

A pickle names the callables that rebuild its objects (``module.name`` *globals*) and
``pickle.load`` imports and calls whatever it names, so a crafted file runs any code
(``os.system`` through ``__reduce__``). :class:`RestrictedUnpickler` resolves a global
only through its table and raises :class:`RefusedGlobal` for any other; persistent ids
are refused unless a subclass handles them. Everything else a pickle does (build
dicts, lists, tuples, numbers, strings) needs no global and cannot run code.

:func:`load_data` reads *plain data*: containers, numbers, strings, bytes and numpy
arrays and scalars, pickled with any protocol by numpy 1.x (``numpy.core``) or 2.x
(``numpy._core``). Nothing here imports numpy until a pickle asks for an array.
"""

from __future__ import annotations

import collections
import importlib
import pickle
from collections.abc import Callable, Mapping
from typing import IO, Any

#: What :func:`load_data` admits, for error messages.
DATA_KINDS = "dicts, lists, tuples, sets, numbers, strings, bytes and numpy arrays"

Table = Mapping[tuple[str, str], Callable[[], Any]]


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global its reader does not admit (``module``, ``name``)."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"refused to load global {module}.{name}")
        self.module, self.name = module, name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose globals come only from ``table``: ``(module, name) -> resolver``.

    A resolver returns the object the global stands for (called at most once per
    occurrence); any other global raises :class:`RefusedGlobal`. Extension codes
    (``copyreg``) are resolved through :meth:`find_class` too.
    """

    def __init__(self, file: IO[bytes], table: Table) -> None:
        super().__init__(file)
        self._table = table

    def find_class(self, module: str, name: str) -> Any:
        resolver = self._table.get((module, name))
        if resolver is None:
            raise RefusedGlobal(module, name)
        return resolver()

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"refused persistent id {str(pid)[:60]!r} (a reference to outside data)")


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocols 0-2 use it for bytes; only latin-1 of a str."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused _codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _numpy(modules: tuple[str, ...], name: str) -> Callable[[], Any]:
    """Resolver of ``name`` from the first importable of ``modules`` (numpy 2 path first)."""

    def resolve() -> Any:
        for module in modules:
            try:
                return getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"numpy has no {name} (tried {', '.join(modules)})")

    return resolve


def _const(value: Any) -> Callable[[], Any]:
    return lambda: value


_MULTIARRAY = ("numpy._core.multiarray", "numpy.core.multiarray")
_NUMERIC = ("numpy._core.numeric", "numpy.core.numeric")

DATA_GLOBALS: dict[tuple[str, str], Callable[[], Any]] = {
    ("_codecs", "encode"): _const(_latin1),
    ("collections", "OrderedDict"): _const(collections.OrderedDict),
    # protocols 0-2 write builtins under their Python 2 module name
    **{(module, kind.__name__): _const(kind)
       for module in ("builtins", "__builtin__")
       for kind in (set, frozenset, bytes, bytearray, complex)},
    # numpy arrays (ndarray.__reduce__; protocol 5: _frombuffer) and scalars, numpy 1.x and 2.x paths
    ("numpy", "ndarray"): _numpy(("numpy",), "ndarray"),
    ("numpy", "dtype"): _numpy(("numpy",), "dtype"),
    **{(module, "_reconstruct"): _numpy(_MULTIARRAY, "_reconstruct") for module in _MULTIARRAY},
    **{(module, "scalar"): _numpy(_MULTIARRAY, "scalar") for module in _MULTIARRAY},
    **{(module, "_frombuffer"): _numpy(_NUMERIC, "_frombuffer") for module in _NUMERIC},
}


def load_data(file: IO[bytes]) -> Any:
    """The plain data pickled in ``file`` (see :data:`DATA_KINDS`).

    Any other global raises :class:`RefusedGlobal`; a malformed pickle raises
    :class:`pickle.UnpicklingError` or another ``ValueError``/``TypeError``/``EOFError``.
    """
    return RestrictedUnpickler(file, DATA_GLOBALS).load()
