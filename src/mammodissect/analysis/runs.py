"""Reading a run directory back: its units' best concepts, its layers in model order, its concepts.

A run directory (``mammodissect run --out DIR``) holds ``neurons.csv`` (one row per layer, unit and
rank), ``run.json`` (configuration, fingerprints, ``layers`` in model order) and, from this
version on, ``concepts.csv`` (the whole concept set with its categories). The analysis reads only
these files, so it works on run directories copied from another machine.

Layers are always kept in the order the run recorded them (model order, as in run.json's
``layers`` list), never sorted as strings: ``blocks.10`` comes after ``blocks.9``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammodissect import concepts as concept_sets
from mammodissect.concepts.core import ConceptSet, split_labels
from mammodissect.config import RunConfig
from mammodissect.errors import MammodissectError
from mammodissect.models.spec import content_digest, parse_spec, resolve_run_refs
from mammodissect.rundir import (
    CONCEPTS_FILE,
    EVALUATION_FILE,
    EVALUATION_JSON,
    EVALUATION_LAYERS_FILE,
    HEAD_CHECK_FILE,
    IMAGES_FILE,
    NEURONS_FILE,
    PLANTED_FILE,
    RUN_JSON,
    SIMILARITIES_FILE,
)

__all__ = [
    "CONCEPTS_FILE",
    "CONTROL",
    "EVALUATION_FILE",
    "EVALUATION_JSON",
    "EVALUATION_LAYERS_FILE",
    "HEAD_CHECK_FILE",
    "IMAGES_FILE",
    "MAMMOGRAPHY",
    "PLANTED_FILE",
    "SIMILARITIES_FILE",
    "UNKNOWN",
    "RunDir",
    "check_same_files",
    "concept_table",
    "kind_of",
    "label_pairs",
    "layer_scores",
    "load_run",
    "read_neurons",
    "read_null",
    "top_counts",
]

log = logging.getLogger(__name__)

#: What a unit's best concept is: a mammography concept, a control, or unknown (no flag).
MAMMOGRAPHY, CONTROL, UNKNOWN = "mammography", "control", "unknown"
_TEXT_COLUMNS = ("layer", "concept", "category", "broad_category", "control")


@dataclass
class RunDir:
    """One run directory, read back.

    Attributes
    ----------
    path:
        The directory.
    info:
        run.json as a dict (empty when the file is missing).
    best:
        One row per unit: its rank-1 concept (``layer, unit, concept, score`` plus
        ``category, broad_category, control, kind`` where ``kind`` is ``mammography``,
        ``control`` or ``unknown``).
    layers:
        The layer names in model order.
    units:
        Units per layer.
    """

    path: Path
    info: dict[str, Any]
    best: pd.DataFrame
    layers: list[str]
    units: dict[str, int]

    @property
    def name(self) -> str:
        """The directory's name (how outputs refer to a run: never an absolute path)."""
        return self.path.resolve().name

    def fingerprint(self, key: str) -> str | None:
        """``run.json``'s ``fingerprints[key]`` (``probe``, ``concepts``, ...), or None."""
        value = self.info.get("fingerprints", {}).get(key)
        return None if value is None else str(value)

    def stored_config(self, **overrides: Any) -> RunConfig:
        """The run's configuration from run.json, with ``overrides`` (non-None) replacing
        fields; the concept set is the run's ``concepts.csv``.

        run.json records bundled models by name, files of installed packages and files near
        the run directory by reference, and the user's other files (and the probe) by name
        only: those must be named again (``target=``, ``dissector=``, ``probe=``), and a
        model given again must read the very files the run read (same content).

        Raises
        ------
        MammodissectError
            When run.json holds no configuration, a model's file must be named again, or a
            model given again reads other files than the run's.
        """
        stored = dict(self.info.get("config", {}))
        if not stored:
            raise MammodissectError(
                f"{self.name}/run.json has no config; rerun `mammodissect run --out DIR`"
            )
        stored.pop("out", None)
        stored["concepts"] = str(self.path / CONCEPTS_FILE)
        for role in ("target", "dissector"):
            recorded = self.info.get(role, {}).get("files", {})
            if overrides.get(role) is not None:
                check_same_files(overrides[role], recorded, role, self.name)
            elif isinstance(stored.get(role), str) and ":" in stored[role]:
                stored[role] = self._reloadable(role, stored[role], recorded)
        values = {k: v for k, v in stored.items() if k in RunConfig.field_names()}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return RunConfig.from_mapping(values, source=f"{self.name}/run.json")

    def _reloadable(self, role: str, spec: str, recorded: dict[str, Any]) -> str:
        """The stored spec with its references resolved, or an error saying to name it again."""
        text = resolve_run_refs(spec, self.path)
        for key, path in parse_spec(text).files().items():
            if not path.exists():
                name = recorded.get(key, {}).get("name", path.name)
                raise MammodissectError(
                    f"run {self.name!r} used the {role} file {name!r}, which run.json names "
                    f"without its folder (it keeps no absolute paths) and which is not found; "
                    f"give the {role} again with its path: --{role} '{spec}' with {name!r} "
                    "replaced by the file's path (its content is checked against the run's)"
                )
        return text


