"""Keeping the warnings a command logs, so that its outputs can record them (run.json)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["kept_warnings"]


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.append(record.getMessage())
        except Exception:  # a badly formatted message must not break the run
            self.handleError(record)


@contextmanager
def kept_warnings(logger: str = "mammodissect") -> Iterator[list[str]]:
    """Inside the block, every warning (and error) logged under ``logger`` is also appended,
    as its message, to the list this yields; they still print as usual.

    Examples
    --------
    >>> with kept_warnings() as warned:
    ...     logging.getLogger("mammodissect.probe").warning("skipped %d rows", 2)
    >>> warned
    ['skipped 2 rows']
    """
    keep = _Keep()
    target = logging.getLogger(logger)
    target.addHandler(keep)
    try:
        yield keep.messages
    finally:
        target.removeHandler(keep)
