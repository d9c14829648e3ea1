"""Shared helpers of the dataset-layout readers.

Every reader turns a public dataset's CSV tables into a :class:`~mammodissect.probe.Probe`
with the standard label columns (:data:`STANDARD_COLUMNS`) and, where the dataset has
them, finding boxes (:data:`~mammodissect.probe.dataset.BOX_COLUMNS`). The helpers here
locate the tables, read them as text, normalise the usual label values, resolve listed
image files tolerantly and apply the ``missing`` policy.
"""

from __future__ import annotations

import ast
import fnmatch
import io
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.errors import MammodissectError
from mammodissect.probe.dataset import (
    BOX_COLUMNS,
    IMAGE_EXTENSIONS,
    ExcludedRow,
    Probe,
    ProbeItem,
    warn_excluded,
)
from mammodissect.textfile import read_utf8

__all__ = [
    "CONVERTED_EXTENSIONS",
    "MISSING_POLICIES",
    "STANDARD_COLUMNS",
    "Collector",
    "NameIndex",
    "auto_types",
    "check_missing",
    "dataset_root",
    "first_file",
    "join_unique",
    "literal",
    "locate",
    "make_probe",
    "norm_birads",
    "norm_density",
    "norm_laterality",
    "norm_split",
    "norm_view",
    "parse_list",
    "read_table",
    "relpath",
    "snake",
    "text",
    "with_extensions",
]

logger = logging.getLogger(__name__)

#: How a reader treats a listed image file that does not exist.
MISSING_POLICIES: tuple[str, ...] = ("error", "skip")

#: Label columns every reader names the same way when its dataset has the information,
#: in the order they come first in :attr:`Probe.labels`.
STANDARD_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "study_id",
    "view",
    "laterality",
    "split",
    "density",
    "birads",
    "findings",
)

# Folders with more sub-folders than this are image trees, not worth searching for tables.
_MAX_SUBDIRS = 64


def check_missing(missing: str) -> str:
    """Validate a ``missing`` policy.

    Parameters
    ----------
    missing : str
        ``"error"`` or ``"skip"`` (any case).

    Returns
    -------
    str
        The policy in lower case.

    Raises
    ------
    MammodissectError
        For any other value.
    """
    value = str(missing).strip().lower()
    if value not in MISSING_POLICIES:
        raise MammodissectError(
            f"missing={missing!r} is not a policy; use one of {', '.join(MISSING_POLICIES)}"
        )
    return value


def dataset_root(root: str | os.PathLike[str], layout: str) -> Path:
    """Return ``root`` as an absolute folder path, or raise naming the layout.

    Parameters
    ----------
    root : str or os.PathLike
        The dataset folder as the user downloaded it.
    layout : str
        The layout name, for the message.

    Returns
    -------
    pathlib.Path
        The absolute folder.

    Raises
    ------
    MammodissectError
        If ``root`` does not exist or is not a folder.
    """
    path = Path(root).expanduser()
    if not path.exists():
        raise MammodissectError(f"{layout} dataset folder '{os.fspath(root)}' not found")
    if not path.is_dir():
        raise MammodissectError(
            f"{layout} dataset path '{os.fspath(root)}' is a file; give the dataset folder"
        )
    return path.absolute()


def _subdirs(folder: Path) -> list[Path]:
    """Visible sub-folders of ``folder`` (empty for image trees and unreadable folders)."""
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir():
                found.append(Path(entry.path))
        except OSError:
            continue
        if len(found) > _MAX_SUBDIRS:
            return []
    return found


def locate(
    root: Path,
    names: Sequence[str],
    *,
    max_depth: int = 4,
) -> Path | None:
    """Find the first of ``names`` in ``root`` or a sub-folder up to ``max_depth`` deep.

    Folders are searched breadth first in name order; folders holding more than
    64 sub-folders (image trees) are not entered. Names match case-insensitively
    and may be glob patterns (``"csaw-cc*.csv"``).

    Parameters
    ----------
    root : pathlib.Path
        Where to start.
    names : sequence of str
        File names or patterns in order of preference.
    max_depth : int, optional
        How many folder levels below ``root`` to search.

    Returns
    -------
    pathlib.Path or None
        The file found, or ``None``.
    """
    wanted = [name.lower() for name in names]
    level = [root]
    for depth in range(max_depth + 1):
        for folder in level:
            try:
                files = sorted(
                    (entry.name.lower(), Path(entry.path))
                    for entry in os.scandir(folder)
                    if not entry.name.startswith(".") and entry.is_file()
                )
            except OSError:
                continue
            for name in wanted:
                for file_name, path in files:
                    if fnmatch.fnmatchcase(file_name, name):
                        return path
        if depth == max_depth:
            break
        level = [sub for folder in level for sub in _subdirs(folder)]
    return None


