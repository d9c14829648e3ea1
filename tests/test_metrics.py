"""AUROC and recall@k against known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from mammodissect.metrics import auroc, recall_at_k


def slow_auroc(scores, labels):
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_auroc_known_answers_and_ties():
    assert auroc([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.1, 0.2], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.3
    assert auroc(scores, labels) == pytest.approx(slow_auroc(scores, labels))
    assert np.isnan(auroc([1.0, 2.0], [1, 1]))


def test_recall_at_k():
    sim = torch.eye(4)
    assert recall_at_k(sim, 1) == 1.0
    shuffled = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.5], [0.0, 0.1, 1.0]])
    assert recall_at_k(shuffled, 1) == pytest.approx(1 / 3)
    assert recall_at_k(shuffled, 2) == pytest.approx(1 / 3)
    assert recall_at_k(shuffled, 3) == 1.0
