"""Similarity functions: how strongly each unit of a layer matches each concept.

Every function takes

* ``S``, an ``N x M`` matrix (images x concepts) of image-text cosine similarities, and
* ``A``, an ``N x K`` matrix (images x units) of unit activations on the same images,

and returns a ``K x M`` float32 :class:`torch.Tensor` (units x concepts) of scores on the
compute device; higher means a better match. Inputs may be torch tensors or numpy arrays of
any real dtype; everything is computed in float32.

Conventions shared by all functions
-----------------------------------
Top images
    ``B_k`` is the list of unit ``k``'s top images, highest activation first. It is chosen
    deterministically, as by a *stable* descending sort of column ``k`` of ``A``: images with
    equal activations are ranked by lower image index first (``-0.0`` and ``0.0`` are equal).
    Any sort by ``S`` (in :func:`rank_reorder`) is likewise stable.
Device
    ``device=None`` computes on the device of ``S`` if it is a torch tensor, else on the CPU;
    ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a :class:`torch.device` choose explicitly.
Memory
    Work is vectorised over chunks of units (never a Python loop per unit). ``chunk_size``
    fixes the number of units per chunk; otherwise chunks are sized so that their temporary
    buffers stay within ``max_memory_mb`` (on the CPU the gather kernels also cap a chunk at
    about 32 MB, which is faster because it stays in cache). Besides the inputs, their float32
    copies on the device (none when they already are float32 there) and the ``K x M`` result,
    the functions hold one ``N x M`` matrix (the softmax or the transformed ``S``; a few while
    it is being computed). Results do not depend on the chunking: bitwise for the top-image
    kernels, to float32 rounding for the cosine ones (their matrix product is blocked by the
    BLAS according to the chunk's shape). A layer of 2,048 units x 20,000 images x 1,000
    concepts runs in about 1.2 GB of resident memory, inputs included.
Validation
    ``S`` and ``A`` must be 2-D with the same number of rows ``N >= 1``, ``M >= 1`` concepts,
    ``K >= 1`` units and only finite values; otherwise :class:`MammodissectError` is raised.
    A ``top_k`` larger than ``N`` is clamped to ``N`` with a logged warning.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable, Iterator
from typing import TypeAlias

import numpy as np
import torch

from mammodissect.errors import MammodissectError

__all__ = [
    "SIMILARITIES",
    "auprc",
    "correlation",
    "cos_similarity",
    "cos_similarity_cubed",
    "get_similarity",
    "rank_reorder",
    "soft_wpmi",
    "wpmi",
]

logger = logging.getLogger(__name__)

Matrix: TypeAlias = torch.Tensor | np.ndarray
DeviceLike: TypeAlias = str | torch.device | None

_MB = 1 << 20
# On the CPU the gather kernels run fastest on chunks that stay roughly cache sized.
_CPU_CHUNK_BYTES = 32 * _MB
# Cap on the temporary boolean mask used to look for non-finite input values.
_FINITE_CHECK_BYTES = 16 * _MB
_NORM_FLOOR = 1e-12
_CUBED_NORM_FLOOR = 1e-3
_BASELINE_FLOOR = 1e-12
_MEAN_S_FLOOR = 1e-6


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _resolve_device(S: object, device: DeviceLike) -> torch.device:
    if device is None:
        return S.device if isinstance(S, torch.Tensor) else torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise MammodissectError(
            f"device {device!r} is not a valid torch device; use 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MammodissectError(
            f"device {str(dev)!r} was requested but CUDA is not available; pass device='cpu'"
        )
    return dev


def _first_nonfinite(t: torch.Tensor) -> tuple[int, tuple[int, int]] | None:
    """``None`` if all entries are finite, else ``(count, (row, col) of the first one)``."""
    # min and max propagate NaN and reach +-inf, so this one pass without temporaries is exact
    low, high = torch.aminmax(t)
    if math.isfinite(float(low)) and math.isfinite(float(high)):
        return None
    n_rows, n_cols = t.shape
    block = max(1, _FINITE_CHECK_BYTES // max(1, n_cols))
    count = 0
    first: tuple[int, int] | None = None
    for start in range(0, n_rows, block):
        bad = ~torch.isfinite(t[start : start + block])
        n_bad = int(bad.sum())
        if n_bad:
            if first is None:
                row, col = (int(v) for v in bad.nonzero()[0])
                first = (start + row, col)
            count += n_bad
    return None if first is None else (count, first)


def _as_matrix(x: object, name: str, axes: str, device: torch.device) -> torch.Tensor:
    """Convert ``x`` to a 2-D float32 tensor on ``device`` (no copy when already so)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_complex():
            raise MammodissectError(f"{name} must be real-valued; got dtype {t.dtype}")
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise MammodissectError(
                f"{name} must be a numpy array or torch tensor; could not convert "
                f"{type(x).__name__}: {exc}"
            ) from exc
        if arr.dtype.kind not in "biuf":
            raise MammodissectError(f"{name} must be numeric; got numpy dtype {arr.dtype}")
        if arr.ndim != 2:
            raise MammodissectError(
                f"{name} must be a 2-D matrix ({axes}); got {arr.ndim}-D with shape {arr.shape}"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.ascontiguousarray(arr, dtype=np.float32)
        t = torch.from_numpy(arr)
    if t.ndim != 2:
        raise MammodissectError(
            f"{name} must be a 2-D matrix ({axes}); got {t.ndim}-D with shape {tuple(t.shape)}"
        )
    return t.to(device=device, dtype=torch.float32)


def _prepare(S: Matrix, A: Matrix, device: DeviceLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``S`` (N x M) and ``A`` (N x K) and return them as float32 tensors on the device."""
    dev = _resolve_device(S, device)
    s = _as_matrix(S, "S", "images x concepts", dev)
    a = _as_matrix(A, "A", "images x units", dev)
    if s.shape[0] != a.shape[0]:
        raise MammodissectError(
            f"S has {s.shape[0]} rows (images) but A has {a.shape[0]}; "
            "they must describe the same images in the same order"
        )
    if s.shape[0] == 0:
        raise MammodissectError("S and A have no rows (images); at least one image is needed")
    if s.shape[1] == 0:
        raise MammodissectError("S has no columns (concepts); at least one concept is needed")
    if a.shape[1] == 0:
        raise MammodissectError("A has no columns (units); at least one unit is needed")
    for name, t in (("S", s), ("A", a)):
        found = _first_nonfinite(t)
        if found is not None:
            count, (row, col) = found
            raise MammodissectError(
                f"{name} contains {count} non-finite value(s) (NaN or infinity, possibly after "
                f"conversion to float32), the first at row {row}, column {col}; "
                "all values must be finite"
            )
    return s, a


def _check_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise MammodissectError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _check_float(
    value: object,
    name: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise MammodissectError(f"{name} must be a number; got {value!r}") from exc
    too_low = v <= low if low_open else v < low
    if not math.isfinite(v) or too_low or v > high:
        lo = "(" if low_open else "["
        raise MammodissectError(f"{name} must be a finite number in {lo}{low}, {high}]; got {v!r}")
    return v


def _clamp_top_k(top_k: object, n_images: int, func: str) -> int:
    k = _check_int(top_k, "top_k")
    if n_images < k:
        logger.warning(
            "%s: top_k=%d is larger than the number of images (%d); using top_k=%d",
            func,
            k,
            n_images,
            n_images,
        )
        return n_images
    return k


def _units_per_chunk(
    per_unit_bytes: int,
    n_units: int,
    chunk_size: int | None,
    max_memory_mb: float,
    device: torch.device,
    *,
    cache_cap: bool = False,
) -> int:
    """Units per chunk: ``chunk_size`` if given, else as many as fit in the memory budget."""
    if chunk_size is not None:
        return min(_check_int(chunk_size, "chunk_size"), n_units)
    budget = _check_float(max_memory_mb, "max_memory_mb", low=0.0, low_open=True) * _MB
    if cache_cap and device.type == "cpu":
        budget = min(budget, _CPU_CHUNK_BYTES)
    return max(1, min(n_units, int(budget // max(1, per_unit_bytes))))


# --------------------------------------------------------------------------------------------
# Deterministic top-image selection
# --------------------------------------------------------------------------------------------


def _stable_top_indices(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` largest entries of each row, ties to the lower index first.

    Each float32 value is mapped to an int32 with the same order, then combined with its
    reversed position into a unique int64 key, so an ordinary top-k is exact and deterministic.
    """
    n = rows.shape[1]
    bits = (rows + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats: reverse order
    reverse_pos = torch.arange(n - 1, -1, -1, device=rows.device, dtype=torch.int64)
    keys = bits.to(torch.int64) * (1 << 32) + reverse_pos
    return torch.topk(keys, k, dim=1, largest=True, sorted=True).indices


def _top_indices(rows: torch.Tensor, k: int) -> torch.Tensor:
    """``(c, N)`` activations -> ``(c, k)`` indices of a stable descending sort, first ``k``.

    A plain top-k is used where it is unambiguous: the ``k + 1`` largest values strictly
    decrease, so neither the order of the top ``k`` nor the cut after them has a tie. Rows with
    ties go through the exact keyed path.
    """
    n = rows.shape[1]
    values, idx = torch.topk(rows, min(k + 1, n), dim=1, largest=True, sorted=True)
    idx = idx[:, :k]
    tied = ~(values[:, :-1] > values[:, 1:]).all(dim=1)
    if bool(tied.any()):
        which = tied.nonzero().squeeze(1)
        idx[which] = _stable_top_indices(rows[which], k)
    return idx


def _copy_columns(A: torch.Tensor, start: int, out: torch.Tensor) -> torch.Tensor:
    """Copy columns ``start : start + len(out)`` of ``A`` into the rows of ``out``.

    The transpose is done in tiles of about 64k values: a strided column copy of a row-major
    matrix is many times slower than this on the CPU.
    """
    c, n = out.shape
    tile = max(16, (1 << 16) // c) if A.device.type == "cpu" else n
    for r in range(0, n, tile):
        out[:, r : r + tile].copy_(A[r : r + tile, start : start + c].T)
    return out


def _top_blocks(
    A: torch.Tensor, k: int, chunk_size: int | None, max_memory_mb: float
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Yield ``(first_unit, top_idx (c, k), top_activations (c, k))`` over blocks of units."""
    n_images, n_units = A.shape
    # column copy (4), and for tied rows their copy, int32 view and int64 keys (16) per image
    per_unit = 20 * n_images + 32 * k
    block = _units_per_chunk(per_unit, n_units, chunk_size, max_memory_mb, A.device)
    buf = torch.empty(block, n_images, device=A.device, dtype=A.dtype)
    for start in range(0, n_units, block):
        rows = _copy_columns(A, start, buf[: min(block, n_units - start)])
        idx = _top_indices(rows, k)
        yield start, idx, rows.gather(1, idx)


# --------------------------------------------------------------------------------------------
# WPMI family
# --------------------------------------------------------------------------------------------


def _wpmi_kernel(
    S: Matrix,
    A: Matrix,
    *,
    func: str,
    top_k: int,
    a: float,
    lam: float,
    p_start: float,
    p_end: float,
    eps: float,
    device: DeviceLike,
    chunk_size: int | None,
    max_memory_mb: float,
) -> torch.Tensor:
    """Shared kernel of :func:`soft_wpmi` and :func:`wpmi` (``wpmi`` is ``p_r = 1``)."""
    a = _check_float(a, "a")
    lam = _check_float(lam, "lam")
    p_start = _check_float(p_start, "p_start", low=0.0, high=1.0)
    p_end = _check_float(p_end, "p_end", low=0.0, high=1.0)
    eps = _check_float(eps, "eps", low=0.0, low_open=True)
    s, act = _prepare(S, A, device)
    n_images, n_concepts = s.shape
    n_units = act.shape[1]
    k = _clamp_top_k(top_k, n_images, func)
    dev = s.device

    with torch.no_grad():
        prob = torch.softmax(s * a, dim=1)  # P(concept | image), N x M
        r = torch.arange(k, dtype=torch.float64)
        p_r = p_start - (r / k) * (p_start - p_end)
        weight = p_r.to(device=dev, dtype=torch.float32).view(1, k, 1)
        offset = (1.0 - p_r + eps).to(device=dev, dtype=torch.float32).view(1, k, 1)

        log_like = torch.empty(n_units, n_concepts, device=dev, dtype=torch.float32)
        per_unit = 4 * k * n_concepts + 8 * k
        inner = _units_per_chunk(per_unit, n_units, chunk_size, max_memory_mb, dev, cache_cap=True)
        buf = torch.empty(inner * k, n_concepts, device=dev, dtype=torch.float32)
        for start, idx, _ in _top_blocks(act, k, chunk_size, max_memory_mb):
            for lo in range(0, idx.shape[0], inner):
                sub = idx[lo : lo + inner]
                c = sub.shape[0]
                gathered = buf[: c * k]
                torch.index_select(prob, 0, sub.reshape(-1), out=gathered)
                terms = gathered.view(c, k, n_concepts)
                # log(p_r * P[B_k[r], m] + 1 - p_r + eps), summed over the ranks r
                terms.mul_(weight).add_(offset).log_()
                torch.sum(terms, dim=1, out=log_like[start + lo : start + lo + c])
        del buf, prob
        log_prior = torch.logsumexp(log_like, dim=0) - math.log(n_units)
        log_like.sub_(lam * log_prior)
    return log_like


def soft_wpmi(
    S: Matrix,
    A: Matrix,
    *,
    top_k: int = 100,
    a: float = 10.0,
    lam: float = 1.0,
    p_start: float = 0.998,
    p_end: float = 0.97,
    eps: float = 1e-7,
    device: DeviceLike = None,
    chunk_size: int | None = None,
    max_memory_mb: float = 512,
) -> torch.Tensor:
    r"""Soft weighted pointwise mutual information between units and concepts.

    With ``P = softmax(a * S)`` over concepts (each image's row sums to 1) and ``B_k`` the
    ``top_k`` images of unit ``k`` (highest activation first, ties to the lower image index),

    .. math::

        p_r &= p_{start} - \frac{r}{top\_k}(p_{start} - p_{end}), \quad r = 0..top\_k-1 \\
        \log P(m|k) &= \sum_r \log\big(p_r P[B_k[r], m] + 1 - p_r + \epsilon\big) \\
        \log P(m) &= \operatorname{logsumexp}_k \log P(m|k) - \log K \\
        score[k, m] &= \log P(m|k) - \lambda \log P(m)

    The prior runs over all ``K`` units passed in ``A``. With ``lam=1`` every score is at
    most ``log K``.

    Parameters
    ----------
    S : torch.Tensor or numpy.ndarray
        ``N x M`` image-concept cosine similarities.
    A : torch.Tensor or numpy.ndarray
        ``N x K`` activations of the units on the same ``N`` images, in the same order.
    top_k : int, default 100
        Number of top images per unit; clamped to ``N`` (with a logged warning).
    a : float, default 10.0
        Softmax temperature multiplier applied to ``S``.
    lam : float, default 1.0
        Weight of the concept prior.
    p_start, p_end : float, default 0.998, 0.97
        Confidence that the top ranked image and the rank ``top_k`` image show the concept
        (interpolated linearly in the rank); both in ``[0, 1]``.
    eps : float, default 1e-7
        Positive floor inside the logarithm.
    device : str or torch.device, optional
        Compute device; default: the device of ``S`` if it is a tensor, else the CPU.
    chunk_size : int, optional
        Units per chunk; overrides ``max_memory_mb``.
    max_memory_mb : float, default 512
        Budget for the temporary per-chunk buffers.

    Returns
    -------
    torch.Tensor
        ``K x M`` float32 scores on the compute device.

    Raises
    ------
    MammodissectError
        Malformed inputs (not 2-D, different ``N``, empty, non-finite) or parameters.
    """
    return _wpmi_kernel(
        S,
        A,
        func="soft_wpmi",
        top_k=top_k,
        a=a,
        lam=lam,
        p_start=p_start,
        p_end=p_end,
        eps=eps,
        device=device,
        chunk_size=chunk_size,
        max_memory_mb=max_memory_mb,
    )


def wpmi(
    S: Matrix,
    A: Matrix,
    *,
    top_k: int = 28,
    a: float = 2.0,
    lam: float = 0.6,
    eps: float = 1e-7,
    device: DeviceLike = None,
    chunk_size: int | None = None,
    max_memory_mb: float = 512,
) -> torch.Tensor:
    r"""Weighted pointwise mutual information between units and concepts.

    With ``P = softmax(a * S)`` over concepts and ``B_k`` the ``top_k`` images of unit ``k``
    (highest activation first, ties to the lower image index),

    .. math::

        \log P(m|k) &= \sum_{n \in B_k} \log(P[n, m] + \epsilon) \\
        \log P(m) &= \operatorname{logsumexp}_k \log P(m|k) - \log K \\
        score[k, m] &= \log P(m|k) - \lambda \log P(m)

    This equals :func:`soft_wpmi` with ``p_start = p_end = 1`` (same kernel).

    Parameters
    ----------
    S : torch.Tensor or numpy.ndarray
        ``N x M`` image-concept cosine similarities.
    A : torch.Tensor or numpy.ndarray
        ``N x K`` activations of the units on the same ``N`` images, in the same order.
    top_k : int, default 28
        Number of top images per unit; clamped to ``N`` (with a logged warning).
    a : float, default 2.0
        Softmax temperature multiplier applied to ``S``.
    lam : float, default 0.6
        Weight of the concept prior.
    eps : float, default 1e-7
        Positive floor inside the logarithm.
    device : str or torch.device, optional
        Compute device; default: the device of ``S`` if it is a tensor, else the CPU.
    chunk_size : int, optional
        Units per chunk; overrides ``max_memory_mb``.
    max_memory_mb : float, default 512
        Budget for the temporary per-chunk buffers.

    Returns
    -------
    torch.Tensor
        ``K x M`` float32 scores on the compute device.

    Raises
    ------
    MammodissectError
        Malformed inputs (not 2-D, different ``N``, empty, non-finite) or parameters.
    """
    return _wpmi_kernel(
        S,
        A,
        func="wpmi",
        top_k=top_k,
        a=a,
        lam=lam,
        p_start=1.0,
        p_end=1.0,
        eps=eps,
        device=device,
        chunk_size=chunk_size,
        max_memory_mb=max_memory_mb,
    )


# --------------------------------------------------------------------------------------------
# Cosine family
# --------------------------------------------------------------------------------------------


def _unit_columns(x: torch.Tensor) -> torch.Tensor:
    """Divide each column by its L2 norm over the rows (norm floored at 1e-12)."""
    return x / torch.linalg.vector_norm(x, dim=0, keepdim=True).clamp_min(_NORM_FLOOR)


def _cubed_columns(x: torch.Tensor) -> torch.Tensor:
    """Centre each column, cube it, divide by ``max(norm of the cube, 1e-3)``.

    Computed as ``(x / s)^3`` with ``s`` the column's largest magnitude, so large activations
    cannot overflow float32; the floor is applied to the true norm ``s^3 * ||(x / s)^3||``.
    """
    x = x - x.mean(dim=0, keepdim=True)
    scale = x.abs().amax(dim=0, keepdim=True)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    cube = (x / scale).pow_(3)
    norm = torch.linalg.vector_norm(cube, dim=0, keepdim=True).double()
    scale3 = scale.double().pow(3)
    # true norm >= floor: cube / ||cube||; otherwise: x^3 / floor == cube * s^3 / floor
    factor = torch.where(scale3 * norm >= _CUBED_NORM_FLOOR, 1.0 / norm, scale3 / _CUBED_NORM_FLOOR)
    return cube.mul_(factor.to(torch.float32))


def _column_similarity(
    S: Matrix,
    A: Matrix,
    transform: Callable[[torch.Tensor], torch.Tensor],
    device: DeviceLike,
    chunk_size: int | None,
    max_memory_mb: float,
    temporaries: int,
) -> torch.Tensor:
    """``transform(A)^T @ transform(S)``, transforming ``A`` in chunks of units."""
    s, act = _prepare(S, A, device)
    n_images, n_concepts = s.shape
    n_units = act.shape[1]
    with torch.no_grad():
        s_t = transform(s)
        out = torch.empty(n_units, n_concepts, device=s.device, dtype=torch.float32)
        per_unit = 4 * n_images * temporaries + 4 * n_concepts
        block = _units_per_chunk(per_unit, n_units, chunk_size, max_memory_mb, s.device)
        for start in range(0, n_units, block):
            a_t = transform(act[:, start : start + block])
            torch.matmul(a_t.T, s_t, out=out[start : start + a_t.shape[1]])
    return out


def cos_similarity(
    S: Matrix,
    A: Matrix,
    *,
    device: DeviceLike = None,
    chunk_size: int | None = None,
    max_memory_mb: float = 512,
) -> torch.Tensor:
    r"""Cosine similarity between each unit's and each concept's column over the images.

    .. math::

        \hat S_{:,m} = \frac{S_{:,m}}{\max(\lVert S_{:,m}\rVert_2, 10^{-12})}, \quad
        \hat A_{:,k} = \frac{A_{:,k}}{\max(\lVert A_{:,k}\rVert_2, 10^{-12})}, \quad
        score = \hat A^\top \hat S

    An all-zero column scores 0 against everything (no NaN).

    Parameters
    ----------
    S : torch.Tensor or numpy.ndarray
        ``N x M`` image-concept cosine similarities.
    A : torch.Tensor or numpy.ndarray
        ``N x K`` activations of the units on the same ``N`` images, in the same order.
    device : str or torch.device, optional
        Compute device; default: the device of ``S`` if it is a tensor, else the CPU.
    chunk_size : int, optional
        Units per chunk; overrides ``max_memory_mb``.
    max_memory_mb : float, default 512
        Budget for the temporary per-chunk buffers.

    Returns
    -------
    torch.Tensor
        ``K x M`` float32 scores in ``[-1, 1]`` on the compute device.

    Raises
    ------
    MammodissectError
        Malformed inputs (not 2-D, different ``N``, empty, non-finite) or parameters.
    """
    return _column_similarity(S, A, _unit_columns, device, chunk_size, max_memory_mb, 2)


def cos_similarity_cubed(
    S: Matrix,
    A: Matrix,
    *,
    device: DeviceLike = None,
    chunk_size: int | None = None,
    max_memory_mb: float = 512,
) -> torch.Tensor:
    r"""Similarity of centred, cubed columns, which emphasises each column's extremes.

    For each column ``x`` of ``S`` and of ``A`` (over the images):

    .. math::

        y = (x - \bar x)^3, \quad \hat x = \frac{y}{\max(\lVert y\rVert_2, 10^{-3})}, \quad
        score = \hat A^\top \hat S

    A constant column scores 0 against everything.

    Parameters
    ----------
    S : torch.Tensor or numpy.ndarray
        ``N x M`` image-concept cosine similarities.
    A : torch.Tensor or numpy.ndarray
        ``N x K`` activations of the units on the same ``N`` images, in the same order.
    device : str or torch.device, optional
        Compute device; default: the device of ``S`` if it is a tensor, else the CPU.
    chunk_size : int, optional
        Units per chunk; overrides ``max_memory_mb``.
    max_memory_mb : float, default 512
        Budget for the temporary per-chunk buffers.

    Returns
    -------
    torch.Tensor
        ``K x M`` float32 scores on the compute device.

    Raises
    ------
    MammodissectError
        Malformed inputs (not 2-D, different ``N``, empty, non-finite) or parameters.
    """
    return _column_similarity(S, A, _cubed_columns, device, chunk_size, max_memory_mb, 4)


def _centred_unit_columns(x: torch.Tensor) -> torch.Tensor:
    """Centre each column over the rows, then divide it by its L2 norm (floored at 1e-12)."""
    return _unit_columns(x - x.mean(dim=0, keepdim=True))


def correlation(
    S: Matrix,
    A: Matrix,
    *,
    device: DeviceLike = None,
    chunk_size: int | None = None,
    max_memory_mb: float = 512,
) -> torch.Tensor:
    r"""Pearson correlation between each unit's and each concept's column over the images.

    .. math::

        \tilde x = \frac{x - \bar x}{\max(\lVert x - \bar x\rVert_2, 10^{-12})}, \quad
        score = \tilde A^\top \tilde S

    (the z-scored columns' product divided by ``N``, as Neuron_Eval defines it). A constant
    column scores 0 against everything.

    Parameters
    ----------
    S : torch.Tensor or numpy.ndarray
        ``N x M`` image-concept similarities (cosines, or calibrated probabilities).
    A : torch.Tensor or numpy.ndarray
        ``N x K`` activations of the units on the same ``N`` images, in the same order.
    device : str or torch.device, optional
        Compute device; default: the device of ``S`` if it is a tensor, else the CPU.
    chunk_size : int, optional
        Units per chunk; overrides ``max_memory_mb``.
    max_memory_mb : float, default 512
        Budget for the temporary per-chunk buffers.

    Returns
    -------
    torch.Tensor
        ``K x M`` float32 scores in ``[-1, 1]`` on the compute device.

    Raises
    ------
    MammodissectError
        Malformed inputs (not 2-D, different ``N``, empty, non-finite) or parameters.
    """
    return _column_similarity(S, A, _centred_unit_columns, device, chunk_size, max_memory_mb, 3)


# --------------------------------------------------------------------------------------------
# Average precision
# --------------------------------------------------------------------------------------------


def _last_of_runs(sorted_values: torch.Tensor, dim: int) -> torch.Tensor:
    """For values sorted along ``dim``: the position (0-based) of the last element of each
    element's run of equal values."""
    n = sorted_values.shape[dim]
    shape = [1] * sorted_values.dim()
    shape[dim] = n
    pos = torch.arange(n, device=sorted_values.device).view(shape).expand_as(sorted_values)
    ends = torch.ones_like(sorted_values, dtype=torch.bool)
    body = [slice(None)] * sorted_values.dim()
    head, tail = list(body), list(body)
    head[dim], tail[dim] = slice(0, n - 1), slice(1, n)
    ends[tuple(head)] = sorted_values[tuple(head)] != sorted_values[tuple(tail)]
    marked = torch.where(ends, pos, torch.full_like(pos, n - 1))
    return torch.flip(torch.cummin(torch.flip(marked, [dim]), dim=dim).values, [dim])


def _inclusive_ranks(s: torch.Tensor) -> torch.Tensor:
    """(N, M) -> R with R[i, m] = the number of images whose S[., m] is at least S[i, m]."""
    values, order = torch.sort(s, dim=0, descending=True, stable=True)
    ranks = torch.empty_like(s)
    ranks.scatter_(0, order, (_last_of_runs(values, 0) + 1).to(s.dtype))
    return ranks


def auprc(
    S: Matrix,
    A: Matrix,
    *,
    top_fraction: float = 0.05,
    device: DeviceLike = None,
    chunk_size: int | None = None,
    max_memory_mb: float = 512,
) -> torch.Tensor:
    r"""Average precision of each concept's column for finding each unit's top images.

    Unit ``k``'s positives ``P_k`` are its ``T = max(1, int(N * top_fraction))`` top images
    (Neuron_Eval's top-alpha activations, ``alpha = top_fraction``; chosen as ``B_k`` is: ties
    to the lower image index). Concept ``m`` ranks all ``N`` images by ``S[., m]``; with
    ``R[i, m]`` the number of images whose ``S[., m]`` is at least ``S[i, m]`` (tied
    images share one threshold, the last of their run),

    .. math::

        score[k, m] = \frac{1}{T} \sum_{i \in P_k}
            \frac{\lvert\{ j \in P_k : R[j, m] \le R[i, m] \}\rvert}{R[i, m]}

    the area under the step-wise precision-recall curve (as
    :func:`mammodissect.metrics.average_precision_columns` computes it), in ``(0, 1]``;
    ``T / N`` is a concept that ranks the images at random. Use calibrated probabilities or
    cosines alike: only each column's order matters. Cost grows with ``T``: the positives'
    ranks (``T x M`` per unit) are sorted.

    Parameters
    ----------
    S : torch.Tensor or numpy.ndarray
        ``N x M`` image-concept similarities.
    A : torch.Tensor or numpy.ndarray
        ``N x K`` activations of the units on the same ``N`` images, in the same order.
    top_fraction : float, default 0.05
        Fraction of the images that are a unit's positives, in ``(0, 1]``.
    device : str or torch.device, optional
        Compute device; default: the device of ``S`` if it is a tensor, else the CPU.
    chunk_size : int, optional
        Units per chunk; overrides ``max_memory_mb``.
    max_memory_mb : float, default 512
        Budget for the temporary per-chunk buffers.

    Returns
    -------
    torch.Tensor
        ``K x M`` float32 scores on the compute device.

    Raises
    ------
    MammodissectError
        Malformed inputs (not 2-D, different ``N``, empty, non-finite) or parameters.
    """
    top_fraction = _check_float(top_fraction, "top_fraction", low=0.0, high=1.0, low_open=True)
    s, act = _prepare(S, A, device)
    n_images, n_concepts = s.shape
    n_units = act.shape[1]
    k = max(1, int(n_images * top_fraction))
    dev = s.device
    with torch.no_grad():
        ranks = _inclusive_ranks(s)
        out = torch.empty(n_units, n_concepts, device=dev, dtype=torch.float32)
        per_unit = 28 * k * n_concepts  # gathered ranks, their sort, run ends, positions
        inner = _units_per_chunk(per_unit, n_units, chunk_size, max_memory_mb, dev)
        for start, idx, _ in _top_blocks(act, k, chunk_size, max_memory_mb):
            for lo in range(0, idx.shape[0], inner):
                sub = idx[lo : lo + inner]
                c = sub.shape[0]
                mine = ranks.index_select(0, sub.reshape(-1)).view(c, k, n_concepts)
                mine = torch.sort(mine, dim=1).values
                found = (_last_of_runs(mine, 1) + 1).to(torch.float32)
                out[start + lo : start + lo + c] = (found / mine).mean(dim=1)
    return out


# --------------------------------------------------------------------------------------------
# Rank reorder
# --------------------------------------------------------------------------------------------


def rank_reorder(
    S: Matrix,
    A: Matrix,
    *,
    top_fraction: float = 0.05,
    p: float = 3.0,
    scale_p: float = 0.5,
    seed: int = 0,
    device: DeviceLike = None,
    chunk_size: int | None = None,
    max_memory_mb: float = 512,
) -> torch.Tensor:
    r"""How well ranking a unit's top images by a concept reproduces their activation order.

    For unit ``k`` take its ``T = max(1, int(N * top_fraction))`` top images ``B_k`` (highest
    activation first, ties to the lower image index) and their activations ``t`` (descending).
    For concept ``m``, sort those same images by ``S[., m]`` descending (stable: equal
    similarities keep the ``B_k`` order) and read their activations in that order,
    ``t^{(m)}``. With ``\pi_k`` a random permutation of ``0..T-1``,

    .. math::

        err[k, m] &= \operatorname{mean}_i |t_i - t^{(m)}_i|^p \\
        base[k] &= \max\big(\operatorname{mean}_i |t_i - t_{\pi_k(i)}|^p, 10^{-12}\big) \\
        \bar s[k, m] &= \max\big(\operatorname{mean}_{n \in B_k} S[n, m], 10^{-6}\big) \\
        score[k, m] &= -\frac{err[k, m]}{base[k] \, \bar s[k, m]^{scale\_p}}

    The permutations come from ``torch.Generator().manual_seed(seed)`` on the CPU, one
    ``torch.randperm(T)`` per unit in unit order and shared by all concepts, so the same
    seed gives the same result on any device and for any chunking.

    Parameters
    ----------
    S : torch.Tensor or numpy.ndarray
        ``N x M`` image-concept cosine similarities.
    A : torch.Tensor or numpy.ndarray
        ``N x K`` activations of the units on the same ``N`` images, in the same order.
    top_fraction : float, default 0.05
        Fraction of the images that count as a unit's top images, in ``(0, 1]``.
    p : float, default 3.0
        Exponent of the rank error; positive.
    scale_p : float, default 0.5
        Exponent of the mean-similarity normaliser.
    seed : int, default 0
        Seed of the random baseline permutations.
    device : str or torch.device, optional
        Compute device; default: the device of ``S`` if it is a tensor, else the CPU.
    chunk_size : int, optional
        Units per chunk; overrides ``max_memory_mb``.
    max_memory_mb : float, default 512
        Budget for the temporary per-chunk buffers.

    Returns
    -------
    torch.Tensor
        ``K x M`` float32 scores (all ``<= 0``) on the compute device.

    Raises
    ------
    MammodissectError
        Malformed inputs (not 2-D, different ``N``, empty, non-finite) or parameters.
    """
    top_fraction = _check_float(top_fraction, "top_fraction", low=0.0, high=1.0, low_open=True)
    p = _check_float(p, "p", low=0.0, low_open=True)
    scale_p = _check_float(scale_p, "scale_p")
    seed = _check_int(seed, "seed", minimum=0)
    s, act = _prepare(S, A, device)
    n_images, n_concepts = s.shape
    n_units = act.shape[1]
    n_top = max(1, int(n_images * top_fraction))
    dev = s.device
    generator = torch.Generator(device="cpu").manual_seed(seed)

    with torch.no_grad():
        out = torch.empty(n_units, n_concepts, device=dev, dtype=torch.float32)
        # gathered S, its negation, sort values and indices, reordered activations, differences
        per_unit = 32 * n_top * n_concepts + 32 * n_top
        inner = _units_per_chunk(per_unit, n_units, chunk_size, max_memory_mb, dev, cache_cap=True)
        for start, idx_block, t_block in _top_blocks(act, n_top, chunk_size, max_memory_mb):
            for lo in range(0, idx_block.shape[0], inner):
                idx = idx_block[lo : lo + inner]
                t = t_block[lo : lo + inner]  # (c, T), descending
                c = idx.shape[0]
                # S of each unit's top images, one row per concept: (c, M, T)
                s_top = s.index_select(0, idx.reshape(-1)).view(c, n_top, n_concepts)
                s_top = s_top.transpose(1, 2).contiguous()
                mean_s = s_top.mean(dim=2).clamp_min_(_MEAN_S_FLOOR).pow_(scale_p)
                order = torch.sort(s_top.neg_(), dim=2, stable=True).indices
                del s_top
                t_rows = t.unsqueeze(1).expand(c, n_concepts, n_top)
                err = t_rows.gather(2, order).sub_(t_rows).abs_().pow_(p).mean(dim=2)
                del order
                perms = torch.stack(
                    [torch.randperm(n_top, generator=generator) for _ in range(c)]
                ).to(dev)
                base = (t - t.gather(1, perms)).abs_().pow_(p).mean(dim=1)
                base = base.clamp_min_(_BASELINE_FLOOR).unsqueeze(1)
                out[start + lo : start + lo + c] = err.div_(base).div_(mean_s).neg_()
    return out


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

SIMILARITIES: dict[str, Callable[..., torch.Tensor]] = {
    "soft_wpmi": soft_wpmi,
    "wpmi": wpmi,
    "cos_similarity": cos_similarity,
    "cos_similarity_cubed": cos_similarity_cubed,
    "rank_reorder": rank_reorder,
    "correlation": correlation,
    "auprc": auprc,
}


def get_similarity(name: str) -> Callable[..., torch.Tensor]:
    """Return the similarity function registered under ``name``.

    Parameters
    ----------
    name : str
        One of ``soft_wpmi``, ``wpmi``, ``cos_similarity``, ``cos_similarity_cubed``,
        ``rank_reorder``, ``correlation``, ``auprc`` (the keys of :data:`SIMILARITIES`).

    Returns
    -------
    Callable
        The function, called as ``f(S, A, **params)`` and returning a ``K x M`` tensor.

    Raises
    ------
    MammodissectError
        If ``name`` is not registered; the message suggests the closest valid name.
    """
    func = SIMILARITIES.get(name) if isinstance(name, str) else None
    if func is not None:
        return func
    message = f"unknown similarity {name!r}"
    if isinstance(name, str):
        close = difflib.get_close_matches(name, list(SIMILARITIES), n=1)
        if close:
            message += f" (did you mean {close[0]!r}?)"
    valid = ", ".join(sorted(SIMILARITIES))
    raise MammodissectError(f"{message}; valid names: {valid}")
