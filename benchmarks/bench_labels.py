"""Are the labels right where the truth is known? Planted units on phantoms, labelled with the
dissector, with the dissector restricted by its audit, and with the annotations as S.

Planted units (:mod:`mammodissect.evaluate.planted`: one known detector per masked concept) are
scored with the run default's similarity (``--similarity``; correlation) against S from

- ``dissector``: phantom-clip over the whole concept set (``birads+controls``);
- ``audit>=X``: the same, scored only over the concepts its audit sees at AUROC >= X (controls
  unless flagged for leakage), as ``run --detectability --min-auroc X`` does; a planted unit
  whose concept the restriction drops counts as a miss in the ``top1``/``top5`` columns, and
  ``kept_top1`` gives the rate among the units whose concept stays;
  ``finding`` is top-1 counted by finding: the label is the planted concept or another
  wording of it (its same-finding group, :mod:`mammodissect.concepts.findings`);
- ``annotations``: the annotation dissector (S = the probe's own annotations): the ceiling.

The audit is made on the probe itself (as a user would run it) unless ``--audit-seed`` names
another phantom seed: then the restriction is chosen on phantoms the measured probe does not
hold (a held-out audit). Everything runs on the CPU and is cached like a run (in the default
cache folder, ``$MAMMODISSECT_CACHE_DIR``).

    python benchmarks/bench_labels.py --seed 2026                    # the demo's probe
    python benchmarks/bench_labels.py --seed 7777 --audit-seed 2026  # another seed, held-out audit
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pandas as pd
import torch

from mammodissect import audit
from mammodissect import concepts as concept_sets
from mammodissect.analysis.detectability import Detectability
from mammodissect.concepts.encode import score_matrix
from mammodissect.config import RunConfig, default_cache_dir
from mammodissect.evaluate.masks import mask_source
from mammodissect.evaluate.planted import PlantedLayer, plant, recovery
from mammodissect.models import load_dissector
from mammodissect.models.annotation_models import annotation_truth
from mammodissect.models.preprocess import parse_image_size
from mammodissect.phantom import PhantomSettings, generate, write_phantoms
from mammodissect.probe import load_probe
from mammodissect.record import RecordSettings, record_embeddings
from mammodissect.similarity import SIMILARITIES, get_similarity


def _probe(folder: Path, images: int, seed: int, settings: PhantomSettings) -> Path:
    size = "" if settings.size == PhantomSettings().size else "-{}x{}".format(*settings.size)
    manifest = folder / f"phantoms-s{seed}-n{images}{size}" / "manifest.csv"
    if not manifest.is_file():
        write_phantoms(manifest.parent, generate(images, seed=seed, settings=settings))
    return manifest


def _sublayer(layer: PlantedLayer, keep: list[bool]) -> PlantedLayer:
    picked = [j for j, k in enumerate(keep) if k]
    return PlantedLayer(
        [layer.concepts[j] for j in picked], [layer.images[j] for j in picked],
        layer.activations[:, picked], layer.settings, layer.notes,
    )  # fmt: skip


def _score(layer, s, names, controls, all_units, similarity, units_csv=None):
    """Recovery over the layer's units; misses for planted concepts the restriction dropped.
    With ``units_csv``, the per-unit table (each planted concept, its label, rank) goes there."""
    kept = [c in set(names) for c in layer.concepts]
    sub = _sublayer(layer, kept)
    found = recovery(sub, s, names, similarity, {}, bootstrap=0)
    table = found.table
    if units_csv:
        table.to_csv(units_csv, index=False)
    control_labels = int(table["label"].map(lambda c: controls.get(c, False)).sum())
    return {
        "concepts": len(names),
        "units_kept": f"{len(sub.concepts)}/{all_units}",
        "top1": round(float(table["top1_match"].sum()) / all_units, 3),
        "finding": round(float(table["same_finding"].sum()) / all_units, 3),
        "top5": round(float(table["top5_match"].sum()) / all_units, 3),
        "kept_top1": round(float(table["top1_match"].mean()), 3) if len(table) else np.nan,
        "control_labels": control_labels,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=2026, help="probe phantoms' seed (2026)")
    parser.add_argument("--images", type=int, default=300, help="phantoms in the probe (300)")
    parser.add_argument("--audit-seed", type=int, help="audit on phantoms of this seed instead")
    parser.add_argument(
        "--phantom-size", metavar="HxW",
        help="draw the phantoms at this size (default 320x192; a dissector trained at another "
        "input size is measured on phantoms of its size)",
    )  # fmt: skip
    parser.add_argument("--dissector", default="phantom-clip")
    parser.add_argument("--concepts", default="birads+controls")
    parser.add_argument("--work", help="folder for the phantoms (default: a temporary one)")
    parser.add_argument(
        "--units", metavar="CSV", help="write the dissector row's per-unit table (label, rank)"
    )
    parser.add_argument(
        "--similarity", default=RunConfig.similarity,
        help=f"the function of the main table (default: the run default, {RunConfig.similarity})",
    )  # fmt: skip
    parser.add_argument(
        "--similarities", action="store_true",
        help="also: every registered similarity function (its defaults) with the dissector's S "
        "and with the annotations as S",
    )  # fmt: skip
    opts = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(opts.work or tmp)
        drawn = PhantomSettings(size=parse_image_size(opts.phantom_size) or PhantomSettings().size)
        manifest = _probe(work, opts.images, opts.seed, drawn)
        audited = _probe(work, opts.images, opts.audit_seed, drawn) if opts.audit_seed else manifest
        concepts = concept_sets.load(opts.concepts)
        dissector = load_dissector(opts.dissector)
        found = audit(dissector, audited, concepts, bootstrap=0, quiet=True, num_workers=0)
        detect = Detectability(
            found.detectability, frozenset(found.info["flagged_controls"]), "audit"
        )
        probe = load_probe(manifest)
        embedded = record_embeddings(
            dissector, probe, RecordSettings(cache_root=default_cache_dir(), progress=False)
        )
        rows = embedded.rows.tolist()
        texts, _ = concept_sets.encode_concepts(dissector, concepts)
        s = score_matrix(dissector, embedded.embeddings(), texts)
        names = list(concepts.concepts)
        layer = plant(probe, rows, mask_source(probe, names), names, pooling="mean", quiet=True)
        controls = dict(zip(names, [c is True for c in concepts.control], strict=True))
        units = len(layer.concepts)
        main_function = get_similarity(opts.similarity)
        results = {"dissector": _score(layer, s, names, controls, units, main_function, opts.units)}
        for threshold in (0.8, 0.9):
            keep, _ = detect.visible(concepts, threshold)
            kept = [c for c, k in zip(names, keep, strict=True) if k]
            results[f"audit>={threshold}"] = _score(
                layer, s[:, torch.from_numpy(keep)], kept, controls, units, main_function
            )
        present, kept, _ = annotation_truth(probe, rows, names)
        results["annotations"] = _score(layer, present, kept, controls, units, main_function)
        by_function = {}
        for name in SIMILARITIES if opts.similarities else ():
            function = get_similarity(name)
            dissected = _score(layer, s, names, controls, units, function)
            ceiling = _score(layer, present, kept, controls, units, function)
            by_function[name] = {
                "dissector_top1": dissected["top1"], "dissector_finding": dissected["finding"],
                "dissector_top5": dissected["top5"],
                "dissector_controls": dissected["control_labels"],
                "annotations_top1": ceiling["top1"], "annotations_top5": ceiling["top5"],
            }  # fmt: skip
    summary = found.info["summary"]
    where = (
        f"audit on seed {opts.audit_seed} (held out)" if opts.audit_seed else "audit on the probe"
    )
    print(
        f"probe: {opts.images} phantoms of {drawn.size[0]}x{drawn.size[1]}, seed {opts.seed}; "
        f"{where}; {opts.dissector} over "
        f"{opts.concepts}; {units} planted units; {opts.similarity} with its defaults"
    )
    print(
        f"audit: {found.info['counts']['annotated_concepts']} annotated concepts, median AUROC "
        f"{summary['median_auroc']}, share >= 0.9 {summary['share_auroc_at_least_0.9']}, >= 0.8 "
        f"{summary['share_auroc_at_least_0.8']}; controls flagged for leakage "
        f"{found.info['counts']['flagged_controls']} of {found.info['counts']['controls']} "
        f"(median leakage {summary['median_leakage']})"
    )
    print(pd.DataFrame(results).T.to_string())
    if by_function:
        print("planted units by similarity function (each with its defaults):")
        print(pd.DataFrame(by_function).T.to_string())
    print(f"({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
