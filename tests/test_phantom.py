"""The synthetic mammography world: phantoms, masks, labels, reports and probe files."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.measure import label, perimeter

from mammodissect.concepts.bundled import load_bundled
from mammodissect.errors import MammodissectError
from mammodissect.phantom import (
    DEFAULT_RATES,
    FAMILIES,
    FAMILY_PATTERNS,
    MANIFEST_COLUMNS,
    PHANTOM_CONCEPTS,
    Phantom,
    PhantomSettings,
    expected_rates,
    generate,
    read_masks,
    write_phantoms,
)
from mammodissect.probe import load_probe

N = 500
_NEGATION = re.compile(r"\b(no|not|without)\b", re.IGNORECASE)
_COMPOSITION_WORDS = {
    "A": "fat",
    "B": "scattered",
    "C": "heterogeneously dense",
    "D": "extremely dense",
}


@pytest.fixture(scope="module")
def world() -> list[Phantom]:
    return generate(N, seed=11)


def _sentences(report: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.;:])\s+", report) if s]


# --------------------------------------------------------------------------- vocabulary


def test_every_concept_is_an_exact_birads_string() -> None:
    birads = set(load_bundled("birads").concepts)
    missing = [c for c in PHANTOM_CONCEPTS if c not in birads]
    assert not missing
    families = set(PHANTOM_CONCEPTS.values())
    assert families == {*FAMILIES, "anatomy", "composition"}


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_phantoms_and_prefix_property() -> None:
    first = generate(8, seed=3)
    again = generate(8, seed=3)
    assert first == again
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.image, b.image)
        assert a.report == b.report
        assert all(np.array_equal(a.masks[c], b.masks[c]) for c in a.masks)
    assert generate(4, seed=3) == first[:4]
    assert generate(8, seed=3, workers=2) == first  # drawn by two processes: the same set
    other = generate(8, seed=4)
    assert all(not np.array_equal(a.pixels, b.pixels) for a, b in zip(first, other, strict=True))
    assert [p.report for p in first] != [p.report for p in other]


def test_phantom_fields(world: list[Phantom]) -> None:
    p = world[0]
    image = p.image
    assert image.dtype == np.float32 and image.shape == (320, 192)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert p.concepts == list(p.masks)
    assert all(p.masks[c].dtype == bool and p.masks[c].shape == (320, 192) for c in p.masks)
    assert p.view in ("CC", "MLO") and p.laterality in ("L", "R") and p.density in "ABCD"
    assert {"view", "laterality", "density", "birads", "findings", *FAMILIES} == set(p.labels)
    assert image[~p.masks["breast"]].max() == 0.0
    # packed masks stay small: far below one byte per pixel per mask
    assert p.masks.nbytes() < len(p.masks) * 320 * 192 / 4


def test_size_is_configurable() -> None:
    for size in ((160, 96), (480, 288)):
        phantoms = generate(3, seed=5, settings=PhantomSettings(size=size))
        for p in phantoms:
            assert p.image.shape == size
            breast = p.masks["breast"]
            assert all(not (p.masks[c] & ~breast).any() for c in p.masks)


# --------------------------------------------------------------------------- anatomy and masks


def test_finding_masks_lie_inside_the_breast(world: list[Phantom]) -> None:
    for p in world:
        breast = p.masks["breast"]
        for concept in p.masks:
            assert not (p.masks[concept] & ~breast).any(), (p.name, concept)


def test_anatomy_pectoral_and_nipple(world: list[Phantom]) -> None:
    width = 192
    for p in world:
        breast = p.masks["breast"]
        chest_col = 0 if p.laterality == "L" else width - 1
        assert breast[:, chest_col].any()  # the breast sits on the chest wall
        assert ("pectoral muscle" in p.masks) == (p.view == "MLO")
        if p.view == "MLO":
            ys, xs = np.nonzero(p.masks["pectoral muscle"])
            assert ys.min() == 0  # upper corner
            assert ys.mean() < 0.35 * 320
            assert (xs.mean() < width / 3) if p.laterality == "L" else (xs.mean() > 2 * width / 3)
        depth = np.abs(np.nonzero(breast.any(axis=0))[0] - chest_col).max()
        nipple_depth = np.abs(np.nonzero(p.masks["nipple"])[1] - chest_col).max()
        assert nipple_depth >= depth - (12 if p.labels["nipple_retraction"] else 1), p.name


def test_grouped_calcifications_match_their_record(world: list[Phantom]) -> None:
    checked = 0
    for p in world:
        for f in p.findings:
            if f.attrs.get("distribution") != "grouped":
                continue
            mask = p.masks["grouped calcifications"]
            assert label(mask, connectivity=2).max() == f.count >= 3
            ys, xs = np.nonzero(mask)
            assert np.hypot(ys - f.center[0], xs - f.center[1]).max() <= f.extent / 2
            assert f.extent * 240 / 320 <= 20.5  # BI-RADS: a group spans at most 2 cm
            checked += 1
    assert checked >= 8


def test_every_finding_record_bounds_its_masks(world: list[Phantom]) -> None:
    checked = 0
    for p in world:
        uses: dict[str, int] = {}
        for f in p.findings:
            for concept in f.concepts:
                uses[concept] = uses.get(concept, 0) + 1
        for f in p.findings:
            assert PHANTOM_CONCEPTS[f.concepts[0]] in (f.family, "calcification")
            for concept in f.concepts:
                assert concept in p.masks, (p.name, concept)
                if uses[concept] > 1:
                    continue
                ys, xs = np.nonzero(p.masks[concept])
                reach = np.hypot(ys - f.center[0], xs - f.center[1]).max()
                assert reach <= f.extent / 2 + 1e-6, (p.name, f.kind, concept)
                checked += 1
    assert checked > 300


def test_spiculated_margins_are_rougher_than_circumscribed(world: list[Phantom]) -> None:
    roughness: dict[str, list[float]] = {}
    for p in world:
        masses = [f for f in p.findings if f.family == "mass"]
        if len(masses) != 1:
            continue
        margin = masses[0].attrs["margin"]
        mask = p.masks[f"{margin} margin"]
        roughness.setdefault(margin, []).append(perimeter(mask) ** 2 / (4 * np.pi * mask.sum()))
    spiculated, circumscribed = roughness["spiculated"], roughness["circumscribed"]
    assert len(spiculated) >= 5 and len(circumscribed) >= 5
    assert min(spiculated) > max(circumscribed)
    assert np.median(roughness["microlobulated"]) > np.median(circumscribed)


def test_density_orders_the_dense_fraction(world: list[Phantom]) -> None:
    fractions: dict[str, list[float]] = {}
    for p in world:
        (composition,) = [c for c in p.masks if PHANTOM_CONCEPTS[c] == "composition"]
        share = p.masks.area("fibroglandular tissue") / p.masks.area(composition)
        fractions.setdefault(p.density, []).append(share)
    levels = [fractions[d] for d in "ABCD"]
    for lower, higher in itertools.pairwise(levels):
        assert max(lower) < min(higher)


def test_labels_agree_with_masks(world: list[Phantom]) -> None:
    for p in world:
        present = {PHANTOM_CONCEPTS[c] for c in p.masks}
        for family in FAMILIES:
            assert p.labels[family] == (family in present), (p.name, family)
        named = [f for f in FAMILIES if p.labels[f]]
        assert p.labels["findings"] == ("|".join(named) or "none")
        assert p.labels["birads"] in range(7)
        if not named:
            assert p.labels["birads"] == 1
        if p.labels["suspicious_calcification"]:
            assert p.labels["calcification"] and p.labels["birads"] in (4, 5, 6)
        drawn = {f.family for f in p.findings}
        assert drawn <= present


# --------------------------------------------------------------------------- reports


def test_reports_name_exactly_the_present_findings(world: list[Phantom]) -> None:
    for p in world:
        sentences = _sentences(p.report)
        composition = [s for s in sentences if _COMPOSITION_WORDS[p.density] in s.lower()]
        assert composition, p.report
        body = [s for s in sentences if "obscure small masses" not in s]
        for family, pattern in FAMILY_PATTERNS.items():
            hits = [s for s in body if re.search(pattern, s, re.IGNORECASE)]
            stated = [s for s in hits if not _NEGATION.search(s)]
            if p.labels[family]:
                assert stated, (family, p.report)
            else:
                assert not stated, (family, p.report)
        assert f"BI-RADS {p.labels['birads']}" in p.report


def test_reports_vary_in_phrasing(world: list[Phantom]) -> None:
    normal = [p.report for p in world if p.labels["findings"] == "none"]
    assert len(set(normal)) > 0.8 * len(normal)
    dense_c = {s for p in world if p.density == "C" for s in _sentences(p.report) if "obscure" in s}
    assert len(dense_c) >= 3


# --------------------------------------------------------------------------- frequencies


def test_default_frequencies(world: list[Phantom]) -> None:
    normal = np.mean([p.labels["findings"] == "none" for p in world])
    assert abs(normal - 0.4) < 0.06
    for family, rate in DEFAULT_RATES.items():
        observed = np.mean([p.labels[family] for p in world])
        assert abs(observed - rate) < 0.045, (family, observed)
        assert observed >= 0.06


def test_configured_frequencies() -> None:
    settings = PhantomSettings(normal_fraction=0.2, rates={"mass": 0.5, "implant": 0.0})
    assert expected_rates(settings)["mass"] == pytest.approx(0.5)
    phantoms = generate(160, seed=2, settings=settings)
    assert abs(np.mean([p.labels["mass"] for p in phantoms]) - 0.5) < 0.12
    assert abs(np.mean([p.labels["findings"] == "none" for p in phantoms]) - 0.2) < 0.1
    assert not any(p.labels["implant"] for p in phantoms)
    everyone = generate(5, seed=2, settings=PhantomSettings(normal_fraction=1.0))
    assert all(p.labels["findings"] == "none" for p in everyone)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rates": {"tumour": 0.1}},
        {"rates": {"suspicious_calcification": 0.3, "calcification": 0.2}},
        {"rates": {"mass": 1.5}},
        {"normal_fraction": 0.0, "rates": dict.fromkeys(DEFAULT_RATES, 0.01)},
        {"normal_fraction": 0.5, "rates": {"mass": 0.8}},
        {"size": (32, 20)},
        {"densities": (1.0, 0.0)},
    ],
)
def test_bad_settings_raise(kwargs: dict) -> None:
    with pytest.raises(MammodissectError):
        PhantomSettings(**kwargs)


def test_bad_arguments_raise() -> None:
    with pytest.raises(MammodissectError):
        generate(-1)
    with pytest.raises(MammodissectError):
        generate(2, seed=-3)
    with pytest.raises(MammodissectError, match="workers must be an integer >= 1, got 0"):
        generate(2, workers=0)


# --------------------------------------------------------------------------- files


def test_write_phantoms_round_trip(tmp_path: Path) -> None:
    phantoms = generate(6, seed=8)
    manifest = write_phantoms(tmp_path / "probe", phantoms)
    probe = load_probe(manifest)
    assert probe.image_ids == [p.name for p in phantoms]
    assert probe.labels is not None
    assert list(probe.labels.columns) == [
        c for c in MANIFEST_COLUMNS if c not in ("path", "image_id")
    ]
    for item, p in zip(probe, phantoms, strict=True):
        row = probe.labels.loc[item.image_id]
        for key in ("view", "laterality", "density", "birads", "findings", *FAMILIES):
            assert row[key] == p.labels[key], key
        assert row["report"] == p.report
        pixels = np.asarray(Image.open(item.path))
        assert np.array_equal(pixels, np.rint(p.image * 65535).astype(pixels.dtype))
        masks = read_masks(probe.root / row["mask_path"])
        assert list(masks) == p.concepts
        assert all(np.array_equal(masks[c], p.masks[c]) for c in masks)
    with pytest.raises(MammodissectError):
        write_phantoms(tmp_path / "twice", phantoms + phantoms[:1])


def test_write_command_draws_at_the_size_asked(tmp_path: Path, capsys) -> None:
    from mammodissect.cli import main

    out = tmp_path / "big"
    args = ["phantom", "write", "--out", str(out), "--images", "3", "--seed", "5"]
    assert main([*args, "--size", "128x80", "--workers", "2"]) == 0
    probe = load_probe(out / "manifest.csv")
    drawn = generate(3, seed=5, settings=PhantomSettings(size=(128, 80)))
    for item, phantom in zip(probe, drawn, strict=True):
        pixels = np.asarray(Image.open(item.path))
        assert pixels.shape == (128, 80)
        assert np.array_equal(pixels, np.rint(phantom.image * 65535).astype(pixels.dtype))
    capsys.readouterr()
    assert main([*args[:3], str(tmp_path / "bad"), *args[4:], "--size", "12x8"]) != 0
    assert "phantom size 12 x 8 is too small" in capsys.readouterr().err
