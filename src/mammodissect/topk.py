"""A running top-k per unit over a stream of image rows, with deterministic ties."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["RunningTopK"]


class RunningTopK:
    """The ``k`` highest values of each column seen so far, with their row indices.

    Rows must arrive in increasing index order. Ties keep the lower row index
    first, so the result equals a stable descending sort of the full matrix,
    however the rows were batched and whether or not the stream was resumed.
    """

    def __init__(self, k: int, columns: int):
        self.k = k
        self.values = torch.empty(0, columns)
        self.indices = torch.empty(0, columns, dtype=torch.long)

    def update(self, values: torch.Tensor, rows: torch.Tensor) -> None:
        """Merge a batch: ``values`` (B, columns) observed at image ``rows`` (B,)."""
        values = values.detach().float().cpu()
        rows = rows.detach().long().cpu().view(-1, 1).expand_as(values)
        merged_v = torch.cat([self.values, values])
        merged_i = torch.cat([self.indices, rows])
        order = torch.sort(merged_v, dim=0, descending=True, stable=True).indices[: self.k]
        self.values = torch.gather(merged_v, 0, order)
        self.indices = torch.gather(merged_i, 0, order)

    def state(self) -> dict[str, np.ndarray]:
        """Arrays to persist alongside the rows they summarise."""
        return {"values": self.values.numpy(), "indices": self.indices.numpy()}

    @classmethod
    def from_state(cls, k: int, state: dict[str, np.ndarray]) -> RunningTopK:
        """Rebuild from :meth:`state`."""
        top = cls(k, state["values"].shape[1])
        top.values = torch.from_numpy(np.array(state["values"], dtype=np.float32))
        top.indices = torch.from_numpy(np.array(state["indices"], dtype=np.int64))
        return top

    @classmethod
    def from_matrix(
        cls, matrix: np.ndarray, k: int, rows: np.ndarray, chunk: int = 4096
    ) -> RunningTopK:
        """Top-k over the given rows of a (possibly memory-mapped) matrix, chunk by chunk."""
        top = cls(k, matrix.shape[1])
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            top.update(
                torch.from_numpy(np.asarray(matrix[part], dtype=np.float32)), torch.from_numpy(part)
            )
        return top
