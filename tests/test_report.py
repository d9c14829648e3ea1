"""``mammodissect report``: the HTML of run and compare directories, escaping, no absolute
paths, heatmaps where the unit fires, and the page's script in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammodissect import MammodissectError, dissect
from mammodissect.cli import main
from mammodissect.report import REPORT_FILE, report
from mammodissect.report.images import render_cards
from mammodissect.report.page import embed_json

import planted

EVIL = "<script>alert(1)</script> & co"
LAYERS = ("blocks.0", "blocks.1")
UNITS = 125  # per layer: 250 units, three pages of the unit table
SPICULATED_UNITS = 7


def _synthetic_run(folder: Path) -> Path:
    """A run directory written by hand: 2 layers x 125 units, 3 ranked concepts each; unit 3
    of blocks.1 has EVIL as best concept, 7 units carry 'spiculated margin' somewhere."""
    rng = np.random.default_rng(0)
    plain = ["fat", "skin", "pectoral muscle", "nipple", "clouds"]
    neurons, tops = [], []
    spiculated = 0
    for layer in LAYERS:
        for unit in range(UNITS):
            names = list(rng.choice(plain, 3, replace=False))
            if layer == "blocks.1" and unit == 3:
                names[0] = EVIL
            elif spiculated < SPICULATED_UNITS and unit % 9 == 1:
                names[spiculated % 3] = "spiculated margin"
                spiculated += 1
            for rank, name in enumerate(names, 1):
                control = name in ("clouds", EVIL)
                neurons.append({"layer": layer, "unit": unit, "rank": rank, "concept": name,
                                "score": round(float(rng.random()) + 1 / rank, 4),
                                "category": "cat " + name, "broad_category": "broad",
                                "control": control})  # fmt: skip
            tops.append({"layer": layer, "unit": unit, "rank": 1, "image_id": "img000",
                         "activation": 1.0})  # fmt: skip
    folder.mkdir(parents=True)
    pd.DataFrame(neurons).to_csv(folder / "neurons.csv", index=False)
    pd.DataFrame(tops).to_csv(folder / "top_images.csv", index=False)
    info = {"config": {"target": "timm:resnet18", "dissector": "planted", "probe": "probe"},
            "target": {"spec": "timm:resnet18"}, "dissector": {"spec": "planted & <b>x</b>"},
            "counts": {"images": 40, "images_used": 40, "layers": 2, "units": 2 * UNITS},
            "layers": [{"name": layer, "units": UNITS} for layer in LAYERS]}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(info))
    return folder


@pytest.fixture()
def synthetic_run(tmp_path: Path) -> Path:
    return _synthetic_run(tmp_path / "runs" / "synthetic")


def test_embed_json_cannot_close_the_script() -> None:
    text = embed_json({"a": "</script><!-- & >"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- & >"}


def test_run_report_escapes_and_keeps_no_path(synthetic_run: Path, tmp_path: Path) -> None:
    written = report(synthetic_run)
    assert written == synthetic_run / REPORT_FILE
    html = written.read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html  # never as markup, in the page or the JSON blob
    assert "planted &amp; &lt;b&gt;x&lt;/b&gt;" in html  # run.json strings are escaped
    assert str(tmp_path) not in html and str(Path.home()) + "/" not in html
    blob = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    data = json.loads(blob.group(1))
    assert len(data["rows"]) == 2 * UNITS and EVIL in data["concepts"]
    assert data["layers"] == list(LAYERS)
    # every unit gets a card (at most 300 units), concept-only without a probe
    assert len(data["cards"]) == 2 * UNITS
    assert html.count('<template id="card-') == 2 * UNITS
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in html  # the card lists it, escaped
    assert "without the run&#x27;s probe" in html


def test_cards_bounded_and_out_file(synthetic_run: Path, tmp_path: Path) -> None:
    neurons = pd.read_csv(synthetic_run / "neurons.csv")
    big = pd.concat([neurons.assign(unit=neurons["unit"] + k * UNITS) for k in range(2)])
    big.to_csv(synthetic_run / "neurons.csv", index=False)  # 500 units: cards for the best
    out = tmp_path / "elsewhere" / "r.html"
    report(synthetic_run, out=out, cards=3)
    html = out.read_text(encoding="utf-8")
    assert html.count('<template id="card-') == 3 * len(LAYERS)
    report(synthetic_run, out=out, cards=0)
    assert '<template id="card-' not in out.read_text(encoding="utf-8")


def test_scrub_removes_paths_but_not_from_images(tmp_path: Path) -> None:
    from mammodissect.report.build import _scrub

    text = f'<p>{tmp_path}/x</p><img src="data:image/png;base64,AA{tmp_path}==">'
    assert _scrub(text, [tmp_path], None) == (
        f'<p>{tmp_path.name}/x</p><img src="data:image/png;base64,AA{tmp_path}==">'
    )


def test_report_errors(tmp_path: Path) -> None:
    with pytest.raises(MammodissectError, match="neither neurons.csv"):
        report(tmp_path)
    with pytest.raises(MammodissectError, match="not a folder"):
        report(tmp_path / "missing")
    assert main(["report", str(tmp_path)]) == 2


def _compare_dir(root: Path) -> Path:
    folder = root / "compare"
    (folder / "figures").mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (40, 30), "white").save(folder / "figures" / "layer_means.png")
    tables = {
        "compare": {"position": 0, "aligned_layer": "blocks.0", "run": "A", "layer": "blocks.0",
                    "units": 5, "passing_global": 3, "mammography": 2, "control": 1,
                    "top_concepts": EVIL + " (2)"},
        "categories": {"run": "C", "baseline": "A", "broad_category": "b", "category": "c",
                       "control": False, "baseline_units": 1, "units": 3, "change": 2,
                       "relative_change": 2.0},
        "uncaptured": {"concept": "spiculated margin", "category": "margin",
                       "broad_category": "mass"},
    }  # fmt: skip
    for stem, row in tables.items():
        pd.DataFrame([row]).to_csv(folder / f"{stem}.csv", index=False)
    (folder / "compare.json").write_text(json.dumps(
        {"names": ["A", "C"], "runs": {"A": "synthetic", "C": "gone"}}))  # fmt: skip
    return folder


def test_compare_report_links_runs(synthetic_run: Path, tmp_path: Path) -> None:
    report(synthetic_run)
    folder = _compare_dir(synthetic_run.parent)
    assert main(["report", str(folder), "--quiet"]) == 0
    html = (folder / REPORT_FILE).read_text(encoding="utf-8")
    assert 'href="../synthetic/report.html"' in html
    assert "no report.html" in html  # the run C's folder has none
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)" in html
    assert html.count("data:image/png;base64,") == 1
    assert "spiculated margin" in html and str(tmp_path) not in html


def test_planted_report_heatmaps_peak_in_the_units_cell(
    tmp_path: Path, planted_probe: Path, concept_file: Path
) -> None:
    out = tmp_path / "planted_run"
    dissect("python:planted:make_target", "python:planted:make_dissector", planted_probe,
            concept_file, "features", out=out, quiet=True, num_workers=0,
            similarity="soft_wpmi", similarity_params={"top_k": 10})  # fmt: skip
    written = report(out, probe=planted_probe, device="cpu")
    html = written.read_text(encoding="utf-8")
    assert html.count('<template id="card-') == planted.N_FEATURES
    assert html.count("data:image/jpeg;base64,") == 2 * 5 * planted.N_FEATURES
    assert str(tmp_path) not in html and str(planted_probe) not in html
    # the heatmap's peak lies in the cell unit j detects
    from mammodissect.probe import load_probe

    probe = load_probe(planted_probe)
    tops = pd.read_csv(out / "top_images.csv", dtype={"image_id": str})
    wanted = {("features", j): [(r.image_id, r.activation) for r in
                                tops[tops["unit"] == j].itertuples()][:3]
              for j in range(planted.N_FEATURES)}  # fmt: skip
    pictures = render_cards(planted.make_target(), probe, wanted)
    for (_, j), pics in pictures.items():
        row, col = divmod(j, planted.GRID[1])
        assert len(pics) == 3
        for pic in pics:
            y, x = pic.peak
            assert row / planted.GRID[0] <= y <= (row + 1) / planted.GRID[0], (j, pic.peak)
            assert col / planted.GRID[1] <= x <= (col + 1) / planted.GRID[1], (j, pic.peak)
    with pytest.raises(MammodissectError, match="not the probe"):
        other = tmp_path / "other_probe"
        planted.write_probe(other, n=5)
        report(out, probe=other)


CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)


def _chromium(tmp_path: Path, *args: str) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}",
               "--window-size=1400,1000", *args]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _dom(tmp_path: Path, page: Path, fragment: str = "") -> str:
    url = page.as_uri() + (f"#{fragment}" if fragment else "")
    return _chromium(tmp_path, "--virtual-time-budget=3000", "--dump-dom", url)


def _count(dom: str) -> tuple[int, int, int]:
    match = re.search(r'id="count"[^>]*data-shown="(\d+)"[^>]*data-total="(\d+)"', dom)
    assert match, dom[:2000]
    body = re.search(r'<tbody id="unit-body">(.*?)</tbody>', dom, re.S).group(1)
    return int(match.group(1)), int(match.group(2)), body.count('class="unit-row')


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_in_headless_chromium(synthetic_run: Path, tmp_path: Path) -> None:
    page = report(synthetic_run)
    shot = tmp_path / "report.png"
    _chromium(tmp_path, "--virtual-time-budget=3000", f"--screenshot={shot}", page.as_uri())
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"))
    assert image.shape == (1000, 1400) and image.std() > 10  # text and table, not blank

    shown, total, rows = _count(_dom(tmp_path, page))
    assert (shown, total, rows) == (100, 2 * UNITS, 100)  # page 1 of 3
    shown, total, rows = _count(_dom(tmp_path, page, "page=3"))
    assert (shown, total, rows) == (50, 2 * UNITS, 50)
    shown, total, rows = _count(_dom(tmp_path, page, "layer=blocks.1"))
    assert (shown, total, rows) == (100, UNITS, 100)

    dom = _dom(tmp_path, page, "layer=blocks.0&sort=s1&desc=1")  # sorted by score 1, down
    body = re.search(r'<tbody id="unit-body">(.*?)</tbody>', dom, re.S).group(1)
    first = [float(v) for v in re.findall(r'<td class="num">([0-9.]+)</td>', body)[:2]]
    best = pd.read_csv(synthetic_run / "neurons.csv").query("rank == 1 and layer == 'blocks.0'")
    assert first[1] == pytest.approx(best["score"].max(), abs=1e-3)

    dom = _dom(tmp_path, page, "concept=spiculated")  # which units carry 'spiculated margin'?
    assert _count(dom) == (SPICULATED_UNITS, SPICULATED_UNITS, SPICULATED_UNITS)
    filtered = _count(_dom(tmp_path, page, "filter=spiculated"))
    assert filtered[1] == SPICULATED_UNITS  # the filter reads the top-3 concepts shown

    dom = _dom(tmp_path, page, "filter=alert&unit=blocks.1/3")
    assert _count(dom) == (1, 1, 1)
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in dom  # shown as text
    assert "<script>alert(1)" not in dom  # no injected element


def test_evaluated_run_shows_grounding(synthetic_run: Path) -> None:
    best = pd.read_csv(synthetic_run / "neurons.csv").query("rank == 1")
    evaluation = best[["layer", "unit"]].assign(
        grounded_concept=["mass <b>"] + ["ungrounded"] * (len(best) - 1),
        iou=0.05,
        above_null_99=True,
    )
    evaluation.to_csv(synthetic_run / "evaluation.csv", index=False)
    html = report(synthetic_run, cards=0).read_text(encoding="utf-8")
    assert "grounded concept" in html and "above null (99%)" in html
    blob = re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1)
    data = json.loads(blob)
    grounded = data["columns"].index("grounded")
    assert data["rows"][0][grounded] == "mass <b>" and "mass <b>" not in html
