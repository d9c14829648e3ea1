"""``mammodissect phantom train-target``: the phantom study's C variants.

A C variant is phantom-clip's image encoder (the M target) fine-tuned for one phantom task with
:func:`mammodissect.finetune.finetune`, the same command users run on their own data:

- ``density``: breast composition, four classes (A-D);
- ``mass``: a mass is present (binary);
- ``calcification``: a suspicious calcification is present (binary), as in the study;
- ``birads``: the image's BI-RADS category (0-6, the categories present in training).

The training phantoms come from their own seeds (``TARGET_SEED + seed``), far from
phantom-clip's training phantoms, its held-out set and the demo probe. The classifier of the
best validation epoch is written as float16 safetensors with its sidecar, a ``classifier:PATH``
target; the four trained with the defaults ship in the package as ``phantom-c-density``,
``phantom-c-mass``, ``phantom-c-calcification`` and ``phantom-c-birads``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mammodissect.errors import MammodissectError
from mammodissect.finetune import finetune
from mammodissect.metrics import auroc
from mammodissect.models import load_target
from mammodissect.models.phantom_clip import spec_input_size
from mammodissect.models.weights import write_safetensors
from mammodissect.phantom.generate import generate
from mammodissect.phantom.settings import PhantomSettings
from mammodissect.phantom.write import write_phantoms

__all__ = ["C_TASKS", "HELD_OUT_SEED", "TARGET_SEED", "evaluate_target", "train_target"]

log = logging.getLogger(__name__)

#: Phantom task -> the manifest column it is trained on.
C_TASKS: dict[str, str] = {
    "density": "density",
    "mass": "mass",
    "calcification": "suspicious_calcification",
    "birads": "birads",
}

#: Seeds of the C variants' training phantoms start here.
TARGET_SEED = 50_000
#: Seed of the held-out phantoms each trained C variant is measured on.
HELD_OUT_SEED = 60_000


def train_target(
    task: str,
    out: str | Path,
    *,
    base: str = "phantom-clip",
    images: int = 2000,
    epochs: int = 3,
    batch_size: int = 32,
    lr: float = 1e-4,
    seed: int = 0,
    head_init: str = "probe",
    precise_bn: bool = True,
    held_out: int = 500,
    settings: PhantomSettings | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune ``base`` for a phantom ``task`` and write ``out`` (float16 .safetensors + .json).

    The phantoms (written as a probe beside ``out``, in ``OUT_STEM-work/probe``) and the
    fine-tuning run directory (``OUT_STEM-work/finetune``, resumable) are kept, so an
    interrupted training picks up after its last finished epoch.

    Parameters
    ----------
    task:
        ``density``, ``mass``, ``calcification`` or ``birads`` (see :data:`C_TASKS`).
    out:
        Output ``.safetensors`` file; its sidecar gets the same name with ``.json``.
    base:
        The target spec fine-tuned (default phantom-clip's image encoder, the M target).
    images:
        Training phantoms (a fifth of them, by image, validate).
    epochs, batch_size, lr, seed, head_init, precise_bn:
        Passed to :func:`~mammodissect.finetune.finetune` (one epoch of warm-up, then cosine;
        by default the head starts as a linear probe of the frozen encoder, LP-FT, and the
        BatchNorm statistics are recomputed on the plain training images before every
        validation: chosen on C-density's validation split, 0.9725 against 0.8525 for a
        random head with the running statistics).
    held_out:
        Held-out phantoms (seed :data:`HELD_OUT_SEED`) the written file is measured on
        (:func:`evaluate_target`).
    settings:
        Phantom settings (default: :class:`~mammodissect.phantom.settings.PhantomSettings`
        at the input size of ``base`` when it is phantom-clip weights, so that a C variant
        trains on phantoms of its encoder's size).
    workers:
        Processes drawing the phantoms (the same phantoms whatever the count).
    progress:
        Show progress bars.

    Returns
    -------
    dict
        The fine-tuning metrics (also in the sidecar).
    """
    from safetensors.torch import load_file

    if task not in C_TASKS:
        choices = ", ".join(C_TASKS)
        raise MammodissectError(f"unknown phantom task {task!r}; choose one of {choices}")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise MammodissectError(f"output {out.name!r} must end in .safetensors")
    size = spec_input_size(base)  # None unless the base is phantom-clip weights
    if settings is None:  # drawn at the base's own input size
        settings = PhantomSettings(size=size) if size else PhantomSettings()
    work = out.with_name(f"{out.stem}-work")
    manifest = work / "probe" / "manifest.csv"
    if not manifest.is_file():
        phantoms = generate(images, seed=TARGET_SEED + seed, settings=settings, workers=workers)
        write_phantoms(work / "probe", phantoms)
    run = work / "finetune"
    metrics = finetune(
        base, str(manifest), C_TASKS[task], run, epochs=epochs, batch_size=batch_size, lr=lr,
        seed=seed, head_init=head_init, precise_bn=precise_bn, progress=progress,
    )  # fmt: skip
    trained = run / metrics["checkpoint"]
    state = {
        k: v.to(torch.float16) if v.is_floating_point() else v
        for k, v in load_file(str(trained)).items()
    }
    sidecar = json.loads(trained.with_suffix(".json").read_text())
    write_safetensors(state, out)
    _write_json(out.with_suffix(".json"), sidecar)
    quality = evaluate_target(
        f"classifier:{out}", task, held_out, HELD_OUT_SEED, settings, workers=workers
    )
    sidecar["phantom_task"] = {
        "task": task, "column": C_TASKS[task], "images": images,
        "phantom_seed": TARGET_SEED + seed, "held_out": quality,
    }  # fmt: skip
    _write_json(out.with_suffix(".json"), sidecar)
    log.info("wrote %s (task %s, held out %s)", out.name, task, quality)
    return {**metrics, "held_out": quality}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


