"""summary.csv and `compare` on hand-built run directories with hand-computed answers.

The planted runs have 11 layers ``blocks.0 ... blocks.10`` (so sorting names as strings would put
``blocks.10`` third) and four units per layer with these top-1 scores, ``i`` the layer's position:

- G: ``[0.10, 0.20, 0.42, 0.52] + 0.021 i`` (layer mean ``0.31 + 0.021 i``);
- M and C: ``[0.20, 0.30, 0.45, 0.60] + 0.005 i`` (layer mean ``0.3875 + 0.005 i``).

The global threshold is M's (and C's) mean for ``i <= 4`` and G's from ``i = 5``; M's third unit
(``0.45 + 0.005 i``) passes it while ``0.14 >= 0.016 i``, i.e. for ``i <= 8``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import mammodissect
from mammodissect.analysis import align_layers, choose_layers, compare, summarize, write_summary
from mammodissect.analysis.compare import Alignment
from mammodissect.analysis.figures import run_colours
from mammodissect.cli import main
from mammodissect.concepts import ConceptSet
from mammodissect.errors import MammodissectError

LAYERS = [f"blocks.{i}" for i in range(11)]
# concept -> (category, broad category, control)
CONCEPTS = {
    "mass": ("mass shape", "mass", False),
    "spiculated margin": ("mass margin", "mass", False),
    "calcification": ("calcifications in general", "calcifications", False),
    "pectoral muscle": ("landmarks", "anatomy", False),
    "nipple": ("landmarks", "anatomy", False),
    "fatty breast": ("density", "breast composition", False),
    "skin lesion": ("skin lesion", "other findings", False),
    "red": ("colours", "colours", True),
    "dog": ("animals", "nature", True),
}
CONCEPT_SET = ConceptSet.from_frame(
    pd.DataFrame(
        [
            {"concept": c, "category": cat, "broad_category": b, "control": ctl}
            for c, (cat, b, ctl) in CONCEPTS.items()
        ]
    ),
    name="planted.csv",
)


def g_scores(i: int) -> list[float]:
    return [0.10 + 0.021 * i, 0.20 + 0.021 * i, 0.42 + 0.021 * i, 0.52 + 0.021 * i]


def m_scores(i: int) -> list[float]:
    return [0.20 + 0.005 * i, 0.30 + 0.005 * i, 0.45 + 0.005 * i, 0.60 + 0.005 * i]


def g_concepts(i: int) -> list[str]:
    return ["red", "dog", "red", "mass"]


def m_concepts(i: int) -> list[str]:
    return ["dog", "red", "calcification", "pectoral muscle" if i >= 8 else "spiculated margin"]


def c_concepts(i: int) -> list[str]:
    return ["red", "dog", "nipple", "mass"]


def write_run(
    folder: Path,
    scores,
    concepts,
    layers=LAYERS,
    *,
    probe: str = "probe-1",
    concept_set: ConceptSet = CONCEPT_SET,
    concepts_file: bool = True,
) -> Path:
    """A run directory as `mammodissect run` writes it (the files the analysis reads)."""
    folder.mkdir(parents=True)
    rows = []
    for i, layer in enumerate(layers):
        for unit, (score, concept) in enumerate(zip(scores(i), concepts(i), strict=True)):
            category, broad, control = CONCEPTS[concept]
            rows.append([layer, unit, 1, concept, score, category, broad, control])
            rows.append([layer, unit, 2, "dog", score - 0.5, "animals", "nature", True])
    neurons = pd.DataFrame(
        rows,
        columns=[
            "layer", "unit", "rank", "concept", "score", "category", "broad_category", "control",
        ],
    )  # fmt: skip
    # rows sorted as strings on purpose: only run.json's list gives the model order
    neurons = neurons.sort_values(["layer", "unit", "rank"], kind="stable")
    neurons.to_csv(folder / "neurons.csv", index=False)
    info = {
        "layers": [{"name": layer, "units": 4} for layer in layers],
        "fingerprints": {"probe": probe, "concepts": concept_set.fingerprint()},
        "concepts": {"name": concept_set.name},
        "dissector": {"spec": "planted"},
        "similarity": {"name": "soft_wpmi", "params": {}},
    }
    (folder / "run.json").write_text(json.dumps(info))
    if concepts_file:
        mammodissect.concepts.write(concept_set, folder / "concepts.csv")
    return folder


@pytest.fixture()
def runs(tmp_path: Path) -> dict[str, Path]:
    return {
        "G": write_run(tmp_path / "runG", g_scores, g_concepts),
        "M": write_run(
            tmp_path / "runM", m_scores, m_concepts, [f"image_encoder.{n}" for n in LAYERS]
        ),
        "C": write_run(
            tmp_path / "runC", m_scores, c_concepts, [f"image_encoder.{n}" for n in LAYERS]
        ),
    }


# ---------------------------------------------------------------- summary


def test_summary_numbers_in_model_order(runs):
    summary = write_summary(runs["G"])
    again = pd.read_csv(runs["G"] / "summary.csv")
    assert again["layer"].tolist() == LAYERS == summary["layer"].tolist()  # not 0, 1, 10, 2
    assert again["position"].tolist() == list(range(11))
    means = 0.31 + 0.021 * np.arange(11)
    np.testing.assert_allclose(again["score_mean"], means)
    np.testing.assert_allclose(again["threshold"], means)
    np.testing.assert_allclose(again["score_median"], means)  # (0.20 + 0.42) / 2 = 0.31
    np.testing.assert_allclose(again["score_std"], np.sqrt((0.21**2 + 0.11**2) / 2))
    assert (again["units"] == 4).all() and (again["passing_units"] == 2).all()
    assert (again["passing_fraction"] == 0.5).all()
    assert (again["mammography_units"] == 1).all() and (again["control_units"] == 1).all()
    assert (again["mammography_fraction"] == 0.5).all()
    assert (again["unique_concepts"] == 3).all() and (again["passing_unique_concepts"] == 2).all()
    assert (again["top_concepts"] == "mass (1)|red (1)").all()


def test_summary_categories_table(runs):
    write_summary(runs["M"])
    cats = pd.read_csv(runs["M"] / "summary_categories.csv")
    first = cats[cats["layer"] == "image_encoder.blocks.0"]
    broad = first[first["level"] == "broad_category"].set_index("broad_category")
    assert broad["units"].to_dict() == {"calcifications": 1, "mass": 1}
    assert (broad["fraction"] == 0.5).all() and not broad["control"].any()
    fine = first[first["level"] == "category"].set_index("category")["units"].to_dict()
    assert fine == {"calcifications in general": 1, "mass margin": 1}
    last = cats[(cats["layer"] == "image_encoder.blocks.10") & (cats["level"] == "category")]
    assert last["category"].tolist() == ["landmarks", "calcifications in general"]
    assert pd.read_csv(runs["M"] / "summary.csv")["layer"].iloc[-1] == "image_encoder.blocks.10"


def test_summarize_extra_columns_and_controls_unknown():
    best = pd.DataFrame(
        {"layer": ["a", "a", "b"], "unit": [0, 1, 0], "concept": ["x", "y", "x"],
         "score": [1.0, 3.0, 2.0]}
    )  # fmt: skip
    summary, cats = summarize(best, ["a", "b"], extra={"units_above_null": {"a": 1}})
    assert summary.columns.tolist().index("units_above_null") == (
        summary.columns.tolist().index("passing_fraction") + 1
    )
    assert summary["units_above_null"].tolist()[0] == 1 and np.isnan(summary["units_above_null"][1])
    assert summary["passing_units"].tolist() == [1, 1]
    assert summary["mammography_fraction"].isna().all() and cats.empty


def test_dissect_writes_summary_and_concepts(planted_probe, concept_file, tmp_path):
    out = tmp_path / "run"
    result = mammodissect.dissect(
        "python:planted:make_target", "python:planted:make_dissector", planted_probe,
        concept_file, "features", out=out, num_workers=0, quiet=True,
    )  # fmt: skip
    summary = pd.read_csv(out / "summary.csv")
    best = result.neurons[result.neurons["rank"] == 1]
    assert summary["layer"].tolist() == ["features"]
    assert summary["units"].iloc[0] == len(best)
    assert summary["passing_units"].iloc[0] == (best["score"] >= best["score"].mean()).sum()
    assert (out / "summary_categories.csv").is_file()
    assert mammodissect.concepts.load(out / "concepts.csv").concepts == tuple(
        mammodissect.concepts.load(concept_file).concepts
    )


# ---------------------------------------------------------------- compare


def test_compare_thresholds_counts_and_mapping(runs, tmp_path):
    result = compare([runs["G"], runs["M"], runs["C"]], tmp_path / "cmp", names="G,M,C")
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert table["aligned_layer"].drop_duplicates().tolist() == LAYERS
    m_rows = table[table["run"] == "M"]
    assert m_rows["layer"].tolist() == [f"image_encoder.{n}" for n in LAYERS]
    i = np.arange(11)
    expected = np.maximum(0.31 + 0.021 * i, 0.3875 + 0.005 * i)
    for name in "GMC":
        rows = table[table["run"] == name]
        np.testing.assert_allclose(rows["global_threshold"], expected)
    assert table[table["run"] == "G"]["threshold_run"].tolist() == ["M"] * 5 + ["G"] * 6
    assert table[table["run"] == "G"]["passing_global"].tolist() == [2] * 11
    assert m_rows["passing_global"].tolist() == [2] * 9 + [1] * 2
    assert m_rows["passing_local"].tolist() == [2] * 11
    assert m_rows["mammography"].tolist() == [2] * 9 + [1] * 2
    assert m_rows["control"].tolist() == [0] * 11
    assert table[table["run"] == "G"]["mammography_fraction"].tolist() == [0.5] * 11
    info = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert info["alignment"]["rule"] == "position"
    assert info["alignment"]["layers"][10]["runs"] == {
        "G": "blocks.10", "M": "image_encoder.blocks.10", "C": "image_encoder.blocks.10",
    }  # fmt: skip
    assert info["runs"] == {"G": "runG", "M": "runM", "C": "runC"}
    assert str(tmp_path) not in (tmp_path / "cmp" / "compare.json").read_text()
    assert info["figure_layers"] == ["blocks.0", "blocks.5", "blocks.10"]
    broad = pd.read_csv(tmp_path / "cmp" / "broad_categories.csv")
    g0 = broad[(broad["run"] == "G") & (broad["position"] == 0)].set_index("broad_category")
    assert g0["units"].to_dict() == {"colours": 1, "mass": 1}
    assert bool(g0.loc["colours", "control"]) and not bool(g0.loc["mass", "control"])
    assert len(result.layers) == len(table) == 33
    assert result.layers["passing_global"].tolist() == table["passing_global"].tolist()


def _write_null(run: Path, p99: float) -> None:
    """The part of `mammodissect evaluate`'s evaluation_layers.csv that compare reads."""
    info = json.loads((run / "run.json").read_text())
    layers = [layer["name"] for layer in info["layers"]]
    pd.DataFrame({"layer": layers, "null_p99": p99}).to_csv(
        run / "evaluation_layers.csv", index=False
    )


