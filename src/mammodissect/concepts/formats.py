"""Concept files in and out: plain text, CSV/TSV, YAML/JSON and the study's workbook layout.

======================  =====================================================================
extension               layout
======================  =====================================================================
``.txt`` (and others)   one concept per line; lines starting with ``#`` are comments
``.csv``, ``.tsv``      a header row with ``concept`` and optionally ``category``,
                        ``broad_category``, ``control`` (true/false; blank = unknown)
``.yaml``/``.yml``,     ``{broad: {control: true|false, category: [concepts], ...}}``;
``.json``               ``{broad: [concepts]}`` (no sub-category) or a flat list also read
``.xlsx``               one sheet per broad category, row 1 = category names, the cells below
                        = its concepts (names are stripped: a sheet called " Findings" is
                        "Findings"); an optional sheet ``_control`` with columns
                        ``broad_category, control`` gives the control flags
======================  =====================================================================

Plain text keeps only the strings. Nested formats and workbooks group concepts by category, so
they keep the order of a set whose categories are contiguous (as the bundled sets are); a
multi-label concept is listed under each of its categories (read it back with
``duplicates="multi"``). CSV/TSV keep everything, multi-labels as ``a|b``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from mammodissect.concepts.core import (
    ConceptSet,
    Entry,
    build,
    normalise,
    parse_control,
)
from mammodissect.errors import MammodissectError
from mammodissect.textfile import read_utf8

__all__ = ["FORMATS", "format_of", "read", "write"]

log = logging.getLogger(__name__)

#: Extension -> format name.
FORMATS = {
    ".txt": "text",
    ".csv": "csv",
    ".tsv": "tsv",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
    ".xlsx": "xlsx",
}
CONTROL_SHEET = "_control"
_COLUMNS = ("concept", "category", "broad_category", "control")
_SHEET_BAD = re.compile(r"[\[\]:*?/\\]")


def format_of(path: str | Path, writing: bool = False) -> str:
    """The format of ``path`` by its extension (reading: anything unknown is plain text)."""
    suffix = Path(path).suffix.lower()
    if suffix in FORMATS:
        return FORMATS[suffix]
    if suffix == ".xls":
        raise MammodissectError(
            f"{Path(path).name!r}: the old .xls format is not read; save the workbook as .xlsx"
        )
    if writing:
        raise MammodissectError(
            f"cannot tell the format of {Path(path).name!r} from its extension; "
            f"use one of {', '.join(FORMATS)}"
        )
    return "text"


# ---------------------------------------------------------------------------------------------
# reading


def read(path: str | Path, duplicates: str = "first", name: str | None = None) -> ConceptSet:
    """Read a concept file in the format its extension names (see the module docstring).

    Raises
    ------
    MammodissectError
        When the file is not UTF-8 (naming the byte offset and line), malformed, or empty.
    """
    path = Path(path)
    kind = format_of(path)
    readers = {
        "text": _read_text,
        "csv": lambda p: _read_table(p, ","),
        "tsv": lambda p: _read_table(p, "\t"),
        "yaml": _read_nested,
        "json": _read_nested,
        "xlsx": _read_workbook,
    }
    entries, blank = readers[kind](path)
    return build(entries, name=name or path.name, duplicates=duplicates, blank_lines=blank)


def _read_text(path: Path) -> tuple[list[Entry], int]:
    entries, blank = [], 0
    for number, line in enumerate(read_utf8(path, "concept file").splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            continue
        if not stripped:
            blank += 1
            continue
        entries.append(Entry(stripped, where=f"line {number}"))
    return entries, blank


def _header_key(cell: str) -> str:
    return re.sub(r"[\s\-]+", "_", cell.strip().lower())


def _read_table(path: Path, delimiter: str) -> tuple[list[Entry], int]:
    rows = list(
        csv.reader(io.StringIO(read_utf8(path, "concept file"), newline=""), delimiter=delimiter)
    )
    start = next((i for i, row in enumerate(rows) if any(c.strip() for c in row)), None)
    if start is None:
        return [], 0
    header = [_header_key(cell) for cell in rows[start]]
    if "concept" not in header:
        raise MammodissectError(
            f"concept table {path.name!r} has no 'concept' column in its header row "
            f"({', '.join(repr(c) for c in rows[start])}); the header needs "
            f"{', '.join(_COLUMNS)} (the last three optional)"
        )
    unknown = [c for c in header if c and c not in _COLUMNS]
    if unknown:
        log.warning("%s: ignoring columns %s", path.name, ", ".join(unknown))
    index = {key: header.index(key) for key in _COLUMNS if key in header}
    entries, blank = [], 0
    for number, row in enumerate(rows[start + 1 :], start=start + 2):

        def cell(key: str, row: list[str] = row) -> str | None:
            i = index.get(key)
            value = row[i].strip() if i is not None and i < len(row) else ""
            return value or None

        text = cell("concept")
        if text is None:
            blank += 1
            continue
        where = f"row {number}"
        entries.append(
            Entry(
                text,
                cell("category"),
                cell("broad_category"),
                parse_control(cell("control"), f"{path.name} {where}"),
                where,
            )
        )
    return entries, blank


def _load_nested(path: Path) -> Any:
    text = read_utf8(path, "concept file")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise MammodissectError(
                f"concept file {path.name!r} is not valid JSON: {err.msg} at line {err.lineno}"
            ) from err
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "parse error"
        raise MammodissectError(
            f"concept file {path.name!r} is not valid YAML: {problem}{where}"
        ) from err


def _item(value: Any, path: Path, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value)
    raise MammodissectError(
        f'{path.name}: {where} is {value!r}, not a concept string; quote it ("yes", "no" '
        'and "on" are booleans in YAML) or fix the nesting: {broad: {category: [concepts]}}'
    )


def _number(value: int | float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _read_nested(path: Path) -> tuple[list[Entry], int]:
    data = _load_nested(path)
    entries: list[Entry] = []
    if data is None:
        return entries, 0
    if isinstance(data, list):
        return [
            Entry(_item(v, path, f"item {i}"), where=f"item {i}")
            for i, v in enumerate(data, start=1)
        ], 0
    if not isinstance(data, dict):
        raise MammodissectError(
            f"{path.name}: expected a list of concepts or a mapping "
            "{broad_category: {category: [concepts]}}"
        )
    for broad, body in data.items():
        broad_name = normalise(str(broad))
        if isinstance(body, list):
            groups: dict[Any, Any] = {None: body}
            control = None
        elif isinstance(body, dict):
            marker = body.get("control")
            if "control" in body and not isinstance(marker, list):
                control = parse_control(marker, f"{path.name}: {broad_name} control")
                groups = {k: v for k, v in body.items() if k != "control"}
            else:  # no marker, or a category that happens to be called "control"
                control, groups = None, dict(body)
        else:
            raise MammodissectError(
                f"{path.name}: broad category {broad_name!r} holds {type(body).__name__}; "
                "give a list of concepts or a mapping {category: [concepts]}"
            )
        for category, items in groups.items():
            label = normalise(str(category)) if category is not None else None
            place = f"{broad_name} / {label}" if label else broad_name
            if not isinstance(items, list):
                raise MammodissectError(
                    f"{path.name}: {place} holds {items!r}; give a list of concepts"
                )
            for i, value in enumerate(items, start=1):
                where = f"{place} item {i}"
                entries.append(Entry(_item(value, path, where), label, broad_name, control, where))
    return entries, 0


def _openpyxl() -> Any:
    try:
        import openpyxl
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise MammodissectError(
            "reading or writing .xlsx concept files needs openpyxl: pip install openpyxl"
        ) from err
    return openpyxl


def _read_workbook(path: Path) -> tuple[list[Entry], int]:
    openpyxl = _openpyxl()
    from openpyxl.utils import get_column_letter

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as err:  # zipfile, XML and openpyxl's own errors alike
        raise MammodissectError(
            f"concept workbook {path.name!r} cannot be read as .xlsx ({type(err).__name__}: "
            f"{err}); save it from a spreadsheet program as an Excel workbook"
        ) from err
    entries: list[Entry] = []
    flags: dict[str, bool | None] = {}
    blank = 0
    try:
        for sheet in book.worksheets:
            rows = [list(row) for row in sheet.iter_rows(values_only=True)]
            title = normalise(sheet.title)
            if title == CONTROL_SHEET:
                flags = _control_sheet(rows, path)
                continue
            if not rows:
                continue
            width = max(len(row) for row in rows)
            for col in range(width):
                head = rows[0][col] if col < len(rows[0]) else None
                category = normalise(_text(head)) or None
                cells = [row[col] if col < len(row) else None for row in rows[1:]]
                last = max((i for i, v in enumerate(cells) if _text(v).strip()), default=-1)
                for i, value in enumerate(cells[: last + 1]):
                    text = _text(value)
                    if not text.strip():
                        blank += 1
                        continue
                    where = f"sheet {sheet.title!r} cell {get_column_letter(col + 1)}{i + 2}"
                    entries.append(Entry(text, category, title, None, where))
    finally:
        book.close()
    if flags:
        entries = [e._replace(control=flags.get(e.broad_category or "")) for e in entries]
    return entries, blank


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return _number(value)
    return str(value)


def _control_sheet(rows: list[list[Any]], path: Path) -> dict[str, bool | None]:
    if not rows:
        return {}
    header = [_header_key(_text(c)) for c in rows[0]]
    if "broad_category" not in header or "control" not in header:
        raise MammodissectError(
            f"{path.name}: sheet {CONTROL_SHEET!r} needs the columns broad_category and control"
        )
    b, c = header.index("broad_category"), header.index("control")
    flags = {}
    for number, row in enumerate(rows[1:], start=2):
        name = normalise(_text(row[b] if b < len(row) else None))
        if name:
            value = row[c] if c < len(row) else None
            flags[name] = parse_control(value, f"{path.name} sheet {CONTROL_SHEET!r} row {number}")
    return flags


# ---------------------------------------------------------------------------------------------
# writing


def write(concepts: ConceptSet, path: str | Path) -> Path:
    """Write ``concepts`` in the format ``path``'s extension names; returns the path.

    Raises
    ------
    MammodissectError
        When the format cannot hold the set: a workbook needs every concept categorised, nested
        formats need one control flag per broad category, plain text cannot hold a concept
        starting with ``#``.
    """
    path = Path(path)
    kind = format_of(path, writing=True)
    writers = {
        "text": _write_text,
        "csv": lambda c, p: _write_table(c, p, ","),
        "tsv": lambda c, p: _write_table(c, p, "\t"),
        "yaml": _write_nested,
        "json": _write_nested,
        "xlsx": _write_workbook,
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writers[kind](concepts, path)
    except OSError as err:
        raise MammodissectError(f"cannot write {path.name!r}: {err}") from err
    return path


def _write_text(concepts: ConceptSet, path: Path) -> None:
    comments = [c for c in concepts.concepts if c.startswith("#")]
    if comments:
        raise MammodissectError(
            f"concept {comments[0]!r} starts with '#' and would read back as a comment; "
            "write .csv or .yaml instead"
        )
    head = f"# concept set {concepts.name}: {len(concepts)} concepts, one per line"
    if concepts.has_categories:
        head += " (categories are kept by .csv, .tsv, .yaml, .json and .xlsx, not here)"
    path.write_text("\n".join([head, *concepts.concepts]) + "\n", encoding="utf-8")


def _flag(value: bool | None) -> str:
    return "" if value is None else str(value).lower()


def _write_table(concepts: ConceptSet, path: Path, delimiter: str) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerow(_COLUMNS)
    for entry in concepts.entries():
        writer.writerow(
            [entry.concept, entry.category or "", entry.broad_category or "", _flag(entry.control)]
        )
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _groups(
    concepts: ConceptSet, fmt: str
) -> tuple[dict[str, dict[str | None, list[str]]], dict[str, bool | None]] | None:
    """Concepts grouped by broad category then category, or None when the set has none."""
    if not concepts.has_categories:
        return None
    groups: dict[str, dict[str | None, list[str]]] = {}
    flags: dict[str, set[bool | None]] = {}
    for i, entry in enumerate(concepts.entries()):
        for broad, category in concepts.labels(i):
            if broad is None:
                raise MammodissectError(
                    f"concept {entry.concept!r} has no broad category; {fmt} groups concepts by "
                    "broad category: give every concept one, or write .csv"
                )
            groups.setdefault(broad, {}).setdefault(category, []).append(entry.concept)
            flags.setdefault(broad, set()).add(entry.control)
    for broad, cats in groups.items():
        if None in cats and len(cats) > 1:
            raise MammodissectError(
                f"broad category {broad!r} mixes concepts with and without a category; {fmt} "
                "cannot hold that: give every concept a category, or write .csv"
            )
        if len(flags[broad]) > 1:
            raise MammodissectError(
                f"broad category {broad!r} mixes control flags; {fmt} holds one flag per broad "
                "category: split it, or write .csv"
            )
    regrouped = list(dict.fromkeys(c for cats in groups.values() for v in cats.values() for c in v))
    if regrouped != list(concepts.concepts):
        log.warning(
            "%s: concepts are grouped by category in %s, so their order changes (write .csv to "
            "keep it)",
            concepts.name,
            fmt,
        )
    return groups, {broad: next(iter(values)) for broad, values in flags.items()}


def _write_nested(concepts: ConceptSet, path: Path) -> None:
    fmt = FORMATS[path.suffix.lower()]
    grouped = _groups(concepts, fmt)
    data: Any
    if grouped is None:
        data = list(concepts.concepts)
    else:
        groups, flags = grouped
        data = {}
        for broad, cats in groups.items():
            if list(cats) == [None]:
                data[broad] = cats[None]
                continue
            body: dict[str | None, Any] = {} if flags[broad] is None else {"control": flags[broad]}
            body.update(cats)
            data[broad] = body
    if fmt == "json":
        path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return
    head = (
        f"# concept set {concepts.name}: {len(concepts)} concepts, written by mammodissect\n"
        "# layout: broad category -> {control: true|false, category -> [concepts]}\n"
    )
    body_text = yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True, width=100, default_flow_style=False
    )
    path.write_text(head + body_text, encoding="utf-8")


def _sheet_title(broad: str) -> str:
    if len(broad) > 31 or _SHEET_BAD.search(broad) or broad == CONTROL_SHEET:
        raise MammodissectError(
            f"broad category {broad!r} cannot name a workbook sheet (at most 31 characters, none "
            "of []:*?/\\, not '_control'); rename it, or write .csv"
        )
    return broad


def _write_workbook(concepts: ConceptSet, path: Path) -> None:
    openpyxl = _openpyxl()
    grouped = _groups(concepts, "xlsx")
    if grouped is None or any(
        category is None for i in range(len(concepts)) for _, category in concepts.labels(i)
    ):
        raise MammodissectError(
            "a workbook needs a broad category (sheet) and a category (column) for every "
            "concept; write .txt or .csv for this set"
        )
    groups, flags = grouped
    seen: dict[str, str] = {}
    book = openpyxl.Workbook()
    book.remove(book.active)
    for broad, cats in groups.items():
        title = _sheet_title(broad)
        if title.casefold() in seen:
            raise MammodissectError(
                f"broad categories {seen[title.casefold()]!r} and {broad!r} differ only in case; "
                "a workbook cannot hold both as sheets"
            )
        seen[title.casefold()] = broad
        sheet = book.create_sheet(title)
        for col, (category, items) in enumerate(cats.items(), start=1):
            _put(sheet.cell(row=1, column=col), category)
            for row, text in enumerate(items, start=2):
                _put(sheet.cell(row=row, column=col), text)
    if any(flag is not None for flag in flags.values()):
        sheet = book.create_sheet(CONTROL_SHEET)
        sheet.append(["broad_category", "control"])
        for broad, flag in flags.items():
            sheet.append([broad, _flag(flag)])
    book.save(path)


def _put(cell: Any, text: str | None) -> None:
    cell.value = text
    cell.data_type = "s"  # a concept such as "=x" stays text, never a formula
