"""Reading foreign training checkpoints without trusting them.

Research checkpoints (Mammo-CLIP's ``.tar`` files, downstream classifiers'
``.pth`` files) pickle more than tensors: configuration objects (omegaconf),
``defaultdict`` caches, numpy arrays of predictions. ``torch.load(weights_only=True)``
refuses some of these, and an unrestricted load would run whatever the pickle
names. :func:`load_checkpoint` unpickles through an allow-list instead: tensors,
plain containers and numpy arrays are rebuilt; omegaconf classes become inert
:class:`ConfigNode` placeholders (no omegaconf needed, no foreign code run);
anything else is refused with its name. Zip-format files are memory-mapped.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from mammodissect.errors import MammodissectError

__all__ = ["ConfigNode", "describe_state_keys", "load_checkpoint", "plain"]

_ALLOWED: dict[str, frozenset[str]] = {
    "torch._utils": frozenset(
        {
            "_rebuild_tensor",
            "_rebuild_tensor_v2",
            "_rebuild_tensor_v3",
            "_rebuild_parameter",
            "_rebuild_parameter_with_state",
            "_rebuild_device_tensor_from_numpy",
        }
    ),
    "torch._tensor": frozenset({"_rebuild_from_type_v2"}),
    "torch": frozenset(
        {
            "Size",
            "Tensor",
            "device",
            "bfloat16",
            "float16",
            "float32",
            "float64",
            "int8",
            "int16",
            "int32",
            "int64",
            "uint8",
            "bool",
            "complex64",
            "complex128",
            "strided",
        }
    ),
    "collections": frozenset({"OrderedDict", "defaultdict", "Counter", "deque"}),
    "builtins": frozenset(
        {
            "dict",
            "list",
            "tuple",
            "set",
            "frozenset",
            "int",
            "float",
            "bool",
            "str",
            "bytes",
            "bytearray",
            "complex",
            "slice",
            "object",
            "NoneType",
        }
    ),
    "_codecs": frozenset({"encode"}),
    "numpy": frozenset({"ndarray", "dtype"}),
    "numpy.core.multiarray": frozenset({"_reconstruct", "scalar"}),
    "numpy._core.multiarray": frozenset({"_reconstruct", "scalar"}),
}


class ConfigNode:
    """An inert stand-in for a configuration object (omegaconf's) found in a pickle.

    It records the class it replaces and the state the pickle gave it, and does
    nothing else; :func:`plain` turns a tree of them into dicts and lists.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.__dict__.get('_class', '?')}>"


_ANY = ConfigNode  # typing.Any inside omegaconf metadata: a harmless class object


def _placeholder(module: str, name: str) -> type:
    return type(name, (ConfigNode,), {"_class": f"{module}.{name}"})


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 names (__builtin__)
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if module == "omegaconf" or module.startswith("omegaconf."):
            return _placeholder(module, name)
        if (module, name) == ("typing", "Any"):
            return _ANY
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: it is not a tensor, container or configuration "
            "class, and unpickling it could run code"
        )


def _pickle_module() -> types.ModuleType:
    module = types.ModuleType("mammodissect_restricted_pickle")
    module.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]
    module.__dict__["UnpicklingError"] = pickle.UnpicklingError
    return module


def load_checkpoint(path: Path) -> Any:
    """Unpickle a torch checkpoint through the allow-list, memory-mapped when possible.

    Raises
    ------
    MammodissectError
        Naming the file and the refused class (or the reading problem).
    """
    path = Path(path)
    if not path.is_file():
        raise MammodissectError(f"checkpoint {path.name!r} not found")
    module = _pickle_module()
    for mmap in (True, False):
        try:
            # weights_only=False only because a custom pickle_module is given: every class
            # the file names still passes through _RestrictedUnpickler.find_class.
            return torch.load(
                path, map_location="cpu", pickle_module=module, weights_only=False, mmap=mmap
            )
        except RuntimeError as err:
            if mmap and "mmap" in str(err):
                continue  # a legacy (non-zip) file cannot be memory-mapped
            raise _refused(path, err) from err
        except (pickle.UnpicklingError, EOFError, OSError, ValueError, AttributeError) as err:
            raise _refused(path, err) from err
    raise AssertionError("unreachable")


def _refused(path: Path, err: Exception) -> MammodissectError:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return MammodissectError(f"cannot load checkpoint {path.name!r} safely: {text}")


def plain(obj: Any) -> Any:
    """Turn a checkpoint's configuration (with :class:`ConfigNode` placeholders) into
    JSON-able dicts, lists and scalars; tensors and arrays become short descriptions."""
    if isinstance(obj, ConfigNode):
        state = obj.__dict__.get("_state")
        if isinstance(state, dict):
            if "_content" in state:
                return plain(state["_content"])
            if "_val" in state:
                return plain(state["_val"])
            return {str(k): plain(v) for k, v in state.items() if not str(k).startswith("_")}
        return None
    if isinstance(obj, type):
        return getattr(obj, "_class", obj.__name__)
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return f"tensor{tuple(obj.shape)}"
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return f"array{tuple(obj.shape)}"
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return repr(obj)


def describe_state_keys(keys: Iterable[str]) -> str:
    """A guess, from state-dict keys, at what kind of checkpoint this is (for error messages)."""
    keys = list(keys)
    has = lambda prefix: any(k.startswith(prefix) for k in keys)  # noqa: E731
    if has("image_encoder.") and has("text_encoder."):
        return "a Mammo-CLIP vision-language checkpoint (use mammoclip:PATH)"
    if has("image_encoder.") and has("classifier."):
        if has("image_encoder._blocks."):
            return "a Mammo-CLIP downstream classifier (use mammoclip-classifier:PATH)"
        return "a classifier written by mammodissect finetune (use classifier:PATH)"
    if has("visual.") and (has("transformer.") or has("text.")):
        return "an open_clip / CLIP checkpoint (use openclip:NAME?weights=PATH)"
    if has("_conv_stem.") and has("_blocks."):
        return "an EfficientNet in efficientnet_pytorch naming (use efficientnet:NAME?weights=PATH)"
    if has("features.") or has("layer1.") or has("conv_stem.") or has("blocks."):
        return "a torchvision or timm model (use timm:NAME or torchvision:NAME with ?weights=PATH)"
    sample = ", ".join(keys[:3])
    return f"an unrecognised state dict (first keys: {sample})" if keys else "an empty state dict"
