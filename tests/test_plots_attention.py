"""vitscope.plots.attention: the figures of where the models attend, built from small hand-made
tables (the rows as read back from their CSVs: every value a string) and checked by their
labels, titles and legends."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from vitscope.attention import saliency
from vitscope.plots import attention, common


def distance_rows(blocks: int, heads: int, px_per_grid: float = 100.0, shift: float = 0.0) -> list[dict[str, str]]:
    """Rows of a distance table: distance grows with block and head."""
    return [
        {"block": str(b), "head": str(h), "distance_grid": str(0.1 * b + 0.01 * h + shift),
         "distance_px": str(px_per_grid * (0.1 * b + 0.01 * h + shift))}
        for b in range(1, blocks + 1) for h in range(1, heads + 1)
    ]


def test_distance_by_block_labels_and_the_other_unit() -> None:
    tables = {"dino": distance_rows(3, 2), "mae": distance_rows(3, 2, shift=0.05)}
    fig = attention.distance_by_block(tables, units="pixels", title="Attention distance, toy")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "block" and ax.get_ylabel() == "mean attention distance (pixels)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["dino", "mae"]
    assert ax.get_title() == "Attention distance, toy"
    means = ax.get_lines()[0].get_ydata()  # dino's mean over heads per block
    np.testing.assert_allclose(means, [100 * (0.1 * b + 0.015) for b in (1, 2, 3)])
    assert ax.child_axes[0].get_ylabel() == "fraction of grid"  # one pixels-per-grid factor: both units shown
    mixed = attention.distance_by_block({"a": distance_rows(2, 1), "b": distance_rows(2, 1, px_per_grid=50.0)})
    assert mixed.axes[0].child_axes == []  # two factors: no secondary axis
    grid = attention.distance_by_block(tables, units="grid")
    assert grid.axes[0].get_ylabel() == "mean attention distance (fraction of grid, [0, 1])"
    assert grid.axes[0].child_axes[0].get_ylabel() == "pixels"


def test_distance_heads_one_panel_per_model_and_no_lines_across_blocks() -> None:
    """Heads are dots at their block's x and the mean a bar: nothing joins head k of one block
    to head k of the next (head identity across blocks means nothing)."""
    fig = attention.distance_heads({"dino": distance_rows(2, 3), "mae": distance_rows(2, 3)}, title="per head")
    assert [ax.get_title() for ax in fig.axes] == ["dino (3 heads)", "mae (3 heads)"]
    assert fig.axes[0].get_ylabel() == "attention distance (pixels)"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["one head", "mean over heads"]
    assert fig._suptitle.get_text().startswith("per head\n")
    for ax in fig.axes:
        joined = [line for line in ax.get_lines() if len(set(line.get_xdata())) > 1 and line.get_linestyle() != "None"]
        assert joined == []
        dots, means = ax.collections
        np.testing.assert_array_equal(dots.get_offsets()[:, 0], [1, 1, 1, 2, 2, 2])  # at the block, no jitter
        np.testing.assert_allclose(means.get_offsets(), [[1, 100 * 0.12], [2, 100 * 0.22]])


def test_map_grid_labels_blocks_and_heads_on_one_shared_scale() -> None:
    maps = np.random.default_rng(0).random((2, 3, 4, 5))
    maps[1, 2] = 0.05  # a flat map
    fig = attention.map_grid(maps, "CLS maps, toy")
    panels, bar = fig.axes[:6], fig.axes[6]
    assert len(fig.axes) == 7  # six panels and the colour bar
    assert [ax.get_title() for ax in panels[:3]] == ["head 1", "head 2", "head 3"]
    assert [panels[i].get_ylabel() for i in (0, 3)] == ["block 1", "block 2"]
    assert bar.get_ylabel() == "mean CLS attention on the token"
    norms = {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in panels}
    assert norms == {(0.0, maps.max())}  # one scale for every panel, from 0
    assert fig._suptitle.get_text().startswith("CLS maps, toy\none colour scale for all panels")
    assert panels[5].texts[0].get_text() == "H 1.000"  # the flat map says it is flat
    entropy = attention.map_entropy(maps[0, 0])
    assert panels[0].texts[0].get_text() == f"H {entropy:.3f}"


def test_map_entropy_matches_a_loop() -> None:
    maps = np.random.default_rng(7).random((3, 2, 4, 5))
    maps[0, 0] = 0
    maps[0, 0, 1, 2] = 3.0  # one cell: 0
    maps[1, 1] = np.nan
    got = attention.map_entropy(maps)
    for idx in np.ndindex(3, 2):
        p = maps[idx].ravel() / maps[idx].sum()
        want = np.nan if np.isnan(p).any() else -sum(v * np.log(v) for v in p if v > 0) / np.log(20)
        assert (np.isnan(got[idx]) and np.isnan(want)) or abs(got[idx] - want) < 1e-12
    assert got[0, 0] == 0 and attention.map_entropy(np.ones((1, 3, 3)))[0] == pytest.approx(1)
    assert attention.entropy_words(1 - 1e-5) == "1 - 1e-05" and attention.entropy_words(np.nan) == "n/a"


@pytest.mark.parametrize("grid", [(1, 1), (3, 3), (8, 8), (5, 7), (14, 14)])
def test_uniform_aaam_is_the_aaam_of_uniform_attention(grid: tuple[int, int]) -> None:
    """The baseline from the grid's geometry equals the AAAM the metric computes from uniform attention."""
    import torch

    from vitscope.attention import metrics

    tokens = 1 + grid[0] * grid[1]
    attn = torch.full((tokens, tokens), 1.0 / tokens, dtype=torch.float64)
    expected = metrics.aligned_attention(attn, grid).numpy()
    np.testing.assert_allclose(attention.uniform_aaam(grid), expected, rtol=1e-12, atol=1e-15)
    assert attention.uniform_aaam(grid).sum() == pytest.approx(1)
    np.testing.assert_allclose(attention.aaam_ratio(expected), 1.0, rtol=1e-12)


