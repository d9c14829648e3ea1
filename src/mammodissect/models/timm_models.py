"""``timm:NAME`` targets: any timm architecture, with local weights or random init."""

from __future__ import annotations

from mammodissect.errors import MammodissectError
from mammodissect.models.base import Target
from mammodissect.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess
from mammodissect.models.registry import build_module, register, suggest, target_from_module
from mammodissect.models.spec import ModelSpec

_RESERVED = frozenset({"weights", "pretrained"})


@register("timm", "target")
def load_timm(spec: ModelSpec) -> Target:
    """Build ``timm:NAME[?weights=PATH][&pretrained=1][&KWARG=VALUE...]``.

    Extra options go to ``timm.create_model`` (e.g. ``num_classes=4``).
    """
    import timm

    if not timm.is_model(spec.name):
        raise MammodissectError(
            f"timm has no model {spec.name!r}{suggest(spec.name, timm.list_models())}"
        )
    pretrained = spec.flag("pretrained")
    module = build_module(
        spec,
        lambda: timm.create_model(
            spec.name, pretrained=pretrained, **spec.extra_options(_RESERVED)
        ),
    )
    cfg = getattr(module, "pretrained_cfg", {}) or {}
    _, height, width = cfg.get("input_size", (3, 224, 224))
    preprocess = ImagePreprocess(
        (height, width),
        tuple(cfg.get("mean", IMAGENET_MEAN)),
        tuple(cfg.get("std", IMAGENET_STD)),
    )
    return target_from_module(
        module, spec, preprocess, pretrained=pretrained, info={"architecture": f"timm {spec.name}"}
    )
