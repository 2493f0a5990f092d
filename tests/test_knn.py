"""Weighted k-NN (DINO protocol): hand-computed votes, ties, clipping, chunking, a float64 loop."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from vitscope.errors import DumpError
from vitscope.tasks import knn


def slow_knn(bank, bank_labels, queries, query_labels, k, num_classes, temperature=0.07):
    """Reference in float64, one query at a time; ties: lower bank index, then lower class index."""
    bank = np.asarray(bank, np.float64)
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    top1 = top5 = 0
    for q, label in zip(np.asarray(queries, np.float64), query_labels, strict=True):
        q = q / np.linalg.norm(q)
        sims = [float(b @ q) for b in bank]
        order = sorted(range(len(sims)), key=lambda i: (-sims[i], i))[: min(k, len(sims))]
        scores = [0.0] * num_classes
        for i in order:
            scores[bank_labels[i]] += np.exp(sims[i] / temperature)
        ranked = sorted(range(num_classes), key=lambda c: (-scores[c], c))
        top1 += ranked[0] == label
        top5 += label in ranked[: min(5, len(order), num_classes)]
    return top1 / len(query_labels), top5 / len(query_labels)


def test_hand_computed_votes() -> None:
    # bank on the unit circle; query along x. sims: 1, cos(60)=0.5, cos(90)=0, cos(180)=-1
    bank = np.array([[1.0, 0.0], [0.5, np.sqrt(3) / 2], [0.0, 2.0], [-3.0, 0.0]])
    labels = np.array([0, 1, 1, 1])
    query = np.array([[2.0, 0.0]])
    sims, idx = knn.nearest(bank, query, k=4)
    np.testing.assert_array_equal(idx, [[0, 1, 2, 3]])
    np.testing.assert_allclose(sims, [[1.0, 0.5, 0.0, -1.0]], atol=1e-6)
    t = 0.5
    # k = 1: class 0 only; k = 3: class 0 exp(2) vs class 1 exp(1) + exp(0) = 3.718 < exp(2) = 7.389
    scores = knn.vote(sims, labels[idx], 3, 2, t)
    np.testing.assert_allclose(scores, [[np.exp(2), np.exp(1) + 1]], rtol=1e-6)
    # with T = 2: class 0 exp(.5) = 1.649 < class 1 exp(.25) + 1 = 2.284 -> wrong at k = 3
    result = knn.classify(bank, labels, query, [0], num_classes=2, ks=(1, 3), temperature=2.0)
    assert result[1] == {"top1": 1.0, "top5": 1.0}
    assert result[3]["top1"] == 0.0 and result[3]["top5"] == 1.0


def test_ties_take_lower_bank_index_and_lower_class() -> None:
    # bank images 1 and 2 are identical (equal similarity): k = 2 keeps 0 and 1
    bank = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = np.array([0, 1, 2])
    query = np.array([[1.0, 1.0]])
    sims, idx = knn.nearest(bank, query, k=2)
    np.testing.assert_array_equal(idx, [[0, 1]])
    # class scores 0 and 1 tie: top-1 is class 0
    result = knn.classify(bank, labels, query, [0], num_classes=3, ks=(2,))
    assert result[2]["top1"] == 1.0
    result = knn.classify(bank, labels, query, [1], num_classes=3, ks=(2,))
    assert result[2]["top1"] == 0.0 and result[2]["top5"] == 1.0
    # the tie survives chunking: bank chunks of 1 and 2 give the same neighbours
    for chunk in (1, 2):
        np.testing.assert_array_equal(knn.nearest(bank, query, k=2, bank_chunk=chunk)[1], [[0, 1]])


def test_k_larger_than_bank_is_clipped() -> None:
    rng = np.random.default_rng(0)
    bank, labels = rng.normal(size=(7, 5)), rng.integers(0, 3, 7)
    queries, qlabels = rng.normal(size=(4, 5)), rng.integers(0, 3, 4)
    result = knn.classify(bank, labels, queries, qlabels, 3, ks=(7, 200))
    assert result[200] == result[7]
    assert knn.nearest(bank, queries, 200)[1].shape == (4, 7)


@pytest.mark.parametrize(("query_chunk", "bank_chunk"), [(3, 5), (1, 1), (1000, 1000), (7, 64)])
def test_chunked_equals_unchunked_and_the_float64_loop(query_chunk: int, bank_chunk: int) -> None:
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(90, 8)).astype(np.float32)
    bank[10] = bank[3]  # exact ties in the bank
    labels = rng.integers(0, 6, 90)
    queries = rng.normal(size=(23, 8)).astype(np.float32)  # fewer queries than 100
    qlabels = rng.integers(0, 6, 23)
    ks = (1, 5, 10, 20, 100)
    full = knn.classify(bank, labels, queries, qlabels, 6, ks)
    chunked = knn.classify(bank, labels, queries, qlabels, 6, ks, query_chunk=query_chunk, bank_chunk=bank_chunk)
    assert chunked == full
    # bit for bit: the same neighbours and the same (float64) similarities whatever the chunks
    for a, b in zip(knn.nearest(bank, queries, 20, query_chunk, bank_chunk), knn.nearest(bank, queries, 20),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    for k in ks:
        assert (full[k]["top1"], full[k]["top5"]) == pytest.approx(slow_knn(bank, labels, queries, qlabels, k, 6))


def _assert_tie_rule(bank, sims, idx) -> None:
    """Identical bank rows have bit-equal similarities; equal similarities come in bank order."""
    for s, i in zip(sims, idx, strict=True):
        for a in range(len(i) - 1):
            if np.array_equal(bank[i[a]], bank[i[a + 1]]):
                assert s[a] == s[a + 1], f"identical rows {i[a]} and {i[a + 1]}: {s[a]!r} != {s[a + 1]!r}"
            if s[a] == s[a + 1]:
                assert i[a] < i[a + 1]


@pytest.mark.parametrize(("query_chunk", "bank_chunk"), [(1024, 65536), (5, 17), (1, 3)])
def test_duplicate_rows_at_any_position_tie_exactly(query_chunk: int, bank_chunk: int) -> None:
    """Four rows repeated all over the bank: wherever a copy sits in the float32 product (a block edge or
    inside, which some BLAS kernels sum differently, e.g. OpenBLAS Haswell), its similarity is bit-equal."""
    rng = np.random.default_rng(4)
    bank = rng.normal(size=(4, 50)).astype(np.float32)[rng.integers(0, 4, 333)]
    queries = rng.normal(size=(7, 50)).astype(np.float32)
    sims, idx = knn.nearest(bank, queries, 333, query_chunk, bank_chunk)
    _assert_tie_rule(bank, sims, idx)
    for a, b in zip((sims, idx), knn.nearest(bank, queries, 333), strict=True):
        np.testing.assert_array_equal(a, b)


def test_identical_rows_tie_even_when_the_fast_product_rounds_them_apart(monkeypatch) -> None:
    """The original failure (an AVX2-only CPU): two identical bank rows got float32 similarities a
    few ulp apart. Simulated on any CPU: the later copy's unit row is nudged by 4 ulp before the
    product; the neighbours and similarities must not change, and the tie stays in bank order."""
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(90, 8)).astype(np.float32)
    bank[10] = bank[3]
    queries = rng.normal(size=(23, 8)).astype(np.float32)
    expected = knn.nearest(bank, queries, 90)
    plain = knn.normalize
    copy = plain(bank[3:4])[0]

    def nudged(x):
        out = plain(x)
        rows = np.flatnonzero((out == copy).all(axis=1))
        out[rows[1:]] *= np.float32(1 + 2**-22)  # every copy after the first in this chunk
        return out

    monkeypatch.setattr(knn, "normalize", nudged)
    sims, idx = knn.nearest(bank, queries, 90)
    _assert_tie_rule(bank, sims, idx)
    np.testing.assert_array_less((idx == 3).argmax(axis=1), (idx == 10).argmax(axis=1))
    for a, b in zip((sims, idx), expected, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bank_chunk", [65536, 7])
def test_any_rounding_within_the_documented_bound_gives_the_same_result(monkeypatch, bank_chunk: int) -> None:
    """A screening product wrong by up to half the bound e = margin / 2 (vitscope.cosine) in either
    direction, differently for every entry, chunk and call: the neighbours and similarities are
    bit for bit those of the plain run (the candidates always hold the exact top-k)."""
    rng = np.random.default_rng(5)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    bank[rng.integers(0, 300, 60)] = bank[rng.integers(0, 300, 60)]  # duplicates
    # near-ties: rows that differ from another by one ulp in one component
    bank[200:230] = bank[100:130]
    bank[200:230, 0] = np.nextafter(bank[200:230, 0], np.float32(np.inf))
    queries = np.concatenate([rng.normal(size=(20, 16)), bank[100:110]]).astype(np.float32)
    labels, qlabels = rng.integers(0, 5, 300), rng.integers(0, 5, 30)
    expected = knn.nearest(bank, queries, 50)
    expected_acc = knn.classify(bank, labels, queries, qlabels, 5, (1, 10, 50))
    half = knn.cosine.margin(16, np.float32) / 4
    noise = np.random.default_rng(6)
    plain = knn.screen_similarity
    monkeypatch.setattr(
        knn, "screen_similarity",
        lambda q, b: (plain(q, b) + noise.uniform(-half, half, (len(q), len(b)))).astype(np.float32),
    )
    got = knn.nearest(bank, queries, 50, query_chunk=7, bank_chunk=bank_chunk)
    _assert_tie_rule(bank, *got)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert knn.classify(bank, labels, queries, qlabels, 5, (1, 10, 50), bank_chunk=bank_chunk) == expected_acc


def test_block_rows_cover_every_block_and_k() -> None:
    rng = np.random.default_rng(2)
    train, test = rng.normal(size=(30, 3, 4)), rng.normal(size=(5, 3, 4))
    rows = knn.block_rows(train, rng.integers(0, 2, 30), test, rng.integers(0, 2, 5), "m", ks=(1, 2))
    assert [(r["block"], r["metric"], r["k"]) for r in rows[:4]] == [(1, "top1", 1), (1, "top5", 1), (1, "top1", 2),
                                                                      (1, "top5", 2)]
    assert len(rows) == 3 * 2 * 2 and {r["block"] for r in rows} == {1, 2, 3}


def test_single_class_memory_bank_is_undefined_not_perfect(caplog) -> None:
    """One class in the bank: every vote is right whatever the features (top-1 = 1.0); the rows
    are NaN with the reason in ``note`` and the log says so."""
    rng = np.random.default_rng(3)
    train, test = rng.normal(size=(12, 2, 4)), rng.normal(size=(4, 2, 4))
    assert knn.classify(train[:, 0], np.zeros(12), test[:, 0], np.zeros(4), 1, (3,))[3]["top1"] == 1.0
    with caplog.at_level("WARNING", logger="vitscope.tasks.knn"):
        rows = knn.block_rows(train, np.zeros(12, np.int64), test, np.zeros(4, np.int64), "m", ks=(1, 3))
    assert len(rows) == 2 * 2 * 2 and set(rows[0]) == set(knn.COLUMNS)
    assert all(np.isnan(r["value"]) and r["note"] == "undefined: 1 class in the memory bank" for r in rows)
    assert "k-NN of m: undefined: 1 class" in caplog.text
    two = knn.block_rows(train, np.arange(12) % 2, test, np.arange(4) % 2, "m", ks=(1,))
    assert all(np.isfinite(r["value"]) and r["note"] == "" for r in two)


def _dump(path, classes):
    with h5py.File(path, "w") as f:
        names = sorted(set(classes))
        f["images/label"] = np.array([names.index(c) for c in classes])
        f.create_dataset("images/class", data=np.array(classes, dtype=object), dtype=h5py.string_dtype())
    return h5py.File(path)


def test_labels_are_matched_by_class_name(tmp_path) -> None:
    with _dump(tmp_path / "a.h5", ["ant", "bee", "cat"]) as train, _dump(tmp_path / "b.h5", ["cat", "bee"]) as val:
        labels = knn.check_labels(train, val)
    np.testing.assert_array_equal(labels["val"], [2, 1])  # not the val dump's own numbering (1, 0)
    assert labels["num_classes"] == 3
    with _dump(tmp_path / "c.h5", ["ant"]) as train, _dump(tmp_path / "d.h5", ["dog"]) as val:
        with pytest.raises(DumpError, match="dog"):
            knn.check_labels(train, val)


def test_rows_carry_counts_and_chance() -> None:
    """4 classes in a 12-image bank: top-1 chance 1/4; top-5 counts min(5, k, 4) classes, so its
    chance is k/4 for k < 4 and 1 (certain) from k = 4 on; 6 queries, all counted in the rows."""
    rng = np.random.default_rng(21)
    train, test = rng.normal(size=(12, 2, 8)), rng.normal(size=(6, 2, 8))
    rows = knn.block_rows(train, np.arange(12) % 4, test, np.arange(6) % 4, "m", ks=(1, 3, 10))
    assert set(rows[0]) == set(knn.COLUMNS)
    chance = {(r["metric"], r["k"]): (r["chance"], r["counted"]) for r in rows if r["block"] == 1}
    assert chance == {("top1", 1): (0.25, 1), ("top1", 3): (0.25, 1), ("top1", 10): (0.25, 1),
                      ("top5", 1): (0.25, 1), ("top5", 3): (0.75, 3), ("top5", 10): (1.0, 4)}
    assert {(r["classes"], r["bank"], r["queries"]) for r in rows} == {(4, 12, 6)}
    # k beyond the bank is clipped: a 3-image bank of 3 classes counts at most 3
    small = knn.block_rows(train[:3], np.arange(3), test, np.arange(6) % 3, "m", ks=(20,))
    assert {(r["metric"], r["counted"], r["chance"]) for r in small} == {("top1", 1, 1 / 3), ("top5", 3, 1.0)}
    one = knn.block_rows(train, np.zeros(12, np.int64), test, np.zeros(6, np.int64), "m", ks=(1,))
    assert all(np.isnan(r["chance"]) and r["classes"] == 1 for r in one)


def _per_block(bank, queries, k, query_chunk=1024, bank_chunk=65536):
    """The reference: today's :func:`knn.nearest`, one block at a time."""
    out = [knn.nearest(np.asarray(bank[:, b]), np.asarray(queries[:, b]), k, query_chunk, bank_chunk)
           for b in range(bank.shape[1])]
    return np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


