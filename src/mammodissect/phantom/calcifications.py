"""Calcifications by BI-RADS morphology and distribution.

Each calcification is a small *stamp* (pixel offsets and brightness): a single pixel
(punctate), a small plus or square (round), a faint speck (amorphous), a random polyomino
(fine pleomorphic), a thin possibly branching line pointing to the nipple (fine linear
branching), a bright clump (coarse, popcorn-like) or a thin ring (rim). A distribution places
the stamps: in a disc (grouped), along a line towards the nipple (linear), along the rays of a
wedge whose apex points to the nipple (segmental), in a large ellipse (regional) or anywhere
(diffuse). Stamps are kept at least two pixels apart, so each one is its own connected
component and the count in the record is the count in the mask. Vascular calcifications are
dashed parallel tracks along a drawn vessel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mammodissect.phantom.raster import densify, random_curve
from mammodissect.phantom.scene import Finding, Scene
from mammodissect.phantom.vocabulary import CALC_DISTRIBUTION, CALC_MORPHOLOGY

__all__ = ["calcification_birads", "draw_calcifications"]

#: Distributions each morphology is drawn with, and their weights (None: no distribution).
_DISTRIBUTIONS: dict[str, tuple[tuple[str | None, ...], tuple[float, ...]]] = {
    "punctate": (("grouped", "regional", "diffuse"), (0.35, 0.3, 0.35)),
    "round": (("grouped", "regional", "diffuse"), (0.3, 0.3, 0.4)),
    "coarse": ((None,), (1.0,)),
    "rim": ((None,), (1.0,)),
    "vascular": ((None,), (1.0,)),
    "amorphous": (("grouped", "regional", "linear", "segmental"), (0.5, 0.2, 0.1, 0.2)),
    "fine pleomorphic": (("grouped", "linear", "segmental", "regional"), (0.5, 0.2, 0.2, 0.1)),
    "fine linear branching": (("linear", "segmental"), (0.5, 0.5)),
}
_BENIGN = ("punctate", "round", "coarse", "rim", "vascular")
_BENIGN_P = (0.24, 0.2, 0.2, 0.14, 0.22)
_SUSPICIOUS = ("amorphous", "fine pleomorphic", "fine linear branching")
_SUSPICIOUS_P = (0.3, 0.4, 0.3)


def calcification_birads(morphology: str, distribution: str | None) -> int:
    """BI-RADS category of a set of calcifications."""
    if morphology == "fine linear branching":
        return 5
    if morphology == "fine pleomorphic":
        return 5 if distribution in ("linear", "segmental") else 4
    if morphology == "amorphous":
        return 4
    if morphology == "punctate" and distribution == "grouped":
        return 3
    return 2


@dataclass(frozen=True)
class _Stamp:
    """One calcification: integer pixel offsets from its centre and their brightness."""

    offsets: np.ndarray  # (n, 2) int rows, cols
    amplitude: np.ndarray  # (n,) float32

    @property
    def radius(self) -> int:
        """Chebyshev radius of the stamp."""
        return int(np.abs(self.offsets).max()) if len(self.offsets) else 0

    @property
    def reach(self) -> float:
        """Euclidean radius of the stamp."""
        return float(np.hypot(self.offsets[:, 0], self.offsets[:, 1]).max())


def _stamp(rng: np.random.Generator, morphology: str, k: float, toward: float) -> _Stamp:
    """Draw the stamp of one calcification; ``toward`` is the angle to the nipple."""
    if morphology == "punctate":
        return _Stamp(np.zeros((1, 2), int), np.array([rng.uniform(0.4, 0.55)], np.float32))
    if morphology == "round":
        if rng.random() < 0.5:
            offsets = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
        else:
            offsets = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]])
        peak = rng.uniform(0.5, 0.65)
        amplitude = np.full(len(offsets), peak * 0.85, np.float32)
        amplitude[0] = peak
        return _Stamp(offsets, amplitude)
    if morphology == "amorphous":
        offsets = np.array([[0, 0]] if rng.random() < 0.6 else [[0, 0], [0, 1]])
        return _Stamp(offsets, rng.uniform(0.16, 0.24, len(offsets)).astype(np.float32))
    if morphology == "fine pleomorphic":  # 1-4 pixels in a 3 x 3 box, edge-connected
        cells = [(0, 0)]
        for _ in range(int(rng.integers(0, 4))):
            y, x = cells[int(rng.integers(len(cells)))]
            dy, dx = ((0, 1), (1, 0), (0, -1), (-1, 0))[int(rng.integers(4))]
            if (y + dy, x + dx) not in cells and max(abs(y + dy), abs(x + dx)) <= 1:
                cells.append((y + dy, x + dx))
        return _Stamp(np.array(cells), rng.uniform(0.4, 0.6, len(cells)).astype(np.float32))
    if morphology == "fine linear branching":
        angle = toward + rng.uniform(-0.5, 0.5)
        length = rng.uniform(3.0, 7.0) * k
        points = [np.array([[0.0, 0.0], [np.sin(angle) * length, np.cos(angle) * length]])]
        if rng.random() < 0.45:
            mid = points[0][1] * rng.uniform(0.3, 0.7)
            branch = angle + rng.choice([-1, 1]) * rng.uniform(0.5, 0.9)
            blen = rng.uniform(2.0, 4.0) * k
            tip = mid + np.array([np.sin(branch), np.cos(branch)]) * blen
            points.append(np.array([mid, tip]))
        pixels = np.concatenate([np.rint(densify(p)).astype(int) for p in points])
        pixels -= np.rint(points[0][1] / 2).astype(int)
        pixels = np.unique(pixels, axis=0)
        return _Stamp(pixels, rng.uniform(0.4, 0.55, len(pixels)).astype(np.float32))
    if morphology == "coarse":
        size = rng.uniform(2.0, 3.5) * k
        grid = np.arange(-int(np.ceil(size)) - 2, int(np.ceil(size)) + 3)
        yy, xx = np.meshgrid(grid, grid, indexing="ij")
        blob = np.zeros(yy.shape, dtype=bool)
        for _ in range(int(rng.integers(3, 7))):
            cy, cx = rng.uniform(-0.6, 0.6, 2) * size
            blob |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(0.9, 1.9) ** 2 * k * k
        blob[len(grid) // 2, len(grid) // 2] = True
        offsets = np.stack([yy[blob], xx[blob]], axis=1)
        return _Stamp(offsets, rng.uniform(0.58, 0.7, len(offsets)).astype(np.float32))
    if morphology == "rim":
        radius = rng.uniform(2.5, 5.0) * k
        grid = np.arange(-int(np.ceil(radius)) - 1, int(np.ceil(radius)) + 2)
        yy, xx = np.meshgrid(grid, grid, indexing="ij")
        ring = np.abs(np.hypot(yy, xx) - radius) < 0.6
        offsets = np.stack([yy[ring], xx[ring]], axis=1)
        return _Stamp(offsets, rng.uniform(0.48, 0.6, len(offsets)).astype(np.float32))
    raise ValueError(f"unknown calcification morphology {morphology!r}")


#: Typical Chebyshev radius of a stamp, for sizing a group.
_TYPICAL_RADIUS = {
    "punctate": 0,
    "round": 1,
    "amorphous": 1,
    "fine pleomorphic": 1,
    "fine linear branching": 4,
}

#: ``sample(rng, n, reach)`` -> n candidate centres (rows, columns) for a stamp of ``reach``.
_Sampler = Callable[[np.random.Generator, int, float], tuple[np.ndarray, np.ndarray]]


def _scatter(
    scene: Scene, rng: np.random.Generator, stamps: list[_Stamp], sample: _Sampler
) -> list[tuple[int, int, _Stamp]]:
    """Place stamps at candidate centres from ``sample``, two or more pixels apart."""
    an = scene.anatomy
    height, width = scene.shape
    placed: list[tuple[int, int, _Stamp]] = []
    ys_done = np.empty(0, dtype=int)
    xs_done = np.empty(0, dtype=int)
    radii = np.empty(0, dtype=int)
    for stamp in stamps:
        r = stamp.radius
        ys, xs = sample(rng, 40, stamp.reach)
        ys = np.rint(ys).astype(int)
        xs = np.rint(xs).astype(int)
        for y, x in zip(ys, xs, strict=True):
            if not (r <= y < height - r and r <= x < width - r):
                continue
            if scene.blocked[y, x] or an.dist[y, x] < r + 2.0:
                continue
            gap = np.maximum(np.abs(ys_done - y), np.abs(xs_done - x)) - radii - r
            if gap.size and gap.min() < 2:
                continue
            placed.append((int(y), int(x), stamp))
            ys_done = np.append(ys_done, y)
            xs_done = np.append(xs_done, x)
            radii = np.append(radii, r)
            break
    return placed


def _in_disc(cy: float, cx: float, radius: float) -> _Sampler:
    def sample(rng: np.random.Generator, n: int, r: float) -> tuple[np.ndarray, np.ndarray]:
        # Centres within radius - r - 1 keep every pixel (rounding moves <= 0.71) in the disc.
        reach = max(radius - r - 1.0, 0.0)
        t = np.sqrt(rng.random(n)) * reach
        a = rng.uniform(0, 2 * np.pi, n)
        return cy + t * np.sin(a), cx + t * np.cos(a)

    return sample


def _toward_nipple(scene: Scene, y: float, x: float) -> float:
    ny, nx = scene.anatomy.nipple_yx
    return float(np.arctan2(ny - y, nx - x))


def _distribution_sampler(
    scene: Scene, rng: np.random.Generator, distribution: str, stamp_radius: int, n: int
) -> tuple[_Sampler, tuple[float, float], float | None, int]:
    """A candidate sampler for ``distribution``, its nominal centre, its stated extent (for a
    group) and how many calcifications to try to place."""
    k = scene.k
    mm = scene.anatomy.mm_per_px
    if distribution == "grouped":
        # Room for n stamps at a random-packing density of about 0.35 of their footprints,
        # within the BI-RADS 2 cm.
        cell = 2 * stamp_radius + 2
        needed = 2 * (np.sqrt(n * cell * cell / (0.35 * np.pi)) + stamp_radius + 1.5)
        extent = float(min(max(rng.uniform(6.0, 12.0) / mm, needed), 20.0 / mm))
        room = max(extent / 2 - stamp_radius - 1.5, 1.0)
        n = max(3, min(n, int(0.35 * np.pi * room * room / (cell * cell))))
        cy, cx = scene.place(rng, extent / 2 + 1)
        return _in_disc(cy, cx, extent / 2), (cy, cx), extent, n
    if distribution == "linear":
        length = rng.uniform(14.0, 26.0) / mm
        cy, cx = scene.place(rng, length / 2 + 2)
        angle = _toward_nipple(scene, cy, cx) + rng.uniform(-0.25, 0.25)
        dy, dx = np.sin(angle), np.cos(angle)

        def linear(rng: np.random.Generator, n: int, r: float) -> tuple[np.ndarray, np.ndarray]:
            t = rng.uniform(-0.5, 0.5, n) * length
            off = rng.normal(0.0, 0.6 * k, n)
            return cy + t * dy - off * dx, cx + t * dx + off * dy

        return linear, (cy, cx), None, n
    if distribution == "segmental":
        length = rng.uniform(26.0, 42.0) / mm
        cy, cx = scene.place(rng, length / 2 + 2)
        axis = _toward_nipple(scene, cy, cx)
        apex_y, apex_x = cy + np.sin(axis) * length / 2, cx + np.cos(axis) * length / 2
        back = axis + np.pi
        half = rng.uniform(0.22, 0.42)
        rays = back + rng.uniform(-half, half, int(rng.integers(3, 6)))

        def segmental(rng: np.random.Generator, n: int, r: float) -> tuple[np.ndarray, np.ndarray]:
            ray = rays[rng.integers(0, len(rays), n)]
            t = rng.uniform(0.1, 1.0, n) * length
            off = rng.normal(0.0, 0.7 * k, n)
            ys = apex_y + t * np.sin(ray) - off * np.cos(ray)
            xs = apex_x + t * np.cos(ray) + off * np.sin(ray)
            return ys, xs

        return segmental, (cy, cx), None, n
    if distribution == "regional":
        radius = rng.uniform(16.0, 26.0) / mm
        cy, cx = scene.place(rng, radius * 0.7)
        squash = rng.uniform(0.55, 0.9)
        tilt = rng.uniform(0, np.pi)

        def regional(rng: np.random.Generator, n: int, r: float) -> tuple[np.ndarray, np.ndarray]:
            t = np.sqrt(rng.random(n)) * radius
            a = rng.uniform(0, 2 * np.pi, n)
            u, v = t * np.cos(a), t * np.sin(a) * squash
            return cy + u * np.sin(tilt) + v * np.cos(tilt), cx + u * np.cos(tilt) - v * np.sin(
                tilt
            )

        return regional, (cy, cx), None, n
    # diffuse: anywhere in the breast tissue
    ok = np.flatnonzero(~scene.blocked & (scene.anatomy.dist > 3.0 * k))
    width = scene.shape[1]

    def diffuse(rng: np.random.Generator, n: int, r: float) -> tuple[np.ndarray, np.ndarray]:
        picks = ok[rng.integers(0, ok.size, n)]
        return (picks // width).astype(float), (picks % width).astype(float)

    ny, nx = scene.anatomy.nipple_yx
    return diffuse, (ny, nx * 0.5), None, n


def _count(distribution: str | None, morphology: str, rng: np.random.Generator) -> int:
    if morphology == "coarse":
        return int(rng.integers(1, 4))
    if morphology == "rim":
        return int(rng.integers(1, 3))
    low, high = {
        "grouped": (5, 12),
        "linear": (6, 12),
        "segmental": (12, 24),
        "regional": (12, 24),
        "diffuse": (20, 40),
    }[distribution or "grouped"]
    return int(rng.integers(low, high + 1))


def _render(
    scene: Scene, placed: list[tuple[int, int, _Stamp]], concepts: tuple[str, ...]
) -> np.ndarray:
    """Add the stamps' brightness to the image and mark their pixels; return the mask."""
    mask = np.zeros(scene.shape, dtype=bool)
    for y, x, stamp in placed:
        ys = y + stamp.offsets[:, 0]
        xs = x + stamp.offsets[:, 1]
        scene.image[ys, xs] += stamp.amplitude
        mask[ys, xs] = True
    mask &= scene.anatomy.breast
    scene.mark_all(concepts, (slice(None), slice(None)), mask)
    return mask


