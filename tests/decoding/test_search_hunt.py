"""Greedy search, beam search and sampling against references computed without the searches.

References:

* brute force: every output of at most ``max_len`` tokens over a tiny vocabulary, scored by its
  summed log-probability over the GNMT length penalty ((5 + |Y|) / 6)^α, |Y| counting ``<eos>``,
  under a step model whose next-token distribution depends on the sentence and on the whole prefix;
* a plain-Python beam search with fairseq's rule (the 2K best extensions; ``<eos>`` among the top K
  finishes, the K best others go on), run to ``max_len`` without any early stop: what beam.py's
  ``exact`` stop rule claims to equal;
* a token-by-token ``torch.argmax`` loop for greedy search (the first of equal maxima wins);
* teacher forcing through the model's ``forward`` for the reported log-probabilities;
* the target distribution softmax(log p / T) over the top k, written out by hand, for sampling
  (Pearson's chi-square with a generous threshold).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch

from rnnlab.decoding.beam import beam_search, beam_search_hypotheses
from rnnlab.decoding.greedy import greedy_hypotheses, greedy_search
from rnnlab.decoding.sampling import sample
from tests.reverse_task import BOS, EOS, reverse_batch, tiny_model, train_steps

TOY_EOS = 2
TOY_BOS = 99  # never a column of the toy tables: the toy models ignore the tokens they are fed


def lp(length: int, alpha: float) -> float:
    return ((5.0 + length) / 6.0) ** alpha


class PrefixModel:
    """A step model over ``vocab`` tokens whose next-token log-probabilities are a fixed pseudo-random
    function of (sentence, prefix): log_softmax(scale · N(0, 1) + eos_bias at ``<eos>``).

    Its state is (sentence ids (R,), prefixes (list of R lists), first step?); the prefixes are kept
    from the tokens fed back, so it checks that a search feeds back the tokens it reports.
    """

    def __init__(self, vocab: int, seed: int, *, scale: float = 2.0, eos_bias: float = 0.0):
        self.vocab, self.seed, self.scale, self.eos_bias = vocab, seed, scale, eos_bias
        self.cache: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}

    def dist(self, sentence: int, prefix: list[int]) -> torch.Tensor:
        """float32 log-probabilities of the token after ``prefix``."""
        key = (sentence, tuple(prefix))
        if key not in self.cache:
            code = self.seed * 1_000_003 + sentence * 7_919
            for token in prefix:
                code = (code * 131 + token + 1) % (2**61 - 1)
            generator = torch.Generator().manual_seed(code)
            x = torch.randn(self.vocab, generator=generator, dtype=torch.float64) * self.scale
            x[TOY_EOS] += self.eos_bias
            self.cache[key] = torch.log_softmax(x, -1).float()
        return self.cache[key]

    def start(self, sentences: list[int]):
        return (torch.tensor(sentences), [[] for _ in sentences], True)

    def step(self, tokens, state, *, normalize=True):
        sentences, prefixes, first = state
        if first:
            fed = prefixes
        else:
            fed = [p + [int(t)] for p, t in zip(prefixes, tokens.tolist(), strict=True)]
        scores = torch.stack([self.dist(int(s), p) for s, p in zip(sentences, fed, strict=True)])
        return scores, (sentences, fed, False)

    def select_state(self, state, indices):
        sentences, prefixes, first = state
        return (sentences[indices], [prefixes[i] for i in indices.tolist()], first)

    def log_prob(self, sentence: int, output: list[int], max_len: int) -> float:
        """Summed float32 log-probabilities of ``output`` and the ``<eos>`` it ends with below
        ``max_len`` tokens."""
        seq = output + [TOY_EOS] if len(output) < max_len else output
        return sum(float(self.dist(sentence, seq[:i])[seq[i]]) for i in range(len(seq)))


def brute_force(model: PrefixModel, sentence: int, max_len: int, alpha: float, banned=()):
    """Every output, best first, as (score, log_prob, tokens); ties keep enumeration order."""
    words = [v for v in range(model.vocab) if v != TOY_EOS and v not in banned]
    ranked = []
    for n in range(max_len + 1):
        for output in itertools.product(words, repeat=n):
            raw = model.log_prob(sentence, list(output), max_len)
            size = n + 1 if n < max_len else n
            ranked.append((raw / lp(size, alpha), raw, list(output)))
    ranked.sort(key=lambda r: -r[0])
    return ranked


def reference_beam(
    model: PrefixModel, sentence: int, k: int, max_len: int, alpha: float, banned=()
):
    """fairseq's beam search in plain Python, run to ``max_len`` (no early stop): all finished
    hypotheses, best first, as (score, log_prob, tokens)."""
    beams: list[tuple[float, list[int]]] = [(0.0, [])]
    finished = []
    for t in range(max_len):
        candidates = []
        for score, prefix in beams:
            log_probs = model.dist(sentence, prefix)
            for v in range(model.vocab):
                if v not in banned:
                    candidates.append((score + float(log_probs[v]), prefix, v))
        candidates.sort(key=lambda c: -c[0])
        candidates = candidates[: 2 * k]
        for score, prefix, v in candidates[:k]:
            if v == TOY_EOS:
                finished.append((score / lp(t + 1, alpha), score, prefix))
        beams = [(s, p + [v]) for s, p, v in candidates if v != TOY_EOS][:k]
    finished += [(s / lp(max_len, alpha), s, p) for s, p in beams]
    finished.sort(key=lambda r: -r[0])
    return finished


def toy_beam(model: PrefixModel, sentences: list[int], **kwargs):
    return beam_search_hypotheses(
        model,
        model.start(sentences),
        batch_size=len(sentences),
        bos_id=TOY_BOS,
        eos_id=TOY_EOS,
        **kwargs,
    )


# -- beam search against brute force and the unbounded reference -----------------------------------

EXHAUSTIVE_CASES = [
    # vocab, max_len, alpha, banned, eos_bias
    (4, 3, 0.0, (), 0.0),
    (4, 3, 1.0, (), 0.0),
    (5, 2, 0.6, (0,), 0.0),
    (4, 1, 0.0, (), 0.0),
    (4, 1, 0.6, (1,), 0.0),
    (4, 2, 0.6, (), 4.0),  # <eos> probable first, two steps
    (4, 3, 2.0, (), 3.0),  # <eos> probable first
    (5, 3, 0.6, (0, 1), -2.0),  # <eos> improbable
]


@pytest.mark.parametrize(("vocab", "max_len", "alpha", "banned", "eos_bias"), EXHAUSTIVE_CASES)
@pytest.mark.parametrize("seed", range(4))
def test_an_exhaustive_beam_returns_the_brute_force_n_best(
    vocab, max_len, alpha, banned, eos_bias, seed
):
    model = PrefixModel(vocab, seed, eos_bias=eos_bias)
    words = vocab - 1 - len(banned)
    outputs = sum(words**n for n in range(max_len + 1))
    k = outputs + 2  # wider than the number of outputs: nothing is pruned
    for n_best in sorted({1, 3, outputs}):
        hyps = toy_beam(
            model, [0, 1, 2], beam_size=k, n_best=n_best, max_len=max_len,
            length_penalty_alpha=alpha, banned=banned,
        )  # fmt: skip
        for sentence, found in enumerate(hyps):
            expected = brute_force(model, sentence, max_len, alpha, banned)[:n_best]
            assert [h.tokens for h in found] == [tokens for _, _, tokens in expected]
            for h, (score, raw, _) in zip(found, expected, strict=True):
                assert h.log_prob == pytest.approx(raw, abs=1e-5)
                assert h.score == pytest.approx(score, abs=1e-5)
                assert not set(h.tokens) & set(banned)


NARROW_CASES = [
    # vocab, max_len, alpha, banned, eos_bias, beam, n_best
    (6, 5, 0.0, (), 0.0, 2, 2),
    (6, 5, 1.0, (), 0.0, 3, 1),
    (7, 6, 0.6, (0,), 1.0, 3, 2),
    (5, 6, 2.0, (), 1.0, 2, 2),
    (6, 6, 0.6, (0, 1), -1.0, 4, 4),
    (8, 5, 1.5, (), 2.0, 1, 1),
    (130, 4, 0.0, (0, 1), 3.0, 3, 2),  # two whole blocks and a tail: the blocked ranking
    (200, 4, 1.0, (0,), 4.0, 4, 2),
]


@pytest.mark.parametrize(
    ("vocab", "max_len", "alpha", "banned", "eos_bias", "beam", "n_best"), NARROW_CASES
)
@pytest.mark.parametrize("seed", range(3))
def test_the_exact_stop_returns_what_a_search_run_to_max_len_returns(
    vocab, max_len, alpha, banned, eos_bias, beam, n_best, seed
):
    model = PrefixModel(vocab, seed, scale=1.5 if vocab < 100 else 3.0, eos_bias=eos_bias)
    hyps = toy_beam(
        model, [0, 1, 2], beam_size=beam, n_best=n_best, max_len=max_len,
        length_penalty_alpha=alpha, banned=banned,
    )  # fmt: skip
    for sentence, found in enumerate(hyps):
        expected = reference_beam(model, sentence, beam, max_len, alpha, banned)[:n_best]
        assert [h.tokens for h in found] == [tokens for _, _, tokens in expected]
        for h, (score, raw, _) in zip(found, expected, strict=True):
            assert h.score == pytest.approx(score, abs=1e-5)
            assert h.log_prob == pytest.approx(raw, abs=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_a_sentences_hypotheses_do_not_depend_on_its_batch_mates_or_their_order(alpha):
    model = PrefixModel(6, seed=11, scale=1.5)
    search = dict(beam_size=3, n_best=3, max_len=6, length_penalty_alpha=alpha, banned=(0,))
    sentences = list(range(7))
    together = toy_beam(model, sentences, **search)
    shuffled_order = [4, 0, 6, 2, 5, 1, 3]
    shuffled = toy_beam(model, shuffled_order, **search)
    for position, sentence in enumerate(shuffled_order):
        alone = toy_beam(model, [sentence], **search)[0]
        assert together[sentence] == shuffled[position] == alone


def test_beam_search_token_lists_are_those_of_the_hypotheses():
    model = PrefixModel(6, seed=5)
    search = dict(beam_size=3, n_best=2, max_len=4, bos_id=TOY_BOS, eos_id=TOY_EOS)
    lists = beam_search(model, model.start([0, 1, 2]), batch_size=3, **search)
    hyps = beam_search_hypotheses(model, model.start([0, 1, 2]), batch_size=3, **search)
    assert lists == [[h.tokens for h in sentence] for sentence in hyps]
    assert all(len(sentence) == 2 for sentence in lists)


# -- the exact stop rule at the edge of float32 rounding -------------------------------------------


class CertainOnceStarted:
    """Five tokens. At the first step token 3 has log-probability ``a`` and ``<eos>`` ``e``; after
    it, token 3 is certain (log-probability 0) and every other token impossible."""

    def __init__(self, a: float, e: float):
        self.a, self.e = a, e

    def step(self, tokens, state, *, normalize=True):
        scores = torch.full((tokens.numel(), 5), float("-inf"))
        first = state == 0
        scores[first, 3] = self.a
        scores[first, TOY_EOS] = self.e
        scores[~first, 3] = 0.0
        return scores, state + 1

    def select_state(self, state, indices):
        return state[indices]


# float32 values: the twenty 3s score a / lp(20) = -0.20428225393681 at α = 0.7, just above the
# empty output's e = -0.20428225398064 (its lp(1) is 1). Both are exact float32 numbers.
EDGE_A, EDGE_E, EDGE_ALPHA, EDGE_MAX_LEN = -0.5547314286231995, -0.2042822539806366, 0.7, 20


def test_the_edge_case_is_what_its_numbers_say():
    assert float(torch.tensor(EDGE_A)) == EDGE_A and float(torch.tensor(EDGE_E)) == EDGE_E
    assert EDGE_A / lp(EDGE_MAX_LEN, EDGE_ALPHA) > EDGE_E
    # Searched with two finished hypotheses (the answer cannot stop before both exist), the
    # twenty 3s come first.
    hyps = beam_search_hypotheses(
        CertainOnceStarted(EDGE_A, EDGE_E), torch.zeros(1, dtype=torch.long), batch_size=1,
        beam_size=2, n_best=2, bos_id=1, eos_id=TOY_EOS, max_len=EDGE_MAX_LEN,
        length_penalty_alpha=EDGE_ALPHA,
    )[0]  # fmt: skip
    assert [h.tokens for h in hyps] == [[3] * EDGE_MAX_LEN, []]


def test_the_exact_stop_keeps_a_beam_that_outranks_the_answer_by_less_than_a_float32_step():
    hyps = beam_search_hypotheses(
        CertainOnceStarted(EDGE_A, EDGE_E), torch.zeros(1, dtype=torch.long), batch_size=1,
        beam_size=2, n_best=1, bos_id=1, eos_id=TOY_EOS, max_len=EDGE_MAX_LEN,
        length_penalty_alpha=EDGE_ALPHA, stop="exact",
    )[0]  # fmt: skip
    assert hyps[0].tokens == [3] * EDGE_MAX_LEN
    assert hyps[0].score == pytest.approx(EDGE_A / lp(EDGE_MAX_LEN, EDGE_ALPHA), abs=0)


class RuntimeSteps:
    """``CertainOnceStarted`` in the export runtime's step-graph shape: the ``top`` best log-probs
    and tokens of each row, and the state (the step of each row) as the one static-free tensor."""

    def __init__(self, a: float, e: float):
        self.model = CertainOnceStarted(a, e)

    def start(self, sources):
        return [np.zeros(len(sources), dtype=np.int64)]

    def step(self, tokens, state, *, top=0, attention=False):
        scores, after = self.model.step(torch.from_numpy(tokens), torch.from_numpy(state[0]))
        best, best_tokens = scores.topk(top, dim=-1)
        return [best.numpy(), best_tokens.numpy()], None, [after.numpy()]

    def select(self, state, rows, *, within_blocks=False):
        return [state[0][rows]]


def test_the_export_runtimes_exact_stop_keeps_that_beam_too():
    from rnnlab.export.runtime import OnnxTranslator

    steps = RuntimeSteps(EDGE_A, EDGE_E)
    runtime = object.__new__(OnnxTranslator)  # the search alone, without ONNX sessions
    runtime._start, runtime._step, runtime._select = steps.start, steps.step, steps.select
    runtime.bos_id, runtime.eos_id, runtime.pad_id, runtime.vocab_size = 1, TOY_EOS, 0, 5
    runtime.beam_stop = "exact"
    (hyps,) = runtime.beam_batch(
        [[4]], beam_size=2, n_best=1, max_len=EDGE_MAX_LEN, alpha=EDGE_ALPHA
    )
    assert hyps[0].tokens == [3] * EDGE_MAX_LEN


# -- greedy search, and beam search with one beam ---------------------------------------------------


class PaletteTable:
    """Scores drawn from a few values per (step, sentence): ties, repeated maxima across blocks of
    64 columns and in the tail are common. State: (sentence ids, step)."""

    def __init__(self, vocab: int, batch: int, steps: int, seed: int, dtype=torch.float32):
        generator = torch.Generator().manual_seed(seed)
        palette = torch.tensor([-5.0, -2.0, -1.0, -1.0, -0.5])
        picks = torch.randint(len(palette), (steps, batch, vocab), generator=generator)
        self.table = palette[picks].to(dtype)

    def step(self, tokens, state, *, normalize=True):
        rows, t = state
        return self.table[min(t, self.table.size(0) - 1)][rows].clone(), (rows, t + 1)

    def select_state(self, state, indices):
        return state[0][indices], state[1]

    def argmax_decode(self, max_len: int, banned=()) -> list[list[int]]:
        outputs = []
        for row in range(self.table.size(1)):
            output = []
            for t in range(max_len):
                scores = self.table[min(t, self.table.size(0) - 1), row].clone()
                scores[list(banned)] = float("-inf")
                token = int(scores.argmax())
                if token == TOY_EOS:
                    break
                output.append(token)
            outputs.append(output)
        return outputs


@pytest.mark.parametrize(("vocab", "batch"), [(6, 40), (200, 200), (130, 300), (257, 130)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_greedy_search_takes_the_first_of_equal_maxima_like_torch_argmax(vocab, batch, dtype):
    for seed in range(2):
        table = PaletteTable(vocab, batch, 6, seed, dtype)
        state = (torch.arange(batch), 0)
        expected = table.argmax_decode(6, banned=(0,))
        search = dict(batch_size=batch, bos_id=1, eos_id=TOY_EOS, max_len=6, banned=[0])
        assert greedy_search(table, state, **search) == expected
        if dtype == torch.float32:
            assert [h.tokens for h in greedy_hypotheses(table, state, **search)] == expected
        assert any(len(out) < 6 for out in expected) and any(len(out) == 6 for out in expected)


@pytest.mark.parametrize(("vocab", "tied"), [(5, (0, 1)), (130, (63, 64)), (200, (10, 199))])
def test_beam_of_one_takes_one_of_the_tied_best_tokens(vocab, tied):
    """Greedy search takes the first of tied tokens; beam search's order of equal scores is not
    specified (beam.py), but it must take one of them at every step."""
    scores = torch.full((1, 4, vocab), -6.0)
    scores[:, :, list(tied)] = -0.5
    scores[:, :, TOY_EOS] = -1.0
    table = PaletteTable(vocab, 4, 1, seed=0)
    table.table = torch.log_softmax(scores, -1)
    state = (torch.arange(4), 0)
    search = dict(batch_size=4, bos_id=vocab + 1, eos_id=TOY_EOS, max_len=3)
    greedy = greedy_search(table, state, **search)
    assert greedy == [[tied[0]] * 3] * 4  # the first maximum, as torch.argmax
    one_beam = beam_search_hypotheses(table, state, beam_size=1, **search)
    for hyps in one_beam:
        assert len(hyps[0].tokens) == 3 and set(hyps[0].tokens) <= set(tied)
        assert hyps[0].log_prob == pytest.approx(3 * float(table.table[0, 0, tied[0]]), abs=1e-5)


@pytest.mark.parametrize("vocab", [6, 300])
def test_beam_of_one_equals_greedy_on_a_prefix_dependent_model(vocab):
    model = PrefixModel(vocab, seed=2, scale=2.0, eos_bias=2.5 if vocab < 100 else 5.0)
    sentences = list(range(12))
    search = dict(batch_size=12, bos_id=TOY_BOS, eos_id=TOY_EOS, max_len=7, banned=[0])
    greedy = greedy_hypotheses(model, model.start(sentences), **search)
    unscored = greedy_search(model, model.start(sentences), **search)
    beam = beam_search_hypotheses(model, model.start(sentences), beam_size=1, **search)
    assert [h.tokens for h in greedy] == unscored == [b[0].tokens for b in beam]
    for sentence, (g, b) in enumerate(zip(greedy, beam, strict=True)):
        assert g.log_prob == pytest.approx(b[0].log_prob, abs=1e-5)
        assert g.log_prob == pytest.approx(model.log_prob(sentence, g.tokens, 7), abs=1e-5)
    lengths = {len(h.tokens) for h in greedy}
    assert len(lengths) > 2, "sentences should end at different steps"


def test_max_len_zero_gives_one_empty_hypothesis_in_both_searches():
    model = PrefixModel(5, seed=0)
    search = dict(batch_size=2, bos_id=TOY_BOS, eos_id=TOY_EOS, max_len=0)
    greedy = greedy_hypotheses(model, model.start([0, 1]), **search)
    beam = beam_search_hypotheses(model, model.start([0, 1]), beam_size=3, n_best=1, **search)
    assert [h.tokens for h in greedy] == [[], []]
    assert [[h.tokens for h in s] for s in beam] == [[[]], [[]]]
    assert [h.log_prob for h in greedy] == [b[0].log_prob for b in beam] == [0.0, 0.0]


# -- a real model: teacher-forced scores and batching ----------------------------------------------


REAL_MODELS = {
    "lstm-luong_dot-2-layers": dict(cell="lstm", attention="luong_dot", num_layers=2),
    "bigru-bahdanau": dict(cell="gru", attention="bahdanau", bidirectional_encoder=True),
}


@functools.cache
def real_model(name: str):
    return train_steps(tiny_model(**REAL_MODELS[name]), 40, seed=3)


def teacher_forced(model, src, length, tokens: list[int], ended: bool) -> float:
    target = tokens + [EOS] if ended else tokens
    tgt_in = torch.tensor([[BOS, *target[:-1]]])
    with torch.no_grad():
        features = model(src.unsqueeze(0), length.view(1), tgt_in)
        log_probs = torch.log_softmax(model.project(features), dim=-1)[0]
    return float(log_probs.gather(1, torch.tensor(target).unsqueeze(1)).sum())


def real_sources(n: int = 10, seed: int = 8):
    return reverse_batch(torch.Generator().manual_seed(seed), n, min_len=1, max_len=9)


def real_beam(model, batch, **kwargs):
    with torch.no_grad():
        return beam_search_hypotheses(
            model, model.start(batch.src, batch.src_lengths), batch_size=batch.src.size(0),
            bos_id=BOS, eos_id=EOS, **kwargs,
        )  # fmt: skip


@pytest.mark.parametrize("name", REAL_MODELS)
def test_n_best_scores_are_teacher_forced_log_probabilities(name):
    model, batch = real_model(name), real_sources()
    max_len = 12
    for row, hyps in enumerate(
        real_beam(model, batch, beam_size=4, n_best=4, max_len=max_len, length_penalty_alpha=0.6)
    ):
        assert len(hyps) == 4 and len({tuple(h.tokens) for h in hyps}) == 4
        for h in hyps:
            ended = len(h.tokens) < max_len
            raw = teacher_forced(model, batch.src[row], batch.src_lengths[row], h.tokens, ended)
            assert h.log_prob == pytest.approx(raw, abs=1e-4)
            assert h.score == pytest.approx(raw / lp(len(h.tokens) + ended, 0.6), abs=1e-4)
            assert BOS not in h.tokens and 0 not in h.tokens and EOS not in h.tokens


@pytest.mark.parametrize("name", REAL_MODELS)
@pytest.mark.parametrize("beam", [1, 3])
def test_results_do_not_depend_on_batch_mates_order_or_padding(name, beam):
    model, batch = real_model(name), real_sources()
    search = dict(beam_size=beam, n_best=beam, max_len=12, length_penalty_alpha=0.6)
    together = real_beam(model, batch, **search)
    order = torch.randperm(batch.src.size(0), generator=torch.Generator().manual_seed(0))
    permuted = replace(batch, src=batch.src[order], src_lengths=batch.src_lengths[order])
    shuffled = real_beam(model, permuted, **search)
    for position, row in enumerate(order.tolist()):
        n = int(batch.src_lengths[row])
        one = replace(
            batch, src=batch.src[row : row + 1, :n], src_lengths=batch.src_lengths[row : row + 1]
        )
        alone = real_beam(model, one, **search)[0]
        for a, b, c in zip(alone, together[row], shuffled[position], strict=True):
            assert a.tokens == b.tokens == c.tokens
            assert a.score == pytest.approx(b.score, abs=1e-5)
            assert c.score == pytest.approx(b.score, abs=1e-5)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_beam_of_one_is_greedy_search_on_a_real_model(name):
    model, batch = real_model(name), real_sources(16, seed=9)
    with torch.no_grad():
        state = model.start(batch.src, batch.src_lengths)
        greedy = greedy_search(model, state, batch_size=16, bos_id=BOS, eos_id=EOS, max_len=12)
    beam = real_beam(model, batch, beam_size=1, max_len=12)
    assert [b[0].tokens for b in beam] == greedy
    assert any(len(g) < 12 for g in greedy)


# -- sampling ---------------------------------------------------------------------------------------


def target(log_probs: torch.Tensor, temperature: float, top_k: int, banned=()) -> list[float]:
    """softmax(log p / T) over the k most probable allowed tokens, by hand."""
    p = [math.exp(x) if i not in banned else 0.0 for i, x in enumerate(log_probs.tolist())]
    kept = set(range(len(p)))
    if top_k:
        kth = sorted(p, reverse=True)[top_k - 1]
        kept = {i for i, q in enumerate(p) if q >= kth and q > 0}
    weights = [q ** (1 / temperature) if i in kept and q > 0 else 0.0 for i, q in enumerate(p)]
    return [w / sum(weights) for w in weights]


def chi_square(counts: Counter, expected: list[float], total: int) -> tuple[float, int]:
    """Pearson's statistic over the tokens of non-zero expected frequency, and its dof."""
    stat = sum((counts[i] - total * q) ** 2 / (total * q) for i, q in enumerate(expected) if q > 0)
    return stat, sum(q > 0 for q in expected) - 1