def check_same_files(given: Any, recorded: dict[str, Any], role: str, run_name: str) -> None:
    """Check that a model spec given again reads the files a run read: each file run.json
    fingerprinted (``sha256``) must have that content.

    Raises
    ------
    MammodissectError
        Naming the file that differs.
    """
    if not isinstance(given, str) or ":" not in given:
        return
    files = parse_spec(given).files()
    for key, facts in recorded.items():
        digest = facts.get("sha256")
        path = files.get(key)
        if digest is None or path is None or not path.is_file():
            continue
        if content_digest(path) != digest:
            raise MammodissectError(
                f"the {key} file {path.name!r} given with --{role} is not the file run "
                f"{run_name!r} used ({facts.get('name')!r}, SHA-256 {digest[:12]}...); give "
                "the run's file"
            )


def _parse_control(value: Any) -> bool | None:
    text = str(value).strip().lower()
    if text in ("true", "1", "1.0", "yes"):
        return True
    if text in ("false", "0", "0.0", "no"):
        return False
    return None


def kind_of(control: Any) -> str:
    """``mammography`` for a concept whose control flag is False, ``control`` for True,
    ``unknown`` when the flag is missing (a concept set without control flags)."""
    flag = control if isinstance(control, bool) or control is None else _parse_control(control)
    if flag is None:
        return UNKNOWN
    return CONTROL if flag else MAMMOGRAPHY


def read_neurons(path: str | Path) -> pd.DataFrame:
    """Read a ``neurons.csv`` keeping concept strings verbatim (``"NA"`` stays a concept).

    Returns the table with ``score`` as float, ``unit``/``rank`` as int, ``control`` as
    True/False/None and empty categories as None.

    Raises
    ------
    MammodissectError
        When the file is missing or lacks ``layer, unit, rank, concept, score``.
    """
    path = Path(path)
    if not path.is_file():
        raise MammodissectError(
            f"{path.parent.name}/{path.name} not found; give a run directory written by "
            "`mammodissect run --out DIR`"
        )
    frame = pd.read_csv(
        path,
        dtype={c: str for c in _TEXT_COLUMNS},
        keep_default_na=False,
        na_values={"score": ["", "nan", "NaN"]},
    )
    missing = [c for c in ("layer", "unit", "rank", "concept", "score") if c not in frame]
    if missing:
        raise MammodissectError(
            f"{path.parent.name}/{path.name} lacks columns {', '.join(missing)}; "
            "is it a mammodissect neurons table?"
        )
    frame["unit"] = frame["unit"].astype(int)
    frame["rank"] = frame["rank"].astype(int)
    frame["score"] = frame["score"].astype(float)
    for column in ("category", "broad_category"):
        if column in frame:
            frame[column] = frame[column].map(lambda v: v if v else None).astype(object)
    if "control" in frame:
        frame["control"] = frame["control"].map(_parse_control).astype(object)
    return frame


def _layer_order(info: dict[str, Any], neurons: pd.DataFrame) -> tuple[list[str], dict[str, int]]:
    """Layers in model order: run.json's ``layers`` list, else their order in neurons.csv."""
    seen = list(dict.fromkeys(neurons["layer"]))
    recorded = info.get("layers")
    if isinstance(recorded, list) and recorded:
        names = [str(e["name"]) if isinstance(e, dict) else str(e) for e in recorded]
        units = {
            str(e["name"]): int(e["units"])
            for e in recorded
            if isinstance(e, dict) and "units" in e
        }
        extra = [layer for layer in seen if layer not in names]
        if extra:
            log.warning(
                "neurons.csv has layers run.json does not list (%s); putting them last",
                ", ".join(extra),
            )
        order = names + extra
    else:
        order, units = seen, {}
    counted = neurons[neurons["rank"] == 1].groupby("layer", sort=False)["unit"].nunique()
    for layer in order:
        units.setdefault(layer, int(counted.get(layer, 0)))
    return [layer for layer in order if layer in set(seen)], units


