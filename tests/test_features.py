"""vitscope.features.cka and vitscope.features.clustering: CKA (feature-space and minibatch) and clustering scores.

The minibatch HSIC is checked against a slow float64 loop written from the
formula in docs/protocols.md#feature-analyses, against debiased feature-space CKA, and on
real dumps of two timm ``test_vit`` random models against Gram matrices rebuilt
from the dumps' own CLS tokens.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from vitscope.errors import DumpError
from vitscope.extract import reductions
from vitscope.extract import run as extract
from vitscope.features import cka as features
from vitscope.features import clustering
from vitscope.io import datasets as data
from vitscope.io import preprocess as loading
from vitscope.models import registry as models

# --------------------------------------------------------------------------- helpers


def slow_hsic1(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """HSIC1 from the protocol formula, element by element in float64."""
    n = k.shape[0]
    kt = [[0.0 if i == j else float(k[i, j]) for j in range(n)] for i in range(n)]
    lt = [[0.0 if i == j else float(l[i, j]) for j in range(n)] for i in range(n)]
    trace = sum(kt[i][j] * lt[j][i] for i in range(n) for j in range(n))
    sum_k = sum(kt[i][j] for i in range(n) for j in range(n))
    sum_l = sum(lt[i][j] for i in range(n) for j in range(n))
    kl1 = sum(kt[i][j] * lt[j][m] for i in range(n) for j in range(n) for m in range(n))
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * kl1) / (n * (n - 3))


def slow_minibatch_cka(xs: list[np.ndarray], ys: list[np.ndarray]) -> float:
    """Minibatch CKA of per-batch features, with the slow HSIC."""
    grams_x = [x @ x.T for x in xs]
    grams_y = [y @ y.T for y in ys]
    xy = np.mean([slow_hsic1(kx, ky) for kx, ky in zip(grams_x, grams_y, strict=True)])
    xx = np.mean([slow_hsic1(kx, kx) for kx in grams_x])
    yy = np.mean([slow_hsic1(ky, ky) for ky in grams_y])
    return float(xy / np.sqrt(xx * yy))


def related(rng: np.random.Generator, n: int = 40, d1: int = 12, d2: int = 9) -> tuple[np.ndarray, np.ndarray]:
    """Two feature matrices sharing structure (not centred)."""
    x = rng.normal(size=(n, d1)) + rng.normal(size=d1) * 3
    y = np.tanh(x @ rng.normal(size=(d1, d2))) + 0.5 * rng.normal(size=(n, d2)) + 1.0
    return x, y


def orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


# --------------------------------------------------------------------------- feature-space CKA


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_cka_self_symmetry_and_invariances(debiased: bool) -> None:
    rng = np.random.default_rng(0)
    x, y = related(rng)
    assert features.linear_cka(x, x, debiased) == pytest.approx(1.0, abs=1e-12)
    value = features.linear_cka(x, y, debiased)
    assert 0.05 < value < 0.99
    assert features.linear_cka(y, x, debiased) == pytest.approx(value, rel=1e-12)
    rotated = x @ orthogonal(rng, x.shape[1])
    assert features.linear_cka(rotated, y, debiased) == pytest.approx(value, rel=1e-10)
    assert features.linear_cka(x * 37.5, y * 1e-3, debiased) == pytest.approx(value, rel=1e-10)
    assert features.linear_cka(x + 5.0, y - 2.0, debiased) == pytest.approx(value, rel=1e-10)


def test_biased_linear_cka_equals_centred_gram_formula() -> None:
    """Kornblith et al.: HSIC0 = tr(K H L H) / (n-1)^2; feature and Gram forms agree."""
    rng = np.random.default_rng(1)
    x, y = related(rng, n=25)
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = h @ (x @ x.T) @ h, h @ (y @ y.T) @ h  # noqa: E741
    expected = np.sum(k * l) / np.sqrt(np.sum(k * k) * np.sum(l * l))
    assert features.linear_cka(x, y) == pytest.approx(expected, rel=1e-12)


def test_debiased_cka_is_near_biased_for_many_examples() -> None:
    rng = np.random.default_rng(2)
    x, y = related(rng, n=4000)
    assert features.linear_cka(x, y, True) == pytest.approx(features.linear_cka(x, y), abs=0.01)


# --------------------------------------------------------------------------- minibatch HSIC / CKA


def test_hsic1_matches_slow_loop() -> None:
    rng = np.random.default_rng(3)
    for n in (4, 5, 9):
        x, y = related(rng, n=n, d1=6, d2=4)
        k, l = x @ x.T, y @ y.T  # noqa: E741
        assert features.hsic1(k, l) == pytest.approx(slow_hsic1(k, l), rel=1e-10)
    stacked = np.stack([x @ x.T, y @ y.T])
    np.testing.assert_allclose(features.hsic1(stacked, stacked[::-1]), [slow_hsic1(k, l)] * 2, rtol=1e-10)


def test_hsic1_is_invariant_to_centring() -> None:
    """The dumps store Grams of centred features (docs/features.md); the unbiased estimator
    gives the same value from uncentred ones, and for any shift of the features."""
    rng = np.random.default_rng(4)
    x, y = related(rng, n=16)
    xc, yc = x - x.mean(0), y - y.mean(0)
    assert features.hsic1(x @ x.T, y @ y.T) == pytest.approx(features.hsic1(xc @ xc.T, yc @ yc.T), rel=1e-9)


def test_hsic1_is_invariant_to_any_feature_shift() -> None:
    """K -> K + X mu 1' + 1 mu' X' + |mu|^2 11' (features shifted by mu) leaves HSIC1 unchanged."""
    rng = np.random.default_rng(14)
    x, y = related(rng, n=12)
    mu, nu = rng.normal(size=x.shape[1]) * 5, rng.normal(size=y.shape[1]) * 5
    base = features.hsic1(x @ x.T, y @ y.T)
    assert features.hsic1((x + mu) @ (x + mu).T, (y + nu) @ (y + nu).T) == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("ratio", [100.0, 1000.0])
def test_minibatch_cka_of_offset_features_from_centred_grams(ratio: float) -> None:
    """Features whose mean is ``ratio`` times their spread (massive activations), float32,
    b = 64, D = 768: the uncentred Grams gave an error of 6e-5 at 100 here and NaN ("constant
    features") at 1000; the extraction's centred minibatch Grams give the float64 CKA to 1e-9."""
    rng = np.random.default_rng(15)
    m, b, d = 2, 64, 768
    base = rng.normal(size=(m * b, d))
    x = (ratio + base).astype(np.float32)
    y = (ratio + np.tanh(base @ rng.normal(size=(d, d)) / 30) + 0.5 * rng.normal(size=(m * b, d))).astype(np.float32)

    def centred(f: np.ndarray) -> np.ndarray:
        f = f.astype(np.float64).reshape(m, b, d)
        f = f - f.mean(axis=1, keepdims=True)
        return f @ f.transpose(0, 2, 1)

    want = features.minibatch_cka(centred(x), centred(y))  # float64 from the tokens
    assert np.isfinite(want) and 0.1 < want < 0.99
    grams = {
        name: reductions.minibatch_grams(torch.from_numpy(f).reshape(m * b, 1, d), b, prefix=1)["cls"].numpy()
        for name, f in (("x", x), ("y", y))
    }
    got = features.minibatch_cka(grams["x"], grams["y"])
    assert abs(got - want) < 1e-9
    raw = {name: f.astype(np.float64).reshape(m, b, d) for name, f in (("x", x), ("y", y))}
    old = features.minibatch_cka(*(r @ r.transpose(0, 2, 1) for r in raw.values()))  # the uncentred Grams
    assert np.isnan(old) or abs(old - want) > 1e-8


def test_minibatch_grams_of_constant_features_are_exactly_zero() -> None:
    x = torch.full((8, 3, 5), 1234.567, dtype=torch.float32) + torch.arange(5.0)
    grams = reductions.minibatch_grams(x, 4, prefix=1)
    for value in grams.values():
        assert value.shape == (2, 4, 4) and torch.equal(value, torch.zeros_like(value))
    assert np.isnan(features.minibatch_cka(grams["cls"].numpy(), grams["spatial"].numpy()))


def test_single_full_batch_equals_debiased_feature_cka() -> None:
    rng = np.random.default_rng(5)
    x, y = related(rng, n=50)
    got = features.minibatch_cka((x @ x.T)[None], (y @ y.T)[None])
    assert got.shape == ()
    assert float(got) == pytest.approx(features.linear_cka(x, y, debiased=True), rel=1e-10)


def test_minibatch_cka_matches_slow_loop_for_every_pair() -> None:
    rng = np.random.default_rng(6)
    m, b, p, q = 3, 6, 4, 2
    xs = rng.normal(size=(m, p, b, 5)) + 1.0
    ys = np.tanh(xs[:, :q, :, :3] @ rng.normal(size=(3, 7))) + 0.3 * rng.normal(size=(m, q, b, 7))
    grams_x = xs @ xs.transpose(0, 1, 3, 2)
    grams_y = ys @ ys.transpose(0, 1, 3, 2)
    got = features.minibatch_cka(grams_x, grams_y)
    assert got.shape == (p, q)
    for i in range(p):
        for j in range(q):
            expected = slow_minibatch_cka(list(xs[:, i]), list(ys[:, j]))
            assert got[i, j] == pytest.approx(expected, rel=1e-9)
    self_cka = features.minibatch_cka(grams_x, grams_x)
    np.testing.assert_allclose(np.diag(self_cka), 1.0, atol=1e-12)
    np.testing.assert_allclose(self_cka, self_cka.T, rtol=1e-12)


def test_minibatch_cka_invariances() -> None:
    rng = np.random.default_rng(7)
    x, y = related(rng, n=48)
    def grams(f: np.ndarray) -> np.ndarray:
        f = f.reshape(6, 8, -1)
        return f @ f.transpose(0, 2, 1)

    value = features.minibatch_cka(grams(x), grams(y))
    rotated = 3.0 * x @ orthogonal(rng, x.shape[1])
    assert features.minibatch_cka(grams(rotated), grams(y)) == pytest.approx(value, rel=1e-9)
    assert features.minibatch_cka(grams(y), grams(x)) == pytest.approx(value, rel=1e-12)


def test_constant_features_give_nan() -> None:
    rng = np.random.default_rng(8)
    x = np.repeat(rng.normal(size=(1, 1, 5)), 8, axis=1)  # one batch, 8 identical rows
    y = rng.normal(size=(1, 8, 4))
    got = features.minibatch_cka(x @ x.transpose(0, 2, 1), y @ y.transpose(0, 2, 1))
    assert np.isnan(got)


def test_minibatch_cka_is_unbiased_and_its_spread_falls_with_batch_size() -> None:
    """Small simulation (docs/features.md): the mean over image orders is close to the
    full-data value for every batch size, and the spread shrinks as b grows."""
    rng = np.random.default_rng(9)
    x, y = related(rng, n=512, d1=16, d2=12)
    full = features.linear_cka(x, y, debiased=True)
    spread = {}
    for b in (8, 32, 128):
        values = []
        for _ in range(30):
            order = rng.permutation(len(x)).reshape(-1, b)
            gx, gy = x[order], y[order]
            values.append(features.minibatch_cka(gx @ gx.transpose(0, 2, 1), gy @ gy.transpose(0, 2, 1)))
        spread[b] = np.std(values)
        assert abs(np.mean(values) - full) < 0.03
    assert spread[8] > spread[32] > spread[128]


def test_point_labels() -> None:
    assert features.point_labels(4, "norms") == ["1.n1", "1.n2", "2.n1", "2.n2"]
    assert features.point_labels(3, "blocks") == ["1", "2", "3"]


# --------------------------------------------------------------------------- real dumps


def make_images(root: Path, counts: tuple[int, ...]) -> list[data.Entry]:
    rng = np.random.default_rng(0)
    for k, count in enumerate(counts):
        (root / f"class_{k}").mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / f"class_{k}" / f"img_{i}.png")
    return data.index_imagefolder(root)


