"""Bad input as a new user gives it: nothing leaks, nothing is dropped silently (issue 15).

Each case runs the command line as a user would and checks the message it prints.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from mammodissect.analysis.runs import load_run
from mammodissect.cli import main
from mammodissect.errors import MammodissectError
from mammodissect.models.spec import parse_spec
from mammodissect.rundir import DERIVED_FILES, RUN_FILES

import planted

TARGET = "python:planted:make_target"
DISSECTOR = "python:planted:make_dissector"
#: Names a patient-named probe carries in its folder, sub-folder and file names.
PATIENT = ("Doe_Jane", "MRN12345", "Smith_John", "MRN67890", "Roe_Richard", "ACC5544")


def run_args(probe, out, concepts, *extra, target=TARGET, layers="features"):
    return [
        "run", "--target", target, "--dissector", DISSECTOR, "--probe", str(probe),
        "--concepts", str(concepts), "--layers", layers, "--out", str(out),
        "--num-workers", "0", "--batch-size", "8",
        "--similarity", "soft_wpmi", "--similarity-param", "top_k=5", *extra,
    ]  # fmt: skip


def _one_error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("mammodissect: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture()
def patient_probe(tmp_path) -> Path:
    """The planted probe under a patient-like folder, sub-folder and file names, with one
    file that is not an image."""
    flat = tmp_path / "flat"
    planted.write_probe(flat, n=24)
    root = tmp_path / "Doe_Jane_MRN12345"
    for i, path in enumerate(sorted(flat.iterdir())):
        folder = root / ("Smith_John_MRN67890" if i % 2 else "ACC5544")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.move(path, folder / f"Roe_Richard_{i:04d}.png")
    (root / "ACC5544" / "Roe_Richard_broken.png").write_bytes(b"not a png")
    return root


def _leaks(folders: list[Path]) -> list[tuple[str, str]]:
    """(file, name) for every patient name found in the bytes of any file under ``folders``."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [(str(path), name) for name in PATIENT if name.encode() in data]
    return found


# 1 ---------------------------------------------------------------------------------------


def test_anonymized_outputs_carry_no_part_of_the_probe_names(
    patient_probe, concept_file, tmp_path, capsys
):
    runs = tmp_path / "runs"
    for name, similarity in (("G", "soft_wpmi"), ("M", "cos_similarity")):
        argv = run_args(patient_probe, runs / name, concept_file, "--anonymize-ids", "--quiet")
        argv = [
            a
            for a in argv
            if a not in ("--similarity", "soft_wpmi", "--similarity-param", "top_k=5")
        ]
        assert main([*argv, "--similarity", similarity]) == 0
    assert main(["report", str(runs / "G"), "--probe", str(patient_probe), "--quiet"]) == 0
    assert main([
        "evaluate", str(runs / "G"), "--probe", str(patient_probe), "--noise", "none",
        "--stability-reps", "2", "--bootstrap", "50", "--null-seeds", "1", "--quiet",
    ]) == 0  # fmt: skip
    assert main(["compare", str(runs / "G"), str(runs / "M"), "--out", str(runs / "cmp")]) == 0
    assert main(["report", str(runs / "cmp"), "--quiet"]) == 0
    assert main(["summary", str(runs / "M")]) == 0
    capsys.readouterr()
    written = {p.name for p in (runs / "G").iterdir()}
    assert {"report.html", "evaluation.json", "images.csv", "run.json"} <= written
    assert _leaks([runs]) == []
    info = json.loads((runs / "G" / "run.json").read_text())
    assert info["config"]["probe"] == "<anonymized>"
    assert [s["image"][:4] for s in info["skipped"]] == ["img-"]  # the broken file, by pseudonym
    assert "<name>" in info["skipped"][0]["reason"]


