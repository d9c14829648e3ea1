"""The single pass: hooked target forward and dissector embeddings over the probe loader.

For each batch of probe images (:mod:`mammodissect.probe.loader`: decoded once), the target
runs with hooks on every requested layer (each output pooled to one value per unit inside the
hook, detached and moved off the device; the forward stops after the last requested layer
when nothing else needs the rest) and the dissector embeds the same images. Pooled
activations and embeddings go to memory-mapped caches keyed by fingerprints, with a running
top-k of images per unit; progress is committed after every batch, so an interrupted run
resumes where it stopped and a rerun that changes only the concepts or the similarity
function does no forward pass.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mammodissect import distributed
from mammodissect.cache import PreparedImageCache, RowStore
from mammodissect.errors import MammodissectError
from mammodissect.hooks import Trace, pool
from mammodissect.models.base import Dissector, Target, describe_preprocess
from mammodissect.precision import autocast, fingerprint_parts, memory_format
from mammodissect.probe import Probe, load_probe
from mammodissect.probe.loader import probe_batches
from mammodissect.topk import RunningTopK

__all__ = [
    "Embeddings",
    "RecordSettings",
    "Recording",
    "matching_probe",
    "probe_digest",
    "record",
    "record_embeddings",
]

log = logging.getLogger(__name__)

_EMBEDDING = "embedding"


def probe_digest(probe: Probe) -> str:
    """A hash of the probe listing (ids, relative paths, sizes, times) in probe order."""
    text = json.dumps(probe.listing(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def matching_probe(probe: Any, run: str, fingerprint: str | None) -> Probe:
    """``probe`` (a :class:`Probe` or what :func:`load_probe` reads), checked to be the probe
    the run directory ``run`` recorded: its listing must hash to ``fingerprint`` (run.json's
    ``fingerprints.probe``; None skips the check)."""
    loaded = probe if isinstance(probe, Probe) else load_probe(probe)
    if fingerprint is not None and probe_digest(loaded) != fingerprint:
        raise MammodissectError(
            f"probe {Path(str(loaded.root)).name!r} is not the probe run {run!r} used "
            "(its listing differs from run.json's fingerprint); give the run's probe"
        )
    return loaded


@dataclass
class Recording:
    """What the pass produced: per-layer activations, embeddings, top images, bookkeeping."""

    layers: list[str]
    units: dict[str, int]
    rows: np.ndarray
    skipped: dict[int, str]
    target_store: RowStore
    dissector_store: RowStore
    top_k: int
    stats: dict[str, Any] = field(default_factory=dict)

    def activations(self, layer: str) -> np.ndarray:
        """(images used, units) pooled activations of ``layer``, in probe order."""
        return np.asarray(self.target_store.array(layer)[self.rows], dtype=np.float32)

    def embeddings(self) -> np.ndarray:
        """(images used, D) dissector image embeddings, in probe order."""
        return np.asarray(self.dissector_store.array(_EMBEDDING)[self.rows], dtype=np.float32)

    def image_facts(self) -> dict[int, dict[str, Any]]:
        """Per probe row: reading facts (format, view, laterality, VOI) and target geometry."""
        return self.target_store.read_rows()

    def top_images(self, layer: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(k, units) highest activations of each unit and their probe row indices."""
        top = _saved_top(self.target_store, layer, self.top_k) if k <= self.top_k else None
        if top is None:
            top = RunningTopK.from_matrix(self.target_store.array(layer), k, self.rows)
        k = min(k, top.values.shape[0])
        return top.values[:k].numpy(), top.indices[:k].numpy()


def _saved_top(store: RowStore, layer: str, k: int) -> RunningTopK | None:
    """The running top-k of ``layer`` as last committed in ``store`` (None before any)."""
    if f"{layer}.values" not in store.extra:
        return None
    return RunningTopK.from_state(
        k, {key: store.extra[f"{layer}.{key}"] for key in ("values", "indices")}
    )


