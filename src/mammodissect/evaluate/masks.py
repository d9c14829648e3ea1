"""Ground-truth regions per probe image: phantom mask files or finding boxes, as concept masks.

Two sources, tried in order:

- a ``mask_path`` label column (phantom manifests): an ``.npz`` of bool masks keyed by the exact
  concept string, relative to the probe root;
- :attr:`mammodissect.probe.Probe.boxes`: each finding name (``|``-joined names split) becomes
  its region: the pixels of the finding's ROI mask when the boxes table has a ``mask_path``
  column naming a readable mask image under the probe root (CBIS-DDSM's ROI masks: the
  foreground is what lies above the midpoint of the mask's value range, scaled to the image by
  nearest neighbour when stored at another size), else the filled box.

Mask keys and finding names are matched to the run's concepts by exact string, case-insensitive
(``_`` read as a space); names that match no concept are left out (counted in
:attr:`MaskSource.unmatched`). A box's descriptor columns (CBIS-DDSM's ``mass_shape``,
``mass_margins``, ``calc_type``, ``calc_distribution``) ground its region under the concepts
the bundled annotation map gives them too (see :mod:`mammodissect.probe.annotations`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.errors import MammodissectError
from mammodissect.probe import Probe, read_image
from mammodissect.probe.annotations import box_terms, normalize, read_map, read_masks
from mammodissect.probe.dataset import BOX_COLUMNS

__all__ = ["MaskSource", "box_mask", "mask_source"]

log = logging.getLogger(__name__)


def box_mask(
    shape: tuple[int, int], boxes: Sequence[tuple[float, float, float, float]]
) -> np.ndarray:
    """A bool mask of ``shape`` (H, W) with every box ``(xmin, ymin, xmax, ymax)`` filled.

    Box corners are in pixel-edge coordinates: pixel (y, x) is inside when its centre
    ``(y + 0.5, x + 0.5)`` lies within the box; boxes with NaN corners are skipped.

    Examples
    --------
    >>> box_mask((3, 4), [(1, 0, 3, 2)]).astype(int)
    array([[0, 1, 1, 0],
           [0, 1, 1, 0],
           [0, 0, 0, 0]])
    """
    mask = np.zeros(shape, dtype=bool)
    ys = np.arange(shape[0]) + 0.5
    xs = np.arange(shape[1]) + 0.5
    for xmin, ymin, xmax, ymax in boxes:
        if any(np.isnan(v) for v in (xmin, ymin, xmax, ymax)):
            continue
        rows = (ys >= ymin) & (ys <= ymax)
        cols = (xs >= xmin) & (xs <= xmax)
        mask |= rows[:, None] & cols[None, :]
    return mask


class MaskSource:
    """Concept masks of probe images, keyed by the run's concept strings.

    Parameters
    ----------
    probe:
        The probe (with a ``mask_path`` label column or boxes).
    concepts:
        The run's concept strings.
    kind:
        ``masks`` or ``boxes``.
    """

    def __init__(self, probe: Probe, concepts: Sequence[str], kind: str):
        self.probe = probe
        self.kind = kind
        # first spelling wins; keys as annotation terms hold them (normalize)
        self.lookup = {normalize(c): c for c in reversed(list(concepts))}
        self.mapping = read_map()
        self.unmatched: dict[str, int] = {}
        #: ROI mask files used in place of boxes (counted per read).
        self.roi_masks = 0
        self._boxes: dict[str, pd.DataFrame] = {}
        self._digests: dict[str, Any] = {}
        if kind == "boxes" and probe.boxes is not None:
            self._boxes = dict(tuple(probe.boxes.groupby("image_id", sort=False)))

    @property
    def description(self) -> str:
        """What the regions were: ``masks``, ``boxes`` or ``ROI masks and boxes``."""
        return "ROI masks and boxes" if self.kind == "boxes" and self.roi_masks else self.kind

    def _concept(self, name: str) -> str | None:
        found = self.lookup.get(normalize(name))
        if found is None:
            self.unmatched[str(name)] = self.unmatched.get(str(name), 0) + 1
        return found

    def masks(self, row: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Concept -> bool mask (decoded image size ``shape``) of probe row ``row``.

        Concepts absent from the image are absent from the mapping.

        Raises
        ------
        MammodissectError
            When a mask file is missing or its masks are not of the image's size.
        """
        out = self._read(row, shape)
        for concept, mask in out.items():
            digest = self._digests.setdefault(concept, hashlib.blake2b(digest_size=16))
            digest.update(np.array([row, *mask.shape], dtype=np.int64).tobytes())
            digest.update(np.packbits(mask).tobytes())
        return out

    def classes(self) -> list[list[str]]:
        """Concepts whose masks coincided on every image read so far (same images, same
        pixels): each group of two or more, in the order the concepts were first seen.

        Such concepts are one answer to "which concept is this region?" (a phantom's silicone
        implant is also its breast implant), and an evaluation counts them as the same.
        """
        groups: dict[bytes, list[str]] = {}
        for concept, digest in self._digests.items():
            groups.setdefault(digest.digest(), []).append(concept)
        return [group for group in groups.values() if len(group) > 1]

    def _read(self, row: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        item = self.probe.items[row]
        out: dict[str, np.ndarray] = {}
        if self.kind == "masks" and self.probe.labels is not None:
            rel = self.probe.labels.loc[item.image_id, "mask_path"]
            if not isinstance(rel, str) or not rel:
                return out
            path = Path(self.probe.root) / rel
            if not path.is_file():
                raise MammodissectError(
                    f"mask file {rel!r} of image {item.image_id!r} not found under the probe "
                    "root; rewrite the probe (`mammodissect phantom write`) or fix mask_path"
                )
            for name, mask in read_masks(path).items():
                concept = self._concept(name)
                if concept is None or not mask.any():
                    continue
                if mask.shape != tuple(shape):
                    raise MammodissectError(
                        f"mask {name!r} in {rel!r} is {mask.shape[0]}x{mask.shape[1]} but the "
                        f"image is {shape[0]}x{shape[1]}; masks must be at the image's size"
                    )
                out[concept] = out[concept] | mask if concept in out else mask
            return out
        group = self._boxes.get(item.image_id)
        if group is None:
            return out
        per_concept: dict[str, list[np.ndarray]] = {}
        for record in group.to_dict("records"):
            names = [self._concept(n) for n in str(record["finding"]).split("|")]
            names += self._described(record)
            if not any(names):
                continue
            region = self._roi(record.get("mask_path"), shape)
            if region is None:
                xmin, ymin, xmax, ymax = (
                    float(record[k]) for k in ("xmin", "ymin", "xmax", "ymax")
                )
                region = box_mask(shape, [(xmin, ymin, xmax, ymax)])
            for concept in filter(None, names):
                per_concept.setdefault(concept, []).append(region)
        for concept, regions in per_concept.items():
            mask = np.logical_or.reduce(regions)
            if mask.any():
                out[concept] = mask
        return out

    def _described(self, record: dict[str, Any]) -> list[str]:
        """The run's concepts a box's finding and descriptor columns stand for through the
        bundled annotation map (CBIS-DDSM's ``mass_shape`` IRREGULAR: "irregular mass")."""
        found: list[str] = []
        cells = [("findings", record["finding"])]  # named as the images' findings column is
        cells += [(k, v) for k, v in record.items() if k not in BOX_COLUMNS and k != "mask_path"]
        for column, cell in cells:
            for term in box_terms(column, cell):
                found += [
                    self.lookup[c] for c in self.mapping.concepts_of(term) if c in self.lookup
                ]
        return list(dict.fromkeys(found))

    def _roi(self, rel: object, shape: tuple[int, int]) -> np.ndarray | None:
        """The ROI mask at ``rel`` (relative to the probe root) as a bool mask of ``shape``;
        None without a path, or when the file is missing or unreadable (the box is used)."""
        if not isinstance(rel, str) or not rel:
            return None
        path = Path(self.probe.root) / rel
        try:
            image = read_image(path) if path.is_file() else None
        except MammodissectError as err:
            log.warning("ROI mask %s unreadable, its box is used instead (%s)", rel, err)
            image = None
        if image is None:
            return None
        low, high = float(image.min()), float(image.max())
        mask = image > (low + high) / 2
        if mask.shape != tuple(shape):
            ys = (np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int)
            xs = (np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int)
            mask = mask[ys][:, xs]
        self.roi_masks += 1
        return mask


def mask_source(probe: Probe, concepts: Sequence[str]) -> MaskSource | None:
    """The probe's ground truth: mask files when it has a ``mask_path`` column, else its
    boxes, else None (grounding is then skipped)."""
    labels = probe.labels
    if labels is not None and "mask_path" in labels.columns:
        return MaskSource(probe, concepts, "masks")
    if probe.boxes is not None and len(probe.boxes):
        return MaskSource(probe, concepts, "boxes")
    return None
