"""Helpers shared by the model tests (``test_efficientnet``, ``test_mammoclip``,
``test_finetune``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.models import load_target


def load_error(spec: str, *fragments: str) -> str:
    """Load ``spec`` expecting a :class:`MammodissectError` whose message holds every fragment.

    Returns the message, for further checks.
    """
    with pytest.raises(MammodissectError) as err:
        load_target(spec)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


class TinyCNN(nn.Module):
    """A small timm-like CNN (conv stages, global pooling, a linear head with
    ``reset_classifier``) for fast training tests: ``python:helpers_models:tiny_cnn?size=HxW``."""

    def __init__(self, width: int = 8, num_classes: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, 2 * width, 4 * width):
            layers += [
                nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = channels
        self.head: nn.Module = nn.Linear(channels, num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head (none when ``num_classes`` is 0), as timm models do."""
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)).flatten(1))


def tiny_cnn(width: int = 8) -> nn.Module:
    """Factory of :class:`TinyCNN` for ``python:`` specs."""
    return TinyCNN(width=width)
