"""Running top-k, the row store, concept sets and the run configuration."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammodissect.cache import RowStore, fingerprint
from mammodissect.concepts import ConceptSet, load
from mammodissect.config import RunConfig
from mammodissect.errors import MammodissectError
from mammodissect.topk import RunningTopK


def test_running_topk_equals_a_stable_sort_of_the_whole_matrix():
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 5, size=(57, 9)).astype(np.float32)  # many ties
    expected = torch.sort(torch.from_numpy(matrix), dim=0, descending=True, stable=True)
    for batch in (1, 4, 13, 57):
        top = RunningTopK(6, 9)
        for start in range(0, 57, batch):
            rows = torch.arange(start, min(start + batch, 57))
            top.update(torch.from_numpy(matrix[start : start + batch]), rows)
        assert torch.equal(top.indices, expected.indices[:6])
        assert torch.equal(top.values, expected.values[:6])


def test_running_topk_survives_a_state_round_trip_and_skipped_rows():
    matrix = np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32)
    rows = np.array([r for r in range(30) if r % 7], dtype=np.int64)
    full = RunningTopK.from_matrix(matrix, 5, rows, chunk=8)
    half = RunningTopK.from_matrix(matrix, 5, rows[:10])
    resumed = RunningTopK.from_state(5, half.state())
    resumed.update(torch.from_numpy(matrix[rows[10:]]), torch.from_numpy(rows[10:]))
    assert torch.equal(resumed.indices, full.indices)
    assert not set(full.indices.flatten().tolist()) & {0, 7, 14, 21, 28}


def test_row_store_persists_rows_progress_and_extras(tmp_path):
    parts = {"model": "x", "layers": ["a"]}
    store = RowStore(tmp_path, "target", parts, n_rows=10)
    assert store.rows_done == 0 and not store.complete
    store.allocate({"a": 3})
    store.write("a", np.arange(4), np.ones((4, 3), np.float32) * 2)
    store.skipped[2] = "unreadable"
    store.extra["a.values"] = np.arange(6, dtype=np.float32).reshape(2, 3)
    store.commit(4)
    again = RowStore(tmp_path, "target", parts, n_rows=10)
    assert again.rows_done == 4 and again.skipped == {2: "unreadable"}
    assert np.array_equal(again.array("a")[:4], np.full((4, 3), 2, np.float32))
    assert np.array_equal(again.extra["a.values"], store.extra["a.values"])
    other = RowStore(tmp_path, "target", {**parts, "layers": ["b"]}, n_rows=10)
    assert other.rows_done == 0 and other.directory != again.directory


def test_row_store_ignores_a_corrupt_state_and_starts_afresh(tmp_path):
    store = RowStore(tmp_path, "dissector", {"m": 1}, n_rows=3)
    store.allocate({"embedding": 2})
    store.commit(3)
    (store.directory / "state.npz").write_bytes(b"garbage")
    assert RowStore(tmp_path, "dissector", {"m": 1}, n_rows=3).rows_done == 0


def test_fingerprint_is_order_independent_and_value_sensitive():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_concepts_from_text_file(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("# header\nmass\n\n  spiculated margin  \nmass\nred\n")
    concepts = load(path)
    assert concepts.concepts == ("mass", "spiculated margin", "red")
    frame = concepts.to_frame()
    assert list(frame.columns) == ["concept", "category", "broad_category", "control"]
    assert len(frame) == 3 and not concepts.has_categories
    assert load(["a", "b"]).concepts == ("a", "b")


def test_empty_concepts_are_an_error(tmp_path):
    with pytest.raises(MammodissectError, match="is empty"):
        ConceptSet.from_strings(["", "  "])


def test_config_rejects_bad_values():
    base = dict(target="t:x", dissector="d:y", probe="p", concepts="c", layers="l")
    assert RunConfig(**base).similarity == "correlation"  # the default, chosen by evidence
    with pytest.raises(MammodissectError, match="pooling 'median' unknown"):
        RunConfig(**base, pooling="median")
    with pytest.raises(MammodissectError, match="device 'tpu' unknown"):
        RunConfig(**base, device="tpu")
    with pytest.raises(MammodissectError, match="did you mean 'top_images'"):
        RunConfig.from_mapping({**base, "top_image": 3})


def test_config_public_form_has_no_folders():
    config = RunConfig(
        target="timm:r?weights=/site/secret/w.pth",
        dissector="d:y",
        probe="/site/secret/probe",
        concepts="/site/c.txt",
        layers="l",
        out="/site/runs/r1",
    )
    text = repr(config.public())
    assert "/site" not in text and "w.pth" in text and "probe" in text


def test_verbs_are_callable_and_their_packages_stay_importable():
    import importlib

    import mammodissect

    for verb, module in (("evaluate", "planted"), ("finetune", "train"), ("report", "build")):
        package = getattr(mammodissect, verb)
        assert callable(package) and package.__name__ == f"mammodissect.{verb}"
        assert importlib.import_module(f"mammodissect.{verb}.{module}").__name__.endswith(module)
    import mammodissect.evaluate.planted as planted_units

    assert planted_units.plant is not None
    assert mammodissect.evaluate.sanity_checks.__name__ == "sanity_checks"
    assert mammodissect.evaluate.__verb__ is mammodissect.evaluate.evaluate


_IMPORT_EACH_FIRST = """
import importlib, pkgutil, sys
import mammodissect
names = sorted(m.name for m in pkgutil.walk_packages(mammodissect.__path__, "mammodissect.")
               if not m.name.endswith("__main__"))  # __main__ runs the CLI
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "mammodissect" or m.startswith("mammodissect.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as err:
        failed.append(f"{name}: {type(err).__name__}: {err}")
print(len(names))
print("\\n".join(failed))
"""


def test_every_module_imports_first_without_a_cycle():
    """Each module imported first into a fresh package (no import-order luck)."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH_FIRST], capture_output=True, text=True, check=True
    )
    count, *failures = done.stdout.strip().split("\n")
    assert int(count) > 100 and not [f for f in failures if f], failures
