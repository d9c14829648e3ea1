"""EMBED (Emory Breast Imaging Dataset, AWS Open Data release): image metadata + clinical.

``tables/EMBED_OpenData_metadata.csv`` (or its ``_reduced`` version) has one row per
file: ``empi_anon`` (patient), ``acc_anon`` (exam), ``anon_dicom_path``,
``FinalImageType`` (``2D``, ``C-view``, ...), ``ImageLateralityFinal`` (L/R),
``ViewPosition``, ``spot_mag``, ``num_roi`` and ``ROI_coords`` (a list of
``(ymin, xmin, ymax, xmax)``), among many DICOM attributes. Images sit at
``cohort_<n>/<patient>/<exam>/.../<file>.dcm``; ``anon_dicom_path`` gives that path
under a prefix of the data provider's machine, so the reader matches its tail under
the dataset folder. ``tables/EMBED_OpenData_clinical.csv`` has one row per finding of
an exam: ``acc_anon``, ``side`` (L, R, B or empty), ``asses`` (BI-RADS letter:
A=0, N=1, B=2, P=3, S=4, M=5, K=6), ``tissueden`` (1-4 = density A-D, 5 = male),
``path_severity`` (0 = invasive cancer ... 6) and the finding descriptors ``massshape,
massmargin, massdens, calcfind, calcdistri`` (passed to the labels as the table codes them,
the codes of the image's side joined with ``|``); it is joined on the exam and the side.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from mammodissect.errors import MammodissectError
from mammodissect.probe.dataset import Probe
from mammodissect.probe.layouts._common import (
    Collector,
    check_missing,
    dataset_root,
    join_unique,
    literal,
    locate,
    make_probe,
    norm_density,
    norm_laterality,
    norm_view,
    read_table,
    text,
)

__all__ = ["ASSESSMENT", "CLINICAL_TABLES", "METADATA_TABLES", "NAME", "read"]

logger = logging.getLogger(__name__)

NAME = "embed"
#: Image tables, in order of preference.
METADATA_TABLES = ("EMBED_OpenData_metadata.csv", "EMBED_OpenData_metadata_reduced.csv")
#: Clinical tables, in order of preference.
CLINICAL_TABLES = ("EMBED_OpenData_clinical.csv", "EMBED_OpenData_clinical_reduced.csv")
#: BI-RADS category of each ``asses`` letter.
ASSESSMENT = {"A": 0, "N": 1, "B": 2, "P": 3, "S": 4, "M": 5, "K": 6}
# Most to least severe, to choose one BI-RADS per image among several findings.
_SEVERITY = [6, 5, 4, 0, 3, 2, 1]

_COHORT = re.compile(r"cohort_?\d+", re.IGNORECASE)


def _column(table: pd.DataFrame, name: str) -> str | None:
    """The column of ``table`` called ``name`` ignoring case and ``_``."""
    wanted = name.lower().replace("_", "")
    for column in table.columns:
        if str(column).strip().lower().replace("_", "") == wanted:
            return column
    return None


def _cell(row: Mapping[str, Any], column: str | None) -> Any:
    """``row[column]`` or NaN when the table lacks the column."""
    return row[column] if column is not None else float("nan")


def _assessment(value: Any) -> int | None:
    """BI-RADS 0-6 from an ``asses`` letter or number."""
    raw = text(value).upper()
    if raw in ASSESSMENT:
        return ASSESSMENT[raw]
    try:
        number = float(raw)
    except ValueError:
        return None
    return int(number) if number in (0, 1, 2, 3, 4, 5, 6) else None


def _fours(raw: str) -> list[list[float]]:
    """The numbers in ``raw`` in groups of four (an incomplete last group left out)."""
    numbers = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", raw)]
    return [numbers[i : i + 4] for i in range(0, len(numbers) - 3, 4)]


def _rois(value: Any) -> list[tuple[float, float, float, float]]:
    """``ROI_coords`` as a list of ``(ymin, xmin, ymax, xmax)``."""
    raw = text(value)
    if not raw:
        return []
    parsed = literal(raw, _fours)
    if (
        isinstance(parsed, list | tuple)
        and len(parsed) == 4
        and all(isinstance(v, int | float | str) for v in parsed)
    ):
        parsed = [parsed]
    boxes = []
    for entry in parsed if isinstance(parsed, list | tuple) else []:
        try:
            ymin, xmin, ymax, xmax = (float(v) for v in entry)
        except (TypeError, ValueError):
            continue
        boxes.append((ymin, xmin, ymax, xmax))
    return boxes


class _PathFinder:
    """Match ``anon_dicom_path`` tails under the dataset folder, remembering what worked."""

    def __init__(self, bases: list[Path]) -> None:
        self.bases = bases
        self.strategies: list[tuple[int, int]] = []  # (base index, components dropped)

    def find(self, listed: str) -> Path | None:
        parts = [p for p in listed.replace("\\", "/").split("/") if p and p not in (".", "..")]
        if parts and parts[0].lower().startswith("s3:"):
            parts = parts[2:]  # s3://bucket/...
        if not parts:
            return None
        for base_index, drop in self.strategies:
            if drop < len(parts):
                path = self.bases[base_index].joinpath(*parts[drop:])
                if path.is_file():
                    return path
        for drop in range(len(parts)):
            for base_index, base in enumerate(self.bases):
                path = base.joinpath(*parts[drop:])
                if path.is_file():
                    self.strategies.insert(0, (base_index, drop))
                    del self.strategies[8:]
                    return path
        return None


#: One clinical row: side, BI-RADS, density letter, path severity, description, descriptors.
_Finding = tuple[str, int | None, Any, Any, Any, dict[str, str]]
#: The clinical table's finding descriptors, passed to the labels as the table codes them.
DESCRIPTORS = ("massshape", "massmargin", "massdens", "calcfind", "calcdistri")


def _clinical(path: Path) -> dict[str, list[_Finding]]:
    """Clinical rows per exam: (side, BI-RADS, density letter, path severity, description,
    descriptor codes)."""
    table = read_table(path, layout=NAME, rename=False)
    acc = _column(table, "acc_anon")
    if acc is None:
        raise MammodissectError(
            f"{NAME} table '{path.name}' lacks column acc_anon; is it EMBED's clinical table?"
        )
    side, asses = _column(table, "side"), _column(table, "asses")
    density, severity = _column(table, "tissueden"), _column(table, "path_severity")
    desc = _column(table, "desc")
    described = {name: column for name in DESCRIPTORS if (column := _column(table, name))}
    exams: dict[str, list[_Finding]] = {}
    for row in table.to_dict("records"):
        exams.setdefault(text(row[acc]), []).append(
            (
                text(_cell(row, side)).upper(),
                _assessment(_cell(row, asses)),
                norm_density(_cell(row, density)),
                _cell(row, severity),
                text(_cell(row, desc)),
                {name: text(row[column]) for name, column in described.items()},
            )
        )
    return exams


def read(
    root: str | os.PathLike[str],
    *,
    missing: str = "error",
    clinical: bool = True,
) -> Probe:
    """Read an EMBED download as a probe of its 2D images.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset folder (holding ``tables/`` and the ``cohort_*`` image folders,
        possibly under ``images/``).
    missing : {"error", "skip"}, optional
        What to do with an image the metadata lists but the folder lacks.
    clinical : bool, optional
        Join the clinical table when there is one (density, BI-RADS, pathology).

    Returns
    -------
    Probe
        Items of ``FinalImageType == "2D"`` rows, named by file name without
        extension (by the path's last three components when names repeat), in
        table order. Labels: ``patient_id`` (empi_anon), ``study_id`` (acc_anon),
        ``view``, ``laterality``, and from the clinical table ``density`` (A-D, the
        exam's), ``birads`` (the most severe assessment of the findings on the
        image's side or both sides: 6, 5, 4, 0, 3, 2, 1), ``path_severity`` (the
        lowest, 0 = invasive cancer), ``exam_description``; then ``image_type,
        spot_mag, num_roi, cohort``. No other DICOM attribute is kept. Boxes: one
        per ``ROI_coords`` entry, ``finding = "roi"``.

    Raises
    ------
    MammodissectError
        If the metadata table is absent or lacks ``anon_dicom_path``, or an image is
        missing (unless ``missing="skip"``).
    """
    policy = check_missing(missing)
    folder = dataset_root(root, NAME)
    metadata = locate(folder, list(METADATA_TABLES))
    if metadata is None:
        raise MammodissectError(
            f"'{os.fspath(root)}' is not an EMBED folder: expected file "
            f"'{METADATA_TABLES[0]}' is absent from it and its sub-folders (tables/)"
        )
    table = read_table(metadata, layout=NAME, rename=False)
    path_col = _column(table, "anon_dicom_path")
    if path_col is None:
        raise MammodissectError(
            f"{NAME} table '{metadata.name}' lacks column anon_dicom_path; "
            "is it EMBED's metadata table?"
        )
    patient, exam = _column(table, "empi_anon"), _column(table, "acc_anon")
    view, side = _column(table, "ViewPosition"), _column(table, "ImageLateralityFinal")
    kind, spot = _column(table, "FinalImageType"), _column(table, "spot_mag")
    n_roi, roi = _column(table, "num_roi"), _column(table, "ROI_coords")
    if kind is None:
        logger.warning("embed: '%s' has no FinalImageType column; keeping every row", metadata.name)
    exams: dict[str, list[_Finding]] = {}
    clinical_file = None
    if clinical:
        clinical_file = next(
            (metadata.parent / n for n in CLINICAL_TABLES if (metadata.parent / n).is_file()),
            None,
        ) or locate(folder, list(CLINICAL_TABLES))
        if clinical_file is None:
            logger.info("embed: no clinical table; density and BI-RADS are not known")
        else:
            exams = _clinical(clinical_file)

    bases = [folder, metadata.parent, metadata.parent.parent, folder / "images"]
    finder = _PathFinder([b for i, b in enumerate(bases) if b not in bases[:i] and b.is_dir()])
    collector = Collector(root=folder, layout=NAME, missing=policy)
    boxes: list[dict[str, Any]] = []
    listed_by_id: dict[str, str] = {}
    kept_2d = 0
    for row_index, row in enumerate(table.to_dict("records"), start=1):
        if kind is not None and text(row[kind]).upper() != "2D":
            continue
        kept_2d += 1
        listed = text(row[path_col])
        parts = [p for p in listed.replace("\\", "/").split("/") if p]
        if not parts:
            raise MammodissectError(
                f"{NAME} table '{metadata.name}' data row {row_index}: empty anon_dicom_path"
            )
        image_id = Path(parts[-1]).stem
        if image_id in listed_by_id:
            if listed_by_id[image_id] == listed:
                logger.warning(
                    "embed: '%s' lists '%s' again; kept the first", metadata.name, listed
                )
                continue
            image_id = "/".join([*parts[-3:-1], Path(parts[-1]).stem])
        listed_by_id[image_id] = listed
        laterality = norm_laterality(_cell(row, side))
        labels: dict[str, Any] = {
            "patient_id": text(_cell(row, patient)),
            "study_id": text(_cell(row, exam)),
            "view": norm_view(_cell(row, view)),
            "laterality": laterality,
        }
        if clinical_file is not None:
            labels.update(_clinical_labels(exams.get(labels["study_id"], []), laterality))
        labels["image_type"] = text(_cell(row, kind)) or None
        labels["spot_mag"] = text(_cell(row, spot)) or None
        labels["num_roi"] = text(_cell(row, n_roi)) or None
        cohort = _COHORT.search(listed)
        labels["cohort"] = cohort.group(0).lower() if cohort else None
        if not collector.add(
            image_id,
            finder.find(listed),
            labels,
            table=metadata.name,
            row=row_index,
            listed=listed,
        ):
            continue
        for ymin, xmin, ymax, xmax in _rois(_cell(row, roi)):
            boxes.append(
                {
                    "image_id": image_id,
                    "finding": "roi",
                    "xmin": xmin,
                    "ymin": ymin,
                    "xmax": xmax,
                    "ymax": ymax,
                }
            )
    if not kept_2d:
        raise MammodissectError(f"{NAME} table '{metadata.name}' lists no 2D images")
    return make_probe(
        collector,
        boxes=boxes if roi is not None else None,
        id_columns=["patient_id", "study_id"],
    )


def _clinical_labels(findings: list[_Finding], laterality: Any) -> dict[str, Any]:
    """Density, BI-RADS, pathology severity and description of one image's exam findings."""
    side = laterality if isinstance(laterality, str) else ""
    matching = [f for f in findings if f[0] in ("", "B") or not side or f[0] == side]
    densities = [f[2] for f in findings if isinstance(f[2], str)]
    birads = [f[1] for f in matching if f[1] is not None]
    severities = []
    for finding in matching:
        try:
            severities.append(int(float(text(finding[3]))))
        except ValueError:
            continue
    codes = {
        name: join_unique(f[5].get(name) for f in matching) or None
        for name in DESCRIPTORS
        if any(name in f[5] for f in findings)
    }
    return {
        "density": densities[0] if densities else None,
        "birads": min(birads, key=_SEVERITY.index) if birads else None,
        "path_severity": min(severities) if severities else None,
        "exam_description": next((f[4] for f in findings if f[4]), None),
        **codes,
    }
