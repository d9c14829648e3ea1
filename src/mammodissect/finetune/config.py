"""``FinetuneConfig``: the settings of a fine-tuning, each default written once.

``finetune(model, probe, task, out, config, **options)``, the ``finetune`` mapping of a
study file and the flags of ``mammodissect finetune`` (derived with
:func:`mammodissect.options.add_flags`) all take these names.
"""

from __future__ import annotations

from dataclasses import dataclass

from mammodissect.finetune.linear_probe import HEAD_INITS
from mammodissect.finetune.split import SPLITS
from mammodissect.options import check_settings, setting, whole, within

__all__ = ["FinetuneConfig"]


@dataclass(frozen=True)
class FinetuneConfig:
    """How :func:`mammodissect.finetune.finetune` trains (the recipe, the split, where it
    runs and what it keeps); see ``mammodissect finetune --help`` for each field."""

    epochs: int = setting(5, "epochs (a rerun with more trains on)", check=whole(1))
    batch_size: int = setting(16, "images per batch", check=whole(1))
    lr: float = setting(5e-5, "peak learning rate", check=within(0, open_ends=True))
    weight_decay: float = setting(1e-4, "AdamW weight decay", check=within(0))
    warmup_epochs: int = setting(1, "linear warm-up epochs", check=whole(0))
    val_fraction: float = setting(
        0.2, "share of patients validated on", check=within(0, 1, open_ends=True)
    )
    split: str = setting(
        "random", "random by patient, or the probe's own split column", choices=SPLITS
    )
    seed: int = setting(0, "seed of split, batches, augmentation and the new head")
    image_size: str | int | None = setting(
        None, "input size HEIGHTxWIDTH (default: the model's own)", metavar="HxW"
    )
    preprocess: str | None = setting(None, "preprocessing recipe (default: the model's own)")
    device: str = setting("auto", "auto (CUDA when available), cpu or cuda[:N]")
    num_workers: int = setting(0, "image decoding processes", check=whole(0))
    augment: bool = setting(True, "no random flips or small affine changes")
    head_init: str = setting(
        "random",
        "the new head: random, or probe (a linear probe of the frozen encoder's features of "
        "the training split, its L2 chosen on validation, then fine-tuning: LP-FT)",
        choices=HEAD_INITS,
    )
    precise_bn: bool = setting(
        False,
        "recompute BatchNorm statistics on the un-augmented training images before every "
        "validation (precise BN; the running ones average augmented images)",
        flag="--precise-bn",
    )
    freeze: str | tuple[str, ...] | None = setting(
        None,
        "layers (names or globs, comma-separated) whose weights stay fixed and whose modules "
        "stay in eval mode, e.g. 'image_encoder._blocks.[0-9]'",
    )
    voi: str = setting("auto", "DICOM VOI transform, as for `run`")
    cache_dir: str | None = setting(None, "prepared-image cache (default as for `run`)")
    cache_images: bool = setting(
        True, "do not keep prepared images in the cache", flag="--no-image-cache"
    )
    progress: bool = setting(True, "no progress bars", flag="--quiet")
    overwrite: bool = setting(False, "replace a run made with other settings in the run folder")

    def __post_init__(self) -> None:
        check_settings(self, "finetune")
