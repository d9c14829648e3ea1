"""The spec registry: which loader builds which ``scheme:`` for which role.

A model family is one module that decorates its loaders with :func:`register`;
:mod:`mammodissect.models` imports every family module once.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.models.base import Dissector, Preprocess, Target
from mammodissect.models.spec import ModelSpec, parse_spec
from mammodissect.models.weights import load_state, read_state_dict

__all__ = [
    "build_module",
    "load_dissector",
    "load_target",
    "register",
    "schemes",
    "suggest",
    "target_from_module",
]

log = logging.getLogger(__name__)

Role = Literal["target", "dissector"]
_LOADERS: dict[tuple[str, str], Callable[[ModelSpec], Any]] = {}


def register(scheme: str, role: Role) -> Callable[[Callable[[ModelSpec], Any]], Callable]:
    """Decorator: make ``fn(spec)`` the loader of ``scheme:`` specs for ``role``."""

    def decorate(fn: Callable[[ModelSpec], Any]) -> Callable[[ModelSpec], Any]:
        _LOADERS[(scheme, role)] = fn
        return fn

    return decorate


def schemes(role: Role) -> list[str]:
    """The schemes that can be loaded for ``role``."""
    return sorted(s for s, r in _LOADERS if r == role)


def suggest(name: str, choices: list[str], n: int = 5) -> str:
    """A ``did you mean`` phrase for an unknown name ("" when nothing is close)."""
    close = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not close:
        close = [c for c in choices if name.lower() in c.lower()][:n]
    return f"; did you mean {', '.join(close)}?" if close else ""


def _loader(spec: str | ModelSpec, role: Role) -> tuple[ModelSpec, Callable[[ModelSpec], Any]]:
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec)
    fn = _LOADERS.get((parsed.scheme, role))
    if fn is None:
        raise MammodissectError(
            f"unknown {role} scheme {parsed.scheme!r} in spec {parsed.public()!r}; "
            f"known {role} schemes: {', '.join(schemes(role))}"
        )
    return parsed, fn


def load_target(spec: str | ModelSpec) -> Target:
    """Build the target network a spec names, in eval mode, weights loaded strictly."""
    parsed, fn = _loader(spec, "target")
    target = fn(parsed)
    target.module.eval()
    return target


def load_dissector(spec: str | ModelSpec) -> Dissector:
    """Build the dissector a spec names (an object with ``encode_images`` and ``encode_texts``)."""
    parsed, fn = _loader(spec, "dissector")
    dissector = fn(parsed)
    if not isinstance(dissector, Dissector):
        raise MammodissectError(
            f"dissector {parsed.public()!r} lacks encode_images, encode_texts or preprocess"
        )
    for attr, value in (("spec", parsed.public()), ("identity", parsed.identity())):
        if getattr(dissector, attr, None) is None:
            try:
                setattr(dissector, attr, value)
            except AttributeError:
                log.debug("cannot set %s on dissector %s", attr, parsed.public())
    for module in _modules_of(dissector):
        module.eval()
    return dissector


def _modules_of(obj: object) -> list[nn.Module]:
    if isinstance(obj, nn.Module):
        return [obj]
    return (
        [v for v in vars(obj).values() if isinstance(v, nn.Module)]
        if hasattr(obj, "__dict__")
        else []
    )


def build_module(spec: ModelSpec, build: Callable[[], nn.Module]) -> nn.Module:
    """Call ``build()``; a bad keyword or a failed hub download becomes a clear error."""
    try:
        return build()
    except TypeError as err:
        raise MammodissectError(f"cannot build {spec.public()}: {err}") from err
    except Exception as err:
        if not spec.flag("pretrained"):
            raise
        raise MammodissectError(
            f"cannot fetch pretrained weights for {spec.public()} ({type(err).__name__}); "
            "offline, pass ?weights=PATH to a local file"
        ) from err


def target_from_module(
    module: nn.Module,
    spec: ModelSpec,
    preprocess: Preprocess,
    *,
    pretrained: bool = False,
    info: dict[str, Any] | None = None,
    state: dict[str, torch.Tensor] | None = None,
) -> Target:
    """Wrap a built architecture as a :class:`Target`, loading ``?weights=`` strictly.

    ``state`` is the content of the weights file when the caller has already read it.
    Without weights (and without ``pretrained``) the network keeps its random
    initialisation, the honest "untrained network" baseline, and a warning says so.
    """
    weights = spec.path("weights")
    if weights is not None:
        if state is None:
            state = read_state_dict(weights)
        load_state(module, state, source=weights.name, what=spec.public())
        source = f"file {weights.name}"
    elif pretrained:
        source = "hub (pretrained=1)"
    else:
        log.warning(
            "%s has no weights (give ?weights=PATH): dissecting a randomly initialised network",
            spec.public(),
        )
        source = "random initialisation"
    details = {"weights": source, **(info or {})}
    return Target(module.eval(), preprocess, spec.public(), spec.identity(), details)
