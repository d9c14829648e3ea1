"""mammodissect audit: detectability of each annotated concept, calibration, control leakage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mammodissect import audit
from mammodissect import compare as compare_runs
from mammodissect.cli import main
from mammodissect.concepts import ConceptSet
from mammodissect.dissector_audit import (
    DETECTABILITY_COLUMNS,
    calibrate,
    control_leakage,
    detectability,
)
from mammodissect.errors import MammodissectError
from mammodissect.metrics import auroc_columns, average_precision_columns

import planted

MIMIC = "every planted feature at once"


class MimicDissector(planted.PlantedDissector):
    """The planted dissector, plus a control string that lies close to every feature."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = "planted-dissector-mimic"
        self.identity = {"planted": "mimic"}

    def encode_texts(self, texts):  # type: ignore[no-untyped-def]
        vectors = super().encode_texts(texts)
        for i, text in enumerate(texts):
            if text == MIMIC:
                vectors[i] = 0.0
                vectors[i, : planted.N_FEATURES] = planted.N_FEATURES**-0.5
        return vectors


class ShuffledDissector(planted.PlantedDissector):
    """The planted dissector with every concept given another's vector."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = "planted-dissector-shuffled"
        self.identity = {"planted": "shuffled"}

    def encode_texts(self, texts):  # type: ignore[no-untyped-def]
        vectors = super().encode_texts(texts)
        return vectors[torch.roll(torch.arange(len(texts)), 1)]


def _concepts() -> ConceptSet:
    names = [*planted.CONCEPTS, *planted.DISTRACTORS, MIMIC]
    controls = [False] * len(planted.CONCEPTS) + [True] * (len(planted.DISTRACTORS) + 1)
    categories = ["planted"] * len(planted.CONCEPTS) + ["things"] * (len(controls) - 6)
    return ConceptSet(tuple(names), tuple(categories), tuple(categories), tuple(controls))


@pytest.fixture()
def annotated_probe(tmp_path):
    """The planted probe with a manifest naming each image's features (yes/no columns)."""
    folder = tmp_path / "probe"
    present = planted.write_probe(folder)
    table = pd.DataFrame(present, columns=planted.CONCEPTS)
    table.insert(0, "path", [f"img{i:03d}.png" for i in range(len(table))])
    table.to_csv(folder / "manifest.csv", index=False)
    return folder / "manifest.csv"


def test_paired_auroc_and_average_precision_by_hand():
    scores = np.array([[0.9, 0.2], [0.5, 0.2], [0.5, 0.7], [0.1, 0.4]])
    labels = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    # column 0: positives 0.9, 0.5; negatives 0.5, 0.1 -> pairs won 2 + 1.5 (a tie) of 4
    # column 1: positives 0.2, 0.7; negatives 0.2, 0.4 -> 0.5 + 0 + 1 + 1 of 4
    np.testing.assert_allclose(auroc_columns(scores, labels), [0.875, 0.625])
    # column 0: ranked 0.9 (hit), {0.5, 0.5} (one hit, tied: precision 2/3 at that threshold)
    # column 1: 0.7 (hit, 1/1), 0.4, {0.2, 0.2} (hit, precision 2/4)
    np.testing.assert_allclose(
        average_precision_columns(scores, labels), [(1 + 2 / 3) / 2, (1 + 2 / 4) / 2]
    )
    assert np.isnan(auroc_columns(scores, np.ones((4, 2)))).all()


def test_calibration_recovers_a_known_logistic():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.1, 0.4, size=(40000, 2))
    truth = np.array([[30.0, -6.0], [-20.0, 3.0]])  # slope, intercept per column
    p = 1 / (1 + np.exp(-(x * truth[:, 0] + truth[:, 1])))
    y = rng.random(x.shape) < p
    slope, intercept = calibrate(x, y)
    np.testing.assert_allclose(slope, truth[:, 0], rtol=0.08)
    np.testing.assert_allclose(intercept, truth[:, 1], rtol=0.08)
    separated = calibrate(np.array([[0.1], [0.2], [0.3], [0.4]]), np.array([[0], [0], [1], [1]]))
    assert np.isfinite(separated[0]).all() and separated[0][0] > 5  # large, not infinite


