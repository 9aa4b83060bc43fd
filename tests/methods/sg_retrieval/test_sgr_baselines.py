"""Training-free baselines: the WL subtree labels worked out by hand, the TF-IDF cosine against its closed form."""

from __future__ import annotations

import math

import pytest
import torch

from lowlabel.errors import LowlabelError
from lowlabel.methods.sg_retrieval.baselines import tfidf_cosine, wl_cosine, wl_labels
from lowlabel.methods.sg_retrieval.graphs import build_graph


def test_wl_labels_by_hand():
    g = build_graph("1", ["man", "horse"], [["tall"], []], [(0, "riding", 1)])  # nodes man, horse, tall, riding
    assert wl_labels(g, 1) == [
        "0:man", "0:horse", "0:tall", "0:riding",
        "1:man|riding,tall", "1:horse|riding", "1:tall|man", "1:riding|horse,man",
    ]  # fmt: skip
    assert wl_labels(g, 2)[-1] == "2:riding|horse,man|horse|riding,man|riding,tall"


def test_wl_kernel_sees_the_symmetrised_graph_and_the_attributes():
    a = build_graph("a", ["man", "horse"], [["tall"], []], [(0, "riding", 1)])
    flipped = build_graph("b", ["man", "horse"], [["tall"], []], [(1, "riding", 0)])  # same undirected graph
    moved = build_graph("c", ["man", "horse"], [[], ["tall"]], [(0, "riding", 1)])  # the attribute on the horse
    k = wl_cosine([a, flipped, moved], iterations=1)
    assert k[0, 1] == pytest.approx(1.0) and k[0, 2] < 0.99
    assert wl_cosine([a, moved], iterations=0)[0, 1] == pytest.approx(1.0)  # round 0 is a bag of labels
    with pytest.raises(LowlabelError, match="iterations=-1"):
        wl_cosine([a], iterations=-1)


def test_tfidf_cosine_closed_form():
    """sklearn's smooth idf: idf(t) = ln((1 + n) / (1 + df)) + 1; rows are L2-normalised."""
    docs = [["man", "riding", "horse", "man"], ["man"]]
    a = 1 + math.log(3 / 2)  # idf of riding and horse (df 1 of n 2); idf(man) = 1
    assert tfidf_cosine(docs, "raw")[0, 1] == pytest.approx(2 / math.sqrt(4 + 2 * a * a), abs=1e-6)
    assert tfidf_cosine(docs, "sublinear")[0, 1] == pytest.approx((1 + math.log(2)) / math.sqrt(
        (1 + math.log(2)) ** 2 + 2 * a * a), abs=1e-6)
    assert tfidf_cosine(docs, "binary")[0, 1] == pytest.approx(1 / math.sqrt(1 + 2 * a * a), abs=1e-6)
    assert torch.allclose(torch.diag(tfidf_cosine(docs)), torch.ones(2))
    with pytest.raises(LowlabelError, match="tf='log'"):
        tfidf_cosine(docs, "log")
