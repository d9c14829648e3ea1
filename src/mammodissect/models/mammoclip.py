"""Mammo-CLIP checkpoints: ``mammoclip:PATH`` (dissector and M target) and
``mammoclip-classifier:PATH`` (fine-tuned C targets).

Our own loader for the released files (``b5-model-best-epoch-7.tar``,
``b2-model-best-epoch-10.tar``; torch ZIP archives despite the name) and for
their converted form (``.safetensors`` + ``.json``, see :func:`convert`):

* the checkpoint is unpickled through an allow-list (:mod:`.checkpoint`), never trusted;
* the image encoder is efficientnet_pytorch's EfficientNet (B0-B7 detected from the
  weights), with its static SAME padding, under the checkpoint's own module names
  (``image_encoder._blocks.N``), loaded strictly;
* the text encoder is a BERT built from a fixed architecture whose sizes are read
  from the weights (no hub), loaded strictly; the [SEP] ("eos") hidden state is
  projected; both embeddings are L2-normalised;
* the tokenizer is WordPiece over the user's Bio_ClinicalBERT ``vocab.txt`` with
  lower-casing, as the model was trained, checked for [CLS]=101 and [SEP]=102.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.models.base import Target, TorchDissector
from mammodissect.models.checkpoint import describe_state_keys, load_checkpoint, plain
from mammodissect.models.preprocess import (
    MAMMOCLIP_MEAN,
    MAMMOCLIP_SIZE,
    MAMMOCLIP_STD,
    MammoClipPreprocess,
)
from mammodissect.models.registry import register
from mammodissect.models.spec import ModelSpec
from mammodissect.models.weights import load_state, strip_prefix, write_safetensors

__all__ = [
    "MammoClipClassifier",
    "MammoClipDissector",
    "MammoClipModel",
    "WordPieceTokenizer",
    "convert",
    "read_mammoclip",
]

log = logging.getLogger(__name__)

_TEXT_MAX_LENGTH = 256
_CLS_ID, _SEP_ID = 101, 102
_VOCAB_HELP = (
    "Mammo-CLIP's text encoder needs the Bio_ClinicalBERT WordPiece vocabulary, which the "
    "checkpoint does not contain: download vocab.txt from "
    "https://huggingface.co/emilyalsentzer/Bio_ClinicalBERT and pass ?vocab=/path/to/vocab.txt "
    "(or the folder holding it)"
)

#: (number of MBConv blocks, head channels) -> efficientnet_pytorch variant.
_EFFICIENTNETS = {
    (16, 1280): "efficientnet-b0",
    (23, 1280): "efficientnet-b1",
    (23, 1408): "efficientnet-b2",
    (26, 1536): "efficientnet-b3",
    (32, 1792): "efficientnet-b4",
    (39, 2048): "efficientnet-b5",
    (45, 2304): "efficientnet-b6",
    (55, 2560): "efficientnet-b7",
}
_BLOCK = re.compile(r"^image_encoder\._blocks\.(\d+)\.")
_LAYER = re.compile(r"^text_encoder\.text_encoder\.encoder\.layer\.(\d+)\.")
_BERT = "text_encoder.text_encoder."


def efficientnet_variant(state: dict[str, torch.Tensor], source: str) -> str:
    """The efficientnet_pytorch variant whose shape the ``image_encoder.*`` weights have."""
    head = state.get("image_encoder._conv_head.weight")
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK.match(k))}
    if head is None or not blocks:
        raise MammodissectError(
            f"{source!r} has no EfficientNet image encoder (image_encoder._conv_head, "
            f"image_encoder._blocks.N); it looks like {describe_state_keys(state)}"
        )
    key = (max(blocks) + 1, int(head.shape[0]))
    if key not in _EFFICIENTNETS:
        raise MammodissectError(
            f"{source!r}: an image encoder with {key[0]} blocks and {key[1]} head channels is "
            "not an EfficientNet B0-B7 in efficientnet_pytorch naming"
        )
    return _EFFICIENTNETS[key]


def build_image_encoder(variant: str) -> nn.Module:
    """efficientnet_pytorch's headless EfficientNet (static SAME padding for the design size)."""
    from efficientnet_pytorch import EfficientNet

    return EfficientNet.from_name(variant, include_top=False)


