"""RSNA Screening Mammography Breast Cancer Detection (Kaggle 2022-23).

``train.csv`` has one row per image: ``site_id, patient_id, image_id, laterality``
(L/R), ``view`` (CC, MLO, AT, ML, LM, LMO), ``age, cancer, biopsy, invasive,
BIRADS`` (0-2 or empty), ``implant, density`` (A-D or empty), ``machine_id,
difficult_negative_case``; the images are ``train_images/<patient_id>/<image_id>.dcm``.
An optional ``test.csv`` (with ``prediction_id``) lists ``test_images/`` the same way.
"""

from __future__ import annotations

import logging
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
    norm_view,
    read_table,
    text,
    with_extensions,
)

__all__ = ["NAME", "TABLES", "read"]

logger = logging.getLogger(__name__)

NAME = "rsna"
#: Tables, their image folders and splits.
TABLES: dict[str, tuple[str, str]] = {
    "train.csv": ("train_images", "train"),
    "test.csv": ("test_images", "test"),
}

_REQUIRED = ["patient_id", "image_id", "laterality", "view"]
_CONSUMED = {"patient_id", "image_id", "laterality", "view", "birads", "density"}


def read(root: str | os.PathLike[str], *, missing: str = "error") -> Probe:
    """Read an RSNA Screening Mammography download as a probe.

    Parameters
    ----------
    root : str or os.PathLike
        The competition folder (``train.csv`` next to ``train_images/``).
    missing : {"error", "skip"}, optional
        What to do with an image a CSV lists but the folder lacks.

    Returns
    -------
    Probe
        Items named by ``image_id``, ``train.csv`` rows then ``test.csv`` rows.
        Labels: ``patient_id, view, laterality, split`` (``train``/``test``),
        ``density`` (A-D), ``birads`` (0-2 in this dataset), then ``site_id, age,
        cancer, biopsy, invasive, implant, machine_id, difficult_negative_case``
        (and ``prediction_id`` for test rows). No boxes.

    Raises
    ------
    MammodissectError
        If ``train.csv`` is absent or lacks the id columns, or an image is missing
        (unless ``missing="skip"``).
    """
    policy = check_missing(missing)
    folder = dataset_root(root, NAME)
    train = locate(folder, ["train.csv"], max_depth=2)
    if train is None:
        raise MammodissectError(
            f"'{os.fspath(root)}' is not an RSNA Screening Mammography folder: expected file "
            "'train.csv' is absent from it and its sub-folders"
        )
    base = train.parent
    collector = Collector(root=folder, layout=NAME, missing=policy)
    for name, (images, split) in TABLES.items():
        csv = base / name
        if not csv.is_file():
            continue
        table = read_table(csv, layout=NAME, required=_REQUIRED)
        extras = [column for column in table.columns if column not in _CONSUMED]
        for row_index, row in enumerate(table.to_dict("records"), start=1):
            patient, image_id = text(row["patient_id"]), text(row["image_id"])
            stem = image_id[:-2] if image_id.endswith(".0") else image_id
            path = first_file(with_extensions(base / images / patient, stem, CONVERTED_EXTENSIONS))
            labels: dict[str, Any] = {
                "patient_id": patient,
                "view": norm_view(row["view"]),
                "laterality": norm_laterality(row["laterality"]),
                "split": split,
                "density": norm_density(row.get("density")),
                "birads": norm_birads(row.get("birads")),
            }
            labels.update({column: row[column] for column in extras})
            collector.add(
                stem,
                path,
                labels,
                table=name,
                row=row_index,
                listed=f"{images}/{patient}/{stem}.dcm",
            )
    return make_probe(collector)
