"""BLEU two ways: the textbook sentence formula and sacreBLEU's corpus score.

* ``d2l_bleu`` is the formula of the d2l seq2seq chapter, on space-separated tokens::

      exp(min(0, 1 − len_label / len_pred)) · Π_{n=1..k} p_n ^ (1 / 2^n)

  with p_n the clipped n-gram precision. It is what the chapter reports for its four example sentences.
* ``corpus_bleu`` is Papineni et al. (2002) corpus BLEU as computed by sacreBLEU (Post 2018) with its
  default settings (13a tokenisation, exponential smoothing, cased), so rnnlab's figures are comparable
  with published ones. Every score can be reported with sacreBLEU's signature.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import sacrebleu


def d2l_bleu(pred_seq: str, label_seq: str, k: int) -> float:
    """Textbook BLEU of one prediction against one label; an empty prediction scores 0.

    n runs up to ``min(k, len(prediction))``: a prediction shorter than ``k`` has no n-grams of the
    higher orders, where the textbook code divides by zero. Skipping those orders lets an exact
    match of any length score 1 and leaves every score the textbook can compute unchanged.
    """
    pred_tokens, label_tokens = pred_seq.split(), label_seq.split()
    len_pred, len_label = len(pred_tokens), len(label_tokens)
    if len_pred == 0:
        return 0.0
    score = math.exp(min(0.0, 1.0 - len_label / len_pred))
    for n in range(1, min(k, len_pred) + 1):
        pred_ngrams = Counter(tuple(pred_tokens[i : i + n]) for i in range(len_pred - n + 1))
        label_ngrams = Counter(tuple(label_tokens[i : i + n]) for i in range(len_label - n + 1))
        matches = sum(min(count, label_ngrams[gram]) for gram, count in pred_ngrams.items())
        score *= math.pow(matches / (len_pred - n + 1), math.pow(0.5, n))
    return score


def _check_corpus(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(
            f"{len(hypotheses)} hypotheses but {len(references)} references; need one reference each"
        )


def corpus_bleu_with_signature(
    hypotheses: Sequence[str], references: Sequence[str], *, lowercase: bool = False
) -> tuple[float, str]:
    """Corpus BLEU (0–100) and sacreBLEU's signature of the settings that produced it.

    An empty corpus scores 0, as sacreBLEU scores a corpus of empty lines; sacreBLEU itself raises
    an IndexError on it."""
    _check_corpus(hypotheses, references)
    metric = sacrebleu.metrics.BLEU(lowercase=lowercase)
    if not hypotheses:
        hypotheses = references = [""]
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return float(score.score), str(metric.get_signature())


def corpus_bleu(
    hypotheses: Sequence[str], references: Sequence[str], *, lowercase: bool = False
) -> float:
    """Corpus BLEU on the 0–100 scale, identical to ``sacrebleu.corpus_bleu`` with default settings."""
    return corpus_bleu_with_signature(hypotheses, references, lowercase=lowercase)[0]


def mean_d2l_bleu(hypotheses: Sequence[str], references: Sequence[str], k: int = 2) -> float:
    """Mean sentence-level textbook BLEU over a corpus (0–1 scale, as in the chapter)."""
    _check_corpus(hypotheses, references)
    if not hypotheses:
        return 0.0
    return sum(d2l_bleu(h, r, k) for h, r in zip(hypotheses, references, strict=True)) / len(
        hypotheses
    )
