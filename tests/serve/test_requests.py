"""Request parsing for ``rnnlab serve`` (``rnnlab.serve.requests``), called directly, without HTTP.

The module has no pydantic models: it is hand-written validation that maps each refusal to one
status (400 wrong shape or type, 413 too many sentences, 422 right type but out of range). The
HTTP-level refusals are in test_api.py; this file covers the boundaries (exactly at and one past each
limit), the parsed values and defaults, and properties checked with hypothesis against a plain-Python
statement of the rules in the module docstring. ``json`` from the standard library is the reference
for what is and is not a JSON object.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.serve.errors import ApiError
from rnnlab.serve.requests import (
    DecodeSettings,
    GenerateRequest,
    TagRequest,
    parse_generate,
    parse_json,
    parse_tag,
    parse_translate,
)
from rnnlab.serve.settings import ServeSettings

LIMITS = ServeSettings(max_sentences=3, max_chars=10)


def refusal(parse: Callable[..., Any], *args: Any) -> ApiError:
    """The ApiError that ``parse(*args)`` raises; the test fails if it returns instead."""
    with pytest.raises(ApiError) as caught:
        parse(*args)
    assert "\n" not in caught.value.message  # the client gets one line
    return caught.value


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


# --- parse_json ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(value=json_values)
def test_parse_json_accepts_exactly_the_json_objects(value: Any) -> None:
    body = json.dumps(value).encode("utf-8")
    if isinstance(value, dict):
        assert parse_json(body) == json.loads(body)
    else:
        error = refusal(parse_json, body)
        assert error.status == 400 and "must be a JSON object" in error.message


@pytest.mark.parametrize("body", [b"", b"   ", b'{"text": ["a"]', b"{'text': ['a']}", b"\xc3("])
def test_parse_json_refuses_what_json_cannot_read(body: bytes) -> None:
    error = refusal(parse_json, body)
    assert error.status == 400 and error.message.startswith("body is not valid JSON")


@pytest.mark.parametrize(
    "body",
    [b'{"seed": ' + b"1" * 5000 + b"}", b'{"text": ' + b"[" * 5000 + b"]" * 5000 + b"}"],
    ids=["5000-digit-integer", "nested-5000-deep"],
)
def test_parse_json_answers_unreadable_json_with_a_client_error(body: bytes) -> None:
    error = refusal(parse_json, body)
    assert 400 <= error.status < 500


@pytest.mark.parametrize(
    "body,parse",
    [
        (b'{"prefix": "a", "temperature": NaN}', parse_generate),
        (b'{"text": ["a"], "length_penalty": NaN}', parse_translate),
    ],
    ids=["temperature", "length_penalty"],
)
def test_nan_is_not_a_number_a_client_may_send(body: bytes, parse: Callable[..., Any]) -> None:
    with pytest.raises(ApiError) as caught:
        parse(parse_json(body), LIMITS)
    assert caught.value.status in (400, 422)


# --- parse_translate ----------------------------------------------------------------------------


def test_translate_defaults() -> None:
    request = parse_translate({"text": ["a b", ""]}, LIMITS)
    assert request.text == ["a b", ""]
    assert request.decode == DecodeSettings(
        beam=1, n_best=1, attention=False, max_len=None, length_penalty=None
    )


def test_translate_every_setting_given() -> None:
    body = {
        "text": ["a"],
        "beam": 4,
        "n_best": 2,
        "attention": True,
        "max_len": 10,
        "length_penalty": 0,
    }
    decode = parse_translate(body, LIMITS).decode
    assert (decode.beam, decode.n_best, decode.attention, decode.max_len) == (4, 2, True, 10)
    # An integer length penalty is a number too, and arrives as a float.
    assert decode.length_penalty == 0.0 and isinstance(decode.length_penalty, float)


def test_decode_settings_are_a_batch_key() -> None:
    # Requests with equal settings must meet in one batch: equal and equally hashed.
    first = parse_translate({"text": ["a"], "beam": 3, "length_penalty": 1}, LIMITS).decode
    second = parse_translate({"text": ["b", "c"], "length_penalty": 1.0, "beam": 3}, LIMITS).decode
    other = parse_translate({"text": ["a"], "beam": 3}, LIMITS).decode
    assert first == second and hash(first) == hash(second)
    assert first != other
    assert len({first, second, other}) == 2


def test_translate_names_the_first_unknown_field_alphabetically() -> None:
    error = refusal(parse_translate, {"text": ["a"], "zeta": 1, "alpha": 2}, LIMITS)
    assert error.status == 400 and error.message.startswith("unknown field 'alpha'")


def test_translate_sentence_count_limit_is_inclusive() -> None:
    assert len(parse_translate({"text": ["a"] * 3}, LIMITS).text) == 3
    error = refusal(parse_translate, {"text": ["a"] * 4}, LIMITS)
    assert error.status == 413
    assert error.message == "4 sentences in one request; the limit is 3"


def test_translate_sentence_length_counts_characters_not_bytes() -> None:
    # Ten characters is allowed even when UTF-8 needs twenty bytes for them.
    assert parse_translate({"text": ["é" * 10]}, LIMITS).text == ["é" * 10]
    error = refusal(parse_translate, {"text": ["ok", "é" * 11]}, LIMITS)
    assert error.status == 422
    assert error.message == "text[1] has 11 characters; the limit is 10"


def expected_beam_status(beam: int, n_best: int) -> int | None:
    """The rule in words: beam at least 1, and 1 ≤ n_best ≤ beam; None means accepted."""
    if beam < 1 or not 1 <= n_best <= beam:
        return 422
    return None


@settings(max_examples=80, deadline=None)
@given(beam=st.integers(-3, 8), n_best=st.integers(-3, 8))
def test_beam_and_n_best_rule(beam: int, n_best: int) -> None:
    body = {"text": ["a"], "beam": beam, "n_best": n_best}
    status = expected_beam_status(beam, n_best)
    if status is None:
        decode = parse_translate(body, LIMITS).decode
        assert (decode.beam, decode.n_best) == (beam, n_best)
    else:
        error = refusal(parse_translate, body, LIMITS)
        assert error.status == status
        # The beam is checked first: with a bad beam, the message is about the beam.
        assert error.message.startswith("beam" if beam < 1 else "n_best")


not_integers = st.one_of(
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),  # 2.0 is a JSON number but not an integer
    st.text(max_size=3),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=60, deadline=None)
@given(field=st.sampled_from(["beam", "n_best", "max_len"]), value=not_integers)
def test_translate_integer_fields_refuse_other_types(field: str, value: Any) -> None:
    error = refusal(parse_translate, {"text": ["a"], field: value}, LIMITS)
    assert error.status == 400 and error.message.startswith(f"{field} must be an integer")


@pytest.mark.parametrize("field", ["beam", "n_best"])
def test_translate_null_is_not_a_default_for_beam_or_n_best(field: str) -> None:
    error = refusal(parse_translate, {"text": ["a"], field: None}, LIMITS)
    assert error.status == 400


@pytest.mark.parametrize(
    "max_len,accepted", [(None, True), (1, True), (10, True), (0, False), (11, False)]
)
def test_translate_max_len_bounds(max_len: int | None, accepted: bool) -> None:
    body = {"text": ["a"], "max_len": max_len}
    if accepted:
        assert parse_translate(body, LIMITS).decode.max_len == max_len
    else:
        error = refusal(parse_translate, body, LIMITS)
        assert error.status == 422 and error.message == "max_len must be between 1 and 10"


@pytest.mark.parametrize(
    "value,status",
    [(0.0, None), (2, None), (10, None), (-0.1, 422), (10.5, 422), (1000, 422), ("1", 400)]
    + [(True, 400), ([1], 400)],
)
def test_translate_length_penalty(value: Any, status: int | None) -> None:
    body = {"text": ["a"], "length_penalty": value}
    if status is None:
        assert parse_translate(body, LIMITS).decode.length_penalty == float(value)
    else:
        assert refusal(parse_translate, body, LIMITS).status == status


@pytest.mark.parametrize("text", ["a", ["a", None], [["a"]], {"0": "a"}])
def test_translate_text_must_be_a_list_of_strings(text: Any) -> None:
    error = refusal(parse_translate, {"text": text}, LIMITS)
    assert error.status == 400 and error.message == "text must be a list of strings"


# --- parse_tag ----------------------------------------------------------------------------------


def test_tag_text_is_split_on_any_whitespace() -> None:
    lines = ["Ah  so\tit", "", " . "]
    request = parse_tag({"text": lines}, LIMITS)
    assert request == TagRequest(tokens=[["Ah", "so", "it"], [], ["."]])
    assert request.tokens == [line.split() for line in lines]  # str.split as the reference


def test_tag_tokens_are_kept_as_given() -> None:
    words = [["The", "dog"], [], ["1/2", "?"]]
    assert parse_tag({"tokens": words}, LIMITS).tokens == words


def test_tag_refuses_text_and_tokens_together() -> None:
    error = refusal(parse_tag, {"text": ["a"], "tokens": [["a"]]}, LIMITS)
    assert error.status == 400 and "exactly one of" in error.message


@pytest.mark.parametrize(
    "tokens,message",
    [
        ("a b", "tokens must be a list of lists of strings"),
        ([["a"], "b"], "tokens[1] must be a list of strings"),
        ([["a", 1]], "tokens[0] must be a list of strings"),
    ],
)
def test_tag_tokens_shape(tokens: Any, message: str) -> None:
    error = refusal(parse_tag, {"tokens": tokens}, LIMITS)
    assert error.status == 400 and error.message == message


@pytest.mark.parametrize("word", ["", " a", "a ", "a\tb", "a\u00a0b", "\n"])
def test_tag_tokens_refuse_words_that_are_not_one_word(word: str) -> None:
    error = refusal(parse_tag, {"tokens": [["ok"], ["ok", word]]}, LIMITS)
    assert error.status == 422
    assert error.message == "tokens[1] has an empty word or a word with spaces"


def test_tag_limits_apply_to_both_forms() -> None:
    assert refusal(parse_tag, {"tokens": [["a"]] * 4}, LIMITS).status == 413
    assert refusal(parse_tag, {"text": ["a"] * 4}, LIMITS).status == 413
    # Tokens are measured as the sentence they make: five words of one letter are 9 characters.
    assert parse_tag({"tokens": [["a"] * 5]}, LIMITS).tokens == [["a"] * 5]
    error = refusal(parse_tag, {"tokens": [["a"] * 6]}, LIMITS)
    assert error.status == 422 and error.message.startswith("tokens[0] has 11 characters")
    assert refusal(parse_tag, {"text": ["a" * 11]}, LIMITS).status == 422


def test_tag_refuses_unknown_fields() -> None:
    error = refusal(parse_tag, {"tokens": [["a"]], "beam": 2}, LIMITS)
    assert error.status == 400 and error.message.startswith("unknown field 'beam'")


# --- parse_generate -----------------------------------------------------------------------------


def test_generate_defaults() -> None:
    # The default length is 100 characters, or the character limit when that is lower.
    assert parse_generate({"prefix": "the"}, ServeSettings()) == GenerateRequest(
        prefix="the", length=100, temperature=1.0, top_k=0, seed=None
    )
    assert parse_generate({"prefix": ""}, LIMITS).length == 10


@pytest.mark.parametrize("body", [{}, {"prefix": 3}, {"prefix": ["a"]}])
def test_generate_prefix_must_be_a_string(body: dict[str, Any]) -> None:
    error = refusal(parse_generate, body, LIMITS)
    assert error.status == 400 and error.message == "prefix must be a string"


def test_generate_prefix_length_limit_is_inclusive() -> None:
    assert parse_generate({"prefix": "x" * 10}, LIMITS).prefix == "x" * 10
    error = refusal(parse_generate, {"prefix": "x" * 11}, LIMITS)
    assert error.status == 422 and error.message == "prefix has 11 characters; the limit is 10"


@pytest.mark.parametrize(
    "field,value,status",
    [
        ("length", 0, None),
        ("length", 10, None),
        ("length", 11, 422),
        ("length", True, 400),
        ("temperature", 0, None),
        ("temperature", 2, None),
        ("temperature", "hot", 400),
        ("top_k", 0, None),
        ("top_k", 5, None),
        ("top_k", -1, 422),
        ("top_k", 1.5, 400),
        ("seed", None, None),
        ("seed", 0, None),
        ("seed", 2**63 - 1, None),
        ("seed", 2**63, 422),
        ("seed", -1, 422),
        ("seed", "7", 400),
    ],
)
def test_generate_settings(field: str, value: Any, status: int | None) -> None:
    body = {"prefix": "a", field: value}
    if status is None:
        parsed = getattr(parse_generate(body, LIMITS), field)
        assert parsed == value
        if field == "temperature":
            assert isinstance(parsed, float)  # an integer temperature arrives as a float
    else:
        assert refusal(parse_generate, body, LIMITS).status == status


@pytest.mark.parametrize(
    "parse,body",
    [
        (parse_generate, {"prefix": "a", "temperature": 10**400}),
        (parse_translate, {"text": ["a"], "length_penalty": 10**400}),
    ],
    ids=["temperature", "length_penalty"],
)
def test_a_number_too_large_for_a_float_is_a_client_error(
    parse: Callable[..., Any], body: dict[str, Any]
) -> None:
    error = refusal(parse, body, LIMITS)
    assert error.status in (400, 422)
