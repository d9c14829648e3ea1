"""The null baseline: what top-1 scores look like when activations carry no image information.

For one layer, the image rows of A (N x K) are permuted together (one permutation per seed,
the same for every unit, so the units keep their joint distribution but lose any link to the
images the dissector saw), the run's similarity function is applied with the run's parameters,
and every unit's top-1 score is kept. The pooled K x seeds top-1 scores are the layer's null
distribution; a unit is *above null* at level q when its real top-1 score exceeds the null's
q-th percentile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mammodissect.errors import MammodissectError

__all__ = ["NullBaseline", "null_baseline", "top1", "top1_scores"]

#: Percentiles of the null reported per layer (the flags use the same levels).
LEVELS: tuple[int, ...] = (95, 99)


@dataclass
class NullBaseline:
    """One layer's null distribution and the units above it.

    Attributes
    ----------
    scores:
        (seeds, K) top-1 scores with permuted activations.
    percentiles:
        ``{95: value, 99: value}`` of the pooled null top-1 scores.
    observed:
        (K,) the real top-1 scores.
    above:
        ``{95: (K,) bool, 99: (K,) bool}``: observed score > that percentile.
    """

    scores: np.ndarray
    percentiles: dict[int, float]
    observed: np.ndarray
    above: dict[int, np.ndarray]

    @property
    def mean(self) -> float:
        """Mean of the null top-1 scores."""
        return float(self.scores.mean())


def top1(
    similarity: Callable[..., torch.Tensor],
    cosines: torch.Tensor,
    activations: torch.Tensor,
    params: dict[str, Any],
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """(K,) each unit's best score over concepts and (K,) that concept's column in S
    (the first of tied ones)."""
    best = similarity(cosines, activations, device=device, **params).max(dim=1)
    return best.values.float().cpu().numpy(), best.indices.cpu().numpy()


def top1_scores(
    similarity: Callable[..., torch.Tensor],
    cosines: torch.Tensor,
    activations: torch.Tensor,
    params: dict[str, Any],
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """(K,) each unit's best score over concepts."""
    return top1(similarity, cosines, activations, params, device)[0]


def null_baseline(
    similarity: Callable[..., torch.Tensor],
    cosines: torch.Tensor,
    activations: torch.Tensor,
    params: dict[str, Any],
    *,
    seeds: int = 5,
    seed: int = 0,
    levels: Sequence[int] = LEVELS,
    observed: np.ndarray | None = None,
    device: torch.device | str = "cpu",
) -> NullBaseline:
    """Top-1 scores of one layer with its activations' image rows permuted.

    Parameters
    ----------
    similarity:
        The run's similarity function (``f(S, A, **params) -> K x M``).
    cosines:
        S, (N, M) image-concept cosines of the dissector.
    activations:
        A, (N, K) pooled activations of the layer, rows in the same image order as S.
    params:
        The run's similarity parameters.
    seeds:
        Number of permutations.
    seed:
        Base seed; permutation ``i`` uses ``numpy.random.default_rng([seed, i])``.
    levels:
        Percentiles of the null to report and flag.
    observed:
        The real top-1 scores, when already known (computed otherwise).

    Returns
    -------
    NullBaseline
    """
    if seeds < 1:
        raise MammodissectError(f"null seeds must be >= 1, got {seeds}")
    if observed is None:
        observed = top1_scores(similarity, cosines, activations, params, device)
    n = activations.shape[0]
    null = []
    for i in range(seeds):
        order = torch.from_numpy(np.random.default_rng([seed, i]).permutation(n))
        null.append(top1_scores(similarity, cosines, activations[order], params, device))
    scores = np.stack(null)
    percentiles = {int(q): float(np.percentile(scores, q)) for q in levels}
    above = {q: np.asarray(observed) > value for q, value in percentiles.items()}
    return NullBaseline(scores, percentiles, np.asarray(observed, dtype=np.float64), above)
