"""Comparing runs: general (G), mammography (M) and fine-tuned (C) variants of a model.

``compare(runs, out)`` reads two or more run directories dissected on the same probe with the
same concept set and answers the three questions of Mammo-CLIP Dissect:

1. *General vs mammography*: per aligned layer and run, how many passing units have a
   mammography concept vs a control as their best concept, and which broad categories.
2. *Fine-tuning*: per category, the change in passing units from the baseline run (``M``) to
   each fine-tuned run (names starting with ``C``).
3. *Under-represented concepts*: which mammography concepts any passing unit of a run has as its
   best concept, at which layers; coverage per category; the concepts no run captures.

**Thresholds.** A unit's score is its top-1 score. Within one run a unit passes the *local*
threshold when its score is at least its layer's mean; in a comparison it passes the *global*
threshold when its score is at least the largest of the compared runs' means for that (aligned)
layer, as published. Every count of the comparison uses the global threshold; ``compare.csv``
gives the local one as well.

**Layer alignment.** Runs may name their layers differently (``blocks.4.0`` and
``image_encoder.blocks.4.0``). When every run has the same number of layers, they are aligned
by position in model order. Otherwise a layer of the first run is aligned with the layer of each
other run that shares the longest common suffix of dotted parts with it (at least one part that
is not a number, the best match unique and mutual); layers without a partner in every run are
left out and listed in compare.json. An aligned layer is named by the common dotted suffix of its
runs' names when there is one (``blocks.4.0``), else by the first run's name; ``compare.csv``
holds each run's own name next to it.

Outputs (``out``): ``compare.csv``, ``broad_categories.csv``, ``categories.csv``,
``coverage.csv``, ``coverage_categories.csv``, ``uncaptured.csv``, ``compare.json`` and
``figures/`` (see :func:`compare` for the columns).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.analysis.detectability import read_detectability
from mammodissect.analysis.figures import write_figures
from mammodissect.analysis.runs import (
    CONTROL,
    MAMMOGRAPHY,
    RunDir,
    concept_table,
    label_pairs,
    layer_scores,
    load_run,
    read_null,
    top_counts,
)
from mammodissect.analysis.summary import category_counts
from mammodissect.concepts.core import ConceptSet
from mammodissect.errors import MammodissectError
from mammodissect.rundir import CONCEPTS_FILE, DETECTABILITY_FILE

__all__ = [
    "COMPARE_COLUMNS",
    "Alignment",
    "Comparison",
    "align_layers",
    "choose_layers",
    "compare",
]

log = logging.getLogger(__name__)

THRESHOLD_RULE = (
    "top-1 score per unit; local threshold = the run's layer mean; global threshold = the "
    "largest of the compared runs' layer means for the aligned layer (Mammo-CLIP Dissect); "
    "a unit passes when its score >= the threshold; all counts use the global threshold; "
    "null_threshold (when every run was evaluated with mammodissect evaluate) = the largest of "
    "the runs' 99th percentiles of top-1 scores with activations permuted across images"
)
ALIGNMENT_RULES = {
    "position": "same number of layers in every run: aligned by position in model order",
    "suffix": "aligned by the longest common dotted suffix of layer names (with a non-numeric "
    "part, unique and mutual), anchored on the first run",
}
COMPARE_COLUMNS = [
    "position",
    "aligned_layer",
    "run",
    "layer",
    "units",
    "score_mean",
    "score_median",
    "score_std",
    "local_threshold",
    "global_threshold",
    "threshold_run",
    "passing_local",
    "passing_global",
    "null_threshold",
    "passing_null",
    "mammography_null",
    "mammography",
    "control",
    "mammography_fraction",
    "unique_concepts",
    "top_concepts",
    "top_broad_categories",
    "figure_layer",
]
BROAD_COLUMNS = [
    "position",
    "aligned_layer",
    "run",
    "layer",
    "broad_category",
    "control",
    "units",
    "fraction",
]
CATEGORY_CHANGE_COLUMNS = [
    "run",
    "baseline",
    "broad_category",
    "category",
    "control",
    "baseline_units",
    "units",
    "change",
    "relative_change",
]
COVERAGE_COLUMNS = ["concept", "category", "broad_category", "run", "captured", "units", "layers"]
COVERAGE_CATEGORY_COLUMNS = [
    "broad_category",
    "category",
    "run",
    "concepts",
    "captured",
    "coverage",
]
UNCAPTURED_COLUMNS = ["concept", "category", "broad_category"]
#: The AUROC at which the audit counts a concept as seen, unless a run or the caller says.
DEFAULT_MIN_AUROC = 0.9
#: Categories listed per fine-tuned run in compare.json as gaining / losing most.
TOP_CHANGES = 5

# EfficientNet (efficientnet_pytorch naming ``_blocks.N``): blocks per stage of B0 and the
# depth coefficients of B0-B8; the total number of blocks identifies the stage boundaries.
_B0_REPEATS = (1, 2, 2, 3, 3, 4, 1)
_DEPTHS = (1.0, 1.1, 1.2, 1.4, 1.8, 2.2, 2.6, 3.1, 3.6)
_FLAT_BLOCK = re.compile(r"(?:^|\.)_blocks\.(\d+)$")
_STAGE_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.(\d+)$")
#: Stages (1-based) whose last block the figures show by default, as in Mammo-CLIP Dissect.
FIGURE_STAGES = (1, 4, 7)


def _efficientnet_stage_ends() -> dict[int, list[int]]:
    """Total block count -> index of the last block of each of the 7 stages."""
    table: dict[int, list[int]] = {}
    for depth in _DEPTHS:
        repeats = [math.ceil(depth * r) for r in _B0_REPEATS]
        ends = list(np.cumsum(repeats) - 1)
        table.setdefault(sum(repeats), [int(e) for e in ends])
    return table


@dataclass
class Alignment:
    """Which layer of each run is compared with which.

    Attributes
    ----------
    rule:
        ``position`` or ``suffix`` (see the module docstring).
    labels:
        One name per aligned layer, in model order.
    layers:
        Per aligned layer, each run's own layer name (in run order).
    unmatched:
        Per run, its layers left out of the comparison.
    """

    rule: str
    labels: list[str]
    layers: list[list[str]]
    unmatched: dict[str, list[str]] = field(default_factory=dict)


def _parts(name: str) -> list[str]:
    return name.split(".")


def _common_suffix(names: Sequence[str]) -> list[str]:
    split = [_parts(n) for n in names]
    out: list[str] = []
    for i in range(1, min(len(p) for p in split) + 1):
        tail = {p[-i] for p in split}
        if len(tail) != 1:
            break
        out.insert(0, split[0][-i])
    return out


def _meaningful(suffix: list[str]) -> bool:
    return any(not part.isdigit() for part in suffix)


def _suffix_len(a: str, b: str) -> int:
    suffix = _common_suffix([a, b])
    return len(suffix) if _meaningful(suffix) else 0


def _best_partner(name: str, candidates: Sequence[str]) -> str | None:
    scores = [_suffix_len(name, c) for c in candidates]
    best = max(scores, default=0)
    if best == 0 or scores.count(best) > 1:
        return None
    return candidates[scores.index(best)]


def _label(names: Sequence[str]) -> str:
    suffix = _common_suffix(names)
    return ".".join(suffix) if suffix and _meaningful(suffix) else names[0]


def align_layers(layers: Sequence[Sequence[str]], runs: Sequence[str] | None = None) -> Alignment:
    """Align the layers of several runs (see the module docstring for the rule).

    Parameters
    ----------
    layers:
        Per run, its layer names in model order.
    runs:
        The runs' names (messages and ``unmatched``); default ``run1, run2, ...``.

    Raises
    ------
    MammodissectError
        When no layer can be aligned across all runs.
    """
    runs = list(runs) if runs is not None else [f"run{i + 1}" for i in range(len(layers))]
    lists = [list(names) for names in layers]
    if len({len(names) for names in lists}) == 1:
        rows = [list(row) for row in zip(*lists, strict=True)]
        unrelated = [
            row for row in rows if len(set(row)) > 1 and not _meaningful(_common_suffix(row))
        ]
        if unrelated:
            shown = "; ".join(" / ".join(row) for row in unrelated[:3])
            log.warning(
                "layers aligned by position have unrelated names (%s%s); check that the runs "
                "dissect comparable layers",
                shown,
                ", ..." if len(unrelated) > 3 else "",
            )
        return Alignment("position", _unique([_label(r) for r in rows]), rows, {})
    anchor, others = lists[0], lists[1:]
    rows = []
    for name in anchor:
        row = [name]
        for other in others:
            partner = _best_partner(name, other)
            if partner is None or _best_partner(partner, anchor) != name:
                break
            row.append(partner)
        else:
            rows.append(row)
    if not rows:
        raise MammodissectError(
            "the runs share no layers: "
            + "; ".join(
                f"{r}: {', '.join(n[:3])}{', ...' if len(n) > 3 else ''}"
                for r, n in zip(runs, lists, strict=True)
            )
            + ". Compare runs with the same number of layers (aligned by position) or with "
            "matching layer names"
        )
    used = [{row[i] for row in rows} for i in range(len(lists))]
    unmatched = {
        run: [n for n in names if n not in used[i]]
        for i, (run, names) in enumerate(zip(runs, lists, strict=True))
    }
    unmatched = {run: names for run, names in unmatched.items() if names}
    if unmatched:
        log.warning(
            "layers without a partner in every run are left out: %s",
            "; ".join(f"{run}: {', '.join(names)}" for run, names in unmatched.items()),
        )
    for i, names in enumerate(lists[1:], start=1):
        positions = [names.index(row[i]) for row in rows]
        if positions != sorted(positions):
            log.warning("run %s: its aligned layers are not in its model order", runs[i])
    return Alignment("suffix", _unique([_label(r) for r in rows]), rows, unmatched)


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
    return [f"{label}#{i}" if seen[label] > 1 else label for i, label in enumerate(labels)]


def choose_layers(alignment: Alignment, requested: Sequence[str] | str | None = None) -> list[int]:
    """Positions of the aligned layers the bar figures show.

    ``requested``: aligned layer names or any run's own layer names (comma-separated or a
    list). Default: for EfficientNet block names (``image_encoder._blocks.N`` covering every
    block of a B0-B8, or timm's ``blocks.S.B`` with 7 stages), the last block of stages 1, 4
    and 7; otherwise the first, middle and last layers.

    Raises
    ------
    MammodissectError
        For a name that is no aligned layer (the closest names suggested).
    """
    labels = alignment.labels
    if requested:
        names = requested.split(",") if isinstance(requested, str) else list(requested)
        picked = []
        for raw in names:
            name = raw.strip()
            hits = [
                i
                for i, (label, row) in enumerate(zip(labels, alignment.layers, strict=True))
                if name == label or name in row
            ]
            if not hits:
                known = labels + [n for row in alignment.layers for n in row]
                close = difflib.get_close_matches(name, known, n=3)
                hint = f"; closest: {', '.join(close)}" if close else ""
                raise MammodissectError(
                    f"layer {name!r} is not among the compared layers{hint} "
                    "(see compare.csv's aligned_layer)"
                )
            if hits[0] not in picked:
                picked.append(hits[0])
        return sorted(picked)
    stages = _stage_choice(alignment)
    if stages is not None:
        return stages
    n = len(labels)
    return sorted({0, (n - 1) // 2, n - 1})


def _stage_choice(alignment: Alignment) -> list[int] | None:
    """The last block of stages 1, 4, 7 for EfficientNet block names, else None."""
    for run in range(len(alignment.layers[0])):
        names = [row[run] for row in alignment.layers]
        flat = [_FLAT_BLOCK.search(n) for n in names]
        if all(flat):
            indices = [int(m.group(1)) for m in flat if m]
            ends = _efficientnet_stage_ends().get(len(indices))
            if ends is not None and indices == list(range(len(indices))):
                return [ends[s - 1] for s in FIGURE_STAGES]
        staged = [_STAGE_BLOCK.search(n) for n in names]
        if all(staged):
            stage_of = [int(m.group(1)) for m in staged if m]
            distinct = list(dict.fromkeys(stage_of))
            if len(distinct) == 7 and distinct == sorted(distinct):
                last = {s: i for i, s in enumerate(stage_of)}
                return [last[distinct[s - 1]] for s in FIGURE_STAGES]
    return None


@dataclass
class Comparison:
    """The result of :func:`compare`: the tables it wrote, and what compare.json holds."""

    names: list[str]
    layers: pd.DataFrame
    broad_categories: pd.DataFrame
    categories: pd.DataFrame
    coverage: pd.DataFrame
    coverage_categories: pd.DataFrame
    uncaptured: pd.DataFrame
    info: dict[str, Any]
    alignment: Alignment
    figure_layers: list[int]
    out: Path | None = None
    figures: list[Path] = field(default_factory=list)


def _names(names: Sequence[str] | str | None, runs: list[RunDir]) -> list[str]:
    if names is None:
        result = [run.name for run in runs]
    else:
        result = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
        if len(result) != len(runs):
            raise MammodissectError(
                f"{len(result)} names ({', '.join(result)}) for {len(runs)} runs; give one name "
                "per run, in the same order (e.g. --names G,M,C)"
            )
    if any(not n for n in result):
        raise MammodissectError("run names may not be empty; give e.g. --names G,M,C")
    duplicated = sorted({n for n in result if result.count(n) > 1})
    if duplicated:
        raise MammodissectError(
            f"run names must differ; {', '.join(duplicated)} given twice (name them with "
            "--names G,M,C)"
        )
    return result


def _check_same(runs: list[RunDir], names: list[str], key: str, what: str, flag: str) -> str:
    values: dict[str, list[str]] = {}
    for name, run in zip(names, runs, strict=True):
        value = run.fingerprint(key)
        if value is None:
            raise MammodissectError(
                f"run {name!r} ({run.name}/run.json) records no {key} fingerprint; rerun it "
                "with `mammodissect run` to compare it"
            )
        values.setdefault(value, []).append(name)
    if len(values) > 1:
        groups = "; ".join(f"{', '.join(group)} ({fp[:12]})" for fp, group in values.items())
        raise MammodissectError(
            f"the runs used different {what}: {groups}; compare only runs dissected with the same "
            f"{flag}"
        )
    return next(iter(values))


def _warn_if_differs(runs: list[RunDir], names: list[str]) -> None:
    def describe(run: RunDir) -> str:
        sim = run.info.get("similarity", {})
        return json.dumps(
            [run.info.get("dissector", {}).get("spec"), sim.get("name"), sim.get("params")],
            sort_keys=True,
            default=str,
        )

    seen = {describe(run) for run in runs}
    if len(seen) > 1:
        log.warning(
            "runs %s used different dissectors or similarity settings; their scores (and the "
            "global threshold) may not be comparable",
            ", ".join(names),
        )


def _label_control(table: pd.DataFrame | None, runs: list[RunDir]) -> dict[tuple[str, Any], Any]:
    """Per (level, label): True when every concept under it is a control, False when none,
    None when mixed or unknown; from the concept set when known, else from the runs' units."""
    source = table if table is not None else pd.concat([r.best for r in runs])
    flags: dict[tuple[str, Any], set[Any]] = {}
    for category, broad, control in source[["category", "broad_category", "control"]].itertuples(
        index=False
    ):
        for b, c in label_pairs(category, broad):
            flags.setdefault(("broad_category", b), set()).add(control)
            flags.setdefault(("category", (b, c)), set()).add(control)
    return {key: next(iter(v)) if len(v) == 1 else None for key, v in flags.items()}


def _category_order(table: pd.DataFrame | None, runs: list[RunDir]) -> list[tuple[Any, Any]]:
    source = table if table is not None else pd.concat([r.best for r in runs])
    order: dict[tuple[Any, Any], None] = {}
    for category, broad in source[["category", "broad_category"]].itertuples(index=False):
        for pair in label_pairs(category, broad):
            if pair[1] is not None:
                order.setdefault(pair, None)
    return list(order)


def _unit_counts(frame: pd.DataFrame) -> dict[tuple[Any, Any], int]:
    return {
        (row["broad_category"], row["category"]): row["units"]
        for row in category_counts(frame)
        if row["level"] == "category"
    }


def compare(
    runs: Sequence[str | Path],
    out: str | Path | None,
    names: Sequence[str] | str | None = None,
    layers: Sequence[str] | str | None = None,
    *,
    baseline: str | None = None,
    finetuned: Sequence[str] | None = None,
    concepts: str | Path | ConceptSet | None = None,
    figures: bool = True,
    detectability: str | Path | None = None,
    min_auroc: float | None = None,
) -> Comparison:
    """Compare run directories (G, M, C variants) and write tables and figures to ``out``.

    Parameters
    ----------
    runs:
        Two or more run directories, dissected on the same probe with the same concept set.
    out:
        Output folder (created); None computes without writing.
    names:
        One name per run (``"G,M,C"`` or a list); default the directories' names.
    layers:
        Aligned layers shown by the bar figures (see :func:`choose_layers`).
    baseline:
        The run fine-tuned runs are compared with (question 2); default ``M`` when a run is
        named so. Fine-tuned runs: those whose name starts with ``C``; when none does and a
        baseline is given, every other run.
    finetuned:
        The fine-tuned runs by name, replacing the ``C`` prefix rule (a study's roles).
    concepts:
        The concept set, when a run directory lacks ``concepts.csv`` and its set is not a bundled
        one (checked against the runs' fingerprint).
    figures:
        Whether to draw ``out/figures/``.
    detectability:
        An audit of the runs' dissector on their probe (folder or detectability.csv); default
        the ``detectability.csv`` a run given ``--detectability`` keeps. With it, question 3
        tells the concepts the dissector cannot see from those it sees that no unit captures.
    min_auroc:
        The AUROC at which a concept counts as seen (default: the runs' ``--min-auroc``, else
        0.9).

    Returns
    -------
    Comparison
        The tables below, ``info`` (compare.json) and the figure paths.

    Notes
    -----
    Tables (all counts over globally passing units of the aligned layers):

    - ``compare.csv``, one row per aligned layer and run: ``position, aligned_layer, run,
      layer`` (the run's own name: the layer mapping), ``units, score_mean, score_median,
      score_std, local_threshold, global_threshold, threshold_run`` (the run whose mean set the
      global threshold), ``passing_local, passing_global, mammography, control,
      mammography_fraction, unique_concepts, top_concepts, top_broad_categories`` (five and
      three most frequent, ``name (count)`` joined with ``|``), ``figure_layer``.
    - ``broad_categories.csv`` (question 1): ``position, aligned_layer, run, layer,
      broad_category, control, units, fraction`` (of the run's passing units at that layer).
    - ``categories.csv`` (question 2): ``run, baseline, broad_category, category, control,
      baseline_units, units, change, relative_change`` (change / baseline_units), per fine-tuned
      run and category of the set, units summed over aligned layers, largest gain first.
    - ``coverage.csv`` (question 3): per mammography concept and run, ``concept, category,
      broad_category, run, captured, units, layers`` (the run's own layer names, ``|``-joined).
    - ``coverage_categories.csv``: ``broad_category, category, run, concepts, captured,
      coverage`` (captured / concepts).
    - ``uncaptured.csv``: ``concept, category, broad_category`` of the mammography concepts no
      run captures; with an audit also ``auroc, dissector_sees`` (``yes``, ``no`` or ``not
      annotated``), counted in compare.json's ``uncaptured_split``.

    A multi-label concept counts under each of its categories.

    Raises
    ------
    MammodissectError
        For fewer than two runs, runs made on different probes or concept sets, bad names, no
        common layers, an unknown figure layer or baseline.
    """
    dirs = [load_run(path) for path in runs]
    if len(dirs) < 2:
        raise MammodissectError(
            f"compare needs at least two run directories, got {len(dirs)}; give e.g. "
            "runs/G runs/M runs/C"
        )
    names = _names(names, dirs)
    probe = _check_same(dirs, names, "probe", "probes", "--probe")
    fingerprint = _check_same(dirs, names, "concepts", "concept sets", "--concepts")
    _warn_if_differs(dirs, names)
    alignment = align_layers([d.layers for d in dirs], names)
    figure_layers = choose_layers(alignment, layers)
    table = None
    for run in dirs:
        table = concept_table(run, concepts)
        if table is not None:
            break
    if table is None:
        log.warning(
            "no run directory has %s and the concept set is not bundled: coverage (question 3) "
            "left empty; pass concepts=PATH (--concepts) to compute it",
            CONCEPTS_FILE,
        )
    controls = _label_control(table, dirs)

    # per aligned layer and run: scores and passing units
    passing_rows = []
    layer_rows = []
    broad_rows = []
    stats = [layer_scores(d.best, [row[i] for row in alignment.layers]) for i, d in enumerate(dirs)]
    nulls = [read_null(d) for d in dirs]
    for position, (label, row) in enumerate(zip(alignment.labels, alignment.layers, strict=True)):
        means = [float(s["score_mean"].iloc[position]) for s in stats]
        top = int(np.nanargmax(means))
        threshold = means[top]
        # the null-based alternative: the larger of the runs' 99th null percentiles (when
        # every run was evaluated)
        p99 = [None if null is None else null.get(row[i]) for i, null in enumerate(nulls)]
        known = [p for p in p99 if p is not None]
        null_threshold = max(known) if known and len(known) == len(p99) else np.nan
        for i, (name, run) in enumerate(zip(names, dirs, strict=True)):
            units = run.best[run.best["layer"] == row[i]]
            passing = units[units["score"] >= threshold].assign(
                run=name, position=position, aligned_layer=label
            )
            above_null = units[units["score"] >= null_threshold]
            passing_rows.append(passing)
            mammography = int((passing["kind"] == MAMMOGRAPHY).sum())
            control = int((passing["kind"] == CONTROL).sum())
            counts = category_counts(passing)
            broads = [c for c in counts if c["level"] == "broad_category"]
            layer_rows.append(
                {
                    "position": position,
                    "aligned_layer": label,
                    "run": name,
                    "layer": row[i],
                    "units": len(units),
                    "score_mean": means[i],
                    "score_median": float(stats[i]["score_median"].iloc[position]),
                    "score_std": float(stats[i]["score_std"].iloc[position]),
                    "local_threshold": means[i],
                    "global_threshold": threshold,
                    "threshold_run": names[top],
                    "passing_local": int((units["score"] >= means[i]).sum()),
                    "passing_global": len(passing),
                    "null_threshold": null_threshold,
                    "passing_null": np.nan if np.isnan(null_threshold) else len(above_null),
                    "mammography_null": (
                        np.nan
                        if np.isnan(null_threshold)
                        else int((above_null["kind"] == MAMMOGRAPHY).sum())
                    ),
                    "mammography": mammography,
                    "control": control,
                    "mammography_fraction": (
                        mammography / (mammography + control) if mammography + control else np.nan
                    ),
                    "unique_concepts": int(passing["concept"].nunique()),
                    "top_concepts": top_counts(passing["concept"], 5),
                    "top_broad_categories": "|".join(
                        f"{c['broad_category']} ({c['units']})" for c in broads[:3]
                    ),
                    "figure_layer": position in figure_layers,
                }
            )
            broad_rows += [
                {
                    "position": position,
                    "aligned_layer": label,
                    "run": name,
                    "layer": row[i],
                    "broad_category": c["broad_category"],
                    "control": controls.get(("broad_category", c["broad_category"])),
                    "units": c["units"],
                    "fraction": c["units"] / len(passing),
                }
                for c in broads
            ]
    layer_table = pd.DataFrame(layer_rows, columns=COMPARE_COLUMNS)
    broad_table = pd.DataFrame(broad_rows, columns=BROAD_COLUMNS)
    passing_all = pd.concat(passing_rows, ignore_index=True)

    categories, finetune = _finetune(
        passing_all, names, (baseline, finetuned), table, dirs, controls
    )
    coverage, coverage_categories, uncaptured = _coverage(passing_all, names, table)
    uncaptured, split = _seen(uncaptured, dirs, detectability, min_auroc)

    info: dict[str, Any] = {
        "names": names,
        "runs": {name: run.name for name, run in zip(names, dirs, strict=True)},
        "probe_fingerprint": probe,
        "concepts": {
            "fingerprint": fingerprint,
            "name": dirs[0].info.get("concepts", {}).get("name"),
            "count": None if table is None else len(table),
            "mammography": None if table is None else int((table["kind"] == MAMMOGRAPHY).sum()),
        },
        "threshold": THRESHOLD_RULE,
        "alignment": {
            "rule": alignment.rule,
            "description": ALIGNMENT_RULES[alignment.rule],
            "layers": [
                {
                    "position": position,
                    "aligned_layer": label,
                    "global_threshold": float(
                        layer_table.loc[
                            layer_table["position"] == position, "global_threshold"
                        ].iloc[0]
                    ),
                    "threshold_run": layer_table.loc[
                        layer_table["position"] == position, "threshold_run"
                    ].iloc[0],
                    "runs": dict(zip(names, row, strict=True)),
                }
                for position, (label, row) in enumerate(
                    zip(alignment.labels, alignment.layers, strict=True)
                )
            ],
            "unmatched": alignment.unmatched,
        },
        "figure_layers": [alignment.labels[i] for i in figure_layers],
        "finetune": finetune,
        "uncaptured": None if table is None else len(uncaptured),
        "uncaptured_split": split,
    }
    result = Comparison(
        names=names,
        layers=layer_table,
        broad_categories=broad_table,
        categories=categories,
        coverage=coverage,
        coverage_categories=coverage_categories,
        uncaptured=uncaptured,
        info=info,
        alignment=alignment,
        figure_layers=figure_layers,
    )
    if out is not None:
        _write(result, Path(out), figures)
    return result


def _finetune(
    passing: pd.DataFrame,
    names: list[str],
    roles: tuple[str | None, Sequence[str] | None],
    table: pd.DataFrame | None,
    runs: list[RunDir],
    controls: dict[tuple[str, Any], Any],
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """Question 2: per category, passing units of each fine-tuned run minus the baseline's
    (``roles``: the baseline and the fine-tuned runs, when given)."""
    baseline, finetuned = roles
    empty = pd.DataFrame(columns=CATEGORY_CHANGE_COLUMNS)
    unknown = sorted(set(finetuned or ()) - set(names))
    if unknown:
        raise MammodissectError(
            f"fine-tuned runs {', '.join(unknown)} are not among the runs ({', '.join(names)})"
        )
    if baseline is not None and baseline not in names:
        raise MammodissectError(
            f"baseline {baseline!r} is not one of the runs ({', '.join(names)}); name it with "
            "--names or pick one of these"
        )
    base = baseline if baseline is not None else ("M" if "M" in names else None)
    if base is None:
        log.info("no baseline run (named M or given): no fine-tuning comparison")
        return empty, None
    tuned = (
        [n for n in names if n in finetuned and n != base]
        if finetuned is not None
        else [n for n in names if n != base and n.startswith("C")]
    )
    if not tuned and baseline is not None:
        tuned = [n for n in names if n != base]
    if not tuned:
        log.info("no fine-tuned run (named C...): no fine-tuning comparison")
        return empty, None
    order = _category_order(table, runs)
    base_counts = _unit_counts(passing[passing["run"] == base])
    rows = []
    summary: dict[str, Any] = {"baseline": base, "runs": tuned, "gains": {}, "losses": {}}
    for name in tuned:
        counts = _unit_counts(passing[passing["run"] == name])
        keys = order + [k for k in {**base_counts, **counts} if k not in order]
        block = []
        for broad, category in keys:
            before = base_counts.get((broad, category), 0)
            after = counts.get((broad, category), 0)
            block.append(
                {
                    "run": name,
                    "baseline": base,
                    "broad_category": broad,
                    "category": category,
                    "control": controls.get(("category", (broad, category))),
                    "baseline_units": before,
                    "units": after,
                    "change": after - before,
                    "relative_change": (after - before) / before if before else np.nan,
                }
            )
        block.sort(key=lambda r: -r["change"])  # stable: set order among ties
        rows += block
        summary["gains"][name] = [
            {
                "category": r["category"],
                "broad_category": r["broad_category"],
                "change": r["change"],
            }
            for r in block
            if r["change"] > 0
        ][:TOP_CHANGES]
        summary["losses"][name] = [
            {
                "category": r["category"],
                "broad_category": r["broad_category"],
                "change": r["change"],
            }
            for r in sorted(block, key=lambda r: r["change"])
            if r["change"] < 0
        ][:TOP_CHANGES]
    return pd.DataFrame(rows, columns=CATEGORY_CHANGE_COLUMNS), summary


def _coverage(
    passing: pd.DataFrame, names: list[str], table: pd.DataFrame | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Question 3: which mammography concepts each run captures, per concept and category."""
    if table is None:
        return (
            pd.DataFrame(columns=COVERAGE_COLUMNS),
            pd.DataFrame(columns=COVERAGE_CATEGORY_COLUMNS),
            pd.DataFrame(columns=UNCAPTURED_COLUMNS),
        )
    mammo = table[table["kind"] == MAMMOGRAPHY].reset_index(drop=True)
    rows = []
    captured_by: dict[str, dict[str, bool]] = {}
    for name in names:
        mine = passing[(passing["run"] == name) & (passing["kind"] == MAMMOGRAPHY)]
        groups = dict(tuple(mine.groupby("concept", sort=False)))
        captured_by[name] = {}
        for concept, category, broad in mammo[["concept", "category", "broad_category"]].itertuples(
            index=False
        ):
            units = groups.get(concept)
            layers = (
                list(dict.fromkeys(units.sort_values("position", kind="stable")["layer"]))
                if units is not None
                else []
            )
            captured_by[name][concept] = units is not None
            rows.append(
                {
                    "concept": concept,
                    "category": category,
                    "broad_category": broad,
                    "run": name,
                    "captured": units is not None,
                    "units": 0 if units is None else len(units),
                    "layers": "|".join(layers),
                }
            )
    coverage = pd.DataFrame(rows, columns=COVERAGE_COLUMNS)
    per_category: dict[tuple[Any, Any], list[str]] = {}
    for concept, category, broad in mammo[["concept", "category", "broad_category"]].itertuples(
        index=False
    ):
        for pair in label_pairs(category, broad) or [(None, None)]:
            per_category.setdefault(pair, []).append(concept)
    category_rows = []
    for (broad, category), members in per_category.items():
        for name in names:
            hit = sum(captured_by[name][c] for c in members)
            category_rows.append(
                {
                    "broad_category": broad,
                    "category": category,
                    "run": name,
                    "concepts": len(members),
                    "captured": hit,
                    "coverage": hit / len(members),
                }
            )
    coverage_categories = pd.DataFrame(category_rows, columns=COVERAGE_CATEGORY_COLUMNS)
    missed = [not any(captured_by[n][c] for n in names) for c in mammo["concept"]]
    uncaptured = mammo.loc[missed, UNCAPTURED_COLUMNS].reset_index(drop=True)
    return coverage, coverage_categories, uncaptured


def _seen(
    uncaptured: pd.DataFrame,
    dirs: list[RunDir],
    detectability: str | Path | None,
    min_auroc: float | None,
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """Question 3 split by an audit: ``auroc`` and ``dissector_sees`` (``yes``: AUROC at the
    threshold or more, ``no``: below it, ``not annotated``: the audit could not score it)."""
    source = detectability
    if source is None:
        source = next((d.path / DETECTABILITY_FILE for d in dirs
                       if (d.path / DETECTABILITY_FILE).is_file()), None)  # fmt: skip
    if source is None:
        return uncaptured, None
    audit = read_detectability(source)
    if min_auroc is None:
        given = [d.info.get("detectability", {}).get("min_auroc") for d in dirs]
        min_auroc = next((float(v) for v in given if v is not None), DEFAULT_MIN_AUROC)
    aurocs = audit.aurocs()
    out = uncaptured.copy()
    out["auroc"] = [aurocs.get(c, np.nan) for c in out["concept"]]
    out["dissector_sees"] = [
        "not annotated" if np.isnan(a) else ("yes" if a >= min_auroc else "no")
        for a in out["auroc"]
    ]
    counts = out["dissector_sees"].value_counts()
    split = {
        "min_auroc": min_auroc,
        "source": audit.source,
        "audit_fingerprint": audit.fingerprint(),
        "dissector_cannot_see": int(counts.get("no", 0)),
        "seen_but_uncaptured": int(counts.get("yes", 0)),
        "not_annotated": int(counts.get("not annotated", 0)),
    }
    return out, split


TABLES = {
    "compare.csv": "layers",
    "broad_categories.csv": "broad_categories",
    "categories.csv": "categories",
    "coverage.csv": "coverage",
    "coverage_categories.csv": "coverage_categories",
    "uncaptured.csv": "uncaptured",
}


def _write(result: Comparison, out: Path, figures: bool) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        for file, attribute in TABLES.items():
            getattr(result, attribute).to_csv(out / file, index=False)
    except OSError as err:
        raise MammodissectError(f"cannot write the comparison into {out.name!r}: {err}") from err
    result.out = out
    if figures:
        result.figures = write_figures(result, out / "figures")
    result.info["tables"] = [*TABLES, "compare.json"]
    result.info["figures"] = [p.relative_to(out).as_posix() for p in result.figures]
    (out / "compare.json").write_text(json.dumps(result.info, indent=2, default=_jsonable) + "\n")
    log.info("wrote the comparison of %s into %s", ", ".join(result.names), out.name)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)
