"""Behavioural tests of mammodissect.similarity.

Every function is checked against a slow, obvious float64 implementation written directly
from its formula (per-unit Python loops over numpy arrays), on seeded random data that
includes ties, constant and all-zero columns, and shapes with N < top_k, K = 1 and M = 1.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from mammodissect.errors import MammodissectError
from mammodissect.similarity import (
    SIMILARITIES,
    auprc,
    correlation,
    cos_similarity,
    cos_similarity_cubed,
    get_similarity,
    rank_reorder,
    soft_wpmi,
    wpmi,
)
from mammodissect.similarity import _top_indices as top_indices

# --------------------------------------------------------------------------------------------
# Reference implementations (float64, loops, straight from the formulas)
# --------------------------------------------------------------------------------------------


def ref_top(column: np.ndarray, k: int) -> np.ndarray:
    """Stable descending sort of one activation column: ties go to the lower index."""
    return np.argsort(-column, kind="stable")[:k]


def ref_softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ref_logsumexp_cols(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=0)
    return top + np.log(np.exp(x - top).sum(axis=0))


def ref_soft_wpmi(S, A, top_k=100, a=10.0, lam=1.0, p_start=0.998, p_end=0.97, eps=1e-7):
    """Return (scores, log-likelihoods), both K x M float64."""
    n_images, n_concepts = S.shape
    n_units = A.shape[1]
    k = min(top_k, n_images)
    P = ref_softmax_rows(a * S)
    log_like = np.zeros((n_units, n_concepts))
    for unit in range(n_units):
        for r, n in enumerate(ref_top(A[:, unit], k)):
            p_r = p_start - (r / k) * (p_start - p_end)
            log_like[unit] += np.log(p_r * P[n] + 1.0 - p_r + eps)
    log_prior = ref_logsumexp_cols(log_like) - math.log(n_units)
    return log_like - lam * log_prior, log_like


def ref_wpmi(S, A, top_k=28, a=2.0, lam=0.6, eps=1e-7):
    n_images, n_concepts = S.shape
    n_units = A.shape[1]
    P = ref_softmax_rows(a * S)
    log_like = np.zeros((n_units, n_concepts))
    for unit in range(n_units):
        for n in ref_top(A[:, unit], min(top_k, n_images)):
            log_like[unit] += np.log(P[n] + eps)
    log_prior = ref_logsumexp_cols(log_like) - math.log(n_units)
    return log_like - lam * log_prior, log_like


def ref_cos(S, A):
    s_hat = S / np.maximum(np.linalg.norm(S, axis=0), 1e-12)
    out = np.zeros((A.shape[1], S.shape[1]))
    for unit in range(A.shape[1]):
        col = A[:, unit]
        col = col / max(np.linalg.norm(col), 1e-12)
        for m in range(S.shape[1]):
            out[unit, m] = float(col @ s_hat[:, m])
    return out


def ref_cubed_column(x):
    y = (x - x.mean()) ** 3
    return y / max(np.linalg.norm(y), 1e-3)


def ref_cos_cubed(S, A):
    out = np.zeros((A.shape[1], S.shape[1]))
    for unit in range(A.shape[1]):
        a_hat = ref_cubed_column(A[:, unit])
        for m in range(S.shape[1]):
            out[unit, m] = float(a_hat @ ref_cubed_column(S[:, m]))
    return out


def ref_rank_reorder(S, A, top_fraction=0.05, p=3.0, scale_p=0.5, seed=0):
    n_images, n_concepts = S.shape
    n_top = max(1, int(n_images * top_fraction))
    generator = torch.Generator().manual_seed(seed)
    out = np.zeros((A.shape[1], n_concepts))
    for unit in range(A.shape[1]):
        top = ref_top(A[:, unit], n_top)
        t = A[top, unit]
        perm = torch.randperm(n_top, generator=generator).numpy()
        baseline = max(np.mean(np.abs(t - t[perm]) ** p), 1e-12)
        for m in range(n_concepts):
            s_top = S[top, m]
            reordered = t[np.argsort(-s_top, kind="stable")]
            error = np.mean(np.abs(t - reordered) ** p)
            mean_s = max(s_top.mean(), 1e-6)
            out[unit, m] = -error / baseline / mean_s**scale_p
    return out


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def ref_correlation(S, A):
    out = np.zeros((A.shape[1], S.shape[1]))
    for unit in range(A.shape[1]):
        a = A[:, unit] - A[:, unit].mean()
        a = a / max(np.linalg.norm(a), 1e-12)
        for m in range(S.shape[1]):
            s = S[:, m] - S[:, m].mean()
            out[unit, m] = float(a @ (s / max(np.linalg.norm(s), 1e-12)))
    return out


def ref_auprc(S, A, top_fraction=0.05):
    """From the definition: positives are the unit's top images; for each positive, precision
    at the threshold of its score (every image scoring at least as high counts)."""
    n = S.shape[0]
    k = max(1, int(n * top_fraction))
    out = np.zeros((A.shape[1], S.shape[1]))
    for unit in range(A.shape[1]):
        positives = set(ref_top(A[:, unit], k).tolist())
        for m in range(S.shape[1]):
            total = 0.0
            for i in positives:
                above = [j for j in range(n) if S[j, m] >= S[i, m]]
                total += sum(j in positives for j in above) / len(above)
            out[unit, m] = total / k
    return out


def f32(x: np.ndarray) -> np.ndarray:
    """Round to float32 and back, so the reference sees exactly the values we compute on."""
    return x.astype(np.float32).astype(np.float64)


def make_data(n, m, k, seed, *, kind="random", s_low=-1.0):
    rng = np.random.default_rng(seed)
    S = rng.uniform(s_low, 1.0, size=(n, m)) * 0.5
    A = rng.gamma(2.0, 1.0, size=(n, k)) - 0.5
    if kind == "ties":
        A = np.round(A, 1)  # many repeated activations, including -0.0 and 0.0
        S = np.round(S, 1)
        A[:, 0] = 1.5  # constant unit
        if k > 2:
            A[:, -1] = 0.0  # all-zero unit
        S[:, 0] = 0.25  # constant concept
        if m > 2:
            S[:, -1] = 0.0  # all-zero concept
    return f32(S), f32(A)


SHAPES = [
    (150, 9, 7),  # N >= every top_k
    (60, 6, 5),  # N < soft_wpmi's top_k
    (5, 4, 3),  # N < every top_k
    (40, 7, 1),  # K = 1
    (45, 1, 6),  # M = 1
    (1, 3, 2),  # a single image
]
CASES = [(*shape, kind) for shape in SHAPES for kind in ("random", "ties")]


def case_id(case):
    n, m, k, kind = case
    return f"N{n}-M{m}-K{k}-{kind}"


def assert_close(ours: torch.Tensor, ref: np.ndarray, scale: float, floor: float = 1e-12) -> None:
    assert ours.dtype == torch.float32
    assert tuple(ours.shape) == ref.shape
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-4, atol=1e-4 * scale + floor)


def log_sum_floor(n_images: int, top_k: int) -> float:
    """Absolute float32 floor of a sum of top_k logs: each log(x) with x near 1 is off by up to
    one float32 ulp of 1 (x itself is rounded), however small the true log is."""
    return 2 * min(n_images, top_k) * 2.0**-23


# --------------------------------------------------------------------------------------------
# Agreement with the references
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_soft_wpmi_matches_reference(case):
    n, m, k, kind = case
    S, A = make_data(n, m, k, seed=n + m + k, kind=kind)
    ref, log_like = ref_soft_wpmi(S, A)
    # the score is a difference of two sums of top_k logs: float32 error scales with those
    floor = log_sum_floor(n, 100)
    assert_close(soft_wpmi(S, A), ref, scale=np.abs(log_like).max(), floor=floor)
    params = dict(top_k=7, a=3.0, lam=0.4, p_start=0.9, p_end=0.5, eps=1e-5)
    ref, log_like = ref_soft_wpmi(S, A, **params)
    floor = log_sum_floor(n, 7)
    assert_close(soft_wpmi(S, A, **params), ref, scale=np.abs(log_like).max(), floor=floor)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_wpmi_matches_reference(case):
    n, m, k, kind = case
    S, A = make_data(n, m, k, seed=2 * n + m + k, kind=kind)
    ref, log_like = ref_wpmi(S, A)
    floor = log_sum_floor(n, 28)
    assert_close(wpmi(S, A), ref, scale=np.abs(log_like).max(), floor=floor)
    ref, log_like = ref_wpmi(S, A, top_k=3, a=8.0, lam=1.0)
    floor = log_sum_floor(n, 3)
    assert_close(
        wpmi(S, A, top_k=3, a=8.0, lam=1.0), ref, scale=np.abs(log_like).max(), floor=floor
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cos_similarity_matches_reference(case):
    n, m, k, kind = case
    S, A = make_data(n, m, k, seed=3 * n + m + k, kind=kind)
    assert_close(cos_similarity(S, A), ref_cos(S, A), scale=1.0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cos_similarity_cubed_matches_reference(case):
    n, m, k, kind = case
    S, A = make_data(n, m, k, seed=4 * n + m + k, kind=kind)
    ref = ref_cos_cubed(S, A)
    assert_close(cos_similarity_cubed(S, A), ref, scale=np.abs(ref).max())


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_correlation_matches_reference(case):
    n, m, k, kind = case
    S, A = make_data(n, m, k, seed=6 * n + m + k, kind=kind)
    assert_close(correlation(S, A), ref_correlation(S, A), scale=1.0)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_auprc_matches_reference(case):
    n, m, k, kind = case
    S, A = make_data(n, m, k, seed=7 * n + m + k, kind=kind)
    assert_close(auprc(S, A), ref_auprc(S, A), scale=1.0)
    assert_close(auprc(S, A, top_fraction=0.3), ref_auprc(S, A, 0.3), scale=1.0)


def test_auprc_known_answers():
    # 4 images, the unit's top 2 (top_fraction 0.5) are images 0 and 1
    A = np.array([[4.0], [3.0], [2.0], [1.0]])
    S = np.array([[0.9, 0.1, 0.5], [0.8, 0.2, 0.5], [0.1, 0.9, 0.5], [0.2, 0.8, 0.5]])
    # concept 0 ranks both positives first: 1; concept 1 last: (1/3 + 2/4) / 2; concept 2 ties
    # everything: precision 2/4 at the one threshold
    np.testing.assert_allclose(
        auprc(S, A, top_fraction=0.5).numpy()[0], [1.0, (1 / 3 + 2 / 4) / 2, 0.5], rtol=1e-6
    )


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_rank_reorder_matches_reference(case):
    n, m, k, kind = case
    S, A = make_data(n, m, k, seed=5 * n + m + k, kind=kind, s_low=0.0)
    ref = ref_rank_reorder(S, A)
    assert_close(rank_reorder(S, A), ref, scale=np.abs(ref).max())
    params = dict(top_fraction=0.3, p=1.5, scale_p=1.0, seed=3)
    ref = ref_rank_reorder(S, A, **params)
    assert_close(rank_reorder(S, A, **params), ref, scale=np.abs(ref).max())


def test_rank_reorder_matches_reference_with_negative_similarities():
    # concepts whose mean similarity over the top images is <= 0 hit the 1e-6 floor
    S, A = make_data(80, 6, 5, seed=11, s_low=-1.0)
    S[:, 2] = -np.abs(S[:, 2])
    ref = ref_rank_reorder(S, A, top_fraction=0.25)
    assert_close(rank_reorder(S, A, top_fraction=0.25), ref, scale=np.abs(ref).max())


def test_cos_similarity_of_zero_columns_is_zero():
    S, A = make_data(30, 4, 3, seed=1)
    S[:, 1] = 0.0
    A[:, 2] = 0.0
    out = cos_similarity(S, A).numpy()
    assert np.isfinite(out).all()
    assert (out[:, 1] == 0).all() and (out[2] == 0).all()
    out = cos_similarity_cubed(S, A).numpy()
    assert np.isfinite(out).all()
    assert (out[:, 1] == 0).all() and (out[2] == 0).all()


def test_cos_similarity_cubed_large_activations_do_not_overflow():
    S, A = make_data(50, 5, 4, seed=2)
    A = A * 1e15  # cubes would overflow float32
    ref = ref_cos_cubed(S, A)
    assert_close(cos_similarity_cubed(S, A), ref, scale=np.abs(ref).max())


def test_top_indices_is_a_stable_descending_sort():
    rng = np.random.default_rng(0)
    rows = np.concatenate(
        [
            rng.normal(size=(20, 300)),
            np.round(rng.normal(size=(20, 300)), 1),  # heavy ties, signed zeros
            rng.integers(-3, 3, size=(10, 300)).astype(float),
            np.full((2, 300), 7.0),
            -np.abs(rng.normal(size=(5, 300))) * 1e30,
            rng.normal(size=(5, 300)) * 1e-40,  # float32 subnormals
        ]
    ).astype(np.float32)
    for k in (1, 5, 299, 300):
        ours = top_indices(torch.from_numpy(rows), k).numpy()
        expected = np.stack([ref_top(row, k) for row in rows])
        np.testing.assert_array_equal(ours, expected)


# --------------------------------------------------------------------------------------------
# Relations and known answers
# --------------------------------------------------------------------------------------------


def test_wpmi_is_soft_wpmi_with_certain_examples():
    S, A = make_data(70, 8, 6, seed=7, kind="ties")
    ours = wpmi(S, A, top_k=12, a=4.0, lam=0.3, eps=1e-6)
    soft = soft_wpmi(S, A, top_k=12, a=4.0, lam=0.3, eps=1e-6, p_start=1.0, p_end=1.0)
    torch.testing.assert_close(ours, soft, rtol=0, atol=0)


def planted():
    """Unit j's top images are exactly the images that score highest for concept j."""
    rng = np.random.default_rng(42)
    n_groups, size = 5, 120
    n = n_groups * size
    S = rng.uniform(-0.1, 0.2, size=(n, n_groups))
    A = rng.uniform(0.0, 1.0, size=(n, n_groups))
    ramp = 1.0 - np.arange(size) / size  # the same order for activation and similarity
    for j in range(n_groups):
        rows = np.arange(j * size, (j + 1) * size)
        A[rows, j] = 5.0 + ramp
        S[rows, j] = 0.5 + 0.3 * ramp
    shuffle = rng.permutation(n)
    return S[shuffle], A[shuffle]


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_planted_concepts_are_found(name):
    S, A = planted()
    scores = get_similarity(name)(S, A)
    np.testing.assert_array_equal(scores.argmax(dim=1).numpy(), np.arange(A.shape[1]))


