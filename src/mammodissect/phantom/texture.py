"""Breast parenchyma: power-law (1/f^beta) noise shaped into fibroglandular tissue.

Mammographic texture has a power spectrum close to ``1/f^beta`` with ``beta`` about 3. The
fibroglandular field is isotropic power-law noise plus streaks that run towards the nipple
(anisotropic noise sampled in polar coordinates around it), biased towards the centre of the
breast and away from the subcutaneous and retroglandular fat. The composition letter sets the
share of tissue above the threshold (dense) and how much brighter dense tissue is than fat.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from mammodissect.phantom.anatomy import Anatomy
from mammodissect.phantom.raster import sigmoid, smoothstep

__all__ = ["DENSE_FRACTION", "Parenchyma", "draw_parenchyma", "power_noise"]

#: Share of the breast tissue that is dense, per composition letter (uniform in the range).
DENSE_FRACTION: dict[str, tuple[float, float]] = {
    "A": (0.03, 0.10),
    "B": (0.15, 0.30),
    "C": (0.38, 0.56),
    "D": (0.66, 0.84),
}
#: Brightness of dense tissue above fat, per composition letter.
_GLAND_CONTRAST: dict[str, tuple[float, float]] = {
    "A": (0.20, 0.26),
    "B": (0.24, 0.30),
    "C": (0.28, 0.34),
    "D": (0.31, 0.37),
}
_STREAK_GRID = (384, 96)  # angle x radius samples of the streak noise


@cache
def _spectrum_filter(
    shape: tuple[int, int], beta: float, stretch: float, band: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """Amplitude filter ``f^(-beta/2)`` on the rfft grid, kept below ``band`` x Nyquist.

    A stretch ``s`` weighs column frequencies ``s`` times more, so structures run along the
    rows (axis 1) and are ``s`` times longer than wide. Returns the amplitudes of the kept
    block, the spectrum rows it covers and its number of columns; the filter is scaled so the
    noise has unit variance.
    """
    height, width = shape
    fy = np.fft.fftfreq(height)
    fx = np.fft.rfftfreq(width)
    rows = np.flatnonzero(np.abs(fy) <= 0.5 * band)
    cols = int(np.count_nonzero(fx <= 0.5 * band))
    f2 = fy[rows, None] ** 2 + (fx[None, :cols] * stretch) ** 2 + (1.0 / max(height, width)) ** 2
    amplitude = f2 ** (-beta / 4.0)
    amplitude[fy[rows] == 0, 0] = 0.0
    weights = np.full(amplitude.shape, 2.0)
    weights[:, 0] = 1.0
    if width % 2 == 0 and cols == len(fx):
        weights[:, -1] = 1.0
    power = float((weights * amplitude**2).sum()) / (height * width) ** 2
    return (amplitude / np.sqrt(2.0 * power)).astype(np.float32), rows, cols


def power_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    beta: float,
    stretch: float = 1.0,
    band: float = 1.0,
) -> np.ndarray:
    """Zero-mean, roughly unit-variance Gaussian noise with a ``1/f^beta`` power spectrum.

    Frequencies above ``band`` times the Nyquist frequency are left out (cheaper; harmless for
    steep spectra).
    """
    amplitude, rows, cols = _spectrum_filter(shape, float(beta), float(stretch), float(band))
    pairs = rng.standard_normal((*amplitude.shape, 2), dtype=np.float32)
    block = pairs.view(np.complex64)[..., 0]
    block *= amplitude
    if cols == shape[1] // 2 + 1 and len(rows) == shape[0]:
        spectrum = block
    else:
        spectrum = np.zeros((shape[0], shape[1] // 2 + 1), dtype=np.complex64)
        spectrum[rows, :cols] = block
    return np.fft.irfft2(spectrum, s=shape).astype(np.float32)


@dataclass(eq=False)
class Parenchyma:
    """The drawn tissue of one breast.

    Attributes
    ----------
    image : numpy.ndarray
        Float32 intensities (fat, glandular tissue, pectoral muscle, skin; 0 outside).
    soft : numpy.ndarray
        Dense-tissue membership in [0, 1] (0.5 on the dense/fat boundary).
    dense : numpy.ndarray
        Bool mask of fibroglandular (dense) tissue.
    tissue : numpy.ndarray
        Bool mask of breast tissue: breast minus pectoral muscle and implant.
    fat_level, gland_contrast : float
        Intensity of fat, and how much brighter dense tissue is.
    fine : numpy.ndarray
        A fine-grained noise field (unit variance) the findings reuse for inner texture.
    """

    image: np.ndarray
    soft: np.ndarray
    dense: np.ndarray
    tissue: np.ndarray
    fat_level: float
    gland_contrast: float
    fine: np.ndarray


def draw_parenchyma(
    rng: np.random.Generator,
    anatomy: Anatomy,
    density: str,
    *,
    exclude: np.ndarray | None = None,
) -> Parenchyma:
    """Draw fat, fibroglandular tissue, skin and pectoral muscle.

    ``exclude`` (an implant) is left out of the tissue the dense share is measured on.
    """
    shape = anatomy.shape
    height, width = shape
    k = anatomy.scale
    tissue = anatomy.breast & ~anatomy.pectoral
    if exclude is not None:
        tissue &= ~exclude

    cloud = power_noise(rng, shape, 3.0, band=0.5)
    streaks = _streaks(rng, anatomy)
    fine = power_noise(rng, shape, 1.6)
    x_frac = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / np.float32(anatomy.a)
    envelope = smoothstep(0.99, 0.68, anatomy.rho)
    if anatomy.view == "MLO" and anatomy.pectoral_q is not None:
        envelope = envelope * smoothstep(1.0, 1.6, anatomy.pectoral_q)
    else:
        envelope = envelope * smoothstep(0.0, 0.22, x_frac)
    ny = anatomy.nipple_yx[0]
    rows = np.arange(height, dtype=np.float32)[:, None]
    upper = np.clip((ny - rows) / (0.5 * (anatomy.b_up + anatomy.b_down)), -1, 1)
    field = 0.7 * cloud + 0.6 * streaks + 2.0 * envelope + 0.25 * upper

    lo, hi = DENSE_FRACTION[density]
    fraction = rng.uniform(lo, hi)
    n_tissue = int(np.count_nonzero(tissue))
    if n_tissue:
        # Rank among tissue pixels, with everything else pushed below them.
        ranked = np.where(tissue, field, np.float32(-np.inf)).ravel()
        rank = field.size - n_tissue + int(np.clip((1.0 - fraction) * n_tissue, 0, n_tissue - 1))
        threshold = float(np.partition(ranked, rank)[rank])
    else:
        threshold = float(field.max())
    excess = field - np.float32(threshold)
    soft = sigmoid(excess / np.float32(0.32)).astype(np.float32)
    dense = tissue & (excess > 0)

    fat = float(rng.uniform(0.24, 0.31))
    contrast = float(rng.uniform(*_GLAND_CONTRAST[density]))
    net = np.exp(-((fine / np.float32(0.25)) ** 2))  # thin reticular septa between fat lobules
    image = (
        fat
        + contrast * soft * (0.8 + 0.2 * np.tanh(0.8 * excess))
        + contrast * 0.12 * streaks * soft
        + 0.02 * fine * (0.5 + soft)
        + 0.025 * cloud * (1.0 - soft)
        + 0.035 * net * (1.0 - soft)
    )
    thickness = 0.72 + 0.28 * smoothstep(0.0, 0.09 * anatomy.a, anatomy.dist)
    image = image * thickness

    if anatomy.view == "MLO" and anatomy.pectoral_q is not None:
        image = _pectoral(rng, anatomy, image, fine)
    skin_level = fat + rng.uniform(0.14, 0.22)
    skin = np.clip(1.6 * k - anatomy.dist, 0.0, 1.0) * (anatomy.rho > 0.7) * ~anatomy.nipple
    image = image * (1 - skin) + skin_level * skin
    nipple_level = skin_level + rng.uniform(0.0, 0.06)
    image = np.where(anatomy.nipple, nipple_level + 0.015 * fine, image)
    image = np.where(anatomy.breast, image, 0.0).astype(np.float32)
    return Parenchyma(
        image=image,
        soft=soft,
        dense=dense,
        tissue=tissue,
        fat_level=fat,
        gland_contrast=contrast,
        fine=fine,
    )


@cache
def _polar_lookup(
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear lookup into the streak grid for every offset from the nipple.

    Row ``dy + H`` and column ``dx + W`` hold the pixel at offset ``(dy, dx)`` from the nipple.
    Returns the flat grid index of the upper-left neighbour, the two interpolation weights and
    a weight that fades the streaks out next to the nipple (where they would all converge).
    """
    height, width = shape
    grid_h, grid_w = _STREAK_GRID
    dy = np.arange(-height, height + 1, dtype=np.float32)[:, None]
    back = -np.arange(-width, width + 1, dtype=np.float32)[None, :]  # towards the chest wall
    radius = np.sqrt(dy * dy + back * back) / np.float32(0.85 * width)
    angle = np.arctan2(dy, np.maximum(back, 0.0) + 1.0)
    fy = np.clip(
        (angle + np.float32(np.pi / 2)) * np.float32((grid_h - 1) / np.pi), 0, grid_h - 1.001
    )
    fx = np.clip(radius * np.float32((grid_w - 1) / 1.5), 0, grid_w - 1.001)
    y0 = fy.astype(np.int32)
    x0 = fx.astype(np.int32)
    fade = smoothstep(0.0, 0.22, radius).astype(np.float32)
    return (
        y0 * np.int32(grid_w) + x0,
        (fy - y0).astype(np.float32),
        (fx - x0).astype(np.float32),
        0.25 + 0.75 * fade,
    )


