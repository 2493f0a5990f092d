"""DAVIS scoring (hand-computed cases of the official definitions) and label propagation
(against a slow explicit loop in float64)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vitscope.tasks.davis import evaluation as davis


def square(shape, top, left, size):
    m = np.zeros(shape, dtype=bool)
    m[top : top + size, left : left + size] = True
    return m


# ----------------------------------------------------------------------------- J


def test_j_both_empty_is_one_and_one_empty_is_zero():
    empty = np.zeros((5, 6), bool)
    assert davis.j_measure(empty, empty) == 1.0
    assert davis.j_measure(square((5, 6), 1, 1, 2), empty) == 0.0
    assert davis.j_measure(empty, square((5, 6), 1, 1, 2)) == 0.0


def test_j_shifted_squares_by_hand():
    # 4x4 squares shifted by one column: intersection 12, union 20
    a, b = square((10, 10), 2, 2, 4), square((10, 10), 2, 3, 4)
    assert davis.j_measure(a, b) == pytest.approx(12 / 20)
    # batched: (2, H, W) -> (2,)
    np.testing.assert_allclose(davis.j_measure(np.stack([a, a]), np.stack([b, a])), [0.6, 1.0])


def test_j_void_pixels_leave_intersection_and_union():
    a, b = square((10, 10), 2, 2, 4), square((10, 10), 2, 3, 4)
    void = np.zeros((10, 10), bool)
    void[2:6, 2] = True  # the column only a covers: union 20 -> 16
    assert davis.j_measure(a, b, void) == pytest.approx(12 / 16)
    void_all = np.ones((10, 10), bool)
    assert davis.j_measure(a, b, void_all) == 1.0  # nothing left: empty union


# ----------------------------------------------------------------------------- boundaries and F


def test_boundary_of_one_pixel_is_its_top_left_2x2():
    m = np.zeros((4, 4), bool)
    m[1, 1] = True
    expected = np.zeros((4, 4), bool)
    expected[0:2, 0:2] = True
    np.testing.assert_array_equal(davis.boundary_map(m), expected)


def test_boundary_last_row_and_column_rules():
    # the image border is no boundary: a full mask has none
    assert not davis.boundary_map(np.ones((3, 4), bool)).any()
    # an object in the last column: its boundary lies half a pixel towards the origin (column 2);
    # the last column itself only compares south, the last row only east
    m = np.zeros((3, 4), bool)
    m[:, -1] = True
    expected = np.zeros((3, 4), bool)
    expected[:, 2] = True
    np.testing.assert_array_equal(davis.boundary_map(m), expected)


def test_disk_and_bound_pixels():
    d = davis.disk(1)
    np.testing.assert_array_equal(d, [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    assert davis.disk(2).sum() == 13
    # DAVIS 480p: ceil(0.008 * hypot(480, 854)) = ceil(7.837) = 8
    assert davis.bound_pixels((480, 854)) == 8
    assert davis.bound_pixels((480, 854), 3) == 3


def test_f_empty_cases():
    empty = np.zeros((20, 20), bool)
    obj = square((20, 20), 5, 5, 4)
    assert davis.f_measure(empty, empty) == 1.0  # P = R = 1
    assert davis.f_measure(empty, obj) == 0.0  # P = 1, R = 0
    assert davis.f_measure(obj, empty) == 0.0  # P = 0, R = 1
    assert davis.f_measure(obj, obj) == 1.0


def test_f_one_pixel_objects_within_and_beyond_the_tolerance():
    # 20x20: radius ceil(0.008 * 28.28) = 1. One-pixel objects have a 2x2 boundary.
    a = np.zeros((20, 20), bool)
    a[10, 10] = True
    b = np.zeros((20, 20), bool)
    b[10, 11] = True  # boundaries {9,10} x {9,10} and {9,10} x {10,11}: every pixel within 1
    assert davis.f_measure(a, b) == 1.0
    c = np.zeros((20, 20), bool)
    c[10, 13] = True  # boundaries 3 columns apart: nothing within 1
    assert davis.f_measure(a, c) == 0.0


def test_f_shifted_squares_by_hand():
    # 40x40 -> radius ceil(0.008 * 56.57) = 1. A 10x10 square at (10,10) and one shifted by 3 columns.
    a, b = square((40, 40), 10, 10, 10), square((40, 40), 10, 13, 10)
    ea, eb = davis.boundary_map(a), davis.boundary_map(b)
    # The boundary of a 10x10 square at rows/cols 10..19 is the ring of the 11x11 box 9..19 (40 pixels);
    # b's ring spans columns 12..22.
    assert ea.sum() == eb.sum() == 40
    # a's boundary pixels within the radius-1 disk of b's ring: top and bottom rows at columns 11..19
    # (9 + 9) and a's right column at rows 10 and 18 (next to b's top and bottom rows): 20 of 40.
    precision = 20 / 40
    recall = 20 / 40  # the same by symmetry
    expected = 2 * precision * recall / (precision + recall)
    assert davis.f_measure(a, b) == pytest.approx(expected)


def test_f_void_pixels_are_cleared_from_both_masks():
    a, b = square((40, 40), 10, 10, 10), square((40, 40), 10, 13, 10)
    void = a | b
    assert davis.f_measure(a, b, void) == 1.0  # both masks empty after clearing


def test_f_matches_a_brute_force_definition():
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = rng.random((30, 37)) > 0.7
        b = rng.random((30, 37)) > 0.7
        r = davis.bound_pixels(a.shape)
        ea, eb = davis.boundary_map(a), davis.boundary_map(b)

        def near(points, others, r=r):
            return sum(any((y - v) ** 2 + (x - u) ** 2 <= r * r for v, u in others) for y, x in points)

        pa, pb = list(zip(*np.nonzero(ea), strict=True)), list(zip(*np.nonzero(eb), strict=True))
        precision, recall = near(pa, pb) / len(pa), near(pb, pa) / len(pb)
        expected = 2 * precision * recall / (precision + recall)
        assert davis.f_measure(a, b) == pytest.approx(expected)


# ----------------------------------------------------------------------------- statistics, sequences


def test_decay_bins_and_statistics_by_hand():
    # n = 4: linspace(1, 4, 5) = 1, 1.75, 2.5, 3.25, 4 -> rounded 1, 2, 3, 3, 4 -> edges 0, 1, 2, 2, 3
    assert davis.decay_bins(4) == [(0, 2), (1, 3), (2, 3), (2, 4)]
    stats = davis.statistics(np.array([1.0, 0.8, 0.4, 0.2]))
    assert stats["mean"] == pytest.approx(0.6)
    assert stats["recall"] == pytest.approx(0.5)
    assert stats["decay"] == pytest.approx(0.9 - 0.3)
    one = davis.statistics(np.array([0.7]))
    assert one == {"mean": 0.7, "recall": 1.0, "decay": 0.0}


def test_evaluate_sequence_excludes_first_and_last_and_treats_void_as_background():
    gt = np.zeros((4, 8, 8), np.uint8)
    gt[:, 2:5, 2:5] = 1
    gt[:, 6, 6] = 2
    gt[:, 0, :] = davis.VOID
    pred = gt.copy()
    pred[pred == davis.VOID] = 0
    pred[0] = 0  # the first and last frames do not count
    pred[3] = 0
    pred[2, 6, 6] = 0  # object 2 lost in frame 2
    j, f = davis.evaluate_sequence(pred, gt)
    assert j.shape == f.shape == (2, 2)
    np.testing.assert_allclose(j, [[1, 1], [1, 0]])
    np.testing.assert_allclose(f, [[1, 1], [1, 0]])
    # void (255) in the ground truth is background, as in the official evaluator
    pred_void = pred.copy()
    pred_void[1:3, 0, :] = 1
    j2, _ = davis.evaluate_sequence(pred_void, gt)
    assert j2[0, 0] == pytest.approx(9 / (9 + 8))
    with pytest.raises(ValueError, match="exceeds"):
        davis.evaluate_sequence(np.full_like(gt, 3), gt)


def test_pooled_weighs_objects_equally():
    rows = []
    for seq, objects in (("a", [0.2]), ("b", [0.6, 1.0])):
        for k, value in enumerate(objects):
            for measure, v in (("J", value), ("F", value / 2)):
                for metric in davis.STATISTICS:
                    rows.append({"model": "m", "block": 1, "sequence": seq, "object": k + 1, "frames": 5,
                                 "measure": measure, "metric": metric, "value": v})
    out = {(r["measure"], r["metric"]): r for r in davis.pooled(rows)}
    assert out["J", "mean"]["value"] == pytest.approx(0.6)
    assert out["F", "mean"]["value"] == pytest.approx(0.3)
    assert out["J&F", "mean"]["value"] == pytest.approx(0.45)
    assert out["J&F", "mean"]["objects"] == 3
    assert {(r["sequences"], r["frames"]) for r in out.values()} == {(2, 10)}  # 2 sequences of 5 scored frames


# ----------------------------------------------------------------------------- label propagation


def slow_propagate(target, sources, labels, temperature, topk, grid, radius):
    """Explicit loops in float64: target (G, D), sources (S, G, D) already normalised, labels (S, C, G)."""
    target, sources, labels = (np.asarray(x, dtype=np.float64) for x in (target, sources, labels))
    gh, gw = grid
    s_count, c_count = sources.shape[0], labels.shape[1]
    out = np.zeros((c_count, gh * gw))
    for t in range(gh * gw):
        ti, tj = divmod(t, gw)
        candidates = []
        for s in range(s_count):
            for q in range(gh * gw):
                qi, qj = divmod(q, gw)
                inside = radius <= 0 or (abs(qi - ti) <= radius and abs(qj - tj) <= radius)
                value = math.exp(sum(target[t] * sources[s, q]) / temperature) if inside else 0.0
                candidates.append((value, s, q))
        kth = sorted((c[0] for c in candidates), reverse=True)[min(topk, len(candidates)) - 1]
        kept = [c for c in candidates if c[0] >= kth]
        total = sum(c[0] for c in kept)
        for value, s, q in kept:
            out[:, t] += value / total * labels[s, :, q]
    return out


@pytest.mark.parametrize(("radius", "topk"), [(1, 5), (2, 3), (0, 4)])
def test_propagate_matches_the_slow_loop(radius, topk):
    gen = torch.Generator().manual_seed(radius)
    grid, d, s, c = (4, 5), 8, 3, 3
    target = davis.normalize(torch.randn(20, d, generator=gen))
    sources = davis.normalize(torch.randn(s, 20, d, generator=gen))
    labels = torch.softmax(torch.randn(s, c, 20, generator=gen), dim=1)
    mask = davis.neighbourhood(grid, radius) if radius > 0 else None
    fast = davis.propagate(target, sources, labels, 0.1, topk, mask)
    slow = slow_propagate(target, sources, labels, 0.1, topk, grid, radius)
    np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast.sum(0).numpy(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("case", ["tied", "few candidates"])
def test_propagate_keeps_ties_and_zero_candidates_like_the_slow_loop(case):
    gen = torch.Generator().manual_seed(7)
    grid, d = (4, 5), 8
    target = davis.normalize(torch.randn(20, d, generator=gen))
    frame = davis.normalize(torch.randn(1, 20, d, generator=gen))
    # two identical context frames: every similarity appears twice, so the 5th is tied with the 6th;
    # one frame with radius 1: corner targets have 4 < 5 candidates (the k-th affinity is 0)
    sources = torch.cat([frame, frame]) if case == "tied" else frame
    labels = torch.softmax(torch.randn(sources.shape[0], 3, 20, generator=gen), dim=1)
    fast = davis.propagate(target, sources, labels, 0.1, 5, davis.neighbourhood(grid, 1))
    slow = slow_propagate(target, sources, labels, 0.1, 5, grid, 1)
    np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reps", [3, 5])
def test_propagate_keeps_repeated_frames_together(reps):
    """A frame repeated in the context: every source has `reps` identical copies, so a k that splits
    them must keep them all (ties at the k-th). The float32 product need not give copies the same bits
    (MKL rounds the last copy apart at these shapes here); the kept set is decided on the exact cosine."""
    for seed in range(3):
        gen = torch.Generator().manual_seed(seed)
        target = davis.normalize(torch.randn(7, 50, generator=gen))
        sources = davis.normalize(torch.randn(1, 7, 50, generator=gen)).repeat(reps, 1, 1)
        labels = torch.softmax(torch.randn(reps, 3, 7, generator=gen), dim=1)
        for k in range(1, 3 * reps):
            fast = davis.propagate(target, sources, labels, 0.1, k, None)
            slow = slow_propagate(target, sources, labels, 0.1, k, (1, 7), 0)
            np.testing.assert_allclose(fast.numpy(), slow, rtol=1e-5, atol=1e-6, err_msg=f"seed {seed}, k {k}")


def test_neighbourhood_window():
    mask = davis.neighbourhood((5, 6), 1)
    assert mask.shape == (30, 30) and torch.equal(mask, mask.T)
    assert int(mask[0].sum()) == 4 and int(mask[7].sum()) == 9  # corner, interior
    assert bool(davis.neighbourhood((3, 3), 0).all())


def test_propagator_context_is_first_frame_and_last_predictions():
    """A sliding-window loop reference: frame t sees frame 0 and predictions t-context..t-1."""
    gen = torch.Generator().manual_seed(3)
    grid, d, n, context = (3, 4), 6, 7, 2
    feats = [torch.randn(12, d, generator=gen) for _ in range(n)]
    annotation = np.zeros((6, 8), np.uint8)
    annotation[:3, :4] = 1
    annotation[4:, 5:] = 2
    labels0 = davis.first_labels(annotation, grid, 2)
    prop = davis.Propagator(feats[0], labels0, grid, 0.1, 3, context, 1)
    preds = [labels0.double().numpy()]
    normed = [davis.normalize(f).double().numpy() for f in feats]
    for t in range(1, n):
        ctx = [0] + list(range(max(1, t - context), t))
        expected = slow_propagate(normed[t], np.stack([normed[i] for i in ctx]), np.stack([preds[i] for i in ctx]),
                                  0.1, 3, grid, 1)
        got = prop.step(feats[t]).double().numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
        preds.append(expected)


def test_first_labels_nearest_and_void():
    annotation = np.zeros((4, 6), np.uint8)
    annotation[:2, :3] = 1
    annotation[2:, 3:] = davis.VOID
    labels = davis.first_labels(annotation, (2, 3), 1)
    assert labels.shape == (2, 6)
    # PIL nearest samples pixel centres: rows 1, 3 and columns 1, 3, 5; only (1, 1) is object,
    # (3, 3) and (3, 5) are void -> background
    np.testing.assert_array_equal(labels[1].reshape(2, 3).numpy(), [[1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(labels.sum(0).numpy(), 1)


def test_minmax_channels_and_to_mask():
    x = torch.tensor([[[0.2, 0.6], [0.4, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.5, 0.5], [0.5, 0.5]]])
    y = davis.minmax_channels(x)
    np.testing.assert_allclose(y[0].numpy(), [[0, 0.5], [0.25, 1]], rtol=1e-6)
    assert torch.equal(y[1], x[1]) and torch.equal(y[2], torch.zeros(2, 2))
    soft = torch.zeros(2, 4)
    soft[0] = torch.tensor([1.0, 1.0, 1.0, 0.0])
    soft[1] = torch.tensor([0.0, 0.0, 0.0, 1.0])
    mask = davis.to_mask(soft, (2, 2), (4, 4), (6, 10))
    assert mask.shape == (6, 10) and mask.dtype == np.uint8
    assert mask[0, 0] == 0 and mask[-1, -1] == 1


def test_propagate_video_follows_a_moving_square():
    """Features that encode position relative to a moving object: propagation tracks it."""
    grid, patch, n = (6, 6), (4, 4), 5
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(2, 16))
    frames, feats = [], []
    for t in range(n):
        ids = np.zeros(grid, np.uint8)
        ids[1:3, t : t + 2] = 1
        frames.append(np.kron(ids, np.ones(patch, np.uint8)))
        feats.append(torch.tensor(codes[ids.reshape(-1)] + 0.01 * rng.normal(size=(36, 16)), dtype=torch.float32))
    masks = davis.propagate_video(feats, frames[0], grid, patch, radius=2, topk=3)
    j, _ = davis.evaluate_sequence(masks, np.stack(frames))
    assert masks.shape == (n, 24, 24)
    assert j.mean() > 0.9
