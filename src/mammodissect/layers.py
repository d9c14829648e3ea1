"""Naming layers: resolve names and glob patterns against ``named_modules()``, list them.

One way to name a layer: the module name ``named_modules()`` gives
(``image_encoder._blocks.19``), with ``[i]`` accepted for ``.i``
(``_blocks[19]``) and globs (``image_encoder._blocks.*``: ``*`` stays within one
dotted part, ``**`` crosses dots).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.hooks import first_tensor, hooked

__all__ = [
    "LayerInfo",
    "glob_regex",
    "list_layers",
    "normalize_layer_name",
    "resolve_layers",
    "split_patterns",
]

_BRACKET_INDEX = re.compile(r"\[(\d+)\]")
_GLOB_CHARS = set("*?[")


def normalize_layer_name(name: str) -> str:
    """``_blocks[3]`` -> ``_blocks.3``; surrounding white space removed.

    A bracket holding only digits is an index; write character classes as ranges
    (``[0-1]``) or negations (``[!0]``).
    """
    return _BRACKET_INDEX.sub(r".\1", name.strip())


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a layer glob: ``*`` and ``?`` stay within one dotted part, ``**`` crosses dots.

    ``_blocks.*`` matches ``_blocks.3`` but not ``_blocks.3.conv``; ``_blocks.**`` matches
    both; ``[0-9]`` classes work as in the shell.
    """
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append(r"[^.]*")
        elif char == "?":
            out.append(r"[^.]")
        elif char == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append(f"[^{body[1:]}]" if body.startswith("!") else f"[{body}]")
            i = end + 1
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z")


def split_patterns(patterns: str | Sequence[str]) -> list[str]:
    """Comma-separated string or list of strings -> list of non-empty patterns."""
    items = [patterns] if isinstance(patterns, str) else list(patterns)
    return [p.strip() for item in items for p in str(item).split(",") if p.strip()]


def _suggestions(pattern: str, names: list[str]) -> str:
    stem = re.split(r"[*?\[]", pattern, maxsplit=1)[0]
    close = difflib.get_close_matches(pattern, names, n=5, cutoff=0.6)
    if not close and stem:
        close = difflib.get_close_matches(stem, names, n=5, cutoff=0.5)
    if not close and stem:
        close = [n for n in names if n.startswith(stem.rsplit(".", 1)[0])][:5]
    return f"; closest: {', '.join(close)}" if close else ""


def resolve_layers(module: nn.Module, patterns: str | Sequence[str]) -> list[str]:
    """Module names matching ``patterns``, in model order, without repeats.

    Parameters
    ----------
    module:
        The network whose ``named_modules()`` defines the names.
    patterns:
        Names or glob patterns, as a comma-separated string or a list;
        ``name[i]`` is read as ``name.i``.

    Raises
    ------
    MammodissectError
        When no pattern is given, or one matches nothing (with the closest names).
    """
    names = [name for name, _ in module.named_modules() if name]
    wanted = split_patterns(patterns)
    if not wanted:
        raise MammodissectError("no layers given; pass --layers NAME[,NAME...] or a glob pattern")
    selected: set[str] = set()
    for raw in wanted:
        pattern = normalize_layer_name(raw)
        if pattern in names:
            selected.add(pattern)
            continue
        regex = glob_regex(pattern) if _GLOB_CHARS & set(pattern) else None
        matches = [n for n in names if regex.match(n)] if regex else []
        if not matches:
            raise MammodissectError(
                f"layer {raw!r} matches no module of the target{_suggestions(pattern, names)} "
                "(run `mammodissect layers --target SPEC` to list them)"
            )
        selected.update(matches)
    return [n for n in names if n in selected]


@dataclass(frozen=True)
class LayerInfo:
    """One hookable module: its name, type and output shape on one input (None if unused)."""

    name: str
    type: str
    output_shape: tuple[int, ...] | None


def list_layers(module: nn.Module, example: torch.Tensor) -> list[LayerInfo]:
    """Every named module in model order, with its output shape on ``example`` (a dry run)."""
    named = [(name, m) for name, m in module.named_modules() if name]
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str, output: object) -> None:
        tensor = first_tensor(output)
        if tensor is not None and name not in shapes:
            shapes[name] = tuple(tensor.shape)

    with hooked(module, [n for n, _ in named], record), torch.inference_mode():
        module(example)
    return [LayerInfo(name, type(m).__name__, shapes.get(name)) for name, m in named]
