"""``EvaluateConfig``: the settings of an evaluation, each default written once.

``evaluate(run_dir, config, **options)``, the ``evaluate`` mapping of a study file and the
flags of ``mammodissect evaluate`` (derived with :func:`mammodissect.options.add_flags`) all
take these names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mammodissect.errors import MammodissectError
from mammodissect.options import check_settings, numbers, setting, texts, whole, within

__all__ = ["EvaluateConfig"]


@dataclass(frozen=True)
class EvaluateConfig:
    """How :func:`mammodissect.evaluate.evaluate` checks a run's labels; see
    ``mammodissect evaluate --help`` for each field. ``probe``, ``target`` and ``dissector``
    are specs or paths on the command line; the Python API also takes loaded objects."""

    probe: Any = setting(None, "the run's probe (needed for grounding)")
    target: Any = setting(None, "the run's target spec (default: run.json's)")
    dissector: Any = setting(None, "the run's dissector spec (default: run.json's)")
    cache_dir: str | None = setting(None, "the cache folder the run used (default: the default)")
    null_seeds: int = setting(5, "permutations per layer for the null baseline", check=whole(1))
    quantile: float = setting(
        0.995,
        "per-unit activation quantile thresholding the maps",
        check=within(0, 1, open_ends=True),
    )
    iou_threshold: float = setting(
        0.04, "least IoU for a unit to count as grounded", check=within(0, 1)
    )
    auroc_threshold: float = setting(
        0.75,
        "least AUROC for a unit to be grounded in a density/BI-RADS class",
        check=within(0, 1),
    )
    head_task: str | None = setting(
        None,
        "the classifier head's task (density, birads, mass, calcification or a column; "
        "default: the target's, for classifier: targets)",
    )
    head_classes: tuple[str, ...] | None = setting(
        None,
        "the head's classes in unit order, comma-separated (e.g. A,B,C,D; no,yes for a "
        "one-unit binary head)",
        parse=texts,
    )
    stability_reps: int = setting(
        20, "bootstrap resamples of the probe images for label stability", check=whole(0)
    )
    noise: tuple[float, ...] = setting(
        (0.01, 0.02),
        "Gaussian noise levels (fractions of the image's intensity range) for label "
        "stability, comma-separated; each records the probe again (cached); 'none' skips",
        parse=numbers,
    )
    max_samples: int = setting(
        16384,
        "map positions sampled per unit for the quantile (exact below it)",
        check=whole(1),
    )
    max_side: int = setting(320, "longest side of the frame IoU is computed in", check=whole(1))
    bootstrap: int = setting(
        1000, "bootstrap resamples of units for the 95% intervals", check=whole(0)
    )
    seed: int = setting(0, "seed of permutations, position samples and bootstrap")
    device: str = setting("auto", "auto, cpu or cuda[:N], for the grounding pass")
    batch_size: int | None = setting(
        None, "grounding batch size (default: the run's)", check=whole(1)
    )
    write: bool = True
    quiet: bool = setting(False, "no progress bars")

    def __post_init__(self) -> None:
        check_settings(self, "evaluate")
        sigmas = tuple(self.noise or ())
        if any(isinstance(s, bool) or not isinstance(s, int | float) or s <= 0 for s in sigmas):
            raise MammodissectError(f"evaluate noise levels must be numbers > 0, got {sigmas!r}")
        object.__setattr__(self, "noise", sigmas)
        if self.head_classes is not None:
            object.__setattr__(self, "head_classes", tuple(str(c) for c in self.head_classes))
