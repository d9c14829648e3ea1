"""CBIS-DDSM (TCIA): the four case-description CSVs, full mammograms and ROI masks.

``mass_case_description_{train,test}_set.csv`` and
``calc_case_description_{train,test}_set.csv`` hold one row per abnormality:
``patient_id, breast_density`` (``breast density`` in the calc tables), ``left or
right breast, image view, abnormality id, abnormality type``, ``mass shape, mass
margins`` or ``calc type, calc distribution``, ``assessment, pathology, subtlety``
and three DICOM paths, ``image file path, cropped image file path, ROI mask file
path``, written in TCIA's classic form
``<case folder>/<StudyInstanceUID>/<SeriesInstanceUID>/000000.dcm`` (some cells end
in a newline). On disk the folders depend on how the data were fetched:

* classic names: the listed path exists as is (under the root or ``CBIS-DDSM/``);
* descriptive names (NBIA Data Retriever's default): ``<case folder>/<date>-DDSM-
  <last 5 digits of the study UID>/<n>.000000-<series description>-<last 5 digits of
  the series UID>/1-1.dcm``; the mask and the cropped image often share a series
  folder as ``1-1.dcm``/``1-2.dcm`` in either order;
* JPEG conversions: ``jpeg/<SeriesInstanceUID>/*.jpg``.

The reader tries these in turn. Where a series folder holds several images, the
mask is the largest one (it has the mammogram's size, the crop is small), which also
fixes rows whose mask and crop paths are swapped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.errors import MammodissectError
from mammodissect.probe.dataset import IMAGE_EXTENSIONS, Probe
from mammodissect.probe.images import DICOM_EXTENSIONS, is_dicom_file, read_image
from mammodissect.probe.layouts._common import (
    Collector,
    check_missing,
    dataset_root,
    join_unique,
    locate,
    make_probe,
    norm_birads,
    norm_density,
    norm_laterality,
    norm_view,
    read_table,
    relpath,
    text,
)

__all__ = ["NAME", "TABLES", "add_mask_boxes", "mask_box", "read"]

logger = logging.getLogger(__name__)

NAME = "cbis-ddsm"
#: The case-description tables and the split each one holds.
TABLES: dict[str, str] = {
    "mass_case_description_train_set.csv": "train",
    "mass_case_description_test_set.csv": "test",
    "calc_case_description_train_set.csv": "train",
    "calc_case_description_test_set.csv": "test",
}

_PATHOLOGY_RANK = {"BENIGN_WITHOUT_CALLBACK": 0, "BENIGN": 1, "MALIGNANT": 2}
_PER_ABNORMALITY = ("mass_shape", "mass_margins", "calc_type", "calc_distribution")
_CONSUMED = {
    "patient_id",
    "breast_density",
    "left_or_right_breast",
    "image_view",
    "abnormality_id",
    "abnormality_type",
    "assessment",
    "pathology",
    "subtlety",
    "image_file_path",
    "cropped_image_file_path",
    "roi_mask_file_path",
    *_PER_ABNORMALITY,
}


def _parts(listed: str) -> list[str]:
    """The components of a listed path (whitespace and newlines trimmed, any slash)."""
    return [part.strip() for part in listed.strip().replace("\\", "/").split("/") if part.strip()]


def _is_image(path: Path) -> bool:
    """Whether a file looks like an image by extension or DICOM preamble."""
    return path.suffix.lower() in IMAGE_EXTENSIONS or (path.suffix == "" and is_dicom_file(path))


def _pixel_count(path: Path) -> int:
    """Rows x columns from the file header (0 when unreadable)."""
    try:
        if path.suffix.lower() in DICOM_EXTENSIONS or is_dicom_file(path):
            import pydicom

            header = pydicom.dcmread(
                path, stop_before_pixels=True, force=True, specific_tags=["Rows", "Columns"]
            )
            return int(header.get("Rows", 0) or 0) * int(header.get("Columns", 0) or 0)
        from PIL import Image

        with Image.open(path) as img:
            return int(img.size[0]) * int(img.size[1])
    except Exception:  # any unreadable header counts as no pixels
        return 0


def _image_shape(path: Path) -> tuple[int, int] | None:
    """(rows, columns) from the file header, or ``None``."""
    try:
        if path.suffix.lower() in DICOM_EXTENSIONS or is_dicom_file(path):
            import pydicom

            header = pydicom.dcmread(
                path, stop_before_pixels=True, force=True, specific_tags=["Rows", "Columns"]
            )
            rows, cols = int(header.get("Rows", 0) or 0), int(header.get("Columns", 0) or 0)
        else:
            from PIL import Image

            with Image.open(path) as img:
                cols, rows = (int(v) for v in img.size)
    except Exception:  # any unreadable header gives no shape
        return None
    return (rows, cols) if rows > 0 and cols > 0 else None


def _match_dir(parent: Path, uid: str) -> Path | None:
    """The sub-folder of ``parent`` for a DICOM UID: same name, or a descriptive name
    ending in the UID's last five digits, or the only sub-folder."""
    exact = parent / uid
    if exact.is_dir():
        return exact
    try:
        subdirs = sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return None
    tail = uid[-5:]
    matches = [p for p in subdirs if p.name.endswith(f"-{tail}") or p.name.endswith(tail)]
    if len(matches) == 1:
        return matches[0]
    if len(subdirs) == 1:
        return subdirs[0]
    return None


