import math
import random

import pytest
import sacrebleu

import rnnlab
from rnnlab.metrics.bleu import corpus_bleu_with_signature, mean_d2l_bleu
from rnnlab.metrics.perplexity import perplexity
from tests.textbook_reference import textbook_bleu


def test_d2l_bleu_worked_example():
    # p1 = 4/5, p2 = 3/4, p3 = 1/3, p4 = 0; brevity penalty exp(1 - 6/5).
    bp = math.exp(1 - 6 / 5)
    assert rnnlab.d2l_bleu("A B B C D", "A B C D E F", 1) == pytest.approx(bp * (4 / 5) ** 0.5)
    assert rnnlab.d2l_bleu("A B B C D", "A B C D E F", 2) == pytest.approx(
        bp * (4 / 5) ** 0.5 * (3 / 4) ** 0.25
    )
    assert rnnlab.d2l_bleu("A B B C D", "A B C D E F", 3) == pytest.approx(
        bp * (4 / 5) ** 0.5 * (3 / 4) ** 0.25 * (1 / 3) ** 0.125
    )
    assert rnnlab.d2l_bleu("A B B C D", "A B C D E F", 4) == 0.0


@pytest.mark.parametrize(
    ("pred", "label", "k", "expected"),
    [
        ("va !", "va !", 2, 1.0),
        ("j'ai perdu .", "j'ai perdu .", 2, 1.0),
        ("il est calme .", "il est riche .", 2, (3 / 4) ** 0.5 * (1 / 3) ** 0.25),
        # Longer prediction: no brevity penalty; clipped unigram counts.
        ("a a a a", "a b", 1, (1 / 4) ** 0.5),
        # Shorter prediction: penalty exp(1 - 4/2).
        ("a b", "a b c d", 2, math.exp(1 - 4 / 2)),
        ("", "a b", 2, 0.0),
        ("x", "a b", 2, 0.0),
        # Shorter than k: n runs up to the prediction's length, so an exact match scores 1.
        ("est le", "est le", 3, 1.0),
        ("a", "a", 4, 1.0),
        ("a b", "a b c", 3, math.exp(1 - 3 / 2)),
        ("a c", "a b", 4, 0.0),  # p2 = 0
    ],
)
def test_d2l_bleu_hand_computed_table(pred, label, k, expected):
    assert rnnlab.d2l_bleu(pred, label, k) == pytest.approx(expected)


CORPORA = [
    (["the cat sat on the mat."], ["the cat sat on the mat."]),
    (["the cat sat on a mat"], ["the cat is on the mat"]),
    (
        ["Il est calme.", "Je suis chez moi.", "Va !"],
        ["Il est calme.", "Je suis à la maison.", "Va !"],
    ),
    (["hello there general kenobi", "", "a b c d e f"], ["hello there", "nothing", "a b c d e g"]),
    (["The Dog barks."], ["the dog barks ."]),
]


@pytest.mark.parametrize(("hyps", "refs"), CORPORA)
@pytest.mark.parametrize("lowercase", [False, True])
def test_corpus_bleu_equals_sacrebleu(hyps, refs, lowercase):
    expected = sacrebleu.corpus_bleu(hyps, [refs], lowercase=lowercase).score
    assert rnnlab.corpus_bleu(hyps, refs, lowercase=lowercase) == pytest.approx(expected, abs=1e-12)


def test_corpus_bleu_needs_one_reference_per_hypothesis():
    with pytest.raises(ValueError, match="one reference each"):
        rnnlab.corpus_bleu(["a"], ["a", "b"])


def test_an_empty_corpus_scores_as_sacrebleu_scores_empty_lines():
    empty_lines = sacrebleu.corpus_bleu([""], [[""]])
    score, sig = corpus_bleu_with_signature([], [])
    assert score == empty_lines.score == 0.0
    assert sig == corpus_bleu_with_signature([""], [""])[1]


def test_signature_names_sacrebleu_settings():
    score, sig = corpus_bleu_with_signature(["a b c d"], ["a b c d"])
    assert score == pytest.approx(100.0)
    assert "tok:13a" in sig and "case:mixed" in sig and "nrefs:1" in sig
    assert "case:lc" in corpus_bleu_with_signature(["a"], ["a"], lowercase=True)[1]


def test_mean_d2l_bleu():
    assert mean_d2l_bleu(["a b", "x y"], ["a b", "a b"], k=2) == pytest.approx(0.5)


def test_perplexity_definitions():
    assert perplexity(0.0, 10) == 1.0
    assert perplexity(10 * math.log(7), 10) == pytest.approx(7.0)
    assert perplexity(1e6, 1) == math.inf


def test_d2l_bleu_equals_the_textbook_wherever_the_textbook_is_defined():
    rng = random.Random(0)
    for _ in range(2000):
        k = rng.randint(1, 4)
        pred = " ".join(rng.choice("abcd") for _ in range(rng.randint(k, 8)))
        label = " ".join(rng.choice("abcd") for _ in range(rng.randint(1, 8)))
        assert rnnlab.d2l_bleu(pred, label, k) == pytest.approx(textbook_bleu(pred, label, k))
