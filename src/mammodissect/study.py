"""``mammodissect study STUDY.yaml``: the whole G / M / C study from one file, resumable.

A study file holds

- the settings every variant shares, under the keys of ``mammodissect run`` (``dissector``,
  ``probe``, ``concepts``, ``similarity``, ``image_size``, ``cache_dir``, ...;
  :class:`mammodissect.config.RunConfig`), plus ``out`` (the study folder);
- ``variants``: a list, each with ``name`` (its run directory under ``out``), ``role``
  (``general``, ``mammography`` or ``finetuned``), ``target``, ``layers`` and any run key
  that differs for it (``image_size: 320x192``); a fine-tuned variant may instead have
  ``finetune`` (``model``, ``task`` and any setting of :func:`mammodissect.finetune`; ``probe``
  defaults to the study's): its target is then the classifier that fine-tuning writes into
  ``OUT/finetune/NAME`` (built when missing, a step of its own);
- optional sections ``evaluate`` (keys of :func:`mammodissect.evaluate.evaluate`, or
  ``true``), ``compare`` (``layers``, ``figures``, ``detectability``, ``min_auroc``) and
  ``report`` (``cards``, ``card_images``, ``batch_size``); ``compare`` and ``report`` run
  unless set to ``false``, ``evaluate`` only when given (or with ``--evaluate``).

Relative paths are read from the folder the command runs in, as on the command line. The
study runs as steps: per variant ``run`` (then ``evaluate`` and ``report``), then ``compare``
and the comparison's report. Each step's **fingerprint** (its settings, the identities of the
files it reads, and the fingerprints of the steps it depends on) is recorded in
``OUT/study.json`` when it finishes; a rerun skips every step whose fingerprint is unchanged
and whose outputs are there, so a change to one variant reruns that variant and what depends
on it (its report, the comparison), and an interrupted study resumes (an interrupted run step
resumes from its own caches). Everything is validated before any work: unknown keys (with the
closest one), bad values, missing files and layers the target does not have, each error naming
the key and its line in the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import yaml
from tqdm.auto import tqdm

from mammodissect.config import RunConfig
from mammodissect.errors import MammodissectError
from mammodissect.models.spec import file_identity, parse_spec
from mammodissect.options import field_names
from mammodissect.rundir import EVALUATION_JSON, REPORT_FILE, RUN_JSON

__all__ = [
    "ROLES",
    "STUDY_FILE",
    "Step",
    "Study",
    "StudyResult",
    "StudyVariant",
    "load_study",
    "plan_study",
    "run_study",
    "template",
]

log = logging.getLogger(__name__)

#: Written into the study folder: each finished step's fingerprint.
STUDY_FILE = "study.json"
#: Sub-folder of the study folder with the comparison of the variants.
COMPARE_DIR = "compare"
#: A variant's role in the study.
ROLES: tuple[str, ...] = ("general", "mammography", "finetuned")
_SECTIONS = ("variants", "evaluate", "compare", "report")
_VARIANT_KEYS = ("name", "role", "target", "layers", "evaluate", "finetune")
#: finetune() settings a study does not take from the variant's ``finetune`` mapping.
_FINETUNE_FIXED = ("out", "cache_dir", "device", "progress", "overwrite", "num_workers")
_COMPARE_KEYS = ("layers", "figures", "detectability", "min_auroc")
_REPORT_KEYS = ("cards", "card_images", "batch_size")
#: evaluate() settings a study does not take from its ``evaluate`` mapping: it gives them.
_EVALUATE_FIXED = ("probe", "target", "dissector", "cache_dir", "device", "write", "quiet")


@dataclass(frozen=True)
class StudyVariant:
    """One model of the study: its name, role and complete run configuration."""

    name: str
    role: str
    config: RunConfig
    evaluate: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] | None = None


@dataclass
class Study:
    """A validated study file.

    Attributes
    ----------
    out:
        The study folder (run directories, ``compare/``, ``study.json``).
    variants:
        In file order.
    evaluate, compare, report:
        Each section's settings, or None when the step is off.
    source:
        The file's name (for messages), or ``study`` for a mapping.
    """

    out: Path
    variants: list[StudyVariant]
    evaluate: dict[str, Any] | None = None
    compare: dict[str, Any] | None = field(default_factory=dict)
    report: dict[str, Any] | None = field(default_factory=dict)
    source: str = "study"

    def variant(self, name: str) -> StudyVariant:
        """The variant called ``name``."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        raise MammodissectError(
            f"no variant {name!r} in {self.source}; it has {', '.join(self.names)}"
        )

    @property
    def names(self) -> list[str]:
        """The variants' names, in file order."""
        return [v.name for v in self.variants]