def snake(name: object) -> str:
    """A column name in snake_case: ``"left or right breast"`` -> ``"left_or_right_breast"``."""
    value = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name).strip())
    value = re.sub(r"[^0-9a-zA-Z]+", "_", value).strip("_").lower()
    return value or "column"


def read_table(
    path: Path,
    *,
    layout: str,
    required: Sequence[str] = (),
    rename: bool = True,
) -> pd.DataFrame:
    """Read a dataset CSV with every cell as text (missing cells as NaN).

    Parameters
    ----------
    path : pathlib.Path
        The CSV file.
    layout : str
        The layout name, for messages.
    required : sequence of str, optional
        Columns (after renaming) the table must have.
    rename : bool, optional
        Rename the columns to snake_case (:func:`snake`).

    Returns
    -------
    pandas.DataFrame
        The table, with a default integer index (data row ``i`` is row ``i + 1``).

    Raises
    ------
    MammodissectError
        If the file is empty or unparsable, repeats a column, or lacks a required column.
    """
    text = io.StringIO(read_utf8(path, f"{layout} table"))
    try:
        table = pd.read_csv(text, dtype=str, keep_default_na=True)
    except pd.errors.EmptyDataError:
        raise MammodissectError(f"{layout} table '{path.name}' is empty") from None
    except (pd.errors.ParserError, ValueError) as exc:
        raise MammodissectError(f"cannot read {layout} table '{path.name}' ({exc})") from None
    if rename:
        names = [snake(column) for column in table.columns]
        if len(set(names)) != len(names):
            raise MammodissectError(
                f"{layout} table '{path.name}' has columns that differ only in case or "
                f"punctuation: {list(table.columns)}"
            )
        table.columns = names
    absent = [column for column in required if column not in table.columns]
    if absent:
        raise MammodissectError(
            f"{layout} table '{path.name}' lacks column(s) {', '.join(absent)} "
            f"(columns found: {', '.join(map(str, table.columns)) or 'none'}); "
            f"is this the {layout} dataset's own CSV?"
        )
    return table


def text(value: Any) -> str:
    """A cell as a stripped string ("" for missing)."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float) and np.isnan(value):
        return ""
    return str(value).strip()


# --------------------------------------------------------------------------- label values


_VIEWS = {"CRANIOCAUDAL": "CC", "MEDIOLATERAL OBLIQUE": "MLO", "MEDIO-LATERAL OBLIQUE": "MLO"}


def _spelled(key: str, spellings: Mapping[str, str]) -> Any:
    """``spellings[key]``, or ``key`` itself when not listed; NaN when ``key`` is empty."""
    if not key:
        return np.nan
    return spellings.get(key, key)


def norm_view(value: Any) -> Any:
    """A view position in upper case (``"cc"`` -> ``"CC"``); NaN when empty."""
    return _spelled(text(value).upper(), _VIEWS)


def norm_laterality(value: Any) -> Any:
    """``"L"``/``"R"`` from L, R, LEFT, RIGHT (any case); NaN otherwise."""
    side = text(value).upper()
    if side in ("L", "LEFT"):
        return "L"
    if side in ("R", "RIGHT"):
        return "R"
    return np.nan


_SPLITS = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
}


def norm_split(value: Any) -> Any:
    """``train``/``test``/``val`` from the usual spellings, else the value in lower case."""
    return _spelled(text(value).lower(), _SPLITS)


def norm_density(value: Any) -> Any:
    """BI-RADS density letter A-D from ``"DENSITY C"``, ``"C"`` or 1-4; NaN otherwise."""
    raw = text(value).upper()
    if raw.startswith("DENSITY"):
        raw = raw[len("DENSITY") :].strip()
    if raw in ("A", "B", "C", "D"):
        return raw
    try:
        number = float(raw)
    except ValueError:
        return np.nan
    if number in (1.0, 2.0, 3.0, 4.0):
        return "ABCD"[int(number) - 1]
    return np.nan


def norm_birads(value: Any) -> Any:
    """BI-RADS category 0-6 from ``"BI-RADS 4"``, ``"4"``, ``4.0`` or ``"4A"``; NA otherwise."""
    raw = text(value).upper().replace("BI-RADS", "").replace("BIRADS", "").strip()
    match = re.fullmatch(r"([0-6])(?:\.0*)?[ABC]?", raw)
    return int(match.group(1)) if match else pd.NA


def literal(raw: str, fallback: Callable[[str], Any]) -> Any:
    """``raw`` read as a Python literal, or ``fallback(raw)`` when it is none."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return fallback(raw)


def _split_list(raw: str) -> list[str]:
    """The comma-separated parts of a list-like text, brackets and quotes stripped."""
    return [part.strip().strip("'\"") for part in raw.strip("[]()").split(",")]


