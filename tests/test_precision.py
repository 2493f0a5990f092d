"""``extract.precision`` (vitscope.extract.precision, docs/dumps.md#precision).

Tiny extractions on the CPU: timm ``test_vit`` at 64 px and the stress model
(vitscope.testing.stress: massive activations, attention sinks, zero-mass rows).
A dump not in fp32 records, per dataset, the error of its first batch against the
same batch in fp32; here those errors are recomputed from an fp32 dump of the same
images, held to a stated bound, and the low precisions are shown to create no
zero-mass row and no NaN.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.errors import ConfigError, DumpError, ModelError
from vitscope.extract import precision
from vitscope.extract import run as extract
from vitscope.io import datasets as data
from vitscope.io import dumps
from vitscope.io import preprocess as loading
from vitscope.models import registry as models
from vitscope.testing import stress

CPU = torch.device("cpu")
TEST_VIT = {"arch": "test_vit", "image_size": 64}
#: N = 12 images, batches of 8 and 4: the first batch (8 images) is what the errors measure
OPTIONS = {"batch_size": 8, "cka_batch_size": 4, "exemplars": 12}
FIRST = 8
#: largest relative error (max |x - x_fp32| / max |x_fp32| per dataset) allowed on the first
#: batch; measured on this CPU: test_vit 0.008 (bf16) and 0.001 (fp16), the stress model 0.0013
#: and 0.00016 (its Gram matrices of the CLS token excepted, below)
BOUND = {"bf16": 0.03, "fp16": 0.005, "tf32": 0.0}
#: the stress model's CLS token is the same for every image up to float32 rounding (block 1 sends
#: every spatial query to CLS): its centred Gram matrices are ~1e-7 in fp32, rounding noise, and
#: their relative error says nothing (measured 2.5 in bf16); their absolute error is bounded instead
STRESS_CLS_GRAMS = ("cka/blocks/cls", "cka/norms/cls")


def write_images(root: Path, n: int = 12) -> list[data.Entry]:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / f"class_{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = (int(v) for v in rng.integers(40, 100, size=2))
        Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(folder / f"img_{i}.png")
    return data.index_imagefolder(root)


def model_of(name: str) -> tuple[models.ModelSpec, torch.nn.Module]:
    if name == "stress":
        return models.spec_from_config("stress", {**stress.MODEL_ENTRY, "weights": "random"}), stress.stress_vit()
    spec = models.spec_from_config(name, TEST_VIT)
    return spec, models.build(spec)[0]


def extract_to(path: Path, name: str, entries: list[data.Entry], **options: Any) -> dict[str, Any]:
    spec, model = model_of(name)
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    meta = {"model": name, "dataset": "synthetic", **{k: v for k, v in spec.describe().items() if k != "alias"}}
    settings = extract.ExtractOptions(**{**OPTIONS, **options})
    with dumps.create_file(path) as handle:  # as extract_dump writes it: checksummed and sealed
        return extract.run(model, entries, transform, handle, settings, CPU, meta)


def read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    with dumps.open_dump(path) as handle:
        handle.visititems(lambda k, v: arrays.__setitem__(k, v[()]) if isinstance(v, h5py.Dataset) else None)
        return arrays, dict(handle.attrs)


@pytest.fixture(scope="module")
def entries(tmp_path_factory) -> list[data.Entry]:
    return write_images(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def dumped(entries, tmp_path_factory) -> dict[tuple[str, str], Path]:
    """(model, precision) -> dump, for test_vit and the stress model in fp32, bf16 and fp16."""
    root = tmp_path_factory.mktemp("dumps")
    out = {}
    for name in ("test_vit", "stress"):
        for p in ("fp32", "bf16", "fp16"):
            out[name, p] = root / f"{name}-{p}.h5"
            extract_to(out[name, p], name, entries, precision=p)
    return out


# --------------------------------------------------------------------------- what the dump records


def test_every_dump_records_its_precision(dumped):
    for (_, p), path in dumped.items():
        _, attrs = read(path)
        assert attrs["precision"] == p
        assert attrs["precision_matmul"] == {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[p]
        assert all(key in attrs for key in dumps.PRECISION_ERRORS) == (p != "fp32")


@pytest.mark.parametrize("name", ["test_vit", "stress"])
@pytest.mark.parametrize("p", ["bf16", "fp16"])
def test_recorded_errors_are_those_of_the_first_batch_and_within_the_bound(dumped, name, p):
    """One error per dataset of the first batch's products and of the sums; per-image datasets'
    errors equal max |x - x_fp32| over the first batch's images of the two dumps (the reference
    forward of the check is the fp32 dump's own first batch, bit for bit)."""
    low, attrs = read(dumped[name, p])
    ref, _ = read(dumped[name, "fp32"])
    with dumps.open_dump(dumped[name, p]) as handle:
        errors = dumps.precision_errors(handle)
    assert attrs["precision_error_images"] == FIRST
    per_batch = {"tokens/cls", "tokens/spatial_mean", "attention/cls", "attention/distance"}
    sums = {"attention/cls_sum", "attention/aligned_sum", "attention/spatial_query_sum", "attention/sink_sum"}
    grams = {f"cka/{g}/{r}" for g in ("blocks", "norms") for r in dumps.REPRESENTATIONS}
    assert per_batch | sums | grams | {"attention/zero_mass_rows", "exemplars/attention"} <= set(errors)
    # gram: the images are fed in a seeded permutation; per-image rows are at their dataset positions
    fed = extract.image_order(len(low["images/path"]), extract.ExtractOptions(**OPTIONS))[:FIRST]
    for key in per_batch:
        want = float(np.abs(low[key][fed].astype(np.float64) - ref[key][fed]).max())
        assert errors[key][0] == pytest.approx(want, rel=1e-6, abs=1e-12), key
        assert errors[key][1] == pytest.approx(want / float(np.abs(ref[key][fed]).max()), rel=1e-6), key
    assert errors["attention/zero_mass_rows"] == (0.0, 0.0)
    for key, (absolute, relative) in errors.items():
        assert math.isfinite(absolute) and absolute >= 0, key
        if name == "stress" and key in STRESS_CLS_GRAMS:
            assert absolute < 1e-5, key
        else:
            assert relative <= BOUND[p], (key, relative)


