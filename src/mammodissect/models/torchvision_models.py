"""``torchvision:NAME`` targets, with local weights or random init."""

from __future__ import annotations

from mammodissect.errors import MammodissectError
from mammodissect.models.base import Target
from mammodissect.models.preprocess import ImagePreprocess
from mammodissect.models.registry import build_module, register, suggest, target_from_module
from mammodissect.models.spec import ModelSpec

_RESERVED = frozenset({"weights", "pretrained"})


@register("torchvision", "target")
def load_torchvision(spec: ModelSpec) -> Target:
    """Build ``torchvision:NAME[?weights=PATH][&pretrained=1][&KWARG=VALUE...]``."""
    from torchvision import models

    names = models.list_models()
    if spec.name not in names:
        raise MammodissectError(
            f"torchvision has no model {spec.name!r}{suggest(spec.name, names)}"
        )
    pretrained = spec.flag("pretrained")
    module = build_module(
        spec,
        lambda: models.get_model(
            spec.name, weights="DEFAULT" if pretrained else None, **spec.extra_options(_RESERVED)
        ),
    )
    size = 299 if spec.name.startswith("inception") else 224
    return target_from_module(
        module,
        spec,
        ImagePreprocess((size, size)),
        pretrained=pretrained,
        info={"architecture": f"torchvision {spec.name}"},
    )
