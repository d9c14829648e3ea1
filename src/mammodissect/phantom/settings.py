"""What a phantom set holds: image size, the normal fraction and each finding family's rate.

:class:`PhantomSettings` states *marginal* rates: ``rates["mass"] = 0.15`` means about 15 % of
all images show a mass. :func:`family_sampler` turns them into a draw for one image: normal with
probability ``normal_fraction``, else at least one finding family, the families independent
given "at least one", with per-family probabilities solved so that the marginals come out as
asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from mammodissect.errors import MammodissectError
from mammodissect.phantom.vocabulary import DENSITIES, FAMILIES

__all__ = ["DEFAULT_RATES", "FamilySampler", "PhantomSettings", "expected_rates"]

#: Default share of images showing each finding family (every one above 8 %).
DEFAULT_RATES: dict[str, float] = {
    "mass": 0.15,
    "calcification": 0.16,
    "suspicious_calcification": 0.09,
    "architectural_distortion": 0.09,
    "asymmetry": 0.10,
    "skin_thickening": 0.09,
    "nipple_retraction": 0.09,
    "lymph_node": 0.11,
    "biopsy_clip": 0.09,
    "implant": 0.09,
}

#: Families drawn independently; ``suspicious_calcification`` is drawn given ``calcification``.
_INDEPENDENT = tuple(family for family in FAMILIES if family != "suspicious_calcification")
_MIN_SIZE = (64, 40)


@dataclass(frozen=True)
class PhantomSettings:
    """Settings of a phantom set (hashable, so generation can be cached on them).

    Attributes
    ----------
    size : tuple of int
        ``(height, width)`` in pixels; default 320 x 192, the aspect of 1520 x 912. Anatomy and
        lesions scale with the height.
    normal_fraction : float
        Share of images with no finding at all (screening-like; default 0.4).
    rates : mapping or None
        Finding family -> share of *all* images showing it. Families left out keep
        :data:`DEFAULT_RATES`; ``None`` keeps them all. ``suspicious_calcification`` counts
        among ``calcification`` (it cannot exceed it), and the rates of the other families must
        add up to at least ``1 - normal_fraction`` (every abnormal image has a finding).
    densities : tuple of float
        Weights of composition A, B, C, D (default 0.1, 0.4, 0.4, 0.1, as in screening).
    """

    size: tuple[int, int] = (320, 192)
    normal_fraction: float = 0.4
    rates: Mapping[str, float] | None = field(default=None, hash=False)
    densities: tuple[float, float, float, float] = (0.1, 0.4, 0.4, 0.1)

    def __post_init__(self) -> None:
        """Validate and normalise the fields."""
        try:
            height, width = (int(v) for v in self.size)
        except (TypeError, ValueError):
            raise MammodissectError(
                f"phantom size must be (height, width), got {self.size!r}"
            ) from None
        if height < _MIN_SIZE[0] or width < _MIN_SIZE[1]:
            raise MammodissectError(
                f"phantom size {height} x {width} is too small (at least "
                f"{_MIN_SIZE[0]} x {_MIN_SIZE[1]})"
            )
        object.__setattr__(self, "size", (height, width))
        normal = float(self.normal_fraction)
        if not 0.0 <= normal <= 1.0:
            raise MammodissectError(f"normal_fraction must be in [0, 1], got {normal}")
        object.__setattr__(self, "normal_fraction", normal)
        rates = dict(DEFAULT_RATES)
        for family, value in dict(self.rates or {}).items():
            if family not in rates:
                raise MammodissectError(
                    f"unknown finding family '{family}' in rates (known: {', '.join(FAMILIES)})"
                )
            value = float(value)
            if not 0.0 <= value <= 1.0:
                raise MammodissectError(f"rate of '{family}' must be in [0, 1], got {value}")
            rates[family] = value
        if rates["suspicious_calcification"] > rates["calcification"] + 1e-12:
            raise MammodissectError(
                "rate of 'suspicious_calcification' cannot exceed that of 'calcification' "
                "(suspicious calcifications are calcifications)"
            )
        object.__setattr__(self, "rates", rates)
        weights = tuple(float(v) for v in self.densities)
        if len(weights) != len(DENSITIES) or min(weights) < 0 or sum(weights) <= 0:
            raise MammodissectError(
                f"densities must be four non-negative weights for A-D, got {self.densities!r}"
            )
        object.__setattr__(self, "densities", weights)
        self.sampler  # noqa: B018 - solve the rates now so bad settings fail early

    def __hash__(self) -> int:
        """Hash of all fields, rates included."""
        rates = tuple(sorted(dict(self.rates or {}).items()))
        return hash((self.size, self.normal_fraction, rates, self.densities))

    def __eq__(self, other: object) -> bool:
        """Equal when every field is equal."""
        if not isinstance(other, PhantomSettings):
            return NotImplemented
        return (
            self.size == other.size
            and self.normal_fraction == other.normal_fraction
            and dict(self.rates or {}) == dict(other.rates or {})
            and self.densities == other.densities
        )

    @cached_property
    def sampler(self) -> FamilySampler:
        """The per-image family draw that realises these rates."""
        return FamilySampler.solve(self.normal_fraction, dict(self.rates or {}))


@dataclass(frozen=True)
class FamilySampler:
    """Draws the finding families of one image.

    Attributes
    ----------
    normal_fraction : float
        Probability of an image without findings.
    probabilities : tuple of float
        Per-family probability (aligned with the independent families) before conditioning on
        "at least one".
    suspicious_given_calcification : float
        Probability that an image with calcifications has suspicious ones.
    exclusive : bool
        True when the rates leave room for exactly one family per abnormal image; then one
        family is drawn in proportion to its rate.
    """

    normal_fraction: float
    probabilities: tuple[float, ...]
    suspicious_given_calcification: float
    exclusive: bool = False

    @classmethod
    def solve(cls, normal_fraction: float, rates: dict[str, float]) -> FamilySampler:
        """Find per-family probabilities whose conditioned marginals equal ``rates``.

        With probabilities ``q = c * r`` the marginal of family *f* is
        ``(1 - n) * q_f / P(any)``; that equals ``r_f`` when
        ``c * (1 - n) = 1 - prod(1 - c * r)``, solved for ``c`` by bisection.
        """
        r = np.array([rates[f] for f in _INDEPENDENT], dtype=float)
        calc = rates["calcification"]
        suspicious = rates["suspicious_calcification"] / calc if calc > 0 else 0.0
        abnormal = 1.0 - normal_fraction
        total = float(r.sum())
        if abnormal <= 1e-12:
            return cls(normal_fraction, tuple(0.0 for _ in r), suspicious)
        if total < abnormal * (1 - 1e-9):
            raise MammodissectError(
                f"finding rates add up to {total:.3f}, fewer than the {abnormal:.3f} of images "
                "that are not normal (each needs a finding); raise the rates or normal_fraction"
            )
        if total <= abnormal * (1 + 1e-6):
            return cls(normal_fraction, tuple(r / total), suspicious, exclusive=True)

        def excess(c: float) -> float:
            return 1.0 - float(np.prod(1.0 - c * r)) - c * abnormal

        high = 1.0 / float(r.max())
        if excess(high) > 1e-9:
            worst = _INDEPENDENT[int(r.argmax())]
            raise MammodissectError(
                f"rate of '{worst}' ({r.max():.3f}) is too high for normal_fraction "
                f"{normal_fraction:.3f}: lower it or the normal fraction"
            )
        low = 0.0
        for _ in range(80):
            middle = 0.5 * (low + high)
            if excess(middle) > 0:
                low = middle
            else:
                high = middle
        c = 0.5 * (low + high)
        return cls(normal_fraction, tuple(np.clip(c * r, 0.0, 1.0)), suspicious)

    def draw(self, rng: np.random.Generator) -> set[str]:
        """Draw the families of one image (empty for a normal image)."""
        if rng.random() < self.normal_fraction:
            return set()
        q = np.asarray(self.probabilities)
        if self.exclusive:
            present = [int(rng.choice(len(q), p=q))]
        else:
            # Exact draw of independent Bernoullis conditioned on at least one: pick the first
            # present family by its conditional probability, then draw the later ones freely.
            none_before = np.concatenate([[1.0], np.cumprod(1.0 - q)[:-1]])
            first = q * none_before
            first_index = int(rng.choice(len(q), p=first / first.sum()))
            later = rng.random(len(q)) < q
            present = [first_index] + [i for i in range(first_index + 1, len(q)) if later[i]]
        families = {_INDEPENDENT[i] for i in present}
        if "calcification" in families and rng.random() < self.suspicious_given_calcification:
            families.add("suspicious_calcification")
        return families


def expected_rates(settings: PhantomSettings) -> dict[str, float]:
    """The rate of each family the sampler realises (equal to the settings' rates)."""
    sampler = settings.sampler
    q = np.asarray(sampler.probabilities)
    abnormal = 1.0 - sampler.normal_fraction
    if abnormal <= 0:
        return dict.fromkeys(FAMILIES, 0.0)
    share = 1.0 if sampler.exclusive else 1.0 / (1.0 - float(np.prod(1.0 - q)))
    marginal = abnormal * q * share
    out = dict(zip(_INDEPENDENT, (float(v) for v in marginal), strict=True))
    out["suspicious_calcification"] = out["calcification"] * sampler.suspicious_given_calcification
    return {family: out[family] for family in FAMILIES}
