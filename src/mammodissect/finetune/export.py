"""Writing the best epoch's classifier in the layout its base calls for, with what restores the
preprocessing it was trained with.

Mammo-CLIP bases give ``classifier.pth`` (``mammoclip-classifier:PATH``; the recipe's size,
mean and std go into its configuration, as in the released classifiers); every other base
gives ``classifier.safetensors`` + ``classifier.json`` (``classifier:PATH``; the recipe and
size go into the sidecar). What a loader cannot restore becomes ``mammodissect run`` flags.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.finetune.outputs import RunFiles, jsonable
from mammodissect.models.base import Preprocess
from mammodissect.models.classifier import EncoderClassifier, save_classifier
from mammodissect.models.preprocess import MAMMOCLIP_SIZE, MammoClipPreprocess
from mammodissect.models.recipes import configure
from mammodissect.models.spec import parse_spec
from mammodissect.probe.tasks import TaskLabels

__all__ = ["MAMMOCLIP_BASES", "Exporter", "public_recipe", "target_spec"]

log = logging.getLogger(__name__)

#: Base schemes whose encoder is Mammo-CLIP's EfficientNet: the classifier is written as
#: ``classifier.pth`` in Mammo-CLIP's downstream layout.
MAMMOCLIP_BASES = frozenset({"mammoclip", "mammoclip-classifier"})
#: Validation values a checkpoint records (``val_`` dropped).
_RECORDED = ("auroc", "accuracy", "loss", "macro_auroc")


def public_recipe(text: str | None) -> str | None:
    """A ``--preprocess`` value safe to write (a python: recipe's file by its name only)."""
    if not text:
        return None
    return parse_spec(text).public() if text.startswith("python:") else text


def target_spec(out: str | os.PathLike[str], metrics: dict[str, Any]) -> str:
    """The ``--target`` spec of a run's classifier (with the folder as given)."""
    scheme = "mammoclip-classifier" if metrics["checkpoint"].endswith(".pth") else "classifier"
    return f"{scheme}:{Path(out) / metrics['checkpoint']}"


@dataclass
class Exporter:
    """Writes the classifier of the best epoch so far (call it with the model and the
    epoch's entry).

    Attributes
    ----------
    files:
        The run directory.
    base:
        The base spec in public form.
    scheme:
        The base spec's scheme.
    labels:
        The task's labels (task, kind, classes).
    encoder:
        How the encoder was taken (:func:`~mammodissect.models.classifier.build_classifier`).
    trained:
        The preprocessing the classifier was trained with.
    default:
        The base's own preprocessing (before ``recipe`` and ``size``).
    recipe, size:
        The ``preprocess`` and ``image_size`` overrides, as given.
    rebuilt:
        The base's preprocessing as ``classifier:PATH`` rebuilds it, without its weights (None
        for a Mammo-CLIP base, whose configuration holds the size). It differs from
        ``default`` where the weights carry their own input size (phantom-clip weights
        trained at another size).
    variant:
        The EfficientNet variant of a Mammo-CLIP base.
    """

    files: RunFiles
    base: str
    scheme: str
    labels: TaskLabels
    encoder: dict[str, Any]
    trained: Preprocess
    default: Preprocess
    recipe: str | None
    size: tuple[int, int] | None
    rebuilt: Preprocess | None = None
    variant: str = "efficientnet"

    @property
    def mammoclip(self) -> bool:
        """Whether the classifier takes Mammo-CLIP's downstream layout."""
        return self.scheme in MAMMOCLIP_BASES

    @property
    def checkpoint(self) -> str:
        """The classifier's file name."""
        return "classifier.pth" if self.mammoclip else "classifier.safetensors"

    def _reloadable(self) -> str | None:
        """The recipe a loader can apply again (None when it names a file by its path)."""
        public = public_recipe(self.recipe)
        return public if public == self.recipe else None

    def recorded_size(self) -> tuple[int, int] | None:
        """The ``image_size`` the sidecar records: the override as given or, without one, the
        trained size where the loader's rebuild of the base would resize to another."""
        if self.size is not None or self.rebuilt is None:
            return self.size
        trained = getattr(self.trained, "size", None)
        try:
            restored = configure(self.rebuilt, self._reloadable(), None)
        except MammodissectError:
            return None
        if trained is None or getattr(restored, "size", None) == trained:
            return None
        return int(trained[0]), int(trained[1])

    def _mammoclip_config(self) -> dict[str, Any]:
        source = self.trained if isinstance(self.trained, MammoClipPreprocess) else self.default
        mean = getattr(source, "mean", (0.0,))
        std = getattr(source, "std", (1.0,))
        size = getattr(source, "size", MAMMOCLIP_SIZE)
        return {
            "base": {
                "mean": float(mean[0]),
                "std": float(std[0]),
                "image_size_h": int(size[0]),
                "image_size_w": int(size[1]),
            },
            "model": {"image_encoder": {"name": self.variant}},
        }

    def run_flags(self) -> str:
        """The ``mammodissect run`` flags that give the loaded classifier the preprocessing it
        was trained with ("" when its loader restores it by itself)."""
        if not self.mammoclip:
            reloadable = self.recipe is None or self._reloadable() is not None
            return "" if reloadable else f"--preprocess '{public_recipe(self.recipe)}'"
        config = self._mammoclip_config()["base"]
        restored = MammoClipPreprocess(
            (config["image_size_h"], config["image_size_w"]),
            mean=(config["mean"],),
            std=(config["std"],),
        )
        if restored == self.trained:
            return ""
        flags = [f"--preprocess '{public_recipe(self.recipe)}'"] if self.recipe else []
        if self.size is not None:
            flags.append(f"--image-size {self.size[0]}x{self.size[1]}")
        try:
            exact = configure(restored, self.recipe, self.size) == self.trained
        except MammodissectError:
            exact = False
        if not exact:
            log.warning(
                "the preprocessing this classifier was trained with cannot be restored by "
                "mammoclip-classifier:PATH or by flags; give mammodissect run the same recipe"
            )
        return " ".join(flags)

    def __call__(self, model: nn.Module, entry: dict[str, Any]) -> None:
        """Write ``model`` as the classifier of epoch ``entry["epoch"]``."""
        values = {
            name: entry[f"val_{name}"] for name in _RECORDED if entry.get(f"val_{name}") is not None
        }
        if self.mammoclip:
            self.files.write_mammoclip_classifier(
                model,
                epoch=entry["epoch"],
                metrics=values,
                config=self._mammoclip_config(),
                facts={"task": self.labels.task, "classes": list(self.labels.classes)},
            )
            return
        sidecar = {
            "base": self.base,
            "encoder": self.encoder["encoder"],
            "encoder_head": self.encoder["encoder_head"],
            "task": self.labels.task,
            "kind": self.labels.kind,
            "classes": self.labels.classes,
            "preprocess": self._reloadable(),
            "image_size": list(size) if (size := self.recorded_size()) else None,
            "epoch": entry["epoch"],
            "metrics": values,
        }
        # fit() trains what finetune() built: an EncoderClassifier
        save_classifier(cast(EncoderClassifier, model), self.files.safetensors, jsonable(sidecar))