@dataclass(frozen=True)
class RecordSettings:
    """How a probe is recorded: one object from a run's configuration to every pass
    (:func:`record`, :func:`record_embeddings`, the torchrun shards, noise stability,
    ``evaluate``'s head recording, the audit).

    Attributes
    ----------
    cache_root:
        Where the fingerprinted caches live.
    pooling:
        ``mean``, ``max`` or ``cls`` (see :func:`mammodissect.hooks.pool`).
    batch_size, device, num_workers:
        Images per batch, where the models run, image-decoding processes.
    top_k:
        Images kept per unit by the running top-k (a cache started with another value keeps
        its own; :meth:`Recording.top_images` reads more from the stored matrix).
    progress:
        Show progress bars.
    voi:
        The DICOM VOI transform to apply (see :func:`mammodissect.probe.read_image_with_info`).
    strict:
        Stop at the first unreadable image instead of skipping it (finished batches stay
        cached).
    cache_images:
        Keep prepared images (decoded, cropped, resized) on disk for later runs and models.
    precision, channels_last:
        Autocast and memory format of the forward passes (see :mod:`mammodissect.precision`);
        values are stored as float32 either way.
    noise, noise_seed:
        Record the probe with Gaussian noise (0: none; see :func:`record`).
    """

    cache_root: Path
    pooling: str = "mean"
    batch_size: int = 16
    device: torch.device | str = "cpu"
    num_workers: int = 0
    top_k: int = 5
    progress: bool = True
    voi: str = "auto"
    strict: bool = False
    cache_images: bool = True
    precision: str = "fp32"
    channels_last: bool = False
    noise: float = 0.0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise MammodissectError(f"noise {self.noise!r} must be a finite number >= 0")

    @classmethod
    def of_run(cls, config: Any, device: torch.device | str, **changes: Any) -> RecordSettings:
        """The recording settings of a :class:`~mammodissect.config.RunConfig`, on
        ``device``, with ``changes`` applied."""
        settings = cls(
            cache_root=Path(config.cache_root()), pooling=config.pooling,
            batch_size=config.batch_size, device=device, num_workers=config.num_workers,
            top_k=config.top_images, progress=not config.quiet, voi=config.voi,
            strict=config.strict, cache_images=config.cache_images,
            precision=config.precision, channels_last=config.channels_last,
        )  # fmt: skip
        return dataclasses.replace(settings, **changes)

    def image_cache(self) -> PreparedImageCache | None:
        """The prepared-image cache (None when ``cache_images`` is off)."""
        return PreparedImageCache(self.cache_root) if self.cache_images else None

    def fingerprint_parts(self) -> dict[str, Any]:
        """What the precision settings add to both caches' fingerprints."""
        return fingerprint_parts(self.precision, self.channels_last)


def _shares_forward(target: Target, dissector: Dissector) -> bool:
    return getattr(dissector, "image_module", None) is target.module and (
        target.preprocess == dissector.preprocess
    )


