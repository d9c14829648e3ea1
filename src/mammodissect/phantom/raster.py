"""Small numpy drawing tools: windows, smooth steps, blur, polylines, random curves."""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = [
    "Window",
    "blur",
    "draw_polyline",
    "random_curve",
    "sample_bilinear",
    "sigmoid",
    "smoothstep",
]


class Window:
    """A square-ish crop of the image around a centre, with local coordinates.

    Attributes
    ----------
    box : tuple of slice
        Rows and columns of the crop in the full image.
    dy, dx : numpy.ndarray
        Float32 offsets of each crop pixel from the centre (rows, columns), broadcastable
        (``dy`` is a column, ``dx`` a row).
    """

    def __init__(self, shape: tuple[int, int], cy: float, cx: float, radius: float) -> None:
        height, width = shape
        r = int(np.ceil(radius)) + 1
        y0, y1 = max(0, int(np.floor(cy)) - r), min(height, int(np.floor(cy)) + r + 1)
        x0, x1 = max(0, int(np.floor(cx)) - r), min(width, int(np.floor(cx)) + r + 1)
        self.box = (slice(y0, max(y0, y1)), slice(x0, max(x0, x1)))
        self.dy = (np.arange(y0, max(y0, y1), dtype=np.float32) - np.float32(cy))[:, None]
        self.dx = (np.arange(x0, max(x0, x1), dtype=np.float32) - np.float32(cx))[None, :]

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the crop."""
        return (self.dy.shape[0], self.dx.shape[1])

    def polar(self) -> tuple[np.ndarray, np.ndarray]:
        """Distance and angle (radians, atan2(dy, dx)) of each crop pixel from the centre."""
        return np.hypot(self.dy, self.dx), np.arctan2(self.dy, self.dx)


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1`` (either order)."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function, computed through tanh (no overflow)."""
    return 0.5 + 0.5 * np.tanh(0.5 * x)


@cache
def _kernel(sigma: float) -> np.ndarray:
    radius = max(1, int(np.ceil(3.0 * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur with edge padding (returns a new float32 array)."""
    image = np.asarray(image, dtype=np.float32)
    if sigma <= 0.05:
        return image.copy()
    kernel = _kernel(round(float(sigma), 3))
    radius = len(kernel) // 2
    out = image
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        n = out.shape[axis]
        acc = np.zeros_like(out)
        for i, weight in enumerate(kernel):
            acc += weight * (padded[i : i + n] if axis == 0 else padded[:, i : i + n])
        out = acc
    return out


def densify(points: np.ndarray, step: float = 0.4) -> np.ndarray:
    """Resample a polyline (N, 2 as y, x) so consecutive points are at most ``step`` apart."""
    points = np.asarray(points, dtype=np.float32)
    if len(points) < 2:
        return points
    seg = np.diff(points, axis=0)
    counts = np.maximum(1, np.ceil(np.hypot(seg[:, 0], seg[:, 1]) / step).astype(int))
    starts = np.repeat(points[:-1], counts, axis=0)
    deltas = np.repeat(seg / counts[:, None], counts, axis=0)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.concatenate([starts + deltas * offsets[:, None], points[-1:]], axis=0)


def draw_polyline(canvas: np.ndarray, points: np.ndarray, width: int = 1) -> np.ndarray:
    """Set the pixels of a polyline (y, x points) in a bool ``canvas``; ``width`` 1 or more.

    Returns the canvas (modified in place).
    """
    dense = densify(points)
    iy = np.rint(dense[:, 0]).astype(np.int64)
    ix = np.rint(dense[:, 1]).astype(np.int64)
    height, width_px = canvas.shape
    offsets = [(0, 0)]
    if width >= 2:
        offsets += [(0, 1), (1, 0), (1, 1)]
    if width >= 3:
        offsets = [(oy, ox) for oy in (-1, 0, 1) for ox in (-1, 0, 1) if abs(oy) + abs(ox) < 2]
    for oy, ox in offsets:
        y, x = iy + oy, ix + ox
        keep = (y >= 0) & (y < height) & (x >= 0) & (x < width_px)
        canvas[y[keep], x[keep]] = True
    return canvas


def random_curve(
    rng: np.random.Generator,
    start: tuple[float, float],
    heading: float,
    length: float,
    *,
    step: float = 1.0,
    wiggle: float = 0.05,
    bend: float = 0.0,
) -> np.ndarray:
    """A smooth random path (y, x points) from ``start``, ``heading`` radians (atan2(dy, dx)).

    ``wiggle`` is the standard deviation of the per-step heading change (smoothed), ``bend`` a
    steady turn per step.
    """
    n = max(2, int(length / step))
    turns = rng.normal(0.0, wiggle, n)
    width = min(5, n)
    turns = np.convolve(turns, np.ones(width) / width, mode="same") + bend
    angles = heading + np.cumsum(turns)
    path = np.empty((n + 1, 2), dtype=np.float32)
    path[0] = start
    path[1:, 0] = start[0] + np.cumsum(step * np.sin(angles))
    path[1:, 1] = start[1] + np.cumsum(step * np.cos(angles))
    return path


def sample_bilinear(field: np.ndarray, fy: np.ndarray, fx: np.ndarray) -> np.ndarray:
    """Sample ``field`` at fractional rows ``fy`` and columns ``fx`` (clamped to its edges)."""
    height, width = field.shape
    fy = np.clip(fy, 0, height - 1.001).astype(np.float32, copy=False)
    fx = np.clip(fx, 0, width - 1.001).astype(np.float32, copy=False)
    y0 = fy.astype(np.int32)
    x0 = fx.astype(np.int32)
    ty = fy - y0
    tx = fx - x0
    flat = np.ascontiguousarray(field, dtype=np.float32).ravel()
    index = y0 * np.int32(width) + x0
    top = flat.take(index)
    top += (flat.take(index + 1) - top) * tx
    index += np.int32(width)
    bottom = flat.take(index)
    bottom += (flat.take(index + 1) - bottom) * tx
    return top + (bottom - top) * ty
