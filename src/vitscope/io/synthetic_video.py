"""Synthetic videos in the DAVIS layout, for the embedded demo.

Each sequence shows 1..``davis_objects`` textured shapes (the image classes'
shapes and textures) moving at constant speed over a smooth background,
bouncing off the borders; later objects occlude earlier ones. Written as
``{root}/JPEGImages/480p/<seq>/00000.jpg``, palette PNG annotations
``{root}/Annotations/480p/<seq>/00000.png`` (object ids 1.., 0 background)
and ``{root}/ImageSets/2017/val.txt``, so ``kind: davis`` reads it exactly like
DAVIS-2017. Sequence names come from the config
(``synthetic.davis_sequences``), so the workflow knows them before the data
exist; everything else derives from the seed and the sequence's position.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .synthetic import SHAPES, TEXTURES, SyntheticSpec, shape_mask, texture
from .video import write_palette_png


def _background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour field (H, W, 3) in [0, 1]."""
    coarse = rng.uniform(0.15, 0.85, size=(3, 4, 3))
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize((width, height), Image.BICUBIC)
    return np.asarray(img, dtype=np.float64) / 255


def render_video(
    frames: int, height: int, width: int, objects: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One video: (N, H, W, 3) uint8 frames and (N, H, W) uint8 object ids (0 = background)."""
    side = max(height, width)
    canvas = 2 * side  # textures are anchored to their object's centre
    movers = []
    for k in range(objects):
        radius = rng.uniform(0.16, 0.26) * min(height, width)
        centre = np.array([rng.uniform(radius, height - radius), rng.uniform(radius, width - radius)])
        angle = rng.uniform(0, 2 * np.pi)
        velocity = rng.uniform(2.0, 4.0) * np.array([np.sin(angle), np.cos(angle)])
        kind = TEXTURES[(k + int(rng.integers(len(TEXTURES)))) % len(TEXTURES)]
        movers.append({
            "shape": SHAPES[int(rng.integers(len(SHAPES)))], "radius": radius, "centre": centre, "velocity": velocity,
            "pattern": texture("stripes" if kind == "solid" else kind, canvas, rng),
            "colours": rng.uniform(0, 1, size=(2, 3)),
        })
    background = _background(height, width, rng)
    images = np.empty((frames, height, width, 3), dtype=np.uint8)
    ids = np.zeros((frames, height, width), dtype=np.uint8)
    for t in range(frames):
        img = background + rng.normal(0, 0.02, size=background.shape)
        for k, m in enumerate(movers, start=1):
            cy, cx = m["centre"]
            mask = shape_mask(m["shape"], side, cy, cx, m["radius"])[:height, :width]
            oy, ox = side - int(round(cy)), side - int(round(cx))
            pattern = m["pattern"][oy : oy + height, ox : ox + width, None]
            fg = pattern * m["colours"][0] + (1 - pattern) * m["colours"][1]
            img = np.where(mask[..., None], fg, img)
            ids[t][mask] = k
            # move, bouncing off the borders
            for axis, limit in enumerate((height, width)):
                m["centre"][axis] += m["velocity"][axis]
                lo, hi = m["radius"], limit - m["radius"]
                if not lo <= m["centre"][axis] <= hi:
                    m["velocity"][axis] *= -1
                    m["centre"][axis] = np.clip(m["centre"][axis], lo, hi)
        images[t] = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return images, ids


def write_davis(root: str | Path, spec: SyntheticSpec) -> list[str]:
    """Write ``spec.davis_sequences`` under ``root`` in the DAVIS layout; return the sequence names."""
    root = Path(root)
    height, width = spec.davis_size
    names = list(spec.davis_sequences)
    for i, name in enumerate(names):
        rng = np.random.default_rng([spec.seed, 3, i])
        images, ids = render_video(spec.davis_frames, height, width, 1 + i % spec.davis_objects, rng)
        frames_dir = root / "JPEGImages" / "480p" / name
        frames_dir.mkdir(parents=True, exist_ok=True)
        for t in range(spec.davis_frames):
            Image.fromarray(images[t]).save(frames_dir / f"{t:05d}.jpg", quality=95)
            write_palette_png(ids[t], root / "Annotations" / "480p" / name / f"{t:05d}.png")
    sets = root / "ImageSets" / "2017"
    sets.mkdir(parents=True, exist_ok=True)
    (sets / "val.txt").write_text("".join(f"{name}\n" for name in names))
    return names
