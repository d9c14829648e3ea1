"""phantom-clip's last training stage: the heads refit on frozen tower features, with text
negatives held flat (a correlation cannot see a level, only a variation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mammodissect.errors import MammodissectError
from mammodissect.metrics import auroc
from mammodissect.models.phantom_clip import PhantomClipModel
from mammodissect.phantom.train import HeadRefit, _TrainingTexts, refit_heads


def _world(seed: int = 0, n: int = 400):
    """Features whose first three dimensions carry three concepts; random text embeddings."""
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 1280, generator=g)
    present = (features[:, :3] > 0.5).float()
    unit = lambda *shape: F.normalize(torch.randn(*shape, generator=g), dim=-1)  # noqa: E731
    texts = _TrainingTexts(
        positives=["a", "b", "c"], negatives=[f"n{i}" for i in range(40)],
        positive_features=unit(3, 384), negative_features=unit(40, 384),
        owner=torch.tensor([0, 1, 2]),
    )  # fmt: skip
    return features, present, unit(n, 384), texts


def _refit(flat: float) -> tuple[float, float]:
    """Mean variance over images of the negatives' cosines, and the concepts' worst AUROC."""
    features, present, reports, texts = _world()
    torch.manual_seed(0)
    model = PhantomClipModel()
    refit = HeadRefit(images=len(features), steps=300, flat_negatives=flat)
    refit_heads(model, features, present, reports, texts, refit, seed=0)
    with torch.no_grad():
        image = model.embed_image_features(features)
        negatives = image @ model.embed_text_features(texts.negative_features).T
        positives = (image @ model.embed_text_features(texts.positive_features).T).numpy()
    worst = min(auroc(positives[:, k], present[:, k].numpy().astype(bool)) for k in range(3))
    return float(negatives.var(0).mean()), worst


def test_refit_learns_the_concepts_and_flattens_the_negatives():
    loose_variance, loose_auroc = _refit(0.0)
    flat_variance, flat_auroc = _refit(100.0)
    assert loose_auroc > 0.95 and flat_auroc > 0.95  # the planted concepts are found either way
    assert 0 < flat_variance < 0.1 * loose_variance  # measured: 100 times flatter


def test_refit_leaves_the_image_tower_alone():
    features, present, reports, texts = _world(n=64)
    model = PhantomClipModel()
    before = {k: v.clone() for k, v in model.image_encoder.state_dict().items()}
    projection = model.image_projection.weight.clone()
    refit_heads(model, features, present, reports, texts, HeadRefit(steps=5), seed=1)
    after = model.image_encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(projection, model.image_projection.weight)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("steps", -1, "steps >= 0"), ("lr", 0.0, "lr > 0"), ("flat_negatives", -1.0, "flat_neg")],
)
def test_refit_settings_are_checked(field, value, message):
    with pytest.raises(MammodissectError, match=message):
        HeadRefit(**{field: value})
    assert not HeadRefit(images=0).active and HeadRefit().active
