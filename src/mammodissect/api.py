"""The Python API: ``dissect(...)`` runs the whole pipeline and returns tidy tables."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import platform
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammodissect import concepts as concept_sets
from mammodissect import distributed
from mammodissect.analysis import compare, write_summary
from mammodissect.analysis.detectability import read_detectability
from mammodissect.concepts.encode import score_matrix, scored_concepts
from mammodissect.config import RunConfig
from mammodissect.describe import (
    box_table,
    image_table,
    label_units,
    top_image_table,
)
from mammodissect.errors import MammodissectError
from mammodissect.layers import resolve_layers
from mammodissect.logs import kept_warnings
from mammodissect.models import (
    Dissector,
    Target,
    describe_preprocess,
)
from mammodissect.models.base import bind_probe
from mammodissect.models.configured import load_models, resolve_device
from mammodissect.models.spec import parse_spec, spec_files
from mammodissect.precision import check_precision, label_parity
from mammodissect.privacy import Redactor, anonymize_id
from mammodissect.probe import Probe, load_probe
from mammodissect.record import Recording, RecordSettings, probe_digest, record
from mammodissect.rundir import (
    BOXES_FILE,
    CONCEPTS_FILE,
    DETECTABILITY_FILE,
    IMAGES_FILE,
    NEURONS_FILE,
    RUN_JSON,
    SUMMARY_CATEGORIES_FILE,
    SUMMARY_FILE,
    TOP_IMAGES_FILE,
    check_writable,
    replace_outputs,
)
from mammodissect.similarity import get_similarity

__all__ = [
    "Dissection",
    "compare",
    "dissect",
    "parity_run",
    "resolve_device",
    "run",
    "write_summary",
]

log = logging.getLogger(__name__)

_PACKAGES = (
    "mammodissect",
    "torch",
    "torchvision",
    "timm",
    "open_clip_torch",
    "numpy",
    "pandas",
    "pydicom",
    "pillow",
)


@dataclass
class Dissection:
    """The result of a run.

    Attributes
    ----------
    neurons:
        One row per (layer, unit, rank): ``layer, unit, rank, concept, score``
        (+ categories when the concept set has them).
    top_images:
        One row per (layer, unit, rank): ``layer, unit, rank, image_id, activation``.
    run:
        What run.json holds: configuration, versions, fingerprints, timings, counts.
    images:
        One row per probe image: id, used or why not, view, laterality, reading facts,
        labels, and where the target's input came from (crop, scale, padding, flip).
    boxes:
        The probe's finding boxes in the target's input pixels (when the probe has boxes).
    detectability:
        The audit's rows for the given concepts (runs given ``detectability``).
    out:
        The run directory, when one was written.
    """

    neurons: pd.DataFrame
    top_images: pd.DataFrame
    run: dict[str, Any]
    images: pd.DataFrame = field(default_factory=pd.DataFrame)
    boxes: pd.DataFrame | None = None
    detectability: pd.DataFrame | None = None
    out: Path | None = None


def dissect(
    target: str | Target,
    dissector: str | Dissector,
    probe: str | Path | Probe,
    concepts: str | Path | list[str] | concept_sets.ConceptSet,
    layers: str | list[str],
    out: str | Path | None = None,
    **options: Any,
) -> Dissection:
    """Dissect ``layers`` of ``target`` with ``dissector`` over ``probe`` against ``concepts``.

    Takes the settings of ``mammodissect run`` by their :class:`RunConfig` names (each
    flag's ``--help`` says more; an unknown name is an error naming the closest one); specs and
    paths may be replaced by loaded objects.

    - Concepts: ``prompts`` (templates such as ``"a mammogram showing {}"``), ``lowercase``,
      ``duplicates`` (``first``, ``last`` or ``multi`` for a string in several categories).
    - Labels: ``pooling`` (``mean``, ``max``, ``cls``), ``similarity`` (default
      ``correlation``; ``soft_wpmi`` as published) with ``similarity_params``,
      ``top_concepts``, ``top_images``.
    - Detectability: ``detectability`` (an audit folder), ``min_auroc`` (labels restricted to
      concepts the dissector sees), ``calibrated`` (the audit's probabilities as S).
    - Compute: ``batch_size``, ``device``, ``precision`` (``fp32``, ``bf16``, ``fp16``),
      ``channels_last``, ``num_workers``, ``seed``, ``quiet``.
    - Images: ``preprocess``, ``dissector_preprocess``, ``image_size``,
      ``dissector_image_size``, ``voi`` (DICOM VOI transform), ``cache_dir``,
      ``cache_images``, ``strict`` (stop at the first unreadable image), ``anonymize_ids``
      (no folder or file name in the outputs).

    Examples
    --------
    >>> result = dissect(  # doctest: +SKIP
    ...     "timm:resnet18?weights=r18.pth", "openclip:RN50?weights=rn50.pt",
    ...     "probe/", "concepts.txt", "layer3,layer4", out="runs/r18")
    >>> result.neurons.query("rank == 1").head()  # doctest: +SKIP
    """
    config = RunConfig.from_mapping(
        dict(
            target=target,
            dissector=dissector,
            probe=probe,
            concepts=concepts,
            layers=layers,
            out=str(out) if out is not None else None,
            **options,
        ),
        source="dissect()",
    )
    return run(config)


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(time.perf_counter() - started, 4)


def _similarity_params(fn: Any, config: RunConfig) -> dict[str, Any]:
    signature = inspect.signature(fn)
    accepted = {
        name: p.default
        for name, p in signature.parameters.items()
        if p.kind == p.KEYWORD_ONLY and name not in ("device", "chunk_size", "max_memory_mb")
    }
    unknown = sorted(set(config.similarity_params) - set(accepted))
    if unknown:
        raise MammodissectError(
            f"similarity {config.similarity!r} takes no parameter {', '.join(unknown)}; "
            f"it takes {', '.join(accepted) or 'none'}"
        )
    params = {**accepted, **config.similarity_params}
    if "seed" in accepted and "seed" not in config.similarity_params:
        params["seed"] = config.seed
    return params


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def run(config: RunConfig) -> Dissection:
    """Run the pipeline for a :class:`~mammodissect.config.RunConfig` (what the CLI calls).

    Every warning logged on the way is also kept in run.json (``warnings``).
    """
    with kept_warnings() as warned:
        return _run(config, warned)


def _run(config: RunConfig, warned: list[str]) -> Dissection:
    timings: dict[str, float] = {}
    similarity = get_similarity(config.similarity)
    params = _similarity_params(similarity, config)
    device = resolve_device(config.device)
    check_precision(config.precision, device)
    if config.out:  # before any forward pass: a read-only --out must not cost a recording
        check_writable(config.out)
    # under torchrun: join the process group; each rank records its shard (cuda:LOCAL_RANK)
    ranks, device, started = distributed.init(device)
    with _timed(timings, "load_inputs"):
        concepts = concept_sets.load(config.concepts, duplicates=config.duplicates)
        probe = config.probe if isinstance(config.probe, Probe) else load_probe(config.probe)
    redact = Redactor.for_probe(probe, config.probe, anonymize=config.anonymize_ids)
    if config.strict and probe.missing:
        first = probe.missing[0]
        raise MammodissectError(
            f"{first.where}: listed image {first.relpath!r}: {first.reason} (--strict stops at "
            f"a missing file; {len(probe.missing)} in all; without --strict they are skipped)"
        )
    with _timed(timings, "load_models"), torch.random.fork_rng(devices=[]):
        # seeded: a randomly initialised network is the same in every run and on every rank
        torch.manual_seed(config.seed)
        target, dissector = load_models(config)
        layers = resolve_layers(target.module, config.layers)
        bind_probe(dissector, probe)
        if getattr(dissector, "binary", False) and config.prompts:
            raise MammodissectError(
                "prompt templates do not apply to the annotation dissector (it matches concept "
                "strings to annotations); drop --prompt"
            )
    with _timed(timings, "record"):
        try:
            recording = record(
                target, dissector, probe, layers, RecordSettings.of_run(config, device)
            )
        finally:
            distributed.shutdown(started)
    if recording is None:  # not rank 0: rank 0 scores the units and writes the outputs
        return Dissection(
            pd.DataFrame(), pd.DataFrame(), {"rank": ranks.rank, "world_size": ranks.world_size}
        )
    with _timed(timings, "encode_concepts"), torch.inference_mode():
        texts, sent = concept_sets.encode_concepts(
            dissector, concepts, config.prompts, config.lowercase, cache_root=config.cache_root()
        )
        cosines = score_matrix(
            dissector, torch.from_numpy(recording.embeddings()).to(device), texts
        )
    scored = concepts
    keep = scored_concepts(dissector, cosines, texts)
    if not keep.all():  # the annotation dissector: only concepts the probe's annotations show
        if not keep.any():
            raise MammodissectError(
                f"no concept of {concepts.name!r} is shown by the probe's annotations; map your "
                "annotation values to concept strings with annotations?map=FILE.csv"
            )
        scored = concepts.subset(np.flatnonzero(keep), name=f"{concepts.name} (annotated)")
        cosines = cosines[:, torch.from_numpy(keep).to(cosines.device)]
    audit, seen = None, {}
    if config.detectability:
        audit = read_detectability(config.detectability)
        seen = audit.describe()
        if config.calibrated:  # S as the audit's probabilities, for every similarity function
            cosines = audit.probabilities(cosines, scored.concepts)
            seen["calibrated"] = True
        if config.min_auroc is not None:  # labels from the concepts the dissector sees
            visible, restriction = audit.visible(scored, float(config.min_auroc))
            if not visible.any():
                raise MammodissectError(
                    f"no concept of {scored.name!r} is visible at AUROC >= {config.min_auroc} "
                    "in the audit; lower --min-auroc"
                )
            seen.update(restriction)
            scored = scored.subset(
                np.flatnonzero(visible), name=f"{scored.name} (AUROC >= {config.min_auroc})"
            )
            cosines = cosines[:, torch.from_numpy(visible).to(cosines.device)]
    if params.get("top_k", 0) > len(recording.rows):
        log.warning(
            "%s: top_k=%d exceeds the %d probe images; using top_k=%d",
            config.similarity,
            params["top_k"],
            len(recording.rows),
            len(recording.rows),
        )
        params["top_k"] = len(recording.rows)
    image_ids = [
        anonymize_id(it.image_id) if redact.anonymize else it.image_id for it in probe.items
    ]
    neurons, tops = [], []
    with _timed(timings, "score"):
        for layer in _progress(layers, config.quiet):
            activations = torch.from_numpy(recording.activations(layer))
            scores = similarity(cosines, activations, device=device, **params)
            neurons.append(label_units(scores, scored, layer, config.top_concepts))
            values, rows = recording.top_images(layer, config.top_images)
            tops.append(top_image_table(layer, values, rows, image_ids))
    facts = recording.image_facts()
    labels = pd.concat(neurons, ignore_index=True)
    if audit is not None:  # every label carries its concept's detectability
        labels["detectability_auroc"] = labels["concept"].map(audit.aurocs())
    result = Dissection(
        neurons=labels,
        top_images=pd.concat(tops, ignore_index=True),
        run={},
        images=image_table(probe, facts, recording.skipped, redact=redact),
        boxes=box_table(probe, facts, redact=redact),
        detectability=None
        if audit is None
        else audit.table[audit.table["concept"].isin(set(concepts.concepts))],
    )
    result.run = _run_info(
        config, target, dissector, probe, scored, recording, params, device, timings, redact
    )
    # the exact strings the dissector embedded, per concept (templates filled, lower-cased)
    result.run["concept_strings"] = dict(zip(concepts.concepts, sent, strict=True))
    if scored is not concepts:
        covered = (texts.abs().sum(dim=1) > 0).cpu().numpy()
        result.run["concepts_left_out"] = {
            "given": concepts.describe(),
            "no_annotation": [c for c, k in zip(concepts, covered, strict=True) if not k],
            "not_shown": [
                c for c, k, s in zip(concepts, covered, keep, strict=True) if k and not s
            ],
        }
    if audit is not None:
        result.run["detectability"] = seen
    result.run["warnings"] = [redact(message) for message in warned]
    if config.out:
        with _timed(timings, "write"):
            result.out = write_run(result, Path(config.out), scored)
    return result


def _progress(layers: list[str], quiet: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(layers, desc="scoring", unit="layer", disable=quiet)


def _run_info(
    config: RunConfig,
    target: Target,
    dissector: Dissector,
    probe: Probe,
    concepts: concept_sets.ConceptSet,
    recording: Recording,
    params: dict[str, Any],
    device: torch.device,
    timings: dict[str, float],
    redact: Redactor,
) -> dict[str, Any]:
    skipped = [
        _skipped(probe.items[row].image_id, probe.items[row].relpath, reason, redact)
        for row, reason in sorted(recording.skipped.items())
    ]
    skipped += [
        _skipped(row.image_id, row.relpath, f"{row.where}: {row.reason}", redact)
        for row in probe.missing
    ]
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.public(),
        "versions": _versions(),
        "device": str(device),
        "world_size": recording.stats.get("world_size", 1),
        "target": {
            "spec": target.spec,
            "info": target.info,
            "preprocess": describe_preprocess(target.preprocess),
            "files": _files(config.target, config.out),
        },
        "dissector": {
            "spec": getattr(dissector, "spec", type(dissector).__name__),
            "info": getattr(dissector, "info", {}),
            "preprocess": describe_preprocess(dissector.preprocess),
            "files": _files(config.dissector, config.out),
        },
        "similarity": {"name": config.similarity, "params": params},
        "fingerprints": {
            "target_cache": recording.target_store.fingerprint,
            "dissector_cache": recording.dissector_store.fingerprint,
            "probe": probe_digest(probe),
            "concepts": concepts.fingerprint(),
        },
        "concepts": concepts.describe(),
        "layers": [{"name": name, "units": recording.units[name]} for name in recording.layers],
        "counts": {
            "images": len(probe),
            "images_used": len(recording.rows),
            "images_skipped": len(skipped),
            "rows_dropped": len(probe.dropped),
            "concepts": len(concepts),
            "layers": len(recording.layers),
            "units": sum(recording.units.values()),
        },
        "skipped": skipped,
        "dropped_rows": [
            _skipped(row.image_id, row.relpath, f"{row.where}: {row.reason}", redact)
            for row in probe.dropped
        ],
        "recording": recording.stats,
        "timings_s": timings,
    }


def _files(spec: Any, out: str | None) -> dict[str, dict[str, Any]]:
    """A model spec's files as run.json records them (see :func:`spec_files`)."""
    if not isinstance(spec, str) or ":" not in spec:
        return {}
    return spec_files(parse_spec(spec), Path(out) if out else None)


def _skipped(image_id: str, relpath: str, reason: str, redact: Redactor) -> dict[str, str]:
    """A left-out image for run.json: its relative path (a pseudonym when anonymising) and why."""
    image = anonymize_id(image_id) if redact.anonymize else relpath
    return {"image": image, "reason": redact(reason)}


def write_run(
    result: Dissection, out: Path, concepts: concept_sets.ConceptSet | None = None
) -> Path:
    """Write the run directory: ``neurons.csv``, ``top_images.csv``, ``images.csv``,
    ``boxes.csv`` (probes with boxes), ``concepts.csv`` (given ``concepts``), ``run.json`` and
    ``summary.csv``.

    The files of an earlier run in ``out`` never survive beside the new ones: run.json goes
    first (a folder left half-written by a crash is no run), and every run output the new
    run does not write (a stale ``boxes.csv``, an earlier evaluation or report) is removed.
    """
    out = check_writable(out)
    (out / RUN_JSON).unlink(missing_ok=True)
    tables = {
        NEURONS_FILE: result.neurons,
        TOP_IMAGES_FILE: result.top_images,
        IMAGES_FILE: result.images,
    }
    if result.boxes is not None:
        tables[BOXES_FILE] = result.boxes
    if result.detectability is not None:
        tables[DETECTABILITY_FILE] = result.detectability
    written = [*tables, RUN_JSON, SUMMARY_FILE, SUMMARY_CATEGORIES_FILE]
    try:
        for name, table in tables.items():
            table.to_csv(out / name, index=False)
        if concepts is not None:
            concept_sets.write(concepts, out / CONCEPTS_FILE)  # for compare's coverage
            written.append(CONCEPTS_FILE)
        (out / RUN_JSON).write_text(json.dumps(result.run, indent=2, default=str) + "\n")
    except OSError as err:
        raise MammodissectError(
            f"cannot write the run into {str(out)!r} ({err.strerror or err}); "
            "check the free space and permissions of --out"
        ) from None
    write_summary(out)
    removed = replace_outputs(out, written)
    if removed:
        log.info("removed outputs of an earlier run in %s: %s", out.name, ", ".join(removed))
    return out


def parity_run(config: RunConfig, precision: str | None = None) -> dict[str, Any]:
    """Run ``config`` in float32 and in ``precision`` and compare the top-1 labels.

    Parameters
    ----------
    config:
        A :class:`~mammodissect.config.RunConfig`; its ``out`` is ignored (nothing is
        written), its caches are used as usual.
    precision:
        The precision to check (default: ``config.precision``); ``channels_last`` is
        taken from ``config`` for that run only.

    Returns
    -------
    dict
        :func:`label_parity`'s counts plus ``precision``, ``channels_last`` and the
        recording seconds of each run.
    """
    precision = precision or config.precision
    base = dataclasses.replace(config, out=None, precision="fp32", channels_last=False)
    test = dataclasses.replace(config, out=None, precision=precision)
    reference, other = run(base), run(test)
    return {
        **label_parity(reference.neurons, other.neurons),
        "precision": precision,
        "channels_last": bool(config.channels_last),
        "seconds_fp32": reference.run["timings_s"].get("record"),
        "seconds_other": other.run["timings_s"].get("record"),
    }
