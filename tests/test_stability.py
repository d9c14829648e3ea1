"""mammodissect.evaluate.stability: label survival under bootstrap and probe noise (issue 7)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mammodissect.cache import PreparedImageCache
from mammodissect.errors import MammodissectError
from mammodissect.evaluate.null import top1
from mammodissect.evaluate.stability import (
    NoiseStability,
    bootstrap_stability,
    noise_stability,
)
from mammodissect.models import ImagePreprocess, load_dissector, load_target
from mammodissect.models.base import Dissector, Target
from mammodissect.probe import Probe, load_probe
from mammodissect.probe.loader import probe_batches
from mammodissect.record import Recording, RecordSettings, record
from mammodissect.similarity import soft_wpmi

import planted

PARAMS = {"top_k": 10}
LAYER = "features"


def _dot(S: torch.Tensor, A: torch.Tensor, device: str = "cpu") -> torch.Tensor:
    """The simplest similarity: score[k, m] = sum over images of A[n, k] * S[n, m]."""
    return A.T @ S


def _models(target: str = "python:planted:make_target") -> tuple[Target, Dissector]:
    torch.manual_seed(0)  # a random-weights target is the same in every test
    return load_target(target), load_dissector("python:planted:make_dissector")


def _record(
    probe: Probe, root: Path, target: str = "python:planted:make_target", **options: Any
) -> Recording:
    model, dissector = _models(target)
    layers = [LAYER] if target.startswith("python:planted") else ["features.8"]
    settings = RecordSettings(cache_root=root, progress=False, batch_size=8, **options)
    recording = record(model, dissector, probe, layers, settings)
    assert recording is not None
    return recording


def _texts() -> torch.Tensor:
    return load_dissector("python:planted:make_dissector").encode_texts(
        planted.CONCEPTS + planted.DISTRACTORS
    )


def _planted(recording: Recording) -> tuple[torch.Tensor, torch.Tensor]:
    cosines = torch.from_numpy(recording.embeddings()) @ _texts().T
    return cosines, torch.from_numpy(recording.activations(LAYER))


# --- bootstrap ------------------------------------------------------------------------


def test_bootstrap_known_answer() -> None:
    # unit 0 fires on image 0 only, whose row of S prefers concept 1: it keeps that label
    # exactly when image 0 is drawn, with probability 1 - (1 - 1/n)^n; unit 1 fires on
    # every image and keeps concept 0 unless image 0 is half the draws
    n = 10
    cosines = torch.zeros(n, 2)
    cosines[0, 1] = 1.0
    cosines[1:, 0] = 1.0
    activations = torch.zeros(n, 2)
    activations[0, 0] = 1.0
    activations[:, 1] = 1.0
    kept = bootstrap_stability(_dot, cosines, activations, {}, [1, 0], reps=1000, quiet=True)
    assert kept[0] == pytest.approx(1 - (1 - 1 / n) ** n, abs=0.05)  # 3 sd
    assert kept[1] > 0.99
    again = bootstrap_stability(_dot, cosines, activations, {}, [1, 0], reps=50, quiet=True)
    np.testing.assert_array_equal(
        again, bootstrap_stability(_dot, cosines, activations, {}, [1, 0], reps=50, quiet=True)
    )
    wrong = bootstrap_stability(_dot, cosines, activations, {}, [0, 1], reps=50, quiet=True)
    assert wrong[1] == 0.0


def test_bootstrap_errors() -> None:
    cosines, activations = torch.rand(5, 3), torch.rand(5, 2)
    with pytest.raises(MammodissectError, match="resamples"):
        bootstrap_stability(_dot, cosines, activations, {}, [0, 0], reps=0)
    with pytest.raises(MammodissectError, match="3 labels for 2 units"):
        bootstrap_stability(_dot, cosines, activations, {}, [0, 0, 0])


def test_bootstrap_planted_stable_random_not(planted_probe: Path, tmp_path: Path) -> None:
    cosines, activations = _planted(_record(load_probe(planted_probe), tmp_path / "cache"))
    labels = top1(soft_wpmi, cosines, activations, PARAMS)[1]
    np.testing.assert_array_equal(labels, np.arange(planted.N_FEATURES))  # unit j: feature j
    kept = bootstrap_stability(soft_wpmi, cosines, activations, PARAMS, labels, quiet=True)
    assert kept.min() >= 0.9
    noise = torch.rand(activations.shape, generator=torch.Generator().manual_seed(0))
    labels = top1(soft_wpmi, cosines, noise, PARAMS)[1]
    random = bootstrap_stability(soft_wpmi, cosines, noise, PARAMS, labels, quiet=True)
    assert random.mean() < 0.6


# --- noise in the loader ----------------------------------------------------------------


def _bands(folder: Path, n: int = 3) -> Path:
    """16-bit images 48 x 64: a black band, a mid-grey band, a white band (with a mark)."""
    folder.mkdir(parents=True)
    for i in range(n):
        image = np.full((48, 64), 32768, dtype=np.uint16)
        image[:, :16] = 0
        image[:, 48:] = 65535
        image[i, 16 + i] = 40000  # every image differs a little
        Image.fromarray(image).save(folder / f"band{i}.png")
    return folder


RECIPES = [
    ImagePreprocess((48, 64), mean=(0.0,), std=(1.0,), channels=1, name="full"),
    ImagePreprocess((24, 32), mean=(0.0,), std=(1.0,), channels=1, name="half"),
]


def _inputs(probe: Probe, **options: Any) -> list[torch.Tensor]:
    """Every row's inputs per recipe, rows in probe order, however the loader batched."""
    batches = list(probe_batches(probe, RECIPES, **options))
    rows = np.concatenate([b["good"].numpy() for b in batches])
    return [torch.cat([b["inputs"][j] for b in batches])[np.argsort(rows)] for j in range(2)]


