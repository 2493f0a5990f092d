"""Training the demo's models: settings, augmentations, the MAE token path, determinism,
registry loading, and that each teaching signal teaches something (fs k-NN, mae reconstruction)."""

from __future__ import annotations

import hashlib
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vitscope.errors import ConfigError, DatasetError
from vitscope.io import synthetic
from vitscope.io.datasets import index_imagefolder, write_index
from vitscope.models import registry as models
from vitscope.models.formats import mocov3
from vitscope.tasks import knn
from vitscope.training import augment, loop, mae, run, settings

REPO = Path(__file__).resolve().parents[1]

# A very small ViT (patch 8 on 32 px: 4 x 4 tokens) so a few steps take a second.
TINY = {"arch": "vit_small_patch8_224", "model_kwargs": {"embed_dim": 32, "depth": 2, "num_heads": 2},
        "image_size": 32, "seed": 0}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict[str, list]:
    """A synthetic train split (seed 1) and the demo-like bank and queries (seed 0), 3 classes at 32 px."""
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.write_imagefolder(root / "train", synthetic.SyntheticSpec(classes=3, per_class=40, image_size=32, seed=1))
    synthetic.write_imagefolder(root / "eval", synthetic.SyntheticSpec(classes=3, per_class=10, image_size=32, seed=0,
                                                                       val_per_class=10))
    return {
        "train": index_imagefolder(root / "train/images"),
        "bank": index_imagefolder(root / "eval/images"),
        "val": index_imagefolder(root / "eval/val"),
    }


def test_defaults_match_the_schema() -> None:
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    train = schema["properties"]["models"]["additionalProperties"]["properties"]["train"]["properties"]
    assert set(train) == {f.name for f in fields(settings.TrainSettings)}
    defaults = settings.TrainSettings(objective="fs")
    for f in fields(settings.TrainSettings):
        if "default" in train[f.name]:
            value = getattr(defaults, f.name)
            assert train[f.name]["default"] == (list(value) if isinstance(value, tuple) else value), f.name
    assert train["objective"]["enum"] == list(settings.OBJECTIVES)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"objective": "dino", "dataset": "d"}, "models.m.train.objective = 'dino'"),
        ({"objective": "fs"}, "models.m.train.dataset is required"),
        ({"objective": "mae", "dataset": "d", "mask_ratio": 1.0}, "models.m.train.mask_ratio"),
        ({"objective": "fs", "dataset": "d", "crop_scale": [0.8, 0.2]}, "models.m.train.crop_scale"),
        ({"objective": "fs", "dataset": "d", "epochs": 3}, "unknown keys ['epochs']"),
    ],
)
def test_bad_settings_name_the_key(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings.from_config("m", entry)


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    s = settings.TrainSettings(objective="fs", dataset="d", steps=100, lr=1e-3, warmup=0.1)
    lrs = [loop.learning_rate(i, s) for i in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(1e-3) and all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] < 1e-6


def test_batches_cover_each_epoch_once() -> None:
    stream = loop.batches(10, 3, torch.Generator().manual_seed(0))
    epoch = torch.cat([next(stream) for _ in range(3)])
    assert len(set(epoch.tolist())) == 9  # one permutation, remainder dropped
    with pytest.raises(ValueError, match="exceeds"):
        next(loop.batches(2, 3, torch.Generator()))


def test_crop_is_the_identity_at_full_scale() -> None:
    images = torch.rand(2, 3, 8, 12)
    out = augment.resized_crop_flip(images, (8, 12), (1.0, 1.0), torch.Generator(), ratio=(1.0, 1.0), flip=False)
    torch.testing.assert_close(out, images)


def test_crop_flips_and_is_seeded() -> None:
    images = torch.rand(64, 3, 8, 8)
    a = augment.resized_crop_flip(images, (8, 8), (1.0, 1.0), torch.Generator().manual_seed(3), ratio=(1.0, 1.0))
    b = augment.resized_crop_flip(images, (8, 8), (1.0, 1.0), torch.Generator().manual_seed(3), ratio=(1.0, 1.0))
    assert torch.equal(a, b)
    flipped = [torch.allclose(a[i], images[i].flip(-1), atol=1e-6) for i in range(64)]
    same = [torch.allclose(a[i], images[i], atol=1e-6) for i in range(64)]
    assert all(f != s for f, s in zip(flipped, same, strict=True)) and 10 < sum(flipped) < 54


def test_colour_jitter_stays_in_range_and_zero_strength_is_identity() -> None:
    images = torch.rand(16, 3, 6, 6)
    assert augment.colour_jitter(images, 0.0, torch.Generator()) is images
    out = augment.colour_jitter(images, 0.8, torch.Generator().manual_seed(0), p=1.0, grey_p=0.0)
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, images)
    grey = augment.colour_jitter(images, 0.4, torch.Generator(), p=0.0, grey_p=1.0)
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])
    # a hue rotation keeps grey pixels grey and rotates by the angle given
    rotation = augment.hue_rotation(torch.tensor([2 * np.pi / 3]))[0]
    torch.testing.assert_close(rotation @ torch.ones(3), torch.ones(3))
    torch.testing.assert_close(rotation @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6,
                               rtol=0)


