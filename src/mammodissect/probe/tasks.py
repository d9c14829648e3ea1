"""Tasks: a task name and a probe's label table become one class index per image.

``density`` (A-D, four classes), ``birads`` (the categories present), ``mass`` and
``calcification`` (binary: the phantom family columns, or for dataset layouts the
``findings`` column), or any other label column (binary when it holds two values or
booleans, else one class per distinct value). Images without a label are left out.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.errors import MammodissectError
from mammodissect.probe.dataset import Probe
from mammodissect.probe.layouts._common import norm_birads, norm_density

__all__ = ["BUILTIN_TASKS", "TaskLabels", "task_labels"]

log = logging.getLogger(__name__)

#: Tasks with a fixed meaning (any other name is a label column).
BUILTIN_TASKS: tuple[str, ...] = ("density", "birads", "mass", "calcification")
_DENSITIES = ("A", "B", "C", "D")
#: ``findings`` tokens (``|``-joined; VinDr's categories, CBIS-DDSM's types, phantom families)
#: that mean each binary finding task.
_FINDING_PATTERNS = {"mass": re.compile(r"\bmass"), "calcification": re.compile(r"calcification")}
_TRUE = {"1", "true", "yes", "y", "t", "positive", "pos"}
_FALSE = {"0", "false", "no", "n", "f", "negative", "neg", "none"}
_MAX_CLASSES = 50
#: Class names of a yes/no task (index 1 is the positive class).
_BINARY_NAMES = ("no", "yes")


@dataclass
class TaskLabels:
    """One task's labels.

    Attributes
    ----------
    task:
        The task name as given.
    kind:
        ``"binary"`` (one logit, class 1 is the positive) or ``"multiclass"`` (one logit
        per class).
    classes:
        Class names in index order (binary: negative, positive).
    targets:
        Class index per labelled image, indexed by ``image_id`` in probe order.
    source:
        Where the labels came from (a column, or ``findings``).
    dropped:
        Images left out for want of a label.
    """

    task: str
    kind: str
    classes: list[str]
    targets: pd.Series
    source: str
    dropped: int = 0

    @property
    def outputs(self) -> int:
        """Units of the classifier's head (1 for a binary task)."""
        return 1 if self.kind == "binary" else len(self.classes)

    def counts(self, ids: Any = None) -> dict[str, int]:
        """Images per class (of ``ids``, or of all labelled images)."""
        values = self.targets if ids is None else self.targets.loc[list(ids)]
        found = values.value_counts()
        return {name: int(found.get(i, 0)) for i, name in enumerate(self.classes)}


