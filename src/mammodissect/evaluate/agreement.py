"""Agreement of dissection labels with grounded concepts, with bootstrap confidence intervals.

Over the units that have a grounded concept (IoU at or above the cut-off), per unit:

- ``top1_match``: the rank-1 label is the grounded concept (exact string);
- ``top5_match``: the grounded concept is among ranks 1..5;
- ``same_finding``: the rank-1 label states the grounded concept's finding, in its words or in
  other words of the same BI-RADS descriptor (:mod:`mammodissect.concepts.findings`);
- ``same_category`` / ``same_broad_category``: the rank-1 label and the grounded concept share a
  category / broad category (multi-label concepts: any shared label; empty when either has none);
- ``cosine``: cosine similarity of the rank-1 label and the grounded concept in a sentence
  embedding space (all-MiniLM-L6-v2), CLIP-Dissect's soft measure.

Each metric's mean comes with a percentile bootstrap 95% interval over units (seeded).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from mammodissect.analysis.runs import label_pairs
from mammodissect.concepts.findings import same_finding
from mammodissect.errors import MammodissectError
from mammodissect.models.phantom_clip import MiniLM

__all__ = [
    "FLAGS",
    "METRICS",
    "agreement_flags",
    "bootstrap_mean",
    "concept_ranks",
    "minilm_cosines",
    "summarize_agreement",
]

log = logging.getLogger(__name__)

#: Per-unit agreement flags (:func:`agreement_flags`), in table order.
FLAGS: tuple[str, ...] = (
    "top1_match",
    "top5_match",
    "same_finding",
    "same_category",
    "same_broad_category",
)
#: Per-unit agreement columns, in table order.
METRICS: tuple[str, ...] = (*FLAGS, "cosine")


def _labels(table: pd.DataFrame | None, concept: str) -> tuple[set[str], set[str]]:
    if table is None or concept not in table.index:
        return set(), set()
    row = table.loc[concept]
    pairs = label_pairs(row.get("category"), row.get("broad_category"))
    return {c for _, c in pairs if c}, {b for b, _ in pairs if b}


def agreement_flags(
    labels: Sequence[Sequence[str]],
    truths: Sequence[str],
    categories: pd.DataFrame | None = None,
    findings: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Per unit: ``top1_match, top5_match, same_finding, same_category, same_broad_category``.

    Parameters
    ----------
    labels:
        Per unit, its concepts by rank (rank 1 first; only the first five are used).
    truths:
        Per unit, its grounded concept.
    categories:
        The concept set indexed by concept with ``category, broad_category`` (None: the
        category flags are left empty).
    findings:
        Same-finding groups (string -> its finding; default: the bundled ``birads`` groups,
        :func:`~mammodissect.concepts.findings.finding_groups`). A string in no group is a
        finding of its own, so for a set without grouped strings ``same_finding`` is
        ``top1_match``.

    Examples
    --------
    >>> agreement_flags([["a", "b"], ["c", "a"]], ["a", "a"])[["top1_match", "top5_match"]]
       top1_match  top5_match
    0        True        True
    1       False        True
    """
    rows = []
    for ranked, truth in zip(labels, truths, strict=True):
        top = list(ranked)[:5]
        row: dict[str, object] = {
            "top1_match": bool(top) and top[0] == truth,
            "top5_match": truth in top,
            "same_finding": bool(top) and same_finding(top[0], truth, findings),
            "same_category": None,
            "same_broad_category": None,
        }
        if top:
            (lc, lb), (tc, tb) = _labels(categories, top[0]), _labels(categories, truth)
            if lc and tc:
                row["same_category"] = bool(lc & tc)
            if lb and tb:
                row["same_broad_category"] = bool(lb & tb)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(FLAGS))


def concept_ranks(scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's concepts by score and each concept's rank, from a (K, M) score matrix.

    Returns ``(order, ranks)``: ``order[k]`` the concept columns best first and ``ranks[k, j]``
    concept ``j``'s rank for unit ``k`` (1 = best). Ties go to the earlier concept, as a
    unit's label does, so rank 1 is exactly the label.

    Examples
    --------
    >>> concept_ranks(torch.tensor([[0.2, 0.5, 0.5]]))[1]
    array([[3, 1, 2]])
    """
    order = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices.cpu().numpy()
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, order.shape[1] + 1)[None], axis=1)
    return order, ranks


@lru_cache(maxsize=1)
def _minilm() -> Callable[[list[str]], np.ndarray]:
    model = MiniLM()
    return lambda texts: model(list(texts)).float().cpu().numpy()


def minilm_cosines(first: Sequence[str], second: Sequence[str]) -> np.ndarray:
    """Cosine similarity of each pair ``(first[i], second[i])`` in all-MiniLM-L6-v2 space.

    Returns NaN for every pair (with a logged note) when the sentence model is not installed.
    """
    if not len(first):
        return np.zeros(0)
    try:
        encode = _minilm()
    except MammodissectError as err:
        log.warning("label cosines left empty: %s", err)
        return np.full(len(first), np.nan)
    texts = sorted(set(first) | set(second))
    vectors = dict(zip(texts, encode(texts), strict=True))
    return np.array([float(vectors[a] @ vectors[b]) for a, b in zip(first, second, strict=True)])


def bootstrap_mean(
    values: Sequence[float], resamples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``values`` (NaN ignored) and its percentile bootstrap interval.

    Returns ``(mean, low, high)``; all NaN when there are no values, and the interval collapses
    to the mean when ``resamples`` is 0.
    """
    data = np.asarray([v for v in values if v is not None], dtype=np.float64)
    data = data[~np.isnan(data)]
    if not len(data):
        return float("nan"), float("nan"), float("nan")
    mean = float(data.mean())
    if resamples < 1:
        return mean, mean, mean
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return mean, float(low), float(high)


def summarize_agreement(
    table: pd.DataFrame,
    resamples: int = 1000,
    seed: int = 0,
    metrics: Sequence[str] = METRICS,
) -> Mapping[str, float]:
    """Per metric (a column of ``table``, by default :data:`METRICS`): ``METRIC, METRIC_low,
    METRIC_high`` over ``table``'s units."""
    out: dict[str, float] = {}
    for metric in metrics:
        values = (
            table[metric].map(lambda v: np.nan if v is None else float(v)) if len(table) else []
        )
        mean, low, high = bootstrap_mean(list(values), resamples, seed)
        out[metric], out[f"{metric}_low"], out[f"{metric}_high"] = mean, low, high
    return out