@pytest.mark.parametrize(
    ("temperature", "top_k", "banned"), [(1.0, 0, ()), (0.7, 0, (0,)), (1.5, 3, (1,)), (1.0, 2, ())]
)
def test_two_step_samples_follow_the_models_conditional_distributions(temperature, top_k, banned):
    """The second token's distribution depends on the first, so the sampler must feed back what it
    drew; both steps are compared with the tempered top-k distribution by chi-square."""
    model = PrefixModel(6, seed=21, scale=1.0)
    rows = 6000
    drawn = sample(
        model, model.start([0] * rows), torch.zeros(rows, dtype=torch.long), length=2,
        temperature=temperature, top_k=top_k, generator=torch.Generator().manual_seed(7),
        banned=banned,
    )  # fmt: skip
    first = Counter(row[0] for row in drawn)
    expected = target(model.dist(0, []), temperature, top_k, banned)
    stat, dof = chi_square(first, expected, rows)
    assert stat < dof + 6 * math.sqrt(2 * dof) + 10
    assert all(first[i] == 0 for i, q in enumerate(expected) if q == 0)
    # The second token, given the most frequent first one.
    head = first.most_common(1)[0][0]
    seconds = Counter(row[1] for row in drawn if row[0] == head)
    total = sum(seconds.values())
    expected = target(model.dist(0, [head]), temperature, top_k, banned)
    stat, dof = chi_square(seconds, expected, total)
    assert stat < dof + 6 * math.sqrt(2 * dof) + 10
    assert all(seconds[i] == 0 for i, q in enumerate(expected) if q == 0)