def _streaks(rng: np.random.Generator, anatomy: Anatomy) -> np.ndarray:
    """Noise elongated along lines that converge on the nipple (ducts and trabeculae)."""
    grid = power_noise(rng, _STREAK_GRID, 2.6, stretch=6.0, band=0.6).ravel()
    height, width = anatomy.shape
    index, ty, tx, fade = _polar_lookup(anatomy.shape)
    ny = int(np.clip(round(anatomy.nipple_yx[0]), 0, height - 1))
    nx = int(np.clip(round(anatomy.nipple_yx[1]), 0, width - 1))
    box = (slice(height - ny, 2 * height - ny), slice(width - nx, 2 * width - nx))
    index, ty, tx, fade = index[box], ty[box], tx[box], fade[box]
    top = grid.take(index)
    top += (grid.take(index + 1) - top) * tx
    bottom = grid.take(index + _STREAK_GRID[1])
    bottom += (grid.take(index + _STREAK_GRID[1] + 1) - bottom) * tx
    return (top + (bottom - top) * ty) * fade


def _pectoral(
    rng: np.random.Generator, anatomy: Anatomy, image: np.ndarray, fine: np.ndarray
) -> np.ndarray:
    """Blend in the pectoral muscle: bright, faintly striated, with a soft edge."""
    q = anatomy.pectoral_q
    assert q is not None
    level = rng.uniform(0.62, 0.78)
    ph, pw = anatomy.pectoral_size
    edge = sigmoid((1.0 - q) * np.float32(min(ph, pw) / 1.5))
    corner = 1.0 + 0.1 * (1.0 - np.clip(q, 0, 1))
    fibres = power_noise(rng, anatomy.shape, 2.4, stretch=3.0, band=0.5)
    muscle = level * corner + 0.02 * fine + 0.03 * fibres
    return image * (1 - edge) + muscle * edge
