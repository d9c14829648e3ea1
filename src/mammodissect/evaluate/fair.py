"""A fair yardstick for hidden units: how well grounded a unit's label is, not only whether it
is the single best concept.

Exact match against a unit's best-IoU concept undercounts right answers when concepts share
pixels or images: on a phantom, a silicone implant is also a breast implant, and the one with
the higher IoU by a hair is "the" answer. Beside the exact top-1/top-5 match
(:mod:`mammodissect.evaluate.agreement`), per unit:

Mask truth (units whose best IoU is at least the cut-off, :mod:`~.grounding`)
    ``class_top1_match`` / ``class_top5_match``: the rank-1 label / one of the first five is in
    the grounded concept's *equivalence class*: the concepts whose masks coincide with its
    masks on every probe image (:meth:`mammodissect.evaluate.masks.MaskSource.classes`).
    ``label_iou``: the IoU of the label's masks with the unit's thresholded maps (0 for a label
    with no mask on the probe). ``iou_ratio``: ``label_iou`` divided by the best concept's IoU:
    1.0 when the label is as well grounded as the best concept, whatever its name.
Image-level truth (the concepts the probe's annotations show, read as the annotation
dissector reads them: :func:`mammodissect.models.annotation_models.annotation_truth`)
    Each such concept (on at least :data:`MIN_IMAGES` images and missing from as many) is a
    binary label over the run's images; the unit's pooled activations rank the images, giving
    per concept an AUROC and an average precision (AUPRC: the mean, over the concept's images,
    of the precision at that image's activation; tied activations form one threshold). The
    unit's ``concept_truth`` is its best-AUPRC concept when that concept's AUROC is at least
    the AUROC cut-off (0.75), else none; ``concept_auroc`` is that AUROC;
    ``concept_top1_match``: the rank-1 label is in ``concept_truth``'s equivalence class (the
    concepts with the same images); ``label_auprc``: the label's AUPRC (0 for a label the
    probe does not annotate: it cannot be checked, and counting it 0 makes the ratio a lower
    bound); ``auprc_ratio``: ``label_auprc`` divided by ``concept_truth``'s AUPRC.

Empty where a unit has no such truth. The classes of both kinds go into
``evaluation.json`` (``equivalence_classes``); summaries are means with percentile bootstrap
95% intervals over the units that have the truth.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mammodissect.metrics import precision_matrices
from mammodissect.models.annotation_models import annotation_truth
from mammodissect.probe import Probe
from mammodissect.probe.annotations import probe_terms

__all__ = [
    "FAIR_COLUMNS",
    "FAIR_METRICS",
    "MIN_IMAGES",
    "ConceptTruth",
    "FairTruth",
    "concept_truth",
    "equivalence_classes",
    "fair_columns",
]

#: Per-unit columns of ``evaluation.csv`` this module fills.
FAIR_COLUMNS: tuple[str, ...] = (
    "class_top1_match",
    "class_top5_match",
    "label_iou",
    "iou_ratio",
    "concept_truth",
    "concept_auroc",
    "concept_top1_match",
    "label_auprc",
    "auprc_ratio",
)
#: The fair columns summarised with bootstrap intervals (per layer, overall, per similarity).
FAIR_METRICS: tuple[str, ...] = (
    "class_top1_match",
    "class_top5_match",
    "iou_ratio",
    "concept_top1_match",
    "auprc_ratio",
)
#: Least images with a concept, and without it, for its image-level truth to be scored.
MIN_IMAGES = 3


def equivalence_classes(keys: Mapping[str, Hashable]) -> list[list[str]]:
    """Groups of two or more concepts with equal keys, in the order of ``keys``.

    Examples
    --------
    >>> equivalence_classes({"a": 1, "b": 2, "c": 1, "d": 3})
    [['a', 'c']]
    """
    groups: dict[Hashable, list[str]] = {}
    for concept, key in keys.items():
        groups.setdefault(key, []).append(concept)
    return [group for group in groups.values() if len(group) > 1]


def _members(classes: Sequence[Sequence[str]]) -> dict[str, frozenset[str]]:
    """Concept -> its class (concepts in no class are alone in theirs: absent here)."""
    return {c: frozenset(group) for group in classes for c in group}


@dataclass
class ConceptTruth:
    """Which of a run's images show each annotated concept.

    Attributes
    ----------
    concepts:
        The concepts scored, in concept-set order.
    present:
        (rows, concepts) bool.
    classes:
        Groups of concepts with the same images.
    """

    concepts: list[str]
    present: np.ndarray
    classes: list[list[str]] = field(default_factory=list)


def concept_truth(
    probe: Probe, rows: Sequence[int], concepts: Sequence[str]
) -> ConceptTruth | None:
    """The image-level truth of the probe's annotations over ``rows`` (None when no concept
    has :data:`MIN_IMAGES` images on each side, or the probe has no annotation)."""
    if not probe_terms(probe).terms:
        return None
    present, kept, _ = annotation_truth(probe, rows, concepts)
    shown = present.numpy() > 0.5
    counts = shown.sum(axis=0)
    keep = (counts >= MIN_IMAGES) & (len(rows) - counts >= MIN_IMAGES)
    if not keep.any():
        return None
    names = [c for c, k in zip(kept, keep, strict=True) if k]
    shown = np.ascontiguousarray(shown[:, keep])
    keys = {c: np.packbits(shown[:, j]).tobytes() for j, c in enumerate(names)}
    return ConceptTruth(names, shown, equivalence_classes(keys))


@dataclass
class FairTruth:
    """What the fair measure compares one layer's labels with.

    Attributes
    ----------
    mask_concepts:
        Column order of ``iou``.
    iou:
        (K, mask concepts) IoU of the units' thresholded maps with each concept's masks, or
        None without mask truth.
    mask_classes:
        Groups of concepts with the same masks.
    iou_threshold:
        Least best IoU for a unit to be grounded.
    image:
        The image-level truth, or None.
    auroc, auprc:
        (K, image concepts) per unit and concept, or None.
    auroc_threshold:
        Least AUROC of a unit's best-AUPRC concept for it to be its ``concept_truth``.
    """

    mask_concepts: list[str] = field(default_factory=list)
    iou: np.ndarray | None = None
    mask_classes: list[list[str]] = field(default_factory=list)
    iou_threshold: float = 0.04
    image: ConceptTruth | None = None
    auroc: np.ndarray | None = None
    auprc: np.ndarray | None = None
    auroc_threshold: float = 0.75

    def with_activations(self, activations: np.ndarray) -> FairTruth:
        """A copy with ``auroc``/``auprc`` of ``activations`` (rows x K, the rows of
        ``image``) against the image-level truth."""
        if self.image is None:
            return self
        auroc, auprc = precision_matrices(activations, self.image.present)
        return FairTruth(
            self.mask_concepts, self.iou, self.mask_classes, self.iou_threshold,
            self.image, auroc, auprc, self.auroc_threshold,
        )  # fmt: skip


def fair_columns(ranked: Sequence[Sequence[str]], truth: FairTruth) -> pd.DataFrame:
    """Per unit (``ranked``: its concepts by rank, rank 1 first; in the order of ``truth``'s
    rows), :data:`FAIR_COLUMNS` (see the module docstring).

    Examples
    --------
    >>> truth = FairTruth(["implant", "silicone implant", "mass"],
    ...                   np.array([[0.30, 0.30, 0.01], [0.02, 0.01, 0.2]]),
    ...                   [["implant", "silicone implant"]])
    >>> fair_columns([["silicone implant"], ["spiculated margin", "mass"]], truth)[
    ...     ["class_top1_match", "class_top5_match", "iou_ratio"]]
      class_top1_match class_top5_match iou_ratio
    0             True             True       1.0
    1            False             True       0.0
    """
    rows = [dict.fromkeys(FAIR_COLUMNS) for _ in ranked]
    if truth.iou is not None and truth.iou.shape[1]:
        _mask_part(rows, ranked, truth)
    if truth.image is not None and truth.auprc is not None and truth.auprc.shape[1]:
        _image_part(rows, ranked, truth)
    return pd.DataFrame(rows, columns=list(FAIR_COLUMNS), dtype=object)


def _mask_part(rows: list[dict], ranked: Sequence[Sequence[str]], truth: FairTruth) -> None:
    assert truth.iou is not None
    index = {c: j for j, c in reversed(list(enumerate(truth.mask_concepts)))}
    members = _members(truth.mask_classes)
    best = truth.iou.argmax(axis=1)
    for k, (row, labels) in enumerate(zip(rows, ranked, strict=True)):
        top = float(truth.iou[k, best[k]])
        if top < truth.iou_threshold or not labels:
            continue
        grounded = truth.mask_concepts[best[k]]
        same = members.get(grounded, frozenset((grounded,)))
        label = labels[0]
        label_iou = float(truth.iou[k, index[label]]) if label in index else 0.0
        row.update(
            class_top1_match=label in same,
            class_top5_match=any(c in same for c in list(labels)[:5]),
            label_iou=label_iou,
            iou_ratio=label_iou / top,
        )


def _image_part(rows: list[dict], ranked: Sequence[Sequence[str]], truth: FairTruth) -> None:
    assert truth.image is not None and truth.auprc is not None and truth.auroc is not None
    concepts = truth.image.concepts
    index = {c: j for j, c in enumerate(concepts)}
    members = _members(truth.image.classes)
    auprc = np.where(np.isnan(truth.auprc), -np.inf, truth.auprc)
    best = auprc.argmax(axis=1)
    for k, (row, labels) in enumerate(zip(rows, ranked, strict=True)):
        roc = float(truth.auroc[k, best[k]])
        if not roc >= truth.auroc_threshold or not labels:
            continue
        found = concepts[best[k]]
        label = labels[0]
        label_auprc = float(truth.auprc[k, index[label]]) if label in index else 0.0
        row.update(
            concept_truth=found,
            concept_auroc=roc,
            concept_top1_match=label in members.get(found, frozenset((found,))),
            label_auprc=label_auprc,
            auprc_ratio=label_auprc / float(auprc[k, best[k]]),
        )
