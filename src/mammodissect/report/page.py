"""The HTML of a report: one self-contained page (inline CSS and vanilla JS, images as data
URIs, no network).

Every string from a run goes through :func:`html.escape` when written as markup; the unit
table travels as a JSON blob inside ``<script type="application/json">`` with ``<``, ``>``
and ``&`` written as ``\\u003c``, ``\\u003e``, ``\\u0026`` (it cannot end the script), and the
page's script puts it on screen with ``textContent`` only, never as markup.

The run page reads its state from the URL hash, so a link can open a view:
``#filter=TEXT&layer=NAME&concept=TEXT&page=N&sort=COLUMN&desc=1&unit=LAYER/UNIT``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from importlib import resources
from typing import Any

import pandas as pd

__all__ = ["embed_json", "page", "table_html"]

#: Rows of the unit table per page.
PAGE_ROWS = 100


def _static(name: str) -> str:
    """A file of the package's ``report/static`` folder (CSS and the page scripts)."""
    return resources.files("mammodissect.report").joinpath("static", name).read_text("utf-8")


CSS = _static("report.css")
#: The run page's script: the unit table, filters, concept search, cards.
RUN_JS = _static("run.js")
#: The compare page's script: a text filter per table.
TABLE_JS = _static("tables.js")


def embed_json(value: Any) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` as ``\\u`` escapes."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _cell(value: Any, digits: int) -> tuple[str, bool]:
    """Text of a table cell and whether it is a number."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "", False
    if isinstance(value, bool):
        return ("yes" if value else "no"), False
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, float):
        return (str(int(value)) if value.is_integer() else f"{value:.{digits}f}"), True
    return str(value), False


def table_html(
    frame: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    table_id: str | None = None,
    digits: int = 3,
    headers: dict[str, str] | None = None,
) -> str:
    """A plain HTML table of ``frame`` (every cell escaped; numbers right-aligned)."""
    columns = [c for c in (columns or list(frame.columns)) if c in frame.columns]
    headers = headers or {}
    attr = f' id="{escape(table_id)}"' if table_id else ""
    head = "".join(f"<th>{escape(headers.get(c, c))}</th>" for c in columns)
    body = []
    for values in frame[columns].itertuples(index=False):
        cells = []
        for value in values:
            text, number = _cell(value.item() if hasattr(value, "item") else value, digits)
            cls = ' class="num"' if number else ""
            cells.append(f"<td{cls}>{escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def facts_html(facts: Sequence[tuple[str, str]]) -> str:
    """A ``<dl>`` of ``(label, value)`` pairs, escaped."""
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    return f'<dl class="facts">{items}</dl>'


def page(title: str, body: str, script: str = "") -> str:
    """A whole HTML document: ``title`` (escaped), ``body`` (markup, already escaped)."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
        + (f"<script>{script}</script>\n" if script else "")
        + "</body></html>\n"
    )
