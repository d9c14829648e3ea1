"""Dataset-layout readers, selection and the LAYOUT:PATH?OPTIONS probe spec.

Every test builds a small fake copy of a dataset's folder: CSVs with the real
column names and value formats, and tiny DICOM or PNG images.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammodissect.errors import MammodissectError
from mammodissect.probe import (
    BOX_COLUMNS,
    LAYOUTS,
    STANDARD_COLUMNS,
    Probe,
    load_probe,
    probe_layouts,
    read_layout,
    select,
)
from mammodissect.probe.layouts import cbis_ddsm, csaw_cc, embed, rsna, vindr
from mammodissect.testing import write_dicom

pydicom = pytest.importorskip("pydicom")


# ----------------------------------------------------------------------------- helpers


def _dicom(path: Path, pixels: np.ndarray) -> Path:
    """Write a minimal mammography DICOM holding ``pixels`` (uint8 or uint16)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_dicom(path, pixels, bits_stored=8 if pixels.dtype == np.uint8 else 16)


def _image(path: Path, rows: int = 16, cols: int = 12) -> Path:
    return _dicom(path, (np.arange(rows * cols, dtype=np.uint16) % 4000).reshape(rows, cols))


def _mask(path: Path, shape: tuple[int, int], rows: slice, cols: slice) -> Path:
    pixels = np.zeros(shape, dtype=np.uint8)
    pixels[rows, cols] = 255
    return _dicom(path, pixels)


