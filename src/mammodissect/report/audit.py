"""The run report's audit section: what the dissector sees, for runs given ``--detectability``.

Reads the run directory's ``detectability.csv`` (the audit's rows for the run's concepts) and
run.json's ``detectability`` record (the audit's summary and, with ``--min-auroc``, the rule
that chose the scored concepts and what it left out). Nothing is recomputed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mammodissect.report import page as pg
from mammodissect.report.data import read_csv_if_present
from mammodissect.rundir import DETECTABILITY_FILE

__all__ = ["audit_link", "audit_section"]

_COLUMNS = ["concept", "category", "images", "auroc", "auroc_low", "auroc_high", "auprc"]
_HEADERS = {"auroc_low": "AUROC 2.5%", "auroc_high": "AUROC 97.5%", "auroc": "AUROC",
            "auprc": "average precision", "images": "annotated images"}  # fmt: skip


def audit_section(path: Path, info: dict[str, Any]) -> str:
    """The ``<section>`` of a run's audit, or ``""`` when the run was given none."""
    table = read_csv_if_present(path / DETECTABILITY_FILE)
    record = info.get("detectability") or {}
    if table is None and not record:
        return ""
    facts = [("audit", str(record.get("source", DETECTABILITY_FILE)))]
    if record.get("median_auroc") is not None:
        facts.append(("median AUROC of the annotated concepts", f"{record['median_auroc']:.3f}"))
    if table is not None and "auroc" in table:
        known = table["auroc"].dropna()
        if len(known):
            facts.append(("annotated concepts at AUROC >= 0.9", f"{(known >= 0.9).mean():.0%}"))
    flagged = record.get("flagged_controls") or []
    facts.append(("controls flagged for leakage", ", ".join(flagged) or "none"))
    if "min_auroc" in record:
        facts += [
            ("scored concepts", f"{record['kept']} ({record['rule']}, min_auroc "
                                f"{record['min_auroc']})"),
            ("left out below min_auroc", str(len(record.get("below_min_auroc", [])))),
            ("left out, not audited", str(record.get("not_audited", 0))),
        ]  # fmt: skip
    shown = (
        f'<div class="wrap">{pg.table_html(table.sort_values("auroc"), _COLUMNS, headers=_HEADERS)}'
        "</div>"
        if table is not None
        else ""
    )
    return (
        '<section id="sec-audit"><h2>What the dissector sees</h2><p class="muted">From '
        "mammodissect audit: how well the dissector's cosines find the images annotated with "
        "each concept (AUROC with a bootstrap 95% interval). Every label in the unit table and "
        f"on the cards carries its concept's AUROC.</p>{pg.facts_html(facts)}{shown}</section>"
    )


def audit_link(section: str) -> str:
    """The navigation link to :func:`audit_section`'s section, when there is one."""
    return '<a href="#sec-audit">audit</a>' if section else ""
