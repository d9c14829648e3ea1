"""``efficientnet:NAME`` targets: EfficientNets with weights in lukemelas naming.

The lukemelas naming is the one of ``efficientnet_pytorch`` (``_conv_stem``,
``_bn0``, ``_blocks.N``, ``_conv_head``, ``_bn1``, ``_fc``): the naming of the
ImageNet files users hold as ``efficientnet-b5-b6417697.pth`` and of the image
encoder inside Mammo-CLIP.

``efficientnet:efficientnet-bK[?weights=PATH][&num_classes=N][&include_top=0][&size=HxW]``
    K = 0..8, built with ``efficientnet_pytorch.EfficientNet.from_name`` (never
    ``from_pretrained``, which downloads) and loaded strictly; layers keep the
    lukemelas names (``_blocks.3``). The static SAME padding is computed for the
    variant's design resolution, as in the reference implementation.
``efficientnet:efficientnet-liteK[?weights=PATH][&num_classes=N][&include_top=0][&size=HxW]``
    K = 0..4. ``efficientnet_pytorch`` has no Lite variants, so timm's
    ``tf_efficientnet_liteK`` is built (random init, nothing downloaded) and the
    lukemelas-named tensors are mapped onto it *in order*, checking that both
    sides have as many tensors and that every pair has the same shape and kind
    (weight, bias, running mean, ...). Layers then carry timm's names
    (``conv_stem``, ``blocks.S.B``, ``conv_head``, ``classifier``). timm's ``tf_``
    flavour has TensorFlow's asymmetric SAME padding and BatchNorm epsilon 1e-3,
    which the TF-trained Lite weights expect (and which efficientnet_pytorch uses
    too); with the real Lite0 file it classifies more confidently, and its
    BatchNorm statistics match natural images better, than ``efficientnet_lite0``
    (symmetric padding, epsilon 1e-5) whose state dict has the same layout.

Names may also be written ``efficientnet_b5`` or ``b5``. Options:

``weights``
    A state dict file (``.pth``/``.pt``/``.safetensors``); without it the network
    keeps its random initialisation (with a warning).
``num_classes``
    Classifier outputs; default 1000, or read from the file's ``_fc.weight``.
``include_top``
    ``0`` for a headless encoder (no ``_fc``; the output is the pooled features).
    Inferred as ``0`` when the weights file has no ``_fc`` tensors.
``size``
    Input size ``HxW`` for preprocessing (default: the variant's design resolution,
    :data:`EFFICIENTNET_SIZES`).

Normalisation: ImageNet mean and std for B0-B8 (the lukemelas files were converted
for that input). Lite models use mean 0.5 and std 0.5 per channel, the scaling of
the original TensorFlow Lite release (``(x - 127) / 128``): on the packaged Lite0
ImageNet weights the stem BatchNorm's running statistics match activations of
natural photos far better under 0.5/0.5 than under ImageNet statistics (and
both give the right top-1 class on the sample cat and coffee photos).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.models.base import Target
from mammodissect.models.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImagePreprocess,
    parse_image_size,
)
from mammodissect.models.registry import build_module, register, suggest, target_from_module
from mammodissect.models.spec import ModelSpec
from mammodissect.models.weights import read_state_dict

__all__ = [
    "EFFICIENTNET_SIZES",
    "LITE_MEAN",
    "LITE_STD",
    "guess_variant",
    "load_efficientnet",
    "lukemelas_order",
    "map_lite_state",
    "normalise_name",
]

log = logging.getLogger(__name__)

#: Design resolution (square input side) of every variant, as trained.
EFFICIENTNET_SIZES: dict[str, int] = {
    **{
        f"efficientnet-b{i}": side
        for i, side in enumerate((224, 240, 260, 300, 380, 456, 528, 600, 672))
    },
    **{f"efficientnet-lite{i}": side for i, side in enumerate((224, 240, 260, 280, 300))},
}
#: Per-channel normalisation of the Lite models (TensorFlow Lite's ``(x - 127) / 128``).
LITE_MEAN = (0.5, 0.5, 0.5)
LITE_STD = (0.5, 0.5, 0.5)

_OPTIONS = ("include_top", "num_classes", "size", "weights")
_NAME = re.compile(r"(?:efficient[-_]?net)?[-_]?(b\d|lite\d)")
_COUNTER = "num_batches_tracked"

# efficientnet_pytorch's module order, for sorting lukemelas keys as its state_dict() lists them.
_TOP_ORDER = ("_conv_stem", "_bn0", "_blocks", "_conv_head", "_bn1", "_fc")
_BLOCK_ORDER = (
    "_expand_conv",
    "_bn0",
    "_depthwise_conv",
    "_bn1",
    "_se_reduce",
    "_se_expand",
    "_project_conv",
    "_bn2",
)
_LEAF_ORDER = ("weight", "bias", "running_mean", "running_var", _COUNTER)
_LIST_LIMIT = 6


def normalise_name(name: str) -> str:
    """``efficientnet_b5``, ``B5`` or ``efficientnet-b5`` -> ``efficientnet-b5``.

    Raises
    ------
    MammodissectError
        When the name is no known variant; the message lists the valid names.
    """
    text = name.strip().lower()
    match = _NAME.fullmatch(text)
    canonical = f"efficientnet-{match.group(1)}" if match else text
    if canonical not in EFFICIENTNET_SIZES:
        valid = list(EFFICIENTNET_SIZES)
        raise MammodissectError(
            f"unknown EfficientNet {name!r}{suggest(text, valid)} "
            f"(valid: {', '.join(valid)}; also written efficientnet_b5 or b5)"
        )
    return canonical


def _rank(key: str) -> tuple[int, ...] | None:
    parts = key.split(".")
    if len(parts) == 4 and parts[0] == "_blocks" and parts[1].isdigit():
        module, leaf, block = parts[2], parts[3], int(parts[1])
        if module not in _BLOCK_ORDER or leaf not in _LEAF_ORDER:
            return None
        return (
            _TOP_ORDER.index("_blocks"),
            block,
            _BLOCK_ORDER.index(module),
            _LEAF_ORDER.index(leaf),
        )
    if len(parts) == 2 and parts[0] in _TOP_ORDER and parts[0] != "_blocks":
        if parts[1] not in _LEAF_ORDER:
            return None
        return (_TOP_ORDER.index(parts[0]), 0, 0, _LEAF_ORDER.index(parts[1]))
    return None


def _short(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _LIST_LIMIT else "")


def lukemelas_order(keys: Iterable[str], source: str = "the weights") -> list[str]:
    """Sort lukemelas-named keys into efficientnet_pytorch's module order.

    That is the order ``EfficientNet.state_dict()`` (and so a file saved from it)
    lists them in; sorting makes the in-order mapping independent of the order a
    file format stores its tensors in (``.safetensors`` sorts them by name).

    Raises
    ------
    MammodissectError
        Naming ``source`` and the keys that are not lukemelas EfficientNet names.
    """
    keys = list(keys)
    unknown = [k for k in keys if _rank(k) is None]
    if unknown:
        raise MammodissectError(
            f"weights file {source!r} has keys that are not lukemelas EfficientNet names "
            f"({_short(unknown)}); expected _conv_stem, _bn0, _blocks.N.*, _conv_head, _bn1, _fc"
        )
    return sorted(keys, key=lambda k: cast(tuple[int, ...], _rank(k)))  # none is None here


def _signature(state: dict[str, torch.Tensor]) -> tuple[bool, int, int, int, int] | None:
    """(has squeeze-excitation, blocks, stem width, head width, last block width)."""
    blocks = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
    try:
        stem = state["_conv_stem.weight"].shape[0]
        head = state["_conv_head.weight"].shape[0]
        last = state[f"_blocks.{max(blocks)}._project_conv.weight"].shape[0]
    except (KeyError, ValueError):
        return None
    has_se = any("._se_reduce." in k for k in state)
    return (has_se, len(blocks), int(stem), int(head), int(last))


@cache
def _known_signatures() -> dict[tuple[bool, int, int, int, int], str]:
    import timm
    from efficientnet_pytorch.utils import get_model_params, round_filters, round_repeats

    known: dict[tuple[bool, int, int, int, int], str] = {}
    for name in EFFICIENTNET_SIZES:
        if name.startswith("efficientnet-b"):
            blocks_args, params = get_model_params(name, None)
            depth = sum(round_repeats(b.num_repeat, params) for b in blocks_args)
            known[
                (
                    True,
                    depth,
                    round_filters(32, params),
                    round_filters(1280, params),
                    round_filters(blocks_args[-1].output_filters, params),
                )
            ] = name
        else:
            with torch.device("meta"):
                model: Any = timm.create_model(f"tf_{name.replace('-', '_')}", num_classes=0)
            last = model.blocks[-1][-1]
            depth = sum(len(stage) for stage in model.blocks)
            known[
                (
                    False,
                    depth,
                    model.conv_stem.out_channels,
                    model.conv_head.out_channels,
                    last.conv_pwl.out_channels,
                )
            ] = name
    return known


def guess_variant(state: dict[str, torch.Tensor]) -> str | None:
    """The variant (``efficientnet-b5``, ``efficientnet-lite0``...) whose shape the weights have."""
    signature = _signature(state)
    return None if signature is None else _known_signatures().get(signature)


def _foreign(state: dict[str, torch.Tensor]) -> str | None:
    """What the file looks like when it is no lukemelas EfficientNet (None when it is one)."""
    keys = list(state)
    if "_conv_stem.weight" in state or any(k.startswith("_blocks.") for k in keys):
        return None
    if any(k.startswith(("image_encoder.", "text_encoder.")) for k in keys):
        return "looks like a Mammo-CLIP checkpoint; use mammoclip:PATH"
    if "logit_scale" in state or any(k.startswith(("visual.", "token_embedding.")) for k in keys):
        return "looks like an open_clip (CLIP) model; use openclip:NAME?weights=PATH"
    tv_timm = ("features.", "layer1.", "conv_stem.", "blocks.", "stem.", "conv1.", "stages.")
    if any(k.startswith(tv_timm) for k in keys):
        return "looks like a torchvision or timm state dict; use timm:NAME or torchvision:NAME"
    nested = next((k for k in keys if k.endswith("._conv_stem.weight")), None)
    if nested is not None:
        prefix = nested[: -len("_conv_stem.weight")]
        return (
            f"holds an EfficientNet under the key prefix {prefix!r}; "
            "save that submodule's state_dict() on its own"
        )
    return (
        "does not look like an EfficientNet in lukemelas naming "
        f"(no _conv_stem or _blocks keys; its keys start {_short(keys[:3])})"
    )


def _read(spec: ModelSpec, path: Path) -> dict[str, torch.Tensor]:
    try:
        state = read_state_dict(path)
    except MammodissectError as err:
        if path.suffix != ".tar":
            raise
        raise MammodissectError(
            f"{err}. If {path.name!r} is a Mammo-CLIP checkpoint, use mammoclip:PATH"
        ) from err
    foreign = _foreign(state)
    if foreign is not None:
        raise MammodissectError(f"weights file {path.name!r} given to {spec.public()} {foreign}")
    return state


def _check_kind(spec: ModelSpec, name: str, state: dict[str, torch.Tensor], source: str) -> None:
    """A full EfficientNet file for a Lite name (or the reverse) gets a message saying so."""
    if not any(k.startswith("_blocks.") for k in state):
        return
    lite = name.startswith("efficientnet-lite")
    has_se = any("._se_reduce." in k for k in state)
    if lite == has_se:
        guess = guess_variant(state)
        family = "efficientnet-bK" if has_se else "efficientnet-liteK"
        kind = (
            "has squeeze-excitation tensors (_se_reduce): it is a full EfficientNet"
            if has_se
            else "has no squeeze-excitation tensors (_se_reduce): it is an EfficientNet-Lite"
        )
        raise MammodissectError(
            f"weights file {source!r} given to {spec.public()} {kind}; "
            f"use efficientnet:{guess or family}?weights=..."
        )


def _hint(state: dict[str, torch.Tensor], name: str) -> str:
    guess = guess_variant(state)
    if guess is None or guess == name:
        return ""
    return f" (the file looks like {guess}: use efficientnet:{guess}?weights=...)"


def _int_option(spec: ModelSpec, key: str) -> int | None:
    if key not in spec.options:
        return None
    text = spec.options[key].strip()
    if not text.isdigit() or int(text) < 1:
        raise MammodissectError(
            f"option {key}={spec.options[key]!r} in spec {spec.public()!r} "
            "must be a positive whole number"
        )
    return int(text)


def _head(
    spec: ModelSpec, state: dict[str, torch.Tensor] | None, source: str
) -> tuple[bool, int | None]:
    """(include_top, num_classes) from the options, else from the weights' ``_fc``."""
    fc = None if state is None else state.get("_fc.weight")
    has_fc = state is None or any(k.startswith("_fc.") for k in state)
    include_top = spec.flag("include_top", default=has_fc)
    num_classes = _int_option(spec, "num_classes")
    if not include_top:
        if num_classes is not None:
            raise MammodissectError(
                f"spec {spec.public()!r} sets num_classes with include_top=0 (no classifier); "
                "drop one of them"
            )
        if "include_top" not in spec.options:
            log.info("weights file %s has no _fc tensors: building a headless encoder", source)
        return False, None
    if num_classes is None:
        num_classes = int(fc.shape[0]) if fc is not None and fc.ndim == 2 else 1000
    return True, num_classes


