"""Beam search's stop rules against searches run to ``max_len`` without any early stop.

References:

* a plain-Python beam search with fairseq's rule (the 2K best extensions; ``<eos>`` among the top K
  finishes, the K best others go on), run to ``max_len`` with no early stop, its running sums kept
  in numpy at the dtype the library's beam scores take (float32 for float32 and bfloat16 step
  outputs, float64 for float64 ones) and its ranking scores computed in float64, as
  ``log_prob / lp`` is in Python: what the ``exact`` stop rule claims to equal, bit for bit;
* brute force over every output of a tiny vocabulary, with each prefix's float32 running sum, for
  the invariant the ``exact`` rule rests on: no output scores above the bound of any of its prefixes
  (the prefix's sum in float64 over lp(``max_len``));
* exact rational arithmetic (``fractions.Fraction``, integer α) for what the float32 sums round;
* the export runtime's ``OnnxTranslator.beam_batch`` on the same step tables, through its step-graph
  protocol (the ``top`` best log-probabilities and tokens of each row), which its docstring says
  follows the library rule for rule.
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnlab.decoding.beam import beam_search_hypotheses
from rnnlab.export.runtime import OnnxTranslator

EOS = 2
BOS = 1  # a column of every table: banned in the runtime, and in the library where it is compared
PAD = 0
PRIME = 1_000_003


def lp(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


# -- step models -----------------------------------------------------------------------------------


class HashTable:
    """Log-probabilities ``table[sentence, code % M]`` (a (S, M, V) array), ``code`` a hash of every
    token fed so far (``<bos>`` included): a prefix-dependent model over a fixed table. It counts
    the steps each sentence is decoded for (``steps``)."""

    def __init__(self, table: np.ndarray):
        self.table = table
        self.steps: dict[int, int] = {}

    @staticmethod
    def advance(codes, tokens):
        return (codes * 131 + tokens + 1) % PRIME

    def dist(self, sentence: int, prefix: list[int]) -> np.ndarray:
        code = 0
        for token in [BOS, *prefix]:
            code = (code * 131 + token + 1) % PRIME
        return self.table[sentence, code % self.table.shape[1]]

    def rows(self, sentences: np.ndarray, codes: np.ndarray) -> np.ndarray:
        for s in set(sentences.tolist()):
            self.steps[s] = self.steps.get(s, 0) + 1
        return self.table[sentences, codes % self.table.shape[1]]

    # the library's step protocol
    def start(self, sentences: list[int]):
        return (torch.tensor(sentences), torch.zeros(len(sentences), dtype=torch.long))

    def step(self, tokens, state, *, normalize=True):
        sentences, codes = state
        codes = self.advance(codes, tokens)
        rows = self.rows(sentences.numpy(), codes.numpy())
        return torch.from_numpy(rows.copy()), (sentences, codes)

    def select_state(self, state, indices):
        return state[0][indices], state[1][indices]


class BF16Table(HashTable):
    """The same table, handed to the library as bfloat16 tensors (its values are bfloat16)."""

    def step(self, tokens, state, *, normalize=True):
        out, state = super().step(tokens, state)
        return out.to(torch.bfloat16), state


def runtime_for(model: HashTable, vocab: int) -> OnnxTranslator:
    """``OnnxTranslator`` with the step graph replaced by ``model`` (no ONNX sessions)."""

    def start(sources):
        return [np.array([s[0] for s in sources], dtype=np.int64), np.zeros(len(sources), np.int64)]

    def step(tokens, state, *, top=0, attention=False):
        sentences, codes = state
        codes = HashTable.advance(codes, tokens)
        rows = model.rows(sentences, codes)
        order = np.argsort(-rows, axis=1, kind="stable")[:, :top]
        return (
            [np.take_along_axis(rows, order, 1), order.astype(np.int64)],
            None,
            [sentences, codes],
        )

    def select(state, rows, *, within_blocks=False):
        return [s[rows] for s in state]

    runtime = object.__new__(OnnxTranslator)
    runtime._start, runtime._step, runtime._select = start, step, select
    runtime.bos_id, runtime.eos_id, runtime.pad_id, runtime.vocab_size = BOS, EOS, PAD, vocab
    runtime.beam_stop = "exact"
    return runtime


def library(model, sentences, *, k, n_best, max_len, alpha, banned=(BOS, PAD), stop="exact"):
    return beam_search_hypotheses(
        model, model.start(sentences), batch_size=len(sentences), beam_size=k, n_best=n_best,
        bos_id=BOS, eos_id=EOS, max_len=max_len, length_penalty_alpha=alpha, banned=banned,
        stop=stop,
    )  # fmt: skip


def reference(dist, k, max_len, alpha, banned=(BOS, PAD), acc=np.float32, vocab=None):
    """fairseq's beam run to ``max_len``: all finished (score, log_prob, tokens), best first.

    ``dist(prefix)`` gives the next-token log-probabilities; sums are kept in ``acc``."""
    beams = [(acc(0.0), [])]
    finished = []
    for t in range(max_len):
        candidates = []
        for score, prefix in beams:
            row = dist(prefix)
            for v in range(len(row)):
                if v not in banned:
                    candidates.append((acc(score + acc(row[v])), prefix, v))
        candidates.sort(key=lambda c: -float(c[0]))
        candidates = candidates[: 2 * k]
        for score, prefix, v in candidates[:k]:
            if v == EOS and math.isfinite(score):
                finished.append((float(score) / lp(t + 1, alpha), float(score), prefix))
        beams = [(s, p + [v]) for s, p, v in candidates if v != EOS or not math.isfinite(s)][:k]
    finished += [(float(s) / lp(max_len, alpha), float(s), p) for s, p in beams if s != -np.inf]
    finished.sort(key=lambda r: -r[0])
    return finished


def as_tuples(hyps):
    return [(h.score, h.log_prob, h.tokens) for h in hyps]


def random_table(
    seed, sentences, states, vocab, *, zeros=0.0, dead=0.0, eos_bias=0.0, dtype=np.float32
):
    """log_softmax of N(0, 2) rows (``eos_bias`` added to <eos> first); a share ``zeros`` of rows
    certain of one token (0.0, the rest -inf) and a share ``dead`` of the remaining entries -inf
    (never a whole row, never <eos>)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, (sentences, states, vocab))
    x[..., EOS] += rng.normal(0.0, 1.5) + eos_bias
    kill = (rng.random(x.shape) < dead) & (np.arange(vocab) != EOS)
    kill[..., 3] = False
    x[kill] = -np.inf
    table = x - np.logaddexp.reduce(x, axis=-1, keepdims=True)
    certain = rng.random((sentences, states)) < zeros
    token = rng.integers(3, vocab, (sentences, states))
    table[certain] = -np.inf
    table[certain, token[certain]] = 0.0
    return table.astype(dtype)


