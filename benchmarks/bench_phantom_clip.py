"""Held-out zero-shot quality of phantom-clip weights or of a training checkpoint (a point on
the training curve): per-concept AUROC (median and mean), per family, report-to-image recall@5,
on phantoms of the held-out seed the training itself measures with (seed + 1,000,003).

    python benchmarks/bench_phantom_clip.py runs/weights/phantom_clip.ckpt   # a checkpoint
    python benchmarks/bench_phantom_clip.py runs/weights/phantom_clip.safetensors  # weights
    python benchmarks/bench_phantom_clip.py                                  # the bundled weights

The held-out phantoms are drawn at the model's input size unless ``--phantom-size HxW`` says
otherwise: weights trained at different sizes compare on the same phantoms with one
``--phantom-size`` (each model resizes them to its own input).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from mammodissect.models.phantom_clip import (
    PHANTOM_CLIP_SIZE,
    MiniLM,
    PhantomClipModel,
    build_phantom_clip,
    weights_input_size,
)
from mammodissect.models.preprocess import parse_image_size
from mammodissect.phantom import PHANTOM_CONCEPTS, PhantomSettings
from mammodissect.phantom.train import (
    _HELD_OUT_SEED_OFFSET,
    epochs_in_all,
    evaluate_dissector,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "checkpoint", nargs="?",
        help="OUT.ckpt of a training or OUT.safetensors weights (default: bundled)",
    )  # fmt: skip
    parser.add_argument("--images", type=int, default=500, help="held-out phantoms (500)")
    parser.add_argument(
        "--phantom-size", metavar="HxW", help="held-out phantoms' size (the model's input size)"
    )
    opts = parser.parse_args()
    if opts.checkpoint and not opts.checkpoint.endswith(".safetensors"):
        state = torch.load(opts.checkpoint, map_location="cpu", weights_only=False)
        model = PhantomClipModel()
        model.load_state_dict(state["model"])
        # epochs in all: those of the weights a continued training started from come first
        epochs = state["epoch"] + 1 + state["config"].get("epoch_offset", 0)
        seed = state["config"]["seed"]
        size = tuple(state["config"].get("input_size", PHANTOM_CLIP_SIZE))
    else:
        model, facts = build_phantom_clip(Path(opts.checkpoint) if opts.checkpoint else None)
        epochs, seed = epochs_in_all(facts), facts.get("seed", 0)
        size = weights_input_size(facts)
    drawn = parse_image_size(opts.phantom_size) or size
    quality = evaluate_dissector(
        model.eval(), MiniLM(), opts.images, seed + _HELD_OUT_SEED_OFFSET,
        PhantomSettings(size=drawn), size,
    )  # fmt: skip
    measured = {c: v for c, v in quality["auroc_per_concept"].items() if v is not None}
    aurocs = list(measured.values())
    # a single view cannot show an asymmetry (a comparison with the other breast)
    others = [v for c, v in measured.items() if PHANTOM_CONCEPTS[c] != "asymmetry"]
    print(json.dumps({
        "epochs_done": epochs, "held_out": opts.images,
        "input_size": "x".join(map(str, size)), "phantom_size": "x".join(map(str, drawn)),
        "median_concept_auroc": round(float(np.median(aurocs)), 4),
        "median_concept_auroc_without_asymmetries": round(float(np.median(others)), 4),
        "concepts_at_least_0.95": f"{sum(v >= 0.95 for v in aurocs)} of {len(aurocs)}",
        "mean_concept_auroc": quality["mean_concept_auroc"],
        "families": quality["auroc_per_family"],
        "report_to_image_recall_at_5": quality["report_to_image_recall_at_5"],
    }, indent=1))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
