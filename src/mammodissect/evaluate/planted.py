"""Planted units: synthetic detectors of known concepts, scored like one more layer of a run.

A planted unit's right answer is known, so how often the run's dissector and similarity
function name it measures the pair on this probe, in the same run. :func:`plant` reads every
row's masks once and builds the planted layer; :func:`recovery` scores it against one S (so
several dissectors, concept sets or similarity functions can share one layer);
:func:`planted_units` does both. Definitions, for a probe with concept masks
(:mod:`mammodissect.evaluate.masks`) and the run's N usable rows in probe order:

Frame
    Each image's masks are brought to a reduced frame: the stored image's size scaled down so
    that its longer side is at most ``max_side`` pixels (never up), masks downscaled by area
    averaging (a frame pixel holds the fraction of it the mask covers, so a finding smaller
    than a frame pixel is kept, as nearest-neighbour scaling would not).
Map
    Concept c's planted unit has, on image i, the frame mask of c blurred by a Gaussian of
    standard deviation ``blur * longer frame side`` pixels (kernel truncated at 3 sigma and
    normalised to sum 1, applied separably, the image zero outside its border; ``blur=0``
    leaves the mask as it is); on an image without a mask for c the map is 0.
Pooling
    The map becomes one number per image with the run's pooling: ``mean`` over the frame (for
    a mask clear of the border, its area fraction, since the normalised kernel keeps mass) or
    ``max``. ``cls`` (token outputs) has no spatial map: it falls back to ``mean``, with a note.
Noise floor
    Images without the concept would all be 0, and the similarity functions break ties by the
    lower image index: every unit's top images beyond its concept's own would be the same first
    images of the probe, an artefact of probe order. Instead each such image gets
    ``noise * u * floor``, with ``u`` uniform on [0, 1) (seeded, drawn per image and unit) and
    ``floor`` the unit's smallest value on an image with the concept. As ``noise < 1`` every
    image with the concept still outranks every image without it: the unit stays a perfect
    detector by rank, and the rest of its top images are a random draw of the others, as a real
    unit's noise would pick them. ``noise=0`` keeps the zeros (and the ties).
Planted layer
    One unit per concept with a mask in at least ``min_images`` of the rows and at most a
    fraction ``max_fraction`` of them, in concept-set order. The upper cut leaves out concepts
    on (nearly) every image, such as the phantoms' breast or skin line: such a unit has no
    images without its concept to contrast with, its top images are picked by mask size alone,
    and S (one cosine per image and concept) is not asked that question. The units form an
    N x P activation matrix scored with the run's similarity function, parameters
    and S exactly as a layer of the run is (the concept prior of soft-WPMI and WPMI therefore
    runs over the P planted units).
Per unit
    ``label`` is the best-scoring concept and ``score`` its score; ``concept_score`` is the
    score of the unit's own concept and ``rank`` its rank among all concepts (1 = best, ties
    broken by concept-set order, as the label is, so that rank 1 is exactly ``label ==
    concept``); ``top1_match`` is rank 1, ``top5_match`` rank 5 or better; ``same_finding``
    is a rank-1 label that states the concept's finding in its or other words (the concept or
    in its same-finding group, :mod:`mammodissect.concepts.findings`); ``same_category`` /
    ``same_broad_category`` compare the label's categories with the concept's as
    :func:`mammodissect.evaluate.agreement.agreement_flags` does.
Summary
    Planted units; top-1 and top-5 recovery (the means of ``top1_match`` and ``top5_match``),
    same-finding recovery (the mean of ``same_finding``) and the category agreements, each
    with a percentile bootstrap 95% interval over units; the median rank.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mammodissect.errors import MammodissectError
from mammodissect.evaluate.agreement import (
    FLAGS,
    agreement_flags,
    concept_ranks,
    summarize_agreement,
)
from mammodissect.evaluate.grounding import image_shape
from mammodissect.evaluate.masks import MaskSource
from mammodissect.models.annotation_models import annotation_truth
from mammodissect.models.frames import frame_size
from mammodissect.probe import Probe

__all__ = [
    "CEILING_COLUMNS",
    "PLANTED_COLUMNS",
    "PLANTED_LAYER",
    "Planted",
    "PlantedLayer",
    "annotation_ceiling",
    "gaussian_kernel",
    "plant",
    "planted_units",
    "pooled_masks",
    "recovery",
]

log = logging.getLogger(__name__)

#: The planted layer's name, next to the run's own layers.
PLANTED_LAYER = "planted"

#: Columns of :attr:`Planted.table`, in order.
PLANTED_COLUMNS: tuple[str, ...] = (
    "unit",
    "concept",
    "images",
    "label",
    "score",
    "concept_score",
    "rank",
    *FLAGS,
)

#: Summary metrics that come with a bootstrap interval: output key -> table column.
_RATES = {
    "top1_recovery": "top1_match",
    "top5_recovery": "top5_match",
    "same_finding_recovery": "same_finding",
    "same_category": "same_category",
    "same_broad_category": "same_broad_category",
}


@dataclass
class PlantedLayer:
    """The planted units of a probe, before scoring.

    Attributes
    ----------
    concepts:
        Per unit, its known concept (concept-set order).
    images:
        Per unit, the rows with its concept's mask.
    activations:
        (N, P) pooled activations, rows as the run's rows, one column per unit.
    settings:
        How they were made (pooling used, blur, max_side, min_images, max_fraction, noise, seed).
    notes:
        What was left out or changed, and why.
    """

    concepts: list[str]
    images: list[int]
    activations: np.ndarray
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)


@dataclass
class Planted:
    """How well a run's dissector and similarity function recover the planted units.

    Attributes
    ----------
    table:
        One row per planted unit, in concept-set order (columns :data:`PLANTED_COLUMNS`).
    summary:
        Counts, recovery rates with ``_low``/``_high`` 95% intervals, median rank, settings.
    layer:
        The planted layer scored.
    """

    table: pd.DataFrame
    summary: dict[str, Any]
    layer: PlantedLayer

    @property
    def notes(self) -> list[str]:
        """The planted layer's notes."""
        return self.layer.notes


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """A 1-D Gaussian of standard deviation ``sigma`` pixels, cut at 3 sigma, summing to 1.

    Examples
    --------
    >>> gaussian_kernel(1.0).shape
    torch.Size([7])
    """
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).float()


