"""The training loop: seeded shuffled batches from the probe loader of :mod:`mammodissect.record`
(images prepared exactly as for dissection), augmentation, AdamW with warm-up and cosine,
validation after every epoch, and a state that a rerun resumes from.

Every epoch's randomness (batch order, augmentation, dropout) is drawn from generators seeded
by ``(seed, epoch)``, so a run resumed after epoch ``k`` continues exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mammodissect.cache import PreparedImageCache
from mammodissect.errors import MammodissectError
from mammodissect.finetune.recipe import (
    augment_batch,
    loss_value,
    make_loss,
    make_optimizer,
    make_scheduler,
)
from mammodissect.layers import resolve_layers, split_patterns
from mammodissect.metrics import auroc
from mammodissect.models.base import Preprocess
from mammodissect.probe import Probe
from mammodissect.probe.loader import probe_batches

__all__ = [
    "Data",
    "Loop",
    "better",
    "epoch_seed",
    "evaluate",
    "fit",
    "freeze_layers",
    "predict",
    "recompute_batchnorm",
    "score",
    "selection_metric",
    "set_train_mode",
]

log = logging.getLogger(__name__)


@dataclass
class Loop:
    """How to train: the recipe's numbers and where the work runs."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    seed: int
    augment: bool
    device: torch.device
    num_workers: int = 0
    voi: str = "auto"
    image_cache: PreparedImageCache | None = None
    progress: bool = True
    precise_bn: bool = False


@dataclass
class Data:
    """The images and their labels.

    ``targets`` holds a class index per probe row (-1 for rows without a label);
    ``train_rows`` and ``val_rows`` are probe rows.
    """

    probe: Probe
    preprocess: Preprocess
    kind: str
    classes: list[str]
    targets: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray


def selection_metric(kind: str) -> str:
    """The validation metric that chooses the best epoch: AUROC (binary) or accuracy."""
    return "auroc" if kind == "binary" else "accuracy"


def epoch_seed(seed: int, epoch: int) -> int:
    """A well-mixed 63-bit seed for epoch ``epoch`` of a run seeded ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, np.uint64)[0] >> 1)


def freeze_layers(model: nn.Module, patterns: str | list[str] | None) -> list[str]:
    """Freeze the parameters of the modules ``patterns`` name (names or globs, as for
    ``--layers``; ``image_encoder.`` may be left off); return their names."""
    if not patterns or not split_patterns(patterns):
        return []
    names: list[str] = []
    for pattern in split_patterns(patterns):
        try:
            found = resolve_layers(model, pattern)
        except MammodissectError:
            try:
                found = resolve_layers(model, f"image_encoder.{pattern}")
            except MammodissectError:
                raise MammodissectError(
                    f"freeze pattern {pattern!r} matches no layer of the classifier "
                    "(its layers are image_encoder.* and classifier.classification_head; "
                    "list them with `mammodissect layers --target SPEC`)"
                ) from None
        names += [n for n in found if n not in names]
    for name in names:
        model.get_submodule(name).requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise MammodissectError(f"freeze {patterns!r} freezes every parameter; nothing to train")
    log.info("froze %d module(s): %s", len(names), ", ".join(names[:6]))
    return names


def set_train_mode(model: nn.Module, frozen: list[str]) -> None:
    """Train mode, but frozen modules (and so their BatchNorm statistics) stay in eval mode."""
    model.train()
    for name in frozen:
        model.get_submodule(name).eval()


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def _to_device(
    x: torch.Tensor, device: torch.device, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The batch on ``device`` (augmented there when a ``generator`` is given), channels last."""
    x = x.to(device, non_blocking=True)
    if generator is not None:
        x = augment_batch(x, generator)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


class _Skips:
    """Unreadable images: each is reported once."""

    def __init__(self, probe: Probe):
        self.probe = probe
        self.seen: set[int] = set()

    def note(self, errors: dict[int, str]) -> None:
        for row, reason in errors.items():
            if row not in self.seen:
                self.seen.add(row)
                log.warning("skipped image %r: %s", self.probe.items[row].relpath, reason)


def _loader(data: Data, rows: np.ndarray, loop: Loop) -> Any:
    return probe_batches(
        data.probe, [data.preprocess], rows=rows.tolist(), batch_size=loop.batch_size,
        num_workers=loop.num_workers, voi=loop.voi, image_cache=loop.image_cache,
    )  # fmt: skip


