"""A planted world for end-to-end tests: images with known features, a target whose unit j
detects feature j, and a dissector whose embeddings make concept "planted feature j" the
match for feature j. Used through specs such as ``python:planted:make_target``."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from mammodissect.models import ImagePreprocess, Target

GRID = (2, 3)  # rows x columns of feature cells
CELL = 8
SIZE = (GRID[0] * CELL, GRID[1] * CELL)
N_FEATURES = GRID[0] * GRID[1]
EXTRA_DIMS = 3
CONCEPTS = [f"planted feature {j}" for j in range(N_FEATURES)]
DISTRACTORS = ["red", "wood", "cloud", "bicycle", "grass", "metal glass"]

#: Counters the tests read: forward calls of each network part.
CALLS = {
    "target": 0,
    "head": 0,
    "dissector_images": 0,
    "dissector_texts": 0,
    "train_mode": 0,
    "grad_enabled": 0,
}


def _check_mode(module: nn.Module) -> None:
    """Count forwards run in train mode or with autograd on: both must stay at zero."""
    CALLS["train_mode"] += any(m.training for m in module.modules())
    CALLS["grad_enabled"] += torch.is_grad_enabled()


def cell_masks() -> torch.Tensor:
    masks = torch.zeros(N_FEATURES, *SIZE)
    for j in range(N_FEATURES):
        r, c = divmod(j, GRID[1])
        masks[j, r * CELL : (r + 1) * CELL, c * CELL : (c + 1) * CELL] = 1.0
    return masks


def write_probe(folder: Path, n: int = 40, seed: int = 0) -> np.ndarray:
    """Write ``n`` PNGs (8- and 16-bit) with random planted features; return presence (n, F)."""
    rng = np.random.default_rng(seed)
    present = rng.random((n, N_FEATURES)) < 0.35
    present[np.arange(n), np.arange(n) % N_FEATURES] = True  # every feature in many images
    masks = cell_masks().numpy().astype(bool)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = 0.1 + 0.05 * rng.random(SIZE)
        for j in np.flatnonzero(present[i]):
            image[masks[j]] = 0.8 + 0.2 * rng.random(masks[j].sum())
        if i % 2:
            Image.fromarray((image * 65535).astype(np.uint16)).save(folder / f"img{i:03d}.png")
        else:
            Image.fromarray((image * 255).astype(np.uint8)).save(folder / f"img{i:03d}.png")
    return present


class CellMeans(nn.Module):
    """Channel j = the image times cell j's mask; its spatial mean is cell j's brightness."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("masks", cell_masks())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :1] * self.masks[None] * (self.masks[0].numel() / self.masks[0].sum())


class Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(N_FEATURES, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS["head"] += 1
        return self.fc(x.mean((2, 3)))


class PlantedNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Identity()
        self.features = CellMeans()
        self.head = Head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CALLS["target"] += 1
        _check_mode(self)
        fail_at = int(os.environ.get("PLANTED_FAIL_AT", "0"))
        if fail_at and CALLS["target"] >= fail_at:
            raise KeyboardInterrupt  # a simulated Ctrl-C in the middle of the pass
        return self.head(self.features(self.stem(x)))


PREPROCESS = ImagePreprocess(SIZE, mean=(0.0,), std=(1.0,), channels=1, name="planted")


def make_target() -> Target:
    """Unit j of layer ``features`` responds only to feature j."""
    torch.manual_seed(0)
    return Target(PlantedNet(), PREPROCESS, info={"planted": True})  # train mode on purpose


def _text_vector(text: str) -> torch.Tensor:
    if text in CONCEPTS:
        return F.one_hot(torch.tensor(CONCEPTS.index(text)), N_FEATURES + EXTRA_DIMS).float()
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    vec = torch.randn(N_FEATURES + EXTRA_DIMS, generator=torch.Generator().manual_seed(seed))
    vec[:N_FEATURES] *= 0.2
    return F.normalize(vec, dim=0)


class PlantedDissector:
    """Image embedding = (cell brightnesses, constant extra dims), normalised."""

    def __init__(self) -> None:
        self.preprocess = PREPROCESS
        self.image_module = PlantedNet()  # left in train mode: the loader must switch it
        self.spec = "planted-dissector"
        self.identity = {"planted": 1}

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        CALLS["dissector_images"] += 1
        _check_mode(self.image_module)
        cells = self.image_module.features(self.image_module.stem(batch)).mean((2, 3))
        self.image_module.head.fc(cells)  # the tower runs to its end, as a real encoder would
        extra = torch.full((len(batch), EXTRA_DIMS), 0.4)
        return F.normalize(torch.cat([cells, extra], 1), dim=1)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        CALLS["dissector_texts"] += 1
        return torch.stack([_text_vector(t) for t in texts])

    def as_target(self) -> Target:
        return Target(self.image_module, self.preprocess, "planted-dissector", self.identity)


def make_dissector() -> PlantedDissector:
    return PlantedDissector()


class PlantedClassifier(nn.Module):
    """A classifier whose head unit i is the mean of cell ``features[i]``: by default one unit
    per feature (the classes ``planted feature j``)."""

    def __init__(self, features: Sequence[int] = tuple(range(N_FEATURES))) -> None:
        super().__init__()
        self.features = CellMeans()
        self.classifier = nn.Module()
        self.classifier.classification_head = nn.Linear(N_FEATURES, len(features))
        with torch.no_grad():
            self.classifier.classification_head.weight.copy_(torch.eye(N_FEATURES)[list(features)])
            self.classifier.classification_head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.classification_head(self.features(x).mean((2, 3)))


def make_classifier() -> Target:
    """A C-variant-like target: its head's classes are the planted concepts."""
    info = {"task": "feature", "kind": "multiclass", "classes": list(CONCEPTS)}
    return Target(PlantedClassifier(), PREPROCESS, "planted-classifier", {"planted": 2}, info)


def make_binary_classifier() -> Target:
    """A one-unit head detecting feature 2: the yes/no task ``planted_feature_2``."""
    info = {"task": "planted_feature_2", "kind": "binary", "classes": ["no", "yes"]}
    return Target(PlantedClassifier([2]), PREPROCESS, "planted-binary", {"planted": 3}, info)