def test_soft_wpmi_scores_are_bounded_by_log_units():
    S, A = make_data(200, 20, 30, seed=8)
    scores = soft_wpmi(S, A, lam=1.0)
    assert float(scores.max()) <= math.log(30) + 1e-4
    # and the best unit per concept gets close to the bound when one unit dominates
    S_p, A_p = planted()
    assert float(soft_wpmi(S_p, A_p).max()) == pytest.approx(math.log(5), abs=1e-3)


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_numpy_and_torch_inputs_agree_exactly(name):
    S, A = make_data(90, 10, 8, seed=9)
    func = get_similarity(name)
    from_numpy = func(S, A)
    from_torch = func(torch.from_numpy(S), torch.from_numpy(A))
    from_f32 = func(torch.from_numpy(S).float(), torch.from_numpy(A).float())
    assert from_numpy.device.type == "cpu"
    torch.testing.assert_close(from_numpy, from_torch, rtol=0, atol=0)
    torch.testing.assert_close(from_numpy, from_f32, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_chunking_does_not_change_results(name):
    S, A = make_data(120, 11, 13, seed=10, kind="ties")
    func = get_similarity(name)
    whole = func(S, A)
    # units are independent: the gather kernels are bitwise identical under any chunking; the
    # cosine ones end in a matrix product whose BLAS blocking depends on the chunk's shape
    tol = 1e-6 if name in ("cos_similarity", "cos_similarity_cubed", "correlation") else 0.0
    for params in ({"max_memory_mb": 1e-4}, {"chunk_size": 1}, {"chunk_size": 4}):
        torch.testing.assert_close(func(S, A, **params), whole, rtol=tol, atol=tol)


def test_rank_reorder_is_seeded():
    S, A = make_data(200, 6, 8, seed=12, s_low=0.0)
    first = rank_reorder(S, A, seed=5)
    torch.testing.assert_close(rank_reorder(S, A, seed=5), first, rtol=0, atol=0)
    assert not torch.equal(rank_reorder(S, A, seed=6), first)


def test_inputs_are_not_modified_and_device_is_kept():
    S, A = make_data(60, 5, 4, seed=13)
    S_t, A_t = torch.from_numpy(S).float(), torch.from_numpy(A).float()
    S_copy, A_copy = S_t.clone(), A_t.clone()
    for func in SIMILARITIES.values():
        out = func(S_t, A_t, device="cpu")
        assert out.device == torch.device("cpu")
        torch.testing.assert_close(func(S_t, A_t, device=torch.device("cpu")), out)
    assert torch.equal(S_t, S_copy) and torch.equal(A_t, A_copy)


def test_top_k_larger_than_images_is_clamped_with_a_warning(caplog):
    S, A = make_data(10, 3, 2, seed=14)
    with caplog.at_level(logging.WARNING, logger="mammodissect.similarity"):
        clamped = soft_wpmi(S, A, top_k=50)
    assert "top_k=50" in caplog.text and "10" in caplog.text
    torch.testing.assert_close(clamped, soft_wpmi(S, A, top_k=10), rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SIMILARITIES))
