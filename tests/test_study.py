"""`mammodissect study`: a study file validated, run, rerun without recomputing, changed and
resumed (issue 19)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import mammodissect
from mammodissect.cli import main
from mammodissect.errors import MammodissectError
from mammodissect.study import load_study, run_study, template

import planted


def _study(tmp_path: Path, probe: Path, concepts: Path, /, **changes: object) -> Path:
    data = {
        "out": str(tmp_path / "study"),
        "dissector": "python:planted:make_dissector",
        "probe": str(probe),
        "concepts": str(concepts),
        "cache_dir": str(tmp_path / "cache"),
        "num_workers": 0,
        "similarity": "soft_wpmi",
        "similarity_params": {"top_k": 10},
        "variants": [
            {
                "name": "G",
                "role": "general",
                "target": "python:planted:make_target",
                "layers": "features",
            },
            {
                "name": "M",
                "role": "mammography",
                "target": "python:planted:make_target",
                "layers": "stem,features",
            },
            {
                "name": "C-feature",
                "role": "finetuned",
                "target": "python:planted:make_classifier",
                "layers": "features,classifier.classification_head",
            },
        ],
        "report": {"cards": 1},
        **changes,
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_study_runs_then_reuses_then_reruns_what_changed(
    tmp_path: Path, planted_probe: Path, concept_file: Path
) -> None:
    path = _study(tmp_path, planted_probe, concept_file)
    first = run_study(path, quiet=True)
    out = tmp_path / "study"
    assert set(first.steps.values()) == {"ran"}
    assert list(first.steps) == [
        "run:G", "report:G", "run:M", "report:M", "run:C-feature", "report:C-feature",
        "compare", "report:compare",
    ]  # fmt: skip
    for name in ("G", "M", "C-feature"):
        assert (out / name / "run.json").is_file() and (out / name / "report.html").is_file()
    compared = json.loads((out / "compare" / "compare.json").read_text())
    assert list(compared["runs"]) == ["G", "M", "C-feature"]
    assert compared["finetune"]["baseline"] == "M" and compared["finetune"]["runs"] == ["C-feature"]
    record = json.loads((out / "study.json").read_text())
    assert set(record["steps"]) == set(first.steps)
    assert str(tmp_path) not in (out / "study.json").read_text()
    # a rerun: nothing recomputed, not one forward pass
    calls = dict(planted.CALLS)
    again = mammodissect.study(path, quiet=True)
    assert set(again.steps.values()) == {"reused"}
    assert planted.CALLS == calls
    # one variant's layers change: that variant, its report and the comparison run again
    data = yaml.safe_load(path.read_text())
    data["variants"][1]["layers"] = "features"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    changed = run_study(path, quiet=True)
    ran = {k for k, v in changed.steps.items() if v == "ran"}
    assert ran == {"run:M", "report:M", "compare", "report:compare"}
    # --only: one variant's steps, the comparison reused
    only = run_study(path, only=["G"], quiet=True)
    assert list(only.steps) == ["run:G", "report:G", "compare", "report:compare"]
    assert set(only.steps.values()) == {"reused"}


def test_an_interrupted_study_resumes_without_redoing_finished_steps(
    tmp_path: Path, planted_probe: Path, concept_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _study(tmp_path, planted_probe, concept_file, report=False)
    import sys

    compare_module = sys.modules["mammodissect.analysis.compare"]

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(compare_module, "compare", broken)
    with pytest.raises(KeyboardInterrupt):
        run_study(path, quiet=True)
    monkeypatch.undo()
    record = json.loads((tmp_path / "study" / "study.json").read_text())
    assert set(record["steps"]) == {"run:G", "run:M", "run:C-feature"}
    calls = planted.CALLS["target"]
    resumed = run_study(path, quiet=True)
    assert resumed.steps == {"run:G": "reused", "run:M": "reused", "run:C-feature": "reused",
                             "compare": "ran"}  # fmt: skip
    assert planted.CALLS["target"] == calls


def _error(tmp_path: Path, planted_probe: Path, concept_file: Path, /, **changes: object) -> str:
    path = _study(tmp_path, planted_probe, concept_file, **changes)
    with pytest.raises(MammodissectError) as err:
        run_study(path, dry_run=True, quiet=True)
    return str(err.value)


def test_validation_errors_name_the_key_its_line_and_the_fix(
    tmp_path: Path, planted_probe: Path, concept_file: Path
) -> None:
    message = _error(tmp_path, planted_probe, concept_file, dissctor="phantom-clip")
    assert message.startswith("study.yaml:") and "unknown key 'dissctor'" in message
    assert "did you mean 'dissector'?" in message
    lines = (tmp_path / "study.yaml").read_text().splitlines()
    line = int(message.split(":")[1])
    assert lines[line - 1].startswith("dissctor:")
    variant = {"name": "X", "role": "general", "target": "python:planted:make_target",
               "layers": "features", "pooling": "mean"}  # fmt: skip
    cases = [
        ({"variants": [{**variant, "layres": "x"}]}, "unknown key 'layres'; did you mean"),
        ({"variants": [{**variant, "role": "baseline"}]}, "role 'baseline' unknown; use general"),
        ({"variants": [variant, variant]}, "variant name 'X' is used twice"),
        ({"variants": [{**variant, "name": "../X"}]}, "must be letters, digits"),
        ({"variants": [{**variant, "pooling": "median"}]}, "pooling 'median' unknown"),
        ({"variants": []}, "variants must be a list of at least one variant"),
        ({"probe": str(tmp_path / "nowhere.csv")}, "probe file"),
        ({"variants": [{**variant, "target": "classifier:" + str(tmp_path / "c.safetensors")}]},
         "does not exist"),
        ({"variants": [{**variant, "layers": "featurez"}]},
         "variant 'X': layer 'featurez' matches no module"),
        ({"evaluate": {"null_seed": 3}}, "unknown key 'null_seed'; did you mean 'null_seeds'?"),
        ({"compare": "yes"}, "compare must be true, false or a mapping"),
    ]  # fmt: skip
    for changes, expected in cases:
        assert expected in _error(tmp_path, planted_probe, concept_file, **changes), expected
    with pytest.raises(MammodissectError, match="study file .* not found"):
        load_study(tmp_path / "missing.yaml")


def test_dry_run_plans_without_running(
    tmp_path: Path, planted_probe: Path, concept_file: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _study(tmp_path, planted_probe, concept_file)
    calls = planted.CALLS["target"]
    assert main(["study", str(path), "--dry-run", "--evaluate"]) == 0
    printed = capsys.readouterr().out
    assert "run:G: planned, 1 layers" in printed and "run:M: planned, 2 layers" in printed
    assert "evaluate:C-feature: planned" in printed and "nothing run" in printed
    assert not (tmp_path / "study").exists() and planted.CALLS["target"] == calls


def test_templates_parse_and_report_their_placeholders_as_missing_files(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["study", "--template", "mammoclip"]) == 0
    text = capsys.readouterr().out
    assert text == template("mammoclip")
    path = tmp_path / "study.yaml"
    path.write_text(text)
    with pytest.raises(MammodissectError, match=r"study.yaml:\d+: .*'/path/to/.*' does not exist"):
        load_study(path)
    # the phantom template is the demo's study: valid once its probe exists
    data = yaml.safe_load(template("phantom"))
    probe = tmp_path / "probe"
    planted.write_probe(probe, n=4)
    study = load_study({**data, "probe": str(probe)}, out=tmp_path / "demo")
    assert study.names == ["G", "M", "C-density", "C-mass", "C-calcification", "C-birads"]
    assert [v.role for v in study.variants][:3] == ["general", "mammography", "finetuned"]
    assert study.compare == {} and study.report == {"cards": 3, "card_images": 3}


def test_the_demo_is_the_phantom_template_study(tmp_path: Path) -> None:
    from mammodissect.models.spec import parse_spec
    from mammodissect.phantom.demo import demo_study, demo_variants

    shipped = yaml.safe_load(template("phantom"))
    demo = demo_study(tmp_path, tmp_path / "probe" / "manifest.csv", demo_variants())
    for key in ("dissector", "concepts"):
        assert shipped[key] == demo[key]
    assert shipped["report"] == demo["report"]

    def portable(entry: dict) -> dict:
        return {**entry, "target": parse_spec(entry["target"]).portable()}

    assert [portable(v) for v in shipped["variants"]] == [portable(v) for v in demo["variants"]]


def test_a_finetuned_variant_is_built_by_the_study(tmp_path: Path) -> None:
    from mammodissect.phantom import PhantomSettings, generate, write_phantoms

    probe = write_phantoms(
        tmp_path / "probe",
        generate(40, seed=3, settings=PhantomSettings(size=(96, 58), rates={"implant": 0.5})),
    )
    tiny = "python:helpers_models:tiny_cnn?size=96x58"
    data = {
        "out": str(tmp_path / "study"), "dissector": "python:planted:make_dissector",
        "probe": str(probe), "concepts": "birads", "cache_dir": str(tmp_path / "cache"),
        "num_workers": 0, "similarity": "soft_wpmi", "similarity_params": {"top_k": 5},
        "report": False,
        "variants": [
            {"name": "M", "role": "mammography", "target": tiny, "layers": "features.3"},
            {"name": "C-implant", "role": "finetuned",
             "layers": "image_encoder.features.3,classifier.classification_head",
             "finetune": {"model": tiny, "task": "implant", "epochs": 1, "batch_size": 16,
                          "lr": 3e-3}},
        ],
    }  # fmt: skip
    first = run_study(data, quiet=True)
    assert list(first.steps) == ["run:M", "finetune:C-implant", "run:C-implant", "compare"]
    assert set(first.steps.values()) == {"ran"}
    checkpoint = tmp_path / "study" / "finetune" / "C-implant" / "classifier.safetensors"
    assert checkpoint.is_file()
    run = json.loads((tmp_path / "study" / "C-implant" / "run.json").read_text())
    assert [layer["units"] for layer in run["layers"]][-1] == 1  # the binary head
    assert set(run_study(data, quiet=True).steps.values()) == {"reused"}
    # the fine-tuning recipe changes: fine-tuning, its run and the comparison run again
    data["variants"][1]["finetune"]["lr"] = 1e-3
    ran = {k for k, v in run_study(data, quiet=True).steps.items() if v == "ran"}
    assert ran == {"finetune:C-implant", "run:C-implant", "compare"}
    with pytest.raises(MammodissectError, match="remove target"):
        load_study({**data, "variants": [{**data["variants"][1], "target": tiny}]})
    with pytest.raises(MammodissectError, match="finetune needs 'task'"):
        bad = {k: v for k, v in data["variants"][1]["finetune"].items() if k != "task"}
        load_study({**data, "variants": [{**data["variants"][1], "finetune": bad}]})
