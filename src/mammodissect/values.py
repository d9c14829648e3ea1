"""Reading typed values from text (spec options, ``--similarity-param KEY=VALUE``)."""

from __future__ import annotations

from typing import Any

from mammodissect.errors import MammodissectError

__all__ = ["parse_assignments", "parse_value"]


def parse_value(value: str) -> Any:
    """``"3"`` -> 3, ``"0.5"`` -> 0.5, ``"true"`` -> True; anything else stays a string."""
    low = value.strip().lower()
    if low in {"true", "false"}:
        return low == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def parse_assignments(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["top_k=50", "a=10"]`` -> ``{"top_k": 50, "a": 10}``; also comma-separated."""
    out: dict[str, Any] = {}
    for item in items or []:
        for part in item.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise MammodissectError(f"{what} {part!r} must be written KEY=VALUE")
            out[key.strip()] = parse_value(value.strip())
    return out
