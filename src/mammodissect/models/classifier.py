"""``classifier:PATH`` targets: an image encoder with a linear head, as ``mammodissect
finetune`` writes them for every base that is not a Mammo-CLIP checkpoint.

PATH is a ``.safetensors`` file of float32 tensors under the Mammo-CLIP downstream names
(``image_encoder.*`` and ``classifier.classification_head.{weight,bias}``) with a ``.json``
sidecar beside it: the base target spec (paths shown by file name only), how the encoder was
taken from it, the task, its classes, the preprocessing the classifier was trained with and
its validation metrics. The loader rebuilds the base architecture without weights (the file
holds every encoder tensor), takes the encoder out of it exactly as fine-tuning did
(:func:`image_encoder_of`), attaches the head and loads the state strictly. The head's output
units (the classes; one logit for a binary task) are the layer ``classifier.classification_head``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import numpy as np
import torch
from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.models.base import Preprocess, Target
from mammodissect.models.recipes import configure
from mammodissect.models.registry import load_target, register
from mammodissect.models.spec import ModelSpec, parse_spec
from mammodissect.models.weights import load_state, write_atomic, write_safetensors

__all__ = [
    "HEAD",
    "SIDECAR_FORMAT",
    "EncoderClassifier",
    "build_classifier",
    "image_encoder_of",
    "load_base",
    "public_base",
    "rebuild_classifier",
    "save_classifier",
]

log = logging.getLogger(__name__)

#: The head's module name: its output units are the classes.
HEAD = "classifier.classification_head"
#: What ``classifier.json`` declares itself as.
SIDECAR_FORMAT = "mammodissect-classifier/1"
#: Options that only say where weights come from (dropped when rebuilding the architecture).
_WEIGHT_OPTIONS = ("weights", "pretrained")


class EncoderClassifier(nn.Module):
    """An image encoder and a linear head: ``image_encoder.*`` and
    ``classifier.classification_head`` (the Mammo-CLIP downstream layout)."""

    def __init__(self, encoder: nn.Module, features: int, outputs: int):
        super().__init__()
        self.image_encoder = encoder
        self.classifier = nn.Module()
        self.classifier.classification_head = nn.Linear(features, outputs)

    @property
    def head(self) -> nn.Linear:
        """The linear head."""
        return cast(nn.Linear, self.classifier.classification_head)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, outputs) logits."""
        return self.head(self.image_encoder(images).flatten(1))


def _drop_efficientnet_top(module: nn.Module) -> bool:
    """Make an efficientnet_pytorch EfficientNet headless (its pooled features come out)."""
    params = getattr(module, "_global_params", None)
    if params is None or not hasattr(module, "_fc") or not getattr(params, "include_top", False):
        return False
    module._global_params = params._replace(include_top=False)
    del module._fc
    del module._dropout
    return True


def image_encoder_of(module: nn.Module) -> tuple[nn.Module, str | None, str]:
    """The image encoder inside a target's module, how it was found, and what was removed.

    An ``image_encoder`` attribute (Mammo-CLIP, phantom-clip) is the encoder; else a timm-like
    module loses its classifier (``reset_classifier(0)``), an efficientnet_pytorch network its
    ``_fc``; else the module itself is the encoder and its flattened output the features.
    The module may be changed in place.

    Returns
    -------
    encoder, attribute, head
        The encoder; ``"image_encoder"`` or None (the whole module); what was removed.
    """
    encoder = getattr(module, "image_encoder", None)
    if isinstance(encoder, nn.Module):
        return encoder, "image_encoder", "none"
    reset = getattr(module, "reset_classifier", None)
    if callable(reset):
        reset(0)
        return module, None, "reset_classifier(0)"
    if _drop_efficientnet_top(module):
        return module, None, "efficientnet _fc"
    return module, None, "none (module output flattened)"


def _example(preprocess: Preprocess) -> torch.Tensor:
    image = np.zeros((64, 64), dtype=np.float32)
    image[16:48, 8:40] = 1.0
    return preprocess(image)[None]


def build_classifier(target: Target, outputs: int) -> tuple[EncoderClassifier, dict[str, Any]]:
    """The target's image encoder with a new ``outputs``-unit linear head.

    The feature width comes from one forward pass of a synthetic image through the target's
    preprocessing. Returns the classifier and how the encoder was taken (for the sidecar).
    """
    encoder, attribute, head = image_encoder_of(target.module)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            features = encoder(_example(target.preprocess)).flatten(1).shape[1]
    except Exception as err:
        raise MammodissectError(
            f"cannot run the image encoder of {target.spec} on its own preprocessing "
            f"({type(err).__name__}: {err})"
        ) from err
    encoder.train(was_training)
    model = EncoderClassifier(encoder, int(features), int(outputs))
    return model, {"encoder": attribute, "encoder_head": head, "features": int(features)}


