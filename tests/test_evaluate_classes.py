"""Class-level truth for evaluate (issue 7): AUROC/AUPRC by hand, class -> concept truth,
image-level grounding of density/BI-RADS, and the classifier-head check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammodissect import concepts as concept_sets
from mammodissect import dissect, evaluate
from mammodissect.cli import main
from mammodissect.errors import MammodissectError
from mammodissect.evaluate.head import HeadTask, head_check, head_task
from mammodissect.evaluate.truth import class_truth
from mammodissect.metrics import auroc, auroc_columns, average_precision_columns

import planted

DISSECTOR = "python:planted:make_dissector"
#: Density classes planted on features: C = feature 2 present, else A.
ALIASES = {"heterogeneously dense breasts": planted.CONCEPTS[2],
           "almost entirely fatty breasts": planted.CONCEPTS[4]}  # fmt: skip


# --- metrics by hand ------------------------------------------------------------------------


def test_auroc_and_average_precision_by_hand() -> None:
    scores = np.array([[0.1, 3.0], [0.4, 1.0], [0.35, 1.0], [0.8, 0.5]])
    labels = np.array([0, 0, 1, 1])
    # column 0: pairs (0.35 vs 0.1, 0.4) and (0.8 vs both): 3 of 4 won; column 1: one tie of 4
    assert auroc_columns(scores, labels).tolist() == [0.75, 0.125]
    assert auroc(scores[:, 0], labels) == 0.75
    # ranked 0.9+, 0.8-, 0.7+, 0.6-: precision 1 at the first positive, 2/3 at the second
    ap = average_precision_columns(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]))
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    # a tie of one positive and one negative at the top is one threshold: precision 1/2
    tied = average_precision_columns(np.array([1.0, 1.0, 0.0]), np.array([1, 0, 0]))
    assert tied[0] == pytest.approx(0.5)
    assert np.isnan(auroc_columns(scores, np.ones(4))).all()
    with pytest.raises(MammodissectError, match="4 scores but 3 labels"):
        auroc_columns(scores, np.ones(3))


def test_column_metrics_match_their_definitions_on_random_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(4, 25))
        scores = rng.integers(0, 4, size=(n, 3)).astype(float)  # many ties
        labels = rng.random(n) < 0.4
        labels[:2] = [True, False]
        got_auc, got_ap = auroc_columns(scores, labels), average_precision_columns(scores, labels)
        for k in range(3):
            pos, neg = scores[labels, k], scores[~labels, k]
            pairs = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])
            assert got_auc[k] == pytest.approx(pairs.mean())
            ap = 0.0
            for value in np.unique(scores[:, k])[::-1]:
                chosen = scores[:, k] >= value
                new = (labels & (scores[:, k] == value)).sum()
                ap += new / labels.sum() * (labels & chosen).sum() / chosen.sum()
            assert got_ap[k] == pytest.approx(ap)


# --- classes as concepts --------------------------------------------------------------------


@pytest.fixture(scope="module")
def birads_frame() -> pd.DataFrame:
    return concept_sets.load("birads+controls").to_frame()


def test_class_truths_in_the_bundled_set(birads_frame: pd.DataFrame) -> None:
    dense = class_truth("density", "C", birads_frame)
    assert dense.anchor == "heterogeneously dense breasts"
    assert {"breast composition c", "patchy dense parenchyma"} <= dense.members
    assert "extremely dense breasts" not in dense.members
    assert class_truth("density", "3", birads_frame).members == dense.members  # CBIS-DDSM 1-4
    assert class_truth("density", "DENSITY C", birads_frame).anchor == dense.anchor  # VinDr
    four = class_truth("birads", "4", birads_frame)
    assert four.anchor == "BI-RADS 4"
    assert class_truth("birads", "1", birads_frame).title == "birads=1"  # "1" is not "yes"
    assert "BI-RADS 4B moderate suspicion for malignancy" in four.members
    assert "BI-RADS 5" not in four.members
    mass = class_truth("mass", "yes", birads_frame)
    assert {"mass", "oval mass", "spiculated margin"} <= mass.members and mass.title == "mass"
    assert "calcification" not in mass.members
    suspicious = class_truth("suspicious_calcification", "yes", birads_frame)
    assert suspicious.anchor == "suspicious calcifications"
    assert "fine pleomorphic calcifications" in suspicious.members
    assert "round calcifications" not in suspicious.members
    assert class_truth("density", "", birads_frame) is None
    assert class_truth("hair colour", "yes", birads_frame) is None


def test_head_task_from_target_facts_and_flags() -> None:
    density = head_task({"task": "density", "kind": "multiclass", "classes": ["A", "B", "C", "D"]})
    assert density.unit_classes == ["A", "B", "C", "D"]
    assert head_task({"classes": 1}, task="mass").unit_classes == ["yes"]  # Mammo-CLIP layout
    assert head_task({"classes": 3}, "birads", ["1", "2", "4"]).classes == ("1", "2", "4")
    assert head_task({"architecture": "resnet"}) is None  # not a classifier: no check
    with pytest.raises(MammodissectError, match="--head-classes"):
        head_task({"classes": 3}, task="birads")


def test_head_check_ranks_by_hand(birads_frame: pd.DataFrame) -> None:
    concepts = ["heterogeneously dense breasts", "breast composition c", "extremely dense breasts",
                "mass", "almost entirely fatty breasts"]  # fmt: skip
    frame = birads_frame[birads_frame["concept"].isin(concepts)]
    head = HeadTask("density", "multiclass", ("A", "C", "D"))
    scores = torch.tensor(
        [[0.1, 0.2, 0.3, 0.9, 0.5],  # A: anchor ranked 2nd (behind "mass")
         [0.2, 0.8, 0.1, 0.0, 0.3],  # C: label "breast composition c", in class, anchor 3rd
         [0.0, 0.1, 0.7, 0.2, 0.3]]  # D: the anchor itself
    )  # fmt: skip
    table = head_check(scores, concepts, head, frame)
    assert table["label"].tolist() == ["mass", "breast composition c", "extremely dense breasts"]
    assert table["truth_rank"].tolist() == [2, 3, 1]
    assert table["class_rank"].tolist() == [2, 1, 1]
    assert table["top1_match"].tolist() == [False, False, True]
    assert table["top1_in_class"].tolist() == [False, True, True]
    assert table["top5_in_class"].tolist() == [True, True, True]
    assert table["cosine"].iloc[2] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(MammodissectError, match="3 units but task 'density'"):
        head_check(scores, concepts, HeadTask("density", "multiclass", ("A", "B", "C", "D")),
                   frame)  # fmt: skip


# --- end to end on the planted world --------------------------------------------------------


class AliasDissector(planted.PlantedDissector):
    """The planted dissector reading two density concepts as two planted features."""

    def __init__(self, aliases: dict[str, str]) -> None:
        super().__init__()
        self.aliases = aliases
        self.spec = f"planted-alias-{len(aliases)}"

    def encode_texts(self, texts):  # type: ignore[no-untyped-def]
        return super().encode_texts([self.aliases.get(t, t) for t in texts])


@pytest.fixture()
def labelled_probe(tmp_path: Path, planted_probe: Path) -> Path:
    """The planted probe as a manifest whose density is C exactly when feature 2 is present."""
    present = planted.write_probe(tmp_path / "truth")  # same seed: the probe's features
    names = sorted(p.name for p in planted_probe.glob("*.png"))
    manifest = pd.DataFrame({
        "path": [str(planted_probe / n) for n in names],
        "density": ["C" if present[i, 2] else "A" for i in range(len(names))],
    })  # fmt: skip
    path = tmp_path / "manifest.csv"
    manifest.to_csv(path, index=False)
    return path


@pytest.fixture()
def class_concepts(tmp_path: Path) -> Path:
    rows = [(c, "planted", "planted") for c in planted.CONCEPTS[:2] + planted.CONCEPTS[3:]]
    rows += [(c, "planted", "planted") for c in planted.DISTRACTORS]
    rows += [("heterogeneously dense breasts", "heterogeneously dense", "breast composition"),
             ("breast composition c", "heterogeneously dense", "breast composition"),
             ("almost entirely fatty breasts", "almost entirely fatty", "breast composition"),
             ("planted feature 2", "planted", "planted")]  # fmt: skip
    path = tmp_path / "classes.csv"
    pd.DataFrame(rows, columns=["concept", "category", "broad_category"]).to_csv(path, index=False)
    return path


def test_image_level_density_grounding(tmp_path: Path, labelled_probe: Path,
                                       class_concepts: Path) -> None:  # fmt: skip
    runs = {}
    for name, aliases in (("right", ALIASES), ("wrong", {"heterogeneously dense breasts":
                                                         planted.CONCEPTS[5]})):  # fmt: skip
        out = tmp_path / name
        dissect("python:planted:make_target", AliasDissector(aliases), labelled_probe,
                class_concepts, "features", out=out, quiet=True, num_workers=0,
                similarity="soft_wpmi", similarity_params={"top_k": 10})  # fmt: skip
        runs[name] = evaluate(out, probe=labelled_probe, dissector=AliasDissector(aliases),
                              quiet=True, bootstrap=50)  # fmt: skip
    units = runs["right"].units.set_index("unit")
    # unit 2 fires on feature 2, i.e. on every density-C image and no other: AUROC 1
    assert units.loc[2, "image_class"] == "density=C"
    assert units.loc[2, "auroc"] == pytest.approx(1.0)
    assert units.loc[2, "auprc"] == pytest.approx(1.0)
    assert units.loc[2, "image_truth"] == "heterogeneously dense breasts"
    assert units.loc[2, "label"] == "heterogeneously dense breasts"
    assert units.loc[2, "image_top1_match"]
    # units of independent features are not density detectors
    assert units.drop(index=2)["image_class"].isna().all()
    info = runs["right"].info
    assert info["counts"]["image_grounded_units"] == 1
    assert info["image_labels"]["classes"] == ["density=A", "density=C"]
    assert info["overall"]["image_top1_match"] == 1.0
    # a dissector reading the density concept as another feature: the label names the wrong one
    wrong = runs["wrong"].units.set_index("unit")
    assert wrong.loc[2, "image_class"] == "density=C"
    assert not wrong.loc[2, "image_top1_match"]
    assert runs["wrong"].info["overall"]["image_top1_match"] == 0.0
    layers = pd.read_csv(tmp_path / "right" / "evaluation_layers.csv")
    assert layers["image_grounded_units"].tolist() == [1]


def test_classifier_head_check_end_to_end(tmp_path: Path, planted_probe: Path,
                                          concept_file: Path, capsys) -> None:  # fmt: skip
    out = tmp_path / "c"
    argv = ["run", "--target", "python:planted:make_classifier", "--dissector", DISSECTOR,
            "--probe", str(planted_probe), "--concepts", str(concept_file), "--layers",
            "features,classifier.classification_head", "--out", str(out), "--quiet",
            "--num-workers", "0",
            "--similarity", "soft_wpmi", "--similarity-param", "top_k=10"]  # fmt: skip
    assert main(argv) == 0
    assert main(["evaluate", str(out), "--quiet", "--bootstrap", "0"]) == 0
    printed = capsys.readouterr().out
    assert "classifier head (feature): 6 units" in printed and "head_check.csv" in printed
    table = pd.read_csv(out / "head_check.csv")
    assert table["class"].tolist() == planted.CONCEPTS
    assert table["top1_match"].all() and (table["truth_rank"] == 1).all()
    # the run report gets an evaluation section with the head check and the stability
    assert main(["report", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert 'id="sec-evaluation"' in html and 'href="#sec-evaluation"' in html
    assert "Classifier head (feature)" in html and "top-1 anchor 1.00" in html
    assert "bootstrap of the images (20 resamples)</dt><dd>1.000" in html
    assert str(tmp_path) not in html
    # classes given in another order: the check names the mismatch
    flags = ["--head-task", "feature", "--head-classes", ",".join(planted.CONCEPTS[::-1])]
    assert main(["evaluate", str(out), "--quiet", "--bootstrap", "0", *flags]) == 0
    table = pd.read_csv(out / "head_check.csv")
    assert not table["top1_match"].any()
    # a run without the head layer: with --probe the head is recorded now (the run's rows and
    # dissector cache), else a note and no stale head_check.csv
    bare = tmp_path / "bare"
    argv[argv.index("--out") + 1] = str(bare)
    layers = argv.index("--layers") + 1
    assert main([*argv[:layers], "features", *argv[layers + 1 :]]) == 0
    capsys.readouterr()
    (bare / "head_check.csv").write_text("stale")
    assert main(["evaluate", str(bare), "--quiet", "--bootstrap", "0"]) == 0
    assert "did not record the classifier head" in capsys.readouterr().out
    assert not (bare / "head_check.csv").exists()
    assert main(["evaluate", str(bare), "--quiet", "--bootstrap", "0", "--probe",
                 str(planted_probe)]) == 0  # fmt: skip
    assert pd.read_csv(bare / "head_check.csv")["top1_match"].all()


def test_one_unit_head_is_scored_among_the_layer_below(tmp_path: Path, planted_probe: Path,
                                                       concept_file: Path) -> None:  # fmt: skip
    """soft-WPMI over a one-unit layer gives every concept the same score; among the units of
    the layer below, the binary head's unit gets its class."""
    out = tmp_path / "binary"
    result = dissect("python:planted:make_binary_classifier", DISSECTOR, planted_probe,
                     concept_file, "features,classifier.classification_head", out=out,
                     quiet=True, num_workers=0,
                     similarity="soft_wpmi", similarity_params={"top_k": 10})  # fmt: skip
    alone = result.neurons.query("layer == 'classifier.classification_head'")
    assert alone["score"].nunique() == 1  # the run's own labels of the head are meaningless
    table = evaluate(out, quiet=True, bootstrap=0).head
    assert table["class"].tolist() == ["yes"]
    assert table["truth"].tolist() == ["planted feature 2"]
    assert table["label"].tolist() == ["planted feature 2"] and table["truth_rank"].tolist() == [1]


