"""The files of a fine-tuning run directory, each replaced atomically.

``last.pt`` (the state to resume from), ``metrics.json`` (what the run did and how well) and
the best epoch's classifier: ``classifier.pth`` in the Mammo-CLIP downstream layout (read by
``mammoclip-classifier:PATH``) or ``classifier.safetensors`` + ``classifier.json`` (read by
``classifier:PATH``).
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mammodissect.errors import MammodissectError

__all__ = ["RunFiles", "jsonable", "settings_changes"]

_FILES = ("last.pt", "metrics.json", "classifier.pth", "classifier.safetensors", "classifier.json")


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists and NaN or infinite floats as None (valid JSON)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def settings_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``key old -> new`` for every setting that differs."""
    keys = [*old, *(k for k in new if k not in old)]
    return [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class RunFiles:
    """A fine-tuning run directory."""

    def __init__(self, out: str | os.PathLike[str]):
        self.out = Path(out)
        self.last = self.out / "last.pt"
        self.metrics = self.out / "metrics.json"
        self.pth = self.out / "classifier.pth"
        self.safetensors = self.out / "classifier.safetensors"

    def make(self) -> None:
        """Create the directory."""
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise MammodissectError(
                f"cannot create output folder {self.out.name!r}: {err}"
            ) from err

    def read_metrics(self) -> dict[str, Any] | None:
        """``metrics.json``, or None when there is none."""
        if not self.metrics.is_file():
            return None
        try:
            return json.loads(self.metrics.read_text())
        except ValueError as err:
            raise MammodissectError(
                f"{self.metrics.name!r} in {self.out.name!r} is not valid JSON ({err}); "
                "pass --overwrite to start again"
            ) from err

    def read_last(self) -> dict[str, Any] | None:
        """``last.pt`` (on the CPU), or None when there is none."""
        if not self.last.is_file():
            return None
        try:
            return torch.load(self.last, map_location="cpu", weights_only=True)
        except Exception as err:
            raise MammodissectError(
                f"cannot read {self.last.name!r} in {self.out.name!r} ({type(err).__name__}); "
                "pass --overwrite to start again"
            ) from err

    def check(self, settings: dict[str, Any], overwrite: bool) -> None:
        """Refuse to mix runs: an earlier run with other settings is an error, or, with
        ``overwrite``, its files are removed."""
        if overwrite:
            self.clear()
            return
        earlier = self.read_metrics() or self.read_last()
        if earlier is None:
            return
        settings = json.loads(json.dumps(jsonable(settings)))
        changes = settings_changes(earlier.get("settings") or {}, settings)
        if changes:
            raise MammodissectError(
                f"output folder {self.out.name!r} holds a fine-tuning run with other settings "
                f"({'; '.join(changes)}); rerun with the same settings to resume it, or choose "
                "another --out, or pass --overwrite to replace it"
            )

    def clear(self) -> None:
        """Remove the run's own files (nothing else in the folder)."""
        for name in _FILES:
            (self.out / name).unlink(missing_ok=True)

    def write_last(self, state: dict[str, Any]) -> None:
        """Replace ``last.pt``."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        _replace(self.last, buffer.getvalue())

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        """Replace ``metrics.json``."""
        text = json.dumps(jsonable(metrics), indent=2, default=str) + "\n"
        _replace(self.metrics, text.encode())

    def write_mammoclip_classifier(
        self,
        model: nn.Module,
        *,
        epoch: int,
        metrics: dict[str, Any],
        config: dict[str, Any],
        facts: dict[str, Any],
    ) -> Path:
        """Replace ``classifier.pth``: ``{"model": state, "epoch": ..., metric: value, ...,
        "config": ...}``, the layout of Mammo-CLIP's downstream classifiers."""
        state = {
            k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
            for k, v in model.state_dict().items()
        }
        numbers = {
            k: float(v)
            for k, v in metrics.items()
            if k != "epoch"
            and isinstance(v, int | float)
            and not isinstance(v, bool)
            and math.isfinite(v)
        }
        checkpoint = {"model": state, "epoch": int(epoch), **numbers, "config": config, **facts}
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        _replace(self.pth, buffer.getvalue())
        return self.pth
