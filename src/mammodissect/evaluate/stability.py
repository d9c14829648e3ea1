"""Label stability: does a unit keep its top-1 concept when the probe changes a little?

Two perturbations, each compared with the run's own top-1 label of every unit (the concept
column of S that the run's similarity function scores highest, as
:func:`mammodissect.evaluate.null.top1` gives it):

* **Bootstrap** (:func:`bootstrap_stability`): resample ``i`` draws N image rows with
  replacement from ``numpy.random.default_rng([seed, i])``; the same rows are taken from S
  (N x M) and A (N x K), the similarity function is applied with the run's parameters, and a
  unit's *bootstrap stability* is the fraction of resamples whose top-1 concept is the run's.
  No forward pass: S and A come from the run's caches.
* **Noise** (:func:`noise_stability`): the probe is recorded again through target and
  dissector with Gaussian noise of standard deviation ``sigma`` added to every pixel of each
  model's prepared image, in units of that image's full intensity range (max - min), clipped
  back to the range; the noise of probe row ``r`` comes from
  ``numpy.random.default_rng([seed, r])`` (see :func:`mammodissect.record.record` for the
  exact definition). S and A are recomputed over the run's rows, in the run's order, and a
  unit *survives* at ``sigma`` when its top-1 concept is still the run's. The noisy
  recordings live in the fingerprinted caches of :func:`~mammodissect.record.record`, so an
  interrupted evaluation resumes and a second one reuses them. Reference point: noise of
  sigma 0.02 on the probe images flips up to 28% of CLIP-Dissect's labels ("Corrupting
  Neuron Explanations", ICCV 2023).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mammodissect.concepts.encode import score_matrix
from mammodissect.errors import MammodissectError
from mammodissect.evaluate.null import top1
from mammodissect.models.base import Dissector, Target
from mammodissect.probe import Probe
from mammodissect.record import Recording, RecordSettings, record

__all__ = ["NoiseStability", "bootstrap_stability", "noise_stability"]

log = logging.getLogger(__name__)

#: Noise levels evaluated by default (fractions of the image's intensity range).
SIGMAS: tuple[float, ...] = (0.01, 0.02)


def _check_labels(labels: Any, units: int, what: str) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (units,):
        raise MammodissectError(f"{what}: {labels.shape[0]} labels for {units} units")
    return labels


def bootstrap_stability(
    similarity: Callable[..., torch.Tensor],
    cosines: torch.Tensor,
    activations: torch.Tensor,
    params: dict[str, Any],
    labels: Sequence[int] | np.ndarray,
    *,
    reps: int = 20,
    seed: int = 0,
    device: torch.device | str = "cpu",
    quiet: bool = False,
) -> np.ndarray:
    """Per unit, the fraction of bootstrap resamples of the images that keep its top-1 label.

    Parameters
    ----------
    similarity:
        The run's similarity function (``f(S, A, **params) -> K x M``).
    cosines:
        S, (N, M) image-concept cosines of the dissector.
    activations:
        A, (N, K) pooled activations of one layer, rows in the same image order as S.
    params:
        The run's similarity parameters.
    labels:
        (K,) each unit's top-1 concept (column of S) in the run.
    reps:
        Number of resamples.
    seed:
        Base seed; resample ``i`` uses ``numpy.random.default_rng([seed, i])``.
    device:
        Where the similarity is computed.
    quiet:
        No progress bar.

    Returns
    -------
    numpy.ndarray
        (K,) float64 in [0, 1].

    Raises
    ------
    MammodissectError
        When ``reps`` < 1 or ``labels`` has not one entry per unit.
    """
    if reps < 1:
        raise MammodissectError(f"bootstrap resamples must be >= 1, got {reps}")
    n, units = activations.shape
    labels = _check_labels(labels, units, "bootstrap stability")
    kept = np.zeros(units)
    for i in tqdm(range(reps), desc="bootstrap", unit="resample", leave=False, disable=quiet):
        rows = torch.from_numpy(np.random.default_rng([seed, i]).integers(0, n, n))
        kept += top1(similarity, cosines[rows], activations[rows], params, device)[1] == labels
    return kept / reps


@dataclass
class NoiseStability:
    """The outcome at one noise level.

    Attributes
    ----------
    sigma:
        Noise standard deviation, a fraction of each image's intensity range.
    survived:
        ``{layer: (K,) bool}``: the unit's top-1 concept with noise is the run's.
    labels:
        ``{layer: (K,) int}``: the top-1 concept (column of S) with noise.
    caches:
        How the noisy recording's caches were found: ``{"target": ..., "dissector": ...}``,
        each ``recorded``, ``resumed`` or ``reused``.
    """

    sigma: float
    survived: dict[str, np.ndarray] = field(default_factory=dict)
    labels: dict[str, np.ndarray] = field(default_factory=dict)
    caches: dict[str, str] = field(default_factory=dict)

    def rate(self, layer: str) -> float:
        """The fraction of ``layer``'s units whose label survived."""
        return float(np.mean(self.survived[layer]))


