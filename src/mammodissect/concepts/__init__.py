"""Concept sets: ``mammodissect.concepts.load(name_or_path) -> ConceptSet``.

Bundled sets (``birads``, ``controls``, ``birads+controls``), readers and writers for text,
CSV/TSV, YAML/JSON and workbooks, merge/filter/summary, and the text-embedding step with prompt
templates (:func:`encode_concepts`).
"""

from mammodissect.concepts.bundled import (
    BUNDLED,
    IMAGENET_EXCLUDED,
    IMAGENET_STEP,
    bundled_names,
    bundled_report,
    convert,
    imagenet_controls,
    load,
    load_bundled,
)
from mammodissect.concepts.core import DUPLICATE_RULES, MULTI_SEP, ConceptSet, Entry, build
from mammodissect.concepts.encode import check_prompts, concept_strings, encode_concepts
from mammodissect.concepts.formats import FORMATS, read, write
from mammodissect.concepts.ops import filter_set, merge, report, summary

__all__ = [
    "BUNDLED",
    "DUPLICATE_RULES",
    "FORMATS",
    "IMAGENET_EXCLUDED",
    "IMAGENET_STEP",
    "MULTI_SEP",
    "ConceptSet",
    "Entry",
    "build",
    "bundled_names",
    "bundled_report",
    "check_prompts",
    "concept_strings",
    "convert",
    "encode_concepts",
    "filter_set",
    "imagenet_controls",
    "load",
    "load_bundled",
    "merge",
    "read",
    "report",
    "summary",
    "write",
]
