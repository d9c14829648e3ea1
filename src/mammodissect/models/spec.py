"""Model specs: ``scheme:name?key=value&key=value`` strings that name a model.

Examples: ``timm:resnet18?weights=/data/r18.pth``, ``torchvision:mobilenet_v2``,
``openclip:RN50?weights=/data/rn50.pt``, ``python:my_models.py:build?size=64``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import parse_qsl, urlencode

from mammodissect.errors import MammodissectError
from mammodissect.values import parse_value

__all__ = [
    "PACKAGE_REF",
    "PATH_OPTIONS",
    "RUN_REF",
    "ModelSpec",
    "content_digest",
    "file_identity",
    "parse_spec",
    "portable_path",
    "resolve_ref",
    "resolve_run_refs",
    "spec_files",
]

#: Options whose values are file paths: resolved, fingerprinted, and shown by name only.
PATH_OPTIONS = frozenset({"weights", "vocab", "map"})

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

    def _public_name(self) -> str:
        name = self.name
        if self.scheme in _PATH_NAMED_SCHEMES:
            name = Path(name).name
        elif self.scheme == "python":
            module, _, attr = name.rpartition(":")
            if module.endswith(".py") or os.sep in module:
                name = f"{Path(module).name}:{attr}"
        return name

    def public(self) -> str:
        """The spec with every path shown by its file name only (safe to write to outputs)."""
        name = self._public_name()
        opts = {
            k: (Path(v).name if k in PATH_OPTIONS else v) for k, v in sorted(self.options.items())
        }
        query = f"?{urlencode(opts, safe='/:,')}" if opts else ""
        return f"{self.scheme}:{name}{query}"

    def files(self) -> dict[str, Path]:
        """The files this spec names: its path options, and the name itself for schemes whose
        name is a checkpoint (``mammoclip:PATH``), keyed ``model``."""
        found = {
            k: Path(os.path.expanduser(v)) for k, v in self.options.items() if k in PATH_OPTIONS
        }
        if self.scheme in _PATH_NAMED_SCHEMES:
            found["model"] = Path(os.path.expanduser(self.name))
        return found

    def portable(self, run_dir: Path | None = None) -> str:
        """The spec as run.json records it: resolvable again later, yet with no absolute path.

        A bundled model keeps its bare name (``phantom-c-density``); a file inside an
        installed Python package becomes ``pkg:PACKAGE/PATH`` (relative to the package);
        a file in ``run_dir``'s parent folder or below becomes ``rundir:PATH`` (relative to
        the run directory); any other file keeps its name only, and must be named again to
        be reused (:func:`spec_files` records its content fingerprint to check that).
        """
        builtin = {full: name for name, full in BUILTIN_SPECS.items()}
        if self.text in builtin:
            return builtin[self.text]
        files = self.files()
        base = f"{self.scheme}:{self.name}"
        if base in builtin and not files:  # a bundled model with options
            return f"{builtin[base]}?{urlencode(sorted(self.options.items()))}"

        def shown(key: str, value: str) -> str:
            return portable_path(files[key], run_dir) or Path(value).name

        name = shown("model", self.name) if "model" in files else self._public_name()
        opts = {k: shown(k, v) if k in files else v for k, v in sorted(self.options.items())}
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


#: Prefixes of the file references :meth:`ModelSpec.portable` writes.
PACKAGE_REF, RUN_REF = "pkg:", "rundir:"


def _package_path(path: Path) -> str | None:
    """``PACKAGE/PATH`` for a file inside an importable package's folder, else None."""
    top = next((a for a in path.parents if (a / "__init__.py").is_file()), None)
    if top is None:
        return None
    while (top.parent / "__init__.py").is_file():
        top = top.parent
    try:
        found = importlib.util.find_spec(top.name)
    except (ImportError, ValueError):
        return None
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations or Path(locations[0]).resolve() != top:
        return None
    return f"{top.name}/{path.relative_to(top).as_posix()}"