def dump(path: Path, entries: list[data.Entry], seed: int, order_seed: int = 0) -> Path:
    entry = {"arch": "test_vit", "weights": "random", "seed": seed, "image_size": 32}
    spec = models.spec_from_config(f"m{seed}", entry)
    model, _ = models.build(spec)
    transform = loading.preprocess(spec.image_size, spec.mean, spec.std, spec.interpolation)
    options = extract.ExtractOptions(
        products=("tokens", "gram"), batch_size=8, cka_batch_size=4, order_seed=order_seed
    )
    with h5py.File(path, "w") as handle:
        attrs = {"model": spec.alias, "dataset": "t"}
        extract.run(model, entries, transform, handle, options, torch.device("cpu"), attrs)
    return path


@pytest.fixture(scope="module")
def dumps_ab(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("features")
    entries = make_images(root / "images", (5, 5, 4))
    # c: model b's weights, another image order (so another CKA partition)
    return dump(root / "a.h5", entries, 0), dump(root / "b.h5", entries, 1), dump(root / "c.h5", entries, 1, 5)


def test_dump_grams_agree_with_dump_cls_tokens(dumps_ab) -> None:
    path_a, path_b, _ = dumps_ab
    with h5py.File(path_a) as a, h5py.File(path_b) as b:
        arrays = features.pair_cka(a, b)
        index = a["cka/index"][...]
        cls_a = a["tokens/cls"][...].astype(np.float64)[index]  # (M, b, L, D)
        cls_b = b["tokens/cls"][...].astype(np.float64)[index]
    blocks = cls_a.shape[2]
    assert arrays["blocks_cls"].shape == (blocks, blocks)
    assert arrays["norms_all"].shape == (2 * blocks, 2 * blocks)
    assert int(arrays["batch"]) == 4 and int(arrays["images"]) == 12
    for i in range(blocks):
        for j in range(blocks):
            expected = slow_minibatch_cka(list(cls_a[:, :, i]), list(cls_b[:, :, j]))
            assert arrays["blocks_cls"][i, j] == pytest.approx(expected, rel=1e-6)


def test_pair_with_itself_has_unit_diagonal(dumps_ab) -> None:
    path_a = dumps_ab[0]
    with h5py.File(path_a) as a:
        arrays = features.pair_cka(a, a)
    for name in ("blocks_cls", "blocks_spatial", "blocks_all", "norms_spatial", "norms_all"):
        np.testing.assert_allclose(np.diag(arrays[name]), 1.0, atol=1e-9)
    # CLS at block 1's norm1 is the same for every image: CKA is undefined there
    assert np.isnan(arrays["norms_cls"][0]).all()
    np.testing.assert_allclose(np.diag(arrays["norms_cls"])[1:], 1.0, atol=1e-9)


def test_different_partitions_are_refused(dumps_ab, tmp_path) -> None:
    path_a, _, path_c = dumps_ab
    with h5py.File(path_a) as a, h5py.File(path_c) as c, pytest.raises(DumpError, match="minibatch partitions"):
        features.pair_cka(a, c)
    other = tmp_path / "other.h5"
    with h5py.File(path_a) as a, h5py.File(other, "w") as o:
        for name in ("images/path", "cka/index"):
            o.create_dataset(name, data=a[name][...])
        o["images/path"][0] = b"elsewhere.png"
    with h5py.File(path_a) as a, h5py.File(other) as o, pytest.raises(DumpError, match="different image lists"):
        features.pair_cka(a, o)


def test_last_layer_matrix_and_rows(dumps_ab) -> None:
    path_a, path_b, _ = dumps_ab
    with h5py.File(path_a) as a, h5py.File(path_b) as b:
        pairs = {("a", "a"): features.pair_cka(a, a), ("a", "b"): features.pair_cka(a, b),
                 ("b", "b"): features.pair_cka(b, b)}
    matrix = features.last_layer_matrix(pairs, ["a", "b"])
    assert matrix.shape == (3, 2, 2)
    np.testing.assert_allclose(matrix[:, [0, 1], [0, 1]], 1.0, atol=1e-9)
    np.testing.assert_allclose(matrix[:, 0, 1], matrix[:, 1, 0])
    rows = features.last_layer_rows(pairs)
    assert len(rows) == 9 and set(rows[0]) == set(features.CKA_COLUMNS)
    assert rows[3]["point_a"] == "6" and rows[3]["cka"] == pytest.approx(matrix[0, 0, 1])
    tidy = features.cka_rows(pairs[("a", "b")], "a", "b", "norms")
    assert len(tidy) == 3 * 12 * 12 and tidy[1]["point_b"] == "1.n2"


# --------------------------------------------------------------------------- clustering


def test_purity_from_a_hand_computed_contingency_table() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    clusters = np.array([5, 5, 7, 7, 7, 9, 9, 9, 5, 9])
    # cluster 5: classes {0: 2, 2: 1}; cluster 7: {0: 1, 1: 2}; cluster 9: {1: 1, 2: 3}
    np.testing.assert_array_equal(clustering.contingency(labels, clusters), [[2, 0, 1], [1, 2, 0], [0, 1, 3]])
    assert clustering.purity(labels, clusters) == pytest.approx((2 + 2 + 3) / 10)
    assert clustering.purity(labels, labels) == 1.0
    assert clustering.purity(labels, np.zeros_like(labels)) == pytest.approx(4 / 10)


def blobs(rng: np.random.Generator, classes: int = 4, per: int = 30, spread: float = 0.3):
    centres = rng.normal(size=(classes, 8)) * 5
    labels = np.repeat(np.arange(classes), per)
    return centres[labels] + spread * rng.normal(size=(len(labels), 8)), labels


def test_clustering_separable_classes_score_one() -> None:
    x, labels = blobs(np.random.default_rng(10))
    scores = clustering.cluster_scores(x, labels, seed=0, n_init=4)
    assert scores == pytest.approx({"purity": 1.0, "nmi": 1.0, "ari": 1.0})


def test_clustering_is_deterministic() -> None:
    x, labels = blobs(np.random.default_rng(11), spread=4.0)
    first = clustering.cluster_scores(x, labels, seed=3, n_init=2)
    assert clustering.cluster_scores(x, labels, seed=3, n_init=2) == first
    assert 0.0 < first["ari"] < 1.0


def test_clustering_rows_are_tidy_and_one_indexed() -> None:
    rng = np.random.default_rng(12)
    x, labels = blobs(rng, classes=3, per=10)
    values = {"cls": np.stack([x, x[:, ::-1]], axis=1), "spatial": np.stack([x, x], axis=1)}
    rows = clustering.clustering_rows(values, labels, "m", seed=0, n_init=2)
    assert len(rows) == 2 * 2 * 3
    assert {r["block"] for r in rows} == {1, 2} and set(rows[0]) == set(clustering.CLUSTER_COLUMNS)
    with pytest.raises(DumpError, match="class label"):
        clustering.clustering_rows(values, np.where(labels == 0, -1, labels), "m", seed=0, n_init=2)


# --------------------------------------------------------------------------- undefined values


def test_single_class_clustering_is_undefined_not_perfect(caplog) -> None:
    """One class: KMeans with k = 1 scores purity = NMI = ARI = 1.0 whatever the features;
    the rows are NaN with the reason in ``note``, and the log says so."""
    x, _ = blobs(np.random.default_rng(13), classes=3, per=10)
    labels = np.zeros(len(x), dtype=np.int64)
    assert all(np.isnan(v) for v in clustering.cluster_scores(x, labels, seed=0, n_init=2).values())
    with caplog.at_level("WARNING", logger="vitscope.features.clustering"):
        rows = clustering.clustering_rows({"cls": x[:, None]}, labels, "m", seed=0, n_init=2)
    assert len(rows) == 3 and all(np.isnan(r["value"]) and r["note"] == "undefined: 1 class" for r in rows)
    assert "clustering of m: undefined: 1 class" in caplog.text
    two = clustering.clustering_rows({"cls": x[:, None]}, np.arange(len(x)) % 2, "m", seed=0, n_init=2)
    assert all(np.isfinite(r["value"]) and r["note"] == "" for r in two)

@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_constant_features_with_several_classes_are_scored_not_undefined() -> None:
    """Constant features and 3 classes: one cluster, a real (poor) score, not NaN."""
    labels = np.arange(12) % 3
    assert clustering.cluster_scores(np.ones((12, 4)), labels, seed=0, n_init=2) == pytest.approx(
        {"purity": 1 / 3, "nmi": 0.0, "ari": 0.0}
    )


# --------------------------------------------------------------------------- chance levels


def exact_chance(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """Purity and NMI averaged over every distinct assignment of the labels to the cluster slots."""
    from itertools import permutations

    from sklearn.metrics import normalized_mutual_info_score

    seen = set(permutations(labels.tolist()))
    purities = [clustering.purity(np.array(p), clusters) for p in seen]
    nmis = [normalized_mutual_info_score(np.array(p), clusters, average_method="arithmetic") for p in seen]
    return {"purity": float(np.mean(purities)), "nmi": float(np.mean(nmis))}


def test_chance_purity_by_hand() -> None:
    """Labels 0 0 1 1 in two clusters of 2: of the 6 ways to fill cluster A, 2 are pure (purity 1)
    and 4 mixed (purity 1/2), so the chance purity is (2 + 4 / 2) / 6 = 2/3."""
    labels, clusters = np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1])
    assert exact_chance(labels, clusters)["purity"] == pytest.approx(2 / 3)
    assert clustering.chance_purity(labels, clusters, seed=0, permutations=4000) == pytest.approx(2 / 3, abs=0.02)
    assert clustering.chance_purity(labels, clusters, seed=5) == clustering.chance_purity(labels, clusters, seed=5)
    # one cluster: purity is the majority share whatever the permutation
    assert clustering.chance_purity(np.array([0, 0, 0, 1]), np.zeros(4, np.int64)) == 0.75


