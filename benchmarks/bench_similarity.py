"""Benchmark mammodissect's chunked soft_wpmi against a one-unit-at-a-time loop.

The loop below is written from the soft_wpmi formula the way the published implementation is
organised: the top images of every unit are found at once, then each unit's top rows of the
softmax are gathered and its log-likelihood computed on its own (with a CUDA cache flush
after each unit on the GPU), and the prior is applied at the end. Both run in this process
on the same seeded data; the script checks that they agree and prints both times.

Usage::

    python benchmarks/bench_similarity.py                      # 20000 x 763 x 6992 on the CPU
    python benchmarks/bench_similarity.py --quick              # 2000 x 100 x 500 smoke run
    python benchmarks/bench_similarity.py --device cuda --others
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

try:
    from mammodissect.similarity import SIMILARITIES, soft_wpmi
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from mammodissect.similarity import SIMILARITIES, soft_wpmi

TOP_K, A_SCALE, LAM, P_START, P_END, EPS = 100, 10.0, 1.0, 0.998, 0.97, 1e-7


def per_unit_soft_wpmi(S: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """soft_wpmi computed one unit at a time (the reference organisation)."""
    n_units = A.shape[1]
    with torch.no_grad():
        prob = torch.softmax(A_SCALE * S, dim=1)
        top = torch.topk(A, TOP_K, dim=0).indices  # (top_k, K), all units at once
        r = torch.arange(TOP_K, device=S.device, dtype=torch.float32)
        p_r = (P_START - (r / TOP_K) * (P_START - P_END)).unsqueeze(1)  # (top_k, 1)
        rows = []
        for unit in range(n_units):
            top_rows = prob[top[:, unit]]  # (top_k, M)
            rows.append(torch.log(p_r * top_rows + 1.0 - p_r + EPS).sum(dim=0))
            if S.is_cuda:
                torch.cuda.empty_cache()
        log_like = torch.stack(rows)
        log_prior = torch.logsumexp(log_like, dim=0) - math.log(n_units)
        return log_like - LAM * log_prior


def next_prime(n: int) -> int:
    def is_prime(q: int) -> bool:
        return q >= 2 and all(q % d for d in range(2, math.isqrt(q) + 1))

    while not is_prime(n):
        n += 1
    return n


def make_data(
    n_images: int, n_concepts: int, n_units: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded S (uniform cosines in [-0.3, 0.3]) and A without ties inside any unit.

    Random normal float32 activations tie now and then among a unit's top images; the per-unit
    loop's ``torch.topk`` then orders them arbitrarily while soft_wpmi ranks the lower image
    index first, which would blur the agreement check. So each unit's activations are a
    pseudo-random permutation of the distinct values ``j / q`` (``q`` a prime >= N), from the
    bijection ``n -> (a_k n + b_k) mod q``.
    """
    gen = torch.Generator().manual_seed(seed)
    S = (torch.rand(n_images, n_concepts, generator=gen) * 2 - 1) * 0.3
    q = next_prime(n_images)
    mult = torch.randint(1, q, (n_units,), generator=gen)
    shift = torch.randint(0, q, (n_units,), generator=gen)
    image = torch.arange(n_images).unsqueeze(1)
    A = torch.empty(n_images, n_units)
    for start in range(0, n_units, 256):
        block = slice(start, start + 256)
        A[:, block] = ((image * mult[block] + shift[block]) % q).float() / q
    return S, A


def fmt(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds:.3f} s"


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def timed(
    fn: Callable[[], torch.Tensor], device: torch.device, repeat: int = 1
) -> tuple[torch.Tensor, float]:
    """Result and best wall time of ``repeat`` calls."""
    best = math.inf
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return out, best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--concepts", type=int, default=763)
    parser.add_argument("--units", type=int, default=6992)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--max-memory-mb", type=float, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2000 images x 100 x 500 units")
    parser.add_argument(
        "--repeat", type=int, default=None, help="best of this many runs (default 1, quick 5)"
    )
    parser.add_argument(
        "--others", action="store_true", help="also time the other similarity functions"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.concepts, args.units = 2000, 100, 500
    repeat = args.repeat or (5 if args.quick else 1)
    if min(args.images, args.concepts, args.units) < 1 or args.images < TOP_K:
        parser.error(f"need at least {TOP_K} images and one concept and unit")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda given but CUDA is not available")
    size = f"{args.images} images x {args.concepts} concepts x {args.units} units"
    if repeat > 1:
        print(f"times are the best of {repeat} runs")

    S, A = make_data(args.images, args.concepts, args.units, args.seed)
    S, A = S.to(device), A.to(device)
    print(f"data: {size}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    # warm up both code paths on a slice so one-time initialisation is not timed
    soft_wpmi(S[:200], A[:200, :8], max_memory_mb=args.max_memory_mb)
    per_unit_soft_wpmi(S[:200], A[:200, :8])

    rss_before = current_rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        cuda_before = torch.cuda.memory_allocated(device) / 2**20
    ours, t_ours = timed(lambda: soft_wpmi(S, A, max_memory_mb=args.max_memory_mb), device, repeat)
    if device.type == "cuda":
        cuda_peak = torch.cuda.max_memory_allocated(device) / 2**20
        print(f"ours: torch peak GPU memory {cuda_peak:.0f} MB ({cuda_before:.0f} MB before)")
    else:
        print(
            f"ours: peak RSS {peak_rss_mb():.0f} MB "
            f"(resident before the call, data included: {rss_before:.0f} MB)"
        )
    print(f"ours: {fmt(t_ours)}")
    loop, t_loop = timed(lambda: per_unit_soft_wpmi(S, A), device, repeat)
    print(f"per-unit loop: {fmt(t_loop)}")

    diff = (ours - loop).abs()
    scale = loop.abs().max().clamp_min(1e-30)
    same_best = (ours.argmax(dim=1) == loop.argmax(dim=1)).float().mean()
    print(
        f"agreement: max |ours - loop| = {float(diff.max()):.3g}, "
        f"max relative error (to max |loop| = {float(scale):.3g}) = "
        f"{float(diff.max() / scale):.3g}, best concept identical for "
        f"{100 * float(same_best):.2f}% of units"
    )

    if args.others:
        for name, func in SIMILARITIES.items():
            if name == "soft_wpmi":
                continue
            _, t = timed(lambda f=func: f(S, A, max_memory_mb=args.max_memory_mb), device, repeat)
            print(f"{name}: ours {fmt(t)} ({t / t_ours:.2f}x soft_wpmi's time)")

    print(
        f"soft_wpmi: ours {fmt(t_ours)}, per-unit loop {fmt(t_loop)}, "
        f"speed-up {t_loop / t_ours:.2f}x ({device.type}, {size})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
