"""Model registry: build any timm ViT or BEiT by name, with its weights.

A model is described by a :class:`ModelSpec` (resolved from one entry of the
config's ``models`` mapping) and built by :func:`build`, which returns the
network in eval mode and a :class:`LoadReport` saying what was loaded.

Weights come from one of three sources:

``timm``
    a timm pretrained tag (``arch.tag``); needs the hub, so only online.
``checkpoint``
    a local file in one of the registered :data:`FORMATS` (the original
    release formats of each supervision live in :mod:`vitscope.models.formats`).
``random``
    timm's own initialisation, seeded.

A configured checkpoint that does not exist raises :class:`CheckpointNotFound`;
vitscope never falls back to random weights. Weights holding NaN or Inf (from
any source) raise :class:`CheckpointError` naming the file and the first
non-finite tensor (:func:`check_finite`): such a model would write NaN into
every dump.
"""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ..errors import CheckpointError, CheckpointNotFound, ConfigError, ModelError
from . import zoo
from .zoo import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)

WEIGHT_SOURCES = ("timm", "checkpoint", "random")


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to build one model and preprocess its images."""

    alias: str
    arch: str
    weights: str = "random"
    tag: str | None = None
    checkpoint: str | None = None
    format: str = "timm"
    seed: int = 0
    image_size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    trust_torchscript_code: bool = False  # read a TorchScript checkpoint with torch.jit.load (runs its code)

    def describe(self) -> dict[str, Any]:
        """Flat, HDF5-attribute friendly description (provenance)."""
        return {
            "alias": self.alias,
            "arch": self.arch,
            "weights": self.weights,
            "tag": self.tag or "",
            "checkpoint": self.checkpoint or "",
            "format": self.format if self.weights == "checkpoint" else "",
            "seed": self.seed,
            "image_size": list(self.image_size),
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "model_kwargs": repr(dict(self.model_kwargs)),
        }


@dataclass
class LoadReport:
    """What :func:`build` did to obtain the weights."""

    source: str
    file: str = ""
    sha256: str = ""
    loaded: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"source={self.source}"]
        if self.file:
            parts.append(f"file={self.file} sha256={self.sha256}")
        parts.append(f"loaded={self.loaded}")
        for name in ("missing", "unexpected", "dropped"):
            keys = getattr(self, name)
            if keys:
                parts.append(f"{name}={len(keys)} ({', '.join(keys[:6])}{', ...' if len(keys) > 6 else ''})")
        parts.extend(self.notes)
        return "; ".join(parts)


@dataclass(frozen=True)
class CheckpointFormat:
    """A checkpoint file layout and how to map it onto a timm model.

    ``read(path)`` returns the raw object in the file; ``convert(raw, model)``
    returns ``(state_dict, dropped_keys)`` in timm's key layout for ``model``.
    ``optional`` lists key prefixes that may stay missing (buffers timm
    recomputes, heads of models built without a classifier). ``read`` never
    runs code from the file; ``read_trusted``, where a format has one, may
    (``torch.jit.load`` of a TorchScript archive) and is used only when the
    model's config sets ``trust_torchscript_code: true``.
    """

    name: str
    read: Callable[[Path], Any]
    convert: Callable[[Any, nn.Module], tuple[dict[str, torch.Tensor], list[str]]]
    description: str = ""
    optional: tuple[str, ...] = ()
    read_trusted: Callable[[Path], Any] | None = None


FORMATS: dict[str, CheckpointFormat] = {}


def register_format(fmt: CheckpointFormat) -> CheckpointFormat:
    """Add a checkpoint format to :data:`FORMATS` (one module per format)."""
    FORMATS[fmt.name] = fmt
    return fmt


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _pair(value: Any, key: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ConfigError(f"{key} = {value!r} must be an integer or [height, width]")


def spec_from_config(alias: str, entry: Mapping[str, Any]) -> ModelSpec:
    """Resolve one ``models.<alias>`` config entry into a :class:`ModelSpec`.

    Families (``family: dino, size: B/16``) are expanded by
    :func:`vitscope.models.zoo.expand` before this point when present.
    """
    key = f"models.{alias}"
    if "family" in entry:
        entry = zoo.expand(alias, entry)
    if "arch" not in entry:
        raise ConfigError(f"{key}.arch is required (a timm model name) unless {key}.family is set")
    weights = entry.get("weights", "random")
    if weights not in WEIGHT_SOURCES:
        raise ConfigError(f"{key}.weights = {weights!r}; expected one of {', '.join(WEIGHT_SOURCES)}")
    if weights == "timm" and not entry.get("tag"):
        raise ConfigError(f"{key}.tag is required when {key}.weights = 'timm'")
    if weights == "checkpoint" and not entry.get("checkpoint"):
        raise ConfigError(f"{key}.checkpoint is required when {key}.weights = 'checkpoint'")
    fmt = entry.get("format", "timm")
    if weights == "checkpoint" and fmt not in FORMATS:
        _load_formats()
        if fmt not in FORMATS:
            raise ConfigError(f"{key}.format = {fmt!r}; known formats: {', '.join(sorted(FORMATS))}")
    mean = tuple(float(v) for v in entry.get("mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in entry.get("std", IMAGENET_STD))
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError(f"{key}.mean and {key}.std need three values (RGB)")
    if min(std) <= 0:
        raise ConfigError(f"{key}.std = {list(std)} must be positive")
    trust = entry.get("trust_torchscript_code", False)
    if not isinstance(trust, bool):
        raise ConfigError(f"{key}.trust_torchscript_code = {trust!r} must be true or false")
    if trust:
        _load_formats()
        if weights != "checkpoint" or FORMATS[fmt].read_trusted is None:
            trusting = sorted(name for name, f in FORMATS.items() if f.read_trusted is not None)
            raise ConfigError(
                f"{key}.trust_torchscript_code applies only to TorchScript checkpoints "
                f"(weights: checkpoint, format: {' or '.join(trusting)})"
            )
    return ModelSpec(
        alias=alias,
        arch=str(entry["arch"]),
        weights=weights,
        tag=entry.get("tag"),
        checkpoint=str(entry["checkpoint"]) if entry.get("checkpoint") else None,
        format=fmt,
        seed=int(entry.get("seed", 0)),
        image_size=_pair(entry.get("image_size", 224), f"{key}.image_size"),
        mean=mean,  # type: ignore[arg-type]
        std=std,  # type: ignore[arg-type]
        interpolation=str(entry.get("interpolation", "bicubic")),
        model_kwargs=tuple(sorted(dict(entry.get("model_kwargs", {})).items())),
        trust_torchscript_code=trust,
    )


def _load_formats() -> None:
    """Import :mod:`vitscope.models.formats` so every format registers itself."""
    from . import formats  # noqa: F401


def create(spec: ModelSpec, pretrained: bool = False) -> nn.Module:
    """The bare timm network for ``spec`` (no classifier head), in eval mode."""
    name = f"{spec.arch}.{spec.tag}" if (pretrained and spec.tag) else spec.arch
    kwargs = dict(spec.model_kwargs)
    kwargs.setdefault("img_size", spec.image_size)
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except RuntimeError as err:  # timm: unknown model name
        raise ConfigError(f"models.{spec.alias}.arch = {spec.arch!r}: {err}") from err
    check_input_size(model, spec)
    return model.eval()


def check_input_size(model: nn.Module, spec: ModelSpec) -> None:
    """The input size ``spec`` builds ``model`` for is a multiple of its patch, else ``ConfigError``.

    timm builds a ViT for any size, then drops the last pixels of every row and column
    (or fails in its patch embedding's assertion, naming no key). The workflow checks the
    same before any job runs where the architecture's name tells its patch
    (vitscope.workflow.configcheck.check_patches); this covers every other architecture.
    """
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is None:
        return
    ph, pw = (patch, patch) if isinstance(patch, int) else (int(patch[0]), int(patch[1]))
    h, w = spec.image_size
    if h % ph or w % pw:
        raise ConfigError(
            f"models.{spec.alias}.image_size: the model is built for {h}x{w} pixels, not a multiple of the patch "
            f"{ph}x{pw} of {spec.arch} (models.{spec.alias}.image_size, or analyses.spair.image_size for keypoint "
            f"transfer, must be one, e.g. {h // ph * ph or ph}x{w // pw * pw or pw})"
        )


def build(spec: ModelSpec) -> tuple[nn.Module, LoadReport]:
    """Build the network of ``spec`` with its weights; see the module docstring."""
    if spec.weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = create(spec)
        n = len(model.state_dict())
        check_finite(model.state_dict(), f"models.{spec.alias} (weights: random, seed {spec.seed})")
        return model, LoadReport(source="random", loaded=0, notes=[f"seed={spec.seed}", f"{n} tensors initialised"])
    if spec.weights == "timm":
        model = create(spec, pretrained=True)
        check_finite(model.state_dict(), f"models.{spec.alias}.tag = 'timm:{spec.arch}.{spec.tag}'")
        return model, LoadReport(source="timm", file=f"timm:{spec.arch}.{spec.tag}", loaded=len(model.state_dict()))
    return load_checkpoint(spec)


def check_finite(state: Mapping[str, torch.Tensor], context: str) -> None:
    """``CheckpointError`` naming ``context`` and the first tensor of ``state`` (in its order)
    that holds a NaN or an infinity; integer tensors are skipped. About 0.1 s for ViT-B/16
    on one CPU thread.

    A single non-finite weight propagates to every token of every image, so the
    dumps, tables and figures of such a model would be NaN throughout.
    """
    for name, tensor in state.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        if bool(tensor.abs().max() < math.inf):  # max propagates NaN: False for a NaN or an Inf
            continue
        finite = torch.isfinite(tensor)
        nan = int(torch.isnan(tensor).sum())
        inf = int((~finite).sum()) - nan
        first = tuple(int(i) for i in (~finite).nonzero()[0].tolist())
        raise CheckpointError(
            f"{context}: tensor {name} of shape {tuple(tensor.shape)} holds non-finite weights "
            f"({nan} NaN, {inf} Inf of {tensor.numel()}; first at index {first}); "
            "the file is corrupt or was saved from a diverged training run"
        )


def load_checkpoint(spec: ModelSpec) -> tuple[nn.Module, LoadReport]:
    """Build ``spec`` and load its local checkpoint file, strictly.

    The file is read with its format's ``read`` (never running code from it), or
    with ``read_trusted`` when ``spec.trust_torchscript_code`` is set.
    """
    key = f"models.{spec.alias}.checkpoint"
    path = Path(spec.checkpoint or "")
    if not path.is_file():
        raise CheckpointNotFound(f"{key} = '{spec.checkpoint}' does not exist")
    _load_formats()
    fmt = FORMATS[spec.format]
    read = fmt.read_trusted if spec.trust_torchscript_code and fmt.read_trusted else fmt.read
    try:
        raw = read(path)
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, pickle.UnpicklingError) as err:
        raise CheckpointError(f"{key} = '{path}' cannot be read as format {fmt.name!r}: {err}") from err
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = create(spec)
    try:
        state, dropped = fmt.convert(raw, model)
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"{key} = '{path}' is not a {fmt.name!r} checkpoint for {spec.arch}: {err}"
        ) from err
    report = LoadReport(source="checkpoint", file=str(path), sha256=sha256_file(path), dropped=dropped)
    assign_state(model, state, report, fmt.optional, context=f"{key} = '{path}' (format {fmt.name!r})")
    return model.eval(), report


def assign_state(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    report: LoadReport,
    optional: tuple[str, ...] = (),
    context: str = "checkpoint",
) -> None:
    """Copy ``state`` into ``model``; any missing or surplus key is an error.

    Absolute position embeddings of another grid are resampled (and noted in
    ``report``); any other shape mismatch is an error naming the key.
    """
    target = model.state_dict()
    state = dict(state)
    if "pos_embed" in state and "pos_embed" in target and state["pos_embed"].shape != target["pos_embed"].shape:
        state["pos_embed"] = _resample_pos_embed(model, state["pos_embed"], target["pos_embed"])
        report.notes.append(f"pos_embed resampled to {tuple(target['pos_embed'].shape)}")
    missing = sorted(k for k in target if k not in state and not k.startswith(optional))
    unexpected = sorted(k for k in state if k not in target)
    report.missing, report.unexpected = missing, unexpected
    if missing or unexpected:
        raise CheckpointError(
            f"{context} does not match the model: "
            + "; ".join(
                f"{name} {len(keys)} keys ({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''})"
                for name, keys in (("missing", missing), ("unexpected", unexpected))
                if keys
            )
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(target[name].shape):
            raise CheckpointError(
                f"{context}: {name} has shape {tuple(tensor.shape)}, the model expects {tuple(target[name].shape)}"
            )
    check_finite(state, context)
    model.load_state_dict(state, strict=False)
    report.loaded = len(state)


def _resample_pos_embed(model: nn.Module, pos: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
    grid = tuple(model.patch_embed.grid_size)  # type: ignore[union-attr]
    out = resample_abs_pos_embed(pos, new_size=list(grid), num_prefix_tokens=prefix)
    if out.shape != like.shape:
        raise CheckpointError(f"pos_embed of shape {tuple(pos.shape)} cannot be resampled to {tuple(like.shape)}")
    return out


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Geometry:
    """Token layout of a built model: T = prefix + gh * gw tokens."""

    grid: tuple[int, int]
    patch: tuple[int, int]
    prefix: int
    blocks: int
    heads: int
    width: int

    @property
    def tokens(self) -> int:
        return self.prefix + self.grid[0] * self.grid[1]


def geometry(model: nn.Module) -> Geometry:
    """Grid, patch, prefix-token count, depth, heads and width of a timm ViT/BEiT."""
    try:
        patch_embed = model.patch_embed
        blocks = model.blocks
    except AttributeError as err:
        raise ModelError(f"{type(model).__name__} is not a ViT (no patch_embed/blocks)") from err
    grid = tuple(int(v) for v in patch_embed.grid_size)
    patch = tuple(int(v) for v in patch_embed.patch_size)
    heads = int(blocks[0].attn.num_heads)
    return Geometry(
        grid=grid,  # type: ignore[arg-type]
        patch=patch,  # type: ignore[arg-type]
        prefix=int(getattr(model, "num_prefix_tokens", 1)),
        blocks=len(blocks),
        heads=heads,
        width=int(model.embed_dim),
    )


def set_fused_attention(model: nn.Module, enabled: bool) -> int:
    """Switch every attention module between timm's fused and explicit path.

    Returns the number of modules switched. The explicit path materialises the
    post-softmax probabilities (and passes them through ``attn_drop``, where
    vitscope's hooks read them); the fused path never does.
    """
    count = 0
    for module in model.modules():
        if hasattr(module, "fused_attn") and hasattr(module, "attn_drop"):
            module.fused_attn = enabled
            count += 1
    return count