def _assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_noise_definition(tmp_path: Path) -> None:
    probe = load_probe(_bands(tmp_path / "bands"))
    clean = _inputs(probe)
    _assert_same(_inputs(probe, noise=0.0, noise_seed=3), clean)
    noisy = _inputs(probe, noise=0.02, batch_size=1)
    _assert_same(_inputs(probe, noise=0.02, batch_size=2, rows=[2, 1, 0]), noisy)
    other = _inputs(probe, noise=0.02, noise_seed=1)
    assert not torch.equal(other[0], noisy[0])
    # sigma is a fraction of the intensity range at each model's input size, clipped to it
    for got, want, mid in zip(noisy, clean, (slice(18, 46), slice(10, 22)), strict=True):
        assert got.min() == 0.0 and got.max() == 1.0
        diff = (got - want)[..., mid].flatten()
        assert abs(float(diff.mean())) < 0.003
        assert float(diff.std()) == pytest.approx(0.02, rel=0.1)


def test_prepared_cache_stays_clean(tmp_path: Path) -> None:
    probe = load_probe(_bands(tmp_path / "bands"))
    cache = PreparedImageCache(tmp_path / "cache")
    noisy = _inputs(probe, noise=0.05, image_cache=cache)
    assert any((tmp_path / "cache" / "images").rglob("*.npy"))  # clean arrays were stored
    _assert_same(_inputs(probe, image_cache=cache), _inputs(probe))
    _assert_same(_inputs(probe, noise=0.05, image_cache=cache), noisy)


# --- noise in the recording -----------------------------------------------------------


def test_noise_fingerprints_and_reuse(planted_probe: Path, tmp_path: Path) -> None:
    probe, root = load_probe(planted_probe), tmp_path / "cache"
    clean = _record(probe, root)
    calls = planted.CALLS["target"]
    same = _record(probe, root, noise=0.0, noise_seed=5)
    assert same.stats["target_cache"] == same.stats["dissector_cache"] == "reused"
    assert same.target_store.directory == clean.target_store.directory
    noisy = _record(probe, root, noise=0.01)
    assert noisy.stats["target_cache"] == noisy.stats["dissector_cache"] == "recorded"
    assert noisy.target_store.directory != clean.target_store.directory
    assert noisy.dissector_store.directory != clean.dissector_store.directory
    gap = np.abs(noisy.activations(LAYER) - clean.activations(LAYER))
    assert 0 < gap.max() < 0.05
    calls = planted.CALLS["target"]
    again = _record(probe, root, noise=0.01)
    assert again.stats["target_cache"] == again.stats["dissector_cache"] == "reused"
    assert planted.CALLS["target"] == calls  # no forward pass
    np.testing.assert_array_equal(again.activations(LAYER), noisy.activations(LAYER))
    seeded = _record(probe, root, noise=0.01, noise_seed=1)
    assert seeded.target_store.directory != noisy.target_store.directory
    with pytest.raises(MammodissectError, match="noise"):
        _record(probe, root, noise=-0.1)


def test_dissector_noise_does_not_depend_on_the_target(planted_probe: Path, tmp_path: Path) -> None:
    # the dissector cache is shared by every target, so its noisy input must be its own
    probe = load_probe(planted_probe)
    alone = _record(probe, tmp_path / "a", noise=0.02)
    paired = _record(probe, tmp_path / "b", "python:helpers_models:tiny_cnn", noise=0.02)
    assert not paired.stats["shared_forward"]
    np.testing.assert_array_equal(alone.embeddings(), paired.embeddings())


# --- noise stability ------------------------------------------------------------------