def test_anonymized_manifest_labels_and_left_out_rows(tmp_path, concept_file):
    root = tmp_path / "Doe_Jane_MRN12345"
    planted.write_probe(root / "Smith_John_MRN67890", n=12)
    rows = ["image_id,path,patient_id,mask_path,note"]
    for i in range(12):
        rel = f"Smith_John_MRN67890/img{i:03d}.png"
        rows.append(f"Roe_Richard_{i},{rel},MRN12345,masks/Roe_Richard_{i}.png,seen in {rel}")
    rows.append("Roe_Richard_0,Smith_John_MRN67890/img000.png,MRN12345,x.png,repeat")
    rows.append("Roe_Richard_gone,Smith_John_MRN67890/gone.png,MRN12345,x.png,missing")
    (root / "ACC5544.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    assert main([*run_args(root / "ACC5544.csv", out, concept_file, "--anonymize-ids")]) == 0
    assert _leaks([out]) == []
    images = pd.read_csv(out / "images.csv")
    assert "mask_path" not in images and images["patient_id"].str.startswith("img-").all()
    assert images["note"].tolist() == ["seen in <name>/<name>"] * 12
    info = json.loads((out / "run.json").read_text())
    assert info["counts"]["images_skipped"] == 1 and info["counts"]["rows_dropped"] == 1
    assert (
        info["skipped"][0]["reason"]
        == "manifest '<name>' data row 14 (line 15): file does not exist"
    )


# 2 ---------------------------------------------------------------------------------------


def test_two_files_under_one_image_id_is_an_error_naming_both_rows(
    planted_probe, concept_file, tmp_path, capsys
):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        f"image_id,path\nA,{planted_probe / 'img000.png'}\nB,{planted_probe / 'img001.png'}\n"
        f"A,{planted_probe / 'img002.png'}\n"
    )
    line = _one_error(capsys, run_args(manifest, tmp_path / "run", concept_file, "--quiet"))
    assert "manifest 'm.csv' data rows 1 and 3 give image_id 'A' to two different files" in line
    assert "img000.png" in line and "img002.png" in line and "own image_id" in line


def test_a_repeated_row_is_dropped_and_recorded(planted_probe, concept_file, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    first, second = planted_probe / "img000.png", planted_probe / "img001.png"
    manifest.write_text(f"image_id,path\nA,{first}\nB,{second}\nA,{first}\n")
    assert main(run_args(manifest, tmp_path / "run", concept_file, "--quiet")) == 0
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["warnings"][0] == (
        "manifest 'm.csv': dropped 1 row(s) repeating an image already listed (kept the first): "
        f"data row 3 (line 4) '{os.path.relpath(first, tmp_path)}'"
    )
    assert info["counts"]["images"] == 2 and info["counts"]["rows_dropped"] == 1
    assert info["dropped_rows"] == [
        {
            "image": os.path.relpath(first, tmp_path),
            "reason": "manifest 'm.csv' data row 3 (line 4): repeats data row 1 (same image_id "
            "and file)",
        }
    ]


# 3 ---------------------------------------------------------------------------------------


def test_a_rerun_replaces_every_output_of_the_earlier_run(
    planted_probe, concept_file, tmp_path, capsys
):
    out = tmp_path / "run"
    assert main(run_args(planted_probe, out, concept_file, "--quiet")) == 0
    assert main(["report", str(out), "--quiet"]) == 0
    assert main(["evaluate", str(out), "--noise", "none", "--stability-reps", "2"]) == 0
    (out / "boxes.csv").write_text("image_id,finding\n")  # as a probe with boxes would leave
    (out / "notes.txt").write_text("mine")
    other = tmp_path / "other.txt"
    other.write_text("red\nwood\n")
    assert main(run_args(planted_probe, out, other, "--quiet")) == 0
    left = {p.name for p in out.iterdir()}
    assert left.isdisjoint(DERIVED_FILES) and "boxes.csv" not in left
    assert left == {*RUN_FILES, "notes.txt"} - {"boxes.csv", "detectability.csv"}  # yours stay
    assert set(pd.read_csv(out / "neurons.csv")["concept"]) == {"red", "wood"}


# 4 and 5 ---------------------------------------------------------------------------------


def test_strict_judges_skips_the_cache_recorded_earlier(
    planted_probe, concept_file, tmp_path, capsys
):
    probe = tmp_path / "probe"
    shutil.copytree(planted_probe, probe)
    (probe / "zz-broken.png").write_bytes(b"\x89PNG but cut")
    assert main(run_args(probe, tmp_path / "a", concept_file, "--quiet")) == 0
    calls = planted.CALLS["target"]
    line = _one_error(capsys, run_args(probe, tmp_path / "b", concept_file, "--strict"))
    assert "cannot use probe image 'zz-broken.png'" in line and "--strict" in line
    assert "earlier run without --strict" in line
    assert planted.CALLS["target"] == calls  # judged from the cache: no forward pass


def test_missing_manifest_file_is_skipped_and_fatal_only_under_strict(
    planted_probe, concept_file, tmp_path, capsys
):
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        f"path\n{planted_probe / 'img000.png'}\n{planted_probe / 'img001.png'}\nsub/gone.png\n"
    )
    line = _one_error(capsys, run_args(manifest, tmp_path / "s", concept_file, "--strict"))
    assert line == (
        "mammodissect: error: manifest 'm.csv' data row 3 (line 4): listed image 'sub/gone.png': "
        "file does not exist (--strict stops at a missing file; 1 in all; without --strict "
        "they are skipped)"
    )
    assert planted.CALLS["target"] == 0  # before any forward pass
    assert main(run_args(manifest, tmp_path / "run", concept_file)) == 0
    printed = capsys.readouterr()
    assert "skipped 1 unreadable images" in printed.out and "sub/gone.png" in printed.out
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["skipped"] == [
        {"image": "sub/gone.png", "reason": "manifest 'm.csv' data row 3 (line 4): file does "
         "not exist"}
    ]  # fmt: skip
    assert info["counts"]["images_used"] == 2 and info["counts"]["images_skipped"] == 1
    # the query on the plain path is an option, not part of the file name
    line = _one_error(capsys, run_args(f"{manifest}?missing=error", tmp_path / "e", concept_file))
    assert "data row 3 (line 4): listed image 'sub/gone.png' does not exist" in line


