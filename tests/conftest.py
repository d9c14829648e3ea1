"""Shared fixtures: offline hubs, a planted probe, concept files, an isolated cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import planted


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAMMODISSECT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PLANTED_FAIL_AT", raising=False)
    for key in planted.CALLS:
        planted.CALLS[key] = 0


@pytest.fixture(scope="session")
def planted_probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("planted") / "probe"
    planted.write_probe(folder)
    return folder


@pytest.fixture()
def concept_file(tmp_path: Path) -> Path:
    path = tmp_path / "concepts.txt"
    path.write_text("\n".join(["# planted concepts", *planted.CONCEPTS, *planted.DISTRACTORS]))
    return path