def test_compare_null_threshold_when_every_run_was_evaluated(runs, tmp_path):
    _write_null(runs["G"], 0.45)
    _write_null(runs["M"], 0.55)
    table = compare([runs["G"], runs["M"]], None, names="G,M").layers
    g, m = table[table["run"] == "G"], table[table["run"] == "M"]
    assert g["null_threshold"].tolist() == [0.55] * 11  # the larger of the runs' 99th pct
    # G: unit 3 (mass, 0.52 + 0.021 i) from layer 2, unit 2 (red, 0.42 + 0.021 i) from layer 7
    assert g["passing_null"].tolist() == [0, 0] + [1] * 5 + [2] * 4
    assert g["mammography_null"].tolist() == [0, 0] + [1] * 9
    assert m["passing_null"].tolist() == [1] * 11 and m["mammography_null"].tolist() == [1] * 11
    # a run without evaluation: no null-based threshold at all
    table = compare([runs["G"], runs["M"], runs["C"]], None, names="G,M,C").layers
    assert table["null_threshold"].isna().all() and table["passing_null"].isna().all()


def test_compare_finetune_changes(runs, tmp_path):
    compare([runs["G"], runs["M"], runs["C"]], tmp_path / "cmp", names=["G", "M", "C"])
    cats = pd.read_csv(tmp_path / "cmp" / "categories.csv")
    assert set(cats["run"]) == {"C"} and set(cats["baseline"]) == {"M"}
    change = cats.set_index("category")["change"].to_dict()
    # M: calcification 9 layers, spiculated margin 8, pectoral muscle 3; C: nipple 9, mass 11
    assert change["mass shape"] == 11 and change["landmarks"] == 9 - 3
    assert change["calcifications in general"] == -9 and change["mass margin"] == -8
    assert change["colours"] == 0 and change["skin lesion"] == 0
    assert cats["change"].tolist() == sorted(cats["change"], reverse=True)
    row = cats.set_index("category").loc["landmarks"]
    assert (row["baseline_units"], row["units"], row["relative_change"]) == (3, 9, 2.0)
    info = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [g["category"] for g in info["finetune"]["gains"]["C"]] == ["mass shape", "landmarks"]
    assert [g["category"] for g in info["finetune"]["losses"]["C"]] == [
        "calcifications in general", "mass margin",
    ]  # fmt: skip


