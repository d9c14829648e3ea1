"""Figures of a comparison, as PNG (200 dpi) and SVG, drawn with matplotlib's Agg canvas.

Each run keeps one colour in every figure (:func:`run_colours`, the Okabe-Ito palette, safe for
colour-blind readers). The figures (``figures/`` of a comparison):

- ``layer_means``: the layer-mean top-1 score per aligned layer, one line per run, layers in
  model order;
- ``mammography_vs_control``: passing units (global threshold) whose best concept is a
  mammography concept (solid) or a control (hatched), at the chosen layers, grouped by run;
- ``top_broad_categories``: the three broad categories with the most passing units, per chosen
  layer and run, stacked (controls hatched);
- ``coverage``: heatmap of the fraction of each category's mammography concepts captured, per run;
- ``finetune_change``: change in passing units per category from the baseline to each fine-tuned
  run (only when the comparison has one), the largest gains and losses.

No pyplot: figures are built on their own canvas, so drawing never changes the caller's
matplotlib backend or state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from mammodissect.errors import MammodissectError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mammodissect.analysis.compare import Comparison

__all__ = [
    "RUN_PALETTE",
    "new_figure",
    "plot_coverage",
    "plot_detectability",
    "plot_finetune",
    "plot_layer_means",
    "plot_mammography_vs_control",
    "plot_style",
    "plot_top_broad_categories",
    "run_colours",
    "save_figure",
    "write_figures",
]

log = logging.getLogger(__name__)

#: Okabe-Ito colours, given to runs in order.
RUN_PALETTE = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)
#: Colours of broad categories in the stacked bars.
CATEGORY_PALETTE = (
    "#4E79A7", "#F28E2B", "#59A14F", "#E15759", "#76B7B2", "#EDC948", "#B07AA1",
    "#FF9DA7", "#9C755F", "#BAB0AC", "#86BCB6", "#D4A6C8", "#8CD17D", "#F1CE63",
)  # fmt: skip
DPI = 200
_STYLE = {
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "svg.fonttype": "none",
    "svg.hashsalt": "mammodissect",
    "hatch.linewidth": 0.6,
}
#: Categories shown per direction (gains, losses) in the fine-tuning figure.
FINETUNE_SHOWN = 12


def run_colours(names: Sequence[str]) -> dict[str, str]:
    """One colour per run, in order (the palette repeats after eight runs)."""
    return {name: RUN_PALETTE[i % len(RUN_PALETTE)] for i, name in enumerate(names)}


@contextmanager
def plot_style() -> Iterator[None]:
    """The look of every figure of the package (font sizes, no top or right spine, SVG text
    kept as text, a fixed SVG hash salt so files are reproducible) while drawing."""
    import matplotlib

    with matplotlib.rc_context(cast(Any, _STYLE)):  # matplotlib types the keys one by one
        yield


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches on the Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: Path) -> list[Path]:
    """Write ``fig`` as ``stem``.png and ``stem``.svg; return both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    png, svg = stem.with_suffix(".png"), stem.with_suffix(".svg")
    try:
        fig.savefig(png, dpi=DPI, metadata={"Software": None})
        fig.savefig(svg, metadata={"Date": None})
    except OSError as err:
        raise MammodissectError(f"cannot write figure {png.name!r}: {err}") from err
    return [png, svg]


def _tick_step(n: int, most: int = 40) -> int:
    return max(1, int(np.ceil(n / most)))