# -- the invariant and the edge of float32 rounding ------------------------------------------------


def absorbing_table(a: float, e: float, tiny: float) -> np.ndarray:
    """Five tokens, one sentence, states by code: the first step gives token 3 ``a`` and <eos>
    ``e``; later steps give token 3 ``tiny`` (0.0, or absorbed by a float32 sum near ``a``), token 4
    -5 and <eos> -30."""
    table = np.full((1, 997, 5), -np.inf, dtype=np.float32)
    table[0, :, 3], table[0, :, 4], table[0, :, EOS] = tiny, -5.0, -30.0
    first = HashTable(table).dist(0, [])  # a view of the first step's row
    first[:] = -np.inf
    first[3], first[EOS] = a, e
    return table


EDGE_A, EDGE_E, EDGE_ALPHA, EDGE_MAX_LEN = -0.5547314286231995, -0.2042822539806366, 0.7, 20


@pytest.mark.parametrize("tiny", [0.0, -1e-30, -(2.0**-40), -1e-9])
@pytest.mark.parametrize("n_best", [1, 2])
def test_absorbed_and_zero_log_probs_never_lift_a_beam_above_its_bound(tiny, n_best):
    """The sum stays exactly ``a``: the continuation ends at exactly the bound, which wins by less
    than a float32 step; the exact rule must keep it, as the reference does."""
    table = absorbing_table(EDGE_A, EDGE_E, tiny)
    model = HashTable(table)
    assert float(np.float32(EDGE_A) + np.float32(tiny)) == EDGE_A
    hyps = library(model, [0], k=2, n_best=n_best, max_len=EDGE_MAX_LEN, alpha=EDGE_ALPHA)[0]
    expected = reference(lambda p: model.dist(0, p), 2, EDGE_MAX_LEN, EDGE_ALPHA)[:n_best]
    assert as_tuples(hyps) == expected
    assert hyps[0].tokens == [3] * EDGE_MAX_LEN and hyps[0].score == EDGE_A / lp(20, EDGE_ALPHA)
    runtime = runtime_for(HashTable(table), 5)
    (found,) = runtime.beam_batch([[0]], beam_size=2, n_best=n_best, max_len=20, alpha=EDGE_ALPHA)
    assert as_tuples(found) == expected


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_bound_equal_to_the_nth_best_score_keeps_the_sentence_and_the_earlier_one_wins(alpha):
    """e chosen so that e / lp(1) is exactly the float64 bound a / lp(max_len): not below it, so the
    search goes on, and the tie goes to the hypothesis that ended first (the empty one)."""
    max_len = 7
    a = np.float32(-0.75)
    e = float(a) / lp(max_len, alpha) * lp(1, alpha)
    assert float(np.float32(e)) == e  # exact in float32 for these α
    table = absorbing_table(float(a), e, 0.0)
    model = HashTable(table)
    hyps = library(model, [0], k=2, n_best=1, max_len=max_len, alpha=alpha)[0]
    assert model.steps[0] == max_len  # never stopped early
    expected = reference(lambda p: model.dist(0, p), 2, max_len, alpha)
    assert as_tuples(hyps) == expected[:1]
    assert hyps[0].tokens == [] and expected[1][0] == expected[0][0]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31),
    vocab=st.integers(5, 6),
    max_len=st.integers(1, 4),
    tiny=st.sampled_from([0.0, -1e-30, -1e-9, -3e-8]),
    bf16=st.booleans(),
)
def test_brute_force_no_output_scores_above_the_bound_of_its_prefixes(
    seed, vocab, max_len, tiny, bf16
):
    """The invariant of the exact rule, over every output: the float32 sum only falls, and its
    float64 quotient by lp(|Y|) ≤ lp(max_len) stays at or below the prefix's bound."""
    table = random_table(seed, 1, 7, vocab, zeros=0.3)
    table[..., vocab - 1] = np.float32(tiny)  # a token that costs (almost) nothing
    if bf16:
        table = torch.from_numpy(table).to(torch.bfloat16).float().numpy()
    model = HashTable(table)
    for alpha in (0.0, 0.6, 2.0):
        for n in range(max_len + 1):
            for output in itertools.product(range(3, vocab), repeat=n):
                sums = [np.float32(0.0)]
                for i, token in enumerate(output):
                    sums.append(np.float32(sums[-1] + model.dist(0, list(output[:i]))[token]))
                final = sums[-1]
                size = n
                if n < max_len:
                    final = np.float32(final + model.dist(0, list(output))[EOS])
                    size = n + 1
                score = float(final) / lp(size, alpha)
                for s in sums[1 : size + 1]:
                    assert score <= float(s) / lp(max_len, alpha)


