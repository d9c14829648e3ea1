"""Masses by BI-RADS shape, margin and density.

The mass body is a star-shaped region ``r < R(theta)`` around its centre: an ellipse for oval
and round masses, an ellipse with large random low-order harmonics for irregular ones, plus
short high-order undulations for a microlobulated margin. The margin sets how the edge is
drawn: sharp (circumscribed), blurred (indistinct), partly hidden under a patch of dense tissue
(obscured), or with thin radiating spicules (spiculated). Density sets the brightness relative
to fibroglandular tissue; a fat-containing mass is radiolucent inside a thin capsule.
"""

from __future__ import annotations

import numpy as np

from mammodissect.phantom.raster import Window, sigmoid
from mammodissect.phantom.scene import Finding, Scene
from mammodissect.phantom.vocabulary import MASS_DENSITY, MASS_MARGIN, MASS_SHAPE

__all__ = ["draw_mass", "mass_birads"]

MARGINS = ("circumscribed", "obscured", "microlobulated", "indistinct", "spiculated")
_MARGIN_P = (0.3, 0.13, 0.15, 0.18, 0.24)


def mass_birads(shape: str, margin: str, density: str) -> int:
    """BI-RADS category of a mass from its descriptors."""
    if density == "fat-containing":
        return 2
    if margin == "spiculated":
        return 5
    if shape == "irregular" or margin in ("indistinct", "microlobulated"):
        return 4
    if margin == "obscured":
        return 0
    return 3


def _choose(rng: np.random.Generator, options: tuple[str, ...], p: tuple[float, ...]) -> str:
    return options[int(rng.choice(len(options), p=np.asarray(p) / sum(p)))]


