"""mammodissect.evaluate: null baseline, mask grounding, label agreement (issue 7)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mammodissect import dissect, evaluate
from mammodissect.cli import main
from mammodissect.errors import MammodissectError
from mammodissect.evaluate.agreement import agreement_flags, bootstrap_mean
from mammodissect.evaluate.grounding import (
    IoUAccumulator,
    ThresholdSampler,
    frame_grid,
    iou,
    quantile_thresholds,
)
from mammodissect.evaluate.masks import MaskSource, box_mask
from mammodissect.evaluate.null import null_baseline
from mammodissect.probe import load_probe
from mammodissect.similarity import soft_wpmi

import planted

TARGET = "python:planted:make_target"
DISSECTOR = "python:planted:make_dissector"


class ShuffledDissector(planted.PlantedDissector):
    """The planted dissector with its concept embeddings shuffled: a deliberately wrong one."""

    def __init__(self) -> None:
        super().__init__()
        self.spec = "planted-dissector-shuffled"

    def encode_texts(self, texts):  # type: ignore[no-untyped-def]
        vectors = super().encode_texts(texts)
        order = torch.roll(torch.arange(len(texts)), 1)  # every concept gets another's vector
        return vectors[order]


def _boxed_probe(folder: Path):
    """The planted probe with a box per present feature, named by the feature's concept."""
    probe = load_probe(folder)
    present = planted.write_probe(folder.parent / "again", n=len(probe))  # same seed, same truth
    rows = []
    for item, features in zip(probe.items, present, strict=True):
        for j in np.flatnonzero(features):
            r, c = divmod(int(j), planted.GRID[1])
            cell = planted.CELL
            rows.append(
                {"image_id": item.image_id, "finding": planted.CONCEPTS[j],
                 "xmin": c * cell, "ymin": r * cell, "xmax": (c + 1) * cell,
                 "ymax": (r + 1) * cell}
            )  # fmt: skip
    return dataclasses.replace(probe, boxes=pd.DataFrame(rows))


# --- small pieces against hand-computed values ------------------------------------------


def test_boxes_with_roi_masks_use_the_mask_pixels(tmp_path: Path) -> None:
    """CBIS-DDSM-style boxes with a mask_path: the ROI's pixels (scaled to the image), not the
    rectangle; a missing mask file falls back to the box."""
    from PIL import Image

    from mammodissect.evaluate.masks import mask_source

    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 6), dtype=np.uint8)).save(tmp_path / "images" / name)
    roi = np.zeros((16, 12), dtype=np.uint8)  # stored at twice the image's size
    rr, cc = np.mgrid[:16, :12]
    roi[cc * 16 <= rr * 12] = 255  # a triangle under the diagonal
    Image.fromarray(roi).save(tmp_path / "roi.png")
    folder = load_probe(tmp_path / "images")
    ids = {Path(item.relpath).stem: item.image_id for item in folder.items}
    boxes = pd.DataFrame([
        {"image_id": ids["a"], "finding": "mass", "xmin": 0, "ymin": 0, "xmax": 6, "ymax": 8,
         "mask_path": "../roi.png"},
        {"image_id": ids["b"], "finding": "Mass|calcification", "xmin": 1, "ymin": 2,
         "xmax": 3, "ymax": 4, "mask_path": "gone.png"},
    ])  # fmt: skip
    probe = dataclasses.replace(folder, boxes=boxes)
    source = mask_source(probe, ["mass", "calcification"])
    rows = {Path(item.relpath).stem: i for i, item in enumerate(probe.items)}
    got = source.masks(rows["a"], (8, 6))
    assert list(got) == ["mass"]
    expected = roi[::2, ::2] > 0  # nearest neighbour at half the size: every other pixel
    assert (got["mass"] == expected).all() and 0 < got["mass"].sum() < 48  # not the box
    fallback = source.masks(rows["b"], (8, 6))
    assert set(fallback) == {"mass", "calcification"}
    assert fallback["mass"].sum() == 4 and fallback["mass"][2:4, 1:3].all()
    assert source.roi_masks == 1 and source.description == "ROI masks and boxes"