def test_compare_coverage_and_uncaptured(runs, tmp_path):
    compare([runs["G"], runs["M"], runs["C"]], tmp_path / "cmp", names="G,M,C")
    coverage = pd.read_csv(tmp_path / "cmp" / "coverage.csv", keep_default_na=False)
    assert set(coverage["concept"]) == {c for c, v in CONCEPTS.items() if not v[2]}
    cell = coverage.set_index(["concept", "run"])
    assert cell.loc[("mass", "G"), "units"] == 11 and bool(cell.loc[("mass", "G"), "captured"])
    assert not cell.loc[("mass", "M"), "captured"]
    assert cell.loc[("pectoral muscle", "M"), "layers"] == (
        "image_encoder.blocks.8|image_encoder.blocks.9|image_encoder.blocks.10"
    )
    assert cell.loc[("spiculated margin", "M"), "units"] == 8
    per_cat = pd.read_csv(tmp_path / "cmp" / "coverage_categories.csv")
    landmarks = per_cat[per_cat["category"] == "landmarks"].set_index("run")
    assert landmarks["concepts"].tolist() == [2, 2, 2]
    assert landmarks["coverage"].to_dict() == {"G": 0.0, "M": 0.5, "C": 0.5}
    uncaptured = pd.read_csv(tmp_path / "cmp" / "uncaptured.csv")
    assert uncaptured["concept"].tolist() == ["fatty breast", "skin lesion"]


