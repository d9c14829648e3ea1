"""How often are unit labels right? Null baselines, mask grounding and label agreement.

``evaluate(run_dir, ...)`` (also ``mammodissect evaluate RUN_DIR``) reads a run directory and
its caches and writes ``evaluation.csv``, ``evaluation_layers.csv`` and ``evaluation.json``.
Modules, one job each: :mod:`~mammodissect.evaluate.source` (the run and its caches),
:mod:`~mammodissect.evaluate.null` (permutation null), :mod:`~mammodissect.evaluate.masks`
(masks and boxes as concept masks), :mod:`~mammodissect.evaluate.grounding` (IoU),
:mod:`~mammodissect.evaluate.agreement` (label vs truth), :mod:`~mammodissect.evaluate.tables`
(outputs), :mod:`~mammodissect.evaluate.core` (the pipeline),
:mod:`~mammodissect.evaluate.similarities` (``compare_similarities``: every similarity setting
scored against the same grounding, ``similarities.csv``).
"""

from mammodissect.evaluate.core import Evaluation, evaluate
from mammodissect.evaluate.similarities import compare_similarities

__all__ = ["Evaluation", "compare_similarities", "evaluate"]
