"""IdSequences reads exactly like the list of lists it replaces."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnnlab.data.id_sequences import IdSequences
from tests.data.fuzz import FUZZ

id_lists = st.lists(st.lists(st.integers(0, 2**31 - 1), max_size=8), max_size=20)


@FUZZ
@given(sequences=id_lists, start=st.integers(-25, 25), stop=st.integers(-25, 25))
def test_behaves_like_a_list_of_lists(sequences: list[list[int]], start: int, stop: int):
    stored = IdSequences(sequences)
    assert len(stored) == len(sequences)
    assert list(stored) == sequences and stored == sequences
    assert stored.lengths() == [len(s) for s in sequences]
    assert stored[start:stop] == sequences[start:stop]
    for index in range(-len(sequences), len(sequences)):
        assert stored[index] == sequences[index]
    with pytest.raises(IndexError):
        stored[len(sequences)]
