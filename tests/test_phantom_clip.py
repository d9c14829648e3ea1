"""phantom-clip: the bundled dissector's zero-shot quality on held-out phantoms, its
training command, and the demo's first finding (M labels more units with mammography
concepts than G)."""

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

#: Floors a little under the quality measured on these 200 held-out phantoms (mass 0.64,
#: calcification 0.75, suspicious calcification 0.65, biopsy clip 0.84, implant 1.00, mean
#: concept AUROC 0.71). The issue's goal of 0.8 for masses and calcifications is not met yet.
FLOORS = {
    "mass": 0.6,
    "calcification": 0.7,
    "suspicious_calcification": 0.6,
    "biopsy_clip": 0.75,
    "implant": 0.95,
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
    assert quality["mean_concept_auroc"] >= 0.65
    assert quality["report_to_image_recall_at_5"] > 5 / 200 * 3  # well above chance


def test_train_command_writes_loadable_weights(tmp_path, capsys):
    out = tmp_path / "tiny.safetensors"
    code = main([
        "phantom", "train-dissector", "--out", str(out), "--images", "32", "--epochs", "1",
        "--batch-size", "16", "--quiet",
    ])  # fmt: skip
    assert code == 0 and "held-out zero-shot AUROC" in capsys.readouterr().out
    facts = json.loads(out.with_suffix(".json").read_text())
    assert facts["images"] == 32 and "auroc_per_family" in facts
    assert out.stat().st_size < 25e6
    dissector = load_dissector(f"phantom-clip:{out}")
    assert dissector.info["images"] == 32


def test_reduced_demo_m_labels_more_mammography_units_than_g(tmp_path, capsys):
    code = main([
        "demo", "--out", str(tmp_path / "demo"), "--images", "48", "--blocks", "[4-6].0",
        "--quiet", "--device", "cpu",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "G (" in printed and "M (" in printed
    import pandas as pd

    summary = pd.read_csv(tmp_path / "demo" / "summary.csv").set_index("variant")
    assert summary.loc["M", "mammography_units"] > summary.loc["G", "mammography_units"]
    for variant in ("G", "M"):
        assert (tmp_path / "demo" / variant / "neurons.csv").is_file()
