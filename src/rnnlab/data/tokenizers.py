"""Tokenizers turn raw text into model tokens and model tokens back into text.

A tokenizer is a pair of inverse-ish functions; ``decode(encode(text))`` gives the text as the model
sees it (e.g. lower-cased), which is also what references are normalised to before BLEU.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from rnnlab.atomic import atomic_write_bytes
from rnnlab.data.text import Preprocess, detokenize, normalize, tokenize
from rnnlab.errors import ConfigError, DataError


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[str]: ...

    def decode(self, tokens: list[str]) -> str: ...


class WordTokenizer:
    """Normalise (see ``rnnlab.data.text``), then split on whitespace."""

    def __init__(self, preprocess: Preprocess = "textbook") -> None:
        self.preprocess = preprocess

    def encode(self, text: str) -> list[str]:
        return tokenize(normalize(text, self.preprocess))

    def decode(self, tokens: list[str]) -> str:
        return detokenize(tokens) if self.preprocess != "none" else " ".join(tokens)


class SentencePieceTokenizer:
    """Subword pieces from a sentencepiece model (Kudo & Richardson 2018), unigram or BPE.

    Text is normalised by ``preprocess`` first, as for words; ``decode`` joins the pieces back into
    text (and re-attaches ``, . ! ?`` that the normalisation split off), so BLEU sees plain text.
    """

    def __init__(self, model_path: str | Path, preprocess: Preprocess = "none") -> None:
        import sentencepiece as spm

        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise DataError(self.model_path, "sentencepiece model is missing")
        try:
            self.processor = spm.SentencePieceProcessor(model_file=str(self.model_path))
        except (RuntimeError, OSError) as exc:  # an empty or damaged file: "could not parse"
            reason = " ".join(str(exc).split())[:200]
            raise DataError(
                self.model_path, f"not a valid sentencepiece model ({reason})"
            ) from None
        self.preprocess = preprocess

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        model_path: str | Path,
        *,
        vocab_size: int,
        model_type: str = "unigram",
        preprocess: Preprocess = "none",
        source: str = "the training text",
    ) -> SentencePieceTokenizer:
        """Train on ``texts`` (normalised by ``preprocess``), save to ``model_path``, load it.

        ``vocab_size`` is an upper bound: a corpus too small for it gets fewer pieces rather than
        an error. Every line is learnt from, however long (sentencepiece would skip those over
        4,192 bytes: a corpus of paragraphs would leave it nothing). ``source`` names the text in
        errors.
        """
        import sentencepiece as spm

        lines = [normalize(t, preprocess) for t in texts]
        longest = max((len(line.encode("utf-8")) for line in lines), default=0)
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(lines),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                max_sentence_length=max(longest + 1, 4192),
                character_coverage=1.0,
                hard_vocab_limit=False,
                # rnnlab's Vocab owns the specials; sentencepiece only needs its <unk>.
                unk_id=0,
                bos_id=-1,
                eos_id=-1,
                pad_id=-1,
                minloglevel=2,
            )
        except RuntimeError as exc:
            # Every character of the training text is a piece (character_coverage 1.0), so the
            # vocabulary cannot be smaller than the alphabet: the user's setting, not a crash.
            needed = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(exc))
            if needed is None:  # no text left to learn from (only spaces or control characters)
                raise DataError(
                    source,
                    f"sentencepiece cannot learn pieces from this text ({' '.join(str(exc).split())})",
                ) from None
            raise ConfigError(
                f"sentencepiece vocab_size {vocab_size} is below the {needed.group(2)} distinct "
                f"characters of the training text (with its specials); raise data.spm_vocab_size"
            ) from None
        atomic_write_bytes(model_path, model.getvalue())
        return cls(model_path, preprocess)

    def encode(self, text: str) -> list[str]:
        return self.processor.encode(normalize(text, self.preprocess), out_type=str)

    def decode(self, tokens: list[str]) -> str:
        text = self.processor.decode_pieces(list(tokens))
        return detokenize(text.split()) if self.preprocess != "none" else text
