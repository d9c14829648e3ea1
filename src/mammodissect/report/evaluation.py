"""The run report's evaluation section, from what ``mammodissect evaluate`` wrote.

Reads ``evaluation.json``, ``evaluation_layers.csv`` and, when present, ``head_check.csv``,
``planted.csv``, ``similarities.csv`` and ``similarities.png`` from the run directory, and
renders: the counts (units above the null and the published threshold, grounded units), the
overall agreement of labels with grounded truth with 95% intervals, the per-layer table, the
classifier-head check, the planted units' recovery, label stability, the similarity-function
table and the evaluation's notes. Nothing is recomputed here.
"""

from __future__ import annotations

import base64
import math
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from mammodissect.analysis.evaluated import read_evaluation
from mammodissect.analysis.runs import (
    EVALUATION_LAYERS_FILE,
    HEAD_CHECK_FILE,
    PLANTED_FILE,
    SIMILARITIES_FILE,
)
from mammodissect.report import page as pg
from mammodissect.report.data import read_csv_if_present

__all__ = ["evaluation_section"]

#: Overall agreement figures shown, with their labels.
_AGREEMENT = {
    "top1_match": "top-1 label is the grounded concept",
    "top5_match": "grounded concept among the top 5",
    "same_finding": "top-1 label states the grounded finding (any wording)",
    "same_category": "same category",
    "same_broad_category": "same broad category",
    "cosine": "label-truth cosine (MiniLM)",
    "image_top1_match": "top-1 label names the image-level class",
    "image_top5_match": "image-level class among the top 5",
    "class_top1_match": "top-1 label in the grounded concept's class (same masks)",
    "iou_ratio": "label's IoU over the best concept's",
    "concept_top1_match": "top-1 label is the best image-level concept (or its class)",
    "auprc_ratio": "label's AUPRC over the best image-level concept's",
}
_LAYER_COLUMNS = ["layer", "units", "threshold", "null_p99", "units_above_threshold",
                  "units_above_null_99", "grounded_units", "top1_match", "top5_match",
                  "image_grounded_units", "image_top1_match", "iou_ratio",
                  "concept_grounded_units", "auprc_ratio", "bootstrap_survival",
                  "noise_0.01_survival", "noise_0.02_survival"]  # fmt: skip
_HEADERS = {"units_above_threshold": "above layer mean", "units_above_null_99": "above null 99%",
            "null_p99": "null p99", "grounded_units": "grounded", "top1_match": "top-1",
            "top5_match": "top-5", "image_grounded_units": "image-grounded",
            "image_top1_match": "image top-1", "iou_ratio": "IoU ratio",
            "concept_grounded_units": "concept-grounded", "auprc_ratio": "AUPRC ratio",
            "bootstrap_survival": "bootstrap survival",
            "noise_0.01_survival": "noise 0.01 survival",
            "noise_0.02_survival": "noise 0.02 survival"}  # fmt: skip


def _read(path: Path) -> pd.DataFrame | None:
    return read_csv_if_present(path, dtype={"layer": str})


def _with_interval(values: dict[str, Any], key: str) -> str | None:
    value = values.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    low, high = values.get(f"{key}_low"), values.get(f"{key}_high")
    shown = f"{value:.3f}"
    if low is not None and high is not None:
        shown += f" ({low:.3f}-{high:.3f})"
    return shown


def _interval(info: dict[str, Any], key: str) -> tuple[str, str] | None:
    shown = _with_interval(info, key)
    return None if shown is None else (_AGREEMENT[key], shown)


def _counts(info: dict[str, Any]) -> list[tuple[str, str]]:
    counts = info.get("counts", {})
    grounding = info.get("grounding", {})
    facts = [
        ("units", f"{counts.get('units', 0)} in {counts.get('layers', 0)} layers"),
        ("above the 99th-percentile null", str(counts.get("units_above_null_99", "n/a"))),
        ("above the 95th-percentile null", str(counts.get("units_above_null_95", "n/a"))),
        ("above their layer's mean", str(counts.get("units_above_threshold", "n/a"))),
    ]
    if grounding.get("source"):
        facts.append(
            ("grounded in " + str(grounding["source"]),
             f"{counts.get('grounded_units', 0)} units ({grounding.get('images', 0)} images)")
        )  # fmt: skip
    classes = info.get("image_labels", {}).get("classes") or []
    if classes:
        facts.append(
            ("grounded in image-level classes",
             f"{counts.get('image_grounded_units', 0)} units ({', '.join(classes)})")
        )  # fmt: skip
    similarity = info.get("similarity", {})
    facts.append(("similarity", str(similarity.get("name", ""))))
    return facts


def _head(table: pd.DataFrame | None, info: dict[str, Any]) -> str:
    if table is None:
        return ""
    head = info.get("head_check") or {}
    rates = ", ".join(
        f"{label} {head[key]:.2f}"
        for key, label in (
            ("top1_match", "top-1 anchor"),
            ("top1_in_class", "top-1 in class"),
            ("top5_in_class", "top-5 in class"),
        )
        if head.get(key) is not None
    )
    return (
        f"<h3>Classifier head ({escape(str(head.get('task', '')))})</h3>"
        '<p class="muted">Each output unit of the fine-tuned head has a known concept, its '
        f"class: the mammography counterpart of CLIP-Dissect's final-layer test. {escape(rates)}"
        f'</p><div class="wrap">{pg.table_html(table)}</div>'
    )