def _vascular(scene: Scene, rng: np.random.Generator, concepts: tuple[str, ...]) -> Finding:
    """Dashed parallel tracks along a vessel."""
    k = scene.k
    an = scene.anatomy
    path = max(scene.vessels, key=len) if scene.vessels else None
    if path is None or len(path) < 12:
        cy, cx = scene.place(rng, 12 * k, claim=False)
        path = random_curve(rng, (cy, cx), _toward_nipple(scene, cy, cx), 30 * k, step=1.5 * k)
    n = len(path)
    take = int(min(n, max(10, rng.uniform(0.3, 0.7) * n)))
    start = int(rng.integers(0, n - take + 1))
    segment = densify(path[start : start + take], step=0.5)
    tangent = np.gradient(segment, axis=0)
    tangent /= np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-6)[:, None]
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    mask = np.zeros(scene.shape, dtype=bool)
    count = 0
    separation = rng.uniform(1.2, 1.8) * k
    for side in (-1.0, 1.0):
        track = segment + side * separation * normal
        i = int(rng.integers(0, 6))
        while i < len(track) - 2:
            dash = int(rng.integers(6, 18))
            piece = track[i : i + dash]
            ys = np.rint(piece[:, 0]).astype(int)
            xs = np.rint(piece[:, 1]).astype(int)
            keep = (ys >= 0) & (ys < scene.shape[0]) & (xs >= 0) & (xs < scene.shape[1])
            ys, xs = ys[keep], xs[keep]
            inside = an.breast[ys, xs] & ~an.pectoral[ys, xs] & ~scene.blocked[ys, xs]
            if inside.any():
                mask[ys[inside], xs[inside]] = True
                count += 1
            i += dash + int(rng.integers(3, 9))
    if not mask.any():  # the vessel ran out of free tissue: fall back to a short track
        cy, cx = scene.place(rng, 4 * k, claim=False)
        mask[int(cy), int(cx) - 2 : int(cx) + 3] = True
        count = 1
    scene.image[mask] += np.float32(rng.uniform(0.4, 0.5))
    scene.mark_all(concepts, (slice(None), slice(None)), mask)
    ys, xs = np.nonzero(mask)
    cy, cx = float(ys.mean()), float(xs.mean())
    extent = 2.0 * float(np.hypot(ys - cy, xs - cx).max()) + 1.0
    return Finding(
        family="calcification",
        kind="calcifications",
        concepts=concepts,
        center=(cy, cx),
        extent=extent,
        count=count,
        birads=2,
        attrs={"morphology": "vascular", "distribution": None, **scene.location(cy, cx)},
    )


