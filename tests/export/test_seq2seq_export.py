"""Exported translators equal the eager model, over attention × encoder direction × cell.

Each model is exported with one shape (batch 3, sources of length ≤ 5) and run with others: batch 1
with a 1-token source, and batch 37 with sources up to 60 tokens.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from rnnlab.export.graphs import flatten_state  # noqa: E402
from rnnlab.export.onnx import export_run  # noqa: E402
from rnnlab.export.runtime import load  # noqa: E402
from tests.export.runs import CPU, eager_translate, make_run, reverse_lines, seq2seq_config  # noqa: E402

# Every cell, every attention (Luong general with and without input feeding) and both encoder
# directions each appear at least once; the full product runs under the slow marker.
GRID = [
    ("gru", "bahdanau", True, True),
    ("lstm", "luong_general", False, True),
    ("peephole_lstm", "luong_general", True, False),
    ("coupled_lstm", "luong_dot", False, True),
    ("rnn", "none", True, True),
]
ATTENTIONS = [("none", True), ("bahdanau", True), ("luong_dot", True)] + [
    ("luong_general", feed) for feed in (True, False)
]
FULL_GRID = [
    (cell, attention, bidirectional, feed)
    for cell, (attention, feed), bidirectional in itertools.product(
        ["rnn", "gru", "lstm", "peephole_lstm", "coupled_lstm"], ATTENTIONS, [False, True]
    )
    if not (attention == "luong_dot" and bidirectional)  # refused by build_seq2seq
]


def _exported(root, cell, attention, bidirectional, input_feed):
    (root / "train.tsv").write_text("\n".join(reverse_lines(60, 0)) + "\n", encoding="utf-8")
    config = seq2seq_config(
        root / "train.tsv",
        cell=cell,
        attention=attention,
        bidirectional_encoder=bidirectional,
        input_feed=input_feed,
    )
    task, model = make_run(root, "seq2seq", config)
    return task, model, load(export_run(task, model, root / "export"))


@pytest.fixture(scope="module", params=GRID, ids=lambda p: "-".join(map(str, p)))
def exported(request, tmp_path_factory):
    return _exported(tmp_path_factory.mktemp("s2s"), *request.param)


def sources(task, lengths: list[int], seed: int) -> list[list[int]]:
    """Encoded sources of the given lengths (counting ``<eos>``), random words of the vocabulary."""
    rng = np.random.default_rng(seed)
    words = task.src_vocab.itos[4:]
    return [
        task.src_vocab.encode(rng.choice(words, n - 1).tolist()) + [task.src_vocab.eos_id]
        for n in lengths
    ]


SHAPES = [[1], [60] + [int(n) for n in np.random.default_rng(0).integers(1, 61, 36)]]


def kept_state(state) -> list[torch.Tensor]:
    """The eager decoder state as an export keeps it: without ``context_gates``, the eager
    stepper's cached projection of ``context`` (the exported step graph computes it anew)."""
    if getattr(state, "context_gates", None) is not None:
        state = dataclasses.replace(state, context_gates=None)
    return flatten_state(state)[0]


def check_parity(task, model, runtime) -> None:
    for lengths in SHAPES:
        batch = sources(task, lengths, len(lengths))
        src = torch.zeros(len(batch), max(lengths), dtype=torch.long)
        for row, ids in enumerate(batch):
            src[row, : len(ids)] = torch.tensor(ids)
        with torch.no_grad():
            state = model.start(src, torch.tensor(lengths))
        onnx_state = runtime._start(batch)
        tokens = torch.full((len(batch),), task.tgt_vocab.bos_id)
        for _ in range(4):
            for want, got in zip(kept_state(state), onnx_state, strict=True):
                np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
            with torch.no_grad():
                log_probs, state = model.step(tokens, state)
            (onnx_log_probs,), _, onnx_state = runtime._step(tokens.numpy(), onnx_state)
            np.testing.assert_allclose(onnx_log_probs, log_probs.numpy(), atol=1e-4)
            tokens = log_probs.argmax(-1)

        greedy = task.translate_ids(model, batch, CPU, beam_size=1)
        assert [[h.tokens for h in hyps] for hyps in runtime.translate_ids(batch)] == greedy
        assert_same_beams(model, task, runtime, batch, src, lengths)


