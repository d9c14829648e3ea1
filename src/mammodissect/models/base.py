"""What a loaded model is to mammodissect: a :class:`Target` or a :class:`Dissector`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from mammodissect.errors import MammodissectError

__all__ = [
    "CacheablePreprocess",
    "Dissector",
    "Preprocess",
    "ResizablePreprocess",
    "StagedPreprocess",
    "Target",
    "TorchDissector",
    "describe_preprocess",
]


class Preprocess(Protocol):
    """A model's preprocessing: a callable from an (H, W) float image array to its
    (channels, H', W') input tensor. A plain function qualifies; the built-in recipes
    (:mod:`mammodissect.models.preprocess`) also have the stages of the protocols below."""

    def __call__(self, image: np.ndarray, /) -> torch.Tensor: ...


@runtime_checkable
class StagedPreprocess(Preprocess, Protocol):
    """A preprocessing in two stages: ``prepare`` (the costly part, e.g. crop and resize:
    an array and its geometry, or None when unknown) and ``finish`` (normalisation to the
    tensor). The image loader runs them apart, so that prepared arrays can be cached and
    noise added between them; a plain callable runs whole."""

    def prepare(self, image: np.ndarray, /) -> tuple[np.ndarray, Any]: ...

    def finish(self, prepared: np.ndarray, /) -> torch.Tensor: ...


@runtime_checkable
class CacheablePreprocess(StagedPreprocess, Protocol):
    """A staged preprocessing that says what ``prepare`` depends on, the key of the
    prepared-image cache."""

    def prepare_key(self) -> dict[str, Any]: ...


@runtime_checkable
class ResizablePreprocess(Preprocess, Protocol):
    """A preprocessing that can be made at another input size (``--image-size``)."""

    def with_size(self, size: tuple[int, int], /) -> Preprocess: ...


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
    shares one forward pass), ``spec``, ``identity``, ``info`` and ``to(device)``;
    ``text_limit`` and ``count_tokens(texts)`` let a run warn about concepts the
    text tower cuts short.
    """

    preprocess: Preprocess

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        """Embed a preprocessed image batch."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed concept strings."""
        ...


class TorchDissector:
    """What dissectors built on one torch model share: moving to a device, embedding under
    inference mode (texts in batches), and the image tower as a target.

    Subclasses set ``model``, ``image_module``, ``preprocess``, ``spec``, ``identity`` and
    ``info``, and implement :meth:`_embed_images` and :meth:`_embed_texts`.
    """

    text_batch = 64
    #: Tokens the text tower reads (special tokens included); longer strings are cut to it.
    #: None when the dissector has no fixed limit or cannot count tokens.
    text_limit: int | None = None
    model: nn.Module
    image_module: nn.Module
    preprocess: Preprocess
    spec: str
    identity: dict[str, Any]
    info: dict[str, Any]

    @property
    def device(self) -> torch.device:
        """Where the model's parameters live."""
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> TorchDissector:
        """Move the model to ``device``."""
        self.model.to(device)
        return self

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, D) unit-norm image embeddings of a preprocessed batch."""
        return self._embed_images(batch.to(self.device)).float()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(M, D) unit-norm embeddings of the raw strings, ``text_batch`` at a time."""
        texts = list(texts)
        return torch.cat([
            self._embed_texts(texts[start : start + self.text_batch]).float()
            for start in range(0, len(texts), self.text_batch)
        ])  # fmt: skip

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each string takes before any cut (special tokens included), to
        compare with :attr:`text_limit`; empty when this dissector cannot count."""
        return []

    def as_target(self) -> Target:
        """The image tower as a target sharing this model (one forward gives both)."""
        return Target(self.image_module, self.preprocess, self.spec, self.identity, self.info)

    def _embed_images(self, batch: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError


def bind_probe(dissector: Any, probe: Any) -> None:
    """Give the probe to a dissector that scores probe rows rather than pixels (one with
    ``bind_probe``, such as the annotation dissector); others need nothing.

    Raises
    ------
    MammodissectError
        When such a dissector gets no probe.
    """
    bind = getattr(dissector, "bind_probe", None)
    if bind is None:
        return
    if probe is None:
        raise MammodissectError(
            f"dissector {getattr(dissector, 'spec', '')!r} scores the probe's own annotations; "
            "give the run's probe (--probe)"
        )
    bind(probe)


def describe_preprocess(preprocess: Preprocess) -> dict[str, Any]:
    """A JSON-able description of a preprocessing callable (its ``describe()`` if it has one)."""
    describe = getattr(preprocess, "describe", None)
    if callable(describe):
        return describe()
    return {"name": getattr(preprocess, "__qualname__", type(preprocess).__qualname__)}
