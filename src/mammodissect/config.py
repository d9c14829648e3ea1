"""One run configuration, with every default in one place.

The same names serve the command line (``--batch-size``), the YAML config
file (``batch_size:``) and the Python API (``dissect(batch_size=...)``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mammodissect.concepts import check_prompts
from mammodissect.concepts.core import check_rule
from mammodissect.errors import MammodissectError
from mammodissect.hooks import POOLINGS
from mammodissect.models.spec import parse_spec
from mammodissect.options import field_names, unknown_key
from mammodissect.precision import PRECISIONS
from mammodissect.probe.images import VOI_CHOICES

__all__ = ["RunConfig", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$MAMMODISSECT_CACHE_DIR``, else ``$XDG_CACHE_HOME/mammodissect``, else ``~/.cache/...``."""
    if os.environ.get("MAMMODISSECT_CACHE_DIR"):
        return Path(os.environ["MAMMODISSECT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mammodissect"


@dataclass
class RunConfig:
    """Everything a dissection run needs; see ``mammodissect run --help`` for each field.

    ``target``, ``dissector``, ``probe`` and ``concepts`` are specs or paths on
    the command line; the Python API also takes loaded objects for them.
    """

    target: Any
    dissector: Any
    probe: Any
    concepts: Any
    layers: str | list[str]
    out: str | None = None
    prompts: list[str] = field(default_factory=list)
    lowercase: bool = False
    duplicates: str = "first"
    pooling: str = "mean"
    #: Pearson correlation over the probe images: chosen by the evidence of issue 17 (README,
    #: "Which similarity function?"); ``soft_wpmi`` is the published method's choice.
    similarity: str = "correlation"
    similarity_params: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    device: str = "auto"
    precision: str = "fp32"
    channels_last: bool = False
    preprocess: str | None = None
    dissector_preprocess: str | None = None
    image_size: str | int | None = None
    dissector_image_size: str | int | None = None
    top_concepts: int = 10
    top_images: int = 5
    cache_dir: str | None = None
    cache_images: bool = True
    voi: str = "auto"
    strict: bool = False
    anonymize_ids: bool = False
    detectability: str | None = None
    min_auroc: float | None = None
    calibrated: bool = False
    num_workers: int = 2
    seed: int = 0
    quiet: bool = False

    def __post_init__(self) -> None:
        for name in ("target", "dissector", "probe", "concepts", "layers"):
            if getattr(self, name) in (None, "", []):
                raise MammodissectError(f"missing {name}: give --{name} (or `{name}:` in --config)")
        if self.pooling not in POOLINGS:
            raise MammodissectError(
                f"pooling {self.pooling!r} unknown; choose one of {', '.join(POOLINGS)}"
            )
        for name in ("batch_size", "top_concepts", "top_images"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise MammodissectError(f"{name} must be a whole number >= 1, got {value!r}")
        if not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise MammodissectError(f"num_workers must be >= 0, got {self.num_workers!r}")
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise MammodissectError(f"device {self.device!r} unknown; use auto, cpu or cuda[:N]")
        if self.precision not in PRECISIONS:
            raise MammodissectError(
                f"precision {self.precision!r} unknown; use {', '.join(PRECISIONS)}"
            )
        if self.precision == "fp16" and self.device == "cpu":
            raise MammodissectError(
                "precision 'fp16' needs a GPU; with --device cpu use fp32 (or bf16, slower)"
            )
        if not isinstance(self.channels_last, bool):
            raise MammodissectError(
                f"channels_last must be true or false, got {self.channels_last!r}"
            )
        if str(self.voi).partition(":")[0] not in VOI_CHOICES:
            raise MammodissectError(
                f"voi {self.voi!r} unknown; use auto, lut[:N], window[:N] or none"
            )
        if not isinstance(self.similarity_params, dict):
            raise MammodissectError("similarity_params must be a mapping of name: value")
        self.prompts = check_prompts(self.prompts)
        check_rule(self.duplicates)
        if not isinstance(self.calibrated, bool):
            raise MammodissectError(f"calibrated must be true or false, got {self.calibrated!r}")
        if self.calibrated and not self.detectability:
            raise MammodissectError(
                "calibrated needs an audit: give --detectability DIR (its calibration turns the "
                "cosines into probabilities)"
            )
        if self.min_auroc is not None:
            if not self.detectability:
                raise MammodissectError(
                    "min_auroc needs an audit: give --detectability DIR (what `mammodissect "
                    "audit` wrote)"
                )
            if not isinstance(self.min_auroc, int | float) or not 0 <= self.min_auroc <= 1:
                raise MammodissectError(f"min_auroc must lie in [0, 1], got {self.min_auroc!r}")
        if not isinstance(self.lowercase, bool):
            raise MammodissectError(f"lowercase must be true or false, got {self.lowercase!r}")

    @classmethod
    def field_names(cls) -> list[str]:
        """The configuration keys, in declaration order."""
        return field_names(cls)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], source: str = "configuration") -> RunConfig:
        """Build from a mapping; an unknown key is an error naming the closest known key."""
        known = cls.field_names()
        for key in values:
            if key not in known:
                raise unknown_key(key, known, source)
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        return cls(**{name: None for name in required} | values)

    @staticmethod
    def read_yaml(path: str | Path) -> dict[str, Any]:
        """The mapping in a YAML config file (keys as in :class:`RunConfig`)."""
        path = Path(path)
        if not path.is_file():
            raise MammodissectError(f"config file {str(path)!r} not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise MammodissectError(f"config file {path.name!r} is not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise MammodissectError(f"config file {path.name!r} must hold a mapping of key: value")
        return {k.replace("-", "_"): v for k, v in data.items()}

    def cache_root(self) -> Path:
        """The cache directory this run uses."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def public(self) -> dict[str, Any]:
        """The configuration for run.json: no absolute path, objects by type. Model specs are
        recorded so that later steps can load them again (:meth:`ModelSpec.portable`: bundled
        names, package files, files near the run directory; other files by name), other
        paths by name only; with ``anonymize_ids`` not even the probe's name."""
        run_dir = Path(self.out) if self.out else None
        out: dict[str, Any] = {}
        for key in self.field_names():
            value = getattr(self, key)
            if key == "probe" and self.anonymize_ids:
                value = "<anonymized>"
            elif key in ("target", "dissector") and isinstance(value, str) and ":" in value:
                value = parse_spec(value).portable(run_dir)
            elif key in ("probe", "concepts", "out", "cache_dir", "detectability") and isinstance(
                value, str | Path
            ):
                value = Path(value).name
            elif not isinstance(value, str | int | float | bool | list | dict | type(None)):
                value = f"<{type(value).__name__}>"
            out[key] = value
        return out
