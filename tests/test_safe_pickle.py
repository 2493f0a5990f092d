"""Restricted unpickling (vitscope.io.safe_pickle) and the ground-truth reader built on it.

Every refused payload is first shown to run under plain ``pickle.loads`` (it writes a
marker file), so the refusal tests could fail.
"""

from __future__ import annotations

import builtins
import collections
import io
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from vitscope.errors import DatasetError
from vitscope.io import datasets as data
from vitscope.io import safe_pickle


def gnd_content() -> dict:
    """A revisited ground truth as revisitop ships it: str lists, int64 arrays, float boxes."""
    return {
        "imlist": ["all_souls_000000", "ashmolean_000001", "radcliffe_camera_000002"],
        "qimlist": ["all_souls_000013", "ashmolean_000058"],
        "gnd": [
            {"bbx": [136.5, 34.1, 648.5, 955.9], "easy": np.array([0, 2]), "hard": np.array([1]),
             "junk": np.array([], dtype=np.int64)},
            {"bbx": [np.float64(25.0), 1.5, 1001.0, 767.0], "easy": np.array([1], dtype=np.int32),
             "hard": np.array([], dtype=np.int64), "junk": np.array([0, 2])},
        ],
    }


def assert_same(a: object, b: object) -> None:
    """Equal structure; arrays equal in dtype, shape and values."""
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    else:
        assert a == b


def as_numpy1(blob: bytes) -> bytes:
    """The same pickle as numpy 1.x writes it: ``numpy.core.*`` instead of ``numpy._core.*``."""
    out = blob
    for new_name, old_name in (("numpy._core.multiarray", "numpy.core.multiarray"),
                               ("numpy._core.numeric", "numpy.core.numeric")):
        new, old = new_name.encode(), old_name.encode()
        out = out.replace(b"c" + new + b"\n", b"c" + old + b"\n")  # GLOBAL (protocols 0-3)
        out = out.replace(b"\x8c" + bytes([len(new)]) + new, b"\x8c" + bytes([len(old)]) + old)  # SHORT_BINUNICODE
    return pickletools.optimize(out)  # re-frames protocol 4-5 pickles after the length change


def global_modules(blob: bytes) -> set[str]:
    """Modules named by GLOBAL or pushed as strings before STACK_GLOBAL (a superset)."""
    names = set()
    for op, arg, _ in pickletools.genops(blob):
        if op.name == "GLOBAL":
            names.add(arg.split(" ")[0])
        elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE") and str(arg).startswith("numpy"):
            names.add(arg)
    return names


# --------------------------------------------------------------------------- what loads


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_revisited_ground_truth_loads_with_every_protocol(protocol: int) -> None:
    content = gnd_content()
    blob = pickle.dumps(content, protocol=protocol)
    assert_same(safe_pickle.load_data(io.BytesIO(blob)), content)


@pytest.mark.parametrize("protocol", [2, 5])
def test_numpy1_module_paths_load(protocol: int) -> None:
    content = {**gnd_content(), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
               "strided": np.arange(10)[::3], "scalar": np.int64(7)}
    blob = as_numpy1(pickle.dumps(content, protocol=protocol))
    modules = global_modules(blob)
    assert "numpy.core.multiarray" in modules and not any(m.startswith("numpy._core") for m in modules)
    if protocol == 5:
        assert "numpy.core.numeric" in modules  # contiguous arrays go through _frombuffer
    assert_same(safe_pickle.load_data(io.BytesIO(blob)), content)


def test_plain_containers_load() -> None:
    content = {"set": {1, 2}, "frozen": frozenset("ab"), "bytes": b"\x00\xff", "empty": b"", "ba": bytearray(b"x"),
               "complex": 1 + 2j, "ordered": collections.OrderedDict(a=1), "tuple": (None, True, 2**70, -0.5)}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert safe_pickle.load_data(io.BytesIO(pickle.dumps(content, protocol=protocol))) == content