def test_fp32_dumps_record_no_errors_and_run_no_extra_forward(entries, tmp_path, monkeypatch):
    """fp32 is the code path of before: one fused reference forward on the first batch, one
    forward per batch, no autocast; the datasets are bit-identical to a dump with default options."""
    calls: list[str] = []
    real = torch.autocast.__init__

    def counted(self, *args, **kwargs):
        calls.append("autocast")
        real(self, *args, **kwargs)

    monkeypatch.setattr(torch.autocast, "__init__", counted)
    spec, model = model_of("test_vit")
    forwards = []
    original = model.forward_features
    model.forward_features = lambda x: (forwards.append(1), original(x))[1]
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    with h5py.File(tmp_path / "a.h5", "w") as handle:
        summary = extract.run(model, entries, transform, handle, extract.ExtractOptions(**OPTIONS), CPU, {})
    assert len(forwards) == 1 + 2 and calls == []  # the parity reference, then batches of 8 and 4
    assert summary["precision_errors"] == {}
    forwards.clear()
    with h5py.File(tmp_path / "b.h5", "w") as handle:
        extract.run(model, entries, transform, handle, extract.ExtractOptions(**OPTIONS, precision="bf16"), CPU, {})
    assert len(forwards) == 2 + 2  # and the first batch once more in fp32


def test_fp32_is_bit_identical_to_the_default(dumped, entries, tmp_path):
    extract_to(tmp_path / "default.h5", "test_vit", entries)
    a, attrs = read(tmp_path / "default.h5")
    b, _ = read(dumped["test_vit", "fp32"])
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert attrs["precision"] == "fp32"


def test_tf32_on_the_cpu_is_float32(entries, tmp_path, dumped):
    """TF32 is a CUDA mode: on the CPU the pass is float32, the dump says so, and the
    measured errors are exactly 0; the datasets equal the fp32 dump's."""
    extract_to(tmp_path / "tf32.h5", "test_vit", entries, precision="tf32")
    a, attrs = read(tmp_path / "tf32.h5")
    b, _ = read(dumped["test_vit", "fp32"])
    assert attrs["precision"] == "tf32" and attrs["precision_matmul"] == "float32"
    with dumps.open_dump(tmp_path / "tf32.h5") as handle:
        errors = dumps.precision_errors(handle)
    assert errors and all(e == (0.0, 0.0) for e in errors.values())
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key


