"""Concept sets: the bundled BI-RADS set, formats, duplicate rules, validation, prompts, CLI."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from mammodissect import concepts as C
from mammodissect.cli import main
from mammodissect.config import RunConfig
from mammodissect.describe import label_units
from mammodissect.errors import MammodissectError
from mammodissect.models.imagenet import imagenet_classes

import planted

# (exact concept, category, broad category): the BI-RADS descriptors in their lexicon wording.
DESCRIPTORS = [
    *[(f"{s} mass", "mass shape", "mass") for s in ("oval", "round", "irregular")],
    *[
        (f"{m} margin", "mass margin", "mass")
        for m in ("circumscribed", "obscured", "microlobulated", "indistinct", "spiculated")
    ],
    *[
        (f"{d} mass", "mass density", "mass")
        for d in ("high density", "equal density", "low density", "fat-containing")
    ],
    *[
        (f"{m} calcifications", "typically benign calcifications", "calcifications")
        for m in (
            "skin",
            "vascular",
            "coarse or popcorn-like",
            "large rod-like",
            "round",
            "rim",
            "dystrophic",
            "milk of calcium",
            "suture",
        )
    ],
    *[
        (f"{m} calcifications", "suspicious calcifications", "calcifications")
        for m in (
            "amorphous",
            "coarse heterogeneous",
            "fine pleomorphic",
            "fine linear or fine-linear branching",
        )
    ],
    *[
        (f"{d} calcifications", "calcification distribution", "calcifications")
        for d in ("diffuse", "regional", "grouped", "linear", "segmental")
    ],
    ("architectural distortion", "architectural distortion", "architectural distortion"),
    *[
        (a, a, "asymmetries")
        for a in ("asymmetry", "global asymmetry", "focal asymmetry", "developing asymmetry")
    ],
    *[
        (f, f, "other findings")
        for f in ("intramammary lymph node", "skin lesion", "solitary dilated duct")
    ],
    *[
        (f, f, "associated features")
        for f in (
            "skin retraction",
            "nipple retraction",
            "skin thickening",
            "trabecular thickening",
            "axillary adenopathy",
        )
    ],
    *[
        (f"associated {f}", f"associated {f}", "associated features")
        for f in ("architectural distortion", "calcifications")
    ],
    ("almost entirely fatty breasts", "almost entirely fatty", "breast composition"),
    (
        "scattered areas of fibroglandular density",
        "scattered fibroglandular density",
        "breast composition",
    ),
    ("heterogeneously dense breasts", "heterogeneously dense", "breast composition"),
    ("extremely dense breasts", "extremely dense", "breast composition"),
    *[
        (f"breast composition {x}", category, "breast composition")
        for x, category in zip(
            "abcd",
            (
                "almost entirely fatty",
                "scattered fibroglandular density",
                "heterogeneously dense",
                "extremely dense",
            ),
            strict=True,
        )
    ],
]
ASSESSMENTS = [
    "incomplete",
    "negative",
    "benign",
    "probably benign",
    "suspicious",
    "highly suggestive of malignancy",
    "known biopsy-proven malignancy",
]
# Report language the issue names, by broad category.
REPORT_TERMS = {
    "location": [
        "right breast",
        "upper outer quadrant",
        "lower inner quadrant",
        "12 o'clock",
        "3 o'clock",
        "anterior depth",
        "middle depth",
        "posterior depth",
        "subareolar",
        "central breast",
        "axillary tail",
    ],
    "views and laterality": [
        "CC view",
        "MLO view",
        "ML view",
        "LM view",
        "XCCL view",
        "spot compression",
        "magnification",
        "left",
        "right",
        "bilateral",
    ],
    "anatomy": [
        "pectoral muscle",
        "nipple",
        "skin line",
        "fibroglandular tissue",
        "fat",
        "blood vessels",
        "Cooper's ligaments",
        "axilla",
    ],
    "implants": [
        "saline implant",
        "silicone implant",
        "intracapsular rupture",
        "extracapsular rupture",
        "prepectoral implant",
        "retropectoral implant",
        "capsular contracture",
    ],
    "post-procedure changes": [
        "biopsy clip",
        "biopsy marker clip",
        "surgical scar",
        "seroma",
        "hematoma",
        "lumpectomy",
        "reduction mammoplasty changes",
        "fat necrosis",
    ],
    "artefacts": [
        "skin marker",
        "laterality label",
        "motion blur",
        "grid lines",
        "deodorant artifact",
        "hair artifact",
        "dust on the detector",
        "processing artifact",
    ],
    "assessment and management": [
        "additional imaging evaluation",
        "short-interval follow-up",
        "biopsy recommended",
        "routine screening",
    ],
}


@pytest.fixture(scope="module")
def birads() -> C.ConceptSet:
    return C.load("birads")


@pytest.fixture(scope="module")
def everything() -> C.ConceptSet:
    return C.load("birads+controls")


def _where(concepts: C.ConceptSet) -> dict[str, tuple[str | None, str | None, bool | None]]:
    return {e.concept: (e.category, e.broad_category, e.control) for e in concepts.entries()}


# --- the bundled sets -------------------------------------------------------------------------


def test_every_birads_descriptor_is_under_its_category(birads):
    where = _where(birads)
    missing = [d for d in DESCRIPTORS if where.get(d[0]) != (d[1], d[2], False)]
    assert not missing, missing
    for k, name in enumerate(ASSESSMENTS):
        expected = (f"BI-RADS {k} {name}", "assessment and management", False)
        spelled = f"BI-RADS {k}: {name}" + (
            ", needs additional imaging evaluation" if k == 0 else ""
        )
        assert where[f"BI-RADS {k}"] == where[spelled] == expected
        assert sum(name in c for c, w in where.items() if w == expected) >= 2
    for broad, terms in REPORT_TERMS.items():
        assert [t for t in terms if where.get(t, (None, None))[1] != broad] == [], broad


def test_counts_flags_categories_and_no_duplicates(birads, everything):
    assert sum(flag is False for flag in birads.control) == len(birads) >= 400
    controls = C.load("controls")
    assert sum(flag is True for flag in controls.control) == len(controls) >= 300
    assert everything.concepts == birads.concepts + controls.concepts
    folded = [c.casefold() for c in everything.concepts]
    assert len(set(folded)) == len(folded)
    assert all(everything.category) and all(everything.broad_category)
    assert all(isinstance(flag, bool) for flag in everything.control)
    frame = everything.to_frame()
    assert list(frame.columns) == ["concept", "category", "broad_category", "control"]
    assert set(frame.loc[frame["control"], "broad_category"]) == {
        "colours",
        "textures and materials",
        "natural things",
        "everyday objects",
        "imagenet classes",
    }
    assert everything.describe()["duplicates"]["affected"] == 0


def test_imagenet_controls_are_every_tenth_class_without_mammography_like_ones():
    controls = C.load("controls")
    picked = [e.concept for e in controls.entries() if e.broad_category == "imagenet classes"]
    written = {e.concept.casefold() for e in controls.entries()} - {c.casefold() for c in picked}
    expected = [
        name
        for name in imagenet_classes()[:: C.IMAGENET_STEP]
        if name not in C.IMAGENET_EXCLUDED and name.casefold() not in written
    ]
    assert picked == expected and len(picked) >= 90
    assert "nipple" in imagenet_classes()[:: C.IMAGENET_STEP] and "nipple" not in picked
    assert picked == C.imagenet_controls(skip=written)


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["csv", "tsv", "yaml", "yml", "json", "xlsx"])
def test_round_trip_keeps_strings_categories_flags_and_order(everything, tmp_path, ext):
    path = C.write(everything, tmp_path / f"set.{ext}")
    back = C.load(path)
    assert back.concepts == everything.concepts
    assert back.category == everything.category
    assert back.broad_category == everything.broad_category
    assert back.control == everything.control


def test_chain_through_every_format_and_plain_text(everything, tmp_path):
    current: str | Path = "birads+controls"
    for ext in ("yaml", "xlsx", "json", "tsv", "csv"):
        C.convert(current, tmp_path / f"step.{ext}")
        current = tmp_path / f"step.{ext}"
    assert C.load(current).entries() == everything.entries()
    text = C.load(C.write(everything, tmp_path / "plain.txt"))
    assert text.concepts == everything.concepts and not text.has_categories


def test_multi_label_round_trips_and_reaches_neurons_table(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(
        "concept,category,broad_category,control\n"
        "spiculated mass,mass margin,mass,false\n"
        "red,colour names,colours,true\n"
        "Spiculated Mass,mass shape,mass,false\n"
        "halo,sign,findings,\n"
    )
    multi = C.load(path, duplicates="multi")
    assert multi.category[0] == "mass margin|mass shape" and multi.broad_category[0] == "mass"
    assert multi.labels(0) == [("mass", "mass margin"), ("mass", "mass shape")]
    for ext in ("csv", "yaml", "xlsx"):
        back = C.load(C.write(multi, tmp_path / f"out.{ext}"), duplicates="multi")
        assert back.entries() == multi.entries(), ext
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.2, 0.0]])
    table = label_units(scores, multi, "layer", top_n=1)
    assert table["category"].tolist() == ["colour names", "mass margin|mass shape"]
    assert table["broad_category"].tolist() == ["colours", "mass"]
    assert table["control"].tolist() == [True, False]


def _published_workbook(path: Path) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    anatomy = book.create_sheet(" Anatomy")  # a leading space, as in the published workbook
    anatomy.append(["Structures", "Tissue"])
    for row in (["nipple", "fat"], ["pectoral muscle", None], [None, None], ["skin", None]):
        anatomy.append(row)
    findings = book.create_sheet("Findings ")
    findings.append(["Nipple changes", "Mass"])
    findings.append(["Nipple", "oval mass"])  # the same concept, another category
    findings.append([None, 3])
    book.save(path)


@pytest.mark.parametrize(
    ("rule", "category", "broad"),
    [
        ("first", "Structures", "Anatomy"),
        ("last", "Nipple changes", "Findings"),
        ("multi", "Structures|Nipple changes", "Anatomy|Findings"),
    ],
)
def test_published_workbook_layout_under_each_duplicate_rule(tmp_path, rule, category, broad):
    path = tmp_path / "concepts.xlsx"
    _published_workbook(path)
    concepts = C.load(path, duplicates=rule)
    assert concepts.concepts == ("nipple", "pectoral muscle", "skin", "fat", "oval mass", "3")
    assert (concepts.category[0], concepts.broad_category[0]) == (category, broad)
    assert concepts.category[3:5] == ("Tissue", "Mass")
    assert concepts.broad_category[1:] == ("Anatomy",) * 3 + ("Findings",) * 2
    assert concepts.control == (None,) * 6
    notes = concepts.describe()
    assert notes["duplicates"]["rule"] == rule and notes["duplicates"]["affected"] == 1
    assert notes["duplicates"]["case_or_space"] == 1 and notes["blank_lines_skipped"] == 1


def test_nested_yaml_and_json_layouts(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "findings:\n  control: false\n  masses: [oval mass, round mass]\n"
        "other:\n  control: [x ray]\n"  # a category that happens to be called control
        "objects: [chair, '42', 7]\n"
    )
    fields = [e[:4] for e in C.load(path).entries()]
    assert fields == [
        ("oval mass", "masses", "findings", False),
        ("round mass", "masses", "findings", False),
        ("x ray", "control", "other", None),
        ("chair", None, "objects", None),
        ("42", None, "objects", None),
        ("7", None, "objects", None),
    ]
    (tmp_path / "flat.json").write_text(json.dumps(["a", "b", 7]))
    assert C.load(tmp_path / "flat.json").concepts == ("a", "b", "7")


# --- validation -------------------------------------------------------------------------------


def test_blank_lines_are_counted_and_duplicates_warned(tmp_path, caplog):
    path = tmp_path / "c.txt"
    path.write_text("# header\nmass\n\n  \nMass\nspiculated   margin\nmass\nspiculated margin\n")
    with caplog.at_level(logging.WARNING, logger="mammodissect"):
        concepts = C.load(path)
    assert concepts.concepts == ("mass", "spiculated margin")
    notes = concepts.describe()
    assert notes["blank_lines_skipped"] == 2
    assert notes["duplicates"] | {"examples": []} == {
        "rule": "first",
        "affected": 2,
        "exact": 2,
        "case_or_space": 1,
        "multi_label": 0,
        "examples": [],
    }
    message = caplog.text
    assert "2 concepts listed more than once" in message
    assert "'Mass' (line 5) repeats 'mass' (line 2)" in message


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.txt", "# only comments\n\n", "is empty"),
        ("empty.csv", "concept,category\n,\n", "is empty"),
        ("empty.yaml", "{}\n", "is empty"),
        ("latin.txt", b"mass\ncalcific\xe9ation\n", "byte 0xe9 on line 2, column 9 (offset 13)"),
        ("nohead.csv", "mass,findings\n", "has no 'concept' column"),
        ("flag.csv", "concept,control\nmass,maybe\n", "flag.csv row 2: control 'maybe'"),
        ("bool.yaml", "a:\n  b: [yes, mass]\n", "a / b item 1 is True"),
        ("broken.yaml", "a: [b\n", "is not valid YAML"),
        ("broken.json", "[1,", "is not valid JSON"),
        ("sheet.xlsx", b"not a zip", "cannot be read as .xlsx"),
        ("old.xls", b"", "save the workbook as .xlsx"),
    ],
)
def test_bad_files_have_clear_messages(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(MammodissectError) as info:
        C.load(path)
    assert message in str(info.value) and name in str(info.value)


def test_unknown_names_rules_and_paths(tmp_path, everything):
    with pytest.raises(MammodissectError, match=r"'birad' not found \(did you mean 'birads'\?\)"):
        C.load("birad")
    with pytest.raises(MammodissectError, match="duplicates rule 'both' unknown; choose one of"):
        C.load("birads", duplicates="both")
    with pytest.raises(MammodissectError, match=r"category 'mass margins' .*did you mean"):
        C.filter_set(everything, category=["mass margins"])
    with pytest.raises(MammodissectError, match=r"known: 'breast composition', 'mass'"):
        C.filter_set(everything, broad="masses")
    with pytest.raises(MammodissectError, match="cannot tell the format"):
        C.write(everything, tmp_path / "x.doc")
    plain = C.load(["a", "b"])
    with pytest.raises(MammodissectError, match="a workbook needs a broad category"):
        C.write(plain, tmp_path / "x.xlsx")
    with pytest.raises(MammodissectError, match="starts with '#'"):
        C.write(C.load(["#1 finding"]), tmp_path / "x.txt")
    with pytest.raises(MammodissectError, match="the filter left no concept"):
        C.filter_set(C.load("controls"), controls=False)


def test_filter_merge_and_summary(everything):
    picked = C.filter_set(everything, broad="Asymmetries", category=["skin lesion"])
    assert set(picked.broad_category) == {"asymmetries", "other findings"}
    assert len(picked) == 17 + 8 and picked.concepts[0] == "asymmetry"
    assert len(C.filter_set(everything, controls=False)) == len(C.load("birads"))
    merged = C.merge([C.load(["mass", "red"]), C.load(["RED", "wood"])], duplicates="last")
    assert merged.concepts == ("mass", "red", "wood")
    counts = C.summary(everything)
    assert counts["count"].sum() == len(everything)
    assert list(counts.columns) == ["broad_category", "category", "control", "count"]


# --- prompts and the strings sent to the dissector ----------------------------------------------


class FakeDissector:
    """encode_texts: a fixed random unit vector per string; counts calls."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode_texts(self, texts):
        self.calls.append(list(texts))
        return torch.stack([self.vector(t) for t in texts])

    @staticmethod
    def vector(text: str) -> torch.Tensor:
        seed = sum(ord(ch) * (i + 1) for i, ch in enumerate(text))
        return F.normalize(torch.randn(8, generator=torch.Generator().manual_seed(seed)), dim=0)


