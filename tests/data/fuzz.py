"""Hypothesis strategies and profiles shared by the property tests of every reader and parser.

Inputs are bytes, because that is what a user's file is: random bytes; text assembled from the
characters that mean something to some reader (tabs, slashes, ``#``, ``_``, digits, ``=``, ``:``…)
with BOMs, CRLF and NUL mixed in; that text in other encodings; and truncations of all of these.

Two profiles: ``FUZZ`` (bounded, in the default suite) and ``FUZZ_LONG`` (``slow`` marker).
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
FUZZ_LONG = settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

_PIECES = [
    "\t",
    "\n",
    "\r\n",
    "\r",
    " ",
    "  ",
    "/",
    "//",
    "#",
    "# text = x",
    "_",
    "-",
    "1",
    "2",
    "1-2",
    "1.1",
    "0",
    "x",
    "word",
    "NOUN",
    "é",
    "ü",
    "\u00a0",
    "\u202f",
    "\ufeff",
    "\x00",
    ":",
    "=",
    "{",
    "}",
    "[",
    "]",
    '"',
    "'",
    ",",
    ".",
    "!",
    "?",
    "|",
    "*",
    "&a",
    "!!python/object:os.system",
    "<unk>",
    "<eos>",
    "<pad>",
    "\u2028",
    "\U0001f600",
    "nan",
    "inf",
    "-1",
    "1e-4",
    "null",
    "~",
    "task: seq2seq",
    "data:",
    "  train: x",
    "model: {cell: lstm}",
    "tokens",
    "min_freq",
]

text = st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=6)), max_size=60).map("".join)
"""Text made of pieces that mean something to some reader, plus arbitrary characters."""

_encodings = st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"])


@st.composite
def file_bytes(draw: st.DrawFn) -> bytes:
    """The bytes of a file a user might hand over (see the module docstring)."""
    kind = draw(st.sampled_from(["text", "encoded", "random", "truncated"]))
    if kind == "random":
        return draw(st.binary(max_size=300))
    source = draw(text)
    if kind == "text":
        return source.encode("utf-8", errors="surrogatepass")
    data = source.encode(draw(_encodings), errors="replace")
    if kind == "truncated" and data:
        data = data[: draw(st.integers(0, len(data)))]
    return data


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)
"""Any JSON value, nested a few levels."""


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path inside a JSON value."""
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, meta: dict[str, Any]) -> Any:
    """``meta`` with a few values, at any depth, replaced by any JSON value or dropped."""
    meta = json.loads(json.dumps(meta))
    for path in draw(st.lists(st.sampled_from(paths(meta)), min_size=1, max_size=3)):
        if not path:
            return draw(json_values)
        parent = meta
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()) and isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent[path[-1]] = draw(json_values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or retyped this path
    return meta
