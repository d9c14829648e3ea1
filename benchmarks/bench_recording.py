"""Recording overhead: ``record()`` vs bare forwards of the same models over the same images.

Both sides decode the same PNG files, preprocess them with the same recipes and run the
target and the dissector in batches under inference mode; ``record()`` adds hooks, pooling,
memory-mapped cache writes, the running top-k and per-batch commits. The goal is a ratio
(record / bare) of at most 1.10.

    python benchmarks/bench_recording.py                       # CPU defaults, ~1-2 minutes
    python benchmarks/bench_recording.py --device cuda --size 1520x912 --input-size 1520x912 \
        --target timm:tf_efficientnet_b5 --layers 'blocks.*.*' --images 64 [--precision bf16]

``--precision bf16|fp16`` runs both sides under the same autocast.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from mammodissect.layers import resolve_layers
from mammodissect.models import load_dissector, load_target, parse_image_size
from mammodissect.precision import PRECISIONS, autocast, check_precision
from mammodissect.probe import load_probe, read_image
from mammodissect.record import RecordSettings, record


def write_images(folder: Path, n: int, size: tuple[int, int], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = rng.normal(20000, 6000, size).clip(0, 65535).astype(np.uint16)
        Image.fromarray(image).save(folder / f"{i:05d}.png")


def bare(target, dissector, probe, batch_size: int, device: torch.device, precision: str) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    started = time.perf_counter()
    with torch.inference_mode(), autocast(precision, device):
        for start in range(0, len(probe), batch_size):
            images = [read_image(item.path) for item in probe.items[start : start + batch_size]]
            x_t = torch.stack([target.preprocess(im) for im in images]).to(device)
            x_d = (
                x_t
                if target.preprocess == dissector.preprocess
                else torch.stack([dissector.preprocess(im) for im in images]).to(device)
            )
            target.module(x_t)
            dissector.encode_images(x_d)
    sync()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="timm:efficientnet_b0")
    parser.add_argument("--dissector", default="openclip:RN50?random_init=1")
    parser.add_argument("--layers", default="blocks.*.*")
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--size", default="448x288", help="stored image size HxW")
    parser.add_argument(
        "--input-size", default="320x192", help="target input HxW (the dissector keeps its own)"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    args = parser.parse_args()
    device = torch.device(args.device)
    check_precision(args.precision, device)
    torch.manual_seed(0)
    target = load_target(args.target)
    dissector = load_dissector(args.dissector)
    size = parse_image_size(args.input_size)
    target.preprocess = target.preprocess.with_size(size)
    target.module.to(device)
    dissector.to(device)
    layers = resolve_layers(target.module, args.layers)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_images(root / "probe", args.images, parse_image_size(args.size))
        probe = load_probe(root / "probe")
        warm = probe.subset(range(min(args.batch_size, len(probe))))
        bare(target, dissector, warm, args.batch_size, device, args.precision)
        bare_s, record_s = [], []
        for repeat in range(args.repeats):  # alternate, so drift hits both sides alike
            bare_s.append(bare(target, dissector, probe, args.batch_size, device, args.precision))
            started = time.perf_counter()
            settings = RecordSettings(
                cache_root=root / f"cache{repeat}", batch_size=args.batch_size, device=device,
                num_workers=0, progress=False, precision=args.precision,
            )  # fmt: skip
            record(target, dissector, probe, layers, settings)
            if device.type == "cuda":
                torch.cuda.synchronize()
            record_s.append(time.perf_counter() - started)
    units = sum(1 for _ in layers)
    b, r = min(bare_s), min(record_s)
    print(
        f"device {device}, {args.precision}, {args.images} images stored {args.size}, input "
        f"{args.input_size}, target {args.target} ({units} hooked layers), dissector "
        f"{args.dissector}"
    )
    n = args.images
    for side, seconds in (
        ("bare forwards (decode, preprocess, target, dissector)", b),
        ("record() (same + hooks, pooling, cache writes, top-k)", r),
    ):
        print(f"{side}: {seconds:.2f} s, {n / seconds:.1f} images/s")
    print(f"recording overhead ratio: {r / b:.3f} (goal <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
