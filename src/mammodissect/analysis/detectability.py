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
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch

from mammodissect.concepts.core import ConceptSet
from mammodissect.errors import MammodissectError
from mammodissect.rundir import DETECTABILITY_FILE, RUN_JSON

__all__ = [
    "AUDIT_JSON",
    "DETECTABILITY_FILE",
    "LEAKAGE_FILE",
    "RULE",
    "Detectability",
    "read_detectability",
    "run_calibration",
]

LEAKAGE_FILE = "leakage.csv"
AUDIT_JSON = "audit.json"
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
    calibration:
        The audit's one logistic fit for the whole dissector, ``(slope, intercept)``
        (audit.json's ``calibration``), used for concepts without a fit of their own.
    """

    table: pd.DataFrame
    flagged: frozenset[str]
    source: str
    calibration: tuple[float, float] | None = None

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
        keep: list[str] = []
        low: list[str] = []
        unaudited: list[str] = []
        leaking: list[str] = []
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

    def probabilities(self, cosines: torch.Tensor, concepts: Sequence[str]) -> torch.Tensor:
        """The audit's calibrated probabilities for S's columns (``concepts``):
        sigmoid(slope * cosine + intercept) with the concept's own fit where the audit made one
        (detectability.csv's ``calibration_slope``, ``calibration_intercept``), the whole
        dissector's fit elsewhere.

        Raises
        ------
        MammodissectError
            When a concept has no fit of its own and the audit holds no global fit.
        """
        own = {}
        if {"calibration_slope", "calibration_intercept"} <= set(self.table.columns):
            fits = self.table.dropna(subset=["calibration_slope", "calibration_intercept"])
            own = {
                c: (float(a), float(b))
                for c, a, b in zip(fits["concept"], fits["calibration_slope"],
                                   fits["calibration_intercept"], strict=True)
            }  # fmt: skip
        missing = [c for c in concepts if c not in own]
        if missing and self.calibration is None:
            raise MammodissectError(
                f"the audit {self.source!r} has no global calibration for {len(missing)} "
                f"concepts without a fit of their own (e.g. {missing[0]!r}); give the audit's "
                "folder, whose audit.json holds it"
            )
        fallback = cast(tuple[float, float], self.calibration)  # None only when nothing misses
        pairs = [own.get(c, fallback) for c in concepts]
        slope = torch.tensor([a for a, _ in pairs], dtype=cosines.dtype, device=cosines.device)
        shift = torch.tensor([b for _, b in pairs], dtype=cosines.dtype, device=cosines.device)
        return torch.sigmoid(cosines * slope + shift)

    def describe(self) -> dict[str, Any]:
        """What run.json records of the audit given."""
        known = self.table["auroc"].dropna()
        return {
            "source": self.source,
            "fingerprint": self.fingerprint(),
            "concepts": len(self.table),
            "median_auroc": None if known.empty else round(float(known.median()), 4),
            "flagged_controls": sorted(self.flagged),
            "calibration": None
            if self.calibration is None
            else {"slope": self.calibration[0], "intercept": self.calibration[1]},
        }


def read_detectability(path: str | Path) -> Detectability:
    """Read an audit: its folder or its ``detectability.csv`` (with the ``leakage.csv`` and
    ``audit.json`` beside it, when there are), or a run directory given one (its copy of the
    rows, and run.json's record of the flags and the global calibration).

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
    calibration = None
    leakage_path = table_path.parent / LEAKAGE_FILE
    if leakage_path.is_file():
        leakage = pd.read_csv(leakage_path, keep_default_na=False)
        if {"concept", "flagged"} <= set(leakage.columns):
            marks = leakage["flagged"].astype(str).str.lower().isin(["true", "1"])
            flagged = frozenset(leakage.loc[marks, "concept"].astype(str))
    record = _record(table_path.parent)
    if record is not None:
        flagged = flagged or frozenset(record.get("flagged_controls") or [])
        fit = record.get("calibration")
        if isinstance(fit, dict) and fit.get("slope") is not None:
            calibration = (float(fit["slope"]), float(fit["intercept"]))
    return Detectability(table, flagged, table_path.name, calibration)


def _record(folder: Path) -> dict[str, Any] | None:
    """audit.json of an audit folder, or run.json's ``detectability`` of a run directory."""
    for name, key in ((AUDIT_JSON, None), (RUN_JSON, "detectability")):
        path = folder / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            return data.get(key) if key else data
    return None


def run_calibration(run_path: Path, info: dict[str, Any]) -> Detectability | None:
    """The audit a run's S was calibrated with (``run --calibrated``), read back from the run
    directory; None for a run whose S is the dissector's raw cosines."""
    if not info.get("config", {}).get("calibrated"):
        return None
    return read_detectability(run_path)
