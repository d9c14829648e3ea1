"""What may leave through outputs: pseudonyms for image ids, and names taken out of text.

Outputs never hold absolute paths. With ``--anonymize-ids`` they hold no part of the probe's
path, folder or file names either: image ids become stable pseudonyms (:func:`anonymize_id`),
and every free text that reaches an output (skip reasons, warnings kept in run.json, label
cells of a manifest) goes through a :class:`Redactor` that knows the probe's names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from mammodissect.probe.dataset import is_path_column

__all__ = ["NAME", "Redactor", "anonymize_id", "anonymize_labels"]

#: What a redacted name becomes.
NAME = "<name>"
#: What the probe root's absolute path becomes in any text.
PROBE = "<probe>"

# A token of a path or message: runs of characters that file and folder names are made of.
_TOKEN = re.compile(r"[^\s/\\'\"`()\[\]{},;:=<>|]+")


def anonymize_id(image_id: str) -> str:
    """A stable pseudonym for an image id (the same id gives the same pseudonym in every run)."""
    return "img-" + hashlib.sha256(f"mammodissect:{image_id}".encode()).hexdigest()[:16]


def _parts(text: str) -> set[str]:
    """The names in a path or id: each component, and each component's stem."""
    found = set()
    for part in PurePosixPath(str(text).replace("\\", "/")).parts:
        if part in ("/", ".", ".."):
            continue
        found.add(part)
        stem = part.split(".", 1)[0]
        if stem:
            found.add(stem)
    return found


class Redactor:
    """Takes the probe's absolute root out of any text, and with ``anonymize`` every name of
    its path, folders and files too (as whole tokens, so ``Doe_Jane`` in ``Doe_Jane/a.png`` or
    in ``'Doe_Jane.csv'`` goes, while words that merely contain it stay).

    Parameters
    ----------
    root:
        The probe root (absolute).
    names:
        Paths and ids whose components are names to remove (relative paths, image ids, the
        probe path as the user gave it).
    anonymize:
        Remove names, not only the absolute root.
    """

    def __init__(self, root: Path | None, names: Iterable[str] = (), anonymize: bool = False):
        self.root = str(root) if root is not None else None
        self.anonymize = anonymize
        self.names: set[str] = set()
        if anonymize:
            for text in [*names, *([self.root] if self.root else [])]:
                self.names |= _parts(text)
            # short numbers (a file called 3.png) identify no one and are everywhere in messages
            self.names = {n for n in self.names if not (n.isdigit() and len(n) < 4)}

    @classmethod
    def for_probe(cls, probe: Any, given: Any = None, anonymize: bool = False) -> Redactor:
        """A redactor for a loaded probe: its root, relative paths, image ids and excluded rows,
        and ``given``, the probe as the user named it (a path or a layout spec)."""
        names: list[str] = []
        if anonymize:
            for item in probe.items:
                names += [item.relpath, item.image_id]
            for row in getattr(probe, "excluded", []):
                names += [row.relpath, row.image_id]
            if isinstance(given, str | Path):
                names.append(str(given).partition("?")[0].split(":", 1)[-1])
        return cls(getattr(probe, "root", None), names, anonymize)

    def __call__(self, text: str) -> str:
        """``text`` with the root (and, anonymising, every name) replaced."""
        if not text:
            return text
        if self.root:
            text = text.replace(self.root, PROBE)
        if not self.names:
            return text
        return _TOKEN.sub(lambda m: self._token(m.group(0)), text)

    def _token(self, token: str) -> str:
        if token in self.names:
            return NAME
        stem = token.split(".", 1)[0]
        return NAME if stem and stem in self.names else token


def anonymize_labels(labels: pd.DataFrame, redact: Redactor) -> pd.DataFrame:
    """A probe's label columns fit for an anonymised output: columns naming files or paths
    (``mask_path``, ``file_name``) dropped, id columns (``patient_id``, ``study_id``)
    pseudonymised, and names taken out of every other text cell."""
    kept = labels.drop(columns=[c for c in labels.columns if is_path_column(c)]).copy()
    for column in kept.columns:
        values = kept[column]
        if re.fullmatch(r"(.*[_ ])?id", str(column).strip().lower()):
            kept[column] = [v if pd.isna(v) else anonymize_id(str(v)) for v in values]
        elif values.dtype == object or pd.api.types.is_string_dtype(values):
            kept[column] = [redact(v) if isinstance(v, str) else v for v in values]
    return kept
