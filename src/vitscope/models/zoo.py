"""The study's model zoo: supervision families x ViT sizes (docs/protocols.md#models-and-checkpoints).

A config entry names a family and a size instead of a timm architecture::

    models:
      dino:
        family: dino
        size: B/16
        checkpoint: weights/dino_vitbase16_pretrain.pth

:func:`expand` turns it into the flat keys :func:`vitscope.models.registry.spec_from_config`
understands; explicit keys of the entry override the family's defaults
(``model_kwargs`` are merged key by key). :func:`table` lists every
(family, size) with its timm architecture, timm tag, original release file and
format, normalization and model arguments.

``weights`` defaults to ``checkpoint`` when the entry has a ``checkpoint``,
else to ``timm`` where timm hosts the weights; ``mocov3`` and ``beit`` have no
timm weights and need the original file. ``random`` is the same ViT,
initialized by timm with ``seed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..errors import ConfigError

# No torch here: the workflow reads the zoo when it plans the jobs (rules/common.smk).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGE_SIZE = 224
INTERPOLATION = "bicubic"

#: Keys :func:`expand` reads from a ``models.<alias>`` entry (others pass through).
ENTRY_KEYS = (
    "family",
    "size",
    "weights",
    "checkpoint",
    "tag",
    "format",
    "arch",
    "seed",
    "image_size",
    "mean",
    "std",
    "interpolation",
    "model_kwargs",
)


class Shape(NamedTuple):
    """Geometry of a ViT size: width D, depth L, heads H, patch P."""

    width: int
    depth: int
    heads: int
    patch: int


#: Standard ViT geometry per size (MoCo-v3's S/16 overrides heads to 12).
SIZES: dict[str, Shape] = {
    "S/16": Shape(384, 12, 6, 16),
    "S/8": Shape(384, 12, 6, 8),
    "B/32": Shape(768, 12, 12, 32),
    "B/16": Shape(768, 12, 12, 16),
    "B/8": Shape(768, 12, 12, 8),
    "L/16": Shape(1024, 24, 16, 16),
    "L/14": Shape(1024, 24, 16, 14),
    "H/14": Shape(1280, 32, 16, 14),
}
_SCALE = {"S": "small", "B": "base", "L": "large", "H": "huge"}


@dataclass(frozen=True)
class Family:
    """One supervision: where its weights come from and how its images are normalized.

    ``releases`` maps each size to the original release file name; ``tags`` the
    sizes timm hosts to their pretrained tag (``{}``: none, ``no_timm`` says why).
    ``url`` is where the publisher serves a release (``{file}`` filled with its
    name, ``{stem}`` with the name up to its first dot); ``sha256`` the digests the
    publisher gives (OpenAI puts them in its download addresses; the others give none).
    """

    name: str
    supervision: str
    arch: str  # timm architecture pattern, {scale} and {patch} filled per size
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    releases: Mapping[str, str]
    tags: Mapping[str, str] = field(default_factory=dict)
    format: str | None = None
    source: str = ""
    url: str = ""
    sha256: Mapping[str, str] = field(default_factory=dict)
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    size_kwargs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    no_timm: str = ""


@dataclass(frozen=True)
class Release:
    """One row of the zoo: a family in one size."""

    family: str
    size: str
    arch: str
    tag: str | None
    format: str | None
    release: str | None
    source: str
    url: str | None
    sha256: str | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    image_size: int
    model_kwargs: Mapping[str, Any]

    @property
    def timm_name(self) -> str | None:
        """``arch.tag`` as timm's hub knows it, or None."""
        return f"{self.arch}.{self.tag}" if self.tag else None