@pytest.mark.parametrize(("key", "word"), [("probe", "probes"), ("concepts", "concept sets")])
def test_compare_refuses_different_probe_or_concepts(runs, tmp_path, key, word):
    other = {"probe": "probe-2", "concept_set": CONCEPT_SET}
    if key == "concepts":
        other = {"concept_set": ConceptSet.from_strings(["mass", "red"])}
    odd = write_run(tmp_path / "odd", m_scores, m_concepts, **other)
    with pytest.raises(MammodissectError) as err:
        compare([runs["G"], runs["M"], odd], tmp_path / "cmp", names="G,M,X")
    message = str(err.value)
    assert f"different {word}" in message and "G, M (" in message and "X (" in message
    assert not (tmp_path / "cmp").exists()


def test_compare_bad_names_baseline_and_layers(runs, tmp_path):
    pair = [runs["G"], runs["M"]]
    with pytest.raises(MammodissectError, match="3 names"):
        compare(pair, None, names="G,M,C")
    with pytest.raises(MammodissectError, match="given twice"):
        compare(pair, None, names="G,G")
    with pytest.raises(MammodissectError, match="baseline 'Z'"):
        compare(pair, None, baseline="Z")
    with pytest.raises(MammodissectError, match="closest: blocks.1"):
        compare(pair, None, layers="blocks.1x")
    with pytest.raises(MammodissectError, match="at least two"):
        compare([runs["G"]], None)
    picked = compare(pair, None, names="G,M", layers="image_encoder.blocks.3,blocks.1")
    assert picked.figure_layers == [1, 3]


