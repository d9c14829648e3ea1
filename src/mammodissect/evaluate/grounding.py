"""Grounded truth from masks: Network Dissection's IoU of thresholded activation maps.

A second, streaming pass over the probe runs the target with hooks on the run's layers and
keeps each layer's spatial output (B, K, h, w), not pooled. Per unit:

1. **Threshold** (first sweep): the activation value exceeded by the top ``1 - quantile``
   (default 0.5%) of that unit's raw map values over the whole probe, as in Network Dissection
   (the quantile is taken over the feature maps at their own resolution). The exact quantile
   needs every value; to keep memory bounded each unit keeps a uniform random sample of at most
   ``max_samples`` map positions (the same positions for every unit, seeded), and the threshold
   is that sample's quantile (linear interpolation). When the probe has no more positions than
   ``max_samples`` the sample is everything and the threshold exact.
2. **IoU** (second sweep): each map is upsampled (bilinear) to the image's mask frame through the
   preprocessing geometry (crop, resize, padding, flip), so that it lines up with masks drawn on
   the stored image; pixels the target never saw (cropped away) count as inactive. The mask frame
   is the stored image's size, scaled down to at most ``max_side`` pixels on its longer side
   (masks by nearest neighbour). Per (unit, concept): intersection and union of the unit's
   thresholded maps with the concept's masks, each summed over the probe; IoU = sum of
   intersections / sum of unions.

A unit's grounded concept is its best-IoU concept when that IoU is at least ``iou_threshold``
(0.04, Network Dissection's cut-off), else ``ungrounded``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mammodissect.errors import MammodissectError
from mammodissect.evaluate.masks import MaskSource
from mammodissect.hooks import Trace
from mammodissect.models.base import Target
from mammodissect.models.frames import frame_grid, frame_size, to_frame
from mammodissect.probe import Probe, read_image
from mammodissect.probe.loader import probe_batches

__all__ = [
    "UNGROUNDED",
    "Grounding",
    "IoUAccumulator",
    "ThresholdSampler",
    "ground",
    "image_shape",
    "iou",
    "quantile_thresholds",
]

log = logging.getLogger(__name__)

#: The grounded concept of a unit whose best IoU is below the cut-off.
UNGROUNDED = "ungrounded"


def quantile_thresholds(values: np.ndarray, quantile: float = 0.995) -> np.ndarray:
    """Per row of ``values`` (units x samples), the ``quantile`` (linear interpolation).

    Examples
    --------
    >>> quantile_thresholds(np.arange(11.0)[None], 0.95)
    array([9.5])
    """
    if not 0.0 < quantile < 1.0:
        raise MammodissectError(f"quantile must be between 0 and 1, got {quantile}")
    return np.quantile(np.asarray(values, dtype=np.float64), quantile, axis=1)


def iou(intersection: np.ndarray, active: np.ndarray, masked: np.ndarray) -> np.ndarray:
    """IoU from summed counts: ``intersection`` (K, C), unit areas ``active`` (K,), concept
    areas ``masked`` (C,); 0 where the union is empty.

    Examples
    --------
    >>> iou(np.array([[2.0, 0.0]]), np.array([4.0]), np.array([3.0, 0.0]))
    array([[0.4, 0. ]])
    """
    union = active[:, None] + masked[None, :] - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)
    return out


class ThresholdSampler:
    """A uniform random sample of map positions per unit, for quantile thresholds.

    Parameters
    ----------
    units:
        Channels of the layer.
    total:
        Positions per unit over the whole probe (images x h x w).
    max_samples:
        Positions kept at most (all of them when ``total <= max_samples``).
    seed:
        Seed of the position sample.
    """

    def __init__(self, units: int, total: int, max_samples: int = 16384, seed: int = 0):
        self.units = units
        self.keep = min(1.0, max_samples / max(total, 1))
        self.rng = np.random.default_rng(seed)
        self.parts: list[np.ndarray] = []

    @property
    def exact(self) -> bool:
        """Whether every position is kept (the threshold is then the exact quantile)."""
        return self.keep >= 1.0

    def add(self, maps: torch.Tensor) -> None:
        """Add a batch of maps (B, K, h, w)."""
        flat = maps.permute(1, 0, 2, 3).reshape(self.units, -1)
        if not self.exact:
            chosen = np.flatnonzero(self.rng.random(flat.shape[1]) < self.keep)
            flat = flat[:, torch.from_numpy(chosen)]
        self.parts.append(flat.float().cpu().numpy())

    def thresholds(self, quantile: float) -> np.ndarray:
        """(K,) the sample's ``quantile`` per unit."""
        values = np.concatenate(self.parts, axis=1) if self.parts else np.zeros((self.units, 1))
        return quantile_thresholds(values, quantile)


