"""The single pass: one deterministic loader, hooked target forward, dissector embeddings.

For each batch of probe images, decoded once, the target runs with hooks on
every requested layer (each output pooled to one value per unit inside the
hook, detached and moved off the device; the forward stops after the last
requested layer when nothing else needs the rest) and the dissector embeds the
same images. Pooled activations and embeddings go to memory-mapped caches keyed
by fingerprints, with a running top-k of images per unit; progress is committed
after every batch, so an interrupted run resumes where it stopped and a rerun
that changes only the concepts or the similarity function does no forward pass.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from mammodissect.cache import RowStore
from mammodissect.errors import MammodissectError
from mammodissect.hooks import StopForward, first_tensor, hooked, pool
from mammodissect.models.base import Dissector, Preprocess, Target, describe_preprocess
from mammodissect.probe import Probe, read_image
from mammodissect.topk import RunningTopK

__all__ = ["Recording", "probe_digest", "record"]

log = logging.getLogger(__name__)

_EMBEDDING = "embedding"


def probe_digest(probe: Probe) -> str:
    """A hash of the probe listing (ids, relative paths, sizes, times) in probe order."""
    text = json.dumps(probe.listing(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class _ProbeImages(Dataset):
    """Decode each probe image once and preprocess it for the models that need it."""

    def __init__(self, probe: Probe, rows: list[int], recipes: list[Preprocess]):
        self.probe = probe
        self.rows = rows
        self.recipes = recipes

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        item = self.probe.items[row]
        try:
            image = read_image(item.path)
            if not np.isfinite(image).all():
                raise MammodissectError("image holds NaN or infinite values")
            if float(image.max()) == float(image.min()):
                raise MammodissectError("image is constant (all pixels equal)")
            return {"row": row, "inputs": [recipe(image) for recipe in self.recipes]}
        except Exception as err:  # a bad file is skipped with its reason, never fatal
            reason = str(err).replace(str(item.path), item.relpath) or type(err).__name__
            return {"row": row, "error": reason}


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if "error" not in it]
    inputs = (
        [torch.stack([it["inputs"][j] for it in good]) for j in range(len(good[0]["inputs"]))]
        if good
        else []
    )
    return {
        "rows": [it["row"] for it in items],
        "good": torch.tensor([it["row"] for it in good], dtype=torch.long),
        "inputs": inputs,
        "errors": {it["row"]: it["error"] for it in items if "error" in it},
    }


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

    def top_images(self, layer: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(k, units) highest activations of each unit and their probe row indices."""
        state = self.target_store.extra
        if k <= self.top_k and f"{layer}.values" in state:
            top = RunningTopK.from_state(
                self.top_k,
                {"values": state[f"{layer}.values"], "indices": state[f"{layer}.indices"]},
            )
        else:
            top = RunningTopK.from_matrix(self.target_store.array(layer), k, self.rows)
        k = min(k, top.values.shape[0])
        return top.values[:k].numpy(), top.indices[:k].numpy()


def _shares_forward(target: Target, dissector: Dissector) -> bool:
    return getattr(dissector, "image_module", None) is target.module and (
        target.preprocess == dissector.preprocess
    )


def record(
    target: Target,
    dissector: Dissector,
    probe: Probe,
    layers: list[str],
    *,
    pooling: str = "mean",
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    cache_root: Path,
    num_workers: int = 0,
    top_k: int = 5,
    progress: bool = True,
) -> Recording:
    """Record pooled activations of ``layers`` and dissector embeddings over the probe.

    Parameters
    ----------
    target, dissector:
        Loaded models (see :mod:`mammodissect.models`).
    probe:
        The probe images, in the one order every table uses.
    layers:
        Resolved module names of ``target.module``.
    pooling:
        ``mean``, ``max`` or ``cls`` (see :func:`mammodissect.hooks.pool`).
    cache_root:
        Where the fingerprinted caches live.
    top_k:
        Images kept per unit by the running top-k (a cache started with another value keeps
        its own; :meth:`Recording.top_images` reads more from the stored matrix).
    """
    started = time.perf_counter()
    digest = probe_digest(probe)
    n = len(probe)
    target_store = RowStore(
        cache_root,
        "target",
        {
            "model": target.identity or {"spec": target.spec},
            "layers": layers,
            "pooling": pooling,
            "preprocess": describe_preprocess(target.preprocess),
            "probe": digest,
        },
        n,
    )
    dissector_store = RowStore(
        cache_root,
        "dissector",
        {
            "model": getattr(dissector, "identity", None)
            or {"spec": getattr(dissector, "spec", "")},
            "preprocess": describe_preprocess(dissector.preprocess),
            "probe": digest,
        },
        n,
    )
    stores = (target_store, dissector_store)
    # the running top-k keeps the size it was started with; more images come from the matrix
    top_k = int(target_store.extra.get("top_k", top_k))
    target_store.extra["top_k"] = np.array(top_k)
    resumed = {s: 0 < s.rows_done < n for s in stores}
    start = min(s.rows_done if s.columns else 0 for s in stores)
    stats: dict[str, Any] = {
        "target_cache": _status(target_store),
        "dissector_cache": _status(dissector_store),
        "target_forward_batches": 0,
        "dissector_forward_batches": 0,
        "rows_recorded": 0,
        "shared_forward": _shares_forward(target, dissector),
    }
    if start < n or not all(s.complete for s in stores):
        _run_pass(
            target,
            dissector,
            probe,
            layers,
            stores,
            start,
            stats,
            pooling=pooling,
            batch_size=batch_size,
            device=torch.device(device),
            num_workers=num_workers,
            top_k=top_k,
            progress=progress,
        )
    for store in stores:
        if resumed[store]:
            log.info(
                "resumed %s cache from image %d of %d",
                store.directory.parent.name,
                store.rows_done,
                n,
            )
    skipped = {**dissector_store.skipped, **target_store.skipped}
    rows = np.array([r for r in range(n) if r not in skipped], dtype=np.int64)
    if not len(rows):
        raise MammodissectError(
            f"none of the {n} probe images could be read; first problem: "
            f"{probe.items[min(skipped)].relpath}: {skipped[min(skipped)]}"
        )
    units = {layer: target_store.columns[layer] for layer in layers}
    stats["seconds"] = time.perf_counter() - started
    return Recording(layers, units, rows, skipped, target_store, dissector_store, top_k, stats)


