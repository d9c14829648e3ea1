"""Grounded truth from image-level labels: AUROC and AUPRC of pooled activations.

Density and BI-RADS are labels of a whole image, with no region to intersect a map with. For
each class of such a label (``density=C``, ``birads=4``; read with
:func:`mammodissect.probe.task_labels` from a probe's ``density`` and ``birads`` columns) and
every unit, the unit's pooled activation (the very values the run scored) ranks the probe
images; the class's images against the other labelled images give

- ``auroc``: the area under the ROC curve (ties count one half), and
- ``auprc``: average precision (the area under the step-wise precision-recall curve),

only in the direction of a detector (a unit that fires *less* on dense breasts is not a
density detector; its AUROC is below 0.5). A unit's image-grounded class is its best-AUROC
class when that AUROC is at least a threshold (default 0.75), else none. Each class stands
for the concepts of its sub-category (:mod:`mammodissect.evaluate.truth`): the unit's label
agrees when it is one of them (``image_top1_match``) or one of them is among its first five
concepts (``image_top5_match``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mammodissect.errors import MammodissectError
from mammodissect.evaluate.truth import ClassTruth, class_truth
from mammodissect.metrics import auroc_columns, average_precision_columns
from mammodissect.probe import Probe, task_labels

__all__ = [
    "IMAGE_COLUMNS",
    "IMAGE_TASKS",
    "ImageLabels",
    "image_grounding",
    "image_labels",
    "unit_columns",
]

log = logging.getLogger(__name__)

#: The image-level tasks read from a probe's labels.
IMAGE_TASKS: tuple[str, ...] = ("density", "birads")
#: Per-unit columns of ``evaluation.csv`` this module fills.
IMAGE_COLUMNS: tuple[str, ...] = (
    "image_class",
    "image_truth",
    "auroc",
    "auprc",
    "image_top1_match",
    "image_top5_match",
)
#: Least images of a class (and of the rest) for it to be scored.
MIN_IMAGES = 3


@dataclass
class ImageLabels:
    """The classes of a probe's image-level labels, over a run's rows.

    Attributes
    ----------
    truths:
        One per class, in column order.
    positive:
        (rows, classes) the image has the class.
    labelled:
        (rows, classes) the image has a label for the class's task.
    notes:
        Tasks or classes left out, and why.
    """

    truths: list[ClassTruth]
    positive: np.ndarray
    labelled: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def titles(self) -> list[str]:
        """``task=class`` per class column."""
        return [t.title for t in self.truths]


def image_labels(
    probe: Probe, rows: Sequence[int], frame: pd.DataFrame, tasks: Sequence[str] = IMAGE_TASKS
) -> ImageLabels | None:
    """The image-level classes of ``tasks`` that the probe labels and the concept set names.

    Parameters
    ----------
    probe, rows:
        The run's probe and the rows it used (in the caches' order).
    frame:
        The run's concept set (:meth:`mammodissect.concepts.ConceptSet.to_frame`).
    tasks:
        Label tasks to read (a task the probe lacks is skipped).

    Returns
    -------
    ImageLabels or None
        None when no class is left (the notes are then logged).
    """
    ids = [probe.items[r].image_id for r in rows]
    truths: list[ClassTruth] = []
    columns: list[tuple[np.ndarray, np.ndarray]] = []
    notes: list[str] = []
    present = set(probe.labels.columns) if probe.labels is not None else set()
    for task in tasks:
        if task not in present:
            continue
        try:
            labels = task_labels(probe, task)
        except MammodissectError as err:
            notes.append(f"image labels {task!r} not used: {err}")
            continue
        index = labels.targets.reindex(ids)
        labelled = index.notna().to_numpy()
        for number, name in enumerate(labels.classes):
            positive = (index == number).to_numpy()
            truth = class_truth(task, name, frame)
            if truth is None:
                notes.append(f"{task}={name}: no concept of the run's set names it; not scored")
            elif min(positive.sum(), (labelled & ~positive).sum()) < MIN_IMAGES:
                notes.append(f"{task}={name}: fewer than {MIN_IMAGES} images on a side; not scored")
            else:
                truths.append(truth)
                columns.append((positive, labelled))
    if not truths:
        for note in notes:
            log.info("%s", note)
        return None
    positive = np.stack([p for p, _ in columns], axis=1)
    labelled = np.stack([m for _, m in columns], axis=1)
    return ImageLabels(truths, positive, labelled, notes)


def image_grounding(activations: np.ndarray, labels: ImageLabels) -> tuple[np.ndarray, np.ndarray]:
    """(K, classes) AUROC and AUPRC of every unit's pooled activation (``activations``: rows
    x K, the same rows as ``labels``) for every class, over the images labelled for its task."""
    activations = np.asarray(activations, dtype=np.float64)
    units, classes = activations.shape[1], len(labels.truths)
    auroc = np.full((units, classes), np.nan)
    auprc = np.full((units, classes), np.nan)
    for c in range(classes):
        keep = labels.labelled[:, c]
        scores, truth = activations[keep], labels.positive[keep, c]
        auroc[:, c] = auroc_columns(scores, truth)
        auprc[:, c] = average_precision_columns(scores, truth)
    return auroc, auprc


def unit_columns(
    auroc: np.ndarray,
    auprc: np.ndarray,
    labels: ImageLabels,
    ranked: Sequence[Sequence[str]],
    threshold: float = 0.75,
) -> pd.DataFrame:
    """Per unit, :data:`IMAGE_COLUMNS`: its best-AUROC class when at least ``threshold`` (else
    empty) and whether its labels (``ranked``: concepts by rank) name that class."""
    rows = []
    for k, concepts in enumerate(ranked):
        scores = np.where(np.isnan(auroc[k]), -np.inf, auroc[k])
        best = int(np.argmax(scores))
        if scores[best] < threshold:
            rows.append(dict.fromkeys(IMAGE_COLUMNS))
            continue
        truth = labels.truths[best]
        rows.append(
            {
                "image_class": truth.title,
                "image_truth": truth.anchor,
                "auroc": float(auroc[k, best]),
                "auprc": float(auprc[k, best]),
                "image_top1_match": bool(concepts) and concepts[0] in truth.members,
                "image_top5_match": any(c in truth.members for c in list(concepts)[:5]),
            }
        )
    return pd.DataFrame(rows, columns=list(IMAGE_COLUMNS))
