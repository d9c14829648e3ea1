"""The ``mammodissect`` command: a thin layer that parses flags and calls the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import textwrap
import traceback
from collections.abc import Sequence
from typing import Any

from mammodissect.config import RunConfig
from mammodissect.errors import MammodissectError
from mammodissect.evaluate.config import EvaluateConfig
from mammodissect.finetune.config import FinetuneConfig
from mammodissect.models.phantom_clip import weights_path
from mammodissect.models.preprocess import parse_image_size
from mammodissect.models.spec import PHANTOM_C_TASKS
from mammodissect.options import add_flags, add_signature_flags, flag_values, numbers
from mammodissect.phantom.targets import train_target
from mammodissect.phantom.train import HeadRefit, refit_dissector, train_dissector
from mammodissect.precision import PRECISIONS
from mammodissect.rundir import (
    EVALUATION_FILE,
    EVALUATION_JSON,
    EVALUATION_LAYERS_FILE,
    HEAD_CHECK_FILE,
    PLANTED_FILE,
)
from mammodissect.similarity import SIMILARITIES
from mammodissect.values import parse_assignments

__all__ = ["main"]

log = logging.getLogger("mammodissect")

_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING
}


def _help(name: str, text: str) -> str:
    default = _DEFAULTS.get(name)
    return text if default is None else f"{text} (default: {default})"


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="dissect layers of a target network",
        description=textwrap.fill(
            "Record the target's units and the dissector's embeddings over the probe, "
            "score every unit against every concept, and write neurons.csv, top_images.csv and "
            "run.json. Every flag is also a key of --config (dashes as underscores). Required: "
            "--target, --dissector, --probe, --concepts, --layers (as flags or keys of --config).",
            78,
        ),
        epilog="example:\n  mammodissect run --target phantom-clip --dissector phantom-clip \\\n"
        "      --probe runs/demo/probe/manifest.csv --concepts birads+controls \\\n"
        "      --layers 'image_encoder.blocks.6.*' --out runs/M",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", help="YAML file with any of the keys below; flags override it")
    p.add_argument(
        "--target",
        help="(required) target model spec, e.g. timm:resnet18?weights=PATH "
        "(or 'dissector' for the dissector's own image encoder)",
    )
    p.add_argument(
        "--dissector",
        help="(required) dissector spec, e.g. openclip:RN50?weights=PATH, or 'annotations' to "
        "score from the probe's own annotations (annotations?map=MY_MAP.csv adds rows to the "
        "bundled map of annotation values to concepts)",
    )
    p.add_argument(
        "--probe",
        help="(required) folder of images, CSV manifest with a path column, or a dataset layout "
        "with selection options, e.g. 'vindr:/data/vindr-mammo?split=test&sample=500'",
    )
    p.add_argument(
        "--concepts",
        help="(required) concept file (.txt one per line, .csv, .tsv, .yaml, .json, .xlsx) or "
        "a bundled set: birads, controls, birads+controls (see `mammodissect concepts list`)",
    )
    p.add_argument(
        "--prompt",
        "--prompts",
        dest="prompts",
        action="append",
        metavar="TEMPLATE",
        help="prompt template with {} for the concept, e.g. 'a mammogram showing {}'; "
        "repeat it to average several templates' embeddings (default: the bare concept)",
    )
    p.add_argument(
        "--lowercase",
        action="store_true",
        default=None,
        help="lower-case every concept before embedding it",
    )
    p.add_argument(
        "--duplicates",
        choices=["first", "last", "multi"],
        help=_help(
            "duplicates",
            "categories of a concept listed twice: first, last, or multi "
            "(both kept, joined with |)",
        ),
    )
    p.add_argument(
        "--layers",
        help="(required) comma-separated module names or glob patterns, "
        "e.g. 'layer3,layer4' or 'image_encoder._blocks.*' (see `mammodissect layers`)",
    )
    p.add_argument(
        "--out", help="run directory to write (an earlier run's outputs in it are replaced)"
    )
    p.add_argument(
        "--pooling",
        choices=["mean", "max", "cls"],
        help=_help("pooling", "how a unit's map becomes one value per image"),
    )
    p.add_argument(
        "--similarity",
        help=_help("similarity", f"one of {', '.join(SIMILARITIES)}"),
    )
    p.add_argument(
        "--similarity-param",
        action="append",
        metavar="KEY=VALUE",
        help="a parameter of the similarity function (repeatable), e.g. top_k=50",
    )
    p.add_argument("--batch-size", type=int, help=_help("batch_size", "images per batch"))
    p.add_argument("--device", help=_help("device", "auto, cpu or cuda[:N]"))
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help=_help(
            "precision", "forward precision: bf16/fp16 autocast (fp16 GPU only; bf16 slow on CPU)"
        ),
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        default=None,
        help="put the models and 4-D input batches in channels-last memory format",
    )
    p.add_argument(
        "--preprocess",
        help="target preprocessing recipe: mammoclip, imagenet, default or "
        "python:MODULE:CALLABLE, options after ?, e.g. mammoclip?flip=left or imagenet?fit=pad "
        "(default: the target's own)",
    )
    p.add_argument(
        "--dissector-preprocess",
        help="dissector preprocessing recipe (default: the dissector's own)",
    )
    p.add_argument(
        "--image-size",
        help="target input size HEIGHTxWIDTH, e.g. 1520x912 (default: the target's own)",
    )
    p.add_argument(
        "--dissector-image-size",
        help="dissector input size HEIGHTxWIDTH (default: the dissector's own)",
    )
    p.add_argument("--top-concepts", type=int, help=_help("top_concepts", "concepts kept per unit"))
    p.add_argument("--top-images", type=int, help=_help("top_images", "images kept per unit"))
    p.add_argument(
        "--cache-dir",
        help="activation cache (default: $MAMMODISSECT_CACHE_DIR or ~/.cache/mammodissect)",
    )
    p.add_argument(
        "--num-workers", type=int, help=_help("num_workers", "image decoding worker processes")
    )
    p.add_argument("--seed", type=int, help=_help("seed", "seed of stochastic similarities"))
    p.add_argument(
        "--voi",
        help="DICOM VOI transform: auto (the file's first VOI LUT, else its first window), "
        "lut[:N], window[:N] or none (default: auto)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="stop at the first unreadable or missing image instead of skipping it",
    )
    p.add_argument(
        "--anonymize-ids",
        action="store_true",
        default=None,
        help="replace image ids in every output by stable pseudonyms; no part of the probe's "
        "path, folder or file names in any output",
    )
    p.add_argument(
        "--detectability",
        metavar="AUDIT",
        help="an audit of the dissector on this probe (the folder or detectability.csv "
        "`mammodissect audit` wrote): every label carries its concept's AUROC",
    )
    p.add_argument(
        "--min-auroc",
        type=float,
        help="with --detectability: score only mammography concepts the audit saw at this AUROC "
        "or more (controls stay unless flagged for leakage), e.g. 0.9",
    )
    p.add_argument(
        "--calibrated",
        action="store_true",
        default=None,
        help="with --detectability: give the similarity function the audit's calibrated "
        "probabilities (its per-concept logistic fits, else its global one) instead of cosines",
    )
    p.add_argument(
        "--no-image-cache",
        dest="cache_images",
        action="store_false",
        default=None,
        help="do not keep prepared (decoded, cropped, resized) images in the cache",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        default=None,
        help="no progress bars or info lines (warnings still print, and run.json keeps them)",
    )


def _add_layers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "layers",
        help="list the hookable layers of a target with their output shapes",
        description="Dry run on one input of the target's size; prints name, module type and "
        "output shape of every module, in model order.",
    )
    p.add_argument("--target", required=True, help="target model spec")
    p.add_argument("--layers", help="only modules matching these names or glob patterns")
    p.add_argument("--image-size", help="input size HEIGHTxWIDTH (default: the model's own)")
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda[:N] (default: cpu)")


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a Mammo-CLIP checkpoint to safetensors + JSON",
        description="Read a Mammo-CLIP checkpoint (.tar/.pth) safely and write its weights as "
        "OUT.safetensors and its configuration as OUT.json, without the optimizer state "
        "(a third of the size, no pickle). mammoclip:OUT.safetensors loads it.",
    )
    p.add_argument("checkpoint", help="the released .tar (or a classifier .pth)")
    p.add_argument("--out", required=True, help="output .safetensors file")


def _add_concepts(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "concepts",
        help="list, show, convert, merge and filter concept sets",
        description="Concept sets: the bundled ones (birads, controls, birads+controls) or files "
        "(.txt, .csv, .tsv, .yaml/.yml, .json, .xlsx; the format follows the extension).",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("list", help="the bundled concept sets with their counts")
    rule = argparse.ArgumentParser(add_help=False)
    rule.add_argument(
        "--duplicates",
        choices=["first", "last", "multi"],
        default="first",
        help="categories of a concept listed twice: first, last, or multi (default: first)",
    )
    show = verbs.add_parser("show", parents=[rule], help="counts per broad category and category")
    show.add_argument("source", metavar="NAME_OR_PATH")
    convert = verbs.add_parser(
        "convert", parents=[rule], help="write a set in the format of --out's extension"
    )
    convert.add_argument("source", metavar="IN")
    merge = verbs.add_parser("merge", parents=[rule], help="concatenate sets, in order")
    merge.add_argument("sources", nargs="+", metavar="IN")
    pick = verbs.add_parser(
        "filter",
        parents=[rule],
        help="keep the concepts under any given broad category or category",
    )
    pick.add_argument("source", metavar="IN")
    pick.add_argument("--broad", action="append", help="broad category to keep (repeatable)")
    pick.add_argument("--category", action="append", help="category to keep (repeatable)")
    pick.add_argument(
        "--no-controls", dest="controls", action="store_false", help="drop control concepts"
    )
    for verb in (convert, merge, pick):
        verb.add_argument("--out", required=True, help="output file (.txt, .csv, .tsv, ...)")


def _add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune",
        help="fine-tune a target on a probe's labels (the study's C variants)",
        description="Put a linear head on the target's image encoder and train it whole on one "
        "task of a labelled probe (AdamW, warm-up then cosine, flips and small affine changes), "
        "validating on held-out patients every epoch; writes metrics.json and the best epoch's "
        "classifier, a target for `mammodissect run`. Rerun the same command to resume.",
    )
    p.add_argument("--model", required=True, help="target spec to fine-tune, e.g. mammoclip:PATH")
    p.add_argument(
        "--probe", required=True, help="labelled probe: manifest with label columns or a layout"
    )
    p.add_argument(
        "--task",
        required=True,
        help="density, birads, mass, calcification, or the name of a label column",
    )
    p.add_argument("--out", required=True, help="run directory (resumed when it exists)")
    add_flags(p, FinetuneConfig)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from mammodissect.finetune import finetune, target_spec

    config = FinetuneConfig(**flag_values(args, FinetuneConfig))
    metrics = finetune(args.model, args.probe, args.task, args.out, config)
    best = metrics["best_metric"]
    shown = f"{best:.4f}" if best is not None else "undefined"
    print(
        f"fine-tuned {metrics['task']} ({metrics['kind']}, {len(metrics['classes'])} classes) "
        f"for {metrics['epochs_done']} epochs: best validation {metrics['metric']} {shown} "
        f"at epoch {metrics['best_epoch']}"
    )
    flags = metrics.get("run_flags")
    print(
        f"dissect it with: mammodissect run --target '{target_spec(args.out, metrics)}'"
        + (f" {flags}" if flags else "")
        + f" --layers {metrics['layer']} (or image_encoder layers) ..."
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``mammodissect`` command."""
    from mammodissect import __version__

    parser = argparse.ArgumentParser(
        prog="mammodissect",
        description="Which clinical concepts have the units of a mammography model learned?",
    )
    parser.add_argument("--version", action="version", version=f"mammodissect {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_layers(sub)
    _add_convert(sub)
    _add_finetune(sub)
    _add_concepts(sub)
    _add_phantom(sub)
    _add_demo(sub)
    _add_study(sub)
    _add_analysis(sub)
    _add_evaluate(sub)
    _add_audit(sub)
    _add_report(sub)
    _verbose_everywhere(sub)
    return parser


_VERBOSE = "log progress details; show the traceback of an error raised inside user code"


def _verbose_everywhere(sub: argparse._SubParsersAction) -> None:
    """``-v`` works after the sub-command too (``mammodissect run -v ...``), at every level."""
    for parser in dict.fromkeys(sub.choices.values()):
        parser.add_argument(
            "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE
        )
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                _verbose_everywhere(action)


def _run_config(args: argparse.Namespace) -> RunConfig:
    values: dict[str, Any] = RunConfig.read_yaml(args.config) if args.config else {}
    flags = {k: v for k, v in vars(args).items() if k in RunConfig.field_names() and v is not None}
    params = parse_assignments(args.similarity_param, "--similarity-param")
    if params:
        flags["similarity_params"] = {**values.get("similarity_params", {}), **params}
    values.update(flags)
    return RunConfig.from_mapping(values, source=args.config or "the command line")


def _cmd_run(args: argparse.Namespace) -> int:
    from mammodissect.api import run

    config = _run_config(args)
    result = run(config)
    if "counts" not in result.run:  # a torchrun rank other than 0: rank 0 reports
        return 0
    counts = result.run["counts"]
    where = f" -> {result.out}" if result.out else ""
    print(
        f"dissected {counts['units']} units in {counts['layers']} layers on "
        f"{counts['images_used']} images x {counts['concepts']} concepts{where}"
    )
    if result.run["skipped"]:
        print(f"skipped {len(result.run['skipped'])} unreadable images (reasons in run.json):")
        for item in result.run["skipped"]:
            print(f"  {item['image']}: {item['reason']}")
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    from mammodissect.target_layers import target_layers

    listing = target_layers(
        args.target, args.layers, image_size=args.image_size, device=args.device
    )
    print(listing.table())
    return 0


def _add_phantom(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="the synthetic mammography world: write phantom probe sets, train phantom-clip",
        description="Seeded 2D mammogram phantoms with a mask for every concept drawn.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    write = actions.add_parser(
        "write", help="write phantoms as PNG + masks + manifest.csv (a probe for `run`)"
    )
    write.add_argument("--out", required=True, help="output folder")
    write.add_argument("--images", type=int, default=200, help="number of phantoms (default 200)")
    write.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    write.add_argument("--size", metavar="HxW", help="phantom size HEIGHTxWIDTH (default 320x192)")
    write.add_argument(
        "--workers", type=int, default=1, help="processes drawing them (1; same phantoms)"
    )
    train = actions.add_parser(
        "train-dissector",
        help="train phantom-clip on phantom image-report pairs (CPU, minutes)",
        description="Train the phantom-clip dissector (EfficientNet-Lite0 from real ImageNet "
        "weights + frozen all-MiniLM-L6-v2) and write OUT.safetensors and OUT.json with its "
        "held-out zero-shot quality; use it with --dissector phantom-clip:OUT.safetensors.",
    )
    train.add_argument("--out", required=True, help="output .safetensors file")
    train.add_argument(
        "--init",
        metavar="WEIGHTS",
        help="phantom-clip weights to train further ('bundled' or a .safetensors file) "
        "instead of starting from ImageNet: a new cycle of --epochs epochs on new phantoms",
    )
    train.add_argument(
        "--input-size",
        metavar="HxW",
        help="the image tower's input, HEIGHTxWIDTH (default: that of --init, else 320x192); "
        "the phantoms are drawn at this size, and every loader of the weights resizes to it",
    )
    add_signature_flags(train, train_dissector, (
        ("images", "new phantoms per epoch"),
        ("epochs", "epochs"),
        ("batch-size", "batch size"),
        ("lr", "peak learning rate of the heads; the tower's is a third"),
        ("seed", "seed"),
        ("held-out", "held-out phantoms measured"),
        ("frozen-stages", "stages of the image tower kept as ImageNet made them"),
        ("workers", "processes drawing the phantoms (the same phantoms whatever the count)"),
    ))  # fmt: skip
    _add_refit_flags(train)
    refit = actions.add_parser(
        "refit-dissector",
        help="refit the heads of phantom-clip weights on the frozen tower (CPU, minutes)",
        description="Refit phantom-clip's projections, logit scale and bias on fresh phantoms "
        "with the image tower frozen (the last stage of train-dissector, alone), and write "
        "OUT.safetensors and OUT.json; the tower, and so the M target and the C variants made "
        "from it, stay as they are.",
    )
    refit.add_argument("--out", required=True, help="output .safetensors file")
    refit.add_argument(
        "--weights", help="phantom-clip weights to start from ('bundled', the default, or a file)"
    )
    add_signature_flags(
        refit, refit_dissector, (
            ("seed", "seed"), ("held-out", "held-out phantoms measured"),
            ("workers", "processes drawing the phantoms (the same phantoms whatever the count)"),
        ),
    )  # fmt: skip
    _add_refit_flags(refit)
    target = actions.add_parser(
        "train-target",
        help="fine-tune phantom-clip's encoder for a phantom task: a C variant (CPU, minutes)",
        description="Fine-tune phantom-clip's image encoder (the M target) with `mammodissect "
        "finetune` on seeded phantoms for density (4 classes), mass, (suspicious) "
        "calcification or BI-RADS (the categories present), and write OUT.safetensors "
        "(float16) + OUT.json, a classifier:OUT target. "
        "Phantoms and the resumable fine-tuning run stay in OUT_STEM-work/.",
    )
    target.add_argument("--task", required=True, choices=PHANTOM_C_TASKS)
    target.add_argument("--out", required=True, help="output .safetensors file")
    target.add_argument(
        "--base", default="phantom-clip",
        help="the encoder fine-tuned: phantom-clip (the bundled weights, the default) or "
        "phantom-clip:W.safetensors; phantoms are drawn at its input size",
    )  # fmt: skip
    add_signature_flags(target, train_target, (
        ("images", "training phantoms"),
        ("epochs", "epochs"),
        ("batch-size", "batch size"),
        ("lr", "learning rate"),
        ("seed", "seed"),
        ("head-init", "the new head: random, or probe (a linear probe first, then fine-tuning)"),
        ("precise-bn", "BatchNorm statistics recomputed on the plain training images"),
        ("held-out", "held-out phantoms measured"),
        ("workers", "processes drawing the phantoms (the same phantoms whatever the count)"),
    ))  # fmt: skip
    target.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="the general-vs-mammography study on the phantom world, no arguments needed",
        description="Writes a seeded phantom probe set, dissects EfficientNet-Lite0 with real "
        "ImageNet weights (G), phantom-clip's image encoder (M) and M fine-tuned for density, "
        "mass, suspicious calcification and BI-RADS (C-density, C-mass, C-calcification, "
        "C-birads) with "
        "phantom-clip as the dissector and the bundled birads+controls concepts, summarises the "
        "units that got a mammography concept and compares the variants (tables, figures).",
    )
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--images", type=int, default=300, help="probe phantoms (default 300)")
    p.add_argument("--seed", type=int, help="probe seed (default 2026, held out from training)")
    p.add_argument("--blocks", default="*.*", help="Lite0 blocks to dissect (default all: *.*)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="also evaluate every variant's labels against the phantoms' masks and labels "
        "(mammodissect evaluate; several minutes per variant on a CPU)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_study(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "study",
        help="the whole G / M / C study from one YAML file, resumable",
        description="Runs every variant of a study file (shared run settings, a variants "
        "list with name, role, target and layers, optional evaluate / compare / report "
        "sections), then compares them and writes the reports. Each finished step is recorded "
        "in OUT/study.json with a fingerprint of what it used; a rerun skips unchanged steps. "
        "--template prints an example to start from.",
    )
    p.add_argument("study", nargs="?", help="the study file (YAML)")
    p.add_argument("--out", help="study folder (default: the file's out, else runs/study)")
    p.add_argument("--only", help="run only these variants (comma-separated names)")
    p.add_argument("--evaluate", action="store_true", help="also evaluate every variant")
    p.add_argument(
        "--dry-run", action="store_true",
        help="validate the file (keys, paths, layers) and print the plan; run nothing",
    )  # fmt: skip
    p.add_argument("--template", choices=("phantom", "mammoclip"),
                   help="print a study file to start from and exit")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _cmd_study(args: argparse.Namespace) -> int:
    from mammodissect.study import run_study, template

    if args.template:
        print(template(args.template), end="")
        return 0
    if not args.study:
        raise MammodissectError("give a study file (mammodissect study STUDY.yaml), or --template")
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    result = run_study(
        args.study, out=args.out, only=only, evaluate=args.evaluate, dry_run=args.dry_run,
        quiet=args.quiet,
    )  # fmt: skip
    for key, status in result.steps.items():
        variant = key.partition(":")[2]
        layers = f", {result.layers[variant]} layers" if key.startswith("run:") else ""
        took = f", {result.seconds[key]:.0f} s" if key in result.seconds else ""
        print(f"  {key}: {status}{layers}{took}")
    ran = sum(s == "ran" for s in result.steps.values())
    reused = sum(s == "reused" for s in result.steps.values())
    if args.dry_run:
        print(f"plan: {len(result.steps) - reused} steps to run, {reused} reused; nothing run")
    else:
        print(f"{ran} steps ran, {reused} reused -> {result.out}/ (study.json; reports: "
              f"report.html in each variant's folder and in compare/)")  # fmt: skip
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from mammodissect.phantom.demo import COMPARE, DEMO_SEED, REPORT_FILE, run_demo

    summary = run_demo(
        Path(args.out), images=args.images, seed=DEMO_SEED if args.seed is None else args.seed,
        blocks=args.blocks, device=args.device, quiet=args.quiet, evaluate_runs=args.evaluate,
    )  # fmt: skip
    for row in summary.to_dict("records"):
        print(
            f"{row['variant']} ({row['model']}): {row['passing_mammography_units']} of the "
            f"{row['passing_units']} units above the global threshold have a mammography "
            f"concept; all units: {row['mammography_units']}/{row['units']} "
            f"(labels drawn at random: {row['mammography_share']:.0%})"
        )
        print(f"   last block {row['last_layer']}: {row['last_layer_top_concepts']}")
        if args.evaluate:
            head = row["head_top1_in_class"]
            print(
                f"   evaluated: {row['units_above_null_99']} units above the 99% null; "
                f"{row['grounded_units']} grounded in masks, top-1 agreement "
                f"{_rate(row['top1_match'])}; planted units recovered at top-1 "
                f"{_rate(row['planted_top1_recovery'])}; labels surviving noise 0.02: "
                f"{_rate(row.get('noise_0.02_survival'))}"
                + ("" if _rate(head) == "n/a" else f"; head top-1 in class {_rate(head)}")
            )
    uncaptured = pd.read_csv(Path(args.out) / COMPARE / "uncaptured.csv")
    print(
        f"{len(uncaptured)} mammography concepts are the top concept of no passing unit in any "
        f"variant (the study's question 3: {Path(args.out) / COMPARE / 'uncaptured.csv'})"
    )
    print(
        f"run directories, probe and summary.csv in {args.out}/; tables and figures comparing "
        f"the variants in {Path(args.out) / COMPARE}/"
    )
    print(
        f"HTML reports (open in a browser, offline): {Path(args.out) / COMPARE / REPORT_FILE} "
        f"and {REPORT_FILE} in each variant's folder"
    )
    return 0