class _Resolver:
    """Find the file a CBIS-DDSM CSV path means in the folder as downloaded."""

    def __init__(self, folder: Path, base: Path) -> None:
        roots: list[Path] = []
        for root in (base, folder, base / "CBIS-DDSM", folder / "CBIS-DDSM", base.parent):
            if root.is_dir() and root not in roots:
                roots.append(root)
        self.roots = roots
        self._cache: dict[tuple[str, str], Path | None] = {}

    def resolve(self, listed: str, role: str) -> Path | None:
        """The file for ``listed``; ``role`` is ``"full"`` or ``"mask"``."""
        key = (listed, role)
        if key not in self._cache:
            self._cache[key] = self._resolve(listed, role)
        return self._cache[key]

    def _resolve(self, listed: str, role: str) -> Path | None:
        parts = _parts(listed)
        if not parts:
            return None
        for root in self.roots:
            exact = root.joinpath(*parts)
            if exact.is_file():
                return self._pick(exact.parent, exact, role)
        if len(parts) >= 3:
            study, series = parts[-3], parts[-2]
            case = parts[-4] if len(parts) >= 4 else None
            for root in self.roots:
                if case is not None and (root / case).is_dir():
                    study_dir = _match_dir(root / case, study)
                    series_dir = _match_dir(study_dir, series) if study_dir else None
                    if series_dir is not None:
                        found = self._pick(series_dir, series_dir / parts[-1], role)
                        if found is not None:
                            return found
                for series_dir in (root / "jpeg" / series, root / series):
                    if series_dir.is_dir():
                        found = self._pick(series_dir, series_dir / parts[-1], role)
                        if found is not None:
                            return found
        return None

    @staticmethod
    def _pick(folder: Path, named: Path, role: str) -> Path | None:
        """The named file for full images (else the largest image); the largest for masks."""
        if role == "full" and named.is_file():
            return named
        try:
            images = sorted(p for p in folder.iterdir() if p.is_file() and _is_image(p))
        except OSError:
            return None
        if not images:
            return None
        if len(images) == 1:
            return images[0]
        return max(images, key=_pixel_count)


def mask_box(path: Path, shape: tuple[int, int] | None = None) -> tuple[float, ...] | None:
    """The bounding box of a ROI mask's foreground, in continuous pixel coordinates.

    A pixel at (row r, column c) covers ``[c, c + 1) x [r, r + 1)``, so the box
    runs from the left edge of the leftmost foreground pixel to the right edge of
    the rightmost one (``xmax`` = last column + 1), likewise for rows. Foreground
    is above the midpoint of the mask's range.

    Parameters
    ----------
    path : pathlib.Path
        The mask file (DICOM, PNG, ...).
    shape : tuple of int, optional
        (rows, columns) of the full mammogram; when the mask's shape differs the box
        is scaled to it (a few CBIS-DDSM masks were stored at another size).

    Returns
    -------
    tuple of float or None
        ``(xmin, ymin, xmax, ymax)``, or ``None`` when the mask is unreadable or empty.
    """
    try:
        mask = read_image(path)
    except MammodissectError as exc:
        logger.warning("cbis-ddsm: ROI mask unreadable, box left empty (%s)", exc)
        return None
    low, high = float(mask.min()), float(mask.max())
    if high <= low:
        return None
    rows = np.flatnonzero((mask > (low + high) / 2).any(axis=1))
    cols = np.flatnonzero((mask > (low + high) / 2).any(axis=0))
    box = [float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)]
    if shape is not None and tuple(shape) != mask.shape:
        sy, sx = shape[0] / mask.shape[0], shape[1] / mask.shape[1]
        box = [box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy]
    return tuple(box)