def test_patchify_layout() -> None:
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    patches = mae.patchify(images, 2)
    assert patches.shape == (2, 4, 12)
    # patch 1 (row 0, column 1) of image 0: pixel (0, 2) first, channels last
    torch.testing.assert_close(patches[0, 1, :3], images[0, :, 0, 2])
    torch.testing.assert_close(patches[0, 1, 3:6], images[0, :, 0, 3])
    normalized = mae.normalized_patches(patches)
    torch.testing.assert_close(normalized.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)


def test_random_keep_is_sorted_and_unique() -> None:
    keep = mae.random_keep(5, 16, 4, torch.Generator().manual_seed(0))
    assert keep.shape == (5, 4)
    assert all(len(set(row.tolist())) == 4 and row.tolist() == sorted(row.tolist()) for row in keep)


def _tiny_spec(**entry) -> models.ModelSpec:
    return models.spec_from_config("m", {**TINY, **entry})


def test_mae_encoder_with_every_patch_visible_is_the_full_forward() -> None:
    spec = _tiny_spec()
    encoder = run.initial_encoder(spec)
    s = settings.TrainSettings(objective="mae", dataset="d")
    objective = run.make_objective(s, encoder, spec, 0)
    images = torch.randn(3, 3, 32, 32)
    every = torch.arange(16).expand(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(objective.encode(images, every), encoder.forward_features(images))
        # dropping patches = attending only among the kept ones: the same as the full forward on them
        keep = mae.random_keep(3, 16, 4, torch.Generator().manual_seed(1))
        latent = objective.encode(images, keep)
    assert latent.shape == (3, 5, 32)
    assert objective.decode(latent, keep).shape == (3, 16, 8 * 8 * 3)


def _train(tmp_path: Path, entries, name: str, **train) -> tuple[str, list]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    index = tmp_path / "index.csv"
    write_index(entries, index)
    checkpoint = tmp_path / f"{name}.safetensors"
    entry = {**TINY, "weights": "checkpoint", "format": "timm", "checkpoint": str(checkpoint)}
    summary = run.train_checkpoint(name, entry, {"dataset": "shapes", **train}, str(index), str(checkpoint),
                                   str(tmp_path / f"{name}.csv"))
    return str(checkpoint), summary


@pytest.mark.parametrize("objective", ["fs", "contrastive", "mae"])
def test_same_seed_same_checkpoint_bytes(tmp_path: Path, shapes, objective: str) -> None:
    train = {"objective": objective, "steps": 3, "batch_size": 8}
    a, summary = _train(tmp_path / "a", shapes["train"], "m", **train)
    b, _ = _train(tmp_path / "b", shapes["train"], "m", **train)
    c, _ = _train(tmp_path / "c", shapes["train"], "m", **train, seed=1)
    digest = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in (a, b, c)]
    assert digest[0] == digest[1] == summary["sha256"]
    assert digest[2] != digest[0]
    assert (tmp_path / "a/m.csv").read_text().count("\n") == 1 + 3


