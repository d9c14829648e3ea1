"""Forward hooks with guaranteed removal, and pooling of layer outputs to one value per unit."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from mammodissect.errors import MammodissectError

__all__ = ["POOLINGS", "StopForward", "first_tensor", "hooked", "pool"]

#: Pooling modes: reduce a layer's output to one number per unit and image.
POOLINGS = ("mean", "max", "cls")


class StopForward(Exception):
    """Raised inside a hook to end a forward pass once every wanted layer has fired."""


def first_tensor(output: object) -> torch.Tensor | None:
    """The output itself if it is a tensor, else the first tensor inside a tuple/list/dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, list | tuple):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def pool(output: torch.Tensor, pooling: str, layer: str = "") -> torch.Tensor:
    """Reduce a layer output to (B, units), detached, in float32.

    * (B, C): returned as it is.
    * (B, C, *spatial): ``mean`` or ``max`` over the spatial axes; ``cls`` is an error.
    * (B, T, D) token outputs: ``cls`` takes token 0, ``mean`` / ``max`` reduce over tokens.
    """
    x = output.detach()
    if pooling not in POOLINGS:
        raise MammodissectError(f"pooling {pooling!r} unknown; choose one of {', '.join(POOLINGS)}")
    if x.ndim == 2:
        pooled = x
    elif x.ndim == 3:
        pooled = {"mean": lambda: x.mean(1), "max": lambda: x.amax(1), "cls": lambda: x[:, 0]}[
            pooling
        ]()
    elif x.ndim >= 4:
        if pooling == "cls":
            raise MammodissectError(
                f"pooling 'cls' needs token outputs (B, T, D) but layer {layer!r} gives "
                f"{tuple(x.shape)}; use --pooling mean or max"
            )
        dims = tuple(range(2, x.ndim))
        pooled = x.mean(dims) if pooling == "mean" else x.amax(dims)
    else:
        raise MammodissectError(
            f"layer {layer!r} outputs shape {tuple(x.shape)}; it has no unit axis to dissect"
        )
    return pooled.float()


@contextmanager
def hooked(
    module: nn.Module, layers: Sequence[str], callback: Callable[[str, object], None]
) -> Iterator[None]:
    """Call ``callback(name, output)`` after each named layer's forward; hooks always removed."""
    modules = dict(module.named_modules())
    handles = []
    try:
        for name in layers:
            handles.append(
                modules[name].register_forward_hook(
                    lambda _m, _inp, out, name=name: callback(name, out)
                )
            )
        yield
    finally:
        for handle in handles:
            handle.remove()