def test_aaam_grid_divides_by_the_uniform_attention_aaam() -> None:
    """Uniform attention draws as exactly 1 (flat, the middle of the scale); a head that attends to its
    own token is > 1 at the query only. Every panel and model shares one fixed log scale about 1."""
    gh, gw = 3, 4
    uniform = attention.uniform_aaam((gh, gw))
    local = uniform.copy()
    local[gh - 1, gw - 1] *= 5
    local /= local.sum()
    aaam = np.stack([uniform, local])[None]  # (1, 2, 5, 7)
    fig = attention.aaam_grid(aaam, "AAAM")
    flat, peaked = (ax.images[0].get_array() for ax in fig.axes[:2])
    np.testing.assert_allclose(flat, 1.0)  # the tent is gone: uniform attention looks uniform
    assert peaked[gh - 1, gw - 1] > 1 and (np.delete(peaked.ravel(), (gh - 1) * (2 * gw - 1) + gw - 1) < 1).all()
    norms = {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in fig.axes[:2]}
    assert norms == {(1 / attention.AAAM_RATIO_RANGE, attention.AAAM_RATIO_RANGE)}  # fixed: models compare
    assert isinstance(fig.axes[0].images[0].norm, matplotlib.colors.LogNorm)
    assert fig.axes[-1].get_ylabel() == "AAAM / uniform-attention AAAM"
    assert [ax.texts[0].get_text() for ax in fig.axes[:2]] == ["self 1x", f"self {peaked[gh - 1, gw - 1]:.2g}x"]
    assert "AAAM / AAAM of uniform attention" in fig._suptitle.get_text()
    strong = local.copy()
    strong[gh - 1, gw - 1] *= 100  # beyond the range: the end colour, and the colour bar says so
    beyond = attention.aaam_grid((strong / strong.sum())[None, None], "AAAM")
    assert beyond.axes[0].images[0].get_array().max() == attention.AAAM_RATIO_RANGE
    assert beyond.axes[-1]._colorbar.extend in ("max", "both") and fig.axes[-1]._colorbar.extend == "neither"
    marker = fig.axes[0].get_lines()[0]
    assert marker.get_marker() == "+" and (marker.get_xdata()[0], marker.get_ydata()[0]) == (gw - 1, gh - 1)