def _stability(
    probe: Probe,
    root: Path,
    rows: np.ndarray,
    labels: dict[str, np.ndarray],
    target: str = "python:planted:make_target",
    **options: Any,
) -> dict[float, NoiseStability]:
    model, dissector = _models(target)
    layers = list(labels)
    return noise_stability(
        model, dissector, probe, rows, layers, _texts(), soft_wpmi, PARAMS, labels,
        settings=RecordSettings(cache_root=root, batch_size=8, progress=False), **options,
    )  # fmt: skip


def test_noise_stability_planted(planted_probe: Path, tmp_path: Path) -> None:
    probe, root = load_probe(planted_probe), tmp_path / "cache"
    clean = _record(probe, root)
    rows = clean.rows[::2]  # a subset, in the run's order
    cosines, activations = _planted(clean)
    labels = top1(soft_wpmi, cosines[::2], activations[::2], PARAMS)[1]
    results = _stability(probe, root, rows, {LAYER: labels})
    assert list(results) == [0.01, 0.02]
    for result in results.values():
        assert result.rate(LAYER) == 1.0  # the planted features dwarf the noise
        np.testing.assert_array_equal(result.labels[LAYER], labels)
        assert result.caches == {"target": "recorded", "dissector": "recorded"}
    calls = planted.CALLS["target"]
    rolled = _stability(probe, root, rows, {LAYER: np.roll(labels, 1)}, sigmas=(0.01,))
    assert not rolled[0.01].survived[LAYER].any()
    assert rolled[0.01].caches == {"target": "reused", "dissector": "reused"}
    assert planted.CALLS["target"] == calls


def test_noise_flips_weak_units(planted_probe: Path, tmp_path: Path) -> None:
    # a random-weights target's labels are weak: more noise, fewer survivors
    probe, root = load_probe(planted_probe), tmp_path / "cache"
    clean = _record(probe, root, "python:helpers_models:tiny_cnn")
    cosines = torch.from_numpy(clean.embeddings()) @ _texts().T
    activations = torch.from_numpy(clean.activations("features.8"))
    labels = {"features.8": top1(soft_wpmi, cosines, activations, PARAMS)[1]}
    results = _stability(
        probe, root, clean.rows, labels, "python:helpers_models:tiny_cnn", sigmas=(0.01, 0.3)
    )
    assert results[0.01].rate("features.8") > results[0.3].rate("features.8")
    assert results[0.3].rate("features.8") < 0.5


def test_noise_stability_errors(planted_probe: Path, tmp_path: Path) -> None:
    folder = tmp_path / "probe"
    folder.mkdir()
    for path in sorted(planted_probe.glob("*.png"))[:12]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "img000.png").write_bytes(b"not a png")
    probe = load_probe(folder)
    labels = {LAYER: np.arange(planted.N_FEATURES)}
    with pytest.raises(MammodissectError, match=r"1 of the run's images \(img000.png"):
        _stability(probe, tmp_path / "cache", np.arange(len(probe)), labels, sigmas=(0.01,))
    with pytest.raises(MammodissectError, match="must be > 0"):
        _stability(probe, tmp_path / "cache", np.arange(1, 12), labels, sigmas=(0.0,))
    with pytest.raises(MammodissectError, match="5 labels for 6 units"):
        _stability(probe, tmp_path / "cache", np.arange(1, 12), {LAYER: np.arange(5)})


def test_evaluate_writes_stability_and_reuses_noisy_caches(
    planted_probe: Path, tmp_path: Path, concept_file: Path
) -> None:
    from mammodissect import dissect, evaluate

    out = tmp_path / "run"
    dissect("python:planted:make_target", "python:planted:make_dissector", planted_probe,
            concept_file, LAYER, out=out, quiet=True, num_workers=0,
            similarity="soft_wpmi", similarity_params=PARAMS)  # fmt: skip
    first = evaluate(out, probe=planted_probe, quiet=True, bootstrap=0, stability_reps=10)
    units = first.units
    assert units["bootstrap_survival"].tolist() == [1.0] * planted.N_FEATURES
    assert units["noise_0.01_survival"].all() and units["noise_0.02_survival"].all()
    assert first.info["stability"] == {
        "bootstrap_survival": 1.0, "noise_0.01_survival": 1.0, "noise_0.02_survival": 1.0
    }  # fmt: skip
    layers = pd.read_csv(out / "evaluation_layers.csv")
    assert layers["noise_0.02_survival"].tolist() == [1.0]
    calls = planted.CALLS["target"]
    again = evaluate(out, probe=planted_probe, quiet=True, bootstrap=0, stability_reps=10)
    assert planted.CALLS["target"] == calls  # both noise levels came from their caches
    assert again.info["stability"] == first.info["stability"]
    # without a probe: the bootstrap only, and a note
    bare = evaluate(out, quiet=True, bootstrap=0, stability_reps=10)
    assert list(bare.info["stability"]) == ["bootstrap_survival"]
    assert any("noise not measured" in n for n in bare.info["notes"])