class IoUAccumulator:
    """Summed intersections and areas of thresholded unit maps and concept masks.

    Parameters
    ----------
    units:
        Channels of the layer.
    concepts:
        The concepts masks may name, in column order.
    """

    def __init__(self, units: int, concepts: Sequence[str]):
        self.concepts = list(concepts)
        self.index = {c: i for i, c in enumerate(self.concepts)}
        self.intersection = np.zeros((units, len(self.concepts)))
        self.active = np.zeros(units)
        self.masked = np.zeros(len(self.concepts))

    def add(self, active: torch.Tensor, masks: dict[str, torch.Tensor]) -> None:
        """One image: ``active`` (K, H, W) bool, ``masks`` concept -> (H, W) bool."""
        flat = active.reshape(active.shape[0], -1).float()
        self.active += flat.sum(1).double().numpy()
        if not masks:
            return
        names = list(masks)
        stacked = torch.stack([masks[c].reshape(-1) for c in names]).float()
        inter = (flat @ stacked.T).double().numpy()
        cols = [self.index[c] for c in names]
        self.intersection[:, cols] += inter
        self.masked[cols] += stacked.sum(1).double().numpy()

    def iou(self) -> np.ndarray:
        """(K, C) IoU over everything added."""
        return iou(self.intersection, self.active, self.masked)


@dataclass
class Grounding:
    """Per layer, the units' IoU with every concept and their grounded concepts.

    Attributes
    ----------
    concepts:
        Column order of the IoU matrices.
    iou:
        Layer -> (K, C) IoU.
    thresholds:
        Layer -> (K,) activation thresholds.
    exact:
        Layer -> whether its thresholds are exact quantiles (not from a sample).
    images:
        Images used.
    notes:
        Layers or images left out, and why.
    masked:
        Concepts some probe image has a mask for.
    """

    concepts: list[str]
    iou: dict[str, np.ndarray] = field(default_factory=dict)
    thresholds: dict[str, np.ndarray] = field(default_factory=dict)
    exact: dict[str, bool] = field(default_factory=dict)
    images: int = 0
    notes: list[str] = field(default_factory=list)
    masked: list[str] = field(default_factory=list)

    def grounded(self, layer: str, iou_threshold: float = 0.04) -> tuple[list[str], np.ndarray]:
        """Per unit: the best-IoU concept (``ungrounded`` below the cut-off) and its IoU."""
        matrix = self.iou[layer]
        if not matrix.shape[1]:
            return [UNGROUNDED] * matrix.shape[0], np.zeros(matrix.shape[0])
        best = matrix.argmax(1)
        values = matrix[np.arange(len(best)), best]
        names = [
            self.concepts[b] if v >= iou_threshold else UNGROUNDED
            for b, v in zip(best, values, strict=True)
        ]
        return names, values


def _forward_maps(
    target: Target, layers: list[str], batch: torch.Tensor
) -> dict[str, torch.Tensor]:
    with Trace(target.module, layers) as trace:
        return trace(batch)


def _batches(
    target: Target, probe: Probe, rows: Sequence[int], layers: list[str], options: dict[str, Any]
) -> Any:
    loader = probe_batches(
        probe, [target.preprocess], rows=rows, batch_size=options["batch_size"],
        num_workers=0, voi=options["voi"], image_cache=options.get("image_cache"),
    )  # fmt: skip
    bar = tqdm(total=len(rows), desc=options["desc"], unit="img", disable=options["quiet"])
    with torch.inference_mode(), bar:
        for batch in loader:
            bar.update(len(batch["rows"]))
            good = [int(r) for r in batch["good"]]
            if not good:
                continue
            maps = _forward_maps(target, layers, batch["inputs"][0].to(options["device"]))
            yield good, maps, batch["facts"]


