"""Recording over two CPU processes (torchrun, gloo) gives exactly the single-process result;
precision and channels-last settings, validation and label parity."""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammodissect import dissect
from mammodissect.api import parity_run
from mammodissect.cli import main
from mammodissect.config import RunConfig
from mammodissect.distributed import merge_tops, shard_rows
from mammodissect.errors import MammodissectError
from mammodissect.models import ImagePreprocess, Target
from mammodissect.precision import check_precision, label_parity
from mammodissect.topk import RunningTopK

import planted
from helpers_models import tiny_cnn

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
TARGET = "python:planted:make_target"
DISSECTOR = "python:planted:make_dissector"
OUTPUTS = ("neurons.csv", "top_images.csv", "images.csv")


def _args(probe: Path, concepts: Path, out: Path, batch: int) -> list[str]:
    return [
        "run", "--target", TARGET, "--dissector", DISSECTOR, "--probe", str(probe),
        "--concepts", str(concepts), "--layers", "features,head", "--out", str(out),
        "--num-workers", "0", "--quiet", "--batch-size", str(batch),
        "--similarity", "soft_wpmi", "--similarity-param", "top_k=5", "--top-images", "3",
        "--device", "cpu",
    ]  # fmt: skip


def torchrun(args: list[str], cache: Path, **env: str) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node 2 -m mammodissect ...`` on CPU."""
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), str(SRC), os.environ.get("PYTHONPATH", "")]),
        "MAMMODISSECT_CACHE_DIR": str(cache),
        "OMP_NUM_THREADS": "1",
        **env,
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "mammodissect", *args]
    return subprocess.run(command, env=environ, capture_output=True, text=True, timeout=120)


def single(args: list[str], cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMMODISSECT_CACHE_DIR", str(cache))
    assert main(args) == 0


def assert_same_outputs(a: Path, b: Path) -> None:
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_shards_are_contiguous_whole_batches_covering_the_probe():
    for n, batch, world in [(40, 8, 2), (13, 4, 2), (3, 4, 2), (101, 7, 3), (5, 1, 4)]:
        shards = [shard_rows(n, batch, r, world) for r in range(world)]
        assert shards[0][0] == 0 and shards[-1][1] == n
        for (_, hi), (lo, _) in itertools.pairwise(shards):
            assert hi == lo and lo % batch == 0


def test_merged_top_k_breaks_ties_as_one_process_does():
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 4, size=(23, 5)).astype(np.float32)  # many ties
    rows = np.arange(23)
    whole = RunningTopK.from_matrix(matrix, 6, rows)
    parts = [RunningTopK.from_matrix(matrix, 6, rows[lo:hi]) for lo, hi in [(0, 8), (8, 16)]]
    parts.append(None)  # a rank with no rows
    parts.append(RunningTopK.from_matrix(matrix, 6, rows[16:]))
    merged = merge_tops(parts, 6)
    assert torch.equal(merged.values, whole.values)
    assert torch.equal(merged.indices, whole.indices)


def test_two_processes_give_exactly_the_single_process_outputs(
    planted_probe, concept_file, tmp_path, monkeypatch
):
    args = _args(planted_probe, concept_file, tmp_path / "dist", batch=8)
    done = torchrun(args, tmp_path / "cache-dist")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("dissected") == 1  # rank 0 alone reports
    single(_args(planted_probe, concept_file, tmp_path / "one", 8), tmp_path / "c1", monkeypatch)
    assert_same_outputs(tmp_path / "dist", tmp_path / "one")
    info = json.loads((tmp_path / "dist" / "run.json").read_text())
    assert info["world_size"] == 2 and info["recording"]["rows_recorded"] == 40
    # the shard stores are gone; the full cache is complete and a single process reuses it
    stores = sorted(p.name for p in (tmp_path / "cache-dist" / "target").iterdir())
    assert len(stores) == 1
    rerun = _args(planted_probe, concept_file, tmp_path / "again", 8)
    single(rerun, tmp_path / "cache-dist", monkeypatch)
    again = json.loads((tmp_path / "again" / "run.json").read_text())
    assert again["recording"]["target_cache"] == "reused"
    assert again["fingerprints"] == info["fingerprints"]  # world size is not in them
    assert_same_outputs(tmp_path / "again", tmp_path / "one")


def test_odd_probe_and_a_bad_image_across_uneven_shards(concept_file, tmp_path, monkeypatch):
    probe = tmp_path / "probe"
    planted.write_probe(probe, n=13, seed=3)
    (probe / "img006b.png").write_bytes(b"not a png")  # rank 1's shard: skipped, merged
    args = _args(probe, concept_file, tmp_path / "dist", batch=4)
    done = torchrun(args, tmp_path / "cache-dist")
    assert done.returncode == 0, done.stderr[-3000:]
    single(_args(probe, concept_file, tmp_path / "one", 4), tmp_path / "c1", monkeypatch)
    assert_same_outputs(tmp_path / "dist", tmp_path / "one")
    info = json.loads((tmp_path / "dist" / "run.json").read_text())
    assert info["counts"]["images_skipped"] == 1 and info["counts"]["images"] == 14


def test_interrupted_distributed_run_is_never_reused_half_written(
    planted_probe, concept_file, tmp_path, monkeypatch
):
    args = _args(planted_probe, concept_file, tmp_path / "dist", batch=8)
    cache = tmp_path / "cache"
    broken = torchrun(args, cache, PLANTED_FAIL_AT="2")  # each rank stops in its 2nd batch
    assert broken.returncode != 0
    assert not (tmp_path / "dist" / "neurons.csv").exists()
    # a single process over that cache records everything itself
    single(_args(planted_probe, concept_file, tmp_path / "one", 8), cache, monkeypatch)
    first = json.loads((tmp_path / "one" / "run.json").read_text())["recording"]
    assert first["target_cache"] == "recorded" and first["rows_recorded"] == 40
    # a fresh cache: the interrupted distributed run resumes its shards
    other = tmp_path / "cache2"
    assert torchrun(args, other, PLANTED_FAIL_AT="2").returncode != 0
    done = torchrun(args, other)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = json.loads((tmp_path / "dist" / "run.json").read_text())["recording"]
    assert resumed["rows_recorded"] == 40 - 8 - 8  # each rank had committed one batch
    assert_same_outputs(tmp_path / "dist", tmp_path / "one")


def test_precision_settings_are_checked():
    base = dict(target="t", dissector="d", probe="p", concepts="c", layers="l")
    with pytest.raises(MammodissectError, match="precision 'fp8' unknown"):
        RunConfig(**base, precision="fp8")
    with pytest.raises(MammodissectError, match="'fp16' needs a GPU"):
        RunConfig(**base, precision="fp16", device="cpu")
    with pytest.raises(MammodissectError, match="channels_last must be true or false"):
        RunConfig(**base, channels_last="yes")
    with pytest.raises(MammodissectError, match="'fp16' needs a GPU"):
        check_precision("fp16", "cpu")


def test_bf16_on_cpu_warns_and_parity_counts_changed_labels(
    planted_probe, concept_file, tmp_path, caplog
):
    with caplog.at_level(logging.WARNING, logger="mammodissect.precision"):
        check_precision("bf16", "cpu")
    assert "slower" in caplog.text
    config = RunConfig(
        target=TARGET, dissector=DISSECTOR, probe=str(planted_probe), concepts=str(concept_file),
        layers="features", num_workers=0, quiet=True, batch_size=8, device="cpu",
        similarity="soft_wpmi", similarity_params={"top_k": 10}, precision="bf16",
        cache_dir=str(tmp_path / "c"),
    )  # fmt: skip
    parity = parity_run(config)
    assert parity["units"] == planted.N_FEATURES and parity["precision"] == "bf16"
    assert parity["fraction_changed"] == 0.0  # planted units are unambiguous
    # fp32 and bf16 record into separate caches (precision is in the fingerprint)
    assert len(list((tmp_path / "c" / "target").iterdir())) == 2


def test_label_parity_counts_units_whose_top_concept_moved():
    def table(*ranks):
        return pd.DataFrame(
            {"layer": "l", "unit": unit, "rank": rank, "concept": concept, "score": 1.0}
            for rank, labels in enumerate(ranks, 1)
            for unit, concept in enumerate(labels)
        )

    reference = table(["a", "b", "c", "d"])
    # unit 1 and unit 2 move; unit 1's old label is second in the other run, unit 2's is gone
    other = table(["a", "x", "y", "d"], ["z", "b", "w", "a"])
    parity = label_parity(reference, other)
    assert parity == {
        "units": 4, "changed": 2, "fraction_changed": 0.5, "fraction_in_top": 0.75, "top": 5,
        "by_layer": {"l": 0.5},
    }  # fmt: skip
    assert label_parity(reference, other, top=1)["fraction_in_top"] == 0.5


def _cnn_target() -> Target:
    torch.manual_seed(0)
    preprocess = ImagePreprocess((32, 48), mean=(0.5,) * 3, std=(0.25,) * 3, channels=3)
    return Target(tiny_cnn(width=8), preprocess, "tiny-cnn", {"tiny": 1})


def test_channels_last_gives_the_same_labels_on_cpu(planted_probe, concept_file, tmp_path):
    options = dict(
        num_workers=0,
        quiet=True,
        batch_size=8,
        device="cpu",
        similarity="soft_wpmi",
        similarity_params={"top_k": 10},
    )
    layers = "features.2,features.5,features.8"
    results = [
        dissect(
            _cnn_target(),
            DISSECTOR,
            planted_probe,
            concept_file,
            layers,
            channels_last=flag,
            cache_dir=str(tmp_path / "c"),
            **options,
        )
        for flag in (False, True)
    ]
    parity = label_parity(results[0].neurons, results[1].neurons)
    assert parity["units"] == 8 + 16 + 32
    assert parity["fraction_changed"] <= 0.05
    assert results[1].run["config"]["channels_last"] is True
    fingerprints = [r.run["fingerprints"]["target_cache"] for r in results]
    assert fingerprints[0] != fingerprints[1]
    top = [r.top_images.set_index(["layer", "unit", "rank"])["activation"] for r in results]
    np.testing.assert_allclose(top[0].to_numpy(), top[1].to_numpy(), rtol=1e-4, atol=1e-5)
