"""``openclip:NAME`` dissectors (and their image towers as targets).

Weights come from a local file (``?weights=PATH``, a full open_clip state
dict), from the hub for online users (``?pretrained=TAG``), or, only when the
user says so with ``?random_init=1``, from random initialisation (labels are
then meaningless; useful for smoke tests and null baselines).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from mammodissect.errors import MammodissectError
from mammodissect.models.base import Target, TorchDissector
from mammodissect.models.preprocess import ImagePreprocess
from mammodissect.models.registry import register, suggest
from mammodissect.models.spec import ModelSpec
from mammodissect.models.weights import load_weights

__all__ = ["OpenClipDissector"]

log = logging.getLogger(__name__)


class OpenClipDissector(TorchDissector):
    """An open_clip model as a dissector: L2-normalised image and text embeddings."""

    model: Any  # an open_clip CLIP: a torch module with visual, encode_image, encode_text

    def __init__(self, model: Any, tokenizer: Any, spec: ModelSpec, source: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_module = model.visual
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", getattr(model.visual, "image_size", 224))
        size = (size, size) if isinstance(size, int) else tuple(size)
        self.preprocess = ImagePreprocess(size, tuple(cfg["mean"]), tuple(cfg["std"]))
        self.spec = spec.public()
        self.identity = spec.identity()
        self.info = {"architecture": f"open_clip {spec.name}", "weights": source}

    def _embed_images(self, batch: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(batch).float(), dim=-1)

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    @property
    def text_limit(self) -> int | None:  # type: ignore[override]
        """open_clip's context length (77 for CLIP's BPE tokenizer)."""
        return getattr(self.tokenizer, "context_length", None)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per string with start and end tokens, for BPE tokenizers that can count
        (``encode``); empty for others."""
        encode = getattr(self.tokenizer, "encode", None)
        if not callable(encode):
            return []
        return [len(encode(text)) + 2 for text in texts]


def _build(spec: ModelSpec) -> OpenClipDissector:
    import open_clip

    if spec.name not in open_clip.list_models():
        raise MammodissectError(
            f"open_clip has no model {spec.name!r}{suggest(spec.name, open_clip.list_models())}"
        )
    weights = spec.path("weights")
    tag = spec.options.get("pretrained")
    random_init = spec.flag("random_init")
    if weights is None and not tag and not random_init:
        raise MammodissectError(
            f"dissector {spec.public()!r} has no weights: give ?weights=PATH (a local open_clip "
            "checkpoint), ?pretrained=TAG when online, "
            "or ?random_init=1 to accept meaningless labels"
        )
    try:
        model = open_clip.create_model(spec.name, pretrained=tag or None)
        tokenizer = open_clip.get_tokenizer(spec.name)
    except Exception as err:
        raise MammodissectError(
            f"cannot build {spec.public()!r} ({type(err).__name__}: {err}); "
            "hub weights and hub tokenizers need a network: use ?weights=PATH offline"
        ) from err
    if weights is not None:
        load_weights(model, weights, what=spec.public())
        source = f"file {weights.name}"
    elif tag:
        source = f"hub ({tag})"
    else:
        log.warning(
            "%s uses RANDOM weights (random_init=1): its labels mean nothing", spec.public()
        )
        source = "random initialisation"
    return OpenClipDissector(model, tokenizer, spec, source)


@register("openclip", "dissector")
def load_openclip_dissector(spec: ModelSpec) -> OpenClipDissector:
    """Build ``openclip:NAME?weights=PATH`` (or ``pretrained=TAG``, or ``random_init=1``)."""
    return _build(spec)


@register("openclip", "target")
def load_openclip_target(spec: ModelSpec) -> Target:
    """The image tower of ``openclip:NAME`` as a target; layer names are relative to it."""
    return _build(spec).as_target()