def parse_list(value: Any) -> list[str]:
    """A Python-list-like cell (``"['Mass', 'Asymmetry']"``) as a list of stripped strings."""
    raw = text(value)
    if not raw:
        return []
    parsed = literal(raw, _split_list)
    if isinstance(parsed, str):
        parsed = [parsed]
    if not isinstance(parsed, list | tuple | set):
        parsed = [parsed]
    return [str(item).strip() for item in parsed if str(item).strip()]


def join_unique(values: Iterable[Any]) -> str:
    """Sorted distinct non-empty values joined with ``"|"`` ("" when none)."""
    return "|".join(sorted({text(value) for value in values} - {""}))


def auto_types(frame: pd.DataFrame, skip: Iterable[str] = ()) -> pd.DataFrame:
    """Convert text columns that hold only numbers or booleans.

    Integer-valued columns become nullable ``Int64``, other numeric ones
    ``float64``, ``True``/``False`` columns ``boolean``. Columns in ``skip`` (ids)
    stay text.

    Parameters
    ----------
    frame : pandas.DataFrame
        Labels built from text cells.
    skip : iterable of str, optional
        Columns to leave alone.

    Returns
    -------
    pandas.DataFrame
        A converted copy.
    """
    out = frame.copy()
    keep = set(skip)
    for column in out.columns:
        if column in keep:
            continue
        series = out[column]
        if series.dtype.kind in "biufc" or str(series.dtype) in ("Int64", "boolean"):
            continue
        present = series.dropna()
        present = present[present.map(lambda cell: text(cell) != "")]
        if present.empty:
            continue
        lowered = present.map(lambda cell: text(cell).lower())
        if lowered.isin(["true", "false"]).all():
            values = series.map(
                lambda cell: {"true": True, "false": False}.get(text(cell).lower(), pd.NA)
            )
            out[column] = pd.array(values.tolist(), dtype="boolean")
            continue
        numbers = pd.to_numeric(present.map(text), errors="coerce")
        if numbers.isna().any():
            continue
        converted = pd.to_numeric(series.map(lambda cell: text(cell) or np.nan), errors="coerce")
        if np.all(np.mod(numbers.to_numpy(dtype=float), 1) == 0):
            out[column] = converted.astype("Int64")
        else:
            out[column] = converted.astype("float64")
    return out


# --------------------------------------------------------------------------- files


def first_file(candidates: Iterable[Path]) -> Path | None:
    """The first candidate that is an existing file, or ``None``."""
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate
        except OSError:
            continue
    return None


