"""Load time and peak memory of a full-size Mammo-CLIP B5 checkpoint through ``mammoclip:``,
from the released ``.tar`` layout and from the converted ``.safetensors`` (+ ``.json``).

Builds the same full-size file the tests build (EfficientNet-B5 + BERT-base + AdamW state,
about 1.6 GB, random weights), converts it, then loads each form as a dissector in a fresh
process (imports done before the clock starts), several times, and prints the best times,
the peak resident memory of each process and the ratios.

    python benchmarks/bench_mammoclip_load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import sys, time
from mammodissect.models import load_dissector
from efficientnet_pytorch import EfficientNet  # imports outside the clock
from tokenizers import BertWordPieceTokenizer
from transformers import BertConfig, BertModel

def high_water_mb():
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

before = high_water_mb()
started = time.perf_counter()
dissector = load_dissector(sys.argv[1])
seconds = time.perf_counter() - started
print(f"{seconds:.3f} {before:.0f} {high_water_mb():.0f}")
"""


def measure(spec: str, repeats: int) -> tuple[float, float, float]:
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", CHILD, spec], capture_output=True, text=True, check=True
        ).stdout.split()
        runs.append(tuple(float(v) for v in out))
    best = min(runs)
    return best[0], best[1], max(r[2] for r in runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from mammodissect.models.mammoclip import convert
    from mammodissect.testing import BertSize, write_mammoclip_checkpoint, write_vocab

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tar = root / "b5-model-best-epoch-7.tar"
        started = time.perf_counter()
        write_mammoclip_checkpoint(tar, variant="efficientnet-b5", bert=BertSize(), projection=512)
        write_vocab(root / "vocab.txt")
        print(
            f"built {tar.name}: {tar.stat().st_size / 1e9:.2f} GB "
            f"in {time.perf_counter() - started:.1f} s"
        )
        safe = root / "b5.safetensors"
        started = time.perf_counter()
        convert(tar, safe)
        print(
            f"converted to {safe.name}: {safe.stat().st_size / 1e9:.2f} GB "
            f"in {time.perf_counter() - started:.1f} s"
        )
        results = {}
        for label, path in (("tar", tar), ("safetensors", safe)):
            seconds, base, peak = measure(f"mammoclip:{path}?vocab={root}", args.repeats)
            results[label] = (seconds, peak - base)
            print(
                f"load from {label:<11}: {seconds:6.2f} s, peak RSS {peak:6.0f} MB "
                f"({peak - base:+.0f} MB over the imports)"
            )
        (t_tar, m_tar), (t_safe, m_safe) = results["tar"], results["safetensors"]
        ratio = safe.stat().st_size / tar.stat().st_size
        print(
            f"safetensors vs tar: load {t_tar / t_safe:.2f}x faster; memory growth "
            f"{m_safe:.0f} MB vs {m_tar:.0f} MB; file {ratio:.2f}x the size"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
