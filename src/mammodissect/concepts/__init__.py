"""Concept sets: ``mammodissect.concepts.load(name_or_path) -> ConceptSet``."""

from mammodissect.concepts.core import ConceptSet, load

__all__ = ["ConceptSet", "load"]