@torch.inference_mode()
def evaluate_target(
    target: str,
    task: str,
    n: int,
    seed: int,
    settings: PhantomSettings | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Quality of a C variant on ``n`` held-out phantoms: AUROC of its logit for a binary
    task; for a multi-class one (density, BI-RADS) accuracy and chance (the majority class's
    share), over the images whose class the classifier knows.

    Without ``settings`` the phantoms are drawn at the variant's input size when it is built
    on phantom-clip (its encoder saw phantoms of that size), else at the default size."""
    model = load_target(target)
    if settings is None:
        size = getattr(model.preprocess, "size", None)
        on_phantom_clip = str(model.info.get("base", model.spec)).startswith("phantom-clip")
        settings = PhantomSettings(size=size) if size and on_phantom_clip else PhantomSettings()
    phantoms = generate(n, seed=seed, settings=settings, workers=workers)
    images = torch.stack([model.preprocess(p.image) for p in phantoms])
    logits = torch.cat([model.module(batch) for batch in images.split(64)])
    column = C_TASKS[task]
    facts: dict[str, Any] = {"images": n, "seed": seed}
    if model.info["kind"] == "multiclass":
        classes = model.info["classes"]
        names = [str(p.labels[column]) for p in phantoms]
        known = np.array([name in classes for name in names])
        truth = np.array([classes.index(name) for name in names if name in classes])
        predicted = logits.argmax(1).numpy()[known]
        facts["accuracy"] = round(float((predicted == truth).mean()), 4)
        facts["chance"] = round(float(np.bincount(truth).max() / len(truth)), 4)
        facts["unknown_class"] = int((~known).sum())
    else:
        truth = np.array([bool(p.labels[column]) for p in phantoms])
        facts["auroc"] = round(float(auroc(logits[:, 0].numpy(), truth)), 4)
        facts["positives"] = int(truth.sum())
    return facts