def plot_layer_means(layers: pd.DataFrame, names: Sequence[str], stem: Path) -> list[Path]:
    """Lines of the layer-mean top-1 score per aligned layer (x: model order), one per run.

    ``layers`` is compare.csv's table (``position, aligned_layer, run, score_mean``).
    """
    colours = run_colours(names)
    labels = layers.drop_duplicates("position").sort_values("position")["aligned_layer"].tolist()
    n = len(labels)
    with plot_style():
        fig = new_figure(min(14.0, max(5.5, 0.28 * n + 3.0)), 3.6)
        ax = fig.add_subplot()
        for name in names:
            rows = layers[layers["run"] == name].sort_values("position")
            ax.plot(
                rows["position"], rows["score_mean"], color=colours[name], marker="o",
                markersize=4, linewidth=1.8, label=name,
            )  # fmt: skip
        step = _tick_step(n)
        ax.set_xticks(range(0, n, step), labels[::step], rotation=60 if n > 4 else 0,
                      ha="right" if n > 4 else "center")  # fmt: skip
        ax.set_xlim(-0.5, n - 0.5)
        ax.set_xlabel("layer (model order)")
        ax.set_ylabel("layer-mean top-1 score")
        ax.set_title("Layer-mean top-1 score per layer")
        ax.grid(axis="y", color="0.9", linewidth=0.6)
        ax.legend(title="run", loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        return save_figure(fig, stem)


def _chosen(layers: pd.DataFrame, positions: Sequence[int]) -> list[tuple[int, str]]:
    first = layers.drop_duplicates("position").set_index("position")["aligned_layer"]
    return [(p, str(first.loc[p])) for p in positions]


def plot_mammography_vs_control(
    layers: pd.DataFrame, names: Sequence[str], positions: Sequence[int], stem: Path
) -> list[Path]:
    """Grouped bars: passing mammography (solid) vs control (hatched) units per run, one panel
    per chosen layer."""
    from matplotlib.patches import Patch

    colours = run_colours(names)
    chosen = _chosen(layers, positions)
    with plot_style():
        fig = new_figure(max(4.5, 2.0 + 0.9 * len(names) * len(chosen)), 3.4)
        axes = fig.subplots(1, len(chosen), sharey=True, squeeze=False)[0]
        width = 0.38
        for ax, (position, label) in zip(axes, chosen, strict=True):
            rows = layers[layers["position"] == position].set_index("run")
            x = np.arange(len(names))
            mammo = [int(rows.loc[n, "mammography"]) for n in names]
            control = [int(rows.loc[n, "control"]) for n in names]
            colour = [colours[n] for n in names]
            bars = ax.bar(x - width / 2, mammo, width, color=colour, edgecolor=colour)
            ax.bar_label(bars, fontsize=7, padding=1)
            bars = ax.bar(x + width / 2, control, width, color="white", edgecolor=colour,
                          hatch="////", linewidth=0.8)  # fmt: skip
            ax.bar_label(bars, fontsize=7, padding=1)
            ax.set_xticks(x, names)
            for tick, name in zip(ax.get_xticklabels(), names, strict=True):
                tick.set_color(colours[name])
            ax.set_title(label)
            ax.grid(axis="y", color="0.9", linewidth=0.6)
            ax.set_axisbelow(True)
            ax.margins(y=0.12)
        axes[0].set_ylabel("passing units (global threshold)")
        fig.legend(
            handles=[
                Patch(facecolor="0.35", edgecolor="0.35", label="mammography concept"),
                Patch(facecolor="white", edgecolor="0.35", hatch="////", label="control concept"),
            ],
            loc="outside lower center", ncols=2, frameon=False,
        )  # fmt: skip
        fig.suptitle("Best concept of passing units: mammography vs control")
        return save_figure(fig, stem)


def plot_top_broad_categories(
    broad: pd.DataFrame, names: Sequence[str], positions: Sequence[int], stem: Path
) -> list[Path]:
    """Stacked bars of each run's three broad categories with the most passing units, one panel
    per chosen layer (``broad`` is broad_categories.csv's table)."""
    from matplotlib.patches import Patch

    colours = run_colours(names)
    frame = broad[broad["position"].isin(positions)]
    top = (
        frame.sort_values(
            ["position", "run", "units", "broad_category"],
            ascending=[True, True, False, True],
            kind="stable",
        )
        .groupby(["position", "run"], sort=False)
        .head(3)
    )
    shown = list(dict.fromkeys(top.sort_values("units", ascending=False)["broad_category"]))
    palette = {b: CATEGORY_PALETTE[i % len(CATEGORY_PALETTE)] for i, b in enumerate(shown)}
    is_control = dict(zip(top["broad_category"], top["control"], strict=False))
    labels = dict(zip(broad["position"], broad["aligned_layer"], strict=False))
    with plot_style():
        fig = new_figure(max(4.5, 2.0 + 0.7 * len(names) * len(positions)), 3.9)
        axes = fig.subplots(1, len(positions), sharey=True, squeeze=False)[0]
        for ax, position in zip(axes, positions, strict=True):
            for x, name in enumerate(names):
                rows = top[(top["position"] == position) & (top["run"] == name)]
                bottom = 0
                for row in rows.itertuples():
                    ax.bar(
                        x, row.units, 0.7, bottom=bottom, color=palette[row.broad_category],
                        edgecolor="white", linewidth=0.5,
                        hatch="////" if row.control is True else None,
                    )  # fmt: skip
                    bottom += row.units
            ax.set_xticks(range(len(names)), names)
            for tick, name in zip(ax.get_xticklabels(), names, strict=True):
                tick.set_color(colours[name])
            ax.set_title(labels.get(position, str(position)))
            ax.grid(axis="y", color="0.9", linewidth=0.6)
            ax.set_axisbelow(True)
        axes[0].set_ylabel("passing units (global threshold)")
        handles = [
            Patch(facecolor=palette[b], hatch="////" if is_control.get(b) is True else None,
                  edgecolor="white", label=f"{b} (control)" if is_control.get(b) is True else b)
            for b in shown
        ]  # fmt: skip
        if handles:
            fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)),
                       frameon=False)  # fmt: skip
        fig.suptitle("Top-3 broad categories of passing units")
        return save_figure(fig, stem)


