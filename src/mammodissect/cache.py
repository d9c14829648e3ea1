"""On-disk stores of per-image rows, keyed by a fingerprint, that survive interruption.

A :class:`RowStore` holds named N x C float32 arrays (memory-mapped ``.npy``
files) filled in probe order, plus a small state file (rows done, skipped
rows, extra arrays such as running top-k) replaced atomically after every
batch. A rerun with the same fingerprint reuses a complete store and resumes a
partial one from its last finished batch.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mammodissect.errors import MammodissectError

__all__ = ["RowStore", "fingerprint"]

_FORMAT = 1


def fingerprint(parts: dict[str, Any]) -> str:
    """A stable hex digest of a JSON-able mapping."""
    text = json.dumps({"format": _FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class RowStore:
    """Named (n_rows x columns) float32 arrays on disk with resumable progress.

    Parameters
    ----------
    root:
        The cache directory.
    kind:
        A sub-folder name (``target``, ``dissector``).
    parts:
        What the stored values depend on; hashed into the folder name.
    n_rows:
        Number of probe images.
    """

    def __init__(self, root: Path, kind: str, parts: dict[str, Any], n_rows: int):
        self.fingerprint = fingerprint({"kind": kind, "n_rows": n_rows, **parts})
        self.directory = Path(root) / kind / self.fingerprint[:24]
        self.n_rows = n_rows
        self.columns: dict[str, int] = {}
        self.rows_done = 0
        self.skipped: dict[int, str] = {}
        self.extra: dict[str, np.ndarray] = {}
        self._arrays: dict[str, np.memmap] = {}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MammodissectError(
                f"cannot create cache folder under {Path(root).name!r} ({err}); "
                "pass --cache-dir to a writable folder"
            ) from err
        self._load()

    @property
    def complete(self) -> bool:
        """Whether every row has been recorded."""
        return self.rows_done >= self.n_rows and bool(self.columns)

    def _load(self) -> None:
        meta_path = self.directory / "meta.json"
        state_path = self.directory / "state.npz"
        if not (meta_path.exists() and state_path.exists()):
            return
        try:
            meta = json.loads(meta_path.read_text())
            with np.load(state_path, allow_pickle=False) as state:
                rows_done = int(state["rows_done"])
                skipped = json.loads(str(state["skipped"]))
                extra = {k: state[k].copy() for k in state.files if k.startswith("x_")}
            arrays = {
                name: np.load(self.directory / f"{idx}.npy", mmap_mode="r+")
                for idx, name in enumerate(meta["columns"])
            }
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return  # unreadable leftovers: start afresh
        if any(arr.shape != (self.n_rows, meta["columns"][n]) for n, arr in arrays.items()):
            return
        self.columns = dict(meta["columns"])
        self._arrays = arrays
        self.rows_done = rows_done
        self.skipped = {int(k): v for k, v in skipped.items()}
        self.extra = {k[2:]: v for k, v in extra.items()}

    def allocate(self, columns: dict[str, int]) -> None:
        """Create the arrays (once); later calls must name the same columns."""
        if self._arrays:
            if columns != self.columns:
                raise MammodissectError(
                    f"cache at {self.directory.name} holds columns {self.columns}, not {columns}"
                )
            return
        self.columns = dict(columns)
        self._arrays = {
            name: np.lib.format.open_memmap(
                self.directory / f"{idx}.npy", mode="w+", dtype=np.float32, shape=(self.n_rows, c)
            )
            for idx, (name, c) in enumerate(columns.items())
        }
        meta = {"columns": self.columns, "n_rows": self.n_rows, "fingerprint": self.fingerprint}
        _atomic_write(self.directory / "meta.json", lambda h: h.write(json.dumps(meta).encode()))

    def array(self, name: str) -> np.memmap:
        """The memory-mapped array ``name``."""
        return self._arrays[name]

    def write(self, name: str, rows: np.ndarray, values: np.ndarray) -> None:
        """Store ``values`` at the given row indices of array ``name``."""
        self._arrays[name][rows] = values

    def commit(self, rows_done: int) -> None:
        """Flush the arrays, then record progress atomically (the resume point)."""
        for arr in self._arrays.values():
            arr.flush()
        self.rows_done = rows_done
        payload = {
            "rows_done": np.array(rows_done),
            "skipped": np.array(json.dumps(self.skipped)),
            **{f"x_{k}": v for k, v in self.extra.items()},
        }
        _atomic_write(self.directory / "state.npz", lambda h: np.savez(h, **payload))
