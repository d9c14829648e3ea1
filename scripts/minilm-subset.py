"""Write the small all-MiniLM-L6-v2 that phantom-clip's training needs, and check it.

    python scripts/minilm-subset.py .minilm            # then MAMMODISSECT_MINILM=.minilm

The texts it keeps word pieces for: every positive text target (concept names and synonyms),
the text negatives, the bundled ``birads+controls`` strings, every string literal of the
report writer, and the reports of ``--phantoms`` phantoms. The check: the reports of as many
phantoms of another seed are split into the same word pieces as by the full model, and their
embeddings agree (the smallest cosine between the two models' embeddings is printed).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

from mammodissect import concepts as concept_sets
from mammodissect.models.minilm_files import MINILM_ENV, write_minilm_subset
from mammodissect.models.phantom_clip import MiniLM
from mammodissect.phantom import PhantomSettings, generate, reports
from mammodissect.phantom.lexicon import text_negatives, training_texts
from mammodissect.phantom.train import embed_texts
from mammodissect.phantom.vocabulary import PHANTOM_CONCEPTS

#: Small phantoms: a report does not depend on the image size.
_SIZE = (160, 96)


def _literals() -> list[str]:
    tree = ast.parse(inspect.getsource(reports))
    return [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    ]


def _reports(n: int, seed: int, workers: int) -> list[str]:
    return [p.report for p in generate(n, seed, PhantomSettings(size=_SIZE), workers=workers)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write")
    parser.add_argument("--phantoms", type=int, default=4000, help="reports kept (4000)")
    parser.add_argument("--check", type=int, default=2000, help="reports checked (2000)")
    parser.add_argument("--workers", type=int, default=2, help="processes drawing phantoms")
    opts = parser.parse_args()
    started = time.perf_counter()
    texts = [
        *training_texts(sorted(PHANTOM_CONCEPTS))[0],
        *text_negatives(),
        *concept_sets.load("birads+controls").concepts,
        *_literals(),
        *_reports(opts.phantoms, 0, opts.workers),
    ]
    facts = write_minilm_subset(texts, opts.out)
    print(f"wrote {opts.out}: {facts}")
    checked = _reports(opts.check, 99_999, opts.workers)
    full = MiniLM()
    os.environ[MINILM_ENV] = opts.out
    small = MiniLM()
    pieces = [e.tokens for e in full.tokenizer.encode_batch(checked)]
    same = sum(
        e.tokens == p for e, p in zip(small.tokenizer.encode_batch(checked), pieces, strict=True)
    )
    cosine = float((embed_texts(full, checked) * embed_texts(small, checked)).sum(1).min())
    print(
        f"check on {len(checked)} reports of another seed: {same} split into the same word "
        f"pieces; smallest cosine to the full model {cosine:.5f} "
        f"({time.perf_counter() - started:.0f} s)"
    )
    return 0 if same == len(checked) and cosine > 0.999 else 1


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    sys.exit(main())