def test_prompt_templates_are_averaged_in_embedding_space():
    fake = FakeDissector()
    prompts = ["a mammogram showing {}", "{} on a mammogram", "{}"]
    texts, sent = C.encode_concepts(fake, ["Oval Mass", "fat"], prompts, lowercase=True)
    assert sent == [
        ["a mammogram showing oval mass", "oval mass on a mammogram", "oval mass"],
        ["a mammogram showing fat", "fat on a mammogram", "fat"],
    ]
    assert len(fake.calls) == 3
    for row, strings in zip(texts, sent, strict=True):
        mean = torch.stack([fake.vector(s) for s in strings]).mean(dim=0)
        torch.testing.assert_close(row, mean / mean.norm())
    plain, sent = C.encode_concepts(fake, C.load(["Oval Mass"]))
    assert sent == [["Oval Mass"]] and torch.equal(plain[0], fake.vector("Oval Mass"))
    with pytest.raises(MammodissectError, match="needs exactly one {}"):
        C.encode_concepts(fake, ["x"], ["a mammogram"])
    with pytest.raises(MammodissectError, match="needs exactly one {}"):
        RunConfig(target="t:x", dissector="d:y", probe="p", concepts="c", layers="l", prompts="x")
    config = RunConfig(
        target="t:x", dissector="d:y", probe="p", concepts="c", layers="l", prompts="a {}"
    )
    assert config.prompts == ["a {}"] and config.duplicates == "first" and not config.lowercase


