"""Probe images through a whole run: per-image table, boxes, VOI choice, bad files,
--strict, privacy of outputs, and the prepared-image cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammodissect import dissect
from mammodissect.cli import main
from mammodissect.concepts import ConceptSet
from mammodissect.errors import MammodissectError
from mammodissect.probe import Probe, ProbeItem, read_image_with_info
from mammodissect.testing import write_dicom

import planted

pydicom = pytest.importorskip("pydicom")
from pydicom.uid import UID  # noqa: E402

CONCEPTS = ConceptSet.from_strings([*planted.CONCEPTS, *planted.DISTRACTORS])
PHI = {
    "PatientName": "DOE^JANE^Q",
    "PatientID": "MRN-99887766",
    "PatientBirthDate": "19610203",
    "AccessionNumber": "ACC-55443322",
    "InstitutionName": "Saint Example Hospital",
    "ReferringPhysicianName": "WHO^DOCTOR",
}


def _image(seed: int, shape=(48, 72), top: int = 4095) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(200, top // 2, size=shape)
    base[:, : shape[1] // 2] += top // 3  # tissue on the left
    return base


def write_probe(folder: Path, n: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_dicom(
            folder / f"case{i:02d}.dcm", _image(i), bits_stored=12,
            ImageLaterality="L" if i % 2 else "R", ViewPosition="CC" if i < 5 else "MLO", **PHI,
        )  # fmt: skip
    return folder


def run(probe, out, **options):
    options = {
        "num_workers": 0,
        "quiet": True,
        "similarity": "soft_wpmi",
        "similarity_params": {"top_k": 5},
        **options,
    }
    return dissect(
        "python:planted:make_target", "python:planted:make_dissector", probe, CONCEPTS,
        "features", out=out, **options,
    )  # fmt: skip


def test_image_table_has_tags_geometry_and_no_phi(tmp_path):
    probe = write_probe(tmp_path / "probe")
    result = run(probe, tmp_path / "run")
    images = pd.read_csv(tmp_path / "run" / "images.csv")
    assert len(images) == 10 and images["used"].all()
    assert images["laterality"].tolist() == ["R", "L"] * 5
    assert images["view"].tolist() == ["CC"] * 5 + ["MLO"] * 5
    assert set(images["format"]) == {"dicom"} and set(images["voi"]) == {"none"}
    assert (images["orig_height"] == 48).all() and (images["out_height"] == 16).all()
    assert images["relpath"].tolist() == [f"case{i:02d}.dcm" for i in range(10)]
    for path in (tmp_path / "run").iterdir():
        text = path.read_text()
        for value in PHI.values():
            assert value not in text, (path.name, value)
        assert str(tmp_path) not in text
    assert result.images.shape[0] == 10


def test_anonymized_ids_everywhere(tmp_path):
    probe = write_probe(tmp_path / "probe")
    (probe / "broken.dcm").write_bytes(b"DICM but not really")
    run(probe, tmp_path / "run", anonymize_ids=True)
    outputs = {p.name: p.read_text() for p in (tmp_path / "run").iterdir()}
    for text in outputs.values():
        assert "case0" not in text and "broken" not in text
    images = pd.read_csv(tmp_path / "run" / "images.csv")
    assert "relpath" not in images and images["image_id"].str.match(r"img-[0-9a-f]{16}").all()
    tops = pd.read_csv(tmp_path / "run" / "top_images.csv")
    assert set(tops["image_id"]) <= set(images["image_id"])
    again = tmp_path / "again"
    run(probe, again, anonymize_ids=True)
    assert pd.read_csv(again / "images.csv")["image_id"].equals(images["image_id"])  # stable


def test_each_bad_file_is_skipped_with_its_reason(tmp_path, capsys):
    probe = write_probe(tmp_path / "probe", n=6)
    good = (probe / "case00.dcm").read_bytes()
    (probe / "truncated.dcm").write_bytes(good[: len(good) // 2])
    (probe / "empty.png").write_bytes(b"")
    (probe / "notes.png").write_text("not an image")
    write_dicom(probe / "nopixels.dcm", None)
    write_dicom(probe / "constant.dcm", np.full((40, 40), 7))
    _mpeg(probe / "mpeg.dcm")
    code = main([
        "run", "--target", "python:planted:make_target", "--dissector",
        "python:planted:make_dissector", "--probe", str(probe), "--concepts",
        str(_concept_file(tmp_path)), "--layers", "features", "--out", str(tmp_path / "run"),
        "--num-workers", "0", "--quiet",
        "--similarity", "soft_wpmi", "--similarity-param", "top_k=3",
    ])  # fmt: skip
    assert code == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    reasons = {item["image"]: item["reason"] for item in info["skipped"]}
    assert set(reasons) == {
        "truncated.dcm", "empty.png", "notes.png", "nopixels.dcm", "constant.dcm", "mpeg.dcm"
    }  # fmt: skip
    assert "truncated" in reasons["truncated.dcm"]
    assert "empty file" in reasons["empty.png"]
    assert "no pixel data" in reasons["nopixels.dcm"]
    assert "constant" in reasons["constant.dcm"]
    assert "MPEG" in reasons["mpeg.dcm"] or "decod" in reasons["mpeg.dcm"]
    printed = capsys.readouterr().out
    assert printed.count("skipped 6 unreadable images") == 1 and "nopixels.dcm" in printed
    images = pd.read_csv(tmp_path / "run" / "images.csv")
    assert images["used"].sum() == 6 and set(images.loc[~images["used"], "skip_reason"]) == set(
        reasons.values()
    )


def _mpeg(path: Path) -> None:
    """A DICOM whose pixel data is MPEG-2 video: a transfer syntax no decoder here reads."""
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(write_dicom(path, _image(1)))
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\x00" * ds.Rows * ds.Columns])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)


def _concept_file(tmp_path: Path) -> Path:
    path = tmp_path / "concepts.txt"
    path.write_text("\n".join(CONCEPTS.concepts))
    return path


def test_strict_stops_at_the_first_bad_image_and_keeps_finished_batches(tmp_path):
    probe = write_probe(tmp_path / "probe", n=8)
    (probe / "zz-broken.dcm").write_bytes(b"\x00" * 300)
    with pytest.raises(MammodissectError, match=r"zz-broken.dcm.*--strict"):
        run(probe, tmp_path / "run", strict=True, batch_size=4)
    calls = planted.CALLS["target"]
    assert calls == 2  # the two full batches ran and were committed
    (probe / "zz-broken.dcm").unlink()
    with pytest.raises(MammodissectError):  # a different probe listing: a fresh cache
        run(probe / "missing", tmp_path / "run", strict=True)
    run(probe, tmp_path / "run", strict=True, batch_size=4)


def test_voi_choice_is_applied_and_recorded(tmp_path):
    raw = _image(3, top=1023)
    lut = pydicom.Dataset()
    lut.add_new("LUTDescriptor", "US", [1024, 0, 16])
    lut.add_new("LUTData", "US", list(range(1023, -1, -1)))  # reversing: easy to recognise
    path = write_dicom(
        tmp_path / "voi.dcm", raw, bits_stored=10, WindowCenter=500, WindowWidth=400,
        VOILUTSequence=pydicom.Sequence([lut]),
    )  # fmt: skip
    auto, info = read_image_with_info(path)
    assert info["voi"] == "voi lut 0"
    np.testing.assert_array_equal(auto, 1023 - raw)
    windowed, info = read_image_with_info(path, voi="window")
    assert info["voi"] == "window 0" and windowed.max() <= 1023 and windowed.min() >= 0
    none, info = read_image_with_info(path, voi="none")
    assert info["voi"] == "none"
    np.testing.assert_array_equal(none, raw)
    with pytest.raises(MammodissectError, match="VOI choice 'lut:x' unknown"):
        read_image_with_info(path, voi="lut:x")


def test_twelve_bit_and_signed_pixels(tmp_path):
    twelve = np.arange(0, 4096, 4).reshape(32, 32)
    image = read_image_with_info(write_dicom(tmp_path / "a.dcm", twelve, bits_stored=12))[0]
    np.testing.assert_array_equal(image, twelve)
    signed = (np.arange(32 * 32) - 500).reshape(32, 32)
    path = write_dicom(
        tmp_path / "b.dcm", signed, signed=True, RescaleSlope=2, RescaleIntercept=-10
    )
    image, info = read_image_with_info(path)
    np.testing.assert_array_equal(image, signed * 2 - 10)
    assert info["modality_lut"] == "rescale" and image.min() < 0


def test_boxes_come_out_in_the_targets_input_pixels(tmp_path):
    folder = tmp_path / "probe"
    folder.mkdir()
    raw = np.full((48, 72), 300)
    raw[12:24, 36:54] = 3000
    write_dicom(folder / "a.dcm", raw)
    write_dicom(folder / "b.dcm", _image(5))
    items = [ProbeItem(n, n, folder / n) for n in ("a.dcm", "b.dcm")]
    boxes = pd.DataFrame(
        {"image_id": ["a.dcm"], "finding": ["mass"], "xmin": [36.0], "ymin": [12.0],
         "xmax": [54.0], "ymax": [24.0]}
    )  # fmt: skip
    probe = Probe(folder, items, boxes=boxes)
    result = run(probe, tmp_path / "run")
    out = pd.read_csv(tmp_path / "run" / "boxes.csv")
    assert out.loc[0, ["xmin", "ymin", "xmax", "ymax"]].tolist() == pytest.approx(
        [12.0, 4.0, 18.0, 8.0]
    )  # the planted target's input is 16 x 24: a third of 48 x 72
    assert result.boxes is not None and len(result.boxes) == 1


def test_prepared_images_are_reused_by_later_runs_and_models(tmp_path, monkeypatch):
    import mammodissect.probe.loader as loader_module

    probe = write_probe(tmp_path / "probe", n=6)
    reads = []
    real = loader_module.read_image_with_info
    monkeypatch.setattr(
        loader_module, "read_image_with_info", lambda *a, **k: reads.append(a) or real(*a, **k)
    )
    run(probe, tmp_path / "one")
    assert len(reads) == 6
    run(probe, tmp_path / "two", pooling="max")  # new activations, same prepared images
    assert len(reads) == 6 and planted.CALLS["target"] == 2
    run(probe, tmp_path / "three", pooling="max", cache_images=False, cache_dir=tmp_path / "c")
    assert len(reads) == 12
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "two" / "neurons.csv"),
        pd.read_csv(tmp_path / "three" / "neurons.csv"),
    )