def record(
    target: Target,
    dissector: Dissector,
    probe: Probe,
    layers: list[str],
    settings: RecordSettings,
) -> Recording | None:
    """Record pooled activations of ``layers`` and dissector embeddings over the probe.

    Under torchrun (a process group of several ranks) each rank records its shard and
    rank 0 merges them (see :mod:`mammodissect.distributed`): rank 0 gets the same
    :class:`Recording` a single process would, the other ranks get None.

    Parameters
    ----------
    target, dissector:
        Loaded models (see :mod:`mammodissect.models`).
    probe:
        The probe images, in the one order every table uses.
    layers:
        Resolved module names of ``target.module``.
    settings:
        How (:class:`RecordSettings`).

    With ``settings.noise`` > 0 the probe is recorded with Gaussian noise. Every recipe's
    prepared
        array (the decoded image cropped and resized to the model's input size, before the
        per-image min-max scaling and normalisation that map it to [0, 1] and beyond; for a
        user transform or a plain callable, the decoded image) gets noise, independent per
        pixel, of standard deviation ``noise`` times that array's intensity range (max - min),
        and is clipped back to the range, so ``noise`` is a fraction of the image's
        full intensity range and the min-max scaling (almost surely) stays the clean one.
        The noise of probe row ``r`` is ``numpy.random.default_rng([noise_seed, r])``'s
        first standard normal array of the prepared array's shape, drawn afresh for each
        recipe: it does not depend on batch size, workers, shards or the other model's
        recipe, and target and dissector get the same noise field when their prepared
        arrays have the same shape (the same noisy image when they share the recipe).
        Prepared images are cached clean and the noise is added after; ``noise`` > 0 is
        part of both cache fingerprints (0 leaves them unchanged).
    """
    started = time.perf_counter()
    digest = probe_digest(probe)
    n = len(probe)
    cache_root = settings.cache_root
    precise = settings.fingerprint_parts()
    parts = {
        "target": {
            "model": target.identity or {"spec": target.spec},
            "layers": layers,
            "pooling": settings.pooling,
            "preprocess": describe_preprocess(target.preprocess),
            "voi": settings.voi,
            "probe": digest,
            **precise,
        },
        "dissector": _dissector_part(dissector, digest, settings.voi, precise),
    }
    if settings.noise > 0:
        noise = {"sigma": float(settings.noise), "seed": int(settings.noise_seed), "on": "prepared"}
        for part in parts.values():
            part["noise"] = noise
    ranks = distributed.current()
    target_store = RowStore(cache_root, "target", parts["target"], n)
    dissector_store = RowStore(cache_root, "dissector", parts["dissector"], n)
    stores = (target_store, dissector_store)
    # the running top-k keeps the size it was started with; more images come from the matrix
    top_k = int(target_store.extra.get("top_k", settings.top_k))
    target_store.extra["top_k"] = np.array(top_k)
    # where each cache resumes from, for the log once the pass is done
    resumed = {s: s.rows_done for s in stores if 0 < s.rows_done < n}
    start = min(s.rows_done if s.columns else 0 for s in stores)
    stats: dict[str, Any] = {
        "target_cache": _status(target_store),
        "dissector_cache": _status(dissector_store),
        "target_forward_batches": 0,
        "dissector_forward_batches": 0,
        "rows_recorded": 0,
        "shared_forward": _shares_forward(target, dissector),
        "world_size": ranks.world_size,
    }
    settings = dataclasses.replace(
        settings, device=torch.device(settings.device), top_k=top_k,
        progress=settings.progress and ranks.root,
    )  # fmt: skip
    if ranks.distributed:
        # rank 0's caches decide, so every rank takes the same path
        top_k, needed = distributed.broadcast(
            (top_k, start < n or not all(s.complete for s in stores))
        )
        settings = dataclasses.replace(settings, top_k=top_k)
        if needed:
            resumed = {}
            _record_sharded(target, dissector, probe, layers, stores, parts, stats, ranks, settings)
        if not ranks.root:
            return None
    elif start < n or not all(s.complete for s in stores):
        _run_pass(target, dissector, probe, layers, stores, (start, n), stats, settings)
    for store, rows_done in resumed.items():
        log.info(
            "resumed %s cache from image %d of %d", store.directory.parent.name, rows_done + 1, n
        )
    skipped = {**dissector_store.skipped, **target_store.skipped}
    if settings.strict and skipped:  # skips recorded earlier are judged under today's flags
        row = min(skipped)
        raise MammodissectError(
            f"cannot use probe image {probe.items[row].relpath!r}: {skipped[row]} (--strict "
            f"stops at a bad image; the cache recorded {len(skipped)} such image(s) in an "
            "earlier run without --strict: fix or remove them, or drop --strict)"
        )
    rows = np.array([r for r in range(n) if r not in skipped], dtype=np.int64)
    if not len(rows):
        raise MammodissectError(
            f"none of the {n} probe images could be read; first problem: "
            f"{probe.items[min(skipped)].relpath}: {skipped[min(skipped)]}"
        )
    units = {layer: target_store.columns[layer] for layer in layers}
    stats["seconds"] = time.perf_counter() - started
    stats["voi"] = settings.voi
    return Recording(layers, units, rows, skipped, target_store, dissector_store, top_k, stats)


