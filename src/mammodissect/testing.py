"""Builders of small files in the exact layout of real ones, for tests and benchmarks.

Real Mammo-CLIP weights are licensed to their users and cannot ship; these
functions write checkpoints with the released layout (key names, nesting, the
omegaconf-bearing configuration, optional ``position_ids``, AdamW state, an
inner archive folder named differently from the file) and random weights, at
any size from tiny to full B5 + BERT-base.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

__all__ = [
    "TEST_VOCAB_WORDS",
    "BertSize",
    "write_classifier_checkpoint",
    "write_dicom",
    "write_mammoclip_checkpoint",
    "write_vocab",
]

#: Words of the small test vocabulary (after the real layout's 104 special/unused slots).
TEST_VOCAB_WORDS = [
    "mass",
    "spic",
    "##ulated",
    "calc",
    "##ification",
    "##s",
    "dense",
    "breast",
    "fatty",
    "round",
    "oval",
    "irregular",
    "margin",
    "fine",
    "linear",
    "branching",
    "architectural",
    "distortion",
    "asymmetry",
    "skin",
    "thickening",
    "nipple",
    "retraction",
    "lymph",
    "node",
    "benign",
    "malignant",
    "scattered",
    "heterogeneous",
    "##ly",
    "extremely",
    "tissue",
    "red",
    "wood",
    "a",
    "of",
    "the",
    "with",
    "and",
    "left",
    "right",
    "pectoral",
    "muscle",
    ".",
    ",",
]


@dataclass(frozen=True)
class BertSize:
    """BERT sizes: the real one is ``BertSize()`` (BERT-base with a 28,996-word vocabulary)."""

    hidden: int = 768
    layers: int = 12
    intermediate: int = 3072
    vocab: int = 28996
    positions: int = 512


def write_dicom(
    path: Path,
    raw: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 16,
    signed: bool = False,
    syntax: str | None = None,
    **elements: object,
) -> Path:
    """Write a small DICOM file holding ``raw`` (frames, rows, cols[, 3]) or no pixels;
    extra ``elements`` become tags (``ImageLaterality="L"``, ``PatientName=...``)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, RLELossless, generate_uid

    syntax = syntax or ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography - For Presentation
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "MG"
    ds.PatientName = "Test^Patient"
    if raw is not None:
        samples = 3 if raw.shape[-1] == 3 and raw.ndim >= 3 else 1
        frame_shape = raw.shape[-3:-1] if samples == 3 else raw.shape[-2:]
        ds.Rows, ds.Columns = (int(v) for v in frame_shape)
        ds.SamplesPerPixel = samples
        ds.PhotometricInterpretation = photometric
        allocated = 8 if bits_stored <= 8 else 16
        ds.BitsAllocated = allocated
        ds.BitsStored = bits_stored
        ds.HighBit = bits_stored - 1
        ds.PixelRepresentation = 1 if signed else 0
        if samples == 3:
            ds.PlanarConfiguration = 0
        n_frames = raw.shape[0] if raw.ndim == (4 if samples == 3 else 3) else 1
        if n_frames > 1:
            ds.NumberOfFrames = n_frames
        dtype = f"{'int' if signed else 'uint'}{allocated}"
        data = np.ascontiguousarray(raw.astype(dtype))
        if syntax == RLELossless:
            ds.compress(RLELossless, data)
        else:
            ds.PixelData = data.tobytes()
    for key, value in elements.items():
        setattr(ds, key, value)
    if syntax not in (ExplicitVRLittleEndian, RLELossless):
        ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_vocab(path: Path, words: list[str] | None = None) -> Path:
    """A ``vocab.txt`` in BERT's layout: [PAD]=0, [unused1-99], [UNK]=100, [CLS]=101,
    [SEP]=102, [MASK]=103, then ``words``."""
    tokens = [
        "[PAD]",
        *[f"[unused{i}]" for i in range(1, 100)],
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *(words if words is not None else TEST_VOCAB_WORDS),
    ]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def _efficientnet(variant: str, seed: int) -> torch.nn.Module:
    from efficientnet_pytorch import EfficientNet

    torch.manual_seed(seed)
    net = EfficientNet.from_name(variant, include_top=False)
    for module in net.modules():  # non-trivial BatchNorm statistics, as a trained net has
        if isinstance(module, torch.nn.BatchNorm2d):
            mean, var = module.running_mean, module.running_var
            if mean is not None and var is not None:
                mean.uniform_(-0.1, 0.1)
                var.uniform_(0.5, 1.5)
    return net.eval()


def _head_width(net: torch.nn.Module) -> int:
    """Output channels of an efficientnet_pytorch network's ``_conv_head``."""
    return cast(torch.nn.Conv2d, net._conv_head).out_channels


def _bert(size: BertSize, seed: int) -> torch.nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=size.vocab,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=max(1, size.hidden // 64),
        intermediate_size=size.intermediate,
        max_position_embeddings=size.positions,
    )
    return BertModel(config, add_pooling_layer=True).eval()


