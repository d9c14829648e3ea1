"""Reading state dicts safely and loading them strictly."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
from torch import nn

from mammodissect.errors import MammodissectError

__all__ = ["load_weights", "read_state_dict"]

log = logging.getLogger(__name__)

_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
_LIST_LIMIT = 6


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a torch checkpoint, without trusting it.

    Torch files are read with ``weights_only=True`` (no arbitrary code runs) and
    memory-mapped when their format allows. A checkpoint that wraps the weights
    (``{"state_dict": ...}``, ``{"model": ...}``) is unwrapped, and one leading
    ``module.`` prefix (from DataParallel) is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise MammodissectError(f"weights file {path.name!r} not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = _torch_load(path)
    state = _unwrap(state, path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise _unreadable(path, err) from err
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as err:
        raise _unreadable(path, err) from err
    try:  # legacy (non-zip) checkpoints cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError) as err:
        raise _unreadable(path, err) from err


def _unreadable(path: Path, err: Exception) -> MammodissectError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return MammodissectError(
        f"cannot read weights file {path.name!r} as a plain state dict ({first}); "
        "save the weights with torch.save(model.state_dict(), path) or as .safetensors"
    )


def _unwrap(state: object, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if (
            isinstance(state, dict)
            and state
            and all(isinstance(v, torch.Tensor) for v in state.values())
        ):
            return dict(state)
        if not isinstance(state, dict):
            break
        inner = next((state[k] for k in _CONTAINER_KEYS if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    raise MammodissectError(
        f"weights file {path.name!r} holds no state dict of tensors "
        f"(looked at the top level and under {', '.join(_CONTAINER_KEYS)})"
    )


def _short(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _LIST_LIMIT else "")


def load_weights(module: nn.Module, path: Path, *, what: str = "the model") -> None:
    """Load the state dict in ``path`` into ``module`` strictly.

    Raises
    ------
    MammodissectError
        Naming the file and the missing, unexpected and mis-shaped keys when the
        weights do not fit the architecture exactly.
    """
    state = read_state_dict(path)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_short(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_short(unexpected)})")
    if shapes:
        problems.append(f"{len(shapes)} keys of the wrong shape ({_short(shapes)})")
    if problems:
        raise MammodissectError(
            f"weights file {Path(path).name!r} does not fit {what}: {'; '.join(problems)}. "
            "Check the architecture name and its options (e.g. num_classes)"
        )
    module.load_state_dict(state, strict=True)
    log.info("loaded %d tensors from %s into %s (strict)", len(state), Path(path).name, what)
