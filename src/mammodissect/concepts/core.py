"""Concept sets: the strings units are labelled with, and their categories.

A :class:`ConceptSet` is an ordered tuple of unique strings, each with an optional sub-category
(``category``), broad category (``broad_category``) and control flag (``control``: True for a
non-mammography control concept). Every reader turns its file into :class:`Entry` rows and
:func:`build` makes the set, applying one rule to concepts listed more than once:

- ``first`` (default): the first listing's categories win;
- ``last``: the last listing's categories win;
- ``multi``: every listing is kept as a multi-label, the categories joined with ``"|"``
  (``category="mass margin|mass shape"``; ``broad_category`` is one name when all labels share it,
  else one name per category, aligned).

Either way the concept keeps the place and spelling of its first listing. Two strings are the same
concept when they are equal after stripping, collapsing inner whitespace and case-folding
(``"Mass"`` repeats ``"mass"``). :meth:`ConceptSet.describe` records the rule and what it did.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pandas as pd

from mammodissect.errors import MammodissectError

__all__ = ["DUPLICATE_RULES", "MULTI_SEP", "ConceptSet", "Entry", "build"]

log = logging.getLogger(__name__)

#: How a concept listed under two categories is resolved (``first`` is the default).
DUPLICATE_RULES = ("first", "last", "multi")
#: Joins the labels of a multi-label concept (``duplicates="multi"``).
MULTI_SEP = "|"
_EXAMPLES = 3


class Entry(NamedTuple):
    """One listing of a concept as a reader found it; ``where`` says where (``line 4``)."""

    concept: str
    category: str | None = None
    broad_category: str | None = None
    control: bool | None = None
    where: str = ""


@dataclass(frozen=True)
class ConceptSet:
    """An ordered list of unique concept strings with optional categories.

    Attributes
    ----------
    concepts:
        The strings, in file order, each once.
    category, broad_category:
        Per concept, its sub-category and broad category (None when unknown); multi-label
        concepts join their labels with ``"|"`` (see :meth:`labels`).
    control:
        Per concept, True for a non-mammography control concept (None when unknown).
    name:
        Where the set came from (a bundled set's name or a file name).
    notes:
        What loading did: blank lines skipped, the duplicate rule and the concepts it affected.
    """

    concepts: tuple[str, ...]
    category: tuple[str | None, ...]
    broad_category: tuple[str | None, ...]
    control: tuple[bool | None, ...]
    name: str = "custom"
    notes: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.concepts)
        if not n:
            raise MammodissectError(
                f"concept set {self.name!r} is empty; give at least one concept"
            )
        if not len(self.category) == len(self.broad_category) == len(self.control) == n:
            raise MammodissectError(f"concept set {self.name!r}: category columns misaligned")

    @classmethod
    def from_strings(
        cls, strings: Iterable[str], name: str = "custom", duplicates: str = "first"
    ) -> ConceptSet:
        """Build a set without categories; blank strings dropped, repeats kept once (first)."""
        entries = (Entry(str(s), where=f"item {i + 1}") for i, s in enumerate(strings))
        return build(entries, name=name, duplicates=duplicates)

    @classmethod
    def from_frame(
        cls, frame: pd.DataFrame, name: str = "custom", duplicates: str = "first"
    ) -> ConceptSet:
        """Build from a DataFrame with a ``concept`` column and optional category columns."""
        if "concept" not in frame.columns:
            raise MammodissectError(
                f"concept table {name!r} has no 'concept' column (columns: "
                f"{', '.join(map(str, frame.columns))})"
            )
        entries = []
        for i, row in enumerate(frame.to_dict("records")):
            values = [_cell(row.get(key)) for key in ("category", "broad_category")]
            entries.append(
                Entry(
                    str(row["concept"]),
                    values[0],
                    values[1],
                    parse_control(row.get("control"), f"{name} row {i + 1}"),
                    f"row {i + 1}",
                )
            )
        return build(entries, name=name, duplicates=duplicates)

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self) -> Iterator[str]:
        return iter(self.concepts)

    @property
    def has_categories(self) -> bool:
        """Whether any concept carries a category."""
        return any(c is not None for c in (*self.category, *self.broad_category))

    def entries(self) -> list[Entry]:
        """One :class:`Entry` per concept, in order."""
        return [
            Entry(*row)
            for row in zip(
                self.concepts, self.category, self.broad_category, self.control, strict=True
            )
        ]

    def labels(self, index: int) -> list[tuple[str | None, str | None]]:
        """The ``(broad_category, category)`` pairs of concept ``index`` (several: multi-label)."""
        return split_labels(self.category[index], self.broad_category[index], self.concepts[index])

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

    def subset(self, indices: Iterable[int], name: str | None = None) -> ConceptSet:
        """The concepts at ``indices`` (in that order) with their categories and flags."""
        picked = [int(i) for i in indices]
        return ConceptSet(
            tuple(self.concepts[i] for i in picked),
            tuple(self.category[i] for i in picked),
            tuple(self.broad_category[i] for i in picked),
            tuple(self.control[i] for i in picked),
            name or self.name,
            {**self.notes, "subset_of": len(self)},
        )

    def fingerprint(self) -> str:
        """A short hash of the strings, in order."""
        return hashlib.sha256("\n".join(self.concepts).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """Name, size, hash, control count and what loading did (blank lines, duplicates)."""
        flags = [c for c in self.control if c is not None]
        return {
            "name": self.name,
            "count": len(self),
            "sha256_16": self.fingerprint(),
            "categories": self.has_categories,
            "controls": sum(flags) if flags else None,
            **self.notes,
        }


def parse_control(value: Any, where: str) -> bool | None:
    """A control flag from a cell: true/false, yes/no, 1/0; blank means unknown (None)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float) and value != value:  # NaN from pandas
        return None
    text = str(value).strip().lower()
    if text in ("", "none", "nan"):
        return None
    if text in ("true", "yes", "1", "1.0", "y", "t"):
        return True
    if text in ("false", "no", "0", "0.0", "n", "f"):
        return False
    raise MammodissectError(f"{where}: control {value!r} is not true/false; write true or false")