@pytest.mark.parametrize("bank_chunk", [1, 7, 150, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_nearest_blocks_is_nearest_of_every_block(bank_chunk: int, dtype) -> None:
    """One pass over the bank for all blocks gives, bit for bit, the per-block neighbours and similarities
    (ties included: rows duplicated all over the bank, and a query equal to bank rows), any chunking."""
    rng = np.random.default_rng(7)
    n = 60 if bank_chunk == 1 else 333  # chunks of one image: a smaller bank, the test stays fast
    bank = rng.normal(size=(n, 3, 12)).astype(dtype)
    bank[rng.integers(0, n, n // 3)] = bank[rng.integers(0, n, n // 3)]  # duplicates at any position
    bank[40:50] = bank[5]
    queries = np.concatenate([rng.normal(size=(20, 3, 12)), bank[5:6], bank[30:32]]).astype(dtype)
    for k, query_chunk in ((1, 1024), (20, 7), (50, 23 if bank_chunk == 1 else 1)):
        got = knn.nearest_blocks(bank, queries, k, query_chunk, bank_chunk)
        assert got[0].shape == got[1].shape == (3, 23, k)
        for a, b in zip(got, _per_block(bank, queries, k, query_chunk, bank_chunk), strict=True):
            np.testing.assert_array_equal(a, b)
        for block in range(3):
            _assert_tie_rule(bank[:, block], got[0][block], got[1][block])


def test_nearest_blocks_k_beyond_the_bank_and_nan_rows() -> None:
    """k > N is clipped to N (every bank image, in similarity order); NaN bank rows (e.g. a float16
    overflow) come out as today's per-block code has them."""
    rng = np.random.default_rng(8)
    bank = rng.normal(size=(9, 2, 6)).astype(np.float32)
    queries = rng.normal(size=(4, 2, 6)).astype(np.float32)
    sims, idx = knn.nearest_blocks(bank, queries, 200, bank_chunk=4)
    assert idx.shape == (2, 4, 9)
    np.testing.assert_array_equal(np.sort(idx, axis=2), np.broadcast_to(np.arange(9), (2, 4, 9)))
    for a, b in zip((sims, idx), _per_block(bank, queries, 200, bank_chunk=4), strict=True):
        np.testing.assert_array_equal(a, b)
    big = rng.normal(size=(200, 2, 6)).astype(np.float32)
    big[[3, 150], 1] = np.nan
    queries = rng.normal(size=(5, 2, 6)).astype(np.float32)
    for bank_chunk in (7, 200):
        for a, b in zip(knn.nearest_blocks(big, queries, 10, 2, bank_chunk),
                        _per_block(big, queries, 10, 2, bank_chunk), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("columns", [5, 64, 130, 1000])
def test_hits_equal_the_full_comparison(columns: int) -> None:
    """The prefiltered hits (per-group maxima, then only the groups that can hold one) are exactly
    np.nonzero of the whole comparison, by row then column: NaN entries, whole NaN rows, ties with the
    threshold, rows without a hit and rows where every entry is a hit."""
    rng = np.random.default_rng(11)
    values = rng.normal(size=(9, columns)).astype(np.float32)
    values[1, :: 3] = np.nan
    values[2] = np.nan
    threshold = np.quantile(values[~np.isnan(values)], 0.97).astype(np.float32) * np.ones(9, np.float32)
    values[3, -1] = threshold[3]  # equal: a hit
    threshold[4] = np.inf  # no hit
    threshold[5] = -np.inf  # every entry
    rows, cols = knn._hits_cpu(torch.from_numpy(values), torch.from_numpy(threshold))
    want = np.nonzero(values >= threshold[:, None])
    np.testing.assert_array_equal(rows, want[0])
    np.testing.assert_array_equal(cols, want[1])


def test_read_run_reads_each_row_once_in_order(monkeypatch) -> None:
    """A run is read as consecutive pieces of READ_ROWS images covering it once; a numpy bank is sliced."""
    bank = np.arange(50 * 2 * 3, dtype=np.float32).reshape(50, 2, 3)
    reads = []

    class Counted:
        shape, dtype = bank.shape, bank.dtype

        def __getitem__(self, key):
            reads.append(key)
            return bank[key]

    monkeypatch.setattr(knn, "READ_ROWS", 8)
    np.testing.assert_array_equal(knn._read_run(Counted(), 10, 37), bank[10:37])
    assert reads == [slice(10, 18), slice(18, 26), slice(26, 34), slice(34, 37)]
    assert np.shares_memory(knn._read_run(bank, 10, 37), bank)


def test_nearest_blocks_reads_the_bank_once_in_row_runs(tmp_path) -> None:
    """From an HDF5 dataset: every bank row is read once, as runs of consecutive images x all blocks."""
    rng = np.random.default_rng(9)
    with h5py.File(tmp_path / "bank.h5", "w") as f:
        f.create_dataset("cls", data=rng.normal(size=(50, 4, 8)).astype(np.float32), chunks=(1, 4, 8))
        f.create_dataset("q", data=rng.normal(size=(6, 4, 8)).astype(np.float32))
    reads = []

    class Counted:
        def __init__(self, dataset):
            self.dataset, self.shape, self.dtype = dataset, dataset.shape, dataset.dtype

        def __getitem__(self, key):
            reads.append(key)
            return self.dataset[key]

    with h5py.File(tmp_path / "bank.h5") as f:
        got = knn.nearest_blocks(Counted(f["cls"]), f["q"], 5, bank_chunk=16)
        expected = _per_block(f["cls"][...], f["q"][...], 5, bank_chunk=16)
    assert reads == [slice(0, 16), slice(16, 32), slice(32, 48), slice(48, 50)]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_block_rows_equal_classify_block_by_block() -> None:
    rng = np.random.default_rng(10)
    train, test = rng.normal(size=(80, 3, 6)), rng.normal(size=(11, 3, 6))
    labels, qlabels = rng.integers(0, 4, 80), rng.integers(0, 4, 11)
    rows = knn.block_rows(train, labels, test, qlabels, "m", 4, ks=(1, 5, 20), bank_chunk=9, query_chunk=4)
    for block in range(3):
        result = knn.classify(train[:, block], labels, test[:, block], qlabels, 4, (1, 5, 20))
        got = {(r["k"], r["metric"]): r["value"] for r in rows if r["block"] == block + 1}
        assert got == {(k, metric): v[metric] for k, v in result.items() for metric in ("top1", "top5")}


def test_nearest_blocks_refuses_tf32_on_cuda() -> None:
    """TF32 products (u = 2^-11) are outside the float32 bound of the margin: refused, not silently wrong."""
    bank = np.zeros((3, 1, 4), np.float32)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        with pytest.raises(ValueError, match="TF32"):
            knn.nearest_blocks(bank, bank, 1, device="cuda")
    finally:
        torch.set_float32_matmul_precision(before)
