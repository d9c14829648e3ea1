"""Read one probe image (DICOM, PNG, JPEG or TIFF) as a 2-D float32 array.

The reader returns the stored intensities after the DICOM modality and VOI
transforms, with MONOCHROME1 images inverted so that brighter always means
denser tissue. It does not rescale, crop or resize: normalisation belongs to
the model's preprocessing.

Every problem a user can cause (a missing, empty, truncated or non-image
file, a DICOM without pixel data, a transfer syntax no installed plugin can
decode, NaN or infinite values) raises :class:`~mammodissect.errors.MammodissectError`
whose message names the file by the path it was given.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import MutableSequence
from pathlib import Path
from typing import Any

import numpy as np

from mammodissect.errors import MammodissectError

__all__ = [
    "DICOM_EXTENSIONS",
    "is_dicom_file",
    "read_image",
    "read_image_with_info",
]

logger = logging.getLogger(__name__)

#: File extensions (lower case, with the dot) always read as DICOM.
DICOM_EXTENSIONS: tuple[str, ...] = (".dcm", ".dicom")

#: Pillow formats accepted; restricting them keeps text files (which some
#: Pillow plugins such as PBM or XBM would accept) from being read as images.
_PIL_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "TIFF")

_PIL_FORMAT_NAMES: dict[str, str] = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "TIFF": "tiff"}

_DECODER_HINT = "pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg"

# ITU-R BT.601 luma weights, as Pillow uses for its "L" conversion.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def _fail(path: str | os.PathLike[str], reason: str) -> MammodissectError:
    """Build the error for a file that cannot be read."""
    return MammodissectError(f"cannot read image '{os.fspath(path)}': {reason}")


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """Tell whether a file starts with the DICOM preamble.

    Parameters
    ----------
    path : str or os.PathLike
        The file to test.

    Returns
    -------
    bool
        ``True`` when the four bytes at offset 128 are ``b"DICM"``; ``False``
        otherwise, including for files that cannot be opened or are shorter
        than 132 bytes.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(path: str | os.PathLike[str], *, voi: str = "auto") -> np.ndarray:
    """Read one image as a 2-D float32 array (brighter = denser).

    Parameters
    ----------
    path : str or os.PathLike
        A DICOM (``.dcm``/``.dicom`` or any file with the DICOM preamble),
        PNG, JPEG or TIFF file.

    Returns
    -------
    numpy.ndarray
        A float32 array of shape ``(rows, columns)``; see
        :func:`read_image_with_info` for the conversions applied.

    Raises
    ------
    MammodissectError
        If the file is missing, empty, not an image, truncated, a DICOM
        without pixel data or with an undecodable transfer syntax, not 2-D
        after conversion, or holds NaN or infinite values.
    """
    image, _ = read_image_with_info(path, voi=voi)
    return image


