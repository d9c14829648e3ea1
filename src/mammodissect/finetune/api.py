"""``finetune(...)``: make a C variant, a target fine-tuned on a probe's labels for one task.

Loads the target, takes its image encoder and puts a linear head on it
(:mod:`mammodissect.models.classifier`), turns the task into labels (:mod:`.tasks`), splits by
patient (:mod:`.split`), trains with the study's recipe (:mod:`.recipe`, :mod:`.train`) and
writes the run directory (:mod:`.outputs`, :mod:`.export`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mammodissect.cache import PreparedImageCache, fingerprint
from mammodissect.config import default_cache_dir
from mammodissect.errors import MammodissectError
from mammodissect.finetune.config import FinetuneConfig
from mammodissect.finetune.export import MAMMOCLIP_BASES, Exporter, public_recipe
from mammodissect.finetune.linear_probe import fit_head
from mammodissect.finetune.outputs import RunFiles, jsonable
from mammodissect.finetune.split import Split, split_images
from mammodissect.finetune.train import Data, Loop, fit, freeze_layers, selection_metric
from mammodissect.models import Target, describe_preprocess, load_target, parse_spec
from mammodissect.models.base import Preprocess
from mammodissect.models.classifier import (
    HEAD,
    EncoderClassifier,
    build_classifier,
    public_base,
    rebuild_classifier,
)
from mammodissect.models.configured import resolve_device
from mammodissect.models.preprocess import parse_image_size
from mammodissect.models.recipes import configure
from mammodissect.models.weights import check_state
from mammodissect.options import build
from mammodissect.probe import Probe, load_probe
from mammodissect.probe.tasks import TaskLabels, task_labels
from mammodissect.record import probe_digest

__all__ = ["finetune"]

log = logging.getLogger(__name__)


@dataclass
class _Built:
    """The loaded base and the classifier built on it."""

    target: Target
    default_preprocess: Preprocess
    classifier: EncoderClassifier
    encoder: dict[str, Any]
    frozen: list[str]
    rebuilt_preprocess: Preprocess | None


def _check_rebuild(base: str, model: EncoderClassifier) -> Preprocess:
    """Fail before training when ``classifier:PATH`` could not rebuild this architecture;
    return the preprocessing of the base as its loader rebuilds it (without its weights)."""
    head = model.head
    rebuilt, target = rebuild_classifier(base, head.out_features, head.in_features)
    problems = check_state(rebuilt, model.state_dict())
    if problems:
        raise MammodissectError(
            f"the base {base!r} built without its weights differs from the loaded one "
            f"({'; '.join(problems)}), so the fine-tuned classifier could not be loaded again; "
            "name the architecture fully in the spec (e.g. num_classes, include_top)"
        )
    return target.preprocess


def _own_tensors(module: nn.Module) -> None:
    """Copy parameters and buffers into fresh memory (a loader may have mapped them from the
    checkpoint file; training must never write there)."""
    state = {k: v.clone() for k, v in module.state_dict().items()}
    module.load_state_dict(state, assign=True)


def _build(
    model: str,
    outputs: int,
    *,
    seed: int,
    recipe: str | None,
    size: tuple[int, int] | None,
    freeze: list[str],
    mammoclip: bool,
) -> _Built:
    torch.manual_seed(seed)  # the same random initialisation on every start
    target = load_target(model)
    default = target.preprocess
    target.preprocess = configure(target.preprocess, recipe, size)
    classifier, encoder = build_classifier(target, outputs)
    _own_tensors(classifier)
    rebuilt = None if mammoclip else _check_rebuild(public_base(model), classifier)
    frozen = freeze_layers(classifier, freeze)
    return _Built(target, default, classifier, encoder, frozen, rebuilt)


def _data(probe: Probe, labels: TaskLabels, split: Split, preprocess: Preprocess) -> Data:
    targets = np.full(len(probe), -1, dtype=np.int64)
    targets[[probe.position(i) for i in labels.targets.index]] = labels.targets.to_numpy()
    rows = lambda ids: np.array([probe.position(i) for i in ids], dtype=np.int64)  # noqa: E731
    return Data(
        probe=probe, preprocess=preprocess, kind=labels.kind, classes=labels.classes,
        targets=targets, train_rows=rows(split.train), val_rows=rows(split.val),
    )  # fmt: skip


def _split_counts(labels: TaskLabels, split: Split) -> dict[str, Any]:
    return {
        "grouped_by": split.grouped_by,
        "train": labels.counts(split.train),
        "val": labels.counts(split.val) if split.val else dict.fromkeys(labels.classes, 0),
        "unlabelled": labels.dropped,
    }


def _metrics(
    summary: dict[str, Any],
    result: dict[str, Any],
    epochs: int,
    started: float,
    *,
    finished: bool,
) -> dict[str, Any]:
    best = result["best"] or {}
    history = result["history"]
    return {
        **summary,
        "epochs": epochs,
        "epochs_done": len(history),
        "finished": finished and len(history) >= epochs,
        "history": history,
        "best_epoch": best.get("epoch"),
        "best_metric": best.get(f"val_{summary['metric']}"),
        "best": best,
        "seconds": round(float(result["seconds"]), 3),
        "session_seconds": round(time.perf_counter() - started, 3),
    }


def finetune(
    model: str,
    probe: str | os.PathLike[str] | Probe,
    task: str,
    out: str | os.PathLike[str],
    config: FinetuneConfig | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Fine-tune ``model`` on ``probe``'s labels for ``task`` and write the run to ``out``.

    The image encoder of the target (its ``image_encoder``; else the network without its
    classifier) gets a linear head ``classifier.classification_head`` (one logit for a
    binary task, one per class otherwise; random, or with ``head_init="probe"`` a linear
    probe of the frozen encoder's features, :mod:`.linear_probe`) and is trained whole:
    AdamW, linear warm-up for ``warmup_epochs`` then cosine per step, cross-entropy or BCE
    with ``pos_weight`` = negatives / positives, random flips and small affine changes, bf16
    autocast on CUDA. Validation after every epoch (AUROC for binary tasks, accuracy
    otherwise; with ``precise_bn`` after the BatchNorm statistics are recomputed on the plain
    training images) picks the best epoch, whose classifier is written. A rerun with the
    same ``out`` resumes after the last finished epoch (or returns the metrics of a finished
    run).

    Parameters
    ----------
    model:
        Target spec, e.g. ``mammoclip:/data/b5.tar``, ``efficientnet:efficientnet-lite0?...``,
        ``phantom-clip``, ``timm:resnet18?weights=...``.
    probe:
        Labelled probe: a manifest with label columns or a dataset layout spec.
    task:
        ``density``, ``birads``, ``mass``, ``calcification`` or a label column
        (see :func:`mammodissect.finetune.task_labels`).
    out:
        Run directory: ``metrics.json``, ``last.pt`` and ``classifier.pth`` (Mammo-CLIP bases,
        for ``mammoclip-classifier:PATH``) or ``classifier.safetensors`` + ``classifier.json``
        (other bases, for ``classifier:PATH``).
    config:
        The settings (:class:`FinetuneConfig`; default: its defaults).
    **options:
        Settings replacing ``config``'s, by the names of :class:`FinetuneConfig`'s fields:
        the recipe ``epochs`` (may grow on a rerun to train on), ``batch_size``, ``lr``,
        ``weight_decay``, ``warmup_epochs``; the validation share ``val_fraction`` and
        ``split`` (``random`` by patient, or ``column``: the probe's ``split`` column);
        ``seed`` (split, batches, augmentation, the new head); ``head_init`` (``random``,
        or ``probe``: a linear probe first, LP-FT); ``precise_bn`` (BatchNorm statistics
        recomputed on the un-augmented training images before every validation);
        ``image_size`` and
        ``preprocess`` overriding the target's (as for dissection); ``device`` (``auto``:
        CUDA when available) and ``num_workers`` (decoding processes); ``augment`` (random
        flips and small affine changes); ``freeze`` (layer names or globs, comma-separated,
        whose parameters stay fixed and whose modules stay in eval mode, e.g.
        ``image_encoder._blocks.[0-9]``); ``voi``, ``cache_dir``, ``cache_images`` as in
        ``mammodissect run``; ``progress`` (bars); ``overwrite`` (replace an earlier run in
        ``out`` made with other settings).

    Returns
    -------
    dict
        What ``metrics.json`` holds: task, classes, split sizes per class, per-epoch training
        loss and validation metrics, best epoch and metric, settings, seconds.

    Raises
    ------
    MammodissectError
        For a bad setting, a task the probe cannot give, or ``out`` holding another run.
    """
    started = time.perf_counter()
    c = build(FinetuneConfig, config, options, "finetune()")
    if not isinstance(model, str):
        raise MammodissectError(
            "finetune takes the model as a spec string (e.g. efficientnet:efficientnet-lite0), "
            "so that the fine-tuned classifier can be rebuilt from it"
        )
    size = parse_image_size(c.image_size)
    probe = probe if isinstance(probe, Probe) else load_probe(probe)
    labels = task_labels(probe, task)
    patterns = c.freeze.split(",") if isinstance(c.freeze, str) else list(c.freeze or [])
    settings = jsonable({
        "model": public_base(model),
        "model_identity": parse_spec(model).identity(),
        "probe": {"source": probe.source, "images": len(probe), "digest": probe_digest(probe)},
        "task": labels.task, "batch_size": c.batch_size, "lr": c.lr, "weight_decay": c.weight_decay,
        "warmup_epochs": c.warmup_epochs, "val_fraction": c.val_fraction, "split": c.split,
        "seed": c.seed, "image_size": list(size) if size else None,
        "preprocess": public_recipe(c.preprocess), "augment": bool(c.augment),
        "freeze": [p.strip() for p in patterns if p.strip()], "voi": c.voi,
    })  # fmt: skip
    # runs made before these settings existed keep their fingerprint
    if c.head_init != "random":
        settings["head_init"] = c.head_init
    if c.precise_bn:
        settings["precise_bn"] = True
    files = RunFiles(out)
    files.make()
    files.check(settings, c.overwrite)
    earlier, state = files.read_metrics(), files.read_last()
    if state is not None and int(state["epoch"]) >= c.epochs and earlier is not None:
        if int(state["epoch"]) > c.epochs:
            log.warning(
                "the run in %s already trained %d epochs (more than %d); returning its metrics",
                files.out.name, state["epoch"], c.epochs,
            )  # fmt: skip
        log.info("the run in %s is finished; returning its metrics", files.out.name)
        return earlier
    parts = split_images(
        labels.targets, probe.labels, val_fraction=c.val_fraction, seed=c.seed, mode=c.split
    )
    resolved = resolve_device(c.device)
    scheme = parse_spec(model).scheme
    built = _build(
        model, labels.outputs, seed=c.seed, recipe=c.preprocess, size=size,
        freeze=settings["freeze"], mammoclip=scheme in MAMMOCLIP_BASES,
    )  # fmt: skip
    exporter = Exporter(
        files=files, base=settings["model"], scheme=scheme, labels=labels,
        encoder=built.encoder, trained=built.target.preprocess,
        default=built.default_preprocess, recipe=c.preprocess, size=size,
        rebuilt=built.rebuilt_preprocess,
        variant=getattr(built.target.module, "variant", None) or "efficientnet",
    )  # fmt: skip
    cache_root = Path(c.cache_dir).expanduser() if c.cache_dir else default_cache_dir()
    loop = Loop(
        epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, weight_decay=c.weight_decay,
        warmup_epochs=c.warmup_epochs, seed=c.seed, augment=c.augment, device=resolved,
        num_workers=c.num_workers, voi=c.voi, progress=c.progress, precise_bn=c.precise_bn,
        image_cache=PreparedImageCache(cache_root) if c.cache_images else None,
    )  # fmt: skip
    summary: dict[str, Any] = {
        "task": labels.task,
        "kind": labels.kind,
        "label_source": labels.source,
        "classes": labels.classes,
        "outputs": labels.outputs,
        "metric": selection_metric(labels.kind),
        "split": _split_counts(labels, parts),
        "base": settings["model"],
        **built.encoder,
        "frozen": built.frozen,
        "preprocess": describe_preprocess(built.target.preprocess),
        "checkpoint": exporter.checkpoint,
        "layer": HEAD,
        "run_flags": exporter.run_flags(),
        "device": str(resolved),
        "seed": c.seed,
        "settings": settings,
        "fingerprint": fingerprint(settings),
    }

    def save_last(payload: dict[str, Any]) -> None:
        files.write_last({**payload, "settings": settings})
        files.write_metrics(_metrics(summary, payload, c.epochs, started, finished=False))

    data = _data(probe, labels, parts, built.target.preprocess)
    if c.head_init == "probe":  # a resumed run's head is in its state already
        fitted = (earlier or {}).get("linear_probe") if state is not None else None
        summary["linear_probe"] = fitted or fit_head(built.classifier, data, loop)
    result = fit(
        built.classifier, data, loop,
        frozen=built.frozen, state=state, save_best=exporter, save_last=save_last,
    )  # fmt: skip
    metrics = _metrics(summary, result, c.epochs, started, finished=True)
    files.write_metrics(metrics)
    return jsonable(metrics)
