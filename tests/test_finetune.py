"""Fine-tuning (the C variants): tasks from label tables, the patient-level split, the recipe's
numbers, training that learns a planted signal, exact resumption, the written classifiers as
targets (``classifier:PATH``, ``mammoclip-classifier:PATH``) and the error messages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammodissect import dissect
from mammodissect.cli import main
from mammodissect.concepts import ConceptSet
from mammodissect.errors import MammodissectError
from mammodissect.finetune import finetune, split_images, target_spec, task_labels
from mammodissect.finetune.recipe import (
    AUGMENT,
    augment_batch,
    make_scheduler,
    pos_weight,
    warmup_cosine,
)
from mammodissect.metrics import auroc
from mammodissect.models import describe_preprocess, load_target
from mammodissect.models.classifier import EncoderClassifier, public_base
from mammodissect.phantom import PhantomSettings, generate, write_phantoms
from mammodissect.probe import Probe, ProbeItem, load_probe
from mammodissect.probe.loader import probe_batches
from mammodissect.testing import write_mammoclip_checkpoint

import planted
from helpers_models import TinyCNN

#: Phantoms with an implant in half the images: a plainly visible signal to learn.
PHANTOMS = PhantomSettings(size=(96, 58), rates={"implant": 0.5})
TINY = "python:helpers_models:tiny_cnn?size=96x58"
FAST = {"batch_size": 16, "lr": 3e-3, "progress": False}
#: Held-out AUROC of the implant classifier must reach this (chance is 0.5; measured 0.961 with
#: seed 0, 0.93-0.98 with seeds 0-4, on 100 held-out phantoms).
HELD_OUT_FLOOR = 0.85


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: fast on a busy machine, and the same arithmetic every run."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("phantoms")
    sets = {"train": (1, 120), "held_out": (2, 100), "small": (3, 40)}
    return {
        name: write_phantoms(root / name, generate(n, seed=seed, settings=PHANTOMS))
        for name, (seed, n) in sets.items()
    }


@pytest.fixture(scope="module")
def trained(phantoms, tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("trained")
    out = root / "implant"
    metrics = finetune(
        TINY, phantoms["train"], "implant", out, epochs=5, cache_dir=root / "cache", **FAST
    )
    return out, metrics


def _scores(target, manifest: Path) -> tuple[np.ndarray, Probe]:
    probe = load_probe(manifest)
    outputs = []
    with torch.inference_mode():
        for batch in probe_batches(probe, [target.preprocess], batch_size=64):
            outputs.append(target.module(batch["inputs"][0])[:, 0])
    return torch.cat(outputs).numpy(), probe


# ---------------------------------------------------------------------------- training


def test_learns_planted_implants_beyond_chance_on_held_out_phantoms(trained, phantoms):
    out, metrics = trained
    assert metrics["finished"] and metrics["epochs_done"] == 5 and len(metrics["history"]) == 5
    assert metrics["kind"] == "binary" and metrics["classes"] == ["no", "yes"]
    assert metrics["metric"] == "auroc" and metrics["best_metric"] > 0.75
    assert metrics["split"]["train"]["yes"] > 0 and metrics["split"]["val"]["yes"] > 0
    target = load_target(f"classifier:{out / 'classifier.safetensors'}")
    scores, probe = _scores(target, phantoms["held_out"])
    held_out = auroc(scores, probe.labels["implant"].to_numpy(bool))
    assert held_out >= HELD_OUT_FLOOR, held_out


def test_classifier_target_is_the_best_epoch_with_its_preprocessing(trained, phantoms):
    out, metrics = trained
    path = out / "classifier.safetensors"
    target = load_target(f"classifier:{path}")
    assert target.spec == "classifier:classifier.safetensors"
    assert target.info["task"] == "implant" and target.info["classes"] == ["no", "yes"]
    assert target.info["epoch"] == metrics["best_epoch"]
    assert describe_preprocess(target.preprocess) == metrics["preprocess"]
    head = target.module.get_submodule("classifier.classification_head")
    assert head.out_features == 1
    # the validation AUROC recomputed with the loaded classifier is the recorded best one
    probe = load_probe(phantoms["train"])
    labels = task_labels(probe, "implant")
    split = split_images(labels.targets, probe.labels, val_fraction=0.2, seed=0)
    assert len(split.val) == sum(metrics["split"]["val"].values())
    scores, _ = _scores(target, phantoms["train"])
    rows = [probe.position(i) for i in split.val]
    recomputed = auroc(scores[rows], labels.targets.loc[split.val].to_numpy() == 1)
    assert recomputed == pytest.approx(metrics["best_metric"], abs=1e-9)
    # nothing written names a folder of this machine
    for name in ("metrics.json", "classifier.json"):
        assert str(out.parent) not in (out / name).read_text()
    assert json.loads((out / "metrics.json").read_text())["best_epoch"] == metrics["best_epoch"]


def test_the_classifier_head_is_dissectable(trained, phantoms, tmp_path):
    out, _ = trained
    spec = f"classifier:{out / 'classifier.safetensors'}"
    concepts = ConceptSet.from_strings([*planted.CONCEPTS, *planted.DISTRACTORS])
    result = dissect(
        spec, "python:planted:make_dissector", phantoms["small"], concepts,
        "classifier.classification_head", num_workers=0, quiet=True,
        similarity="soft_wpmi", similarity_params={"top_k": 5},
    )  # fmt: skip
    assert set(result.neurons["layer"]) == {"classifier.classification_head"}
    assert set(result.neurons["unit"]) == {0}
    code = main([
        "run", "--target", spec, "--dissector", "python:planted:make_dissector",
        "--probe", str(phantoms["small"]), "--concepts", "birads",
        "--layers", "classifier.*,image_encoder.features.3", "--out", str(tmp_path / "run"),
        "--similarity", "soft_wpmi", "--similarity-param", "top_k=5", "--quiet",
    ])  # fmt: skip
    assert code == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["target"]["spec"] == "classifier:classifier.safetensors"
    assert [layer["units"] for layer in run["layers"]] == [16, 1]


def test_resumed_run_equals_one_straight_run(phantoms, tmp_path):
    small = phantoms["small"]
    straight = finetune(TINY, small, "implant", tmp_path / "straight", epochs=2, **FAST)
    first = finetune(TINY, small, "implant", tmp_path / "resumed", epochs=1, **FAST)
    assert first["epochs_done"] == 1 and first["finished"]
    resumed = finetune(TINY, small, "implant", tmp_path / "resumed", epochs=2, **FAST)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    strip = lambda history: [{k: v for k, v in e.items() if k != "seconds"} for e in history]  # noqa: E731
    assert strip(straight["history"]) == strip(resumed["history"])
    assert straight["best_epoch"] == resumed["best_epoch"]
    # a finished run is not trained again: its metrics come back
    stamp = (tmp_path / "resumed" / "last.pt").stat().st_mtime_ns
    again = finetune(TINY, small, "implant", tmp_path / "resumed", epochs=2, **FAST)
    assert again["history"] == resumed["history"]
    assert (tmp_path / "resumed" / "last.pt").stat().st_mtime_ns == stamp


def test_mammoclip_base_writes_a_mammoclip_classifier(phantoms, tmp_path):
    checkpoint = tmp_path / "b0-model-best-epoch-7.tar"
    write_mammoclip_checkpoint(checkpoint, image_size=(64, 40), optimizer=False)
    out = tmp_path / "mass"
    metrics = finetune(
        f"mammoclip:{checkpoint}", phantoms["small"], "implant", out, epochs=1,
        batch_size=8, progress=False, val_fraction=0.25,
    )  # fmt: skip
    assert metrics["checkpoint"] == "classifier.pth" and metrics["encoder"] == "image_encoder"
    assert metrics["base"] == "mammoclip:b0-model-best-epoch-7.tar"
    assert not (out / "classifier.safetensors").exists()
    spec = target_spec(out, metrics)
    assert spec == f"mammoclip-classifier:{out / 'classifier.pth'}"
    target = load_target(spec)
    assert target.info["image_encoder"] == "efficientnet-b0" and target.info["classes"] == 1
    assert target.info["epoch"] == 1
    assert target.info["auroc"] == pytest.approx(metrics["best_metric"])
    assert describe_preprocess(target.preprocess) == metrics["preprocess"]
    assert tuple(target.preprocess.size) == (64, 40) and metrics["run_flags"] == ""
    last = torch.load(out / "last.pt", weights_only=True)["model"]
    state = target.module.state_dict()
    assert set(state) == set(last)
    for key, value in last.items():
        assert torch.equal(state[key], value), key


def test_frozen_layers_keep_their_weights_and_statistics(phantoms, tmp_path):
    out = tmp_path / "frozen"
    metrics = finetune(
        TINY, phantoms["small"], "implant", out, epochs=1, freeze="features.0,features.1", **FAST
    )
    assert metrics["frozen"] == ["image_encoder.features.0", "image_encoder.features.1"]
    torch.manual_seed(0)  # what finetune starts from with seed 0
    initial = load_target(TINY).module.state_dict()
    from safetensors.torch import load_file

    trained = load_file(str(out / "classifier.safetensors"))
    for key in ("features.0.weight", "features.1.weight", "features.1.running_mean"):
        assert torch.equal(trained[f"image_encoder.{key}"], initial[key]), key
    assert int(trained["image_encoder.features.1.num_batches_tracked"]) == 0
    assert not torch.equal(trained["image_encoder.features.3.weight"], initial["features.3.weight"])
    assert not torch.equal(
        trained["image_encoder.features.4.running_mean"], initial["features.4.running_mean"]
    )


def test_cli_finetune_prints_the_target_spec(phantoms, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main([
        "finetune", "--model", TINY, "--probe", str(phantoms["small"]), "--task", "implant",
        "--out", str(out), "--epochs", "1", "--lr", "3e-3", "--no-augment", "--quiet",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "best validation auroc" in printed
    assert f"--target 'classifier:{out / 'classifier.safetensors'}'" in printed
    assert json.loads((out / "metrics.json").read_text())["settings"]["augment"] is False
    # the classifier target gives the trained network's logits (one epoch: best = last)
    encoder = TinyCNN()
    encoder.reset_classifier(0)
    trained = EncoderClassifier(encoder, 32, 1)
    trained.load_state_dict(torch.load(out / "last.pt", weights_only=True)["model"])
    target = load_target(f"classifier:{out / 'classifier.safetensors'}")
    batch = next(iter(probe_batches(load_probe(phantoms["small"]), [target.preprocess])))
    with torch.inference_mode():
        assert torch.equal(target.module(batch["inputs"][0]), trained.eval()(batch["inputs"][0]))


def test_base_specs_are_written_without_folders(tmp_path):
    weights = tmp_path / "deep" / "r18.pth"
    assert public_base(f"timm:resnet18?weights={weights}") == "timm:resnet18?weights=r18.pth"
    pc = tmp_path / "pc.safetensors"
    assert public_base(f"phantom-clip:{pc}") == "phantom-clip:pc.safetensors"
    assert public_base("phantom-clip") == "phantom-clip:bundled"
    assert public_base(f"mammoclip:{tmp_path / 'b5.tar'}") == "mammoclip:b5.tar"


# ---------------------------------------------------------------------------- recipe


def test_pos_weight_is_negatives_over_positives():
    targets = torch.tensor([0, 1, 0, 0, 1, 0, 0, 0])
    assert pos_weight(targets).tolist() == [3.0]
    assert pos_weight(torch.tensor([1, 1, 0])).tolist() == [0.5]


def test_warmup_then_cosine_per_step():
    warmup, total = 4, 12
    assert [warmup_cosine(s, warmup, total) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert warmup_cosine(4, warmup, total) == 1.0
    assert warmup_cosine(8, warmup, total) == pytest.approx(0.5)
    assert warmup_cosine(11, warmup, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert warmup_cosine(0, 0, 10) == 1.0
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([weight], lr=5e-5)
    scheduler = make_scheduler(optimizer, warmup, total)
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    expected = [5e-5 * warmup_cosine(s, warmup, total) for s in range(total)]
    assert seen == pytest.approx(expected)


def test_augmentation_flips_and_moves_a_little_reproducibly(monkeypatch):
    batch = torch.rand(8, 3, 24, 16)
    same = lambda: augment_batch(batch, torch.Generator().manual_seed(5))  # noqa: E731
    assert torch.equal(same(), same())
    moved = same()
    assert moved.shape == batch.shape and not torch.equal(moved, batch)
    monkeypatch.setitem(AUGMENT, "degrees", 0.0)
    monkeypatch.setitem(AUGMENT, "translate", 0.0)
    monkeypatch.setitem(AUGMENT, "scale", 0.0)
    flipped = augment_batch(batch, torch.Generator().manual_seed(0))
    kinds = []
    for image, out in zip(batch, flipped, strict=True):
        if torch.allclose(out, image, atol=1e-5):
            kinds.append("kept")
        else:
            assert torch.allclose(out, image.flip(-1), atol=1e-5)
            kinds.append("flipped")
    assert set(kinds) == {"kept", "flipped"}


# ---------------------------------------------------------------------------- split


def _patients(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for k in range(int(rng.integers(1, 5))):
            rows.append({"image_id": f"p{p}-{k}", "patient_id": f"P{p:03d}"})
    table = pd.DataFrame(rows).set_index("image_id")
    table["label"] = rng.choice(3, size=len(table), p=[0.6, 0.3, 0.1])
    return table


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_patient_split_keeps_each_patient_on_one_side(seed):
    table = _patients(seed=seed)
    split = split_images(table["label"], table, val_fraction=0.2, seed=seed)
    assert split.grouped_by == "patient_id"
    train = set(table.loc[split.train, "patient_id"])
    val = set(table.loc[split.val, "patient_id"])
    assert train.isdisjoint(val)
    assert sorted(split.train + split.val) == sorted(table.index)
    for side in (split.train, split.val):
        assert set(table.loc[side, "label"]) == {0, 1, 2}
    assert 0.1 <= len(split.val) / len(table) <= 0.35
    again = split_images(table["label"], table, val_fraction=0.2, seed=seed)
    assert again.val == split.val


def test_split_by_image_without_patients_and_by_the_split_column():
    table = _patients()
    alone = split_images(table["label"], table.drop(columns="patient_id"), seed=0)
    assert alone.grouped_by == "image_id"
    table["split"] = np.where(np.arange(len(table)) % 4 == 0, "test", "train")
    by_column = split_images(table["label"], table, mode="column")
    assert by_column.val == list(table.index[table["split"] == "test"])
    with pytest.raises(MammodissectError, match="needs 'train'"):
        split_images(table["label"], table.assign(split="train"), mode="column")


# ---------------------------------------------------------------------------- tasks


def _probe(labels: dict[str, list]) -> Probe:
    n = len(next(iter(labels.values())))
    items = [ProbeItem(f"img{i}", f"img{i}.png", Path(f"/nowhere/img{i}.png")) for i in range(n)]
    table = pd.DataFrame(labels, index=pd.Index([it.image_id for it in items], name="image_id"))
    return Probe(root=Path("/nowhere"), items=items, labels=table, source="vindr")


def test_tasks_from_real_layout_columns():
    probe = _probe({
        "patient_id": ["a", "a", "b", "c", "d", "e"],
        "density": ["A", "b", None, "D", "C", "4"],
        "birads": [1, 4.0, np.nan, 2, 5, 1],
        "findings": ["Mass|Suspicious Calcification", "", None, "Suspicious Calcification",
                     "Architectural Distortion", "mass"],
        "pathology": ["BENIGN", "MALIGNANT", "BENIGN", None, "MALIGNANT", "BENIGN"],
        "cancer": [0, 1, 0, 0, 1, 0],
        "site": ["x", "y", "z", "x", "y", "z"],
    })  # fmt: skip
    density = task_labels(probe, "density")
    assert density.kind == "multiclass" and density.classes == ["A", "B", "C", "D"]
    assert density.targets.tolist() == [0, 1, 3, 2, 3] and density.dropped == 1
    birads = task_labels(probe, "birads")
    assert birads.classes == ["1", "2", "4", "5"] and birads.targets.tolist() == [0, 2, 1, 3, 0]
    mass = task_labels(probe, "mass")
    assert mass.kind == "binary" and mass.source == "findings" and mass.outputs == 1
    assert mass.targets.to_dict() == {"img0": 1, "img1": 0, "img3": 0, "img4": 0, "img5": 1}
    calcification = task_labels(probe, "calcification")
    assert calcification.targets.tolist() == [1, 0, 1, 0, 0]
    cancer = task_labels(probe, "cancer")
    assert cancer.kind == "binary" and cancer.classes == ["no", "yes"]
    pathology = task_labels(probe, "pathology")
    assert pathology.classes == ["BENIGN", "MALIGNANT"] and pathology.dropped == 1
    site = task_labels(probe, "site")
    assert site.kind == "multiclass" and site.outputs == 3


def test_phantom_family_columns_are_binary_tasks(phantoms):
    probe = load_probe(phantoms["small"])
    mass = task_labels(probe, "mass")
    assert mass.source == "mass" and mass.classes == ["no", "yes"]
    assert mass.targets.sum() == probe.labels["mass"].sum()


# ---------------------------------------------------------------------------- errors


def test_unknown_task_lists_the_columns(phantoms, tmp_path):
    with pytest.raises(MammodissectError, match="columns are: view, laterality, density"):
        finetune(TINY, phantoms["small"], "implants", tmp_path / "x", progress=False)


def test_single_class_and_unlabelled_probes_are_refused(tmp_path):
    probe = _probe({"cancer": [0, 0, 0, None]})
    with pytest.raises(MammodissectError, match=r"same class \('0' in 'cancer'\)"):
        task_labels(probe, "cancer")
    with pytest.raises(MammodissectError, match="no probe image has a label"):
        task_labels(_probe({"cancer": [None, None]}), "cancer")
    folder = tmp_path / "images"
    planted.write_probe(folder, n=4)
    with pytest.raises(MammodissectError, match="has no label columns"):
        task_labels(load_probe(folder), "density")


def test_other_settings_in_the_same_folder_are_refused(phantoms, tmp_path):
    out = tmp_path / "run"
    finetune(TINY, phantoms["small"], "implant", out, epochs=1, **FAST)
    with pytest.raises(
        MammodissectError, match=r"other settings \(lr 0.003 -> 0.001\).*--overwrite"
    ):
        finetune(TINY, phantoms["small"], "implant", out, epochs=1, **{**FAST, "lr": 1e-3})
    replaced = finetune(
        TINY, phantoms["small"], "implant", out, epochs=1, overwrite=True, **{**FAST, "lr": 1e-3}
    )
    assert replaced["settings"]["lr"] == 1e-3 and replaced["epochs_done"] == 1


def test_the_cli_overwrite_flag_replaces_a_run_with_other_settings(phantoms, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["finetune", "--model", TINY, "--probe", str(phantoms["small"]), "--task", "implant",
            "--out", str(out), "--epochs", "1", "--batch-size", "16", "--quiet"]  # fmt: skip
    assert main([*argv, "--lr", "3e-3"]) == 0
    assert main([*argv, "--lr", "1e-3"]) == 2
    assert "pass --overwrite to replace it" in capsys.readouterr().err
    assert main([*argv, "--lr", "1e-3", "--overwrite"]) == 0
    assert json.loads((out / "metrics.json").read_text())["settings"]["lr"] == 1e-3
