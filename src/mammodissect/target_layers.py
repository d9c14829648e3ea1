"""``target_layers(target)``: the hookable layers of a target with their output shapes.

What ``mammodissect layers`` prints, for a notebook too: the target is run once on a small
square image prepared by its own preprocessing (at ``image_size`` when given), so the shapes
are those a dissection at that size records.

>>> listing = target_layers("python:planted:make_target")  # doctest: +SKIP
>>> print(listing.table())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammodissect.layers import LayerInfo, list_layers, resolve_layers
from mammodissect.models import Target, load_target
from mammodissect.models.configured import resolve_device
from mammodissect.models.recipes import configure

__all__ = ["TargetLayers", "target_layers"]


@dataclass(frozen=True)
class TargetLayers:
    """The layers of a target in model order, and the input shape they were measured on."""

    input_shape: tuple[int, ...]
    layers: list[LayerInfo]

    def table(self) -> str:
        """Aligned text: name, module type and output shape per layer, under a header."""
        width = max((len(i.name) for i in self.layers), default=4)
        kind = max((len(i.type) for i in self.layers), default=4)
        lines = [f"{'layer':<{width}}  {'type':<{kind}}  output shape (input {self.input_shape})"]
        for info in self.layers:
            shape = "x".join(map(str, info.output_shape)) if info.output_shape else "(not run)"
            lines.append(f"{info.name:<{width}}  {info.type:<{kind}}  {shape}")
        return "\n".join(lines)


def target_layers(
    target: str | Target,
    layers: str | Sequence[str] | None = None,
    *,
    image_size: Any = None,
    device: str = "cpu",
) -> TargetLayers:
    """Every named module of ``target`` (a spec or a loaded target) with its output shape on
    one input of the target's size (``image_size`` overrides it, ``HEIGHTxWIDTH``);
    ``layers`` (names or globs) keeps only the matching modules, with the error of a
    dissection for a name that matches nothing."""
    loaded = load_target(target) if isinstance(target, str) else target
    preprocess = configure(loaded.preprocess, None, image_size)  # the caller's target unchanged
    resolved = resolve_device(device)
    image = np.zeros((64, 64), dtype=np.float32)
    image[16:48, 16:48] = 1.0  # some structure, so that no normalisation divides by zero
    example = preprocess(image)[None].to(resolved)
    infos = list_layers(loaded.module.to(resolved), example)
    if layers:
        keep = set(resolve_layers(loaded.module, layers))
        infos = [info for info in infos if info.name in keep]
    return TargetLayers(tuple(example.shape), infos)