def test_leakage_counts_findings_a_control_outscores():
    s = np.array([[0.5, 0.1, 0.3], [0.2, 0.6, 0.4]])
    present = np.array([[1, 0, 0], [1, 1, 0]], dtype=bool)  # findings: (0,0) (1,0) (1,1)
    controls = np.array([False, False, True])
    # the control's 0.3 beats 0.5? no; its 0.4 beats 0.2 yes and 0.6 no: 1 of 3
    np.testing.assert_allclose(control_leakage(s, present, controls), [1 / 3])


def test_a_perfect_dissector_sees_everything_and_a_mimic_control_is_flagged(annotated_probe):
    found = audit(MimicDissector(), annotated_probe, _concepts(), num_workers=0, quiet=True)
    table = found.detectability
    assert list(table.columns) == DETECTABILITY_COLUMNS
    assert table["concept"].tolist() == planted.CONCEPTS  # annotated ones only
    assert (table["auroc"] == 1.0).all() and (table["auprc"] == 1.0).all()
    assert (table["auroc_low"] >= 0.99).all() and (table["calibration_slope"] > 0).all()
    leakage = found.leakage.set_index("concept")
    assert leakage.loc[MIMIC, "flagged"] and leakage.loc[MIMIC, "leakage"] > 0.5
    assert not leakage.loc[planted.DISTRACTORS, "flagged"].any()
    assert found.info["flagged_controls"] == [MIMIC]
    assert found.info["summary"]["median_auroc"] == 1.0


def test_a_shuffled_dissector_sees_nothing(annotated_probe):
    found = audit(ShuffledDissector(), annotated_probe, _concepts(), num_workers=0, quiet=True)
    aurocs = found.detectability["auroc"]
    # no concept is seen (below chance, even: the cosines of an image's cells share one norm)
    assert aurocs.max() < 0.6