def assert_same_beams(model, task, runtime, batch, src, lengths) -> None:
    """Beam hypotheses identical to eager except where two hypotheses' scores tie exactly."""
    from rnnlab.decoding.beam import beam_search_hypotheses

    with torch.no_grad():
        state = model.start(src, torch.tensor(lengths))
    eager = beam_search_hypotheses(
        model,
        state,
        batch_size=len(batch),
        beam_size=3,
        bos_id=task.tgt_vocab.bos_id,
        eos_id=task.tgt_vocab.eos_id,
        banned=task.tgt_vocab.never_emitted,
        max_len=task.config.decode.max_len,
        length_penalty_alpha=task.config.decode.length_penalty,
        n_best=3,
    )
    onnx = runtime.translate_ids(batch, beam=3, n_best=2)
    for want, got in zip(eager, onnx, strict=True):
        for rank, hyp in enumerate(got):
            assert hyp.score == pytest.approx(want[rank].score, abs=1e-4)
            if hyp.tokens != want[rank].tokens:  # only an exact tie may swap two hypotheses
                tied = [h for h in want if h.tokens == hyp.tokens]
                assert tied and tied[0].score == want[rank].score


def test_graphs_and_searches_equal_eager(exported):
    check_parity(*exported)


@pytest.mark.slow
@pytest.mark.parametrize("combo", FULL_GRID, ids=lambda p: "-".join(map(str, p)))
def test_full_grid(combo, tmp_path):
    check_parity(*_exported(tmp_path, *combo))


@pytest.mark.parametrize("stop", ["exact", "heuristic"])
def test_beam_scores_and_length_penalty_match_eager(exported, stop, monkeypatch):
    from rnnlab.decoding.beam import beam_search_hypotheses

    task, model, runtime = exported
    assert runtime.beam_stop == task.config.decode.beam_stop  # carried by the export's metadata
    monkeypatch.setattr(runtime, "beam_stop", stop)
    batch = sources(task, [3, 7, 2, 9, 5], 11)
    src = torch.zeros(len(batch), 9, dtype=torch.long)
    for row, ids in enumerate(batch):
        src[row, : len(ids)] = torch.tensor(ids)
    with torch.no_grad():
        state = model.start(src, torch.tensor([len(b) for b in batch]))
    eager = beam_search_hypotheses(
        model,
        state,
        batch_size=len(batch),
        beam_size=4,
        bos_id=task.tgt_vocab.bos_id,
        eos_id=task.tgt_vocab.eos_id,
        banned=task.tgt_vocab.never_emitted,
        max_len=6,
        length_penalty_alpha=0.8,
        n_best=3,
        stop=stop,
    )
    onnx = runtime.beam_batch(batch, beam_size=4, n_best=3, max_len=6, alpha=0.8)
    for want_hyps, got_hyps in zip(eager, onnx, strict=True):
        assert [h.tokens for h in got_hyps] == [h.tokens for h in want_hyps]
        np.testing.assert_allclose(
            [h.score for h in got_hyps], [h.score for h in want_hyps], atol=1e-4
        )


def test_sentencepiece_translator_exports_its_subword_models(tmp_path):
    pytest.importorskip("sentencepiece")
    (tmp_path / "train.tsv").write_text("\n".join(reverse_lines(300, 0)) + "\n", encoding="utf-8")
    config = seq2seq_config(tmp_path / "train.tsv", cell="gru", attention="luong_general")
    config["data"].update(tokenizer="sentencepiece", spm_vocab_size=30)
    task, model = make_run(tmp_path, "seq2seq", config)
    folder = export_run(task, model, tmp_path / "export")
    assert {"spm.src.model", "spm.tgt.model"} <= {p.name for p in folder.iterdir()}
    lines = [line.split("\t")[0].replace(" ", "") for line in reverse_lines(30, 4)]
    runtime = load(folder)
    assert [t.text for t in runtime.translate(lines)] == eager_translate(task, model, lines)


def test_the_runtime_batches_beam_search_as_the_library_does():
    from rnnlab.decoding.beam import beam_batch_size
    from rnnlab.export.runtime import _beam_batch_size

    grid = itertools.product([1, 7, 512], [1, 2, 5, 12], [50, 3_820, 32_000, 10**6], [False, True])
    for batch, beam, vocab, attention in grid:
        expected = beam_batch_size(batch, beam, vocab, attention=attention)
        assert _beam_batch_size(batch, beam, vocab, attention=attention) == expected
        assert 1 <= expected <= batch