def public_base(spec: str | ModelSpec) -> str:
    """A base spec as a sidecar may hold it: every path by its file name only."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    text = parsed.public()
    scheme, _, rest = text.partition(":")
    name, sep, query = rest.partition("?")
    if scheme != "python" and ("/" in name or os.sep in name):
        name = Path(name).name
    return f"{scheme}:{name}{sep}{query}"


def _weightless(base: str) -> str:
    """The base spec without its weight source: the same architecture, random weights."""
    parsed = parse_spec(base)
    if parsed.scheme == "phantom-clip":
        return "phantom-clip:bundled"  # one architecture; the bundled file is always there
    options = {k: v for k, v in parsed.options.items() if k not in _WEIGHT_OPTIONS}
    if parsed.scheme == "openclip":
        options["random_init"] = "1"
    query = urlencode(options, safe="/:,")
    return f"{parsed.scheme}:{parsed.name}" + (f"?{query}" if query else "")


@contextmanager
def _quiet_models() -> Iterator[None]:
    """Mute the loaders' warnings (no weights: random initialisation) for a rebuild."""
    logger = logging.getLogger("mammodissect.models")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_base(base: str) -> Target:
    """The base architecture of a classifier, built without weights (quietly)."""
    spec = _weightless(base)
    try:
        with _quiet_models():
            return load_target(spec)
    except MammodissectError as err:
        raise MammodissectError(
            f"cannot rebuild the classifier's base {base!r}: {err}"
            + (
                " (a python: base must be importable from the current folder)"
                if base.startswith("python:")
                else ""
            )
        ) from err


def rebuild_classifier(base: str, outputs: int, features: int) -> tuple[EncoderClassifier, Target]:
    """The classifier architecture on ``base`` with random weights, and the base target."""
    target = load_base(base)
    encoder, _, _ = image_encoder_of(target.module)
    return EncoderClassifier(encoder, features, outputs), target


def save_classifier(model: EncoderClassifier, path: Path, sidecar: dict[str, Any]) -> Path:
    """Write the classifier as ``path`` (float32 safetensors; integer buffers kept) and its
    sidecar as ``path`` with suffix .json, each replaced atomically."""
    state = {
        k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    write_safetensors(state, path)
    text = json.dumps({"format": SIDECAR_FORMAT, **sidecar}, indent=2, default=str) + "\n"
    write_atomic(path.with_suffix(".json"), text.encode())
    return path


def _read_sidecar(path: Path) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise MammodissectError(
            f"classifier {path.name!r} has no {sidecar.name!r} beside it; mammodissect finetune "
            "writes the two together (keep them in one folder)"
        )
    try:
        meta = json.loads(sidecar.read_text())
    except ValueError as err:
        raise MammodissectError(f"cannot read {sidecar.name!r} as JSON: {err}") from err
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT or "base" not in meta:
        raise MammodissectError(
            f"{sidecar.name!r} is not a mammodissect classifier sidecar "
            f"(expected format {SIDECAR_FORMAT!r} and a base spec)"
        )
    return meta


@register("classifier", "target")
def load_classifier(spec: ModelSpec) -> Target:
    """``classifier:PATH.safetensors`` -> a fine-tuned classifier as a C target."""
    from safetensors.torch import load_file

    path = Path(spec.name).expanduser()
    if not path.is_file():
        raise MammodissectError(f"classifier file {path.name!r} not found")
    if path.suffix != ".safetensors":
        raise MammodissectError(
            f"classifier file {path.name!r} must be the .safetensors mammodissect finetune "
            "wrote (a Mammo-CLIP classifier .pth loads with mammoclip-classifier:PATH)"
        )
    meta = _read_sidecar(path)
    # float16 files (the bundled phantom C variants) load as float32
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    head = state.get(f"{HEAD}.weight")
    if head is None or head.ndim != 2:
        raise MammodissectError(f"{path.name!r} holds no {HEAD}.weight; it is not a classifier")
    model, base = rebuild_classifier(meta["base"], int(head.shape[0]), int(head.shape[1]))
    load_state(
        model,
        state,
        source=path.name,
        what=f"a classifier on {meta['base']}",
        hint="Was this file written by mammodissect finetune, with its own sidecar?",
    )
    preprocess = configure(base.preprocess, meta.get("preprocess"), meta.get("image_size"))
    info: dict[str, Any] = {
        "architecture": f"classifier on {meta['base']}",
        "weights": f"file {path.name}",
        "base": meta["base"],
        **{k: meta[k] for k in ("task", "kind", "classes", "epoch", "metrics") if k in meta},
    }
    return Target(model.eval(), preprocess, spec.public(), spec.identity(), info)