def plot_coverage(coverage: pd.DataFrame, names: Sequence[str], stem: Path) -> list[Path]:
    """Heatmap: per category (rows, grouped by broad category) and run (columns), the fraction
    of the category's mammography concepts some passing unit has as its best concept."""
    colours = run_colours(names)
    coverage = coverage.fillna({"broad_category": "", "category": "(none)"})
    cats = coverage.drop_duplicates(["broad_category", "category"])[
        ["broad_category", "category"]
    ].reset_index(drop=True)
    key = coverage.set_index(["broad_category", "category", "run"])
    values = np.array(
        [
            [float(key.loc[(b, c, n), "coverage"]) for n in names]
            for b, c in cats.itertuples(index=False)
        ]
    )
    counts = [
        [
            f"{int(key.loc[(b, c, n), 'captured'])}/{int(key.loc[(b, c, n), 'concepts'])}"
            for n in names
        ]
        for b, c in cats.itertuples(index=False)
    ]
    rows = len(cats)
    with plot_style():
        fig = new_figure(3.6 + 0.75 * len(names), 1.6 + 0.2 * rows)
        ax = fig.add_subplot()
        image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto",
                          interpolation="nearest")  # fmt: skip
        for i in range(rows):
            for j in range(len(names)):
                ax.text(j, i, counts[i][j], ha="center", va="center", fontsize=6,
                        color="white" if values[i, j] < 0.55 else "black")  # fmt: skip
        ax.set_xticks(range(len(names)), names)
        ax.xaxis.tick_top()
        for tick, name in zip(ax.get_xticklabels(), names, strict=True):
            tick.set_color(colours[name])
        ax.set_yticks(range(rows), cats["category"].astype(str).tolist())
        ax.tick_params(axis="y", labelsize=6 if rows > 40 else 8)
        broad = cats["broad_category"].tolist()
        starts = [i for i in range(rows) if i == 0 or broad[i] != broad[i - 1]]
        for k, start in enumerate(starts):
            end = starts[k + 1] if k + 1 < len(starts) else rows
            if start:
                ax.axhline(start - 0.5, color="white", linewidth=1.5)
            ax.text(len(names) - 0.4, (start + end - 1) / 2, str(broad[start]), ha="left",
                    va="center", fontsize=7, clip_on=False)  # fmt: skip
        for side in ("left", "bottom", "top", "right"):
            ax.spines[side].set_visible(False)
        fig.colorbar(image, ax=ax, location="bottom", shrink=0.6, pad=0.01,
                     label="fraction of the category's concepts captured")  # fmt: skip
        ax.set_title("Mammography concepts captured per category")
        return save_figure(fig, stem)


