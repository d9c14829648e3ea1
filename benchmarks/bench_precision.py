"""Label parity of mixed precision: the fraction of units whose top-1 concept changes
when the same run records in bf16/fp16 (and/or channels-last) instead of float32.

Both runs use the same probe, models and concepts; see
:func:`mammodissect.api.parity_run`. On CPU only bf16 is possible (and slow).

    python benchmarks/bench_precision.py                               # CPU, bf16, 32 phantoms
    python benchmarks/bench_precision.py --device cuda --precision fp16 --channels-last
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mammodissect.api import parity_run
from mammodissect.config import RunConfig
from mammodissect.phantom import generate, write_phantoms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=32, help="phantoms in the probe (32)")
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16"])
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--target", default="phantom-clip")
    parser.add_argument("--layers", default="image_encoder.blocks.*.*")
    parser.add_argument("--dissector", default="phantom-clip")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_phantoms(root / "probe", generate(opts.images, seed=7))
        config = RunConfig(
            target=opts.target, dissector=opts.dissector, layers=opts.layers,
            probe=str(root / "probe" / "manifest.csv"), concepts="birads+controls",
            device=opts.device, batch_size=opts.batch_size, num_workers=0, quiet=True,
            precision=opts.precision, channels_last=opts.channels_last,
            cache_dir=str(root / "cache"),
        )  # fmt: skip
        parity = parity_run(config)
    print(json.dumps(parity, indent=2))
    print(
        f"{opts.precision}{' + channels-last' if opts.channels_last else ''} vs fp32: "
        f"{parity['changed']} of {parity['units']} units change their top-1 label "
        f"({parity['fraction_changed']:.1%}); the float32 label stays in the top "
        f"{parity['top']} for {parity['fraction_in_top']:.1%}; "
        f"recording {parity['seconds_fp32']:.1f} s fp32, "
        f"{parity['seconds_other']:.1f} s {opts.precision}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
