"""Breast geometry of one phantom: outline, skin, nipple and (MLO) pectoral muscle.

Everything is drawn in a *canonical* frame with the chest wall at column 0 and the nipple
pointing right (a left breast as displayed); right breasts are mirrored at the end.

The outline is a super-ellipse around a point on the chest wall, with different half-heights
above and below that point (on an MLO view the upper one runs off the top of the image into
the axilla) and a gentle wobble. Each pixel gets a normalised radius ``rho`` (1 on the skin),
an angle ``phi`` (0 towards the nipple, positive downwards) and an approximate distance to the
skin in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Anatomy", "build_anatomy"]

_WOBBLE_ORDERS = np.arange(2, 6)


@dataclass(eq=False)
class Anatomy:
    """Geometry of one breast in the canonical frame (chest wall on the left).

    Attributes
    ----------
    shape : tuple of int
        ``(height, width)``.
    view : str
        ``"CC"`` or ``"MLO"``.
    scale : float
        Pixel lengths scale: height / 320.
    mm_per_px : float
        Physical pixel size assumed for reports (a 24 cm tall field).
    a, cy, b_up, b_down, p_up, p_down : float
        Outline: depth (columns) from the chest wall to the nipple, row of the outline's
        centre, half-heights above and below it, super-ellipse exponents.
    wobble : numpy.ndarray
        ``(orders, amplitudes, phases)`` of the outline's wobble.
    rho, phi, dist : numpy.ndarray
        Normalised radius (1 on the skin), angle, distance to the skin in pixels (float32).
    breast : numpy.ndarray
        Bool mask of the imaged body (breast with nipple, and the pectoral muscle).
    skin : numpy.ndarray
        Bool mask of the skin line.
    nipple : numpy.ndarray
        Bool mask of the nipple.
    nipple_yx : tuple of float
        Centre of the nipple.
    retracted : bool
        Whether the nipple is pulled in.
    pectoral : numpy.ndarray
        Bool mask of the pectoral muscle (all False on CC).
    pectoral_q : numpy.ndarray or None
        The muscle's implicit function (< 1 inside) on MLO.
    """

    shape: tuple[int, int]
    view: str
    scale: float
    mm_per_px: float
    a: float
    cy: float
    b_up: float
    b_down: float
    p_up: float
    p_down: float
    wobble: tuple[np.ndarray, np.ndarray, np.ndarray]
    rho: np.ndarray
    phi: np.ndarray
    dist: np.ndarray
    breast: np.ndarray
    skin: np.ndarray
    nipple: np.ndarray
    nipple_yx: tuple[float, float]
    nipple_radius: float
    retracted: bool
    pectoral: np.ndarray
    pectoral_q: np.ndarray | None
    pectoral_size: tuple[float, float]

    def to_xy(self, rho: float, phi: float) -> tuple[float, float]:
        """Image ``(row, column)`` of the point at normalised radius ``rho`` and angle ``phi``."""
        y, x = self.to_xy_many(np.array([rho]), np.array([phi]))
        return float(y[0]), float(x[0])

    def to_xy_many(self, rho: np.ndarray, phi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised :meth:`to_xy`: rows and columns of points ``(rho, phi)``."""
        rho = np.asarray(rho, dtype=np.float64)
        phi = np.asarray(phi, dtype=np.float64)
        c, s = np.cos(phi), np.sin(phi)
        up = s < 0
        p = np.where(up, self.p_up, self.p_down)
        norm = (np.abs(c) ** p + np.abs(s) ** p) ** (1.0 / p)
        orders, amplitudes, phases = self.wobble
        wobble = (amplitudes[:, None] * np.cos(np.outer(orders, phi) + phases[:, None])).sum(0)
        r = rho * (1.0 + wobble) / norm
        b = np.where(up, self.b_up, self.b_down)
        return self.cy + r * s * b, r * c * self.a - 0.5

    def location(self, y: float, x: float) -> dict[str, str]:
        """Where a point lies, in report words: ``region`` and ``depth``.

        ``region`` is ``outer``/``inner``/``central`` on CC (the lateral side is up),
        ``upper``/``lower``/``central`` on MLO, ``subareolar`` next to the nipple and
        ``axillary`` in the MLO axillary tail; ``depth`` is ``anterior``, ``middle`` or
        ``posterior`` (thirds from the nipple to the chest wall).
        """
        ny, nx = self.nipple_yx
        fraction = 1.0 - x / max(nx, 1.0)
        depth = "anterior" if fraction < 1 / 3 else "middle" if fraction < 2 / 3 else "posterior"
        half = 0.5 * (self.b_up + self.b_down)
        if np.hypot(y - ny, x - nx) < 0.18 * self.a:
            region = "subareolar"
        elif self.view == "MLO" and y < 0.22 * self.shape[0] and x < 0.6 * self.a:
            region = "axillary"
        elif abs(y - ny) < 0.15 * half:
            region = "central"
        elif self.view == "CC":
            region = "outer" if y < ny else "inner"
        else:
            region = "upper" if y < ny else "lower"
        return {"region": region, "depth": depth}


