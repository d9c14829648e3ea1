"""Concept sets: the strings units are labelled with, and their categories."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mammodissect.errors import MammodissectError

__all__ = ["ConceptSet", "load"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConceptSet:
    """An ordered list of unique concept strings with optional categories.

    Attributes
    ----------
    concepts:
        The strings, in file order, each once.
    category, broad_category:
        Per concept, its sub-category and broad category (None when unknown).
    control:
        Per concept, True for a non-mammography control concept (None when unknown).
    name:
        Where the set came from (a bundled set's name or a file name).
    """

    concepts: tuple[str, ...]
    category: tuple[str | None, ...]
    broad_category: tuple[str | None, ...]
    control: tuple[bool | None, ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        n = len(self.concepts)
        if not n:
            raise MammodissectError(
                f"concept set {self.name!r} is empty; give at least one concept"
            )
        if not len(self.category) == len(self.broad_category) == len(self.control) == n:
            raise MammodissectError(f"concept set {self.name!r}: category columns misaligned")

    @classmethod
    def from_strings(cls, strings: Iterable[str], name: str = "custom") -> ConceptSet:
        """Build a set without categories; blank strings dropped, repeats kept once (first)."""
        unique: dict[str, None] = {}
        repeats = 0
        for raw in strings:
            text = str(raw).strip()
            if not text:
                continue
            repeats += text in unique
            unique.setdefault(text, None)
        if repeats:
            log.warning("concept set %s: %d repeated concepts kept once", name, repeats)
        items = tuple(unique)
        none = (None,) * len(items)
        return cls(items, none, none, none, name)

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.concepts)

    @property
    def has_categories(self) -> bool:
        """Whether any concept carries a category."""
        return any(c is not None for c in (*self.category, *self.broad_category))

    def to_frame(self) -> pd.DataFrame:
        """Columns ``concept, category, broad_category, control``, one row per concept."""
        return pd.DataFrame(
            {
                "concept": list(self.concepts),
                "category": list(self.category),
                "broad_category": list(self.broad_category),
                "control": list(self.control),
            }
        )

    def fingerprint(self) -> str:
        """A short hash of the strings, in order."""
        return hashlib.sha256("\n".join(self.concepts).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """Name, size and hash, for run.json."""
        return {"name": self.name, "count": len(self), "sha256_16": self.fingerprint()}


def _read_text(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise MammodissectError(f"concept file {path.name!r} is not UTF-8 text ({err})") from err
    return [line for line in lines if not line.lstrip().startswith("#")]


def load(source: str | Path | Iterable[str] | ConceptSet) -> ConceptSet:
    """Load a concept set from a text file (one concept per line, ``#`` comments), or a list.

    Raises
    ------
    MammodissectError
        When the file is missing or holds no concept.
    """
    if isinstance(source, ConceptSet):
        return source
    if isinstance(source, str | Path):
        path = Path(source).expanduser()
        if not path.is_file():
            raise MammodissectError(
                f"concept file {str(source)!r} not found; "
                "give a text file with one concept per line"
            )
        return ConceptSet.from_strings(_read_text(path), name=path.name)
    return ConceptSet.from_strings(source)
