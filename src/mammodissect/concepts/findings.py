"""Same-finding groups: the ``birads`` strings that state one finding in other words.

``data/birads-findings.yaml`` maps a ``birads`` concept to the other ``birads`` strings that name
the same BI-RADS descriptor or structure ("oval mass": "ovoid mass", "elliptical mass", ...;
see the file's header for the rule). The agreement measures use it for ``same_finding``: a
label is the same finding as the truth when it is the truth or in the truth's group, where the
exact-string ``top1_match`` counts every other phrasing wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mammodissect.concepts.bundled import load_bundled
from mammodissect.errors import MammodissectError

__all__ = ["FINDINGS_FILE", "finding_groups", "read_findings", "same_finding"]

#: The bundled groups' file, in ``mammodissect/concepts/data``.
FINDINGS_FILE = "birads-findings.yaml"


def read_findings(path: Path, concepts: set[str]) -> dict[str, str]:
    """Read a same-finding file (a mapping: finding -> list of other strings) into a map of
    each grouped string to its finding; every string must be one of ``concepts`` and appear
    once.

    Raises
    ------
    MammodissectError
        Naming the file and the string that is unknown or repeated, or a malformed entry.
    """
    data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise MammodissectError(f"{path.name}: expected a mapping of finding -> list of strings")
    groups: dict[str, str] = {}
    for finding, others in data.items():
        if not isinstance(others, list) or not all(isinstance(o, str) for o in others):
            raise MammodissectError(f"{path.name}: {finding!r} must map to a list of strings")
        for text in (str(finding), *others):
            if text not in concepts:
                raise MammodissectError(f"{path.name}: {text!r} is not a concept of the set")
            if text in groups:
                raise MammodissectError(
                    f"{path.name}: {text!r} is in two groups ({groups[text]!r} and {finding!r})"
                )
            groups[text] = str(finding)
    return groups


@cache
def finding_groups() -> Mapping[str, str]:
    """The bundled groups: each grouped ``birads`` string -> its finding (the group's key)."""
    known = set(load_bundled("birads").concepts)
    data = resources.files("mammodissect.concepts") / "data" / FINDINGS_FILE
    with resources.as_file(data) as path:
        return read_findings(path, known)


def same_finding(label: str, truth: str, groups: Mapping[str, str] | None = None) -> bool:
    """Whether ``label`` states the finding ``truth`` does: the same string, or both in one
    group of ``groups`` (default: the bundled :func:`finding_groups`).

    Examples
    --------
    >>> same_finding("ovoid mass", "oval mass"), same_finding("round mass", "oval mass")
    (True, False)
    """
    if label == truth:
        return True
    groups = finding_groups() if groups is None else groups
    finding = groups.get(truth)
    return finding is not None and groups.get(label) == finding
