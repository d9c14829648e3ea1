"""Packages that are also verbs: ``mammodissect.evaluate(run_dir)`` and
``mammodissect.evaluate.planted`` side by side.

The public verbs ``evaluate``, ``finetune`` and ``report`` share their names with the packages
that implement them. Binding the function to the top-level name would hide the package (``import
mammodissect.evaluate.planted`` would fail, and ``mammodissect.evaluate.sanity_checks`` would not
exist); binding the package would lose the verb. :func:`make_callable` keeps both: the package
module itself becomes callable and calls the verb.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

__all__ = ["make_callable"]


class _VerbModule(types.ModuleType):
    """A package module that, called, runs its verb (the function named like the package)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__dict__["__verb__"](*args, **kwargs)


def make_callable(module_name: str, verb: Callable[..., Any]) -> None:
    """Make the already-imported package ``module_name`` callable as ``verb``."""
    module = sys.modules[module_name]
    module.__verb__ = verb  # type: ignore[attr-defined]
    module.__class__ = _VerbModule
