"""Clustering metrics against hand-made permutations and a brute-force accuracy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lowlabel.errors import LowlabelError
from lowlabel.metrics.clustering import cluster_accuracy, clustering_scores, kmeans


def test_relabelled_partition_scores_one() -> None:
    y = np.array([0, 0, 1, 1, 1, 2, 2, 3])
    renamed = np.array([7, 7, 2, 2, 2, 5, 5, 0])  # a permutation of the ids
    assert clustering_scores(y, renamed) == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0})


def test_hand_worked_accuracy() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 1])
    y_pred = np.array([1, 1, 0, 0, 0, 0])  # cluster 1 -> class 0 (2 right), cluster 0 -> class 1 (3 right)
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
    # more clusters than classes: the extra cluster stays unmatched and counts as wrong
    assert cluster_accuracy(np.array([0, 0, 1, 1]), np.array([0, 1, 2, 2])) == pytest.approx(3 / 4)
    # all in one cluster: ARI 0, NMI 0, ACC = largest class share
    scores = clustering_scores(np.array([0, 0, 0, 1]), np.zeros(4, dtype=int))
    assert scores == pytest.approx({"acc": 0.75, "nmi": 0.0, "ari": 0.0})


def test_accuracy_equals_brute_force_over_all_maps() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y_true, y_pred = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
        best = max(np.mean(np.array(perm)[y_pred] == y_true) for perm in itertools.permutations(range(4)))
        assert cluster_accuracy(y_true, y_pred) == pytest.approx(best)


def test_kmeans_is_seeded_and_checks_inputs() -> None:
    rng = np.random.default_rng(1)
    x = np.vstack([rng.normal(0, 0.1, (20, 2)), rng.normal(5, 0.1, (20, 2))])
    labels = np.repeat([0, 1], 20)
    assign = kmeans(x, 2, seed=3)
    assert cluster_accuracy(labels, assign) == 1.0
    assert (assign == kmeans(x, 2, seed=3)).all()
    with pytest.raises(LowlabelError, match="clusters"):
        kmeans(x, 41)
    with pytest.raises(LowlabelError, match="NaN"):
        kmeans(np.array([[0.0], [np.nan]]), 1)
    with pytest.raises(LowlabelError):
        cluster_accuracy(np.zeros(3), np.zeros(4))