def test_task_labels_read_dataset_spellings(tmp_path: Path, planted_probe: Path) -> None:
    """VinDr-Mammo writes "DENSITY C" and "BI-RADS 4", CBIS-DDSM 1-4: the same classes."""
    from mammodissect.probe import load_probe, task_labels

    names = sorted(p.name for p in planted_probe.glob("*.png"))[:6]
    manifest = pd.DataFrame({
        "path": [str(planted_probe / n) for n in names],
        "density": ["DENSITY C", "3", "C", "A", "1", "unknown"],
        "birads": ["BI-RADS 4", "4A", "4.0", "BI-RADS 2", "2", "none"],
    })  # fmt: skip
    manifest.to_csv(tmp_path / "m.csv", index=False)
    probe = load_probe(tmp_path / "m.csv")
    density = task_labels(probe, "density")
    assert density.targets.tolist() == [2, 2, 2, 0, 0] and density.dropped == 1
    birads = task_labels(probe, "birads")
    assert birads.classes == ["2", "4"] and birads.targets.tolist() == [1, 1, 1, 0, 0]


def test_evaluation_table_reads_evaluated_runs_only(tmp_path: Path) -> None:
    from mammodissect.analysis.evaluated import evaluation_table, read_evaluation

    info = {
        "counts": {"units_above_null_99": 7, "grounded_units": 3, "image_grounded_units": 2},
        "overall": {"top1_match": 0.5, "image_top1_match": None},
        "planted": {"top1_recovery": 0.25},
        "head_check": None,
        "stability": {"bootstrap_survival": 0.4, "noise_0.01_survival": 0.2},
    }
    (tmp_path / "M").mkdir()
    (tmp_path / "M" / "evaluation.json").write_text(json.dumps(info))
    (tmp_path / "G").mkdir()
    table = evaluation_table({"G": tmp_path / "G", "M": tmp_path / "M"})
    assert table["run"].tolist() == ["M"]
    row = table.iloc[0]
    assert (row["units_above_null_99"], row["planted_top1_recovery"]) == (7, 0.25)
    assert row["head_top1_in_class"] is None and row["noise_0.01_survival"] == 0.2
    assert evaluation_table({"G": tmp_path / "G"}) is None
    (tmp_path / "G" / "evaluation.json").write_text("{broken")
    with pytest.raises(MammodissectError, match="G/evaluation.json is not JSON"):
        read_evaluation(tmp_path / "G")