def test_mask_classes_group_concepts_with_the_same_regions(planted_probe: Path) -> None:
    probe = _boxed_probe(planted_probe)
    boxes = probe.boxes.copy()
    boxes["finding"] = boxes["finding"].replace({"planted feature 0": "planted feature 0|red"})
    probe = dataclasses.replace(probe, boxes=boxes)
    source = MaskSource(probe, planted.CONCEPTS + planted.DISTRACTORS, "boxes")
    for row in range(len(probe)):
        masks = source.masks(row, planted.SIZE)
        if "red" in masks:
            assert np.array_equal(masks["red"], masks["planted feature 0"])
    assert source.classes() == [["planted feature 0", "red"]]
    # one image where "red" marks another region: no longer the same answer
    boxes.loc[len(boxes)] = {**boxes.iloc[0].to_dict(), "finding": "red", "xmin": 20.0,
                             "ymin": 12.0, "xmax": 24.0, "ymax": 16.0}  # fmt: skip
    source = MaskSource(dataclasses.replace(probe, boxes=boxes), [*planted.CONCEPTS, "red"],
                        "boxes")  # fmt: skip
    for row in range(len(probe)):
        source.masks(row, planted.SIZE)
    assert source.classes() == []


def test_quantile_threshold_by_hand() -> None:
    values = np.array([np.arange(1.0, 201.0), -np.arange(1.0, 201.0)])
    # 200 values: position 0.995 * 199 = 198.005 -> 199 + 0.005 * (200 - 199)
    np.testing.assert_allclose(quantile_thresholds(values, 0.995), [199.005, -1.995])
    sampler = ThresholdSampler(2, total=200, max_samples=1000)
    sampler.add(torch.from_numpy(values.reshape(2, 100, 2, 1).transpose(1, 0, 2, 3).copy()))
    assert sampler.exact
    np.testing.assert_allclose(sampler.thresholds(0.995), [199.005, -1.995])
    sampled = ThresholdSampler(1, total=10_000, max_samples=2000, seed=1)
    sampled.add(torch.arange(10_000.0).reshape(1, 1, 100, 100))
    assert not sampled.exact
    assert abs(sampled.thresholds(0.9)[0] - 9000) < 150  # a uniform sample's quantile


def test_iou_by_hand() -> None:
    # unit 0 active on 4 pixels, 2 of them inside concept a's 3-pixel mask: 2 / (4 + 3 - 2)
    active = torch.zeros(2, 3, 3, dtype=torch.bool)
    active[0, 0, :] = True
    active[0, 1, 0] = True
    active[1, 2, 2] = True
    masks = {"a": torch.zeros(3, 3, dtype=torch.bool), "b": torch.zeros(3, 3, dtype=torch.bool)}
    masks["a"][0, 1:] = True
    masks["a"][2, 0] = True
    masks["b"][2, 2] = True
    acc = IoUAccumulator(2, ["a", "b"])
    acc.add(active, masks)
    acc.add(active, {})  # an image without masks: activations still count in the union
    np.testing.assert_allclose(acc.iou(), [[2 / (8 + 3 - 2), 0.0], [0.0, 1 / (2 + 1 - 1)]])
    np.testing.assert_allclose(iou(np.array([[0.0]]), np.array([0.0]), np.array([0.0])), [[0]])
    assert box_mask((2, 2), [(0, 0, 1, 2)]).tolist() == [[True, False], [True, False]]


def test_frame_grid_identity_and_flip() -> None:
    maps = torch.arange(6.0).reshape(1, 2, 3)
    grid, valid = frame_grid(None, (2, 3), (2, 3))
    sampled = torch.nn.functional.grid_sample(maps[None], grid, align_corners=False)[0]
    torch.testing.assert_close(sampled, maps)
    assert valid.all()
    geometry = {"orig_height": 2, "orig_width": 3, "crop_y0": 0, "crop_x0": 0, "crop_y1": 2,
                "crop_x1": 3, "content_height": 2, "content_width": 3, "pad_top": 0,
                "pad_left": 0, "out_height": 2, "out_width": 3, "flipped": True}  # fmt: skip
    grid, _ = frame_grid(geometry, (2, 3), (2, 3))
    sampled = torch.nn.functional.grid_sample(maps[None], grid, align_corners=False)[0]
    torch.testing.assert_close(sampled, maps.flip(-1))


