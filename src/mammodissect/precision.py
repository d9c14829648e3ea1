"""Mixed precision and channels-last for the recording pass, and a label-parity check.

``precision`` is ``fp32`` (the default), ``bf16`` or ``fp16``: the two half types run the
target and the dissector's image tower under :func:`torch.autocast`. On CUDA both are
fast; on CPU ``bf16`` is allowed when asked for (with a warning: it is usually slower)
and ``fp16`` is refused. Pooled activations and embeddings are stored as float32
whatever the precision. ``channels_last`` stores the models' weights and each 4-D input
batch in channels-last memory format. Both change the recorded numbers slightly, so
both enter the cache fingerprints; :func:`label_parity` measures how much the labels
move compared with float32.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pandas as pd
import torch

from mammodissect.errors import MammodissectError

__all__ = [
    "PRECISIONS",
    "autocast",
    "check_precision",
    "label_parity",
    "memory_format",
]

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device | str) -> None:
    """Refuse a precision the device cannot use; warn when it will be slow.

    Raises
    ------
    MammodissectError
        For an unknown precision, or ``fp16`` on CPU.
    """
    if precision not in PRECISIONS:
        raise MammodissectError(
            f"precision {precision!r} unknown; choose one of {', '.join(PRECISIONS)}"
        )
    kind = torch.device(device).type
    if kind == "cpu" and precision == "fp16":
        raise MammodissectError(
            "precision 'fp16' needs a GPU; on CPU use --precision fp32 (or bf16, slower)"
        )
    if kind == "cpu" and precision == "bf16":
        log.warning("precision bf16 on CPU: autocast there is usually slower than fp32")


@contextlib.contextmanager
def autocast(precision: str, device: torch.device | str) -> Iterator[None]:
    """Autocast to ``precision`` on ``device`` (nothing for ``fp32``)."""
    dtype = PRECISIONS.get(precision)
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=torch.device(device).type, dtype=dtype):
        yield


def memory_format(channels_last: bool) -> torch.memory_format:
    """The memory format models and 4-D batches are put in."""
    return torch.channels_last if channels_last else torch.contiguous_format


def fingerprint_parts(precision: str, channels_last: bool) -> dict[str, Any]:
    """What the precision settings add to a cache fingerprint: nothing at the defaults,
    so caches recorded before these settings existed stay valid."""
    parts: dict[str, Any] = {}
    if precision != "fp32":
        parts["precision"] = precision
    if channels_last:
        parts["channels_last"] = True
    return parts


def label_parity(reference: pd.DataFrame, other: pd.DataFrame, top: int = 5) -> dict[str, Any]:
    """How far ``other``'s top-1 labels move from ``reference``'s (two ``neurons`` tables).

    Returns
    -------
    dict
        ``units`` compared, ``changed`` (units whose rank-1 concept differs),
        ``fraction_changed``, ``fraction_in_top`` (units whose reference label is still
        among ``other``'s best ``top`` concepts, as far as its table ranks them), ``top`` and
        per layer the fraction changed.
    """
    keys = ["layer", "unit"]
    first = [frame[frame["rank"] == 1].set_index(keys)["concept"] for frame in (reference, other)]
    joined = pd.concat(first, axis=1, keys=["reference", "other"], join="inner")
    if not len(joined):
        raise MammodissectError("the two runs share no (layer, unit); compare the same layers")
    changed = joined["reference"] != joined["other"]
    by_layer = changed.groupby(level="layer").mean()
    ranked = other[other["rank"] <= top].set_index([*keys, "concept"]).index
    pairs = pd.MultiIndex.from_arrays(
        [joined.index.get_level_values(k) for k in keys] + [joined["reference"].to_numpy()]
    )
    return {
        "units": len(joined),
        "changed": int(changed.sum()),
        "fraction_changed": float(changed.mean()),
        "fraction_in_top": float(pairs.isin(ranked).mean()),
        "top": top,
        "by_layer": {str(k): float(v) for k, v in by_layer.items()},
    }
