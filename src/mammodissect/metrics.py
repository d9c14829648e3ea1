"""Label-quality metrics with known definitions: AUROC and retrieval recall@k."""

from __future__ import annotations

import numpy as np
import torch

from mammodissect.errors import MammodissectError

__all__ = ["auroc", "recall_at_k"]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count one half), computed from ranks (Mann-Whitney U). NaN when the labels
    hold only one class."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=bool).ravel()
    if scores.shape != labels.shape:
        raise MammodissectError(f"{scores.size} scores but {labels.size} labels")
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if not positives or not negatives:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # average ranks over ties
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    u = ranks[labels].sum() - positives * (positives + 1) / 2.0
    return float(u / (positives * negatives))


def recall_at_k(similarity: torch.Tensor | np.ndarray, k: int = 5) -> float:
    """Fraction of rows whose matching column (the diagonal) is among their ``k`` highest."""
    sim = torch.as_tensor(similarity, dtype=torch.float32)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise MammodissectError(f"recall@k needs a square matrix, got {tuple(sim.shape)}")
    top = sim.topk(min(k, sim.shape[1]), dim=1).indices
    hits = (top == torch.arange(len(sim)).unsqueeze(1)).any(dim=1)
    return float(hits.float().mean())