def test_cls_heads_figure_names_each_chosen_head() -> None:
    maps = {"dino": np.random.default_rng(2).random((3, 2, 4, 4)), "mae": np.random.default_rng(3).random((3, 2, 4, 4))}
    entropy = {"dino": np.full((3, 2), 0.5), "mae": np.full((3, 2), 0.99995)}
    chosen = {"dino": [(1, 2, "lowest entropy"), (3, 1, "highest")],
              "mae": [(2, 2, "lowest entropy"), (3, 2, "highest")]}
    fig = attention.cls_heads_figure(maps, chosen, entropy, {"dino": (1, 3), "mae": (2, 3)}, title="CLS heads")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["lowest entropy", "highest"]
    assert fig.axes[0].get_xlabel() == "block 1, head 2\nentropy 0.500"
    assert fig.axes[2].get_xlabel() == "block 2, head 2\nentropy 1 - 5e-05"  # near 1: the gap to 1
    assert fig.axes[0].get_ylabel() == "dino\n(blocks 1-3)" and fig.axes[2].get_ylabel() == "mae\n(blocks 2-3)"
    shown = [maps["dino"][0, 1], maps["dino"][2, 0], maps["mae"][1, 1], maps["mae"][2, 1]]
    norms = {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in fig.axes[:4]}
    assert norms == {(0.0, max(m.max() for m in shown))}  # models compare on one scale
    assert fig.axes[4].get_ylabel() == "mean CLS attention on the token"  # the colour bar


def saliency_rows(model_heads: int, iou: float, note: str = "", images: str = "4") -> list[dict[str, str]]:
    rows = [{"block": str(b), "selection": "head", "head": str(h), "iou": str(iou), "note": note, "images": images}
            for b in (1, 2) for h in range(1, model_heads + 1)]
    rows += [{"block": str(b), "selection": s, "head": "", "iou": str(iou), "note": note, "images": images}
             for b in (1, 2) for s in ("best_head_once", "per_image_best_head")]
    return rows


def test_saliency_by_block_panels_and_a_nan_model() -> None:
    tables = {"dino": saliency_rows(3, 0.4), "mae": saliency_rows(2, float("nan"), note=saliency.NO_MASS)}
    fig = attention.saliency_by_block(tables, mass=0.6, title="Saliency, toy")
    left, right = fig.axes
    assert left.get_ylabel() == "IoU: CLS attention (top 0.6 mass) vs object mask"
    assert left.get_title().startswith("best head, chosen once per block")
    assert right.get_title().startswith("per-image best head (the study's)")
    legend = [t.get_text() for t in right.get_legend().get_texts()]
    assert legend == ["dino (3 heads)", "mae (2 heads) (n/a: the CLS attention has no spatial mass in any image)"]
    assert fig._suptitle.get_text() == (
        "Saliency, toy\ngaps / n/a: CLS attention with no spatial mass in every image (zero_mass in the table)"
    )
    assert attention.saliency_by_block({"dino": saliency_rows(3, 0.4)})._suptitle is None  # nothing to explain


@pytest.mark.parametrize(("note", "images", "reason"), [("", "0", "every object mask empty"), ("", "3", "undefined"),
                                                      ("undefined: odd", "3", "odd")])
def test_saliency_reason_of_old_tables(note: str, images: str, reason: str) -> None:
    """Tables written before the note column: no images means no mask, else plain "undefined"."""
    assert attention._saliency_reason({"note": note, "images": images}) == reason


