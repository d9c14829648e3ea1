"""How often are unit labels right? Null baselines, mask grounding and label agreement.

``evaluate(run_dir, ...)`` (also ``mammodissect evaluate RUN_DIR``) reads a run directory and
its caches and writes ``evaluation.csv``, ``evaluation_layers.csv`` and ``evaluation.json``.
Modules, one job each: :mod:`~mammodissect.evaluate.source` (the run and its caches),
:mod:`~mammodissect.evaluate.null` (permutation null), :mod:`~mammodissect.evaluate.masks`
(masks and boxes as concept masks), :mod:`~mammodissect.evaluate.grounding` (IoU),
:mod:`~mammodissect.evaluate.agreement` (label vs truth), :mod:`~mammodissect.evaluate.tables`
(outputs), :mod:`~mammodissect.evaluate.core` (the pipeline).
"""

from mammodissect.evaluate.core import Evaluation, evaluate

__all__ = ["Evaluation", "evaluate"]
