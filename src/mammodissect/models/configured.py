"""A run configuration's models, loaded and configured as ``run`` uses them, and its device.

``run``, ``evaluate`` and ``report`` all rebuild the target and dissector a configuration names
(``report`` and ``evaluate`` from a run's run.json), so the one way to do it lives here, below
all three.
"""

from __future__ import annotations

from typing import Any

import torch

from mammodissect.config import RunConfig
from mammodissect.errors import MammodissectError
from mammodissect.models.base import Dissector, Target
from mammodissect.models.recipes import configure
from mammodissect.models.registry import load_dissector, load_target
from mammodissect.models.spec import parse_spec

__all__ = ["SAME_AS_DISSECTOR", "load_models", "resolve_device", "same_model"]

#: The ``--target`` value that names the dissector's own image encoder.
SAME_AS_DISSECTOR = "dissector"
#: Options that concern only the dissector's text side: they do not make another image model.
_TEXT_ONLY_OPTIONS = frozenset({"vocab"})


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise MammodissectError("device 'cuda' asked for but no GPU is visible; use --device cpu")
    return resolved


def same_model(target: Any, dissector: Any) -> bool:
    """Whether the target spec names the dissector's own image encoder (same file, same
    options but for text-only ones), so one loaded model and one forward pass serve both."""
    if target == SAME_AS_DISSECTOR:
        return True
    if not (isinstance(target, str) and isinstance(dissector, str)):
        return False
    t, d = parse_spec(target), parse_spec(dissector)
    strip = lambda spec: {k: v for k, v in spec.options.items() if k not in _TEXT_ONLY_OPTIONS}  # noqa: E731
    return (t.scheme, t.name, strip(t)) == (d.scheme, d.name, strip(d))


def load_models(config: RunConfig) -> tuple[Target, Dissector]:
    """The target and dissector a configuration names, preprocessing set as ``run`` sets it
    (``--preprocess``/``--image-size`` and their ``--dissector-`` twins; one network serving
    both sees, unless told otherwise, what the dissector sees)."""
    dissector = (
        config.dissector
        if not isinstance(config.dissector, str)
        else load_dissector(config.dissector)
    )
    if same_model(config.target, config.dissector) and hasattr(dissector, "as_target"):
        target = dissector.as_target()
    elif config.target == SAME_AS_DISSECTOR:
        raise MammodissectError(
            "--target dissector needs a dissector that exposes its image encoder (as_target); "
            "name the target's own spec instead"
        )
    elif isinstance(config.target, str):
        target = load_target(config.target)
    else:
        target = config.target
    settings = {
        "target": (config.preprocess, config.image_size),
        "dissector": (config.dissector_preprocess, config.dissector_image_size),
    }
    if getattr(dissector, "image_module", None) is target.module:
        # one network: unless told otherwise, the target sees what the dissector sees
        (t_recipe, t_size), (d_recipe, d_size) = settings["target"], settings["dissector"]
        settings = {
            "target": (t_recipe or d_recipe, t_size or d_size),
            "dissector": (d_recipe or t_recipe, d_size or t_size),
        }
    target.preprocess = configure(target.preprocess, *settings["target"], "")
    dissector.preprocess = configure(dissector.preprocess, *settings["dissector"], "dissector-")
    return target, dissector
