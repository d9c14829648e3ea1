"""``mammodissect report``: one self-contained HTML page for a run or a compare directory.

A **run** report (``RUN/report.html``) has the run's public facts (run.json), summary.csv and a
per-layer figure, the table of all units (paginated, sortable, filterable by text and layer,
searchable by concept) and a card per unit for a bounded set: its ranked concepts and, when
the run's probe is given, its top-activating probe images with the unit's heatmap overlaid
and a crop around the peak. Images are embedded as data URIs: the page is one file.

A **compare** report (``COMPARE/report.html``) has the comparison's figures, its per-layer
table, the largest category changes, category coverage, the uncaptured concepts and relative
links to each run's report when that exists.

No page holds an absolute path or a DICOM tag: runs are named by folder, images by
``image_id``; specs are run.json's (file names only).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.analysis.evaluated import evaluation_table
from mammodissect.errors import MammodissectError
from mammodissect.models import load_target
from mammodissect.models.configured import load_models, resolve_device, same_model
from mammodissect.models.recipes import configure
from mammodissect.record import matching_probe
from mammodissect.report import page as pg
from mammodissect.report.audit import audit_link, audit_section
from mammodissect.report.data import (
    CompareData,
    RunData,
    card_units,
    is_compare_dir,
    is_run_dir,
    load_compare_data,
    load_run_data,
    run_facts,
    unit_rows,
)
from mammodissect.report.evaluation import evaluation_section
from mammodissect.report.images import render_cards
from mammodissect.rundir import REPORT_FILE

__all__ = ["REPORT_FILE", "compare_report", "report", "run_report"]

log = logging.getLogger(__name__)

#: Top images drawn per card.
CARD_IMAGES = 5
#: Concepts listed per card.
CARD_CONCEPTS = 5

_SHOWN = [("layer", "text"), ("unit", "num"), ("c1", "text"), ("s1", "num"), ("c2", "text"),
          ("s2", "num"), ("c3", "text"), ("s3", "num"), ("category", "text"),
          ("broad", "text"), ("passes", "text")]  # fmt: skip
_EVALUATED = [("grounded", "text"), ("iou", "num"), ("null99", "text")]
_HEADERS = {"c1": "concept 1", "s1": "score 1", "c2": "concept 2", "s2": "score 2",
            "c3": "concept 3", "s3": "score 3", "broad": "broad category",
            "passes": "passes (layer mean)", "grounded": "grounded concept", "iou": "IoU",
            "null99": "above null (99%)", "d1": "AUROC of concept 1 (audit)"}  # fmt: skip


def report(
    path: str | Path,
    out: str | Path | None = None,
    probe: Any = None,
    cards: int = 8,
    *,
    card_images: int = CARD_IMAGES,
    target: Any = None,
    dissector: Any = None,
    device: str = "auto",
    batch_size: int = 16,
) -> Path:
    """Write the HTML report of a run directory or a compare directory.

    Parameters
    ----------
    path:
        A run directory (``mammodissect run --out DIR``) or a compare directory
        (``mammodissect compare ... --out DIR``).
    out:
        The HTML file (default: ``PATH/report.html``).
    probe:
        The run's probe (path or loaded :class:`~mammodissect.probe.Probe`); with it, unit cards
        show their top images with heatmaps (the target runs once over those images). Without
        it, cards show concepts only. Ignored for a compare directory.
    cards:
        Cards per layer, for its best-scoring units (every unit gets one when the run has at
        most 300 units); 0: none.
    card_images:
        Top images drawn per card (at most the run's ``top_images``).
    target, dissector:
        Specs or loaded models replacing run.json's (needed when their weights are files).
    device, batch_size:
        For the heatmap pass.

    Returns
    -------
    Path
        The report written.

    Raises
    ------
    MammodissectError
        When ``path`` is neither a run nor a compare directory, or the probe is not the run's.
    """
    path = Path(path)
    if not path.is_dir():
        raise MammodissectError(
            f"{path.name!r} is not a folder; give a run directory (`mammodissect run --out DIR`) "
            "or a compare directory (`mammodissect compare ... --out DIR`)"
        )
    target_file = Path(out) if out is not None else path / REPORT_FILE
    if is_run_dir(path):
        html = run_report(path, probe=probe, cards=cards, card_images=card_images,
                          target=target, dissector=dissector, device=device,
                          batch_size=batch_size)  # fmt: skip
    elif is_compare_dir(path):
        html = compare_report(path, target_file)
    else:
        raise MammodissectError(
            f"{path.name!r} holds neither neurons.csv (a run directory) nor compare.csv (a "
            "compare directory); give a folder written by `mammodissect run` or `compare`"
        )
    html = _scrub(html, [path, target_file.parent, Path.cwd(), Path.home()], probe)
    try:
        target_file.parent.mkdir(parents=True, exist_ok=True)
        target_file.write_text(html, encoding="utf-8")
    except OSError as err:
        raise MammodissectError(f"cannot write {target_file.name!r}: {err}") from err
    log.info("wrote %s (%.1f MB)", target_file.name, len(html) / 1e6)
    return target_file


_DATA_URI = re.compile(r"(data:image/[a-z]+;base64,[A-Za-z0-9+/=]+)")


def _scrub(html: str, folders: list[Path], probe: Any) -> str:
    """Replace any absolute folder path that slipped into the page's text by its last part
    (embedded images are left alone: base64 may hold any letters)."""
    roots = {str(f.resolve()) for f in folders} | {str(f.absolute()) for f in folders}
    root = getattr(probe, "root", None) or (Path(probe).parent if probe is not None else None)
    if root is not None:
        roots |= {str(Path(root).resolve()), str(Path(root).absolute())}
    prefixes = sorted((r for r in roots if len(r) > 1), key=len, reverse=True)
    parts = _DATA_URI.split(html)
    for i in range(0, len(parts), 2):  # even parts: text between data URIs
        for prefix in prefixes:
            if prefix in parts[i]:
                log.warning("an absolute path was removed from the report")
                parts[i] = parts[i].replace(prefix, Path(prefix).name)
    return "".join(parts)


def _png_uri(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def layer_figure(summary: pd.DataFrame) -> str | None:
    """Per layer: mean top-1 score (line, left) and passing units with a mammography concept
    or a control (stacked bars, right); a PNG data URI, or None without the columns."""
    needed = {"layer", "score_mean", "mammography_units", "control_units"}
    if summary is None or summary.empty or not needed <= set(summary.columns):
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    frame = summary.copy()
    for column in ("score_mean", "score_std", "mammography_units", "control_units"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    x = np.arange(len(frame))
    width = min(14.0, max(9.0, 3.5 + 0.5 * len(frame)))
    fig = Figure(figsize=(width, 3.0), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(x, frame["score_mean"], marker="o", color="#0072B2")
    if "score_std" in frame:
        low, high = (
            frame["score_mean"] - frame["score_std"],
            frame["score_mean"] + frame["score_std"],
        )
        left.fill_between(x, low, high, color="#0072B2", alpha=0.15)
    left.set_title("top-1 score per layer (mean ± sd)", fontsize=10)
    right.bar(x, frame["mammography_units"], color="#009E73", label="mammography concept")
    right.bar(x, frame["control_units"], bottom=frame["mammography_units"], color="#E69F00",
              hatch="//", label="control concept")  # fmt: skip
    right.set_title("units above their layer's mean", fontsize=10)
    right.legend(fontsize=7, frameon=False, loc="upper left")
    for axis in (left, right):
        axis.set_xticks(x, list(frame["layer"]), rotation=60, ha="right", fontsize=7)
        axis.spines[["top", "right"]].set_visible(False)
    return _png_uri(fig)


def run_report(
    path: Path,
    *,
    probe: Any = None,
    cards: int = 8,
    card_images: int = CARD_IMAGES,
    target: Any = None,
    dissector: Any = None,
    device: str = "auto",
    batch_size: int = 16,
) -> str:
    """The HTML of a run directory's report (see the module docstring)."""
    data = load_run_data(path)
    table = unit_rows(data)
    chosen = card_units(data, cards) if cards > 0 else []
    pictures, note = _pictures(
        data, chosen, probe, (target, dissector), device, batch_size, card_images
    )
    return _run_page(data, table, chosen, pictures, note, cards)


def _pictures(
    data: RunData,
    chosen: list[tuple[str, int]],
    probe: Any,
    models: tuple[Any, Any],
    device: str,
    batch_size: int,
    card_images: int,
) -> tuple[dict[tuple[str, int], list[Any]], str]:
    """The cards' pictures, and the note cards show without them."""
    if not chosen:
        return {}, ""
    if probe is None:
        return {}, (
            "No images: the report was made without the run's probe "
            "(mammodissect report RUN --probe PROBE draws each card's top images and heatmaps)."
        )
    loaded = matching_probe(probe, data.run.name, data.run.fingerprint("probe"))
    model = _target(data, loaded, *models)
    tops = data.top_images.sort_values(["rank"], kind="stable")
    wanted = set(chosen)
    per_unit: dict[tuple[str, int], list[tuple[str, float]]] = {key: [] for key in chosen}
    for layer, unit, image_id, activation in zip(
        tops["layer"], tops["unit"], tops["image_id"], tops["activation"], strict=True
    ):
        key = (str(layer), int(unit))
        if key in wanted and len(per_unit[key]) < card_images:
            per_unit[key].append((str(image_id), float(activation)))
    voi = str(data.run.info.get("config", {}).get("voi", "auto"))
    pictures = render_cards(model, loaded, per_unit, batch_size=batch_size,
                            device=resolve_device(device), voi=voi)  # fmt: skip
    return pictures, "No top image of this unit could be drawn."


def _target(data: RunData, probe: Any, target: Any, dissector: Any) -> Any:
    """The run's target, preprocessing as the run had it (run.json's config)."""
    config = data.run.stored_config(probe=probe, target=target, dissector=dissector)
    if same_model(config.target, config.dissector):  # the dissector's own image tower
        model, _ = load_models(config)
        return model
    # only the target: its preprocessing set as `run` sets it for a separate target
    model = load_target(config.target) if isinstance(config.target, str) else config.target
    model.preprocess = configure(model.preprocess, config.preprocess, config.image_size, "")
    return model


def _card(index: int, key: tuple[str, int], data: RunData, pictures: list[Any], note: str,
          ranked: dict[tuple[str, int], list[tuple[str, float]]], best: dict,
          aurocs: dict[str, float]) -> str:  # fmt: skip
    layer, unit = key
    info = best.get(key, {})
    labels = [info.get("category"), info.get("broad_category"), info.get("kind")]
    parts = [f'<template id="card-{index}"><article class="card">',
             f"<h3>{escape(layer)} · unit {unit}</h3>",
             f'<p class="muted">{escape(" · ".join(str(x) for x in labels if x))}</p>',
             "<ol>"]  # fmt: skip
    for concept, score in ranked.get(key, [])[:CARD_CONCEPTS]:
        seen = aurocs.get(concept)
        audit = "" if seen is None else f' <span class="muted">AUROC {seen:.2f}</span>'
        parts.append(f'<li>{escape(concept)} <span class="score">{score:.3f}</span>{audit}</li>')
    parts.append("</ol>")
    if pictures:
        parts.append('<div class="pics">')
        for p in pictures:
            value = "" if p.activation is None else f" · {p.activation:.3f}"
            parts.append(
                f'<figure><div class="pair"><img src="{p.overlay}" alt="heatmap of unit {unit} '
                f'on {escape(p.image_id)}"><img src="{p.crop}" alt="crop around the peak" '
                f'width="96" height="96"></div><figcaption>{escape(p.image_id)}{value}'
                "</figcaption></figure>"
            )
        parts.append("</div>")
    elif note:
        parts.append(f'<p class="note">{escape(note)}</p>')
    parts.append("</article></template>")
    return "".join(parts)


def _run_page(
    data: RunData,
    table: Any,
    chosen: list[tuple[str, int]],
    pictures: dict[tuple[str, int], list[Any]],
    note: str,
    cards: int,
) -> str:
    run = data.run
    shown = _SHOWN + (_EVALUATED if "grounded" in table.columns else [])
    shown += [("d1", "num")] if "d1" in table.columns else []
    ranked: dict[tuple[str, int], list[tuple[str, float]]] = {}
    for row in table.rows:
        key = (row[0], row[1])
        k, ks = row[table.columns.index("k")], row[table.columns.index("ks")]
        ranked[key] = [(table.concepts[c], s if s is not None else float("nan"))
                       for c, s in zip(k, ks, strict=True)]  # fmt: skip
    best = {
        (str(r["layer"]), int(r["unit"])): r
        for r in run.best[["layer", "unit", "category", "broad_category", "kind", "score"]].to_dict(
            "records"
        )
    }
    first = 0
    if chosen:
        first = max(range(len(chosen)), key=lambda i: best.get(chosen[i], {}).get("score", 0))
    scope = ("every unit" if len(chosen) == len(run.best) else
             f"the {cards} best-scoring units of each layer")  # fmt: skip
    blob = {
        "columns": table.columns,
        "rows": table.rows,
        "concepts": table.concepts,
        "layers": table.layers,
        "shown": shown,
        "page_rows": pg.PAGE_ROWS,
        "cards": [list(k) for k in chosen],
        "first_card": first,
        "no_card_note": f"This unit has no card with images: cards were made for {scope} "
        "(mammodissect report --cards N).",
    }
    summary_html = ""
    if data.summary is not None:
        columns = ["layer", "units", "score_mean", "threshold", "passing_units",
                   "mammography_units", "control_units", "mammography_fraction",
                   "unique_concepts", "units_above_null", "top_concepts"]  # fmt: skip
        summary_html = pg.table_html(data.summary, columns, table_id="summary-table")
    figure = layer_figure(data.summary) if data.summary is not None else None
    figure_html = (f'<div class="figure"><img src="{figure}" alt="per-layer scores and passing '
                   'units"></div>' if figure else "")  # fmt: skip
    heads = [
        f'<th class="sortable" data-col="{c}" data-kind="{kind}">{escape(_HEADERS.get(c, c))}</th>'
        for c, kind in shown
    ]  # the concept search's column comes after layer and unit
    heads.insert(2, '<th id="match-col" hidden>matching concept (rank, score)</th>')
    card_list = []
    for layer in run.layers:
        units = [u for lay, u in chosen if lay == layer]
        if units:
            buttons = "".join(
                f'<button type="button" data-unit="{escape(layer)}/{u}">{u}</button>' for u in units
            )
            card_list.append(f"<div><b>{escape(layer)}</b> {buttons}</div>")
    templates = "".join(
        _card(i, key, data, pictures.get(key, []), note, ranked, best, table.detectability)
        for i, key in enumerate(chosen)
    )
    evaluated = "grounded" in table.columns
    evaluation = evaluation_section(run.path)
    evaluation_link = '<a href="#sec-evaluation">evaluation</a>' if evaluation else ""
    audit = audit_section(run.path, run.info)
    links = evaluation_link + audit_link(audit)
    body = f"""
<header><h1>mammodissect report: run {escape(run.name)}</h1>
<nav><a href="#sec-summary">summary</a>{links}<a href="#sec-units">units</a>
<a href="#sec-cards">cards</a></nav>
{pg.facts_html(run_facts(run.info))}</header>
<section id="sec-summary"><h2>Summary per layer</h2>
<p class="muted">A unit passes when its top-1 score is at least its layer's mean (the local
threshold).{" Grounding and the null baseline come from evaluation.csv." if evaluated else ""}</p>
{figure_html}<div class="wrap">{summary_html}</div></section>{evaluation}{audit}
<section id="sec-units"><h2>Units</h2>
<div class="controls">
<label>filter <input id="filter" type="search" placeholder="layer, unit, concept, category"></label>
<label>layer <select id="layer"><option value="">all layers</option></select></label>
<label>concept search
<input id="concept" type="search" placeholder="e.g. spiculated margin"></label>
<span id="count" class="muted"></span>
<button id="prev" type="button">&larr; prev</button><span id="page"></span>
<button id="next" type="button">next &rarr;</button></div>
<div class="layout"><div class="wrap"><table id="units"><thead><tr>{"".join(heads)}</tr></thead>
<tbody id="unit-body"></tbody></table></div>
<div id="sec-cards"><h2 style="margin-top:0">Unit card</h2><div id="card-view"></div>
<h3 style="margin-top:16px">Units with cards ({len(chosen)})</h3>
<p class="muted">{escape(scope if chosen else "no cards (--cards 0)")};
▣ in the table marks them.</p>
<div class="cardlist">{"".join(card_list)}</div></div></div></section>
{templates}
<script type="application/json" id="report-data">{pg.embed_json(blob)}</script>
"""
    return pg.page(f"mammodissect report: {run.name}", body, pg.RUN_JS)


def _figure_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def compare_report(path: Path, out_file: Path | None = None) -> str:
    """The HTML of a compare directory's report (see the module docstring)."""
    data = load_compare_data(path)
    out_dir = (out_file or path / REPORT_FILE).parent
    return _compare_page(data, out_dir)


def _run_folders(data: CompareData) -> dict[str, Path]:
    """Run name -> its directory, as compare.json names them (relative to the compare
    directory's parent)."""
    runs = data.info.get("runs") or {name: name for name in data.info.get("names", [])}
    return {str(name): data.path.parent / str(folder) for name, folder in runs.items()}


def _run_links(data: CompareData, out_dir: Path) -> str:
    items = []
    for name, path in _run_folders(data).items():
        folder = path.name
        candidate = path / REPORT_FILE
        if candidate.is_file():
            link = Path(os.path.relpath(candidate.resolve(), out_dir.resolve())).as_posix()
            items.append(f'<li><a href="{escape(link)}">{escape(str(name))}</a></li>')
        else:
            items.append(f'<li>{escape(str(name))} <span class="muted">(no report.html; '
                         f"mammodissect report {escape(str(folder))})</span></li>")  # fmt: skip
    return f"<ul>{''.join(items)}</ul>" if items else '<p class="note">no runs listed</p>'


def _filter_box(table_id: str) -> str:
    return (f'<div class="controls"><label>filter <input type="search" '
            f'data-table="{table_id}"></label></div>')  # fmt: skip


def _compare_page(data: CompareData, out_dir: Path) -> str:
    info, tables = data.info, data.tables
    concepts = info.get("concepts", {})
    facts = [("runs", ", ".join(map(str, info.get("names", [])))),
             ("concept set", f"{concepts.get('name', 'custom')} ({concepts.get('count', '?')} "
              f"concepts, {concepts.get('mammography', '?')} mammography)"),
             ("threshold", str(info.get("threshold", "")))]  # fmt: skip
    figures = "".join(
        f'<figure><img src="{_figure_uri(f)}" alt="{escape(f.stem)}">'
        f"<figcaption>{escape(f.stem.replace('_', ' '))}</figcaption></figure>"
        for f in data.figures
    )
    sections: list[tuple[str, str, str, Any, list[str] | None]] = []
    if "compare" in tables:
        columns = ["aligned_layer", "run", "layer", "units", "score_mean", "global_threshold",
                   "passing_global", "mammography", "control", "mammography_fraction",
                   "top_concepts"]  # fmt: skip
        caption = "compare.csv: units above the global threshold per aligned layer and run"
        sections.append(("Per layer", "compare-table", caption, tables["compare"], columns))
    quality = evaluation_table(_run_folders(data))
    if quality is not None:
        sections.append(("Label quality per run", "quality-table", "each run's evaluation.json "
                         "(mammodissect evaluate): units above the 99th-percentile null, units "
                         "grounded in masks and their labels' top-1 agreement, units grounded in "
                         "density/BI-RADS classes and how often their labels name the class, "
                         "planted units' top-1 recovery, the classifier head's top-1-in-class "
                         "rate and the share of labels that survive each stability check",
                         quality, None))  # fmt: skip
    if "categories" in tables and not tables["categories"].empty:
        frame = tables["categories"].copy()
        frame["change"] = pd.to_numeric(frame["change"], errors="coerce")
        picked = pd.concat(
            [pd.concat([g.nlargest(10, "change"), g.nsmallest(10, "change")])
             .drop_duplicates() for _, g in frame.groupby("run", sort=False)]
        )  # fmt: skip
        sections.append(("Largest category changes", "categories-table", "categories.csv: the "
                         "10 largest gains and losses of passing units per fine-tuned run, "
                         "against the baseline", picked, None))  # fmt: skip
    if "coverage_categories" in tables and not tables["coverage_categories"].empty:
        cov = tables["coverage_categories"]
        wide = cov.pivot_table(index=["broad_category", "category"], columns="run",
                               values="coverage", sort=False).reset_index()  # fmt: skip
        runs = [r for r in dict.fromkeys(cov["run"]) if r in wide.columns]
        sections.append(("Coverage per category", "coverage-table", "coverage_categories.csv: "
                         "share of each category's mammography concepts that is the top concept "
                         "of a passing unit, per run", wide,
                         ["broad_category", "category", *runs]))  # fmt: skip
    if "uncaptured" in tables:
        caption = (f"uncaptured.csv: {len(tables['uncaptured'])} mammography concepts that are "
                   "the top concept of no passing unit in any run")  # fmt: skip
        sections.append(("Uncaptured concepts", "uncaptured-table", caption,
                         tables["uncaptured"], None))  # fmt: skip
    parts = []
    for title, table_id, caption, frame, shown in sections:
        parts.append(
            f'<section><h2>{escape(title)}</h2><p class="muted">{escape(caption)}</p>'
            f'{_filter_box(table_id)}<div class="wrap">'
            f"{pg.table_html(frame, shown, table_id=table_id)}</div></section>"
        )
    body = f"""
<header><h1>mammodissect report: comparison {escape(data.path.resolve().name)}</h1>
{pg.facts_html(facts)}<h3>Run reports</h3>{_run_links(data, out_dir)}</header>
<section><h2>Figures</h2><div class="figures">{figures or '<p class="note">no figures</p>'}</div>
</section>
{"".join(parts)}
"""
    return pg.page(f"mammodissect comparison: {data.path.resolve().name}", body, pg.TABLE_JS)