def test_checkpoint_loads_through_the_registry_with_provenance(tmp_path: Path, shapes) -> None:
    path, _ = _train(tmp_path, shapes["train"], "fs", objective="fs", steps=2, batch_size=8)
    spec = _tiny_spec(weights="checkpoint", format="timm", checkpoint=path)
    model, report = models.build(spec)
    assert report.source == "checkpoint" and report.sha256 == models.sha256_file(path)
    assert report.loaded == len(model.state_dict()) and not report.dropped
    initial = run.initial_encoder(_tiny_spec()).state_dict()
    assert any(not torch.equal(v, initial[k]) for k, v in model.state_dict().items())
    # random: the checkpoint is the shared initialisation: the weights: random model of the
    # same seed with the sin-cos position embedding (or exactly it without)
    timm_init = models.build(_tiny_spec(weights="random"))[0].state_dict()
    for sincos in (True, False):
        path, summary = _train(tmp_path, [], "random", objective="random", steps=0, sincos_pos_embed=sincos)
        loaded = models.build(_tiny_spec(weights="checkpoint", format="timm", checkpoint=path))[0].state_dict()
        differ = sorted(k for k, v in loaded.items() if not torch.equal(v, timm_init[k]))
        assert summary["steps"] == 0 and differ == (["pos_embed"] if sincos else [])
    torch.testing.assert_close(initial["pos_embed"], mocov3.sincos_pos_embed((4, 4), 32))


def test_fs_needs_labels(tmp_path: Path, shapes) -> None:
    unlabelled = [type(e)(e.path, -1, "") for e in shapes["train"]]
    with pytest.raises(DatasetError, match="models.m.train.dataset names an unlabelled dataset"):
        _train(tmp_path, unlabelled, "m", objective="fs", steps=1, batch_size=4)
    with pytest.raises(DatasetError, match="fewer than batch_size = 500"):
        _train(tmp_path, shapes["train"], "m", objective="mae", steps=1, batch_size=500)


def _cls_features(encoder: torch.nn.Module, entries, spec: models.ModelSpec) -> np.ndarray:
    images = augment.normalize(run.load_images(entries, spec), spec.mean, spec.std)
    with torch.no_grad():
        return encoder.forward_features(images)[:, 0].numpy()


def test_mae_reconstructs_masked_patches_better_than_random(shapes) -> None:
    spec = _tiny_spec()
    s = settings.TrainSettings(objective="mae", dataset="shapes", steps=150, batch_size=32, lr=2e-3)
    untrained = run.make_objective(s, run.initial_encoder(spec), spec, 0)
    trained = run.make_objective(s, run.initial_encoder(spec), spec, 0)
    trained.load_state_dict(untrained.state_dict())  # the same decoder initialisation, then training
    loop.fit(trained, run.load_images(shapes["train"], spec), torch.zeros(len(shapes["train"]), dtype=torch.int64), s)
    held_out = augment.normalize(run.load_images(shapes["val"], spec), spec.mean, spec.std)
    keep = mae.random_keep(held_out.shape[0], 16, untrained.keep, torch.Generator().manual_seed(5))
    with torch.no_grad():
        error = {name: float(o.masked_error(held_out, keep)) for name, o in (("mae", trained), ("random", untrained))}
    assert error["mae"] < 0.8 * error["random"], error


@pytest.mark.slow
def test_demo_fs_recipe_beats_random_on_demo_knn(tmp_path: Path) -> None:
    """config.yaml's fs model, trained as the demo trains it, against its untrained twin on the demo's k-NN."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    entry = config["models"]["fs"]
    train = entry["train"]
    for name in ("demo", train["dataset"]):
        spec = synthetic.SyntheticSpec(**config["datasets"][name]["synthetic"])
        synthetic.write_imagefolder(tmp_path / name, spec)
    spec = models.spec_from_config("fs", entry)
    s = settings.from_config("fs", train)
    trained, _ = run.train_encoder(s, spec, index_imagefolder(tmp_path / train["dataset"] / "images"))
    untrained = run.initial_encoder(spec, s.sincos_pos_embed)
    bank, val = index_imagefolder(tmp_path / "demo/images"), index_imagefolder(tmp_path / "demo/val")
    classes = len({e.label for e in bank})
    accuracy = {}
    for name, encoder in (("fs", trained), ("random", untrained)):
        accuracy[name] = knn.classify(
            _cls_features(encoder, bank, spec), np.array([e.label for e in bank]),
            _cls_features(encoder, val, spec), np.array([e.label for e in val]), classes, ks=(20,),
        )[20]["top1"]
    assert accuracy["fs"] >= accuracy["random"] + 0.25, accuracy
