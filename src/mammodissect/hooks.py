"""Forward hooks with guaranteed removal, one way to trace layer outputs, and pooling of layer
outputs to one value per unit."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType

import torch
from torch import nn

from mammodissect.errors import MammodissectError

__all__ = ["POOLINGS", "StopForward", "Trace", "first_tensor", "hooked", "pool"]

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


def _detached(name: str, tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().float().cpu()


class Trace:
    """The outputs of named layers during forward passes: the one capture every pass uses.

    Used as a context manager (hooks are registered on entry and always removed on exit).
    For each layer, the first call within a pass is kept (a module called twice keeps its
    first output), reduced by ``reduce(name, tensor)`` (default: detached float32 on the
    CPU). With ``stop``, the pass ends as soon as every layer has its output (the rest of
    the network does not run); :meth:`__call__` runs one such pass. With ``require``, a
    layer whose output holds no tensor is an error; otherwise it is left out.

    Examples
    --------
    >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    >>> with Trace(net, ["0", "1"]) as trace:
    ...     outputs = trace(torch.ones(4, 2))
    >>> sorted(outputs), tuple(outputs["1"].shape)
    (['0', '1'], (4, 3))
    """

    def __init__(
        self,
        module: nn.Module,
        layers: Sequence[str],
        *,
        reduce: Callable[[str, torch.Tensor], torch.Tensor] = _detached,
        stop: bool = True,
        require: bool = False,
    ):
        self.module = module
        self.layers = list(layers)
        self.reduce = reduce
        self.stop = stop
        self.require = require
        #: Layer -> its reduced output in the current pass.
        self.outputs: dict[str, torch.Tensor] = {}
        self._hooks: contextlib.ExitStack | None = None

    def _on_output(self, name: str, output: object) -> None:
        if name in self.outputs:
            return
        tensor = first_tensor(output)
        if tensor is None:
            if self.require:
                raise MammodissectError(f"layer {name!r} returns no tensor; choose another layer")
        else:
            self.outputs[name] = self.reduce(name, tensor)
        if self.stop and len(self.outputs) == len(self.layers):
            raise StopForward

    def __enter__(self) -> Trace:
        self._hooks = contextlib.ExitStack()
        self._hooks.enter_context(hooked(self.module, self.layers, self._on_output))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._hooks is not None:
            self._hooks.close()
            self._hooks = None

    def clear(self) -> None:
        """Forget the outputs of the previous pass (before a pass run elsewhere)."""
        self.outputs = {}

    def __call__(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the module on ``inputs`` and return the traced outputs of this pass."""
        self.clear()
        with contextlib.suppress(StopForward):
            self.module(*inputs)
        return self.outputs