def test_attention_grid_shows_the_image_outlines_the_query_and_names_the_heads() -> None:
    image = np.random.default_rng(4).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    maps = np.random.default_rng(5).random((2, 2, 2, 2, 3))  # (L, Hg, Q, gh, gw)
    maps[0, 0, 0] = 1 / 6  # a flat map
    fig = attention.attention_grid(image, maps, ["CLS", "q (1, 2)"], [None, (1, 2)], first_head=4, title="grid")
    raw, marked, panels = fig.axes[0], fig.axes[1], fig.axes[2:]
    assert raw.get_title() == "image" and raw.images[0].get_array().shape == (32, 48, 3)
    np.testing.assert_array_equal(raw.images[0].get_array(), image)  # the image itself, in colour
    assert marked.get_xlabel() == "queries" and [t.get_text() for t in marked.texts] == ["Q"]
    assert len(panels) == 8
    assert [ax.get_title() for ax in panels[:2]] == ["CLS", "q (1, 2)"]
    assert [t.get_text() for t in fig.texts if t is not fig._suptitle] == ["head 5", "head 6"]
    outlined = [ax for ax in panels if ax.patches]
    assert len(outlined) == 4  # the spatial query's panels only
    x, y = outlined[0].patches[0].get_xy()
    assert 2 * 16 < x < 3 * 16 and 16 < y < 2 * 16  # inside its token: never clipped at the edge
    assert x + outlined[0].patches[0].get_width() <= 48 and y + outlined[0].patches[0].get_height() <= 32
    assert panels[0].texts[0].get_text() == "max 1.0x"  # the flat map says so
    assert panels[0].images[1].norm.vmin == 0
    assert fig._suptitle.get_text().startswith("grid\ncolour: 0 to each panel's own maximum")


def test_head_with_no_spatial_mass_anywhere_says_why() -> None:
    """Every image's CLS row of head 1 on the prefix: that head's row is NaN with its reason in
    ``note``; the best head once is chosen among the heads that have a mean."""
    from vitscope.plots import attention as plots

    rows = np.zeros((2, 1, 2, 1 + 4))
    rows[:, :, :, 0] = 1.0
    rows[:, 0, 1] = [0.2, 0.4, 0.2, 0.1, 0.1]
    masks = np.zeros((2, 2, 2), dtype=bool)
    masks[:, 0, 0] = True
    table = saliency.summary_rows(saliency.saliency_iou(rows, masks), "m", np.zeros(2, bool))
    head1 = next(r for r in table if r["selection"] == "head" and r["head"] == 1)
    assert np.isnan(head1["iou"]) and head1["note"] == saliency.NO_MASS and head1["zero_mass"] == 2
    once = next(r for r in table if r["selection"] == "best_head_once")
    assert once["head"] == 2 and once["iou"] == 0.5 and once["note"] == ""  # tokens 1, 2 of 4 hold 0.6
    assert all(r["note"] == "" for r in table if not np.isnan(r["iou"]))
    text = [{k: str(v) for k, v in r.items()} for r in table]
    fig = plots.saliency_by_block({"m": text}, title="t")
    assert "CLS attention with no spatial mass in every image" in fig._suptitle.get_text()


def test_every_mask_empty_is_named_in_the_figure() -> None:
    """No image with a non-empty mask: the rows are NaN with images = 0, and the figure names the
    model as n/a instead of drawing nothing."""
    from vitscope.plots import attention as plots

    rows = saliency.summary_rows(np.full((2, 1, 3), np.nan), "m")
    assert all(np.isnan(r["iou"]) and r["images"] == 0 and r["empty_masks"] == 2 for r in rows)
    assert next(r for r in rows if r["selection"] == "best_head_once")["head"] == ""  # no head is best
    text = [{k: str(v) for k, v in r.items()} for r in rows]
    fig = plots.saliency_by_block({"m": text}, title="t")
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["m (3 heads) (n/a: every object mask empty)"]
    assert "no image with a non-empty object mask" in fig._suptitle.get_text()


# Every figure function on inputs of the study's and the demo's size: no text under 7 pt, no overlaps.

LONG_NAMES = ("fs", "contrastive", "mae", "moco_v3_vitb16")
SIZES = [pytest.param(4, 3, 8, id="demo-4x3-8x8"), pytest.param(12, 12, 14, id="b16-12x12-14x14")]


