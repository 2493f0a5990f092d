"""Bad input and interrupted runs end in a clear error and leave no partial output;
two CPU runs of the demo are bit-identical.

The readers' own errors are unit-tested beside them; here each bad input goes
through the workflow (Snakemake, the rule's script, the package) and the test
checks the message a user sees and that nothing half-written is left:

| bad input | unit tests | here |
|---|---|---|
| missing checkpoint | test_models (checkpoint errors), test_formats (missing file) | dry run names the key and file |
| wrong-family checkpoint | test_formats (file of another family) | extract job fails, no dump |
| missing dataset root | test_data (imagefolder errors) | index job fails, no index |
| wrong dataset layout | test_data (imagefolder, coco, revisited) | flat folder; revisited without gnd |
| corrupt image | test_data (corrupt image) | extract job fails mid-way, no dump |
| unknown config key | test_workflow (bad config) | nested and top-level typos |
| killed extraction | - | SIGKILL mid-way, plain rerun completes |
| disk full | - | file size limit, error names the dump |
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from test_workflow import TINY, copy_workflow, snakemake

from vitscope.errors import OutputError
from vitscope.io import dumps
from vitscope.models import registry as models

pytestmark = [pytest.mark.workflow]

MODEL = {"arch": "test_vit", "weights": "random", "seed": 0, "image_size": 32}
EXTRACT = {"device": "cpu", "batch_size": 4, "cka_batch_size": 4, "exemplars": 1, "num_workers": 0}


def write_images(folder: Path, count: int, start: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + count):
        Image.fromarray(rng.integers(0, 255, (24, 28, 3), dtype=np.uint8)).save(folder / f"img_{i:03d}.png")


def temporaries(root: Path) -> list[Path]:
    """Temporary files of atomic writes (``.<name>.tmp-<host>-<pid>``) under ``root``."""
    return sorted(p for p in root.rglob(".*.tmp-*"))


def workflow(tmp_path: Path, config: dict) -> Path:
    return copy_to(tmp_path / "wf", {"extract": EXTRACT, **config})


def copy_to(dest: Path, config: dict) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    return copy_workflow(dest, config)


# --------------------------------------------------------------------------- bad inputs


def test_bad_inputs_fail_their_jobs_and_leave_nothing(tmp_path: Path) -> None:
    """One run with --keep-going: the good job completes, each bad one fails with its
    error in its log (and on the console) and leaves no output and no temporary file."""
    data = tmp_path / "data"
    write_images(data / "imgs/a", 4)
    write_images(data / "corrupt/a", 6)
    (data / "corrupt/a/img_005.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")  # in the second batch
    write_images(data / "flat", 3)  # images directly in the root: no class folders
    reference, _ = models.build(models.spec_from_config("r", MODEL))
    checkpoint = tmp_path / "wf/weights/mocov3.pth"  # a MoCo-v3 file configured as DINO
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": {f"module.base_encoder.{k}": v for k, v in reference.state_dict().items()}}, checkpoint)
    workdir = workflow(tmp_path, {
        "models": {
            "good": MODEL,
            "other_family": {"arch": "test_vit", "image_size": 32, "weights": "checkpoint",
                             "checkpoint": "weights/mocov3.pth", "format": "dino"},
        },
        "datasets": {
            "imgs": {"kind": "imagefolder", "root": str(data / "imgs"), "products": ["tokens"]},
            "corrupt": {"kind": "imagefolder", "root": str(data / "corrupt"), "products": ["tokens"]},
            "flat": {"kind": "imagefolder", "root": str(data / "flat")},
        },
    })
    proc = snakemake(
        workdir, "--keep-going", "results/dumps/good/imgs.h5", "results/dumps/good/corrupt.h5",
        "results/dumps/other_family/imgs.h5", "results/index/flat.csv", check=False,
    )
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (workdir / "results/dumps/good/imgs.h5").is_file()
    expected = {
        "extract/good/corrupt": ("results/dumps/good/corrupt.h5",
                                 f"DatasetError: image '{data}/corrupt/a/img_005.png' is corrupt or unreadable"),
        "extract/other_family/imgs": ("results/dumps/other_family/imgs.h5",
                                      "CheckpointError: models.other_family.checkpoint = 'weights/mocov3.pth' is not "
                                      "a 'dino' checkpoint"),
        "index_dataset/flat": ("results/index/flat.csv",
                               f"has no class folders (expected '{data}/flat/<class>/<image>')"),
    }
    for log, (output, message) in expected.items():
        assert message in (workdir / f"logs/{log}.log").read_text(), log
        assert message.split(": ", 1)[-1] in console, log
        assert not (workdir / output).exists(), output
    assert "looks like a MoCo-v3 checkpoint (format 'mocov3')" in console
    assert temporaries(workdir / "results") == []


@pytest.mark.parametrize(
    ("change", "messages"),
    [
        pytest.param(
            lambda c, d: c["models"].update(m={**MODEL, "weights": "checkpoint", "checkpoint": "weights/nope.pth"}),
            ["models.m.checkpoint = 'weights/nope.pth': no such file", "rule extract", "model=m"],
            id="missing-checkpoint",
        ),
        pytest.param(
            lambda c, d: (c["datasets"].update(r={"kind": "revisited", "root": str(d), "name": "roxford5k"}),
                          c["analyses"]["retrieval"].update(datasets=["r"])),
            ["Missing input files for rule index_dataset", "roxford5k/gnd_roxford5k.pkl"],
            id="revisited-without-ground-truth",
        ),
        pytest.param(
            lambda c, d: (c["datasets"].update(no_root={"kind": "imagefolder", "root": str(d / "nowhere")},
                                               no_list={"kind": "imagelist", "list": str(d / "list.txt")}),
                          c["analyses"]["attention_distance"]["datasets"].extend(["no_root", "no_list"])),
            ["2 input(s) of this config do not exist", "datasets.no_root.root = '", "nowhere': no such folder",
             "datasets.no_list.list = '"],
            id="missing-roots-all-at-once",
        ),
        pytest.param(
            lambda c, d: c["models"]["tiny_a"].update(chekpoint="weights/a.pth"),
            ["config error: models.tiny_a: unknown key 'chekpoint' (did you mean 'checkpoint'?)"],
            id="unknown-model-key",
        ),
        pytest.param(
            lambda c, d: c.update(analysis={"cka": {"datasets": ["toy"]}}),
            ["config error: the config: unknown key 'analysis' (did you mean 'analyses'?)"],
            id="unknown-top-level-key",
        ),
    ],
)
def test_bad_config_fails_before_any_job_naming_the_file_or_key(tmp_path: Path, change, messages) -> None:
    config = yaml.safe_load(yaml.safe_dump(TINY))
    change(config, tmp_path / "data")
    workdir = copy_to(tmp_path / "wf", config)
    proc = snakemake(workdir, "--dry-run", check=False)
    assert proc.returncode != 0
    for message in messages:
        assert message in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


def test_zoo_entries_check_their_checkpoint_before_any_job_and_take_it_as_input(tmp_path: Path) -> None:
    """A {family, size, checkpoint} entry (the study configs' kind) is checked like a flat one: a missing
    file fails the dry run naming the key, the file and its publisher; a present one is a job input."""
    config = yaml.safe_load(yaml.safe_dump(TINY))
    config["models"]["zdino"] = {"family": "dino", "size": "S/16", "checkpoint": "weights/dino_s16.pth"}
    workdir = copy_to(tmp_path / "wf", config)
    proc = snakemake(workdir, "--dry-run", "results/dumps/zdino/toy.h5", check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not (workdir / "results").exists()
    assert ("models.zdino.checkpoint = 'weights/dino_s16.pth': no such file (dino_deitsmall16_pretrain.pth is "
            "published by facebookresearch/dino at https://dl.fbaipublicfiles.com/dino/") in text
    (workdir / "weights").mkdir()
    (workdir / "weights/dino_s16.pth").write_bytes(b"")
    text = snakemake(workdir, "--dry-run", "results/dumps/zdino/toy.h5").stdout
    extract = text[text.index("rule extract:"):].split("\n\n")[0]
    assert "weights/dino_s16.pth" in extract.split("input:")[1].split("\n")[0]


# --------------------------------------------------------------------------- interrupted runs


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), deepest last."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _open_for_writing(fifo: Path, proc: subprocess.Popen, timeout: float = 300) -> int:
    """Open ``fifo`` for writing once a reader has opened it (the extraction reached it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as err:
            if err.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended before reading the image:\n{proc.communicate()}")
        time.sleep(0.1)
    raise AssertionError("the extraction never reached the blocking image")


def test_killed_extraction_leaves_no_dump_and_a_plain_rerun_completes(tmp_path: Path) -> None:
    """Image 9 of 12 is a named pipe: the extraction blocks there after writing its first
    batches (batch size 4) into the temporary dump. Snakemake and the job are then
    SIGKILLed: no dump exists, only a stale temporary file, and a plain rerun (after
    --unlock, which a killed Snakemake needs) completes and removes it."""
    folder = tmp_path / "data/a"
    write_images(folder, 12)
    # fingerprint off: the index made now keeps listing img_008.png once it is a pipe (a
    # folder listing skips anything but regular files, so a re-index would drop it)
    workdir = workflow(tmp_path, {
        "models": {"m": MODEL},
        "datasets": {"d": {"kind": "imagefolder", "root": str(tmp_path / "data"), "products": ["tokens"],
                           "fingerprint": "off"}},
    })
    snakemake(workdir, "results/index/d.csv")
    fifo = folder / "img_008.png"
    fifo.unlink()
    os.mkfifo(fifo)
    target = "results/dumps/m/d.h5"
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("snakemake")), "--cores", "1", target], cwd=workdir,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        fd = _open_for_writing(fifo, proc)
    finally:
        for pid in [proc.pid, *_descendants(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.communicate()
    os.close(fd)
    stale = temporaries(workdir / "results/dumps")
    assert len(stale) == 1 and stale[0].stat().st_size > 0  # killed mid-way, batches written
    assert not (workdir / target).exists()

    fifo.unlink()
    write_images(folder, 1, start=8)
    snakemake(workdir, "--unlock")
    snakemake(workdir, target)
    with h5py.File(workdir / target) as dump:
        assert dump["tokens/cls"].shape[0] == 12 and np.isfinite(dump["tokens/cls"][...]).all()
    assert temporaries(workdir / "results") == []


DISK_FULL = textwrap.dedent(
    """
    import resource, signal, sys
    from vitscope.extract import run as extract
    from vitscope.io import datasets as data
    root, output = sys.argv[1:3]
    data.write_index(data.index_imagefolder(root), output + ".csv")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
    extract.extract_dump(
        "m", "d", {"arch": "test_vit", "image_size": 32}, output + ".csv", output,
        extract.ExtractOptions(products=("tokens", "cls_attention"), batch_size=4, exemplars=0), device="cpu",
    )
    """
)


def test_disk_full_names_the_dump_and_leaves_nothing(tmp_path: Path) -> None:
    """A file size limit (RLIMIT_FSIZE) stands in for a full disk: the dump's writes fail
    with EFBIG; the error names the dump and neither it nor its temporary file is left."""
    write_images(tmp_path / "data/a", 40)
    output = tmp_path / "out/dump.h5"
    output.parent.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", DISK_FULL, str(tmp_path / "data"), str(output)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert f"OutputError: could not write '{output}': file too large" in proc.stderr, proc.stderr[-3000:]
    assert sorted(p.name for p in output.parent.iterdir()) == ["dump.h5.csv"]


@pytest.mark.parametrize(
    "err",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("Can't decrement id ref count (file write failed: ..., errno = 28, error message = 'No space')"),
    ],
    ids=["oserror", "hdf5-message"],
)
def test_no_space_becomes_an_output_error(tmp_path: Path, err: Exception) -> None:
    target = tmp_path / "table.csv"
    with pytest.raises(OutputError, match=r"could not write '.*table.csv': no space left on the device"):
        with dumps.atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise err
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_are_removed_live_ones_kept(tmp_path: Path) -> None:
    import socket

    target = tmp_path / "d.h5"
    host = socket.gethostname()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = [tmp_path / f".d.h5.tmp-{host}-{dead.stdout.strip()}", tmp_path / ".d.h5.tmp-otherhost-1",
             tmp_path / ".d.h5.tmp-123"]  # a dead writer here, a writer elsewhere, the old naming
    live = tmp_path / f".d.h5.tmp-{host}-{os.getppid()}"
    other = tmp_path / ".e.h5.tmp-otherhost-1"
    for path in [*stale, live, other]:
        path.write_text("x")
    with dumps.atomic_path(target) as tmp:
        tmp.write_text("done")
    assert target.read_text() == "done"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["d.h5", live.name, other.name])