def draw_mass(scene: Scene, rng: np.random.Generator) -> Finding:
    """Draw one mass with random shape, margin and density; return its record."""
    k = scene.k
    margin = _choose(rng, MARGINS, _MARGIN_P)
    if margin == "spiculated":
        shape = _choose(rng, ("irregular", "oval", "round"), (0.75, 0.1, 0.15))
    elif margin == "circumscribed":
        shape = _choose(rng, ("oval", "round", "irregular"), (0.55, 0.38, 0.07))
    else:
        shape = _choose(rng, ("oval", "round", "irregular"), (0.38, 0.24, 0.38))
    if margin == "circumscribed" and rng.random() < 0.45:
        density = "fat-containing"
    else:
        density = _choose(rng, ("high", "equal", "low"), (0.38, 0.42, 0.2))

    r0 = float(rng.uniform(5.0, 12.0) * k)
    elongation = {"oval": rng.uniform(1.3, 1.75), "round": rng.uniform(1.0, 1.07)}.get(
        shape, rng.uniform(1.0, 1.35)
    )
    spicule_length = float(rng.uniform(1.0, 2.0) * r0) if margin == "spiculated" else 0.0
    reach = r0 * np.sqrt(elongation) * 1.45 + spicule_length + 3
    cy, cx = scene.place(
        rng, r0 * np.sqrt(elongation) * 1.3 + 2, dense=margin == "obscured" or rng.random() < 0.5
    )
    win = Window(scene.shape, cy, cx, reach)
    rr, theta = win.polar()

    # Boundary radius R(theta).
    tilt = rng.uniform(0, np.pi)
    c, s = np.cos(theta - tilt), np.sin(theta - tilt)
    boundary = r0 / np.sqrt(c * c / elongation + s * s * elongation)
    if shape == "irregular":
        wobble = np.zeros_like(theta)
        for order in range(2, 7):
            wobble += rng.uniform(0.05, 0.13) * np.cos(order * theta + rng.uniform(0, 2 * np.pi))
        boundary = boundary * np.clip(1.0 + wobble, 0.55, None)
    if margin == "microlobulated":
        lobes = int(rng.integers(9, 15))
        boundary = boundary * (1.0 + 0.08 * np.cos(lobes * theta + rng.uniform(0, 2 * np.pi)))
    boundary = boundary.astype(np.float32)

    softness = {"indistinct": 2.4 * k, "spiculated": 0.9, "obscured": 0.8}.get(margin, 0.55)
    body = rr < boundary
    inside = np.sqrt(np.clip(1.0 - (rr / np.maximum(boundary, 1e-3)) ** 2, 0.0, 1.0))
    profile = sigmoid((boundary - rr) / np.float32(softness)) * (0.72 + 0.28 * inside)

    fat = scene.tissue.fat_level
    gland = scene.tissue.gland_contrast
    image = scene.image[win.box]
    fine = scene.tissue.fine[win.box]
    if density == "fat-containing":
        lucent = fat * rng.uniform(0.85, 0.95)
        capsule = np.exp(-(((rr - boundary) / np.float32(0.7 * max(k, 1.0))) ** 2))
        image[...] = image * (1 - profile) + (lucent + 0.015 * fine) * profile
        image += np.float32(rng.uniform(0.12, 0.18)) * capsule
    else:
        contrast = gland * {"high": rng.uniform(0.95, 1.15), "equal": rng.uniform(0.72, 0.88)}.get(
            density, rng.uniform(0.42, 0.55)
        )
        image += np.float32(contrast) * profile * (1.0 + 0.06 * fine)

    count = 0
    spicules = np.zeros(win.shape, dtype=bool)
    if margin == "spiculated":
        count = int(rng.integers(9, 18))
        angles = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, count, endpoint=False)
        angles += rng.uniform(-0.15, 0.15, count)
        layer = np.zeros(win.shape, dtype=np.float32)
        for angle in angles:
            length = spicule_length * rng.uniform(0.55, 1.0)
            along = rr * np.cos(theta - angle)
            across = np.abs(rr * np.sin(theta - angle))
            start = float(r0 * 0.5)
            fade = np.clip(1.0 - (along - start) / (length + r0 * 0.5), 0.0, 1.0)
            half_width = (0.35 + rng.uniform(0.5, 0.9) * k * fade) * (along > start)
            line = (across < np.maximum(half_width, 0.5)) & (along > start) & (fade > 0)
            spicules |= line & ~body
            strength = np.clip(half_width + 0.5 - across, 0.0, 1.0) * (0.4 + 0.6 * fade)
            np.maximum(layer, strength, out=layer)
        image += np.float32(gland * rng.uniform(0.55, 0.8)) * layer * (~body)

    if margin == "obscured":
        angle = rng.uniform(0, 2 * np.pi)
        oy, ox = np.sin(angle) * r0 * 1.05, np.cos(angle) * r0 * 1.05
        blob = np.exp(-((win.dy - oy) ** 2 + (win.dx - ox) ** 2) / np.float32((0.75 * r0) ** 2))
        image += np.float32(gland * rng.uniform(0.75, 1.0)) * blob * (0.8 + 0.2 * fine)

    shape_concept = MASS_SHAPE[shape]
    margin_concept = MASS_MARGIN[margin]
    density_concept = MASS_DENSITY[density]
    scene.mark_all(("mass", shape_concept, density_concept), win.box, body)
    scene.mark(margin_concept, win.box, body | spicules)
    drawn = (body | spicules) & scene.anatomy.breast[win.box]
    extent = 2.0 * float(rr[drawn].max()) + 1.0 if drawn.any() else 2.0 * r0
    diameter = 2.0 * r0 * np.sqrt(elongation) if shape == "oval" else 2.0 * r0
    return Finding(
        family="mass",
        kind="mass",
        concepts=("mass", shape_concept, margin_concept, density_concept),
        center=(cy, cx),
        extent=extent,
        count=count,
        birads=mass_birads(shape, margin, density),
        attrs={
            "shape": shape,
            "margin": margin,
            "density": density,
            "size_mm": scene.mm(diameter),
            **scene.location(cy, cx),
        },
    )
