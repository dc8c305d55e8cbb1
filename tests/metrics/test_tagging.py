"""``TaggingScores`` against hand-worked counts and a plain-Python recomputation of every metric.

The reference flattens the sentences and recomputes, from the definitions, the token accuracy, the
accuracy on words unseen in training, per-tag precision / recall / F1 / support over the union of
gold and predicted tags (scikit-learn's ``precision_recall_fscore_support`` with
``zero_division=0``), macro-F1 and the count of gold tags unseen in training. Also checked: the
precision/recall symmetry of swapping gold and predictions, empty input, and that a malformed
sentence is refused before it changes any count. The one-sentence example in
tests/tasks/test_tagger.py is not repeated.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnlab.metrics.tagging import TaggingScores

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)

TAGS = ["ADJ", "DET", "NOUN", "VERB"]
# A token is (gold tag, predicted tag, word unseen in training); four tags make hits common enough.
TOKEN = st.tuples(st.sampled_from(TAGS), st.sampled_from(TAGS), st.booleans())
SENTENCES = st.lists(st.lists(TOKEN, max_size=6), max_size=6)
KNOWN_TAGS = st.frozensets(st.sampled_from(TAGS))

Token = tuple[str, str, bool]


def score(sentences: list[list[Token]], known_tags: frozenset[str]) -> TaggingScores:
    """Feed ``sentences`` to a fresh ``TaggingScores`` one sentence at a time."""
    scores = TaggingScores()
    for sentence in sentences:
        scores.add(
            [gold for gold, _, _ in sentence],
            [predicted for _, predicted, _ in sentence],
            oov=[unseen for _, _, unseen in sentence],
            known_tags=known_tags,
        )
    return scores


def safe_ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def reference_per_tag(gold: list[str], predicted: list[str]) -> dict[str, dict[str, float | int]]:
    """Per-tag precision, recall, F1 and support straight from the definitions."""
    table: dict[str, dict[str, float | int]] = {}
    for tag in sorted(set(gold) | set(predicted)):
        true_positives = sum(1 for g, p in zip(gold, predicted, strict=True) if g == p == tag)
        precision = safe_ratio(true_positives, predicted.count(tag))
        recall = safe_ratio(true_positives, gold.count(tag))
        f1 = safe_ratio(2 * precision * recall, precision + recall)
        table[tag] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": gold.count(tag),
        }
    return table


def test_two_sentences_by_hand():
    scores = TaggingScores()
    known = {"DET", "NOUN", "VERB"}
    scores.add(
        ["DET", "NOUN", "VERB"], ["DET", "VERB", "VERB"], oov=[False, True, False], known_tags=known
    )
    scores.add(["NOUN", "X"], ["NOUN", "NOUN"], oov=[True, True], known_tags=known)
    summary = scores.summary(per_tag=True)
    # Hits: DET, VERB, NOUN of five tokens. Unseen words: NOUN (miss), NOUN (hit), X (miss).
    assert summary["accuracy"] == pytest.approx(3 / 5)
    assert summary["oov_accuracy"] == pytest.approx(1 / 3)
    assert (summary["tokens"], summary["sentences"], summary["oov_tokens"]) == (5, 2, 3)
    assert summary["unseen_tag_tokens"] == 1 and summary["unseen_tags"] == {"X": 1}
    table = summary["per_tag"]
    assert table["DET"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    # NOUN: gold twice, predicted twice (once for X), right once.
    assert table["NOUN"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    # VERB: gold once, predicted twice, right once: F1 = 2 · ½ · 1 / (½ + 1).
    assert table["VERB"] == {
        "precision": 0.5,
        "recall": 1.0,
        "f1": pytest.approx(2 / 3),
        "support": 1,
    }
    assert table["X"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert summary["macro_f1"] == pytest.approx((1 + 0.5 + 2 / 3 + 0) / 4)


@PROPERTY
@given(sentences=SENTENCES, known_tags=KNOWN_TAGS)
def test_summary_equals_a_recomputation_from_the_flattened_tokens(
    sentences: list[list[Token]], known_tags: frozenset[str]
):
    tokens = [token for sentence in sentences for token in sentence]
    gold = [g for g, _, _ in tokens]
    predicted = [p for _, p, _ in tokens]
    unseen_word_hits = [g == p for g, p, unseen in tokens if unseen]
    summary = score(sentences, known_tags).summary(per_tag=True)

    assert summary["tokens"] == len(tokens) and summary["sentences"] == len(sentences)
    assert summary["accuracy"] == pytest.approx(
        safe_ratio(sum(g == p for g, p in zip(gold, predicted, strict=True)), len(tokens))
    )
    assert summary["oov_tokens"] == len(unseen_word_hits)
    assert summary["oov_accuracy"] == pytest.approx(
        safe_ratio(sum(unseen_word_hits), len(unseen_word_hits))
    )
    unseen_tags = {tag: gold.count(tag) for tag in sorted(set(gold) - known_tags)}
    assert summary["unseen_tags"] == unseen_tags
    assert list(summary["unseen_tags"]) == sorted(unseen_tags)  # reported in name order
    assert summary["unseen_tag_tokens"] == sum(unseen_tags.values())

    expected = reference_per_tag(gold, predicted)
    assert summary["per_tag"].keys() == expected.keys()
    for tag, row in expected.items():
        assert summary["per_tag"][tag] == pytest.approx(row), tag
    macro_f1 = safe_ratio(sum(float(row["f1"]) for row in expected.values()), len(expected))
    assert summary["macro_f1"] == pytest.approx(macro_f1)


@PROPERTY
@given(sentences=SENTENCES)
def test_swapping_gold_and_predictions_swaps_precision_and_recall(sentences: list[list[Token]]):
    # Precision of a tag is its true positives over predictions, recall over gold occurrences, so
    # exchanging the two sides exchanges them and leaves accuracy and F1 alone.
    swapped = [[(p, g, unseen) for g, p, unseen in sentence] for sentence in sentences]
    forward = score(sentences, frozenset(TAGS)).summary(per_tag=True)
    backward = score(swapped, frozenset(TAGS)).summary(per_tag=True)
    assert forward["accuracy"] == backward["accuracy"]
    assert forward["per_tag"].keys() == backward["per_tag"].keys()
    for tag, row in forward["per_tag"].items():
        assert row["precision"] == pytest.approx(backward["per_tag"][tag]["recall"])
        assert row["recall"] == pytest.approx(backward["per_tag"][tag]["precision"])
        assert row["f1"] == pytest.approx(backward["per_tag"][tag]["f1"])


def test_a_predicted_tag_outside_the_known_tags_is_not_an_unseen_gold_tag():
    scores = TaggingScores()
    scores.add(["NOUN"], ["ZZZ"], oov=[False], known_tags={"NOUN"})
    summary = scores.summary(per_tag=True)
    # ``unseen_tags`` explains gold tags the model could never predict, not odd predictions.
    assert summary["unseen_tags"] == {} and summary["unseen_tag_tokens"] == 0
    assert summary["per_tag"]["ZZZ"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_no_tokens_gives_zeros_not_a_division_error():
    empty = TaggingScores().summary(per_tag=True)
    assert empty["accuracy"] == 0.0 and empty["oov_accuracy"] == 0.0
    assert empty["macro_f1"] == 0.0 and empty["per_tag"] == {}
    assert (empty["tokens"], empty["sentences"]) == (0, 0)
    scores = TaggingScores()
    scores.add([], [], oov=[], known_tags=set())  # an empty sentence still counts as a sentence
    assert scores.summary()["sentences"] == 1 and scores.summary()["tokens"] == 0


def test_per_tag_table_only_on_request():
    scores = TaggingScores()
    scores.add(["DET"], ["DET"], oov=[False], known_tags={"DET"})
    assert not {"per_tag", "macro_f1"} & set(scores.summary())
    assert {"per_tag", "macro_f1"} <= set(scores.summary(per_tag=True))


@pytest.mark.parametrize(
    ("gold", "predicted", "oov"),
    [
        (["A", "B"], ["A"], [False, False]),
        (["A"], ["A", "B"], [False]),
        (["A", "B"], ["A", "B"], [False]),
    ],
)
def test_a_sentence_with_mismatched_lengths_is_refused_before_counting(
    gold: list[str], predicted: list[str], oov: list[bool]
):
    scores = TaggingScores()
    scores.add(["A"], ["A"], oov=[True], known_tags={"A"})
    with pytest.raises(ValueError, match="one entry per token"):
        scores.add(gold, predicted, oov=oov, known_tags={"A"})
    # The earlier sentence alone is still what the scores describe.
    summary = scores.summary(per_tag=True)
    assert (summary["sentences"], summary["tokens"], summary["oov_tokens"]) == (1, 1, 1)
    assert summary["per_tag"] == {"A": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}}
