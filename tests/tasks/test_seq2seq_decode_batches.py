"""How ``Seq2SeqTask.translate_hypotheses`` batches sentences: the batching never changes an answer."""

from __future__ import annotations

import pytest

from tests.export.runs import CPU, make_run, reverse_lines, seq2seq_config


@pytest.fixture(scope="module", params=["none", "bahdanau"])
def trained(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"decode-{request.param}")
    train = root / "train.tsv"
    train.write_text("\n".join(reverse_lines(200, seed=0)) + "\n", encoding="utf-8")
    config = seq2seq_config(train, attention=request.param)
    task, model = make_run(root, "seq2seq", config, train_steps=30)
    sources = [task.encode_source(line.split("\t")[0]) for line in reverse_lines(23, seed=1)]
    return request.param, task, model, sources


def batch_sizes(task, model, sources, **decode) -> tuple[list[int], list]:
    """The sentences per batch of one call, and its hypotheses."""
    sizes: list[int] = []
    hyps = task.translate_hypotheses(model, sources, CPU, progress=sizes.append, **decode)
    return sizes, [[h.tokens for h in sentence] for sentence in hyps]


def test_beam_search_over_attention_decodes_batch_size_over_k_sentences_at_a_time(trained):
    attention, task, model, sources = trained
    sizes, hyps = batch_sizes(task, model, sources, beam_size=5, n_best=2, batch_size=10)
    assert sizes == ([2] * 11 + [1] if attention != "none" else [10, 10, 3])
    _, one_batch = batch_sizes(task, model, sources, beam_size=5, n_best=2, batch_size=100)
    assert hyps == one_batch
    greedy_sizes, _ = batch_sizes(task, model, sources, beam_size=1, batch_size=10)
    assert greedy_sizes == [10, 10, 3]