def test_agreement_flags_and_bootstrap() -> None:
    table = pd.DataFrame(
        {"category": ["x", "x", "y"], "broad_category": ["B", "B", "B"]},
        index=pd.Index(["a", "b", "c"], name="concept"),
    )
    flags = agreement_flags([["a", "c"], ["b", "a"], ["c"]], ["a", "a", "a"], table)
    assert flags["top1_match"].tolist() == [True, False, False]
    assert flags["top5_match"].tolist() == [True, True, False]
    assert flags["same_category"].tolist() == [True, True, False]
    assert flags["same_broad_category"].tolist() == [True, True, True]
    assert flags["same_finding"].tolist() == [True, False, False]  # no groups: exact strings
    grouped = agreement_flags([["b"], ["c"], ["a"]], ["a", "a", "a"], table, {"a": "a", "b": "a"})
    assert grouped["same_finding"].tolist() == [True, False, True]
    assert grouped["top1_match"].tolist() == [False, False, True]
    # the bundled groups by default: another phrasing of the descriptor, not a narrower one
    bundled = agreement_flags(
        [["ovoid mass"], ["round mass"], ["well-circumscribed oval mass"]], ["oval mass"] * 3
    )
    assert bundled["same_finding"].tolist() == [True, False, False]
    mean, low, high = bootstrap_mean([1, 0, 1, 1], resamples=500, seed=0)
    assert mean == 0.75 and 0.0 <= low <= mean <= high <= 1.0
    assert bootstrap_mean([1, 0, 1, 1], resamples=500, seed=0) == (mean, low, high)  # seeded


# --- the null baseline --------------------------------------------------------------------


def test_null_random_activations_rarely_pass() -> None:
    """Activations unrelated to the images: about 1% of units pass the 99th percentile."""
    gen = torch.Generator().manual_seed(0)
    cosines = torch.randn(200, 50, generator=gen) * 0.1
    activations = torch.randn(200, 300, generator=gen)
    null = null_baseline(soft_wpmi, cosines, activations, {"top_k": 20}, seeds=5)
    fraction = float(null.above[99].mean())
    assert fraction <= 0.03, fraction  # measured: 0.017 (5 of 300)
    assert null.percentiles[99] > null.percentiles[95] > 0  # random scores are well above 0


@pytest.fixture()
def planted_runs(tmp_path: Path, planted_probe: Path, concept_file: Path) -> dict:
    probe = _boxed_probe(planted_probe)
    runs = {}
    for name, dissector in (("right", DISSECTOR), ("shuffled", ShuffledDissector())):
        out = tmp_path / name
        dissect(TARGET, dissector, probe, concept_file, "features", out=out, quiet=True,
                num_workers=0, similarity="soft_wpmi", similarity_params={"top_k": 10})  # fmt: skip
        runs[name] = out
    return {"probe": probe, **runs}