def test_float32_sums_round_where_exact_sums_would_rank_the_other_way():
    """α = 1: each later 3 costs 1e-8, absorbed by the float32 sum -0.5, so the twenty 3s keep the
    float32 score -0.5 / lp(20) = -0.12. <eos> at the first step scores the float32 just below it:
    exact rationals rank the empty output first, the float32 sums the 3s. The searches rank by the
    float32 sums, so library, runtime and reference give the 3s (one answer, not two)."""
    a, tiny, max_len = np.float32(-0.5), np.float32(-1e-8), 20
    assert np.float32(a + tiny) == a
    bound = float(a) / lp(max_len, 1.0)
    e = np.float32(bound)
    if float(e) >= bound:
        e = np.nextafter(e, np.float32(-np.inf))
    three = (Fraction(float(a)) + (max_len - 1) * Fraction(float(tiny))) / Fraction(5 + max_len, 6)
    assert Fraction(float(e)) > three  # exact: the empty output wins
    assert float(e) < bound  # float32 sums: the 3s win
    table = absorbing_table(float(a), float(e), float(tiny))
    model = HashTable(table)
    expected = reference(lambda p: model.dist(0, p), 2, max_len, 1.0)[:2]
    assert expected[0][2] == [3] * max_len and expected[1][2] == []
    hyps = library(model, [0], k=2, n_best=2, max_len=max_len, alpha=1.0)[0]
    assert as_tuples(hyps) == expected
    rt = runtime_for(HashTable(table), 5).beam_batch(
        [[0]], beam_size=2, n_best=2, max_len=max_len, alpha=1.0
    )
    assert as_tuples(rt[0]) == expected


# -- the library against the reference run to max_len ----------------------------------------------


@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    seed=st.integers(0, 2**31),
    vocab=st.integers(4, 9),
    k=st.integers(1, 4),
    n_best_share=st.floats(0, 1),
    max_len=st.integers(1, 6),
    alpha=st.sampled_from([0.0, 0.6, 1.0, 2.5]),
    zeros=st.sampled_from([0.0, 0.4]),
    dead=st.sampled_from([0.0, 0.5]),
)
def test_exact_stop_equals_the_reference_bit_for_bit(
    seed, vocab, k, n_best_share, max_len, alpha, zeros, dead
):
    n_best = 1 + int(n_best_share * (k - 1))
    table = random_table(seed, 4, 31, vocab, zeros=zeros, dead=dead)
    model = HashTable(table)
    found = library(model, [0, 1, 2, 3], k=k, n_best=n_best, max_len=max_len, alpha=alpha)
    for sentence, hyps in enumerate(found):
        expected = reference(lambda p, s=sentence: model.dist(s, p), k, max_len, alpha)
        assert as_tuples(hyps) == expected[:n_best]


