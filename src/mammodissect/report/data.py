"""What a report shows, gathered from a run or compare directory's files.

Only the files a run or comparison wrote are read (``neurons.csv``, ``top_images.csv``,
``run.json``, ``summary.csv``, ``evaluation.csv``; ``compare.csv``, ``categories.csv``, ...),
so a report can be made on a copied directory. Nothing here keeps an absolute path: runs are
named by their folder name, images by their ``image_id``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.analysis.runs import RunDir, load_run, read_neurons
from mammodissect.errors import MammodissectError
from mammodissect.rundir import EVALUATION_FILE, NEURONS_FILE, SUMMARY_FILE, TOP_IMAGES_FILE

__all__ = [
    "CompareData",
    "RunData",
    "card_units",
    "is_compare_dir",
    "is_run_dir",
    "load_compare_data",
    "load_run_data",
    "read_csv_if_present",
    "run_facts",
    "unit_rows",
]

log = logging.getLogger(__name__)

#: Concepts shown per unit in the table (all of neurons.csv's ranks feed the concept search).
TABLE_CONCEPTS = 3
#: Units a run may have for every unit to get a card.
ALL_CARDS_UP_TO = 300
#: Figures of a comparison in the order the report shows them (others follow by name).
FIGURE_ORDER = ("layer_means", "mammography_vs_control", "top_broad_categories", "coverage",
                "finetune_change")  # fmt: skip


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is a run directory (it holds ``neurons.csv``)."""
    return (path / NEURONS_FILE).is_file()


def is_compare_dir(path: Path) -> bool:
    """Whether ``path`` is a compare directory (it holds ``compare.csv``)."""
    return (path / "compare.csv").is_file()


@dataclass
class RunData:
    """A run directory, read for its report.

    Attributes
    ----------
    run:
        The run, read back (:func:`mammodissect.analysis.runs.load_run`).
    neurons:
        All of neurons.csv (every rank).
    top_images:
        top_images.csv (empty when missing).
    summary:
        summary.csv (None when missing).
    evaluation:
        evaluation.csv (None when the run was not evaluated).
    """

    run: RunDir
    neurons: pd.DataFrame
    top_images: pd.DataFrame
    summary: pd.DataFrame | None = None
    evaluation: pd.DataFrame | None = None


def read_csv_if_present(path: Path, **options: Any) -> pd.DataFrame | None:
    """``path`` read by ``pandas.read_csv(**options)``, or None when there is no such file.

    Raises
    ------
    MammodissectError
        When the file is there but unreadable.
    """
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise MammodissectError(
            f"{path.parent.name}/{path.name} cannot be read ({err}); rewrite it with mammodissect"
        ) from err


def load_run_data(path: Path) -> RunData:
    """Read a run directory's tables for its report.

    Raises
    ------
    MammodissectError
        When ``path`` is not a run directory or its tables are malformed.
    """
    run = load_run(path)
    neurons = read_neurons(path / NEURONS_FILE)
    tops = read_csv_if_present(path / TOP_IMAGES_FILE, dtype={"layer": str, "image_id": str},
                     keep_default_na=False)  # fmt: skip
    if tops is None:
        log.warning("%s has no top_images.csv; unit cards will show no images", run.name)
        tops = pd.DataFrame(columns=["layer", "unit", "rank", "image_id", "activation"])
    summary = read_csv_if_present(path / SUMMARY_FILE, dtype={"layer": str}, keep_default_na=False)
    evaluation = read_csv_if_present(
        path / EVALUATION_FILE, dtype={"layer": str, "grounded_concept": str}
    )
    return RunData(run, neurons, tops, summary, evaluation)