def load_run(path: str | Path) -> RunDir:
    """Read a run directory's ``neurons.csv`` and ``run.json``.

    Raises
    ------
    MammodissectError
        When the directory or its neurons.csv is missing or malformed, or run.json is not JSON.
    """
    path = Path(path)
    if not path.is_dir():
        raise MammodissectError(
            f"run directory {path.name!r} not found; give a folder written by "
            "`mammodissect run --out DIR`"
        )
    info: dict[str, Any] = {}
    run_json = path / RUN_JSON
    if run_json.is_file():
        try:
            info = json.loads(run_json.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise MammodissectError(
                f"{path.name}/run.json is not valid JSON ({err}); rewrite it with "
                "`mammodissect run` or restore it"
            ) from err
    else:
        log.warning("%s has no run.json; layer order taken from neurons.csv", path.name)
    neurons = read_neurons(path / NEURONS_FILE)
    best = neurons[neurons["rank"] == 1].drop(columns="rank").reset_index(drop=True)
    if best.empty:
        raise MammodissectError(f"{path.name}/neurons.csv has no rank-1 rows; nothing to analyse")
    for column in ("category", "broad_category", "control"):
        if column not in best:
            best[column] = None
    best["kind"] = [kind_of(c) for c in best["control"]]
    layers, units = _layer_order(info, neurons)
    return RunDir(path=path, info=info, best=best, layers=layers, units=units)


def read_null(run: RunDir) -> dict[str, float] | None:
    """Layer -> the 99th percentile of the null's top-1 scores (``mammodissect evaluate``), or
    None when the run has not been evaluated."""
    path = run.path / EVALUATION_LAYERS_FILE
    if not path.is_file():
        return None
    table = pd.read_csv(path, keep_default_na=False)
    pairs = zip(table["layer"], table["null_p99"], strict=True)
    return {str(layer): float(value) for layer, value in pairs}


def layer_scores(best: pd.DataFrame, layers: list[str]) -> pd.DataFrame:
    """Per layer in ``layers`` order: ``units, score_mean, score_median, score_std`` of the
    top-1 scores (``std`` with ``ddof=0``, as numpy gives it)."""
    rows = []
    grouped = dict(tuple(best.groupby("layer", sort=False)))
    for layer in layers:
        scores = grouped[layer]["score"].to_numpy(float) if layer in grouped else np.empty(0)
        rows.append(
            {
                "layer": layer,
                "units": int(scores.size),
                "score_mean": float(scores.mean()) if scores.size else np.nan,
                "score_median": float(np.median(scores)) if scores.size else np.nan,
                "score_std": float(scores.std()) if scores.size else np.nan,
            }
        )
    return pd.DataFrame(rows)


def label_pairs(category: Any, broad: Any) -> list[tuple[str | None, str | None]]:
    """The ``(broad_category, category)`` labels of a concept (several for a multi-label one)."""
    category = category if isinstance(category, str) and category else None
    broad = broad if isinstance(broad, str) and broad else None
    if category is None and broad is None:
        return []
    return split_labels(category, broad)


def top_counts(values: pd.Series, n: int = 5) -> str:
    """The ``n`` most frequent values as ``"a (3)|b (2)"``; ties broken alphabetically."""
    counts = values.value_counts()
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:n]
    return "|".join(f"{value} ({count})" for value, count in ordered)


def concept_table(
    run: RunDir, concepts: str | Path | ConceptSet | None = None
) -> pd.DataFrame | None:
    """The run's whole concept set as ``concept, category, broad_category, control, kind``.

    Taken from ``concepts`` when given, else from the run's ``concepts.csv``, else by reloading
    a bundled set named in run.json; each is checked against run.json's concept fingerprint.
    Returns None when none of these is available.

    Raises
    ------
    MammodissectError
        When the set found does not match the fingerprint the run recorded.
    """
    expected = run.fingerprint("concepts")
    source: str | Path | ConceptSet | None = concepts
    where = "the concept set given"
    if source is None and (run.path / CONCEPTS_FILE).is_file():
        source, where = run.path / CONCEPTS_FILE, f"{run.name}/{CONCEPTS_FILE}"
    if source is None:
        name = str(
            run.info.get("concepts", {}).get("name")
            or run.info.get("config", {}).get("concepts", "")
        )
        if name in concept_sets.BUNDLED:
            source, where = name, f"bundled set {name!r}"
    if source is None:
        return None
    loaded = concept_sets.load(source)
    if expected is not None and loaded.fingerprint() != expected:
        raise MammodissectError(
            f"{where} (fingerprint {loaded.fingerprint()}) is not the concept set run "
            f"{run.name!r} used (fingerprint {expected} in run.json); give the concept file the "
            "run was made with"
        )
    frame = loaded.to_frame()
    frame["kind"] = [kind_of(c) for c in frame["control"]]
    return frame