@pytest.mark.parametrize("alpha", [0.0, 0.8])
@pytest.mark.parametrize(("k", "n_best"), [(3, 1), (3, 3), (4, 2)])
def test_sentences_stopping_at_different_steps_in_one_batch(alpha, k, n_best):
    table = random_table(7, 12, 61, 7, eos_bias=2.0)  # most sentences end before max_len
    model = HashTable(table)
    max_len = 12
    found = library(model, list(range(12)), k=k, n_best=n_best, max_len=max_len, alpha=alpha)
    for sentence, hyps in enumerate(found):
        expected = reference(lambda p, s=sentence: model.dist(s, p), k, max_len, alpha)
        assert as_tuples(hyps) == expected[:n_best]
    steps = {round(v) for v in model.steps.values()}
    assert len(steps) >= 2 and min(steps) < max_len, steps


def test_max_len_one_with_n_best_above_the_finished_count():
    """One step: the <eos> candidates among the top K finish, the live beams are cut; n_best = K."""
    table = random_table(3, 3, 5, 6)
    model = HashTable(table)
    for alpha in (0.0, 1.5):
        found = library(model, [0, 1, 2], k=3, n_best=3, max_len=1, alpha=alpha)
        for sentence, hyps in enumerate(found):
            expected = reference(lambda p, s=sentence: model.dist(s, p), 3, 1, alpha)
            assert as_tuples(hyps) == expected[:3] and len(hyps) == 3


# -- the heuristic rule ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    seed=st.integers(0, 2**31),
    vocab=st.integers(4, 8),
    k=st.integers(1, 4),
    max_len=st.integers(1, 7),
    alpha=st.sampled_from([0.6, 1.0, 3.0]),
)
def test_heuristic_stop_is_exact_at_alpha_zero_and_a_truncation_of_the_reference_above(
    seed, vocab, k, max_len, alpha
):
    table = random_table(seed, 3, 31, vocab)
    model = HashTable(table)
    n_best = max(1, k - 1)
    exact0 = library(model, [0, 1, 2], k=k, n_best=n_best, max_len=max_len, alpha=0.0)
    heur0 = library(
        model, [0, 1, 2], k=k, n_best=n_best, max_len=max_len, alpha=0.0, stop="heuristic"
    )
    assert [as_tuples(h) for h in heur0] == [as_tuples(h) for h in exact0]
    heur = library(
        model, [0, 1, 2], k=k, n_best=n_best, max_len=max_len, alpha=alpha, stop="heuristic"
    )
    exact = library(model, [0, 1, 2], k=k, n_best=n_best, max_len=max_len, alpha=alpha)
    for sentence, (h, x) in enumerate(zip(heur, exact, strict=True)):
        full = reference(lambda p, s=sentence: model.dist(s, p), k, max_len, alpha)
        # Every heuristic hypothesis is one the full search finishes, with the same numbers, and
        # the answer is the n_best best of those that end by some step.
        assert all(hyp in full for hyp in as_tuples(h))
        assert any(
            as_tuples(h)
            == sorted((r for r in full if len(r[2]) < cut), key=lambda r: -r[0])[:n_best]
            for cut in range(max_len + 2)
        )
        assert h[0].score <= x[0].score


def test_heuristic_stop_can_lose_to_a_longer_hypothesis_at_alpha_above_zero():
    """The documented difference: a/lp(2) < e < a/lp(max_len), so the heuristic rule stops after
    one step with the empty output and the exact rule finds the 3s."""
    a, alpha, max_len = -0.9, 1.0, 10
    e = np.float32(a / lp(2, alpha) * 0.5 + a / lp(max_len, alpha) * 0.5)
    table = absorbing_table(a, float(e), 0.0)
    for stop, tokens in [("heuristic", []), ("exact", [3] * max_len)]:
        model = HashTable(table)
        (hyps,) = library(model, [0], k=2, n_best=1, max_len=max_len, alpha=alpha, stop=stop)
        assert hyps[0].tokens == tokens
        runtime = runtime_for(HashTable(table), 5)
        runtime.beam_stop = stop
        (rt,) = runtime.beam_batch([[0]], beam_size=2, n_best=1, max_len=max_len, alpha=alpha)
        assert as_tuples(rt) == as_tuples(hyps)