def _dissector_part(
    dissector: Dissector, digest: str, voi: str, settings: dict[str, Any]
) -> dict[str, Any]:
    """What the dissector cache's fingerprint is made of (the same for a run and an audit)."""
    return {
        "model": getattr(dissector, "identity", None) or {"spec": getattr(dissector, "spec", "")},
        "preprocess": describe_preprocess(dissector.preprocess),
        "voi": voi,
        "probe": digest,
        **settings,
    }


def _stop_if_strict(strict: bool, errors: dict[int, str], probe: Probe) -> None:
    if strict and errors:
        row = min(errors)
        raise MammodissectError(
            f"cannot use probe image {probe.items[row].relpath!r}: {errors[row]} (--strict "
            "stops at the first bad image; finished batches are cached)"
        )


@dataclass
class Embeddings:
    """The dissector's image embeddings of a probe (:func:`record_embeddings`)."""

    rows: np.ndarray
    skipped: dict[int, str]
    store: RowStore
    stats: dict[str, Any] = field(default_factory=dict)

    def embeddings(self) -> np.ndarray:
        """(images used, D) image embeddings, in probe order."""
        return np.asarray(self.store.array(_EMBEDDING)[self.rows], dtype=np.float32)


def record_embeddings(dissector: Dissector, probe: Probe, settings: RecordSettings) -> Embeddings:
    """The dissector's image embeddings of the probe alone, in the cache :func:`record` uses
    (same fingerprint: a run's cache serves an audit of its probe, and the other way round);
    resumable like it. Runs in one process.

    Raises
    ------
    MammodissectError
        Under torchrun, for a dissector that embeds probe rows, or when no image can be read
        (or, with ``strict``, one cannot).
    """
    if distributed.current().distributed:
        raise MammodissectError("recording the dissector alone runs in one process")
    if getattr(dissector, "encode_rows", None) is not None:
        raise MammodissectError("the annotation dissector embeds no images; nothing to record")
    started = time.perf_counter()
    n = len(probe)
    part = _dissector_part(
        dissector, probe_digest(probe), settings.voi, settings.fingerprint_parts()
    )
    store = RowStore(settings.cache_root, "dissector", part, n)
    stats: dict[str, Any] = {"dissector_cache": _status(store), "dissector_forward_batches": 0}
    device = torch.device(settings.device)
    strict = settings.strict
    if not store.complete:
        if hasattr(dissector, "to"):
            dissector.to(device)
        loader = probe_batches(
            probe, [dissector.preprocess], start=store.rows_done,
            batch_size=settings.batch_size, num_workers=settings.num_workers,
            voi=settings.voi, image_cache=settings.image_cache(),
        )  # fmt: skip
        bar = tqdm(total=n, initial=store.rows_done, desc="embedding", unit="img",
                   disable=not settings.progress)  # fmt: skip
        with torch.inference_mode(), autocast(settings.precision, device), bar:
            for batch in loader:
                _stop_if_strict(strict, batch["errors"], probe)
                store.skipped.update(batch["errors"])
                good = batch["good"]
                if len(good):
                    x = batch["inputs"][0].to(device)
                    if settings.channels_last and x.ndim == 4:
                        x = x.contiguous(memory_format=memory_format(True))
                    emb = dissector.encode_images(x).detach().float().cpu()
                    store.allocate({_EMBEDDING: emb.shape[1]})
                    store.write(_EMBEDDING, good.numpy(), emb.numpy())
                    stats["dissector_forward_batches"] += 1
                if store.columns or not len(good):
                    store.commit(batch["rows"][-1] + 1)
                bar.update(len(batch["rows"]))
    _stop_if_strict(strict, store.skipped, probe)
    rows = np.array([r for r in range(n) if r not in store.skipped], dtype=np.int64)
    if not len(rows):
        raise MammodissectError(f"none of the {n} probe images could be read")
    stats["seconds"] = time.perf_counter() - started
    return Embeddings(rows, dict(store.skipped), store, stats)


