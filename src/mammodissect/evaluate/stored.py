"""The truth an evaluation measured, kept in the run directory for re-scoring.

``evaluate`` computes everything that needs the probe or a forward pass once: each layer's IoU
with every concept's masks, the image-level concept truth, the planted layer and the
classifier head's outputs. ``evaluation_truth.npz`` keeps them (numbers and concept names, no
paths, no image ids), so that ``compare_similarities`` can label every unit, planted unit and
head unit again with another similarity function and score it against the same truth without
touching the probe.

The file holds ``meta`` (JSON text: concept lists, equivalence classes, cut-offs, planted
concepts and settings, the head's layer, task and classes) and arrays ``iou/LAYER``,
``present`` (image-level truth, rows x concepts), ``planted`` (rows x planted units) and
``head`` (rows x head units).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mammodissect.errors import MammodissectError
from mammodissect.evaluate.fair import ConceptTruth, FairTruth
from mammodissect.evaluate.planted import PlantedLayer
from mammodissect.rundir import EVALUATION_TRUTH_FILE

__all__ = ["StoredTruth"]


@dataclass
class StoredTruth:
    """Everything an evaluation compares labels with, per run.

    Attributes
    ----------
    mask_concepts:
        Column order of the IoU matrices.
    iou:
        Layer -> (K, mask concepts) IoU.
    mask_classes:
        Concepts with the same masks.
    image:
        The image-level concept truth, or None.
    iou_threshold, auroc_threshold:
        The cut-offs the evaluation used.
    planted:
        The planted layer, or None.
    head:
        ``{"layer", "task", "classes"}`` of the classifier head checked, or None.
    head_outputs:
        (rows, head units) its outputs, or None.
    """

    mask_concepts: list[str] = field(default_factory=list)
    iou: dict[str, np.ndarray] = field(default_factory=dict)
    mask_classes: list[list[str]] = field(default_factory=list)
    image: ConceptTruth | None = None
    iou_threshold: float = 0.04
    auroc_threshold: float = 0.75
    planted: PlantedLayer | None = None
    head: dict[str, Any] | None = None
    head_outputs: np.ndarray | None = None

    def layer(self, layer: str, activations: np.ndarray) -> FairTruth:
        """The fair measure's truth for ``layer`` with its units' ``activations``."""
        return FairTruth(
            self.mask_concepts, self.iou.get(layer), self.mask_classes, self.iou_threshold,
            self.image, auroc_threshold=self.auroc_threshold,
        ).with_activations(activations)  # fmt: skip

    def save(self, run_dir: Path) -> Path:
        """Write ``evaluation_truth.npz`` into ``run_dir``."""
        meta = {
            "mask_concepts": self.mask_concepts,
            "mask_classes": self.mask_classes,
            "layers": list(self.iou),
            "iou_threshold": self.iou_threshold,
            "auroc_threshold": self.auroc_threshold,
            "image_concepts": self.image.concepts if self.image is not None else None,
            "image_classes": self.image.classes if self.image is not None else [],
            "planted": None
            if self.planted is None
            else {
                "concepts": self.planted.concepts,
                "images": self.planted.images,
                "settings": self.planted.settings,
            },
            "head": self.head,
        }
        arrays: dict[str, Any] = {f"iou/{layer}": matrix for layer, matrix in self.iou.items()}
        if self.image is not None:
            arrays["present"] = self.image.present
        if self.planted is not None:
            arrays["planted"] = self.planted.activations
        if self.head_outputs is not None:
            arrays["head"] = self.head_outputs
        path = run_dir / EVALUATION_TRUTH_FILE
        np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load(cls, run_dir: Path) -> StoredTruth:
        """Read ``evaluation_truth.npz`` from ``run_dir``.

        Raises
        ------
        MammodissectError
            When it is missing or unreadable (rerun ``mammodissect evaluate``).
        """
        path = run_dir / EVALUATION_TRUTH_FILE
        fix = f"rerun `mammodissect evaluate {run_dir.name} --probe PROBE`"
        if not path.is_file():
            raise MammodissectError(f"{run_dir.name}/{EVALUATION_TRUTH_FILE} is missing; {fix}")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {k: data[k] for k in data.files if k != "meta"}
        except (OSError, ValueError, KeyError) as err:
            raise MammodissectError(
                f"{run_dir.name}/{EVALUATION_TRUTH_FILE} is unreadable ({err}); {fix}"
            ) from None
        image = None
        if meta["image_concepts"] is not None:
            image = ConceptTruth(meta["image_concepts"], arrays["present"], meta["image_classes"])
        planted = None
        if meta["planted"] is not None:
            planted = PlantedLayer(
                concepts=meta["planted"]["concepts"], images=meta["planted"]["images"],
                activations=arrays["planted"], settings=meta["planted"]["settings"],
            )  # fmt: skip
        return cls(
            mask_concepts=meta["mask_concepts"],
            iou={layer: arrays[f"iou/{layer}"] for layer in meta["layers"]},
            mask_classes=meta["mask_classes"],
            image=image,
            iou_threshold=meta["iou_threshold"],
            auroc_threshold=meta["auroc_threshold"],
            planted=planted,
            head=meta["head"],
            head_outputs=arrays.get("head"),
        )