def read(
    root: str | os.PathLike[str],
    *,
    missing: str = "error",
    mask_boxes: bool = True,
    workers: int | None = None,
) -> Probe:
    """Read a CBIS-DDSM download as a probe with one item per full mammogram.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset folder: the one holding the case-description CSVs (directly or
        in a sub-folder such as ``csv/``) and the image folders.
    missing : {"error", "skip"}, optional
        What to do with a full mammogram the CSVs list but the folder lacks. A
        missing or unreadable ROI mask never fails: its box gets NaN coordinates.
    mask_boxes : bool, optional
        Read every ROI mask to compute its box (the default; a few minutes for the
        whole dataset). ``False`` keeps NaN coordinates.
    workers : int, optional
        Threads reading masks (default: up to 8).

    Returns
    -------
    Probe
        Items named by the case folder of the full image
        (``Mass-Training_P_00001_LEFT_CC``), tables in the order of :data:`TABLES`.
        Labels: ``patient_id, view, laterality, split`` (from the table name),
        ``density`` (A-D), ``birads`` (the highest assessment), ``findings``
        (``calcification``/``mass``), ``pathology`` (the worst), ``subtlety`` (the
        highest), ``n_abnormalities``, ``"|"``-joined ``mass_shape, mass_margins,
        calc_type, calc_distribution``, and any further column. Boxes: one per
        abnormality: ``finding`` (the abnormality type), the mask's bounding box,
        ``abnormality_id, mask_path`` (relative to the root when found, else as
        listed), ``mass_shape, mass_margins, calc_type, calc_distribution,
        finding_birads`` (the assessment), ``pathology, subtlety``.

    Raises
    ------
    MammodissectError
        If no case-description CSV is found, one lacks the needed columns, or a
        full mammogram is missing (unless ``missing="skip"``).
    """
    policy = check_missing(missing)
    folder = dataset_root(root, NAME)
    first = locate(folder, list(TABLES))
    if first is None:
        raise MammodissectError(
            f"'{os.fspath(root)}' is not a CBIS-DDSM folder: none of the expected files "
            f"{', '.join(TABLES)} is in it or its sub-folders"
        )
    base = first.parent
    present = {name: base / name for name in TABLES if (base / name).is_file()}
    absent = [name for name in TABLES if name not in present]
    if absent:
        logger.info("cbis-ddsm: reading %s; absent: %s", ", ".join(present), ", ".join(absent))
    resolver = _Resolver(folder, base)
    collector = Collector(root=folder, layout=NAME, missing=policy)
    abnormalities: dict[str, list[dict[str, Any]]] = {}
    labels_of: dict[str, dict[str, Any]] = {}
    skipped: set[str] = set()
    unfound = 0
    required = ["patient_id", "left_or_right_breast", "image_view", "image_file_path"]
    for name, path in present.items():
        table = read_table(path, layout=NAME, required=required)
        extras = [c for c in table.columns if c not in _CONSUMED]
        for row_index, row in enumerate(table.to_dict("records"), start=1):
            listed = text(row["image_file_path"])
            parts = _parts(listed)
            if not parts:
                raise MammodissectError(
                    f"{NAME} table '{name}' data row {row_index}: empty image file path"
                )
            image_id = parts[0] if len(parts) > 1 else Path(parts[0]).stem
            if image_id in skipped:
                continue
            if image_id not in labels_of:
                image = resolver.resolve(listed, "full")
                labels: dict[str, Any] = {
                    "patient_id": text(row["patient_id"]),
                    "view": norm_view(row["image_view"]),
                    "laterality": norm_laterality(row["left_or_right_breast"]),
                    "split": TABLES[name],
                    "density": norm_density(row.get("breast_density")),
                }
                labels.update({column: row[column] for column in extras})
                if not collector.add(
                    image_id, image, labels, table=name, row=row_index, listed=listed
                ):
                    skipped.add(image_id)
                    continue
                assert image is not None
                labels_of[image_id] = labels
                abnormalities[image_id] = []
            mask_listed = text(row.get("roi_mask_file_path"))
            mask = resolver.resolve(mask_listed, "mask") if mask_listed else None
            abnormality: dict[str, Any] = {
                "image_id": image_id,
                "finding": text(row.get("abnormality_type")).lower(),
                "abnormality_id": text(row.get("abnormality_id")),
                "mask_path": relpath(mask, folder) if mask is not None else mask_listed,
                "xmin": np.nan,
                "ymin": np.nan,
                "xmax": np.nan,
                "ymax": np.nan,
            }
            for column in _PER_ABNORMALITY:
                abnormality[column] = text(row.get(column)) or None
            abnormality["finding_birads"] = norm_birads(row.get("assessment"))
            abnormality["pathology"] = text(row.get("pathology")).upper() or None
            abnormality["subtlety"] = text(row.get("subtlety")) or None
            abnormalities[image_id].append(abnormality)
            unfound += mask is None

    if unfound:
        logger.warning(
            "cbis-ddsm: %d ROI mask file(s) not found; their boxes have no coordinates", unfound
        )
    for image_id, labels in labels_of.items():
        found = abnormalities[image_id]
        birads = [b["finding_birads"] for b in found if not pd.isna(b["finding_birads"])]
        pathologies = [b["pathology"] for b in found if b["pathology"]]
        subtlety = [int(float(b["subtlety"])) for b in found if _is_number(b["subtlety"])]
        labels["birads"] = max(birads) if birads else None
        labels["findings"] = join_unique(b["finding"] for b in found)
        labels["pathology"] = (
            max(pathologies, key=lambda p: _PATHOLOGY_RANK.get(p, -1)) if pathologies else None
        )
        labels["subtlety"] = max(subtlety) if subtlety else None
        labels["n_abnormalities"] = len(found)
        for column in _PER_ABNORMALITY:
            labels[column] = join_unique(b[column] for b in found)
    _log_shared_views(labels_of)
    boxes = [box for image_id in labels_of for box in abnormalities[image_id]]
    probe = make_probe(collector, boxes=boxes, id_columns=["patient_id"])
    return add_mask_boxes(probe, workers=workers) if mask_boxes else probe


