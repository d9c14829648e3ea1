"""Scores to unit labels: each unit's top concepts and top images, as tidy tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammodissect.concepts import ConceptSet
from mammodissect.models.preprocess import Geometry
from mammodissect.privacy import Redactor, anonymize_id, anonymize_labels
from mammodissect.probe import Probe

__all__ = [
    "NEURON_COLUMNS",
    "TOP_IMAGE_COLUMNS",
    "anonymize_id",
    "box_table",
    "image_table",
    "label_units",
    "top_image_table",
]

NEURON_COLUMNS = ["layer", "unit", "rank", "concept", "score"]
TOP_IMAGE_COLUMNS = ["layer", "unit", "rank", "image_id", "activation"]


def label_units(
    scores: torch.Tensor, concepts: ConceptSet, layer: str, top_n: int = 10
) -> pd.DataFrame:
    """Each unit's ``top_n`` concepts, best first (rank 1), from a (units x concepts) score matrix.

    Equal scores keep concept-set order (stable sort). Columns: ``layer, unit,
    rank, concept, score`` plus ``category, broad_category, control`` when the
    concept set has categories (a multi-label concept's labels joined with ``|``, as the set
    holds them: ``ConceptSet.labels`` splits them).
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


def image_table(
    probe: Probe,
    facts: dict[int, dict[str, Any]],
    skipped: dict[int, str],
    *,
    redact: Redactor | None = None,
) -> pd.DataFrame:
    """One row per probe image: id, whether it was used (or why not), view and laterality
    (the manifest's, else the file's tags), reading facts, labels and the target's geometry.

    Holds no DICOM tag other than view and laterality, and paths only relative to the probe
    root. With an anonymising ``redact`` (see :class:`~mammodissect.privacy.Redactor`): no
    relative path, pseudonyms for the ids, and labels as
    :func:`~mammodissect.privacy.anonymize_labels` leaves them.
    """
    redact = redact or Redactor(probe.root)
    anonymize = redact.anonymize
    labels = probe.labels
    if labels is not None and anonymize:
        labels = anonymize_labels(labels, redact)
    rows = []
    for row, item in enumerate(probe.items):
        info = facts.get(row, {})
        entry: dict[str, Any] = {
            "image_id": anonymize_id(item.image_id) if anonymize else item.image_id,
            "used": row not in skipped,
            "skip_reason": redact(skipped.get(row, "")),
        }
        if not anonymize:
            entry["relpath"] = item.relpath
        label = labels.iloc[row] if labels is not None else None
        for key in ("view", "laterality"):
            given = label.get(key) if label is not None else None
            entry[key] = given if isinstance(given, str) and given else info.get(key)
        entry.update({k: info.get(k) for k in ("format", "voi", "photometric", "inverted")})
        if label is not None:
            entry.update({k: v for k, v in label.items() if k not in entry})
        entry.update(info.get("geometry") or {})
        rows.append(entry)
    return pd.DataFrame(rows)


def box_table(
    probe: Probe, facts: dict[int, dict[str, Any]], *, redact: Redactor | None = None
) -> pd.DataFrame | None:
    """The probe's finding boxes in the target's input pixels (NaN where the recipe's
    geometry is unknown); None when the probe has no boxes. Anonymised as
    :func:`image_table` is."""
    if probe.boxes is None:
        return None
    rows_of = {item.image_id: row for row, item in enumerate(probe.items)}
    parts = []
    for image_id, group in probe.boxes.groupby("image_id", sort=False):
        geometry = facts.get(rows_of.get(image_id, -1), {}).get("geometry")
        mapped = group.copy()
        if geometry:
            mapped = Geometry.from_dict(geometry).map_boxes(group)
        else:
            mapped[["xmin", "ymin", "xmax", "ymax"]] = np.nan
        parts.append(mapped)
    table = pd.concat(parts, ignore_index=True) if parts else probe.boxes.iloc[:0].copy()
    if redact is not None and redact.anonymize:
        table["image_id"] = [anonymize_id(v) for v in table["image_id"]]
        table = anonymize_labels(table.set_index("image_id"), redact).reset_index()
    return table