def _status(store: RowStore) -> str:
    if store.complete:
        return "reused"
    return "resumed" if store.rows_done else "recorded"


def _run_pass(
    target: Target,
    dissector: Dissector,
    probe: Probe,
    layers: list[str],
    stores: tuple[RowStore, RowStore],
    start: int,
    stats: dict[str, Any],
    *,
    pooling: str,
    batch_size: int,
    device: torch.device,
    num_workers: int,
    top_k: int,
    progress: bool,
) -> None:
    target_store, dissector_store = stores
    shared = stats["shared_forward"]
    same_recipe = target.preprocess == dissector.preprocess
    recipes = [target.preprocess] if same_recipe else [target.preprocess, dissector.preprocess]
    dataset = _ProbeImages(probe, list(range(start, len(probe))), recipes)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
        persistent_workers=False,
    )
    target.module.to(device).eval()
    if hasattr(dissector, "to"):
        dissector.to(device)
    tops: dict[str, RunningTopK] = {}
    if target_store.columns:
        tops = {
            layer: RunningTopK.from_state(
                top_k,
                {
                    "values": target_store.extra[f"{layer}.values"],
                    "indices": target_store.extra[f"{layer}.indices"],
                },
            )
            for layer in layers
        }

    captured: dict[str, torch.Tensor] = {}

    def on_output(name: str, output: object) -> None:
        if name in captured:
            return  # a module called twice: its first call is the one recorded
        tensor = first_tensor(output)
        if tensor is None:
            raise MammodissectError(f"layer {name!r} returns no tensor; choose another layer")
        captured[name] = pool(tensor, pooling, name).cpu()
        if not shared and len(captured) == len(layers):
            raise StopForward

    bar = tqdm(total=len(probe), initial=start, desc="recording", unit="img", disable=not progress)
    with hooked(target.module, layers, on_output), torch.inference_mode(), bar:
        for batch in loader:
            end = batch["rows"][-1] + 1
            need_t = target_store.rows_done < end or not target_store.columns
            need_d = dissector_store.rows_done < end or not dissector_store.columns
            for store in stores:
                store.skipped.update(batch["errors"])
            good = batch["good"]
            if len(good) and (need_t or need_d):
                x_t = batch["inputs"][0].to(device)
                x_d = x_t if same_recipe else batch["inputs"][1].to(device)
                captured.clear()
                embedding = None
                if shared:
                    embedding = dissector.encode_images(x_d)
                    stats["dissector_forward_batches"] += 1
                else:
                    if need_t:
                        with contextlib.suppress(StopForward):  # stopped after the last layer
                            target.module(x_t)
                        stats["target_forward_batches"] += 1
                    if need_d:
                        embedding = dissector.encode_images(x_d)
                        stats["dissector_forward_batches"] += 1
                if need_t:
                    _store_activations(target_store, tops, layers, captured, good, top_k)
                if need_d:
                    emb = embedding.detach().float().cpu()
                    dissector_store.allocate({_EMBEDDING: emb.shape[1]})
                    fresh = good >= dissector_store.rows_done
                    dissector_store.write(_EMBEDDING, good[fresh].numpy(), emb[fresh].numpy())
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
        store.extra[f"{layer}.values"] = top.values.numpy()
        store.extra[f"{layer}.indices"] = top.indices.numpy()
