"""The study's optimisation recipe: AdamW, linear warm-up then cosine per step, the loss
(cross-entropy, or BCE with ``pos_weight`` = negatives / positives for one logit) and a mild,
seeded augmentation of preprocessed batches (horizontal flip, small affine)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "AUGMENT",
    "augment_batch",
    "loss_value",
    "make_loss",
    "make_optimizer",
    "make_scheduler",
    "pos_weight",
    "warmup_cosine",
]

#: Augmentation bounds: rotation in degrees, translation and scale change as fractions.
AUGMENT = {"flip": 0.5, "degrees": 5.0, "translate": 0.03, "scale": 0.05}


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate factor for optimiser step ``step`` (0-based).

    Linear warm-up over ``warmup_steps`` (``(step + 1) / warmup_steps``, reaching 1 at the
    last warm-up step), then a half cosine from 1 at ``warmup_steps`` towards 0 at
    ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(
    params: Iterable[nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters."""
    return torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay)


def make_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """:func:`warmup_cosine`, stepped once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps)
    )


def pos_weight(targets: torch.Tensor) -> torch.Tensor:
    """Negatives / positives of 0/1 ``targets``, as BCEWithLogits' ``pos_weight`` (shape (1,))."""
    targets = torch.as_tensor(targets)
    positives = int((targets == 1).sum())
    negatives = int((targets == 0).sum())
    return torch.tensor([negatives / max(positives, 1)], dtype=torch.float32)


def make_loss(kind: str, train_targets: torch.Tensor) -> nn.Module:
    """Cross-entropy for ``multiclass``; BCE-with-logits weighted by :func:`pos_weight` for
    ``binary`` (one logit)."""
    if kind == "binary":
        return nn.BCEWithLogitsLoss(pos_weight=pos_weight(train_targets))
    return nn.CrossEntropyLoss()


def loss_value(loss: nn.Module, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss of ``logits`` (B, outputs) against class indices (B,), in float32."""
    logits = logits.float()
    if isinstance(loss, nn.BCEWithLogitsLoss):
        return loss(logits[:, 0], targets.float())
    return loss(logits, targets.long())


def augment_batch(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 1/2, then rotate, shift and scale it a
    little (:data:`AUGMENT`); draws come from ``generator`` (CPU), edges are extended."""
    n = batch.shape[0]
    draw = lambda: torch.rand(n, generator=generator) * 2 - 1  # noqa: E731
    flip = torch.rand(n, generator=generator) < AUGMENT["flip"]
    angle = draw() * math.radians(AUGMENT["degrees"])
    shift = torch.stack([draw(), draw()], 1) * AUGMENT["translate"] * 2  # grid spans [-1, 1]
    scale = 1 + draw() * AUGMENT["scale"]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.stack(
        [
            torch.stack([cos * sign, -sin, shift[:, 0]], 1),
            torch.stack([sin * sign, cos, shift[:, 1]], 1),
        ],
        1,
    ).to(device=batch.device, dtype=torch.float32)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    out = F.grid_sample(
        batch.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.to(batch.dtype)
