"""Scores to unit labels: each unit's top concepts and top images, as tidy tables."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from mammodissect.concepts import ConceptSet

__all__ = ["NEURON_COLUMNS", "TOP_IMAGE_COLUMNS", "label_units", "top_image_table"]

NEURON_COLUMNS = ["layer", "unit", "rank", "concept", "score"]
TOP_IMAGE_COLUMNS = ["layer", "unit", "rank", "image_id", "activation"]


def label_units(
    scores: torch.Tensor, concepts: ConceptSet, layer: str, top_n: int = 10
) -> pd.DataFrame:
    """Each unit's ``top_n`` concepts, best first (rank 1), from a (units x concepts) score matrix.

    Equal scores keep concept-set order (stable sort). Columns: ``layer, unit,
    rank, concept, score`` plus ``category, broad_category, control`` when the
    concept set has categories.
    """
    scores = scores.detach().float().cpu()
    units, m = scores.shape
    n = min(top_n, m)
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :n].numpy()
    picked = np.take_along_axis(scores.numpy(), order, axis=1)
    flat = order.reshape(-1)
    table = pd.DataFrame(
        {
            "layer": layer,
            "unit": np.repeat(np.arange(units), n),
            "rank": np.tile(np.arange(1, n + 1), units),
            "concept": np.asarray(concepts.concepts, dtype=object)[flat],
            "score": picked.reshape(-1),
        }
    )
    if concepts.has_categories:
        frame = concepts.to_frame()
        for column in ("category", "broad_category", "control"):
            table[column] = frame[column].to_numpy()[flat]
    return table


def top_image_table(
    layer: str, values: np.ndarray, rows: np.ndarray, image_ids: Sequence[str]
) -> pd.DataFrame:
    """Tidy top images from (k, units) activations and probe row indices (rank 1 = highest)."""
    k, units = values.shape
    ids = np.asarray(image_ids, dtype=object)
    return pd.DataFrame(
        {
            "layer": layer,
            "unit": np.tile(np.arange(units), k),
            "rank": np.repeat(np.arange(1, k + 1), units),
            "image_id": ids[rows.reshape(-1)],
            "activation": values.reshape(-1),
        }
    ).sort_values(["unit", "rank"], kind="stable", ignore_index=True)
