"""Select part of a probe by its labels: split, view, laterality, a query, a sample.

:func:`select` filters on the standard label columns that the dataset-layout
readers write (``split``, ``view``, ``laterality``), on any pandas query over
:attr:`Probe.labels`, then draws a seeded sample. The result keeps probe order,
so the same call on the same probe always gives the same images in the same
order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd

from mammodissect.errors import MammodissectError
from mammodissect.probe.dataset import Probe
from mammodissect.probe.layouts._common import norm_split

__all__ = ["select"]

logger = logging.getLogger(__name__)


def _as_list(value: str | Iterable[str]) -> list[str]:
    """A string of comma-separated values, or an iterable, as stripped non-empty strings."""
    parts = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return [part.strip() for part in parts if part.strip()]


def _labels(probe: Probe, column: str, option: str) -> pd.Series:
    """The label column an option filters on, or raise naming what is there."""
    if probe.labels is None or column not in probe.labels.columns:
        have = [] if probe.labels is None else list(probe.labels.columns)
        raise MammodissectError(
            f"cannot select by {option}: the probe has no '{column}' label "
            f"(label columns: {', '.join(map(str, have)) or 'none'})"
        )
    return probe.labels[column]


def _available(series: pd.Series) -> list[str]:
    """Distinct non-missing values of a label column as sorted strings."""
    return sorted({str(value) for value in series.dropna()})


def _match(
    series: pd.Series, wanted: list[str], option: str, normalise: Callable[[str], str]
) -> np.ndarray:
    """Boolean mask of rows whose value is one of ``wanted`` (after ``normalise``)."""
    normalised = series.map(lambda value: None if pd.isna(value) else normalise(str(value)))
    present = set(normalised.dropna())
    unknown = [value for value in wanted if normalise(value) not in present]
    if unknown:
        raise MammodissectError(
            f"unknown {option} {', '.join(repr(v) for v in unknown)}; "
            f"available: {', '.join(_available(series)) or 'none'}"
        )
    targets = {normalise(value) for value in wanted}
    return normalised.map(lambda value: value in targets).to_numpy(dtype=bool)


def _split_name(value: str) -> str:
    """A split as the readers store it: lower case, train/test/val for the usual spellings."""
    split = norm_split(value)
    return "" if pd.isna(split) else str(split)


def _laterality(value: str) -> str:
    """``L``/``R`` from left/right spellings; other values upper-cased."""
    side = value.strip().upper()
    return {"LEFT": "L", "RIGHT": "R"}.get(side, side)


def select(
    probe: Probe,
    *,
    split: str | Iterable[str] | None = None,
    views: str | Iterable[str] | None = None,
    lateralities: str | Iterable[str] | None = None,
    where: str | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> Probe:
    """Keep the probe images that match every given criterion, then sample some.

    Parameters
    ----------
    probe : Probe
        The probe to select from.
    split : str or iterable of str, optional
        Split name(s), matched against the ``split`` label (``"training"`` means
        ``"train"``, ``"validation"`` ``"val"``); a string may list several,
        comma-separated.
    views : str or iterable of str, optional
        View position(s) (``"CC"``, ``"MLO"``, ...; any case), matched against ``view``.
    lateralities : str or iterable of str, optional
        ``"L"``/``"R"`` (or left/right), matched against ``laterality``.
    where : str, optional
        A :meth:`pandas.DataFrame.query` expression over the labels, for
        example ``"density in ['C', 'D'] and birads >= 4"``. Rows where it is
        missing (NA) count as not matching.
    sample : int, optional
        Keep this many images, drawn without replacement with
        ``numpy.random.default_rng(seed)`` after the filters. If fewer images
        are left, all are kept (with a warning).
    seed : int, optional
        Seed of the sample.

    Returns
    -------
    Probe
        The selected images in probe order, with their labels and boxes.

    Raises
    ------
    MammodissectError
        If a filter names a label the probe lacks, a value no image has (the
        message lists the available values), the query is invalid or does
        not give one boolean per image, ``sample`` is negative, or nothing is left.
    """
    n = len(probe)
    keep = np.ones(n, dtype=bool)
    asked: list[str] = []
    if split is not None:
        wanted = _as_list(split)
        keep &= _match(_labels(probe, "split", "split"), wanted, "split", _split_name)
        asked.append(f"split={','.join(wanted)}")
    if views is not None:
        wanted = _as_list(views)
        keep &= _match(_labels(probe, "view", "views"), wanted, "view", str.upper)
        asked.append(f"views={','.join(wanted)}")
    if lateralities is not None:
        wanted = _as_list(lateralities)
        keep &= _match(
            _labels(probe, "laterality", "lateralities"), wanted, "laterality", _laterality
        )
        asked.append(f"lateralities={','.join(wanted)}")
    if where is not None and str(where).strip():
        if probe.labels is None:
            raise MammodissectError(f"cannot apply where={where!r}: the probe has no labels")
        keep &= _query(probe.labels, str(where))
        asked.append(f"where={where}")
    indices = np.flatnonzero(keep)
    if len(indices) == 0:
        raise MammodissectError(
            f"no probe image matches {' and '.join(asked)} (the probe holds {n} images)"
        )
    if sample is not None:
        count = int(sample)
        if count < 0 or count != sample:
            raise MammodissectError(f"sample={sample!r} must be a whole number of images >= 0")
        if count == 0:
            raise MammodissectError("sample=0 selects no images; ask for at least one")
        if count < len(indices):
            rng = np.random.default_rng(int(seed))
            indices = np.sort(rng.choice(indices, size=count, replace=False))
        elif count > len(indices):
            logger.warning(
                "sample=%d asked but only %d images match; keeping all", count, len(indices)
            )
    if len(indices) == n:
        return probe
    logger.info("selected %d of %d probe images", len(indices), n)
    return probe.subset(indices.tolist())


def _query(labels: pd.DataFrame, where: str) -> np.ndarray:
    """Evaluate a query string over the labels as one boolean per row."""
    frame = labels if labels.index.name in labels.columns else labels.reset_index()
    try:
        result = frame.eval(where)
    except Exception as exc:  # pandas raises many types for a bad expression
        columns = ", ".join(map(str, frame.columns))
        raise MammodissectError(
            f"invalid where={where!r} ({type(exc).__name__}: {exc}); label columns: {columns}"
        ) from None
    if not isinstance(result, pd.Series) or len(result) != len(frame):
        raise MammodissectError(
            f"where={where!r} must give one true/false value per image, not {type(result).__name__}"
        )
    try:
        return result.astype("boolean").fillna(False).to_numpy(dtype=bool)
    except (TypeError, ValueError):
        raise MammodissectError(
            f"where={where!r} must give true/false values, not {result.dtype} values"
        ) from None
