"""The field's two sanity checks for similarity functions (Neuron_Eval, Oikarinen, Yan and Weng,
ICML 2025), run on units whose concept is known.

A sound score for a unit and its own concept must fall when the concept's labels get worse:

- **missing labels**: half of the concept's positive images (chosen at random, seeded) are
  relabelled negative;
- **extra labels**: as many of its negative images (at most all of them) are relabelled
  positive.

The labels are a 0/1 matrix (images x concepts) used as S, as Neuron_Eval uses concept labels;
each concept is perturbed on its own and every function scores all units together, as in a run
(soft-WPMI's and WPMI's concept prior spans the units). A unit's score *falls* when it ends
lower than before by more than float32 noise (``1e-6 * (1 + |score|)``); unchanged is not
falling. A function passes a check when the share of units whose score falls is at least
``pass_share`` (0.95).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.errors import MammodissectError
from mammodissect.evaluate.masks import mask_source
from mammodissect.evaluate.planted import plant
from mammodissect.models.annotation_models import annotation_truth
from mammodissect.similarity import SIMILARITIES, get_similarity

__all__ = ["SANITY_COLUMNS", "perturbed_labels", "planted_sanity", "sanity_checks"]

#: Columns of :func:`sanity_checks`' table, one row per similarity function.
SANITY_COLUMNS = [
    "similarity",
    "units",
    "missing_labels_falls",
    "extra_labels_falls",
    "passes_missing_labels",
    "passes_extra_labels",
]


def perturbed_labels(
    labels: np.ndarray, column: int, check: str, rng: np.random.Generator
) -> np.ndarray:
    """A copy of the 0/1 ``labels`` with one column damaged as ``check`` says (``missing`` or
    ``extra``; see the module docstring)."""
    out = labels.copy()
    positives = np.flatnonzero(labels[:, column] > 0)
    negatives = np.flatnonzero(labels[:, column] <= 0)
    if check == "missing":
        out[rng.choice(positives, size=len(positives) // 2, replace=False), column] = 0.0
    elif check == "extra":
        size = min(len(positives), len(negatives))
        out[rng.choice(negatives, size=size, replace=False), column] = 1.0
    else:
        raise MammodissectError(f"sanity check {check!r} unknown: missing or extra")
    return out


def sanity_checks(
    activations: np.ndarray,
    labels: np.ndarray,
    unit_concepts: Sequence[int],
    similarities: Sequence[str] | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    pass_share: float = 0.95,
) -> pd.DataFrame:
    """Run both checks for each similarity function.

    Parameters
    ----------
    activations:
        (N, K) activations of units with a known concept.
    labels:
        (N, M) 0/1 labels of the concepts, used as S.
    unit_concepts:
        Per unit, the column of ``labels`` that is its concept.
    similarities:
        Function names (default: every registered one).
    params:
        Parameters per function name (default: the functions' own defaults).
    seed:
        Seed of the relabelled images (the same images for every function).
    pass_share:
        Share of units whose score must fall for a function to pass a check.

    Returns
    -------
    pandas.DataFrame
        :data:`SANITY_COLUMNS`, one row per function.

    Raises
    ------
    MammodissectError
        For an unknown function, mismatched shapes, or a unit concept out of range.
    """
    acts = np.asarray(activations, dtype=np.float32)
    truth = (np.asarray(labels) > 0).astype(np.float32)
    concepts_of = np.asarray(unit_concepts, dtype=np.int64)
    if acts.shape[0] != truth.shape[0] or acts.shape[1] != len(concepts_of):
        raise MammodissectError(
            f"sanity checks: activations {acts.shape}, labels {truth.shape} and "
            f"{len(concepts_of)} unit concepts do not fit"
        )
    if len(concepts_of) and not (0 <= concepts_of.min() and concepts_of.max() < truth.shape[1]):
        raise MammodissectError("sanity checks: a unit's concept is not a column of the labels")
    names = list(similarities or SIMILARITIES)
    columns = sorted(set(concepts_of.tolist()))
    damaged = {  # one perturbed matrix per check and concept, shared by every function
        (check, column): perturbed_labels(truth, column, check, np.random.default_rng([seed, c]))
        for c, check in enumerate(("missing", "extra"))
        for column in columns
    }
    rows = []
    for name in names:
        function, options = get_similarity(name), dict((params or {}).get(name, {}))
        base = function(truth, acts, **options).cpu().numpy()
        units = np.arange(len(concepts_of))
        own = base[units, concepts_of]
        falls = {}
        for check in ("missing", "extra"):
            fell = np.zeros(len(concepts_of), dtype=bool)
            for column in columns:
                mine = np.flatnonzero(concepts_of == column)
                after = function(damaged[check, column], acts, **options).cpu().numpy()
                now = after[mine, column]
                fell[mine] = now < own[mine] - 1e-6 * (1 + np.abs(own[mine]))
            falls[check] = float(fell.mean()) if len(fell) else float("nan")
        rows.append(
            {
                "similarity": name,
                "units": len(concepts_of),
                "missing_labels_falls": falls["missing"],
                "extra_labels_falls": falls["extra"],
                "passes_missing_labels": falls["missing"] >= pass_share,
                "passes_extra_labels": falls["extra"] >= pass_share,
            }
        )
    return pd.DataFrame(rows, columns=SANITY_COLUMNS)


def planted_sanity(
    probe: Any,
    rows: Sequence[int],
    concepts: Sequence[str],
    similarities: Sequence[str] | None = None,
    *,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int = 0,
    pass_share: float = 0.95,
    **plant_options: Any,
) -> pd.DataFrame:
    """:func:`sanity_checks` on a probe's planted layer (:func:`mammodissect.evaluate.planted.
    plant`: one known detector per masked concept), the labels being the probe's own
    annotations (as the annotation dissector reads them) over the concepts they show."""
    present, kept, _ = annotation_truth(probe, rows, concepts)
    masks = mask_source(probe, list(concepts))
    if masks is None:
        raise MammodissectError(
            "the probe has neither a mask_path column nor boxes, so no unit can be planted; "
            "give a probe with concept masks (e.g. `mammodissect phantom write`)"
        )
    layer = plant(probe, rows, masks, list(concepts), **plant_options)
    return sanity_checks(
        layer.activations, present.numpy(), [kept.index(c) for c in layer.concepts], similarities,
        params=params, seed=seed, pass_share=pass_share,
    )  # fmt: skip
