"""Label-quality metrics with known definitions: AUROC, average precision, recall@k."""

from __future__ import annotations

import numpy as np
import torch

from mammodissect.errors import MammodissectError

__all__ = [
    "auroc",
    "auroc_columns",
    "average_precision_columns",
    "precision_matrices",
    "recall_at_k",
]


def _tie_spans(sorted_columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per position of each column of an ascending-sorted (N, K) array: the first and last
    position (inclusive) of its run of equal values."""
    n = sorted_columns.shape[0]
    index = np.arange(n)[:, None]
    new_run = np.ones_like(sorted_columns, dtype=bool)
    new_run[1:] = sorted_columns[1:] != sorted_columns[:-1]
    first = np.maximum.accumulate(np.where(new_run, index, 0), axis=0)
    run_ends = np.ones_like(new_run)
    run_ends[:-1] = new_run[1:]
    last = np.minimum.accumulate(np.where(run_ends, index, n - 1)[::-1], axis=0)[::-1]
    return first, last


def _columns(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores as (N, K) floats and labels as (N, K) bools (one (N,) label vector is shared by
    every column)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores[:, None]
    labels = np.asarray(labels, dtype=bool)
    if labels.ndim != 2:
        labels = labels.ravel()
        if scores.shape[0] != labels.size:
            raise MammodissectError(f"{scores.shape[0]} scores but {labels.size} labels")
        labels = np.broadcast_to(labels[:, None], scores.shape)
    elif labels.shape != scores.shape:
        raise MammodissectError(f"scores {scores.shape} but labels {labels.shape}")
    return scores, labels


def _precision_sums(hits: np.ndarray, last: np.ndarray) -> np.ndarray:
    """Per column of descending-sorted labels ``hits`` (N, K), the sum over positives of the
    precision at their threshold (``last``: each position's last tied position)."""
    found = np.cumsum(hits, axis=0)
    precision = np.take_along_axis(found, last, axis=0) / (last + 1.0)
    return (precision * hits).sum(axis=0)


def auroc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of every column of ``scores`` (N, K) against binary ``labels``: one (N,) vector
    for every column, or (N, K), a column of labels per column of scores.

    The probability that a random positive scores above a random negative (ties count one
    half), from average ranks (Mann-Whitney U). NaN for a column whose labels hold only one
    class.

    Examples
    --------
    >>> auroc_columns(np.array([[0.1, 3.0], [0.4, 1.0], [0.35, 1.0], [0.8, 0.5]]),
    ...               np.array([0, 0, 1, 1]))
    array([0.75 , 0.125])
    >>> auroc_columns(np.array([[0.1, 0.1], [0.4, 0.4]]), np.array([[0, 1], [1, 0]]))
    array([1., 0.])
    """
    scores, labels = _columns(scores, labels)
    positives = labels.sum(axis=0).astype(np.float64)
    negatives = labels.shape[0] - positives
    order = np.argsort(scores, axis=0, kind="stable")
    first, last = _tie_spans(np.take_along_axis(scores, order, axis=0))
    ranks = np.empty_like(scores)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=0)
    u = (ranks * labels).sum(axis=0) - positives * (positives + 1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((positives > 0) & (negatives > 0), u / (positives * negatives), np.nan)


def average_precision_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Average precision (area under the precision-recall curve, step-wise) of every column of
    ``scores`` (N, K) against binary ``labels`` ((N,) shared, or (N, K) per column).

    The mean over positives of the precision at the threshold equal to that positive's score;
    tied scores form one threshold (so the result does not depend on the order of ties). NaN
    for a column without a positive.

    Examples
    --------
    >>> average_precision_columns(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]))
    array([0.83333333])
    """
    scores, labels = _columns(scores, labels)
    positives = labels.sum(axis=0)
    order = np.argsort(-scores, axis=0, kind="stable")
    hits = np.take_along_axis(labels, order, axis=0)
    _, last = _tie_spans(np.take_along_axis(-scores, order, axis=0))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(positives > 0, _precision_sums(hits, last) / positives, np.nan)


def precision_matrices(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and average precision of every column of ``scores`` (N, K) against every column
    of ``labels`` (N, C): ``(auroc, ap)``, each (K, C).

    Entry ``[k, c]`` is :func:`auroc_columns` / :func:`average_precision_columns` of score
    column ``k`` against label column ``c`` (ties handled the same way), with each score
    column sorted once for all label columns. NaN where a label column holds one class
    (AUROC) or no positive (average precision).

    Examples
    --------
    >>> roc, ap = precision_matrices(np.array([[0.9], [0.8], [0.7], [0.6]]),
    ...                              np.array([[1, 0], [0, 0], [1, 1], [0, 1]]))
    >>> roc, ap.round(3)
    (array([[0.75, 0.  ]]), array([[0.833, 0.417]]))
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.ndim != 2 or labels.ndim != 2 or scores.shape[0] != labels.shape[0]:
        raise MammodissectError(
            f"scores must be (N, K) and labels (N, C) over the same N, got {scores.shape} and "
            f"{labels.shape}"
        )
    n = scores.shape[0]
    order = np.argsort(-scores, axis=0, kind="stable")
    first, last = _tie_spans(np.take_along_axis(-scores, order, axis=0))
    ranks = np.empty_like(scores)  # ascending average ranks, 1 = lowest score
    np.put_along_axis(ranks, order, n - (first + last) / 2.0, axis=0)
    positives = labels.sum(axis=0).astype(np.float64)
    negatives = n - positives
    u = ranks.T @ labels.astype(np.float64) - positives * (positives + 1) / 2.0
    ap = np.empty((scores.shape[1], labels.shape[1]))
    for c in range(labels.shape[1]):
        hits = labels[:, c][order]
        ap[:, c] = _precision_sums(hits, last)
    with np.errstate(divide="ignore", invalid="ignore"):
        roc = np.where((positives > 0) & (negatives > 0), u / (positives * negatives), np.nan)
        ap = np.where(positives > 0, ap / positives, np.nan)
    return roc, ap


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUROC of one score vector (see :func:`auroc_columns`)."""
    return float(auroc_columns(np.ravel(scores), labels)[0])


def recall_at_k(similarity: torch.Tensor | np.ndarray, k: int = 5) -> float:
    """Fraction of rows whose matching column (the diagonal) is among their ``k`` highest."""
    sim = torch.as_tensor(similarity, dtype=torch.float32)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise MammodissectError(f"recall@k needs a square matrix, got {tuple(sim.shape)}")
    top = sim.topk(min(k, sim.shape[1]), dim=1).indices
    hits = (top == torch.arange(len(sim)).unsqueeze(1)).any(dim=1)
    return float(hits.float().mean())