def _draw_set(
    scene: Scene, rng: np.random.Generator, morphology: str, distribution: str | None
) -> Finding:
    """Draw one set of calcifications of one morphology and distribution."""
    concept, suspicious = CALC_MORPHOLOGY[morphology]
    general = "suspicious calcifications" if suspicious else "typically benign calcifications"
    concepts: tuple[str, ...] = ("calcifications", general, concept)
    if distribution is not None:
        concepts += (CALC_DISTRIBUTION[distribution],)
    if morphology == "vascular":
        return _vascular(scene, rng, concepts)
    k = scene.k
    n = _count(distribution, morphology, rng)
    if distribution is None:  # a few large benign calcifications, each on its own
        stamps = [_stamp(rng, morphology, k, 0.0) for _ in range(n)]
        spots = [scene.place(rng, s.reach + 4) for s in stamps]
        placed = [(int(y), int(x), s) for (y, x), s in zip(spots, stamps, strict=True)]
        center, extent = None, None
    else:
        radius = _TYPICAL_RADIUS[morphology]
        sample, center, extent, n = _distribution_sampler(scene, rng, distribution, radius, n)
        toward = _toward_nipple(scene, *center)
        stamps = [_stamp(rng, morphology, k, toward) for _ in range(n)]
        placed = _scatter(scene, rng, stamps, sample)
        if not placed:  # nowhere to go: put one at the centre
            placed = [(int(center[0]), int(center[1]), stamps[0])]
    mask = _render(scene, placed, concepts)
    ys, xs = np.nonzero(mask)
    if extent is None or center is None:
        cy, cx = float(ys.mean()), float(xs.mean())
        extent = 2.0 * float(np.hypot(ys - cy, xs - cx).max()) + 1.0
    else:
        cy, cx = center
    return Finding(
        family="suspicious_calcification" if suspicious else "calcification",
        kind="calcifications",
        concepts=concepts,
        center=(float(cy), float(cx)),
        extent=float(extent),
        count=len(placed),
        birads=calcification_birads(morphology, distribution),
        attrs={
            "morphology": morphology,
            "distribution": distribution,
            "extent_mm": scene.mm(extent),
            **scene.location(cy, cx),
        },
    )


