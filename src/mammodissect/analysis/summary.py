"""``summary.csv``: one row per layer of a run, in model order.

Every unit's top-1 score is compared with its layer's mean top-1 score (the *local threshold*,
as in Mammo-CLIP Dissect): a unit *passes* when its score is at least that mean. Per layer,
``summary.csv`` has

``layer, position, units, score_mean, score_median, score_std, threshold, passing_units,
passing_fraction, mammography_units, control_units, mammography_fraction, unique_concepts,
passing_unique_concepts, top_concepts``

- ``position``: the layer's index in model order (0 = first recorded layer);
- ``score_std``: population standard deviation (``ddof=0``);
- ``threshold``: the local threshold, equal to ``score_mean``;
- ``mammography_units`` / ``control_units``: passing units whose top-1 concept is a mammography
  concept (control flag False) / a control (flag True);
- ``mammography_fraction``: ``mammography_units / (mammography_units + control_units)`` (empty
  when the concept set has no control flags);
- ``unique_concepts`` / ``passing_unique_concepts``: distinct top-1 concepts among all / passing
  units;
- ``top_concepts``: the five most frequent top-1 concepts among passing units,
  ``concept (count)`` joined with ``|`` (ties alphabetical).

Further per-layer columns (such as ``units_above_null`` from a null-model test) come through
``extra`` and are placed after ``passing_fraction``.

The counts per broad category and per category among passing units go to a tidy companion,
``summary_categories.csv``, one row per (layer, label):

``layer, position, level, broad_category, category, control, units, fraction``

with ``level`` ``broad_category`` (``category`` empty) or ``category``; ``units`` passing units
whose top-1 concept carries the label, ``fraction`` of the layer's passing units, ``control``
True when every concept of the set under that label is a control (None when unknown). A
multi-label concept counts once under each of its labels, so a layer's counts may sum to more
than its passing units. Labels no passing unit has are left out.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.analysis.runs import (
    CONTROL,
    MAMMOGRAPHY,
    kind_of,
    label_pairs,
    layer_scores,
    load_run,
    top_counts,
)
from mammodissect.errors import MammodissectError
from mammodissect.rundir import SUMMARY_CATEGORIES_FILE, SUMMARY_FILE

__all__ = [
    "CATEGORY_COLUMNS",
    "SUMMARY_CATEGORIES_FILE",
    "SUMMARY_COLUMNS",
    "SUMMARY_FILE",
    "category_counts",
    "summarize",
    "write_summary",
]

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "layer",
    "position",
    "units",
    "score_mean",
    "score_median",
    "score_std",
    "threshold",
    "passing_units",
    "passing_fraction",
    "mammography_units",
    "control_units",
    "mammography_fraction",
    "unique_concepts",
    "passing_unique_concepts",
    "top_concepts",
]
CATEGORY_COLUMNS = [
    "layer",
    "position",
    "level",
    "broad_category",
    "category",
    "control",
    "units",
    "fraction",
]
#: Top-1 concepts listed in ``top_concepts``.
TOP_CONCEPTS = 5


def _label_controls(best: pd.DataFrame) -> dict[tuple[str, str | None], bool | None]:
    """Per (level, label): True when all concepts seen under it are controls, False when none."""
    flags: dict[tuple[str, str | None], set[Any]] = {}
    for category, broad, control in best[["category", "broad_category", "control"]].itertuples(
        index=False
    ):
        for b, c in label_pairs(category, broad):
            flags.setdefault(("broad_category", b), set()).add(control)
            flags.setdefault(("category", c), set()).add(control)
    return {key: next(iter(v)) if len(v) == 1 else None for key, v in flags.items()}


def category_counts(passing: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows ``level, broad_category, category, units`` for the passing units of one layer.

    Broad-category rows first (most units first), then category rows; a multi-label concept
    counts under each of its labels.
    """
    broad: dict[str, int] = {}
    cats: dict[tuple[str | None, str], int] = {}
    for category, broad_name in passing[["category", "broad_category"]].itertuples(index=False):
        pairs = label_pairs(category, broad_name)
        for b in dict.fromkeys(b for b, _ in pairs if b is not None):
            broad[b] = broad.get(b, 0) + 1
        for key in dict.fromkeys((b, c) for b, c in pairs if c is not None):
            cats[key] = cats.get(key, 0) + 1
    rows = [
        {"level": "broad_category", "broad_category": b, "category": None, "units": n}
        for b, n in sorted(broad.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    rows += [
        {"level": "category", "broad_category": b, "category": c, "units": n}
        for (b, c), n in sorted(cats.items(), key=lambda kv: (-kv[1], str(kv[0])))
    ]
    return rows


def summarize(
    best: pd.DataFrame,
    layers: Sequence[str] | None = None,
    *,
    extra: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-layer statistics of a run's top-1 concepts (see the module docstring for columns).

    Parameters
    ----------
    best:
        One row per unit with ``layer, unit, concept, score`` and optionally ``category,
        broad_category, control`` (rank-1 rows of neurons.csv; other ranks are dropped when a
        ``rank`` column is present).
    layers:
        The layers in model order; default: their order of first appearance in ``best``
        (never sorted as strings).
    extra:
        Further columns, ``{column: {layer: value}}``, inserted after ``passing_fraction``
        (layers missing from a mapping get an empty value).

    Returns
    -------
    (summary, categories)
        ``summary.csv``'s and ``summary_categories.csv``'s tables.
    """
    if "rank" in best:
        best = best[best["rank"] == 1]
    best = best.copy()
    for column in ("category", "broad_category", "control"):
        if column not in best:
            best[column] = None
    if "kind" not in best:
        best["kind"] = [kind_of(c) for c in best["control"]]
    order = list(layers) if layers is not None else list(dict.fromkeys(best["layer"]))
    unknown = sorted(set(best["layer"]) - set(order))
    if unknown:
        raise MammodissectError(
            f"layers {', '.join(unknown)} are in the neurons table but not in the layer order; "
            "give every layer in `layers`"
        )
    stats = layer_scores(best, order).set_index("layer")
    controls = _label_controls(best)
    grouped = dict(tuple(best.groupby("layer", sort=False)))
    rows, category_rows = [], []
    for position, layer in enumerate(order):
        units = grouped.get(layer, best.iloc[0:0])
        mean = stats.loc[layer, "score_mean"]
        passing = units[units["score"] >= mean]
        n_pass = len(passing)
        mammography = int((passing["kind"] == MAMMOGRAPHY).sum())
        control = int((passing["kind"] == CONTROL).sum())
        known = mammography + control
        row: dict[str, Any] = {
            "layer": layer,
            "position": position,
            "units": int(stats.loc[layer, "units"]),
            "score_mean": mean,
            "score_median": stats.loc[layer, "score_median"],
            "score_std": stats.loc[layer, "score_std"],
            "threshold": mean,
            "passing_units": n_pass,
            "passing_fraction": n_pass / len(units) if len(units) else np.nan,
        }
        for column, values in (extra or {}).items():
            row[column] = values.get(layer, np.nan)
        row.update(
            {
                "mammography_units": mammography,
                "control_units": control,
                "mammography_fraction": mammography / known if known else np.nan,
                "unique_concepts": int(units["concept"].nunique()),
                "passing_unique_concepts": int(passing["concept"].nunique()),
                "top_concepts": top_counts(passing["concept"], TOP_CONCEPTS),
            }
        )
        rows.append(row)
        for entry in category_counts(passing):
            label = entry[entry["level"]]
            category_rows.append(
                {
                    "layer": layer,
                    "position": position,
                    **entry,
                    "control": controls.get((entry["level"], label)),
                    "fraction": entry["units"] / n_pass,
                }
            )
    columns = list(SUMMARY_COLUMNS)
    at = columns.index("passing_fraction") + 1
    columns[at:at] = list(extra or {})
    summary = pd.DataFrame(rows, columns=columns)
    categories = pd.DataFrame(category_rows, columns=CATEGORY_COLUMNS)
    return summary, categories


def write_summary(
    run_dir: str | Path, *, extra: Mapping[str, Mapping[str, Any]] | None = None
) -> pd.DataFrame:
    """(Re)write ``summary.csv`` and ``summary_categories.csv`` of a run directory.

    Parameters
    ----------
    run_dir:
        A directory written by ``mammodissect run --out DIR`` (``neurons.csv``, ``run.json``).
    extra:
        Further per-layer columns, as for :func:`summarize`.

    Returns
    -------
    pandas.DataFrame
        The summary table, one row per layer in model order.

    Raises
    ------
    MammodissectError
        When the directory is not a run directory or cannot be written.

    Examples
    --------
    >>> write_summary("runs/M")  # doctest: +SKIP
    """
    run = load_run(run_dir)
    summary, categories = summarize(run.best, run.layers, extra=extra)
    try:
        summary.to_csv(run.path / SUMMARY_FILE, index=False)
        categories.to_csv(run.path / SUMMARY_CATEGORIES_FILE, index=False)
    except OSError as err:
        raise MammodissectError(f"cannot write {run.name}/{SUMMARY_FILE}: {err}") from err
    log.info("wrote %s/%s (%d layers)", run.name, SUMMARY_FILE, len(summary))
    return summary