def _positions(recording: Recording, rows: np.ndarray, probe: Probe, sigma: float) -> np.ndarray:
    """Where the run's ``rows`` sit among the noisy recording's usable rows (all must)."""
    missing = np.setdiff1d(rows, recording.rows)
    if len(missing):
        named = "; ".join(
            f"{probe.items[r].relpath}: {recording.skipped.get(int(r), 'not recorded')}"
            for r in missing[:5]
        )
        raise MammodissectError(
            f"the noisy pass (sigma {sigma:g}) could not use {len(missing)} of the run's "
            f"images ({named}); check that the probe files are unchanged and readable"
        )
    return np.searchsorted(recording.rows, rows)


def noise_stability(
    target: Target,
    dissector: Dissector,
    probe: Probe,
    rows: Sequence[int] | np.ndarray,
    layers: list[str],
    texts: torch.Tensor,
    similarity: Callable[..., torch.Tensor],
    params: dict[str, Any],
    labels: dict[str, np.ndarray],
    *,
    sigmas: Sequence[float] = SIGMAS,
    seed: int = 0,
    settings: RecordSettings,
    calibrate: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[float, NoiseStability]:
    """Record the probe with Gaussian noise and check which units keep their top-1 label.

    Parameters
    ----------
    target, dissector:
        The run's loaded models.
    probe:
        The run's probe.
    rows:
        The probe rows the run used, in the order of its S and A (``RunSource.rows``).
    layers:
        The run's layers (resolved module names).
    texts:
        (M, D) the dissector's concept text embeddings, in the run's concept order.
    similarity, params:
        The run's similarity function and parameters.
    labels:
        ``{layer: (K,)}`` each unit's top-1 concept (column of S) in the run.
    sigmas:
        Noise levels, fractions of each image's intensity range (each > 0).
    seed:
        Noise seed: probe row ``r`` gets ``numpy.random.default_rng([seed, r])``.
    settings:
        The run's recording settings (:class:`~mammodissect.record.RecordSettings`; all but
        ``batch_size``, ``device``, ``num_workers`` and ``progress`` must be the run's for the
        comparison to measure the noise alone); the noisy recordings are cached under their
        own fingerprints in its cache folder.
    calibrate:
        What the run did to S after the cosines (``run --calibrated``: the audit's
        probabilities); None for raw cosines.

    Returns
    -------
    dict
        ``{sigma: NoiseStability}`` in the order of ``sigmas``.

    Raises
    ------
    MammodissectError
        When a sigma is not > 0, a layer's labels do not match its units, or the noisy pass
        cannot read one of the run's images.
    """
    rows = np.asarray(rows, dtype=np.int64)
    if any(not sigma > 0 for sigma in sigmas):
        raise MammodissectError(f"noise sigmas must be > 0, got {list(sigmas)}")
    results: dict[float, NoiseStability] = {}
    for sigma in sigmas:
        noisy = dataclasses.replace(settings, noise=float(sigma), noise_seed=seed)
        recording = record(target, dissector, probe, layers, noisy)
        if recording is None:
            raise MammodissectError("noise stability runs in one process, not under torchrun")
        at = _positions(recording, rows, probe, sigma)
        cosines = score_matrix(dissector, recording.embeddings()[at], texts.cpu())
        if calibrate is not None:  # the run's S was the audit's probabilities
            cosines = calibrate(cosines)
        result = NoiseStability(
            float(sigma),
            caches={
                "target": recording.stats["target_cache"],
                "dissector": recording.stats["dissector_cache"],
            },
        )
        for layer in layers:
            activations = torch.from_numpy(recording.activations(layer)[at])
            run = _check_labels(labels[layer], activations.shape[1], f"layer {layer!r}")
            result.labels[layer] = top1(similarity, cosines, activations, params, settings.device)[
                1
            ]
            result.survived[layer] = result.labels[layer] == run
            log.info(
                "noise sigma %g: %s keeps %.1f%% of its labels",
                sigma, layer, 100 * result.rate(layer),
            )  # fmt: skip
        results[float(sigma)] = result
    return results