def read_image_with_info(
    path: str | os.PathLike[str], *, voi: str = "auto"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read one image and report how it was read.

    DICOM files get the modality LUT (or rescale slope/intercept), then the
    first VOI LUT or window in the file (nothing if there is none), then
    MONOCHROME1 inversion as ``max - x``; multi-frame files give their first
    frame (with a warning) and colour images their ITU-R 601 luma. Pillow
    images keep their stored values: 8-bit as 0..255, 16-bit as 0..65535,
    32-bit integer and float modes as stored; colour and palette modes go
    through Pillow's ``"L"`` conversion; multi-frame TIFFs give their first
    frame (with a warning).

    Parameters
    ----------
    path : str or os.PathLike
        The image file.

    Returns
    -------
    image : numpy.ndarray
        A 2-D float32 array.
    info : dict
        Privacy-safe reading facts only (never patient tags, UIDs or paths):
        ``format`` (``"dicom"``, ``"png"``, ``"jpeg"`` or ``"tiff"``),
        ``bits_stored``, ``photometric``, ``inverted``, ``modality_lut``
        (``"rescale"``, ``"lut"`` or ``"none"``), ``voi`` (``"window 0"``,
        ``"voi lut 0"`` or ``"none"``), ``frames``, ``to_luma``, ``shape``,
        plus ``transfer_syntax`` (its standard name) for DICOM and ``mode``
        for Pillow images.

    Raises
    ------
    MammodissectError
        As for :func:`read_image`.
    """
    file = Path(path)
    try:
        stat = file.stat()
    except FileNotFoundError:
        raise _fail(path, "file not found") from None
    except OSError as exc:
        raise _fail(path, f"cannot access file ({exc.strerror or exc})") from None
    if file.is_dir():
        raise _fail(path, "is a directory, not an image file")
    if stat.st_size == 0:
        raise _fail(path, "empty file (0 bytes)")

    if is_dicom_file(file):
        image, info = _read_dicom(path, force=False, voi=voi)
    elif file.suffix.lower() in DICOM_EXTENSIONS:
        # Some writers omit the 128-byte preamble; pydicom can still parse those.
        try:
            image, info = _read_dicom(path, force=True, voi=voi)
        except MammodissectError as dicom_error:
            try:  # a PNG/JPEG/TIFF saved under a DICOM name
                image, info = _read_pillow(path)
            except MammodissectError:
                raise dicom_error from None
            logger.warning("image '%s' is a %s file, not DICOM", os.fspath(path), info["format"])
    else:
        image, info = _read_pillow(path)

    if image.ndim != 2:
        raise _fail(path, f"decoded image is not 2-D (shape {tuple(image.shape)})")
    if image.size == 0:
        raise _fail(path, f"decoded image is empty (shape {tuple(image.shape)})")
    image = np.ascontiguousarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        raise _fail(path, "image holds NaN or infinite values")
    info["shape"] = [int(image.shape[0]), int(image.shape[1])]
    return image, info


# --------------------------------------------------------------------------- Pillow


def _pil_bits(mode: str) -> int:
    """Bits per sample of a Pillow mode."""
    if mode == "1":
        return 1
    if mode.startswith("I;16"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _pil_photometric(mode: str) -> str:
    """A DICOM-like photometric name for a Pillow mode."""
    if mode in ("1", "L", "LA", "La", "I", "F") or mode.startswith("I;16"):
        return "MONOCHROME2"
    if mode in ("P", "PA"):
        return "PALETTE COLOR"
    if mode.startswith("RGB"):
        return "RGB"
    return mode


def _read_pillow(path: str | os.PathLike[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a PNG, JPEG or TIFF through Pillow."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(path, formats=_PIL_FORMATS)
    except UnidentifiedImageError:
        raise _fail(path, "not a DICOM, PNG, JPEG or TIFF image") from None
    except Image.DecompressionBombError as exc:
        raise _fail(path, f"image too large ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _fail(path, f"cannot open file ({exc})") from None

    with img:
        fmt = _PIL_FORMAT_NAMES.get(str(img.format), str(img.format).lower())
        frames = int(getattr(img, "n_frames", 1) or 1)
        if frames > 1:
            logger.warning("image '%s' holds %d frames; using the first", os.fspath(path), frames)
            img.seek(0)
        mode = img.mode
        try:
            img.load()
            to_luma = False
            if mode in ("L", "I", "F") or mode.startswith("I;16"):
                array = np.asarray(img)
            else:
                # 1, LA, P, PA, RGB, RGBA, CMYK, YCbCr...: Pillow's ITU-R 601 "L" conversion.
                to_luma = mode not in ("1", "LA", "La")
                array = np.asarray(img.convert("L"))
        except Image.DecompressionBombError as exc:
            raise _fail(path, f"image too large ({exc})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            message = str(exc) or type(exc).__name__
            if "truncat" in message.lower() or isinstance(exc, EOFError):
                raise _fail(path, f"truncated file ({message})") from None
            raise _fail(path, f"cannot decode {fmt.upper()} data ({message})") from None

    info: dict[str, Any] = {
        "format": fmt,
        "mode": mode,
        "bits_stored": _pil_bits(mode),
        "photometric": _pil_photometric(mode),
        "inverted": False,
        "modality_lut": "none",
        "voi": "none",
        "frames": frames,
        "to_luma": to_luma,
    }
    return array.astype(np.float32), info


# --------------------------------------------------------------------------- DICOM


def _check_decodable(path: str | os.PathLike[str], ds: Any) -> str:
    """Return the transfer syntax name, or raise if nothing here decodes it."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    file_meta = getattr(ds, "file_meta", None)
    uid = file_meta.get("TransferSyntaxUID") if file_meta is not None else None
    if not uid:
        raise _fail(path, "DICOM file has no transfer syntax (0002,0010) in its file meta")
    uid = UID(str(uid))
    name = uid.name if uid.is_transfer_syntax else str(uid)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise _fail(
            path,
            f"DICOM transfer syntax '{name}' ({uid}) cannot be decoded: pydicom has no "
            f"decoder for it; convert the file (e.g. to Explicit VR Little Endian) or, "
            f"for JPEG variants, `{_DECODER_HINT}`",
        ) from None
    if not decoder.is_available:
        raise _fail(
            path,
            f"DICOM transfer syntax '{name}' ({uid}) cannot be decoded: no decoding "
            f"plugin is installed; `{_DECODER_HINT}`",
        )
    return name


def _read_dicom(
    path: str | os.PathLike[str], *, force: bool, voi: str = "auto"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a DICOM file's first frame with its modality and VOI transforms."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, pixel_array

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, force=force)
    except InvalidDicomError as exc:
        raise _fail(path, f"not a valid DICOM file ({exc})") from None
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise _fail(path, f"not a valid DICOM file ({type(exc).__name__}: {exc})") from None
    for warning in caught:
        message = str(warning.message)
        if "end of file" in message.lower():
            # pydicom drops the element it could not finish, usually the pixel data.
            reason = message.split(" found in file")[0]
            raise _fail(path, f"truncated file ({reason})")

    if not any(key in ds for key in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if force:
            raise _fail(path, "not a DICOM file (no 'DICM' preamble and no pixel data found)")
        raise _fail(path, "DICOM file has no pixel data (no (7FE0,0010) Pixel Data element)")
    syntax = _check_decodable(path, ds)

    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    if frames > 1:
        logger.warning("DICOM '%s' holds %d frames; using the first", os.fspath(path), frames)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = pixel_array(ds, index=0 if frames > 1 else None)
    except Exception as exc:  # decoder plugins raise assorted types
        raise _fail(
            path, f"cannot decode DICOM pixel data ({syntax}: {type(exc).__name__}: {exc})"
        ) from None

    info: dict[str, Any] = {
        **view_and_laterality(ds),
        "format": "dicom",
        "transfer_syntax": syntax,
        "bits_stored": int(ds.get("BitsStored", 0) or 0) or None,
        "photometric": photometric,
        "inverted": False,
        "modality_lut": "none",
        "voi": "none",
        "frames": frames,
        "to_luma": False,
    }

    if photometric in ("MONOCHROME1", "MONOCHROME2"):
        if raw.ndim != 2:
            raise _fail(path, f"decoded DICOM image is not 2-D (shape {tuple(raw.shape)})")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                image = apply_modality_lut(raw, ds)
        except Exception as exc:
            raise _fail(path, f"invalid modality LUT ({type(exc).__name__}: {exc})") from None
        if ds.get("ModalityLUTSequence"):
            info["modality_lut"] = "lut"
        elif "RescaleSlope" in ds and "RescaleIntercept" in ds:
            info["modality_lut"] = "rescale"
        image, info["voi"] = _apply_voi(path, image, ds, voi)
        image = np.asarray(image, dtype=np.float64)
        if photometric == "MONOCHROME1":
            image = image.max() - image
            info["inverted"] = True
        return image, info

    # Colour: palette lookup first, then ITU-R 601 luma of RGB.
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            raw = apply_color_lut(raw, ds)
        except Exception as exc:
            raise _fail(path, f"invalid palette ({type(exc).__name__}: {exc})") from None
    if raw.ndim == 3 and raw.shape[-1] == 3:
        info["to_luma"] = True
        return raw.astype(np.float64) @ _LUMA, info
    if raw.ndim == 2:
        return raw.astype(np.float64), info
    raise _fail(
        path,
        f"decoded DICOM image is not 2-D (photometric {photometric}, shape {tuple(raw.shape)})",
    )


VOI_CHOICES = ("auto", "lut", "window", "none")

_VIEW_CODES = {  # CodeMeaning of ViewCodeSequence (lower case) -> ViewPosition-style code
    "cranio-caudal": "CC",
    "medio-lateral oblique": "MLO",
    "medio-lateral": "ML",
    "latero-medial": "LM",
    "cranio-caudal exaggerated laterally": "XCCL",
    "exaggerated cranio-caudal": "XCCL",
    "caudo-cranial (from below)": "FB",
    "latero-medial oblique": "LMO",
    "superolateral to inferomedial oblique": "SIO",
    "axillary tail": "AT",
}


def view_and_laterality(ds: Any) -> dict[str, str | None]:
    """``view`` (CC, MLO, ...) and ``laterality`` (L, R) from the tags that carry them:
    ImageLaterality, then Laterality; ViewPosition, then ViewCodeSequence's meaning.
    These describe the image, not the patient; None when the file does not say."""
    laterality = None
    for keyword in ("ImageLaterality", "Laterality"):
        value = str(ds.get(keyword, "") or "").strip().upper()
        if value in ("L", "R", "B"):
            laterality = value
            break
    view = str(ds.get("ViewPosition", "") or "").strip().upper() or None
    if view is None and ds.get("ViewCodeSequence"):
        meaning = str(ds.ViewCodeSequence[0].get("CodeMeaning", "")).strip().lower()
        view = _VIEW_CODES.get(meaning, meaning.upper() or None)
    return {"view": view, "laterality": laterality}


def _voi_choice(voi: str) -> tuple[str, int]:
    kind, _, index = voi.partition(":")
    if kind not in VOI_CHOICES or (index and not index.isdigit()):
        raise MammodissectError(
            f"VOI choice {voi!r} unknown; use auto, lut, window, none, lut:N or window:N"
        )
    return kind, int(index or 0)


def _apply_voi(
    path: str | os.PathLike[str], image: np.ndarray, ds: Any, voi: str = "auto"
) -> tuple[np.ndarray, str]:
    """Apply the VOI transform ``voi`` asks for and say which one was applied.

    ``auto``: the file's first VOI LUT, else its first window, else nothing;
    ``lut[:N]`` / ``window[:N]``: that LUT or window (nothing, with a warning, when
    the file lacks it); ``none``: the modality-LUT values as they are.
    """
    from pydicom.pixels import apply_voi, apply_windowing

    kind, index = _voi_choice(voi)
    voi_seq = ds.get("VOILUTSequence") or []
    luts = [
        i
        for i, item in enumerate(voi_seq)
        if all(item.get(key) is not None for key in ("LUTDescriptor", "LUTData"))
    ]
    centres = ds.get("WindowCenter")
    windows = 0
    if centres is not None and ds.get("WindowWidth") is not None:
        windows = len(centres) if isinstance(centres, MutableSequence) else 1
    if kind == "auto":
        kind = "lut" if luts else ("window" if windows else "none")
    if kind == "none":
        return image, "none"
    available = len(luts) if kind == "lut" else windows
    if index >= available:
        logger.warning(
            "DICOM '%s' has no %s %d (it has %d); no VOI transform applied",
            os.fspath(path),
            "VOI LUT" if kind == "lut" else "window",
            index,
            available,
        )
        return image, "none"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if kind == "lut":
                indices = image
                if not np.issubdtype(image.dtype, np.integer):
                    indices = np.rint(image).astype(np.int64)  # a LUT indexes integers
                return apply_voi(indices, ds, index=index), f"voi lut {index}"
            return apply_windowing(image, ds, index=index), f"window {index}"
    except Exception as exc:  # a malformed LUT or window in the file
        logger.warning(
            "DICOM '%s': ignoring its %s %d (%s: %s)",
            os.fspath(path),
            "VOI LUT" if kind == "lut" else "window",
            index,
            type(exc).__name__,
            exc,
        )
    return image, "none"
