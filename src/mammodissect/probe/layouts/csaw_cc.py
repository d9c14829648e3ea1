"""CSAW-CC (Karolinska, case-control subset of CSAW): one screening-data CSV.

``CSAW-CC_breast_cancer_screening_data.csv`` has one row per image:
``anon_patientid, exam_year, x_age, x_case`` (1 = cancer case, 0 = control),
``x_cancer_laterality, x_type, x_lymphnode_met, rad_timing, rad_r1, rad_r2,
rad_recall, rad_recall_type_right, rad_recall_type_left, imagelaterality``
(Left/Right), ``viewposition`` (CC/MLO), ``libra_breastarea, libra_densearea,
libra_percentdensity`` and ``anon_filename`` (the DICOM's file name). The images
come in batch folders whose layout varies between copies, so the reader finds each
file by name anywhere under the dataset folder.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from mammodissect.errors import MammodissectError
from mammodissect.probe.dataset import Probe
from mammodissect.probe.layouts._common import (
    Collector,
    NameIndex,
    check_missing,
    dataset_root,
    first_file,
    locate,
    make_probe,
    norm_laterality,
    norm_view,
    read_table,
    text,
)

__all__ = ["NAME", "TABLE", "read"]

logger = logging.getLogger(__name__)

NAME = "csaw-cc"
#: The image table.
TABLE = "CSAW-CC_breast_cancer_screening_data.csv"

_CONSUMED = {"anon_patientid", "imagelaterality", "viewposition", "anon_filename"}


def read(root: str | os.PathLike[str], *, missing: str = "error") -> Probe:
    """Read a CSAW-CC download as a probe.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset folder: the CSV (or another ``CSAW-CC*.csv``) and the image
        folders, at any depth below it.
    missing : {"error", "skip"}, optional
        What to do with an image the CSV lists but the folder lacks.

    Returns
    -------
    Probe
        Items named by ``anon_filename`` without extension, in CSV order. Labels:
        ``patient_id`` (anon_patientid), ``view``, ``laterality``, then the CSV's own
        columns (``exam_year, x_age, x_case, x_cancer_laterality, rad_timing,
        rad_recall, libra_percentdensity``, ...). CSAW-CC has no split, BI-RADS
        density category or boxes.

    Raises
    ------
    MammodissectError
        If the CSV is absent or lacks ``anon_filename``, an image is missing (unless
        ``missing="skip"``), or a file name repeats.
    """
    policy = check_missing(missing)
    folder = dataset_root(root, NAME)
    csv = locate(folder, [TABLE, "csaw-cc*.csv", "csaw_cc*.csv"])
    if csv is None:
        raise MammodissectError(
            f"'{os.fspath(root)}' is not a CSAW-CC folder: expected file '{TABLE}' is "
            "absent from it and its sub-folders"
        )
    table = read_table(csv, layout=NAME, required=["anon_filename"])
    extras = [column for column in table.columns if column not in _CONSUMED]
    index = NameIndex(folder)
    collector = Collector(root=folder, layout=NAME, missing=policy)
    for row_index, row in enumerate(table.to_dict("records"), start=1):
        name = Path(text(row["anon_filename"]).replace("\\", "/")).name
        if not name:
            raise MammodissectError(
                f"{NAME} table '{csv.name}' data row {row_index}: empty anon_filename"
            )
        stem = Path(name).stem
        names = [name, f"{stem}.png"] if Path(name).suffix.lower() != ".png" else [name]
        direct = [base / n for base in (csv.parent, folder, folder / "images") for n in names]
        path = first_file(direct)
        if path is None:
            path = next((p for p in map(index.find, names) if p is not None), None)
        labels: dict[str, Any] = {
            "patient_id": text(row.get("anon_patientid")),
            "view": norm_view(row.get("viewposition")),
            "laterality": norm_laterality(row.get("imagelaterality")),
        }
        labels.update({column: row[column] for column in extras})
        collector.add(stem, path, labels, table=csv.name, row=row_index, listed=name)
    return make_probe(collector, id_columns=["patient_id"])
