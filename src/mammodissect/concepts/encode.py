"""Concept strings to dissector text embeddings, with prompt templates and lower-casing."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mammodissect.cache import cached_array
from mammodissect.errors import MammodissectError

__all__ = [
    "PLACEHOLDER",
    "check_prompts",
    "concept_strings",
    "encode_concepts",
    "score_matrix",
    "scored_concepts",
    "warn_cut_short",
]

log = logging.getLogger(__name__)

#: Where the concept goes in a prompt template: ``"a mammogram showing {}"``.
PLACEHOLDER = "{}"


def check_prompts(prompts: Iterable[str] | str | None) -> list[str]:
    """The templates as a list; each must hold ``{}`` exactly once.

    Raises
    ------
    MammodissectError
        Naming the template and showing a valid one.
    """
    if prompts is None:
        return []
    items = [prompts] if isinstance(prompts, str) else list(prompts)
    for template in items:
        if not isinstance(template, str) or template.count(PLACEHOLDER) != 1:
            raise MammodissectError(
                f"prompt template {template!r} needs exactly one {PLACEHOLDER} where the concept "
                "goes, e.g. 'a mammogram showing {}'"
            )
    return items


def concept_strings(
    concepts: Iterable[str], prompts: Iterable[str] | str | None = (), lowercase: bool = False
) -> list[list[str]]:
    """The exact strings sent to the dissector: per concept, one per template (in order).

    Lower-casing applies to the concept, not to the template. Without templates each concept
    is sent as it is.

    Examples
    --------
    >>> concept_strings(["Spiculated mass"], ["a mammogram showing {}", "{}"], lowercase=True)
    [['a mammogram showing spiculated mass', 'spiculated mass']]
    """
    templates = check_prompts(prompts) or [PLACEHOLDER]
    texts = [c.lower() if lowercase else c for c in concepts]
    return [[t.replace(PLACEHOLDER, text) for t in templates] for text in texts]


def encode_concepts(
    dissector: Any,
    concepts: Iterable[str],
    prompts: Sequence[str] | str | None = (),
    lowercase: bool = False,
    cache_root: str | os.PathLike[str] | None = None,
) -> tuple[torch.Tensor, list[list[str]]]:
    """Embed concepts with ``dissector.encode_texts``, averaging over prompt templates.

    Each template is filled with every concept and embedded; per concept the template
    embeddings are L2-normalised, averaged and normalised again (prompt ensembling, as CLIP's
    zero-shot classifiers do). With one template (or none) the dissector's embeddings are
    returned as they are.

    Parameters
    ----------
    dissector:
        Anything with ``encode_texts(list[str]) -> (M, D)``.
    concepts:
        The concept strings (a :class:`~mammodissect.concepts.ConceptSet` works).
    prompts:
        Templates with one ``{}`` each; empty means the bare concept.
    lowercase:
        Lower-case each concept before filling the templates.
    cache_root:
        A cache directory: the embeddings are kept in ``texts/`` there, keyed by the
        dissector's ``identity``, class and ``spec`` and the exact strings, and reused by every
        later run with the same dissector and strings (the G, M and C runs of a study).
        Dissectors without an ``identity`` are never cached.

    Returns
    -------
    tuple[torch.Tensor, list[list[str]]]
        The (M, D) float embeddings and, per concept, the strings sent.
    """
    strings = concept_strings(concepts, prompts, lowercase)
    if not strings:
        raise MammodissectError("no concept to encode; give at least one concept")
    warn_cut_short(dissector, [text for row in strings for text in row])
    identity = getattr(dissector, "identity", None)
    if cache_root is None or not identity:
        return _encode(dissector, strings), strings
    # the class and spec too: two Python dissectors may share an identity yet embed differently
    parts = {
        "dissector": identity,
        "class": f"{type(dissector).__module__}.{type(dissector).__qualname__}",
        "spec": str(getattr(dissector, "spec", "")),
        "strings": strings,
    }
    embedded = cached_array(cache_root, "texts", parts, lambda: _encode(dissector, strings))
    return torch.from_numpy(embedded), strings


def score_matrix(
    dissector: Any, images: np.ndarray | torch.Tensor, texts: torch.Tensor
) -> torch.Tensor:
    """S (images x concepts): the dissector's image embeddings against its concept embeddings,
    on the images' device. Cosines for a vision-language dissector (both sides L2-normalised);
    for one that marks itself ``binary`` (the annotation dissector) presence, the product of
    0/1 term vectors clipped to 1.

    Raises
    ------
    MammodissectError
        When the two sides have different widths.
    """
    images = torch.as_tensor(images, dtype=torch.float32)
    texts = texts.float().to(images.device)
    if images.shape[1] != texts.shape[1]:
        raise MammodissectError(
            f"dissector gives {images.shape[1]}-d image but {texts.shape[1]}-d text embeddings"
        )
    scores = images @ texts.T
    return scores.clamp_(max=1.0) if getattr(dissector, "binary", False) else scores


def scored_concepts(dissector: Any, scores: torch.Tensor, texts: torch.Tensor) -> np.ndarray:
    """Which concepts the run can score: all of them for a vision-language dissector; for a
    ``binary`` one, those some annotation covers (a non-zero text vector) that at least one
    of the images shows (a column of S with a 1)."""
    if not getattr(dissector, "binary", False):
        return np.ones(scores.shape[1], dtype=bool)
    covered = (texts.abs().sum(dim=1) > 0).cpu().numpy()
    shown = (scores.sum(dim=0) > 0).cpu().numpy()
    return covered & shown


def warn_cut_short(dissector: Any, texts: Sequence[str], shown: int = 3) -> list[str]:
    """Warn once, naming them and the limit, about strings longer than the dissector's text
    context (``text_limit`` tokens: the tower embeds only their beginning). Dissectors that
    cannot count tokens (no ``count_tokens``) are not checked. Returns the strings cut."""
    limit = getattr(dissector, "text_limit", None)
    count = getattr(dissector, "count_tokens", None)
    if not limit or not callable(count):
        return []
    unique = list(dict.fromkeys(texts))
    lengths = count(unique)
    long = [(text, n) for text, n in zip(unique, lengths, strict=False) if n > limit]
    if long:
        named = "; ".join(
            f"{text[:60] + '...' if len(text) > 60 else text!r} ({n} tokens)"
            for text, n in long[:shown]
        )
        more = f" and {len(long) - shown} more" if len(long) > shown else ""
        log.warning(
            "%d concept string(s) are longer than the dissector's text context of %d tokens "
            "and are embedded from their first %d tokens only: %s%s",
            len(long),
            limit,
            limit,
            named,
            more,
        )
    return [text for text, _ in long]


def _encode(dissector: Any, strings: list[list[str]]) -> torch.Tensor:
    """(M, D) float32 embeddings of one row of strings per concept (templates ensembled)."""
    parts = []
    with torch.inference_mode():
        for j in range(len(strings[0])):
            sent = [row[j] for row in strings]
            embedded = torch.as_tensor(dissector.encode_texts(sent)).float().cpu()
            if embedded.ndim != 2 or embedded.shape[0] != len(sent):
                raise MammodissectError(
                    f"dissector's encode_texts gave shape {tuple(embedded.shape)} for "
                    f"{len(sent)} strings; it must return (M, D)"
                )
            parts.append(embedded)
        if len(parts) == 1:
            return parts[0]
        stacked = torch.stack([F.normalize(p, dim=-1) for p in parts])
        return F.normalize(stacked.mean(dim=0), dim=-1)
