"""``openclip:NAME?weights=PATH``: a real weights-file round trip on a tiny registered config.

The configs are registered with ``open_clip.add_model_config``; without
``hf_tokenizer_name`` open_clip gives them its built-in SimpleTokenizer (BPE
vocabulary shipped in the package), so nothing touches the network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mammodissect.errors import MammodissectError
from mammodissect.models import load_dissector

open_clip = pytest.importorskip("open_clip")

TINY = "mammodissect-test-tiny-vit"
OTHER = "mammodissect-test-tiny-vit-wide"
CONTEXT = 16


def _config(width: int) -> dict:
    return {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": width, "layers": 2},
        "text_cfg": {
            "context_length": CONTEXT,
            "vocab_size": 49408,
            "width": 32,
            "heads": 2,
            "layers": 2,
        },
    }


@pytest.fixture(scope="module")
def tiny_configs(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("openclip_configs")
    for name, width in ((TINY, 64), (OTHER, 96)):
        (folder / f"{name}.json").write_text(json.dumps(_config(width)))
    open_clip.add_model_config(folder)
    assert {TINY, OTHER} <= set(open_clip.list_models())


def _saved(name: str, path: Path, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = open_clip.create_model(name).eval()
    torch.save(model.state_dict(), path)
    return model


def test_tiny_openclip_weights_round_trip(tiny_configs, tmp_path: Path):
    path = tmp_path / "tiny.pt"
    reference = _saved(TINY, path, seed=3)
    torch.manual_seed(99)  # the dissector's own random init must be overwritten
    dissector = load_dissector(f"openclip:{TINY}?weights={path}")
    assert dissector.info["weights"] == "file tiny.pt"
    assert dissector.spec == f"openclip:{TINY}?weights=tiny.pt"
    assert not dissector.model.training
    own = dissector.model.state_dict()
    assert own.keys() == reference.state_dict().keys()
    assert all(torch.equal(own[k], v) for k, v in reference.state_dict().items())

    texts = ["spiculated mass", "fatty breast", "a photo of a cat"]
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=CONTEXT)
    image = np.random.default_rng(0).random((50, 40)) * 4095
    batch = dissector.preprocess(image)[None]
    assert batch.shape == (1, 3, 32, 32)
    with torch.inference_mode():
        expected_texts = F.normalize(reference.encode_text(tokenizer(texts)), dim=-1)
        expected_images = F.normalize(reference.encode_image(batch), dim=-1)
        got_texts = dissector.encode_texts(texts)
        got_images = dissector.encode_images(batch)
    assert got_texts.shape == (3, 16) and got_images.shape == (1, 16)
    torch.testing.assert_close(got_texts, expected_texts, rtol=0, atol=1e-6)
    torch.testing.assert_close(got_images, expected_images, rtol=0, atol=1e-6)
    assert torch.allclose(got_texts.norm(dim=1), torch.ones(3), atol=1e-5)


def test_weights_of_another_architecture_are_refused(tiny_configs, tmp_path: Path):
    path = tmp_path / "wide.pt"
    _saved(OTHER, path, seed=4)
    with pytest.raises(MammodissectError) as err:
        load_dissector(f"openclip:{TINY}?weights={path}")
    message = str(err.value)
    assert f"weights file 'wide.pt' does not fit openclip:{TINY}" in message
    assert "keys of the wrong shape" in message
    assert "visual.conv1.weight (96, 3, 8, 8) vs (64, 3, 8, 8)" in message
    assert str(tmp_path) not in message
