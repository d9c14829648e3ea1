"""Which similarity function labels units best? Every setting re-scored on a run's caches.

For each similarity setting (a function of :data:`mammodissect.similarity.SIMILARITIES` and,
for ``soft_wpmi`` and ``wpmi``, one row per ``top_k``), every unit of the run is labelled again
from the cached activations A and the dissector's cached image embeddings (with the concept
embeddings re-encoded: S = images x concepts cosines), with no forward pass of the target. The
truth comes from the run's evaluation (``evaluate`` measures it once, from masks, boxes and the
probe's annotations, and keeps it in ``evaluation_truth.npz``: :mod:`~.stored`); here it is
reused, never recomputed. Each setting is scored by

- the agreement metrics of ``evaluation.csv`` over mask-grounded units (exact top-1, top-5,
  same category, same broad category, MiniLM cosine);
- the fair measure (:mod:`mammodissect.evaluate.fair`): class top-1/top-5, the label's IoU
  over the best concept's, the label's AUPRC over the best image-level concept's;
- planted-unit recovery (the evaluation's planted layer scored with this setting);
- the classifier-head check, when the evaluation checked a head (the share of head units whose
  rank-1 label / one of its first five names their class);
- the units above that setting's own 99th-percentile null (activations permuted across
  images, ``null_seeds`` permutations per layer; ``null_seeds=0`` skips it);

each rate but the head check's (a handful of units) with a percentile bootstrap 95% interval
over its units.

A setting's other parameters are the function's defaults, or the run's parameters when the run
used that function (``top_k`` replaced by the setting's).

Writes into the run directory ``similarities.csv`` (one row per setting,
:data:`SIMILARITY_COLUMNS`) and ``similarities.png``/``.svg`` (grouped bars of exact and class
top-1, the IoU and AUPRC ratios and planted top-1, with their intervals).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammodissect import concepts as concept_sets
from mammodissect.analysis.detectability import run_calibration
from mammodissect.analysis.figures import RUN_PALETTE, new_figure, plot_style, save_figure
from mammodissect.analysis.runs import CONCEPTS_FILE, EVALUATION_FILE, SIMILARITIES_FILE
from mammodissect.concepts.encode import score_matrix
from mammodissect.config import default_cache_dir
from mammodissect.errors import MammodissectError
from mammodissect.evaluate.agreement import (
    agreement_flags,
    minilm_cosines,
    summarize_agreement,
)
from mammodissect.evaluate.fair import FAIR_METRICS, fair_columns
from mammodissect.evaluate.grounding import UNGROUNDED
from mammodissect.evaluate.head import (
    HeadTask,
    head_check,
    head_context,
    head_scores,
    head_summary,
)
from mammodissect.evaluate.null import null_baseline
from mammodissect.evaluate.planted import recovery
from mammodissect.evaluate.source import RunSource, open_run
from mammodissect.evaluate.stored import StoredTruth
from mammodissect.evaluate.tables import METRIC_COLUMNS, with_intervals
from mammodissect.models import load_dissector
from mammodissect.models.base import bind_probe
from mammodissect.record import matching_probe
from mammodissect.similarity import SIMILARITIES, get_similarity

__all__ = [
    "SIMILARITIES_FILE",
    "SIMILARITY_COLUMNS",
    "TOP_K_SIMILARITIES",
    "compare_similarities",
    "plot_similarities",
    "similarity_settings",
]

log = logging.getLogger(__name__)

#: Functions with a ``top_k`` parameter: one setting per ``top_k``.
TOP_K_SIMILARITIES: tuple[str, ...] = ("soft_wpmi", "wpmi")
#: Planted-unit recovery per setting (:mod:`mammodissect.evaluate.planted`).
_PLANTED = {
    "planted_top1": "top1_recovery",
    "planted_top5": "top5_recovery",
    "planted_same_finding": "same_finding_recovery",
}
PLANTED_METRICS: tuple[str, ...] = tuple(_PLANTED)
#: The classifier-head check per setting (:mod:`mammodissect.evaluate.head`): the share of
#: head units whose rank-1 label / one of the first five names their class.
HEAD_METRICS: tuple[str, ...] = ("head_top1_in_class", "head_top5_in_class")
#: ``similarities.csv``'s columns.
SIMILARITY_COLUMNS = [
    "setting",
    "similarity",
    "top_k",
    "params",
    "units",
    "grounded_units",
    *METRIC_COLUMNS,
    "concept_grounded_units",
    *with_intervals(FAIR_METRICS),
    "planted_units",
    *with_intervals(PLANTED_METRICS),
    "head_units",
    *HEAD_METRICS,
    "units_above_null_99",
    "fraction_above_null_99",
    "seconds",
]


def similarity_settings(
    names: Sequence[str],
    top_ks: Sequence[int] = (20, 100),
    run_similarity: str | None = None,
    run_params: dict[str, Any] | None = None,
) -> list[tuple[str, str, dict[str, Any]]]:
    """The settings to score: ``(setting name, function name, parameters)``.

    Parameters
    ----------
    names:
        Similarity function names (keys of :data:`mammodissect.similarity.SIMILARITIES`).
    top_ks:
        ``top_k`` values for ``soft_wpmi`` and ``wpmi`` (one setting each).
    run_similarity, run_params:
        The run's function and parameters: that function's settings start from them.

    Raises
    ------
    MammodissectError
        For an unknown name (with the closest valid one), an empty list, or a ``top_k`` < 1.

    Examples
    --------
    >>> [s[0] for s in similarity_settings(["wpmi", "cos_similarity"], [5, 20])]
    ['wpmi (top_k=5)', 'wpmi (top_k=20)', 'cos_similarity']
    """
    if not names:
        raise MammodissectError(
            f"no similarity function given; name some of {', '.join(SIMILARITIES)}"
        )
    if any(int(k) < 1 for k in top_ks) or not top_ks:
        raise MammodissectError(f"top_k values must be integers >= 1, got {list(top_ks)}")
    settings: list[tuple[str, str, dict[str, Any]]] = []
    for name in dict.fromkeys(names):
        get_similarity(name)  # unknown names raise here
        base = dict(run_params or {}) if name == run_similarity else {}
        if name in TOP_K_SIMILARITIES:
            for k in dict.fromkeys(int(k) for k in top_ks):
                settings.append((f"{name} (top_k={k})", name, {**base, "top_k": k}))
        else:
            base.pop("top_k", None)
            settings.append((name, name, base))
    return settings


def compare_similarities(
    run_dir: str | Path,
    *,
    similarities: Sequence[str] = tuple(SIMILARITIES),
    top_ks: Sequence[int] = (20, 100),
    evaluation: pd.DataFrame | None = None,
    dissector: Any = None,
    probe: Any = None,
    cache_dir: str | Path | None = None,
    null_seeds: int = 5,
    bootstrap: int = 1000,
    seed: int = 0,
    write: bool = True,
) -> pd.DataFrame:
    """Score every similarity setting by how well its labels agree with grounded concepts.

    Parameters
    ----------
    run_dir:
        A run directory written by ``mammodissect run --out DIR``.
    similarities:
        Similarity function names to compare.
    top_ks:
        ``top_k`` values for ``soft_wpmi`` and ``wpmi`` (at least one; values above the
        number of images are clamped with a logged warning).
    evaluation:
        The run's per-unit evaluation (``Evaluation.units``: ``layer, unit,
        grounded_concept``); default: ``evaluation.csv`` in ``run_dir``.
    dissector:
        The run's dissector (spec or loaded) when run.json's cannot be reloaded.
    probe:
        The run's probe: needed when the dissector scores the probe's own annotations.
    cache_dir:
        The cache folder the run used (default: the default cache folder).
    null_seeds:
        Permutations per layer for each setting's null (0: skip the null columns).
    bootstrap:
        Bootstrap resamples for the 95% intervals (0: none).
    seed:
        Seed of the permutations and the bootstrap.
    write:
        Write ``similarities.csv`` and ``similarities.png``/``.svg`` into ``run_dir``.

    Returns
    -------
    pandas.DataFrame
        One row per setting, columns :data:`SIMILARITY_COLUMNS`.

    Raises
    ------
    MammodissectError
        When the run, its caches or its evaluation are missing, a name is unknown, or the
        dissector is not the run's.
    """
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    source = open_run(run_dir, root)
    truth = _grounded_truth(source, evaluation)
    config = source.run.stored_config(dissector=dissector, cache_dir=str(root))
    info_sim = source.run.info.get("similarity", {})
    run_name = info_sim.get("name", config.similarity)
    run_params = dict(info_sim.get("params", config.similarity_params))
    settings = similarity_settings(similarities, top_ks, run_name, run_params)
    if null_seeds < 0:
        raise MammodissectError(f"null seeds must be >= 0 (0 skips the null), got {null_seeds}")

    concepts = concept_sets.load(source.run.path / CONCEPTS_FILE)
    model = config.dissector
    if isinstance(model, str):
        model = load_dissector(model)
    if probe is not None or hasattr(model, "bind_probe"):
        bind_probe(model, None if probe is None else matching_probe(
            probe, source.run.name, source.run.fingerprint("probe")
        ))  # fmt: skip
    with torch.inference_mode():
        texts, _ = concept_sets.encode_concepts(
            model, concepts, config.prompts, config.lowercase, cache_root=root
        )
        cosines = score_matrix(model, source.embeddings(), texts.cpu())
        calibration = run_calibration(source.run.path, source.run.info)
        if calibration is not None:  # the run's S was the audit's probabilities
            cosines = calibration.probabilities(cosines, concepts.concepts)
    activations = {layer: torch.from_numpy(source.activations(layer)) for layer in source.layers}
    run_function = get_similarity(run_name)
    for layer, values in activations.items():  # the cached S and A must give the run's scores
        scores = run_function(cosines, values, **run_params).max(dim=1).values
        source.check_scores(layer, scores.float().cpu().numpy())

    stored = StoredTruth.load(source.run.path)
    fair_truths = {layer: stored.layer(layer, a.numpy()) for layer, a in activations.items()}
    head = None
    if stored.head is not None and stored.head_outputs is not None:
        head = HeadTask(**{**stored.head, "classes": tuple(stored.head["classes"])})
        context = head_context(source, head.layer, [])
    table_frame = concepts.to_frame().drop_duplicates("concept")
    frame = table_frame.set_index("concept")
    has_categories = bool(frame[["category", "broad_category"]].notna().any().any())
    names = np.asarray(concepts.concepts, dtype=object)
    grounded = truth.notna() & (truth != UNGROUNDED)
    chosen = np.flatnonzero(grounded.to_numpy())
    rows = []
    for setting, name, params in settings:
        started = time.perf_counter()
        function = get_similarity(name)
        ranked, fair, above, total = [], [], 0, 0
        for layer, values in activations.items():
            scores = function(cosines, values, **params).float().cpu()
            order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :5]
            layer_ranked = [list(names[r]) for r in order.numpy()]
            ranked += layer_ranked
            fair.append(fair_columns(layer_ranked, fair_truths[layer]))
            total += scores.shape[0]
            if null_seeds:
                null = null_baseline(
                    function, cosines, values, params, seeds=null_seeds, seed=seed,
                    observed=scores.max(dim=1).values.numpy(),
                )  # fmt: skip
                above += int(null.above[99].sum())
        table = agreement_flags(
            [ranked[i] for i in chosen],
            list(truth.iloc[chosen]),
            frame if has_categories else None,
        )
        table["cosine"] = minilm_cosines([ranked[i][0] for i in chosen], list(truth.iloc[chosen]))
        fairness = pd.concat(fair, ignore_index=True)
        row: dict[str, Any] = {
            "setting": setting,
            "similarity": name,
            "top_k": params.get("top_k"),
            "params": json.dumps(params, sort_keys=True),
            "units": total,
            "grounded_units": len(chosen),
            **summarize_agreement(table, bootstrap, seed),
            "concept_grounded_units": int(fairness["concept_truth"].notna().sum()),
            **summarize_agreement(fairness, bootstrap, seed, FAIR_METRICS),
            "units_above_null_99": above if null_seeds else None,
            "fraction_above_null_99": above / total if null_seeds and total else None,
        }
        if stored.planted is not None:
            planted = recovery(
                stored.planted, cosines, list(concepts.concepts), function, params,
                bootstrap=bootstrap, seed=seed,
            ).summary  # fmt: skip
            row["planted_units"] = planted["units"]
            for metric, key in _PLANTED.items():
                row.update({f"{metric}{p}": planted[f"{key}{p}"] for p in ("", "_low", "_high")})
        if head is not None and stored.head_outputs is not None:
            checked = head_summary(head_check(
                head_scores(function, cosines, context, stored.head_outputs, params),
                list(concepts.concepts), head, table_frame,
            ))  # fmt: skip
            row["head_units"] = checked["units_with_truth"]
            row.update({m: checked[m.removeprefix("head_")] for m in HEAD_METRICS})
        row["seconds"] = round(time.perf_counter() - started, 3)
        rows.append(row)
        log.info("%s: %s scored in %.2fs", source.run.name, setting, row["seconds"])
    result = pd.DataFrame(rows, columns=SIMILARITY_COLUMNS)
    if write:
        try:
            result.to_csv(source.run.path / SIMILARITIES_FILE, index=False)
        except OSError as err:
            raise MammodissectError(
                f"cannot write {SIMILARITIES_FILE} into {source.run.name!r} ({err}); check its "
                "permissions"
            ) from err
        plot_similarities(result, source.run.path / "similarities")
    return result


def _grounded_truth(source: RunSource, evaluation: pd.DataFrame | None) -> pd.Series:
    """Each unit's grounded concept, in the order (layer in model order, unit)."""
    if evaluation is None:
        path = source.run.path / EVALUATION_FILE
        if not path.is_file():
            raise MammodissectError(
                f"{source.run.name}/{EVALUATION_FILE} is missing; run `mammodissect evaluate "
                f"{source.run.name} --probe PROBE` first (its grounding is reused), or pass "
                "--similarities to that command"
            )
        evaluation = pd.read_csv(path)
    order = pd.MultiIndex.from_tuples(
        [
            (layer, int(unit))
            for layer in source.layers
            for unit in sorted(source.run.best[source.run.best["layer"] == layer]["unit"])
        ]
    )
    indexed = evaluation.assign(unit=evaluation["unit"].astype(int)).set_index(["layer", "unit"])
    missing = order.difference(indexed.index)
    if len(missing):
        raise MammodissectError(
            f"the evaluation of run {source.run.name!r} lacks {len(missing)} of its units (e.g. "
            f"{missing[0]}); rerun `mammodissect evaluate` on it"
        )
    truth = indexed["grounded_concept"].reindex(order).astype(object)
    truth = truth.where(truth.notna(), None).reset_index(drop=True)
    if not (truth.notna() & (truth != UNGROUNDED)).any():
        log.warning(
            "%s: no unit is grounded (evaluate needs --probe with masks or boxes): the agreement "
            "columns of %s are empty",
            source.run.name,
            SIMILARITIES_FILE,
        )
    return truth