# -- dtypes other than float32 ---------------------------------------------------------------------


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("vocab", [7, 200])  # 200: the blocked ranking of the extensions
def test_bfloat16_log_probs_accumulate_in_float32(autocast, vocab):
    """bf16 step outputs are added to float32 beam scores: the sums are float32 sums of the bf16
    values (a bf16 running sum would lose about 8 bits per step)."""
    table = random_table(11, 3, 61, vocab, eos_bias=3.0 if vocab > 100 else 0.0)
    table = torch.from_numpy(table).to(torch.bfloat16).float().numpy()
    model = BF16Table(table)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        found = library(model, [0, 1, 2], k=3, n_best=2, max_len=9, alpha=0.6)
    bf16_sums = 0
    for sentence, hyps in enumerate(found):
        expected = reference(lambda p, s=sentence: model.dist(s, p), 3, 9, 0.6)
        assert as_tuples(hyps) == expected[:2]
        for h in hyps:
            path = h.tokens + [EOS] if len(h.tokens) < 9 else h.tokens
            acc = torch.tensor(0.0, dtype=torch.bfloat16)
            for i, token in enumerate(path):
                acc = acc + torch.tensor(float(model.dist(sentence, path[:i])[token])).bfloat16()
            bf16_sums += float(acc) != h.log_prob
    assert bf16_sums > 0  # the check can tell the two accumulations apart


def test_the_runtime_on_float64_step_outputs_sums_and_ranks_in_float64():
    """numpy promotes the float32 beam scores to float64 when the step graph hands over float64
    log-probabilities: the runtime then equals the reference kept in float64."""
    table = random_table(5, 2, 31, 6, dtype=np.float64)
    model = HashTable(table)
    rt = runtime_for(model, 6).beam_batch([[0], [1]], beam_size=3, n_best=3, max_len=6, alpha=0.6)
    for sentence in range(2):
        expected = reference(lambda p, s=sentence: model.dist(s, p), 3, 6, 0.6, acc=np.float64)
        assert as_tuples(rt[sentence]) == expected[:3]
        assert expected[:3] != reference(lambda p, s=sentence: model.dist(s, p), 3, 6, 0.6)[:3]


# -- -inf ------------------------------------------------------------------------------------------


def test_a_sentence_whose_beams_all_die_keeps_what_it_finished():
    """After the first step only <eos> and dead tokens: the live beams are -inf, the sentence is
    done at once, in the library and the runtime alike."""
    table = np.full((1, 997, 5), -np.inf, dtype=np.float32)
    table[0, :, EOS] = -0.1
    first = HashTable(table).dist(0, [])
    first[:] = [-np.inf, -np.inf, -2.0, -0.5, -1.0]
    model = HashTable(table)
    (hyps,) = library(model, [0], k=2, n_best=2, max_len=8, alpha=0.6)
    expected = reference(lambda p: model.dist(0, p), 2, 8, 0.6)
    assert as_tuples(hyps) == expected[:2]
    assert model.steps[0] == 2
    rt = runtime_for(HashTable(table), 5).beam_batch(
        [[0]], beam_size=2, n_best=2, max_len=8, alpha=0.6
    )
    assert as_tuples(rt[0]) == expected[:2]


# -- the export runtime against the library --------------------------------------------------------


@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    seed=st.integers(0, 2**31),
    vocab=st.integers(4, 9),
    k=st.integers(2, 4),
    n_best_share=st.floats(0, 1),
    max_len=st.integers(1, 7),
    alpha=st.sampled_from([0.0, 0.6, 1.0, 2.5]),
    zeros=st.sampled_from([0.0, 0.4]),
    dead=st.sampled_from([0.0, 0.5]),
    stop=st.sampled_from(["exact", "heuristic"]),
)
def test_runtime_beam_batch_equals_the_library_bit_for_bit(
    seed, vocab, k, n_best_share, max_len, alpha, zeros, dead, stop
):
    n_best = 1 + int(n_best_share * (k - 1))
    table = random_table(seed, 4, 31, vocab, zeros=zeros, dead=dead)
    found = library(
        HashTable(table), [0, 1, 2, 3], k=k, n_best=n_best, max_len=max_len, alpha=alpha, stop=stop
    )
    runtime = runtime_for(HashTable(table), vocab)
    runtime.beam_stop = stop
    rt = runtime.beam_batch(
        [[0], [1], [2], [3]], beam_size=k, n_best=n_best, max_len=max_len, alpha=alpha
    )
    assert [as_tuples(h) for h in rt] == [as_tuples(h) for h in found]