def test_mismatched_images_are_rejected(name):
    S, _ = make_data(10, 3, 2, seed=0)
    _, A = make_data(12, 3, 2, seed=0)
    with pytest.raises(MammodissectError, match=r"S has 10 rows \(images\) but A has 12"):
        get_similarity(name)(S, A)


def test_one_dimensional_input_is_rejected():
    S, A = make_data(10, 3, 2, seed=0)
    with pytest.raises(MammodissectError, match=r"A must be a 2-D matrix.*1-D"):
        soft_wpmi(S, A[:, 0])
    with pytest.raises(MammodissectError, match=r"S must be a 2-D matrix.*1-D"):
        cos_similarity(torch.from_numpy(S[:, 0]), A)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_non_finite_input_is_rejected(bad):
    S, A = make_data(10, 3, 2, seed=0)
    S_bad = S.copy()
    S_bad[4, 1] = bad
    with pytest.raises(MammodissectError, match=r"S contains 1 non-finite.*row 4, column 1"):
        wpmi(S_bad, A)
    A_bad = A.copy()
    A_bad[7, 0] = bad
    with pytest.raises(MammodissectError, match=r"A contains 1 non-finite.*row 7, column 0"):
        rank_reorder(S, torch.from_numpy(A_bad))


def test_empty_inputs_are_rejected():
    S, A = make_data(10, 3, 2, seed=0)
    with pytest.raises(MammodissectError, match="no columns \\(concepts\\)"):
        soft_wpmi(S[:, :0], A)
    with pytest.raises(MammodissectError, match="no columns \\(units\\)"):
        soft_wpmi(S, A[:, :0])
    with pytest.raises(MammodissectError, match="no rows \\(images\\)"):
        soft_wpmi(S[:0], A[:0])