# 6 ---------------------------------------------------------------------------------------


def _command(*argv: str, **env: str) -> subprocess.CompletedProcess:
    """``mammodissect ARGV`` in a process of its own (its logging set up as a user's is)."""
    tests = str(Path(__file__).parent)
    extra = {"PYTHONPATH": os.pathsep.join([tests, os.environ.get("PYTHONPATH", "")]), **env}
    code = "import sys; from mammodissect.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True,
        env={**os.environ, **extra},
    )  # fmt: skip


def test_quiet_keeps_warnings_and_run_json_keeps_them_too(planted_probe, concept_file, tmp_path):
    manifest = tmp_path / "m.csv"
    image = planted_probe / "img000.png"
    manifest.write_text(f"path\n{image}\n{image}\n{planted_probe / 'img001.png'}\ngone.png\n")
    done = _command(*run_args(manifest, tmp_path / "run", concept_file, "--quiet"))
    assert done.returncode == 0, done.stderr
    assert "mammodissect: WARNING: manifest 'm.csv': dropped 1 row(s)" in done.stderr
    assert "mammodissect: WARNING: manifest 'm.csv': 1 listed image file(s) not found" in (
        done.stderr
    )
    assert "recording" not in done.stderr and "INFO" not in done.stderr  # no bars, no info
    warned = json.loads((tmp_path / "run" / "run.json").read_text())["warnings"]
    assert any("dropped 1 row(s)" in w for w in warned)
    assert any("1 listed image file(s) not found" in w for w in warned)
    assert all(str(tmp_path) not in w for w in warned)


# 7 ---------------------------------------------------------------------------------------


def test_an_output_folder_that_cannot_be_made_fails_before_any_forward_pass(
    planted_probe, concept_file, tmp_path, capsys
):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = _one_error(capsys, run_args(planted_probe, blocker / "run", concept_file))
    assert f"cannot create output folder '{blocker / 'run'}'" in line
    assert "choose another --out" in line
    assert planted.CALLS["target"] == 0 and planted.CALLS["dissector_images"] == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_fails_before_any_forward_pass(
    planted_probe, concept_file, tmp_path, capsys
):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    line = _one_error(capsys, run_args(planted_probe, locked, concept_file))
    assert f"cannot write in output folder '{locked}'" in line
    assert planted.CALLS["target"] == 0