_AUGREG = "-i21k-300ep-lr_0.001-aug_{}--imagenet2012-steps_20k-lr_{}-res_224.npz"

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            name="fs",
            supervision="fully supervised (AugReg in21k -> in1k)",
            arch="vit_{scale}_patch{patch}_224",
            mean=HALF,
            std=HALF,
            format="augreg_npz",
            source="google-research/vision_transformer",
            url="https://storage.googleapis.com/vit_models/augreg/{file}",
            releases={
                "S/16": "S_16" + _AUGREG.format("light1-wd_0.03-do_0.0-sd_0.0", "0.03"),
                "B/32": "B_32" + _AUGREG.format("medium1-wd_0.03-do_0.0-sd_0.0", "0.03"),
                "B/16": "B_16" + _AUGREG.format("medium1-wd_0.1-do_0.0-sd_0.0", "0.01"),
                "B/8": "B_8" + _AUGREG.format("medium1-wd_0.1-do_0.0-sd_0.0", "0.01"),
                "L/16": "L_16" + _AUGREG.format("medium1-wd_0.1-do_0.1-sd_0.1", "0.01"),
            },
            tags=dict.fromkeys(("S/16", "B/32", "B/16", "B/8", "L/16"), "augreg_in21k_ft_in1k"),
        ),
        Family(
            name="clip",
            supervision="image-text contrastive (OpenAI CLIP)",
            arch="vit_{scale}_patch{patch}_clip_224",
            mean=OPENAI_CLIP_MEAN,
            std=OPENAI_CLIP_STD,
            format="openai_clip",
            source="openai/CLIP",
            releases={"B/32": "ViT-B-32.pt", "B/16": "ViT-B-16.pt", "L/14": "ViT-L-14.pt"},
            # openai/CLIP's clip.py downloads from here and checks these digests
            url="https://openaipublic.azureedge.net/clip/models/{sha256}/{file}",
            sha256={
                "B/32": "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af",
                "B/16": "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
                "L/14": "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836",
            },
            tags=dict.fromkeys(("B/32", "B/16", "L/14"), "openai"),
            model_kwargs={"act_layer": "quick_gelu"},
        ),
        Family(
            name="dino",
            supervision="self-distillation (DINO)",
            arch="vit_{scale}_patch{patch}_224",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            format="dino",
            source="facebookresearch/dino",
            url="https://dl.fbaipublicfiles.com/dino/{stem}/{file}",
            releases={
                "S/16": "dino_deitsmall16_pretrain.pth",
                "S/8": "dino_deitsmall8_pretrain.pth",
                "B/16": "dino_vitbase16_pretrain.pth",
                "B/8": "dino_vitbase8_pretrain.pth",
            },
            tags=dict.fromkeys(("S/16", "S/8", "B/16", "B/8"), "dino"),
        ),
        Family(
            name="mocov3",
            supervision="contrastive (MoCo-v3)",
            arch="vit_{scale}_patch{patch}_224",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            format="mocov3",
            source="facebookresearch/moco-v3",
            url="https://dl.fbaipublicfiles.com/moco-v3/{stem}/{file}",
            releases={"S/16": "vit-s-300ep.pth.tar", "B/16": "vit-b-300ep.pth.tar"},
            # qkv bias and LayerNorm eps 1e-6 are timm's ViT defaults; the fixed sin-cos
            # position embedding is read from the file (formats/mocov3.py).
            size_kwargs={"S/16": {"num_heads": 12}},
            no_timm="timm hosts no MoCo-v3 weights; use weights: checkpoint with the original release",
        ),
        Family(
            name="mae",
            supervision="masked reconstruction (MAE), encoder only",
            arch="vit_{scale}_patch{patch}_224",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            format="mae",
            source="facebookresearch/mae",
            url="https://dl.fbaipublicfiles.com/mae/pretrain/{file}",
            releases={
                "B/16": "mae_pretrain_vit_base.pth",
                "L/16": "mae_pretrain_vit_large.pth",
                "H/14": "mae_pretrain_vit_huge.pth",
            },
            tags=dict.fromkeys(("B/16", "L/16", "H/14"), "mae"),
        ),
        Family(
            name="beit",
            supervision="masked token prediction (BEiT, self-supervised pt22k)",
            arch="beit_{scale}_patch{patch}_224",
            mean=HALF,
            std=HALF,
            format="beit",
            source="microsoft/unilm (beit)",
            # the unilm README links this container (older links on unilm.blob.core.windows.net moved here)
            url="https://conversationhub.blob.core.windows.net/beit-share-public/beit/{file}",
            releases={
                "B/16": "beit_base_patch16_224_pt22k.pth",
                "L/16": "beit_large_patch16_224_pt22k.pth",
            },
            model_kwargs={
                "use_abs_pos_emb": False,
                "use_rel_pos_bias": True,
                "use_shared_rel_pos_bias": False,
                "global_pool": "token",
            },
            no_timm="timm hosts only fine-tuned BEiT weights (in22k_ft_in22k...), not the "
            "self-supervised pt22k weights the study used; use weights: checkpoint with the "
            "original release",
        ),
        Family(
            name="random",
            supervision="none: seeded random initialization",
            arch="vit_{scale}_patch{patch}_224",
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            releases=dict.fromkeys(SIZES, ""),
            no_timm="the random family has no weights",
        ),
    )
}


def release(family: str, size: str, key: str = "models") -> Release:
    """The zoo row of ``family`` in ``size``; ``ConfigError`` naming ``key`` if absent."""
    fam = FAMILIES.get(family) if isinstance(family, str) else None
    if fam is None:
        raise ConfigError(f"{key}.family = {family!r}; known families: {', '.join(FAMILIES)}")
    if not isinstance(size, str) or size.strip().upper() not in fam.releases:
        raise ConfigError(f"{key}.size = {size!r}; {family} has {', '.join(fam.releases)}")
    size = size.strip().upper()
    shape = SIZES[size]
    file = fam.releases[size] or None
    digest = fam.sha256.get(size)
    url = fam.url.format(file=file, stem=file.split(".")[0], sha256=digest) if file and fam.url else None
    return Release(
        family=fam.name,
        size=size,
        arch=fam.arch.format(scale=_SCALE[size[0]], patch=shape.patch),
        tag=fam.tags.get(size),
        format=fam.format,
        release=file,
        source=fam.source,
        url=url,
        sha256=digest,
        mean=fam.mean,
        std=fam.std,
        image_size=IMAGE_SIZE,
        model_kwargs={**fam.model_kwargs, **fam.size_kwargs.get(size, {})},
    )


