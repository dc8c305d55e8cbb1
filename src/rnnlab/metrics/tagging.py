"""Tagging metrics: token accuracy, accuracy on words unseen in training, per-tag P/R/F1.

Scores are computed over tag *strings*, so a gold tag the model has never seen simply never matches a
prediction: it counts as an error (and as a false negative of its tag), and is listed in
``unseen_tags`` so a user knows why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


@dataclass
class TaggingScores:
    """Counts accumulated sentence by sentence; ``summary`` turns them into metrics."""

    tokens: int = 0
    correct: int = 0
    oov_tokens: int = 0
    oov_correct: int = 0
    sentences: int = 0
    true_positives: Counter[str] = field(default_factory=Counter)
    predicted: Counter[str] = field(default_factory=Counter)
    gold: Counter[str] = field(default_factory=Counter)
    unseen_tags: Counter[str] = field(default_factory=Counter)

    def add(
        self,
        gold: Sequence[str],
        predicted: Sequence[str],
        *,
        oov: Sequence[bool],
        known_tags: set[str] | frozenset[str],
    ) -> None:
        """One sentence: gold and predicted tags, and which words were unseen in training."""
        if not len(gold) == len(predicted) == len(oov):
            raise ValueError("gold, predicted and oov must have one entry per token")
        self.sentences += 1
        for g, p, unseen_word in zip(gold, predicted, oov, strict=True):
            hit = g == p
            self.tokens += 1
            self.correct += hit
            self.gold[g] += 1
            self.predicted[p] += 1
            self.true_positives[g] += hit
            if unseen_word:
                self.oov_tokens += 1
                self.oov_correct += hit
            if g not in known_tags:
                self.unseen_tags[g] += 1

    @property
    def accuracy(self) -> float:
        return _ratio(self.correct, self.tokens)

    @property
    def oov_accuracy(self) -> float:
        return _ratio(self.oov_correct, self.oov_tokens)

    def per_tag(self) -> dict[str, dict[str, float | int]]:
        """Precision, recall, F1 and gold support of every tag in the gold data or predictions."""
        table: dict[str, dict[str, float | int]] = {}
        for tag in sorted(set(self.gold) | set(self.predicted)):
            tp = self.true_positives[tag]
            precision = _ratio(tp, self.predicted[tag])
            recall = _ratio(tp, self.gold[tag])
            f1 = _ratio(2 * precision * recall, precision + recall) if tp else 0.0
            table[tag] = {
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": self.gold[tag],
            }
        return table

    def summary(self, *, per_tag: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = {
            "accuracy": self.accuracy,
            "tokens": self.tokens,
            "sentences": self.sentences,
            "oov_accuracy": self.oov_accuracy,
            "oov_tokens": self.oov_tokens,
            "unseen_tag_tokens": sum(self.unseen_tags.values()),
            "unseen_tags": dict(sorted(self.unseen_tags.items())),
        }
        if per_tag:
            table = self.per_tag()
            result["macro_f1"] = _ratio(sum(float(r["f1"]) for r in table.values()), len(table))
            result["per_tag"] = table
        return result
