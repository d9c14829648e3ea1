"""Helpers shared by the model-loading tests (``test_efficientnet``, ``test_mammoclip``)."""

from __future__ import annotations

import pytest

from mammodissect.errors import MammodissectError
from mammodissect.models import load_target


def load_error(spec: str, *fragments: str) -> str:
    """Load ``spec`` expecting a :class:`MammodissectError` whose message holds every fragment.

    Returns the message, for further checks.
    """
    with pytest.raises(MammodissectError) as err:
        load_target(spec)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message
