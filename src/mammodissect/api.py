"""The Python API: ``dissect(...)`` runs the whole pipeline and returns tidy tables."""

from __future__ import annotations

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

import pandas as pd
import torch

from mammodissect import concepts as concept_sets
from mammodissect import distributed
from mammodissect.analysis import compare, write_summary
from mammodissect.analysis.runs import CONCEPTS_FILE, IMAGES_FILE
from mammodissect.config import RunConfig
from mammodissect.describe import (
    anonymize_id,
    box_table,
    image_table,
    label_units,
    skip_reason,
    top_image_table,
)
from mammodissect.errors import MammodissectError
from mammodissect.layers import resolve_layers
from mammodissect.models import (
    Dissector,
    Target,
    describe_preprocess,
)
from mammodissect.models.configured import load_models, resolve_device
from mammodissect.precision import check_precision
from mammodissect.probe import Probe, load_probe
from mammodissect.record import Recording, probe_digest, record
from mammodissect.similarity import get_similarity

__all__ = ["Dissection", "compare", "dissect", "resolve_device", "run", "write_summary"]

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
    out:
        The run directory, when one was written.
    """

    neurons: pd.DataFrame
    top_images: pd.DataFrame
    run: dict[str, Any]
    images: pd.DataFrame = field(default_factory=pd.DataFrame)
    boxes: pd.DataFrame | None = None
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

    Takes the same arguments as ``mammodissect run`` (``pooling``, ``similarity``,
    ``similarity_params``, ``batch_size``, ``device``, ``image_size``, ``dissector_image_size``,
    ``top_concepts``, ``top_images``, ``prompts``, ``lowercase``, ``duplicates``,
    ``cache_dir``, ``num_workers``, ``seed``,
    ``quiet``); specs and paths may be replaced by loaded objects.

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
    """Run the pipeline for a :class:`~mammodissect.config.RunConfig` (what the CLI calls)."""
    timings: dict[str, float] = {}
    similarity = get_similarity(config.similarity)
    params = _similarity_params(similarity, config)
    device = resolve_device(config.device)
    check_precision(config.precision, device)
    # under torchrun: join the process group; each rank records its shard (cuda:LOCAL_RANK)
    ranks, device, started = distributed.init(device)
    with _timed(timings, "load_inputs"):
        concepts = concept_sets.load(config.concepts, duplicates=config.duplicates)
        probe = config.probe if isinstance(config.probe, Probe) else load_probe(config.probe)
    with _timed(timings, "load_models"), torch.random.fork_rng(devices=[]):
        # seeded: a randomly initialised network is the same in every run and on every rank
        torch.manual_seed(config.seed)
        target, dissector = load_models(config)
        layers = resolve_layers(target.module, config.layers)
    with _timed(timings, "record"):
        try:
            recording = record(
                target,
                dissector,
                probe,
                layers,
                pooling=config.pooling,
                batch_size=config.batch_size,
                device=device,
                cache_root=config.cache_root(),
                num_workers=config.num_workers,
                top_k=config.top_images,
                progress=not config.quiet,
                voi=config.voi,
                strict=config.strict,
                cache_images=config.cache_images,
                precision=config.precision,
                channels_last=config.channels_last,
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
        texts = texts.float().to(device)
        images = torch.from_numpy(recording.embeddings()).to(device)
        if images.shape[1] != texts.shape[1]:
            raise MammodissectError(
                f"dissector gives {images.shape[1]}-d image but {texts.shape[1]}-d text embeddings"
            )
        cosines = images @ texts.T
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
        anonymize_id(it.image_id) if config.anonymize_ids else it.image_id for it in probe.items
    ]
    neurons, tops = [], []
    with _timed(timings, "score"):
        for layer in _progress(layers, config.quiet):
            activations = torch.from_numpy(recording.activations(layer))
            scores = similarity(cosines, activations, device=device, **params)
            neurons.append(label_units(scores, concepts, layer, config.top_concepts))
            values, rows = recording.top_images(layer, config.top_images)
            tops.append(top_image_table(layer, values, rows, image_ids))
    facts = recording.image_facts()
    result = Dissection(
        neurons=pd.concat(neurons, ignore_index=True),
        top_images=pd.concat(tops, ignore_index=True),
        run={},
        images=image_table(probe, facts, recording.skipped, anonymize=config.anonymize_ids),
        boxes=box_table(probe, facts, anonymize=config.anonymize_ids),
    )
    result.run = _run_info(
        config, target, dissector, probe, concepts, recording, params, device, timings
    )
    # the exact strings the dissector embedded, per concept (templates filled, lower-cased)
    result.run["concept_strings"] = dict(zip(concepts.concepts, sent, strict=True))
    if config.out:
        with _timed(timings, "write"):
            result.out = write_run(result, Path(config.out))
            concept_sets.write(concepts, result.out / CONCEPTS_FILE)  # for compare's coverage
            write_summary(result.out)
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
) -> dict[str, Any]:
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
        },
        "dissector": {
            "spec": getattr(dissector, "spec", type(dissector).__name__),
            "info": getattr(dissector, "info", {}),
            "preprocess": describe_preprocess(dissector.preprocess),
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
            "images_skipped": len(recording.skipped),
            "concepts": len(concepts),
            "layers": len(recording.layers),
            "units": sum(recording.units.values()),
        },
        "skipped": [
            _skipped(probe.items[row], reason, config.anonymize_ids)
            for row, reason in sorted(recording.skipped.items())
        ],
        "recording": recording.stats,
        "timings_s": timings,
    }


def _skipped(item: Any, reason: str, anonymize: bool) -> dict[str, str]:
    if not anonymize:
        return {"image": item.relpath, "reason": reason}
    return {"image": anonymize_id(item.image_id), "reason": skip_reason(item, reason, True)}


def write_run(result: Dissection, out: Path) -> Path:
    """Write ``neurons.csv``, ``top_images.csv`` and ``run.json`` into ``out``."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MammodissectError(f"cannot create output folder {out.name!r}: {err}") from err
    result.neurons.to_csv(out / "neurons.csv", index=False)
    result.top_images.to_csv(out / "top_images.csv", index=False)
    result.images.to_csv(out / IMAGES_FILE, index=False)
    if result.boxes is not None:
        result.boxes.to_csv(out / "boxes.csv", index=False)
    (out / "run.json").write_text(json.dumps(result.run, indent=2, default=str) + "\n")
    return out
