"""Normal linear structures: blood vessels and Cooper's ligaments."""

from __future__ import annotations

import numpy as np

from mammodissect.phantom.raster import blur, draw_polyline, random_curve
from mammodissect.phantom.scene import Scene

__all__ = ["draw_ligaments", "draw_vessels"]


def draw_vessels(scene: Scene, rng: np.random.Generator) -> None:
    """Draw 2-5 tortuous vessels from the chest wall towards the nipple."""
    an = scene.anatomy
    height = scene.shape[0]
    k = scene.k
    ny, nx = an.nipple_yx
    layer = np.zeros(scene.shape, dtype=np.float32)
    union = np.zeros(scene.shape, dtype=bool)
    allowed = an.breast & ~an.pectoral & (an.rho < 0.96) & ~an.nipple
    for i in range(int(rng.integers(2, 6))):
        rho0 = rng.uniform(0.55, 0.9)
        phi0 = rng.uniform(-1.35, 1.35) if i else rng.uniform(-0.9, 0.9)
        y0, x0 = an.to_xy(rho0, phi0)
        x0 = min(x0, 0.3 * an.a)
        if an.view == "MLO" and an.pectoral_q is not None:
            ph, pw = an.pectoral_size
            y0 = max(y0, ph * (1 - min(x0 / pw, 0.95)) + 3 * k)
        y0 = float(np.clip(y0, 2, height - 3))
        aim_y = ny + rng.uniform(-0.35, 0.35) * an.b_down
        aim_x = nx * rng.uniform(0.6, 0.9)
        heading = float(np.arctan2(aim_y - y0, aim_x - x0))
        length = float(np.hypot(aim_y - y0, aim_x - x0)) * rng.uniform(0.55, 1.0)
        path = random_curve(rng, (y0, x0), heading, length, step=1.5 * k, wiggle=0.07)
        line = draw_polyline(
            np.zeros(scene.shape, dtype=bool), path, 2 if i == 0 and k > 1.5 else 1
        )
        line &= allowed
        if not line.any():
            continue
        amplitude = np.float32(rng.uniform(0.04, 0.075) * (1.3 if i == 0 else 1.0))
        np.maximum(layer, line * amplitude, out=layer)
        union |= line
        scene.vessels.append(path)
    if union.any():
        scene.image += blur(layer, 0.55 * k) * 1.5
        scene.mark("blood vessels", (slice(None), slice(None)), union)


def draw_ligaments(scene: Scene, rng: np.random.Generator) -> None:
    """Draw thin arcs in the subcutaneous fat, bowed towards the skin (Cooper's ligaments)."""
    an = scene.anatomy
    union = np.zeros(scene.shape, dtype=bool)
    t = np.linspace(0.0, 1.0, 32)
    for _ in range(int(rng.integers(5, 11))):
        phi0 = rng.uniform(-1.35, 1.15)
        if abs(phi0 + 0.1) < 0.15:
            phi0 += 0.35
        span = rng.uniform(0.15, 0.35)
        base = rng.uniform(0.78, 0.86)
        rise = rng.uniform(0.04, 0.08)
        arch = np.sin(np.pi * t) ** 0.7  # a rounded arch bowed towards the skin
        ys, xs = an.to_xy_many(base + rise * arch, phi0 + span * t)
        draw_polyline(union, np.stack([ys, xs], axis=1))
    union &= an.breast & ~an.pectoral & (an.rho < 0.97) & ~an.nipple
    if union.any():
        amplitude = np.float32(rng.uniform(0.025, 0.045))
        visible = 1.0 - 0.6 * scene.tissue.soft
        scene.image += blur(union.astype(np.float32), 0.5 * scene.k) * amplitude * 1.5 * visible
        scene.mark("Cooper's ligaments", (slice(None), slice(None)), union)