def _add_refit_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refit-images", type=int, default=HeadRefit.images,
        help=f"fresh phantoms for the heads refit on the frozen tower "
        f"({HeadRefit.images}; 0 skips it)",
    )  # fmt: skip
    parser.add_argument(
        "--refit-steps", type=int, default=HeadRefit.steps,
        help=f"steps of the heads refit ({HeadRefit.steps})",
    )  # fmt: skip
    parser.add_argument(
        "--device", default="auto", help="auto (a GPU when there is one), cpu or cuda[:N]"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _cmd_phantom(args: argparse.Namespace) -> int:
    from pathlib import Path

    if args.action == "write":
        from mammodissect.phantom import PhantomSettings, generate, write_phantoms

        size = parse_image_size(args.size)
        settings = PhantomSettings(size=size) if size else PhantomSettings()
        drawn = generate(args.images, seed=args.seed, settings=settings, workers=args.workers)
        manifest = write_phantoms(Path(args.out), drawn)
        print(f"wrote {args.images} phantoms; probe them with --probe {manifest}")
        return 0
    if args.action == "train-target":
        metrics = train_target(
            args.task, Path(args.out), base=args.base, images=args.images, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed, head_init=args.head_init,
            precise_bn=args.precise_bn, held_out=args.held_out,
            workers=args.workers, progress=not args.quiet,
        )  # fmt: skip
        held_out = ", ".join(f"{k} {v}" for k, v in metrics["held_out"].items())
        best = metrics["best_metric"]  # None when the validation split could not measure it
        print(
            f"wrote {args.out}; best validation {metrics['metric']} "
            f"{'n/a' if best is None else f'{best:.3f}'} "
            f"(epoch {metrics['best_epoch']}); held-out phantoms: {held_out}; "
            f"dissect it with --target classifier:{args.out}"
        )
        return 0
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise MammodissectError(f"output {out.name!r} must end in .safetensors")
    refit = HeadRefit(images=args.refit_images, steps=args.refit_steps)
    if args.action == "refit-dissector":
        weights = weights_path(args.weights) if args.weights else None
        facts = refit_dissector(
            out, weights=weights, refit=refit, seed=args.seed, held_out=args.held_out,
            workers=args.workers, device=args.device, progress=not args.quiet,
        )  # fmt: skip
    else:
        init = weights_path(args.init) if args.init else None  # None: from ImageNet
        facts = train_dissector(
            out, images=args.images, epochs=args.epochs, batch_size=args.batch_size,
            lr=args.lr, seed=args.seed, held_out=args.held_out,
            frozen_stages=args.frozen_stages, init=init,
            input_size=parse_image_size(args.input_size), refit=refit, workers=args.workers,
            device=args.device, progress=not args.quiet,
        )  # fmt: skip
    families = ", ".join(
        f"{k} {v:.2f}" for k, v in facts["auroc_per_family"].items() if v is not None
    )
    print(
        f"wrote {out}; held-out zero-shot AUROC per family: {families}; "
        f"report-to-image recall@5 {facts['report_to_image_recall_at_5']:.2f}"
    )
    return 0


def _add_analysis(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "summary",
        help="(re)write summary.csv of run directories",
        description="Per layer, in model order: top-1 score statistics, the local threshold "
        "(layer mean), units passing it, the mammography share of passing units, unique and top "
        "concepts; counts per broad category and category in summary_categories.csv.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    p = sub.add_parser(
        "compare",
        help="compare run directories (G, M, C variants): tables and figures",
        description="Global threshold per aligned layer (the largest layer mean of the runs), "
        "mammography vs control units, the change per category from the baseline (M) to "
        "fine-tuned runs (C...), the concepts each run captures; writes compare.csv, "
        "broad_categories.csv, categories.csv, coverage.csv, coverage_categories.csv, "
        "uncaptured.csv, compare.json and figures/ (PNG and SVG).",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories (same probe, concepts)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--names", help="one name per run, comma-separated (default: folder names)")
    p.add_argument(
        "--layers",
        help="layers shown in the bar figures, comma-separated (default: last block of "
        "EfficientNet stages 1, 4, 7, else first, middle, last)",
    )
    p.add_argument("--baseline", help="run the C runs are compared with (default: the run named M)")
    p.add_argument(
        "--concepts",
        help="the runs' concept set, when their folders lack concepts.csv and it is not bundled",
    )
    p.add_argument("--no-figures", dest="figures", action="store_false", help="tables only")
    p.add_argument(
        "--detectability",
        metavar="AUDIT",
        help="an audit of the runs' dissector (folder or detectability.csv; default: the one "
        "the runs keep): question 3 tells concepts the dissector cannot see from those no unit "
        "captures",
    )
    p.add_argument(
        "--min-auroc", type=float, help="AUROC at which a concept counts as seen (default 0.9)"
    )


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="how often are a run's labels right: null baseline, grounding, agreement, "
        "planted units, the classifier-head check, stability",
        description="Reads a run directory and its caches (no forward pass for the null): per "
        "layer, top-1 scores with activations permuted across images (the null; units above "
        "its 95th/99th percentile); label survival under a bootstrap of the probe images. With "
        "--probe: each unit's grounded concept in masks or boxes (IoU of its top-0.5% activation "
        "maps), its best density/BI-RADS class (AUROC of its pooled activation), the agreement "
        "of the labels with both (top-1, top-5, category, MiniLM cosine; bootstrap 95% CIs), "
        "planted units (blurred copies of each concept's masks) scored like a layer, and label "
        "survival under Gaussian noise on the images (recorded again, cached). For a fine-tuned "
        "classifier the head's units are checked against their classes. Writes "
        "evaluation.csv, evaluation_layers.csv, evaluation.json, head_check.csv, planted.csv "
        "and units_above_null in summary.csv.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by `mammodissect run`")
    add_flags(p, EvaluateConfig)
    p.add_argument(
        "--similarities",
        help="also relabel every unit with each of these similarity functions (comma-separated, "
        f"of {','.join(SIMILARITIES)}) on the cached "
        "activations and score each against the same grounding: similarities.csv/.png",
    )
    p.add_argument(
        "--top-k",
        default="20,100",
        help="top_k values for soft_wpmi and wpmi in --similarities (comma-separated; 20,100)",
    )


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from mammodissect.evaluate import evaluate
    from mammodissect.evaluate.similarities import similarity_settings

    if args.similarities:  # bad names or top_k fail before the evaluation runs
        similarity_settings(args.similarities.split(","), numbers(args.top_k, "--top-k", int))
    config = EvaluateConfig(**flag_values(args, EvaluateConfig))
    result = evaluate(args.run_dir, config)
    counts, overall = result.info["counts"], result.info["overall"]
    print(
        f"{args.run_dir}: {counts['units_above_null_99']}/{counts['units']} units above the "
        f"99th-percentile null ({counts['units_above_threshold']} above their layer's mean)"
    )
    if result.info["grounding"]["source"]:
        top1 = overall["top1_match"]
        shown = "n/a" if top1 is None else f"{top1:.2f}"
        print(
            f"{counts['grounded_units']} units grounded in {result.info['grounding']['source']}; "
            f"top-1 label agreement {shown}"
        )
    if counts["image_grounded_units"]:
        top1 = overall["image_top1_match"]
        print(
            f"{counts['image_grounded_units']} units grounded in image-level classes "
            f"({', '.join(result.info['image_labels']['classes'])}); their labels name the "
            f"class for {top1:.2f}"
        )
    stability = result.info["stability"]
    if stability:
        shown = ", ".join(f"{k.removesuffix('_survival')} {v:.2f}" for k, v in stability.items())
        print(f"top-1 labels that survive: {shown}")
    head = result.info["head_check"]
    if head:
        print(
            f"classifier head ({head['task']}): {head['units_with_truth']} units, top-1 label in "
            f"class {_rate(head['top1_in_class'])}, in the top 5 {_rate(head['top5_in_class'])}"
        )
    for note in result.info["notes"]:
        print(f"note: {note}")
    written = [EVALUATION_FILE, EVALUATION_LAYERS_FILE, EVALUATION_JSON]
    written += [HEAD_CHECK_FILE] if result.head is not None else []
    written += [PLANTED_FILE] if result.planted is not None else []
    print("-> " + ", ".join(written))
    if args.similarities:
        _compare_similarities(args, result.units)
    return 0


def _rate(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.2f}"  # None or NaN


def _compare_similarities(args: argparse.Namespace, units: Any) -> None:
    import math

    from mammodissect.evaluate.similarities import compare_similarities

    names = [n.strip() for n in args.similarities.split(",") if n.strip()]
    top_ks = numbers(args.top_k, "--top-k", int)
    table = compare_similarities(
        args.run_dir, similarities=names, top_ks=top_ks, evaluation=units,
        dissector=args.dissector, probe=args.probe, cache_dir=args.cache_dir,
        null_seeds=args.null_seeds, bootstrap=args.bootstrap, seed=args.seed,
    )  # fmt: skip
    for row in table.itertuples():
        top1 = "n/a" if math.isnan(row.top1_match) else f"{row.top1_match:.2f}"
        top5 = "n/a" if math.isnan(row.top5_match) else f"{row.top5_match:.2f}"
        print(f"  {row.setting}: top-1 {top1}, top-5 {top5}")
    print("-> similarities.csv, similarities.png, similarities.svg")


def _add_audit(sub: argparse._SubParsersAction) -> None:
    from mammodissect.dissector_audit import AuditConfig

    defaults = {
        f.name: f.default
        for f in dataclasses.fields(AuditConfig)
        if f.default is not dataclasses.MISSING
    }
    p = sub.add_parser(
        "audit",
        help="how well a dissector sees each annotated concept on a probe (detectability)",
        description=textwrap.fill(
            "Embed the probe with the dissector (cached: an audit of a run's probe reuses the "
            "run's dissector cache) and score its cosines against the probe's own annotations "
            "(read as the annotation dissector reads them): per annotated concept, AUROC with a "
            "bootstrap 95% interval, average precision and a logistic calibration of the "
            "cosine; per control concept, the share of annotated findings it outscores "
            "(leakage). Writes detectability.csv, leakage.csv, audit.json and "
            "figures/detectability.png/.svg.",
            78,
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  mammodissect audit --dissector phantom-clip --probe "
        "runs/demo/probe/manifest.csv \\\n      --concepts birads+controls --out runs/audit",
    )
    p.add_argument("--dissector", required=True, help="dissector spec, as for `run`")
    p.add_argument("--probe", required=True, help="an annotated probe, as for `run`")
    p.add_argument("--concepts", required=True, help="concept set, as for `run`")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--annotation-map", help="rows added to the bundled annotation map (field,value,concept)"
    )
    p.add_argument("--prompt", dest="prompts", action="append", metavar="TEMPLATE",
                   help="prompt template with {} (repeatable), as for `run`")  # fmt: skip
    p.add_argument("--lowercase", action="store_true", help="lower-case concepts, as for `run`")
    p.add_argument("--dissector-preprocess", help="dissector preprocessing recipe")
    p.add_argument("--dissector-image-size", help="dissector input size HEIGHTxWIDTH")
    p.add_argument("--bootstrap", type=int, default=defaults["bootstrap"],
                   help=f"resamples of the images for the AUROC intervals "
                   f"({defaults['bootstrap']}; 0: none)")  # fmt: skip
    p.add_argument("--leakage-threshold", type=float, default=defaults["leakage_threshold"],
                   help="flag a control that outscores more than this share of the annotated "
                   f"findings ({defaults['leakage_threshold']})")  # fmt: skip
    p.add_argument("--seed", type=int, default=defaults["seed"], help="bootstrap seed (0)")
    p.add_argument(
        "--batch-size", type=int, default=defaults["batch_size"], help="images per batch"
    )
    p.add_argument("--device", default=defaults["device"], help="auto, cpu or cuda[:N]")
    p.add_argument("--precision", choices=list(PRECISIONS), default=defaults["precision"])
    p.add_argument("--num-workers", type=int, default=defaults["num_workers"],
                   help="image decoding worker processes")  # fmt: skip
    p.add_argument("--voi", default=defaults["voi"], help="DICOM VOI transform, as for `run`")
    p.add_argument("--cache-dir", help="the cache folder (default: as for `run`)")
    p.add_argument("--no-image-cache", dest="cache_images", action="store_false",
                   help="do not keep prepared images in the cache")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines")


def _cmd_audit(args: argparse.Namespace) -> int:
    from mammodissect.dissector_audit import AuditConfig, run_audit

    values = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(AuditConfig)
        if getattr(args, f.name, None) is not None
    }
    result = run_audit(AuditConfig.from_mapping(values))
    counts, summary = result.info["counts"], result.info["summary"]
    shown = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
    print(
        f"{counts['annotated_concepts']} of {counts['concepts']} concepts are annotated on "
        f"{counts['images_used']} images: median AUROC {shown(summary['median_auroc'])}, "
        f"{shown(summary['share_auroc_at_least_0.9'])} of them at 0.9 or more"
    )
    if counts["controls"]:
        flagged = result.info["flagged_controls"]
        print(
            f"controls outscoring more than {args.leakage_threshold:.0%} of the annotated "
            f"findings: {len(flagged)} of {counts['controls']}"
            + (
                f" ({', '.join(flagged[:5])}{', ...' if len(flagged) > 5 else ''})"
                if flagged
                else ""
            )
        )
    print(f"-> {result.out}/ (detectability.csv, leakage.csv, audit.json, figures/)")
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML report of a run or compare directory",
        description="Writes report.html (offline: inline script, images embedded). For a run "
        "directory: facts, summary and figure, a paginated sortable table of all units with a "
        "filter and a concept search, and unit cards (top images with the unit's heatmap and a "
        "crop around its peak when --probe is given). For a compare directory: its figures, "
        "tables and links to the runs' reports. Views open from the URL hash, e.g. "
        "report.html#concept=spiculated.",
    )
    p.add_argument("path", metavar="RUN_OR_COMPARE_DIR", help="a run or compare directory")
    p.add_argument("--out", help="HTML file to write (default: PATH/report.html)")
    p.add_argument("--probe", help="the run's probe: cards get top images with heatmaps")
    p.add_argument(
        "--cards",
        type=int,
        default=8,
        help="cards for the N best-scoring units per layer (default 8; every unit when the run "
        "has at most 300; 0: none)",
    )
    p.add_argument(
        "--card-images", type=int, default=5, help="top images drawn per card (default 5)"
    )
    p.add_argument("--target", help="the run's target spec (when its weights are a file)")
    p.add_argument("--dissector", help="the run's dissector spec (when its weights are a file)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default auto)")
    p.add_argument("--quiet", action="store_true", help="warnings and errors only")


