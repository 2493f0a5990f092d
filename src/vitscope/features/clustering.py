"""What the models represent (docs/protocols.md#feature-analyses): clustering.

- :func:`purity` and :func:`cluster_scores`: KMeans with k = number of classes,
  scored by purity, NMI (arithmetic mean) and ARI; :func:`clustering_rows` per
  block for images (class labels) and :func:`object_clustering_rows` for the
  objects of a COCO dump (category labels, k = categories present).

A value that is undefined for its input is NaN in the rows, with the reason in the
row's ``note`` column (``undefined: ...``; empty for a defined value) and a warning in
the log: clustering of a single class (purity, NMI and ARI would all score a
meaningless 1.0).
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
CLUSTER_COLUMNS = ("model", "block", "representation", "metric", "value", "note")

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


def cluster_scores(features: np.ndarray, labels: np.ndarray, seed: int = 0, n_init: int = 10) -> dict[str, float]:
    """KMeans with k = number of classes on (N, D) features; purity, NMI (arithmetic), ARI.

    labels: (N,) class ids. Deterministic for a given seed and n_init. With fewer than two
    classes every score is NaN (:func:`undefined_clustering`), not a perfect 1.0.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    k = len(np.unique(labels))
    if undefined_clustering(labels):
        return {m: float("nan") for m in METRICS}
    clusters = kmeans(features, k, seed, n_init)
    return {
        "purity": purity(labels, clusters),
        "nmi": float(normalized_mutual_info_score(labels, clusters, average_method="arithmetic")),
        "ari": float(adjusted_rand_score(labels, clusters)),
    }


def clustering_rows(
    features: Mapping[str, np.ndarray], labels: np.ndarray, model: str, seed: int, n_init: int
) -> list[dict[str, Any]]:
    """Tidy rows (CLUSTER_COLUMNS) for every block of every representation.

    features: representation -> (N, L, D) per-block features (tokens/cls, tokens/spatial_mean);
    labels: (N,) class ids (>= 0). Blocks are 1-indexed in the rows. A single class gives
    NaN values with ``note`` "undefined: 1 class" and a log warning.
    """
    labels = np.asarray(labels)
    if labels.size == 0 or np.any(labels < 0):
        raise DumpError("clustering needs a class label for every image (images/label holds -1 for unlabelled)")
    note = undefined_clustering(labels)
    if note:
        log.warning("clustering of %s: %s (%d images); purity, NMI and ARI are NaN", model, note, labels.size)
    rows = []
    for rep, values in features.items():
        for block in range(values.shape[1]):
            scores = cluster_scores(values[:, block], labels, seed=seed, n_init=n_init)
            rows += [
                {"model": model, "block": block + 1, "representation": rep, "metric": m, "value": scores[m],
                 "note": note}
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
