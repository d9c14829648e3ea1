"""What ``mammodissect evaluate`` found for a run, read back as one row per run.

``mammodissect demo --evaluate`` puts these figures into its summary and the comparison's
report shows them side by side, so both read them here, from each run's ``evaluation.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mammodissect.analysis.runs import EVALUATION_JSON
from mammodissect.errors import MammodissectError

__all__ = ["evaluation_row", "evaluation_table", "read_evaluation"]


def read_evaluation(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's ``evaluation.json``, or None when the run was not evaluated.

    Raises
    ------
    MammodissectError
        When the file is there but not JSON.
    """
    path = Path(run_dir) / EVALUATION_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise MammodissectError(
            f"{Path(run_dir).name}/{EVALUATION_JSON} is not JSON ({err}); rerun "
            "`mammodissect evaluate`"
        ) from err


def evaluation_row(info: Mapping[str, Any]) -> dict[str, Any]:
    """One run's headline figures from its ``evaluation.json``: units above the 99th-percentile
    null, units grounded in masks and their top-1 agreement, units grounded in density/BI-RADS
    classes and how often their labels name the class, planted units' top-1 recovery (and
    with the annotations as S: the ceiling), the
    head check's top-1-in-class rate (C variants; None otherwise) and the share of top-1
    labels that survive each stability check."""
    counts, overall = info["counts"], info["overall"]
    head, planted = info.get("head_check") or {}, info.get("planted") or {}
    return {
        "units_above_null_99": counts["units_above_null_99"],
        "grounded_units": counts["grounded_units"],
        "top1_match": overall.get("top1_match"),
        "image_grounded_units": counts.get("image_grounded_units"),
        "image_top1_match": overall.get("image_top1_match"),
        "planted_top1_recovery": planted.get("top1_recovery"),
        "planted_top1_ceiling": (planted.get("annotation_ceiling") or {}).get("top1_recovery"),
        "head_top1_in_class": head.get("top1_in_class"),
        **info.get("stability", {}),
    }


def evaluation_table(runs: Mapping[str, str | Path]) -> pd.DataFrame | None:
    """``run`` and :func:`evaluation_row` for every evaluated run of ``runs`` (name -> run
    directory), in the given order; None when none was evaluated."""
    rows = []
    for name, folder in runs.items():
        info = read_evaluation(folder)
        if info is not None:
            rows.append({"run": name, **evaluation_row(info)})
    return pd.DataFrame(rows) if rows else None
