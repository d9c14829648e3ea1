"""End to end through the command line: planted signals, caching, resume, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from mammodissect.cli import main

import planted

TARGET = "python:planted:make_target"
DISSECTOR = "python:planted:make_dissector"


def run_cli(
    probe: Path,
    concepts: Path,
    out: Path,
    *extra: str,
    target: str = TARGET,
    layers: str = "features",
    small: bool = True,
) -> int:
    """Run the CLI on the planted world; ``small`` adds batch size 8 and top_k=10."""
    argv = ["run", "--target", target, "--dissector", DISSECTOR, "--probe", str(probe)]
    argv += ["--concepts", str(concepts), "--layers", layers, "--out", str(out)]
    argv += ["--num-workers", "0", "--quiet"]
    if small:
        argv += ["--batch-size", "8", "--similarity", "soft_wpmi", "--similarity-param", "top_k=10"]
    return main([*argv, *extra])


def test_planted_units_get_their_concept_at_rank_1(planted_probe, concept_file, tmp_path):
    assert run_cli(planted_probe, concept_file, tmp_path / "run") == 0
    neurons = pd.read_csv(tmp_path / "run" / "neurons.csv")
    assert list(neurons.columns) == ["layer", "unit", "rank", "concept", "score"]
    best = neurons[neurons["rank"] == 1].set_index("unit")["concept"]
    assert best.to_dict() == {j: f"planted feature {j}" for j in range(planted.N_FEATURES)}
    # each unit's concepts are sorted best first
    for _, group in neurons.groupby("unit"):
        assert group.sort_values("rank")["score"].is_monotonic_decreasing


@pytest.mark.parametrize(
    ("similarity", "params"),
    [
        ("wpmi", ["--similarity", "soft_wpmi", "--similarity-param", "top_k=10"]),
        ("cos_similarity", []),
        ("cos_similarity_cubed", []),
    ],
)
def test_planted_signal_survives_other_similarities(
    planted_probe, concept_file, tmp_path, similarity, params
):
    code = run_cli(
        planted_probe,
        concept_file,
        tmp_path / "r",
        "--similarity",
        similarity,
        *params,
        small=False,
    )
    assert code == 0
    neurons = pd.read_csv(tmp_path / "r" / "neurons.csv")
    best = neurons[neurons["rank"] == 1].set_index("unit")["concept"]
    assert best.to_dict() == {j: f"planted feature {j}" for j in range(planted.N_FEATURES)}


def test_top_images_are_images_with_the_feature(planted_probe, concept_file, tmp_path):
    present = planted.write_probe(tmp_path / "again")  # same seed: the same presence table
    assert run_cli(planted_probe, concept_file, tmp_path / "run", "--top-images", "4") == 0
    tops = pd.read_csv(tmp_path / "run" / "top_images.csv")
    assert list(tops.columns) == ["layer", "unit", "rank", "image_id", "activation"]
    assert len(tops) == planted.N_FEATURES * 4
    for row in tops.itertuples():
        index = int(row.image_id[3:6])
        assert present[index, row.unit], row
    assert (tops.groupby("unit")["activation"].diff().dropna() <= 0).all()


def test_run_json_records_config_counts_and_no_absolute_paths(
    planted_probe, concept_file, tmp_path
):
    assert run_cli(planted_probe, concept_file, tmp_path / "run") == 0
    text = (tmp_path / "run" / "run.json").read_text()
    info = json.loads(text)
    assert info["counts"]["images"] == 40
    assert info["counts"]["units"] == planted.N_FEATURES
    assert info["counts"]["concepts"] == len(planted.CONCEPTS) + len(planted.DISTRACTORS)
    assert info["similarity"]["params"]["top_k"] == 10
    assert info["similarity"]["params"]["a"] == 10
    assert info["config"]["batch_size"] == 8
    assert set(info["timings_s"]) >= {"record", "score", "encode_concepts"}
    assert info["layers"] == [{"name": "features", "units": planted.N_FEATURES}]
    assert str(tmp_path) not in text and "/tmp" not in text


def test_a_second_run_with_the_same_dissector_reuses_the_concept_embeddings(
    planted_probe, concept_file, tmp_path
):
    assert run_cli(planted_probe, concept_file, tmp_path / "first") == 0
    assert planted.CALLS["dissector_texts"] == 1
    first = pd.read_csv(tmp_path / "first" / "neurons.csv")
    # another run of the study (here: other top-concept count) with the same dissector and
    # concepts: the embeddings come from the cache and the labels are the same
    assert run_cli(planted_probe, concept_file, tmp_path / "second", "--top-concepts", "3") == 0
    assert planted.CALLS["dissector_texts"] == 1
    second = pd.read_csv(tmp_path / "second" / "neurons.csv")
    pd.testing.assert_frame_equal(second, first[first["rank"] <= 3].reset_index(drop=True))
    # other prompts are other strings: embedded afresh
    assert run_cli(planted_probe, concept_file, tmp_path / "third", "--prompt", "{} here") == 0
    assert planted.CALLS["dissector_texts"] == 2


def test_stop_early_skips_the_rest_of_the_target(planted_probe, concept_file, tmp_path):
    assert run_cli(planted_probe, concept_file, tmp_path / "run") == 0
    assert planted.CALLS["target"] == 5  # 40 images / batch 8
    assert planted.CALLS["head"] == 0  # the forward stopped after `features`
    assert planted.CALLS["dissector_images"] == 5
    assert planted.CALLS["train_mode"] == 0  # eval mode, though the factory built train mode
    assert planted.CALLS["grad_enabled"] == 0  # under inference mode


def test_second_run_with_new_concepts_does_no_forward_pass(planted_probe, concept_file, tmp_path):
    assert run_cli(planted_probe, concept_file, tmp_path / "a") == 0
    first = dict(planted.CALLS)
    other = tmp_path / "other.txt"
    other.write_text("\n".join(["planted feature 1", "planted feature 4", "sky", "tree"]))
    assert run_cli(planted_probe, other, tmp_path / "b", "--similarity", "wpmi") == 0
    # neither the target nor the dissector's image tower ran again; only the new texts
    assert planted.CALLS == {**first, "dissector_texts": first["dissector_texts"] + 1}
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["recording"]["target_cache"] == "reused"
    assert info["recording"]["dissector_cache"] == "reused"
    neurons = pd.read_csv(tmp_path / "b" / "neurons.csv")
    assert set(neurons["concept"]) <= {"planted feature 1", "planted feature 4", "sky", "tree"}
    best = neurons[neurons["rank"] == 1].set_index("unit")["concept"]
    assert best[1] == "planted feature 1" and best[4] == "planted feature 4"


def test_new_layer_records_target_again_but_reuses_embeddings(
    planted_probe, concept_file, tmp_path
):
    assert run_cli(planted_probe, concept_file, tmp_path / "a") == 0
    calls = planted.CALLS["dissector_images"]
    code = run_cli(planted_probe, concept_file, tmp_path / "b", layers="stem,features", small=False)
    assert code == 0
    assert planted.CALLS["dissector_images"] == calls
    assert planted.CALLS["target"] == 5 + 3  # batches of 8, then of 16 (the default)


def test_interrupted_run_resumes_to_identical_results(
    planted_probe, concept_file, tmp_path, monkeypatch
):
    monkeypatch.setenv("MAMMODISSECT_CACHE_DIR", str(tmp_path / "cache-plain"))
    assert run_cli(planted_probe, concept_file, tmp_path / "plain") == 0

    monkeypatch.setenv("MAMMODISSECT_CACHE_DIR", str(tmp_path / "cache-resumed"))
    planted.CALLS["target"] = 0
    monkeypatch.setenv("PLANTED_FAIL_AT", "3")
    assert run_cli(planted_probe, concept_file, tmp_path / "resumed") == 130
    assert not (tmp_path / "resumed" / "neurons.csv").exists()
    monkeypatch.delenv("PLANTED_FAIL_AT")
    planted.CALLS["target"] = 0
    assert run_cli(planted_probe, concept_file, tmp_path / "resumed") == 0
    assert planted.CALLS["target"] == 3  # batches 3, 4, 5: the two finished ones were kept
    info = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert info["recording"]["target_cache"] == "resumed"
    for name in ("neurons.csv", "top_images.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "plain" / name), pd.read_csv(tmp_path / "resumed" / name)
        )


def test_resume_with_another_batch_size_gives_identical_results(
    planted_probe, concept_file, tmp_path, monkeypatch
):
    monkeypatch.setenv("MAMMODISSECT_CACHE_DIR", str(tmp_path / "c1"))
    assert run_cli(planted_probe, concept_file, tmp_path / "plain") == 0
    monkeypatch.setenv("MAMMODISSECT_CACHE_DIR", str(tmp_path / "c2"))
    monkeypatch.setenv("PLANTED_FAIL_AT", "4")
    assert run_cli(planted_probe, concept_file, tmp_path / "r", "--batch-size", "5") == 130
    monkeypatch.delenv("PLANTED_FAIL_AT")
    assert run_cli(planted_probe, concept_file, tmp_path / "r", "--batch-size", "7") == 0
    for name in ("neurons.csv", "top_images.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(tmp_path / "plain" / name), pd.read_csv(tmp_path / "r" / name)
        )


def test_target_that_is_the_dissector_tower_shares_one_forward(
    planted_probe, concept_file, tmp_path
):
    code = run_cli(planted_probe, concept_file, tmp_path / "r", target="dissector")
    assert code == 0
    assert planted.CALLS["dissector_images"] == 5
    assert planted.CALLS["target"] == 0  # the tower ran inside encode_images only
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["recording"]["shared_forward"] is True
    neurons = pd.read_csv(tmp_path / "r" / "neurons.csv")
    best = neurons[neurons["rank"] == 1].set_index("unit")["concept"]
    assert best.to_dict() == {j: f"planted feature {j}" for j in range(planted.N_FEATURES)}


def test_worker_processes_give_the_same_result(planted_probe, concept_file, tmp_path):
    assert run_cli(planted_probe, concept_file, tmp_path / "a") == 0
    assert (
        run_cli(
            planted_probe,
            concept_file,
            tmp_path / "b",
            "--num-workers",
            "2",
            "--cache-dir",
            str(tmp_path / "other-cache"),
        )
        == 0
    )
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "a" / "neurons.csv"), pd.read_csv(tmp_path / "b" / "neurons.csv")
    )


def test_unreadable_image_is_skipped_and_reported(planted_probe, concept_file, tmp_path, capsys):
    probe = tmp_path / "probe"
    probe.mkdir()
    for path in sorted(planted_probe.iterdir())[:20]:
        (probe / path.name).write_bytes(path.read_bytes())
    (probe / "broken.png").write_bytes(b"not a png at all")
    (probe / "flat.png").write_bytes((planted_probe / "img000.png").read_bytes()[:40])
    assert run_cli(probe, concept_file, tmp_path / "r") == 0
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["counts"]["images"] == 22 and info["counts"]["images_used"] == 20
    skipped = {item["image"]: item["reason"] for item in info["skipped"]}
    assert set(skipped) == {"broken.png", "flat.png"}
    assert str(tmp_path) not in json.dumps(info)
    assert "broken.png" in capsys.readouterr().out
    tops = pd.read_csv(tmp_path / "r" / "top_images.csv")
    assert not set(tops["image_id"]) & {"broken.png", "flat.png"}


def test_config_file_takes_the_same_keys_and_flags_override(planted_probe, concept_file, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        f"target: {TARGET}\ndissector: {DISSECTOR}\nprobe: {planted_probe}\n"
        f"concepts: {concept_file}\nlayers: features\nnum_workers: 0\nquiet: true\n"
        "top_concepts: 3\nsimilarity: soft_wpmi\nsimilarity_params:\n  top_k: 10\n"
    )
    assert (
        main(["run", "--config", str(config), "--out", str(tmp_path / "r"), "--top-concepts", "2"])
        == 0
    )
    neurons = pd.read_csv(tmp_path / "r" / "neurons.csv")
    assert neurons["rank"].max() == 2
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["similarity"]["params"]["top_k"] == 10


def test_more_top_images_later_needs_no_forward_pass_and_matches_a_fresh_run(
    planted_probe, concept_file, tmp_path, monkeypatch
):
    assert run_cli(planted_probe, concept_file, tmp_path / "a", "--top-images", "3") == 0
    calls = dict(planted.CALLS)
    assert run_cli(planted_probe, concept_file, tmp_path / "b", "--top-images", "7") == 0
    assert planted.CALLS == calls
    monkeypatch.setenv("MAMMODISSECT_CACHE_DIR", str(tmp_path / "fresh-cache"))
    assert run_cli(planted_probe, concept_file, tmp_path / "c", "--top-images", "7") == 0
    later = pd.read_csv(tmp_path / "b" / "top_images.csv")
    assert len(later) == 7 * planted.N_FEATURES
    pd.testing.assert_frame_equal(later, pd.read_csv(tmp_path / "c" / "top_images.csv"))
