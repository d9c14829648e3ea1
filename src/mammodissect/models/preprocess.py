"""Image preprocessing that a model brings: float image array in, normalised tensor out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mammodissect.errors import MammodissectError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ImagePreprocess", "parse_image_size"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImagePreprocess:
    """Min-max scale, resize and normalise one 2-D image for a network.

    The image (any range: 8-bit, 16-bit, Hounsfield-like floats) is scaled to
    [0, 1] by its own minimum and maximum, resized with antialiased bilinear
    interpolation to ``size`` (height, width), replicated to ``channels``
    channels and normalised with ``mean`` and ``std``.

    Two instances with equal fields are equal, so a run that feeds the same
    recipe to target and dissector preprocesses each image once.
    """

    size: tuple[int, int]
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    name: str = "minmax-resize"

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise MammodissectError(f"image size {self.size!r} must be (height, width) > 0")
        for label, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise MammodissectError(
                    f"preprocessing {label} {values!r} needs 1 or {self.channels} values"
                )
        if min(self.std) <= 0:
            raise MammodissectError(f"preprocessing std {self.std!r} must be positive")

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """Turn an (H, W) float array into a (channels, height, width) float32 tensor."""
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        if x.ndim != 2:
            raise MammodissectError(f"expected a 2-D image, got shape {tuple(x.shape)}")
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
        if tuple(x.shape) != tuple(self.size):
            x = F.interpolate(
                x[None, None], size=self.size, mode="bilinear", antialias=True, align_corners=False
            )[0, 0]
        x = x.expand(self.channels, -1, -1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)
        return ((x - mean) / std).contiguous()

    def with_size(self, size: tuple[int, int]) -> ImagePreprocess:
        """The same recipe at another input size."""
        return ImagePreprocess(size, self.mean, self.std, self.channels, self.name)

    def describe(self) -> dict[str, Any]:
        """What the recipe does, for run.json and cache fingerprints."""
        return {
            "name": self.name,
            "size": list(self.size),
            "mean": list(self.mean),
            "std": list(self.std),
            "channels": self.channels,
            "scaling": "per-image min-max to [0, 1]",
            "resize": "bilinear, antialiased",
        }


def parse_image_size(value: Any) -> tuple[int, int] | None:
    """Read an image size: ``None``, ``224``, ``"1520x912"`` (height x width) or a pair."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, int):
            size = (value, value)
        elif isinstance(value, str):
            parts = value.lower().replace(",", "x").split("x")
            size = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else ()
        else:
            size = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 2 or min(size) < 1:
        raise MammodissectError(
            f"image size {value!r} is not valid; give HEIGHTxWIDTH (e.g. 1520x912) or one number"
        )
    return (size[0], size[1])
