"""The run directory's file names, and keeping its outputs one consistent set.

A run directory (``mammodissect run --out DIR``) holds the files ``run`` writes
(:data:`RUN_FILES`) and, later, files derived from them by ``evaluate`` and ``report``
(:data:`DERIVED_FILES`). A rerun into the same folder must never leave a file of the earlier
run beside the new ones (a report showing the old concepts), so :func:`replace_outputs`
removes every known output the new run did not write. Files it does not know (a user's
notes) are left alone.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from mammodissect.errors import MammodissectError

__all__ = [
    "BOXES_FILE",
    "CONCEPTS_FILE",
    "DERIVED_FILES",
    "DETECTABILITY_FILE",
    "EVALUATION_FILE",
    "EVALUATION_JSON",
    "EVALUATION_LAYERS_FILE",
    "EVALUATION_TRUTH_FILE",
    "HEAD_CHECK_FILE",
    "IMAGES_FILE",
    "NEURONS_FILE",
    "PLANTED_FILE",
    "REPORT_FILE",
    "RUN_FILES",
    "RUN_JSON",
    "SIMILARITIES_FILE",
    "SUMMARY_CATEGORIES_FILE",
    "SUMMARY_FILE",
    "TOP_IMAGES_FILE",
    "check_writable",
    "replace_outputs",
]

NEURONS_FILE = "neurons.csv"
TOP_IMAGES_FILE = "top_images.csv"
#: Per probe image: reading facts, labels, geometry.
IMAGES_FILE = "images.csv"
#: The probe's finding boxes in the target's input pixels (probes with boxes only).
BOXES_FILE = "boxes.csv"
RUN_JSON = "run.json"
#: The concept set a run used (``concept, category, broad_category, control``).
CONCEPTS_FILE = "concepts.csv"
#: The audit's rows for the run's concepts (runs given ``--detectability``).
DETECTABILITY_FILE = "detectability.csv"
SUMMARY_FILE = "summary.csv"
SUMMARY_CATEGORIES_FILE = "summary_categories.csv"
#: Written by ``mammodissect evaluate``: per unit, per layer (with the null's percentiles),
#: settings and overall figures, the classifier-head check, the planted units, and the
#: similarity-function table.
EVALUATION_FILE = "evaluation.csv"
EVALUATION_LAYERS_FILE = "evaluation_layers.csv"
EVALUATION_JSON = "evaluation.json"
#: The truth ``evaluate`` measured (IoU, image-level concepts, planted units, head outputs),
#: kept for ``compare_similarities`` (:mod:`mammodissect.evaluate.stored`).
EVALUATION_TRUTH_FILE = "evaluation_truth.npz"
HEAD_CHECK_FILE = "head_check.csv"
PLANTED_FILE = "planted.csv"
SIMILARITIES_FILE = "similarities.csv"
#: Written by ``mammodissect report``.
REPORT_FILE = "report.html"

#: Everything ``mammodissect run`` writes into its run directory.
RUN_FILES: tuple[str, ...] = (
    NEURONS_FILE,
    TOP_IMAGES_FILE,
    IMAGES_FILE,
    BOXES_FILE,
    RUN_JSON,
    CONCEPTS_FILE,
    DETECTABILITY_FILE,
    SUMMARY_FILE,
    SUMMARY_CATEGORIES_FILE,
)
#: What later commands derive from a run's files; stale once the run is written again.
DERIVED_FILES: tuple[str, ...] = (
    EVALUATION_FILE,
    EVALUATION_LAYERS_FILE,
    EVALUATION_JSON,
    EVALUATION_TRUTH_FILE,
    HEAD_CHECK_FILE,
    PLANTED_FILE,
    SIMILARITIES_FILE,
    "similarities.png",
    "similarities.svg",
    REPORT_FILE,
)


def check_writable(out: str | os.PathLike[str], flag: str = "--out") -> Path:
    """Create the output folder ``out`` (and its parents) and check that files can be written
    in it, before any work that would be lost otherwise.

    Raises
    ------
    MammodissectError
        One line naming the folder, why, and the fix.
    """
    folder = Path(out)
    fix = f"choose another {flag} or fix the folder's permissions"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MammodissectError(
            f"cannot create output folder {str(folder)!r} ({err.strerror or err}); {fix}"
        ) from None
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise MammodissectError(
            f"cannot write in output folder {str(folder)!r} ({err.strerror or err}); {fix}"
        ) from None
    return folder


def replace_outputs(out: Path, written: Iterable[str]) -> list[str]:
    """Remove the run outputs in ``out`` that the run just written (``written``, file names)
    did not write: a stale ``boxes.csv``, and every file derived from the earlier run
    (evaluation, report). Returns the names removed."""
    keep = set(written)
    removed = []
    for name in (*RUN_FILES, *DERIVED_FILES):
        path = out / name
        if name not in keep and path.is_file():
            path.unlink()
            removed.append(name)
    return removed
