"""Reading the text files users give (manifests, dataset tables, concept files) as UTF-8."""

from __future__ import annotations

import codecs
from pathlib import Path

from mammodissect.errors import MammodissectError

__all__ = ["read_utf8"]


def read_utf8(path: Path, what: str) -> str:
    """The text of ``path`` (a UTF-8 byte-order mark dropped).

    Parameters
    ----------
    path:
        The file.
    what:
        What the file is, for messages (``"manifest"``, ``"concept file"``).

    Raises
    ------
    MammodissectError
        When the file cannot be read, or is not UTF-8: the message names the file, the first
        bad byte with its line and column, and how to fix it.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise MammodissectError(
            f"cannot read {what} {path.name!r} ({err.strerror or err})"
        ) from None
    start = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = start + err.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        raise MammodissectError(
            f"{what} {path.name!r} is not UTF-8 text: byte 0x{data[offset]:02x} on line {line}, "
            f"column {column} (offset {offset}); save the file as UTF-8 (e.g. Excel's "
            "'CSV UTF-8', or iconv -f latin1 -t utf-8)"
        ) from None
