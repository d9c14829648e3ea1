"""What a loaded model is to mammodissect: a :class:`Target` or a :class:`Dissector`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

__all__ = ["Dissector", "Preprocess", "Target", "describe_preprocess"]

#: A callable from an (H, W) float image array to a (3, H', W') tensor.
Preprocess = Callable[[np.ndarray], torch.Tensor]


@dataclass
class Target:
    """A network to dissect.

    Attributes
    ----------
    module:
        The torch module whose ``named_modules()`` names the layers.
    preprocess:
        Turns an (H, W) float image array into the module's input tensor.
    spec:
        The spec it was loaded from, with paths shown by file name only.
    identity:
        What identifies the weights, for cache fingerprints.
    info:
        Facts worth recording in run.json (architecture, weights source).
    """

    module: nn.Module
    preprocess: Preprocess
    spec: str = "custom"
    identity: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Dissector(Protocol):
    """A vision-language model that embeds images and concept strings in one space.

    ``encode_images`` takes a batch already through ``preprocess`` and returns
    (B, D) L2-normalised embeddings; ``encode_texts`` returns (M, D)
    L2-normalised embeddings. Optional attributes the recorder uses when
    present: ``image_module`` (the image tower, so a target that *is* that tower
    shares one forward pass), ``spec``, ``identity``, ``info`` and ``to(device)``.
    """

    preprocess: Preprocess

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        """Embed a preprocessed image batch."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed concept strings."""
        ...


def describe_preprocess(preprocess: Preprocess) -> dict[str, Any]:
    """A JSON-able description of a preprocessing callable (its ``describe()`` if it has one)."""
    describe = getattr(preprocess, "describe", None)
    if callable(describe):
        return describe()
    return {"name": getattr(preprocess, "__qualname__", type(preprocess).__qualname__)}
