"""Tokenizers (``rnnlab.data.tokenizers``): the word tokenizer in each preprocessing mode and the
sentencepiece tokenizer's training options.

References: hand-tokenised sentences, hypothesis properties stated in plain Python (a decoded text
tokenises back to the same tokens; punctuation only ever starts a token), and sentencepiece's own
processor API and ``▁`` whitespace convention. The round trips already covered by
tasks/test_seq2seq_sentencepiece.py (unigram/BPE × none/punct) and the comparison with the export
runtime in export/test_export_folder.py are not repeated.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.atomic import WriteFailed
from rnnlab.data.text import normalize
from rnnlab.data.tokenizers import SentencePieceTokenizer, Tokenizer, WordTokenizer
from rnnlab.errors import RnnlabError

MODES = ["textbook", "punct", "none"]
PUNCTUATION = ",.!?"
SENTENCES = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Schnee!",
    "Eine Frau, die lacht, sitzt auf einer Bank.",
    "Kinder spielen Fußball im Park?",
]


# --- WordTokenizer ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode,text,tokens,decoded",
    [
        ("textbook", "Hi, you!", ["hi", ",", "you", "!"], "hi, you!"),
        ("textbook", "Va !", ["va", "!"], "va!"),
        (
            "textbook",
            "Il\u202fest\xa0calme...",
            ["il", "est", "calme", ".", ".", "."],
            "il est calme...",
        ),
        ("punct", "Hi, You!", ["Hi", ",", "You", "!"], "Hi, You!"),
        ("punct", "  Wait.\tWhat?  ", ["Wait", ".", "What", "?"], "Wait. What?"),
        ("none", "Hi, you!", ["Hi,", "you!"], "Hi, you!"),
        ("none", "Il\xa0est", ["Il", "est"], "Il est"),
    ],
)
def test_word_tokenizer_by_hand(mode: str, text: str, tokens: list[str], decoded: str) -> None:
    tokenizer = WordTokenizer(mode)  # type: ignore[arg-type]
    assert tokenizer.encode(text) == tokens
    assert tokenizer.decode(tokens) == decoded


def test_word_tokenizer_defaults_to_textbook() -> None:
    assert WordTokenizer().encode("Hi.") == ["hi", "."]


def test_word_tokenizer_without_preprocessing_never_reattaches_punctuation() -> None:
    # Tokens the model produced are joined as they are: "a ." stays "a ." in mode none.
    assert WordTokenizer("none").decode(["a", ".", "b", "!"]) == "a . b !"
    assert WordTokenizer("punct").decode(["a", ".", "b", "!"]) == "a. b!"


texts = st.text(
    st.sampled_from(list("aZé ,.!?\t\n\xa0\u202f'-")) | st.characters(codec="utf-8"), max_size=25
)


@settings(max_examples=150, deadline=None)
@given(text=texts, mode=st.sampled_from(MODES))
def test_decoded_text_tokenises_back_to_the_same_tokens(text: str, mode: str) -> None:
    # decode(encode(text)) is "the text as the model sees it": seeing it again changes nothing.
    tokenizer = WordTokenizer(mode)  # type: ignore[arg-type]
    tokens = tokenizer.encode(text)
    assert tokenizer.encode(tokenizer.decode(tokens)) == tokens


@settings(max_examples=150, deadline=None)
@given(text=texts, mode=st.sampled_from(["textbook", "punct"]))
def test_punctuation_only_ever_starts_a_token(text: str, mode: str) -> None:
    # ", . ! ?" after anything but a space is split off, so inside a token it can only come first.
    for token in WordTokenizer(mode).encode(text):  # type: ignore[arg-type]
        assert token and not any(char.isspace() for char in token)
        assert all(char not in PUNCTUATION for char in token[1:]), token


@settings(max_examples=60, deadline=None)
@given(text=texts)
def test_textbook_is_punct_lower_cased(text: str) -> None:
    assert WordTokenizer("textbook").encode(text) == WordTokenizer("punct").encode(text.lower())


# --- SentencePieceTokenizer ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def textbook_pieces(tmp_path_factory: pytest.TempPathFactory) -> SentencePieceTokenizer:
    """Trained on lower-cased, punctuation-split text, with a vocabulary the corpus cannot fill."""
    return SentencePieceTokenizer.train(
        SENTENCES * 10,
        tmp_path_factory.mktemp("spm") / "textbook.model",
        vocab_size=1000,
        model_type="bpe",
        preprocess="textbook",
    )


def test_vocab_size_is_an_upper_bound_not_a_demand(
    textbook_pieces: SentencePieceTokenizer,
) -> None:
    size = textbook_pieces.processor.get_piece_size()
    assert 1 < size < 1000


def test_only_unk_is_a_special_piece(textbook_pieces: SentencePieceTokenizer) -> None:
    processor = textbook_pieces.processor
    # rnnlab's Vocab owns <pad>, <bos> and <eos>; sentencepiece keeps only <unk>, at id 0.
    assert processor.unk_id() == 0 and processor.id_to_piece(0) == "<unk>"
    assert processor.bos_id() == processor.eos_id() == processor.pad_id() == -1
    pieces = {processor.id_to_piece(i) for i in range(processor.get_piece_size())}
    assert not pieces & {"<s>", "</s>", "<pad>"}


def test_textbook_pieces_decode_to_the_normalised_text(
    textbook_pieces: SentencePieceTokenizer,
) -> None:
    pieces = textbook_pieces.encode("Ein Mann, zwei Hunde!")
    # Lower-cased, and "," and "!" were split off before training, so they are pieces of their own.
    assert "▁," in pieces and "▁!" in pieces and all(p == p.lower() for p in pieces)
    assert textbook_pieces.decode(pieces) == "ein mann, zwei hunde!"


@pytest.mark.parametrize("text", [*SENTENCES, "  Zwei   Männer, im Park!  ", "Ärger über ÿ."])
def test_pieces_spell_out_the_normalised_text(
    textbook_pieces: SentencePieceTokenizer, text: str
) -> None:
    # sentencepiece's convention: "▁" marks a word start; the pieces concatenated, with "▁" read
    # as a space, are the normalised text with runs of whitespace collapsed.
    spelled = "".join(textbook_pieces.encode(text)).replace("▁", " ").strip()
    assert spelled == " ".join(normalize(text, "textbook").split())


def test_training_reads_a_one_pass_iterator_like_a_list(tmp_path: Path) -> None:
    from_list = SentencePieceTokenizer.train(
        SENTENCES * 5, tmp_path / "list.model", vocab_size=50, model_type="unigram"
    )
    from_generator = SentencePieceTokenizer.train(
        (line for line in SENTENCES * 5), tmp_path / "generator.model", vocab_size=50
    )
    assert (tmp_path / "list.model").read_bytes() == (tmp_path / "generator.model").read_bytes()
    assert from_generator.encode(SENTENCES[2]) == from_list.encode(SENTENCES[2])


def test_training_into_a_missing_folder_is_a_write_failure(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "spm.model"
    with pytest.raises(WriteFailed) as caught:
        SentencePieceTokenizer.train(SENTENCES, target, vocab_size=100)
    assert caught.value.path == str(target)
    assert not target.exists()


def test_a_vocab_size_below_the_character_count_is_a_user_error(tmp_path: Path) -> None:
    characters = set("".join(SENTENCES))
    assert len(characters) > 30  # the reference: this corpus needs more than 30 single characters
    with pytest.raises(RnnlabError, match="raise data.spm_vocab_size"):
        SentencePieceTokenizer.train(SENTENCES, tmp_path / "spm.model", vocab_size=30)
    assert not (tmp_path / "spm.model").exists()


@pytest.mark.parametrize("tokenizer_class", [WordTokenizer, SentencePieceTokenizer])
@pytest.mark.parametrize("method", ["encode", "decode"])
def test_tokenizers_match_the_protocol(tokenizer_class: type, method: str) -> None:
    # Tokenizer is not runtime-checkable: compare the parameter names callers may pass.
    wanted = list(inspect.signature(getattr(Tokenizer, method)).parameters)
    assert list(inspect.signature(getattr(tokenizer_class, method)).parameters) == wanted
