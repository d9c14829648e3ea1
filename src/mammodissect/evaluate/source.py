"""What ``evaluate`` reads back from a run: run.json, neurons.csv and the run's caches.

The pooled activations (N x K per layer) and the dissector's image embeddings were cached by
``mammodissect run`` under fingerprints that run.json records; this module opens those
caches read-only, by fingerprint, so that the null baseline needs no forward pass. A cache
that is gone (or was never finished) is an error that says how to rebuild it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect.analysis.runs import IMAGES_FILE, RunDir, load_run, read_neurons
from mammodissect.config import default_cache_dir
from mammodissect.errors import MammodissectError
from mammodissect.rundir import NEURONS_FILE

__all__ = ["CachedStore", "RunSource", "open_run"]

log = logging.getLogger(__name__)

_EMBEDDING = "embedding"  # the dissector cache's one array (as record.py names it)


@dataclass
class CachedStore:
    """A finished row store, opened read-only: named (n_rows x columns) arrays + skipped rows."""

    directory: Path
    arrays: dict[str, np.ndarray]
    skipped: dict[int, str]
    n_rows: int


def read_store(root: Path, kind: str, fingerprint: str, run_name: str) -> CachedStore:
    """Open the ``kind`` cache (``target`` or ``dissector``) with this fingerprint.

    Raises
    ------
    MammodissectError
        When the cache folder is missing, unfinished or unreadable.
    """
    directory = Path(root) / kind / str(fingerprint)[:24]
    fix = (
        f"rerun `mammodissect run` with the settings in {run_name}/run.json (same target, "
        "dissector, probe, layers, pooling, preprocessing) to rebuild it, or pass --cache-dir "
        "to the cache folder that run used"
    )
    meta_path, state_path = directory / "meta.json", directory / "state.npz"
    if not (meta_path.is_file() and state_path.is_file()):
        raise MammodissectError(
            f"the {kind} cache of run {run_name!r} ({kind}/{directory.name} under "
            f"{Path(root).name!r}) is gone; {fix}"
        )
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(state_path, allow_pickle=False) as state:
            rows_done = int(state["rows_done"])
            skipped = {int(k): v for k, v in json.loads(str(state["skipped"])).items()}
        n_rows = int(meta["n_rows"])
        arrays = {
            name: np.load(directory / f"{idx}.npy", mmap_mode="r")
            for idx, name in enumerate(meta["columns"])
        }
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise MammodissectError(
            f"the {kind} cache {kind}/{directory.name} of run {run_name!r} is unreadable ({err}); "
            f"{fix}"
        ) from err
    if rows_done < n_rows:
        raise MammodissectError(
            f"the {kind} cache {kind}/{directory.name} of run {run_name!r} holds only "
            f"{rows_done} of {n_rows} images; {fix}"
        )
    return CachedStore(directory, arrays, skipped, n_rows)


@dataclass
class RunSource:
    """A run directory read back for evaluation.

    Attributes
    ----------
    run:
        neurons.csv (rank 1) and run.json, as :func:`mammodissect.analysis.runs.load_run` reads.
    neurons:
        Every rank of neurons.csv.
    target, dissector:
        The run's caches.
    rows:
        Probe rows the run used (neither cache skipped them), in probe order.
    """

    run: RunDir
    neurons: Any
    target: CachedStore
    dissector: CachedStore
    rows: np.ndarray

    @property
    def layers(self) -> list[str]:
        """The run's layers in model order."""
        return self.run.layers

    def activations(self, layer: str) -> np.ndarray:
        """(images used, units) pooled activations of ``layer``."""
        if layer not in self.target.arrays:
            raise MammodissectError(
                f"layer {layer!r} is not in the target cache of run {self.run.name!r}; "
                "rerun `mammodissect run` with the same settings"
            )
        return np.asarray(self.target.arrays[layer][self.rows], dtype=np.float32)

    def image_shapes(self) -> dict[str, tuple[int, int]]:
        """``image_id`` -> the decoded image's (H, W) as the run recorded it (images.csv's
        ``orig_height, orig_width``); empty when the run did not record them."""
        path = self.run.path / IMAGES_FILE
        if not path.is_file():
            return {}
        table = pd.read_csv(path, dtype={"image_id": str}, keep_default_na=False)
        if not {"orig_height", "orig_width"} <= set(table.columns):
            return {}
        sizes = table[["image_id", "orig_height", "orig_width"]]
        sizes = sizes[(sizes["orig_height"] != "") & (sizes["orig_width"] != "")]
        return {str(i): (int(float(h)), int(float(w))) for i, h, w in sizes.itertuples(index=False)}

    def embeddings(self) -> np.ndarray:
        """(images used, D) dissector image embeddings."""
        return np.asarray(self.dissector.arrays[_EMBEDDING][self.rows], dtype=np.float32)

    def check_scores(self, layer: str, observed: np.ndarray) -> None:
        """Top-1 scores recomputed from the caches must be the run's (neurons.csv): otherwise
        the caches, the dissector or its settings are not the run's."""
        best = self.run.best[self.run.best["layer"] == layer].sort_values("unit")
        if len(best) != len(observed):
            raise MammodissectError(
                f"layer {layer!r}: neurons.csv has {len(best)} units but the cache "
                f"{len(observed)}; rerun `mammodissect run` for {self.run.name!r}"
            )
        gap = float(np.max(np.abs(best["score"].to_numpy() - observed))) if len(best) else 0.0
        if gap > 1e-3 * max(1.0, float(np.max(np.abs(observed)))):
            raise MammodissectError(
                f"layer {layer!r}: scores recomputed from the cache differ from neurons.csv by "
                f"{gap:.4g}; the dissector or its settings are not the run's (pass --dissector "
                "the run used)"
            )


def open_run(run_dir: str | Path, cache_dir: str | Path | None = None) -> RunSource:
    """Read a run directory and open its caches (``cache_dir`` default: the default cache).

    Raises
    ------
    MammodissectError
        When run.json, neurons.csv or a cache is missing.
    """
    run = load_run(run_dir)
    if not run.info:
        raise MammodissectError(
            f"{run.name}/run.json is missing; evaluate needs a run directory written by "
            "`mammodissect run --out DIR`"
        )
    prints = run.info.get("fingerprints", {})
    if not prints.get("target_cache") or not prints.get("dissector_cache"):
        raise MammodissectError(
            f"{run.name}/run.json records no cache fingerprints; rerun `mammodissect run`"
        )
    root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    target = read_store(root, "target", prints["target_cache"], run.name)
    dissector = read_store(root, "dissector", prints["dissector_cache"], run.name)
    skipped = {**dissector.skipped, **target.skipped}
    rows = np.array([r for r in range(target.n_rows) if r not in skipped], dtype=np.int64)
    expected = run.info.get("counts", {}).get("images_used")
    if expected is not None and int(expected) != len(rows):
        raise MammodissectError(
            f"the caches of run {run.name!r} hold {len(rows)} usable images but run.json "
            f"counts {expected}; rerun `mammodissect run` with the same settings"
        )
    neurons = read_neurons(Path(run_dir) / NEURONS_FILE)
    return RunSource(run, neurons, target, dissector, rows)
