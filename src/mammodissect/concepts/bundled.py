"""The concept sets shipped with mammodissect, and how a name or path becomes a set.

- ``birads``: mammography concepts written for mammodissect from the ACR BI-RADS Atlas (5th
  edition) mammography lexicon and everyday report language (``data/birads.yaml``): breast
  composition, mass, calcifications, architectural distortion, asymmetries, other findings,
  associated features, location, views and laterality, anatomy, implants, post-procedure
  changes, artefacts, assessment and management, pathology. Every concept has
  ``control=False``.
- ``controls``: non-mammography controls (``control=True``): colours, textures and materials,
  natural things and everyday objects from ``data/controls.yaml``, plus ImageNet class names
  taken at load time from torchvision's list (:func:`imagenet_controls`), so that part of the set
  follows the installed torchvision (its fingerprint in run.json changes if the list ever does).
- ``birads+controls``: both, mammography first.

Any ``A+B`` of bundled names or files merges them (first listing wins on repeats);
:func:`load` takes any of these, or a list of strings, and :func:`convert` writes what it
loads in another format.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path

from mammodissect.concepts.core import ConceptSet, Entry, build, check_rule, concept_key
from mammodissect.concepts.formats import read, write
from mammodissect.concepts.ops import kinds_text, merge
from mammodissect.errors import MammodissectError
from mammodissect.models.imagenet import imagenet_classes

__all__ = [
    "BUNDLED",
    "IMAGENET_EXCLUDED",
    "IMAGENET_STEP",
    "bundled_names",
    "bundled_report",
    "convert",
    "imagenet_controls",
    "load",
    "load_bundled",
    "resolve",
]

#: Bundled set name -> what it holds.
BUNDLED = {
    "birads": "mammography concepts from the BI-RADS lexicon and report language",
    "controls": "non-mammography controls: colours, textures, materials, nature, objects, "
    "ImageNet classes",
    "birads+controls": "birads then controls",
}
#: Every IMAGENET_STEP-th ImageNet class (index 0, 10, 20, ...) becomes a control concept.
IMAGENET_STEP = 10
#: ImageNet classes never used as controls: they touch on breasts, medicine or skin care, so a
#: mammography unit matching them would be miscounted as non-mammography.
IMAGENET_EXCLUDED = frozenset(
    {
        "bikini",
        "brassiere",
        "maillot",
        "maillot tank suit",
        "swimming trunks",
        "nipple",
        "stethoscope",
        "syringe",
        "oxygen mask",
        "lab coat",
        "pill bottle",
        "Band Aid",
        "medicine chest",
        "stretcher",
        "swab",
        "face powder",
        "lotion",
        "sunscreen",
        "hair spray",
        "gown",
        "pajama",
    }
)
IMAGENET_BROAD = "imagenet classes"
IMAGENET_CATEGORY = f"every {IMAGENET_STEP}th imagenet-1k class"
_FILES = {"birads": "birads.yaml", "controls": "controls.yaml"}


def bundled_names() -> list[str]:
    """The names ``load`` accepts for bundled sets."""
    return list(BUNDLED)


def imagenet_controls(step: int = IMAGENET_STEP, skip: set[str] | None = None) -> list[str]:
    """ImageNet-1k class names at indices 0, step, 2*step, ... of torchvision's list.

    Classes in :data:`IMAGENET_EXCLUDED`, and names whose case-folded form is in ``skip``, are
    left out (nothing replaces them).
    """
    skip = skip or set()
    names = imagenet_classes()[::step]
    return [n for n in names if n not in IMAGENET_EXCLUDED and concept_key(n) not in skip]


def _read_data(file_name: str, name: str) -> ConceptSet:
    with resources.as_file(resources.files("mammodissect.concepts") / "data" / file_name) as p:
        return read(p, name=name)


@cache
def _bundled(name: str) -> ConceptSet:
    if name == "birads+controls":
        return merge([_bundled("birads"), _bundled("controls")], name=name)
    concepts = _read_data(_FILES[name], name)
    if name != "controls":
        return concepts
    written = {concept_key(c) for c in concepts.concepts}
    extra = [
        Entry(n, IMAGENET_CATEGORY, IMAGENET_BROAD, True, f"imagenet class {n!r}")
        for n in imagenet_controls(skip=written)
    ]
    return build([*concepts.entries(), *extra], name=name)


def load_bundled(name: str) -> ConceptSet:
    """A bundled set by name (case-insensitive): ``birads``, ``controls``, ``birads+controls``."""
    key = name.strip().lower()
    if key not in BUNDLED:
        raise MammodissectError(
            f"no bundled concept set {name!r}; bundled sets: {', '.join(BUNDLED)}"
            f"{_closest(key, list(BUNDLED))}"
        )
    return _bundled(key)


def _closest(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve(source: str, duplicates: str = "first") -> ConceptSet:
    """A concept set from a file path, a bundled name, or ``A+B`` of either (merged in order)."""
    path = Path(source).expanduser()
    if path.is_file():
        return read(path, duplicates=duplicates)
    key = source.strip().lower()
    if key in BUNDLED:
        return _bundled(key)
    parts = [part.strip() for part in source.split("+")]
    if len(parts) > 1 and all(parts):
        return merge([resolve(part, duplicates) for part in parts], duplicates, name=source)
    if path.is_dir():
        raise MammodissectError(
            f"concept file {source!r} is a folder; give a concept file or a bundled set name"
        )
    raise MammodissectError(
        f"concept file {source!r} not found{_closest(key, list(BUNDLED))}; give a file "
        "(.txt, .csv, .tsv, .yaml, .json, .xlsx) or a bundled set: " + ", ".join(BUNDLED)
    )


def load(source: str | Path | Iterable[str] | ConceptSet, duplicates: str = "first") -> ConceptSet:
    """Load a concept set: a bundled set's name, a file, ``A+B`` (merged), or a list of strings.

    Files are read by extension: ``.csv``/``.tsv`` (columns ``concept`` and optionally
    ``category, broad_category, control``), ``.yaml``/``.yml``/``.json`` (nested
    ``{broad: {category: [concepts]}}`` or a flat list), ``.xlsx`` (one sheet per broad category,
    one column per category, the header on the first row); anything else is plain text, one
    concept per line with ``#`` comments. Bundled sets: ``birads``, ``controls``,
    ``birads+controls`` (``mammodissect concepts list``).

    Parameters
    ----------
    source:
        What to load; a :class:`ConceptSet` is returned as it is.
    duplicates:
        ``first`` (default), ``last`` or ``multi``: the categories a repeated concept gets.

    Raises
    ------
    MammodissectError
        When the file is missing, unreadable, not UTF-8, or holds no concept.
    """
    if isinstance(source, ConceptSet):
        return source
    check_rule(duplicates)
    if isinstance(source, str | Path):
        return resolve(str(source), duplicates)
    return ConceptSet.from_strings(source, duplicates=duplicates)


def convert(source: str | Path, out: str | Path, duplicates: str = "first") -> ConceptSet:
    """Load ``source`` (file or bundled name) and write it to ``out``; returns the set."""
    concepts = load(source, duplicates=duplicates)
    write(concepts, out)
    return concepts


def bundled_report() -> str:
    """The bundled sets with their counts, as text (``mammodissect concepts list``)."""
    width = max(len(name) for name in BUNDLED) + 2
    lines = [f"{'name':<{width}}{'concepts':>9}  kinds"]
    for name, about in BUNDLED.items():
        concepts = load_bundled(name)
        lines.append(f"{name:<{width}}{len(concepts):>9}  {kinds_text(concepts.control)}: {about}")
    return "\n".join(lines)
