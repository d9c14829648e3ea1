"""The probe's image loader: each image decoded once (or read prepared from the cache),
preprocessed for every model that needs it, in probe order, batched deterministically.

Used by every pass over a probe (recording, grounding, the report's heatmaps, fine-tuning).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mammodissect.cache import PreparedImageCache
from mammodissect.errors import MammodissectError
from mammodissect.models.base import CacheablePreprocess, Preprocess, StagedPreprocess
from mammodissect.probe.dataset import Probe
from mammodissect.probe.images import read_image_with_info

__all__ = ["probe_batches"]


#: Reading facts kept per image (never patient tags): see probe.read_image_with_info.
_FACTS = ("format", "view", "laterality", "voi", "photometric", "inverted", "bits_stored")


def _prepare(recipe: Preprocess, image: np.ndarray) -> tuple[np.ndarray, Any]:
    """A recipe's cacheable stage; a plain callable has none (it runs whole in _finish)."""
    return recipe.prepare(image) if isinstance(recipe, StagedPreprocess) else (image, None)


def _finish(recipe: Preprocess, array: np.ndarray) -> torch.Tensor:
    return recipe.finish(array) if isinstance(recipe, StagedPreprocess) else recipe(array)


def _with_noise(arrays: list[np.ndarray], sigma: float, seed: list[int]) -> list[np.ndarray]:
    """Each prepared array plus Gaussian noise of ``sigma`` times its intensity range
    (max - min), clipped back to that range. Every array's noise is drawn afresh from
    ``default_rng(seed)``, so it depends on the array's shape only, never on the other
    recipes (a cached embedding must not depend on which target it was recorded with)."""
    noisy = []
    for array in arrays:
        clean = np.asarray(array, dtype=np.float32)
        lo, hi = float(clean.min()), float(clean.max())
        draw = np.random.default_rng(seed).standard_normal(clean.shape, dtype=np.float32)
        noisy.append(np.clip(clean + np.float32(sigma * (hi - lo)) * draw, lo, hi))
    return noisy


class _ProbeImages(Dataset):
    """Decode each probe image once (or find it prepared in the cache) and preprocess it
    for the models that need it, keeping reading facts and the target's geometry; with
    ``noise`` > 0, the prepared arrays get seeded Gaussian noise (see
    :func:`mammodissect.record.record`) after the cache, which only ever holds clean arrays."""

    def __init__(
        self,
        probe: Probe,
        rows: list[int],
        recipes: list[Preprocess],
        *,
        voi: str = "auto",
        image_cache: PreparedImageCache | None = None,
        noise: float = 0.0,
        noise_seed: int = 0,
    ):
        self.probe = probe
        self.rows = rows
        self.recipes = recipes
        self.voi = voi
        self.cache = image_cache
        self.noise = noise
        self.noise_seed = noise_seed
        self.keys = [
            {**recipe.prepare_key(), "voi": voi}
            if isinstance(recipe, CacheablePreprocess)
            else None
            for recipe in recipes
        ]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = self.rows[i]
        item = self.probe.items[row]
        try:
            arrays, facts = self._prepared(item.path)
            if self.noise > 0:
                arrays = _with_noise(arrays, self.noise, [self.noise_seed, row])
            inputs = [
                _finish(recipe, array) for recipe, array in zip(self.recipes, arrays, strict=True)
            ]
            return {"row": row, "inputs": inputs, "facts": facts}
        except Exception as err:  # a bad file is skipped with its reason, never fatal
            reason = str(err).replace(str(item.path), item.relpath) or type(err).__name__
            return {"row": row, "error": reason}

    def _prepared(self, path: Any) -> tuple[list[np.ndarray], dict[str, Any]]:
        hits = [
            self.cache.get(path, key) if self.cache is not None and key is not None else None
            for key in self.keys
        ]
        found = [hit for hit in hits if hit is not None]
        if found and len(found) == len(hits):
            return [hit[0] for hit in found], found[0][1]
        image, info = read_image_with_info(path, voi=self.voi)
        if float(image.max()) == float(image.min()):
            raise MammodissectError("image is constant (all pixels equal)")
        read = {key: info.get(key) for key in _FACTS}
        arrays, all_facts = [], []
        for recipe, key, hit in zip(self.recipes, self.keys, hits, strict=True):
            if hit is not None:
                arrays.append(hit[0])
                all_facts.append(hit[1])
                continue
            array, geometry = _prepare(recipe, image)
            facts = {**read, "geometry": geometry.to_dict() if geometry is not None else None}
            if self.cache is not None and key is not None:
                self.cache.put(path, key, array, facts)
            arrays.append(array)
            all_facts.append(facts)
        return arrays, all_facts[0]


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    good = [it for it in items if "error" not in it]
    inputs = (
        [torch.stack([it["inputs"][j] for it in good]) for j in range(len(good[0]["inputs"]))]
        if good
        else []
    )
    return {
        "rows": [it["row"] for it in items],
        "good": torch.tensor([it["row"] for it in good], dtype=torch.long),
        "inputs": inputs,
        "facts": {it["row"]: it["facts"] for it in good},
        "errors": {it["row"]: it["error"] for it in items if "error" in it},
    }


def probe_batches(
    probe: Probe,
    recipes: list[Preprocess],
    *,
    start: int = 0,
    rows: Sequence[int] | None = None,
    batch_size: int = 16,
    num_workers: int = 0,
    voi: str = "auto",
    image_cache: PreparedImageCache | None = None,
    noise: float = 0.0,
    noise_seed: int = 0,
) -> DataLoader:
    """The one deterministic loader: probe rows ``start..`` in order (or the given ``rows``,
    in their order), each image decoded once (or read prepared from ``image_cache``) and
    preprocessed by every recipe, in worker processes when ``num_workers > 0``, with
    Gaussian ``noise`` when > 0 (as :func:`record` defines it). Batches are dicts: ``rows``
    (all rows of the batch), ``good`` (rows that could be read), ``inputs`` (one stacked
    tensor per recipe), ``facts`` (per good row) and ``errors`` (reason per bad row)."""
    chosen = list(range(start, len(probe))) if rows is None else [int(r) for r in rows]
    dataset = _ProbeImages(
        probe, chosen, recipes, voi=voi, image_cache=image_cache, noise=noise,
        noise_seed=noise_seed,
    )  # fmt: skip
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
        collate_fn=_collate, persistent_workers=False,
    )  # fmt: skip