class Projection(nn.Module):
    """The linear projection head (``*.projection.weight/bias`` in the checkpoint)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.projection = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(x)


class TextEncoder(nn.Module):
    """A BERT encoder under the checkpoint's name (``text_encoder.text_encoder.*``)."""

    def __init__(self, config: Any):
        super().__init__()
        from transformers import BertModel

        self.text_encoder = BertModel(config, add_pooling_layer=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state


def bert_config(state: dict[str, torch.Tensor]) -> Any:
    """BERT-base's architecture (GELU, LayerNorm eps 1e-12, 2 token types, heads of 64),
    with vocabulary, width, depth and positions read from the weights."""
    from transformers import BertConfig

    words = state[f"{_BERT}embeddings.word_embeddings.weight"]
    hidden = int(words.shape[1])
    layers = {int(m.group(1)) for k in state if (m := _LAYER.match(k))}
    return BertConfig(
        vocab_size=int(words.shape[0]),
        hidden_size=hidden,
        num_hidden_layers=max(layers) + 1 if layers else 0,
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=int(state[f"{_BERT}encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(
            state[f"{_BERT}embeddings.position_embeddings.weight"].shape[0]
        ),
        type_vocab_size=int(state[f"{_BERT}embeddings.token_type_embeddings.weight"].shape[0]),
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
    )


class MammoClipModel(nn.Module):
    """Mammo-CLIP: EfficientNet image encoder + BERT text encoder, linear projections.

    ``forward(images)`` gives the L2-normalised image embeddings, so the model is
    also a target whose layers are ``image_encoder._blocks.N``. Built with
    ``with_text=False`` it holds only the image side (a target needs no BERT).
    """

    def __init__(self, state: dict[str, torch.Tensor], source: str, *, with_text: bool = True):
        super().__init__()
        self.variant = efficientnet_variant(state, source)
        self.image_encoder = build_image_encoder(self.variant)
        image_proj = _weight(state, "image_projection.projection.weight", source)
        self.image_projection = Projection(image_proj.shape[1], image_proj.shape[0])
        self.with_text = with_text
        if with_text:
            self.text_encoder = TextEncoder(bert_config(_require_text(state, source)))
            text_proj = _weight(state, "text_projection.projection.weight", source)
            self.text_projection = Projection(text_proj.shape[1], text_proj.shape[0])
            self.logit_scale = nn.Parameter(torch.zeros(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, D) unit-norm image embeddings."""
        pooled = self.image_encoder(images).flatten(1)  # global average pool of the head
        return F.normalize(self.image_projection(pooled), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(M, D) unit-norm text embeddings from the hidden state at [SEP] ("eos" pooling)."""
        hidden = self.text_encoder(input_ids, attention_mask)
        last = attention_mask.sum(-1) - 1
        eos = hidden[torch.arange(len(hidden), device=hidden.device), last]
        return F.normalize(self.text_projection(eos), dim=-1)


def _weight(state: dict[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state:
        raise MammodissectError(
            f"{source!r} lacks {key}; it looks like {describe_state_keys(state)}"
        )
    return state[key]


def _require_text(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    _weight(state, f"{_BERT}embeddings.word_embeddings.weight", source)
    return state


class WordPieceTokenizer:
    """BERT WordPiece over a ``vocab.txt``, lower-casing, [CLS] ... [SEP], right padding."""

    def __init__(self, vocab: Path, max_length: int = _TEXT_MAX_LENGTH):
        from tokenizers import BertWordPieceTokenizer

        self.vocab = vocab
        self.max_length = max_length
        self._tok = BertWordPieceTokenizer(str(vocab), lowercase=True)
        found = (self._tok.token_to_id("[CLS]"), self._tok.token_to_id("[SEP]"))
        if found != (_CLS_ID, _SEP_ID):
            raise MammodissectError(
                f"vocabulary {vocab.name!r} puts [CLS], [SEP] at ids {found}, not "
                f"({_CLS_ID}, {_SEP_ID}): it is not Bio_ClinicalBERT's. {_VOCAB_HELP}"
            )
        self._tok.enable_truncation(max_length)
        self._tok.enable_padding(pad_id=self._tok.token_to_id("[PAD]") or 0, pad_token="[PAD]")

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens per string before the cut at ``max_length`` ([CLS] and [SEP] included)."""
        self._tok.no_truncation()
        try:
            return [sum(e.attention_mask) for e in self._tok.encode_batch(list(texts))]
        finally:
            self._tok.enable_truncation(self.max_length)

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, (M, T) each."""
        encoded = self._tok.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encoded], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encoded], dtype=torch.long)
        return ids, mask


def _vocab_path(spec: ModelSpec) -> Path:
    given = spec.path("vocab")
    if given is None:
        try:  # online users (or a warm hub cache) need no option
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download("emilyalsentzer/Bio_ClinicalBERT", "vocab.txt"))
        except Exception as err:
            raise MammodissectError(f"no vocabulary given. {_VOCAB_HELP}") from err
    path = given / "vocab.txt" if given.is_dir() else given
    if not path.is_file():
        raise MammodissectError(f"folder {given.name!r} holds no vocab.txt. {_VOCAB_HELP}")
    return path


def read_mammoclip(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """State dict, plain configuration and facts (epoch, format) of a Mammo-CLIP file.

    Accepts the released ``.tar``/``.pth`` checkpoints (restricted unpickling,
    memory-mapped) and converted ``.safetensors`` files (with their ``.json``).
    """
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
        sidecar = path.with_suffix(".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        return state, meta.get("config", {}), {"format": "safetensors", **meta.get("facts", {})}
    checkpoint = load_checkpoint(path)
    model = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    if not isinstance(model, dict) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        keys = list(checkpoint) if isinstance(checkpoint, dict) else []
        looks = (
            describe_state_keys(keys)
            if keys
            and isinstance(checkpoint, dict)
            and all(isinstance(v, torch.Tensor) for v in checkpoint.values())
            else f"a {type(checkpoint).__name__} with keys {keys[:6]}"
        )
        raise MammodissectError(
            f"{path.name!r} is not a Mammo-CLIP checkpoint (no 'model' state dict); "
            f"it looks like {looks}"
        )
    facts = {"format": "torch checkpoint", "epoch": checkpoint.get("epoch")}
    for key, value in checkpoint.items():  # downstream classifiers carry metrics
        if isinstance(value, int | float) and key != "epoch":
            facts[key] = value
    state = strip_prefix(dict(model), "module.")
    return state, plain(checkpoint.get("config") or {}), facts


def _preprocess(config: dict[str, Any]) -> MammoClipPreprocess:
    base = config.get("base", {}) if isinstance(config, dict) else {}
    mean = float(base.get("mean", MAMMOCLIP_MEAN[0]))
    std = float(base.get("std", MAMMOCLIP_STD[0]))
    size = (
        int(base.get("image_size_h", MAMMOCLIP_SIZE[0])),
        int(base.get("image_size_w", MAMMOCLIP_SIZE[1])),
    )
    return MammoClipPreprocess(size, mean=(mean,), std=(std,))


def _text_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop ``embeddings.position_ids`` (a buffer some BERT versions saved) after checking it."""
    key = f"{_BERT}embeddings.position_ids"
    if key in state:
        ids = state[key].flatten()
        if not torch.equal(ids, torch.arange(len(ids), dtype=ids.dtype)):
            raise MammodissectError("the checkpoint's BERT position_ids are not 0..n-1")
        state = {k: v for k, v in state.items() if k != key}
    return state


#: Non-persistent buffers (not in any state dict) and how to rebuild them off the meta device.
_DERIVED_BUFFERS = {
    "position_ids": lambda like: torch.arange(like.shape[-1]).expand(like.shape),
    "token_type_ids": lambda like: torch.zeros(like.shape, dtype=torch.long),
}


def _adopt(model: nn.Module, state: dict[str, torch.Tensor], **report: str) -> None:
    """Load ``state`` strictly into a model built on the meta device, adopting the tensors
    (memory-mapped ones stay mapped), then rebuild the buffers no state dict holds."""
    load_state(model, state, assign=True, **report)
    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is None or buffer.device.type != "meta":
                continue
            if name not in _DERIVED_BUFFERS:
                raise MammodissectError(
                    f"cannot rebuild buffer {name!r} of {type(module).__name__}"
                )
            module.register_buffer(name, _DERIVED_BUFFERS[name](buffer), persistent=False)


def _load_model(spec: ModelSpec, *, with_text: bool) -> tuple[MammoClipModel, dict, dict]:
    path = Path(spec.name).expanduser()
    if not path.is_file():
        raise MammodissectError(f"Mammo-CLIP checkpoint {path.name!r} not found")
    state, config, facts = read_mammoclip(path)
    if not any(k.startswith("text_encoder.") for k in state):
        raise MammodissectError(
            f"{path.name!r} has no text encoder: it looks like {describe_state_keys(state)}"
        )
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = MammoClipModel(state, path.name, with_text=with_text)
    state = _text_state(state)
    if not with_text:
        state = {k: v for k, v in state.items() if k.startswith(("image_encoder.", "image_proj"))}
    _adopt(
        model,
        state,
        source=path.name,
        what=f"Mammo-CLIP ({model.variant})",
        hint="Is this a Mammo-CLIP checkpoint of the released layout?",
    )
    facts = {**facts, "image_encoder": model.variant, "checkpoint": path.name}
    return model.eval(), config, facts


class MammoClipDissector(TorchDissector):
    """A Mammo-CLIP checkpoint as the dissector (and, through :meth:`as_target`, its image
    encoder as the M target, sharing one forward pass)."""

    model: MammoClipModel

    def __init__(
        self,
        model: MammoClipModel,
        tokenizer: WordPieceTokenizer,
        spec: ModelSpec,
        preprocess: MammoClipPreprocess,
        info: dict[str, Any],
    ):
        self.model = model
        self.image_module = model
        self.tokenizer = tokenizer
        self.text_limit = tokenizer.max_length
        self.preprocess = preprocess
        self.spec = spec.public()
        self.identity = spec.identity()
        self.info = info

    def _embed_images(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)

    def _embed_texts(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenizer(texts)
        return self.model.encode_text(ids.to(self.device), mask.to(self.device))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens per string before the cut at :attr:`text_limit`."""
        return self.tokenizer.count(texts)


def _info(config: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    model_cfg = config.get("model", {}) if isinstance(config, dict) else {}
    text_cfg = model_cfg.get("text_encoder", {}) if isinstance(model_cfg, dict) else {}
    image_cfg = model_cfg.get("image_encoder", {}) if isinstance(model_cfg, dict) else {}
    info = {
        "architecture": "Mammo-CLIP",
        **facts,
        "config_image_encoder": image_cfg.get("name") if isinstance(image_cfg, dict) else None,
        "config_text_pooling": text_cfg.get("pooling") if isinstance(text_cfg, dict) else None,
    }
    return {k: v for k, v in info.items() if v is not None}


@register("mammoclip", "dissector")
def load_mammoclip_dissector(spec: ModelSpec) -> MammoClipDissector:
    """``mammoclip:PATH?vocab=VOCAB`` -> the whole model as a dissector."""
    model, config, facts = _load_model(spec, with_text=True)
    pooling = (config.get("model", {}).get("text_encoder", {}) or {}).get("pooling", "eos")
    if pooling not in ("eos", None):
        raise MammodissectError(f"text pooling {pooling!r} in the checkpoint is not supported")
    base = config.get("base", {}) if isinstance(config, dict) else {}
    tokenizer = WordPieceTokenizer(
        _vocab_path(spec), int(base.get("text_max_length", _TEXT_MAX_LENGTH))
    )
    return MammoClipDissector(model, tokenizer, spec, _preprocess(config), _info(config, facts))


@register("mammoclip", "target")
def load_mammoclip_target(spec: ModelSpec) -> Target:
    """``mammoclip:PATH`` -> the image encoder (+ projection) as the M target."""
    model, config, facts = _load_model(spec, with_text=False)
    return Target(model, _preprocess(config), spec.public(), spec.identity(), _info(config, facts))


class MammoClipClassifier(nn.Module):
    """A downstream classifier: the EfficientNet image encoder and a linear head.

    Layers: ``image_encoder._blocks.N`` and the head ``classifier.classification_head``
    (its output units are the classes).
    """

    def __init__(self, state: dict[str, torch.Tensor], source: str):
        super().__init__()
        self.variant = efficientnet_variant(state, source)
        self.image_encoder = build_image_encoder(self.variant)
        head = _weight(state, "classifier.classification_head.weight", source)
        self.classifier = nn.Module()
        self.classifier.classification_head = nn.Linear(head.shape[1], head.shape[0])
        self.n_classes = int(head.shape[0])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, classes) logits."""
        head = cast(nn.Linear, self.classifier.classification_head)
        return head(self.image_encoder(images).flatten(1))


@register("mammoclip-classifier", "target")
def load_mammoclip_classifier(spec: ModelSpec) -> Target:
    """``mammoclip-classifier:PATH`` -> a fine-tuned classifier as a C target."""
    path = Path(spec.name).expanduser()
    if not path.is_file():
        raise MammodissectError(f"classifier checkpoint {path.name!r} not found")
    state, config, facts = read_mammoclip(path)
    if any(k.startswith("text_encoder.") for k in state):
        raise MammodissectError(
            f"{path.name!r} is a Mammo-CLIP vision-language checkpoint, not a classifier; "
            "use mammoclip:PATH"
        )
    with torch.device("meta"):
        model = MammoClipClassifier(state, path.name)
    _adopt(
        model,
        state,
        source=path.name,
        what=f"a Mammo-CLIP classifier ({model.variant})",
        hint="Is this a Mammo-CLIP downstream classifier checkpoint?",
    )
    info = {
        **_info(config, facts),
        "architecture": "Mammo-CLIP classifier",
        "image_encoder": model.variant,
        "classes": model.n_classes,
    }
    return Target(model.eval(), _preprocess(config), spec.public(), spec.identity(), info)


def convert(source: Path, out: Path) -> dict[str, Any]:
    """Write a Mammo-CLIP checkpoint's weights as ``out`` (.safetensors) and its configuration
    and facts as ``out`` with suffix .json (no optimizer state, no pickle)."""
    if out.suffix != ".safetensors":
        raise MammodissectError(f"output {out.name!r} must end in .safetensors")
    state, config, facts = read_mammoclip(Path(source))
    write_safetensors({k: v.contiguous() for k, v in state.items()}, out)
    meta = {"config": config, "facts": {**facts, "converted_from": Path(source).name}}
    out.with_suffix(".json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    return {"tensors": len(state), "bytes": out.stat().st_size}
