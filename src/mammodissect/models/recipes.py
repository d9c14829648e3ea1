"""Choosing a preprocessing recipe by name: ``mammoclip``, ``imagenet``, ``default`` or a
user's own transform (``python:MODULE:CALLABLE``), with options after ``?``.

Examples: ``mammoclip``, ``mammoclip?flip=left``, ``imagenet?fit=pad``,
``python:my_transforms.py:make?size=512``. The model's own recipe supplies what the
name leaves open (input size, normalisation, channels).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from mammodissect.errors import MammodissectError
from mammodissect.models.base import Preprocess, ResizablePreprocess, StagedPreprocess
from mammodissect.models.preprocess import (
    ImagePreprocess,
    MammoClipPreprocess,
    TransformPreprocess,
    parse_image_size,
)
from mammodissect.models.python_models import call_user, load_callable
from mammodissect.models.registry import suggest
from mammodissect.models.spec import parse_spec
from mammodissect.values import parse_value

__all__ = ["RECIPES", "configure", "make_recipe"]

#: Named recipes.
RECIPES = {"imagenet": ImagePreprocess, "mammoclip": MammoClipPreprocess}
_INHERITED = ("size", "mean", "std", "channels")


def _options(query: str, text: str) -> dict[str, Any]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as err:
        raise MammodissectError(f"cannot read the options of preprocess {text!r}") from err
    options: dict[str, Any] = {}
    for key, value in pairs:
        if key == "size":
            options[key] = parse_image_size(value)
        elif key in ("mean", "std"):
            options[key] = tuple(float(v) for v in value.split(","))
        else:
            options[key] = parse_value(value) if value else None
    return options


def make_recipe(text: str, default: Preprocess) -> Preprocess:
    """The recipe ``text`` names, filled in from the model's own recipe ``default``.

    Raises
    ------
    MammodissectError
        For an unknown name (with suggestions) or an option the recipe does not take.
    """
    if text.startswith("python:"):
        spec = parse_spec(text)
        fn, _ = load_callable(spec)
        made = call_user(spec, fn, "preprocess factory", **spec.extra_options(frozenset()))
        if isinstance(made, StagedPreprocess):
            return made
        if not callable(made):
            raise MammodissectError(f"preprocess {spec.public()!r} returned no callable transform")
        return TransformPreprocess(made, name=spec.public())
    name, _, query = text.partition("?")
    options = _options(query, text)
    if name == "default":
        cls = type(default)
        if cls not in RECIPES.values():
            raise MammodissectError("the model's own preprocessing takes no options")
    elif name in RECIPES:
        cls = RECIPES[name]
    else:
        raise MammodissectError(
            f"unknown preprocess recipe {name!r}{suggest(name, [*RECIPES, 'default'])}; "
            f"use one of {', '.join(RECIPES)}, default, or python:MODULE:CALLABLE"
        )
    inherited = {k: getattr(default, k) for k in _INHERITED if hasattr(default, k)}
    if name == "mammoclip" and not isinstance(default, MammoClipPreprocess):
        inherited.pop("size", None)  # Mammo-CLIP's 1520 x 912 unless the user says otherwise
    if "size" not in {**inherited, **options} and cls is not MammoClipPreprocess:
        raise MammodissectError(f"preprocess {text!r} needs ?size=HxW for this model")
    try:
        return cls(**{**inherited, **options})
    except TypeError as err:
        raise MammodissectError(f"preprocess {text!r}: {err}") from err


def configure(default: Preprocess, recipe: str | None, size: Any, flag: str = "") -> Preprocess:
    """The model's recipe ``default``, replaced by ``recipe`` (``--preprocess``) and resized to
    ``size`` (``--image-size``); ``flag`` prefixes the option names in messages.

    Raises
    ------
    MammodissectError
        When a size is given for a user's own transform (it must resize itself).
    """
    preprocess = make_recipe(recipe, default) if recipe else default
    size = parse_image_size(size)
    if size is not None:
        if not isinstance(preprocess, ResizablePreprocess):
            raise MammodissectError(
                f"--{flag}image-size works with the built-in recipes only; "
                "resize inside your own preprocess transform instead"
            )
        preprocess = preprocess.with_size(size)
    return preprocess
