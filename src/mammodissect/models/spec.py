"""Model specs: ``scheme:name?key=value&key=value`` strings that name a model.

Examples: ``timm:resnet18?weights=/data/r18.pth``, ``torchvision:mobilenet_v2``,
``openclip:RN50?weights=/data/rn50.pt``, ``python:my_models.py:build?size=64``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from mammodissect.errors import MammodissectError
from mammodissect.values import parse_value

__all__ = ["PATH_OPTIONS", "ModelSpec", "file_identity", "parse_spec"]

#: Options whose values are file paths: resolved, fingerprinted, and shown by name only.
PATH_OPTIONS = frozenset({"weights", "vocab"})

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes
    ----------
    scheme:
        The family, e.g. ``timm`` (the text before the first ``:``).
    name:
        What the family should build, e.g. ``resnet18`` or ``module:callable``.
    options:
        The ``?key=value`` options, as strings.
    text:
        The spec as the user wrote it.
    """

    scheme: str
    name: str
    options: dict[str, str] = field(default_factory=dict)
    text: str = ""

    def flag(self, key: str, default: bool = False) -> bool:
        """Read a boolean option (``1/0``, ``true/false``, ``yes/no``, ``on/off``)."""
        if key not in self.options:
            return default
        value = self.options[key].strip().lower()
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise MammodissectError(
            f"option {key}={self.options[key]!r} in spec {self.text!r} must be 1 or 0"
        )

    def path(self, key: str) -> Path | None:
        """The file named by a path option, checked to exist; None when absent."""
        if key not in self.options:
            return None
        path = Path(os.path.expanduser(self.options[key]))
        if not path.exists():
            raise MammodissectError(
                f"{key} file {path.name!r} given in spec {self.public()!r} does not exist; "
                "check the path"
            )
        return path

    def extra_options(self, reserved: set[str] | frozenset[str]) -> dict[str, Any]:
        """Options not in ``reserved``, with numbers and booleans converted (model kwargs)."""
        return {k: parse_value(v) for k, v in self.options.items() if k not in reserved}

    def public(self) -> str:
        """The spec with every path shown by its file name only (safe to write to outputs)."""
        name = self.name
        if self.scheme in _PATH_NAMED_SCHEMES:
            name = Path(name).name
        elif self.scheme == "python":
            module, _, attr = name.rpartition(":")
            if module.endswith(".py") or os.sep in module:
                name = f"{Path(module).name}:{attr}"
        opts = {
            k: (Path(v).name if k in PATH_OPTIONS else v) for k, v in sorted(self.options.items())
        }
        query = f"?{urlencode(opts, safe='/:,')}" if opts else ""
        return f"{self.scheme}:{name}{query}"

    def identity(self) -> dict[str, Any]:
        """What identifies this model's weights for cache fingerprints (no absolute paths)."""
        ident: dict[str, Any] = {"spec": self.public()}
        files = {k: self.options[k] for k in PATH_OPTIONS if k in self.options}
        if self.scheme in _PATH_NAMED_SCHEMES:
            files["model"] = self.name
        for key, value in sorted(files.items()):
            ident[key] = file_identity(Path(os.path.expanduser(value)))
        return ident


#: Schemes whose name is itself a file path (a checkpoint), as in ``mammoclip:/data/b5.tar``.
_PATH_NAMED_SCHEMES = frozenset({"mammoclip", "mammoclip-classifier", "classifier"})


def file_identity(path: Path) -> dict[str, Any]:
    """Name, size and modification time of a file (a cheap stand-in for its hash)."""
    if not path.exists():
        return {"name": path.name, "missing": True}
    if path.is_dir():
        return {
            "name": path.name,
            "files": [file_identity(p) for p in sorted(path.iterdir()) if p.is_file()],
        }
    stat = path.stat()
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


_DATA = Path(__file__).parent / "data"

#: The phantom study's tasks with a bundled C variant, as in the study: density, mass,
#: (suspicious) calcification and BI-RADS (``phantom.targets.C_TASKS`` maps them to columns).
PHANTOM_C_TASKS: tuple[str, ...] = ("density", "mass", "calcification", "birads")

#: Models that need no path: a bare name stands for a full spec. ``phantom-c-TASK`` are the
#: phantom study's C variants (phantom-clip's encoder fine-tuned by ``mammodissect phantom
#: train-target``).
BUILTIN_SPECS = {
    "phantom-clip": "phantom-clip:bundled",
    **{
        f"phantom-c-{task}": f"classifier:{_DATA / f'phantom_c_{task}.safetensors'}"
        for task in PHANTOM_C_TASKS
    },
}


def parse_spec(text: str) -> ModelSpec:
    """Parse ``scheme:name?key=value`` into a :class:`ModelSpec`.

    Raises
    ------
    MammodissectError
        When the text has no scheme or no name.
    """
    if isinstance(text, str) and text.strip() in BUILTIN_SPECS:
        text = BUILTIN_SPECS[text.strip()]
    if not isinstance(text, str) or ":" not in text:
        raise MammodissectError(
            f"model spec {text!r} has no scheme; write it as SCHEME:NAME, "
            "for example timm:resnet18 or torchvision:mobilenet_v2"
        )
    scheme, _, rest = text.partition(":")
    body, _, query = rest.partition("?")
    scheme = scheme.strip().lower()
    if not scheme or not body.strip():
        raise MammodissectError(f"model spec {text!r} needs both a scheme and a name")
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as err:
        raise MammodissectError(
            f"cannot read the options {query!r} of spec {text!r}: "
            "write them as ?key=value&key=value"
        ) from err
    return ModelSpec(scheme=scheme, name=body.strip(), options=options, text=text)
