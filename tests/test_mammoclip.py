"""Mammo-CLIP checkpoints: restricted unpickling, strict loading, embeddings, tokenizer,
classifiers, conversion, and one run where a single forward serves target and dissector."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mammodissect.errors import MammodissectError
from mammodissect.layers import resolve_layers
from mammodissect.models import load_dissector, load_target
from mammodissect.models.checkpoint import load_checkpoint
from mammodissect.models.mammoclip import WordPieceTokenizer, convert
from mammodissect.testing import (
    BertSize,
    write_classifier_checkpoint,
    write_mammoclip_checkpoint,
    write_vocab,
)

from helpers_models import load_error

pytest.importorskip("efficientnet_pytorch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("mammoclip")
    modules = write_mammoclip_checkpoint(root / "b0-model-best-epoch-3.tar", position_ids=True)
    write_vocab(root / "vocab.txt")
    return root, modules


def spec(root: Path, name: str = "b0-model-best-epoch-3.tar") -> str:
    return f"mammoclip:{root / name}?vocab={root}"


def direct_image(modules, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        pooled = modules["image_encoder"](x).flatten(1)
        return F.normalize(modules["image_projection"](pooled), dim=-1)


def direct_text(modules, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        hidden = modules["text_encoder"](input_ids=ids, attention_mask=mask).last_hidden_state
        eos = hidden[torch.arange(len(ids)), mask.sum(1) - 1]
        return F.normalize(modules["text_projection"](eos), dim=-1)


def test_the_file_has_the_real_layout(files):
    root, _ = files
    names = zipfile.ZipFile(root / "b0-model-best-epoch-3.tar").namelist()
    assert names[0].startswith("b5-model-best-epoch-7/")  # inner folder != file name
    raw = (root / "b0-model-best-epoch-3.tar").read_bytes()
    assert raw[:4] == b"PK\x03\x04"
    with pytest.raises(Exception, match="Unsupported global|weights_only|omegaconf"):
        torch.load(root / "b0-model-best-epoch-3.tar", weights_only=True)


def test_image_and_text_embeddings_equal_a_direct_computation(files):
    root, modules = files
    dissector = load_dissector(spec(root))
    rng = np.random.default_rng(0)
    batch = torch.stack([dissector.preprocess(rng.random((190, 114))) for _ in range(2)])
    batch = F.interpolate(batch, size=(96, 64))  # small input: same network, faster
    got = dissector.encode_images(batch)
    assert torch.allclose(got, direct_image(modules, batch), atol=1e-5)
    texts = ["Spiculated mass", "fatty breast tissue", "fine linear branching calcifications"]
    ids, mask = dissector.tokenizer(texts)
    assert torch.allclose(dissector.encode_texts(texts), direct_text(modules, ids, mask), atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(2), atol=1e-5)


def test_the_model_comes_with_its_preprocessing_and_facts(files):
    root, _ = files
    dissector = load_dissector(spec(root))
    recipe = dissector.preprocess.describe()
    assert recipe["size"] == [1520, 912] and recipe["name"] == "mammoclip"
    assert recipe["mean"] == [0.3089279] and recipe["std"] == [0.25053555408335154]
    assert dissector.info["image_encoder"] == "efficientnet-b0"
    assert dissector.info["config_text_pooling"] == "eos"
    assert dissector.info["epoch"] == 7
    assert dissector.spec == "mammoclip:b0-model-best-epoch-3.tar?vocab=" + root.name
    assert not dissector.model.training


def test_static_same_padding_matches_efficientnet_pytorch_at_full_resolution(files):
    from efficientnet_pytorch import EfficientNet

    root, modules = files
    target = load_target(f"mammoclip:{root / 'b0-model-best-epoch-3.tar'}")
    reference = EfficientNet.from_name("efficientnet-b0", include_top=False).eval()
    reference.load_state_dict(modules["image_encoder"].state_dict(), strict=True)
    x = target.preprocess(np.random.default_rng(1).random((1520, 912)))[None]
    assert x.shape == (1, 3, 1520, 912)
    with torch.inference_mode():
        ours = target.module.image_encoder.extract_features(x)
        theirs = reference.extract_features(x)
    assert ours.shape == theirs.shape == (1, 1280, 47, 28)  # static pads: not ceil(1520/32)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_blocks_are_hookable_under_the_checkpoint_names(files):
    root, _ = files
    target = load_target(f"mammoclip:{root / 'b0-model-best-epoch-3.tar'}")
    names = resolve_layers(target.module, "image_encoder._blocks.*")
    assert names == [f"image_encoder._blocks.{i}" for i in range(16)]
    assert not hasattr(target.module, "text_encoder")  # a target needs no BERT


def test_tokenizer_known_ids_and_lower_casing(files):
    root, _ = files
    tokenizer = WordPieceTokenizer(root / "vocab.txt")
    ids, mask = tokenizer(["Spiculated MASS", "fine linear branching calcifications"])
    # vocab: 104 reserved slots, then "mass"=104, "spic"=105, "##ulated"=106, "calc"=107, ...
    assert ids[0, :5].tolist() == [101, 105, 106, 104, 102]
    assert ids[1].tolist() == [101, 117, 118, 119, 107, 108, 109, 102]
    assert mask[0].tolist() == [1] * 5 + [0] * 3 and ids[0, 5:].tolist() == [0, 0, 0]


def test_eos_pooling_reads_the_sep_position_under_padding(files):
    root, _ = files
    dissector = load_dissector(spec(root))
    short, long = "mass", "irregular mass with spiculated margin"
    ids, mask = dissector.tokenizer([short, long])
    last = mask.sum(1) - 1
    assert ids[torch.arange(2), last].tolist() == [102, 102]
    together = dissector.encode_texts([short, long])
    alone = torch.cat([dissector.encode_texts([short]), dissector.encode_texts([long])])
    assert torch.allclose(together, alone, atol=1e-5)


def test_vocabulary_errors(files, tmp_path):
    root, _ = files
    with pytest.raises(MammodissectError, match="Bio_ClinicalBERT.*vocab.txt"):
        load_dissector(f"mammoclip:{root / 'b0-model-best-epoch-3.tar'}")
    shifted = tmp_path / "vocab.txt"
    shifted.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nmass\n")
    with pytest.raises(MammodissectError, match=r"ids \(2, 3\), not \(101, 102\)"):
        load_dissector(f"mammoclip:{root / 'b0-model-best-epoch-3.tar'}?vocab={shifted}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MammodissectError, match="holds no vocab.txt"):
        load_dissector(f"mammoclip:{root / 'b0-model-best-epoch-3.tar'}?vocab={tmp_path / 'empty'}")


class _Hostile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "b5-model-best-epoch-7.tar"
    torch.save({"model": {"x": torch.zeros(1)}, "config": _Hostile(marker)}, path)
    with pytest.raises(MammodissectError, match=r"refusing to load (posix|os)\.system"):
        load_target(f"mammoclip:{path}")
    with pytest.raises(MammodissectError, match="refusing to load"):
        load_target(f"mammoclip-classifier:{path}")
    assert not marker.exists()


def test_restricted_unpickler_reads_numpy_defaultdicts_and_omegaconf_without_it(files):
    root, _ = files
    checkpoint = load_checkpoint(root / "b0-model-best-epoch-3.tar")
    prompts = checkpoint["config"]["base"]["zs_prompts"]["upmc"]
    assert type(prompts).__name__ == "ListConfig" and type(prompts).__module__ != "omegaconf"
    assert checkpoint["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)


def test_strict_loading_names_the_broken_keys(files, tmp_path):
    root, _ = files
    checkpoint = load_checkpoint(root / "b0-model-best-epoch-3.tar")
    model = dict(checkpoint["model"])
    del model["image_encoder._bn1.running_mean"]
    model["image_encoder._fc.weight"] = torch.zeros(3, 3)
    bad = tmp_path / "bad.tar"
    torch.save({"model": model, "epoch": 1}, bad)
    load_error(
        f"mammoclip:{bad}",
        "'bad.tar' does not fit Mammo-CLIP (efficientnet-b0)",
        "1 missing keys (image_encoder._bn1.running_mean)",
        "1 unexpected keys (image_encoder._fc.weight)",
    )


def test_wrong_family_names_what_it_looks_like(files, tmp_path):
    root, _ = files
    classifier = tmp_path / "density.pth"
    write_classifier_checkpoint(classifier)
    with pytest.raises(MammodissectError, match="downstream classifier.*mammoclip-classifier"):
        load_target(f"mammoclip:{classifier}")
    with pytest.raises(MammodissectError, match="vision-language checkpoint, not a classifier"):
        load_target(f"mammoclip-classifier:{root / 'b0-model-best-epoch-3.tar'}")
    plain = tmp_path / "resnet.pth"
    torch.save({"layer1.0.conv1.weight": torch.zeros(1)}, plain)
    with pytest.raises(MammodissectError, match="torchvision or timm"):
        load_target(f"mammoclip:{plain}")


def test_classifier_target_infers_classes_and_exposes_its_head(tmp_path):
    modules = write_classifier_checkpoint(tmp_path / "density.pth", classes=4)
    target = load_target(f"mammoclip-classifier:{tmp_path / 'density.pth'}")
    assert target.info["classes"] == 4 and target.info["auroc"] == 0.81
    assert resolve_layers(target.module, "classifier.*") == ["classifier.classification_head"]
    assert "image_encoder._blocks.15" in resolve_layers(target.module, "image_encoder._blocks.*")
    x = torch.randn(2, 3, 96, 64)
    with torch.inference_mode():
        expected = modules["classification_head"](modules["image_encoder"](x).flatten(1))
        assert torch.allclose(target.module(x), expected, atol=1e-5)


def test_convert_to_safetensors_round_trip(files, tmp_path):
    root, _ = files
    out = tmp_path / "converted" / "b0.safetensors"
    facts = convert(root / "b0-model-best-epoch-3.tar", out)
    assert out.stat().st_size < (root / "b0-model-best-epoch-3.tar").stat().st_size / 2.5
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not safetensors' owner-only 0600
    assert not list(out.parent.glob(".*.tmp"))  # written whole, then moved into place
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["config"]["base"]["zs_prompts"]["upmc"][0] == "birads category 0"
    assert meta["facts"]["epoch"] == 7 and facts["tensors"] > 300
    original = load_dissector(spec(root))
    converted = load_dissector(f"mammoclip:{out}?vocab={root}")
    texts = ["oval mass", "skin thickening"]
    assert torch.equal(original.encode_texts(texts), converted.encode_texts(texts))
    assert converted.preprocess == original.preprocess


def test_one_forward_serves_target_and_dissector(files, tmp_path):
    from PIL import Image

    from mammodissect import dissect

    root, _ = files
    probe = tmp_path / "probe"
    probe.mkdir()
    rng = np.random.default_rng(2)
    for i in range(4):
        Image.fromarray((rng.random((60, 36)) * 255).astype(np.uint8)).save(probe / f"{i}.png")
    concepts = ["spiculated mass", "fatty breast", "red", "wood"]
    target = f"mammoclip:{root / 'b0-model-best-epoch-3.tar'}"  # no vocab: still one model
    result = dissect(
        target,
        spec(root),
        probe,
        concepts,
        "image_encoder._blocks.[0-2]",
        out=tmp_path / "run",
        image_size="96x64",
        dissector_image_size="96x64",
        num_workers=0,
        quiet=True,
        cache_dir=tmp_path / "cache",
    )
    assert result.run["recording"]["shared_forward"] is True
    assert result.run["recording"]["target_forward_batches"] == 0
    assert result.run["dissector"]["preprocess"]["size"] == [96, 64]
    neurons = pd.read_csv(tmp_path / "run" / "neurons.csv")
    assert set(neurons["layer"]) == {f"image_encoder._blocks.{i}" for i in range(3)}
    assert set(neurons["concept"]) <= set(concepts)


@pytest.mark.slow
def test_full_size_b5_with_bert_base(tmp_path):
    path = tmp_path / "b5-model-best-epoch-7.tar"
    modules = write_mammoclip_checkpoint(
        path, variant="efficientnet-b5", bert=BertSize(), projection=512, position_ids=False
    )
    assert path.stat().st_size > 1.4e9  # with the AdamW state, as released
    write_vocab(tmp_path / "vocab.txt")
    dissector = load_dissector(f"mammoclip:{path}?vocab={tmp_path}")
    assert dissector.info["image_encoder"] == "efficientnet-b5"
    keys = dissector.model.state_dict()
    assert sum(k.startswith("image_encoder.") for k in keys) == 852
    assert sum(k.startswith("text_encoder.") for k in keys) == 199
    x = torch.randn(1, 3, 128, 80)
    assert torch.allclose(dissector.encode_images(x), direct_image(modules, x), atol=1e-5)
    ids, mask = dissector.tokenizer(["round mass", "scattered fibroglandular tissue"])
    assert torch.allclose(
        dissector.encode_texts(["round mass", "scattered fibroglandular tissue"]),
        direct_text(modules, ids, mask),
        atol=1e-5,
    )


def test_convert_command(files, tmp_path, capsys):
    from mammodissect.cli import main

    root, _ = files
    out = tmp_path / "b0.safetensors"
    assert main(["convert", str(root / "b0-model-best-epoch-3.tar"), "--out", str(out)]) == 0
    assert "tensors" in capsys.readouterr().out
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert main(["convert", str(root / "b0-model-best-epoch-3.tar"), "--out", "x.bin"]) == 2
    assert "must end in .safetensors" in capsys.readouterr().err


def test_other_families_point_to_the_mammoclip_loaders(files, tmp_path):
    root, _ = files
    with pytest.raises(MammodissectError, match="mammoclip:PATH"):
        load_target(f"timm:efficientnet_b0?weights={root / 'b0-model-best-epoch-3.tar'}")
    converted = tmp_path / "b0.safetensors"
    convert(root / "b0-model-best-epoch-3.tar", converted)
    with pytest.raises(MammodissectError, match="looks like a Mammo-CLIP vision-language"):
        load_target(f"timm:efficientnet_b0?weights={converted}")