def test_audit_command_writes_its_files_and_reuses_a_runs_cache(
    annotated_probe, concept_file, tmp_path, capsys
):
    run = [
        "run", "--target", "python:planted:make_target", "--dissector",
        "python:planted:make_dissector", "--probe", str(annotated_probe), "--concepts",
        str(concept_file), "--layers", "features", "--out", str(tmp_path / "run"),
        "--num-workers", "0", "--quiet",
    ]  # fmt: skip
    assert main(run) == 0
    calls = planted.CALLS["dissector_images"]
    out = tmp_path / "audit"
    argv = [
        "audit", "--dissector", "python:planted:make_dissector", "--probe", str(annotated_probe),
        "--concepts", str(concept_file), "--out", str(out), "--num-workers", "0",
        "--bootstrap", "50", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    assert planted.CALLS["dissector_images"] == calls  # the run's embeddings, reused
    printed = capsys.readouterr().out
    assert "6 of 12 concepts are annotated on 40 images: median AUROC 1.00" in printed
    table = pd.read_csv(out / "detectability.csv")
    assert len(table) == 6 and set(DETECTABILITY_COLUMNS) <= set(table.columns)
    info = json.loads((out / "audit.json").read_text())
    assert info["settings"]["bootstrap"] == 50 and info["counts"]["annotated_concepts"] == 6
    assert (out / "figures" / "detectability.png").stat().st_size > 1000
    assert (out / "figures" / "detectability.svg").is_file()


def test_audit_needs_annotations_and_refuses_the_annotation_dissector(
    planted_probe, annotated_probe, concept_file
):
    with pytest.raises(MammodissectError, match="has no annotations"):
        audit("python:planted:make_dissector", planted_probe, concept_file, num_workers=0)
    with pytest.raises(MammodissectError, match="auditing the annotation dissector"):
        audit("annotations", annotated_probe, concept_file, num_workers=0)
    with pytest.raises(MammodissectError, match="unknown audit setting 'boostrap'"):
        audit("python:planted:make_dissector", annotated_probe, concept_file, boostrap=3)


def test_detectability_of_a_concept_with_one_class_is_nan():
    table = detectability(np.array([[0.1], [0.2]]), np.array([[1], [1]]), bootstrap=10)
    assert table.loc[0, "images"] == 2 and np.isnan(table.loc[0, "auroc"])
    assert np.isnan(table.loc[0, "auroc_low"]) and table.loc[0, "auprc"] == 1.0


def _audit_folder(folder):
    """A hand-written audit: feature 0 seen (0.95), 1 at 0.85, 2 below chance, 3 with one
    class only (NaN), 4 and 5 not audited; control 'red' flagged for leakage."""
    folder.mkdir()
    pd.DataFrame(
        {
            "concept": planted.CONCEPTS[:4],
            "images": [10, 12, 9, 40],
            "auroc": [0.95, 0.85, 0.3, np.nan],
        }
    ).to_csv(folder / "detectability.csv", index=False)
    pd.DataFrame(
        {"concept": ["red", "wood"], "leakage": [0.7, 0.1], "flagged": [True, False]}
    ).to_csv(folder / "leakage.csv", index=False)
    return folder


def _flagged_concepts(path):
    rows = [(c, "planted", "planted", False) for c in planted.CONCEPTS]
    rows += [(c, "things", "things", True) for c in planted.DISTRACTORS]
    pd.DataFrame(rows, columns=["concept", "category", "broad_category", "control"]).to_csv(
        path, index=False
    )
    return path


def _run(probe, concepts, out, *extra):
    argv = [
        "run", "--target", "python:planted:make_target", "--dissector",
        "python:planted:make_dissector", "--probe", str(probe), "--concepts", str(concepts),
        "--layers", "features", "--out", str(out), "--num-workers", "0", "--quiet", *extra,
    ]  # fmt: skip
    assert main(argv) == 0


def test_labels_from_visible_concepts_only(planted_probe, tmp_path):
    audited = _audit_folder(tmp_path / "audit")
    concepts = _flagged_concepts(tmp_path / "concepts.csv")
    _run(planted_probe, concepts, tmp_path / "all", "--detectability", str(audited))
    neurons = pd.read_csv(tmp_path / "all" / "neurons.csv")
    best = neurons.query("rank == 1").set_index("unit")
    assert best.loc[0, "concept"] == "planted feature 0"
    assert best.loc[0, "detectability_auroc"] == 0.95 and np.isnan(
        best.loc[4, "detectability_auroc"]
    )
    assert len(pd.read_csv(tmp_path / "all" / "detectability.csv")) == 4  # the audit's rows, kept
    assert main(["report", str(tmp_path / "all"), "--quiet"]) == 0
    html = (tmp_path / "all" / "report.html").read_text()
    assert "AUROC of concept 1 (audit)" in html  # the unit table's column
    assert '<span class="muted">AUROC 0.95</span>' in html  # unit 0's card
    assert '<section id="sec-audit"><h2>What the dissector sees</h2>' in html
    assert "controls flagged for leakage</dt><dd>red" in html

    _run(planted_probe, concepts, tmp_path / "vis", "--detectability", str(audited),
         "--min-auroc", "0.9")  # fmt: skip
    info = json.loads((tmp_path / "vis" / "run.json").read_text())
    kept = ["planted feature 0", *[c for c in planted.DISTRACTORS if c != "red"]]
    assert pd.read_csv(tmp_path / "vis" / "concepts.csv")["concept"].tolist() == kept
    record = info["detectability"]
    assert record["rule"].startswith("mammography concepts with an audit AUROC >= min_auroc")
    assert record["min_auroc"] == 0.9 and record["kept"] == len(kept)
    assert record["below_min_auroc"] == ["planted feature 1", "planted feature 2"]
    assert record["not_audited"] == 3 and record["leaking_controls"] == ["red"]
    assert record["flagged_controls"] == ["red"] and record["median_auroc"] == 0.85
    best = pd.read_csv(tmp_path / "vis" / "neurons.csv").query("rank == 1")
    assert set(best["concept"]) <= set(kept)
    from mammodissect.config import RunConfig

    base = dict(target="t:x", dissector="d:x", probe="p", concepts="c", layers="l")
    with pytest.raises(MammodissectError, match="min_auroc needs an audit: give --detectability"):
        RunConfig(**base, min_auroc=0.9)
    with pytest.raises(MammodissectError, match=r"min_auroc must lie in \[0, 1\], got 2"):
        RunConfig(**base, detectability="a", min_auroc=2)


def test_compare_tells_unseen_from_uncaptured_concepts(planted_probe, tmp_path):
    audited = _audit_folder(tmp_path / "audit")
    concepts = _flagged_concepts(tmp_path / "concepts.csv")
    for name in ("a", "b"):
        _run(planted_probe, concepts, tmp_path / name, "--detectability", str(audited))
    found = compare_runs([tmp_path / "a", tmp_path / "b"], tmp_path / "cmp")
    table = pd.read_csv(tmp_path / "cmp" / "uncaptured.csv")
    expected = {"planted feature 0": "yes", "planted feature 1": "no", "planted feature 2": "no",
                "planted feature 3": "not annotated", "planted feature 4": "not annotated",
                "planted feature 5": "not annotated"}  # fmt: skip
    for concept, sees in zip(table["concept"], table["dissector_sees"], strict=True):
        assert expected[concept] == sees
    split = found.info["uncaptured_split"]
    assert split["min_auroc"] == 0.9 and split["source"] == "detectability.csv"
    counts = table["dissector_sees"].value_counts()
    assert split["dissector_cannot_see"] == counts.get("no", 0)
    assert split["seen_but_uncaptured"] + split["not_annotated"] + split[
        "dissector_cannot_see"] == len(table)  # fmt: skip
    again = compare_runs([tmp_path / "a", tmp_path / "b"], None, min_auroc=0.8)
    assert again.info["uncaptured_split"]["min_auroc"] == 0.8


def test_calibrated_probabilities_feed_the_run_and_evaluate_rebuilds_them(planted_probe, tmp_path):
    from mammodissect.analysis.detectability import read_detectability

    audited = _audit_folder(tmp_path / "audit")
    table = pd.read_csv(audited / "detectability.csv")
    table["calibration_slope"] = [20.0, 10.0, -5.0, np.nan]
    table["calibration_intercept"] = [-4.0, -2.0, 1.0, np.nan]
    table.to_csv(audited / "detectability.csv", index=False)
    (audited / "audit.json").write_text(
        json.dumps({"calibration": {"slope": 8.0, "intercept": -3.0}})
    )
    read = read_detectability(audited)
    cos = torch.tensor([[0.2, 0.3], [0.1, 0.5]])
    got = read.probabilities(cos, ["planted feature 0", "red"])  # own fit, then the global one
    expected = torch.sigmoid(
        torch.tensor([[20 * 0.2 - 4, 8 * 0.3 - 3], [20 * 0.1 - 4, 8 * 0.5 - 3]])
    )
    torch.testing.assert_close(got, expected)

    concepts = _flagged_concepts(tmp_path / "concepts.csv")
    _run(planted_probe, concepts, tmp_path / "cal", "--detectability", str(audited),
         "--calibrated", "--similarity", "soft_wpmi", "--similarity-param", "top_k=5")  # fmt: skip
    info = json.loads((tmp_path / "cal" / "run.json").read_text())
    assert info["config"]["calibrated"] is True and info["detectability"]["calibrated"] is True
    assert info["detectability"]["calibration"] == {"slope": 8.0, "intercept": -3.0}
    _run(planted_probe, concepts, tmp_path / "raw", "--detectability", str(audited),
         "--similarity", "soft_wpmi", "--similarity-param", "top_k=5")  # fmt: skip
    cal = pd.read_csv(tmp_path / "cal" / "neurons.csv")
    raw = pd.read_csv(tmp_path / "raw" / "neurons.csv")
    assert not np.allclose(cal["score"], raw["score"])  # the probabilities, not the cosines
    from mammodissect.evaluate import evaluate

    result = evaluate(tmp_path / "cal", noise=[], stability_reps=2, bootstrap=20, quiet=True)
    assert result.info["counts"]["units"] == 6  # its S rebuilt as the run's (scores checked)
    no_global = _audit_folder(tmp_path / "bare")
    with pytest.raises(MammodissectError, match="has no global calibration"):
        read_detectability(no_global).probabilities(cos, ["red", "wood"])