def test_tf32_flags_are_scoped_and_restored():
    """On CUDA, tf32 turns TF32 on for matmul and cuDNN inside and restores what was set
    (setting the flags needs no GPU)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, False
        with precision.numerics("tf32", torch.device("cuda")):
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
        with pytest.raises(RuntimeError, match="inside"), precision.numerics("tf32", torch.device("cuda")):
            raise RuntimeError("inside")
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, False)
        with precision.numerics("tf32", CPU):  # nothing to switch on the CPU
            assert not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# --------------------------------------------------------------------------- zero mass and NaN


@pytest.mark.parametrize("p", ["bf16", "fp16"])
def test_low_precision_creates_no_zero_mass_rows_or_nan_on_the_stress_model(dumped, p):
    """The stress model's sink head has 98 zero-mass rows in fp32 (12 images); bf16 and fp16
    have exactly those, the same NaN-free distances and no non-finite value anywhere."""
    low, _ = read(dumped["stress", p])
    ref, _ = read(dumped["stress", "fp32"])
    np.testing.assert_array_equal(low["attention/zero_mass_rows"], ref["attention/zero_mass_rows"])
    assert ref["attention/zero_mass_rows"].sum() > 0
    for key, value in low.items():
        if value.dtype.kind == "f":
            assert np.isfinite(value).all(), key
        if value.dtype.kind == "f" and key in ref:
            assert value.dtype == ref[key].dtype, key  # sums stay float64, per-image values float32


def test_the_float32_softmax_is_what_keeps_fp16_rows(monkeypatch):
    """Without :class:`vitscope.extract.precision.Float32Softmax`, CPU autocast computes the
    softmax in float16 and the stress model's sink head loses every spatial row (mass below
    6e-8 rounds to 0); with it, the rows with zero mass are those of fp32."""
    model = stress.stress_vit()
    models.set_fused_attention(model, False)
    seen: dict[str, torch.Tensor] = {}
    model.blocks[0].attn.attn_drop.register_forward_hook(lambda m, a, o: seen.__setitem__("attn", o))
    images = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))

    def zero_rows(p: str) -> int:
        with torch.inference_mode(), precision.numerics(p, CPU):
            model.forward_features(images)
        mass = seen["attn"][:, 0, 2:, 2:].float().sum(dim=-1)
        return int((mass < torch.finfo(torch.float32).tiny).sum())

    want = zero_rows("fp32")
    assert 0 < want < 4 * 16
    assert zero_rows("fp16") == want and seen["attn"].dtype == torch.float32
    monkeypatch.setattr(precision.Float32Softmax, "SOFTMAX", frozenset())
    assert zero_rows("fp16") == 4 * 16 and seen["attn"].dtype == torch.float16


# --------------------------------------------------------------------------- errors, options, validation


def test_errors_are_normwise_and_infinite_where_finiteness_differs():
    ref = {"a": torch.tensor([1.0, -4.0, 0.5]), "b": torch.tensor([1.0, float("nan")]), "z": torch.zeros(3)}
    got = {"a": torch.tensor([1.5, -4.0, 0.5]), "b": torch.tensor([1.0, 2.0]), "z": torch.zeros(3), "x": ref["a"]}
    out = precision.errors(got, ref)
    assert sorted(out) == ["a", "b", "z"]
    assert out["a"] == (0.5, 0.5 / 4.0)
    assert out["b"] == (math.inf, math.inf)
    assert out["z"] == (0.0, 0.0)
    same_nan = precision.errors({"b": torch.tensor([3.0, float("nan")])}, {"b": ref["b"]})
    assert same_nan["b"] == (2.0, 2.0)


def test_an_unknown_precision_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"extract\.precision = 'fp64': must be one of fp32, tf32, bf16, fp16"):
        extract.ExtractOptions(precision="fp64")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.attrs.__setitem__("precision", "fp64"), "attribute 'precision' is 'fp64', expected one of"),
        (lambda f: f.attrs.__delitem__("precision_max_rel_error"), "has no attribute 'precision_max_rel_error'"),
        (lambda f: f.attrs.__setitem__("precision_max_abs_error", np.zeros(2)), "have shapes"),
    ],
)
def test_open_dump_checks_the_precision_attributes(dumped, tmp_path, change, message):
    path = tmp_path / "d.h5"
    path.write_bytes(dumped["test_vit", "bf16"].read_bytes())
    with h5py.File(path, "r+") as handle:
        change(handle)
        dumps.seal(handle)
    with pytest.raises(DumpError, match=f"dump '{path}'.*{message}.*rerun"):
        dumps.open_dump(path)


def test_a_dump_from_before_the_precision_attribute_is_fp32(dumped, tmp_path):
    path = tmp_path / "old.h5"
    path.write_bytes(dumped["test_vit", "fp32"].read_bytes())
    with h5py.File(path, "r+") as handle:
        del handle.attrs["precision"], handle.attrs["precision_matmul"]
        dumps.seal(handle)
    with dumps.open_dump(path) as handle:
        assert dumps.precision_errors(handle) == {}


def test_an_fp16_overflow_names_the_precision_and_the_block(entries, tmp_path):
    """Activations that fit float32 but not float16 (block 3's fc2 sums its hidden units
    with weight 1e5 into ~1e6 > 65504): fp32 extracts, fp16 fails naming the block and
    the precision."""
    spec, model = model_of("test_vit")
    with torch.no_grad():
        model.blocks[2].mlp.fc2.weight[0] = 1e5
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    meta = {"model": "tiny", "dataset": "synthetic"}
    with h5py.File(tmp_path / "fp32.h5", "w") as handle:
        extract.run(model, entries, transform, handle, extract.ExtractOptions(**OPTIONS), CPU, meta)
    with pytest.raises(ModelError) as err, h5py.File(tmp_path / "fp16.h5", "w") as handle:
        extract.run(model, entries, transform, handle, extract.ExtractOptions(**OPTIONS, precision="fp16"), CPU, meta)
    text = str(err.value)
    assert "block 3 of 6" in text and "overflow fp16 (extract.precision = fp16)" in text


#: the stress model in bf16 through the fused Triton kernel (the CUDA path of the attention
#: reductions, here in Triton's CPU interpreter) and through the torch reference: per-dataset
#: max |difference| of the two dumps, and the kernel's zero-mass count
KERNEL_CHECK = """
import json, sys, tempfile
from pathlib import Path
import h5py, numpy as np, torch
sys.path.insert(0, sys.argv[1])
import test_precision as t
from vitscope.extract import fused
root = Path(tempfile.mkdtemp())
entries = t.write_images(root / "images")
out = {}
launches = []
kernel_of = fused._spatial_kernel


