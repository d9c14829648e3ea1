"""The pictures of a unit card: top-activating probe images with the unit's heatmap overlaid,
and a crop around the heatmap's peak.

The target runs once over the union of the cards' top images, hooked on every layer that has
a card; only the channels of carded units are kept. Each unit map is taken back into the
stored image's pixels through the preprocessing geometry (crop, resize, padding, flip) with
the same sampling grounding uses (:func:`mammodissect.models.frames.frame_grid`), so the
heatmap lies where the target looked. Pictures are small JPEGs, base64 data URIs.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mammodissect.hooks import Trace
from mammodissect.models.base import Target
from mammodissect.models.frames import frame_grid, frame_size, to_frame
from mammodissect.privacy import anonymize_id
from mammodissect.probe import Probe, read_image
from mammodissect.probe.loader import probe_batches

__all__ = ["Picture", "data_uri", "render_cards", "unit_maps"]

log = logging.getLogger(__name__)

#: Longest side of a card's overlaid thumbnail, and the side of its peak crop, in pixels.
THUMB_SIDE = 200
CROP_SIDE = 96
#: Side of the peak crop as a fraction of the image's shorter side.
CROP_FRACTION = 0.25


@dataclass
class Picture:
    """One top image of a unit card.

    Attributes
    ----------
    image_id:
        The probe image (its id, never its path).
    activation:
        The unit's pooled activation on it (top_images.csv).
    overlay, crop:
        Data URIs (JPEG) of the thumbnail with the heatmap and of the crop around the peak.
    peak:
        The peak as ``(y, x)`` fractions of the image's height and width.
    """

    image_id: str
    activation: float | None
    overlay: str
    crop: str
    peak: tuple[float, float]


def data_uri(image: np.ndarray, quality: int = 82) -> str:
    """A ``data:image/jpeg;base64`` URI of an (H, W) or (H, W, 3) uint8 array."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _grey(image: np.ndarray) -> np.ndarray:
    """Float image -> [0, 1] by its 0.5th and 99.5th percentiles."""
    low, high = np.percentile(image, [0.5, 99.5])
    if high <= low:
        low, high = float(image.min()), float(image.max()) or 1.0
    return np.clip((image - low) / max(high - low, 1e-12), 0.0, 1.0).astype(np.float32)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    tensor = tensor[None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    out = torch.nn.functional.interpolate(
        tensor[None], size=size, mode="bilinear", align_corners=False, antialias=True
    )[0]
    return (out[0] if image.ndim == 2 else out.permute(1, 2, 0)).numpy()


def _colormap(values: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB in [0, 1] (matplotlib's ``inferno``)."""
    from matplotlib import colormaps

    return colormaps["inferno"](values)[..., :3].astype(np.float32)


def unit_maps(
    target: Target,
    probe: Probe,
    wanted: dict[int, dict[str, list[int]]],
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    voi: str = "auto",
) -> tuple[dict[tuple[int, str], torch.Tensor], dict[int, dict[str, Any] | None]]:
    """Forward each wanted probe row once and keep the wanted channels' spatial maps.

    Parameters
    ----------
    target:
        The run's target, preprocessing configured as the run had it.
    probe:
        The run's probe.
    wanted:
        Probe row -> layer -> channels to keep.

    Returns
    -------
    (maps, geometry)
        ``maps[(row, layer)]`` (channels, h, w) in the order of ``wanted[row][layer]``
        (layers whose output is not a (B, C, h, w) map are left out); ``geometry[row]``:
        the preprocessing geometry (None for a plain resize).
    """
    rows = sorted(wanted)
    layers = sorted({layer for per_row in wanted.values() for layer in per_row})
    maps: dict[tuple[int, str], torch.Tensor] = {}
    geometry: dict[int, dict[str, Any] | None] = {}
    if not rows:
        return maps, geometry
    target.module.to(device).eval()
    loader = probe_batches(probe, [target.preprocess], rows=rows, batch_size=batch_size, voi=voi)
    with torch.inference_mode():
        for batch in loader:
            good = [int(r) for r in batch["good"]]
            for row, reason in batch["errors"].items():
                log.warning("%s: not drawn (%s)", probe.items[row].image_id, reason)
            if not good:
                continue
            with Trace(target.module, layers) as trace:
                captured = trace(batch["inputs"][0].to(device))
            for i, row in enumerate(good):
                geometry[row] = (batch["facts"].get(row) or {}).get("geometry")
                for layer, channels in wanted[row].items():
                    tensor = captured.get(layer)
                    if tensor is None or tensor.dim() != 4:
                        continue
                    maps[(row, layer)] = tensor[i, channels].clone()
    return maps, geometry


def _picture(
    image: np.ndarray, heat: np.ndarray, valid: np.ndarray, image_id: str, activation: Any
) -> Picture:
    """Overlay ``heat`` ([0, 1], frame-sized) on the grey image and crop around its peak."""
    frame = heat.shape
    grey = _resize(image, frame)
    masked = np.where(valid, heat, 0.0)
    peak_y, peak_x = np.unravel_index(int(np.argmax(masked)), frame)
    alpha = 0.7 * masked[..., None] ** 1.5
    rgb = grey[..., None] * (1.0 - alpha) + _colormap(masked) * alpha
    thumb = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    height, width = image.shape
    py, px = (peak_y + 0.5) / frame[0], (peak_x + 0.5) / frame[1]
    side = max(16, round(CROP_FRACTION * min(height, width)))
    y0 = int(np.clip(round(py * height - side / 2), 0, max(height - side, 0)))
    x0 = int(np.clip(round(px * width - side / 2), 0, max(width - side, 0)))
    crop = image[y0 : y0 + side, x0 : x0 + side]
    crop_small = (_resize(crop, (CROP_SIDE, CROP_SIDE)) * 255).clip(0, 255).astype(np.uint8)
    # the crop's box on the thumbnail
    sy, sx = frame[0] / height, frame[1] / width
    top, left = round(y0 * sy), round(x0 * sx)
    bottom = min(frame[0] - 1, round((y0 + crop.shape[0]) * sy))
    right = min(frame[1] - 1, round((x0 + crop.shape[1]) * sx))
    thumb[top : bottom + 1, [left, right]] = (86, 180, 233)
    thumb[[top, bottom], left : right + 1] = (86, 180, 233)
    value = None if activation is None else float(activation)
    return Picture(image_id, value, data_uri(thumb), data_uri(crop_small), (float(py), float(px)))


def render_cards(
    target: Target,
    probe: Probe,
    tops: dict[tuple[str, int], list[tuple[str, float]]],
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    voi: str = "auto",
) -> dict[tuple[str, int], list[Picture]]:
    """The pictures of every card: per ``(layer, unit)``, its top images (``image_id``,
    activation) drawn with the unit's heatmap and a peak crop.

    Each unit's heatmaps share one scale (the unit's smallest and largest value over its
    top images), so a brighter overlay means a stronger response. Images the probe lacks are
    left out with a logged warning.
    """
    positions = {item.image_id: row for row, item in enumerate(probe.items)}
    ids = _id_lookup(probe, {image_id for top in tops.values() for image_id, _ in top})
    wanted: dict[int, dict[str, list[int]]] = {}
    missing: set[str] = set()
    for (layer, unit), top in tops.items():
        for image_id, _ in top:
            probe_id = ids.get(image_id)
            if probe_id is None:
                missing.add(image_id)
                continue
            channels = wanted.setdefault(positions[probe_id], {}).setdefault(layer, [])
            if unit not in channels:
                channels.append(unit)
    if missing:
        log.warning(
            "%d top image(s) are not in the probe given (e.g. %s); they are left off the cards",
            len(missing), sorted(missing)[0],
        )  # fmt: skip
    maps, geometry = unit_maps(target, probe, wanted, batch_size=batch_size, device=device, voi=voi)
    images: dict[int, np.ndarray] = {}
    pictures: dict[tuple[str, int], list[Picture]] = {}
    for (layer, unit), top in tops.items():
        sampled = []
        for image_id, activation in top:
            probe_id = ids.get(image_id)
            row = positions.get(probe_id) if probe_id is not None else None
            if row is None or (row, layer) not in maps:
                continue
            if row not in images:
                images[row] = _grey(read_image(probe.items[row].path, voi=voi))
            image = images[row]
            frame = frame_size(image.shape, THUMB_SIDE)
            grid, valid = frame_grid(geometry.get(row), image.shape, frame)
            channel = wanted[row][layer].index(unit)
            heat = to_frame(maps[(row, layer)][channel : channel + 1], grid)[0].numpy()
            sampled.append((image_id, activation, image, heat, valid.numpy()))
        if not sampled:
            continue
        low = min(float(h[3][h[4]].min()) if h[4].any() else 0.0 for h in sampled)
        high = max(float(h[3][h[4]].max()) if h[4].any() else 1.0 for h in sampled)
        scale = max(high - low, 1e-12)
        pictures[(layer, unit)] = [
            _picture(image, np.clip((heat - low) / scale, 0, 1), valid, image_id, activation)
            for image_id, activation, image, heat, valid in sampled
        ]
    return pictures


def _id_lookup(probe: Probe, ids: Sequence[str] | set[str]) -> dict[str, str]:
    """top_images.csv id -> probe image_id (ids are the probe's, or their pseudonyms)."""
    known = set(probe.image_ids)
    found = {image_id: image_id for image_id in ids if image_id in known}
    rest = set(ids) - set(found)
    if rest:
        pseudonyms = {anonymize_id(image_id): image_id for image_id in probe.image_ids}
        found.update(
            {image_id: pseudonyms[image_id] for image_id in rest if image_id in pseudonyms}
        )
    return found
