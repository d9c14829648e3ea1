"""The canvas findings are drawn on, and the record each drawn finding leaves.

A :class:`Scene` holds one breast's anatomy, its image (float32, canonical frame), the masks
drawn so far (concept -> full-size bool) and where lesions already sit, and places new ones in
free breast tissue. A :class:`Finding` records what was drawn, in the words the report uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mammodissect.phantom.anatomy import Anatomy
from mammodissect.phantom.raster import Window
from mammodissect.phantom.texture import Parenchyma

__all__ = ["Finding", "Scene"]


@dataclass(frozen=True)
class Finding:
    """One drawn finding.

    Attributes
    ----------
    family : str
        Its finding family (a label column).
    kind : str
        What it is, in a word or two (``"mass"``, ``"calcifications"``, ``"focal asymmetry"``).
    concepts : tuple of str
        The concepts whose masks it drew into.
    center : tuple of float
        ``(row, column)`` of its centre in the image (after mirroring right breasts).
    extent : float
        Diameter in pixels of the disc around :attr:`center` that holds all its pixels.
    count : int
        Number of separate items drawn (calcifications, spicules, lines, nodes), else 0 or 1.
    birads : int
        BI-RADS assessment category of this finding alone.
    attrs : dict
        Descriptors for the report (shape, margin, density, morphology, distribution,
        ``size_mm``, ``region``, ``depth``, ...).
    """

    family: str
    kind: str
    concepts: tuple[str, ...]
    center: tuple[float, float]
    extent: float
    count: int
    birads: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def mirrored(self, width: int) -> Finding:
        """The same finding with its centre mirrored left-right in an image ``width`` wide."""
        y, x = self.center
        return Finding(
            self.family,
            self.kind,
            self.concepts,
            (y, width - 1 - x),
            self.extent,
            self.count,
            self.birads,
            self.attrs,
        )


class Scene:
    """One breast being drawn (canonical frame: chest wall on the left).

    Attributes
    ----------
    anatomy : Anatomy
        The geometry.
    tissue : Parenchyma
        The drawn parenchyma (dense tissue, fat level, contrast, fine noise).
    image : numpy.ndarray
        Float32 image being drawn.
    masks : dict of str to numpy.ndarray
        Concept -> full-size bool mask, in drawing order.
    blocked : numpy.ndarray
        Bool: pixels where no intramammary lesion may go (pectoral muscle, implant, outside).
    """

    def __init__(self, anatomy: Anatomy, tissue: Parenchyma) -> None:
        self.anatomy = anatomy
        self.tissue = tissue
        self.image = tissue.image
        self.masks: dict[str, np.ndarray] = {}
        self.blocked = ~tissue.tissue
        self.occupied: list[tuple[float, float, float]] = []
        self.vessels: list[np.ndarray] = []
        self._candidates: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.anatomy.shape

    @property
    def k(self) -> float:
        """Length scale (height / 320)."""
        return self.anatomy.scale

    def mark(self, concept: str, box: tuple[slice, slice], mask: np.ndarray) -> None:
        """OR a local bool ``mask`` at ``box`` into the mask of ``concept`` (inside the breast)."""
        full = self.masks.get(concept)
        if full is None:
            full = self.masks[concept] = np.zeros(self.shape, dtype=bool)
        full[box] |= mask & self.anatomy.breast[box]

    def mark_all(
        self, concepts: tuple[str, ...], box: tuple[slice, slice], mask: np.ndarray
    ) -> None:
        """:meth:`mark` the same pixels for several concepts."""
        for concept in concepts:
            self.mark(concept, box, mask)

    def block(self, mask: np.ndarray) -> None:
        """Keep later lesions out of ``mask`` (an implant)."""
        self.blocked = self.blocked | mask
        self._candidates = None

    def place(
        self,
        rng: np.random.Generator,
        radius: float,
        *,
        dense: bool = False,
        where: Callable[[float, float], bool] | None = None,
        tries: int = 60,
        claim: bool = True,
    ) -> tuple[float, float]:
        """A free centre for a lesion of ``radius`` pixels, fully inside breast tissue.

        Tries random tissue pixels (within dense tissue first when ``dense``, and where
        ``where(y, x)`` holds) that are at least ``radius`` from the skin, the pectoral muscle,
        an implant and earlier lesions; shrinks its demands if none fits. ``claim`` records the
        disc as occupied.
        """
        if self._candidates is None:
            ok = ~self.blocked & (self.anatomy.dist > 3.0 * self.k)
            self._candidates = np.flatnonzero(ok)
        candidates = self._candidates
        width = self.shape[1]
        soft = self.tissue.soft
        if candidates.size == 0:
            raise RuntimeError("phantom breast has no free tissue")
        picks = rng.integers(0, candidates.size, tries)
        for attempt, pick in enumerate(picks):
            y, x = divmod(int(candidates[pick]), width)
            strict = attempt < tries * 2 // 3
            need = radius if strict else radius * 0.6
            if self.anatomy.dist[y, x] < need + 1.0:
                continue
            if dense and strict and soft[y, x] < 0.5:
                continue
            if where is not None and strict and not where(y, x):
                continue
            win = Window(self.shape, y, x, need)
            if (self.blocked[win.box] & (win.dy**2 + win.dx**2 <= need * need)).any():
                continue
            if any(np.hypot(y - oy, x - ox) < need + other for oy, ox, other in self.occupied):
                continue
            if claim:
                self.occupied.append((float(y), float(x), float(radius)))
            return float(y), float(x)
        # Fallback: the tissue pixel deepest in the breast.
        depth = np.where(self.blocked, -np.inf, self.anatomy.dist)
        y, x = divmod(int(np.argmax(depth)), width)
        return float(y), float(x)

    def location(self, y: float, x: float) -> dict[str, str]:
        """Report words for where ``(y, x)`` lies (see :meth:`Anatomy.location`)."""
        return self.anatomy.location(y, x)

    def mm(self, pixels: float) -> float:
        """A length in pixels as millimetres, rounded to whole millimetres."""
        return float(round(pixels * self.anatomy.mm_per_px))