@contextmanager
def _without_batch_counters(module: nn.Module, active: bool) -> Iterator[None]:
    """Hide BatchNorm's ``num_batches_tracked`` buffers (a file may lack them all).

    A hidden counter is absent from ``state_dict()`` and not expected by a strict
    ``load_state_dict`` (``track_running_stats`` is off meanwhile, or BatchNorm
    would add the key itself). Inference never reads the counter (it only steps
    the running averages when ``momentum`` is None, in training); the hidden
    counters come back as zeros.
    """
    owners = []
    if active:
        for name, _ in module.named_buffers():
            if name.rpartition(".")[2] == _COUNTER:
                owner = module.get_submodule(name.rpartition(".")[0])
                setattr(owner, _COUNTER, None)
                setattr(owner, "track_running_stats", False)  # noqa: B010 (a Module attribute)
                owners.append(owner)
    try:
        yield
    finally:
        for owner in owners:
            setattr(owner, "track_running_stats", True)  # noqa: B010
            setattr(owner, _COUNTER, torch.zeros((), dtype=torch.long))


def _lacks_counters(state: dict[str, torch.Tensor]) -> bool:
    return not any(k.rpartition(".")[2] == _COUNTER for k in state)


def map_lite_state(
    state: dict[str, torch.Tensor], module: nn.Module, source: str
) -> dict[str, torch.Tensor]:
    """Map lukemelas-named Lite tensors onto ``module``'s (timm's) names, in order.

    The file's keys are put in efficientnet_pytorch's module order
    (:func:`lukemelas_order`) and paired one to one with ``module.state_dict()``'s
    keys. When the file has no ``num_batches_tracked`` counters at all, the
    module's counters are left out of the pairing (so the BatchNorm buffers stay
    aligned).

    Raises
    ------
    MammodissectError
        Naming ``source``, the first pair that differs in shape or kind (weight,
        bias, running_mean...) and both tensor counts.
    """
    ours = lukemelas_order(state, source)
    own = module.state_dict()
    theirs = [k for k in own if not (_lacks_counters(state) and k.endswith(_COUNTER))]
    counts = f"the file has {len(ours)} tensors, the model {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        same_kind = a.rpartition(".")[2] == b.rpartition(".")[2]
        if tuple(state[a].shape) != tuple(own[b].shape) or not same_kind:
            raise MammodissectError(
                f"weights file {source!r} does not map in order onto the model: tensor #{i} "
                f"{a} {tuple(state[a].shape)} vs {b} {tuple(own[b].shape)}; {counts}. "
                "Check the variant and its options (num_classes, include_top)"
            )
    if len(ours) != len(theirs):
        extra = (
            f"the file's {ours[len(theirs)]} has no counterpart"
            if len(ours) > len(theirs)
            else f"the model's {theirs[len(ours)]} has no counterpart"
        )
        raise MammodissectError(
            f"weights file {source!r} does not map in order onto the model: {extra}; "
            f"{counts}. Check the variant and its options (num_classes, include_top)"
        )
    return {b: state[a] for a, b in zip(ours, theirs, strict=True)}