def _cell(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = " ".join(str(value).split())
    return text or None


def normalise(text: str) -> str:
    """Surrounding whitespace stripped, inner runs of whitespace made one space."""
    return " ".join(str(text).split())


def concept_key(text: str) -> str:
    """The key under which two spellings are the same concept (whitespace- and case-folded)."""
    return normalise(text).casefold()


def split_labels(
    category: str | None, broad: str | None, concept: str = ""
) -> list[tuple[str | None, str | None]]:
    """``(broad, category)`` pairs of a possibly multi-label concept (labels joined by ``|``)."""
    cats = category.split(MULTI_SEP) if category is not None else [None]
    broads = broad.split(MULTI_SEP) if broad is not None else [None]
    if len(broads) == 1:
        broads = broads * len(cats)
    elif len(cats) == 1:
        cats = cats * len(broads)
    if len(broads) != len(cats):
        raise MammodissectError(
            f"concept {concept!r}: category {category!r} has {len(cats)} labels but "
            f"broad_category {broad!r} has {len(broads)}; give one broad category or one per label"
        )
    return list(zip(broads, cats, strict=True))


def _join(
    labels: Sequence[tuple[str | None, str | None, bool | None]],
) -> tuple[str | None, str | None, bool | None]:
    """Merge (broad, category, control) labels into one multi-label triple."""
    pairs: list[tuple[str | None, str | None]] = []
    for broad, cat, _ in labels:
        for pair in split_labels(cat, broad):
            if pair not in pairs:
                pairs.append(pair)
    flags = [c for *_, c in labels if c is not None]
    control = None if not flags else all(flags)
    if len(pairs) == 1:
        return pairs[0][0], pairs[0][1], control
    broads = [b for b, _ in pairs]
    cats = [c for _, c in pairs]
    category = None if all(c is None for c in cats) else MULTI_SEP.join(c or "" for c in cats)
    if all(b == broads[0] for b in broads):
        broad = broads[0]
    else:
        broad = MULTI_SEP.join(b or "" for b in broads)
    return broad, category, control


def check_rule(duplicates: str) -> str:
    """``duplicates`` itself when it is a known rule, else an error listing the rules."""
    if duplicates not in DUPLICATE_RULES:
        raise MammodissectError(
            f"duplicates rule {duplicates!r} unknown; choose one of {', '.join(DUPLICATE_RULES)}"
        )
    return duplicates


def build(
    entries: Iterable[Entry],
    name: str = "custom",
    duplicates: str = "first",
    blank_lines: int = 0,
) -> ConceptSet:
    """Make a :class:`ConceptSet` from listings, skipping blanks and resolving repeats.

    Parameters
    ----------
    entries:
        The listings in file order.
    name:
        The set's name (messages and run.json use it).
    duplicates:
        ``first``, ``last`` or ``multi``: whose categories a repeated concept gets.
    blank_lines:
        Blank lines the reader already skipped, added to the count recorded in ``notes``.

    Raises
    ------
    MammodissectError
        For an unknown rule, or when no concept is left.
    """
    check_rule(duplicates)
    order: dict[str, int] = {}
    texts: list[str] = []
    where: list[str] = []
    labels: list[list[tuple[str | None, str | None, bool | None]]] = []
    exact = folded = 0
    examples: list[str] = []
    for entry in entries:
        text = normalise(entry.concept)
        if not text:
            blank_lines += 1
            continue
        label = (_cell(entry.broad_category), _cell(entry.category), entry.control)
        key = text.casefold()
        if key not in order:
            order[key] = len(texts)
            texts.append(text)
            where.append(entry.where)
            labels.append([label])
            continue
        i = order[key]
        labels[i].append(label)
        if text == texts[i]:
            exact += 1
        else:
            folded += 1
        if len(examples) < _EXAMPLES:
            first = f" ({where[i]})" if where[i] else ""
            again = f" ({entry.where})" if entry.where else ""
            examples.append(f"{text!r}{again} repeats {texts[i]!r}{first}")
    resolved = []
    for listed in labels:
        if duplicates == "first" or len(listed) == 1:
            resolved.append(listed[0])
        elif duplicates == "last":
            resolved.append(listed[-1])
        else:
            resolved.append(_join(listed))
    affected = sum(len(listed) > 1 for listed in labels)
    if affected:
        log.warning(
            "concept set %s: %d concepts listed more than once (%d exact repeats, %d differing "
            "only in case or spacing); kept one of each, categories by rule %r; e.g. %s",
            name,
            affected,
            exact,
            folded,
            duplicates,
            "; ".join(examples),
        )
    if blank_lines:
        log.info("concept set %s: skipped %d blank lines", name, blank_lines)
    notes = {
        "blank_lines_skipped": blank_lines,
        "duplicates": {
            "rule": duplicates,
            "affected": affected,
            "exact": exact,
            "case_or_space": folded,
            "multi_label": sum(bool(c) and MULTI_SEP in c for _, c, _ in resolved if c is not None),
            "examples": examples,
        },
    }
    return ConceptSet(
        tuple(texts),
        tuple(c for _, c, _ in resolved),
        tuple(b for b, _, _ in resolved),
        tuple(f for _, _, f in resolved),
        name,
        notes,
    )
