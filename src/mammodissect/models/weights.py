"""Reading state dicts safely and loading them strictly."""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path

import torch
from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.models.checkpoint import describe_state_keys

__all__ = [
    "check_state",
    "load_state",
    "load_weights",
    "read_state_dict",
    "strip_prefix",
    "write_atomic",
    "write_safetensors",
]

log = logging.getLogger(__name__)

_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")
_LIST_LIMIT = 6


def write_safetensors(state: dict[str, torch.Tensor], path: Path) -> Path:
    """Write ``state`` (contiguous tensors) to the ``.safetensors`` file ``path``, whole or not
    at all (a kill mid-write leaves any earlier file as it was), with the permissions any new
    file of the user gets (the umask), not the owner-only mode of safetensors' ``save_file``:
    weights meant for sharing, such as the package data, stay readable by others."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, save(state))
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a hidden temporary file beside it, then replace:
    readers see the old file or the new one, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
    state: object  # a mapping of tensors, or what a pickle held (_unwrap checks it)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:
            raise MammodissectError(
                f"weights file {path.name!r} is not a readable .safetensors file "
                f"({type(err).__name__}: damaged, truncated or misnamed). {_SAVE_HINT}"
            ) from None
    else:
        state = _torch_load(path)
    return strip_prefix(_unwrap(state, path), "module.")


def strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key when all keys carry it (DataParallel's ``module.``)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _torch_load(path: Path) -> object:
    if not _looks_like_torch_file(path):
        raise MammodissectError(
            f"weights file {path.name!r} is not a checkpoint: it is neither a file "
            f"torch.save wrote (a zip archive or a pickle) nor .safetensors. {_SAVE_HINT}"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise _unreadable(path, err) from err
    except Exception as err:
        raise _unreadable(path, err) from err
    try:  # legacy (non-zip) checkpoints cannot be memory-mapped
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise _unreadable(path, err) from err


_SAVE_HINT = (
    "Save the weights with torch.save(model.state_dict(), path) or as .safetensors "
    "(a Mammo-CLIP checkpoint is read by mammoclip:PATH or mammoclip-classifier:PATH)"
)


def _looks_like_torch_file(path: Path) -> bool:
    """Whether the file starts as torch.save's output does: a zip archive (``PK``) or a
    pickle (protocol 2 and newer start with byte 0x80)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(2)
    except OSError as err:
        raise MammodissectError(
            f"cannot read weights file {path.name!r} ({err.strerror or err})"
        ) from None
    return head[:2] == b"PK" or head[:1] == b"\x80"


def _unreadable(path: Path, err: Exception) -> MammodissectError:
    """The error for a torch file that ``weights_only`` loading refuses or cannot read. Never
    relays PyTorch's advice to load with ``weights_only=False`` (that runs the file's code)."""
    if isinstance(err, pickle.UnpicklingError) or "Weights only load failed" in str(err):
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        what = refused.group(1) if refused else "or pickle content torch.save does not write"
        return MammodissectError(
            f"weights file {path.name!r} holds pickled Python objects besides tensors "
            f"({what}), which mammodissect never unpickles. {_SAVE_HINT}"
        )
    return MammodissectError(
        f"weights file {path.name!r} is not a readable checkpoint ({type(err).__name__}: it "
        f"is damaged, truncated or not torch.save's output). {_SAVE_HINT}"
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


def check_state(module: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """The problems (missing, unexpected, mis-shaped keys) that keep ``state`` from ``module``."""
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
    return problems


def load_state(
    module: nn.Module,
    state: dict[str, torch.Tensor],
    *,
    source: str,
    what: str,
    hint: str = "",
    assign: bool = False,
) -> None:
    """Load ``state`` into ``module`` strictly, or raise one message naming every problem.

    Parameters
    ----------
    source:
        The file name the state came from (for the message).
    what:
        What the module is (for the message).
    hint:
        What to check, appended to the message.
    assign:
        Adopt the given tensors instead of copying them (for a module built on the
        ``meta`` device: no random initialisation, no second copy in memory).
    """
    problems = check_state(module, state)
    if problems:
        own = module.state_dict()
        looks = ""
        if not any(k in own for k in state):  # nothing in common: probably another family
            looks = f"; the file looks like {describe_state_keys(state)}"
        raise MammodissectError(
            f"weights file {source!r} does not fit {what}: {'; '.join(problems)}{looks}. "
            + (hint or "Check the architecture name and its options (e.g. num_classes)")
        )
    module.load_state_dict(state, strict=True, assign=assign)
    log.info("loaded %d tensors from %s into %s (strict)", len(state), source, what)


def load_weights(module: nn.Module, path: Path, *, what: str = "the model") -> None:
    """Load the state dict in ``path`` into ``module`` strictly.

    Raises
    ------
    MammodissectError
        Naming the file and the missing, unexpected and mis-shaped keys when the
        weights do not fit the architecture exactly.
    """
    load_state(module, read_state_dict(path), source=Path(path).name, what=what)
