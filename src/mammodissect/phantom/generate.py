"""Generate phantoms: one seeded generator per image, so image ``i`` depends only on
``(seed, i)`` and the settings.

Drawing order: finding families, view, laterality and composition; breast outline, nipple and
pectoral muscle; the implant's place; parenchyma; vessels and Cooper's ligaments; implant;
global asymmetry; masses; architectural distortion; focal asymmetry; lymph node;
calcifications; skin thickening; nipple retraction; biopsy clip; quantum noise. Right breasts
are then mirrored. The labels are read off the masks, so they always agree with them.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from mammodissect.errors import MammodissectError
from mammodissect.phantom import findings as other
from mammodissect.phantom.anatomy import build_anatomy
from mammodissect.phantom.calcifications import draw_calcifications
from mammodissect.phantom.masks import MaskSet
from mammodissect.phantom.masses import draw_mass
from mammodissect.phantom.reports import write_report
from mammodissect.phantom.scene import Finding, Scene
from mammodissect.phantom.settings import PhantomSettings
from mammodissect.phantom.structures import draw_ligaments, draw_vessels
from mammodissect.phantom.texture import draw_parenchyma
from mammodissect.phantom.vocabulary import (
    ANATOMY,
    COMPOSITION_CONCEPT,
    DENSITIES,
    FAMILIES,
    PHANTOM_CONCEPTS,
)

__all__ = ["Phantom", "generate", "make_phantom", "overall_birads"]

#: BI-RADS categories from least to most urgent (0, "needs more imaging", outranks 1-3).
_URGENCY = {1: 0, 2: 1, 3: 2, 0: 3, 4: 4, 5: 5, 6: 6}
_LEVELS = 65535


@dataclass(frozen=True, eq=False)
class Phantom:
    """One synthetic mammogram with its masks, labels and report.

    Attributes
    ----------
    name : str
        Identifier, ``"phantom-s{seed}-{index:06d}"`` (the manifest's ``image_id``).
    seed, index : int
        What generated it.
    view, laterality, density : str
        ``"CC"``/``"MLO"``, ``"L"``/``"R"``, ``"A"``..``"D"``.
    pixels : numpy.ndarray
        The image as uint16 (0..65535); :attr:`image` is the float view of it.
    masks : MaskSet
        Concept -> ``(H, W)`` bool mask of every concept present (indexing returns a new
        array); the concepts are exact ``birads`` strings (:data:`PHANTOM_CONCEPTS`).
    labels : dict
        Image-level labels: ``view``, ``laterality``, ``density``, ``birads`` (0-6),
        ``findings`` (``"|"``-joined families, ``"none"`` for a normal image) and one bool per
        finding family.
    report : str
        The radiology report.
    findings : tuple of Finding
        What was drawn, with centres, extents and counts in image coordinates.
    """

    name: str
    seed: int
    index: int
    view: str
    laterality: str
    density: str
    pixels: np.ndarray
    masks: MaskSet
    labels: dict[str, Any]
    report: str
    findings: tuple[Finding, ...]

    @property
    def image(self) -> np.ndarray:
        """Float32 ``(H, W)`` image in [0, 1], brighter = denser (a new array)."""
        return self.pixels.astype(np.float32) / np.float32(_LEVELS)

    @property
    def concepts(self) -> list[str]:
        """The concepts present (the keys of :attr:`masks`)."""
        return list(self.masks)

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.masks.shape

    def __eq__(self, other: object) -> bool:
        """Same name, pixels, masks, labels, report and findings."""
        if not isinstance(other, Phantom):
            return NotImplemented
        return (
            self.name == other.name
            and np.array_equal(self.pixels, other.pixels)
            and self.masks == other.masks
            and self.labels == other.labels
            and self.report == other.report
            and self.findings == other.findings
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        """Short description."""
        return (
            f"Phantom({self.name!r}, {self.laterality}{self.view}, density {self.density}, "
            f"BI-RADS {self.labels['birads']}, findings={self.labels['findings']!r})"
        )


def overall_birads(findings: list[Finding] | tuple[Finding, ...]) -> int:
    """The image's BI-RADS category: the most urgent of its findings' (1 when none)."""
    categories = [f.birads for f in findings] or [1]
    return max(categories, key=_URGENCY.__getitem__)


def _choice(rng: np.random.Generator, options: tuple[str, ...], p: Any = None) -> str:
    if p is None:
        return options[int(rng.integers(len(options)))]
    weights = np.asarray(p, dtype=float)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))]


def make_phantom(index: int, seed: int, settings: PhantomSettings) -> Phantom:
    """Draw phantom ``index`` of the set ``seed`` (depends on nothing else)."""
    rng = np.random.default_rng([seed, index])
    families = settings.sampler.draw(rng)
    view = _choice(rng, ("CC", "MLO"))
    laterality = _choice(rng, ("L", "R"))
    density = _choice(rng, DENSITIES, settings.densities)

    anatomy = build_anatomy(rng, settings.size, view, retracted="nipple_retraction" in families)
    implant = other.implant_region(rng, anatomy) if "implant" in families else None
    tissue = draw_parenchyma(rng, anatomy, density, exclude=None if implant is None else implant[0])
    scene = Scene(anatomy, tissue)
    draw_vessels(scene, rng)
    draw_ligaments(scene, rng)

    drawn: list[Finding] = []
    if implant is not None:
        drawn.append(other.draw_implant(scene, rng, *implant))
    asymmetry = None
    if "asymmetry" in families:
        asymmetry = other.draw_asymmetry(scene, rng)
    if asymmetry is not None and asymmetry.kind == "global asymmetry":
        drawn.append(asymmetry)
    masses: list[Finding] = []
    if "mass" in families:
        for _ in range(2 if rng.random() < 0.12 else 1):
            masses.append(draw_mass(scene, rng))
        drawn += masses
    if "architectural_distortion" in families:
        drawn.append(other.draw_distortion(scene, rng))
    if asymmetry is not None and asymmetry.kind != "global asymmetry":
        drawn.append(asymmetry)
    if "lymph_node" in families:
        drawn.append(other.draw_lymph_node(scene, rng))
    if "calcification" in families:
        drawn += draw_calcifications(scene, rng, suspicious="suspicious_calcification" in families)
    if "skin_thickening" in families:
        drawn.append(other.draw_skin_thickening(scene, rng))
    if "nipple_retraction" in families:
        drawn.append(other.draw_nipple_retraction(scene, rng))
    if "biopsy_clip" in families:
        target = masses[0] if masses and rng.random() < 0.5 else None
        drawn.append(other.draw_biopsy_clip(scene, rng, target))

    image = scene.image
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(0.006) * anatomy.breast
    image = _display_curve(image)
    pixels = np.rint(np.clip(image, 0.0, 1.0) * _LEVELS).astype(np.uint16)
    pixels[~anatomy.breast] = 0

    masks = _anatomy_masks(scene, density)
    masks.update(scene.masks)
    height, width = settings.size
    if laterality == "R":
        pixels = pixels[:, ::-1].copy()
        masks = {concept: mask[:, ::-1] for concept, mask in masks.items()}
        drawn = [f.mirrored(width) for f in drawn]
    ordered = {c: masks[c] for c in PHANTOM_CONCEPTS if c in masks}
    mask_set = MaskSet((height, width), ordered)

    present = {PHANTOM_CONCEPTS[c] for c in mask_set}
    birads = overall_birads(drawn)
    labels: dict[str, Any] = {
        "view": view,
        "laterality": laterality,
        "density": density,
        "birads": birads,
        "findings": "|".join(f for f in FAMILIES if f in present) or "none",
    }
    labels.update({family: family in present for family in FAMILIES})
    report_rng = np.random.default_rng([seed, index, 1])
    report = write_report(report_rng, view, laterality, density, drawn, birads)
    return Phantom(
        name=f"phantom-s{seed}-{index:06d}",
        seed=seed,
        index=index,
        view=view,
        laterality=laterality,
        density=density,
        pixels=pixels,
        masks=mask_set,
        labels=labels,
        report=report,
        findings=tuple(drawn),
    )


def _display_curve(image: np.ndarray, knee: float = 0.72) -> np.ndarray:
    """Roll off the brightest values smoothly towards 1 (like a display LUT's shoulder)."""
    over = image > knee
    image[over] = knee + (1.0 - knee) * np.tanh((image[over] - knee) / (1.0 - knee))
    return image


def _anatomy_masks(scene: Scene, density: str) -> dict[str, np.ndarray]:
    """Masks of the anatomy concepts and of the composition concept."""
    an = scene.anatomy
    breast_tissue = an.breast & ~an.pectoral
    implant = scene.masks.get("breast implant")
    if implant is not None:
        breast_tissue = breast_tissue & ~implant
    dense = scene.tissue.dense & breast_tissue
    masks = {
        "breast": an.breast,
        "skin line": an.skin,
        "nipple": an.nipple,
        "pectoral muscle": an.pectoral,
        "fibroglandular tissue": dense,
        "fatty tissue": breast_tissue & ~dense & ~an.skin & ~an.nipple,
        COMPOSITION_CONCEPT[density]: breast_tissue,
    }
    assert all(PHANTOM_CONCEPTS[c] in (ANATOMY, "composition") for c in masks)
    return masks


def generate(
    n: int, seed: int = 0, settings: PhantomSettings | None = None, workers: int = 1
) -> list[Phantom]:
    """Generate ``n`` phantoms.

    Parameters
    ----------
    n : int
        How many (0 or more).
    seed : int
        Non-negative seed; phantom ``i`` depends only on ``(seed, i)`` and the settings, so
        ``generate(10, s)[:5] == generate(5, s)``.
    settings : PhantomSettings, optional
        Size, normal fraction, finding rates, composition weights (defaults if omitted).
    workers : int
        Processes drawing them (1: in this process). The phantoms are the same whatever the
        count; several pay where drawing dominates (large sizes, many cores beside a GPU).

    Returns
    -------
    list of Phantom

    Raises
    ------
    MammodissectError
        If ``n`` or ``seed`` is negative or not an integer.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise MammodissectError(f"number of phantoms must be a non-negative integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise MammodissectError(f"phantom seed must be a non-negative integer, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise MammodissectError(f"phantom workers must be an integer >= 1, got {workers!r}")
    settings = settings if settings is not None else PhantomSettings()
    draw = partial(make_phantom, seed=int(seed), settings=settings)
    if workers == 1 or n < 2:
        return [draw(i) for i in range(int(n))]
    # forkserver: children fork from a clean server process that imported this module once
    # (never a forked copy of torch's thread pools, no import cost per pool after the first)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(min(workers, int(n)), mp_context=context) as pool:
        return list(pool.map(draw, range(int(n)), chunksize=max(1, int(n) // (4 * workers))))
