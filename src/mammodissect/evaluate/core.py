"""``evaluate(run_dir)``: how often are a run's unit labels right?

Reads a run directory and the caches its run wrote, then

1. scores every layer against a **null baseline** (activations permuted across images, the
   run's similarity function and parameters; :mod:`mammodissect.evaluate.null`);
2. when the probe has masks or finding boxes, **grounds** every unit in them (Network
   Dissection IoU; :mod:`mammodissect.evaluate.grounding`);
3. measures the **agreement** of the dissection labels with the grounded concepts
   (:mod:`mammodissect.evaluate.agreement`);

and writes ``evaluation.csv``, ``evaluation_layers.csv`` and ``evaluation.json`` into the run
directory (see :mod:`mammodissect.evaluate.tables`), plus a ``units_above_null`` column in
``summary.csv``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammodissect import concepts as concept_sets
from mammodissect.analysis import write_summary
from mammodissect.analysis.detectability import run_calibration
from mammodissect.analysis.runs import CONCEPTS_FILE
from mammodissect.cache import PreparedImageCache
from mammodissect.concepts.encode import score_matrix
from mammodissect.config import default_cache_dir
from mammodissect.errors import MammodissectError
from mammodissect.evaluate import tables
from mammodissect.evaluate.agreement import FLAGS, agreement_flags, minilm_cosines
from mammodissect.evaluate.config import EvaluateConfig
from mammodissect.evaluate.fair import FAIR_COLUMNS, concept_truth, fair_columns
from mammodissect.evaluate.grounding import UNGROUNDED, Grounding, ground
from mammodissect.evaluate.head import (
    HeadTask,
    head_check,
    head_context,
    head_scores,
    head_summary,
    head_task,
)
from mammodissect.evaluate.image_labels import (
    IMAGE_COLUMNS,
    ImageLabels,
    image_grounding,
    image_labels,
    unit_columns,
)
from mammodissect.evaluate.masks import mask_source
from mammodissect.evaluate.null import NullBaseline, null_baseline, top1
from mammodissect.evaluate.planted import Planted, annotation_ceiling, planted_units
from mammodissect.evaluate.source import RunSource, open_run
from mammodissect.evaluate.stability import bootstrap_stability, noise_stability
from mammodissect.evaluate.stored import StoredTruth
from mammodissect.models.base import bind_probe
from mammodissect.models.configured import load_models, resolve_device
from mammodissect.options import build
from mammodissect.probe import Probe
from mammodissect.record import RecordSettings, matching_probe, record
from mammodissect.similarity import get_similarity

__all__ = ["Evaluation", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """What ``evaluate`` measured.

    Attributes
    ----------
    units:
        ``evaluation.csv``: one row per unit (columns in :data:`tables.UNIT_COLUMNS`).
    layers:
        ``evaluation_layers.csv``: one row per layer.
    info:
        ``evaluation.json``: settings, overall metrics, counts, notes, timings.
    head:
        ``head_check.csv`` (:mod:`mammodissect.evaluate.head`), when the run recorded a
        classifier head with known classes.
    planted:
        ``planted.csv`` (:mod:`mammodissect.evaluate.planted`), when the probe has masks or
        boxes.
    out:
        The run directory written to (None with ``write=False``).
    """

    units: pd.DataFrame
    layers: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    head: pd.DataFrame | None = None
    planted: pd.DataFrame | None = None
    out: Path | None = None


def evaluate(
    run_dir: str | Path,
    config: EvaluateConfig | None = None,
    **options: Any,
) -> Evaluation:
    """Evaluate the unit labels of a run directory.

    Parameters
    ----------
    run_dir:
        A directory written by ``mammodissect run --out DIR``.
    config:
        The settings (:class:`EvaluateConfig`; default: its defaults).
    **options:
        Settings replacing ``config``'s, by the names of :class:`EvaluateConfig`'s fields:

        - ``probe``: the run's probe (path or loaded); needed for grounding (run.json keeps
          only its name). Without it, or when it has neither a ``mask_path`` column nor
          boxes, grounding is skipped with a logged note.
        - ``target``, ``dissector``: specs or loaded models replacing run.json's (needed when
          their weights are files).
        - ``cache_dir``: the cache folder the run used (default: the default cache folder).
        - ``null_seeds``: permutations per layer for the null baseline (5).
        - ``quantile``: per-unit activation quantile thresholding the maps (0.995: top 0.5%).
        - ``iou_threshold``: least IoU for a unit to count as grounded (0.04).
        - ``auroc_threshold``: least AUROC for a unit to count as grounded in an image-level
          class (density, BI-RADS; :mod:`mammodissect.evaluate.image_labels`; 0.75).
        - ``head_task``, ``head_classes``: the task and classes of the target's classifier
          head (default: from the target, for ``classifier:`` targets); the head check runs
          when the run recorded the head layer, or when ``probe`` is given (the head is then
          recorded).
        - ``stability_reps``: bootstrap resamples of the probe images for label stability
          (:mod:`mammodissect.evaluate.stability`; 20).
        - ``noise``: Gaussian noise levels (fractions of each image's intensity range) for
          label stability; each records the probe again (cached); needs ``probe``; empty:
          none ((0.01, 0.02)).
        - ``max_samples``: map positions sampled per unit for the quantile (exact when the
          probe has fewer; 16384).
        - ``max_side``: longest side of the frame IoU is computed in (320).
        - ``bootstrap``: bootstrap resamples of units for the 95% intervals (0: none; 1000).
        - ``seed``: seed of permutations, position samples and bootstrap (0).
        - ``device``, ``batch_size``: for the grounding pass (batch size default: the run's).
        - ``write``: write the tables into ``run_dir`` and ``units_above_null`` into its
          summary.csv (True).
        - ``quiet``: no progress bars.

    Returns
    -------
    Evaluation

    Raises
    ------
    MammodissectError
        When the run directory or its caches are missing, or the probe is not the run's.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    c = build(EvaluateConfig, config, options, "evaluate()")
    root = Path(c.cache_dir).expanduser() if c.cache_dir else default_cache_dir()
    source = open_run(run_dir, root)
    name = source.run.name
    run_config = source.run.stored_config(
        target=c.target, dissector=c.dissector,
        probe=c.probe if isinstance(c.probe, Probe) else (str(c.probe) if c.probe else None),
        cache_dir=str(root), device=c.device, batch_size=c.batch_size, quiet=c.quiet,
    )  # fmt: skip
    concepts = concept_sets.load(source.run.path / CONCEPTS_FILE)
    expected = source.run.fingerprint("concepts")
    if expected is not None and concepts.fingerprint() != expected:
        raise MammodissectError(
            f"{name}/{CONCEPTS_FILE} is not the concept set the run scored (fingerprint "
            f"{concepts.fingerprint()}, run.json {expected}); rerun `mammodissect run`"
        )
    target_model, dissector_model = load_models(run_config)
    run_device = resolve_device(c.device)
    timings["load"] = _lap(started)

    notes: list[str] = []
    loaded = _probe(c.probe, source, notes)
    bind_probe(dissector_model, loaded)
    with torch.inference_mode():
        texts, _ = concept_sets.encode_concepts(
            dissector_model, concepts, run_config.prompts, run_config.lowercase, cache_root=root
        )
        cosines = score_matrix(dissector_model, source.embeddings(), texts.cpu())
        calibration = run_calibration(source.run.path, source.run.info)
        calibrate = (
            None
            if calibration is None
            else lambda s: calibration.probabilities(s, concepts.concepts)
        )
        if calibrate is not None:  # the run's S was the audit's probabilities
            cosines = calibrate(cosines)
    info_sim = source.run.info.get("similarity", {})
    sim_name = info_sim.get("name", run_config.similarity)
    similarity = get_similarity(sim_name)
    params = dict(info_sim.get("params", run_config.similarity_params))
    nulls: dict[str, NullBaseline] = {}
    labels: dict[str, np.ndarray] = {}
    survival: dict[str, dict[str, np.ndarray]] = {"bootstrap": {}}
    for layer in source.layers:
        activations = torch.from_numpy(source.activations(layer))
        observed, labels[layer] = top1(similarity, cosines, activations, params)
        source.check_scores(layer, observed)
        nulls[layer] = null_baseline(
            similarity, cosines, activations, params, seeds=c.null_seeds, seed=c.seed,
            observed=observed,
        )  # fmt: skip
        survival["bootstrap"][layer] = bootstrap_stability(
            similarity, cosines, activations, params, labels[layer], reps=c.stability_reps,
            seed=c.seed, quiet=True,
        )  # fmt: skip
    timings["null_and_bootstrap"] = _lap(started, sum(timings.values()))
    # the run's recording settings, for the passes evaluate adds (noise, the head)
    recording = RecordSettings.of_run(
        run_config, run_device, cache_root=Path(root), top_k=5, strict=False, progress=not c.quiet
    )

    frame = concepts.to_frame().drop_duplicates("concept")
    masks = mask_source(loaded, concepts.concepts) if loaded is not None else None
    grounding: Grounding | None = None
    planted: Planted | None = None
    if loaded is not None and masks is None:
        notes.append("the probe has neither a mask_path column nor boxes: grounding skipped")
    elif masks is not None and loaded is not None:
        grounding = ground(
            target_model, loaded, source.rows.tolist(), source.layers, masks,
            quantile=c.quantile, max_samples=c.max_samples, max_side=c.max_side,
            batch_size=run_config.batch_size, device=run_device, voi=run_config.voi,
            image_cache=PreparedImageCache(root) if run_config.cache_images else None,
            seed=c.seed, quiet=c.quiet,
        )  # fmt: skip
        planted = planted_units(
            loaded, source.rows.tolist(), masks, cosines, list(concepts.concepts), similarity,
            params, categories=frame, pooling=run_config.pooling,
            bootstrap=c.bootstrap, seed=c.seed, shapes=source.image_shapes(), quiet=c.quiet,
        )  # fmt: skip
        if planted.layer.concepts:  # the pipeline's ceiling beside the dissector's
            planted = annotation_ceiling(
                planted, loaded, source.rows.tolist(), list(concepts.concepts), similarity,
                params, categories=frame, bootstrap=c.bootstrap, seed=c.seed,
            )  # fmt: skip
        notes += grounding.notes + planted.notes + _unmatched(masks)
    rows = source.rows.tolist()
    truth = StoredTruth(
        mask_concepts=grounding.concepts if grounding is not None else [],
        iou=dict(grounding.iou) if grounding is not None else {},
        mask_classes=masks.classes() if masks is not None else [],
        image=concept_truth(loaded, rows, concepts.concepts) if loaded is not None else None,
        iou_threshold=c.iou_threshold,
        auroc_threshold=c.auroc_threshold,
        planted=planted.layer if planted is not None and planted.layer.concepts else None,
    )
    timings["grounding"] = _lap(started, sum(timings.values()))

    if loaded is not None and c.noise:
        noisy = noise_stability(
            target_model, dissector_model, loaded, source.rows, source.layers, texts,
            similarity, params, labels, sigmas=c.noise, seed=c.seed, settings=recording,
            calibrate=calibrate,
        )  # fmt: skip
        survival.update({_noise_column(s): n.survived for s, n in noisy.items()})
    elif c.noise:
        notes.append("no probe given: label stability under noise not measured")
    timings["noise"] = _lap(started, sum(timings.values()))

    image = image_labels(loaded, source.rows.tolist(), frame) if loaded is not None else None
    notes += image.notes if image is not None else []
    head = _head_task(source, c.head_task, c.head_classes)
    head_table = None
    if head is not None:
        models = (target_model, dissector_model)
        outputs = _head_outputs(source, head.layer, loaded, models, recording)
        if outputs is None:
            notes.append(
                f"the run did not record the classifier head {head.layer!r}: pass --probe (it is "
                "then recorded) or add it to the run's --layers for the head check"
            )
        else:
            context = head_context(source, head.layer, notes)
            scores = head_scores(similarity, cosines, context, outputs, params)
            head_table = head_check(scores, list(concepts.concepts), head, frame)
            truth.head, truth.head_outputs = dataclasses.asdict(head), outputs
    for note in notes:
        log.warning("%s: %s", name, note)
    timings["classes"] = _lap(started, sum(timings.values()))

    units = _unit_table(
        source, nulls, grounding, c.iou_threshold, frame, image, c.auroc_threshold, truth
    )
    units = tables.with_stability(units, source.layers, survival)
    layers = tables.layer_table(source.layers, units, nulls, grounding, c.bootstrap, c.seed)
    overall = tables.overall(units, c.bootstrap, c.seed)
    timings["agreement"] = _lap(started, sum(timings.values()))
    info = {
        "run": name,
        "settings": {
            "null_seeds": c.null_seeds,
            "null_levels": [95, 99],
            "quantile": c.quantile,
            "iou_threshold": c.iou_threshold,
            "auroc_threshold": c.auroc_threshold,
            "stability_reps": c.stability_reps,
            "noise": list(c.noise),
            "max_samples": c.max_samples,
            "max_side": c.max_side,
            "bootstrap": c.bootstrap,
            "confidence": 0.95,
            "seed": c.seed,
            "cosine_model": "all-MiniLM-L6-v2",
        },
        "similarity": {"name": sim_name, "params": params},
        "grounding": {
            "source": masks.description if masks is not None else None,
            "images": grounding.images if grounding else 0,
            "concepts_with_masks": len(grounding.masked) if grounding else 0,
            "exact_thresholds": dict(grounding.exact) if grounding else {},
        },
        "stability": tables.stability_summary(units),
        "planted": planted.summary if planted is not None else None,
        "image_labels": {
            "classes": image.titles if image is not None else [],
            "images_labelled": int(image.labelled.any(axis=1).sum()) if image is not None else 0,
        },
        "head_check": (
            {"task": head.task, "classes": list(head.classes), **head_summary(head_table)}
            if head is not None and head_table is not None
            else None
        ),
        "counts": {
            "layers": len(source.layers),
            "units": len(units),
            "images": len(source.rows),
            "units_above_null_95": int(units["above_null_95"].sum()),
            "units_above_null_99": int(units["above_null_99"].sum()),
            "units_above_threshold": int(units["above_threshold"].sum()),
            "grounded_units": int(
                (units["grounded_concept"].fillna(UNGROUNDED) != UNGROUNDED).sum()
            ),
            "image_grounded_units": int(units["image_class"].notna().sum()),
            "concept_grounded_units": int(units["concept_truth"].notna().sum()),
        },
        "equivalence_classes": {
            "masks": truth.mask_classes,
            "images": truth.image.classes if truth.image is not None else [],
        },
        "overall": overall,
        "notes": notes,
        "timings_s": timings,
    }
    result = Evaluation(
        units=units, layers=layers, info=info, head=head_table,
        planted=planted.table if planted is not None else None,
    )  # fmt: skip
    if c.write:
        result.out = tables.write(
            source.run.path, result.units, result.layers, result.info,
            head=result.head, planted=result.planted, truth=truth,
        )  # fmt: skip
        above = dict(zip(layers["layer"], layers["units_above_null_99"], strict=True))
        write_summary(source.run.path, extra={"units_above_null": above})
    return result


def _lap(started: float, before: float = 0.0) -> float:
    return round(time.perf_counter() - started - before, 4)


def _head_task(
    source: RunSource, task: str | None, classes: Sequence[str] | None
) -> HeadTask | None:
    info = source.run.info.get("target", {}).get("info", {}) or {}
    return head_task(info, task, classes)


def _unmatched(masks: Any) -> list[str]:
    """A note naming the mask/finding names that match no concept, if any."""
    if not masks.unmatched:
        return []
    names = sorted(masks.unmatched)
    more = " ..." if len(names) > 10 else ""
    return [
        f"{len(names)} mask/finding names match no concept of the run and were left out: "
        f"{', '.join(names[:10])}{more}"
    ]


def _noise_column(sigma: float) -> str:
    return f"noise_{sigma:g}"


def _head_outputs(
    source: RunSource,
    layer: str,
    probe: Probe | None,
    models: tuple[Any, Any],
    recording: RecordSettings,
) -> np.ndarray | None:
    """The head's outputs on the run's rows: from the run's cache when it recorded the head,
    else recorded now (cached under its own fingerprint; the dissector's cache is the run's);
    None without a probe."""
    if layer in source.layers:
        return source.activations(layer)
    if probe is None:
        return None
    target, dissector = models
    done = record(target, dissector, probe, [layer], recording)
    if done is None or not np.array_equal(done.rows, source.rows):
        raise MammodissectError(
            f"recording the head {layer!r} read other images than run {source.run.name!r} "
            "(the probe changed?); rerun `mammodissect run` with the head in --layers"
        )
    return done.activations(layer)


def _probe(probe: Any, source: RunSource, notes: list[str]) -> Probe | None:
    if probe is None:
        notes.append("no probe given (pass --probe, the run's probe): grounding skipped")
        return None
    return matching_probe(probe, source.run.name, source.run.fingerprint("probe"))


def _unit_table(
    source: RunSource,
    nulls: dict[str, NullBaseline],
    grounding: Grounding | None,
    iou_threshold: float,
    frame: pd.DataFrame,
    image: ImageLabels | None,
    auroc_threshold: float,
    truth: StoredTruth,
) -> pd.DataFrame:
    neurons = source.neurons
    ranked = {
        key: list(group.sort_values("rank")["concept"])
        for key, group in neurons.groupby(["layer", "unit"], sort=False)
    }
    frame = frame.set_index("concept")
    has_categories = frame[["category", "broad_category"]].notna().any().any()
    parts = []
    for layer in source.layers:
        best = source.run.best[source.run.best["layer"] == layer].sort_values("unit")
        null = nulls[layer]
        threshold = float(best["score"].mean())
        part = pd.DataFrame(
            {
                "layer": layer,
                "unit": best["unit"].to_numpy(),
                "label": best["concept"].to_numpy(),
                "score": best["score"].to_numpy(),
                "above_threshold": best["score"].to_numpy() >= threshold,
                "above_null_95": null.above[95],
                "above_null_99": null.above[99],
            }
        )
        if grounding is not None and layer in grounding.iou:
            names, values = grounding.grounded(layer, iou_threshold)
            part["grounded_concept"] = names
            part["iou"] = values
        else:
            part["grounded_concept"] = None
            part["iou"] = np.nan
        if image is not None:
            auroc, auprc = image_grounding(source.activations(layer), image)
            labels = [ranked[(layer, unit)] for unit in part["unit"]]
            columns = unit_columns(auroc, auprc, image, labels, auroc_threshold)
            part[list(columns.columns)] = columns.to_numpy(dtype=object)
        else:
            part[list(IMAGE_COLUMNS)] = None
        fair = fair_columns(
            [ranked[(layer, unit)] for unit in part["unit"]],
            truth.layer(layer, source.activations(layer)),
        )
        part[list(FAIR_COLUMNS)] = fair.to_numpy(dtype=object)
        parts.append(part)
    units = pd.concat(parts, ignore_index=True)
    grounded = units["grounded_concept"].notna() & (units["grounded_concept"] != UNGROUNDED)
    for column in FLAGS:
        units[column] = pd.Series([None] * len(units), dtype=object)
    units["cosine"] = np.nan
    if grounded.any():
        chosen = units[grounded]
        labels = [ranked[(r.layer, r.unit)] for r in chosen.itertuples()]
        flags = agreement_flags(
            labels, list(chosen["grounded_concept"]), frame if has_categories else None
        )
        for column in flags:
            units.loc[grounded, column] = flags[column].to_numpy()
        units.loc[grounded, "cosine"] = minilm_cosines(
            list(chosen["label"]), list(chosen["grounded_concept"])
        )
    return units[tables.UNIT_COLUMNS]