class Counted:  # the kernel, counting its launches (a bf16 input would fall back to torch silently)
    def __getitem__(self, grid):
        launches.append(grid)
        return kernel_of[grid]


fused._spatial_kernel = Counted()
for kernel in (True, False):
    fused.available = (lambda device: True) if kernel else (lambda device: False)
    t.extract_to(root / f"{kernel}.h5", "stress", entries, precision="bf16")
    out[f"launches {kernel}"] = len(launches)
with h5py.File(root / "True.h5") as a, h5py.File(root / "False.h5") as b:
    for key in ("distance", "aligned_sum", "spatial_query_sum", "zero_mass_rows"):
        key = "attention/" + key
        out[key] = float(np.abs(a[key][()].astype(np.float64) - b[key][()]).max())
    out["zeros"] = int(a["attention/zero_mass_rows"][()].sum())
print(json.dumps(out))
"""


def test_bf16_through_the_fused_kernel_equals_the_torch_reductions():
    """Under autocast the hooks hand the kernel float32 probabilities (it takes no other
    dtype): the bf16 dump of the stress model is the same with the kernel and without it."""
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "VITSCOPE_FUSED": "1"}
    done = subprocess.run(
        [sys.executable, "-c", KERNEL_CHECK, str(Path(__file__).parent)], env=env, capture_output=True, text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out.pop("zeros") > 0
    launched = out.pop("launches True")
    assert launched > 0 and out.pop("launches False") == launched  # the torch run launched none
    assert out.pop("attention/zero_mass_rows") == 0
    assert all(value < 1e-5 for value in out.values()), out