def test_planted_units_above_null_and_agreement(planted_runs: dict) -> None:
    right = evaluate(planted_runs["right"], probe=planted_runs["probe"], quiet=True)
    units = right.units
    assert units["above_null_99"].all()  # the planted units are far above the null
    assert (units["grounded_concept"] == planted.CONCEPTS).all()
    assert (units["iou"] >= 0.04).all()
    assert right.info["overall"]["top1_match"] == 1.0
    assert right.info["overall"]["cosine"] == pytest.approx(1.0, abs=1e-5)
    # the wrong dissector's labels name the wrong features: agreement at chance level
    wrong = evaluate(
        planted_runs["shuffled"], probe=planted_runs["probe"], dissector=ShuffledDissector(),
        quiet=True,
    )  # fmt: skip
    assert (wrong.units["grounded_concept"] == planted.CONCEPTS).all()  # same truth
    assert wrong.info["overall"]["top1_match"] <= 1 / 6
    assert wrong.info["overall"]["cosine"] < right.info["overall"]["cosine"] - 0.1
    layer = right.layers.iloc[0]
    assert layer["top1_match_low"] <= layer["top1_match"] <= layer["top1_match_high"]
    # the fair measure: the right labels are as well grounded as the best concept, the
    # shuffled ones name another cell (IoU 0 with the unit's maps)
    assert units["class_top1_match"].astype(bool).all()
    np.testing.assert_allclose(units["iou_ratio"].astype(float), 1.0)
    assert right.info["overall"]["iou_ratio"] == pytest.approx(1.0)
    assert wrong.info["overall"]["iou_ratio"] < 0.3
    assert right.info["equivalence_classes"] == {"masks": [], "images": []}
    # written tables, no absolute paths in the json
    run_dir = planted_runs["right"]
    text = (run_dir / "evaluation.json").read_text()
    assert str(run_dir.parent) not in text
    assert json.loads(text)["grounding"]["source"] == "boxes"
    assert list(pd.read_csv(run_dir / "evaluation.csv").columns)[:3] == ["layer", "unit", "label"]
    summary = pd.read_csv(run_dir / "summary.csv")
    assert summary["units_above_null"].tolist() == [6]
    # planted units (blurred copies of the boxes) are recovered by the right dissector only
    planted_table = pd.read_csv(run_dir / "planted.csv")
    assert planted_table["concept"].tolist() == planted.CONCEPTS
    assert right.info["planted"]["top1_recovery"] == 1.0
    assert wrong.info["planted"]["top1_recovery"] <= 1 / 6
    from mammodissect.report import report

    html = report(run_dir).read_text()
    assert "top-1 label is the planted concept</dt><dd>1.000" in html
    assert "grounded in boxes</dt><dd>6 units" in html


def test_random_weights_target_rarely_above_null(tmp_path: Path, planted_probe: Path,
                                                  concept_file: Path) -> None:  # fmt: skip
    """A randomly initialised CNN on the planted probe, scored against the planted dissector."""
    out = tmp_path / "random"
    dissect("python:helpers_models:tiny_cnn", DISSECTOR, planted_probe, concept_file,
            "features.2,features.5", out=out, quiet=True, num_workers=0, image_size="16x24",
            similarity="soft_wpmi", similarity_params={"top_k": 10})  # fmt: skip
    result = evaluate(out, quiet=True, bootstrap=0)
    fraction = float(result.units["above_null_99"].mean())
    assert fraction <= 0.25, fraction  # measured: 0.083 (2 of 24 units)
    assert "no probe given" in result.info["notes"][0]  # grounding skipped, not a crash


# --- CLI and errors -------------------------------------------------------------------------