def build_anatomy(
    rng: np.random.Generator, shape: tuple[int, int], view: str, *, retracted: bool = False
) -> Anatomy:
    """Draw the breast outline, skin, nipple and pectoral muscle of one phantom."""
    height, width = shape
    k = height / 320.0
    nipple_radius = float(max(rng.uniform(3.5, 4.8) * k, 1.5))
    if view == "CC":
        a = width * rng.uniform(0.76, 0.92)
        cy = height * rng.uniform(0.46, 0.54)
        b_down = height * rng.uniform(0.37, 0.46)
        b_up = b_down * rng.uniform(0.94, 1.08)
        p_up, p_down = rng.uniform(1.9, 2.35), rng.uniform(1.9, 2.35)
        nipple_phi = rng.uniform(-0.06, 0.06)
    else:
        a = width * rng.uniform(0.72, 0.88)
        cy = height * rng.uniform(0.52, 0.6)
        b_up = height * rng.uniform(0.78, 0.95)
        b_down = height * rng.uniform(0.27, 0.35)
        p_up, p_down = rng.uniform(1.8, 2.2), rng.uniform(2.0, 2.5)
        nipple_phi = rng.uniform(0.04, 0.2)
    a = min(a, width - 2.5 * nipple_radius - 2)
    b_up = min(b_up, cy - 2) if view == "CC" else b_up
    b_down = min(b_down, height - cy - 2)
    amplitudes = rng.uniform(0.0, 0.025, len(_WOBBLE_ORDERS)).astype(np.float32)
    phases = rng.uniform(0, 2 * np.pi, len(_WOBBLE_ORDERS)).astype(np.float32)
    orders = _WOBBLE_ORDERS.astype(np.float32)

    # Rows are pixel indices; columns are measured from the chest wall, half a pixel before
    # column 0, and turned back into indices (minus 0.5) where a point is placed.
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = (np.arange(width, dtype=np.float32) + 0.5)[None, :]
    dy = ys - np.float32(cy)
    up = dy < 0
    b = np.where(up, np.float32(b_up), np.float32(b_down))
    p = np.where(up, np.float32(p_up), np.float32(p_down))
    u = xs / np.float32(a)
    v = dy / b
    phi = np.arctan2(np.broadcast_to(v, (height, width)), np.broadcast_to(u, (height, width)))
    radius = (u**p + np.abs(v) ** p) ** (1.0 / p)
    wobble = np.zeros_like(phi)
    for order, amplitude, phase in zip(orders, amplitudes, phases, strict=True):
        wobble += amplitude * np.cos(order * phi + phase)
    rho = (radius / (1.0 + wobble)).astype(np.float32)
    gy, gx = np.gradient(rho)
    dist = ((1.0 - rho) / np.maximum(np.sqrt(gy * gy + gx * gx), 1e-4)).astype(np.float32)

    geometry = Anatomy(
        shape=(height, width),
        view=view,
        scale=k,
        mm_per_px=240.0 / height,
        a=float(a),
        cy=float(cy),
        b_up=float(b_up),
        b_down=float(b_down),
        p_up=float(p_up),
        p_down=float(p_down),
        wobble=(orders, amplitudes, phases),
        rho=rho,
        phi=phi.astype(np.float32),
        dist=dist,
        breast=rho < 1.0,
        skin=np.zeros((height, width), dtype=bool),
        nipple=np.zeros((height, width), dtype=bool),
        nipple_yx=(0.0, 0.0),
        nipple_radius=nipple_radius,
        retracted=retracted,
        pectoral=np.zeros((height, width), dtype=bool),
        pectoral_q=None,
        pectoral_size=(0.0, 0.0),
    )
    # The nipple sits at the apex of the outline near the drawn angle.
    candidates = nipple_phi + np.linspace(-0.4, 0.4, 81)
    _, apex_x = geometry.to_xy_many(np.ones_like(candidates), candidates)
    _add_nipple(geometry, rng, float(candidates[int(np.argmax(apex_x))]), ys, xs)
    geometry.skin = geometry.breast & (geometry.dist < 1.4 * k) & (rho > 0.7) & ~geometry.nipple
    if retracted:
        geometry.skin |= geometry.breast & _notch_rim(geometry, ys, xs)
    if view == "MLO":
        _add_pectoral(geometry, rng, ys, xs)
    return geometry


