"""``rnnlab.load`` on every task, against references that do not go through the inference API."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import rnnlab
from rnnlab.decoding.beam import beam_search_hypotheses
from rnnlab.errors import RnnlabError
from rnnlab.inference import LanguageModel, Tagger, Translator, load_as
from rnnlab.rundir import open_run
from tests.cli_runner import threads_kept


@pytest.fixture(autouse=True)
def _one_thread():
    with threads_kept():
        torch.set_num_threads(1)
        yield


@pytest.fixture(scope="module")
def translator(translator_run: Path) -> Translator:
    model = rnnlab.load(translator_run, device="cpu")
    assert isinstance(model, Translator)
    return model


def sequence_log_prob(translator: Translator, source: str, tokens: list[str]) -> float:
    """log P(tokens + <eos> | source), one teacher-forced step at a time (no search involved)."""
    task, model = translator.task, translator.model
    assert task.tgt_vocab is not None
    src = task.encode_source(source)
    state = model.start(torch.tensor([src]), torch.tensor([len(src)]))
    ids = [*task.tgt_vocab.encode(tokens), task.tgt_vocab.eos_id]
    previous, total = task.tgt_vocab.bos_id, 0.0
    with torch.no_grad():
        for token in ids:
            log_probs, state = model.step(torch.tensor([previous]), state)
            total += float(log_probs[0, token])
            previous = token
    return total


def test_load_gives_the_class_of_each_task(translator_run, tagger_run, lm_run):
    assert isinstance(rnnlab.load(translator_run), rnnlab.Translator)
    assert isinstance(rnnlab.load(tagger_run), rnnlab.Tagger)
    assert isinstance(rnnlab.load(lm_run), rnnlab.LanguageModel)


def test_load_refuses_what_is_not_a_run(tmp_path, tagger_run):
    with pytest.raises(RnnlabError, match="no such run directory"):
        rnnlab.load(tmp_path / "missing")
    with pytest.raises(RnnlabError, match="not an rnnlab run directory"):
        rnnlab.load(tmp_path)
    with pytest.raises(RnnlabError, match="translate needs a seq2seq run, this is a tagger run"):
        load_as(Translator, tagger_run, command="translate")
    (tmp_path / "rnnlab-export.json").write_text("{}")
    with pytest.raises(RnnlabError, match="rnnlab-export.json: export format"):
        rnnlab.load(tmp_path)


def test_translate_keeps_order_and_blank_lines(translator):
    lines = ["a b c d", "", "h g", "   ", "e f g h a"]
    out = translator.translate(lines)
    assert [t.text for t in out] == ["d c b a", "", "g h", "", "a h g f e"]
    assert out[1].tokens == [] and out[1].n_best == [] and out[1].score == 0.0
    assert out[0].tokens == ["d", "c", "b", "a"]


def test_greedy_score_is_the_log_probability_of_the_output(translator):
    for line in ["a b c d", "h g", "c c a"]:
        [t] = translator.translate([line])
        assert t.score == pytest.approx(sequence_log_prob(translator, line, t.tokens), abs=1e-4)
        assert t.n_best == [(t.text, t.score)]


def test_beam_and_n_best_match_beam_search(translator):
    task, model = translator.task, translator.model
    assert task.tgt_vocab is not None
    line = "a b c d e"
    out = translator.translate([line], beam=4, n_best=3, length_penalty=0.6)[0]
    src = task.encode_source(line)
    state = model.start(torch.tensor([src]), torch.tensor([len(src)]))
    reference = beam_search_hypotheses(
        model,
        state,
        batch_size=1,
        beam_size=4,
        n_best=3,
        bos_id=task.tgt_vocab.bos_id,
        eos_id=task.tgt_vocab.eos_id,
        banned=task.tgt_vocab.never_emitted,
        max_len=task.config.decode.max_len,
        length_penalty_alpha=0.6,
    )[0]
    assert [text for text, _ in out.n_best] == [task.detokenize(h.tokens) for h in reference]
    assert [score for _, score in out.n_best] == pytest.approx([h.score for h in reference])
    assert (out.text, out.score) == out.n_best[0]
    # The length-normalised score of the best hypothesis, from its teacher-forced log-probability.
    raw = sequence_log_prob(translator, line, out.tokens)
    assert out.score == pytest.approx(raw / ((5 + len(out.tokens) + 1) / 6) ** 0.6, abs=1e-4)


def test_batching_does_not_change_results(translator):
    lines = ["a b", "h g f e d c", "c", "d e f", "", "b a h g"]
    together = translator.translate(lines, beam=3)
    translator.batch_size = 1
    try:
        alone = translator.translate(lines, beam=3)
    finally:
        translator.batch_size = translator.task.config.decode.batch_size
    assert [t.text for t in alone] == [t.text for t in together]
    assert [t.score for t in alone] == pytest.approx([t.score for t in together], abs=1e-5)


def test_attention_matrix_of_each_translation(translator):
    out = translator.translate(["a b c d", "", "h g"], attention=True)
    assert out[1].attention is None
    for t, source in ((out[0], "a b c d"), (out[2], "h g")):
        matrix = t.attention
        assert matrix is not None
        assert matrix.src_tokens == [*source.split(), "<eos>"]
        assert matrix.out_tokens == [*t.tokens, "<eos>"]
        assert matrix.weights.shape == (len(t.tokens) + 1, len(source.split()) + 1)
        assert torch.allclose(matrix.weights.sum(-1), torch.ones(len(t.tokens) + 1), atol=1e-5)
    # Reversal: of the source words, the first output token attends most to the last one. (<eos>,
    # the position beside it, may draw as much: tiny models trained on different CPUs differ there.)
    assert int(out[0].attention.weights[0, :-1].argmax()) == 3


def test_progress_counts_every_sentence(translator):
    seen: list[int] = []
    translator.translate(["a b", "", "c d e"], progress=seen.append)
    assert sum(seen) == 2


def test_bad_decoding_settings_are_user_errors(translator):
    with pytest.raises(RnnlabError, match="beam must be 1 or more"):
        translator.translate(["a"], beam=0)
    with pytest.raises(RnnlabError, match="n_best must be between 1 and the beam size 2"):
        translator.translate(["a"], beam=2, n_best=3)
    # ((5 + |Y|) / 6) ** α overflows a float from about α = 300 at a few hundred tokens
    for alpha in (-0.5, 10.5, 1000.0, float("nan")):
        with pytest.raises(RnnlabError, match="length_penalty must be between 0 and 10"):
            translator.translate(["a"], beam=2, length_penalty=alpha)


def test_tagger_tags_strings_and_token_lists_alike(tagger_run):
    tagger = rnnlab.load(tagger_run)
    assert isinstance(tagger, Tagger)
    run = open_run(tagger_run)
    words = [["The", "dog", "ate", "the", "apple", "."], [], ["Is", "it", "late", "?"]]
    reference = run.task.tag(run.model, words, run.device)
    from_strings = tagger.tag([" ".join(w) for w in words])
    from_tokens = tagger.tag(words)
    assert [s.tags for s in from_strings] == [s.tags for s in from_tokens] == reference
    assert [s.tokens for s in from_strings] == words
    assert from_strings[1].tags == [] and from_strings[1].line() == ""
    assert from_strings[2].line() == " ".join(
        f"{w}/{t}" for w, t in zip(words[2], reference[2], strict=True)
    )


def test_language_model_generates_and_scores(lm_run, tmp_path, capsys):
    lm = rnnlab.load(lm_run)
    assert isinstance(lm, LanguageModel)
    assert lm.generate("the quick", length=25, temperature=0) == (
        "the quick brown fox jumps over the"
    )
    assert lm.generate("the", length=0) == "the"
    sampled = lm.generate("t", length=40, temperature=1.5, top_k=5, seed=3)
    assert sampled == lm.generate("t", length=40, temperature=1.5, top_k=5, seed=3)
    assert len(sampled) == 41
    # Perplexity of a text equals `rnnlab evaluate` on a file holding it.
    text = "the quick brown fox jumps over the lazy dog\n" * 3
    (tmp_path / "text.txt").write_text(text)
    run = open_run(lm_run)
    expected = run.task.evaluate(run.model, str(tmp_path / "text.txt"), run.device)["perplexity"]
    assert lm.perplexity(text) == pytest.approx(expected, rel=1e-6)
    assert 1.0 <= lm.perplexity(text) < 1.5
    assert lm.perplexity("the lazy dog jumps over the quick brown fox\n" * 3) > 2.0
    with pytest.raises(RnnlabError, match="never seen in training"):
        lm.generate("THE", length=3)
    with pytest.raises(RnnlabError, match="temperature must be 0"):
        lm.generate("the", length=3, temperature=-1)
    assert math.isfinite(lm.perplexity("ab"))