@torch.no_grad()  # not inference mode: a linear probe is fitted on the outputs
def predict(
    forward: Callable[[torch.Tensor], torch.Tensor],
    data: Data,
    rows: np.ndarray,
    loop: Loop,
    skips: _Skips | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``forward``'s float32 outputs (on the CPU) on the readable images of probe ``rows``,
    without augmentation, and their class indices; unreadable images are reported once."""
    skips = skips if skips is not None else _Skips(data.probe)
    outputs, targets = [], []
    for batch in _loader(data, rows, loop):
        skips.note(batch["errors"])
        if not len(batch["good"]):
            continue
        with _autocast(loop.device):
            out = forward(_to_device(batch["inputs"][0], loop.device))
        outputs.append(out.float().cpu())
        targets.append(torch.from_numpy(data.targets[batch["good"].numpy()]))
    if not outputs:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(outputs), torch.cat(targets)


def score(
    logits: torch.Tensor, targets: torch.Tensor, data: Data, loss: nn.Module
) -> dict[str, Any]:
    """Loss, accuracy and AUROC (per class, one against the rest, when there are more than
    two classes) of ``logits`` (N, outputs) against class indices, as ``val_*`` entries."""
    if not len(targets):
        return {"val_loss": None, "val_accuracy": None, "val_auroc": None}
    loss = copy.deepcopy(loss).cpu()
    result: dict[str, Any] = {"val_loss": float(loss_value(loss, logits, targets))}
    y = targets.numpy()
    if data.kind == "binary":
        value = logits[:, 0].numpy()
        result["val_accuracy"] = float(((value > 0) == (y == 1)).mean())
        result["val_auroc"] = auroc(value, y == 1)
    else:
        probs = torch.softmax(logits, 1).numpy()
        result["val_accuracy"] = float((probs.argmax(1) == y).mean())
        per_class = {name: auroc(probs[:, i], y == i) for i, name in enumerate(data.classes)}
        result["val_auroc_per_class"] = per_class
        finite = [v for v in per_class.values() if math.isfinite(v)]
        result["val_macro_auroc"] = float(np.mean(finite)) if finite else float("nan")
    return result


def evaluate(
    model: nn.Module,
    data: Data,
    rows: np.ndarray,
    loss: nn.Module,
    loop: Loop,
    skips: _Skips | None = None,
) -> dict[str, Any]:
    """Validation loss, accuracy and AUROC (:func:`score`) of ``model`` (in eval mode) on
    probe ``rows``."""
    model.eval()
    return score(*predict(model, data, rows, loop, skips), data, loss)


def better(entry: dict[str, Any], other: dict[str, Any] | None, metric: str) -> bool:
    """Whether validation ``entry`` beats ``other`` (None: always): a finite ``metric``
    first, then a higher one, then a lower loss."""
    return other is None or _key(entry, metric) > _key(other, metric)


def _trimmed(rows: np.ndarray, batch_size: int) -> np.ndarray:
    """``rows`` less the last one when it would make a batch of one image alone (BatchNorm in
    train mode cannot normalise a single image's features)."""
    return rows[:-1] if len(rows) > 1 and len(rows) % batch_size == 1 else rows


@torch.no_grad()
def recompute_batchnorm(
    model: nn.Module, data: Data, loop: Loop, frozen: list[str], skips: _Skips | None = None
) -> int:
    """Precise BatchNorm: replace the running statistics of every BatchNorm layer that trains
    (not in a frozen module) by their average over the training images, un-augmented, under
    the current weights; return how many layers were set.

    Running statistics gathered during training average batches of augmented images under
    weights that kept changing. Resampling for the affine augmentation smooths texture, which
    shifts the statistics of texture-reading channels: a density classifier on the phantoms
    read 0.94 of its validation images right with statistics recomputed on plain training
    images and 0.44 with those of augmented ones. Validation and dissection see plain images,
    so the statistics are recomputed on plain images before every validation.
    """
    set_train_mode(model, frozen)
    norms = [
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats
    ]  # fmt: skip
    if norms:
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
        predict(model, data, np.sort(_trimmed(data.train_rows, loop.batch_size)), loop, skips)
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
    model.eval()
    return len(norms)


def _key(entry: dict[str, Any], metric: str) -> tuple[float, float, float]:
    """Sort key of an epoch: a finite metric first, then the metric, then a lower loss."""
    value = entry.get(f"val_{metric}")
    loss = entry.get("val_loss")
    finite = value is not None and math.isfinite(value)
    return (
        float(finite),
        float(value) if value is not None and finite else 0.0,
        -float(loss) if loss is not None and math.isfinite(loss) else -math.inf,
    )


def fit(
    model: nn.Module,
    data: Data,
    loop: Loop,
    *,
    frozen: list[str],
    state: dict[str, Any] | None,
    save_best: Callable[[nn.Module, dict[str, Any]], None],
    save_last: Callable[[dict[str, Any]], None],
) -> dict[str, Any]:
    """Train ``model`` for the epochs ``state`` has not done yet.

    Parameters
    ----------
    model:
        The classifier, frozen modules already frozen (:func:`freeze_layers`).
    state:
        What ``save_last`` got after the last finished epoch of an earlier run (model,
        optimizer, scheduler, epoch, history, best, RNG states), or None to start afresh.
    save_best:
        Called with the model and the epoch's entry whenever validation improves (every
        epoch when there is no validation set).
    save_last:
        Called after every epoch with the state to resume from.

    Returns
    -------
    dict
        ``history`` (one entry per epoch), ``best`` (the best epoch's entry), ``seconds``.
    """
    device = loop.device
    model.to(device).to(memory_format=torch.channels_last)
    train_targets = torch.from_numpy(data.targets[data.train_rows])
    loss = make_loss(data.kind, train_targets).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, loop.lr, loop.weight_decay)
    n_train = len(data.train_rows)
    used = len(_trimmed(data.train_rows, loop.batch_size))
    steps = math.ceil(used / loop.batch_size)
    scheduler = make_scheduler(optimizer, loop.warmup_epochs * steps, loop.epochs * steps)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    seconds, done = 0.0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best = list(state["history"]), state["best"]
        seconds, done = float(state["seconds"]), int(state["epoch"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        log.info("resuming after epoch %d of %d", done, loop.epochs)
        planned = int(state.get("epochs", loop.epochs))
        if planned != loop.epochs and done > loop.warmup_epochs:
            log.warning(
                "the run was planned for %d epochs, now %d: its cosine schedule is stretched "
                "from epoch %d on (a run of %d epochs from the start would differ)",
                planned,
                loop.epochs,
                done + 1,
                loop.epochs,
            )
    metric = selection_metric(data.kind)
    skips = _Skips(data.probe)
    for epoch in range(done + 1, loop.epochs + 1):
        started = time.perf_counter()
        torch.manual_seed(epoch_seed(loop.seed, epoch))
        generator = torch.Generator().manual_seed(epoch_seed(loop.seed, epoch) + 1)
        order = data.train_rows[torch.randperm(n_train, generator=generator).numpy()][:used]
        set_train_mode(model, frozen)
        total, count, last_lr = 0.0, 0, None
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch}/{loop.epochs}",
            unit="batch",
            disable=not loop.progress,
        )
        with bar:
            for batch in _loader(data, order, loop):
                skips.note(batch["errors"])
                bar.update(1)
                if not len(batch["good"]):
                    continue
                x = _to_device(batch["inputs"][0], device, generator if loop.augment else None)
                y = torch.from_numpy(data.targets[batch["good"].numpy()]).to(device)
                with _autocast(device):
                    logits = model(x)
                value = loss_value(loss, logits, y)
                optimizer.zero_grad(set_to_none=True)
                value.backward()
                last_lr = float(optimizer.param_groups[0]["lr"])
                optimizer.step()
                scheduler.step()
                total += float(value.detach()) * len(y)
                count += len(y)
                bar.set_postfix(loss=f"{total / count:.4f}")
        entry: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": total / count if count else None,
            "lr": last_lr,
        }
        if loop.precise_bn:
            recompute_batchnorm(model, data, loop, frozen, skips)
        if len(data.val_rows):
            entry.update(evaluate(model, data, data.val_rows, loss, loop, skips))
        entry["seconds"] = round(time.perf_counter() - started, 3)
        seconds += entry["seconds"]
        history.append(entry)
        if not len(data.val_rows) or better(entry, best, metric):
            best = dict(entry)
            save_best(model, best)
        shown = entry.get(f"val_{metric}")
        log.info(
            "epoch %d: train loss %s, validation %s %s",
            epoch,
            f"{entry['train_loss']:.4f}" if entry["train_loss"] is not None else "-",
            metric,
            f"{shown:.4f}" if shown is not None else "-",
        )
        save_last(
            {
                "epoch": epoch,
                "epochs": loop.epochs,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "history": history,
                "best": best,
                "seconds": seconds,
                "rng": {
                    "torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                },
            }
        )
    model.eval()
    return {"history": history, "best": best, "seconds": seconds}
