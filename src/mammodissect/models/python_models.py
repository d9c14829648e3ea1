"""``python:MODULE:CALLABLE`` specs: a user's own factory, from an importable module or a file.

``python:my_lab.models:build_target?size=64`` imports ``my_lab.models``;
``python:/path/to/factory.py:build`` loads that file. The callable receives the
remaining options as keyword arguments (numbers converted).

As a target it returns a :class:`~mammodissect.models.Target` or a bare
``torch.nn.Module`` (then preprocessed with ImageNet statistics at ``?size=``,
default 224, and ``?weights=`` loaded strictly). As a dissector it returns an
object with ``encode_images``, ``encode_texts`` and ``preprocess``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.models.base import Target
from mammodissect.models.preprocess import ImagePreprocess, parse_image_size
from mammodissect.models.registry import register, target_from_module
from mammodissect.models.spec import ModelSpec, file_identity

_RESERVED = frozenset({"weights", "size", "pretrained"})


def load_callable(spec: ModelSpec) -> tuple[Callable[..., Any], Path | None]:
    """The callable a ``python:MODULE:CALLABLE`` (or ``python:FILE.py:CALLABLE``) spec names,
    and the source file it came from."""
    module_ref, _, attr = spec.name.rpartition(":")
    if not module_ref or not attr:
        raise MammodissectError(
            f"spec {spec.public()!r} must be python:MODULE:CALLABLE (or python:FILE.py:CALLABLE)"
        )
    if module_ref.endswith(".py"):
        path = Path(module_ref).expanduser().resolve()
        if not path.is_file():
            raise MammodissectError(
                f"python file {path.name!r} of spec {spec.public()!r} not found"
            )
        name = f"mammodissect_user_{path.stem}_{abs(hash(str(path)))}"
        module = sys.modules.get(name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise MammodissectError(
                    f"python file {path.name!r} of spec {spec.public()!r} cannot be imported; "
                    "give a .py file"
                )
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[name] = module
            try:
                loader_spec.loader.exec_module(module)
            except BaseException as err:
                del sys.modules[name]  # a fixed file is loaded afresh next time
                raise _user_error(spec, "loading", err) from err
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as err:
            raise MammodissectError(
                f"cannot import module {module_ref!r} of spec {spec.public()!r}: {err}"
            ) from err
        except Exception as err:
            raise _user_error(spec, "importing", err) from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise MammodissectError(f"module {module_ref!r} has no callable {attr!r}")
    source = getattr(module, "__file__", None)
    return fn, Path(source) if source else None


def _user_error(spec: ModelSpec, doing: str, err: BaseException) -> MammodissectError:
    """One line for an exception raised inside the user's code (the traceback is the error's
    cause: ``mammodissect -v`` prints it)."""
    if isinstance(err, MammodissectError):
        return err
    if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: not the user's bug
        raise err
    text = str(err).strip().splitlines()
    detail = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    return MammodissectError(
        f"{doing} {spec.public()!r} raised {detail} (rerun with -v for the traceback)"
    )


def call_user(spec: ModelSpec, fn: Callable[..., Any], doing: str, **kwargs: Any) -> Any:
    """``fn(**kwargs)``, an exception raised inside it turned into one line naming the spec."""
    try:
        return fn(**kwargs)
    except Exception as err:
        raise _user_error(spec, doing, err) from err


def _identity(spec: ModelSpec, source: Path | None) -> dict[str, Any]:
    ident = spec.identity()
    if source is not None:
        ident["source"] = file_identity(source)
    return ident


@register("python", "target")
def load_python_target(spec: ModelSpec) -> Target:
    """Call the user's factory and wrap what it returns as a target."""
    fn, source = load_callable(spec)
    built = call_user(spec, fn, "target factory", **spec.extra_options(_RESERVED))
    if isinstance(built, Target):
        built.spec = spec.public()
        built.identity = {**_identity(spec, source), **built.identity}
        return built
    if not isinstance(built, nn.Module):
        raise MammodissectError(
            f"{spec.public()!r} returned {type(built).__name__}; a target factory must return "
            "a torch.nn.Module or a mammodissect.models.Target"
        )
    size = parse_image_size(spec.options.get("size")) or (224, 224)
    target = target_from_module(built, spec, ImagePreprocess(size), info={"factory": spec.name})
    target.identity = _identity(spec, source)
    return target


@register("python", "dissector")
def load_python_dissector(spec: ModelSpec) -> Any:
    """Call the user's factory; the registry checks the dissector interface."""
    fn, source = load_callable(spec)
    built = call_user(spec, fn, "dissector factory", **spec.extra_options(_RESERVED))
    if getattr(built, "identity", None) is None:
        with contextlib.suppress(AttributeError):  # objects with __slots__ keep the spec's
            built.identity = _identity(spec, source)
    return built