def test_expected_nmi_equals_the_mean_over_all_permutations() -> None:
    labels, clusters = np.array([0, 0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 2, 2])
    exact = exact_chance(labels, clusters)
    assert clustering.expected_nmi(labels, clusters) == pytest.approx(exact["nmi"], rel=1e-12)
    assert exact["nmi"] > 0.1  # NMI of random clusterings is far from 0 for few images per cluster
    assert clustering.chance_purity(labels, clusters, seed=1, permutations=3000) == pytest.approx(exact["purity"],
                                                                                                    abs=0.01)
    assert clustering.expected_nmi(labels, np.zeros(7, np.int64)) == 0.0


def test_expected_mutual_information_matches_scikit_learn() -> None:
    from sklearn.metrics.cluster import contingency_matrix
    from sklearn.metrics.cluster._expected_mutual_info_fast import expected_mutual_information

    rng = np.random.default_rng(3)
    labels, clusters = rng.integers(0, 5, 300), rng.integers(0, 7, 300)
    table = contingency_matrix(labels, clusters, sparse=False)
    ours = clustering.expected_mutual_information(table.sum(axis=1), table.sum(axis=0))
    assert ours == pytest.approx(expected_mutual_information(table, 300), rel=1e-9)


def test_clustering_rows_carry_chance_and_counts() -> None:
    x, labels = blobs(np.random.default_rng(14), classes=3, per=10)
    rows = clustering.clustering_rows({"cls": x[:, None]}, labels, "m", seed=0, n_init=2)
    chance = {r["metric"]: r["chance"] for r in rows}
    assert chance["ari"] == 0.0 and 1 / 3 <= chance["purity"] < 0.6 and 0 < chance["nmi"] < 0.2
    assert {(r["images"], r["classes"], r["clusters"]) for r in rows} == {(30, 3, 3)}
    single = clustering.clustering_rows({"cls": x[:, None]}, np.zeros(30, np.int64), "m", seed=0, n_init=2)
    assert all(np.isnan(r["chance"]) for r in single)