def plot_finetune(categories: pd.DataFrame, names: Sequence[str], stem: Path) -> list[Path]:
    """Horizontal bars: per category, passing units of each fine-tuned run minus the
    baseline's (the categories with the largest gains and losses)."""
    colours = run_colours(names)
    categories = categories.fillna({"broad_category": "", "category": "(none)"})
    tuned = list(dict.fromkeys(categories["run"]))
    base = str(categories["baseline"].iloc[0])
    changes = categories.groupby(["broad_category", "category"], sort=False, dropna=False)["change"]
    total = changes.sum()
    spread = changes.apply(lambda s: s.abs().max())
    keep = spread[spread > 0].index
    gains = total.loc[keep].sort_values(ascending=False, kind="stable")
    picked = list(gains[gains > 0].index[:FINETUNE_SHOWN])
    picked += list(gains[gains < 0].index[::-1][:FINETUNE_SHOWN])
    picked += [k for k in gains[gains == 0].index if k not in picked][:FINETUNE_SHOWN]
    picked.sort(key=lambda k: float(total.loc[k]))
    with plot_style():
        fig = new_figure(6.5, 1.4 + 0.24 * max(1, len(picked)) * max(1, len(tuned)) ** 0.5)
        ax = fig.add_subplot()
        if picked:
            height = 0.8 / len(tuned)
            lookup = categories.set_index(["run", "broad_category", "category"])["change"]
            for j, name in enumerate(tuned):
                y = np.arange(len(picked)) + (j - (len(tuned) - 1) / 2) * height
                x = [float(lookup.get((name, b, c), 0)) for b, c in picked]
                ax.barh(y, x, height, color=colours[name], label=f"{name} − {base}")
            ax.set_yticks(range(len(picked)), [f"{c} ({b})" for b, c in picked])
        else:
            ax.text(0.5, 0.5, "no category changes", ha="center", va="center",
                    transform=ax.transAxes)  # fmt: skip
            ax.set_yticks([])
        ax.axvline(0, color="0.3", linewidth=0.8)
        ax.grid(axis="x", color="0.9", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_xlabel(f"change in passing units vs {base} (all compared layers)")
        ax.set_title("Fine-tuning: categories gaining and losing units")
        if picked:
            ax.legend(loc="lower right", frameon=False)
        return save_figure(fig, stem)


def plot_detectability(table: pd.DataFrame, stem: Path) -> list[Path]:
    """Each annotated concept's AUROC (dot) and bootstrap 95% interval (line), grouped by
    category (bands), with lines at 0.5 (chance), 0.8 and 0.9; concepts at or above 0.9 in
    blue, the others in vermillion. ``table`` is an audit's detectability.csv."""
    rows = table.copy()
    rows["category"] = rows["category"].fillna("(no category)").astype(str)
    rows = rows.sort_values(["category", "auroc"], kind="stable", na_position="first")
    n = len(rows)
    y = np.arange(n)[::-1]
    with plot_style():
        fig = new_figure(9.0, min(60.0, max(3.0, 0.17 * n + 1.2)))
        ax = fig.add_subplot()
        seen = rows["category"].to_numpy()
        for i, category in enumerate(dict.fromkeys(seen)):
            inside = y[seen == category]
            if i % 2:
                ax.axhspan(inside.min() - 0.5, inside.max() + 0.5, color="0.95", linewidth=0)
        good = (rows["auroc"] >= 0.9).to_numpy()
        colours = list(np.where(good, RUN_PALETTE[0], RUN_PALETTE[1]))
        ax.hlines(y, rows["auroc_low"], rows["auroc_high"], colors=colours, linewidth=1.0)
        ax.scatter(rows["auroc"], y, c=colours, s=14, zorder=3)
        for x, style in ((0.5, ":"), (0.8, "--"), (0.9, "-")):
            ax.axvline(x, color="0.5", linestyle=style, linewidth=0.7)
        labels = [f"{c}  [{k}]" for c, k in zip(rows["concept"], rows["category"], strict=True)]
        ax.set_yticks(y, labels, fontsize=6)
        ax.set_ylim(-0.5, n - 0.5)
        ax.set_xlim(0, 1.0)
        ax.set_xlabel("AUROC: cosine vs. annotated images")
        ax.set_title("Detectability per annotated concept")
        return save_figure(fig, stem)


def write_figures(result: Comparison, folder: Path) -> list[Path]:
    """Draw every figure of a comparison into ``folder``; returns the files written."""
    written: list[Path] = []
    names = result.names
    written += plot_layer_means(result.layers, names, folder / "layer_means")
    positions = list(result.figure_layers)
    written += plot_mammography_vs_control(
        result.layers, names, positions, folder / "mammography_vs_control"
    )
    if not result.broad_categories.empty:
        written += plot_top_broad_categories(
            result.broad_categories, names, positions, folder / "top_broad_categories"
        )
    else:
        log.info("no categories in the concept set: no top_broad_categories figure")
    if not result.coverage_categories.empty:
        written += plot_coverage(result.coverage_categories, names, folder / "coverage")
    if not result.categories.empty:
        written += plot_finetune(result.categories, names, folder / "finetune_change")
    return written
