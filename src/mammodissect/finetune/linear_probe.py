"""A linear probe as the new head's starting point (``head_init="probe"``).

Linear probing, then fine-tuning (LP-FT; Kumar et al., ICLR 2022, "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution"): a fine-tuning that starts from a
random head spends its first steps pushing large, noisy gradients through the encoder; one
that starts from the best linear read-out of the frozen features changes them less.

The probe is an L2-regularised logistic regression (the recipe's own loss: cross-entropy, or
BCE with ``pos_weight``) fitted by full-batch L-BFGS on standardised encoder features of the
training split, computed once, without augmentation, with the encoder in eval mode. Its L2
strength is chosen from :data:`L2_GRID` on the validation split (the metric that chooses the
best epoch); without a validation split it is :data:`DEFAULT_L2`. The standardisation is
folded into the head, so the classifier keeps its plain linear layout.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from mammodissect.finetune.recipe import loss_value, make_loss
from mammodissect.finetune.train import Data, Loop, better, predict, score, selection_metric
from mammodissect.models.classifier import EncoderClassifier

__all__ = ["DEFAULT_L2", "HEAD_INITS", "L2_GRID", "fit_head", "fit_logistic"]

log = logging.getLogger(__name__)

#: How the new head starts: ``random`` (PyTorch's default initialisation, seeded) or
#: ``probe`` (this module).
HEAD_INITS = ("random", "probe")

#: L2 strengths tried, as the coefficient of ``||W||^2 / 2`` added to the mean loss
#: (scikit-learn's ``C`` is ``1 / (l2 * n)``).
L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)

#: The L2 strength used when there is no validation split to choose one on.
DEFAULT_L2 = 1e-2


def fit_logistic(
    features: torch.Tensor,
    targets: torch.Tensor,
    loss: nn.Module,
    outputs: int,
    l2: float,
    max_iter: int = 500,
) -> nn.Linear:
    """The linear layer (``outputs`` logits) minimising ``loss`` + ``l2 * ||W||^2 / 2`` on
    ``features`` (N, D) against class indices, by full-batch L-BFGS from zero weights
    (deterministic)."""
    head = nn.Linear(features.shape[1], outputs)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    optimizer = torch.optim.LBFGS(
        head.parameters(), lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe",
        tolerance_grad=1e-6, tolerance_change=1e-9, history_size=20,
    )  # fmt: skip

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = loss_value(loss, head(features), targets) + 0.5 * l2 * head.weight.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(closure)
    return head.requires_grad_(False)


def _fold(head: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """``head`` on standardised features ``(x - mean) / std`` as one layer on raw ``x``."""
    folded = nn.Linear(head.in_features, head.out_features)
    weight = head.weight / std
    folded.weight.data.copy_(weight)
    folded.bias.data.copy_(head.bias - weight @ mean)
    return folded.requires_grad_(False)


def fit_head(model: EncoderClassifier, data: Data, loop: Loop) -> dict[str, Any]:
    """Set ``model``'s head to the linear probe of its frozen encoder's features and return
    what was fitted: the L2 chosen, each L2's validation metric and the probe's training
    and validation scores (``val_*`` as for an epoch)."""
    model.to(loop.device).eval()
    encode = lambda x: model.image_encoder(x).flatten(1)  # noqa: E731
    x, y = predict(encode, data, data.train_rows, loop)
    xv, yv = predict(encode, data, data.val_rows, loop)
    mean = x.mean(0)
    std = x.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # a constant feature stays 0
    z = (x - mean) / std
    loss = make_loss(data.kind, y)
    metric = selection_metric(data.kind)
    grid = L2_GRID if len(yv) else (DEFAULT_L2,)
    tried: list[dict[str, Any]] = []
    chosen: dict[str, Any] | None = None
    head: nn.Linear | None = None
    for l2 in grid:
        candidate = _fold(fit_logistic(z, y, loss, model.head.out_features, l2), mean, std)
        entry = {"l2": l2, **score(candidate(xv), yv, data, loss)} if len(yv) else {"l2": l2}
        tried.append({"l2": l2, f"val_{metric}": entry.get(f"val_{metric}")})
        if chosen is None or better(entry, chosen, metric):
            chosen, head = entry, candidate
    assert head is not None and chosen is not None
    with torch.no_grad():
        model.head.weight.copy_(head.weight)
        model.head.bias.copy_(head.bias)
    trained = score(head(x), y, data, loss)
    result = {
        **chosen,
        "chosen_on": "validation" if len(yv) else "default (no validation split)",
        "grid": tried,
        "train_accuracy": trained["val_accuracy"],
        "train_loss": trained["val_loss"],
        "features": int(x.shape[1]),
        "images": len(y),
    }
    shown = chosen.get(f"val_{metric}")
    log.info(
        "linear probe: L2 %g, validation %s %s",
        chosen["l2"],
        metric,
        f"{shown:.4f}" if shown is not None else "-",
    )
    return result