def _status(store: RowStore) -> str:
    if store.complete:
        return "reused"
    return "resumed" if store.rows_done else "recorded"


def _record_sharded(
    target: Target,
    dissector: Dissector,
    probe: Probe,
    layers: list[str],
    stores: tuple[RowStore, RowStore],
    parts: dict[str, dict[str, Any]],
    stats: dict[str, Any],
    ranks: distributed.World,
    settings: RecordSettings,
) -> None:
    """Record this rank's shard into its own shard stores, then merge every shard into
    ``stores`` on rank 0 (committed only once whole) and drop the shard stores."""
    n = len(probe)
    lo, hi = distributed.shard_rows(n, settings.batch_size, ranks.rank, ranks.world_size)
    shard_of = {
        kind: RowStore(settings.cache_root, kind, {**parts[kind], "shard": [lo, hi]}, n)
        for kind in ("target", "dissector")
    }
    shards = (shard_of["target"], shard_of["dissector"])
    for shard in shards:
        if not shard.columns:
            shard.rows_done = max(shard.rows_done, lo)  # a shard's resume point starts at lo
    start = min(s.rows_done if s.columns else lo for s in shards)
    mine = {key: 0 for key in ("target_forward_batches", "dissector_forward_batches")}
    mine["rows_recorded"] = 0
    mine["shared_forward"] = stats["shared_forward"]
    problem, failure = None, None
    try:
        distributed.same_weights_everywhere(
            (target.module, getattr(dissector, "image_module", None)), ranks
        )
        if start < hi:
            _run_pass(target, dissector, probe, layers, shards, (start, hi), mine, settings)
    except BaseException as err:  # every rank must hear of it, or the others wait forever
        problem = str(err) or type(err).__name__
        failure = err
    problems = distributed.all_gather(problem)
    if failure is not None:
        raise failure
    for rank, text in enumerate(problems):
        if text is not None:
            raise MammodissectError(f"rank {rank} of {ranks.world_size} failed: {text}")
    shard_t, shard_d = shards
    top_k = settings.top_k
    summary = {
        "range": (lo, hi),
        "columns": (shard_t.columns, shard_d.columns),
        "skipped": {**shard_d.skipped, **shard_t.skipped},
        "facts": shard_t.read_rows(),
        "tops": {
            layer: (top.state() if (top := _saved_top(shard_t, layer, top_k)) else None)
            for layer in layers
        },
        "stats": {k: v for k, v in mine.items() if k != "shared_forward"},
    }
    summaries = distributed.gather(summary)
    blocks: dict[tuple[int, str], list[Any] | None] = {}
    for which, (shard, names) in enumerate(((shard_t, layers), (shard_d, [_EMBEDDING]))):
        for name in names:  # one array at a time keeps the gathered memory small
            block = np.asarray(shard.array(name)[lo:hi]) if name in shard.columns else None
            blocks[which, name] = distributed.gather(block)
    if ranks.root:
        assert summaries is not None
        distributed.merge_shards(stores, layers, summaries, blocks, top_k, stats, n)
    distributed.barrier()  # the full caches are committed: the shard stores can go
    for shard in shards:
        shutil.rmtree(shard.directory, ignore_errors=True)


