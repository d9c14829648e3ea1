"""Errors that mammodissect raises for bad input.

Every error a user can cause (a missing file, an empty probe, an unknown layer,
a malformed spec) is a :class:`MammodissectError`; the command line prints its
message on one line and exits non-zero, the Python API lets it propagate.
"""

from __future__ import annotations

__all__ = ["MammodissectError"]


class MammodissectError(Exception):
    """Bad input or configuration; the message names the value and the fix."""
