"""The evaluation's tables and how they are written into the run directory.

``evaluation.csv``, one row per unit (:data:`UNIT_COLUMNS`):

``layer, unit, label, score, above_threshold, above_null_95, above_null_99, grounded_concept,
iou, top1_match, top5_match, same_category, same_broad_category, cosine, image_class,
image_truth, auroc, auprc, image_top1_match, image_top5_match``, then the stability columns
``bootstrap_survival`` and ``noise_SIGMA_survival``

- ``label``/``score``: the rank-1 concept and its score (neurons.csv);
- ``above_threshold``: score >= the layer mean of top-1 scores (the published local threshold);
- ``above_null_95``/``above_null_99``: score > the 95th/99th percentile of the layer's null;
- ``grounded_concept``/``iou``: the best-IoU concept (``ungrounded`` below the cut-off; empty
  when grounding was skipped) and its IoU;
- agreement columns: empty for units that are not grounded (see
  :mod:`mammodissect.evaluate.agreement`);
- ``image_*``, ``auroc``, ``auprc``: the unit's best image-level class (density, BI-RADS) when
  its AUROC passes the threshold, and whether its labels name it
  (:mod:`mammodissect.evaluate.image_labels`);
- ``bootstrap_survival``: the share of bootstrap resamples of the probe images keeping its
  top-1 label; ``noise_SIGMA_survival``: whether it survives Gaussian noise of SIGMA
  (:mod:`mammodissect.evaluate.stability`).

``evaluation_layers.csv``, one row per layer in model order (:data:`LAYER_COLUMNS`):

``layer, position, units, threshold, null_mean, null_p95, null_p99, units_above_threshold,
units_above_null_95, units_above_null_99, fraction_above_null_99, grounded_units,
exact_thresholds``, then per agreement metric ``METRIC, METRIC_low, METRIC_high`` (mean over
the layer's grounded units and its bootstrap 95% interval), ``image_grounded_units`` and the
image-level agreement with intervals, and the mean of each stability column.

``head_check.csv`` and ``planted.csv``: see :mod:`mammodissect.evaluate.head` and
:mod:`mammodissect.evaluate.planted`.

``evaluation.json``: settings, the similarity function, grounding facts, image-level
classes, the head check's and the planted units' summaries, stability, counts, overall
agreement (same keys as the per-layer metrics, over all grounded units), notes, timings. No
absolute paths.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.analysis.runs import (
    EVALUATION_FILE,
    EVALUATION_JSON,
    EVALUATION_LAYERS_FILE,
    HEAD_CHECK_FILE,
    PLANTED_FILE,
)
from mammodissect.errors import MammodissectError
from mammodissect.evaluate.agreement import METRICS, summarize_agreement
from mammodissect.evaluate.fair import FAIR_COLUMNS, FAIR_METRICS
from mammodissect.evaluate.grounding import UNGROUNDED, Grounding
from mammodissect.evaluate.image_labels import IMAGE_COLUMNS
from mammodissect.evaluate.null import NullBaseline
from mammodissect.evaluate.stored import StoredTruth
from mammodissect.rundir import EVALUATION_TRUTH_FILE

__all__ = [
    "LAYER_COLUMNS",
    "METRIC_COLUMNS",
    "UNIT_COLUMNS",
    "layer_table",
    "overall",
    "stability_summary",
    "with_intervals",
    "with_stability",
    "write",
]


UNIT_COLUMNS = [
    "layer",
    "unit",
    "label",
    "score",
    "above_threshold",
    "above_null_95",
    "above_null_99",
    "grounded_concept",
    "iou",
    *METRICS,
    *IMAGE_COLUMNS,
    *FAIR_COLUMNS,
]
#: Suffix of the stability columns: ``bootstrap_survival`` (per unit, the share of bootstrap
#: resamples of the images that keep its top-1 label) and ``noise_SIGMA_survival`` (whether
#: the label survives Gaussian noise of ``SIGMA``; per layer, the share of units).
SURVIVAL = "_survival"
#: Agreement with the image-level classes (density, BI-RADS).
IMAGE_METRICS: tuple[str, ...] = ("image_top1_match", "image_top5_match")


def with_intervals(metrics: tuple[str, ...]) -> list[str]:
    """Each metric followed by its interval columns ``METRIC_low, METRIC_high``."""
    return [f"{m}{s}" for m in metrics for s in ("", "_low", "_high")]


#: Each agreement metric with its bootstrap interval.
METRIC_COLUMNS = with_intervals(METRICS)
LAYER_COLUMNS = [
    "layer",
    "position",
    "units",
    "threshold",
    "null_mean",
    "null_p95",
    "null_p99",
    "units_above_threshold",
    "units_above_null_95",
    "units_above_null_99",
    "fraction_above_null_99",
    "grounded_units",
    "exact_thresholds",
    *METRIC_COLUMNS,
    "image_grounded_units",
    *with_intervals(IMAGE_METRICS),
    "concept_grounded_units",
    *with_intervals(FAIR_METRICS),
]


def _grounded(units: pd.DataFrame) -> pd.DataFrame:
    mask = units["grounded_concept"].notna() & (units["grounded_concept"] != UNGROUNDED)
    return units[mask]


def layer_table(
    layers: list[str],
    units: pd.DataFrame,
    nulls: dict[str, NullBaseline],
    grounding: Grounding | None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """``evaluation_layers.csv``'s rows (see the module docstring)."""
    rows = []
    for position, layer in enumerate(layers):
        part = units[units["layer"] == layer]
        null = nulls[layer]
        grounded = _grounded(part)
        row: dict[str, Any] = {
            "layer": layer,
            "position": position,
            "units": len(part),
            "threshold": float(part["score"].mean()),
            "null_mean": null.mean,
            "null_p95": null.percentiles[95],
            "null_p99": null.percentiles[99],
            "units_above_threshold": int(part["above_threshold"].sum()),
            "units_above_null_95": int(part["above_null_95"].sum()),
            "units_above_null_99": int(part["above_null_99"].sum()),
            "fraction_above_null_99": float(part["above_null_99"].mean()) if len(part) else np.nan,
            "grounded_units": len(grounded) if grounding is not None else None,
            "exact_thresholds": grounding.exact.get(layer) if grounding is not None else None,
            **summarize_agreement(grounded, bootstrap, seed),
            **_image_agreement(part, bootstrap, seed),
            **_fair_agreement(part, bootstrap, seed),
            **{c: float(part[c].astype(float).mean()) for c in _survival_columns(part)},
        }
        rows.append(row)
    return pd.DataFrame(rows, columns=LAYER_COLUMNS + _survival_columns(units))


