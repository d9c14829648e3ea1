"""The command line: bad input gives a one-line reason and a non-zero exit; help; layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mammodissect.cli import main

TARGET = "python:planted:make_target"
DISSECTOR = "python:planted:make_dissector"


def args(probe, concepts, **over):
    values = {
        "--target": TARGET,
        "--dissector": DISSECTOR,
        "--probe": str(probe),
        "--concepts": str(concepts),
        "--layers": "features",
        "--num-workers": "0",
    }
    values.update(over)
    out = ["run", "--quiet"]
    for key, value in values.items():
        if value is not None:
            out += [key, value]
    return out


def _error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("mammodissect: error:")]
    assert len(lines) == 1
    return lines[0]


def test_missing_probe(capsys, concept_file, tmp_path):
    line = _error(capsys, args(tmp_path / "nothere", concept_file))
    assert "probe" in line and "nothere" in line and "not found" in line


def test_empty_probe(capsys, concept_file, tmp_path):
    (tmp_path / "empty").mkdir()
    assert "holds no images" in _error(capsys, args(tmp_path / "empty", concept_file))


def test_empty_concept_list(capsys, planted_probe, tmp_path):
    concepts = tmp_path / "none.txt"
    concepts.write_text("# only a comment\n\n   \n")
    assert "is empty" in _error(capsys, args(planted_probe, concepts))


def test_missing_concept_file(capsys, planted_probe, tmp_path):
    line = _error(capsys, args(planted_probe, tmp_path / "c.txt"))
    assert "concept file" in line and "c.txt" in line


def test_unknown_layer_suggests(capsys, planted_probe, concept_file):
    line = _error(capsys, args(planted_probe, concept_file, **{"--layers": "featurs"}))
    assert "'featurs' matches no module" in line and "closest: features" in line


@pytest.mark.parametrize(
    ("flag", "spec", "message"),
    [
        ("--target", "resnet18", "has no scheme"),
        ("--target", "nope:thing", "unknown target scheme 'nope'"),
        ("--dissector", "timm:resnet18", "unknown dissector scheme 'timm'"),
        ("--target", "timm:resnet19", "did you mean"),
    ],
)
def test_wrong_spec(capsys, planted_probe, concept_file, flag, spec, message):
    assert message in _error(capsys, args(planted_probe, concept_file, **{flag: spec}))


def test_unknown_similarity_and_parameter(capsys, planted_probe, concept_file):
    line = _error(capsys, args(planted_probe, concept_file, **{"--similarity": "soft_wmpi"}))
    assert "soft_wmpi" in line and "soft_wpmi" in line
    argv = [
        *args(planted_probe, concept_file),
        "--similarity",
        "soft_wpmi",
        "--similarity-param",
        "topk=3",
    ]
    line = _error(capsys, argv)
    assert "takes no parameter topk" in line and "top_k" in line


def test_missing_required_value(capsys, planted_probe, concept_file):
    assert "missing layers" in _error(
        capsys, args(planted_probe, concept_file, **{"--layers": None})
    )


def test_unknown_config_key(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("batchsize: 3\n")
    line = _error(capsys, ["run", "--config", str(config)])
    assert "unknown key 'batchsize'" in line and "batch_size" in line


def test_bad_number(capsys, planted_probe, concept_file):
    line = _error(capsys, args(planted_probe, concept_file, **{"--top-images": "0"}))
    assert "top_images must be a whole number >= 1" in line


def test_cuda_without_gpu(capsys, planted_probe, concept_file):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert "no GPU is visible" in _error(
        capsys, args(planted_probe, concept_file, **{"--device": "cuda"})
    )


def test_layers_command_lists_names_types_and_shapes(capsys):
    assert main(["layers", "--target", TARGET]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[1:]}
    assert list(rows) == ["stem", "features", "head", "head.fc"]
    assert rows["features"][1:] == ["CellMeans", "1x6x16x24"]
    assert rows["head.fc"][1:] == ["Linear", "1x2"]


def test_layers_command_filters(capsys):
    assert main(["layers", "--target", TARGET, "--layers", "head.*"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in out[1:]] == ["head.fc"]


def test_installed_command_runs_and_fails_cleanly(tmp_path):
    exe = Path(sys.executable).parent / "mammodissect"
    if not exe.exists():
        pytest.skip("package not installed as a command")
    help_text = subprocess.run([exe, "run", "--help"], capture_output=True, text=True, check=True)
    assert "--similarity-param" in help_text.stdout and "--layers" in help_text.stdout
    done = subprocess.run(
        [exe, "layers", "--target", "timm:resnet19"], capture_output=True, text=True
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("mammodissect: error: timm has no")