def run_facts(info: dict[str, Any]) -> list[tuple[str, str]]:
    """The public facts of a run (run.json), as ``(label, value)`` pairs for the page.

    Specs are as run.json keeps them (paths shown by file name only); no probe path.
    """
    config = info.get("config", {})
    counts = info.get("counts", {})
    concepts = info.get("concepts", {})
    similarity = info.get("similarity", {})
    facts = [
        ("target", info.get("target", {}).get("spec") or config.get("target")),
        ("dissector", info.get("dissector", {}).get("spec") or config.get("dissector")),
        ("similarity", similarity.get("name") or config.get("similarity")),
        ("pooling", config.get("pooling")),
        ("probe images", _used(counts)),
        ("concept set", _concept_set(concepts, counts)),
        ("layers", counts.get("layers")),
        ("units", counts.get("units")),
        ("created", info.get("created")),
        ("mammodissect", info.get("versions", {}).get("mammodissect")),
    ]
    return [(label, str(value)) for label, value in facts if value not in (None, "")]


def _used(counts: dict[str, Any]) -> str | None:
    if "images" not in counts:
        return None
    used = counts.get("images_used", counts["images"])
    return f"{used} used of {counts['images']}"


def _concept_set(concepts: dict[str, Any], counts: dict[str, Any]) -> str | None:
    name = concepts.get("name")
    count = concepts.get("count", counts.get("concepts"))
    if name is None and count is None:
        return None
    return f"{name or 'custom'} ({count} concepts)" if count is not None else str(name)


@dataclass
class UnitTable:
    """The unit table as the page embeds it.

    Attributes
    ----------
    columns:
        Column names of ``rows``.
    rows:
        One list per unit, in layer (model) order then unit order.
    concepts:
        The concept strings ``rows`` refer to by index (``k``: a unit's ranked concepts).
    layers:
        Layer names in model order.
    detectability:
        Concept -> the audit's AUROC, for runs given ``--detectability`` (else empty).
    """

    columns: list[str]
    rows: list[list[Any]]
    concepts: list[str]
    layers: list[str]
    detectability: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _num(value: Any, digits: int = 4) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if not np.isfinite(number) else round(number, digits)


def _flag(value: Any) -> bool | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip().lower()
    if text in ("true", "1", "1.0"):
        return True
    if text in ("false", "0", "0.0"):
        return False
    return None


def unit_rows(data: RunData) -> UnitTable:
    """The table of all units: best concepts and scores, categories, the local threshold
    (layer mean of top-1 scores) and, when evaluation.csv exists, grounding and the null.

    Each row is ``layer, unit, c1, s1, c2, s2, c3, s3, category, broad, kind, passes, k, ks``
    (``k``/``ks``: all ranked concept indices and scores) then ``grounded, iou, null99`` when
    the run was evaluated.
    """
    run, neurons = data.run, data.neurons
    index: dict[str, int] = {}
    concepts: list[str] = []

    def concept_id(name: str) -> int:
        if name not in index:
            index[name] = len(concepts)
            concepts.append(name)
        return index[name]

    ranked: dict[tuple[str, int], list[tuple[int, float | None]]] = {}
    ordered = neurons.sort_values(["rank"], kind="stable")
    for layer, unit, concept, score in zip(
        ordered["layer"], ordered["unit"], ordered["concept"], ordered["score"], strict=True
    ):
        ranked.setdefault((layer, int(unit)), []).append((concept_id(concept), _num(score)))
    means = run.best.groupby("layer", sort=False)["score"].mean().to_dict()
    evaluated = data.evaluation is not None and "grounded_concept" in data.evaluation
    evaluation: dict[tuple[str, int], Any] = {}
    if evaluated:
        for found in data.evaluation.itertuples(index=False):  # type: ignore[union-attr]
            evaluation[(str(found.layer), int(found.unit))] = found
    columns = ["layer", "unit", "c1", "s1", "c2", "s2", "c3", "s3", "category", "broad",
               "kind", "passes", "k", "ks"]  # fmt: skip
    if evaluated:
        columns += ["grounded", "iou", "null99"]
    aurocs: dict[str, float] = {}
    if "detectability_auroc" in neurons.columns:  # an audit was given: labels carry AUROCs
        pairs = neurons[["concept", "detectability_auroc"]].drop_duplicates("concept")
        values = pd.to_numeric(pairs["detectability_auroc"], errors="coerce")
        aurocs = {c: float(v) for c, v in zip(pairs["concept"], values, strict=True) if v == v}
        columns += ["d1"]
    layer_pos = {layer: i for i, layer in enumerate(run.layers)}
    best = run.best.assign(_pos=run.best["layer"].map(layer_pos)).sort_values(["_pos", "unit"])
    rows: list[list[Any]] = []
    for r in best.itertuples(index=False):
        key = (str(r.layer), int(r.unit))
        ranks = ranked.get(key, [])
        top = [(concepts[c], s) for c, s in ranks[:TABLE_CONCEPTS]]
        top += [("", None)] * (TABLE_CONCEPTS - len(top))
        score = _num(r.score)
        mean = means.get(r.layer)
        row: list[Any] = [key[0], key[1]]
        for concept, value in top:
            row += [concept, value]
        row += [
            r.category or "",
            r.broad_category or "",
            r.kind,
            bool(score is not None and mean is not None and r.score >= mean),
            [c for c, _ in ranks],
            [s for _, s in ranks],
        ]
        if evaluated:
            e = evaluation.get(key)
            grounded = getattr(e, "grounded_concept", None) if e is not None else None
            row += [
                grounded if isinstance(grounded, str) else "",
                _num(getattr(e, "iou", None)) if e is not None else None,
                _flag(getattr(e, "above_null_99", None)) if e is not None else None,
            ]
        if "d1" in columns:
            row.append(aurocs.get(top[0][0]))
        rows.append(row)
    return UnitTable(columns, rows, concepts, list(run.layers), aurocs)


