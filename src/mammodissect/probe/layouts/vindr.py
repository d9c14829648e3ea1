"""VinDr-Mammo (PhysioNet ``vindr-mammo``): breast-level labels, finding boxes.

The download holds ``breast-level_annotations.csv`` (one row per image: ``study_id,
series_id, image_id, laterality, view_position, height, width, breast_birads,
breast_density, split``), ``finding_annotations.csv`` (the same ids, one row per
finding: ``finding_categories`` as a Python-list-like string, ``finding_birads``,
``xmin, ymin, xmax, ymax``, empty for ``['No Finding']``) and the images at
``images/<study_id>/<image_id>.dicom``. The published probe repeated an image once
per finding row; this reader lists each image once and turns the findings into
labels and boxes.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

from mammodissect.errors import MammodissectError
from mammodissect.probe.dataset import Probe
from mammodissect.probe.layouts._common import (
    CONVERTED_EXTENSIONS,
    Collector,
    check_missing,
    dataset_root,
    first_file,
    locate,
    make_probe,
    norm_birads,
    norm_density,
    norm_laterality,
    norm_split,
    norm_view,
    parse_list,
    read_table,
    text,
    with_extensions,
)

__all__ = ["BREAST_TABLE", "FINDING_TABLE", "NAME", "NO_FINDING", "read"]

logger = logging.getLogger(__name__)

NAME = "vindr"
#: One row per image.
BREAST_TABLE = "breast-level_annotations.csv"
#: One row per finding.
FINDING_TABLE = "finding_annotations.csv"
#: The category of finding rows that describe no finding.
NO_FINDING = "No Finding"

_IMAGE_EXTENSIONS = (".dicom", *CONVERTED_EXTENSIONS)
_CONSUMED = {
    "image_id",
    "study_id",
    "laterality",
    "view_position",
    "breast_birads",
    "breast_density",
    "split",
    "finding_categories",
    "finding_birads",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
}


def _coordinate(value: Any) -> float:
    """A box coordinate as a float (NaN when empty or not a number)."""
    try:
        return float(text(value))
    except ValueError:
        return math.nan


def read(root: str | os.PathLike[str], *, missing: str = "error") -> Probe:
    """Read a VinDr-Mammo download as a probe with one item per image.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset folder (the one holding the two CSVs and ``images/``, or a
        folder up to four levels above it, as PhysioNet downloads nest it).
    missing : {"error", "skip"}, optional
        What to do with an image the CSV lists but the folder lacks.

    Returns
    -------
    Probe
        Items ``image_id`` (the CSV's) at ``images/<study_id>/<image_id>.dicom``
        (``.dcm``/``.png`` copies are found too), in CSV order. Labels:
        ``study_id, view, laterality, split`` (``train``/``test``), ``density``
        (A-D), ``birads`` (0-6), ``findings`` (sorted distinct finding categories,
        ``"|"``-joined, ``""`` for none), ``series_id, height, width`` and any
        further CSV column. Boxes: one per finding region with coordinates,
        ``finding`` = its categories ``"|"``-joined, plus ``finding_birads``.

    Raises
    ------
    MammodissectError
        If neither CSV is found, a CSV lacks its id columns, or an image is missing
        (unless ``missing="skip"``). A repeated image id is listed once, with a warning.
    """
    policy = check_missing(missing)
    folder = dataset_root(root, NAME)
    breast_csv = locate(folder, [BREAST_TABLE])
    finding_csv = (
        first_file([breast_csv.parent / FINDING_TABLE])
        if breast_csv is not None
        else locate(folder, [FINDING_TABLE])
    )
    if breast_csv is None and finding_csv is None:
        raise MammodissectError(
            f"'{os.fspath(root)}' is not a VinDr-Mammo folder: expected file "
            f"'{BREAST_TABLE}' (and '{FINDING_TABLE}') is absent from it and its sub-folders"
        )
    ids = ["study_id", "image_id"]
    findings = (
        read_table(finding_csv, layout=NAME, required=[*ids, "finding_categories"])
        if finding_csv is not None
        else None
    )
    if breast_csv is not None:
        images = read_table(breast_csv, layout=NAME, required=ids)
        table_name = BREAST_TABLE
    else:
        assert findings is not None
        logger.warning(
            "vindr: '%s' not found; listing the images of '%s' once each",
            BREAST_TABLE,
            FINDING_TABLE,
        )
        images = findings.drop_duplicates("image_id", keep="first")
        table_name = FINDING_TABLE
    if findings is None:
        logger.warning("vindr: '%s' not found; no findings or boxes", FINDING_TABLE)
    listing_csv = breast_csv if breast_csv is not None else finding_csv
    assert listing_csv is not None
    base = listing_csv.parent

    per_image: dict[str, list[str]] = {}
    boxes: list[dict[str, Any]] = []
    if findings is not None:
        for finding in findings.to_dict("records"):
            image_id = text(finding["image_id"])
            categories = [c for c in parse_list(finding["finding_categories"]) if c != NO_FINDING]
            per_image.setdefault(image_id, []).extend(categories)
            corners = [_coordinate(finding.get(key)) for key in ("xmin", "ymin", "xmax", "ymax")]
            if not categories or any(math.isnan(c) for c in corners):
                continue
            if corners[2] <= corners[0] or corners[3] <= corners[1]:
                continue
            box: dict[str, Any] = {"image_id": image_id, "finding": "|".join(categories)}
            box.update(zip(("xmin", "ymin", "xmax", "ymax"), corners, strict=True))
            box["finding_birads"] = norm_birads(finding.get("finding_birads"))
            boxes.append(box)

    collector = Collector(root=folder, layout=NAME, missing=policy)
    extras = [c for c in images.columns if c not in _CONSUMED]
    for row_index, row in enumerate(images.to_dict("records"), start=1):
        image_id, study_id = text(row["image_id"]), text(row["study_id"])
        if image_id in collector:
            logger.warning(
                "vindr: '%s' lists image '%s' again; kept the first", table_name, image_id
            )
            continue
        candidates = with_extensions(base / "images" / study_id, image_id, _IMAGE_EXTENSIONS)
        labels: dict[str, Any] = {
            "study_id": study_id,
            "view": norm_view(row.get("view_position")),
            "laterality": norm_laterality(row.get("laterality")),
            "split": norm_split(row.get("split")),
            "density": norm_density(row.get("breast_density")),
            "birads": norm_birads(row.get("breast_birads")),
            "findings": "|".join(sorted(set(per_image.get(image_id, [])))),
        }
        labels.update({column: row[column] for column in extras})
        collector.add(
            image_id,
            first_file(candidates),
            labels,
            table=table_name,
            row=row_index,
            listed=f"images/{study_id}/{image_id}.dicom",
        )
    unknown = {box["image_id"] for box in boxes} - {text(value) for value in images["image_id"]}
    if unknown:
        logger.warning(
            "vindr: %d image(s) of '%s' are not in '%s'; their boxes are left out",
            len(unknown),
            FINDING_TABLE,
            table_name,
        )
    return make_probe(
        collector, boxes=boxes if findings is not None else None, id_columns=["series_id"]
    )