class _Located:
    """Where each key of a YAML text sits: ``where(("variants", 1, "target"))`` gives
    ``study.yaml:14``."""

    def __init__(self, text: str | None, source: str):
        self.source = source
        self.lines: dict[tuple[Any, ...], int] = {}
        if text is not None:
            self._walk(yaml.compose(text), ())

    def _walk(self, node: Any, path: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                here = (*path, key.value)
                self.lines[here] = key.start_mark.line + 1
                self._walk(value, here)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                self.lines[(*path, i)] = value.start_mark.line + 1
                self._walk(value, (*path, i))

    def where(self, path: tuple[Any, ...]) -> str:
        while path and path not in self.lines:
            path = path[:-1]
        return f"{self.source}:{self.lines[path]}" if path in self.lines else self.source

    def fail(self, path: tuple[Any, ...], message: str) -> MammodissectError:
        return MammodissectError(f"{self.where(path)}: {message}")


def _unknown(keys: Sequence[str], known: Sequence[str], where: _Located, path: tuple) -> None:
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
            raise where.fail((*path, key), f"unknown key {key!r}{hint}")


def _read(source: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], _Located]:
    if isinstance(source, Mapping):
        return dict(source), _Located(None, "study")
    path = Path(source)
    if not path.is_file():
        raise MammodissectError(
            f"study file {str(path)!r} not found; write one (`mammodissect study --template "
            "phantom` prints an example)"
        )
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise MammodissectError(f"study file {path.name!r} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise MammodissectError(f"study file {path.name!r} must hold a mapping of key: value")
    return data, _Located(text, path.name)


def _section(
    value: Any, known: Sequence[str], where: _Located, path: str | tuple[Any, ...]
) -> dict | None:
    path = (path,) if isinstance(path, str) else path
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise where.fail(path, f"{path[-1]} must be true, false or a mapping of settings")
    _unknown(list(value), known, where, path)
    return dict(value)


def _evaluate_keys() -> list[str]:
    from mammodissect.evaluate import EvaluateConfig

    return [p for p in field_names(EvaluateConfig) if p not in _EVALUATE_FIXED]


def _finetune_entry(
    entry: dict[str, Any], shared: dict[str, Any], folder: Path, where: _Located, path: tuple
) -> dict[str, Any] | None:
    """A variant's ``finetune`` mapping, checked, with the study's probe when it names none;
    None without one."""
    from mammodissect.finetune import FinetuneConfig

    value = entry.get("finetune")
    if value is None:
        return None
    here = (*path, "finetune")
    if not isinstance(value, dict):
        raise where.fail(here, "finetune must be a mapping (model, task, settings)")
    known = [
        p for p in ("model", "probe", "task", *field_names(FinetuneConfig))
        if p not in _FINETUNE_FIXED
    ]  # fmt: skip
    _unknown(list(value), known, where, here)
    if entry.get("target"):
        raise where.fail(
            (*path, "target"),
            "a variant with finetune gets its target from the fine-tuning; remove target",
        )
    for key in ("model", "task"):
        if not value.get(key):
            raise where.fail(here, f"finetune needs {key!r}")
    tuning = {"probe": shared.get("probe"), **value}
    try:
        files = _finetune_files(tuning)
    except MammodissectError as err:
        raise where.fail((*here, "model"), f"finetune model: {err}") from None
    for name, file in files:
        if not file.exists():
            raise where.fail(here, f"finetune {name} file {str(file)!r} does not exist")
    return tuning


def _finetune_files(tuning: dict[str, Any]) -> list[tuple[str, Path]]:
    """What a fine-tuning reads: its base model's files and its probe."""
    files = list(parse_spec(str(tuning["model"])).files().items())
    return [*files, ("probe", Path(str(tuning["probe"])).expanduser())]


class _BadSpec(MammodissectError):
    """A model spec of a run that does not parse; ``key`` names its setting."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def _read_files(config: RunConfig, *, target: bool = True) -> list[tuple[str, str, Path]]:
    """The files a run reads, as ``(setting, part, path)``: the probe, a concept file (not a
    bundled set), and the files its model specs name (``target=False``: the target's are made
    by the study).

    Raises
    ------
    _BadSpec
        When a spec does not parse.
    """
    from mammodissect.concepts import bundled_names

    found: list[tuple[str, str, Path]] = []
    if isinstance(config.probe, str | Path):
        found.append(("probe", "", Path(config.probe).expanduser()))
    concepts = config.concepts
    if isinstance(concepts, str | Path) and not set(str(concepts).split("+")) <= set(
        bundled_names()
    ):
        found.append(("concepts", "", Path(concepts).expanduser()))
    for key in ("target", "dissector") if target else ("dissector",):
        spec = getattr(config, key)
        if isinstance(spec, str):
            try:
                parsed = parse_spec(spec)
            except MammodissectError as err:
                raise _BadSpec(key, f"{key} {spec!r}: {err}") from None
            found += [(key, name, file) for name, file in parsed.files().items()]
    return found


def _finetuned_target(tuning: dict[str, Any], folder: Path) -> str:
    """The spec of the classifier fine-tuning writes into ``folder``."""
    from mammodissect.finetune.export import MAMMOCLIP_BASES, target_spec

    pth = parse_spec(str(tuning["model"])).scheme in MAMMOCLIP_BASES
    return target_spec(
        folder, {"checkpoint": "classifier.pth" if pth else "classifier.safetensors"}
    )


def _check_files(config: RunConfig, where: _Located, path: tuple, *, target: bool = True) -> None:
    """Missing probe, concept file or model files, named with the key that names them
    (``target=False``: the target's files are made by the study)."""
    try:
        files = _read_files(config, target=target)
    except _BadSpec as err:
        raise where.fail((*path, err.key), str(err)) from None
    for key, part, file in files:
        if not file.exists():
            named = f"{key} ({part})" if part else key
            raise where.fail(
                (*path, key),
                f"{named} file {str(file)!r} does not exist; fix the path (relative paths are "
                "read from the folder the command runs in)",
            )


def load_study(source: str | Path | Mapping[str, Any], out: str | Path | None = None) -> Study:
    """Read and validate a study file (or a mapping of the same keys).

    Parameters
    ----------
    source:
        A YAML file or a mapping.
    out:
        The study folder, replacing the file's ``out`` (default ``runs/study``).

    Raises
    ------
    MammodissectError
        One line naming the key, its line in the file and the fix: unknown keys (with the
        closest known one), bad values, missing files, variants without a name, role, target
        or layers, names used twice.
    """
    data, where = _read(source)
    run_keys = RunConfig.field_names()
    _unknown(list(data), [*run_keys, *_SECTIONS], where, ())
    folder = Path(out or data.get("out") or "runs/study")
    shared = {k: v for k, v in data.items() if k in run_keys and k != "out"}
    entries = data.get("variants")
    if not isinstance(entries, list) or not entries:
        raise where.fail(("variants",), "variants must be a list of at least one variant")
    variants: list[StudyVariant] = []
    for i, entry in enumerate(entries):
        path = ("variants", i)
        if not isinstance(entry, dict):
            raise where.fail(path, "each variant must be a mapping (name, role, target, layers)")
        _unknown(list(entry), [*_VARIANT_KEYS, *(k for k in run_keys if k != "out")], where, path)
        tuning = _finetune_entry(entry, shared, folder, where, path)
        if tuning is not None:
            entry = {
                **entry,
                "target": _finetuned_target(tuning, folder / "finetune" / entry["name"]),
            }
        for key in ("name", "role", "target"):
            if not entry.get(key):
                raise where.fail(path, f"variant {i + 1} has no {key!r}")
        name = str(entry["name"])
        if name in [v.name for v in variants]:
            raise where.fail((*path, "name"), f"variant name {name!r} is used twice")
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise where.fail(
                (*path, "name"),
                f"variant name {name!r} must be letters, digits, '-', '_' or '.' (it names a "
                "folder)",
            )
        if entry["role"] not in ROLES:
            raise where.fail(
                (*path, "role"), f"role {entry['role']!r} unknown; use {', '.join(ROLES)}"
            )
        values = {**shared, **{k: v for k, v in entry.items()
                               if k not in ("name", "role", "evaluate", "finetune")}}  # fmt: skip
        values["out"] = str(folder / name)
        try:
            config = RunConfig.from_mapping(values, source=f"variant {name!r}")
        except MammodissectError as err:
            raise where.fail(path, f"variant {name!r}: {err}") from None
        _check_files(config, where, path, target=tuning is None)
        own = _section(entry.get("evaluate"), _evaluate_keys(), where, (*path, "evaluate"))
        variants.append(StudyVariant(name, str(entry["role"]), config, own or {}, tuning))
    mammography = [v.name for v in variants if v.role == "mammography"]
    if len(mammography) > 1:
        raise where.fail(
            ("variants",),
            f"more than one mammography variant ({', '.join(mammography)}); the fine-tuned "
            "variants are compared with one",
        )
    return Study(
        out=folder,
        variants=variants,
        evaluate=_section(data.get("evaluate"), _evaluate_keys(), where, "evaluate"),
        compare=_section(data.get("compare", True), _COMPARE_KEYS, where, "compare"),
        report=_section(data.get("report", True), _REPORT_KEYS, where, "report"),
        source=where.source,
    )


def check_layers(study: Study) -> dict[str, int]:
    """Load every variant's target and resolve its layers: the number of layers per variant.

    Raises
    ------
    MammodissectError
        When a variant's layers match nothing in its target (naming the variant and the
        closest module names).
    """
    from mammodissect.layers import resolve_layers
    from mammodissect.models import load_target

    counts: dict[str, int] = {}
    loaded: dict[str | int, Any] = {}
    for variant in study.variants:
        spec = variant.config.target
        if variant.finetune is not None and not all(
            f.exists() for f in parse_spec(spec).files().values()
        ):
            continue  # fine-tuned by the study: its layers are checked when it runs
        key = spec if isinstance(spec, str) else id(spec)
        if key not in loaded:
            loaded[key] = load_target(spec) if isinstance(spec, str) else spec
        try:
            counts[variant.name] = len(resolve_layers(loaded[key].module, variant.config.layers))
        except MammodissectError as err:
            raise MammodissectError(f"{study.source}: variant {variant.name!r}: {err}") from None
    return counts


@dataclass
class Step:
    """One unit of work of a study.

    Attributes
    ----------
    key:
        ``finetune:NAME``, ``run:NAME``, ``evaluate:NAME``, ``report:NAME``, ``compare`` or
        ``report:compare``.
    fingerprint:
        What the step depends on, hashed.
    done:
        A file that exists once the step has finished.
    action:
        Does the step.
    """

    key: str
    fingerprint: str
    done: Path
    action: Callable[[], Any]


def _digest(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run_fingerprint(config: RunConfig, made: str | None = None) -> str:
    """The run's settings and the identities (name, size, modification time) of the files it
    reads: probe, concept file, model files; for a target the study fine-tunes, the
    fine-tuning step's fingerprint ``made`` instead of its files."""
    values = {k: v for k, v in dataclasses.asdict(config).items()
              if k not in ("quiet", "num_workers", "device")}  # fmt: skip
    files = {
        f"{key}.{part}" if part else key: file_identity(path)
        for key, part, path in _read_files(config, target=made is None)
    }
    return _digest({"settings": values, "files": files, "made": made})


def _finetune_fingerprint(tuning: dict[str, Any]) -> str:
    files = {name: file_identity(path) for name, path in _finetune_files(tuning)}
    return _digest({"settings": tuning, "files": files})


def plan_study(
    study: Study,
    *,
    only: Sequence[str] | None = None,
    quiet: bool = False,
    done: Mapping[str, Any] | None = None,
) -> list[Step]:
    """The study's steps in order (see the module docstring); ``only`` limits the variant
    steps to those variants (the comparison still runs over every variant's run). ``done``:
    study.json's finished steps; a fine-tuning finished with other settings is replaced, an
    unfinished one with the same settings resumes."""
    done = done or {}
    from mammodissect.analysis.compare import compare
    from mammodissect.api import run
    from mammodissect.report import report

    for name in only or ():
        study.variant(name)  # unknown names fail here
    steps: list[Step] = []
    fingerprints: dict[str, str] = {}
    for variant in study.variants:
        config = dataclasses.replace(variant.config, quiet=quiet)
        run_dir = Path(cast(str, config.out))  # a study gives every variant its folder
        mine = only is None or variant.name in only
        made = None
        if variant.finetune is not None:
            from mammodissect.finetune import finetune

            made = _finetune_fingerprint(variant.finetune)
            checkpoint = next(iter(parse_spec(config.target).files().values()))
            key = f"finetune:{variant.name}"
            replace = key in done and done[key].get("fingerprint") != made
            if mine:
                steps.append(Step(
                    key, made, checkpoint,
                    partial(
                        finetune, out=checkpoint.parent, cache_dir=config.cache_dir,
                        device=config.device, overwrite=replace, num_workers=config.num_workers,
                        progress=not config.quiet, **variant.finetune,
                    ),
                ))  # fmt: skip
        fp = _run_fingerprint(config, made)
        fingerprints[variant.name] = fp
        if mine:
            steps.append(Step(f"run:{variant.name}", fp, run_dir / RUN_JSON, partial(run, config)))
        if study.evaluate is not None:
            from mammodissect.evaluate import evaluate

            settings = {**study.evaluate, **variant.evaluate}
            fp = _digest([fp, settings])
            fingerprints[variant.name] = fp
            if mine:
                steps.append(Step(
                    f"evaluate:{variant.name}", fp, run_dir / EVALUATION_JSON,
                    partial(
                        evaluate, run_dir, probe=config.probe, target=config.target,
                        dissector=config.dissector, cache_dir=config.cache_dir,
                        device=config.device, quiet=config.quiet, **settings,
                    ),
                ))  # fmt: skip
        if study.report is not None and mine:
            settings = {"card_images": 3, **study.report}
            steps.append(Step(
                f"report:{variant.name}", _digest([fp, settings]), run_dir / REPORT_FILE,
                partial(
                    report, run_dir, probe=config.probe, target=config.target,
                    dissector=config.dissector, device=config.device, **settings,
                ),
            ))  # fmt: skip
    if study.compare is not None and len(study.variants) > 1:
        settings = study.compare
        fp = _digest([fingerprints, settings])
        baseline = next((v.name for v in study.variants if v.role == "mammography"), None)
        tuned = [v.name for v in study.variants if v.role == "finetuned"]
        folder = study.out / COMPARE_DIR
        steps.append(Step(
            "compare", fp, folder / "compare.json",
            lambda: compare(
                [Path(cast(str, v.config.out)) for v in study.variants], folder, names=study.names,
                baseline=baseline, finetuned=tuned, **settings,
            ),
        ))  # fmt: skip
        if study.report is not None:
            steps.append(Step("report:compare", fp, folder / REPORT_FILE,
                              lambda: report(folder)))  # fmt: skip
    return steps


@dataclass
class StudyResult:
    """What a study run did: per step ``ran``, ``reused`` (fingerprint unchanged) or
    ``planned`` (a dry run), with the seconds each ran."""

    out: Path
    steps: dict[str, str]
    seconds: dict[str, float]
    layers: dict[str, int] = field(default_factory=dict)


def _record(out: Path) -> dict[str, Any]:
    path = out / STUDY_FILE
    if not path.is_file():
        return {"steps": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        log.warning("%s unreadable: every step runs again", STUDY_FILE)
        return {"steps": {}}


def _write_record(out: Path, record: dict[str, Any]) -> None:
    partial = out / f"{STUDY_FILE}.partial"
    partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    partial.replace(out / STUDY_FILE)


def run_study(
    source: str | Path | Mapping[str, Any] | Study,
    *,
    out: str | Path | None = None,
    only: Sequence[str] | None = None,
    evaluate: bool = False,
    dry_run: bool = False,
    quiet: bool = False,
) -> StudyResult:
    """Run a study: validate it, then every step whose fingerprint changed.

    Parameters
    ----------
    source:
        A study file, a mapping of its keys, or a loaded :class:`Study`.
    out:
        The study folder, replacing the file's ``out``.
    only:
        Variant names: run only their steps (and the comparison).
    evaluate:
        Evaluate every variant even when the file has no ``evaluate`` section.
    dry_run:
        Validate (layers included) and return the plan without running anything.
    quiet:
        No progress bars.

    Returns
    -------
    StudyResult
    """
    study = source if isinstance(source, Study) else load_study(source, out)
    if evaluate and study.evaluate is None:
        study = dataclasses.replace(study, evaluate={})
    layer_counts = check_layers(study)
    record = _record(study.out)
    done = record.get("steps", {})
    steps = plan_study(study, only=only, quiet=quiet, done=done)
    status: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for step in steps:
        finished = done.get(step.key, {}).get("fingerprint") == step.fingerprint
        status[step.key] = "reused" if finished and step.done.exists() else "planned"
    if dry_run:
        return StudyResult(study.out, status, seconds, layer_counts)
    study.out.mkdir(parents=True, exist_ok=True)
    record["variants"] = {v.name: v.role for v in study.variants}
    bar = tqdm(total=len(steps), desc="study", unit="step", disable=quiet, position=0)
    with bar:
        for step in steps:
            bar.set_postfix_str(step.key)
            if status[step.key] == "planned":
                started = time.perf_counter()
                step.action()
                seconds[step.key] = round(time.perf_counter() - started, 1)
                status[step.key] = "ran"
                done[step.key] = {"fingerprint": step.fingerprint, "seconds": seconds[step.key]}
                record["steps"] = done
                _write_record(study.out, record)
            bar.update(1)
    _write_record(study.out, {**record, "steps": done})
    return StudyResult(study.out, status, seconds, layer_counts)


def template(name: str) -> str:
    """The text of a bundled study template: ``phantom`` (the demo) or ``mammoclip`` (the
    published study, with placeholders for your files)."""
    from importlib import resources

    known = ("phantom", "mammoclip")
    if name not in known:
        raise MammodissectError(f"template {name!r} unknown; use {' or '.join(known)}")
    return (resources.files("mammodissect") / "data" / f"study-{name}.yaml").read_text(
        encoding="utf-8"
    )


# ``mammodissect.study(...)`` runs the verb; ``mammodissect.study.load_study`` stays reachable
from mammodissect.verbs import make_callable  # noqa: E402

make_callable(__name__, run_study)
