"""Why labels flip under probe noise: which side of the similarity the noise moves.

For a run directory (say the demo's C-density, after ``mammodissect demo``), records the probe
again with Gaussian noise of ``--sigma`` (through ``record(noise=...)``, cached as
``mammodissect evaluate`` caches it) and reports, for the run's last ``--last`` layers, side by
side: the correlation of the noisy and clean pooled activations, that of the noisy and clean
dissector cosines, and the share of top-1 labels that survive with the noise on both sides,
on the activations only and on the cosines only. ``--sigma 1e-6`` is the sanity check: the
labels survive (all but the rare near-tie).

    python benchmarks/bench_noise.py runs/demo/C-density --probe runs/demo/probe/manifest.csv
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from mammodissect import concepts as concept_sets
from mammodissect.concepts.encode import score_matrix
from mammodissect.config import default_cache_dir
from mammodissect.evaluate.null import top1
from mammodissect.evaluate.source import open_run
from mammodissect.models.configured import load_models
from mammodissect.probe import load_probe
from mammodissect.record import RecordSettings, record
from mammodissect.similarity import get_similarity


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a run directory written by mammodissect run")
    parser.add_argument("--probe", required=True, help="the run's probe")
    parser.add_argument("--target", help="the run's target spec, when its weights are a file")
    parser.add_argument("--sigma", type=float, default=0.01, help="noise level (0.01)")
    parser.add_argument("--last", type=int, default=3, help="last layers reported (3)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (0, as evaluate's)")
    opts = parser.parse_args()

    source = open_run(opts.run)
    config = source.run.stored_config(probe=opts.probe, target=opts.target, quiet=True)
    target, dissector = load_models(config)
    concepts = concept_sets.load(source.run.path / "concepts.csv")
    with torch.inference_mode():
        texts, _ = concept_sets.encode_concepts(dissector, concepts, config.prompts,
                                                config.lowercase)  # fmt: skip
    texts = texts.float().cpu()
    similarity = get_similarity(source.run.info["similarity"]["name"])
    params = source.run.info["similarity"]["params"]
    settings = RecordSettings.of_run(
        config, "cpu", cache_root=default_cache_dir(), num_workers=0, top_k=5, strict=False,
        progress=False, noise=opts.sigma, noise_seed=opts.seed,
    )  # fmt: skip
    noisy = record(target, dissector, load_probe(opts.probe), source.layers, settings)
    at = np.searchsorted(noisy.rows, source.rows)
    clean_s = score_matrix(dissector, source.embeddings(), texts)
    noisy_s = score_matrix(dissector, noisy.embeddings()[at], texts)
    print(f"{source.run.name}, sigma {opts.sigma:g}: cosines correlate "
          f"{_correlation(clean_s.numpy(), noisy_s.numpy()):.3f} with the clean ones")  # fmt: skip
    print("layer | activations r | labels surviving: both / activations only / cosines only")
    for layer in source.layers[-opts.last :]:
        clean_a = torch.from_numpy(source.activations(layer))
        noisy_a = torch.from_numpy(noisy.activations(layer)[at])
        labels = top1(similarity, clean_s, clean_a, params)[1]
        kept = [
            float((top1(similarity, s, a, params)[1] == labels).mean())
            for s, a in ((noisy_s, noisy_a), (clean_s, noisy_a), (noisy_s, clean_a))
        ]
        print(f"{layer} | {_correlation(clean_a.numpy(), noisy_a.numpy()):.3f} | "
              + " / ".join(f"{k:.3f}" for k in kept))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