def portable_path(path: Path, run_dir: Path | None = None) -> str | None:
    """A reference to ``path`` without an absolute path: ``pkg:PACKAGE/PATH`` for a file of an
    installed package, ``rundir:PATH`` for one at most one folder above ``run_dir`` (relative
    to it), else None (see :meth:`ModelSpec.portable`)."""
    if not path.exists():
        return None
    resolved = path.resolve()
    packaged = _package_path(resolved)
    if packaged is not None:
        return PACKAGE_REF + packaged
    if run_dir is None:
        return None
    try:
        relative = PurePath(os.path.relpath(resolved, Path(run_dir).resolve()))
    except ValueError:  # another drive on Windows
        return None
    if relative.parts[:2] == ("..", ".."):
        return None
    return RUN_REF + relative.as_posix()


def resolve_ref(value: str, run_dir: Path | None = None) -> str:
    """The path a :func:`portable_path` reference stands for; other values, and ``rundir:``
    references when no ``run_dir`` is given, are returned unchanged.

    Raises
    ------
    MammodissectError
        For a ``pkg:`` reference to a package that is not installed.
    """
    if value.startswith(PACKAGE_REF):
        package, _, rest = value[len(PACKAGE_REF) :].partition("/")
        try:
            found = importlib.util.find_spec(package) if package else None
        except (ImportError, ValueError):
            found = None
        if found is None or not found.submodule_search_locations:
            raise MammodissectError(
                f"{value!r} names a file of the Python package {package!r}, which is not "
                f"installed; pip install it, or give the file's path instead"
            )
        return str(Path(next(iter(found.submodule_search_locations))) / rest)
    if value.startswith(RUN_REF) and run_dir is not None:
        return str(Path(run_dir) / value[len(RUN_REF) :])
    return value


def resolve_run_refs(text: str, run_dir: Path) -> str:
    """A spec string read back from a run directory's run.json with its ``rundir:``
    references made paths (relative to ``run_dir``)."""
    spec = parse_spec(text)
    files = spec.files()
    if not any(str(v).startswith(RUN_REF) for v in [*spec.options.values(), spec.name]):
        return text
    options = {k: resolve_ref(v, run_dir) if k in files else v for k, v in spec.options.items()}
    name = resolve_ref(spec.name, run_dir) if "model" in files else spec.name
    query = f"?{urlencode(options, safe='/:,')}" if options else ""
    return f"{spec.scheme}:{name}{query}"


def spec_files(spec: ModelSpec, run_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """What run.json records of a spec's files: per file (``weights``, ``vocab``, ``model``)
    its name and portable reference, and for a file with no reference (located by name
    only) the SHA-256 of its content, so that a spec given again can be checked."""
    facts: dict[str, dict[str, Any]] = {}
    for key, path in spec.files().items():
        ref = portable_path(path, run_dir)
        facts[key] = {"name": path.name, "ref": ref}
        if ref is None and path.is_file():
            facts[key]["sha256"] = content_digest(path)
    return facts


def content_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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

#: Models that need no path: a bare name (options may follow after ``?``) stands for a full
#: spec. ``phantom-c-TASK`` are the phantom study's C variants (phantom-clip's encoder
#: fine-tuned by ``mammodissect phantom train-target``); ``annotations`` is the dissector that
#: scores from the probe's own annotations.
BUILTIN_SPECS = {
    "phantom-clip": "phantom-clip:bundled",
    "annotations": "annotations:probe",
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
    if isinstance(text, str):  # a bare name, with or without options: annotations?map=m.csv
        head, mark, query = text.strip().partition("?")
        if head in BUILTIN_SPECS:
            text = BUILTIN_SPECS[head] + mark + query
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
    # package references (pkg:PACKAGE/PATH, as run.json records them) become paths
    options = {k: resolve_ref(v) if k in PATH_OPTIONS else v for k, v in options.items()}
    name = body.strip()
    if scheme in _PATH_NAMED_SCHEMES:
        name = resolve_ref(name)
    return ModelSpec(scheme=scheme, name=name, options=options, text=text)
