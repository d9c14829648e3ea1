"""phantom-clip: the bundled dissector's zero-shot quality on held-out phantoms, its
training and refit commands, and the reduced demo (its first-finding count checked against the
runs' own labels)."""

from __future__ import annotations

import json

import pytest
import torch

from mammodissect.cli import main
from mammodissect.models import load_dissector, load_target
from mammodissect.models.phantom_clip import BUNDLED_WEIGHTS, build_phantom_clip

pytestmark = pytest.mark.skipif(
    not BUNDLED_WEIGHTS.is_file(), reason="phantom-clip weights not bundled"
)

#: Floors a little under the quality measured on these 200 held-out phantoms with the bundled
#: weights (v1 tower, refit heads: mass 0.84, calcification 0.93, suspicious calcification
#: 0.81, biopsy clip 0.94, implant 1.00, lymph node 0.95, skin thickening 0.91, architectural
#: distortion 0.82; mean concept AUROC 0.85; v1's heads gave 0.85, 0.90, 0.83, 0.91, 1.00, 0.96,
#: 0.90, 0.76 and 0.83). Masses and calcifications meet the issue's goal of 0.8.
FLOORS = {
    "mass": 0.8,
    "calcification": 0.85,
    "suspicious_calcification": 0.78,
    "biopsy_clip": 0.85,
    "implant": 0.95,
    "lymph_node": 0.9,
    "skin_thickening": 0.85,
    "architectural_distortion": 0.7,
}


@pytest.fixture(scope="module")
def quality():
    from mammodissect.models.phantom_clip import MiniLM
    from mammodissect.phantom.train import evaluate_dissector

    model, _ = build_phantom_clip(None)
    return evaluate_dissector(model, MiniLM(), 200, seed=777)


def test_bundled_dissector_embeds_unit_vectors():
    dissector = load_dissector("phantom-clip")
    assert dissector.spec == "phantom-clip:bundled"
    texts = dissector.encode_texts(["spiculated margin", "red"])
    image = dissector.preprocess(torch.rand(320, 192).numpy())[None]
    images = dissector.encode_images(image)
    assert texts.shape == (2, images.shape[1]) == (2, 256)
    assert torch.allclose(texts.norm(dim=1), torch.ones(2), atol=1e-4)
    target = load_target("phantom-clip")
    assert "image_encoder.blocks.6.0" in dict(target.module.named_modules())


def test_zero_shot_quality_on_held_out_phantoms(quality):
    families = quality["auroc_per_family"]
    for family, floor in FLOORS.items():
        assert families[family] >= floor, (family, families[family])
    assert quality["mean_concept_auroc"] >= 0.78
    assert quality["report_to_image_recall_at_5"] > 5 / 200 * 3  # well above chance


