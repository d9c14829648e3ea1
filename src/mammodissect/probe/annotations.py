"""What a probe's own annotations say each image shows, and how that maps onto concept strings.

A probe's annotations are its label columns (a phantom manifest's finding flags, a dataset
layout's density, BI-RADS, findings and lesion descriptors, any manifest's yes/no columns), its
finding boxes and, where it has a ``mask_path`` column, the keys of each image's mask file.
Each becomes a *term* ``field=value`` (``mass_shape=irregular``, ``density=c``, ``mass=true``,
``mask=spiculated margin``): :func:`probe_terms` gives one row of terms per image.

An :class:`AnnotationMap` says which concept strings a term stands for: the rows of a table
(the bundled ``annotation_map.csv``, plus the user's), and two rules that need no row: a value
equal to a concept string (any column; every mask key) is that concept, and a yes/no column
named like a concept (``architectural_distortion``) is that concept when yes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.errors import MammodissectError
from mammodissect.probe.dataset import BOX_COLUMNS, Probe, is_path_column
from mammodissect.textfile import read_utf8

__all__ = [
    "BUNDLED_MAP",
    "MASK_FIELD",
    "AnnotationMap",
    "ProbeTerms",
    "box_terms",
    "normalize",
    "probe_terms",
    "read_map",
    "read_masks",
]

#: The bundled map from dataset annotation values to the bundled concept strings.
BUNDLED_MAP = Path(__file__).parent / "data" / "annotation_map.csv"
#: The field of terms taken from mask files (their keys are concept strings).
MASK_FIELD = "mask"
#: Any field, in a map row.
ANY_FIELD = "*"
_TRUE, _FALSE = {"true", "yes", "y"}, {"false", "no", "n"}
# Values longer than this are free text (a report), never a category.
_MAX_VALUE = 80


def normalize(text: Any) -> str:
    """A field or value as terms hold it: case folded, ``_`` read as a space, spaces single."""
    return " ".join(str(text).replace("_", " ").split()).casefold()


def _field(column: Any) -> str:
    """A label column as a term's field (snake_case)."""
    return normalize(column).replace(" ", "_")


def _skipped(field: str) -> bool:
    """Columns that are no annotation: ids, paths, the split, free text."""
    return (
        field in ("id", "image_id", "split", "report", "exam_description", "notes", "note")
        or field.endswith("_id")
        or is_path_column(field)
    )