# --------------------------------------------------------------------------- determinism


def _h5_items(path: Path) -> dict[str, tuple]:
    """Every dataset (dtype, shape, raw bytes) and every attribute of a dump, by path."""
    out: dict[str, tuple] = {}

    def visit(name: str, obj) -> None:
        for key, value in obj.attrs.items():
            out[f"{name}@{key}"] = ("attr", repr(np.asarray(value).tolist()))
        if isinstance(obj, h5py.Dataset):
            values = obj[...]
            raw = values.tobytes() if values.dtype != object else repr(values.tolist()).encode()
            out[name] = (str(obj.dtype), obj.shape, raw)

    with h5py.File(path) as handle:
        visit("/", handle)
        handle.visititems(visit)
    return out


#: results that legitimately differ between runs: Snakemake's per-job time and memory
VARYING = ("results/benchmarks/",)


@pytest.mark.slow
def test_two_cpu_runs_of_the_demo_are_bit_identical(tiny_runs: dict[str, Path]) -> None:
    """Two independent runs of the TINY demo in two folders (run at the same time, see
    tests/conftest.py): every dump dataset and attribute is bit-identical, every other
    result (tables, arrays, indexes, figures) byte-identical."""
    compare_runs(tiny_runs["first"], tiny_runs["second"])


def compare_runs(tiny_run: Path, second: Path) -> None:
    files = sorted(p.relative_to(tiny_run).as_posix() for p in (tiny_run / "results").rglob("*") if p.is_file())
    again = sorted(p.relative_to(second).as_posix() for p in (second / "results").rglob("*") if p.is_file())
    files = [f for f in files if not f.startswith(VARYING) and not f.endswith("report.zip")]
    assert files == [f for f in again if not f.startswith(VARYING)]
    assert any(f.endswith(".h5") for f in files) and any(f.endswith(".tex") for f in files)
    different = []
    for name in files:
        if name.endswith(".h5"):
            a, b = _h5_items(tiny_run / name), _h5_items(second / name)
            different += [f"{name}:{key}" for key in sorted(set(a) | set(b)) if a.get(key) != b.get(key)]
        elif (tiny_run / name).read_bytes() != (second / name).read_bytes():
            different.append(name)
    assert not different, f"differ between two runs: {different}"