def ground(
    target: Target,
    probe: Probe,
    rows: Sequence[int],
    layers: list[str],
    source: MaskSource,
    *,
    quantile: float = 0.995,
    max_samples: int = 16384,
    max_side: int = 320,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    voi: str = "auto",
    seed: int = 0,
    keep_maps_mb: float = 256.0,
    image_cache: Any = None,
    quiet: bool = False,
) -> Grounding:
    """Stream the probe through ``target`` and ground every unit of ``layers`` in masks.

    Parameters
    ----------
    target:
        The run's target, its preprocessing configured as the run had it.
    probe, rows:
        The probe and the rows the run used.
    layers:
        Layers to ground; layers whose output is not (B, K, h, w) are left out with a note.
    source:
        Where each image's concept masks come from.
    quantile:
        Per-unit activation quantile that thresholds the maps (0.995: the top 0.5%).
    max_samples:
        Map positions per unit kept for the quantile (see the module docstring).
    max_side:
        Longest side of the mask frame.
    keep_maps_mb:
        When all maps fit in this many MB they are kept from the first sweep and the second
        sweep runs no forward pass.

    Returns
    -------
    Grounding
    """
    target.module.to(device).eval()
    options = {"batch_size": batch_size, "voi": voi, "device": torch.device(device),
               "quiet": quiet, "image_cache": image_cache}  # fmt: skip
    result = Grounding(concepts=sorted(set(source.lookup.values())))
    samplers: dict[str, ThresholdSampler] = {}
    kept: list[tuple[list[int], dict[str, torch.Tensor], dict]] | None = []
    size = 0.0
    for good, maps, facts in _batches(
        target, probe, rows, layers, {**options, "desc": "grounding 1/2"}
    ):
        for layer in layers:
            tensor = maps.get(layer)
            if tensor is None or tensor.dim() != 4:
                continue
            if layer not in samplers:
                total = len(rows) * tensor.shape[2] * tensor.shape[3]
                samplers[layer] = ThresholdSampler(tensor.shape[1], total, max_samples, seed)
            samplers[layer].add(tensor)
        if kept is not None:
            size += sum(t.numel() * 2 for t in maps.values()) / 2**20
            if size > keep_maps_mb:
                kept = None
            else:
                kept.append((good, {k: v.half() for k, v in maps.items()}, facts))
    for layer in layers:
        if layer not in samplers:
            result.notes.append(f"{layer}: output is not a (B, C, h, w) map; not grounded")
    active_layers = [layer for layer in layers if layer in samplers]
    for layer in active_layers:
        result.thresholds[layer] = samplers[layer].thresholds(quantile)
        result.exact[layer] = samplers[layer].exact
    accumulators = {
        layer: IoUAccumulator(samplers[layer].units, result.concepts) for layer in active_layers
    }
    sweep = (
        kept
        if kept is not None
        else _batches(target, probe, rows, active_layers, {**options, "desc": "grounding 2/2"})
    )
    thresholds = {
        k: torch.from_numpy(v).float()[:, None, None] for k, v in result.thresholds.items()
    }
    for good, maps, facts in sweep:
        for i, row in enumerate(good):
            geometry = (facts.get(row) or {}).get("geometry")
            shape = image_shape(probe, row, geometry)
            frame = frame_size(shape, max_side)
            masks = {c: _scale_mask(m, frame) for c, m in source.masks(row, shape).items()}
            grid, valid = frame_grid(geometry, shape, frame)
            for layer in active_layers:
                sampled = to_frame(maps[layer][i], grid)
                active = (sampled > thresholds[layer]) & valid[None]
                accumulators[layer].add(active, masks)
        result.images += len(good)
    for layer in active_layers:
        result.iou[layer] = accumulators[layer].iou()
    if accumulators:
        masked = next(iter(accumulators.values())).masked
        result.masked = [c for c, area in zip(result.concepts, masked, strict=True) if area > 0]
    return result


def image_shape(probe: Probe, row: int, geometry: dict[str, Any] | None) -> tuple[int, int]:
    """The stored (decoded) size (H, W) of probe row ``row``: from the recorded preprocessing
    ``geometry`` when known, else by decoding the image."""
    if geometry:
        return int(geometry["orig_height"]), int(geometry["orig_width"])
    image = read_image(probe.items[row].path)
    return int(image.shape[0]), int(image.shape[1])


def _scale_mask(mask: np.ndarray, frame: tuple[int, int]) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(mask))
    if tuple(tensor.shape) == frame:
        return tensor
    scaled = F.interpolate(tensor[None, None].float(), size=frame, mode="nearest")
    return scaled[0, 0] > 0.5
