"""Which fine-tuning recipe for the phantom C variants? Validation only.

Each recipe fine-tunes phantom-clip (the bundled weights, or ``--weights``) for ``--task`` on
the C variants' own training phantoms (2,000 of seed 50,000, a fifth of them validating; the
phantoms ``train-target`` draws), with ``train-target``'s numbers (3 epochs, batch 32, lr 1e-4
unless the recipe says otherwise, seed 0), and prints the validation metric after every epoch
(and the linear probe's own, when the head starts as one). Held-out phantoms are not used: the
recipe is chosen here, then measured on them by ``train-target``.

Recipes (``--recipes``, any of them): ``random`` (a random head, the running BatchNorm
statistics: the study's recipe), ``probe`` (a linear-probe head), ``random+precise`` and
``probe+precise`` (BatchNorm statistics recomputed on the plain training images before every
validation), ``probe+frozen-bn`` (BatchNorm layers fixed), ``...@LR`` for another learning
rate (``probe@1e-5``).

``--check-bn RUN`` takes a finished fine-tuning run directory of this benchmark and asks
whether its BatchNorm statistics are what fails it: its validation accuracy as trained, then
with the statistics recomputed (under the last epoch's weights) on 800 training images plain,
augmented as in training, flipped only, and with the affine change only.

    python benchmarks/bench_c_recipe.py --task density --work runs/c-recipe
    python benchmarks/bench_c_recipe.py --task density --recipes probe@1e-5 --work runs/c-recipe
    python benchmarks/bench_c_recipe.py --check-bn runs/c-recipe/density-probe@1e-5
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from mammodissect.finetune import finetune, recipe
from mammodissect.finetune.api import _data
from mammodissect.finetune.recipe import make_loss
from mammodissect.finetune.split import split_images
from mammodissect.finetune.train import Loop, evaluate, recompute_batchnorm, selection_metric
from mammodissect.models import load_target
from mammodissect.models.phantom_clip import spec_input_size
from mammodissect.phantom import PhantomSettings, generate, write_phantoms
from mammodissect.phantom.targets import C_TASKS, TARGET_SEED
from mammodissect.probe import load_probe
from mammodissect.probe.tasks import task_labels

BN_LAYERS = "image_encoder.*bn*,image_encoder.blocks.*.*.bn*"


def _options(name: str) -> dict:
    """``finetune`` keywords of a recipe name such as ``probe+precise@1e-5``."""
    body, _, lr = name.partition("@")
    head, *changes = body.split("+")
    if head not in ("random", "probe") or not set(changes) <= {"precise", "frozen-bn"}:
        raise SystemExit(f"unknown recipe {name!r}")
    return {
        "head_init": head,
        "precise_bn": "precise" in changes,
        "freeze": BN_LAYERS if "frozen-bn" in changes else None,
        "lr": float(lr) if lr else 1e-4,
    }


def _manifest(work: Path, spec: str, task: str, workers: int) -> Path:
    manifest = work / "probe" / "manifest.csv"
    if not manifest.is_file():
        size = spec_input_size(spec)
        settings = PhantomSettings(size=size) if size else PhantomSettings()
        write_phantoms(work / "probe", generate(2000, TARGET_SEED, settings, workers=workers))
    return manifest


def _check_bn(run: Path) -> None:
    """Validation accuracy of a finished run with its BatchNorm statistics recomputed."""
    settings = json.loads((run / "metrics.json").read_text())["settings"]
    probe = load_probe(run.parent / "probe" / "manifest.csv")
    labels = task_labels(probe, settings["task"])
    parts = split_images(  # the run's own split
        labels.targets, probe.labels, val_fraction=settings["val_fraction"],
        seed=settings["seed"], mode=settings["split"],
    )  # fmt: skip
    model = load_target(f"classifier:{run / 'classifier.safetensors'}")
    model.module.load_state_dict(torch.load(run / "last.pt", weights_only=False)["model"])
    data = _data(probe, labels, parts, model.preprocess)
    data.train_rows = np.sort(data.train_rows)[:800]
    loop = Loop(
        epochs=1, batch_size=settings["batch_size"], lr=0.0, weight_decay=0.0, warmup_epochs=0,
        seed=0, augment=False, device=torch.device("cpu"), progress=False,
    )  # fmt: skip
    loss = make_loss(data.kind, torch.from_numpy(data.targets[data.train_rows]))
    metric = f"val_{selection_metric(data.kind)}"
    value = evaluate(model.module, data, data.val_rows, loss, loop)[metric]
    print(f"{run.name}: validation {metric[4:]} as trained {value:.4f}")
    ways = {
        "plain": None,
        "augmented": dict(recipe.AUGMENT),
        "flipped only": {**recipe.AUGMENT, "degrees": 0.0, "translate": 0.0, "scale": 0.0},
        "affine only": {**recipe.AUGMENT, "flip": 0.0},
    }
    for name, bounds in ways.items():
        _recompute(model.module, data, loop, bounds)
        value = evaluate(model.module, data, data.val_rows, loss, loop)[metric]
        print(f"  statistics recomputed on 800 training images, {name}: {value:.4f}")


def _recompute(module: torch.nn.Module, data, loop: Loop, bounds: dict | None) -> None:
    """Precise BatchNorm on the training images, augmented within ``bounds`` (None: plain)."""
    if bounds is None:
        recompute_batchnorm(module, data, loop, frozen=[])
        return
    generator = torch.Generator().manual_seed(0)
    saved, forward = dict(recipe.AUGMENT), module.forward
    recipe.AUGMENT.update(bounds)
    module.forward = lambda x: forward(recipe.augment_batch(x, generator))  # type: ignore[method-assign]
    try:
        recompute_batchnorm(module, data, loop, frozen=[])
    finally:
        recipe.AUGMENT.update(saved)
        del module.forward


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", default="density", choices=list(C_TASKS))
    parser.add_argument(
        "--recipes", nargs="+", default=["random", "probe", "random+precise", "probe+precise"]
    )
    parser.add_argument("--weights", default="bundled", help="phantom-clip weights (bundled)")
    parser.add_argument("--work", default="runs/c-recipe", help="folder of the runs (resumable)")
    parser.add_argument("--workers", type=int, default=2, help="processes drawing phantoms")
    parser.add_argument("--check-bn", metavar="RUN", help="the BatchNorm check of one run")
    opts = parser.parse_args()
    if opts.check_bn:
        _check_bn(Path(opts.check_bn))
        return 0
    spec = "phantom-clip" if opts.weights == "bundled" else f"phantom-clip:{opts.weights}"
    work = Path(opts.work)
    manifest = _manifest(work, spec, opts.task, opts.workers)
    for name in opts.recipes:
        started = time.perf_counter()
        metrics = finetune(
            spec, str(manifest), C_TASKS[opts.task], work / f"{opts.task}-{name}", epochs=3,
            batch_size=32, seed=0, progress=False, **_options(name),
        )  # fmt: skip
        key = f"val_{metrics['metric']}"
        probe = (metrics.get("linear_probe") or {}).get(key)
        curve = " / ".join(f"{e[key]:.4f}" for e in metrics["history"])
        print(
            f"{opts.task} {name}: validation {metrics['metric']} by epoch {curve}"
            + (f" (the linear probe alone {probe:.4f})" if probe is not None else "")
            + f" [{time.perf_counter() - started:.0f} s]",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
