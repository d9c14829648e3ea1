"""On-disk stores keyed by a fingerprint, that survive interruption.

A :class:`RowStore` holds named N x C float32 arrays (memory-mapped ``.npy``
files) filled in probe order, plus a small state file (rows done, skipped
rows, extra arrays such as running top-k) replaced atomically after every
batch. A rerun with the same fingerprint reuses a complete store and resumes a
partial one from its last finished batch. :func:`cached_array` keeps one whole
array (a concept set's text embeddings), :class:`PreparedImageCache` the
preprocessed images.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mammodissect.errors import MammodissectError

__all__ = ["PreparedImageCache", "RowStore", "cached_array", "fingerprint"]

log = logging.getLogger(__name__)

_FORMAT = 1


def fingerprint(parts: dict[str, Any]) -> str:
    """A stable hex digest of a JSON-able mapping."""
    text = json.dumps({"format": _FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def cached_array(
    root: str | os.PathLike[str], kind: str, parts: dict[str, Any], compute: Callable[[], Any]
) -> np.ndarray:
    """``compute()``'s array, kept as ``root/kind/FINGERPRINT.npy`` and read back by any later
    call with the same ``kind`` and ``parts`` (what the array depends on, JSON-able).

    The file is written atomically; an unreadable one is computed and written again.
    """
    path = Path(root) / kind / f"{fingerprint({'kind': kind, **parts})[:24]}.npy"
    if path.is_file():
        try:
            return np.load(path)
        except (OSError, ValueError) as err:
            log.warning("%s/%s is unreadable (%s); computing it again", kind, path.name, err)
    array = np.ascontiguousarray(np.asarray(compute()))
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda handle: np.save(handle, array))
    return array


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

    def log_rows(self, facts: dict[int, dict[str, Any]]) -> None:
        """Append per-row facts (reading facts, geometry) to the store's row log."""
        if not facts:
            return
        with open(self.directory / "rows.jsonl", "a", encoding="utf-8") as handle:
            for row, value in facts.items():
                handle.write(json.dumps({"row": int(row), **value}, default=str) + "\n")

    def read_rows(self) -> dict[int, dict[str, Any]]:
        """Per-row facts of the committed rows (the last entry of a row wins)."""
        path = self.directory / "rows.jsonl"
        out: dict[int, dict[str, Any]] = {}
        if not path.exists():
            return out
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interruption
            row = int(entry.pop("row"))
            if row < self.rows_done:
                out[row] = entry
        return out

    def commit(self, rows_done: int) -> None:
        """Flush the arrays, then record progress atomically (the resume point)."""
        for arr in self._arrays.values():
            arr.flush()
        self.rows_done = rows_done
        payload: dict[str, Any] = {
            "rows_done": np.array(rows_done),
            "skipped": np.array(json.dumps(self.skipped)),
            **{f"x_{k}": v for k, v in self.extra.items()},
        }
        _atomic_write(self.directory / "state.npz", lambda h: np.savez(h, **payload))


class PreparedImageCache:
    """Decoded-and-prepared probe images on disk, shared by every run and model.

    An entry is keyed by the image file (absolute path, size, modification time)
    and by the geometric part of a recipe (``recipe.prepare_key()``), so models that
    differ only in normalisation share it. Each entry is a ``.npy`` array plus a
    small ``.json`` of its geometry and reading facts; both are written atomically.
    """

    def __init__(self, root: Path):
        self.root = Path(root) / "images"

    def _paths(self, source: Path, recipe_key: dict[str, Any]) -> tuple[Path, Path]:
        stat = source.stat()
        recipe = fingerprint(recipe_key)[:16]
        item = fingerprint(
            {"path": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        )[:32]
        folder = self.root / recipe / item[:2]
        return folder / f"{item}.npy", folder / f"{item}.json"

    def get(self, source: Path, recipe_key: dict[str, Any]) -> tuple[np.ndarray, dict] | None:
        """The cached array and facts, or None."""
        array_path, facts_path = self._paths(source, recipe_key)
        if not (array_path.exists() and facts_path.exists()):
            return None
        try:
            return np.load(array_path, allow_pickle=False), json.loads(facts_path.read_text())
        except (OSError, ValueError):
            return None

    def put(self, source: Path, recipe_key: dict[str, Any], array: np.ndarray, facts: dict) -> None:
        """Store an entry (silently skipped when the cache folder is not writable)."""
        array_path, facts_path = self._paths(source, recipe_key)
        try:
            array_path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(array_path, lambda h: np.save(h, array, allow_pickle=False))
            text = json.dumps(facts, default=str).encode()
            _atomic_write(facts_path, lambda h: h.write(text))
        except OSError:
            return