def peaked_maps(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    maps = rng.random(shape) ** 6
    maps /= maps.sum(axis=(-2, -1), keepdims=True)
    return maps


@pytest.mark.parametrize(("blocks", "heads", "g"), SIZES)
def test_map_and_aaam_grids_have_clean_text(blocks: int, heads: int, g: int) -> None:
    rng = np.random.default_rng(blocks)
    maps = peaked_maps(rng, (blocks, heads, g, g))
    maps[0, 0, 0, 0] = np.nan
    maps[1] = 1 / g**2
    title = "moco_v3_vitb16: averaged CLS attention, imagenet_50 (5000 images)"
    assert common.text_problems(attention.map_grid(maps, title)) == []
    aaam = np.broadcast_to(attention.uniform_aaam((g, g)), (blocks, heads, 2 * g - 1, 2 * g - 1)).copy()
    aaam[0, 1] = peaked_maps(rng, (2 * g - 1, 2 * g - 1))
    aaam[1, 0, 0, 0] = np.nan
    title = f"contrastive: aligned aggregated attention (AAAM), imagenet_50 (5000 images, {g}x{g} tokens)"
    assert common.text_problems(attention.aaam_grid(aaam, title)) == []


@pytest.mark.parametrize(("blocks", "heads", "g"), SIZES)
def test_cross_model_figures_have_clean_text(blocks: int, heads: int, g: int) -> None:
    rng = np.random.default_rng(g)
    distance = {m: distance_rows(blocks, heads, shift=0.01 * i) for i, m in enumerate(LONG_NAMES)}
    distance["mae"][0]["distance_px"] = distance["mae"][0]["distance_grid"] = "nan"
    fig = attention.distance_by_block(distance, title="Attention distance, imagenet_50 (dots: heads)")
    assert common.text_problems(fig) == []
    fig = attention.distance_heads(distance, title="Attention distance per head, imagenet_50")
    assert common.text_problems(fig) == []
    maps = {m: peaked_maps(rng, (blocks, heads, g, g)) for m in LONG_NAMES}
    chosen = {m: [(blocks // 2 + 1, 1, "most concentrated"), (blocks, 2, "median"), (blocks, heads, "most diffuse")]
              for m in LONG_NAMES}
    entropy = {m: attention.map_entropy(v) for m, v in maps.items()}
    entropy["mae"][blocks - 1, 1] = 1 - 1e-5
    title = ("Averaged CLS attention, imagenet_50: heads chosen by the normalised entropy of their map among blocks "
             "ceil(0.5 L) to ceil(1 L) of L")
    spans = {m: (blocks // 2, blocks) for m in LONG_NAMES}
    assert common.text_problems(attention.cls_heads_figure(maps, chosen, entropy, spans, title=title)) == []
    saliency_tables = {m: saliency_rows(heads, 0.3 + 0.1 * i) for i, m in enumerate(LONG_NAMES)}
    saliency_tables["mae"] = saliency_rows(heads, float("nan"), note=saliency.NO_MASS)
    fig = attention.saliency_by_block(saliency_tables, title="CLS attention saliency, coco (5000 images)")
    assert common.text_problems(fig) == []


@pytest.mark.parametrize(("blocks", "heads", "g"), [pytest.param(4, 3, 8, id="demo-4x3-8x8"),
                                                    pytest.param(12, 4, 14, id="b16-12x4-14x14")])
def test_attention_grid_has_clean_text(blocks: int, heads: int, g: int) -> None:
    from vitscope.attention import exemplars

    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (16 * g, 16 * g, 3), dtype=np.uint8)
    maps = peaked_maps(rng, (blocks, heads, 6, g, g))
    maps[0, 0, 1] = np.nan
    cells = [None] + [exemplars.query_tokens((g, g))[q] for q in exemplars.QUERIES[1:]]
    title = ("moco_v3_vitb16: attention of image 12 of imagenet_50 (n01440764/ILSVRC2012_val_00000293.JPEG), "
             f"heads 1-{heads}: the CLS query and five spatial queries")
    fig = attention.attention_grid(image, maps, list(exemplars.QUERIES), cells, title=title)
    assert common.text_problems(fig) == []


def test_attention_grid_queries_on_one_token_share_a_label() -> None:
    """On a 2 x 2 grid the center and top queries are one token: one label, no overlapping text."""
    from vitscope.attention import exemplars

    cells = [None] + [exemplars.query_tokens((2, 2))[q] for q in exemplars.QUERIES[1:]]
    maps = np.full((1, 1, 6, 2, 2), 0.25)
    fig = attention.attention_grid(np.zeros((32, 32, 3), np.uint8), maps, list(exemplars.QUERIES), cells)
    assert sorted(t.get_text() for t in fig.axes[1].texts) == ["B", "CTL", "R"]
    assert common.text_problems(fig) == []