def _is_number(value: Any) -> bool:
    """Whether a cell holds a number."""
    try:
        float(text(value))
    except ValueError:
        return False
    return True


def add_mask_boxes(probe: Probe, *, workers: int | None = None) -> Probe:
    """Fill the corners of boxes that have a readable ROI mask and no coordinates yet.

    The spec loader reads CBIS-DDSM with ``mask_boxes=False``, selects, then calls
    this, so that only the kept images' masks are read.

    Parameters
    ----------
    probe : Probe
        A probe whose :attr:`Probe.boxes` has a ``mask_path`` column (relative to
        :attr:`Probe.root`).
    workers : int, optional
        Threads reading masks (default: up to 8).

    Returns
    -------
    Probe
        The same images with the boxes' coordinates filled in (NaN for masks that
        are missing, unreadable or empty).
    """
    boxes = probe.boxes
    if boxes is None or "mask_path" not in boxes.columns or boxes.empty:
        return probe
    corners_known = boxes[["xmin", "ymin", "xmax", "ymax"]].notna().any(axis=1).tolist()
    masks = [probe.root / str(path) for path in boxes["mask_path"].tolist()]
    image_ids = [str(image_id) for image_id in boxes["image_id"].tolist()]
    todo = [
        position
        for position, known in enumerate(corners_known)
        if not known and masks[position].is_file()
    ]
    if not todo:
        return probe
    shapes: dict[str, tuple[int, int] | None] = {}
    lock = threading.Lock()

    def work(position: int) -> tuple[float, ...] | None:
        image_id = image_ids[position]
        with lock:
            known = image_id in shapes
        if not known:
            shape = _image_shape(probe.items[probe.position(image_id)].path)
            with lock:
                shapes[image_id] = shape
        return mask_box(masks[position], shapes[image_id])

    count = workers if workers is not None else min(8, os.cpu_count() or 1)
    if count > 1 and len(todo) > 1:
        with ThreadPoolExecutor(max_workers=count) as pool:
            results = list(pool.map(work, todo))
    else:
        results = [work(position) for position in todo]
    filled = boxes.reset_index(drop=True)
    empty = 0
    for position, corners in zip(todo, results, strict=True):
        if corners is None:
            empty += 1
            continue
        filled.loc[position, ["xmin", "ymin", "xmax", "ymax"]] = corners
    if empty:
        logger.warning(
            "cbis-ddsm: %d ROI mask(s) unreadable or empty; their boxes have no coordinates",
            empty,
        )
    logger.info("cbis-ddsm: boxes from %d ROI masks", len(todo) - empty)
    return dataclasses.replace(probe, boxes=filled)


def _log_shared_views(labels_of: dict[str, dict[str, Any]]) -> None:
    """Note mammograms that CBIS-DDSM ships twice (a mass copy and a calc copy)."""
    seen: dict[tuple[str, str, str], int] = {}
    for labels in labels_of.values():
        key = (labels["patient_id"], str(labels["laterality"]), str(labels["view"]))
        seen[key] = seen.get(key, 0) + 1
    shared = sum(1 for count in seen.values() if count > 1)
    if shared:
        logger.info(
            "cbis-ddsm: %d patient/side/view combination(s) appear as separate mass and calc "
            "copies; select with where=\"findings == 'mass'\" (or 'calcification') to avoid both",
            shared,
        )