def test_train_command_writes_loadable_weights(tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    code = main([
        "phantom", "train-dissector", "--out", str(out), "--images", "32", "--epochs", "1",
        "--batch-size", "16", "--held-out", "40", "--refit-images", "24", "--refit-steps", "3",
        "--quiet",
    ])  # fmt: skip
    assert code == 0 and "held-out zero-shot AUROC" in capsys.readouterr().out
    facts = json.loads(out.with_suffix(".json").read_text())
    assert facts["images"] == 32 and facts["held_out_images"] == 40
    assert facts["head_refit"]["images"] == 24 and facts["head_refit"]["steps"] == 3
    assert facts["input_size"] == [320, 192] and "auroc_per_family" in facts
    assert out.stat().st_size < 25e6
    dissector = load_dissector(f"phantom-clip:{out}")
    assert dissector.info["images"] == 32


def test_train_command_continues_the_bundled_weights(tmp_path, capsys):
    out = tmp_path / "more.safetensors"
    tiny = ["--images", "16", "--epochs", "1", "--batch-size", "16", "--held-out", "24",
            "--refit-images", "16", "--refit-steps", "2", "--quiet"]  # fmt: skip
    code = main(["phantom", "train-dissector", "--out", str(out), "--init", "bundled",
                 "--lr", "1e-4", "--workers", "2", *tiny])  # fmt: skip
    assert code == 0
    facts = json.loads(out.with_suffix(".json").read_text())
    assert facts["continued_from"]["weights"] == BUNDLED_WEIGHTS.name
    assert facts["epochs_total"] == facts["continued_from"]["epochs_total"] + 1 == 17
    assert facts["lr"] == 1e-4
    capsys.readouterr()
    missing = main(["phantom", "train-dissector", "--out", str(tmp_path / "x.safetensors"),
                    "--init", str(tmp_path / "nothere.safetensors"), *tiny])  # fmt: skip
    assert missing != 0 and "'nothere.safetensors' not found" in capsys.readouterr().err


def test_refit_keeps_the_tower_and_records_what_it_refit(tmp_path, capsys):
    out = tmp_path / "refit.safetensors"
    code = main([
        "phantom", "refit-dissector", "--out", str(out), "--refit-images", "16",
        "--refit-steps", "3", "--held-out", "24", "--quiet",
    ])  # fmt: skip
    assert code == 0 and "held-out zero-shot AUROC" in capsys.readouterr().out
    bundled, _ = build_phantom_clip(None)
    refit, facts = build_phantom_clip(out)
    before, after = bundled.state_dict(), refit.state_dict()
    tower = [k for k in before if k.startswith("image_encoder.")]
    assert tower and all(torch.equal(before[k], after[k]) for k in tower)
    assert not torch.equal(before["text_projection.weight"], after["text_projection.weight"])
    assert facts["refit_of"] == BUNDLED_WEIGHTS.name and facts["head_refit"]["steps"] == 3
    assert facts["held_out_images"] == 24 and "mean_concept_auroc" in facts["before_refit"]


def test_reduced_demo_counts_the_study_s_first_finding_from_its_comparison(tmp_path, capsys):
    code = main([
        "demo", "--out", str(tmp_path / "demo"), "--images", "48", "--blocks", "[4-6].0",
        "--quiet", "--device", "cpu", "--evaluate",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    variants = ("G", "M", "C-density", "C-mass", "C-calcification", "C-birads")
    assert all(f"{v} (" in printed for v in variants)
    assert "mammography concepts are the top concept of no passing unit" in printed
    import pandas as pd

    summary = pd.read_csv(tmp_path / "demo" / "summary.csv").set_index("variant")
    assert list(summary.index) == list(variants)
    # the study's count (units passing the global threshold whose top concept is a mammography
    # concept) is the comparison's own; which variant leads is a result of the weights, not of
    # the code (the README states what the full demo shows), so it is not asserted here
    compared_layers = pd.read_csv(
        tmp_path / "demo" / "compare" / "compare.csv", dtype={"layer": str}
    )
    for variant in variants:
        rows = compared_layers[compared_layers["run"] == variant]
        neurons = pd.read_csv(tmp_path / "demo" / variant / "neurons.csv", dtype={"layer": str})
        best = neurons[neurons["rank"] == 1]
        expected = 0
        for layer, threshold in zip(rows["layer"], rows["global_threshold"], strict=True):
            units = best[best["layer"] == layer]
            expected += int(((units["score"] >= threshold) & ~units["control"]).sum())
        counted = summary.loc[variant, "passing_mammography_units"]
        assert counted == expected <= summary.loc[variant, "passing_units"], variant
    for variant in variants:
        assert (tmp_path / "demo" / variant / "neurons.csv").is_file()
    compared = tmp_path / "demo" / "compare"
    changes = pd.read_csv(compared / "categories.csv")
    assert set(changes["run"]) == {"C-density", "C-mass", "C-calcification", "C-birads"}
    assert set(changes["baseline"]) == {"M"}
    assert (compared / "figures" / "finetune_change.png").stat().st_size > 10_000
    for folder in (*variants, "compare"):
        page = (tmp_path / "demo" / folder / "report.html").read_text()
        assert "<html" in page and str(tmp_path) not in page
    # --evaluate: every variant evaluated before the comparison, which then has the null counts
    assert printed.count("   evaluated: ") == len(variants)
    assert summary["planted_top1_recovery"].notna().all()
    assert summary.loc["C-mass", "head_top1_in_class"] in (0.0, 1.0)  # one unit: the mass logit
    assert summary.loc[["G", "M"], "head_top1_in_class"].isna().all()
    assert pd.read_csv(compared / "compare.csv")["passing_null"].notna().all()
    density = pd.read_csv(tmp_path / "demo" / "C-density" / "head_check.csv")
    assert density["class"].tolist() == ["A", "B", "C", "D"]
    assert density["truth"].tolist()[2] == "heterogeneously dense breasts"
    birads = pd.read_csv(tmp_path / "demo" / "C-birads" / "head_check.csv")
    assert birads["class"].astype(str).tolist() == [str(c) for c in range(7)]
    page = (tmp_path / "demo" / "C-density" / "report.html").read_text()
    assert 'id="sec-evaluation"' in page and "Classifier head (density)" in page
    # the comparison's page puts the runs' evaluation figures side by side
    page = (compared / "report.html").read_text()
    assert "Label quality per run" in page and 'id="quality-table"' in page


def test_text_negatives_and_synonyms_are_disjoint_from_the_bundled_sets():
    from mammodissect import concepts
    from mammodissect.phantom import PHANTOM_CONCEPTS
    from mammodissect.phantom.lexicon import SYNONYMS, _words, overlaps, text_negatives

    bundled = list(concepts.load("birads+controls").concepts)
    negatives = text_negatives()
    assert len(negatives) > 700  # ImageNet names and phrases left after the filter
    assert not [n for n in negatives if overlaps(n, bundled)]
    # the filter works: controls' ImageNet names and names containing a control are gone
    controls = set(concepts.load("controls").concepts)
    assert "tench" in controls and "tench" not in negatives and "goldfish" in negatives
    # synonyms: every drawn concept has some, and none is a bundled string
    assert set(SYNONYMS) == set(PHANTOM_CONCEPTS)
    words = {_words(c) for c in bundled}
    assert not [s for v in SYNONYMS.values() for s in v if _words(s) in words]


def test_training_resumes_after_an_interruption(tmp_path, monkeypatch):
    import mammodissect.phantom.train as train
    from mammodissect.errors import MammodissectError

    seeds: list[int] = []
    real = train.generate
    kill = [True]

    def counted(n, seed, settings=None, workers=1):
        seeds.append(seed)
        if seed == 1 and kill.pop():  # the first run dies as epoch 2 starts
            raise InterruptedError("killed")
        return real(n, seed=seed, settings=settings, workers=workers)

    monkeypatch.setattr(train, "generate", counted)
    options = {"images": 8, "epochs": 2, "batch_size": 8, "held_out": 8, "progress": False,
               "refit": train.HeadRefit(images=8, steps=2)}  # fmt: skip
    out = tmp_path / "a.safetensors"
    with pytest.raises(InterruptedError):
        train.train_dissector(out, **options)
    assert out.with_suffix(".ckpt").is_file() and not out.is_file()
    kill.append(False)
    seeds.clear()
    resumed = train.train_dissector(out, **options)
    assert seeds[0] == 1  # epoch 1 was not trained again
    seeds.clear()
    kill.append(False)
    whole = train.train_dissector(tmp_path / "b.safetensors", **options)
    assert seeds[:2] == [0, 1]
    first = load_dissector(f"phantom-clip:{out}").model.state_dict()
    second = load_dissector(f"phantom-clip:{tmp_path / 'b.safetensors'}").model.state_dict()
    assert all(torch.equal(first[k], second[k]) for k in first)  # same as uninterrupted
    assert resumed["text_negatives"] == whole["text_negatives"] > 700
    with pytest.raises(MammodissectError, match="other settings"):
        train.train_dissector(out, **{**options, "images": 16})
    seeds.clear()
    kill.append(False)
    refit = train.train_dissector(out, **{**options, "refit": train.HeadRefit(images=8, steps=3)})
    assert 0 not in seeds and 1 not in seeds  # another refit reuses the finished epochs
    assert refit["head_refit"]["steps"] == 3


def test_training_continues_from_trained_weights(tmp_path, monkeypatch):
    import mammodissect.phantom.train as train

    seeds: list[int] = []
    real = train.generate

    def counted(n, seed, settings=None, workers=1):
        seeds.append(seed)
        return real(n, seed=seed, settings=settings, workers=workers)

    monkeypatch.setattr(train, "generate", counted)
    options = {"images": 8, "epochs": 2, "batch_size": 8, "held_out": 8, "progress": False,
               "refit": train.HeadRefit(images=8, steps=2)}  # fmt: skip
    first = tmp_path / "first.safetensors"
    train.train_dissector(first, **options)
    seeds.clear()
    facts = train.train_dissector(tmp_path / "more.safetensors", init=first, **options)
    assert seeds[:2] == [2, 3]  # the epochs after the two ``first`` saw, never a phantom again
    assert facts["epochs_total"] == 4 and facts["continued_from"]["weights"] == "first.safetensors"
    assert facts["continued_from"]["epochs_total"] == 2
    before = load_dissector(f"phantom-clip:{first}").model.state_dict()
    after = load_dissector(f"phantom-clip:{tmp_path / 'more.safetensors'}").model.state_dict()
    stem = [k for k in before if k.startswith("image_encoder.conv_stem")]
    last = [k for k in before if k.startswith("image_encoder.blocks.6") and "weight" in k]
    assert stem and all(torch.equal(before[k], after[k]) for k in stem)  # frozen: as ``init``
    assert any(not torch.equal(before[k], after[k]) for k in last)  # trained further
    seeds.clear()
    other = train.train_dissector(tmp_path / "s1.safetensors", init=first, seed=1, **options)
    assert seeds[:2] == [1000, 1001] and other["epochs_total"] == 4  # another seed's stream


def test_training_at_another_input_size_draws_loads_and_refits_at_it(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    import mammodissect.phantom.targets as targets
    import mammodissect.phantom.train as train
    from mammodissect.finetune import finetune
    from mammodissect.models.phantom_clip import spec_input_size
    from mammodissect.phantom.targets import train_target
    from mammodissect.probe import load_probe

    sizes: list[tuple[int, int]] = []
    real = train.generate

    def counted(n, seed, settings=None, workers=1):
        sizes.append(settings.size)
        return real(n, seed=seed, settings=settings, workers=workers)

    monkeypatch.setattr(train, "generate", counted)
    options = {"images": 8, "epochs": 1, "batch_size": 8, "held_out": 8, "progress": False,
               "refit": train.HeadRefit(images=8, steps=2)}  # fmt: skip
    small = tmp_path / "small.safetensors"
    facts = train.train_dissector(small, input_size=(128, 80), **options)
    assert set(sizes) == {(128, 80)}  # epochs, refit and held-out phantoms all drawn at it
    assert facts["input_size"] == [128, 80]
    assert torch.load(small.with_suffix(".ckpt"), weights_only=False)["config"]["input_size"]
    dissector = load_dissector(f"phantom-clip:{small}")
    assert dissector.preprocess.size == (128, 80) and dissector.info["input_size"] == [128, 80]
    assert load_target(f"phantom-clip:{small}").preprocess.size == (128, 80)
    assert spec_input_size(f"phantom-clip:{small}") == (128, 80)
    assert spec_input_size("phantom-clip") == (320, 192) and spec_input_size("timm:x") is None
    # a C variant fine-tuned from it trains on, and is measured on, phantoms of its size
    c_mass = tmp_path / "c_mass.safetensors"
    train_target("mass", c_mass, base=f"phantom-clip:{small}", images=12, epochs=1,
                 batch_size=12, held_out=8, progress=False)  # fmt: skip
    probe = load_probe(tmp_path / "c_mass-work" / "probe" / "manifest.csv")
    assert np.asarray(Image.open(probe.items[0].path)).shape == (128, 80)
    assert load_target(f"classifier:{c_mass}").preprocess.size == (128, 80)
    # finetune itself, given no image size, records the one the weightless rebuild would lose
    direct = tmp_path / "direct"
    manifest = tmp_path / "c_mass-work" / "probe" / "manifest.csv"
    finetune(f"phantom-clip:{small}", str(manifest), "mass", direct, epochs=1,
             batch_size=12, progress=False)  # fmt: skip
    assert json.loads((direct / "classifier.json").read_text())["image_size"] == [128, 80]
    assert load_target(f"classifier:{direct / 'classifier.safetensors'}").preprocess.size == (
        128, 80,
    )  # fmt: skip
    # and a C variant measured on its own is measured on phantoms of its size
    monkeypatch.setattr(targets, "generate", counted)
    sizes.clear()
    targets.evaluate_target(f"classifier:{c_mass}", "mass", 4, seed=3)
    assert sizes == [(128, 80)]
    sizes.clear()
    more = train.train_dissector(tmp_path / "more.safetensors", init=small, **options)
    assert more["input_size"] == [128, 80] and set(sizes) == {(128, 80)}  # the init's size
    sizes.clear()
    refit = train.refit_dissector(tmp_path / "refit.safetensors", weights=small,
                                  refit=train.HeadRefit(images=8, steps=2), held_out=8,
                                  progress=False)  # fmt: skip
    assert refit["input_size"] == [128, 80] and set(sizes) == {(128, 80)}
    default = train.train_dissector(tmp_path / "d.safetensors", **options)
    assert default["input_size"] == [320, 192]
    # the default size stays out of the checkpoint's settings: older checkpoints still resume
    config = torch.load(tmp_path / "d.ckpt", weights_only=False)["config"]
    assert "input_size" not in config


def test_the_target_does_not_load_the_text_tower_and_the_dissector_does_when_asked():
    from mammodissect.models import phantom_clip

    phantom_clip._shared_minilm.cache_clear()
    target = load_target("phantom-clip")
    assert target.module is not None and phantom_clip._shared_minilm.cache_info().currsize == 0
    dissector = load_dissector("phantom-clip").to("cpu")
    assert phantom_clip._shared_minilm.cache_info().currsize == 0
    texts = dissector.encode_texts(["oval mass"])
    assert texts.shape == (1, 256) and phantom_clip._shared_minilm.cache_info().currsize == 1


def test_a_minilm_subset_gives_the_full_models_tokens_and_embeddings(tmp_path, monkeypatch):
    from mammodissect.errors import MammodissectError
    from mammodissect.models.minilm_files import MINILM_ENV, write_minilm_subset
    from mammodissect.models.phantom_clip import MiniLM

    texts = ["spiculated mass in the upper outer quadrant", "grouped amorphous calcifications"]
    facts = write_minilm_subset(texts, tmp_path / "small")
    assert facts["word_pieces"] < 3000 < facts["full_vocabulary"]
    assert (tmp_path / "small" / "model.safetensors").stat().st_size < 30e6  # 87 MB in full
    full = MiniLM()
    monkeypatch.setenv(MINILM_ENV, str(tmp_path / "small"))
    small = MiniLM()
    assert [e.tokens for e in small.tokenizer.encode_batch(texts)] == [
        e.tokens for e in full.tokenizer.encode_batch(texts)
    ]
    assert float((full(texts) * small(texts)).sum(1).min()) > 0.999
    # a word it has no piece for is spelt from single characters, not lost
    other = small.tokenizer.encode("zeppelin").tokens
    assert "[UNK]" not in other and len(other) > len(full.tokenizer.encode("zeppelin").tokens)
    monkeypatch.setenv(MINILM_ENV, str(tmp_path))
    with pytest.raises(MammodissectError, match="lacks config.json, model.safetensors"):
        MiniLM()