def _cmd_report(args: argparse.Namespace) -> int:
    from mammodissect.report import report

    written = report(
        args.path, out=args.out, probe=args.probe, cards=args.cards,
        card_images=args.card_images, target=args.target, dissector=args.dissector,
        device=args.device,
    )  # fmt: skip
    print(f"-> {written}")
    return 0


def _cmd_summary(args: argparse.Namespace) -> int:
    from mammodissect.api import write_summary

    for run_dir in args.runs:
        summary = write_summary(run_dir)
        passing, total = int(summary["passing_units"].sum()), int(summary["units"].sum())
        print(
            f"{run_dir}: {len(summary)} layers, {passing}/{total} units above their layer's "
            f"mean, {int(summary['mammography_units'].sum())} of them with a mammography concept "
            f"-> summary.csv"
        )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from mammodissect.api import compare

    result = compare(
        args.runs, args.out, names=args.names, layers=args.layers, baseline=args.baseline,
        concepts=args.concepts, figures=args.figures, detectability=args.detectability,
        min_auroc=args.min_auroc,
    )  # fmt: skip
    totals = result.layers.groupby("run", sort=False)[["passing_global", "mammography"]].sum()
    for name, row in totals.iterrows():
        print(
            f"{name}: {row['passing_global']} units above the global threshold, "
            f"{row['mammography']} with a mammography concept"
        )
    if result.info["uncaptured"] is not None:
        print(f"mammography concepts no run captures: {result.info['uncaptured']}")
    split = result.info["uncaptured_split"]
    if split:
        print(
            f"  of them the dissector cannot see {split['dissector_cannot_see']} (AUROC < "
            f"{split['min_auroc']}), sees {split['seen_but_uncaptured']}, "
            f"{split['not_annotated']} not annotated"
        )
    print(f"tables and {len(result.figures)} figure files in {args.out}/")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mammodissect.models.mammoclip import convert

    out = Path(args.out)
    facts = convert(Path(args.checkpoint), out)
    print(
        f"wrote {out} ({facts['tensors']} tensors, {facts['bytes'] / 1e6:.0f} MB) "
        f"and {out.with_suffix('.json')}"
    )
    return 0


