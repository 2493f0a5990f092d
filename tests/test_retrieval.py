"""Revisited Oxford/Paris retrieval: AP with junk removal, protocols, mP@k, the official loop; the reader."""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vitscope.errors import DatasetError
from vitscope.io import datasets as data
from vitscope.io import synthetic
from vitscope.tasks import retrieval


def official_compute_map(ranks, gnd, kappas=(1, 5, 10)):
    """The revisited benchmark's compute_map (Radenovic et al.), transcribed; ranks: (N, Q)."""
    mean_ap, nq, nempty = 0.0, len(gnd), 0
    pr = np.zeros(len(kappas))
    for i in range(nq):
        qgnd = np.array(gnd[i]["ok"])
        if qgnd.shape[0] == 0:
            nempty += 1
            continue
        qgndj = np.array(gnd[i]["junk"])
        pos = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgnd)]
        junk = np.arange(ranks.shape[0])[np.isin(ranks[:, i], qgndj)]
        k = ij = 0
        if len(junk):
            ip = 0
            while ip < len(pos):
                while ij < len(junk) and pos[ip] > junk[ij]:
                    k += 1
                    ij += 1
                pos[ip] = pos[ip] - k
                ip += 1
        ap = 0.0
        for j, rank in enumerate(pos):
            precision_0 = 1.0 if rank == 0 else float(j) / rank
            precision_1 = float(j + 1) / (rank + 1)
            ap += (precision_0 + precision_1) / len(qgnd) / 2.0
        mean_ap += ap
        pos = pos + 1
        for j, kappa in enumerate(kappas):
            kq = min(max(pos), kappa)
            pr[j] += (pos <= kq).sum() / kq
    return mean_ap / (nq - nempty), pr / (nq - nempty)


def test_ap_on_a_hand_ranked_list_with_junk_in_between() -> None:
    ranks = np.array([3, 1, 0, 5, 2, 4])
    # junk 1 removed: [3, 0, 5, 2, 4]; positives 0 and 2 at ranks 1 and 3
    # AP = ((0/1 + 1/2) + (1/3 + 2/4)) / (2 * 2) = 1/3
    assert retrieval.average_precision(ranks, [0, 2], [1]) == pytest.approx(1 / 3)
    # without junk removal: ranks 2 and 4: ((0 + 1/3) + (1/4 + 2/5)) / 4
    assert retrieval.average_precision(ranks, [0, 2], []) == pytest.approx((1 / 3 + 1 / 4 + 2 / 5) / 4)
    # mP@k: 1-based positive ranks [2, 4], last positive at 4: P@1 = 0, P@5 = P@10 = 2/4
    np.testing.assert_allclose(retrieval.precision_at(ranks, [0, 2], [1]), [0.0, 0.5, 0.5])


def test_junk_before_the_only_positive_and_all_junk_queries() -> None:
    ranks = np.arange(6)
    assert retrieval.average_precision(ranks, [4], [0, 1, 2, 3]) == pytest.approx(1.0)
    assert np.isnan(retrieval.average_precision(ranks, [], [0, 1, 2, 3, 4, 5]))
    # a query whose ground truth is all junk has no positive: left out of the mean
    gnd = [{"easy": [4], "hard": [], "junk": [0, 1, 2, 3]}, {"easy": [], "hard": [], "junk": [0, 1, 2, 3, 4, 5]}]
    similarity = np.tile(-np.arange(6.0), (2, 1))
    result = retrieval.evaluate(similarity, gnd, "medium")
    assert result["mAP"] == pytest.approx(1.0) and result["queries"] == 1
    assert result["mP@1"] == result["mP@5"] == pytest.approx(1.0)
    # the Hard protocol has no positive in any query: NaN, not 0
    assert np.isnan(retrieval.evaluate(similarity, gnd, "hard")["mAP"])


def test_protocols_choose_ok_and_junk() -> None:
    query = {"easy": [0], "hard": [1], "junk": [2]}
    sets = {p: tuple(sorted(s.tolist()) for s in retrieval.protocol_sets(query, p)) for p in retrieval.PROTOCOLS}
    assert sets == {"easy": ([0], [1, 2]), "medium": ([0, 1], [2]), "hard": ([1], [0, 2])}
    with pytest.raises(ValueError, match="protocol"):
        retrieval.protocol_sets(query, "extreme")
    # ranking 2, 1, 0, 3: easy -> 0 at rank 0 after removing 2 and 1; hard -> 1 at rank 0 after removing 2
    similarity = np.array([[0.2, 0.5, 0.9, 0.1]])
    gnd = [query]
    assert retrieval.mean_average_precision(similarity, gnd, "easy") == pytest.approx(1.0)
    assert retrieval.mean_average_precision(similarity, gnd, "hard") == pytest.approx(1.0)
    # medium: [1, 0, 3] -> positives at 0 and 1: AP = 1
    assert retrieval.mean_average_precision(similarity, gnd, "medium") == pytest.approx(1.0)


