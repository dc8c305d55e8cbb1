"""What the inference API returns: plain dataclasses that a CLI prints and a server sends as JSON."""

from __future__ import annotations

from dataclasses import dataclass, field

from rnnlab.tasks.seq2seq import AttentionMatrix


@dataclass
class Translation:
    """One translated line. An empty input line gives ``text == ""``, no tokens and no n-best."""

    text: str
    """The best hypothesis, detokenised."""
    tokens: list[str]
    """The best hypothesis as the model's output tokens (no ``<eos>``)."""
    score: float
    """What the search ranked by: log-probability over the GNMT length penalty (raw when α = 0)."""
    n_best: list[tuple[str, float]] = field(default_factory=list)
    """Every hypothesis asked for, best first, as ``(text, score)``; the first is ``(text, score)``."""
    attention: AttentionMatrix | None = None
    """Attention of the best hypothesis, when asked for and the model has attention."""

    def line(self) -> str:
        """The command line's output line: the text, or the n-best texts separated by tabs."""
        if len(self.n_best) > 1:
            return "\t".join(text for text, _ in self.n_best)
        return self.text


@dataclass
class TaggedSentence:
    """Tokens with one tag each; an empty sentence has neither."""

    tokens: list[str]
    tags: list[str]

    def line(self) -> str:
        """``word/TAG`` pairs separated by spaces, as ``rnnlab tag`` prints them."""
        return " ".join(f"{w}/{t}" for w, t in zip(self.tokens, self.tags, strict=True))


__all__ = ["AttentionMatrix", "TaggedSentence", "Translation"]
