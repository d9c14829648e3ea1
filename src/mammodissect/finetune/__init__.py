"""Fine-tuning: make the study's C variants, a target's image encoder with a linear head
trained on a probe's labels for one task (``mammodissect finetune``).

>>> from mammodissect.finetune import finetune
>>> metrics = finetune("efficientnet:efficientnet-lite0?weights=lite0.pth", "phantoms/manifest.csv",
...                    "mass", "runs/lite0-mass", epochs=5)  # doctest: +SKIP
>>> metrics["best_metric"]  # doctest: +SKIP

The classifier it writes loads as a target (``classifier:PATH`` or, for Mammo-CLIP bases,
``mammoclip-classifier:PATH``) whose head ``classifier.classification_head`` can be dissected.
"""

from mammodissect.finetune.api import finetune
from mammodissect.finetune.config import FinetuneConfig
from mammodissect.finetune.export import target_spec
from mammodissect.finetune.split import SPLITS, Split, split_images
from mammodissect.probe.tasks import BUILTIN_TASKS, TaskLabels, task_labels

__all__ = [
    "BUILTIN_TASKS",
    "SPLITS",
    "FinetuneConfig",
    "Split",
    "TaskLabels",
    "finetune",
    "split_images",
    "target_spec",
    "task_labels",
]

# ``mammodissect.finetune(...)`` runs the verb; ``mammodissect.finetune.<module>`` stays importable
from mammodissect.verbs import make_callable

make_callable(__name__, finetune)
