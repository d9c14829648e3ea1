"""The annotation dissector: S from the probe's own annotations, as exact matrices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_layouts import _cbis, _vindr

from mammodissect import concepts as concept_sets
from mammodissect.cli import main
from mammodissect.concepts.encode import score_matrix, scored_concepts
from mammodissect.errors import MammodissectError
from mammodissect.models import load_dissector
from mammodissect.probe import Probe, ProbeItem, load_probe
from mammodissect.probe.annotations import BUNDLED_MAP, probe_terms, read_map
from mammodissect.probe.layouts import cbis_ddsm, vindr

import planted


def _matrix(probe: Probe, concepts: list[str], spec: str = "annotations") -> np.ndarray:
    dissector = load_dissector(spec)
    dissector.bind_probe(probe)
    rows = dissector.encode_rows(range(len(probe)))
    return score_matrix(dissector, rows, dissector.encode_texts(concepts)).numpy()


def _expect(table: dict[str, str]) -> tuple[list[str], np.ndarray]:
    """Concepts and the expected S from ``concept: "0/1 per image"``."""
    return list(table), np.array([[int(c) for c in v] for v in table.values()], dtype=float).T


def test_s_from_a_cbis_ddsm_layout(tmp_path):
    probe = cbis_ddsm.read(_cbis(tmp_path / "CBIS-DDSM"), workers=1)
    assert [i.image_id[:22] for i in probe] == [
        "Mass-Training_P_00001_", "Mass-Training_P_00002_", "Calc-Test_P_00038_RIGH",
    ]  # fmt: skip
    # images: A (two masses: irregular/spiculated, oval/circumscribed; density 2, BI-RADS
    # 4 at most, malignant), C (round/obscured; density 4, BI-RADS 0), B (pleomorphic,
    # clustered calcifications; density 3, BI-RADS 5, malignant)
    concepts, expected = _expect({
        "irregular mass": "100", "irregularly shaped mass": "100", "spiculated margin": "100",
        "oval mass": "100", "circumscribed margin": "100", "round mass": "010",
        "obscured margin": "010", "fine pleomorphic calcifications": "001",
        "clustered calcifications": "001", "grouped calcifications": "001", "mass": "110",
        "calcifications": "001", "breast cancer": "101",
        "scattered areas of fibroglandular density": "100",
        "heterogeneously dense breasts": "001", "extremely dense breasts": "010",
        "BI-RADS 4": "100", "BI-RADS 3": "000", "BI-RADS 0": "010", "BI-RADS 5": "001",
        "CC view": "100", "MLO view": "011", "left": "100", "right": "011", "red": "000",
    })  # fmt: skip
    np.testing.assert_array_equal(_matrix(probe, concepts), expected)


def test_s_from_a_vindr_layout(tmp_path):
    probe = vindr.read(_vindr(tmp_path / "vindr"))
    assert probe.image_ids == ["a1", "a2", "b1", "b2", "c1"]
    concepts, expected = _expect({
        "mass": "10000", "suspicious calcifications": "10000",
        "architectural distortion": "00100", "almost entirely fatty breasts": "00001",
        "scattered areas of fibroglandular density": "00100",
        "heterogeneously dense breasts": "11000", "extremely dense breasts": "00010",
        "BI-RADS 1": "01000", "BI-RADS 4": "10000", "BI-RADS 5": "00001",
        "craniocaudal view": "10101", "right": "00110", "no finding": "00000",
    })  # fmt: skip
    np.testing.assert_array_equal(_matrix(probe, concepts), expected)


def _manifest_probe(root: Path) -> Probe:
    """Three images with hand-written annotations of every kind a manifest can carry."""
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for name in ("a", "b", "c"):
        (root / f"{name}.png").write_bytes(b"")
        items.append(ProbeItem(name, f"{name}.png", root / f"{name}.png"))
    on = np.ones((4, 4), dtype=bool)
    np.savez(root / "a.npz", **{"spiculated margin": on, "oval mass": ~on})  # oval: empty
    np.savez(root / "b.npz", **{"oval mass": on})
    labels = pd.DataFrame(
        {
            "patient_id": ["mass", "mass", "mass"],  # an id: never an annotation
            "architectural_distortion": [True, False, False],
            "Breast Implant": [0, 1, 0],  # 0/1 named like a concept
            "density": ["A", "C", None],
            "mass_shape": ["IRREGULAR-ROUND", None, "OVAL"],  # CBIS-style combination
            "report": ["spiculated margin seen", "", ""],  # free text: never an annotation
            "mask_path": ["a.npz", "b.npz", None],
        },
        index=pd.Index(["a", "b", "c"], name="image_id"),
    )
    return Probe(root, items, labels=labels, source="manifest")


def test_s_from_manifest_columns_and_mask_files(tmp_path):
    probe = _manifest_probe(tmp_path / "probe")
    terms = probe_terms(probe)
    assert "patient_id=mass" not in terms.terms and not any("report" in t for t in terms.terms)
    concepts, expected = _expect({
        "spiculated margin": "100", "oval mass": "011", "architectural distortion": "100",
        "breast implant": "010", "almost entirely fatty breasts": "100",
        "heterogeneously dense breasts": "010", "irregular mass": "100", "round mass": "100",
        "mass": "000",
    })  # fmt: skip
    np.testing.assert_array_equal(_matrix(probe, concepts), expected)


def test_a_user_map_adds_and_replaces_rows(tmp_path):
    probe = _manifest_probe(tmp_path / "probe")
    mine = tmp_path / "my_map.csv"
    mine.write_text(
        "# my site's codes\nfield,value,concept\nmass_shape,oval,ovoid mass\ndensity,c,\n"
    )
    concepts = ["ovoid mass", "oval mass", "heterogeneously dense breasts"]
    s = _matrix(probe, concepts, f"annotations?map={mine}")
    # oval -> "ovoid mass" replaces the bundled row ("oval mass" is left to b's mask file);
    # density c no longer maps to anything
    np.testing.assert_array_equal(s, np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0]], dtype=float))
    assert read_map(mine).sources == ("bundled", "my_map.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("code,concept\nx,y\n")
    with pytest.raises(MammodissectError, match="'bad.csv' needs the columns field, value"):
        read_map(bad)


def test_the_bundled_map_names_bundled_concepts_only():
    known = {c.casefold() for c in concept_sets.load("birads").concepts}
    table = pd.read_csv(BUNDLED_MAP, comment="#")
    unknown = sorted(set(table["concept"]) - {c for c in table["concept"] if c.casefold() in known})
    assert unknown == []


def test_phantom_masks_and_flags_are_the_truth(tmp_path):
    from mammodissect.phantom import generate, write_phantoms

    manifest = write_phantoms(tmp_path / "ph", generate(6, seed=5))
    probe = load_probe(manifest)
    concepts = ["spiculated margin", "breast", "mass", "architectural distortion", "nipple"]
    s = _matrix(probe, concepts)
    for row, item in enumerate(probe):
        with np.load(tmp_path / "ph" / probe.labels.loc[item.image_id, "mask_path"]) as masks:
            shown = {k for k in masks.files if masks[k].any()}
        flags = probe.labels.loc[item.image_id]
        assert s[row, 0] == ("spiculated margin" in shown)
        assert s[row, 1] == 1  # every phantom is a breast
        assert s[row, 2] == (bool(flags["mass"]) or "mass" in shown)
        assert s[row, 3] == (
            bool(flags["architectural_distortion"]) or "architectural distortion" in shown
        )


def test_a_run_with_the_annotations_labels_each_planted_unit_with_its_feature(
    tmp_path, concept_file
):
    probe = tmp_path / "probe"
    present = planted.write_probe(probe)
    table = pd.DataFrame(present, columns=planted.CONCEPTS)
    table.insert(0, "path", [f"img{i:03d}.png" for i in range(len(table))])
    table.to_csv(probe / "manifest.csv", index=False)
    out = tmp_path / "run"
    argv = [
        "run", "--target", "python:planted:make_target", "--dissector", "annotations",
        "--probe", str(probe / "manifest.csv"), "--concepts", str(concept_file),
        "--layers", "features", "--out", str(out), "--num-workers", "0", "--quiet",
    ]  # fmt: skip
    assert main(argv) == 0
    best = pd.read_csv(out / "neurons.csv").query("rank == 1")
    assert best["concept"].tolist() == planted.CONCEPTS  # unit j: feature j, every unit
    info = json.loads((out / "run.json").read_text())
    assert info["concepts"]["count"] == len(planted.CONCEPTS)
    assert info["concepts_left_out"]["no_annotation"] == planted.DISTRACTORS
    assert info["config"]["dissector"] == "annotations"
    assert set(pd.read_csv(out / "concepts.csv")["concept"]) == set(planted.CONCEPTS)
    calls = planted.CALLS["target"]
    assert main(argv) == 0 and planted.CALLS["target"] == calls  # cached like any dissector
    assert main([*argv, "--prompt", "a photo of {}"]) == 2


def test_evaluate_of_an_annotation_run_needs_the_probe(tmp_path, concept_file, capsys):
    probe = tmp_path / "probe"
    present = planted.write_probe(probe, n=16)
    table = pd.DataFrame(present, columns=planted.CONCEPTS)
    table.insert(0, "path", [f"img{i:03d}.png" for i in range(len(table))])
    table.to_csv(probe / "m.csv", index=False)
    out = tmp_path / "run"
    assert main([
        "run", "--target", "python:planted:make_target", "--dissector", "annotations",
        "--probe", str(probe / "m.csv"), "--concepts", str(concept_file), "--layers",
        "features", "--out", str(out), "--num-workers", "0", "--quiet",
        "--similarity", "soft_wpmi", "--similarity-param", "top_k=5",
    ]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["evaluate", str(out), "--noise", "none", "--stability-reps", "2"]) == 2
    assert "scores the probe's own annotations; give the run's probe (--probe)" in (
        capsys.readouterr().err
    )
    evaluate = ["evaluate", str(out), "--probe", str(probe / "m.csv"), "--noise", "none"]
    assert main([*evaluate, "--stability-reps", "2", "--quiet"]) == 0
    assert "units above the 99th-percentile null" in capsys.readouterr().out
    units = pd.read_csv(out / "evaluation.csv")
    assert units["label"].tolist() == planted.CONCEPTS  # the S evaluate rebuilt is the run's


def test_a_probe_without_annotations_is_refused(planted_probe):
    dissector = load_dissector("annotations")
    with pytest.raises(MammodissectError, match="has no annotations for the annotation dissector"):
        dissector.bind_probe(load_probe(planted_probe))


def test_only_concepts_the_probe_shows_are_scored(tmp_path):
    probe = _manifest_probe(tmp_path / "probe")
    dissector = load_dissector("annotations")
    dissector.bind_probe(probe)
    texts = dissector.encode_texts(["oval mass", "mass", "red"])
    s = score_matrix(dissector, dissector.encode_rows([0, 1, 2]), texts)
    # neither "mass" nor "red" is what any annotation of this probe stands for
    assert scored_concepts(dissector, s, texts).tolist() == [True, False, False]


def test_a_box_grounds_its_descriptor_concepts_too(tmp_path):
    from mammodissect.evaluate.masks import mask_source

    probe = _manifest_probe(tmp_path / "probe")
    boxes = pd.DataFrame(
        {
            "image_id": ["a", "b"], "finding": ["mass", "calcification"],
            "xmin": [0.0, 1.0], "ymin": [0.0, 1.0], "xmax": [2.0, 3.0], "ymax": [2.0, 3.0],
            "mass_shape": ["IRREGULAR", None], "mass_margins": ["SPICULATED", None],
            "calc_type": [None, "PLEOMORPHIC-AMORPHOUS"],
        }
    )  # fmt: skip
    probe = Probe(probe.root, probe.items, source="cbis-ddsm", boxes=boxes)
    concepts = [
        "mass", "irregular mass", "spiculated margin", "calcifications",
        "fine pleomorphic calcifications", "amorphous calcifications", "oval mass",
    ]  # fmt: skip
    source = mask_source(probe, concepts)
    first = source.masks(0, (4, 4))
    assert sorted(first) == ["irregular mass", "mass", "spiculated margin"]
    assert first["irregular mass"][:2, :2].all() and first["irregular mass"].sum() == 4
    second = source.masks(1, (4, 4))
    assert sorted(second) == [
        "amorphous calcifications",
        "calcifications",
        "fine pleomorphic calcifications",
    ]  # "calcification" grounds "calcifications" through the bundled map


def test_evaluate_scores_planted_units_with_the_annotations_beside_the_dissector(
    tmp_path, concept_file
):
    """The pipeline's ceiling (S from the annotations) beside the run's own recovery, in
    planted.csv and evaluation.json."""
    from test_evaluate import _boxed_probe

    from mammodissect.evaluate import evaluate

    folder = tmp_path / "probe"
    planted.write_probe(folder)
    probe = _boxed_probe(folder)
    out = tmp_path / "run"
    argv = [
        "run", "--target", "python:planted:make_target", "--dissector",
        "python:planted:make_dissector", "--probe", str(folder), "--concepts",
        str(concept_file), "--layers", "features", "--out", str(out), "--num-workers", "0",
        "--quiet", "--similarity", "wpmi",
    ]  # fmt: skip
    assert main(argv) == 0
    result = evaluate(out, probe=probe, noise=[], stability_reps=2, bootstrap=50, quiet=True)
    table = pd.read_csv(out / "planted.csv")
    assert table["annotation_top1_match"].all()  # the annotations name every planted unit
    assert (table["annotation_label"] == table["concept"]).all()
    ceiling = result.info["planted"]["annotation_ceiling"]
    assert ceiling["top1_recovery"] == 1.0 and ceiling["units"] == len(planted.CONCEPTS)


def test_planted_units_with_the_annotations_are_recovered_unless_inseparable(tmp_path):
    """Every planted unit gets its own concept at rank 1 from the annotation dissector, except
    where another concept is annotated on exactly the same images (the same column of S: the
    phantoms draw the pectoral muscle on every MLO view and nowhere else)."""
    import torch

    from mammodissect.evaluate.masks import mask_source
    from mammodissect.evaluate.planted import plant, recovery
    from mammodissect.phantom import generate, write_phantoms
    from mammodissect.similarity import soft_wpmi

    probe = load_probe(write_phantoms(tmp_path / "ph", generate(60, seed=11)))
    from mammodissect.models.annotation_models import annotation_truth

    names = list(concept_sets.load("birads+controls").concepts)
    s, kept, _ = annotation_truth(probe, range(len(probe)), names)
    layer = plant(probe, list(range(len(probe))), mask_source(probe, names), names, quiet=True)
    table = recovery(layer, s, kept, soft_wpmi, {"top_k": 20}, bootstrap=0).table
    assert len(table) >= 20
    for row in table.itertuples():
        if not row.top1_match:
            same = torch.equal(s[:, kept.index(row.concept)], s[:, kept.index(row.label)])
            assert same, (row.concept, row.label)
    missed = table.loc[~table["top1_match"].astype(bool), "concept"].tolist()
    assert set(missed) <= {"pectoral muscle"}, missed
