"""The registry of probe layouts and the ``LAYOUT:PATH?OPTIONS`` probe spec.

A layout reads one kind of dataset folder into a :class:`~mammodissect.probe.Probe`.
:data:`LAYOUTS` maps each name to a :class:`Layout`; :func:`load_layout_spec` parses
a spec such as ``"vindr:/data/vindr-mammo?split=test&sample=500&seed=1"``, runs the
reader and then :func:`~mammodissect.probe.select.select`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from mammodissect.errors import MammodissectError
from mammodissect.probe import dataset
from mammodissect.probe.dataset import MANIFEST_EXTENSIONS, Probe
from mammodissect.probe.layouts import cbis_ddsm, csaw_cc, embed, rsna, vindr
from mammodissect.probe.layouts._common import check_missing
from mammodissect.probe.select import select

__all__ = [
    "LAYOUTS",
    "SELECT_OPTIONS",
    "Layout",
    "get_layout",
    "is_layout_spec",
    "load_layout_spec",
    "load_probe",
    "parse_layout_spec",
    "probe_layouts",
    "read_layout",
]

logger = logging.getLogger(__name__)


def _boolean(value: str) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _integer(value: str) -> int:
    """A whole number."""
    return int(value.strip())


@dataclass(frozen=True)
class Layout:
    """One registered dataset layout.

    Attributes
    ----------
    name : str
        The name used in probe specs (``vindr``).
    read : callable
        ``read(root, **options) -> Probe``.
    description : str
        One line: the dataset and the files it expects.
    options : mapping of str to callable
        Reader options a spec may set, each with the parser of its text value.
    aliases : tuple of str
        Other accepted names.
    deferred : mapping of str to object
        Reader options that a spec with selection options overrides when reading,
        so that costly per-image work waits until after the selection.
    finish : callable or None
        ``finish(probe, reader_options) -> Probe`` does that work on the selected
        probe (only called when ``deferred`` was applied).
    """

    name: str
    read: Callable[..., Probe]
    description: str
    options: Mapping[str, Callable[[str], Any]] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    deferred: Mapping[str, Any] = field(default_factory=dict)
    finish: Callable[[Probe, Mapping[str, Any]], Probe] | None = None


def _read_folder(root: str | os.PathLike[str]) -> Probe:
    """A folder of images, as :func:`~mammodissect.probe.load_probe` lists it."""
    path = Path(root).expanduser()
    if path.exists() and not path.is_dir():
        raise MammodissectError(f"folder: probe '{os.fspath(root)}' is not a folder")
    return dataset.load_plain(path)


def _read_csv(root: str | os.PathLike[str], *, missing: str = "skip") -> Probe:
    """A CSV/TSV manifest, as :func:`~mammodissect.probe.load_probe` reads it; a listed file
    that does not exist is left out and recorded (``missing="skip"``, the default) or an
    error (``"error"``)."""
    path = Path(root).expanduser()
    if path.is_dir() or (path.exists() and path.suffix.lower() not in MANIFEST_EXTENSIONS):
        raise MammodissectError(f"csv: probe '{os.fspath(root)}' is not a .csv/.tsv manifest file")
    if not path.exists():
        raise MammodissectError(f"probe '{os.fspath(root)}' not found")
    return dataset.load_manifest(path, missing=missing)


def _cbis_finish(probe: Probe, options: Mapping[str, Any]) -> Probe:
    """Read the ROI masks of the selected CBIS-DDSM images."""
    if not options.get("mask_boxes", True):
        return probe
    return cbis_ddsm.add_mask_boxes(probe, workers=options.get("workers"))


_MISSING = {"missing": check_missing}

#: The known layouts by name (read-only).
LAYOUTS: Mapping[str, Layout] = MappingProxyType(
    {
        layout.name: layout
        for layout in (
            Layout(
                "folder",
                _read_folder,
                "a folder tree of DICOM/PNG/JPEG/TIFF images (image_id = relative path)",
            ),
            Layout(
                "csv",
                _read_csv,
                "a CSV/TSV manifest with a path column (and optional image_id, labels)",
                _MISSING,
                aliases=("manifest", "tsv"),
            ),
            Layout(
                vindr.NAME,
                vindr.read,
                f"VinDr-Mammo: {vindr.BREAST_TABLE}, {vindr.FINDING_TABLE}, "
                "images/<study_id>/<image_id>.dicom",
                _MISSING,
                aliases=("vindr-mammo",),
            ),
            Layout(
                cbis_ddsm.NAME,
                cbis_ddsm.read,
                "CBIS-DDSM: {mass,calc}_case_description_{train,test}_set.csv, full "
                "mammograms and ROI masks (classic, descriptive or jpeg/ folders)",
                {**_MISSING, "mask_boxes": _boolean, "workers": _integer},
                aliases=("cbis", "cbisddsm", "cbis_ddsm"),
                deferred={"mask_boxes": False},
                finish=_cbis_finish,
            ),
            Layout(
                embed.NAME,
                embed.read,
                f"EMBED: tables/{embed.METADATA_TABLES[0]} (+ {embed.CLINICAL_TABLES[0]}), "
                "cohort_*/ DICOMs; 2D images only",
                {**_MISSING, "clinical": _boolean},
            ),
            Layout(
                csaw_cc.NAME,
                csaw_cc.read,
                f"CSAW-CC: {csaw_cc.TABLE} and the DICOMs it names (any sub-folder)",
                _MISSING,
                aliases=("csaw", "csaw_cc", "csawcc"),
            ),
            Layout(
                rsna.NAME,
                rsna.read,
                "RSNA Screening Mammography: train.csv (+ test.csv), "
                "train_images/<patient_id>/<image_id>.dcm",
                _MISSING,
                aliases=("rsna-screening", "rsna-mammo"),
            ),
        )
    }
)

#: Options of a spec that go to :func:`~mammodissect.probe.select.select`.
SELECT_OPTIONS: Mapping[str, Callable[[str], Any]] = MappingProxyType(
    {
        "split": str,
        "views": str,
        "lateralities": str,
        "where": str,
        "sample": _integer,
        "seed": _integer,
    }
)
_OPTION_ALIASES = {"view": "views", "laterality": "lateralities", "splits": "split", "n": "sample"}

_SPEC = re.compile(r"^([A-Za-z][A-Za-z0-9_.+-]+):(.*)$", re.DOTALL)
# Options are split at "&" followed by "name=" (not "name==", which a query may hold).
_OPTION_START = re.compile(r"&(?=[A-Za-z_][A-Za-z0-9_]*=(?!=))")


def probe_layouts() -> dict[str, str]:
    """The known layout names and what each reads.

    Returns
    -------
    dict of str to str
        Layout name -> one-line description, in registry order.
    """
    return {name: layout.description for name, layout in LAYOUTS.items()}


def get_layout(name: str) -> Layout:
    """Return the layout called ``name`` (or one of its aliases; any case).

    Parameters
    ----------
    name : str
        A layout name.

    Returns
    -------
    Layout
        The registered layout.

    Raises
    ------
    MammodissectError
        For an unknown name; the message lists the known ones.
    """
    wanted = name.strip().lower()
    for layout in LAYOUTS.values():
        if wanted == layout.name or wanted in layout.aliases:
            return layout
    raise MammodissectError(f"unknown probe layout '{name}'; known layouts: {', '.join(LAYOUTS)}")


def _known_name(name: str) -> bool:
    """Whether ``name`` is a layout name or alias."""
    try:
        get_layout(name)
    except MammodissectError:
        return False
    return True


def is_layout_spec(text: str) -> bool:
    """Whether a probe string should be read as ``LAYOUT:PATH?OPTIONS``.

    It is when it starts with a name of two or more characters and ``:`` (so
    ``C:\\data`` is a path) and either the name is a known layout or the whole
    string is no existing path (then loading it reports the unknown layout).

    Parameters
    ----------
    text : str
        What the user gave as the probe.

    Returns
    -------
    bool
        ``True`` to parse it as a spec.
    """
    match = _SPEC.match(text)
    if match is None:
        return False
    if _known_name(match.group(1)):
        return True
    try:
        return not Path(text).exists()
    except (OSError, ValueError):
        return True


def parse_layout_spec(spec: str) -> tuple[Layout, Path, dict[str, Any], dict[str, Any]]:
    """Split a ``LAYOUT:PATH?OPTIONS`` spec into its parts.

    Options are ``name=value`` pairs joined by ``&``; a value may be
    percent-encoded (``%26`` for ``&``) and may itself hold ``&`` when the next
    text is not ``name=`` (so ``where=a==1 & b==2`` needs no encoding). List values
    (``split``, ``views``, ``lateralities``) are comma-separated.

    Parameters
    ----------
    spec : str
        For example ``"vindr:/data/vindr-mammo?split=test&views=CC,MLO&sample=500"``.

    Returns
    -------
    layout : Layout
        The layout named before the first ``:``.
    path : pathlib.Path
        The dataset folder (or manifest), ``~`` expanded.
    select_options : dict
        Keyword arguments for :func:`~mammodissect.probe.select.select`.
    reader_options : dict
        Keyword arguments for the layout's reader (``missing``, ...).

    Raises
    ------
    MammodissectError
        If the layout is unknown, the path is empty, or an option is unknown,
        repeated or has an invalid value.
    """
    match = _SPEC.match(spec)
    if match is None:
        raise MammodissectError(
            f"probe spec '{spec}' is not LAYOUT:PATH[?OPTIONS]; known layouts: {', '.join(LAYOUTS)}"
        )
    layout = get_layout(match.group(1))
    rest = match.group(2)
    location, _, query = rest.partition("?")
    if not location.strip():
        raise MammodissectError(f"probe spec '{spec}' names no path after '{match.group(1)}:'")
    select_options: dict[str, Any] = {}
    reader_options: dict[str, Any] = {}
    seen: set[str] = set()
    for part in _OPTION_START.split(query) if query else []:
        if not part:
            continue
        key, sep, raw = part.partition("=")
        key = key.strip().lower()
        key = _OPTION_ALIASES.get(key, key)
        if not sep or not key:
            raise MammodissectError(f"probe spec option '{part}' is not name=value")
        if key in seen:
            raise MammodissectError(f"probe spec option '{key}' given twice")
        seen.add(key)
        value = unquote(raw)
        if key in SELECT_OPTIONS:
            target, parser = select_options, SELECT_OPTIONS[key]
        elif key in layout.options:
            target, parser = reader_options, layout.options[key]
        else:
            known = [*SELECT_OPTIONS, *layout.options]
            raise MammodissectError(
                f"unknown option '{key}' for probe layout '{layout.name}'; "
                f"known options: {', '.join(known)}"
            )
        try:
            target[key] = parser(value)
        except (ValueError, MammodissectError) as exc:
            raise MammodissectError(f"probe spec option {key}={value!r}: {exc}") from None
    return layout, Path(location).expanduser(), select_options, reader_options


def read_layout(name: str, root: str | os.PathLike[str], **options: Any) -> Probe:
    """Read a dataset folder with the layout called ``name``.

    Parameters
    ----------
    name : str
        A layout name (see :func:`probe_layouts`).
    root : str or os.PathLike
        The dataset folder as downloaded (a manifest file for ``csv``).
    **options
        Reader options (``missing="skip"``, ...).

    Returns
    -------
    Probe
        Every image of the dataset (use :func:`~mammodissect.probe.select.select`
        to keep part of it).

    Raises
    ------
    MammodissectError
        For an unknown layout or option, or as the reader raises.
    """
    layout = get_layout(name)
    unknown = [key for key in options if key not in layout.options]
    if unknown:
        raise MammodissectError(
            f"unknown option(s) {', '.join(unknown)} for probe layout '{layout.name}'; "
            f"known: {', '.join(layout.options) or 'none'}"
        )
    return layout.read(root, **options)


def load_layout_spec(spec: str) -> Probe:
    """Load the probe a ``LAYOUT:PATH?OPTIONS`` spec describes.

    Parameters
    ----------
    spec : str
        See :func:`parse_layout_spec`; for example
        ``"cbis-ddsm:/data/CBIS-DDSM?split=test&where=pathology == 'MALIGNANT'"``.

    Returns
    -------
    Probe
        The layout's probe after :func:`~mammodissect.probe.select.select` with the
        spec's selection options (per-image work such as reading CBIS-DDSM's ROI
        masks is done for the selected images only).

    Raises
    ------
    MammodissectError
        As :func:`parse_layout_spec`, the reader and ``select`` raise.
    """
    layout, path, select_options, reader_options = parse_layout_spec(spec)
    defer = bool(select_options) and layout.finish is not None and bool(layout.deferred)
    read_options = {**reader_options, **layout.deferred} if defer else reader_options
    probe = layout.read(path, **read_options)
    if select_options:
        probe = select(probe, **select_options)
    if defer:
        assert layout.finish is not None
        probe = layout.finish(probe, reader_options)
    return probe


def load_probe(path: str | os.PathLike[str]) -> Probe:
    """Load a probe from a folder, a CSV/TSV manifest or a dataset-layout spec.

    A string ``LAYOUT:PATH?OPTIONS`` (for example
    ``"vindr:/data/vindr-mammo?split=test&sample=500&seed=1"``) reads a public
    dataset's own files with the layout named before the first ``:`` (see
    :func:`mammodissect.probe.probe_layouts`; ``folder:`` and ``csv:`` name the
    two plain forms below) and passes the options after ``?`` to
    :func:`mammodissect.probe.select` (``split``, ``views``, ``lateralities``,
    ``where``, ``sample``, ``seed``) or to the reader (``missing``); see
    :func:`mammodissect.probe.layouts.load_layout_spec`. A
    :class:`pathlib.Path` is always a plain path.

    A folder is searched recursively for files with :data:`IMAGE_EXTENSIONS`
    (any case) and for files with no extension, or a numeric one as in
    UID-named files, that start with the DICOM preamble. Hidden files and
    folders (names starting with ``"."``) and symlinked folders are skipped. Items are sorted by
    relative POSIX path, which is also their ``image_id``.

    A manifest (``.csv`` comma-, ``.tsv`` tab-separated, UTF-8) needs a ``path``
    column (any case); relative paths resolve against the manifest's folder,
    which is the probe root. An optional ``image_id`` column names the
    images (else the relative path does). Row order is probe order; a row
    repeating an ``image_id`` with the same file is dropped, keeping the first,
    with a warning naming the rows (and kept in :attr:`Probe.excluded`); two
    different files under one ``image_id`` are an error naming both rows. A
    listed file that does not exist is left out with its row and reason in
    :attr:`Probe.excluded` (a run records it as skipped; ``--strict`` makes it
    fatal), or is an error with the option ``missing=error``
    (``manifest.csv?missing=error``). The remaining columns become
    :attr:`Probe.labels`. Options may follow a plain path after ``?``, as in
    ``"probe/manifest.csv?missing=skip"``.

    Parameters
    ----------
    path : str or os.PathLike
        The probe folder or manifest, or a layout spec string.

    Returns
    -------
    Probe
        The listed images.

    Raises
    ------
    MammodissectError
        If ``path`` does not exist, is neither a folder nor a ``.csv``/``.tsv``
        file, the folder holds no images, the manifest is empty, not UTF-8, lacks a
        ``path`` column, has an empty path or image_id, gives one image_id to two
        files, or lists no file that exists; for a layout spec, as the layout's reader and
        :func:`~mammodissect.probe.select` raise, and for an unknown layout name.
    """
    if isinstance(path, str):
        if is_layout_spec(path):
            return load_layout_spec(path)
        plain, mark, _ = path.partition("?")
        if mark and not Path(path).exists() and Path(plain).expanduser().exists():
            # options on a plain path, e.g. manifest.csv?missing=skip
            kind = "folder" if Path(plain).expanduser().is_dir() else "csv"
            return load_layout_spec(f"{kind}:{path}")
    return dataset.load_plain(path)