def test_ties_rank_in_database_order() -> None:
    similarity = np.array([[0.5, 0.5, 0.1]])
    np.testing.assert_array_equal(retrieval.ranking(similarity), [[0, 1, 2]])
    # positive 1 after the tied image 0: AP = (0/1 + 1/2) / 2
    assert retrieval.mean_average_precision(similarity, [{"easy": [1], "hard": [], "junk": []}], "easy") == 0.25


def test_evaluate_equals_the_official_loop() -> None:
    rng = np.random.default_rng(0)
    n, q = 40, 9
    similarity = rng.normal(size=(q, n))
    gnd = []
    for i in range(q):
        perm = rng.permutation(n)
        sizes = rng.integers(0, 6, 3) if i else (0, 0, 3)  # query 0: no positive at all
        gnd.append({"easy": perm[: sizes[0]].tolist(), "hard": perm[sizes[0] : sizes[0] + sizes[1]].tolist(),
                    "junk": perm[sizes[0] + sizes[1] : sum(sizes)].tolist()})
    ranks = np.argsort(-similarity, axis=1, kind="stable").T
    for protocol in retrieval.PROTOCOLS:
        official = []
        for query in gnd:
            ok, junk = retrieval.protocol_sets(query, protocol)
            official.append({"ok": ok, "junk": junk})
        expected_map, expected_pr = official_compute_map(ranks, official)
        result = retrieval.evaluate(similarity, gnd, protocol)
        assert result["mAP"] == pytest.approx(expected_map)
        np.testing.assert_allclose([result["mP@1"], result["mP@5"], result["mP@10"]], expected_pr)


def test_block_rows_record_the_query_variant() -> None:
    rng = np.random.default_rng(1)
    db, q = rng.normal(size=(8, 2, 3)), rng.normal(size=(2, 2, 3))
    gnd = [{"easy": [0, 1], "hard": [2], "junk": [3]}, {"easy": [4], "hard": [5], "junk": []}]
    rows = retrieval.block_rows(db, q, gnd, "m", queries="full")
    assert len(rows) == 2 * 3 * 4 and {r["queries"] for r in rows} == {"full"}
    q[1, 0] = db[4, 0] * 3  # query 2 at block 1 finds its easy positive first
    rows = retrieval.block_rows(db, q, gnd, "m", queries="cropped")
    assert {r["metric"] for r in rows} == {"mAP", "mP@1", "mP@5", "mP@10"}


def test_a_protocol_without_positives_is_undefined_with_a_note(caplog) -> None:
    """No query has a Hard positive: the Hard rows are NaN with the reason in ``note`` (the
    queries without positives are left out, as the official code does), the others score."""
    rng = np.random.default_rng(2)
    db, q = rng.normal(size=(6, 2, 3)), rng.normal(size=(2, 2, 3))
    gnd = [{"easy": [0, 1], "hard": [], "junk": [3]}, {"easy": [4], "hard": [], "junk": []}]
    with caplog.at_level("WARNING", logger="vitscope.tasks.retrieval"):
        rows = retrieval.block_rows(db, q, gnd, "m", queries="full")
    assert set(rows[0]) == set(retrieval.COLUMNS)
    hard = [r for r in rows if r["protocol"] == "hard"]
    assert hard and all(math.isnan(r["value"]) for r in hard)
    assert {r["note"] for r in hard} == {"undefined: no query has a positive under protocol hard"}
    assert all(math.isfinite(r["value"]) and r["note"] == "" for r in rows if r["protocol"] != "hard")
    assert caplog.text.count("no query has a positive under protocol hard") == 1
    # the counts behind each mean: queries with a positive under the protocol, the database size
    assert {(r["protocol"], r["evaluated"], r["database"]) for r in rows} == {("easy", 2, 6), ("medium", 2, 6),
                                                                             ("hard", 0, 6)}


def _repeated_images():
    """A (333, 2, 50) database of 4 images repeated all over it, 7 queries, and the exact cosines (2, 7, 333)."""
    rng = np.random.default_rng(5)
    distinct = rng.normal(size=(4, 2, 50)).astype(np.float32)
    group = rng.integers(0, 4, 333)
    q = rng.normal(size=(7, 2, 50)).astype(np.float32)
    exact = np.array([[[math.fsum(a * b) / math.sqrt(math.fsum(a * a) * math.fsum(b * b)) for b in
                        distinct[:, block].astype(np.float64)] for a in q[:, block].astype(np.float64)]
                      for block in range(2)])
    return distinct[group], q, group, exact[:, :, group]