def _planted(table: pd.DataFrame | None, info: dict[str, Any]) -> str:
    if table is None:
        return ""
    summary = info.get("planted") or {}
    facts = [("planted units", str(summary.get("units", len(table))))]
    for key, label in (("top1_recovery", "top-1 label is the planted concept"),
                       ("same_finding_recovery", "top-1 label states its finding (any wording)"),
                       ("top5_recovery", "planted concept among the top 5")):  # fmt: skip
        shown = _with_interval(summary, key)
        if shown is not None:
            facts.append((label, shown))
    if summary.get("median_rank") is not None:
        facts.append(("median rank of the planted concept", f"{summary['median_rank']:g}"))
    ceiling = summary.get("annotation_ceiling") or {}
    for key, label in (("top1_recovery", "with the annotations as S: top-1"),
                       ("top5_recovery", "with the annotations as S: top 5")):  # fmt: skip
        shown = _with_interval(ceiling, key)
        if shown is not None:
            facts.append((label, shown))
    return (
        '<h3>Planted units</h3><p class="muted">Synthetic units that are blurred copies of '
        "one concept's masks, scored with the run's dissector and similarity function: how "
        "often the known answer comes back; and scored with S from the probe's own annotations "
        "(the annotation dissector): the ceiling of the similarity function on this probe, "
        f"which the dissector's view can only lower.</p>{pg.facts_html(facts)}"
        f'<div class="wrap">{pg.table_html(table)}</div>'
    )


def _stability(info: dict[str, Any]) -> str:
    stability = info.get("stability") or {}
    if not stability:
        return ""
    settings = info.get("settings", {})
    facts = []
    for key, value in stability.items():
        kind = key.removesuffix("_survival")
        label = (
            f"bootstrap of the images ({settings.get('stability_reps', '?')} resamples)"
            if kind == "bootstrap"
            else f"Gaussian noise, sigma {kind.removeprefix('noise_')} of the intensity range"
        )
        facts.append((label, f"{value:.3f}"))
    return (
        '<h3>Stability</h3><p class="muted">The share of units whose top-1 label survives a '
        "bootstrap of the probe images (mean over resamples) and Gaussian noise on them.</p>"
        + pg.facts_html(facts)
    )


def _similarities(path: Path) -> str:
    table = _read(path / SIMILARITIES_FILE)
    if table is None:
        return ""
    figure = path / "similarities.png"
    image = ""
    if figure.is_file():
        data = base64.b64encode(figure.read_bytes()).decode("ascii")
        image = (f'<div class="figure"><img src="data:image/png;base64,{data}" '
                 'alt="label agreement per similarity function"></div>')  # fmt: skip
    columns = ["setting", "grounded_units", "top1_match", "top1_match_low", "top1_match_high",
               "top5_match", "class_top1_match", "iou_ratio", "auprc_ratio", "planted_top1",
               "planted_same_finding", "planted_top5", "head_top1_in_class",
               "units_above_null_99"]  # fmt: skip
    return (
        '<h3>Similarity functions</h3><p class="muted">Every unit relabelled from the caches '
        "with each similarity setting and scored against the same truth: exact and fair "
        "agreement of hidden units, planted units, the classifier head.</p>"
        f'{image}<div class="wrap">{pg.table_html(table, columns)}</div>'
    )


def evaluation_section(path: Path) -> str:
    """The ``<section>`` of a run's evaluation, or ``""`` when the run was not evaluated."""
    info = read_evaluation(path)
    if info is None:
        return ""
    overall = info.get("overall", {})
    agreement = [pair for key in _AGREEMENT if (pair := _interval(overall, key))]
    layers = _read(path / EVALUATION_LAYERS_FILE)
    layer_html = (
        f'<div class="wrap">{pg.table_html(layers, _LAYER_COLUMNS, headers=_HEADERS)}</div>'
        if layers is not None
        else ""
    )
    notes = "".join(f"<li>{escape(str(n))}</li>" for n in info.get("notes", []))
    return f"""
<section id="sec-evaluation"><h2>Evaluation</h2>
<p class="muted">From mammodissect evaluate: a null baseline per layer (activations permuted
across images), grounding in masks, boxes and image-level classes, and the agreement of the
labels with that truth (means with bootstrap 95% intervals).</p>
{pg.facts_html(_counts(info))}
<h3>Agreement with grounded truth</h3>
{pg.facts_html(agreement) if agreement else '<p class="muted">No grounded unit.</p>'}
<h3>Per layer</h3>{layer_html}
{_head(_read(path / HEAD_CHECK_FILE), info)}
{_planted(_read(path / PLANTED_FILE), info)}
{_stability(info)}
{_similarities(path)}
{f"<h3>Notes</h3><ul>{notes}</ul>" if notes else ""}
</section>"""