def test_text_embeddings_are_cached_by_dissector_identity_and_exact_strings(tmp_path, caplog):
    fake = FakeDissector()
    fake.identity = {"spec": "fake:1", "weights": {"name": "w.pt", "size": 3}}
    prompts = ["a mammogram showing {}", "{}"]
    first, sent = C.encode_concepts(fake, ["Oval Mass", "fat"], prompts, cache_root=tmp_path)
    assert len(fake.calls) == 2 and len(list((tmp_path / "texts").glob("*.npy"))) == 1
    again, sent_again = C.encode_concepts(fake, ["Oval Mass", "fat"], prompts, cache_root=tmp_path)
    assert len(fake.calls) == 2, "the second run must read the cache, not the dissector"
    assert torch.equal(again, first) and sent_again == sent
    # other strings (lower-cased here) or another dissector's weights are computed afresh
    C.encode_concepts(fake, ["Oval Mass", "fat"], prompts, lowercase=True, cache_root=tmp_path)
    assert len(fake.calls) == 4
    fake.identity = {"spec": "fake:1", "weights": {"name": "w.pt", "size": 4}}
    C.encode_concepts(fake, ["Oval Mass", "fat"], prompts, cache_root=tmp_path)
    assert len(fake.calls) == 6 and len(list((tmp_path / "texts").glob("*.npy"))) == 3

    # a subclass that embeds differently under the same identity is not served the parent's
    class Shuffled(FakeDissector):
        def encode_texts(self, texts):
            return super().encode_texts(list(reversed(texts)))

    other = Shuffled()
    other.identity = dict(fake.identity)
    moved, _ = C.encode_concepts(other, ["Oval Mass", "fat"], prompts, cache_root=tmp_path)
    assert len(other.calls) == 2 and not torch.equal(moved, first)
    # a damaged file is computed and written again, with a warning
    fake.identity = {"spec": "fake:1", "weights": {"name": "w.pt", "size": 3}}
    for path in (tmp_path / "texts").glob("*.npy"):
        path.write_bytes(b"not an array")  # every file, the subclass's too
    with caplog.at_level(logging.WARNING):
        repaired, _ = C.encode_concepts(fake, ["Oval Mass", "fat"], prompts, cache_root=tmp_path)
    assert "unreadable" in caplog.text and torch.equal(repaired, first)
    assert len(fake.calls) == 8


