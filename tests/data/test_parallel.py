import gzip
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pad_sequence

from rnnlab.data.batching import bucket_batches, pad_batch, sorted_batches, truncate_pad
from rnnlab.data.parallel import read_parallel, read_tsv_pairs
from rnnlab.errors import DataError


def test_tsv_reader_ignores_extra_columns_and_blank_lines(tmp_path):
    path = tmp_path / "fra.txt"
    path.write_text("Go.\tVa !\tCC-BY 2.0 (France) Attribution\n\nHi.\tSalut !\n", encoding="utf-8")
    pairs = read_tsv_pairs(path)
    assert [(p.src, p.tgt) for p in pairs] == [("Go.", "Va !"), ("Hi.", "Salut !")]


def test_direction_follows_language_codes(tmp_path):
    path = tmp_path / "fra.txt"
    path.write_text("Go.\tVa !\n", encoding="utf-8")
    (pair,) = read_parallel(path, src_lang="fr", tgt_lang="en", tsv_langs=["en", "fr"])
    assert (pair.src, pair.tgt) == ("Va !", "Go.")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "a\tb\nonly-one-column\n",
            r"bad.tsv:2: expected at least 2 tab-separated columns, found 1",
        ),
        ("a\tb\n\tb\n", r"bad.tsv:2: empty source sentence"),
        ("", r"bad.tsv: no sentence pairs found"),
    ],
)
def test_tsv_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        read_tsv_pairs(path)


def test_aligned_files_with_gzip(tmp_path):
    (tmp_path / "train.de").write_text("ein Hund\nzwei Katzen\n", encoding="utf-8")
    with gzip.open(tmp_path / "train.en.gz", "wt", encoding="utf-8") as handle:
        handle.write("a dog\ntwo cats\n")
    pairs = read_parallel(tmp_path / "train", src_lang="de", tgt_lang="en")
    assert [(p.src, p.tgt) for p in pairs] == [("ein Hund", "a dog"), ("zwei Katzen", "two cats")]


def test_aligned_files_must_have_equal_length(tmp_path):
    (tmp_path / "t.de").write_text("a\nb\n", encoding="utf-8")
    (tmp_path / "t.en").write_text("a\n", encoding="utf-8")
    with pytest.raises(DataError, match="aligned files must match"):
        read_parallel(tmp_path / "t", src_lang="de", tgt_lang="en", fmt="aligned")


def test_pad_batch_and_truncate_pad():
    ids, lengths = pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and lengths.tolist() == [3, 1]
    assert truncate_pad([1, 2, 3], 2, 0) == [1, 2]
    assert truncate_pad([1], 3, 0) == [1, 0, 0]


@given(
    st.lists(st.lists(st.integers(0, 10**6), max_size=12), min_size=1, max_size=20),
    st.integers(0, 3),
)
def test_pad_batch_equals_torch_pad_sequence(sequences, pad_id):
    ids, lengths = pad_batch(sequences, pad_id)
    expected = pad_sequence(
        [torch.tensor(s, dtype=torch.long) for s in sequences],
        batch_first=True,
        padding_value=pad_id,
    )
    assert torch.equal(ids, expected)
    assert lengths.tolist() == [len(s) for s in sequences]


def test_bucket_batches_cover_every_index_once_and_are_deterministic():
    lengths = [int(x) for x in torch.randint(1, 30, (1000,))]
    batches = bucket_batches(lengths, 32, seed=7)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    assert batches == bucket_batches(lengths, 32, seed=7)
    assert batches != bucket_batches(lengths, 32, seed=8)


def test_bucketing_reduces_padding():
    lengths = [int(x) for x in torch.randint(1, 50, (2000,))]

    def padding(batches):
        return sum(
            len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches
        )

    bucketed = padding(bucket_batches(lengths, 64, seed=0))
    plain = padding(bucket_batches(lengths, 64, seed=0, bucket=False))
    assert bucketed < plain / 5


def test_sorted_batches_are_length_sorted_and_complete():
    lengths = [5, 1, 3, 2, 4]
    batches = sorted_batches(lengths, 2)
    assert [lengths[i] for b in batches for i in b] == [1, 2, 3, 4, 5]


def test_a_token_budget_closes_batches_by_their_padded_size():
    lengths = [2, 9, 2, 3, 3, 4, 30, 4]
    # Sorted: 2 2 3 3 4 4 9 30. At most 4 sentences and 12 padded tokens a batch: 2 2 3 3 fills
    # 4 × 3; 4 4 (2 × 4) cannot take the 9 (3 × 9 > 12); the 30 exceeds the budget alone.
    batches = sorted_batches(lengths, 4, max_tokens=12)
    assert [[lengths[i] for i in b] for b in batches] == [[2, 2, 3, 3], [4, 4], [9], [30]]
    uncapped = sorted_batches(lengths, 4, max_tokens=0)  # 0: the sentence count alone
    assert [[lengths[i] for i in b] for b in uncapped] == [[2, 2, 3, 3], [4, 4, 9, 30]]


@settings(max_examples=200, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), max_size=80),
    batch_size=st.integers(1, 20),
    max_tokens=st.integers(0, 300),
)
def test_token_budgeted_batches_are_full_unless_the_next_sentence_would_overflow(
    lengths, batch_size, max_tokens
):
    batches = sorted_batches(lengths, batch_size, max_tokens=max_tokens)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    for batch in batches:
        assert 1 <= len(batch) <= batch_size
        if max_tokens and len(batch) > 1:
            assert len(batch) * max(lengths[i] for i in batch) <= max_tokens
    for batch, after in itertools.pairwise(batches):
        overflow = max_tokens and (len(batch) + 1) * lengths[after[0]] > max_tokens
        assert len(batch) == batch_size or overflow


@settings(max_examples=100, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 60), max_size=80),
    batch_size=st.integers(1, 20),
    max_tokens=st.integers(0, 300),
)
def test_the_exported_runtime_batches_as_rnnlab_does(lengths, batch_size, max_tokens):
    pytest.importorskip("onnxruntime")
    from rnnlab.export.runtime import _length_sorted

    expected = sorted_batches(lengths, batch_size, max_tokens=max_tokens)
    assert _length_sorted(lengths, batch_size, max_tokens) == expected
