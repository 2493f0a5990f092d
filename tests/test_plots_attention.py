"""vitscope.plots.attention: the figures of where the models attend, built from small hand-made
tables (the rows as read back from their CSVs: every value a string) and checked by their
labels, titles and legends."""

from __future__ import annotations

import numpy as np
import pytest

from vitscope.attention import saliency
from vitscope.plots import attention


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


def test_distance_heads_one_panel_per_model() -> None:
    fig = attention.distance_heads({"dino": distance_rows(2, 3), "mae": distance_rows(2, 3)}, title="per head")
    assert [ax.get_title() for ax in fig.axes] == ["dino", "mae"]
    assert fig.axes[0].get_ylabel() == "attention distance (pixels)"
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == ["head 1", "head 2", "head 3"]
    assert fig._suptitle.get_text() == "per head"


def test_map_grid_and_aaam_grid_label_blocks_and_heads() -> None:
    maps = np.random.default_rng(0).random((2, 3, 4, 5))
    fig = attention.map_grid(maps, "CLS maps, toy")
    assert len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:3]] == ["head 1", "head 2", "head 3"]
    assert [fig.axes[i].get_ylabel() for i in (0, 3)] == ["block 1", "block 2"]
    assert fig._suptitle.get_text() == "CLS maps, toy\n(each panel on its own colour scale)"
    aaam = attention.aaam_grid(np.random.default_rng(1).random((1, 2, 5, 7)), "AAAM")
    assert "cyan +: the query token" in aaam._suptitle.get_text()
    marker = aaam.axes[0].get_lines()[0]
    assert marker.get_marker() == "+" and (marker.get_xdata()[0], marker.get_ydata()[0]) == (3, 2)


def test_cls_heads_figure_names_each_chosen_head() -> None:
    maps = {"dino": np.random.default_rng(2).random((3, 2, 4, 4)), "mae": np.random.default_rng(3).random((3, 2, 4, 4))}
    entropy = {"dino": np.full((3, 2), 0.5), "mae": np.full((3, 2), 0.99995)}
    chosen = {"dino": [(1, 2, "lowest entropy"), (3, 1, "highest")],
              "mae": [(2, 2, "lowest entropy"), (3, 2, "highest")]}
    fig = attention.cls_heads_figure(maps, chosen, entropy, {"dino": (1, 3), "mae": (2, 3)}, title="CLS heads")
    assert [ax.get_title() for ax in fig.axes[:2]] == ["lowest entropy", "highest"]
    assert fig.axes[0].get_xlabel() == "block 1, head 2\nentropy 0.500"
    assert fig.axes[2].get_xlabel() == "block 2, head 2\nentropy 1 - 5.0e-05"  # near 1: the gap to 1
    assert fig.axes[0].get_ylabel() == "dino\n(blocks 1-3)" and fig.axes[2].get_ylabel() == "mae\n(blocks 2-3)"


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


def test_attention_grid_outlines_the_query_and_names_the_heads() -> None:
    image = np.full((32, 48, 3), 128, np.uint8)
    maps = np.random.default_rng(5).random((2, 2, 2, 2, 3))  # (L, Hg, Q, gh, gw)
    fig = attention.attention_grid(image, maps, ["CLS", "q (1, 2)"], [None, (1, 2)], first_head=4, title="grid")
    assert len(fig.axes) == 8
    assert [ax.get_title() for ax in fig.axes[:2]] == ["CLS", "q (1, 2)"]
    assert [t.get_text() for t in fig.texts if t is not fig._suptitle] == ["head 5", "head 6"]
    outlined = [ax for ax in fig.axes if ax.patches]
    assert len(outlined) == 4  # the spatial query's panels only
    assert outlined[0].patches[0].get_xy() == (2 * 16, 1 * 16)
    assert fig._suptitle.get_text() == "grid"


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
