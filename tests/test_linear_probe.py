"""The linear-probe head (``head_init="probe"``, LP-FT): the penalised logistic regression
reaches its optimum, the standardisation folds into one layer, the fine-tuning starts from the
probe's read-out, a resumed run does not fit it again, and runs without it keep their
settings (and so their fingerprints)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mammodissect.errors import MammodissectError
from mammodissect.finetune import api, finetune
from mammodissect.finetune.linear_probe import L2_GRID, _fold, fit_logistic
from mammodissect.finetune.recipe import loss_value, make_loss
from mammodissect.phantom import PhantomSettings, generate, write_phantoms

TINY = "python:helpers_models:tiny_cnn?size=96x58"
PHANTOMS = PhantomSettings(size=(96, 58), rates={"implant": 0.5})
QUICK = {"batch_size": 16, "progress": False, "head_init": "probe"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("probe-phantoms")
    return write_phantoms(root, generate(60, seed=5, settings=PHANTOMS))


def _planted(kind: str, n: int = 300, d: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Features whose first two columns decide the class; the rest are noise."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, d, generator=g)
    if kind == "binary":
        y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * torch.randn(n, generator=g) > 0.8).long()
    else:
        y = torch.stack([x[:, 0], x[:, 1], -x[:, 0] - x[:, 1]], 1).argmax(1)
    return x, y


@pytest.mark.parametrize("kind,outputs", [("multiclass", 3), ("binary", 1)])
def test_logistic_fit_is_the_penalised_optimum_and_learns_the_planted_rule(kind, outputs):
    x, y = _planted(kind)
    loss = make_loss(kind, y)
    head = fit_logistic(x, y, loss, outputs, l2=1e-2)
    # stationary: the gradient of loss + l2 |W|^2 / 2 vanishes at the fitted weights
    probe = nn.Linear(x.shape[1], outputs)
    probe.load_state_dict(head.state_dict())
    objective = loss_value(loss, probe(x), y) + 0.5 * 1e-2 * probe.weight.pow(2).sum()
    objective.backward()
    assert probe.weight.grad.abs().max() < 1e-4 and probe.bias.grad.abs().max() < 1e-4
    logits = head(x)
    predicted = (logits[:, 0] > 0).long() if kind == "binary" else logits.argmax(1)
    assert (predicted == y).float().mean() > 0.9
    # the noise columns get little weight, the planted ones most of it
    weight = head.weight.abs().sum(0)
    assert weight[:2].min() > 3 * weight[2:].max()
    # a stronger penalty shrinks the weights
    assert fit_logistic(x, y, loss, outputs, l2=1.0).weight.norm() < head.weight.norm()


def test_the_standardisation_folds_into_one_layer():
    g = torch.Generator().manual_seed(1)
    head = nn.Linear(5, 3)
    mean, std = torch.randn(5, generator=g), torch.rand(5, generator=g) + 0.5
    x = torch.randn(20, 5, generator=g) * 3 + 1
    torch.testing.assert_close(_fold(head, mean, std)(x), head((x - mean) / std))


def test_fine_tuning_starts_from_the_probe_read_out(manifest, tmp_path):
    # encoder frozen and a vanishing learning rate: the trained head is the probe's
    metrics = finetune(
        TINY, manifest, "implant", tmp_path / "run", epochs=1, lr=1e-12, freeze="features",
        **QUICK,
    )  # fmt: skip
    fitted = metrics["linear_probe"]
    assert fitted["chosen_on"] == "validation" and fitted["l2"] in L2_GRID
    assert [e["l2"] for e in fitted["grid"]] == list(L2_GRID)
    best = max(e["val_auroc"] for e in fitted["grid"])
    assert fitted["val_auroc"] == best
    assert metrics["best"]["val_auroc"] == pytest.approx(fitted["val_auroc"], abs=1e-6)
    assert metrics["best"]["val_loss"] == pytest.approx(fitted["val_loss"], rel=1e-4)
    assert metrics["settings"]["head_init"] == "probe"


def test_a_resumed_run_keeps_its_probe_and_fits_none(manifest, tmp_path, monkeypatch):
    first = finetune(TINY, manifest, "implant", tmp_path / "run", epochs=1, **QUICK)

    def refit(*args, **kwargs):
        raise AssertionError("the probe was fitted again on resumption")

    monkeypatch.setattr(api, "fit_head", refit)
    resumed = finetune(TINY, manifest, "implant", tmp_path / "run", epochs=2, **QUICK)
    assert resumed["epochs_done"] == 2
    assert resumed["linear_probe"] == first["linear_probe"]


def test_a_random_head_run_keeps_the_settings_it_had_before_the_option(manifest, tmp_path):
    metrics = finetune(TINY, manifest, "implant", tmp_path / "run", epochs=1, progress=False)
    assert "head_init" not in metrics["settings"] and "linear_probe" not in metrics
    with pytest.raises(MammodissectError, match="other settings|overwrite"):
        finetune(TINY, manifest, "implant", tmp_path / "run", epochs=1, **QUICK)


def test_an_unknown_head_init_is_refused(manifest, tmp_path):
    with pytest.raises(MammodissectError, match="head_init"):
        finetune(TINY, manifest, "implant", tmp_path / "run", head_init="zeros")
