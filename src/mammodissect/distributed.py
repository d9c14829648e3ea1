"""Recording over several processes: ``torchrun --nproc-per-node N -m mammodissect run ...``.

torchrun starts one process per rank with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (and
the rendezvous address) in the environment. :func:`init` joins the process group (gloo
on CPU, nccl on CUDA, each rank on ``cuda:LOCAL_RANK``).

Sharding: the probe order is fixed and cut into batches of ``batch_size`` exactly as a
single process cuts it; rank ``r`` records a *contiguous* run of whole batches (see
:func:`shard_rows`). Every rank therefore sees the very batches a single process sees,
so each image's pooled activations are the same numbers, and a shard's rows form one
range, which keeps its cache a plain resumable :class:`~mammodissect.cache.RowStore`.

Merge: each rank records its shard into its own shard stores (resumable on their own);
rank 0 then gathers every shard's rows, skipped images, reading facts and per-unit
running top-k through torch.distributed (no shared file system needed) and writes them
into the one full cache a single process would have written, committed only once it is
whole. The top-k of the union is a stable sort of the shards' top-k taken in rank
order, so ties keep the lower probe row first, as in a single process. Rank 0 alone
scores units and writes the outputs; the other ranks return after the merge.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mammodissect.cache import RowStore
from mammodissect.errors import MammodissectError
from mammodissect.topk import RunningTopK

__all__ = [
    "World",
    "all_gather",
    "barrier",
    "broadcast",
    "current",
    "gather",
    "init",
    "merge_shards",
    "merge_tops",
    "same_weights_everywhere",
    "shard_rows",
    "shutdown",
    "world",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """Where this process stands among the ranks torchrun started.

    Attributes
    ----------
    rank, world_size, local_rank:
        From torchrun's ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (0, 1, 0 alone).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process records."""
        return self.world_size > 1

    @property
    def root(self) -> bool:
        """Whether this is rank 0, the one that scores and writes."""
        return self.rank == 0


def world() -> World:
    """The ranks as torchrun's environment variables give them (one process without them)."""
    try:
        values = {
            key: int(os.environ.get(name, default))
            for key, name, default in (
                ("rank", "RANK", "0"),
                ("world_size", "WORLD_SIZE", "1"),
                ("local_rank", "LOCAL_RANK", "0"),
            )
        }
    except ValueError as err:
        raise MammodissectError(
            f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers ({err}); "
            "start distributed runs with torchrun"
        ) from err
    found = World(**values)
    if found.world_size < 1 or not 0 <= found.rank < found.world_size:
        raise MammodissectError(
            f"RANK={found.rank} does not fit WORLD_SIZE={found.world_size}; "
            "start distributed runs with torchrun"
        )
    return found


def current() -> World:
    """The ranks of the joined process group (one process when none is joined)."""
    if not _active():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), world().local_rank)


def init(device: torch.device) -> tuple[World, torch.device, bool]:
    """Join the process group when torchrun started several ranks.

    Parameters
    ----------
    device:
        The device the run resolved (``cpu`` or ``cuda``); on CUDA each rank takes
        ``cuda:LOCAL_RANK``.

    Returns
    -------
    (world, device, started):
        The ranks, this rank's device, and whether this call started the process group
        (then :func:`shutdown` should end it).
    """
    ranks = world()
    if not ranks.distributed:
        return ranks, device, False
    if not dist.is_available():
        raise MammodissectError(
            "WORLD_SIZE > 1 but this torch build has no torch.distributed; run one process"
        )
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if dist.is_initialized():
        return ranks, device, False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    log.info("rank %d of %d joined (%s, %s)", ranks.rank, ranks.world_size, backend, device)
    return ranks, device, True


def shutdown(started: bool) -> None:
    """End the process group if :func:`init` started it."""
    if started and dist.is_initialized():
        dist.destroy_process_group()


