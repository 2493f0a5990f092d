"""Dense features: the study's resize, window placement, stitching, tiled against the model run by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.errors import ConfigError, ModelError
from vitscope.tasks.davis import dense

CPU = torch.device("cpu")
TINY = {"arch": "test_vit", "weights": "random", "seed": 0, "image_size": 32}


def test_resized_size_is_the_studys():
    assert dense.resized_size(480, 854, 448, (16, 16)) == (448, 784)  # 797.0 floored to 16
    assert dense.resized_size(854, 480, 448, (16, 16)) == (784, 448)  # portrait
    assert dense.resized_size(480, 854, 448, (14, 14)) == (448, 784)
    assert dense.resized_size(480, 854, 480, (8, 8)) == (480, 848)


def test_window_starts_cover_the_frame_and_the_last_one_overlaps():
    assert dense.window_starts(784, 224) == [0, 224, 448, 560]
    assert dense.window_starts(448, 224) == [0, 224]
    assert dense.window_starts(224, 224) == [0]


def test_stitch_takes_each_token_from_the_first_window_covering_it():
    tokens = torch.arange(3, dtype=torch.float32).view(3, 1, 1, 1, 1).expand(3, 2, 2, 2, 1).clone()
    out = dense.stitch(tokens, [(0, 0), (0, 1), (0, 2)], (2, 4))
    np.testing.assert_array_equal(out[0, 0, :, 0].numpy(), [0, 0, 1, 2])
    assert out.shape == (2, 2, 4, 1)


def block_outputs(model, x):
    outs = []
    handles = [b.register_forward_hook(lambda m, a, o: outs.append(o)) for b in model.blocks]
    with torch.no_grad():
        model.forward_features(x)
    for h in handles:
        h.remove()
    return torch.stack([o[:, 1:] for o in outs], 1)  # (B, L, G, D)


def frame(height=48, width=64, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8))


def test_tiled_features_equal_the_model_on_each_window():
    feats, _ = dense.DenseFeatures.from_config("t", TINY, "tiled", 48, CPU)
    image = frame()
    out, layout = feats(image)
    assert layout.size == (48, 64) and layout.grid == (3, 4)
    assert layout.windows == ((0, 0), (0, 32), (16, 0), (16, 32))
    x = feats.preprocess(image, layout.size)
    ref = block_outputs(feats.model, torch.stack([x[:, y : y + 32, c : c + 32] for y, c in layout.windows]))
    ref = ref.reshape(4, ref.shape[1], 2, 2, -1)
    assert out.shape == (ref.shape[1], 3, 4, ref.shape[-1])
    torch.testing.assert_close(out[:, 0:2, 0:2], ref[0])  # window (0, 0)
    torch.testing.assert_close(out[:, 0:2, 2:4], ref[1])  # window (0, 32)
    torch.testing.assert_close(out[:, 2, 0:2], ref[2][:, 1])  # window (16, 0): its second token row
    torch.testing.assert_close(out[:, 2, 2:4], ref[3][:, 1])


def test_full_mode_equals_tiled_at_the_native_size_and_runs_at_others():
    image = frame(40, 40)
    tiled, _ = dense.DenseFeatures.from_config("t", TINY, "tiled", 32, CPU)
    full, _ = dense.DenseFeatures.from_config("t", TINY, "full", 32, CPU)
    a, la = tiled(image)
    b, lb = full(image)
    assert la.grid == lb.grid == (2, 2)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    c, lc = full(frame(48, 64))
    assert lc.grid == (2, 2) and lc.windows == ((0, 0),)  # 32 x 42 -> 32 x 32
    full48, _ = dense.DenseFeatures.from_config("t", TINY, "full", 48, CPU)
    d, ld = full48(frame(48, 64))
    assert ld.grid == (3, 4) and d.shape[1:3] == (3, 4)


def test_bad_settings_name_the_key():
    feats, _ = dense.DenseFeatures.from_config("t", TINY, "tiled", 16, CPU)
    with pytest.raises(ConfigError, match="short_side = 16"):
        feats(frame())
    with pytest.raises(ConfigError, match="analyses.davis.mode"):
        dense.DenseFeatures.from_config("t", TINY, "tiles", 48, CPU)
    with pytest.raises(ModelError, match="mode = tiled"):
        dense.DenseFeatures.from_config("b", {"arch": "beit_base_patch16_224", "weights": "random"}, "full", 48, CPU)