def test_explicit_baseline_and_concepts_from_bundled_or_given(runs, tmp_path):
    (runs["G"] / "concepts.csv").unlink()
    (runs["M"] / "concepts.csv").unlink()
    bare = compare([runs["G"], runs["M"]], None, names="G,M")
    assert bare.coverage.empty and bare.info["uncaptured"] is None
    given = compare([runs["G"], runs["M"]], None, names="G,M", baseline="G", concepts=CONCEPT_SET)
    assert given.info["uncaptured"] == 3 and given.info["finetune"]["runs"] == ["M"]
    with pytest.raises(MammodissectError, match="is not the concept set"):
        compare([runs["G"], runs["M"]], None, concepts=ConceptSet.from_strings(["x"]))


def test_align_layers_by_suffix_when_counts_differ():
    g = ["_blocks.0", "_blocks.1", "_blocks.2"]
    c = ["image_encoder._blocks.0", "image_encoder._blocks.1", "image_encoder._blocks.2",
         "classifier.classification_head"]  # fmt: skip
    alignment = align_layers([g, c], ["G", "C"])
    assert alignment.rule == "suffix"
    assert alignment.labels == g
    assert alignment.layers[2] == ["_blocks.2", "image_encoder._blocks.2"]
    assert alignment.unmatched == {"C": ["classifier.classification_head"]}
    timm = align_layers([["blocks.4.0", "blocks.5.0"], ["x.blocks.5.0"]])
    assert timm.layers == [["blocks.5.0", "x.blocks.5.0"]]  # a shared "0" is no match
    with pytest.raises(MammodissectError, match="share no layers"):
        align_layers([["layer1", "layer2"], ["features.3"]], ["A", "B"])


def test_default_figure_layers_for_efficientnet_names():
    b5 = [f"image_encoder._blocks.{i}" for i in range(39)]
    alignment = Alignment("position", b5, [[n] for n in b5])
    assert choose_layers(alignment) == [2, 19, 38]  # last block of stages 1, 4 and 7 of B5
    lite0 = [f"blocks.{s}.{b}" for s, n in enumerate([1, 2, 2, 3, 3, 4, 1]) for b in range(n)]
    alignment = Alignment("position", lite0, [[n] for n in lite0])
    assert [lite0[i] for i in choose_layers(alignment)] == [
        "blocks.0.0",
        "blocks.3.2",
        "blocks.6.0",
    ]
    few = Alignment("position", ["a", "b", "c", "d"], [["a"], ["b"], ["c"], ["d"]])
    assert choose_layers(few) == [0, 1, 3]


