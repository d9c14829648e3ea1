"""Which similarity function? The README's table behind the default, made and printed in one
command: every function labels the same units again from the runs' caches and is scored against
the truth the evaluation measured, on two phantom seeds held out from every phantom model's
training (2026, the demo's probe, and 7777), with the bundled phantom-clip as the dissector and
with the annotation dissector (S = the probe's own annotations: a perfect dissector).

Steps whose output exists are skipped, so a rerun resumes; what it runs (the CLI, as a user
would): ``mammodissect demo --out ROOT/demo`` (seed 2026), ``phantom write`` of 300 phantoms of
seed 7777, ``run`` of M (phantom-clip's tower, every block) with phantom-clip and with the
annotations as dissector on each probe, ``run`` of C-density on seed 7777 (the head check's
second seed), then ``evaluate --noise none --similarities ALL --top-k 20,100`` of the six demo
variants and of those runs (``similarities.csv`` in each).

    python benchmarks/bench_similarity_choice.py runs    # about an hour on 2 CPU cores, cold
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pandas as pd

from mammodissect.rundir import SIMILARITIES_FILE

SIMILARITIES = "correlation,soft_wpmi,wpmi,cos_similarity,cos_similarity_cubed,rank_reorder,auprc"
VARIANTS = ("G", "M", "C-density", "C-mass", "C-calcification", "C-birads")
HEADS = ("C-density", "C-mass", "C-calcification", "C-birads")
LAYERS = "image_encoder.blocks.*.*"


def _cli(*args: str | Path | int) -> None:
    command = [sys.executable, "-m", "mammodissect", *map(str, args)]
    print("$", " ".join(command[2:]), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"({time.perf_counter() - started:.0f} s)", flush=True)


def make(root: Path) -> dict[str, Path]:
    """Make what is missing under ``root``; the run folders by name."""
    demo = root / "demo"
    if not all((demo / v / "run.json").is_file() for v in VARIANTS):
        _cli("demo", "--out", demo, "--quiet")
    probes = {"2026": demo / "probe" / "manifest.csv", "7777": root / "s7777" / "manifest.csv"}
    if not probes["7777"].is_file():
        _cli("phantom", "write", "--out", probes["7777"].parent, "--images", 300, "--seed", 7777)
    runs = {f"{v} 2026": demo / v for v in VARIANTS}
    for seed, probe in probes.items():
        for dissector, suffix in (("phantom-clip", ""), ("annotations", "-ann")):
            name = f"M{suffix} {seed}"
            if name in runs:
                continue
            out = runs[name] = root / f"s{seed}-M{suffix}"
            if not (out / "run.json").is_file():
                _cli("run", "--target", "phantom-clip", "--dissector", dissector,
                     "--probe", probe, "--concepts", "birads+controls", "--layers", LAYERS,
                     "--out", out, "--quiet")  # fmt: skip
    out = runs["C-density 7777"] = root / "s7777-C-density"
    if not (out / "run.json").is_file():
        _cli("run", "--target", "phantom-c-density", "--dissector", "phantom-clip",
             "--probe", probes["7777"], "--concepts", "birads+controls", "--layers", LAYERS,
             "--out", out, "--quiet")  # fmt: skip
    for name, folder in runs.items():
        if not (folder / SIMILARITIES_FILE).is_file():
            probe = probes[name.split()[-1]]
            _cli("evaluate", folder, "--probe", probe, "--noise", "none",
                 "--similarities", SIMILARITIES, "--top-k", "20,100", "--quiet")  # fmt: skip
    return runs


def _cell(row: pd.Series, metric: str, interval: bool = False) -> str:
    value = row[metric]
    if pd.isna(value):
        return "-"
    text = f"{value:.2f}"
    low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if interval and low is not None and not pd.isna(low):
        text += f" ({low:.2f}-{high:.2f})"
    return text


def _heads(rows: dict[str, pd.Series]) -> str:
    """Head units with their class at rank 1 / in the top 5, in all and per variant."""
    parts = {v: (int(r["head_units"]), round(r["head_units"] * r["head_top1_in_class"]),
                 round(r["head_units"] * r["head_top5_in_class"]))
             for v, r in rows.items() if r["head_units"] > 0}  # fmt: skip
    top1, top5 = (sum(p[i] for p in parts.values()) for i in (1, 2))
    per = ", ".join(f"{v} {t1}/{n}" for v, (n, t1, _) in parts.items())
    return f"{top1} / {top5} of {sum(p[0] for p in parts.values())} ({per})"


def report(runs: dict[str, Path]) -> None:
    """Print the README's table and the lines under it."""
    tables = {name: pd.read_csv(folder / SIMILARITIES_FILE).set_index("setting")
              for name, folder in runs.items()}  # fmt: skip
    m26, m77, a26, a77 = (tables[n] for n in ("M 2026", "M 7777", "M-ann 2026", "M-ann 7777"))
    print("\nunits per run (planted; hidden; mask-grounded; with an image-level concept):")
    for name in ("M 2026", "M 7777"):
        row = tables[name].iloc[0]
        print(f"  {name}: {row['planted_units']}; {row['units']}; {row['grounded_units']}; "
              f"{row['concept_grounded_units']}")  # fmt: skip
    print("\n| setting | planted top-1, phantom-clip (2026 / 7777) | planted top-5 | hidden units: "
          "label AUPRC / best | label IoU / best | planted top-1, annotations | AUPRC ratio, "
          "annotations |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for setting in m26.index:
        a, b, c, d = m26.loc[setting], m77.loc[setting], a26.loc[setting], a77.loc[setting]
        print(
            f"| `{setting}` | {_cell(a, 'planted_top1', True)} / {_cell(b, 'planted_top1', True)}"
            f" | {_cell(a, 'planted_top5')} / {_cell(b, 'planted_top5')}"
            f" | {_cell(a, 'auprc_ratio', True)} / {_cell(b, 'auprc_ratio', True)}"
            f" | {_cell(a, 'iou_ratio')} / {_cell(b, 'iou_ratio')}"
            f" | {_cell(c, 'planted_top1')} / {_cell(d, 'planted_top1')}"
            f" | {_cell(c, 'auprc_ratio')} / {_cell(d, 'auprc_ratio')} |"
        )
    print("\nhidden-unit AUPRC ratio per variant (seed 2026, phantom-clip; " +
          ", ".join(VARIANTS) + "):")  # fmt: skip
    for setting in m26.index:
        values = ", ".join(_cell(tables[f"{v} 2026"].loc[setting], "auprc_ratio") for v in VARIANTS)
        print(f"  {setting}: {values}")
    print("\nclassifier-head check, rank 1 / top 5 in the unit's class: the four C heads on "
          "seed 2026; C-density's head on seed 7777:")  # fmt: skip
    for setting in m26.index:
        seed_2026 = _heads({v: tables[f"{v} 2026"].loc[setting] for v in HEADS})
        seed_7777 = _heads({"C-density": tables["C-density 7777"].loc[setting]})
        print(f"  {setting}: {seed_2026}; {seed_7777}")
    print("\nunits of M above their setting's own 99th-percentile null (seed 2026):")
    for setting in m26.index:
        row = m26.loc[setting]
        print(f"  {setting}: {row['units_above_null_99']} of {row['units']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder for the demo and the runs (e.g. runs)")
    opts = parser.parse_args()
    report(make(opts.root))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