# 8 ---------------------------------------------------------------------------------------


def test_an_exception_inside_user_code_is_one_line_naming_the_spec(
    planted_probe, concept_file, tmp_path, capsys
):
    factory = tmp_path / "factory.py"
    factory.write_text(
        "def build(**kw):\n    raise ValueError('no such depth: 7')\n\n"
        "def transform(**kw):\n    raise KeyError('size')\n"
    )
    target = f"python:{factory}:build"
    line = _one_error(capsys, run_args(planted_probe, tmp_path / "r", concept_file, target=target))
    assert line == (
        "mammodissect: error: target factory 'python:factory.py:build' raised ValueError: no "
        "such depth: 7 (rerun with -v for the traceback)"
    )
    assert main(["-v", *run_args(planted_probe, tmp_path / "r", concept_file, target=target)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and 'factory.py", line 2, in build' in err
    argv = run_args(planted_probe, tmp_path / "r", concept_file, "--preprocess")
    line = _one_error(capsys, [*argv, f"python:{factory}:transform"])
    assert "preprocess factory 'python:factory.py:transform' raised KeyError: 'size'" in line
    broken = tmp_path / "broken.py"
    broken.write_text("def build(:\n")
    target = f"python:{broken}:build"
    line = _one_error(capsys, run_args(planted_probe, tmp_path / "r", concept_file, target=target))
    assert "loading 'python:broken.py:build' raised SyntaxError: invalid syntax" in line


# 9 ---------------------------------------------------------------------------------------


def _tiny_weights(path: Path) -> Path:
    from mammodissect.models import load_target

    torch.manual_seed(1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(load_target("timm:test_resnet").module.state_dict(), path)
    return path


def test_a_finished_run_finds_its_models_again(planted_probe, concept_file, tmp_path, capsys):
    weights = _tiny_weights(tmp_path / "runs" / "weights" / "tiny.pth")
    target = f"timm:test_resnet?weights={weights}"
    out = tmp_path / "runs" / "R"
    argv = run_args(planted_probe, out, concept_file, "--quiet", target=target, layers="layer1")
    assert main(argv) == 0
    info = json.loads((out / "run.json").read_text())
    # near the run directory: recorded relative to it, never absolute
    assert info["config"]["target"] == "timm:test_resnet?weights=rundir:../weights/tiny.pth"
    assert str(tmp_path) not in (out / "run.json").read_text()
    config = load_run(out).stored_config()
    assert Path(parse_spec(config.target).options["weights"]).resolve() == weights.resolve()
    assert main(["report", str(out), "--probe", str(planted_probe), "--quiet"]) == 0

    # far from it: by name and content fingerprint; the user names it again
    far = _tiny_weights(tmp_path / "elsewhere" / "deep" / "tiny.pth")
    far_out = tmp_path / "runs" / "nested" / "F"
    target = f"timm:test_resnet?weights={far}"
    argv = run_args(planted_probe, far_out, concept_file, "--quiet", target=target, layers="layer1")
    assert main(argv) == 0
    info = json.loads((far_out / "run.json").read_text())
    assert info["config"]["target"] == "timm:test_resnet?weights=tiny.pth"
    assert len(info["target"]["files"]["weights"]["sha256"]) == 64
    line = _one_error(capsys, ["report", str(far_out), "--probe", str(planted_probe)])
    assert "used the target file 'tiny.pth', which run.json names without its folder" in line
    assert "give the target again with its path: --target" in line
    other = _tiny_weights(tmp_path / "other.pth")
    with torch.no_grad():
        state = torch.load(other)
        state[next(iter(state))] += 1
        torch.save(state, other)
    line = _one_error(capsys, [
        "report", str(far_out), "--probe", str(planted_probe),
        "--target", f"timm:test_resnet?weights={other}",
    ])  # fmt: skip
    assert "the weights file 'other.pth' given with --target is not the file run 'F' used" in line
    again = ["--target", f"timm:test_resnet?weights={far}"]
    assert main(["report", str(far_out), "--probe", str(planted_probe), *again, "--quiet"]) == 0


def test_bundled_and_packaged_models_are_recorded_by_reference(tmp_path):
    from mammodissect.phantom.demo import demo_variants

    specs = {v.name: parse_spec(v.target).portable(tmp_path / "G") for v in demo_variants()}
    assert specs["M"] == "phantom-clip" and specs["C-mass"] == "phantom-c-mass"
    assert specs["G"].startswith("efficientnet:efficientnet-lite0?weights=pkg:efficientnet_lite0")
    assert Path(parse_spec(specs["G"]).options["weights"]).is_file()  # resolved again
    with pytest.raises(MammodissectError, match="Python package 'no_such_pkg', which is not"):
        parse_spec("timm:resnet18?weights=pkg:no_such_pkg/w.pth")


# 10 --------------------------------------------------------------------------------------


def test_a_concept_longer_than_the_text_context_is_named_once(caplog):
    from mammodissect.concepts import ConceptSet, encode_concepts
    from mammodissect.models import load_dissector

    dissector = load_dissector("phantom-clip")
    long = "mass with " + "an irregular and spiculated margin " * 12
    with caplog.at_level(logging.WARNING, logger="mammodissect"):
        encode_concepts(dissector, ConceptSet.from_strings(["mass", long]))
    warned = [r.getMessage() for r in caplog.records if "text context" in r.getMessage()]
    assert len(warned) == 1
    assert (
        "1 concept string(s) are longer than the dissector's text context of 64 tokens"
        in (warned[0])
    )
    assert "'mass with an irregular and spiculated margin an irregular an..." in warned[0]
    assert dissector.count_tokens(["mass"]) == [3]


def test_a_manifest_that_is_not_utf8_names_the_line_and_the_fix(tmp_path, concept_file, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"path,site\nimg.png,Malm\xf6\n")
    line = _one_error(capsys, run_args(manifest, tmp_path / "run", concept_file))
    assert "manifest 'm.csv' is not UTF-8 text: byte 0xf6 on line 2, column 13" in line
    assert "save the file as UTF-8" in line


def test_a_file_that_is_no_checkpoint_says_so(planted_probe, concept_file, tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(2048).replace(b"PK", b"pk").lstrip(b"\x80") + b"x")
    line = _one_error(capsys, ["layers", "--target", f"timm:test_resnet?weights={junk}"])
    assert "weights file 'junk.pth' is not a checkpoint" in line
    assert "weights_only" not in line and "trust" not in line


def test_the_resume_line_says_where_the_pass_resumed(planted_probe, concept_file, tmp_path):
    argv = run_args(planted_probe, tmp_path / "run", concept_file, "--quiet")
    cache = {"MAMMODISSECT_CACHE_DIR": str(tmp_path / "cache")}
    assert _command(*argv, PLANTED_FAIL_AT="3", **cache).returncode == 130
    done = _command(*run_args(planted_probe, tmp_path / "run", concept_file, "-v"), **cache)
    assert done.returncode == 0, done.stderr
    assert "resumed target cache from image 17 of 40" in done.stderr  # 2 batches of 8 were kept
    assert "of 40 of 40" not in done.stderr


def test_run_help_marks_required_flags_and_shows_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    shown = capsys.readouterr().out
    assert "Required: --target, --dissector, --probe, --concepts, --layers" in shown
    assert shown.count("(required)") == 5
    assert "example:\n  mammodissect run --target phantom-clip" in shown


def test_verbose_goes_before_or_after_the_sub_command(capsys):
    for argv in (
        ["-v", "concepts", "list"],
        ["concepts", "list", "-v"],
        ["concepts", "-v", "list"],
    ):
        assert main(argv) == 0
        assert logging.getLogger().level == logging.INFO
    assert main(["concepts", "list"]) == 0
    assert logging.getLogger().level == logging.WARNING
    capsys.readouterr()