def _config(image_encoder_name: str, size: tuple[int, int]) -> dict[str, Any]:
    """The checkpoint's configuration: plain dicts plus one omegaconf ListConfig node whose
    metadata carries typing.Any and a non-empty defaultdict cache (when omegaconf is present)."""
    prompts: Any = ["birads category 0", "birads category 1", "birads category 2"]
    try:
        from omegaconf import OmegaConf

        prompts = OmegaConf.create({"upmc": prompts}).upmc
        prompts._metadata.resolver_cache["now"][("%Y",)] = "2024"
    except ImportError:
        pass
    return {
        "base": {
            "data_dir": "/restricted/projectnb/shared/Data",
            "fold": 0,
            "seed": 10,
            "amp": True,
            "mean": 0.3089279,
            "std": 0.25053555408335154,
            "image_size_h": size[0],
            "image_size_w": size[1],
            "text_max_length": 256,
            "loss_best": "contrastive",
            "zs_prompts": {"upmc": prompts},
        },
        "model": {
            "name": "clip_custom",
            "temperature": 0.07,
            "image_encoder": {
                "source": "cnn",
                "name": image_encoder_name,
                "pretrained": True,
                "model_type": "cnn",
            },
            "text_encoder": {
                "source": "huggingface",
                "name": "emilyalsentzer/Bio_ClinicalBERT",
                "pretrained": True,
                "gradient_checkpointing": False,
                "pooling": "eos",
                "cache_dir": "/restricted/cache",
                "trust_remote_code": True,
                "model_type": "bert",
            },
            "projection_head": {"name": "linear", "dropout": 0.1, "proj_dim": 512},
        },
        "tokenizer": {
            "source": "huggingface",
            "pretrained_model_name_or_path": "emilyalsentzer/Bio_ClinicalBERT",
            "cache_dir": "/restricted/cache",
        },
    }


def _adamw_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    params = [v for v in state.values() if v.is_floating_point()]
    return {
        "state": {
            i: {
                "step": torch.tensor(1000.0),
                "exp_avg": torch.zeros_like(p),
                "exp_avg_sq": torch.zeros_like(p),
            }
            for i, p in enumerate(params)
        },
        "param_groups": [
            {
                "lr": 5e-5,
                "betas": (0.9, 0.999),
                "eps": 1e-8,
                "weight_decay": 0.1,
                "amsgrad": False,
                "params": list(range(len(params))),
            }
        ],
    }


def _save(obj: Any, path: Path, inner: str) -> Path:
    """torch.save under an inner archive folder named ``inner``, then move to ``path``."""
    staging = path.with_name(f"{inner}.staging")
    torch.save(obj, staging)  # the archive's folder is named after the file it was saved as
    staging.replace(path)
    return path


def write_mammoclip_checkpoint(
    path: Path,
    *,
    variant: str = "efficientnet-b0",
    bert: BertSize = BertSize(hidden=128, layers=2, intermediate=256, vocab=160, positions=64),
    projection: int = 32,
    position_ids: bool = False,
    optimizer: bool = True,
    image_size: tuple[int, int] = (1520, 912),
    seed: int = 0,
) -> dict[str, torch.nn.Module]:
    """Write a Mammo-CLIP checkpoint in the released layout; return the modules it holds.

    ``variant="efficientnet-b5"``, ``bert=BertSize()`` and ``projection=512`` give the real
    B5 size (about 1.6 GB with the optimizer state).
    """
    image = _efficientnet(variant, seed)
    text = _bert(bert, seed + 1)
    head = _head_width(image)
    torch.manual_seed(seed + 2)
    image_projection = torch.nn.Linear(head, projection)
    text_projection = torch.nn.Linear(bert.hidden, projection)
    state: dict[str, torch.Tensor] = collections.OrderedDict()
    state.update({f"image_encoder.{k}": v for k, v in image.state_dict().items()})
    state.update({f"text_encoder.text_encoder.{k}": v for k, v in text.state_dict().items()})
    if position_ids:
        state["text_encoder.text_encoder.embeddings.position_ids"] = torch.arange(bert.positions)[
            None
        ]
    state.update(
        {f"image_projection.projection.{k}": v for k, v in image_projection.state_dict().items()}
    )
    state.update(
        {f"text_projection.projection.{k}": v for k, v in text_projection.state_dict().items()}
    )
    state["logit_scale"] = torch.tensor(np.log(1 / 0.07), dtype=torch.float32)
    name = "tf_efficientnet_b5_ns-detect" if variant.endswith("b5") else "tf_efficientnetv2-detect"
    checkpoint = {
        "model": state,
        "optimizer": _adamw_state(state) if optimizer else {},
        "scheduler": {"base_lrs": [5e-5], "last_epoch": 7, "_step_count": 8},
        "config": _config(name, image_size),
        "epoch": 7,
        "train_loss": 0.4321,
    }
    _save(checkpoint, Path(path), inner="b5-model-best-epoch-7")
    return {
        "image_encoder": image,
        "text_encoder": text,
        "image_projection": image_projection,
        "text_projection": text_projection,
    }


def write_classifier_checkpoint(
    path: Path, *, variant: str = "efficientnet-b0", classes: int = 4, seed: int = 0
) -> dict[str, torch.nn.Module]:
    """Write a downstream classifier ``.pth`` in the released layout (with a numpy array of
    predictions and metrics); return its modules."""
    image = _efficientnet(variant, seed)
    torch.manual_seed(seed + 3)
    head = torch.nn.Linear(_head_width(image), classes)
    state = collections.OrderedDict()
    state.update({f"image_encoder.{k}": v for k, v in image.state_dict().items()})
    state.update({f"classifier.classification_head.{k}": v for k, v in head.state_dict().items()})
    rng = np.random.default_rng(seed)
    checkpoint = {
        "model": state,
        "predictions": rng.random((20, classes)).astype(np.float32),
        "epoch": 9,
        "auroc": 0.81,
        "aucpr": 0.42,
    }
    _save(checkpoint, Path(path), inner="density_classifier")
    return {"image_encoder": image, "classification_head": head}
