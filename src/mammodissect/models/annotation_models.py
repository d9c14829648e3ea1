"""``annotations``: a dissector that scores images from the probe's own annotations.

Instead of a vision-language model's cosines, S[i, m] is 1 where probe image i is annotated with
concept m and 0 where it is annotated without it (see :mod:`mammodissect.probe.annotations` for
what counts as an annotation and how :class:`~mammodissect.probe.annotations.AnnotationMap`
maps it onto concept strings). It is the ceiling of what a dissector could tell the similarity
function, and a labelling mode in its own right (Network-Dissection-style labels for annotated
data with no vision-language model).

It fits the one pass as any dissector does: bound to the probe (:meth:`bind_probe`), it embeds
each probe *row* as its 0/1 term vector (so the pass caches and resumes it like image
embeddings, and decodes no pixels for it), each concept string as the 0/1 vector of the terms
that stand for it, and marks itself ``binary``: S is their product clipped to 1.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mammodissect.concepts.encode import score_matrix, scored_concepts
from mammodissect.errors import MammodissectError
from mammodissect.models.registry import register
from mammodissect.models.spec import ModelSpec, parse_spec
from mammodissect.probe import Probe
from mammodissect.probe.annotations import AnnotationMap, ProbeTerms, probe_terms, read_map

__all__ = ["AnnotationDissector", "annotation_truth"]


def no_pixels(image: np.ndarray) -> torch.Tensor:
    """The annotation dissector's preprocess: it reads no pixels (the pass never calls this)."""
    raise MammodissectError("the annotation dissector scores probe rows, not pixels")


class AnnotationDissector:
    """S from the probe's annotations; see the module docstring.

    Attributes
    ----------
    binary:
        True: S is presence (0/1), not a cosine.
    mapping:
        The annotation map in use (bundled rows plus ``?map=FILE``).
    terms:
        The bound probe's terms (None before :meth:`bind_probe`).
    """

    binary = True
    text_limit = None

    def __init__(self, mapping: AnnotationMap, spec: ModelSpec):
        self.mapping = mapping
        self.spec = spec.public()
        self.preprocess = no_pixels
        self.terms: ProbeTerms | None = None
        self.identity: dict[str, Any] | None = None
        self.info: dict[str, Any] = {"architecture": "the probe's own annotations"}

    def bind_probe(self, probe: Probe) -> None:
        """Read the annotation terms of ``probe``, the probe every later call refers to.

        Raises
        ------
        MammodissectError
            When the probe holds no annotation at all.
        """
        terms = probe_terms(probe)
        if not terms.terms:
            raise MammodissectError(
                f"probe {probe!r} has no annotations for the annotation dissector: give a "
                "manifest with label columns (yes/no per concept, density, BI-RADS, findings) "
                "or a mask_path column, or a dataset layout with labels"
            )
        self.terms = terms
        self.identity = {
            "annotations": {"map": self.mapping.digest(), "terms": terms.digest()},
            "spec": self.spec,
        }
        self.info = {
            "architecture": "the probe's own annotations",
            "map": list(self.mapping.sources),
            "terms": len(terms.terms),
        }

    def _bound(self) -> ProbeTerms:
        if self.terms is None:
            raise MammodissectError(
                "the annotation dissector has no probe yet; it scores a probe's own annotations"
            )
        return self.terms

    def encode_rows(self, rows: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """(B, T) 0/1 term vectors of the bound probe's ``rows``."""
        index = np.asarray(rows, dtype=np.int64)
        return torch.from_numpy(self._bound().present[index].astype(np.float32))

    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        """Not available: this dissector embeds probe rows (:meth:`encode_rows`)."""
        raise MammodissectError("the annotation dissector scores probe rows, not pixels")

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """(M, T) 0/1: the terms that stand for each string (zero: no annotation covers it)."""
        matrix = self.mapping.term_matrix(list(texts), self._bound().terms)
        return torch.from_numpy(matrix.astype(np.float32))

    def to(self, device: torch.device | str) -> AnnotationDissector:
        """Nothing to move."""
        return self


def annotation_truth(
    probe: Probe,
    rows: Sequence[int] | np.ndarray,
    concepts: Sequence[str],
    annotation_map: str | os.PathLike[str] | None = None,
) -> tuple[torch.Tensor, list[str], np.ndarray]:
    """S from the probe's own annotations over ``rows``, as a run with ``--dissector
    annotations`` scores it: only the concepts some annotation covers and some row shows.

    Returns
    -------
    present:
        (rows x kept concepts) 0/1.
    kept:
        The concepts kept, in ``concepts`` order.
    keep:
        Per concept of ``concepts``, whether it was kept.
    """
    truth = AnnotationDissector(read_map(annotation_map), parse_spec("annotations"))
    truth.bind_probe(probe)
    texts = truth.encode_texts(list(concepts))
    present = score_matrix(truth, truth.encode_rows(list(rows)), texts)
    keep = scored_concepts(truth, present, texts)
    kept = [c for c, k in zip(concepts, keep, strict=True) if k]
    return present[:, torch.from_numpy(keep)], kept, keep


@register("annotations", "dissector")
def load_annotations(spec: ModelSpec) -> AnnotationDissector:
    """``annotations`` (bundled map) or ``annotations?map=FILE.csv`` (rows added)."""
    return AnnotationDissector(read_map(spec.path("map")), spec)
