"""What the models represent (docs/protocols.md#feature-analyses): clustering.

- :func:`purity` and :func:`cluster_scores`: KMeans with k = number of classes,
  scored by purity, NMI (arithmetic mean) and ARI; :func:`clustering_rows` per
  block for images (class labels) and :func:`object_clustering_rows` for the
  objects of a COCO dump (category labels, k = categories present).

A value that is undefined for its input is NaN in the rows, with the reason in the
row's ``note`` column (``undefined: ...``; empty for a defined value) and a warning in
the log: clustering of a single class (purity, NMI and ARI would all score a
meaningless 1.0).

Every row also carries its chance level (``chance``): the score's expectation when the
same cluster sizes are filled by a uniformly random permutation of the labels (the
clustering ignores the features; the permutation model of Vinh et al. 2010), with the
numbers behind it (``images``, ``classes``, ``clusters``):

- ARI: exactly 0 (ARI is adjusted for this expectation);
- NMI: exact, :func:`expected_nmi` (the expected mutual information divided by the
  arithmetic mean of the two entropies, which a permutation does not change); it is
  not 0, and grows with the number of clusters per image;
- purity: estimated as the mean purity of :data:`PURITY_PERMUTATIONS` seeded random
  permutations (:func:`chance_purity`); at least the majority class's share.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from ..errors import DumpError
from ..io.dumps import require

log = logging.getLogger(__name__)
METRICS = ("purity", "nmi", "ari")
CLUSTER_FEATURES = {"cls": "tokens/cls", "spatial": "tokens/spatial_mean"}
OBJECT_FEATURES = {"object": "objects/features"}
CLUSTER_COLUMNS = ("model", "block", "representation", "metric", "value", "note", "chance", "images", "classes",
                   "clusters")
#: random label permutations behind the purity chance level (:func:`chance_purity`)
PURITY_PERMUTATIONS = 100


def contingency(labels: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """(C, K) counts of images per (cluster, class): rows clusters, columns classes, in sorted order."""
    _, cls = np.unique(np.asarray(labels), return_inverse=True)
    _, clu = np.unique(np.asarray(clusters), return_inverse=True)
    table = np.zeros((clu.max() + 1, cls.max() + 1), dtype=np.int64)
    np.add.at(table, (clu.ravel(), cls.ravel()), 1)
    return table


def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """(1/N) sum over clusters of the size of the cluster's majority class.

    labels, clusters: (N,) integer class and cluster ids.
    """
    labels, clusters = np.asarray(labels), np.asarray(clusters)
    if labels.shape != clusters.shape or labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"purity: need two (N,) arrays with N > 0, got {labels.shape} and {clusters.shape}")
    return float(contingency(labels, clusters).max(axis=1).sum() / labels.size)


def chance_purity(labels: np.ndarray, clusters: np.ndarray, seed: int = 0,
                  permutations: int = PURITY_PERMUTATIONS) -> float:
    """Purity of a random clustering with the sizes of ``clusters``: the mean purity over
    ``permutations`` random permutations of ``labels`` (numpy ``default_rng(seed)``).

    labels, clusters: (N,) integer class and cluster ids. Its standard error is the spread of
    the permutations' purities over sqrt(permutations) (about 0.003 for 72 images in 6 classes).
    """
    _, cls = np.unique(np.asarray(labels), return_inverse=True)
    _, clu = np.unique(np.asarray(clusters), return_inverse=True)
    cls, clu = cls.ravel(), clu.ravel()
    n_cls, n_clu = int(cls.max()) + 1, int(clu.max()) + 1
    rng = np.random.default_rng(seed)
    total = 0
    for _ in range(permutations):
        table = np.bincount(clu * n_cls + rng.permutation(cls), minlength=n_clu * n_cls).reshape(n_clu, n_cls)
        total += int(table.max(axis=1).sum())
    return total / (permutations * cls.size)


def expected_mutual_information(rows: np.ndarray, cols: np.ndarray) -> float:
    """Exact expected mutual information (nats) of two labelings with the marginals ``rows`` (R,)
    and ``cols`` (C,) (counts, same total N) under a uniformly random permutation: the sum over
    cells and their hypergeometric counts n of P(n) (n / N) log(N n / (a b)) (Vinh et al. 2010)."""
    from scipy.special import gammaln

    a, b = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    n = int(a.sum())
    if n != int(b.sum()):
        raise ValueError(f"expected_mutual_information: marginals sum to {n} and {int(b.sum())}")
    total = 0.0
    log_fixed = gammaln(a + 1)[:, None] + gammaln(b + 1)[None, :] + gammaln(n - a + 1)[:, None] \
        + gammaln(n - b + 1)[None, :] - gammaln(n + 1)
    for i, ai in enumerate(a):
        for j, bj in enumerate(b):
            counts = np.arange(max(1, ai + bj - n), min(ai, bj) + 1, dtype=np.float64)
            if counts.size == 0:
                continue
            log_p = log_fixed[i, j] - gammaln(counts + 1) - gammaln(ai - counts + 1) - gammaln(bj - counts + 1) \
                - gammaln(n - ai - bj + counts + 1)
            total += float(np.sum(np.exp(log_p) * counts / n * np.log(n * counts / (ai * bj))))
    return total


def expected_nmi(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Exact expected NMI (arithmetic) of a random clustering with the sizes of ``clusters``:
    E[MI] / ((H(labels) + H(clusters)) / 2), both entropies fixed by the sizes. (N,) ids; 0 when
    either labeling has a single group (its MI is always 0)."""
    _, a = np.unique(np.asarray(labels), return_counts=True)
    _, b = np.unique(np.asarray(clusters), return_counts=True)
    if a.size < 2 or b.size < 2:
        return 0.0

    def entropy(counts: np.ndarray) -> float:
        p = counts / counts.sum()
        return float(-np.sum(p * np.log(p)))

    return expected_mutual_information(a, b) / ((entropy(a) + entropy(b)) / 2)


