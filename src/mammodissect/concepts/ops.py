"""Operations on concept sets: merge, filter by category, count per category."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Sequence

import pandas as pd

from mammodissect.concepts.core import ConceptSet, build
from mammodissect.errors import MammodissectError

__all__ = ["filter_set", "kinds_text", "merge", "report", "summary"]

#: How :func:`summary` names a missing category.
NONE_LABEL = "(none)"


def merge(
    sets: Sequence[ConceptSet], duplicates: str = "first", name: str | None = None
) -> ConceptSet:
    """Concatenate sets in order; a concept in several sets is resolved by ``duplicates``.

    Examples
    --------
    >>> from mammodissect.concepts import load
    >>> merge([load(["mass", "red"]), load(["Mass", "wood"])]).concepts
    ('mass', 'red', 'wood')
    """
    if not sets:
        raise MammodissectError("merge needs at least one concept set")
    entries = [
        entry._replace(where=f"{concepts.name} #{i + 1}")
        for concepts in sets
        for i, entry in enumerate(concepts.entries())
    ]
    blank = sum(int(c.notes.get("blank_lines_skipped", 0)) for c in sets)
    return build(
        entries,
        name=name or "+".join(c.name for c in sets),
        duplicates=duplicates,
        blank_lines=blank,
    )


def _known(concepts: ConceptSet, which: int) -> list[str]:
    names: dict[str, None] = {}
    for i in range(len(concepts)):
        for label in concepts.labels(i):
            name = label[which]
            if name is not None:
                names.setdefault(name, None)
    return list(names)


def _match(wanted: Iterable[str], known: list[str], what: str, concepts: ConceptSet) -> set[str]:
    folded = {k.casefold(): k for k in known}
    chosen = set()
    for name in wanted:
        key = " ".join(name.split()).casefold()
        if key not in folded:
            close = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.5)
            hint = f" (did you mean {folded[close[0]]!r}?)" if close else ""
            listing = ", ".join(repr(k) for k in known) or "none (the set has no categories)"
            raise MammodissectError(
                f"{what} {name!r} is not in concept set {concepts.name!r}{hint}; known: {listing}"
            )
        chosen.add(folded[key])
    return chosen


def filter_set(
    concepts: ConceptSet,
    broad: Iterable[str] | str | None = None,
    category: Iterable[str] | str | None = None,
    controls: bool = True,
    name: str | None = None,
) -> ConceptSet:
    """The concepts under any of the given broad categories or categories, in order.

    Names match case-insensitively. With neither ``broad`` nor ``category`` every concept is
    a candidate; ``controls=False`` then drops the control concepts (``control is True``).
    A multi-label concept is kept when any of its labels matches, with all its labels.

    Raises
    ------
    MammodissectError
        For a name the set does not have (listing the known names, suggesting the closest), or
        when nothing is left.
    """
    broad = [broad] if isinstance(broad, str) else list(broad or [])
    category = [category] if isinstance(category, str) else list(category or [])
    broads = _match(broad, _known(concepts, 0), "broad category", concepts)
    cats = _match(category, _known(concepts, 1), "category", concepts)
    keep = []
    for i, entry in enumerate(concepts.entries()):
        if not controls and entry.control is True:
            continue
        if broads or cats:
            labels = concepts.labels(i)
            if not any(b in broads or c in cats for b, c in labels):
                continue
        keep.append(i)
    if not keep:
        raise MammodissectError(
            f"the filter left no concept of {concepts.name!r}; loosen --broad/--category or "
            "drop --no-controls"
        )
    picked = concepts.subset(keep, name or f"{concepts.name} (filtered)")
    notes = {k: v for k, v in picked.notes.items() if k != "subset_of"}
    return dataclasses.replace(picked, notes={**notes, "filtered_from": len(concepts)})


def summary(concepts: ConceptSet) -> pd.DataFrame:
    """Concepts per (broad category, category): ``broad_category, category, control, count``.

    Groups appear in order of first appearance; a multi-label concept counts under each label;
    a missing category is named ``(none)``.
    """
    counts: dict[tuple[str, str, bool | None], int] = {}
    for i, flag in enumerate(concepts.control):
        for broad, category in concepts.labels(i):
            key = (broad or NONE_LABEL, category or NONE_LABEL, flag)
            counts[key] = counts.get(key, 0) + 1
    return pd.DataFrame(
        [(b, c, f, n) for (b, c, f), n in counts.items()],
        columns=["broad_category", "category", "control", "count"],
    )


def kinds_text(flags: Iterable[bool | None]) -> str:
    """How many concepts are mammography concepts and how many controls, as text."""
    values = list(flags)
    mammo = sum(f is False for f in values)
    controls = sum(f is True for f in values)
    unknown = len(values) - mammo - controls
    text = f"{mammo} mammography, {controls} controls"
    return text + (f", {unknown} unflagged" if unknown else "")


def report(concepts: ConceptSet) -> str:
    """Counts per broad category and category, as text (``mammodissect concepts show``)."""
    lines = [f"{concepts.name}: {len(concepts)} concepts ({kinds_text(concepts.control)})"]
    rule = concepts.notes.get("duplicates", {})
    if rule.get("affected"):
        lines.append(
            f"  {rule['affected']} concepts listed more than once, resolved by rule "
            f"{rule['rule']!r}"
        )
    table = summary(concepts)
    width = max(len(str(c)) for c in table["category"]) + 2
    for broad, group in table.groupby("broad_category", sort=False):
        flags = {f for f in group["control"]}
        kind = "control" if flags == {True} else "mammography" if flags == {False} else "mixed"
        kind = "unflagged" if flags == {None} else kind
        lines.append(f"{broad}  ({int(group['count'].sum())}, {kind})")
        for category, count in zip(group["category"], group["count"], strict=True):
            lines.append(f"    {category:<{width}}{count:>5}")
    return "\n".join(lines)
