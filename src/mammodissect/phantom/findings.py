"""Findings other than masses and calcifications.

Architectural distortion, focal and global asymmetry, skin thickening, nipple retraction,
intramammary and axillary lymph nodes, biopsy clips and implants. Each ``draw_*`` function
draws into a :class:`~mammodissect.phantom.scene.Scene` and returns a
:class:`~mammodissect.phantom.scene.Finding`.
"""

from __future__ import annotations

import numpy as np

from mammodissect.phantom.anatomy import Anatomy
from mammodissect.phantom.raster import (
    Window,
    blur,
    draw_polyline,
    random_curve,
    sample_bilinear,
    sigmoid,
    smoothstep,
)
from mammodissect.phantom.scene import Finding, Scene

__all__ = [
    "draw_asymmetry",
    "draw_biopsy_clip",
    "draw_distortion",
    "draw_implant",
    "draw_lymph_node",
    "draw_nipple_retraction",
    "draw_skin_thickening",
    "implant_region",
]

_FULL = (slice(None), slice(None))


def _extent(mask: np.ndarray, cy: float, cx: float, box: tuple[slice, slice] = _FULL) -> float:
    """Diameter of the disc around ``(cy, cx)`` holding every pixel of a (boxed) mask."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    ys = ys + (box[0].start or 0)
    xs = xs + (box[1].start or 0)
    return 2.0 * float(np.hypot(ys - cy, xs - cx).max()) + 1.0


def draw_distortion(scene: Scene, rng: np.random.Generator) -> Finding:
    """Thin lines radiating from a point, with the tissue around pulled towards it."""
    k = scene.k
    radius = float(rng.uniform(10.0, 17.0) * k)
    cy, cx = scene.place(rng, radius * 0.8, dense=rng.random() < 0.7)
    win = Window(scene.shape, cy, cx, radius * 1.4)
    rr, _ = win.polar()
    # Pull: each pixel shows the tissue from further out along its ray.
    pull = 1.0 + 0.45 * np.exp(-((rr / np.float32(radius * 0.7)) ** 2))
    ys = np.float32(cy) + win.dy * pull
    xs = np.float32(cx) + win.dx * pull
    warped = sample_bilinear(scene.image, ys, xs)
    inside = scene.anatomy.breast[win.box]
    image = scene.image[win.box]
    image[inside] = warped[inside]

    lines = np.zeros(win.shape, dtype=bool)
    count = int(rng.integers(8, 15))
    angles = rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, count, endpoint=False)
    angles += rng.uniform(-0.2, 0.2, count)
    y0, x0 = cy - win.box[0].start, cx - win.box[1].start
    for angle in angles:
        start = rng.uniform(0.05, 0.2) * radius
        length = rng.uniform(0.7, 1.2) * radius
        path = random_curve(
            rng,
            (y0 + start * np.sin(angle), x0 + start * np.cos(angle)),
            float(angle),
            length - start,
            step=1.0,
            wiggle=0.02,
        )
        draw_polyline(lines, path)
    lines &= inside
    strength = np.float32(scene.tissue.gland_contrast * rng.uniform(0.45, 0.65))
    fade = np.clip(1.2 - rr / np.float32(radius * 1.2), 0.2, 1.0)
    image += blur(lines.astype(np.float32), 0.45 * k) * strength * fade * 1.3
    lucent = rng.random() < 0.4
    if lucent:  # radiolucent centre (radial scar)
        image -= np.float32(0.05) * np.exp(-((rr / np.float32(0.22 * radius)) ** 2))
    mask = lines | (rr < 0.15 * radius)
    scene.mark("architectural distortion", win.box, mask)
    return Finding(
        family="architectural_distortion",
        kind="architectural distortion",
        concepts=("architectural distortion",),
        center=(cy, cx),
        extent=_extent(mask & inside, cy, cx, win.box),
        count=count,
        birads=4,
        attrs={"lucent_center": lucent, "size_mm": scene.mm(2 * radius), **scene.location(cy, cx)},
    )


def draw_asymmetry(scene: Scene, rng: np.random.Generator) -> Finding:
    """A focal asymmetry (65 %) or a global asymmetry (35 %)."""
    if rng.random() < 0.65:
        return _focal_asymmetry(scene, rng)
    return _global_asymmetry(scene, rng)


def _focal_asymmetry(scene: Scene, rng: np.random.Generator) -> Finding:
    """Extra fibroglandular density with concave borders and fat in between."""
    k = scene.k
    radius = float(rng.uniform(9.0, 15.0) * k)
    cy, cx = scene.place(rng, radius * 0.9)
    win = Window(scene.shape, cy, cx, radius * 1.3)
    tilt = rng.uniform(0, np.pi)
    squash = rng.uniform(0.55, 0.85)
    u = win.dx * np.cos(tilt) + win.dy * np.sin(tilt)
    v = (-win.dx * np.sin(tilt) + win.dy * np.cos(tilt)) / np.float32(squash)
    shape = np.hypot(u, v) / np.float32(radius)
    fine = scene.tissue.fine[win.box]
    region = (shape < 1.0) & (fine + 1.2 * (1.0 - shape) > 0.1)
    region &= scene.anatomy.breast[win.box]
    if not region.any():
        region = shape < 0.5
    soft = blur(region.astype(np.float32), 1.4 * k)
    scene.image[win.box] += np.float32(scene.tissue.gland_contrast * rng.uniform(0.35, 0.55)) * soft
    concepts = ("asymmetry", "focal asymmetry")
    scene.mark_all(concepts, win.box, region)
    return Finding(
        family="asymmetry",
        kind="focal asymmetry",
        concepts=concepts,
        center=(cy, cx),
        extent=_extent(region, cy, cx, win.box),
        count=1,
        birads=0,
        attrs={"size_mm": scene.mm(2 * radius), **scene.location(cy, cx)},
    )


def _global_asymmetry(scene: Scene, rng: np.random.Generator) -> Finding:
    """Denser tissue over a sector of at least a quadrant of the breast."""
    an = scene.anatomy
    centre = rng.uniform(-0.9, 0.9)
    half = rng.uniform(0.5, 0.75)
    gap = np.abs(an.phi - np.float32(centre))
    weight = smoothstep(half + 0.12, half - 0.12, gap) * smoothstep(0.95, 0.8, an.rho)
    weight = weight * smoothstep(0.08, 0.2, an.rho)
    tissue = ~scene.blocked
    region = tissue & (gap < half) & (an.rho < 0.9) & (an.rho > 0.15)
    boost = np.float32(scene.tissue.gland_contrast * rng.uniform(0.28, 0.4))
    scene.image += boost * weight * (0.55 + 0.45 * scene.tissue.soft) * tissue
    concepts = ("asymmetry", "global asymmetry")
    scene.mark_all(concepts, _FULL, region)
    cy, cx = an.to_xy(0.55, centre)
    return Finding(
        family="asymmetry",
        kind="global asymmetry",
        concepts=concepts,
        center=(cy, cx),
        extent=_extent(region, cy, cx),
        count=1,
        birads=2,
        attrs=scene.location(cy, cx),
    )


def draw_skin_thickening(scene: Scene, rng: np.random.Generator) -> Finding:
    """A thick, bright skin band, focal (60 %) or over the whole outline."""
    an = scene.anatomy
    k = scene.k
    thickness = float(rng.uniform(3.0, 5.5) * k)
    focal = rng.random() < 0.6
    band = an.breast & (an.dist < thickness) & (an.rho > 0.6) & ~an.pectoral
    if focal:
        centre = rng.uniform(-1.1, 1.1)
        band &= np.abs(an.phi - np.float32(centre)) < rng.uniform(0.3, 0.6)
    else:
        centre = 0.0
    weight = np.clip(thickness + 0.5 - an.dist, 0.0, 1.0) * band
    level = np.float32(scene.tissue.fat_level + rng.uniform(0.2, 0.28))
    scene.image[...] = scene.image * (1 - weight) + level * weight
    kind = "focal skin thickening" if focal else "diffuse skin thickening"
    concepts = ("skin thickening", kind)
    scene.mark_all(concepts, _FULL, band)
    cy, cx = an.to_xy(1.0, centre)
    return Finding(
        family="skin_thickening",
        kind=kind,
        concepts=concepts,
        center=(cy, cx),
        extent=_extent(band, cy, cx),
        count=1,
        birads=0,
        attrs={"focal": focal, "thickness_mm": scene.mm(thickness), **scene.location(cy, cx)},
    )


def draw_nipple_retraction(scene: Scene, rng: np.random.Generator) -> Finding:
    """Record the retracted nipple (drawn by the anatomy) and add tethering strands."""
    an = scene.anatomy
    k = scene.k
    ny, nx = an.nipple_yx
    strands = np.zeros(scene.shape, dtype=bool)
    for _ in range(int(rng.integers(2, 5))):
        angle = np.pi + rng.uniform(-0.5, 0.5)
        path = random_curve(rng, (ny, nx), float(angle), rng.uniform(8, 18) * k, wiggle=0.03)
        draw_polyline(strands, path)
    strands &= an.breast & ~an.nipple
    scene.image += blur(strands.astype(np.float32), 0.5 * k) * np.float32(
        scene.tissue.gland_contrast * 0.5
    )
    scene.mark("nipple retraction", _FULL, an.nipple)
    return Finding(
        family="nipple_retraction",
        kind="nipple retraction",
        concepts=("nipple retraction",),
        center=(ny, nx),
        extent=_extent(an.nipple, ny, nx),
        count=1,
        birads=0,
        attrs={"region": "subareolar", "depth": "anterior"},
    )


def _node(
    scene: Scene,
    rng: np.random.Generator,
    cy: float,
    cx: float,
    radius: float,
    elongation: float,
    hilum: float,
    contrast: float,
) -> tuple[Window, np.ndarray]:
    """Draw an oval node with a fatty hilum of relative size ``hilum`` (0: none)."""
    win = Window(scene.shape, cy, cx, radius * elongation + 2)
    tilt = rng.uniform(0, np.pi)
    u = win.dx * np.cos(tilt) + win.dy * np.sin(tilt)
    v = -win.dx * np.sin(tilt) + win.dy * np.cos(tilt)
    shape = np.hypot(u / np.float32(elongation), v) / np.float32(radius)
    body = shape < 1.0
    profile = sigmoid((1.0 - shape) * np.float32(radius / 0.7))
    image = scene.image[win.box]
    image += np.float32(contrast) * profile * (0.9 + 0.1 * np.sqrt(np.clip(1 - shape, 0, 1)))
    if hilum > 0:  # a fatty notch on one flank (reniform node)
        side = rng.choice([-1.0, 1.0])
        hy = v - np.float32(side * radius * (1.0 - hilum * 0.5))
        fat = sigmoid((hilum * radius - np.hypot(u / np.float32(elongation), hy)) / np.float32(0.6))
        image -= np.float32(contrast * 0.8) * fat * body
    body &= scene.anatomy.breast[win.box]
    return win, body


def draw_lymph_node(scene: Scene, rng: np.random.Generator) -> Finding:
    """An intramammary node, or on MLO often an axillary one (normal or enlarged)."""
    an = scene.anatomy
    k = scene.k
    gland = scene.tissue.gland_contrast
    kind = "intramammary lymph node"
    if an.view == "MLO":
        kind = str(
            rng.choice(
                ["intramammary lymph node", "normal axillary lymph node", "axillary adenopathy"],
                p=[0.35, 0.45, 0.2],
            )
        )
    if kind != "intramammary lymph node":
        spot = _axillary_spot(an, rng, k)
        if spot is None:
            kind = "intramammary lymph node"
    if kind == "intramammary lymph node":
        radius = float(rng.uniform(3.5, 5.5) * k)
        elongation = float(rng.uniform(1.3, 1.6))
        ny = an.nipple_yx[0]
        cy, cx = scene.place(
            rng, radius * elongation + 2, where=lambda y, x: y < ny and an.rho[int(y), int(x)] > 0.5
        )
        win, body = _node(scene, rng, cy, cx, radius, elongation, 0.4, gland * 1.05)
        birads = 2
    else:
        assert spot is not None
        cy, cx, room = spot
        if kind == "normal axillary lymph node":
            radius = float(min(rng.uniform(4.0, 6.5) * k, room / 1.5))
            win, body = _node(scene, rng, cy, cx, radius, rng.uniform(1.3, 1.6), 0.5, gland * 1.1)
            birads = 2
        else:
            radius = float(min(rng.uniform(6.0, 9.0) * k, room / 1.1))
            win, body = _node(scene, rng, cy, cx, radius, rng.uniform(1.0, 1.12), 0.0, gland * 1.3)
            birads = 4
        scene.occupied.append((cy, cx, radius * 1.6))
    scene.mark(kind, win.box, body)
    return Finding(
        family="lymph_node",
        kind=kind,
        concepts=(kind,),
        center=(cy, cx),
        extent=_extent(body, cy, cx, win.box),
        count=1,
        birads=birads,
        attrs={"size_mm": scene.mm(2 * radius), **scene.location(cy, cx)},
    )


def _axillary_spot(
    an: Anatomy, rng: np.random.Generator, k: float
) -> tuple[float, float, float] | None:
    """A point in the MLO axillary tail, just in front of the pectoral edge, and its room."""
    height = an.shape[0]
    ph, pw = an.pectoral_size
    for _ in range(30):
        y = rng.uniform(0.05, 0.22) * height
        edge_x = pw * max(0.0, 1.0 - y / ph) if ph > 0 else 0.0
        x = edge_x + rng.uniform(-0.1, 0.6) * (0.4 * an.a)
        iy, ix = int(y), int(x)
        if not (0 <= iy < height and 0 <= ix < an.shape[1]) or not an.breast[iy, ix]:
            continue
        room = float(an.dist[iy, ix])
        if room >= 6.0 * k:
            return float(y), float(x), room
    return None


def draw_biopsy_clip(
    scene: Scene, rng: np.random.Generator, target: Finding | None = None
) -> Finding:
    """A very bright small metal marker: a ribbon, a coil or a cross.

    With a ``target`` mass the clip sits inside it; a suspicious mass with a clip is a known
    biopsy-proven malignancy (BI-RADS 6).
    """
    k = scene.k
    if target is not None:
        cy = target.center[0] + rng.uniform(-1.5, 1.5) * k
        cx = target.center[1] + rng.uniform(-1.5, 1.5) * k
    else:
        cy, cx = scene.place(rng, 5 * k, claim=False)
    win = Window(scene.shape, cy, cx, 5 * k)
    style = str(rng.choice(["ribbon", "coil", "cross"]))
    angle = rng.uniform(0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    u = win.dx * c + win.dy * s
    v = -win.dx * s + win.dy * c
    if style == "ribbon":
        mask = (np.abs(u) < 2.6 * k) & (np.abs(v) < 0.8 * max(k, 1.0))
    elif style == "coil":
        r = np.hypot(u, v)
        mask = (r > 1.0 * k) & (r < 2.4 * k)
    else:
        mask = ((np.abs(u) < 2.4 * k) & (np.abs(v) < 0.6 * max(k, 1.0))) | (
            (np.abs(v) < 2.4 * k) & (np.abs(u) < 0.6 * max(k, 1.0))
        )
    mask &= scene.anatomy.breast[win.box]
    if not mask.any():
        mask[int(cy) - win.box[0].start, int(cx) - win.box[1].start] = True
    image = scene.image[win.box]
    halo = blur(mask.astype(np.float32), 0.7 * k)
    np.maximum(image, np.float32(0.6) * halo + image * (1 - halo), out=image)
    image[mask] = np.float32(rng.uniform(1.3, 1.6))  # metal: white after the display curve
    scene.mark("biopsy clip", win.box, mask)
    proven = target is not None and target.birads >= 4
    return Finding(
        family="biopsy_clip",
        kind="biopsy clip",
        concepts=("biopsy clip",),
        center=(float(cy), float(cx)),
        extent=_extent(mask, cy, cx, win.box),
        count=1,
        birads=6 if proven else 2,
        attrs={"style": style, "in_mass": target is not None, **scene.location(cy, cx)},
    )


def implant_region(rng: np.random.Generator, anatomy: Anatomy) -> tuple[np.ndarray, str]:
    """The region an implant fills (a dome on the chest wall) and its type."""
    height, width = anatomy.shape
    kind = "silicone" if rng.random() < 0.6 else "saline"
    ax = anatomy.a * rng.uniform(0.42, 0.58)
    ay = min(anatomy.b_up, anatomy.b_down) * rng.uniform(0.6, 0.8)
    cy = anatomy.cy if anatomy.view == "CC" else anatomy.nipple_yx[0] - 0.06 * height
    cx = -anatomy.a * rng.uniform(0.0, 0.08)
    ys = np.arange(height, dtype=np.float32)[:, None] - np.float32(cy)
    xs = np.arange(width, dtype=np.float32)[None, :] - np.float32(cx)
    shape = (np.abs(xs / np.float32(ax)) ** 2.3 + np.abs(ys / np.float32(ay)) ** 2.3) < 1.0
    region = shape & anatomy.breast & (anatomy.rho < 0.9) & ~anatomy.nipple
    return region, kind


def draw_implant(scene: Scene, rng: np.random.Generator, region: np.ndarray, kind: str) -> Finding:
    """Paint the implant opaque (silicone brighter than saline) and block it for lesions."""
    k = scene.k
    level = rng.uniform(0.9, 0.96) if kind == "silicone" else rng.uniform(0.78, 0.85)
    soft = blur(region.astype(np.float32), 0.6 * k)
    fill = np.float32(level) + 0.006 * scene.tissue.fine
    ys, xs = np.nonzero(region)
    cy, cx = float(ys.mean()), float(xs.mean())
    if kind == "saline":  # the fill valve: a faint ring
        r = np.hypot(np.arange(scene.shape[0])[:, None] - cy, np.arange(scene.shape[1]) - cx)
        fill = fill + np.float32(0.05) * (np.abs(r - 3.0 * k) < 0.8 * k)
    scene.image[...] = scene.image * (1 - soft) + fill * soft
    for concept in ("blood vessels", "Cooper's ligaments"):
        if concept in scene.masks:
            scene.masks[concept] &= ~region
    scene.block(region)
    concepts = ("breast implant", f"{kind} implant")
    scene.mark_all(concepts, _FULL, region)
    position = "retropectoral" if rng.random() < 0.4 else "subglandular"
    return Finding(
        family="implant",
        kind="implant",
        concepts=concepts,
        center=(cy, cx),
        extent=_extent(region, cy, cx),
        count=1,
        birads=2,
        attrs={"type": kind, "position": position, **scene.location(cy, cx)},
    )