def shard_rows(n_rows: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous probe rows ``[start, stop)`` that ``rank`` records.

    The probe's ``ceil(n_rows / batch_size)`` batches are split as evenly as possible,
    whole batches only, lower ranks first; a rank may get none when there are fewer
    batches than ranks.
    """
    batches = -(-n_rows // batch_size)
    first = rank * batches // world_size
    last = (rank + 1) * batches // world_size
    return min(first * batch_size, n_rows), min(last * batch_size, n_rows)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (nothing when alone)."""
    if _active():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (picklable objects)."""
    if not _active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not _active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def gather(value: Any) -> list[Any] | None:
    """Every rank's ``value`` in rank order on rank 0; None on the other ranks."""
    if not _active():
        return [value]
    root = dist.get_rank() == 0
    out: list[Any] | None = [None] * dist.get_world_size() if root else None
    dist.gather_object(value, out, dst=0)
    return out


def merge_tops(tops: list[RunningTopK | None], k: int) -> RunningTopK | None:
    """The running top-k of the union of shards given in increasing row order.

    Equal values keep the lower probe row first, as one process's top-k does: each
    shard's top-k is already in that order and a stable sort keeps shard order.
    """
    present = [top for top in tops if top is not None and len(top.values)]
    if not present:
        return None
    merged = RunningTopK(k, present[0].values.shape[1])
    merged.values = torch.cat([top.values for top in present])
    merged.indices = torch.cat([top.indices for top in present])
    order = torch.sort(merged.values, dim=0, descending=True, stable=True).indices[:k]
    merged.values = torch.gather(merged.values, 0, order)
    merged.indices = torch.gather(merged.indices, 0, order)
    return merged


def _checksum(module: Any) -> float:
    if not isinstance(module, torch.nn.Module):
        return 0.0
    with torch.no_grad():
        return float(
            sum(
                t.double().abs().sum()
                for t in module.state_dict().values()
                if t.is_floating_point()
            )
        )


def same_weights_everywhere(modules: tuple[Any, ...], ranks: World) -> None:
    """Refuse to merge shards of networks that differ between ranks (e.g. random weights
    drawn differently): each rank's checksum of every module's weights must equal rank 0's
    (anything that is not a module counts as 0)."""
    mine = tuple(_checksum(module) for module in modules)
    reference = broadcast(mine)
    if mine != reference:
        raise MammodissectError(
            f"rank {ranks.rank} loaded other weights than rank 0 (checksums {mine} vs "
            f"{reference}); give every rank the same weights files (or the same --seed)"
        )


def merge_shards(
    stores: tuple[RowStore, ...],
    layers: list[str],
    summaries: list[dict[str, Any]],
    blocks: dict[tuple[int, str], list[Any] | None],
    top_k: int,
    stats: dict[str, Any],
    n: int,
) -> None:
    """Write every shard's rows, skips, facts and top-k into the full ``stores`` (rank 0):
    ``summaries`` are the shards' gathered summaries in rank order (row range, columns per
    store, skipped rows, reading facts, per-layer top-k state, counters), ``blocks`` the
    gathered arrays per (store, column); the first store is the target's, which keeps the
    facts and top-k. ``stats`` gains the shards' counters; every store is committed whole."""
    for which, store in enumerate(stores):
        columns = next((s["columns"][which] for s in summaries if s["columns"][which]), None)
        if columns:
            store.allocate(columns)
        for name in columns or {}:
            for summary, block in zip(summaries, blocks[which, name] or [], strict=True):
                lo, hi = summary["range"]
                if block is not None and hi > lo:
                    store.write(name, np.arange(lo, hi), block)
        for summary in summaries:
            store.skipped.update(summary["skipped"])
    target_store = stores[0]
    facts: dict[int, dict[str, Any]] = {}
    for summary in summaries:
        facts.update(summary["facts"])
    target_store.log_rows(dict(sorted(facts.items())))
    for layer in layers:
        tops = [
            RunningTopK.from_state(top_k, s["tops"][layer]) if s["tops"][layer] else None
            for s in summaries
        ]
        merged = merge_tops(tops, top_k)
        if merged is not None:
            target_store.extra.update({f"{layer}.{k}": v for k, v in merged.state().items()})
    for summary in summaries:
        for key, value in summary["stats"].items():
            stats[key] += value
    for store in stores:
        store.commit(n)