@pytest.mark.parametrize(
    ("func", "params", "message"),
    [
        (soft_wpmi, {"top_k": 0}, "top_k must be an integer >= 1"),
        (soft_wpmi, {"p_start": 1.5}, "p_start"),
        (wpmi, {"eps": 0.0}, "eps"),
        (cos_similarity, {"chunk_size": 0}, "chunk_size"),
        (cos_similarity_cubed, {"max_memory_mb": -1}, "max_memory_mb"),
        (rank_reorder, {"top_fraction": 0.0}, "top_fraction"),
        (rank_reorder, {"device": "not-a-device"}, "not a valid torch device"),
    ],
)
def test_bad_parameters_are_rejected(func, params, message):
    S, A = make_data(10, 3, 2, seed=0)
    with pytest.raises(MammodissectError, match=message):
        func(S, A, **params)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_clear_error():
    S, A = make_data(10, 3, 2, seed=0)
    with pytest.raises(MammodissectError, match="CUDA is not available"):
        soft_wpmi(S, A, device="cuda")


def test_registry_and_lookup():
    assert set(SIMILARITIES) == {
        "soft_wpmi",
        "wpmi",
        "cos_similarity",
        "cos_similarity_cubed",
        "rank_reorder",
        "correlation",
        "auprc",
    }
    for name, func in SIMILARITIES.items():
        assert get_similarity(name) is func
    with pytest.raises(MammodissectError) as info:
        get_similarity("soft_wmpi")
    message = str(info.value)
    assert "'soft_wmpi'" in message and "did you mean 'soft_wpmi'" in message
    for name in SIMILARITIES:
        assert name in message
    with pytest.raises(MammodissectError, match="valid names"):
        get_similarity("zzz")