#: The bars of ``similarities.png``: column -> legend.
PLOTTED: dict[str, str] = {
    "top1_match": "top-1 (exact)",
    "class_top1_match": "top-1 (class)",
    "iou_ratio": "label IoU / best IoU",
    "auprc_ratio": "label AUPRC / best AUPRC",
    "planted_top1": "planted top-1",
}


def plot_similarities(table: pd.DataFrame, stem: Path) -> list[Path]:
    """Grouped bars per setting of the agreement measures the table has values for
    (:data:`PLOTTED`), with 95% interval whiskers.

    Parameters
    ----------
    table:
        ``similarities.csv``'s rows.
    stem:
        Output path without suffix (``.png`` at 200 dpi and ``.svg`` are written).

    Returns
    -------
    list of Path
        The files written.
    """

    n = len(table)
    x = np.arange(n)
    shown = {
        m: label
        for m, label in PLOTTED.items()
        if m in table and table[m].astype(float).notna().any()
    } or {"top1_match": "top-1"}
    width = 0.8 / len(shown)
    with plot_style():
        fig = new_figure(min(16.0, max(5.0, 1.2 * n + 3.0)), 3.8)
        ax = fig.add_subplot()
        for i, (metric, label) in enumerate(shown.items()):
            mean = table[metric].to_numpy(dtype=float)
            low = np.nan_to_num(mean - table[f"{metric}_low"].to_numpy(dtype=float))
            high = np.nan_to_num(table[f"{metric}_high"].to_numpy(dtype=float) - mean)
            ax.bar(
                x + (i - (len(shown) - 1) / 2) * width, np.nan_to_num(mean), width,
                yerr=[low, high], capsize=2, color=RUN_PALETTE[i % len(RUN_PALETTE)],
                label=label, error_kw={"linewidth": 0.8},
            )  # fmt: skip
        ax.set_xticks(x, table["setting"].tolist(), rotation=30 if n > 3 else 0,
                      ha="right" if n > 3 else "center")  # fmt: skip
        ax.set_ylim(0.0, 1.05)
        ax.set_xlim(-0.6, n - 0.4)
        ax.set_ylabel("agreement with the truth")
        ax.set_title("Label agreement per similarity setting (95% bootstrap intervals)")
        ax.grid(axis="y", color="0.9", linewidth=0.6)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return save_figure(fig, stem)
