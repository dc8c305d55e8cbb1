"""Checks on what a caller hands the inference API.

A bare string where a list of lines is expected is the easiest mistake to make in Python
(``translate("a b c")``), and it does not fail by itself: iterating over it yields characters, so
the call would return one result per character. Other wrong types (a ``None`` line, ``beam=2.0``,
``seed="1"``) would fail deep inside PyTorch or a tokenizer with a message that names neither the
method nor the argument, so they are refused here, by name, with a ``TypeError``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

SEED_LIMIT = 2**63
"""Seeds run from 0 to 2^63 - 1: what torch and numpy both take (``rnnlab generate --seed``)."""


def require_list_of_texts(value: object, method: str) -> None:
    """``TypeError`` when ``value`` is one string (or bytes) instead of a list of them."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(
            f"{method} takes a list of lines, not one string; pass [text] for a single line"
        )


def _items(value: object, method: str) -> list[object]:
    """The items of a list, tuple or other iterable (a generator is read once); not of a string."""
    require_list_of_texts(value, method)
    if not isinstance(value, Iterable):
        raise TypeError(f"{method} takes a list of lines, got {type(value).__name__}")
    return list(value)


def text_lines(value: object, method: str) -> list[str]:
    """``value`` as a list of strings: any iterable of ``str``, not one string."""
    lines = _items(value, method)
    for number, line in enumerate(lines, 1):
        if not isinstance(line, str):
            raise TypeError(f"{method}: line {number} is a {type(line).__name__}, not a string")
    return lines  # type: ignore[return-value]


def token_sentences(value: object, method: str) -> list[list[str]]:
    """Sentences as token lists: each a string (split on whitespace) or an iterable of strings."""
    sentences: list[list[str]] = []
    for number, sentence in enumerate(_items(value, method), 1):
        if isinstance(sentence, str):
            sentences.append(sentence.split())
            continue
        if isinstance(sentence, (bytes, bytearray)) or not isinstance(sentence, Iterable):
            raise TypeError(
                f"{method}: sentence {number} is a {type(sentence).__name__}, "
                "not a string or a list of tokens"
            )
        tokens = list(sentence)
        for token in tokens:
            if not isinstance(token, str):
                raise TypeError(
                    f"{method}: sentence {number} holds a {type(token).__name__} token, "
                    "not a string"
                )
        sentences.append(tokens)
    return sentences


def string_argument(value: object, name: str) -> str:
    """``value`` when it is a string; a ``TypeError`` naming ``name`` otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got a {type(value).__name__}")
    return value


def whole_number(value: object, name: str) -> int:
    """``value`` as an ``int`` when it is a whole number (not a bool, float or string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def real_number(value: object, name: str) -> float:
    """``value`` as a ``float`` when it is a real number (not a bool or string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def settings(value: object) -> list[str] | None:
    """``overrides`` as a list of ``key=value`` strings: one string is one setting, not one per
    character; ``None`` stays ``None``."""
    if value is None:
        return None
    items = [value] if isinstance(value, str) else _items(value, "overrides")
    for number, item in enumerate(items, 1):
        if not isinstance(item, str):
            raise TypeError(
                f"overrides: setting {number} is a {type(item).__name__}, not a 'key=value' string"
            )
    return items  # type: ignore[return-value]