def _cell_text(value: Any) -> str:
    """A cell as text ('' when empty): whole numbers without ``.0``."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _values(cell: Any) -> list[str]:
    """The annotation values of a cell: ``|``-joined values split, and a value written as
    ``A-B`` with no space (CBIS-DDSM's ``LOBULATED-IRREGULAR``) given whole and as its parts."""
    found = []
    for part in _cell_text(cell).split("|"):
        part = part.strip()
        if not part or len(part) > _MAX_VALUE:
            continue
        found.append(normalize(part))
        if "-" in part and " " not in part:
            found += [normalize(p) for p in part.split("-") if p.strip()]
    return list(dict.fromkeys(found))


def box_terms(column: Any, cell: Any) -> list[str]:
    """The annotation terms of one cell of a finding box's descriptor column (see
    :func:`probe_terms`); none for id, path and free-text columns."""
    field = _field(column)
    return [] if _skipped(field) else [f"{field}={v}" for v in _values(cell)]


def _is_yes_no(values: pd.Series) -> bool:
    """Whether a column holds yes/no values only (bool, or the words true/false, yes/no)."""
    if pd.api.types.is_bool_dtype(values):
        return True
    present = {normalize(v) for v in values.dropna()} - {""}
    return bool(present) and present <= _TRUE | _FALSE


def _is_zero_one(values: pd.Series) -> bool:
    """Whether a numeric column holds only 0 and 1."""
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    present = set(values.dropna().tolist())
    return bool(present) and present <= {0, 1}


def read_masks(path: Path) -> dict[str, np.ndarray]:
    """Concept -> bool mask from a mask file (``.npz``, the format ``phantom write`` uses).

    Raises
    ------
    MammodissectError
        When the file cannot be read.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name].astype(bool) for name in data.files}
    except (OSError, ValueError) as err:
        raise MammodissectError(f"mask file {path.name!r} is unreadable ({err})") from err


@dataclass(frozen=True)
class ProbeTerms:
    """The annotation terms of a probe's images.

    Attributes
    ----------
    terms:
        Every term any image has (``field=value``), sorted.
    present:
        (images x terms) bool: image ``i`` has term ``j``.
    """

    terms: tuple[str, ...]
    present: np.ndarray

    def digest(self) -> str:
        """A hash of the terms and which image has which (for cache fingerprints)."""
        text = "\n".join(self.terms).encode() + np.packbits(self.present).tobytes()
        return hashlib.sha256(text + str(self.present.shape).encode()).hexdigest()[:16]


def probe_terms(probe: Probe) -> ProbeTerms:
    """The annotation terms of each probe image, from its labels and mask files.

    Label columns: a yes/no column gives ``field=true`` where yes; any other column gives
    ``field=value`` for each value of the cell (see :func:`normalize`; a column of 0 and 1
    also gives ``field=true`` where 1); id, path, split and free-text columns are left out.
    A ``mask_path`` column gives ``mask=key`` for every non-empty mask in the image's mask
    file; each finding box gives ``findings=name`` for its finding names and ``column=value``
    for its descriptor columns (CBIS-DDSM's ``mass_shape``, ...).

    Raises
    ------
    MammodissectError
        When a mask file is missing or unreadable.
    """
    rows: list[set[str]] = [set() for _ in probe.items]
    labels = probe.labels
    if labels is not None:
        for column in labels.columns:
            field = _field(column)
            if _skipped(field):
                continue
            values = labels[column]
            if _is_yes_no(values):
                for row, value in enumerate(values):
                    if not pd.isna(value) and (value is True or normalize(value) in _TRUE):
                        rows[row].add(f"{field}=true")
                continue
            zero_one = _is_zero_one(values)
            for row, value in enumerate(values):
                found = box_terms(field, value)
                rows[row].update(found)
                if zero_one and found == [f"{field}=1"]:
                    rows[row].add(f"{field}=true")  # a 0/1 column is a yes/no column too
        if "mask_path" in labels.columns:
            for row, rel in enumerate(labels["mask_path"]):
                rows[row].update(_mask_terms(probe, row, rel))
    if probe.boxes is not None:  # each box: its finding names and descriptor columns
        extra = [c for c in probe.boxes.columns if c not in BOX_COLUMNS]
        for box in probe.boxes.to_dict("records"):
            of_image = rows[probe.position(str(box["image_id"]))]
            of_image.update(box_terms("findings", box["finding"]))
            for column in extra:
                of_image.update(box_terms(column, box[column]))
    terms = tuple(sorted(set().union(*rows)))
    index = {term: j for j, term in enumerate(terms)}
    present = np.zeros((len(probe), len(terms)), dtype=bool)
    for row, of_image in enumerate(rows):
        present[row, [index[t] for t in of_image]] = True
    return ProbeTerms(terms, present)


def _mask_terms(probe: Probe, row: int, rel: Any) -> set[str]:
    if not isinstance(rel, str) or not rel.strip():
        return set()
    path = Path(probe.root) / rel
    if not path.is_file():
        raise MammodissectError(
            f"mask file {rel!r} of image {probe.items[row].image_id!r} not found under the "
            "probe root; rewrite the probe (`mammodissect phantom write`) or fix mask_path"
        )
    return {f"{MASK_FIELD}={normalize(k)}" for k, mask in read_masks(path).items() if mask.any()}


@dataclass(frozen=True)
class AnnotationMap:
    """Which concept strings an annotation term stands for.

    Attributes
    ----------
    rows:
        ``(field, value)`` (normalised; field ``*`` for any) -> the concept strings (as the
        map writes them) the pair stands for.
    sources:
        Where the rows came from (file names), for run.json.
    """

    rows: dict[tuple[str, str], tuple[str, ...]]
    sources: tuple[str, ...] = ()

    def digest(self) -> str:
        """A hash of the map's rows (for cache fingerprints)."""
        text = "\n".join(f"{f}\t{v}\t{'|'.join(c)}" for (f, v), c in sorted(self.rows.items()))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def concepts_of(self, term: str) -> set[str]:
        """The concept strings (case folded) a term ``field=value`` stands for."""
        field, _, value = term.partition("=")
        found = {normalize(c) for c in self.rows.get((field, value), ())}
        found |= {normalize(c) for c in self.rows.get((ANY_FIELD, value), ())}
        # no row needed: a yes/no column named like a concept, a value that is a concept
        found.add(normalize(field) if value == "true" else value)
        return found

    def term_matrix(self, concepts: Sequence[str], terms: Sequence[str]) -> np.ndarray:
        """(concepts x terms) bool: concept ``m`` is what term ``j`` stands for (strings
        compared as :func:`normalize` leaves them)."""
        index: dict[str, list[int]] = {}
        for m, concept in enumerate(concepts):
            index.setdefault(normalize(concept), []).append(m)
        out = np.zeros((len(concepts), len(terms)), dtype=bool)
        for j, term in enumerate(terms):
            for concept in self.concepts_of(term):
                out[index.get(concept, []), j] = True
        return out


def _read_rows(path: Path, text: str) -> list[tuple[str, str, str]]:
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    reader = csv.DictReader(io.StringIO("\n".join(lines)))
    columns = {normalize(c) for c in reader.fieldnames or []}
    if not {"field", "value", "concept"} <= columns:
        raise MammodissectError(
            f"annotation map {path.name!r} needs the columns field, value, concept (found: "
            f"{', '.join(reader.fieldnames or []) or 'none'})"
        )
    rows = []
    for number, row in enumerate(reader, start=2):
        got = {normalize(k): (v or "").strip() for k, v in row.items() if k is not None}
        if not got["field"] or not got["value"]:
            raise MammodissectError(
                f"annotation map {path.name!r} row {number - 1}: field and value must not be empty"
            )
        field = ANY_FIELD if got["field"] == ANY_FIELD else _field(got["field"])
        rows.append((field, normalize(got["value"]), got["concept"]))
    return rows


def read_map(extra: str | os.PathLike[str] | None = None) -> AnnotationMap:
    """The bundled annotation map, with the rows of ``extra`` (a CSV with ``field, value,
    concept``) added: a pair ``extra`` names replaces the bundled rows of that pair, and a
    row with an empty concept removes them (the two rules that need no row still apply).

    Raises
    ------
    MammodissectError
        When a map file is missing, not UTF-8, or lacks the columns.
    """
    rows: dict[tuple[str, str], tuple[str, ...]] = {}
    sources = []
    for number, path in enumerate([BUNDLED_MAP, *([Path(extra)] if extra else [])]):
        if not path.is_file():
            raise MammodissectError(f"annotation map {path.name!r} not found; check the path")
        mine: dict[tuple[str, str], list[str]] = {}
        for field, value, concept in _read_rows(path, read_utf8(path, "annotation map")):
            mine.setdefault((field, value), [])
            if concept:
                mine[(field, value)].append(concept)
        for pair, concepts in mine.items():
            rows[pair] = tuple(dict.fromkeys(concepts))
        sources.append("bundled" if number == 0 else path.name)
    return AnnotationMap({k: v for k, v in rows.items() if v}, tuple(sources))