# ---------------------------------------------------------------- figures


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_figures_exist_and_are_not_blank(runs, tmp_path):
    result = compare([runs["G"], runs["M"], runs["C"]], tmp_path / "cmp", names="G,M,C")
    folder = tmp_path / "cmp" / "figures"
    stems = ["layer_means", "mammography_vs_control", "top_broad_categories", "coverage",
             "finetune_change"]  # fmt: skip
    for stem in stems:
        png, svg = folder / f"{stem}.png", folder / f"{stem}.svg"
        assert png.stat().st_size > 10_000 and svg.stat().st_size > 5_000, stem
        assert svg.read_text().lstrip().startswith("<?xml")
        pixels = _pixels(png)
        assert min(pixels.shape[:2]) > 400 and pixels.std() > 0, stem
    assert sorted(p.name for p in result.figures) == sorted(
        f"{s}.{ext}" for s in stems for ext in ("png", "svg")
    )
    # the bars of G (first colour) are drawn: its colour fills a visible area
    bars = _pixels(folder / "mammography_vs_control.png")
    assert (np.abs(bars - _rgb(run_colours(["G"])["G"])).sum(axis=2) < 30).sum() > 500


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])


def _line_rows(pixels: np.ndarray, colour: str, samples: int) -> list[float]:
    """Mean image row of a line's colour at ``samples`` evenly spaced x positions along it."""
    mask = np.abs(pixels - _rgb(colour)).sum(axis=2) < 40
    columns = np.flatnonzero(mask.any(axis=0))
    # the plotted line is the longest stretch of columns (the legend's swatch lies apart)
    breaks = np.flatnonzero(np.diff(columns) > 3)
    pieces = np.split(columns, breaks + 1)
    line = max(pieces, key=len)
    left, right = line[0] + 5, line[-1] - 5
    rows = []
    for x in np.linspace(left, right, samples):
        window = mask[:, int(x) - 2 : int(x) + 3]
        rows.append(float(np.flatnonzero(window.any(axis=1)).mean()))
    return rows


def test_lines_figure_plots_layers_in_model_order(tmp_path):
    rising = lambda i: [0.30 + 0.02 * i] * 4  # noqa: E731
    falling = lambda i: [0.95 - 0.02 * i] * 4  # noqa: E731
    up = write_run(tmp_path / "up", rising, g_concepts)
    down = write_run(tmp_path / "down", falling, g_concepts)
    compare([up, down], tmp_path / "cmp", figures=True)
    pixels = _pixels(tmp_path / "cmp" / "figures" / "layer_means.png")
    colours = run_colours(["up", "down"])
    up_rows = _line_rows(pixels, colours["up"], 11)
    down_rows = _line_rows(pixels, colours["down"], 11)
    assert all(b < a for a, b in itertools.pairwise(up_rows)), up_rows  # rises
    assert all(b > a for a, b in itertools.pairwise(down_rows)), down_rows
    assert max(down_rows) < min(up_rows)  # the higher means are drawn higher up


# ---------------------------------------------------------------- command line


def test_cli_summary_and_compare_round_trip(runs, tmp_path, capsys):
    assert main(["summary", str(runs["G"]), str(runs["M"])]) == 0
    out = capsys.readouterr().out
    assert "11 layers, 22/44 units" in out and (runs["M"] / "summary.csv").is_file()
    argv = ["compare", str(runs["G"]), str(runs["M"]), str(runs["C"]), "--out",
            str(tmp_path / "cmp"), "--names", "G,M,C", "--layers", "blocks.2,blocks.9",
            "--no-figures"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "M: 20 units above the global threshold, 20 with a mammography concept" in out
    assert "mammography concepts no run captures: 2" in out
    info = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert info["figure_layers"] == ["blocks.2", "blocks.9"] and info["figures"] == []
    table = pd.read_csv(tmp_path / "cmp" / "compare.csv")
    assert table.loc[table["figure_layer"], "aligned_layer"].unique().tolist() == [
        "blocks.2", "blocks.9",
    ]  # fmt: skip


def test_cli_compare_error_is_one_line(runs, tmp_path, capsys):
    odd = write_run(tmp_path / "odd", m_scores, m_concepts, probe="other")
    code = main(["compare", str(runs["G"]), str(odd), "--out", str(tmp_path / "cmp")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("mammodissect: error: the runs used different probes")
    assert len(err.splitlines()) == 1
    assert main(["summary", str(tmp_path / "nothere")]) == 2
    assert "run directory 'nothere' not found" in capsys.readouterr().err
