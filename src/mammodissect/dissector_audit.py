"""``mammodissect audit``: how well a dissector sees each annotated concept on a probe.

A unit's label can only be as right as the dissector's view of the concept. The audit scores
the dissector's S (image x concept cosines) against the truth the probe's own annotations give
(the annotation dissector's S, see :mod:`mammodissect.models.annotation_models`):

- **detectability**, per concept with at least one annotated image: AUROC and average
  precision of the concept's cosine for the images that show it, a bootstrap 95% interval of
  the AUROC over images, and a calibration of the cosine into a probability (a logistic fit of
  presence on the cosine, as Linear Explanations and Neuron_Eval calibrate vision-language
  scores), plus one fit for the whole dissector;
- **control leakage**, per control concept (never annotated: strings such as "umbrella" that
  a mammogram cannot show): the share of annotated findings (an image and a concept it shows)
  whose cosine the control's beats on that image. A control that beats many findings pulls
  labels away from what is there; it is flagged above ``leakage_threshold``.

Outputs in ``out``: ``detectability.csv``, ``leakage.csv``, ``audit.json`` and
``figures/detectability.png``/``.svg``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammodissect import concepts as concept_sets
from mammodissect.analysis.detectability import AUDIT_JSON, DETECTABILITY_FILE, LEAKAGE_FILE
from mammodissect.analysis.figures import plot_detectability
from mammodissect.concepts.encode import score_matrix
from mammodissect.config import default_cache_dir
from mammodissect.errors import MammodissectError
from mammodissect.metrics import auroc_columns, average_precision_columns
from mammodissect.models import load_dissector
from mammodissect.models.annotation_models import annotation_truth
from mammodissect.models.configured import resolve_device
from mammodissect.models.recipes import configure
from mammodissect.probe import Probe, load_probe
from mammodissect.record import RecordSettings, probe_digest, record_embeddings
from mammodissect.rundir import check_writable

__all__ = [
    "AUDIT_JSON",
    "DETECTABILITY_COLUMNS",
    "DETECTABILITY_FILE",
    "LEAKAGE_FILE",
    "Audit",
    "AuditConfig",
    "audit",
    "calibrate",
    "control_leakage",
    "detectability",
]

log = logging.getLogger(__name__)

#: Columns of detectability.csv, one row per concept with at least one annotated image.
DETECTABILITY_COLUMNS = [
    "concept", "category", "broad_category", "control", "images", "prevalence", "auroc",
    "auroc_low", "auroc_high", "auprc", "calibration_slope", "calibration_intercept",
]  # fmt: skip


@dataclass
class AuditConfig:
    """Everything an audit needs; the names are ``mammodissect audit``'s flags.

    ``dissector``, ``probe`` and ``concepts`` are specs or paths; the Python API also takes
    loaded objects for them.
    """

    dissector: Any
    probe: Any
    concepts: Any
    out: str | None = None
    annotation_map: str | None = None
    prompts: list[str] = field(default_factory=list)
    lowercase: bool = False
    dissector_preprocess: str | None = None
    dissector_image_size: str | int | None = None
    bootstrap: int = 500
    leakage_threshold: float = 0.5
    seed: int = 0
    batch_size: int = 16
    device: str = "auto"
    precision: str = "fp32"
    num_workers: int = 2
    voi: str = "auto"
    cache_dir: str | None = None
    cache_images: bool = True
    quiet: bool = False

    def __post_init__(self) -> None:
        for name in ("dissector", "probe", "concepts"):
            if getattr(self, name) in (None, "", []):
                raise MammodissectError(f"missing {name}: give --{name}")
        if not isinstance(self.bootstrap, int) or self.bootstrap < 0:
            raise MammodissectError(
                f"bootstrap must be a whole number >= 0, got {self.bootstrap!r}"
            )
        if not 0 < float(self.leakage_threshold) <= 1:
            raise MammodissectError(
                f"leakage_threshold must lie in (0, 1], got {self.leakage_threshold!r}"
            )
        for name in ("batch_size",):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise MammodissectError(f"{name} must be a whole number >= 1")

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> AuditConfig:
        """Build from keyword values; an unknown key is an error naming the closest one."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise MammodissectError(f"unknown audit setting {key!r}{hint}")
        return cls(**values)

    def cache_root(self) -> Path:
        """The cache directory the audit uses (the one runs use, by default)."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()


@dataclass
class Audit:
    """What :func:`audit` found.

    Attributes
    ----------
    detectability:
        :data:`DETECTABILITY_COLUMNS`, one row per annotated concept, in concept-set order.
    leakage:
        ``concept, category, leakage, flagged``, one row per control concept.
    info:
        audit.json's content: settings, summary figures, the global calibration, timings.
    out:
        The folder written, if any.
    """

    detectability: pd.DataFrame
    leakage: pd.DataFrame
    info: dict[str, Any]
    out: Path | None = None


def calibrate(
    cosines: np.ndarray, present: np.ndarray, ridge: float = 1.0, steps: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic fits P(present) = sigmoid(slope * cosine + intercept), one per column.

    Each column is fitted by Newton's method on the cosines standardised over images, with an
    L2 penalty ``ridge`` on the standardised slope (so a perfectly separated column gets a large
    finite slope, not an infinite one), then mapped back to raw cosines.

    Parameters
    ----------
    cosines, present:
        (N, K) scores and 0/1 truth.

    Returns
    -------
    slope, intercept:
        (K,) each; NaN for a column whose truth holds one class only.
    """
    x = np.asarray(cosines, dtype=np.float64)
    y = np.asarray(present, dtype=np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    z = (x - mean) / std
    a, b = np.zeros(x.shape[1]), np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(a * z + b)))
        w = p * (1 - p)
        g_a, g_b = ((p - y) * z).sum(0) + ridge * a, (p - y).sum(0)
        h_aa, h_ab, h_bb = (w * z * z).sum(0) + ridge, (w * z).sum(0), w.sum(0) + 1e-9
        det = h_aa * h_bb - h_ab * h_ab
        step_a, step_b = (h_bb * g_a - h_ab * g_b) / det, (h_aa * g_b - h_ab * g_a) / det
        a, b = a - step_a, b - step_b
        if max(np.abs(step_a).max(initial=0), np.abs(step_b).max(initial=0)) < 1e-10:
            break
    both = (y.sum(0) > 0) & (y.sum(0) < len(y))
    slope, intercept = a / std, b - a * mean / std
    return np.where(both, slope, np.nan), np.where(both, intercept, np.nan)