def table() -> list[Release]:
    """Every (family, size) of the zoo, families in study order, sizes small to large."""
    return [release(name, size) for name, fam in FAMILIES.items() for size in fam.releases]


def table_markdown() -> str:
    """:func:`table` as a Markdown table (for the docs)."""
    lines = [
        "| family | size | timm arch | timm tag | original file | format | model_kwargs |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table():
        kwargs = ", ".join(f"{k}={v!r}" for k, v in row.model_kwargs.items())
        lines.append(
            f"| {row.family} | {row.size} | `{row.arch}` | {row.tag or '-'} | "
            f"{row.release or '-'} | {row.format or '-'} | {kwargs or '-'} |"
        )
    return "\n".join(lines)


def releases_markdown() -> str:
    """Where each original release file is published, with the publisher's SHA-256 (for the docs)."""
    lines = ["| family | size | publisher | download | SHA-256 (publisher's) |", "|---|---|---|---|---|"]
    for row in table():
        if row.release:
            lines.append(
                f"| {row.family} | {row.size} | {row.source} | [{row.release}]({row.url}) | {row.sha256 or '-'} |"
            )
    return "\n".join(lines)


def where_published(row: Release) -> str:
    """One line for an error message: the release file, who publishes it, where, and its digest."""
    text = f"the original release is {row.release}, published by {row.source}"
    if row.url:
        text += f" at {row.url}"
    if row.sha256:
        text += f" (SHA-256 {row.sha256})"
    return text


def expand(alias: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Flat ``models.<alias>`` keys for a ``family``/``size`` entry.

    Returns the keys of :func:`vitscope.models.registry.spec_from_config` (arch, weights,
    tag, checkpoint, format, seed, image_size, mean, std, interpolation,
    model_kwargs) plus any key outside :data:`ENTRY_KEYS`, unchanged.
    """
    key = f"models.{alias}"
    if "size" not in entry:
        fam = FAMILIES.get(entry["family"]) if isinstance(entry["family"], str) else None
        sizes = f"; {fam.name} has {', '.join(fam.releases)}" if fam else ""
        raise ConfigError(f"{key}.size is required with {key}.family{sizes}")
    row = release(entry["family"], entry["size"], key)
    weights = _weights(key, row, entry)
    out: dict[str, Any] = {k: v for k, v in entry.items() if k not in ("family", "size")}
    out.update(
        arch=entry.get("arch", row.arch),
        weights=weights,
        tag=entry.get("tag", row.tag if weights == "timm" else None),
        format=entry.get("format", row.format or "timm"),
        seed=entry.get("seed", 0),
        image_size=entry.get("image_size", row.image_size),
        mean=entry.get("mean", row.mean),
        std=entry.get("std", row.std),
        interpolation=entry.get("interpolation", INTERPOLATION),
        model_kwargs={**row.model_kwargs, **_kwargs(key, entry)},
    )
    return out


def _weights(key: str, row: Release, entry: Mapping[str, Any]) -> str:
    """The weight source of an entry, with the family's rules applied."""
    fam = FAMILIES[row.family]
    if row.family == "random":
        weights = entry.get("weights", "random")
        if weights != "random":
            raise ConfigError(f"{key}.weights = {weights!r}; {fam.no_timm} (use weights: random)")
        return weights
    default = "checkpoint" if entry.get("checkpoint") else ("timm" if row.tag else None)
    weights = entry.get("weights", default)
    if weights is None:
        raise ConfigError(f"{key}.checkpoint is required: {fam.no_timm}; {where_published(row)}")
    if weights == "timm" and not row.tag and not entry.get("tag"):
        raise ConfigError(f"{key}.weights = 'timm'; {fam.no_timm} ({row.release})")
    if weights == "checkpoint" and not entry.get("checkpoint"):
        raise ConfigError(
            f"{key}.checkpoint is required when {key}.weights = 'checkpoint' ({where_published(row)})"
        )
    return str(weights)


def _kwargs(key: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry's own ``model_kwargs`` (a mapping)."""
    kwargs = entry.get("model_kwargs", {})
    if not isinstance(kwargs, Mapping):
        raise ConfigError(f"{key}.model_kwargs = {kwargs!r} must be a mapping")
    return dict(kwargs)
