"""Parse and check request bodies into typed requests, before anything reaches a model.

Every rule here maps to one status code: a body that is not JSON, a missing field, an unknown field
or a value of the wrong type is a 400; too many sentences is a 413; a value of the right type that is
out of range (an over-long sentence, ``beam`` outside 1 to ``MAX_BEAM``, ``n_best`` > ``beam``, a
negative length, a length penalty outside 0 to 10, a number too large for a float) is a 422.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from rnnlab.decoding.hypothesis import length_penalty_problem
from rnnlab.inference.inputs import SEED_LIMIT
from rnnlab.serve.errors import ApiError
from rnnlab.serve.settings import ServeSettings


@dataclass(frozen=True)
class DecodeSettings:
    """How a translate request decodes; also its batch key, as batched sentences share settings."""

    beam: int = 1
    n_best: int = 1
    attention: bool = False
    max_len: int | None = None
    length_penalty: float | None = None


@dataclass(frozen=True)
class TranslateRequest:
    text: list[str]
    decode: DecodeSettings


@dataclass(frozen=True)
class TagRequest:
    tokens: list[list[str]]


@dataclass(frozen=True)
class GenerateRequest:
    prefix: str
    length: int = 100
    temperature: float = 1.0
    top_k: int = 0
    seed: int | None = None


MAX_BEAM = 64
"""The widest beam a request may ask for: a beam's memory grows with its width times the
vocabulary, and quality stops improving long before this."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(body: bytes) -> dict[str, Any]:
    """The body's JSON object. Python's reader accepts more than JSON (NaN, Infinity) and stops at
    its own limits (4,300-digit integers, nesting deeper than the recursion limit); each of those is
    the client's malformed body too, a 400, never a server error."""
    try:
        data = json.loads(body, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "body must be a JSON object")
    return data


def _check_fields(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r}; expected some of {', '.join(allowed)}")


def _int(data: dict[str, Any], name: str, default: int | None) -> int | None:
    value = data.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{name} must be an integer, got {json.dumps(value)[:40]}")
    return value


def _number(data: dict[str, Any], name: str, default: float | None) -> float | None:
    value = data.get(name, default)
    if value is None and default is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"{name} must be a number, got {json.dumps(value)[:40]}")
    try:
        number = float(value)
    except OverflowError:
        raise ApiError(422, f"{name} is too large for a floating-point number") from None
    if not math.isfinite(number):
        raise ApiError(422, f"{name} must be a finite number, got {number}")
    return number


def _bool(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false, got {json.dumps(value)[:40]}")
    return value


def _check_unicode(text: str, name: str) -> None:
    """JSON may escape a lone surrogate (``"\\ud800"``), which is no character and cannot be
    written back as UTF-8: the client's malformed text, not the server's error."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ApiError(400, f"{name} is not valid Unicode (a lone surrogate)") from None


def _string_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ApiError(400, f"{name} must be a list of strings")
    for i, text in enumerate(value):
        _check_unicode(text, f"{name}[{i}]")
    return value


def _check_count(count: int, limits: ServeSettings) -> None:
    if count > limits.max_sentences:
        raise ApiError(
            413, f"{count} sentences in one request; the limit is {limits.max_sentences}"
        )


def _check_length(text: str, what: str, limits: ServeSettings) -> None:
    if len(text) > limits.max_chars:
        raise ApiError(422, f"{what} has {len(text)} characters; the limit is {limits.max_chars}")


def parse_translate(data: dict[str, Any], limits: ServeSettings) -> TranslateRequest:
    _check_fields(data, ("text", "beam", "n_best", "attention", "max_len", "length_penalty"))
    if "text" not in data:
        raise ApiError(400, "missing field 'text' (a list of sentences)")
    text = _string_list(data["text"], "text")
    _check_count(len(text), limits)
    for i, line in enumerate(text):
        _check_length(line, f"text[{i}]", limits)
    request = DecodeSettings(
        beam=_int(data, "beam", 1) or 0,
        n_best=_int(data, "n_best", 1) or 0,
        attention=_bool(data, "attention", False),
        max_len=_int(data, "max_len", None),
        length_penalty=_number(data, "length_penalty", None),
    )
    if not 1 <= request.beam <= MAX_BEAM:
        raise ApiError(422, f"beam must be between 1 and {MAX_BEAM}, got {request.beam}")
    if not 1 <= request.n_best <= request.beam:
        raise ApiError(
            422, f"n_best must be between 1 and beam ({request.beam}), got {request.n_best}"
        )
    if request.max_len is not None and not 1 <= request.max_len <= limits.max_chars:
        raise ApiError(422, f"max_len must be between 1 and {limits.max_chars}")
    problem = None
    if request.length_penalty is not None:
        problem = length_penalty_problem(request.length_penalty)
    if problem is not None:
        raise ApiError(422, f"length_penalty {problem}")
    return TranslateRequest(text=text, decode=request)


def parse_tag(data: dict[str, Any], limits: ServeSettings) -> TagRequest:
    _check_fields(data, ("text", "tokens"))
    if ("text" in data) == ("tokens" in data):
        raise ApiError(400, "give exactly one of 'text' (sentences) or 'tokens' (lists of words)")
    if "text" in data:
        text = _string_list(data["text"], "text")
        _check_count(len(text), limits)
        for i, line in enumerate(text):
            _check_length(line, f"text[{i}]", limits)
        return TagRequest(tokens=[line.split() for line in text])
    value = data["tokens"]
    if not isinstance(value, list):
        raise ApiError(400, "tokens must be a list of lists of strings")
    _check_count(len(value), limits)
    sentences = [_string_list(words, f"tokens[{i}]") for i, words in enumerate(value)]
    for i, words in enumerate(sentences):
        _check_length(" ".join(words), f"tokens[{i}]", limits)
        if any(not w or w != w.strip() or len(w.split()) != 1 for w in words):
            raise ApiError(422, f"tokens[{i}] has an empty word or a word with spaces")
    return TagRequest(tokens=sentences)


def parse_generate(data: dict[str, Any], limits: ServeSettings) -> GenerateRequest:
    _check_fields(data, ("prefix", "length", "temperature", "top_k", "seed"))
    prefix = data.get("prefix")
    if not isinstance(prefix, str):
        raise ApiError(400, "prefix must be a string")
    _check_unicode(prefix, "prefix")
    _check_length(prefix, "prefix", limits)
    request = GenerateRequest(
        prefix=prefix,
        length=_int(data, "length", min(100, limits.max_chars)) or 0,
        temperature=_number(data, "temperature", 1.0) or 0.0,
        top_k=_int(data, "top_k", 0) or 0,
        seed=_int(data, "seed", None),
    )
    if not 0 <= request.length <= limits.max_chars:
        raise ApiError(
            422, f"length must be between 0 and {limits.max_chars}, got {request.length}"
        )
    if request.temperature < 0:
        raise ApiError(422, f"temperature must be 0 (greedy) or more, got {request.temperature}")
    if request.top_k < 0:
        raise ApiError(422, f"top_k must be 0 (no limit) or more, got {request.top_k}")
    if request.seed is not None and not 0 <= request.seed < SEED_LIMIT:
        raise ApiError(422, "seed must be between 0 and 2^63 - 1")
    return request