def test_dissectors_without_an_identity_are_never_cached(tmp_path):
    fake = FakeDissector()  # a Python object the user built: nothing says which weights it has
    for _ in range(2):
        C.encode_concepts(fake, ["fat"], cache_root=tmp_path)
    assert len(fake.calls) == 2 and not (tmp_path / "texts").exists()


def test_run_records_strings_and_writes_categories(planted_probe, tmp_path):
    concepts = tmp_path / "planted.csv"
    rows = [f"Planted Feature {j},feature {j},planted,false" for j in range(planted.N_FEATURES)]
    rows += ["red,colour,controls,true", "wood,material,controls,true", "RED,warm,controls,true"]
    concepts.write_text("concept,category,broad_category,control\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    argv = ["run", "--target", "python:planted:make_target"]
    argv += ["--dissector", "python:planted:make_dissector", "--probe", str(planted_probe)]
    argv += ["--concepts", str(concepts), "--layers", "features", "--out", str(out)]
    argv += [
        "--num-workers",
        "0",
        "--quiet",
        "--batch-size",
        "8",
        "--similarity",
        "soft_wpmi",
        "--similarity-param",
        "top_k=10",
    ]
    argv += ["--lowercase", "--prompt", "{}", "--prompt", "{}", "--duplicates", "multi"]
    assert main(argv) == 0
    neurons = pd.read_csv(out / "neurons.csv")
    best = neurons[neurons["rank"] == 1].sort_values("unit")
    assert best["concept"].tolist() == [f"Planted Feature {j}" for j in range(len(best))]
    assert set(best["category"]) == {f"feature {j}" for j in range(len(best))}
    assert set(best["broad_category"]) == {"planted"} and not best["control"].any()
    red = neurons[neurons["concept"] == "red"]
    assert set(red["category"]) <= {"colour|warm"}
    info = json.loads((out / "run.json").read_text())
    assert info["concept_strings"]["Planted Feature 0"] == ["planted feature 0"] * 2
    assert info["config"]["prompts"] == ["{}", "{}"] and info["config"]["lowercase"] is True
    assert info["concepts"]["duplicates"]["rule"] == "multi"
    assert info["concepts"]["duplicates"]["multi_label"] == 1


# --- the command line -------------------------------------------------------------------------


def test_cli_list_show_convert_merge_filter(capsys, tmp_path):
    assert main(["concepts", "list"]) == 0
    listing = capsys.readouterr().out
    assert "birads+controls" in listing and "mammography" in listing
    assert main(["concepts", "show", "birads"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("birads: ") and "mass margin" in shown
    out = tmp_path / "b.xlsx"
    assert main(["concepts", "convert", "birads", "--out", str(out)]) == 0
    assert C.load(out).entries() == C.load("birads").entries()
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("mass\nred\n")
    b.write_text("Red\nwood\n")
    merged = tmp_path / "m.csv"
    assert main(["concepts", "merge", str(a), str(b), "--out", str(merged)]) == 0
    assert C.load(merged).concepts == ("mass", "red", "wood")
    assert "wrote" in capsys.readouterr().out
    picked = tmp_path / "f.yaml"
    argv = ["concepts", "filter", "birads+controls", "--broad", "calcifications"]
    argv += ["--category", "colour names", "--no-controls", "--out", str(picked)]
    assert main(argv) == 0
    kept = C.load(picked)
    assert set(kept.broad_category) == {"calcifications"} and len(kept) == 82


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["concepts", "show", "nothere.csv"], "concept file 'nothere.csv' not found"),
        (["concepts", "filter", "birads", "--category", "spicules", "--out", "x.csv"], "known:"),
        (["concepts", "convert", "birads", "--out", "x.docx"], "cannot tell the format"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mammodissect: error: ") and message in err[0]


def test_same_finding_groups_hold_birads_strings_once_and_reject_bad_files(tmp_path):
    from mammodissect.concepts.findings import finding_groups, read_findings, same_finding
    from mammodissect.phantom.vocabulary import PHANTOM_CONCEPTS

    groups = finding_groups()
    birads = set(C.load("birads").concepts)
    assert set(groups) <= birads and set(groups.values()) <= set(PHANTOM_CONCEPTS)
    assert all(groups[finding] == finding for finding in groups.values())  # keys are their own
    assert groups["BI-RADS density category D"] == "extremely dense breasts"
    assert same_finding("clustered calcifications", "grouped calcifications")
    # a distribution is not a morphology: "fine linear" calcifications are not "linear" ones
    assert not same_finding("fine linear calcifications", "linear calcifications")
    assert not same_finding("mass", "oval mass") and not same_finding("oval mass", "mass")
    bad = tmp_path / "f.yaml"
    bad.write_text("oval mass: [ovoid mass, egg]\n")
    with pytest.raises(MammodissectError, match="f.yaml: 'egg' is not a concept of the set"):
        read_findings(bad, birads)
    bad.write_text("oval mass: [ovoid mass]\nround mass: [ovoid mass]\n")
    with pytest.raises(MammodissectError, match="'ovoid mass' is in two groups"):
        read_findings(bad, birads)
    bad.write_text("oval mass: ovoid mass\n")
    with pytest.raises(MammodissectError, match="'oval mass' must map to a list of strings"):
        read_findings(bad, birads)
