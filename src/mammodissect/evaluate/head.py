"""The classifier-head check: do a fine-tuned classifier's output units get their classes?

CLIP-Dissect's final-layer test labels the output units of an ImageNet classifier, whose true
concepts are their class names. Its mammography counterpart: the head of a C variant (a
classifier fine-tuned for density, mass, calcification or BI-RADS; the layer
``classifier.classification_head`` of ``classifier:`` and ``mammoclip-classifier:`` targets).
Unit ``i`` of a multi-class head is class ``i``; the one unit of a binary head is the positive
class. Each class stands for a concept anchor and its sub-category or broad category
(:mod:`mammodissect.evaluate.truth`). ``evaluate`` scores the head's units among the units of
the run's last layer below the head (soft-WPMI's concept prior is a mean over a layer's units:
over a one-unit head every concept would score the same). Per head unit, from its full score
row:

- ``label``/``score``: its rank-1 concept;
- ``truth_rank``: the rank of the class's anchor among all concepts (1 = best);
- ``class_rank``: the best rank of any concept naming the class;
- ``top1_match``: the label is the anchor; ``top1_in_class``: the label names the class;
  ``top5_in_class``: ``class_rank`` is at most 5;
- ``cosine``: the label and the anchor in all-MiniLM-L6-v2 space.

The task and the classes come from the target (run.json's ``target.info``: ``classifier:``
targets written by ``mammodissect finetune`` carry them) or are given (``head_task`` and
``head_classes``; Mammo-CLIP's released classifiers carry only a class count).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammodissect.errors import MammodissectError
from mammodissect.evaluate.agreement import concept_ranks, minilm_cosines
from mammodissect.evaluate.source import RunSource
from mammodissect.evaluate.truth import ClassTruth, task_truths
from mammodissect.models.classifier import HEAD

__all__ = [
    "HEAD_COLUMNS",
    "HeadTask",
    "head_check",
    "head_context",
    "head_scores",
    "head_summary",
    "head_task",
]

HEAD_COLUMNS = [
    "layer",
    "unit",
    "class",
    "truth",
    "label",
    "score",
    "truth_rank",
    "class_rank",
    "top1_match",
    "top1_in_class",
    "top5_in_class",
    "cosine",
]
#: The classes of the density task when only a count of four is known.
_DENSITY_CLASSES = ("A", "B", "C", "D")


@dataclass(frozen=True)
class HeadTask:
    """What a classifier head predicts.

    Attributes
    ----------
    task:
        ``density``, ``birads``, ``mass``, ``calcification`` or a label column.
    kind:
        ``binary`` (one unit, the positive class) or ``multiclass`` (one unit per class).
    classes:
        Class names in unit order (binary: negative, positive).
    layer:
        The head's layer name.
    """

    task: str
    kind: str
    classes: tuple[str, ...]
    layer: str = HEAD

    @property
    def unit_classes(self) -> list[str]:
        """The class of each head unit, in unit order."""
        return [self.classes[-1]] if self.kind == "binary" else list(self.classes)


def head_task(
    target_info: Mapping[str, Any], task: str | None = None, classes: Sequence[str] | None = None
) -> HeadTask | None:
    """The head's task from the target's facts (run.json ``target.info``), ``task`` and
    ``classes`` replacing them; None when the target is not a classifier and no task is given.

    Raises
    ------
    MammodissectError
        When a task is known but its classes are not (pass them).

    Examples
    --------
    >>> head_task({"task": "mass", "kind": "binary", "classes": ["no", "yes"]}).unit_classes
    ['yes']
    >>> head_task({"classes": 4}, task="density").classes
    ('A', 'B', 'C', 'D')
    """
    name = task or target_info.get("task")
    if not name:
        return None
    known = target_info.get("classes")
    names = list(classes) if classes else (known if isinstance(known, list) else None)
    count = known if isinstance(known, int) else None
    if names is None and name == "density" and count in (None, 4):
        names = list(_DENSITY_CLASSES)
    if names is None and count == 1:
        names = ["no", "yes"]
    if not names:
        raise MammodissectError(
            f"the head's classes for task {name!r} are unknown; pass them in unit order "
            "(--head-classes A,B,C,D, or no,yes for a one-unit binary head)"
        )
    kind = str(target_info.get("kind") or ("binary" if len(names) == 2 else "multiclass"))
    if count == 1:
        kind = "binary"
    return HeadTask(str(name), kind, tuple(str(n) for n in names))


def head_context(source: RunSource, head: str, notes: list[str]) -> np.ndarray:
    """The units (rows x K) the head's units are scored among: the run's last layer other
    than the head.

    soft-WPMI and WPMI weigh a concept by its mean over the layer's units; over a head of one
    unit (a binary task) every concept would score the same, and over four nearly so. Scored
    among the units of the layer below, as CLIP-Dissect scored 1,000 ImageNet outputs
    together, the head's units get a concept prior from a real population.
    """
    others = [layer for layer in source.layers if layer != head]
    if not others:
        notes.append(f"the run recorded only the head {head!r}: its units are scored alone")
        return np.zeros((len(source.rows), 0), dtype=np.float32)
    return source.activations(others[-1])


def head_scores(
    similarity: Callable[..., torch.Tensor],
    cosines: torch.Tensor,
    context: np.ndarray,
    outputs: np.ndarray,
    params: Mapping[str, Any],
) -> torch.Tensor:
    """(head units, concepts) scores of the head's ``outputs`` (rows x head units), scored
    together with the ``context`` units (rows x K, the layer below) and kept for the head's
    units alone: a concept prior over one or a few head units would be degenerate."""
    together = torch.from_numpy(np.concatenate([context, outputs], axis=1))
    return similarity(cosines, together, **params)[context.shape[1] :]


def head_check(
    scores: torch.Tensor, concepts: Sequence[str], head: HeadTask, frame: pd.DataFrame
) -> pd.DataFrame:
    """``head_check.csv``'s rows: one per head unit (see the module docstring).

    Parameters
    ----------
    scores:
        (head units, concepts) the run's similarity scores of the head layer.
    concepts:
        The concept strings, in score column order.
    head:
        The head's task and classes.
    frame:
        The concept set with categories (:meth:`~mammodissect.concepts.ConceptSet.to_frame`).

    Raises
    ------
    MammodissectError
        When the head has another number of units than the task has classes.
    """
    unit_classes = head.unit_classes
    if scores.shape[0] != len(unit_classes):
        raise MammodissectError(
            f"the head {head.layer!r} has {scores.shape[0]} units but task {head.task!r} "
            f"({head.kind}) has {len(unit_classes)}: {', '.join(unit_classes)}; pass the "
            "classes in unit order (--head-classes)"
        )
    values = scores.float().cpu().numpy()
    order, ranks = concept_ranks(scores)
    truths = task_truths(head.task, unit_classes, frame)
    index = {c: i for i, c in enumerate(concepts)}
    rows = []
    for unit, (name, truth) in enumerate(zip(unit_classes, truths, strict=True)):
        label = concepts[order[unit, 0]]
        rows.append(
            {
                "layer": head.layer,
                "unit": unit,
                "class": name,
                "label": label,
                "score": float(values[unit, order[unit, 0]]),
                **_ranks(truth, ranks[unit], index, label),
            }
        )
    table = pd.DataFrame(rows, columns=HEAD_COLUMNS)
    known = table["truth"].notna()
    if known.any():
        table.loc[known, "cosine"] = minilm_cosines(
            list(table.loc[known, "label"]), list(table.loc[known, "truth"])
        )
    return table


def _ranks(
    truth: ClassTruth | None, ranks: np.ndarray, index: Mapping[str, int], label: str
) -> dict[str, Any]:
    if truth is None:
        return {"truth": None}
    class_rank = min(int(ranks[index[c]]) for c in truth.members if c in index)
    return {
        "truth": truth.anchor,
        "truth_rank": int(ranks[index[truth.anchor]]),
        "class_rank": class_rank,
        "top1_match": label == truth.anchor,
        "top1_in_class": label in truth.members,
        "top5_in_class": class_rank <= 5,
    }


def head_summary(table: pd.DataFrame) -> dict[str, Any]:
    """Rates over the head units with a known truth (evaluation.json's ``head_check``)."""
    known = table[table["truth"].notna()]
    rate = {
        column: (float(known[column].astype(float).mean()) if len(known) else None)
        for column in ("top1_match", "top1_in_class", "top5_in_class", "cosine")
    }
    return {
        "units": len(table),
        "units_with_truth": len(known),
        **rate,
        "median_truth_rank": float(known["truth_rank"].median()) if len(known) else None,
    }
