"""Train/validation split: by patient, seeded, stratified so each side has every class.

``random`` (the default) puts whole patients (``patient_id``; each image on its own when the
probe has no such column) on one side, class by class, so validation holds about
``val_fraction`` of every class and, wherever a class spans two or more patients, both sides
have it. ``column`` honours the probe's own ``split`` column (``train`` against ``val``/
``validation``/``valid``/``dev``, else ``test``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mammodissect.errors import MammodissectError

__all__ = ["SPLITS", "Split", "split_images"]

log = logging.getLogger(__name__)

#: How the validation images are chosen.
SPLITS: tuple[str, ...] = ("random", "column")
_TRAIN_VALUES = ("train", "training")
_VAL_VALUES = ("val", "valid", "validation", "dev")


@dataclass
class Split:
    """Which labelled images train and which validate.

    Attributes
    ----------
    train, val:
        Image ids, in probe order.
    grouped_by:
        ``patient_id`` or ``image_id`` (what was kept together), or ``split column``.
    """

    train: list[str]
    val: list[str]
    grouped_by: str


def _groups(ids: pd.Index, table: pd.DataFrame | None) -> tuple[pd.Series, str]:
    """The group key of every image: its patient when known, else itself."""
    own = pd.Series([f"image:{i}" for i in ids], index=ids)
    if table is None or "patient_id" not in table.columns:
        log.info("no patient_id column: images are split one by one")
        return own, "image_id"
    patients = table.loc[ids, "patient_id"].astype("string").str.strip()
    known = patients.notna() & (patients != "")
    if not known.any():
        log.info("patient_id is empty: images are split one by one")
        return own, "image_id"
    if not known.all():
        log.info("%d image(s) without a patient_id are split one by one", int((~known).sum()))
    return own.where(~known, "patient:" + patients.where(known, "")), "patient_id"


def _fix_coverage(
    members: dict[str, list[str]],
    classes_of: dict[str, set[int]],
    side: dict[str, bool],
    n_classes: int,
) -> None:
    """Move single groups across so each class is on both sides, where that costs no side a
    class it has only once (``side[group]`` is True for validation)."""
    for want_val in (True, False):
        for cls in range(n_classes):
            holders = [g for g in members if cls in classes_of[g]]
            if len(holders) < 2 or any(side[g] == want_val for g in holders):
                continue
            for group in sorted(holders, key=lambda g: len(members[g])):
                others = [g for g in members if g != group and side[g] == side[group]]
                kept = set().union(*(classes_of[g] for g in others)) if others else set()
                if classes_of[group] <= kept:
                    side[group] = want_val
                    break


def _random(
    targets: pd.Series, table: pd.DataFrame | None, val_fraction: float, seed: int
) -> Split:
    groups, grouped_by = _groups(targets.index, table)
    members: dict[str, list[str]] = {}
    for image_id, group in groups.items():
        members.setdefault(group, []).append(image_id)
    n_classes = int(targets.max()) + 1
    frequency = np.bincount(targets.to_numpy(), minlength=n_classes)
    classes_of = {g: {int(targets[i]) for i in ids} for g, ids in members.items()}
    primary = {g: min(c, key=lambda k: (frequency[k], k)) for g, c in classes_of.items()}
    rng = np.random.default_rng(seed)
    side = dict.fromkeys(members, False)
    for cls in range(n_classes):
        bucket = [g for g in members if primary[g] == cls]
        if not bucket:
            continue
        order = [bucket[i] for i in rng.permutation(len(bucket))]
        images = sum(len(members[g]) for g in bucket)
        wanted = round(val_fraction * images)
        if len(bucket) >= 2:
            wanted = max(wanted, 1)
        taken = 0
        for group in order[: len(order) - 1] if len(order) >= 2 else []:
            if taken >= wanted:
                break
            side[group] = True
            taken += len(members[group])
    _fix_coverage(members, classes_of, side, n_classes)
    val = [i for i in targets.index if side[groups[i]]]
    train = [i for i in targets.index if not side[groups[i]]]
    return Split(train, val, grouped_by)


def _column(targets: pd.Series, table: pd.DataFrame | None) -> Split:
    if table is None or "split" not in table.columns:
        columns = [] if table is None else list(table.columns)
        raise MammodissectError(
            "split='column' needs a 'split' label column, which the probe lacks "
            f"(its columns: {', '.join(map(str, columns)) or 'none'}); use split='random'"
        )
    values = table.loc[targets.index, "split"].astype("string").str.strip().str.lower()
    present = set(values.dropna().unique())
    val_values = [v for v in _VAL_VALUES if v in present] or (["test"] if "test" in present else [])
    train_mask = values.isin(_TRAIN_VALUES).fillna(False)
    val_mask = values.isin(val_values).fillna(False) if val_values else train_mask & False
    if not train_mask.any() or not val_mask.any():
        raise MammodissectError(
            f"the split column holds {', '.join(sorted(present)) or 'nothing'}; split='column' "
            f"needs 'train' and one of {', '.join(_VAL_VALUES)} or 'test'"
        )
    other = int((~(train_mask | val_mask)).sum())
    if other:
        log.warning("%d labelled image(s) of another split are left out", other)
    log.info("validating on split %s", "/".join(val_values))
    train = list(targets.index[train_mask.to_numpy()])
    val = list(targets.index[val_mask.to_numpy()])
    if "patient_id" in table.columns:
        patients = table["patient_id"].astype("string")
        shared = set(patients.loc[train].dropna()) & set(patients.loc[val].dropna())
        if shared:
            log.warning(
                "the split column puts %d patient(s) on both sides of the split", len(shared)
            )
    return Split(train, val, "split column")


def split_images(
    targets: pd.Series,
    table: pd.DataFrame | None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    mode: str = "random",
) -> Split:
    """Split labelled images into training and validation.

    Parameters
    ----------
    targets:
        Class index per image, indexed by ``image_id``.
    table:
        The probe's label table (for ``patient_id`` and ``split``).
    val_fraction:
        Share of images (of each class) to validate on, in [0, 1); 0 validates on nothing.
    seed:
        Seed of the random split.
    mode:
        ``random`` or ``column`` (see the module documentation).

    Raises
    ------
    MammodissectError
        For an unknown mode, a fraction outside [0, 1), or a split column that does not
        give both sides.
    """
    if mode not in SPLITS:
        raise MammodissectError(f"split {mode!r} is unknown; use one of {', '.join(SPLITS)}")
    if mode == "column":
        split = _column(targets, table)
    else:
        if not 0.0 <= float(val_fraction) < 1.0:
            raise MammodissectError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if val_fraction == 0:
            split = Split(list(targets.index), [], "image_id")
        else:
            split = _random(targets, table, float(val_fraction), int(seed))
    missing = sorted(set(targets.loc[split.train]) ^ set(targets)) if split.train else []
    if not split.train:
        raise MammodissectError("the split leaves no image to train on; lower val_fraction")
    if missing:
        log.warning("class index(es) %s have no training image", missing)
    if split.val:
        absent = sorted(set(targets) - set(targets.loc[split.val]))
        if absent:
            log.warning("class index(es) %s have no validation image", absent)
    log.info(
        "split by %s: %d training and %d validation images",
        split.grouped_by,
        len(split.train),
        len(split.val),
    )
    return split