def detectability(
    cosines: np.ndarray,
    present: np.ndarray,
    *,
    bootstrap: int = 500,
    seed: int = 0,
) -> pd.DataFrame:
    """Per concept (column): ``images, prevalence, auroc, auroc_low, auroc_high, auprc,
    calibration_slope, calibration_intercept`` of its cosines against its truth.

    The interval is the 2.5th and 97.5th percentile of the AUROC over ``bootstrap`` resamples
    of the images (with replacement; resamples without both classes for a concept are left out
    of its interval); NaN without resamples or when the concept has one class only.
    """
    cosines = np.asarray(cosines, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    n = len(cosines)
    rng = np.random.default_rng(seed)
    draws = np.stack(
        [auroc_columns(cosines[pick], present[pick])
         for pick in (rng.integers(0, n, n) for _ in range(bootstrap))]
    ) if bootstrap else np.full((1, cosines.shape[1]), np.nan)  # fmt: skip
    with warnings.catch_warnings():  # a concept with one class only: its interval stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(draws, [2.5, 97.5], axis=0) if bootstrap else (draws[0],) * 2
    slope, intercept = calibrate(cosines, present)
    images = present.sum(axis=0)
    return pd.DataFrame(
        {
            "images": images,
            "prevalence": images / max(n, 1),
            "auroc": auroc_columns(cosines, present),
            "auroc_low": low,
            "auroc_high": high,
            "auprc": average_precision_columns(cosines, present),
            "calibration_slope": slope,
            "calibration_intercept": intercept,
        }
    )


def control_leakage(
    cosines: np.ndarray, present: np.ndarray, controls: np.ndarray, chunk: int = 64
) -> np.ndarray:
    """Per control column: the share of findings (pairs of an image and a non-control concept
    it shows, ``present``) whose cosine the control's cosine on that image exceeds. NaN when
    there is no finding."""
    s = torch.as_tensor(np.asarray(cosines, dtype=np.float32))
    shown = torch.as_tensor(np.asarray(present, dtype=bool)) & ~torch.as_tensor(controls)[None]
    findings = int(shown.sum())
    columns = np.flatnonzero(controls)
    beaten = torch.zeros(len(columns), dtype=torch.float64)
    if not findings:
        return np.full(len(columns), np.nan)
    for start in range(0, len(columns), chunk):  # (images x controls x concepts) in pieces
        for first in range(0, len(s), 1024):
            rows = slice(first, first + 1024)
            part = s[rows, columns[start : start + chunk]]
            beats = (part[:, :, None] > s[rows, None, :]) & shown[rows, None, :]
            beaten[start : start + chunk] += beats.sum(dim=(0, 2)).double()
    return (beaten / findings).numpy()


def audit(
    dissector: Any,
    probe: Any,
    concepts: Any,
    out: str | Path | None = None,
    **options: Any,
) -> Audit:
    """Audit ``dissector`` on ``probe`` against ``concepts``; see the module docstring.

    Takes the settings of :class:`AuditConfig` as keywords (``annotation_map``, ``bootstrap``,
    ``leakage_threshold``, ``prompts``, ``cache_dir``, ...).

    Examples
    --------
    >>> found = audit("phantom-clip", "runs/demo/probe/manifest.csv",  # doctest: +SKIP
    ...               "birads+controls", out="runs/audit")
    >>> found.detectability.sort_values("auroc").head()  # doctest: +SKIP
    """
    config = AuditConfig.from_mapping(
        dict(dissector=dissector, probe=probe, concepts=concepts,
             out=str(out) if out is not None else None, **options)
    )  # fmt: skip
    return run_audit(config)


def run_audit(config: AuditConfig) -> Audit:
    """Run the audit a :class:`AuditConfig` describes (what the command line calls)."""
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if config.out:
        check_writable(config.out)
    concepts = concept_sets.load(config.concepts)
    probe = config.probe if isinstance(config.probe, Probe) else load_probe(config.probe)
    model = (
        load_dissector(config.dissector) if isinstance(config.dissector, str) else config.dissector
    )
    if getattr(model, "binary", False):
        raise MammodissectError(
            "auditing the annotation dissector against the annotations says nothing; audit a "
            "vision-language dissector"
        )
    model.preprocess = configure(
        model.preprocess, config.dissector_preprocess, config.dissector_image_size, "dissector-"
    )
    timings["load"] = round(time.perf_counter() - started, 3)

    device = resolve_device(config.device)
    settings = RecordSettings(
        cache_root=Path(config.cache_root()), batch_size=config.batch_size, device=device,
        num_workers=config.num_workers, progress=not config.quiet, voi=config.voi,
        cache_images=config.cache_images, precision=config.precision,
    )  # fmt: skip
    embedded = record_embeddings(model, probe, settings)
    timings["embed_images"] = round(time.perf_counter() - started - sum(timings.values()), 3)
    with torch.inference_mode():
        texts, _ = concept_sets.encode_concepts(
            model, concepts, config.prompts, config.lowercase, cache_root=config.cache_root()
        )
        cosines = score_matrix(model, embedded.embeddings(), texts.cpu()).numpy()
    shown, _, annotated = annotation_truth(
        probe, embedded.rows, concepts.concepts, config.annotation_map
    )
    present = np.zeros(cosines.shape, dtype=bool)
    present[:, annotated] = shown.numpy() > 0
    frame = concepts.to_frame()
    if not annotated.any():
        raise MammodissectError(
            f"no concept of {concepts.name!r} is shown by the probe's annotations; nothing to "
            "audit (map your annotation values to concept strings with --annotation-map)"
        )
    table = detectability(
        cosines[:, annotated], present[:, annotated], bootstrap=config.bootstrap, seed=config.seed
    )
    table.insert(0, "concept", frame["concept"].to_numpy()[annotated])
    for column in ("category", "broad_category", "control"):
        table.insert(table.columns.get_loc("images"), column, frame[column].to_numpy()[annotated])
    controls = np.array([c is True for c in concepts.control])
    leak = control_leakage(cosines, present, controls)
    leakage = pd.DataFrame(
        {
            "concept": frame["concept"].to_numpy()[controls],
            "category": frame["category"].to_numpy()[controls],
            "leakage": leak,
            "flagged": leak > config.leakage_threshold,
        }
    )
    mask = present[:, annotated]
    slope, intercept = calibrate(cosines[:, annotated].reshape(-1, 1), mask.reshape(-1, 1))
    timings["scores"] = round(time.perf_counter() - started - sum(timings.values()), 3)
    info = _info(config, probe, concepts, model, embedded, table, leakage, timings)
    info["calibration"] = {"slope": float(slope[0]), "intercept": float(intercept[0])}
    result = Audit(table, leakage, info)
    if config.out:
        result.out = write_audit(result, Path(config.out))
    return result


def _rate(values: pd.Series, at_least: float) -> float | None:
    known = values.dropna()
    return round(float((known >= at_least).mean()), 4) if len(known) else None


def _info(
    config: AuditConfig,
    probe: Probe,
    concepts: concept_sets.ConceptSet,
    model: Any,
    embedded: Any,
    table: pd.DataFrame,
    leakage: pd.DataFrame,
    timings: dict[str, float],
) -> dict[str, Any]:
    settings = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k not in ("probe", "out", "cache_dir")
    }
    settings["dissector"] = getattr(model, "spec", type(model).__name__)
    settings["concepts"] = concepts.name
    if config.annotation_map:
        settings["annotation_map"] = Path(config.annotation_map).name
    aurocs = table["auroc"]
    return {
        "settings": settings,
        "fingerprints": {
            "probe": probe_digest(probe),
            "concepts": concepts.fingerprint(),
            "dissector_cache": embedded.store.fingerprint,
        },
        "counts": {
            "images": len(probe),
            "images_used": len(embedded.rows),
            "images_skipped": len(embedded.skipped),
            "concepts": len(concepts),
            "annotated_concepts": len(table),
            "controls": len(leakage),
            "flagged_controls": int(leakage["flagged"].sum()),
        },
        "summary": {
            "median_auroc": None if aurocs.dropna().empty else round(float(aurocs.median()), 4),
            "share_auroc_at_least_0.9": _rate(aurocs, 0.9),
            "share_auroc_at_least_0.8": _rate(aurocs, 0.8),
            "median_leakage": None
            if leakage["leakage"].dropna().empty
            else round(float(leakage["leakage"].median()), 4),
        },
        "flagged_controls": leakage.loc[leakage["flagged"], "concept"].tolist(),
        "timings_s": timings,
    }


def write_audit(result: Audit, out: Path) -> Path:
    """Write ``detectability.csv``, ``leakage.csv``, ``audit.json`` and the figure."""
    out = check_writable(out)
    result.detectability.to_csv(out / DETECTABILITY_FILE, index=False)
    result.leakage.to_csv(out / LEAKAGE_FILE, index=False)
    (out / AUDIT_JSON).write_text(json.dumps(result.info, indent=2, default=str) + "\n")
    plot_detectability(result.detectability, out / "figures" / "detectability")
    return out