def _csv(path: Path, rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# ----------------------------------------------------------------------------- VinDr

VINDR_IMAGES = [  # study, image, laterality, view, birads, density, split
    ("s1", "a1", "L", "CC", "BI-RADS 4", "DENSITY C", "training"),
    ("s1", "a2", "L", "MLO", "BI-RADS 1", "DENSITY C", "training"),
    ("s2", "b1", "R", "CC", "BI-RADS 2", "DENSITY B", "test"),
    ("s2", "b2", "R", "MLO", "BI-RADS 3", "DENSITY D", "test"),
    ("s3", "c1", "L", "CC", "BI-RADS 5", "DENSITY A", "training"),
]
VINDR_FINDINGS = [  # image, categories, finding birads, box
    ("a1", "['Mass']", "BI-RADS 4", (10.5, 12.0, 30.25, 40.0)),
    ("a1", "['Mass', 'Suspicious Calcification']", "BI-RADS 4", (5.0, 6.0, 9.0, 10.0)),
    ("a1", "['Suspicious Calcification']", "BI-RADS 3", (1.0, 2.0, 3.0, 4.0)),
    ("a2", "['No Finding']", None, None),
    ("b1", "['Architectural Distortion']", "BI-RADS 3", None),  # no box
    ("b2", "['No Finding']", None, None),
    ("c1", "['No Finding']", None, None),
]


def _vindr(root: Path) -> Path:
    """A VinDr-Mammo folder: both CSVs and images/<study_id>/<image_id>.dicom."""
    common = {}
    breast = []
    for study, image, side, view, birads, density, split in VINDR_IMAGES:
        common[image] = {
            "study_id": study,
            "series_id": f"ser-{study}",
            "image_id": image,
            "laterality": side,
            "view_position": view,
            "height": 16,
            "width": 12,
            "breast_birads": birads,
            "breast_density": density,
        }
        breast.append({**common[image], "split": split})
        _image(root / "images" / study / f"{image}.dicom")
    _csv(root / vindr.BREAST_TABLE, breast)
    findings = []
    splits = {row["image_id"]: row["split"] for row in breast}
    for image, categories, birads, box in VINDR_FINDINGS:
        corners = dict(zip(("xmin", "ymin", "xmax", "ymax"), box or (None,) * 4, strict=True))
        findings.append(
            {
                **common[image],
                "finding_categories": categories,
                "finding_birads": birads,
                **corners,
                "split": splits[image],
            }
        )
    _csv(root / vindr.FINDING_TABLE, findings)
    return root


@pytest.fixture()
def vindr_root(tmp_path: Path) -> Path:
    return _vindr(tmp_path / "vindr-mammo")


def test_vindr_one_item_per_image_with_labels(vindr_root: Path) -> None:
    probe = vindr.read(vindr_root)
    assert probe.image_ids == ["a1", "a2", "b1", "b2", "c1"]  # 7 finding rows, 5 images
    assert probe.source == "vindr"
    assert probe[0].relpath == "images/s1/a1.dicom"
    labels = probe.labels
    assert list(labels.columns[:8]) == [
        "study_id",
        "view",
        "laterality",
        "split",
        "density",
        "birads",
        "findings",
        "series_id",
    ]
    a1 = labels.loc["a1"]
    assert (a1["density"], a1["birads"], a1["split"]) == ("C", 4, "train")
    assert (a1["view"], a1["laterality"], a1["study_id"]) == ("CC", "L", "s1")
    assert a1["findings"] == "Mass|Suspicious Calcification"
    assert labels.loc["b1", "findings"] == "Architectural Distortion"  # no box, still a finding
    assert labels.loc["a2", "findings"] == ""
    assert labels.loc["b2", "split"] == "test"
    assert list(labels["birads"]) == [4, 1, 2, 3, 5]
    assert list(labels["density"]) == ["C", "C", "B", "D", "A"]
    assert labels["height"].tolist() == [16] * 5


def test_vindr_boxes(vindr_root: Path) -> None:
    boxes = vindr.read(vindr_root).boxes
    assert boxes is not None and tuple(boxes.columns[:6]) == BOX_COLUMNS
    assert len(boxes) == 3  # 'No Finding' rows and the empty box give none
    assert set(boxes["image_id"]) == {"a1"}
    assert boxes["finding"].tolist() == [
        "Mass",
        "Mass|Suspicious Calcification",
        "Suspicious Calcification",
    ]
    first = boxes.iloc[0]
    assert (first.xmin, first.ymin, first.xmax, first.ymax) == (10.5, 12.0, 30.25, 40.0)
    assert boxes["finding_birads"].tolist() == [4, 4, 3]
    assert boxes["xmin"].dtype == float


def test_vindr_nested_download_is_found(tmp_path: Path) -> None:
    root = tmp_path / "download"
    _vindr(root / "physionet.org" / "files" / "vindr-mammo" / "1.0.0")
    probe = vindr.read(root)
    assert len(probe) == 5
    assert probe[0].relpath == "physionet.org/files/vindr-mammo/1.0.0/images/s1/a1.dicom"


def test_vindr_missing_table_names_expected_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(MammodissectError, match=r"breast-level_annotations\.csv.*absent"):
        vindr.read(tmp_path / "empty")
    with pytest.raises(MammodissectError, match="not found"):
        vindr.read(tmp_path / "nowhere")


def test_missing_image_error_and_skip(vindr_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    (vindr_root / "images" / "s1" / "a1.dicom").unlink()
    with pytest.raises(MammodissectError) as info:
        vindr.read(vindr_root)
    message = str(info.value)
    assert "breast-level_annotations.csv" in message and "data row 1" in message
    assert "images/s1/a1.dicom" in message and "missing='skip'" in message
    with caplog.at_level(logging.WARNING):
        probe = vindr.read(vindr_root, missing="skip")
    assert probe.image_ids == ["a2", "b1", "b2", "c1"]
    assert probe.boxes is not None and probe.boxes.empty  # a1's boxes went with it
    assert "vindr: 1 listed image file(s) not found, skipped" in caplog.text
    assert [(r.where, r.relpath) for r in probe.missing] == [
        (f"vindr table '{vindr.BREAST_TABLE}' data row 1", "images/s1/a1.dicom")
    ]
    spec = load_probe(f"vindr:{vindr_root}?missing=skip")
    assert spec.image_ids == probe.image_ids
    with pytest.raises(MammodissectError, match="policy"):
        vindr.read(vindr_root, missing="ignore")


# ----------------------------------------------------------------------------- CBIS-DDSM

MASS_COLUMNS = ["patient_id", "breast_density", "left or right breast", "image view"]
CALC_COLUMNS = ["patient_id", "breast density", "left or right breast", "image view"]
UID = "1.3.6.1.4.1.9590.100.1.2."


_CBIS_KINDS = {  # abnormality type: the table's first columns, its two descriptor columns
    "mass": (MASS_COLUMNS, ("mass shape", "mass margins")),
    "calcification": (CALC_COLUMNS, ("calc type", "calc distribution")),
}


def _cbis_row(
    kind: str,
    breast: tuple[str, int, str, str],
    number: int,
    descriptors: tuple[str, str],
    grading: tuple[int, str, int],
    full: str,
    mask: str,
) -> dict[str, object]:
    """One case-description row: ``breast`` is (patient, density, side, view), ``grading``
    (assessment, pathology, subtlety); the listed crop is the mask's ``000000`` sibling."""
    first_columns, descriptor_columns = _CBIS_KINDS[kind]
    row: dict[str, object] = dict(zip(first_columns, breast, strict=True))
    row.update({"abnormality id": number, "abnormality type": kind})
    row.update(zip(descriptor_columns, descriptors, strict=True))
    row.update(zip(("assessment", "pathology", "subtlety"), grading, strict=True))
    row["image file path"] = full
    row["cropped image file path"] = mask.strip().replace("000001", "000000")
    row["ROI mask file path"] = mask
    return row


def _cbis(root: Path) -> Path:
    """Two tables; one image in classic folders (two masses), one in descriptive
    NBIA folders (one calcification), one whose mask is missing."""
    shape = (40, 32)
    # Image A, classic names: the listed paths exist as they are.
    a_full = f"Mass-Training_P_00001_LEFT_CC/{UID}111/{UID}222/000000.dcm"
    _image(root / a_full, *shape)
    a_mask1 = f"Mass-Training_P_00001_LEFT_CC_1/{UID}333/{UID}444/000001.dcm"
    _mask(root / a_mask1, shape, slice(5, 10), slice(10, 20))
    _image(root / a_mask1.replace("000001", "000000"), 6, 10)  # the crop, same folder
    # Abnormality 2: the CSV's mask path names the crop; the mask is its sibling.
    a_mask2 = f"Mass-Training_P_00001_LEFT_CC_2/{UID}555/{UID}666/000001.dcm"
    _image(root / a_mask2, 5, 4)
    _mask(root / a_mask2.replace("000001", "000000"), shape, slice(20, 25), slice(3, 7))
    # Image C: full image present, mask absent.
    c_full = f"Mass-Training_P_00002_RIGHT_MLO/{UID}777/{UID}888/000000.dcm"
    _image(root / c_full, *shape)
    c_mask = f"Mass-Training_P_00002_RIGHT_MLO_1/{UID}999/{UID}1000/000001.dcm"
    a_breast, c_breast = ("P_00001", 2, "LEFT", "CC"), ("P_00002", 4, "RIGHT", "MLO")
    mass = [  # breast, abnormality id, shape and margins, grading, full image, ROI mask
        (a_breast, 1, ("IRREGULAR", "SPICULATED"), (4, "MALIGNANT", 4), a_full, a_mask1 + "\n"),
        (a_breast, 2, ("OVAL", "CIRCUMSCRIBED"), (3, "BENIGN", 2), a_full, a_mask2),
        (c_breast, 1, ("ROUND", "OBSCURED"), (0, "BENIGN_WITHOUT_CALLBACK", 3), c_full, c_mask),
    ]
    _csv(
        root / "csv" / "mass_case_description_train_set.csv", [_cbis_row("mass", *r) for r in mass]
    )
    # Image B, descriptive names (NBIA Data Retriever): UID tails end the folder names.
    b_case = root / "Calc-Test_P_00038_RIGHT_MLO"
    _image(b_case / "08-29-2017-DDSM-12345" / "1.000000-full mammogram images-67890" / "1-1.dcm")
    b_series = (
        root
        / "Calc-Test_P_00038_RIGHT_MLO_1"
        / "08-29-2017-DDSM-54321"
        / "1.000000-ROI mask images-09876"
    )
    _image(b_series / "1-1.dcm", 3, 3)  # crop
    _mask(b_series / "1-2.dcm", (16, 12), slice(1, 3), slice(1, 2))
    b_full = f"Calc-Test_P_00038_RIGHT_MLO/{UID}9912345/{UID}8867890/000000.dcm"
    b_mask = f"Calc-Test_P_00038_RIGHT_MLO_1/{UID}7754321/{UID}6609876/000001.dcm\n"
    b_breast = ("P_00038", 3, "RIGHT", "MLO")
    calc = [(b_breast, 1, ("PLEOMORPHIC", "CLUSTERED"), (5, "MALIGNANT", 5), b_full, b_mask)]
    _csv(
        root / "csv" / "calc_case_description_test_set.csv",
        [_cbis_row("calcification", *r) for r in calc],
    )
    return root


def test_cbis_one_item_per_full_image(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = _cbis(tmp_path / "CBIS-DDSM")
    with caplog.at_level(logging.WARNING):
        probe = cbis_ddsm.read(root, workers=2)
    assert probe.image_ids == [
        "Mass-Training_P_00001_LEFT_CC",
        "Mass-Training_P_00002_RIGHT_MLO",
        "Calc-Test_P_00038_RIGHT_MLO",
    ]
    assert probe[2].relpath.endswith("1.000000-full mammogram images-67890/1-1.dcm")
    labels = probe.labels
    a = labels.loc["Mass-Training_P_00001_LEFT_CC"]
    assert (a["patient_id"], a["view"], a["laterality"]) == ("P_00001", "CC", "L")
    assert a["split"] == "train"
    assert (a["density"], a["birads"], a["findings"]) == ("B", 4, "mass")
    assert (a["pathology"], a["n_abnormalities"], a["subtlety"]) == ("MALIGNANT", 2, 4)
    assert a["mass_shape"] == "IRREGULAR|OVAL" and a["mass_margins"] == "CIRCUMSCRIBED|SPICULATED"
    b = labels.loc["Calc-Test_P_00038_RIGHT_MLO"]
    assert (b["split"], b["density"], b["findings"]) == ("test", "C", "calcification")
    assert (b["calc_type"], b["calc_distribution"]) == ("PLEOMORPHIC", "CLUSTERED")
    assert labels.loc["Mass-Training_P_00002_RIGHT_MLO", "birads"] == 0
    assert "1 ROI mask file(s) not found" in caplog.text


def test_cbis_boxes_are_mask_bounding_boxes(tmp_path: Path) -> None:
    root = _cbis(tmp_path / "CBIS-DDSM")
    boxes = cbis_ddsm.read(root).boxes
    assert boxes is not None and len(boxes) == 4
    corners = boxes[["xmin", "ymin", "xmax", "ymax"]].to_numpy()
    np.testing.assert_array_equal(corners[0], [10, 5, 20, 10])  # rows 5-9, columns 10-19
    np.testing.assert_array_equal(corners[1], [3, 20, 7, 25])  # the sibling of the listed crop
    assert np.isnan(corners[2]).all()  # mask missing: no coordinates ...
    # ... but its path is kept as listed
    assert boxes.loc[2, "mask_path"].startswith("Mass-Training_P_00002_RIGHT_MLO_1/")
    np.testing.assert_array_equal(corners[3], [1, 1, 2, 3])  # descriptive folder, 1-2.dcm
    listed = f"Mass-Training_P_00001_LEFT_CC_1/{UID}333/{UID}444/000001.dcm"
    assert boxes.loc[0, "mask_path"] == listed
    assert boxes.loc[3, "mask_path"].endswith("ROI mask images-09876/1-2.dcm")
    assert boxes["finding"].tolist() == ["mass", "mass", "mass", "calcification"]
    assert boxes["mass_shape"].tolist()[:2] == ["IRREGULAR", "OVAL"]
    assert boxes.loc[3, "calc_type"] == "PLEOMORPHIC"
    assert boxes.loc[3, "calc_distribution"] == "CLUSTERED"
    assert boxes["finding_birads"].tolist() == [4, 3, 0, 5]
    assert boxes["pathology"].tolist()[:2] == ["MALIGNANT", "BENIGN"]
    # The mask's box is in the full image's pixels when the mask has another size.
    assert cbis_ddsm.mask_box(root / boxes.loc[0, "mask_path"], (80, 64)) == (20, 10, 40, 20)
    # mask_boxes=False keeps the paths, not the coordinates.
    quick = cbis_ddsm.read(root, mask_boxes=False).boxes
    assert quick is not None and quick[["xmin", "xmax"]].isna().all().all()


def test_cbis_errors(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()
    with pytest.raises(MammodissectError, match="mass_case_description_train_set.csv"):
        cbis_ddsm.read(tmp_path / "other")
    root = _cbis(tmp_path / "CBIS-DDSM")
    for path in (root / "Calc-Test_P_00038_RIGHT_MLO").rglob("*.dcm"):
        path.unlink()
    with pytest.raises(MammodissectError, match=r"calc_case_description_test_set\.csv' data row 1"):
        cbis_ddsm.read(root, mask_boxes=False)
    assert len(cbis_ddsm.read(root, missing="skip", mask_boxes=False)) == 2


# ----------------------------------------------------------------------------- RSNA


def test_rsna_standard_columns(tmp_path: Path) -> None:
    root = tmp_path / "rsna-breast-cancer-detection"
    rows = [
        (2, 10006, 462822612, "L", "CC", 61.0, 0, 0, 0, None, 0, None, 29, False),
        (2, 10006, 1459541791, "L", "MLO", 61.0, 0, 0, 0, None, 0, None, 29, False),
        (1, 10011, 220375232, "R", "CC", 55.0, 1, 1, 1, 0, 0, "B", 21, True),
    ]
    columns = [
        "site_id",
        "patient_id",
        "image_id",
        "laterality",
        "view",
        "age",
        "cancer",
        "biopsy",
        "invasive",
        "BIRADS",
        "implant",
        "density",
        "machine_id",
        "difficult_negative_case",
    ]
    _csv(root / "train.csv", [dict(zip(columns, row, strict=True)) for row in rows])
    for row in rows:
        _image(root / "train_images" / str(row[1]) / f"{row[2]}.dcm")
    probe = rsna.read(root)
    assert probe.image_ids == ["462822612", "1459541791", "220375232"]
    assert probe[0].relpath == "train_images/10006/462822612.dcm"
    labels = probe.labels
    assert [c for c in STANDARD_COLUMNS if c in labels.columns] == [
        "patient_id",
        "view",
        "laterality",
        "split",
        "density",
        "birads",
    ]
    last = labels.loc["220375232"]
    assert (last["patient_id"], last["view"], last["laterality"]) == ("10011", "CC", "R")
    assert (last["split"], last["density"], last["birads"], last["cancer"]) == ("train", "B", 0, 1)
    assert labels.loc["462822612", ["birads", "density"]].isna().all()
    assert labels["difficult_negative_case"].tolist() == [False, False, True]
    assert labels["age"].tolist() == [61, 61, 55]
    assert probe.boxes is None


# ----------------------------------------------------------------------------- EMBED


def test_embed_2d_images_with_clinical_labels(tmp_path: Path) -> None:
    root = tmp_path / "EMBED"
    prefix = "/mnt/NAS2/mammo/anon_dicom/cohort_1/101/2001"
    rows = [
        ("101", "2001", f"{prefix}/1.2.840.1.dcm", "2D", "L", "CC", 0, 1, "[(1, 2, 5, 8)]"),
        ("101", "2001", f"{prefix}/1.2.840.2.dcm", "2D", "R", "MLO", 0, 0, "[]"),
        ("101", "2001", f"{prefix}/1.2.840.3.dcm", "C-view", "L", "CC", 0, 0, "[]"),
    ]
    columns = [
        "empi_anon",
        "acc_anon",
        "anon_dicom_path",
        "FinalImageType",
        "ImageLateralityFinal",
        "ViewPosition",
        "spot_mag",
        "num_roi",
        "ROI_coords",
    ]
    meta = [dict(zip(columns, row, strict=True)) for row in rows]
    for row in meta:
        row["Manufacturer"] = "HOLOGIC, Inc."  # a DICOM attribute that must not become a label
    _csv(root / "tables" / embed.METADATA_TABLES[0], meta)
    clinical = [
        {"empi_anon": "101", "acc_anon": "2001", "side": "L", "asses": "S", "tissueden": 3,
         "path_severity": 0, "desc": "MG Diagnostic Left", "massshape": "X", "calcfind": None},
        {"empi_anon": "101", "acc_anon": "2001", "side": "R", "asses": "N", "tissueden": 3,
         "path_severity": None, "desc": "MG Diagnostic Left", "massshape": None,
         "calcfind": None},
    ]  # fmt: skip
    _csv(root / "tables" / embed.CLINICAL_TABLES[0], clinical)
    for name in ("1.2.840.1", "1.2.840.2"):  # the C-view file is not there: it is not listed
        _image(root / "images" / "cohort_1" / "101" / "2001" / f"{name}.dcm")
    probe = embed.read(root)
    assert probe.image_ids == ["1.2.840.1", "1.2.840.2"]
    assert probe[0].relpath == "images/cohort_1/101/2001/1.2.840.1.dcm"
    labels = probe.labels
    left, right = labels.loc["1.2.840.1"], labels.loc["1.2.840.2"]
    assert (left["patient_id"], left["study_id"], left["view"], left["laterality"]) == (
        "101",
        "2001",
        "CC",
        "L",
    )
    assert (left["density"], left["birads"], left["path_severity"]) == ("C", 4, 0)
    assert (right["density"], right["birads"], right["view"]) == ("C", 1, "MLO")
    assert (left["cohort"], left["image_type"]) == ("cohort_1", "2D")
    assert left["massshape"] == "X" and pd.isna(right["massshape"])  # codes, as the table has
    assert "massmargin" not in labels.columns  # a descriptor the table lacks
    assert "manufacturer" not in labels.columns and "Manufacturer" not in labels.columns
    boxes = probe.boxes
    assert boxes is not None and len(boxes) == 1
    box = boxes.iloc[0]
    assert (box.image_id, box.finding, box.xmin, box.ymin, box.xmax, box.ymax) == (
        "1.2.840.1",
        "roi",
        2.0,
        1.0,
        8.0,
        5.0,
    )
    without = embed.read(root, clinical=False).labels
    assert "birads" not in without.columns


# ----------------------------------------------------------------------------- CSAW-CC


def test_csaw_cc_standard_columns(tmp_path: Path) -> None:
    root = tmp_path / "csaw-cc"
    rows = []
    for i, (side, view) in enumerate([("Left", "CC"), ("Left", "MLO"), ("Right", "CC")]):
        name = f"00017_20990909_{side[0]}_{view}_{i + 1}.dcm"
        rows.append(
            {
                "anon_patientid": 17,
                "exam_year": 2011,
                "x_age": 2,
                "x_case": 1,
                "x_cancer_laterality": "Left",
                "x_type": 1,
                "x_lymphnode_met": 0,
                "rad_timing": 1,
                "rad_r1": 1,
                "rad_r2": 0,
                "rad_recall": 1,
                "rad_recall_type_right": None,
                "rad_recall_type_left": 1,
                "imagelaterality": side,
                "viewposition": view,
                "libra_breastarea": 120.5,
                "libra_densearea": 20.25,
                "libra_percentdensity": 16.8,
                "anon_filename": name,
            }
        )
        _image(root / "Batch_1" / "Batch_1" / name)
    _csv(root / csaw_cc.TABLE, rows)
    probe = csaw_cc.read(root)
    assert probe.image_ids == [
        "00017_20990909_L_CC_1",
        "00017_20990909_L_MLO_2",
        "00017_20990909_R_CC_3",
    ]
    assert probe[0].relpath == "Batch_1/Batch_1/00017_20990909_L_CC_1.dcm"
    labels = probe.labels
    assert labels["patient_id"].tolist() == ["17"] * 3
    assert labels["view"].tolist() == ["CC", "MLO", "CC"]
    assert labels["laterality"].tolist() == ["L", "L", "R"]
    assert labels["x_case"].tolist() == [1, 1, 1]
    assert labels["libra_percentdensity"].tolist() == [16.8] * 3
    assert "split" not in labels.columns


# ----------------------------------------------------------------------------- selection


def test_select_split_views_lateralities_where(vindr_root: Path) -> None:
    probe = vindr.read(vindr_root)
    assert select(probe, split="test").image_ids == ["b1", "b2"]
    assert select(probe, split="training").image_ids == ["a1", "a2", "c1"]
    assert select(probe, views="mlo").image_ids == ["a2", "b2"]
    assert select(probe, views=["CC"], lateralities="left").image_ids == ["a1", "c1"]
    assert select(probe, where="birads >= 4").image_ids == ["a1", "c1"]
    assert select(probe, where="findings.str.contains('Mass')").image_ids == ["a1"]
    assert select(probe, where="density in ['C', 'D'] and split == 'train'").image_ids == [
        "a1",
        "a2",
    ]
    cc = select(probe, views="CC")
    assert cc.boxes is not None and set(cc.boxes["image_id"]) == {"a1"}
    mlo = select(probe, views="MLO")
    assert mlo.boxes is not None and mlo.boxes.empty
    assert list(mlo.labels.index) == ["a2", "b2"]


def test_select_sample_is_seeded_and_in_probe_order(vindr_root: Path) -> None:
    probe = vindr.read(vindr_root)
    first = select(probe, sample=3, seed=7).image_ids
    assert select(probe, sample=3, seed=7).image_ids == first
    assert first == [i for i in probe.image_ids if i in first]  # probe order, not draw order
    draws = {tuple(select(probe, sample=2, seed=seed).image_ids) for seed in range(6)}
    assert len(draws) > 1
    assert select(probe, sample=10).image_ids == probe.image_ids  # fewer left: all kept
    rng = np.random.default_rng(3)
    expected = sorted(rng.choice(3, size=2, replace=False).tolist())
    train = select(probe, split="train", sample=2, seed=3)
    assert train.image_ids == [["a1", "a2", "c1"][i] for i in expected]


def test_select_errors(vindr_root: Path, tmp_path: Path) -> None:
    probe = vindr.read(vindr_root)
    with pytest.raises(MammodissectError, match=r"unknown split 'val'; available: test, train"):
        select(probe, split="val")
    with pytest.raises(MammodissectError, match=r"unknown view 'XCCL'; available: CC, MLO"):
        select(probe, views="XCCL")
    with pytest.raises(MammodissectError, match="available: L, R"):
        select(probe, lateralities="B")
    with pytest.raises(MammodissectError, match="invalid where"):
        select(probe, where="no_such_column > 1")
    with pytest.raises(MammodissectError, match="no probe image matches"):
        select(probe, split="test", views="CC", lateralities="L")
    with pytest.raises(MammodissectError, match="sample"):
        select(probe, sample=-1)
    folder = tmp_path / "plain"
    _image(folder / "x.dcm")
    with pytest.raises(MammodissectError, match="no 'split' label"):
        select(load_probe(folder), split="train")


# ----------------------------------------------------------------------------- entry point


def test_layout_spec_end_to_end(vindr_root: Path) -> None:
    spec = f"vindr:{vindr_root}?split=training&sample=2&seed=1"
    probe = load_probe(spec)
    assert isinstance(probe, Probe) and probe.source == "vindr"
    direct = select(vindr.read(vindr_root), split="train", sample=2, seed=1)
    assert probe.image_ids == direct.image_ids
    where = load_probe(f"VinDr-Mammo:{vindr_root}?where=birads>=4 & view=='CC'&views=CC")
    assert where.image_ids == ["a1", "c1"]
    encoded = load_probe(f"vindr:{vindr_root}?where=birads%3E%3D4&lateralities=L,R")
    assert encoded.image_ids == ["a1", "c1"]
    assert load_probe(f"vindr:{vindr_root}").image_ids == ["a1", "a2", "b1", "b2", "c1"]


def test_plain_forms_and_registry(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    for i in range(4):
        _image(folder / f"img{i}.dcm")
    assert (
        load_probe(f"folder:{folder}?sample=2&seed=0").image_ids
        == select(load_probe(folder), sample=2, seed=0).image_ids
    )
    manifest = _csv(
        tmp_path / "m.csv",
        [
            {"path": f"plain/img{i}.dcm", "image_id": f"i{i}", "split": split}
            for i, split in enumerate("aabb")
        ],
    )
    assert load_probe(f"csv:{manifest}?split=b").image_ids == ["i2", "i3"]
    assert load_probe(str(manifest)).image_ids == ["i0", "i1", "i2", "i3"]  # unchanged
    odd = tmp_path / "weird:name"  # an existing path with a colon stays a path
    _image(odd / "x.dcm")
    assert load_probe(str(odd)).image_ids == ["x.dcm"]
    assert load_probe(odd).image_ids == ["x.dcm"]
    assert {"vindr", "cbis-ddsm", "embed", "csaw-cc", "rsna", "folder", "csv"} <= set(LAYOUTS)
    assert set(probe_layouts()) == set(LAYOUTS)
    assert read_layout("vindr-mammo", _vindr(tmp_path / "v")).source == "vindr"


def test_spec_errors(vindr_root: Path) -> None:
    with pytest.raises(MammodissectError, match=r"layout 'inbreast'; known layouts: .*vindr"):
        load_probe(f"inbreast:{vindr_root}")
    with pytest.raises(MammodissectError, match=r"unknown option 'sampel'.*sample"):
        load_probe(f"vindr:{vindr_root}?sampel=3")
    with pytest.raises(MammodissectError, match="sample='x'"):
        load_probe(f"vindr:{vindr_root}?sample=x")
    with pytest.raises(MammodissectError, match="names no path"):
        load_probe("vindr:?split=test")
    with pytest.raises(MammodissectError, match="unknown option 'missing'"):
        load_probe(f"folder:{vindr_root}?missing=skip")
    with pytest.raises(MammodissectError, match="unknown split 'val'"):
        load_probe(f"vindr:{vindr_root}?split=val")
    with pytest.raises(MammodissectError, match=r"not an RSNA.*'train\.csv' is absent"):
        load_probe(f"rsna:{vindr_root}")


def test_probe_rejects_boxes_of_unknown_images(vindr_root: Path) -> None:
    probe = vindr.read(vindr_root)
    boxes = probe.boxes.assign(image_id="zz")
    with pytest.raises(MammodissectError, match="boxes name 1 image"):
        Probe(root=probe.root, items=probe.items, labels=probe.labels, boxes=boxes)
    with pytest.raises(MammodissectError, match="lack column"):
        Probe(root=probe.root, items=probe.items, boxes=probe.boxes.drop(columns="xmin"))
    assert math.isclose(probe.subset([0]).boxes["xmax"].iloc[0], 30.25)


def test_cbis_spec_reads_only_selected_masks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _cbis(tmp_path / "CBIS-DDSM")
    read: list[str] = []
    original = cbis_ddsm.mask_box

    def counting(path: Path, shape: tuple[int, int] | None = None) -> tuple[float, ...] | None:
        read.append(path.name)
        return original(path, shape)

    monkeypatch.setattr(cbis_ddsm, "mask_box", counting)
    probe = load_probe(f"cbis:{root}?split=test&workers=1")
    assert probe.image_ids == ["Calc-Test_P_00038_RIGHT_MLO"]
    assert read == ["1-2.dcm"]  # the train images' masks were not read
    assert probe.boxes is not None
    assert probe.boxes[["xmin", "ymin", "xmax", "ymax"]].iloc[0].tolist() == [1, 1, 2, 3]
    read.clear()
    plain = load_probe(f"cbis-ddsm:{root}?split=test&mask_boxes=false")
    assert read == [] and plain.boxes is not None and plain.boxes["xmin"].isna().all()


def test_vindr_labels_and_boxes_reach_the_run_tables(vindr_root: Path, tmp_path: Path) -> None:
    from mammodissect import dissect

    result = dissect(
        "python:planted:make_target", "python:planted:make_dissector",
        f"vindr:{vindr_root}?split=train", ["planted feature 0", "red"], "features",
        out=tmp_path / "run", num_workers=0, quiet=True,
        similarity="soft_wpmi", similarity_params={"top_k": 2},
    )  # fmt: skip
    images = pd.read_csv(tmp_path / "run" / "images.csv")
    assert images["image_id"].tolist() == ["a1", "a2", "c1"]
    assert images["density"].tolist() == ["C", "C", "A"]
    assert images["birads"].tolist() == [4, 1, 5]
    assert images["view"].tolist() == ["CC", "MLO", "CC"]
    boxes = pd.read_csv(tmp_path / "run" / "boxes.csv")
    assert len(boxes) == 3 and set(boxes["image_id"]) == {"a1"}
    # the planted target's input is 16 x 24: the 16 x 12 mammograms are stretched 2x in x
    second = boxes.iloc[1]
    assert (second.xmin, second.ymin, second.xmax, second.ymax) == (10.0, 6.0, 18.0, 10.0)
    assert result.boxes is not None and result.images.shape[0] == 3
