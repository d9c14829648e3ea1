"""The fair agreement measure for hidden units (issue 17): equivalence classes, the label's
IoU and AUPRC over the best concept's, and the truth kept for re-scoring."""

from __future__ import annotations

import numpy as np
import pytest

from mammodissect.errors import MammodissectError
from mammodissect.evaluate.fair import (
    ConceptTruth,
    FairTruth,
    equivalence_classes,
    fair_columns,
)
from mammodissect.evaluate.planted import PlantedLayer
from mammodissect.evaluate.stored import StoredTruth
from mammodissect.metrics import auroc_columns, average_precision_columns, precision_matrices


def test_precision_matrices_match_the_column_metrics_on_ties() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(60, 5)).astype(float)  # many ties
    labels = rng.random((60, 4)) < 0.3
    labels[:, 3] = False  # no positive: NaN
    roc, ap = precision_matrices(scores, labels)
    assert roc.shape == ap.shape == (5, 4)
    for c in range(4):
        np.testing.assert_allclose(roc[:, c], auroc_columns(scores, labels[:, c]), equal_nan=True)
        np.testing.assert_allclose(
            ap[:, c], average_precision_columns(scores, labels[:, c]), equal_nan=True
        )
    assert np.isnan(roc[:, 3]).all() and np.isnan(ap[:, 3]).all()
    with pytest.raises(MammodissectError, match="same N"):
        precision_matrices(scores, labels[:10])


def test_equivalence_classes_group_equal_keys_only() -> None:
    assert equivalence_classes({"a": b"1", "b": b"2", "c": b"1", "d": b"2", "e": b"3"}) == [
        ["a", "c"],
        ["b", "d"],
    ]
    assert equivalence_classes({}) == []


def _mask_truth() -> FairTruth:
    iou = np.array(
        [
            [0.30, 0.30, 0.00, 0.01],  # grounded in the implant class
            [0.02, 0.00, 0.20, 0.10],  # grounded in "mass"; "oval mass" half as well
            [0.01, 0.01, 0.02, 0.00],  # below the cut-off: not grounded
        ]
    )
    return FairTruth(
        ["breast implant", "silicone implant", "mass", "oval mass"], iou,
        [["breast implant", "silicone implant"]], iou_threshold=0.04,
    )  # fmt: skip


def test_mask_part_counts_the_class_and_the_label_iou() -> None:
    ranked = [
        ["silicone implant", "mass"],  # the other member of the best concept's class
        ["oval mass", "skin", "x", "y", "z", "mass"],  # mass only at rank 6
        ["mass"],
    ]
    table = fair_columns(ranked, _mask_truth())
    assert table["class_top1_match"].tolist() == [True, False, None]
    assert table["class_top5_match"].tolist() == [True, False, None]
    assert table["iou_ratio"].tolist()[:2] == pytest.approx([1.0, 0.5])
    assert table["label_iou"].tolist()[:2] == pytest.approx([0.30, 0.10])
    assert table["iou_ratio"][2] is None
    # a label with no mask on the probe counts 0
    assert fair_columns([["nipple"]], _mask_truth().__class__(
        ["mass"], np.array([[0.5]]))).loc[0, "iou_ratio"] == 0.0  # fmt: skip


def test_image_part_ranks_units_by_average_precision() -> None:
    rng = np.random.default_rng(0)
    n = 200
    a = rng.random(n) < 0.3
    b = rng.random(n) < 0.4
    present = np.stack([a, a, b], axis=1)  # "a" and "a twin" have the same images
    image = ConceptTruth(["a", "a twin", "b"], present, equivalence_classes(
        {c: present[:, j].tobytes() for j, c in enumerate(["a", "a twin", "b"])}
    ))  # fmt: skip
    assert image.classes == [["a", "a twin"]]
    activations = np.stack(
        [
            a + 0.1 * rng.random(n),  # a perfect "a" detector
            b + 0.1 * rng.random(n),  # a perfect "b" detector
            rng.random(n),  # noise: AUROC near 0.5, no truth
        ],
        axis=1,
    )
    truth = FairTruth(image=image).with_activations(activations)
    table = fair_columns([["a twin"], ["a"], ["b"]], truth)
    assert table["concept_truth"].tolist() == ["a", "b", None]
    assert table["concept_top1_match"].tolist() == [True, False, None]
    assert table.loc[0, "auprc_ratio"] == pytest.approx(1.0)
    # "a" ranks "b"'s images no better than chance: its AUPRC is near a's share of images
    assert 0.1 < table.loc[1, "auprc_ratio"] < 0.6
    assert table.loc[1, "concept_auroc"] == pytest.approx(1.0)
    # a label the probe does not annotate cannot be checked: 0
    assert fair_columns([["spiculated margin"], ["b"], ["b"]], truth).loc[0, "auprc_ratio"] == 0


def test_stored_truth_round_trip(tmp_path) -> None:
    rng = np.random.default_rng(1)
    image = ConceptTruth(["a", "b"], rng.random((10, 2)) < 0.5, [])
    planted = PlantedLayer(["a"], [4], rng.random((10, 1)).astype(np.float32), {"blur": 0.02})
    stored = StoredTruth(
        mask_concepts=["a", "b"], iou={"layer.1": rng.random((3, 2))},
        mask_classes=[["a", "b"]], image=image, iou_threshold=0.05, auroc_threshold=0.8,
        planted=planted, head={"task": "mass", "kind": "binary", "classes": ["no", "yes"],
                               "layer": "head"},
        head_outputs=rng.random((10, 1)),
    )  # fmt: skip
    stored.save(tmp_path)
    back = StoredTruth.load(tmp_path)
    assert back.mask_concepts == ["a", "b"] and back.mask_classes == [["a", "b"]]
    np.testing.assert_array_equal(back.iou["layer.1"], stored.iou["layer.1"])
    np.testing.assert_array_equal(back.image.present, image.present)
    np.testing.assert_array_equal(back.planted.activations, planted.activations)
    assert back.planted.settings == {"blur": 0.02} and back.head["task"] == "mass"
    assert (back.iou_threshold, back.auroc_threshold) == (0.05, 0.8)
    np.testing.assert_array_equal(back.head_outputs, stored.head_outputs)
    assert str(tmp_path) not in (tmp_path / "evaluation_truth.npz").read_bytes().decode("latin-1")
    (tmp_path / "evaluation_truth.npz").write_bytes(b"not a zip")
    with pytest.raises(MammodissectError, match="unreadable.*rerun `mammodissect evaluate"):
        StoredTruth.load(tmp_path)
    with pytest.raises(MammodissectError, match="missing"):
        StoredTruth.load(tmp_path / "nowhere")