def test_greedy_sampling_follows_the_argmax_path_of_a_prefix_dependent_model():
    model = PrefixModel(7, seed=4)
    drawn = sample(
        model, model.start([0, 1, 2]), torch.zeros(3, dtype=torch.long), length=5, greedy=True,
        banned=[0],
    )  # fmt: skip
    for sentence, row in enumerate(drawn):
        prefix: list[int] = []
        for _ in range(5):
            scores = model.dist(sentence, prefix).clone()
            scores[0] = float("-inf")
            prefix.append(int(scores.argmax()))
        assert row == prefix


@pytest.mark.parametrize("name", REAL_MODELS)
def test_greedy_results_do_not_depend_on_batch_mates_when_finished_rows_leave(name):
    model, batch = real_model(name), real_sources(16, seed=10)
    search = dict(bos_id=BOS, eos_id=EOS, max_len=12, length_penalty_alpha=0.6)
    with torch.no_grad():
        state = model.start(batch.src, batch.src_lengths)
        together = greedy_hypotheses(model, state, batch_size=16, **search)
        for row in range(16):
            n = int(batch.src_lengths[row])
            alone_state = model.start(
                batch.src[row : row + 1, :n], batch.src_lengths[row : row + 1]
            )
            [alone] = greedy_hypotheses(model, alone_state, batch_size=1, **search)
            assert alone.tokens == together[row].tokens
            assert alone.score == pytest.approx(together[row].score, abs=1e-5)
            ended = len(alone.tokens) < 12
            raw = teacher_forced(model, batch.src[row], batch.src_lengths[row], alone.tokens, ended)
            assert together[row].log_prob == pytest.approx(raw, abs=1e-4)
    assert len({len(h.tokens) for h in together}) > 2, "sentences should end at different steps"
