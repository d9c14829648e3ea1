"""HTML reports of run and compare directories (``mammodissect report``).

One self-contained page per directory (inline CSS and JS, images as data URIs, nothing
fetched): :func:`report` writes ``report.html`` into a run directory (summary, figure, the
table of all units, unit cards with heatmaps) or a compare directory (figures, tables, links
to the runs' reports).
"""

from mammodissect.report.build import REPORT_FILE, compare_report, report, run_report

__all__ = ["REPORT_FILE", "compare_report", "report", "run_report"]

# ``mammodissect.report(...)`` runs the verb; ``mammodissect.report.<module>`` stays importable
from mammodissect.verbs import make_callable

make_callable(__name__, report)