def card_units(data: RunData, per_layer: int) -> list[tuple[str, int]]:
    """The units that get a card: every unit when the run has at most
    :data:`ALL_CARDS_UP_TO`, else the ``per_layer`` best-scoring units of each layer."""
    best = data.run.best
    if len(best) <= ALL_CARDS_UP_TO:
        chosen = best
    else:
        chosen = (
            best.sort_values(["score", "unit"], ascending=[False, True], kind="stable")
            .groupby("layer", sort=False)
            .head(max(per_layer, 0))
        )
    layer_pos = {layer: i for i, layer in enumerate(data.run.layers)}
    keys = sorted(
        ((str(r.layer), int(r.unit)) for r in chosen.itertuples(index=False)),
        key=lambda key: (layer_pos.get(key[0], len(layer_pos)), key[1]),
    )
    return keys


@dataclass
class CompareData:
    """A compare directory, read for its report.

    Attributes
    ----------
    path:
        The directory.
    info:
        compare.json (empty when missing).
    tables:
        File stem -> table (``compare``, ``categories``, ``coverage_categories``,
        ``uncaptured``), those present.
    figures:
        PNG figures in ``figures/``, sorted by name.
    """

    path: Path
    info: dict[str, Any]
    tables: dict[str, pd.DataFrame]
    figures: list[Path]


def load_compare_data(path: Path) -> CompareData:
    """Read a compare directory's tables, compare.json and figure list.

    Raises
    ------
    MammodissectError
        When ``path`` is not a compare directory or compare.json is not JSON.
    """
    if not is_compare_dir(path):
        raise MammodissectError(
            f"{path.name!r} has no compare.csv; give a folder written by `mammodissect compare`"
        )
    info: dict[str, Any] = {}
    if (path / "compare.json").is_file():
        try:
            info = json.loads((path / "compare.json").read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MammodissectError(
                f"{path.name}/compare.json is not valid JSON ({err}); rerun `mammodissect compare`"
            ) from err
    tables = {}
    for stem in ("compare", "categories", "coverage_categories", "uncaptured"):
        table = read_csv_if_present(path / f"{stem}.csv", keep_default_na=False)
        if table is not None:
            tables[stem] = table
    found = sorted((path / "figures").glob("*.png")) if (path / "figures").is_dir() else []
    order = {stem: i for i, stem in enumerate(FIGURE_ORDER)}
    figures = sorted(found, key=lambda f: (order.get(f.stem, len(order)), f.name))
    return CompareData(path, info, tables, figures)
