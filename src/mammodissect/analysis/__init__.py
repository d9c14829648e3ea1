"""Statistics, comparisons and figures over run directories.

- :func:`write_summary` (``summary.csv`` and ``summary_categories.csv`` of one run: per layer in
  model order, top-1 score statistics, the local threshold, passing units, mammography share,
  categories, top concepts);
- :func:`compare` (two or more runs, e.g. G, M and C variants: global thresholds, the study's
  three questions as tables, and figures).

This package reads run directories only; it never imports the command line, the API or the
phantom world.
"""

from mammodissect.analysis.compare import (
    Alignment,
    Comparison,
    align_layers,
    choose_layers,
    compare,
)
from mammodissect.analysis.runs import RunDir, load_run, read_neurons
from mammodissect.analysis.summary import summarize, write_summary

__all__ = [
    "Alignment",
    "Comparison",
    "RunDir",
    "align_layers",
    "choose_layers",
    "compare",
    "load_run",
    "read_neurons",
    "summarize",
    "write_summary",
]