def _add_nipple(
    geometry: Anatomy, rng: np.random.Generator, phi: float, ys: np.ndarray, xs: np.ndarray
) -> None:
    """Put the nipple on the outline at angle ``phi``: a bump, or a notch when retracted."""
    y, x = geometry.to_xy(1.0, phi)
    x += 0.5  # in the chest-wall frame of ``xs``
    r = geometry.nipple_radius
    if geometry.retracted:
        notch = (ys - y) ** 2 + (xs - x) ** 2 < (0.95 * r) ** 2
        geometry.breast &= ~notch
        cy, cx = y, x - 1.6 * r
        nipple = (ys - cy) ** 2 + (xs - cx) ** 2 < (0.8 * r) ** 2
    else:
        cy, cx = y, x + 0.2 * r
        nipple = (ys - cy) ** 2 + ((xs - cx) * 1.15) ** 2 < r**2
    if not nipple.any():  # tiny images: at least the pixel at the centre
        iy = int(np.clip(round(cy), 0, nipple.shape[0] - 1))
        ix = int(np.clip(round(cx - 0.5), 0, nipple.shape[1] - 1))
        nipple[iy, ix] = True
    geometry.nipple = nipple
    geometry.breast |= nipple
    geometry.nipple_yx = (float(cy), float(cx) - 0.5)


def _notch_rim(geometry: Anatomy, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Pixels next to the retraction notch (the skin folds in with it)."""
    ny, nx = geometry.nipple_yx
    r = geometry.nipple_radius
    y, x = ny, nx + 0.5 + 1.6 * r
    d = np.sqrt((ys - y) ** 2 + (xs - x) ** 2)
    return (d >= 0.95 * r) & (d < 0.95 * r + 1.4 * geometry.scale)


def _add_pectoral(
    geometry: Anatomy, rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray
) -> None:
    """Add the pectoral muscle: a bright triangle in the upper chest-wall corner (MLO)."""
    height, width = geometry.shape
    top_x = _top_edge(geometry)
    ph = height * rng.uniform(0.34, 0.6)
    pw = min(width * rng.uniform(0.24, 0.42), 0.8 * top_x)
    gamma = rng.uniform(0.9, 1.3)
    q = (xs / np.float32(pw)) ** gamma + (ys / np.float32(ph)) ** gamma
    geometry.pectoral_q = q.astype(np.float32)
    geometry.pectoral = (q < 1.0) & geometry.breast
    geometry.pectoral_size = (float(ph), float(pw))


def _top_edge(geometry: Anatomy) -> float:
    """Column where the outline leaves the top row of the image (MLO)."""
    cols = np.flatnonzero(geometry.breast[0])
    return float(cols[-1] + 1) if cols.size else geometry.a * 0.5
