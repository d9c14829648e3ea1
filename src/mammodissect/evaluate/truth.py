"""Class labels as concepts: which concepts of a run's set a task's class stands for.

Image-level labels (a probe's ``density`` and ``birads`` columns) and the output units of a
fine-tuned classifier's head both carry a *class* of a task, not a concept string. To score a
unit label against them, each class becomes a :class:`ClassTruth`:

- an **anchor**: one concept string of the run's set that names the class (the first of a
  fixed list of candidates the set contains, compared case-insensitively), and
- its **members**: every concept that counts as naming the class. For density and BI-RADS
  classes these are the anchor's sub-category (``heterogeneously dense``,
  ``BI-RADS 4 suspicious``), and for a yes/no label column (``suspicious_calcification``,
  anchored at ``suspicious calcifications``) likewise; for the binary finding tasks ``mass``
  and ``calcification`` the anchor's broad category, since any mass descriptor names a mass;
  for a concept set without categories, the anchor alone. Density classes may be letters
  (``C``, ``DENSITY C``) or numbers 1-4.

A class none of whose candidates is in the set has no truth (None), and the units or images
it labels are left out of the agreement with a note.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from mammodissect.analysis.runs import label_pairs
from mammodissect.probe.layouts._common import norm_birads, norm_density

__all__ = ["ClassTruth", "class_truth", "task_truths"]

#: Candidate anchors of the density letters (the bundled ``birads`` set's strings first).
_DENSITY = {
    "A": ("almost entirely fatty breasts", "breast composition a", "BI-RADS density category A"),
    "B": (
        "scattered areas of fibroglandular density",
        "breast composition b",
        "BI-RADS density category B",
    ),
    "C": ("heterogeneously dense breasts", "breast composition c", "BI-RADS density category C"),
    "D": ("extremely dense breasts", "breast composition d", "BI-RADS density category D"),
}
#: Candidate anchors of the binary finding tasks (positive class).
_FINDINGS = {
    "mass": ("mass", "breast mass"),
    "calcification": ("calcification", "calcifications"),
}
#: Tasks whose classes are named (density letters, BI-RADS numbers), never yes/no.
_CLASS_TASKS = ("density", "birads")
#: Names of the positive class of a yes/no task.
_POSITIVE = {"yes", "1", "true", "positive"}


@dataclass(frozen=True)
class ClassTruth:
    """The concepts one class of a task stands for.

    Attributes
    ----------
    task, name:
        The task and the class name (``density``, ``C``).
    anchor:
        The concept string naming the class.
    members:
        Every concept that counts as naming it (the anchor included).
    binary:
        Whether it is the positive class of a yes/no task.
    """

    task: str
    name: str
    anchor: str
    members: frozenset[str]
    binary: bool = False

    @property
    def title(self) -> str:
        """``task=class`` (``density=C``, ``birads=1``), or the task alone for the positive
        class of a yes/no task (``mass``)."""
        return self.task if self.binary else f"{self.task}={self.name}"


def _candidates(task: str, name: str) -> tuple[str, ...]:
    key = str(name).strip()
    if task == "density":
        letter = norm_density(key)
        return _DENSITY.get(letter, ()) if isinstance(letter, str) else ()
    if task == "birads":
        number = norm_birads(key)
        return () if number is pd.NA else (f"BI-RADS {number}",)
    if key.lower() in _POSITIVE:
        spoken = task.replace("_", " ")
        return _FINDINGS.get(task, (spoken, f"{spoken}s"))
    return (key,)


def class_truth(task: str, name: str, frame: pd.DataFrame) -> ClassTruth | None:
    """The truth of class ``name`` of ``task`` in a concept set.

    Parameters
    ----------
    task:
        ``density``, ``birads``, ``mass``, ``calcification`` or a label column's name.
    name:
        The class: a density letter, a BI-RADS number, ``yes`` for a binary task's positive
        class, or a class name (matched to a concept string).
    frame:
        The concept set (:meth:`mammodissect.concepts.ConceptSet.to_frame`).

    Examples
    --------
    >>> frame = pd.DataFrame({"concept": ["heterogeneously dense breasts", "breast composition c",
    ...     "mass", "oval mass"], "category": ["dense", "dense", "mass in general", "shape"],
    ...     "broad_category": ["composition", "composition", "mass", "mass"]})
    >>> sorted(class_truth("density", "C", frame).members)
    ['breast composition c', 'heterogeneously dense breasts']
    >>> sorted(class_truth("mass", "yes", frame).members)
    ['mass', 'oval mass']
    >>> class_truth("density", "A", frame) is None
    True
    """
    spelled = {str(c).lower(): str(c) for c in reversed(list(frame["concept"]))}
    anchor = next(
        (spelled[c.lower()] for c in _candidates(task, name) if c.lower() in spelled), None
    )
    if anchor is None:
        return None
    binary = task not in _CLASS_TASKS and str(name).strip().lower() in _POSITIVE
    broad = binary and task in _FINDINGS
    groups = _groups(frame, broad)
    members = {anchor} | {c for c, g in groups.items() if g & groups.get(anchor, set())}
    return ClassTruth(task, str(name), anchor, frozenset(members), binary)


def _groups(frame: pd.DataFrame, broad: bool) -> dict[str, set[str]]:
    """Concept -> its categories (``broad``: broad categories); multi-label concepts have
    several."""
    if "category" not in frame or "broad_category" not in frame:
        return {}
    out: dict[str, set[str]] = {}
    for concept, category, broad_category in frame[
        ["concept", "category", "broad_category"]
    ].itertuples(index=False):
        pairs = label_pairs(category, broad_category)
        names = ((b if broad else c) for b, c in pairs)
        out.setdefault(str(concept), set()).update(name for name in names if name)
    return out


def task_truths(task: str, classes: Sequence[str], frame: pd.DataFrame) -> list[ClassTruth | None]:
    """:func:`class_truth` of every class, in class order."""
    return [class_truth(task, name, frame) for name in classes]