@dataclass
class NameIndex:
    """Find files by name anywhere under a folder (built on first use, by one walk).

    Attributes
    ----------
    root : pathlib.Path
        The folder to walk; hidden files and folders are skipped.
    """

    root: Path
    _paths: dict[str, Path] | None = field(default=None, init=False, repr=False)

    def find(self, name: str) -> Path | None:
        """Return the file called ``name`` (first in sorted path order), or ``None``."""
        if self._paths is None:
            self._paths = {}
            for folder, dirs, files in os.walk(self.root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for file in sorted(files):
                    if not file.startswith("."):
                        self._paths.setdefault(file, Path(folder) / file)
            logger.debug("indexed %d files by name", len(self._paths))
        return self._paths.get(name)


def relpath(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` as POSIX (the file name when outside ``root``)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        try:
            rel = Path(os.path.relpath(path, root)).as_posix()
        except ValueError:  # another drive on Windows
            return path.name
        return rel if not rel.startswith("..") else path.name


@dataclass
class Collector:
    """Gather probe items and their label rows while applying the ``missing`` policy.

    Attributes
    ----------
    root : pathlib.Path
        The probe root (the dataset folder).
    layout : str
        Layout name, for messages.
    missing : str
        ``"error"`` or ``"skip"``.
    """

    root: Path
    layout: str
    missing: str = "error"
    items: list[ProbeItem] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[ExcludedRow] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False)

    def add(
        self,
        image_id: str,
        path: Path | None,
        labels: dict[str, Any],
        *,
        table: str,
        row: int,
        listed: str,
    ) -> bool:
        """Add one image, or apply the missing policy when ``path`` is ``None``.

        Parameters
        ----------
        image_id : str
            The id the dataset gives the image; must be new.
        path : pathlib.Path or None
            The resolved file, or ``None`` when it was not found.
        labels : dict
            Label values of the image.
        table : str
            The CSV file name, for the message.
        row : int
            The 1-based data row (header excluded) of the CSV.
        listed : str
            The path or name as the CSV gives it (or as the layout builds it).

        Returns
        -------
        bool
            Whether the image was added.

        Raises
        ------
        MammodissectError
            If the file is missing and the policy is ``"error"``, or the id repeats.
        """
        if not image_id:
            raise MammodissectError(f"{self.layout} table '{table}' data row {row}: empty image id")
        if image_id in self._seen:
            raise MammodissectError(
                f"{self.layout} table '{table}' data row {row}: image id '{image_id}' appears twice"
            )
        if path is None:
            if self.missing == "skip":
                where = f"{self.layout} table '{table}' data row {row}"
                self.excluded.append(
                    ExcludedRow(where, image_id, listed, "file not found", missing=True)
                )
                return False
            raise MammodissectError(
                f"{self.layout} table '{table}' data row {row}: listed image '{listed}' not "
                f"found under the dataset folder '{self.root.name}'; check the folder or pass "
                "missing='skip' (probe spec option '?missing=skip') to leave such rows out"
            )
        self._seen.add(image_id)
        self.items.append(ProbeItem(image_id=image_id, relpath=relpath(path, self.root), path=path))
        self.rows.append(labels)
        return True

    def __contains__(self, image_id: object) -> bool:
        """Whether ``image_id`` was added."""
        return image_id in self._seen


def make_probe(
    collector: Collector,
    *,
    boxes: Sequence[dict[str, Any]] | None = None,
    id_columns: Iterable[str] = (),
) -> Probe:
    """Build the probe of a layout reader.

    Label columns come in :data:`STANDARD_COLUMNS` order first, then the
    dataset-specific ones in the order the rows first name them; text columns
    holding only numbers become numeric (:func:`auto_types`) except the standard
    ones and ``id_columns``. Boxes of images that were skipped are dropped.

    Parameters
    ----------
    collector : Collector
        The items and label rows.
    boxes : sequence of dict, optional
        One dict per finding region with at least :data:`BOX_COLUMNS`; ``None``
        (no boxes table) when the dataset has no regions, ``[]`` for an empty one.
    id_columns : iterable of str, optional
        Dataset-specific id columns to keep as text (in labels and boxes).

    Returns
    -------
    Probe
        The probe, ``source`` set to the layout name.

    Raises
    ------
    MammodissectError
        If no image is left.
    """
    id_columns = tuple(id_columns)
    warn_excluded(collector.layout, collector.excluded)
    if not collector.items:
        raise MammodissectError(
            f"{collector.layout} dataset folder '{collector.root.name}' gave no images"
            + (" (every listed image file is missing)" if collector.excluded else "")
        )
    ids = [item.image_id for item in collector.items]
    order: list[str] = []
    for row in collector.rows:
        for key in row:
            if key not in order:
                order.append(key)
    columns = [c for c in STANDARD_COLUMNS if c in order]
    columns += [c for c in order if c not in STANDARD_COLUMNS]
    labels = pd.DataFrame(collector.rows, columns=columns)
    labels.index = pd.Index(ids, name="image_id")
    labels = auto_types(labels, skip=[*STANDARD_COLUMNS, *id_columns])
    if "birads" in labels.columns:
        labels["birads"] = pd.array(
            [norm_birads(value) for value in labels["birads"]], dtype="Int64"
        )
    box_frame = None
    if boxes is not None:
        kept = set(ids)
        box_frame = pd.DataFrame([box for box in boxes if box["image_id"] in kept])
        if box_frame.empty:
            box_frame = pd.DataFrame(columns=list(BOX_COLUMNS))
        extra = [c for c in box_frame.columns if c not in BOX_COLUMNS]
        box_frame = box_frame[[*BOX_COLUMNS, *extra]].reset_index(drop=True)
        for column in ("xmin", "ymin", "xmax", "ymax"):
            box_frame[column] = pd.to_numeric(box_frame[column], errors="coerce").astype(float)
        box_frame = auto_types(box_frame, skip=["image_id", "finding", "mask_path", *id_columns])
        if "finding_birads" in box_frame.columns:
            box_frame["finding_birads"] = pd.array(
                [norm_birads(value) for value in box_frame["finding_birads"]], dtype="Int64"
            )
    logger.info(
        "%s probe: %d images, %d boxes",
        collector.layout,
        len(ids),
        0 if box_frame is None else len(box_frame),
    )
    return Probe(
        root=collector.root,
        items=collector.items,
        labels=labels,
        source=collector.layout,
        boxes=box_frame,
        excluded=collector.excluded,
    )


def with_extensions(folder: Path, stem: str, extensions: Sequence[str]) -> list[Path]:
    """``folder/<stem><ext>`` for each extension (``stem`` may hold dots)."""
    return [folder / f"{stem}{ext}" for ext in extensions]


#: Image extensions tried when a layout's images were converted (DICOM first).
CONVERTED_EXTENSIONS: tuple[str, ...] = tuple(
    dict.fromkeys((".dcm", ".dicom", ".png", *IMAGE_EXTENSIONS))
)
