"""The 1000 ImageNet-1k class names, offline.

They come from torchvision's weights metadata, which ships inside the
torchvision package (reading it downloads nothing).
"""

from __future__ import annotations

from functools import cache

from mammodissect.errors import MammodissectError

__all__ = ["imagenet_classes"]

_N_CLASSES = 1000


@cache
def _classes() -> tuple[str, ...]:
    try:
        from torchvision.models import MobileNet_V2_Weights
    except ImportError as err:  # pragma: no cover - torchvision is a dependency
        raise MammodissectError(
            "the ImageNet class names come from torchvision; install torchvision"
        ) from err
    names = tuple(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
    if len(names) != _N_CLASSES:  # pragma: no cover - guards a torchvision change
        raise MammodissectError(
            f"torchvision lists {len(names)} ImageNet classes, expected {_N_CLASSES}"
        )
    return names


def imagenet_classes() -> list[str]:
    """The ImageNet-1k class names in index order (index ``i`` is logit ``i``).

    Returns
    -------
    list[str]
        1000 names such as ``"tench"``, ``"tabby"``, ``"espresso"`` (a fresh list each call).
    """
    return list(_classes())
