"""How translation batches sentences, in PyTorch and in the exported ONNX Runtime translator.

Beam search over an attention model takes ``batch_size // K`` sentences at a time; ``decode.batch_tokens``
caps a batch's padded source size; the batching never changes an answer.
"""

from __future__ import annotations

import pytest

from rnnlab.data.batching import sorted_batches
from tests.export.runs import CPU, make_run, reverse_lines, seq2seq_config

SOURCES = [line.split("\t")[0] for line in reverse_lines(23, seed=1)]


@pytest.fixture(scope="module", params=["none", "bahdanau"])
def trained(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"decode-{request.param}")
    train = root / "train.tsv"
    train.write_text("\n".join(reverse_lines(200, seed=0)) + "\n", encoding="utf-8")
    config = seq2seq_config(train, attention=request.param)
    task, model = make_run(root, "seq2seq", config, train_steps=30)
    return request.param, root, task, model


def expected_sizes(attention: str, beam: int) -> list[int]:
    """23 sentences at ``batch_size`` 10: 10 per batch, or 10 // 5 = 2 for beam 5 with attention."""
    return [2] * 11 + [1] if attention != "none" and beam > 1 else [10, 10, 3]


def torch_batches(task, model, beam: int, batch_size: int) -> tuple[list[int], list]:
    """The sentences per batch of one call, and its hypotheses."""
    sizes: list[int] = []
    sources = [task.encode_source(s) for s in SOURCES]
    hyps = task.translate_hypotheses(
        model, sources, CPU, beam_size=beam, n_best=min(beam, 2), batch_size=batch_size,
        progress=sizes.append,
    )  # fmt: skip
    return sizes, [[h.tokens for h in sentence] for sentence in hyps]


@pytest.mark.parametrize("beam", [1, 5])
def test_translate_hypotheses_batches(trained, beam):
    attention, _, task, model = trained
    sizes, hyps = torch_batches(task, model, beam, batch_size=10)
    assert sizes == expected_sizes(attention, beam)
    assert hyps == torch_batches(task, model, beam, batch_size=100)[1]


@pytest.fixture(scope="module")
def translator(trained):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from rnnlab.export.onnx import export_run
    from rnnlab.export.runtime import load

    _, root, task, model = trained
    return load(export_run(task, model, root / "export"))


@pytest.mark.parametrize("beam", [1, 5])
def test_the_onnx_runtime_translator_batches_the_same_way(trained, translator, beam):
    attention, _, task, model = trained
    sources = [translator.encode_source(s) for s in SOURCES]

    def run(batch_size: int) -> tuple[list[int], list]:
        sizes: list[int] = []
        hyps = translator.translate_ids(
            sources, beam=beam, n_best=min(beam, 2), batch_size=batch_size, progress=sizes.append
        )
        return sizes, [[h.tokens for h in sentence] for sentence in hyps]

    sizes, hyps = run(10)
    assert sizes == expected_sizes(attention, beam)
    assert hyps == run(100)[1]
    assert hyps == torch_batches(task, model, beam, batch_size=10)[1]


@pytest.mark.parametrize("beam", [1, 3])
def test_a_token_budget_splits_the_long_sentences_batches_alike_in_both_runtimes(
    trained, translator, beam, monkeypatch
):
    _, _, task, model = trained
    sources = [task.encode_source(s) for s in SOURCES]
    lengths = sorted(len(s) for s in sources)
    budget = 3 * lengths[-1]  # at most 3 of the longest sentences, more of the short ones
    expected = [len(b) for b in sorted_batches(lengths, 10, max_tokens=budget)]
    assert len(expected) > 3 and max(expected) > 3  # the budget binds, and not everywhere
    assert translator.batch_tokens == task.config.decode.batch_tokens  # from the manifest
    monkeypatch.setattr(task.config.decode, "batch_tokens", budget)
    monkeypatch.setattr(translator, "batch_tokens", budget)
    sizes, hyps = torch_batches(task, model, beam, batch_size=10)
    ort_sizes: list[int] = []
    ort = translator.translate_ids(
        [translator.encode_source(s) for s in SOURCES],
        beam=beam, n_best=min(beam, 2), batch_size=10, progress=ort_sizes.append,
    )  # fmt: skip
    assert sizes == ort_sizes
    if beam == 1 or trained[0] == "none":  # beam 3 with attention: 10 // 3 sentences, under budget
        assert sizes == expected
    assert hyps == torch_batches(task, model, beam, batch_size=100)[1]
    assert [[h.tokens for h in sentence] for sentence in ort] == hyps


def test_beam_search_stops_by_the_configured_rule(trained, monkeypatch):
    import rnnlab.tasks.seq2seq as seq2seq

    _, _, task, model = trained
    rules: list[str] = []
    search = seq2seq.beam_search_hypotheses

    def spy(*args, **kwargs):
        rules.append(kwargs["stop"])
        return search(*args, **kwargs)

    monkeypatch.setattr(seq2seq, "beam_search_hypotheses", spy)
    sources = [task.encode_source(s) for s in SOURCES]
    monkeypatch.setattr(task.config.decode, "beam_stop", "heuristic")
    task.translate_hypotheses(model, sources, CPU, beam_size=3)
    assert rules and set(rules) == {"heuristic"}