def test_identical_database_images_get_one_similarity() -> None:
    """Every copy of an image gets the bit-equal similarity wherever it sits in the database (a float32
    product may round copies apart, e.g. OpenBLAS Haswell); the copies rank in database order."""
    db, q, group, exact = _repeated_images()
    for block in range(2):
        sim = retrieval.similarity(q[:, block], db[:, block])
        for i in range(4):
            assert len(np.unique(sim[:, group == i], axis=1).T) == 1  # one value per query and image
        np.testing.assert_allclose(sim, exact[block], rtol=0, atol=1e-15)
        expected = sorted(range(333), key=lambda j: (-exact[block, 0, j], j))
        np.testing.assert_array_equal(retrieval.ranking(sim)[0], expected)


def test_block_rows_score_the_exact_ranking_of_repeated_images() -> None:
    db, q, _, exact = _repeated_images()
    rng = np.random.default_rng(6)
    gnd = [{"easy": rng.choice(333, 5, replace=False).tolist(), "hard": [], "junk": rng.choice(333, 9).tolist()}
           for _ in range(7)]
    rows = retrieval.block_rows(db, q, gnd, "m", queries="full", protocols=("easy",))
    for block in range(2):
        want = retrieval.evaluate(exact[block], gnd, "easy")  # copies in database order
        got = {r["metric"]: r["value"] for r in rows if r["block"] == block + 1}
        assert got == {k: v for k, v in want.items() if k != "queries"}


# ----------------------------------------------------------------- reader


def test_reader_on_the_real_layout(tmp_path: Path) -> None:
    spec = synthetic.SyntheticSpec(classes=2, per_class=1, image_size=32, retrieval_per_class=4,
                                   retrieval_queries_per_class=1, retrieval_name="roxford5k")
    gnd = synthetic.write_revisited(tmp_path, spec)
    assert (tmp_path / "roxford5k" / "gnd_roxford5k.pkl").is_file()
    database, queries = data.index_revisited(tmp_path, "roxford5k")
    assert [Path(e.path).name for e in database] == [f"{s}.jpg" for s in gnd["imlist"]]
    assert all(e.box is None for e in database)
    assert [e.box for e in queries] == [tuple(q["bbx"]) for q in gnd["gnd"]]
    assert all(e.box is None for e in data.index_revisited(tmp_path, "roxford5k", crop=False)[1])
    # per query: own-class database images, junk disjoint from easy/hard
    for q in gnd["gnd"]:
        assert q["easy"] and q["hard"] and q["junk"] and not set(q["junk"]) & set(q["easy"] + q["hard"])
    # the box travels through the index CSV and is applied before preprocessing
    entries = database + queries
    data.write_index(entries, tmp_path / "index.csv")
    assert data.read_index(tmp_path / "index.csv") == entries
    x1, y1, x2, y2 = queries[0].box
    assert data.load_image(queries[0].path, queries[0].box).size == (round(x2) - round(x1), round(y2) - round(y1))


def test_index_without_boxes_keeps_three_columns(tmp_path: Path) -> None:
    entries = [data.Entry("a.png", 0, "x"), data.Entry("b.png", -1, "")]
    data.write_index(entries, tmp_path / "i.csv")
    assert (tmp_path / "i.csv").read_text().splitlines()[0] == "path,label,class"
    assert data.read_index(tmp_path / "i.csv") == entries


def test_bad_layout_names_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"rparis6k/gnd_rparis6k\.pkl"):
        data.index_revisited(tmp_path, "rparis6k", key="datasets.paris")
    (tmp_path / "rparis6k").mkdir()
    with open(tmp_path / "rparis6k" / "gnd_rparis6k.pkl", "wb") as handle:
        pickle.dump({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [0, 0, 1, 1], "easy": [3], "hard": [],
                                                                  "junk": []}]}, handle)
    with pytest.raises(DatasetError, match="outside imlist"):
        data.index_revisited(tmp_path, "rparis6k")
    with open(tmp_path / "rparis6k" / "gnd_rparis6k.pkl", "wb") as handle:
        pickle.dump({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"bbx": [0, 0, 1, 1], "easy": [0], "hard": [],
                                                                  "junk": []}]}, handle)
    with pytest.raises(DatasetError, match=r"rparis6k/jpg/a\.jpg"):
        data.index_revisited(tmp_path, "rparis6k")
    (tmp_path / "rparis6k" / "jpg").mkdir()
    for stem in ("a", "q"):
        Image.new("RGB", (4, 4)).save(tmp_path / "rparis6k" / "jpg" / f"{stem}.jpg")
    entries = data.index_dataset("paris", {"kind": "revisited", "root": str(tmp_path), "name": "rparis6k"})
    assert [Path(e.path).stem for e in entries] == ["a", "q"] and entries[1].box == (0.0, 0.0, 1.0, 1.0)
