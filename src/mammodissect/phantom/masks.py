"""A compact, read-only mapping of concept -> full-size bool mask.

Each mask is kept as its bounding box and the bits of that crop (``numpy.packbits``), about
1/8 of a byte per box pixel; indexing returns a fresh ``(H, W)`` bool array. Two thousand
phantoms with a dozen masks each then take tens of megabytes instead of gigabytes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

__all__ = ["MaskSet"]


class MaskSet(Mapping[str, np.ndarray]):
    """Concept -> bool mask of shape :attr:`shape`; only non-empty masks are kept.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)`` of every mask.
    masks : mapping of str to numpy.ndarray
        Full-size bool arrays; empty ones are dropped, order is kept.
    """

    def __init__(self, shape: tuple[int, int], masks: Mapping[str, np.ndarray]) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self._store: dict[str, tuple[int, int, int, int, bytes]] = {}
        for concept, mask in masks.items():
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self.shape:
                raise ValueError(f"mask '{concept}' has shape {mask.shape}, not {self.shape}")
            rows = np.flatnonzero(mask.any(axis=1))
            if rows.size == 0:
                continue
            cols = np.flatnonzero(mask.any(axis=0))
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            bits = np.packbits(mask[y0:y1, x0:x1], axis=None).tobytes()
            self._store[concept] = (y0, y1, x0, x1, bits)

    def __getitem__(self, concept: str) -> np.ndarray:
        """The full-size bool mask of ``concept`` (a new array)."""
        y0, y1, x0, x1, bits = self._store[concept]
        crop = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=(y1 - y0) * (x1 - x0))
        out = np.zeros(self.shape, dtype=bool)
        out[y0:y1, x0:x1] = crop.reshape(y1 - y0, x1 - x0).view(bool)
        return out

    def __iter__(self) -> Iterator[str]:
        """Concepts in drawing order."""
        return iter(self._store)

    def __len__(self) -> int:
        """Number of (non-empty) masks."""
        return len(self._store)

    def __eq__(self, other: object) -> bool:
        """Same concepts, in the same order, with the same pixels."""
        if isinstance(other, MaskSet):
            return self.shape == other.shape and list(self._store.items()) == list(
                other._store.items()
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def box(self, concept: str) -> tuple[int, int, int, int]:
        """Bounding box ``(ymin, ymax, xmin, xmax)`` of a mask, end-exclusive."""
        y0, y1, x0, x1, _ = self._store[concept]
        return (y0, y1, x0, x1)

    def area(self, concept: str) -> int:
        """Number of pixels of a mask."""
        y0, y1, x0, x1, bits = self._store[concept]
        crop = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=(y1 - y0) * (x1 - x0))
        return int(crop.sum())

    def nbytes(self) -> int:
        """Bytes held by the packed masks."""
        return sum(len(entry[4]) for entry in self._store.values())

    def __repr__(self) -> str:
        """Concepts and areas."""
        return f"MaskSet({self.shape}, {list(self._store)!r})"
