"""Checks on what a caller hands the inference API.

A bare string where a list of lines is expected is the easiest mistake to make in Python
(``translate("a b c")``), and it does not fail by itself: iterating over it yields characters, so
the call would return one result per character.
"""

from __future__ import annotations


def require_list_of_texts(value: object, method: str) -> None:
    """``TypeError`` when ``value`` is one string (or bytes) instead of a list of them."""
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"{method} takes a list of lines, not one string; pass [text] for a single line"
        )
