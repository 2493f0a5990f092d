"""Dataset fingerprints: every change a job must notice changes them, nothing else does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vitscope.io import fingerprint


@pytest.fixture(autouse=True)
def fresh_cache():
    """Each check looks at the files as they are now (the cache lasts one planning process)."""
    fingerprint.forget()
    yield
    fingerprint.forget()


def _tree(root: Path) -> list[Path]:
    files = []
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            path = root / cls / f"{i}.jpg"
            path.write_bytes(bytes([i]) * (10 + i))
            os.utime(path, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + i))
            files.append(path)
    return files


def _now(folders: list[Path], mode: str = "stat", recursive: bool = False) -> str:
    fingerprint.forget()
    return fingerprint.folders([str(f) for f in folders], mode, recursive)


def test_stat_mode_sees_every_change(tmp_path: Path) -> None:
    _tree(tmp_path)
    folders = [tmp_path / "a", tmp_path / "b"]
    before = _now(folders)
    assert _now(folders) == before  # nothing changed: the same fingerprint
    changes = {
        "added": lambda: (tmp_path / "a" / "9.jpg").write_bytes(b"new"),
        "removed": lambda: (tmp_path / "a" / "2.jpg").unlink(),
        "renamed": lambda: (tmp_path / "a" / "0.jpg").rename(tmp_path / "a" / "0b.jpg"),
        "moved to the other class": lambda: (tmp_path / "a" / "0b.jpg").rename(tmp_path / "b" / "0b.jpg"),
        # same size, older date: a copy that kept its time stamp still differs
        "rewritten in place": lambda: (
            (tmp_path / "b" / "1.jpg").write_bytes(b"\x09" * 11),
            os.utime(tmp_path / "b" / "1.jpg", ns=(1, 1)),
        ),
        "touched": lambda: os.utime(tmp_path / "b" / "2.jpg", ns=(5, 5)),
    }
    seen = {before}
    for name, change in changes.items():
        change()
        now = _now(folders)
        assert now not in seen, f"a file {name} left the fingerprint unchanged"
        seen.add(now)


def test_content_mode_ignores_dates_but_not_bytes(tmp_path: Path) -> None:
    _tree(tmp_path)
    folders = [tmp_path / "a"]
    before = _now(folders, "content")
    os.utime(tmp_path / "a" / "1.jpg", ns=(7, 7))
    assert _now(folders, "content") == before
    (tmp_path / "a" / "1.jpg").write_bytes(b"\x02" * 11)  # same size, other bytes
    assert _now(folders, "content") != before


def test_listing_mode_sees_names_only(tmp_path: Path) -> None:
    _tree(tmp_path)
    folders = [tmp_path / "a"]
    before = _now(folders, "listing")
    (tmp_path / "a" / "1.jpg").write_bytes(b"other size")
    assert _now(folders, "listing") == before  # the documented blind spot of this mode
    (tmp_path / "a" / "7.jpg").write_bytes(b"")
    assert _now(folders, "listing") != before


def test_off_mode_is_empty_and_modes_are_checked(tmp_path: Path) -> None:
    _tree(tmp_path)
    assert fingerprint.folders([str(tmp_path / "a")], "off") == ""
    with pytest.raises(ValueError, match="fingerprint mode 'sha1'"):
        fingerprint.folders([str(tmp_path / "a")], "sha1")


def test_recursive_scan_and_single_files(tmp_path: Path) -> None:
    _tree(tmp_path)
    flat = _now([tmp_path])
    deep = _now([tmp_path], recursive=True)
    (tmp_path / "a" / "0.jpg").write_bytes(b"changed")
    assert _now([tmp_path]) == flat  # only files directly in the folder count without recursion
    assert _now([tmp_path], recursive=True) != deep
    single = _now([tmp_path / "a" / "1.jpg"])
    (tmp_path / "a" / "1.jpg").write_bytes(b"changed too")
    assert _now([tmp_path / "a" / "1.jpg"]) != single


def test_files_reuses_the_scan_and_equals_a_fresh_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = [str(p) for p in _tree(tmp_path)]
    fresh = fingerprint.files(files)
    fingerprint.forget()
    fingerprint.folders([str(tmp_path / "a"), str(tmp_path / "b")])
    calls = []
    real = os.stat
    monkeypatch.setattr(fingerprint.os, "stat", lambda p, *a, **k: calls.append(p) or real(p, *a, **k))
    assert fingerprint.files(files) == fresh
    assert calls == []  # every stamp came from the folder scans
    assert fingerprint.files(files[:-1]) != fresh  # one image fewer
    assert fingerprint.files(files[::-1]) != fresh  # order is part of an index


def test_recursive_scan_equals_the_union_of_its_folders(tmp_path: Path) -> None:
    _tree(tmp_path)
    (tmp_path / "a" / "deep").mkdir()
    (tmp_path / "a" / "deep" / "z.png").write_bytes(b"z")
    deep = fingerprint.scan(str(tmp_path), "stat", recursive=True)
    union = {}
    for folder in (tmp_path / "a", tmp_path / "a" / "deep", tmp_path / "b"):
        union.update(fingerprint.scan(str(folder), "stat"))
    assert deep == union and list(deep) == sorted(deep)
    stat = os.stat(tmp_path / "a" / "deep" / "z.png")
    assert deep[str(tmp_path / "a" / "deep" / "z.png")] == (stat.st_size, stat.st_mtime_ns)


def test_undecodable_names_are_fingerprinted(tmp_path: Path) -> None:
    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "ok.jpg").write_bytes(b"1")
    os.close(os.open(os.fsencode(folder) + b"/caf\xe9.jpg", os.O_CREAT | os.O_WRONLY))
    before = _now([folder])
    os.unlink(os.fsencode(folder) + b"/caf\xe9.jpg")
    assert _now([folder]) != before


def test_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        fingerprint.folders([str(tmp_path / "nope")])
