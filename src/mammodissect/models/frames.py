"""A stored image's pixels in a model's input: the frame masks and heatmaps are drawn in.

Preprocessing crops, resizes, pads and may mirror an image (its
:class:`~mammodissect.models.preprocess.Geometry`). To compare a unit's map with a mask drawn
on the stored image, or to draw the map over that image, every pixel of a *frame* (the stored
image scaled so its longer side is at most some size) is located in the model's input and the
map sampled there: :func:`frame_size`, :func:`frame_grid` and :func:`to_frame`. Grounding
(``evaluate``) and the report's heatmaps use the same three.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["frame_grid", "frame_size", "to_frame"]


def frame_size(shape: tuple[int, int], max_side: int) -> tuple[int, int]:
    """The mask frame: ``shape`` scaled down so its longer side is at most ``max_side``."""
    scale = min(1.0, max_side / max(shape))
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def frame_grid(
    geometry: dict[str, Any] | None, shape: tuple[int, int], frame: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each mask-frame pixel lies in the target's input, for ``grid_sample``.

    Parameters
    ----------
    geometry:
        The recipe's geometry (:meth:`mammodissect.models.preprocess.Geometry.to_dict`
        columns), or None for a plain resize of the whole image.
    shape:
        The stored (decoded) image's (H, W).
    frame:
        The mask frame's (H', W') (``shape`` scaled).

    Returns
    -------
    (grid, valid)
        ``grid`` (1, H', W', 2) in ``[-1, 1]`` input coordinates (x, y; ``align_corners=False``)
        and ``valid`` (H', W') bool: the pixel lies inside the region the target saw.
    """
    height, width = shape
    g = geometry or {
        "crop_y0": 0, "crop_x0": 0, "crop_y1": height, "crop_x1": width,
        "pad_top": 0, "pad_left": 0, "flipped": False,
        "out_height": 1.0, "out_width": 1.0, "content_height": 1.0, "content_width": 1.0,
    }  # fmt: skip
    ys = (torch.arange(frame[0], dtype=torch.float64) + 0.5) * height / frame[0]
    xs = (torch.arange(frame[1], dtype=torch.float64) + 0.5) * width / frame[1]
    y0, x0, y1, x1 = (float(g[k]) for k in ("crop_y0", "crop_x0", "crop_y1", "crop_x1"))
    sy = float(g["content_height"]) / max(y1 - y0, 1.0)
    sx = float(g["content_width"]) / max(x1 - x0, 1.0)
    out_y = (ys - y0) * sy + float(g["pad_top"])
    out_x = (xs - x0) * sx + float(g["pad_left"])
    if bool(g["flipped"]):
        out_x = float(g["out_width"]) - out_x
    gy = 2.0 * out_y / float(g["out_height"]) - 1.0
    gx = 2.0 * out_x / float(g["out_width"]) - 1.0
    valid = ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]
    grid = torch.stack(torch.broadcast_tensors(gx[None, :], gy[:, None]), dim=-1)
    return grid[None].float(), valid


def to_frame(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """One image's maps (K, h, w) sampled bilinearly at ``grid`` -> (K, H', W')."""
    sampled = F.grid_sample(
        maps[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return sampled[0]