def _survival_columns(units: pd.DataFrame) -> list[str]:
    return [c for c in units.columns if c.endswith(SURVIVAL)]


def with_stability(
    units: pd.DataFrame, layers: list[str], survival: dict[str, dict[str, np.ndarray]]
) -> pd.DataFrame:
    """``units`` with a ``KIND_survival`` column per stability check: ``survival[KIND]`` maps
    each layer to its units' values in unit order (the order of ``units`` within a layer)."""
    out = units.copy()
    for kind, per_layer in survival.items():
        if per_layer:
            out[f"{kind}{SURVIVAL}"] = np.concatenate([per_layer[layer] for layer in layers])
    return out


def stability_summary(units: pd.DataFrame) -> dict[str, float]:
    """Per stability check, the share of all units whose top-1 label survives."""
    return {c: float(units[c].astype(float).mean()) for c in _survival_columns(units)}


def _image_agreement(units: pd.DataFrame, bootstrap: int, seed: int) -> dict[str, Any]:
    """``image_grounded_units`` and the image-level agreement over them."""
    image = units[units["image_class"].notna()]
    return {
        "image_grounded_units": len(image),
        **summarize_agreement(image, bootstrap, seed, IMAGE_METRICS),
    }


def _fair_agreement(units: pd.DataFrame, bootstrap: int, seed: int) -> dict[str, Any]:
    """``concept_grounded_units`` and the fair measures over the units that have their truth
    (:mod:`mammodissect.evaluate.fair`)."""
    return {
        "concept_grounded_units": int(units["concept_truth"].notna().sum()),
        **summarize_agreement(units, bootstrap, seed, FAIR_METRICS),
    }


def overall(units: pd.DataFrame, bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Agreement over every grounded unit of the run (masks, and image-level classes), with
    bootstrap intervals."""
    grounded = _grounded(units)
    values = {
        **summarize_agreement(grounded, bootstrap, seed),
        **_image_agreement(units, bootstrap, seed),
        **_fair_agreement(units, bootstrap, seed),
    }
    out = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in values.items()}
    out["grounded_units"] = len(grounded)
    return out


def write(
    run_dir: Path,
    units: pd.DataFrame,
    layers: pd.DataFrame,
    info: dict[str, Any],
    *,
    head: pd.DataFrame | None = None,
    planted: pd.DataFrame | None = None,
    truth: StoredTruth | None = None,
) -> Path:
    """Write ``evaluation.csv``, ``evaluation_layers.csv``, ``evaluation.json`` and, when
    given, ``head_check.csv``, ``planted.csv`` and ``evaluation_truth.npz`` (stale ones are
    removed otherwise)."""
    try:
        if truth is not None:
            truth.save(run_dir)
        else:
            (run_dir / EVALUATION_TRUTH_FILE).unlink(missing_ok=True)
        for name, table in ((HEAD_CHECK_FILE, head), (PLANTED_FILE, planted)):
            if table is not None:
                table.to_csv(run_dir / name, index=False)
            else:
                (run_dir / name).unlink(missing_ok=True)
        units.to_csv(run_dir / EVALUATION_FILE, index=False)
        layers.to_csv(run_dir / EVALUATION_LAYERS_FILE, index=False)
        text = json.dumps(info, indent=2, default=_jsonable) + "\n"
        (run_dir / EVALUATION_JSON).write_text(text, encoding="utf-8")
    except OSError as err:
        raise MammodissectError(
            f"cannot write the evaluation into {run_dir.name!r} ({err}); check its permissions"
        ) from err
    return run_dir


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