def _cmd_concepts(args: argparse.Namespace) -> int:
    from mammodissect import concepts

    if args.verb == "list":
        print(concepts.bundled_report())
        return 0
    if args.verb == "show":
        print(concepts.report(concepts.load(args.source, duplicates=args.duplicates)))
        return 0
    if args.verb == "merge":
        loaded = [concepts.load(s, duplicates=args.duplicates) for s in args.sources]
        result = concepts.merge(loaded, duplicates=args.duplicates)
    else:
        result = concepts.load(args.source, duplicates=args.duplicates)
    if args.verb == "filter":
        result = concepts.filter_set(result, args.broad, args.category, controls=args.controls)
    concepts.write(result, args.out)
    print(f"wrote {args.out} ({len(result)} concepts)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 success, 2 bad input, 130 interrupted).

    Warnings always print; ``--quiet`` removes progress bars and info lines (``-v`` adds the
    info lines, and the traceback of an error raised inside user code).
    """
    args = build_parser().parse_args(argv)
    verbose = args.verbose and not getattr(args, "quiet", None)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="mammodissect: %(levelname)s: %(message)s",
    )
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
    try:
        commands = {
            "run": _cmd_run,
            "layers": _cmd_layers,
            "convert": _cmd_convert,
            "finetune": _cmd_finetune,
            "concepts": _cmd_concepts,
            "phantom": _cmd_phantom,
            "demo": _cmd_demo,
            "study": _cmd_study,
            "summary": _cmd_summary,
            "compare": _cmd_compare,
            "evaluate": _cmd_evaluate,
            "audit": _cmd_audit,
            "report": _cmd_report,
        }
        return commands[args.command](args)
    except MammodissectError as err:
        if args.verbose and err.__cause__ is not None:
            traceback.print_exception(err.__cause__, file=sys.stderr)
        print(f"mammodissect: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        done = "epochs are saved" if args.command == "finetune" else "batches are cached"
        print(
            f"mammodissect: interrupted; finished {done}, rerun the same command to resume",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
