"""The whole study's time: G, M and four C variants dissected over one probe, then compared.

Builds full-size models in the real layouts (random weights: the time does not depend on
them): a Mammo-CLIP checkpoint (the dissector, and M through its image encoder), four
``mammoclip-classifier`` checkpoints (C-density, C-mass, C-calcification, C-birads) and an
``efficientnet:`` G of the same backbone. Writes N seeded phantoms scaled up to the stored
size as 16-bit PNGs, then runs the six variants one after the other with one cache folder, as
a user running the study would (the first run's dissector pass and decoded images serve the
later runs), and ends with ``compare``. Prints seconds per variant and stage, images/s and the
total.

    python benchmarks/bench_study.py                    # CPU: B5 at 760x456, 16 images, ~5 min
    python benchmarks/bench_study.py --device cuda --images 1000 --size 1520x912 \
        --precision bf16 --json study.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mammodissect.api import compare, dissect
from mammodissect.models import parse_image_size
from mammodissect.phantom import generate
from mammodissect.precision import PRECISIONS
from mammodissect.testing import (
    BertSize,
    write_classifier_checkpoint,
    write_mammoclip_checkpoint,
    write_vocab,
)

#: C variants: task -> logits of its head (as Mammo-CLIP's released classifiers).
C_HEADS = {"density": 4, "mass": 1, "calcification": 1, "birads": 5}


def _write_image(job: tuple[np.ndarray, tuple[int, int], Path]) -> None:
    image, (height, width), path = job
    scaled = Image.fromarray(image.astype(np.float32), mode="F").resize(
        (width, height), Image.Resampling.BICUBIC
    )
    pixels = (np.clip(np.asarray(scaled), 0, 1) * 65535).astype(np.uint16)
    Image.fromarray(pixels).save(path)


def write_probe(folder: Path, n: int, size: tuple[int, int], workers: int) -> None:
    """``n`` seeded phantoms, scaled up to ``size`` (H, W), as 16-bit PNGs in ``folder``."""
    folder.mkdir(parents=True)
    jobs = [(p.image, size, folder / f"{i:05d}.png") for i, p in enumerate(generate(n, seed=11))]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_image, jobs, chunksize=8))


def build_models(root: Path, backbone: str, seed: int = 0) -> dict[str, tuple[str, str]]:
    """Write the study's checkpoints into ``root``; variant -> (target spec, layers). The
    dissector is :func:`dissector_spec` of the same folder."""
    write_mammoclip_checkpoint(
        root / "mammoclip.tar", variant=backbone, bert=BertSize(), projection=512,
        optimizer=False, seed=seed,
    )  # fmt: skip
    write_vocab(root / "vocab.txt")
    variants = {
        "G": (f"efficientnet:{backbone}?include_top=0", "_blocks.*"),
        "M": (dissector_spec(root), "image_encoder._blocks.*"),
    }
    for i, (task, classes) in enumerate(C_HEADS.items()):
        path = root / f"{task}.pth"
        write_classifier_checkpoint(path, variant=backbone, classes=classes, seed=seed + 10 + i)
        variants[f"C-{task}"] = (
            f"mammoclip-classifier:{path}",
            "image_encoder._blocks.*,classifier.classification_head",
        )
    return variants


def dissector_spec(root: Path) -> str:
    """The Mammo-CLIP checkpoint :func:`build_models` wrote, as a dissector spec."""
    return f"mammoclip:{root / 'mammoclip.tar'}?vocab={root}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16, help="probe images (16)")
    parser.add_argument("--size", default="760x456", help="model input HxW (760x456)")
    parser.add_argument(
        "--stored-size", help="stored image HxW (default: twice --size, as mammograms are larger)"
    )
    parser.add_argument("--backbone", default="efficientnet-b5", help="EfficientNet (b5)")
    parser.add_argument("--concepts", default="birads+controls")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=list(PRECISIONS))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    size = parse_image_size(args.size)
    stored = parse_image_size(args.stored_size) if args.stored_size else (2 * size[0], 2 * size[1])
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        write_probe(root / "probe", args.images, stored, args.workers)
        variants = build_models(root, args.backbone)
        setup = time.perf_counter() - started
        rows = []
        study_started = time.perf_counter()
        for name, (target, layers) in variants.items():
            began = time.perf_counter()
            result = dissect(
                target, dissector_spec(root), str(root / "probe"), args.concepts, layers,
                out=root / "runs" / name, image_size=args.size, dissector_image_size=args.size,
                device=args.device, precision=args.precision, channels_last=args.channels_last,
                batch_size=args.batch_size, num_workers=args.workers,
                cache_dir=str(root / "cache"), quiet=True,
            )  # fmt: skip
            seconds = time.perf_counter() - began
            rows.append(
                {
                    "variant": name,
                    "seconds": round(seconds, 2),
                    "images_per_s": round(args.images / seconds, 2),
                    "units": int((result.neurons["rank"] == 1).sum()),
                    **{k: round(v, 2) for k, v in result.run["timings_s"].items()},
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        began = time.perf_counter()
        compare([root / "runs" / name for name in variants], root / "compare")
        compare_s = time.perf_counter() - began
        total = time.perf_counter() - study_started
        device = result.run.get("device", args.device)
    figures = {
        "device": device,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "images": args.images,
        "size": args.size,
        "stored_size": "x".join(map(str, stored)),
        "backbone": args.backbone,
        "precision": args.precision,
        "channels_last": args.channels_last,
        "batch_size": args.batch_size,
        "setup_s": round(setup, 1),
        "variants": rows,
        "compare_s": round(compare_s, 2),
        "study_s": round(total, 1),
        "study_images_per_s": round(6 * args.images / total, 2),
    }
    print(
        f"{args.backbone} at {args.size} ({figures['stored_size']} stored), {args.images} images, "
        f"{args.precision}{' channels-last' if args.channels_last else ''}, device {device}"
    )
    for row in rows:
        print(
            f"  {row['variant']:<16} {row['seconds']:8.1f} s  {row['images_per_s']:7.2f} images/s"
            f"  (record {row.get('record', 0):.1f} s, score {row.get('score', 0):.1f} s)"
        )
    print(f"  compare          {compare_s:8.1f} s")
    print(
        f"whole study (6 runs + compare): {total:.1f} s, "
        f"{figures['study_images_per_s']:.2f} image-runs/s; setup (not counted) {setup:.1f} s"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
