"""An audit's detectability table, read back to restrict and annotate a run's labels.

``mammodissect audit`` writes ``detectability.csv`` (one row per annotated concept with its
AUROC) and ``leakage.csv`` (one row per control with ``flagged``). A run given the audit
(``--detectability``) labels units from *visible* concepts only when ``--min-auroc`` is set:

- a mammography concept is kept when the audit scored it and its AUROC is at least the
  threshold (a concept the audit could not score, for want of annotations or of negatives,
  is not known to be visible and is left out);
- a control concept is kept unless the audit flagged it for leakage, so that the study's
  mammography-versus-control counts keep their meaning (a control has no annotations, hence no
  AUROC);

and every label carries its concept's AUROC (``detectability_auroc`` in neurons.csv) whether or
not the labels were restricted.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.concepts.core import ConceptSet
from mammodissect.errors import MammodissectError
from mammodissect.rundir import DETECTABILITY_FILE

__all__ = [
    "DETECTABILITY_FILE",
    "LEAKAGE_FILE",
    "RULE",
    "Detectability",
    "read_detectability",
]

LEAKAGE_FILE = "leakage.csv"
#: How ``--min-auroc`` chooses the concepts, as run.json records it.
RULE = "mammography concepts with an audit AUROC >= min_auroc; controls unless flagged for leakage"


@dataclass(frozen=True)
class Detectability:
    """An audit's per-concept AUROC and its leakage flags.

    Attributes
    ----------
    table:
        detectability.csv (``concept`` and ``auroc`` at least).
    flagged:
        The control concepts leakage.csv flags (empty without a leakage.csv).
    source:
        The file's name, for run.json.
    """

    table: pd.DataFrame
    flagged: frozenset[str]
    source: str

    def aurocs(self) -> dict[str, float]:
        """Concept -> AUROC (NaN when the audit had one class only)."""
        return dict(zip(self.table["concept"], self.table["auroc"].astype(float), strict=True))

    def fingerprint(self) -> str:
        """A short hash of the concepts, their AUROCs and the flags."""
        text = self.table[["concept", "auroc"]].to_csv(index=False) + "|".join(sorted(self.flagged))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def visible(self, concepts: ConceptSet, min_auroc: float) -> tuple[np.ndarray, dict[str, Any]]:
        """Which concepts of ``concepts`` stay under :data:`RULE`, and what run.json records."""
        aurocs = self.aurocs()
        keep, low, unaudited, leaking = [], [], [], []
        for concept, control in zip(concepts.concepts, concepts.control, strict=True):
            if control is True:
                kept = concept not in self.flagged
                (leaking if not kept else keep).append(concept)
                continue
            value = aurocs.get(concept, math.nan)
            if math.isnan(value):
                unaudited.append(concept)
            elif value < min_auroc:
                low.append(concept)
            else:
                keep.append(concept)
        chosen = set(keep)
        record = {
            "rule": RULE,
            "min_auroc": min_auroc,
            "kept": len(keep),
            "below_min_auroc": low,
            "not_audited": len(unaudited),
            "leaking_controls": leaking,
        }
        return np.array([c in chosen for c in concepts.concepts]), record

    def describe(self) -> dict[str, Any]:
        """What run.json records of the audit given."""
        known = self.table["auroc"].dropna()
        return {
            "source": self.source,
            "fingerprint": self.fingerprint(),
            "concepts": len(self.table),
            "median_auroc": None if known.empty else round(float(known.median()), 4),
            "flagged_controls": sorted(self.flagged),
        }


def read_detectability(path: str | Path) -> Detectability:
    """Read an audit: its folder or its ``detectability.csv`` (with the ``leakage.csv`` beside
    it, when there is one).

    Raises
    ------
    MammodissectError
        When the file is missing or lacks the ``concept`` and ``auroc`` columns.
    """
    path = Path(path)
    table_path = path / DETECTABILITY_FILE if path.is_dir() else path
    if not table_path.is_file():
        raise MammodissectError(
            f"detectability table {table_path.name!r} not found; give the folder or the "
            "detectability.csv that `mammodissect audit` wrote"
        )
    try:
        table = pd.read_csv(table_path, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise MammodissectError(f"cannot read {table_path.name!r} ({err})") from None
    if not {"concept", "auroc"} <= set(table.columns):
        raise MammodissectError(
            f"{table_path.name!r} lacks the columns concept and auroc; is it an audit's "
            "detectability.csv?"
        )
    table["concept"] = table["concept"].astype(str)
    table["auroc"] = pd.to_numeric(table["auroc"], errors="coerce")
    flagged: frozenset[str] = frozenset()
    leakage_path = table_path.parent / LEAKAGE_FILE
    if leakage_path.is_file():
        leakage = pd.read_csv(leakage_path, keep_default_na=False)
        if {"concept", "flagged"} <= set(leakage.columns):
            marks = leakage["flagged"].astype(str).str.lower().isin(["true", "1"])
            flagged = frozenset(leakage.loc[marks, "concept"].astype(str))
    return Detectability(table, flagged, table_path.name)