def test_cli_round_trip_and_errors(tmp_path: Path, planted_probe: Path, concept_file: Path,
                                   capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    out = tmp_path / "run"
    argv = ["run", "--target", TARGET, "--dissector", DISSECTOR, "--probe", str(planted_probe),
            "--concepts", str(concept_file), "--layers", "features", "--out", str(out),
            "--quiet", "--num-workers", "0"]  # fmt: skip
    assert main(argv) == 0
    # a probe without masks or boxes: grounding skipped with a note
    code = main(["evaluate", str(out), "--probe", str(planted_probe), "--quiet",
                 "--bootstrap", "10"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "units above the 99th-percentile null" in printed
    assert "neither a mask_path column nor boxes" in printed
    for name in ("evaluation.csv", "evaluation_layers.csv", "evaluation.json"):
        assert (out / name).is_file()
    layers = pd.read_csv(out / "evaluation_layers.csv")
    assert {"null_p95", "null_p99", "threshold", "units_above_null_99"} <= set(layers.columns)
    # the cache gone: a clear error naming the fix
    shutil.rmtree(tmp_path / "cache" / "target")
    assert main(["evaluate", str(out), "--quiet"]) == 2
    message = capsys.readouterr().err
    assert "cache" in message and "rerun `mammodissect run`" in message
    with pytest.raises(MammodissectError, match="not found"):
        evaluate(tmp_path / "nowhere")


# --- similarity functions compared on the same grounding ------------------------------------


def test_similarity_table_right_beats_shuffled(planted_runs: dict) -> None:
    from mammodissect.evaluate.similarities import SIMILARITY_COLUMNS, compare_similarities

    names = ["soft_wpmi", "wpmi", "cos_similarity", "cos_similarity_cubed", "rank_reorder"]
    tables = {}
    for run, dissector in (("right", None), ("shuffled", ShuffledDissector())):
        evaluate(planted_runs[run], probe=planted_runs["probe"], dissector=dissector,
                 quiet=True, bootstrap=50)  # fmt: skip
        tables[run] = compare_similarities(
            planted_runs[run], similarities=names, top_ks=(5, 20), dissector=dissector,
            null_seeds=2, bootstrap=50,
        )  # fmt: skip
    right, wrong = tables["right"], tables["shuffled"]
    assert list(right.columns) == SIMILARITY_COLUMNS
    assert len(right) == 7  # two top_k each for soft_wpmi and wpmi, one for the other three
    assert right["setting"].is_unique and right["grounded_units"].eq(6).all()
    assert sorted(right.loc[right["similarity"] == "wpmi", "top_k"]) == [5, 20]
    assert (right["top1_match"].to_numpy() > wrong["top1_match"].to_numpy()).all()
    assert (right["top1_match_low"] <= right["top1_match"]).all()
    assert right["units_above_null_99"].notna().all()
    # the fair measure and the planted units, re-scored per setting from evaluation_truth.npz
    assert (right["iou_ratio"].to_numpy() > wrong["iou_ratio"].to_numpy()).all()
    assert right["planted_units"].eq(6).all()
    assert (right["planted_top1"].to_numpy() >= wrong["planted_top1"].to_numpy()).all()
    # measured: every function but rank-reorder recovers all six; rank-reorder, whose score
    # reorders a unit's two top images (5% of 40), one
    by_function = right.groupby("similarity")["planted_top1"].min()
    assert by_function.drop("rank_reorder").eq(1.0).all() and by_function["rank_reorder"] < 0.5
    run_dir = planted_runs["right"]
    written = pd.read_csv(run_dir / "similarities.csv")
    assert written["setting"].tolist() == right["setting"].tolist()
    png = run_dir / "similarities.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (run_dir / "similarities.svg").is_file()
    from matplotlib.image import imread

    pixels = imread(png)
    assert pixels[..., :3].std() > 0.05  # not blank
    with pytest.raises(MammodissectError, match="unknown similarity 'wpmii'"):
        compare_similarities(run_dir, similarities=["wpmii"])


def test_similarity_table_needs_an_evaluation(planted_runs: dict) -> None:
    from mammodissect.evaluate.similarities import compare_similarities

    with pytest.raises(MammodissectError, match="evaluation.csv is missing"):
        compare_similarities(planted_runs["right"], similarities=["wpmi"])


def test_cli_similarities(planted_runs: dict, capsys: pytest.CaptureFixture) -> None:
    run_dir = planted_runs["right"]  # no --probe: nothing grounded, agreement left empty
    code = main(["evaluate", str(run_dir), "--quiet", "--bootstrap", "10", "--null-seeds", "1",
                 "--similarities", "wpmi,cos_similarity", "--top-k", "5,20"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "wpmi (top_k=20): top-1 n/a" in printed and "similarities.csv" in printed
    assert len(pd.read_csv(run_dir / "similarities.csv")) == 3
    assert main(["evaluate", str(run_dir), "--quiet", "--similarities", "wpmi",
                 "--top-k", "five"]) == 2  # fmt: skip
    assert "--top-k must be comma-separated integers" in capsys.readouterr().err
    assert main(["evaluate", str(run_dir), "--quiet", "--similarities", "cosine"]) == 2
    assert "unknown similarity 'cosine'" in capsys.readouterr().err


def test_planted_units_take_image_sizes_from_the_run(
    planted_runs: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """images.csv holds every image's decoded size: planted units decode no image again."""
    import importlib

    module = importlib.import_module("mammodissect.evaluate.planted")

    def no_decoding(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("an image was decoded to learn its size")

    monkeypatch.setattr(module, "image_shape", no_decoding)
    result = evaluate(planted_runs["right"], probe=planted_runs["probe"], quiet=True,
                      bootstrap=0, noise=())  # fmt: skip
    assert result.info["planted"]["top1_recovery"] == 1.0
