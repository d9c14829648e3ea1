"""mammodissect: which clinical concepts have the units of a mammography model learned?

Mammo-CLIP Dissect (arXiv 2509.21102) on top of CLIP-Dissect: a vision-language
*dissector* scores probe images against concept strings, a *target* network's
units are recorded on the same images, and a similarity function (Pearson correlation by
default; soft-WPMI, the published method's, with ``similarity="soft_wpmi"``) gives each unit
its best concepts.

>>> import mammodissect
>>> result = mammodissect.dissect(target=..., dissector=..., probe=..., concepts=...,
...                               layers=...)  # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mammodissect")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

# the packages evaluate, finetune, report and study are callable verbs (mammodissect.verbs)
from mammodissect import evaluate, finetune, report, study
from mammodissect.api import Dissection, compare, dissect, run, write_summary
from mammodissect.config import RunConfig
from mammodissect.dissector_audit import Audit, AuditConfig, audit
from mammodissect.errors import MammodissectError
from mammodissect.evaluate import Evaluation

__all__ = [
    "Audit",
    "AuditConfig",
    "Dissection",
    "Evaluation",
    "MammodissectError",
    "RunConfig",
    "__version__",
    "audit",
    "compare",
    "dissect",
    "evaluate",
    "finetune",
    "report",
    "run",
    "study",
    "write_summary",
]
