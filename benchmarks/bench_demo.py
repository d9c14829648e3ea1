"""The README's demo tables from a finished ``mammodissect demo --evaluate`` folder: per variant,
the units above the global threshold and those with a mammography concept, the distinct
mammography concepts captured, the share of rank-1 labels that are controls, and the evaluation
row (units above the 99th-percentile null; mask grounding; density/BI-RADS grounding; the head
check; label survival; AUPRC ratio), then the planted units.

    mammodissect demo --out runs/demo --evaluate
    python benchmarks/bench_demo.py runs/demo
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from mammodissect import concepts as concept_sets
from mammodissect.analysis.runs import read_neurons
from mammodissect.rundir import CONCEPTS_FILE, EVALUATION_JSON, SUMMARY_FILE

VARIANTS = ("G", "M", "C-density", "C-mass", "C-calcification", "C-birads")


def _two(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _evaluation_row(name: str, info: dict) -> str:
    c, o, s, h = info["counts"], info["overall"], info["stability"], info.get("head_check")
    head = ""
    if h:
        n = h["units_with_truth"]
        head = f"{round(h['top1_in_class'] * n)} of {n} ({round(h['top5_in_class'] * n)} of {n})"
    return (
        f"| {name} | {c['units_above_null_99']:,} of {c['units']:,} | {c['grounded_units']}; "
        f"{_two(o['top1_match'])} / {_two(o['top5_match'])} / {_two(o['same_broad_category'])} | "
        f"{c['image_grounded_units']}; {_two(o['image_top1_match'])} "
        f"({_two(o['image_top1_match_low'])}-{_two(o['image_top1_match_high'])}) | {head} | "
        f"{_two(s['bootstrap_survival'])} / {_two(s.get('noise_0.01_survival'))} / "
        f"{_two(s.get('noise_0.02_survival'))} | {_two(o['auprc_ratio'])} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("demo", type=Path, help="the demo's output folder (runs/demo)")
    opts = parser.parse_args()
    import pandas as pd

    summary = pd.read_csv(opts.demo / SUMMARY_FILE).set_index("variant")
    coverage = pd.read_csv(opts.demo / "compare" / "coverage.csv", keep_default_na=False)
    captured = coverage.groupby("run")["captured"].apply(lambda s: (s.astype(str) == "True").sum())
    print("| variant | passing units | with a mammography concept | all units with one | "
          "mammography concepts captured | rank-1 labels that are controls |")  # fmt: skip
    for name in VARIANTS:
        row = summary.loc[name]
        neurons = read_neurons(opts.demo / name / "neurons.csv")
        first = neurons[neurons["rank"] == 1]
        controls = float((first["control"] == True).mean())  # noqa: E712 (True/False/None)
        passing, mammo = int(row["passing_units"]), int(row["passing_mammography_units"])
        print(f"| {name} | {passing} | {mammo} ({mammo / passing:.0%}) | "
              f"{int(row['mammography_units']):,} of {int(row['units']):,} | "
              f"{int(captured.get(name, 0))} of {coverage['concept'].nunique()} | "
              f"{controls:.1%} |")  # fmt: skip
    flags = concept_sets.load(opts.demo / "M" / CONCEPTS_FILE).control
    print(f"controls in the concept set: {sum(f is True for f in flags) / len(flags):.1%} "
          f"of {len(flags)}")  # fmt: skip
    print("\n(noise survival '-': the variant was evaluated again with --noise none)")
    for name in VARIANTS:
        info = json.loads((opts.demo / name / EVALUATION_JSON).read_text())
        print(_evaluation_row(name, info))
    planted = json.loads((opts.demo / "M" / EVALUATION_JSON).read_text())["planted"]
    ceiling = planted["annotation_ceiling"]
    print(f"planted units: top-1 {planted['top1_recovery']:.2f} "
          f"({planted['top1_recovery_low']:.2f}-{planted['top1_recovery_high']:.2f}), top-5 "
          f"{planted['top5_recovery']:.2f}, median rank {planted['median_rank']:g}; annotations "
          f"as S {ceiling['top1_recovery']:.2f} / {ceiling['top5_recovery']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
