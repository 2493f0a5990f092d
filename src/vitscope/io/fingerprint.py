"""Fingerprints of dataset files: has anything a job reads changed since it ran? (no torch)

The workflow cannot see inside a dataset folder: a folder given as an input
only tells Snakemake its own modification time, which changes when a file is
added or removed but not when one is overwritten, and most dataset files are
not inputs at all. So every job that reads a dataset takes a fingerprint of
what it reads as a parameter; Snakemake reruns it when the fingerprint changes.

A fingerprint is the SHA-256 of one line per file, sorted by path::

    <path relative to its folder> <TAB> <size in bytes> <TAB> <mtime in ns>

in mode ``stat`` (the default: any added, removed, renamed, resized or
rewritten file changes it), or ``<path> <TAB> <SHA-256 of the content>`` in mode
``content`` (a file rewritten with the same bytes, or copied with a new
modification time, changes nothing; every byte is read), or the sorted names
alone in mode ``listing`` (no ``stat`` per file: catches added, removed and
renamed files, not files overwritten in place). Mode ``off`` is the empty string:
the dataset is never re-indexed because it changed.

Folders are scanned once per process (:func:`scan` is cached), so the index
rule and the jobs that read the indexed images share one pass of
``os.scandir`` (benchmarks/fingerprint.py measures it; docs/hostile-inputs.md
has the numbers).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

MODES = ("stat", "content", "listing", "off")

#: (size, mtime_ns) of a file, or its content digest in mode content; None in mode listing
Stamp = tuple[int, int] | str | None


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"fingerprint mode {mode!r}; expected one of {', '.join(MODES)}")


def _content_digest(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stamp(path: str, mode: str) -> Stamp:
    if mode == "listing":
        return None
    if mode == "content":
        return _content_digest(path)
    st = os.stat(path)
    return (st.st_size, st.st_mtime_ns)


def _walk(folder: str, mode: str, recursive: bool) -> dict[str, Stamp]:
    """Every regular file of ``folder`` (and below it when ``recursive``) -> its stamp, sorted by path.

    One ``os.scandir`` pass; in mode stat the stamp is the entry's own ``stat``
    (about 3 us a file on a local disk, a quarter of that for names alone).
    """
    found: list[tuple[str, Stamp]] = []
    todo = [folder]
    while todo:
        current = todo.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                if entry.is_file():
                    if mode == "stat":
                        st = entry.stat()
                        found.append((entry.path, (st.st_size, st.st_mtime_ns)))
                    elif mode == "content":
                        found.append((entry.path, _content_digest(entry.path)))
                    else:
                        found.append((entry.path, None))
                elif recursive and entry.is_dir():
                    todo.append(entry.path)
    return dict(sorted(found))


#: every scan of this process: (folder, mode, recursive) -> {path: stamp}
_SCANS: dict[tuple[str, str, bool], dict[str, Stamp]] = {}
#: every stamp a scan found: (path, mode) -> stamp
_KNOWN: dict[tuple[str, str], Stamp] = {}


def scan(folder: str, mode: str = "stat", recursive: bool = False) -> dict[str, Stamp]:
    """Every regular file of ``folder`` (below it too when ``recursive``) -> its stamp, sorted by path.

    Cached for the process (a workflow plans its jobs against one state of the
    data; :func:`forget` empties the cache). ``FileNotFoundError`` if ``folder``
    does not exist.
    """
    _check_mode(mode)
    key = (folder, mode, recursive)
    if key not in _SCANS:
        table = _walk(folder, mode, recursive)
        _SCANS[key] = table
        _KNOWN.update(((path, mode), stamp) for path, stamp in table.items())
    return _SCANS[key]


def forget() -> None:
    """Empty the scan cache (for a process that watches data change, e.g. a test)."""
    _SCANS.clear()
    _KNOWN.clear()


def _line(path: str, base: str, stamp: Stamp) -> str:
    # scan paths are base + separator + name: slicing is exact and far cheaper than relpath
    rel = path[len(base) + 1 :] if base and path.startswith(base) else path
    if not rel.isascii():
        rel = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if stamp is None:
        return rel
    if isinstance(stamp, str):
        return f"{rel}\t{stamp}"
    return f"{rel}\t{stamp[0]}\t{stamp[1]}"


def digest(lines: Iterable[str]) -> str:
    """SHA-256 (hex, first 32 characters) of the lines, newline-terminated, in the given order."""
    return hashlib.sha256("".join(f"{line}\n" for line in lines).encode()).hexdigest()[:32]


def folders(paths: Sequence[str | Path], mode: str = "stat", recursive: bool = False) -> str:
    """Fingerprint of every file in ``paths`` (folders, scanned, or single files), in the given order.

    Each folder's lines are headed by the folder itself, so moving a file between
    two folders changes the fingerprint.
    """
    _check_mode(mode)
    if mode == "off":
        return ""
    lines: list[str] = []
    for item in (os.path.normpath(str(p)) for p in paths):
        if os.path.isdir(item):
            lines.append(f"[{item}]")
            table = scan(item, mode, recursive)
            lines += [_line(p, item, table[p]) for p in table]
        elif os.path.isfile(item):
            lines.append(f"[{item}]")
            lines.append(_line(item, "", _stamp(item, mode)))
        else:
            raise FileNotFoundError(f"no such file or folder: {item}")
    return digest(lines)


def files(paths: Sequence[str], mode: str = "stat") -> str:
    """Fingerprint of exactly these files, in this order (e.g. the images an index lists).

    Stamps come from the folder scans already made in this process where they
    hold the file, so an indexed dataset is stat-ed once; a file that no longer
    exists is stamped ``missing``.
    """
    _check_mode(mode)
    if mode == "off":
        return ""
    lines = []
    for path in paths:
        if (path, mode) in _KNOWN:
            lines.append(_line(path, "", _KNOWN[(path, mode)]))
        elif os.path.isfile(path):
            lines.append(_line(path, "", _stamp(path, mode)))
        else:  # gone since it was indexed: the index job says so when it reruns
            lines.append(_line(path, "", "missing"))
    return digest(lines)