def kmeans(features: np.ndarray, k: int, seed: int, n_init: int) -> np.ndarray:
    """(N,) KMeans cluster ids of (N, D) features (Lloyd, k-means++, float64)."""
    from sklearn.cluster import KMeans  # here, so figure rules need no scikit-learn

    model = KMeans(n_clusters=k, n_init=n_init, random_state=seed, algorithm="lloyd")
    return model.fit_predict(np.asarray(features, dtype=np.float64))


def undefined_clustering(labels: np.ndarray) -> str:
    """The ``note`` of clustering scores for (N,) class ids: ``""`` where purity, NMI and ARI
    are defined, ``"undefined: 1 class"`` for a single class (KMeans with k = 1 puts every
    image in one cluster, and all three scores are 1.0 whatever the features)."""
    classes = len(np.unique(np.asarray(labels)))
    return "" if classes >= 2 else f"undefined: {classes} class"


def chance_scores(labels: np.ndarray, clusters: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Chance level of each score for (N,) labels and the sizes of (N,) clusters (module docstring):
    purity :func:`chance_purity`, NMI :func:`expected_nmi`, ARI 0."""
    return {"purity": chance_purity(labels, clusters, seed), "nmi": expected_nmi(labels, clusters), "ari": 0.0}


def scores(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """Purity, NMI (arithmetic) and ARI of (N,) cluster ids against (N,) class ids."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "purity": purity(labels, clusters),
        "nmi": float(normalized_mutual_info_score(labels, clusters, average_method="arithmetic")),
        "ari": float(adjusted_rand_score(labels, clusters)),
    }


def cluster_scores(features: np.ndarray, labels: np.ndarray, seed: int = 0, n_init: int = 10) -> dict[str, float]:
    """KMeans with k = number of classes on (N, D) features; purity, NMI (arithmetic), ARI.

    labels: (N,) class ids. Deterministic for a given seed and n_init. With fewer than two
    classes every score is NaN (:func:`undefined_clustering`), not a perfect 1.0.
    """
    labels = np.asarray(labels)
    if undefined_clustering(labels):
        return {m: float("nan") for m in METRICS}
    return scores(labels, kmeans(features, len(np.unique(labels)), seed, n_init))


def clustering_rows(
    features: Mapping[str, np.ndarray], labels: np.ndarray, model: str, seed: int, n_init: int
) -> list[dict[str, Any]]:
    """Tidy rows (CLUSTER_COLUMNS) for every block of every representation.

    features: representation -> (N, L, D) per-block features (tokens/cls, tokens/spatial_mean);
    labels: (N,) class ids (>= 0). Blocks are 1-indexed in the rows. A single class gives
    NaN values with ``note`` "undefined: 1 class" and a log warning. ``chance`` is the
    score's chance level for the clusters found (module docstring); ``images``, ``classes``
    and ``clusters`` (the non-empty clusters KMeans found, at most k = classes) are the
    counts behind it.
    """
    labels = np.asarray(labels)
    if labels.size == 0 or np.any(labels < 0):
        raise DumpError("clustering needs a class label for every image (images/label holds -1 for unlabelled)")
    note = undefined_clustering(labels)
    if note:
        log.warning("clustering of %s: %s (%d images); purity, NMI and ARI are NaN", model, note, labels.size)
    classes = len(np.unique(labels))
    rows = []
    for rep, values in features.items():
        for block in range(values.shape[1]):
            if note:
                value = chance = {m: float("nan") for m in METRICS}
                found = 1
            else:
                clusters = kmeans(values[:, block], classes, seed, n_init)
                value, chance = scores(labels, clusters), chance_scores(labels, clusters, seed)
                found = len(np.unique(clusters))
            rows += [
                {"model": model, "block": block + 1, "representation": rep, "metric": m, "value": value[m],
                 "note": note, "chance": chance[m], "images": labels.size, "classes": classes, "clusters": found}
                for m in METRICS
            ]
    return rows


def object_clustering_rows(dump: h5py.File, model: str, seed: int, n_init: int) -> list[dict[str, Any]]:
    """Tidy rows (CLUSTER_COLUMNS, representation ``object``) of KMeans on every block's
    object features (``objects/features``, (O, L, D)) against their COCO categories,
    k = the number of categories present (the study hard-coded 80). Reads one block at a time.
    """
    values = require(dump, OBJECT_FEATURES["object"])
    labels = require(dump, "objects/category")[...]
    if labels.size == 0:
        raise DumpError(f"dump '{dump.filename}' holds no objects (every object's grid mask was empty)")
    return clustering_rows({"object": values}, labels, model, seed=seed, n_init=n_init)