def _run_pass(
    target: Target,
    dissector: Dissector,
    probe: Probe,
    layers: list[str],
    stores: tuple[RowStore, RowStore],
    span: tuple[int, int],
    stats: dict[str, Any],
    settings: RecordSettings,
) -> None:
    """Record rows ``span`` = (start, stop) into ``stores``."""
    start, stop = span
    device, channels_last = torch.device(settings.device), settings.channels_last
    top_k, strict = settings.top_k, settings.strict
    target_store, dissector_store = stores
    shared = stats["shared_forward"]
    # a dissector that embeds probe rows (the annotation dissector) needs no pixels of its own
    encode_rows = getattr(dissector, "encode_rows", None)
    same_recipe = target.preprocess == dissector.preprocess or encode_rows is not None
    recipes = [target.preprocess] if same_recipe else [target.preprocess, dissector.preprocess]
    loader = probe_batches(
        probe, recipes, rows=range(start, stop), batch_size=settings.batch_size,
        num_workers=settings.num_workers, voi=settings.voi, image_cache=settings.image_cache(),
        noise=settings.noise, noise_seed=settings.noise_seed,
    )  # fmt: skip
    layout = memory_format(channels_last)
    target.module.to(device).eval()
    if hasattr(dissector, "to"):
        dissector.to(device)
    if channels_last:
        target.module.to(memory_format=layout)
        tower = getattr(dissector, "image_module", None)
        if isinstance(tower, torch.nn.Module):
            tower.to(memory_format=layout)

    def placed(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device)
        return x.contiguous(memory_format=layout) if channels_last and x.ndim == 4 else x

    tops = {
        layer: top
        for layer in layers
        if (top := _saved_top(target_store, layer, top_k)) is not None
    }

    def pooled(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()  # pooled (and stored) in float32 whatever the precision
        return pool(tensor, settings.pooling, name).cpu()

    # the shared pass runs the dissector's whole tower: no stop after the last layer
    trace = Trace(target.module, layers, reduce=pooled, stop=not shared, require=True)
    bar = tqdm(
        total=stop, initial=start, desc="recording", unit="img", disable=not settings.progress
    )
    with trace, torch.inference_mode(), autocast(settings.precision, device), bar:
        for batch in loader:
            end = batch["rows"][-1] + 1
            need_t = target_store.rows_done < end or not target_store.columns
            need_d = dissector_store.rows_done < end or not dissector_store.columns
            _stop_if_strict(strict, batch["errors"], probe)
            for store in stores:
                store.skipped.update(batch["errors"])
            good = batch["good"]
            if len(good) and (need_t or need_d):
                x_t = placed(batch["inputs"][0])
                x_d = x_t if same_recipe else placed(batch["inputs"][1])
                trace.clear()
                embedding = None
                if shared:
                    embedding = dissector.encode_images(x_d)
                    stats["dissector_forward_batches"] += 1
                else:
                    if need_t:
                        trace(x_t)
                        stats["target_forward_batches"] += 1
                    if need_d:
                        embedding = (
                            encode_rows(good) if encode_rows else dissector.encode_images(x_d)
                        )
                        stats["dissector_forward_batches"] += 1
                if need_t:
                    _store_activations(target_store, tops, layers, trace.outputs, good, top_k)
                if need_d and embedding is not None:  # need_d: one branch above embedded
                    emb = embedding.detach().float().cpu()
                    dissector_store.allocate({_EMBEDDING: emb.shape[1]})
                    fresh = good >= dissector_store.rows_done
                    dissector_store.write(_EMBEDDING, good[fresh].numpy(), emb[fresh].numpy())
            if need_t:
                target_store.log_rows(
                    {r: f for r, f in batch["facts"].items() if r >= target_store.rows_done}
                )
            for store in stores:
                if store.rows_done < end and (store.columns or not len(good)):
                    store.commit(end)
            stats["rows_recorded"] += len(batch["rows"])
            bar.update(len(batch["rows"]))


def _store_activations(
    store: RowStore,
    tops: dict[str, RunningTopK],
    layers: list[str],
    captured: dict[str, torch.Tensor],
    good: torch.Tensor,
    top_k: int,
) -> None:
    missing = [layer for layer in layers if layer not in captured]
    if missing:
        raise MammodissectError(
            f"layer(s) {', '.join(missing)} did not run in the target's forward pass; "
            "choose layers the forward uses"
        )
    store.allocate({layer: captured[layer].shape[1] for layer in layers})
    fresh = good >= store.rows_done  # rows before the resume point are already stored
    rows = good[fresh]
    for layer in layers:
        values = captured[layer][fresh]
        store.write(layer, rows.numpy(), values.numpy())
        top = tops.setdefault(layer, RunningTopK(top_k, values.shape[1]))
        top.update(values, rows)
        store.extra.update({f"{layer}.{k}": v for k, v in top.state().items()})
