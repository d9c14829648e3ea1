"""How often are unit labels right? Null baselines, grounded truth, agreement, stability.

``evaluate(run_dir, ...)`` (also ``mammodissect evaluate RUN_DIR``) reads a run directory and
its caches and writes ``evaluation.csv``, ``evaluation_layers.csv``, ``evaluation.json`` and,
when they apply, ``head_check.csv`` and ``planted.csv``.
Modules, one job each: :mod:`~mammodissect.evaluate.source` (the run and its caches),
:mod:`~mammodissect.evaluate.null` (permutation null), :mod:`~mammodissect.evaluate.masks`
(masks and boxes as concept masks), :mod:`~mammodissect.evaluate.grounding` (IoU),
:mod:`~mammodissect.evaluate.truth` (classes as concepts),
:mod:`~mammodissect.evaluate.image_labels` (density and BI-RADS: AUROC/AUPRC),
:mod:`~mammodissect.evaluate.head` (the classifier-head check),
:mod:`~mammodissect.evaluate.planted` (planted units with known answers),
:mod:`~mammodissect.evaluate.stability` (bootstrap and noise),
:mod:`~mammodissect.evaluate.agreement` (label vs truth), :mod:`~mammodissect.evaluate.tables`
(outputs), :mod:`~mammodissect.evaluate.core` (the pipeline; its settings:
:mod:`~mammodissect.evaluate.config`),
:mod:`~mammodissect.evaluate.similarities` (``compare_similarities``: every similarity setting
scored against the same grounding, ``similarities.csv``), :mod:`~mammodissect.evaluate.sanity`
(the missing-labels and extra-labels sanity checks of similarity functions).
"""

from mammodissect.evaluate.config import EvaluateConfig
from mammodissect.evaluate.core import Evaluation, evaluate
from mammodissect.evaluate.sanity import planted_sanity, sanity_checks
from mammodissect.evaluate.similarities import compare_similarities

__all__ = [
    "EvaluateConfig",
    "Evaluation",
    "compare_similarities",
    "evaluate",
    "planted_sanity",
    "sanity_checks",
]

# ``mammodissect.evaluate(...)`` runs the verb; ``mammodissect.evaluate.<module>`` stays importable
from mammodissect.verbs import make_callable

make_callable(__name__, evaluate)
