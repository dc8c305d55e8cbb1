"""Tokenizers turn raw text into model tokens and model tokens back into text.

A tokenizer is a pair of inverse-ish functions; ``decode(encode(text))`` gives the text as the model
sees it (e.g. lower-cased), which is also what references are normalised to before BLEU.
"""

from __future__ import annotations

from typing import Protocol

from rnnlab.data.text import Preprocess, detokenize, normalize, tokenize


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
