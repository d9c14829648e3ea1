"""The sanity checks of every similarity function on phantoms' planted units (Neuron_Eval's
missing labels and extra labels; see :mod:`mammodissect.evaluate.sanity`).

Planted units (one known detector per masked concept) are scored with each function against the
phantoms' own annotations as S, before and after damaging one concept's labels at a time; the
table gives the share of units whose own-concept score falls (a function passes at 0.95).

    python benchmarks/bench_sanity.py --seed 2026     # the demo's probe
    python benchmarks/bench_sanity.py --seed 7777     # another seed
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mammodissect import concepts as concept_sets
from mammodissect.evaluate import planted_sanity
from mammodissect.phantom import generate, write_phantoms
from mammodissect.probe import load_probe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2026, help="phantoms' seed (2026)")
    parser.add_argument("--images", type=int, default=300, help="phantoms (300)")
    parser.add_argument("--concepts", default="birads+controls")
    parser.add_argument("--work", help="folder for the phantoms (default: a temporary one)")
    opts = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(opts.work or tmp) / f"phantoms-s{opts.seed}-n{opts.images}"
        if not (folder / "manifest.csv").is_file():
            write_phantoms(folder, generate(opts.images, seed=opts.seed))
        probe = load_probe(folder / "manifest.csv")
        names = list(concept_sets.load(opts.concepts).concepts)
        table = planted_sanity(probe, list(range(len(probe))), names, quiet=True)
    print(f"{opts.images} phantoms, seed {opts.seed}; planted units; each function's defaults")
    print(table.to_string(index=False))
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
