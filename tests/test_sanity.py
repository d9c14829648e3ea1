"""The missing-labels and extra-labels sanity checks of similarity functions."""

from __future__ import annotations

import numpy as np
import pytest

from mammodissect.errors import MammodissectError
from mammodissect.evaluate import sanity_checks
from mammodissect.evaluate.sanity import SANITY_COLUMNS, perturbed_labels
from mammodissect.similarity import SIMILARITIES


def _world(seed: int = 0):
    """200 images, 8 concepts (prevalence 0.2); unit j detects concept j, with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.random((200, 8)) < 0.2
    return labels.astype(float) + 0.3 * rng.random((200, 8)), labels


def test_the_damage_is_what_each_check_says():
    labels = np.zeros((10, 2))
    labels[:4, 0] = 1
    missing = perturbed_labels(labels, 0, "missing", np.random.default_rng(0))
    assert missing[:, 0].sum() == 2 and (missing[4:, 0] == 0).all()  # half the positives go
    extra = perturbed_labels(labels, 0, "extra", np.random.default_rng(0))
    assert extra[:4, 0].all() and extra[:, 0].sum() == 8  # as many negatives come
    assert (missing[:, 1] == labels[:, 1]).all() and (extra[:, 1] == labels[:, 1]).all()
    with pytest.raises(MammodissectError, match="'both' unknown"):
        perturbed_labels(labels, 0, "both", np.random.default_rng(0))


def test_every_function_through_both_checks():
    """The outcome measured on this known-answer set (the README's table has the phantoms'):
    cosine and correlation pass both; WPMI and rank_reorder lose nothing to extra labels on
    other images, their own top images being unchanged; soft-WPMI's own-concept score sits at
    its bound log K (the unit dominates the concept's prior), so neither check moves it; AUPRC
    passes extra labels but not missing ones (a unit's few positives may keep all their labels
    while the concept's other positives lose theirs, which raises their precision)."""
    acts, labels = _world()
    params = {"soft_wpmi": {"top_k": 20}, "wpmi": {"top_k": 20}}
    table = sanity_checks(acts, labels, list(range(8)), params=params).set_index("similarity")
    assert list(table.reset_index().columns) == SANITY_COLUMNS
    assert set(table.index) == set(SIMILARITIES)
    passed = {
        name: (bool(row.passes_missing_labels), bool(row.passes_extra_labels))
        for name, row in table.iterrows()
    }
    assert passed == {
        "cos_similarity": (True, True),
        "correlation": (True, True),
        "cos_similarity_cubed": (True, True),
        "wpmi": (True, False),
        "rank_reorder": (True, False),
        "soft_wpmi": (False, False),
        "auprc": (False, True),
    }
    assert table.loc["soft_wpmi", "missing_labels_falls"] == 0.0
    assert table.loc["wpmi", "extra_labels_falls"] == 0.0


def test_bad_input_is_named():
    acts, labels = _world()
    with pytest.raises(MammodissectError, match="do not fit"):
        sanity_checks(acts[:, :3], labels, list(range(8)))
    with pytest.raises(MammodissectError, match="not a column of the labels"):
        sanity_checks(acts, labels, [9] * 8)


def test_planted_sanity_needs_a_probe_with_masks(planted_probe):
    from mammodissect.evaluate import planted_sanity
    from mammodissect.probe import load_probe

    images = sorted(planted_probe.glob("*.png"))
    manifest = planted_probe.parent / "labels-only.csv"
    rows = [f"{path},{'yes' if i % 2 else 'no'}" for i, path in enumerate(images)]
    manifest.write_text("\n".join(["path,mass", *rows]) + "\n")
    probe = load_probe(str(manifest))  # labels, but neither masks nor boxes
    with pytest.raises(MammodissectError, match="neither a mask_path column nor boxes"):
        planted_sanity(probe, list(range(len(probe))), ["mass", "calcifications"])