def _pick(
    rng: np.random.Generator,
    options: tuple[str, ...],
    weights: tuple[float, ...],
    used_distributions: set[str],
) -> tuple[str, str | None]:
    """A morphology and a distribution not yet used in this image."""
    morphology = options[int(rng.choice(len(options), p=np.asarray(weights) / sum(weights)))]
    choices, p = _DISTRIBUTIONS[morphology]
    free = [(c, w) for c, w in zip(choices, p, strict=True) if c not in used_distributions]
    if not free:
        return "vascular", None
    names = [c for c, _ in free]
    w = np.array([w for _, w in free])
    return morphology, names[int(rng.choice(len(names), p=w / w.sum()))]


def draw_calcifications(
    scene: Scene, rng: np.random.Generator, *, suspicious: bool
) -> list[Finding]:
    """Draw the calcifications of one image: a suspicious set (when ``suspicious``) and/or
    one or two benign sets; each morphology and distribution appears at most once."""
    plans: list[tuple[str, str | None]] = []
    used: set[str] = set()
    morphologies: set[str] = set()
    if suspicious:
        plans.append(_pick(rng, _SUSPICIOUS, _SUSPICIOUS_P, used))
        n_benign = 1 if rng.random() < 0.3 else 0
    else:
        n_benign = 2 if rng.random() < 0.2 else 1
    for distribution in (d for _, d in plans):
        if distribution:
            used.add(distribution)
    morphologies.update(m for m, _ in plans)
    for _ in range(n_benign):
        morphology, distribution = _pick(rng, _BENIGN, _BENIGN_P, used)
        if morphology in morphologies:
            continue
        plans.append((morphology, distribution))
        morphologies.add(morphology)
        if distribution:
            used.add(distribution)
    return [_draw_set(scene, rng, m, d) for m, d in plans]