def _check_options(spec: ModelSpec) -> None:
    unknown = sorted(set(spec.options) - set(_OPTIONS))
    if unknown:
        raise MammodissectError(
            f"unknown option(s) {', '.join(unknown)} in spec {spec.public()!r}; "
            f"efficientnet: takes {', '.join(_OPTIONS)}"
        )


@register("efficientnet", "target")
def load_efficientnet(spec: ModelSpec) -> Target:
    """Build ``efficientnet:NAME[?weights=PATH][&num_classes=N][&include_top=0][&size=HxW]``.

    See the module documentation for the variants, options and normalisation.
    """
    _check_options(spec)
    name = normalise_name(spec.name)
    spec = dataclasses.replace(spec, name=name)
    weights = spec.path("weights")
    source = weights.name if weights is not None else ""
    state = _read(spec, weights) if weights is not None else None
    if state is not None:
        _check_kind(spec, name, state, source)
    include_top, num_classes = _head(spec, state, source)
    side = EFFICIENTNET_SIZES[name]
    size = parse_image_size(spec.options.get("size")) or (side, side)
    info: dict[str, Any] = {
        "include_top": include_top,
        "num_classes": num_classes,
        "image_size": list(size),
    }
    if name.startswith("efficientnet-lite"):
        return _lite(spec, name, weights, state, include_top, num_classes, size, info)

    from efficientnet_pytorch import EfficientNet

    head: dict[str, Any] = {"num_classes": num_classes} if include_top else {"include_top": False}
    module = build_module(spec, lambda: EfficientNet.from_name(name, **head))
    preprocess = ImagePreprocess(size, IMAGENET_MEAN, IMAGENET_STD)
    info = {"architecture": f"efficientnet_pytorch {name}", **info}
    try:
        with _without_batch_counters(module, state is not None and _lacks_counters(state)):
            return target_from_module(module, spec, preprocess, info=info, state=state)
    except MammodissectError as err:
        hint = _hint(state, name) if state is not None else ""
        if not hint:
            raise
        raise MammodissectError(f"{err}{hint}") from err