def _blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, H, W) maps blurred separably by a Gaussian of ``sigma`` pixels, zero padding."""
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel(sigma)
    radius = (len(kernel) - 1) // 2
    out = F.conv2d(maps[:, None], kernel.view(1, 1, 1, -1), padding=(0, radius))
    return F.conv2d(out, kernel.view(1, 1, -1, 1), padding=(radius, 0))[:, 0]


def pooled_masks(
    masks: dict[str, np.ndarray], frame: tuple[int, int], blur: float, pooling: str
) -> dict[str, float]:
    """One image's planted values: each concept mask at ``frame`` (area), blurred, pooled.

    Parameters
    ----------
    masks:
        Concept -> bool mask at the image's size.
    frame:
        The reduced frame (H', W').
    blur:
        Gaussian sigma as a fraction of the frame's longer side (0: none).
    pooling:
        ``mean`` or ``max``.

    Examples
    --------
    >>> mask = np.zeros((4, 4), dtype=bool)
    >>> mask[0, 0] = True
    >>> pooled_masks({"c": mask}, (2, 2), 0.0, "max")
    {'c': 0.25}
    """
    if not masks:
        return {}
    names = list(masks)
    stacked = torch.from_numpy(np.stack([masks[c] for c in names])).float()
    if tuple(stacked.shape[1:]) != tuple(frame):
        stacked = F.interpolate(stacked[:, None], size=frame, mode="area")[:, 0]
    maps = _blur(stacked, blur * max(frame))
    values = maps.flatten(1).mean(1) if pooling == "mean" else maps.flatten(1).amax(1)
    return dict(zip(names, values.tolist(), strict=True))


def _collect(
    probe: Probe, rows: Sequence[int], source: MaskSource, options: dict[str, Any]
) -> dict[str, dict[int, float]]:
    """Concept -> {position in ``rows``: pooled value} over the images that have its mask."""
    found: dict[str, dict[int, float]] = {}
    for position, row in enumerate(
        tqdm(rows, desc="planted units", unit="img", disable=options["quiet"])
    ):
        known = options["shapes"].get(probe.items[int(row)].image_id)
        shape = known if known is not None else image_shape(probe, int(row), None)
        values = pooled_masks(
            source.masks(int(row), shape),
            frame_size(shape, options["max_side"]),
            options["blur"],
            options["pooling"],
        )
        for concept, value in values.items():
            found.setdefault(concept, {})[position] = value
    return found


def _select(
    found: dict[str, dict[int, float]],
    concepts: Sequence[str],
    bounds: tuple[int, float],
    notes: list[str],
) -> list[str]:
    """The concepts, in concept-set order, with masks in ``bounds`` (least, most) images; a
    note for those left out."""
    counts = {c: len(found.get(c, ())) for c in dict.fromkeys(concepts)}
    low, high = bounds
    rare = [c for c, n in counts.items() if 0 < n < low]
    common = [c for c, n in counts.items() if n > high]
    if rare:
        notes.append(
            f"planted units: {len(rare)} masked concepts have masks in fewer than {low} images "
            "and got no unit"
        )
    if common:
        notes.append(
            f"planted units: {len(common)} concepts have masks in more than {high:g} images "
            f"and got no unit: {', '.join(common)}"
        )
    return [c for c, n in counts.items() if low <= n <= high]


def _activations(
    found: dict[str, dict[int, float]], planted: list[str], n_rows: int, noise: float, seed: int
) -> np.ndarray:
    """(N, P) planted activations with the noise floor on images without the concept."""
    rng = np.random.default_rng(seed)
    out = rng.random((n_rows, len(planted))) * noise
    for j, concept in enumerate(planted):
        positions = np.fromiter(found[concept], dtype=np.int64)
        values = np.fromiter(found[concept].values(), dtype=np.float64)
        out[:, j] *= values.min()
        out[positions, j] = values
    return out.astype(np.float32)


def _check(
    pooling: str, blur: float, max_side: int, min_images: int, max_fraction: float, noise: float
) -> None:
    problems = (
        (pooling not in ("mean", "max", "cls"), f"pooling {pooling!r} unknown: mean, max or cls"),
        (not blur >= 0, f"blur must be >= 0, got {blur}"),
        (max_side < 1, f"max_side must be >= 1, got {max_side}"),
        (min_images < 1, f"min_images must be >= 1, got {min_images}"),
        (not 0 < max_fraction <= 1, f"max_fraction must be in (0, 1], got {max_fraction}"),
        (not 0 <= noise < 1, f"noise must be in [0, 1), got {noise}"),
    )
    for failed, message in problems:
        if failed:
            raise MammodissectError(f"planted units: {message}")


def plant(
    probe: Probe,
    rows: Sequence[int],
    masks: MaskSource,
    concepts: Sequence[str],
    *,
    pooling: str = "mean",
    blur: float = 0.02,
    max_side: int = 160,
    min_images: int = 3,
    max_fraction: float = 0.95,
    noise: float = 0.01,
    seed: int = 0,
    shapes: Mapping[str, tuple[int, int]] | None = None,
    quiet: bool = False,
) -> PlantedLayer:
    """Read every row's masks once and build the planted layer (the module docstring).

    Parameters
    ----------
    probe, rows:
        The probe and the run's usable rows, in probe order (as the rows of S).
    masks:
        The probe's concept masks (:func:`mammodissect.evaluate.masks.mask_source`).
    concepts:
        The run's concept strings (their order is the units' order).
    pooling:
        The run's pooling (``cls`` falls back to ``mean``).
    blur:
        Gaussian sigma as a fraction of the frame's longer side.
    max_side:
        Longest side of the frame masks are reduced to.
    min_images:
        Least number of rows with a concept's mask for the concept to get a unit.
    max_fraction:
        Largest fraction of rows with a concept's mask for the concept to get a unit.
    noise:
        Noise floor on images without the concept, as a fraction of the unit's smallest value
        with it (0: exact zeros).
    seed:
        Seed of the noise floor.
    shapes:
        ``image_id`` -> the stored image's (H, W), as the run recorded it (images.csv); an
        image not in it is decoded to learn its size.
    quiet:
        No progress bar.

    Returns
    -------
    PlantedLayer

    Raises
    ------
    MammodissectError
        When a setting is out of range, or a mask file is missing or of the wrong size.
    """
    _check(pooling, blur, max_side, min_images, max_fraction, noise)
    notes: list[str] = []
    if pooling == "cls":
        notes.append("planted units: cls pooling has no spatial map; pooled by mean instead")
        pooling = "mean"
    options = {"pooling": pooling, "blur": blur, "max_side": max_side, "quiet": quiet,
               "shapes": shapes or {}}  # fmt: skip
    found = _collect(probe, rows, masks, options)
    planted = _select(found, concepts, (min_images, max_fraction * len(rows)), notes)
    if not planted:
        notes.append("planted units: no concept has a mask in enough images; nothing planted")
    for note in notes:
        log.info("%s", note)
    settings = {"pooling": pooling, "blur": blur, "max_side": max_side, "min_images": min_images,
                "max_fraction": max_fraction, "noise": noise, "seed": seed}  # fmt: skip
    return PlantedLayer(
        concepts=planted,
        images=[len(found[c]) for c in planted],
        activations=_activations(found, planted, len(rows), noise, seed),
        settings=settings,
        notes=notes,
    )


def _table(
    layer: PlantedLayer,
    concepts: list[str],
    scores: torch.Tensor,
    categories: pd.DataFrame | None,
) -> pd.DataFrame:
    first: dict[str, int] = {}
    for i, concept in enumerate(concepts):
        first.setdefault(concept, i)
    truth = np.array([first[c] for c in layer.concepts], dtype=np.int64)
    order, ranks = concept_ranks(scores)
    values = scores.float().cpu().numpy()
    units = np.arange(len(truth))
    if categories is not None:
        categories = categories.drop_duplicates("concept").set_index("concept")
    top5 = [[concepts[j] for j in top[:5]] for top in order]
    table = pd.DataFrame(
        {
            "unit": units,
            "concept": layer.concepts,
            "images": layer.images,
            "label": [concepts[j] for j in order[:, 0]],
            "score": values[units, order[:, 0]],
            "concept_score": values[units, truth],
            "rank": ranks[units, truth],
        }
    )
    flags = agreement_flags(top5, layer.concepts, categories)
    return pd.concat([table, flags], axis=1)[list(PLANTED_COLUMNS)]


def _summary(table: pd.DataFrame, bootstrap: int, seed: int) -> dict[str, Any]:
    rates = summarize_agreement(table, bootstrap, seed, tuple(_RATES.values()))
    out: dict[str, Any] = {"units": len(table)}
    for key, column in _RATES.items():
        for part in ("", "_low", "_high"):
            out[f"{key}{part}"] = rates[f"{column}{part}"]
    out["median_rank"] = float(table["rank"].median()) if len(table) else float("nan")
    return out


def recovery(
    layer: PlantedLayer,
    cosines: torch.Tensor,
    concepts: list[str],
    similarity: Callable[..., torch.Tensor],
    params: dict[str, Any],
    *,
    categories: pd.DataFrame | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Planted:
    """Score the planted layer as a layer of the run and rank each unit's own concept.

    Parameters
    ----------
    layer:
        From :func:`plant`, over the rows of ``cosines``.
    cosines:
        The run's dissector cosines S (N x M), columns in ``concepts`` order.
    concepts:
        The concept strings of S's columns; every planted concept must be one of them.
    similarity, params:
        The run's similarity function and its parameters.
    categories:
        The concept set's table (``ConceptSet.to_frame()``: ``concept, category,
        broad_category``) for the category agreements; None leaves them empty.
    bootstrap:
        Bootstrap resamples of units for the 95% intervals (0: none).
    seed:
        Seed of the bootstrap.

    Returns
    -------
    Planted

    Raises
    ------
    MammodissectError
        When S's shape does not match the layer's rows and ``concepts``, or a planted
        concept is not among ``concepts``.
    """
    n_rows = layer.activations.shape[0]
    if tuple(cosines.shape) != (n_rows, len(concepts)):
        raise MammodissectError(
            f"planted units: {n_rows} rows and {len(concepts)} concepts but S is "
            f"{cosines.shape[0]} x {cosines.shape[1]}; pass the run's rows and concepts"
        )
    missing = sorted(set(layer.concepts) - set(concepts))
    if missing:
        raise MammodissectError(
            f"planted units: {len(missing)} planted concepts are not columns of S: "
            f"{', '.join(missing[:5])}"
        )
    if layer.concepts:
        scores = similarity(cosines, torch.from_numpy(layer.activations), **params)
        table = _table(layer, concepts, scores, categories)
    else:
        table = pd.DataFrame(columns=list(PLANTED_COLUMNS))
    summary = {
        **_summary(table, bootstrap, seed),
        "images": n_rows,
        "settings": dict(layer.settings),
    }
    return Planted(table=table, summary=summary, layer=layer)


#: Columns planted.csv adds for the planted units scored with the annotation dissector.
CEILING_COLUMNS: tuple[str, ...] = (
    "annotation_label",
    "annotation_rank",
    "annotation_top1_match",
    "annotation_top5_match",
)


def annotation_ceiling(
    planted: Planted,
    probe: Probe,
    rows: Sequence[int],
    concepts: list[str],
    similarity: Callable[..., torch.Tensor],
    params: dict[str, Any],
    *,
    categories: pd.DataFrame | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Planted:
    """The same planted layer scored with S from the probe's own annotations (the annotation
    dissector, bundled map) instead of the run's dissector: the ceiling of the pipeline, beside
    the run's. Its columns join ``planted.table`` as :data:`CEILING_COLUMNS`, its summary goes
    under ``annotation_ceiling``; the planted concepts are mask keys, so every one of them is
    annotated and scored. Concepts no annotation covers are left out of this S, as a run with
    the annotation dissector leaves them out."""
    present, kept, _ = annotation_truth(probe, rows, concepts)
    ceiling = recovery(
        planted.layer, present, kept, similarity, params,
        categories=categories, bootstrap=bootstrap, seed=seed,
    )  # fmt: skip
    columns = {
        "label": "annotation_label",
        "rank": "annotation_rank",
        "top1_match": "annotation_top1_match",
        "top5_match": "annotation_top5_match",
    }
    joined = pd.concat(
        [planted.table, ceiling.table[list(columns)].rename(columns=columns)], axis=1
    )
    summary = {**planted.summary, "annotation_ceiling": {
        k: v for k, v in ceiling.summary.items() if k != "settings"
    }}  # fmt: skip
    return Planted(table=joined, summary=summary, layer=planted.layer)


def planted_units(
    probe: Probe,
    rows: Sequence[int],
    masks: MaskSource,
    cosines: torch.Tensor,
    concepts: list[str],
    similarity: Callable[..., torch.Tensor],
    params: dict[str, Any],
    *,
    categories: pd.DataFrame | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    **options: Any,
) -> Planted:
    """Plant one unit per masked concept and measure how often the run recovers it:
    :func:`plant` then :func:`recovery`.

    Parameters
    ----------
    probe, rows, masks:
        As :func:`plant`.
    cosines, concepts, similarity, params, categories, bootstrap:
        As :func:`recovery`.
    seed:
        Seed of the noise floor and the bootstrap.
    **options:
        :func:`plant`'s settings (``pooling``, ``blur``, ``max_side``, ``min_images``,
        ``max_fraction``, ``noise``, ``shapes``, ``quiet``).

    Returns
    -------
    Planted
    """
    if len(rows) != cosines.shape[0]:
        raise MammodissectError(
            f"planted units: {len(rows)} rows but S has {cosines.shape[0]}; pass the run's rows"
        )
    layer = plant(probe, rows, masks, concepts, seed=seed, **options)
    return recovery(
        layer, cosines, concepts, similarity, params,
        categories=categories, bootstrap=bootstrap, seed=seed,
    )  # fmt: skip
