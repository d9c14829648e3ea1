"""Precise BatchNorm (``precise_bn``): the running statistics become the average, over batches
of the un-augmented training images, of each layer's batch statistics under the current
weights; frozen layers keep theirs; the run records the setting only when it is on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mammodissect.finetune import finetune
from mammodissect.finetune.train import Data, Loop, recompute_batchnorm
from mammodissect.models import load_target
from mammodissect.phantom import PhantomSettings, generate, write_phantoms
from mammodissect.probe import load_probe

from helpers_models import TinyCNN

TINY = "python:helpers_models:tiny_cnn?size=96x58"
N = 40


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bn-phantoms")
    settings = PhantomSettings(size=(96, 58), rates={"implant": 0.5})
    return write_phantoms(root, generate(N, seed=7, settings=settings))


def _data(manifest: Path) -> Data:
    probe = load_probe(manifest)
    return Data(
        probe=probe, preprocess=load_target(TINY).preprocess, kind="binary",
        classes=["no", "yes"], targets=np.zeros(len(probe), dtype=np.int64),
        train_rows=np.arange(len(probe))[::-1].copy(), val_rows=np.arange(0),
    )  # fmt: skip


def _batch_statistics(model: nn.Module, data: Data, batches: list[np.ndarray]) -> dict:
    """Per BatchNorm layer: its input's per-channel mean and unbiased variance in each batch,
    in train mode (earlier layers normalised by their batch statistics)."""
    from mammodissect.probe.loader import probe_batches

    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def hook(name):
        def record(module, inputs, output):
            x = inputs[0]
            seen.setdefault(name, []).append((x.mean((0, 2, 3)), x.var((0, 2, 3))))

        return record

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in model.named_modules()
        if isinstance(m, nn.BatchNorm2d)
    ]
    copy = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with torch.no_grad():
        for rows in batches:
            (batch,) = probe_batches(
                data.probe, [data.preprocess], rows=rows.tolist(), batch_size=len(rows)
            )
            model(batch["inputs"][0])
    for h in handles:
        h.remove()
    model.load_state_dict(copy)  # the forward passes moved the running statistics
    return seen


def _spoil(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(5.0)
            m.running_var.fill_(9.0)


@pytest.mark.parametrize("batch_size", [N, N // 2])
def test_statistics_are_the_average_of_the_batches_of_plain_training_images(manifest, batch_size):
    torch.manual_seed(0)
    model, data = TinyCNN(), _data(manifest)
    _spoil(model)
    rows = np.sort(data.train_rows)
    expected = _batch_statistics(model, data, np.split(rows, N // batch_size))
    loop = Loop(
        epochs=1, batch_size=batch_size, lr=1e-3, weight_decay=0.0, warmup_epochs=0, seed=0,
        augment=True, device=torch.device("cpu"), progress=False,
    )  # fmt: skip
    assert recompute_batchnorm(model, data, loop, frozen=[]) == 3
    assert not model.training
    for name, module in model.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            mean = torch.stack([m for m, _ in expected[name]]).mean(0)
            var = torch.stack([v for _, v in expected[name]]).mean(0)
            torch.testing.assert_close(module.running_mean, mean, rtol=1e-3, atol=1e-4)
            torch.testing.assert_close(module.running_var, var, rtol=1e-3, atol=1e-4)
            assert module.momentum == 0.1  # restored after the cumulative average


def test_frozen_layers_keep_their_statistics(manifest):
    torch.manual_seed(0)
    model, data = TinyCNN(), _data(manifest)
    _spoil(model)
    loop = Loop(
        epochs=1, batch_size=16, lr=1e-3, weight_decay=0.0, warmup_epochs=0, seed=0,
        augment=True, device=torch.device("cpu"), progress=False,
    )  # fmt: skip
    assert recompute_batchnorm(model, data, loop, frozen=["features.1"]) == 2
    assert torch.all(model.features[1].running_mean == 5.0)
    assert not torch.all(model.features[4].running_mean == 5.0)


def test_a_run_records_precise_bn_only_when_on(manifest, tmp_path):
    quick = {"epochs": 1, "batch_size": 16, "progress": False}
    plain = finetune(TINY, manifest, "implant", tmp_path / "plain", **quick)
    assert "precise_bn" not in plain["settings"]
    precise = finetune(TINY, manifest, "implant", tmp_path / "precise", precise_bn=True, **quick)
    assert precise["settings"]["precise_bn"] is True
    # the same weights, other statistics: the written classifier carries the recomputed ones
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "plain" / "classifier.safetensors"))
    b = load_file(str(tmp_path / "precise" / "classifier.safetensors"))
    key = "image_encoder.features.1.running_mean"
    torch.testing.assert_close(
        a["image_encoder.features.0.weight"], b["image_encoder.features.0.weight"]
    )
    assert not torch.allclose(a[key], b[key])
