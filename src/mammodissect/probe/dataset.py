"""List the images of a probe set: a folder tree or a CSV/TSV manifest.

A probe is an ordered list of :class:`ProbeItem` (an ``image_id``, a POSIX
path relative to the probe root, and the absolute path used to open the
file). Only ``image_id`` and ``relpath`` ever reach outputs; absolute paths
stay in memory.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from mammodissect.errors import MammodissectError
from mammodissect.probe.images import is_dicom_file
from mammodissect.textfile import read_utf8

__all__ = [
    "BOX_COLUMNS",
    "IMAGE_EXTENSIONS",
    "MANIFEST_EXTENSIONS",
    "ExcludedRow",
    "Probe",
    "ProbeItem",
    "is_path_column",
    "load_manifest",
    "load_plain",
    "warn_excluded",
]

logger = logging.getLogger(__name__)

#: Extensions (lower case, with the dot) of image files a probe folder lists;
#: matching ignores case.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")

#: Manifest extensions and their delimiters.
MANIFEST_EXTENSIONS: dict[str, str] = {".csv": ",", ".tsv": "\t"}

#: Columns every :attr:`Probe.boxes` table starts with: the image, the finding name(s)
#: (``"|"``-joined when one region has several) and the region's corners in the stored
#: image's pixel coordinates (x = column, y = row, floats; NaN when unknown).
BOX_COLUMNS: tuple[str, ...] = ("image_id", "finding", "xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class ProbeItem:
    """One probe image.

    Attributes
    ----------
    image_id : str
        Identifier unique within the probe (the relative path for folders).
    relpath : str
        POSIX path relative to the probe root.
    path : pathlib.Path
        Absolute path used to open the file; never written to outputs.
    """

    image_id: str
    relpath: str
    path: Path


@dataclass(frozen=True)
class ExcludedRow:
    """A listed image the probe leaves out, kept so that nothing is dropped silently.

    Attributes
    ----------
    where : str
        Where it was listed, without any path (``"manifest 'm.csv' data row 3"``).
    image_id : str
        The id it was listed under.
    relpath : str
        The file as listed, relative to the probe root.
    reason : str
        Why it is left out (no path).
    missing : bool
        True for a listed file that does not exist (a bad image: recorded as skipped, fatal
        under ``--strict``); False for a row repeating an image already listed (dropped).
    """

    where: str
    image_id: str
    relpath: str
    reason: str
    missing: bool


@dataclass(eq=False)
class Probe:
    """An ordered set of probe images.

    Attributes
    ----------
    root : pathlib.Path
        Absolute probe root: the folder, or the manifest's folder.
    items : list of ProbeItem
        The images in probe order.
    labels : pandas.DataFrame or None
        Extra manifest columns indexed by ``image_id`` (in probe order), or
        ``None`` for folders and manifests without extra columns.
    source : str
        ``"folder"``, ``"manifest"`` or the name of the dataset layout that read it
        (``"vindr"``, ``"cbis-ddsm"``, ...).
    boxes : pandas.DataFrame or None
        Finding regions, one row each, starting with :data:`BOX_COLUMNS`, plus
        optional columns such as ``mask_path`` (relative to :attr:`root`),
        ``finding_birads`` or ``pathology``; ``None`` when the source has none.
    excluded : list of ExcludedRow
        Listed images left out: missing files (``missing="skip"``) and repeated rows.
    """

    root: Path
    items: list[ProbeItem]
    labels: pd.DataFrame | None = None
    source: str = "folder"
    boxes: pd.DataFrame | None = None
    excluded: list[ExcludedRow] = field(default_factory=list)
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        """Check that image ids are unique and labels match the items."""
        self._index = {}
        for position, item in enumerate(self.items):
            if item.image_id in self._index:
                raise MammodissectError(f"probe lists image_id '{item.image_id}' more than once")
            self._index[item.image_id] = position
        if self.labels is not None:
            ids = [item.image_id for item in self.items]
            if list(self.labels.index) != ids:
                raise MammodissectError("probe labels must be indexed by the items' image_id")
        if self.boxes is not None:
            absent = [column for column in BOX_COLUMNS if column not in self.boxes.columns]
            if absent:
                raise MammodissectError(f"probe boxes lack column(s) {', '.join(absent)}")
            unknown = set(self.boxes["image_id"]) - set(self._index)
            if unknown:
                raise MammodissectError(
                    f"probe boxes name {len(unknown)} image(s) the probe does not hold, "
                    f"e.g. '{sorted(map(str, unknown))[0]}'"
                )

    def __len__(self) -> int:
        """Number of images."""
        return len(self.items)

    def __iter__(self) -> Iterator[ProbeItem]:
        """Iterate over the items in probe order."""
        return iter(self.items)

    def __getitem__(self, index: int) -> ProbeItem:
        """Return the item at ``index`` (negative indices count from the end)."""
        return self.items[index]

    def __repr__(self) -> str:
        """Short description without any path."""
        columns = [] if self.labels is None else list(self.labels.columns)
        return f"Probe(source={self.source!r}, n={len(self)}, label_columns={columns!r})"

    @property
    def image_ids(self) -> list[str]:
        """The image ids in probe order."""
        return [item.image_id for item in self.items]

    def position(self, image_id: str) -> int:
        """Return the position of ``image_id`` in the probe.

        Parameters
        ----------
        image_id : str
            An id of this probe.

        Returns
        -------
        int
            Its index in :attr:`items`.

        Raises
        ------
        MammodissectError
            If the probe has no such image.
        """
        try:
            return self._index[image_id]
        except KeyError:
            raise MammodissectError(f"probe has no image_id '{image_id}'") from None

    def listing(self) -> list[dict[str, Any]]:
        """Privacy-safe rows describing the probe files, for cache fingerprints.

        Returns
        -------
        list of dict
            One row per item, in probe order, with keys ``image_id``,
            ``relpath``, ``size`` (bytes) and ``mtime_ns``. No absolute paths.

        Raises
        ------
        MammodissectError
            If a listed file no longer exists.
        """
        rows = []
        for item in self.items:
            try:
                stat = item.path.stat()
            except OSError as exc:
                raise MammodissectError(
                    f"probe image '{item.relpath}' cannot be read any more ({exc.strerror or exc})"
                ) from None
            rows.append(
                {
                    "image_id": item.image_id,
                    "relpath": item.relpath,
                    "size": int(stat.st_size),
                    "mtime_ns": int(stat.st_mtime_ns),
                }
            )
        return rows

    def subset(self, indices: Iterable[int]) -> Probe:
        """Return a probe holding the items at ``indices``, in that order.

        Parameters
        ----------
        indices : iterable of int
            Positions in this probe (negative ones count from the end); a
            position may not repeat.

        Returns
        -------
        Probe
            A new probe with the same root, source and excluded rows, and the labels and
            boxes of the kept images.

        Raises
        ------
        MammodissectError
            If an index is out of range or repeated.
        """
        chosen: list[ProbeItem] = []
        n = len(self.items)
        for raw in indices:
            index = int(raw)
            if not -n <= index < n:
                raise MammodissectError(f"probe index {index} out of range for {n} images")
            chosen.append(self.items[index])
        ids = [item.image_id for item in chosen]
        if len(set(ids)) != len(ids):
            raise MammodissectError("probe subset repeats an image")
        labels = None if self.labels is None else self.labels.loc[ids]
        boxes = None
        if self.boxes is not None:
            boxes = self.boxes[self.boxes["image_id"].isin(ids)].reset_index(drop=True)
        return Probe(
            root=self.root,
            items=chosen,
            labels=labels,
            source=self.source,
            boxes=boxes,
            excluded=list(self.excluded),
        )

    @property
    def missing(self) -> list[ExcludedRow]:
        """Listed files that do not exist (skipped, fatal under ``--strict``)."""
        return [row for row in self.excluded if row.missing]

    @property
    def dropped(self) -> list[ExcludedRow]:
        """Rows dropped because they repeat an image already listed."""
        return [row for row in self.excluded if not row.missing]


def is_path_column(name: object) -> bool:
    """Whether a label column names files (``path``, ``mask_path``, ``file_name``, ``roi_dir``),
    judged by its name (``pathology`` and ``path_severity`` are not)."""
    words = str(name).strip().lower().replace("-", "_").replace(" ", "_").split("_")
    last = {"path", "paths", "file", "files", "filename", "filepath", "dir", "directory"}
    return words[-1] in last or words[0] in ("file", "filename", "filepath")


def load_plain(path: str | os.PathLike[str]) -> Probe:
    """A probe folder or CSV/TSV manifest at ``path`` (no layout spec, no options): the plain
    forms of :func:`mammodissect.probe.load_probe`, which documents them."""
    probe_path = Path(path)
    if not probe_path.exists():
        raise MammodissectError(f"probe '{os.fspath(path)}' not found")
    if probe_path.is_dir():
        return _load_folder(path)
    if probe_path.is_file() and probe_path.suffix.lower() in MANIFEST_EXTENSIONS:
        return load_manifest(path)
    raise MammodissectError(
        f"probe '{os.fspath(path)}' is neither a folder of images nor a .csv/.tsv manifest"
    )


# --------------------------------------------------------------------------- folder


def _maybe_dicom_name(name: str) -> bool:
    """Whether a file name could be an unnamed DICOM (no or numeric suffix)."""
    suffix = os.path.splitext(name)[1]
    return suffix == "" or suffix[1:].isdigit()


def _scan(folder: str, prefix: str, found: list[str]) -> None:
    """Append the relative POSIX paths of images under ``folder`` to ``found``."""
    try:
        entries = list(os.scandir(folder))
    except OSError as exc:
        logger.warning("skipping unreadable probe folder '%s' (%s)", prefix or ".", exc.strerror)
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        rel = f"{prefix}{entry.name}"
        try:
            if entry.is_dir():  # follows symlinks; a cycle would need a link to an ancestor
                if not entry.is_symlink():
                    _scan(entry.path, rel + "/", found)
                continue
            if not entry.is_file():
                continue
        except OSError:
            continue
        if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS or (
            _maybe_dicom_name(entry.name) and is_dicom_file(entry.path)
        ):
            found.append(rel)


def _load_folder(path: str | os.PathLike[str]) -> Probe:
    """List the images of a folder tree."""
    root = Path(path).absolute()
    found: list[str] = []
    _scan(os.fspath(root), "", found)
    if not found:
        looked = ", ".join(IMAGE_EXTENSIONS)
        raise MammodissectError(
            f"probe folder '{os.fspath(path)}' holds no images "
            f"(looked for {looked} and extension-less DICOM files)"
        )
    found.sort()
    items = [
        ProbeItem(image_id=rel, relpath=rel, path=root.joinpath(*rel.split("/"))) for rel in found
    ]
    logger.info("probe folder: %d images", len(items))
    return Probe(root=root, items=items, labels=None, source="folder")


# --------------------------------------------------------------------------- manifest


def _find_column(columns: list[str], wanted: str) -> str | None:
    """Return the column whose stripped, lower-cased name is ``wanted``."""
    for column in columns:
        if str(column).strip().lower() == wanted:
            return column
    return None


def _cell(value: Any) -> str:
    """A manifest cell as a stripped string ('' for missing)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def load_manifest(path: str | os.PathLike[str], missing: str = "skip") -> Probe:
    """List the images of a CSV/TSV manifest, as :func:`mammodissect.probe.load_probe`
    describes; ``missing`` is ``"skip"`` (a listed file that does not exist goes to
    :attr:`Probe.excluded`) or ``"error"``."""
    manifest = Path(path)
    name = manifest.name
    sep = MANIFEST_EXTENSIONS[manifest.suffix.lower()]
    text = io.StringIO(read_utf8(manifest, "manifest"))
    try:
        header = pd.read_csv(text, sep=sep, nrows=0)
        columns = [str(column) for column in header.columns]
        path_col = _find_column(columns, "path")
        id_col = _find_column(columns, "image_id")
        if path_col is None:
            raise MammodissectError(
                f"manifest '{name}' has no 'path' column (columns found: "
                f"{', '.join(repr(c) for c in columns) or 'none'})"
            )
        as_text = {path_col: str} if id_col is None else {path_col: str, id_col: str}
        text.seek(0)
        table = pd.read_csv(text, sep=sep, dtype=as_text)
    except pd.errors.EmptyDataError:
        raise MammodissectError(f"manifest '{name}' is empty") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise MammodissectError(f"cannot parse manifest '{name}' ({exc})") from None
    if table.empty:
        raise MammodissectError(f"manifest '{name}' lists no images (it has a header only)")

    root = manifest.absolute().parent
    paths = table[path_col].tolist()
    ids = table[id_col].tolist() if id_col is not None else [None] * len(table)
    items: list[ProbeItem] = []
    excluded: list[ExcludedRow] = []
    keep: list[int] = []
    first: dict[str, tuple[int, Path, str]] = {}  # image_id -> where first listed: row, file
    for row, (raw_path, raw_id) in enumerate(zip(paths, ids, strict=True), start=1):
        where = f"manifest '{name}' data row {row} (line {row + 1})"
        listed = _cell(raw_path)
        if not listed:
            raise MammodissectError(f"{where}: empty path")
        absolute = Path(os.path.normpath(root / listed))
        try:
            relpath = absolute.relative_to(root).as_posix()
        except ValueError:
            try:
                relpath = Path(os.path.relpath(absolute, root)).as_posix()
            except ValueError:  # another drive on Windows
                relpath = absolute.name
        if id_col is not None:
            image_id = _cell(raw_id)
            if not image_id:
                raise MammodissectError(f"{where}: empty image_id")
        else:
            image_id = relpath
        if image_id in first:
            earlier, earlier_file, earlier_rel = first[image_id]
            if absolute != earlier_file:
                raise MammodissectError(
                    f"manifest '{name}' data rows {earlier} and {row} give image_id "
                    f"'{image_id}' to two different files ('{earlier_rel}' and '{relpath}'); "
                    "give each image its own image_id"
                )
            reason = f"repeats data row {earlier} (same image_id and file)"
            excluded.append(ExcludedRow(where, image_id, relpath, reason, missing=False))
            continue
        first[image_id] = (row, absolute, relpath)
        if not absolute.is_file():
            state = "is not a file" if absolute.exists() else "does not exist"
            if missing == "error":
                raise MammodissectError(
                    f"{where}: listed image '{listed}' {state}; check the path, or leave such "
                    f"rows out with '{name}?missing=skip'"
                )
            excluded.append(ExcludedRow(where, image_id, relpath, f"file {state}", missing=True))
            continue
        keep.append(row - 1)
        items.append(ProbeItem(image_id=image_id, relpath=relpath, path=absolute))
    warn_excluded(f"manifest '{name}'", excluded)
    if not items:
        raise MammodissectError(
            f"manifest '{name}' lists no file that exists (first listed: "
            f"'{excluded[0].relpath}'); check that its paths are relative to its own folder"
        )
    extra = [column for column in table.columns if column not in (path_col, id_col)]
    labels = None
    if extra:
        labels = table.iloc[keep][extra].copy()
        labels.index = pd.Index([item.image_id for item in items], name="image_id")
    logger.info("probe manifest: %d images", len(items))
    return Probe(root=root, items=items, labels=labels, source="manifest", excluded=excluded)


def _rows(source: str, rows: list[ExcludedRow], shown: int = 5) -> str:
    """The first ``shown`` excluded rows as text (``data row 3 (line 4) 'a.png'``, ...)."""
    text = ", ".join(f"{r.where.removeprefix(source + ' ')} '{r.relpath}'" for r in rows[:shown])
    return text + (f" and {len(rows) - shown} more" if len(rows) > shown else "")


def warn_excluded(source: str, excluded: list[ExcludedRow]) -> None:
    """Log one warning for the missing files and one for the repeated rows, naming the rows."""
    missing = [r for r in excluded if r.missing]
    dropped = [r for r in excluded if not r.missing]
    if missing:
        logger.warning(
            "%s: %d listed image file(s) not found, skipped (run.json lists them; --strict "
            "stops instead): %s",
            source,
            len(missing),
            _rows(source, missing),
        )
    if dropped:
        logger.warning(
            "%s: dropped %d row(s) repeating an image already listed (kept the first): %s",
            source,
            len(dropped),
            _rows(source, dropped),
        )