def _missing(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    return values.isna() | text.isna() | (text == "") | (text.str.lower() == "nan")


def _density(values: pd.Series) -> pd.Series:
    """Class index (A-D -> 0-3) per value: letters, ``DENSITY C`` or 1-4; NaN otherwise."""
    index = {letter: i for i, letter in enumerate(_DENSITIES)}
    return values.map(lambda v: index.get(norm_density(v), np.nan))


def _number_name(value: Any) -> str:
    number = float(value)
    return str(int(number)) if number.is_integer() else str(number)


def _birads(values: pd.Series) -> tuple[pd.Series, list[str]]:
    """Class index per value over the categories present: ``BI-RADS 4``, ``4``, ``4.0`` and
    ``4A`` are all category 4."""
    numbers = pd.to_numeric(values.map(norm_birads), errors="coerce")
    unreadable = int((numbers.isna() & ~_missing(values)).sum())
    if unreadable:
        log.warning("birads: %d value(s) are not numbers; those images are left out", unreadable)
    present = sorted(numbers.dropna().unique())
    names = [_number_name(v) for v in present]
    index = {v: i for i, v in enumerate(present)}
    return numbers.map(lambda v: index.get(v, np.nan)), names


def _booleans(values: pd.Series) -> pd.Series | None:
    """0/1 per value when every present value reads as a boolean, else None."""
    if values.dtype == bool:
        return values.astype(float)
    text = values.astype("string").str.strip().str.lower()
    present = set(text[~_missing(values)].dropna().unique())
    if not present:
        return None
    if present <= _TRUE | _FALSE and present & _TRUE and present & _FALSE:
        return text.map(lambda v: 1.0 if v in _TRUE else (0.0 if v in _FALSE else np.nan))
    return None


def _from_findings(values: pd.Series, task: str) -> pd.Series:
    pattern = _FINDING_PATTERNS[task]

    def positive(cell: Any) -> float:
        if cell is None or (isinstance(cell, float) and np.isnan(cell)) or cell is pd.NA:
            return np.nan
        tokens = [t.strip().lower() for t in str(cell).split("|")]
        return float(any(pattern.search(t) for t in tokens))

    return values.map(positive)


def _column(values: pd.Series, name: str) -> tuple[pd.Series, list[str], str]:
    """(class index per image, class names, kind) of an arbitrary label column."""
    booleans = _booleans(values)
    if booleans is not None:
        return booleans, list(_BINARY_NAMES), "binary"
    present_mask = ~_missing(values)
    present = values[present_mask]
    numbers = pd.to_numeric(present, errors="coerce")
    if len(present) and not numbers.isna().any():
        distinct = sorted(numbers.unique())
        names = [_number_name(v) for v in distinct]
        index = {v: i for i, v in enumerate(distinct)}
        mapped = pd.to_numeric(values.where(present_mask), errors="coerce").map(
            lambda v: index.get(v, np.nan)
        )
    else:
        text = values.astype("string").str.strip()
        names = sorted(text[present_mask].unique())
        index = {v: i for i, v in enumerate(names)}
        mapped = text.where(present_mask).map(lambda v: index.get(v, np.nan))
    if len(names) > _MAX_CLASSES:
        raise MammodissectError(
            f"label column {name!r} holds {len(names)} distinct values (more than "
            f"{_MAX_CLASSES}); it looks continuous or like an identifier, not a class label"
        )
    kind = "binary" if len(names) == 2 else "multiclass"
    if kind == "binary":
        log.info("task %s: %r is the negative class, %r the positive", name, *names)
    return mapped.astype(float), [str(n) for n in names], kind


def task_labels(probe: Probe, task: str) -> TaskLabels:
    """The class index of every labelled probe image for ``task``.

    Parameters
    ----------
    probe:
        A probe with labels (a manifest with label columns or a dataset layout).
    task:
        ``density``, ``birads``, ``mass``, ``calcification`` or a label column's name.

    Raises
    ------
    MammodissectError
        When the probe has no labels, the task names no column (the message lists the
        columns), no image has a label, or the labels hold a single class.
    """
    name = str(task).strip()
    labels = probe.labels
    if labels is None or labels.empty or not len(labels.columns):
        raise MammodissectError(
            f"probe ({probe.source}) has no label columns, so it cannot train task {name!r}; "
            "use a manifest with label columns or a dataset layout"
        )
    columns = list(labels.columns)
    if name == "density" and "density" in labels:
        values, classes = _density(labels["density"]), list(_DENSITIES)
        kind, source = "multiclass", "density"
    elif name == "birads" and "birads" in labels:
        values, classes = _birads(labels["birads"])
        kind, source = "multiclass", "birads"
    elif name in _FINDING_PATTERNS and name not in labels and "findings" in labels:
        values, classes = _from_findings(labels["findings"], name), list(_BINARY_NAMES)
        kind = "binary"
        source = "findings"
    elif name in labels:
        values, classes, kind = _column(labels[name], name)
        source = name
    else:
        raise MammodissectError(
            f"task {name!r} is neither a known task ({', '.join(BUILTIN_TASKS)}) nor a label "
            f"column of the probe; its columns are: {', '.join(map(str, columns))}"
        )
    values = pd.Series(np.asarray(values, dtype=float), index=labels.index)
    keep = values.notna()
    dropped = int((~keep).sum())
    if not keep.any():
        raise MammodissectError(
            f"no probe image has a label for task {name!r} (column {source!r} is empty or "
            "unreadable everywhere)"
        )
    if dropped:
        log.warning(
            "task %s: %d of %d images have no label in %r and are left out",
            name,
            dropped,
            len(values),
            source,
        )
    targets = values[keep].astype(np.int64)
    present = sorted(set(targets.tolist()))
    if len(present) < 2:
        only = classes[present[0]] if present else "?"
        raise MammodissectError(
            f"task {name!r}: every labelled image has the same class ({only!r} in {source!r}); "
            "a classifier needs at least two classes"
        )
    return TaskLabels(name, kind, classes, targets, source, dropped)