def _lite(
    spec: ModelSpec,
    name: str,
    weights: Path | None,
    state: dict[str, torch.Tensor] | None,
    include_top: bool,
    num_classes: int | None,
    size: tuple[int, int],
    info: dict,
) -> Target:
    import timm

    arch = f"tf_{name.replace('-', '_')}"
    module = build_module(
        spec,
        lambda: timm.create_model(
            arch, pretrained=False, num_classes=num_classes if include_top else 0
        ),
    )
    preprocess = ImagePreprocess(size, LITE_MEAN, LITE_STD)
    info = {"architecture": f"timm {arch} (lukemelas tensors mapped in order)", **info}
    if weights is None or state is None:
        return target_from_module(module, spec, preprocess, info=info)
    try:
        mapped = map_lite_state(state, module, weights.name)
    except MammodissectError as err:
        hint = _hint(state, name)
        if not hint:
            raise
        raise MammodissectError(f"{err}{hint}") from err
    with _without_batch_counters(module, _lacks_counters(state)):
        module.load_state_dict(mapped, strict=True)
    log.info(
        "mapped %d tensors from %s onto %s in order (shapes checked)",
        len(mapped),
        weights.name,
        arch,
    )
    details = {"weights": f"file {weights.name}", **info}
    return Target(module.eval(), preprocess, spec.public(), spec.identity(), details)