# --------------------------------------------------------------------------- what is refused


class Payload:
    """Unpickling calls ``function(*args)``: each one below writes ``marker``."""

    def __init__(self, function: object, *args: object) -> None:
        self.function, self.args = function, args

    def __reduce__(self) -> tuple:
        return self.function, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    return {
        "exec": Payload(builtins.exec, f"open({str(marker)!r}, 'w').write('ran')"),
        "open": Payload(builtins.open, str(marker), "w"),
        "os.system": Payload(os.system, f"touch '{marker}'"),
        "numpy.save": Payload(np.save, str(marker), np.zeros(1)),
    }


@pytest.mark.parametrize("kind", ["exec", "open", "os.system", "numpy.save"])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_payloads_are_refused_and_never_run(tmp_path: Path, kind: str, protocol: int) -> None:
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(payloads(live)[kind], protocol=protocol))
    assert live.exists() or live.with_suffix(".npy").exists()  # the payload does run under pickle.loads
    marker = tmp_path / "marker"
    blob = pickle.dumps({"imlist": [payloads(marker)[kind]]}, protocol=protocol)
    with pytest.raises(safe_pickle.RefusedGlobal, match="refused to load global") as err:
        safe_pickle.load_data(io.BytesIO(blob))
    assert f"{err.value.module}.{err.value.name}" in str(err.value)
    assert not marker.exists() and not marker.with_suffix(".npy").exists()


def test_codecs_encode_only_decodes_latin1_strings() -> None:
    blob = pickle.dumps(Payload(__import__("_codecs").encode, "eJwDAAAAAAE=", "base64"), protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refused _codecs.encode"):
        safe_pickle.load_data(io.BytesIO(blob))


def test_persistent_ids_are_refused() -> None:
    class Persistent(pickle.Pickler):
        def persistent_id(self, obj: object) -> object:
            return "outside" if obj == "x" else None

    buffer = io.BytesIO()
    Persistent(buffer, protocol=2).dump(["x"])
    with pytest.raises(pickle.UnpicklingError, match="refused persistent id"):
        safe_pickle.load_data(io.BytesIO(buffer.getvalue()))


# --------------------------------------------------------------------------- the ground-truth reader


def write_gnd(root: Path, name: str, content: object, protocol: int = 2) -> Path:
    (root / name).mkdir(parents=True, exist_ok=True)
    path = root / name / f"gnd_{name}.pkl"
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 5])
def test_read_gnd_reads_the_revisitop_layout(tmp_path: Path, protocol: int) -> None:
    content = gnd_content()
    path = write_gnd(tmp_path, "roxford5k", content, protocol)
    path.write_bytes(as_numpy1(path.read_bytes()))
    assert_same(data.read_gnd(tmp_path, "roxford5k"), content)


def test_read_gnd_refuses_a_payload_naming_file_and_global(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    content = gnd_content()
    content["gnd"][0]["bbx"] = Payload(os.system, f"touch '{marker}'")
    write_gnd(tmp_path, "roxford5k", content)
    with pytest.raises(DatasetError, match=r"datasets\.ox: '.*roxford5k/gnd_roxford5k\.pkl': refused to load "
                                           r"global (posix|os)\.system; ground-truth pickles may hold only dicts"):
        data.read_gnd(tmp_path, "roxford5k", key="datasets.ox")
    with pytest.raises(DatasetError, match="gnd_roxford5k.pkl"):
        data.index_revisited(tmp_path, "roxford5k")
    assert not marker.exists()


def test_read_gnd_names_the_file_of_a_malformed_pickle(tmp_path: Path) -> None:
    path = write_gnd(tmp_path, "rparis6k", gnd_content())
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DatasetError, match=r"rparis6k/gnd_rparis6k\.pkl' is not a readable pickle"):
        data.read_gnd(tmp_path, "rparis6k")
