"""Exported taggers (softmax and CRF, word and character encoders) and language models equal eager."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from rnnlab.data.batching import sorted_batches  # noqa: E402
from rnnlab.export.onnx import export_run  # noqa: E402
from rnnlab.export.runtime import load, viterbi  # noqa: E402
from rnnlab.models.crf import LinearChainCRF  # noqa: E402
from rnnlab.tasks.lm import stream_nll  # noqa: E402
from tests.export.runs import CPU, make_run  # noqa: E402

EWT = "data/ud-ewt-sample"
TAGGERS = [
    {"crf": True, "char_encoder": "rnn", "cell": "gru", "lowercase": True},
    {"crf": False, "char_encoder": "cnn", "cell": "lstm"},
    {"crf": True, "char_encoder": "none", "cell": "coupled_lstm", "lowercase": True},
    {"crf": True, "char_encoder": "rnn", "cell": "lstm", "lowercase": True, "vectors": True},
    # The stack in two parts, as the language-modelling objective builds it.
    {"crf": True, "char_encoder": "rnn", "cell": "lstm", "num_layers": 2, "lm_weight": 0.1},
]


def _vectors(path: Path, words: list[str], size: int) -> dict[str, object]:
    """A vector file for ``words`` and the model keys of frozen vectors with a trainable part."""
    rng = np.random.default_rng(0)
    lines = [w + " " + " ".join(f"{x:.4f}" for x in rng.standard_normal(size)) for w in words]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {
        "pretrained_embeddings": str(path),
        "freeze_embeddings": True,
        "trainable_embed_size": 5,
    }


@pytest.fixture(
    scope="module",
    params=TAGGERS,
    ids=lambda p: (
        f"{p['char_encoder']}-crf{p['crf']}"
        + ("-vectors" if p.get("vectors") else "")
        + ("-lm" if p.get("lm_weight") else "")
    ),
)
def tagger(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("tagger")
    model_options = {k: v for k, v in request.param.items() if k not in ("lowercase", "vectors")}
    if request.param.get("vectors"):
        words = ["the", "a", "of", "to", "and", "is", "in", "it", "zebra", "wombat"]
        model_options.update(_vectors(root / "vectors.txt", words, 8))
    config = {
        "data": {
            "train": f"{EWT}/train.conllu",
            "valid": "",
            "max_examples": 200,
            "lowercase": request.param.get("lowercase", False),
            "extend_vocab_from_embeddings": bool(request.param.get("vectors")),
        },
        "model": {
            "embed_size": 8,
            "hidden_size": 12,
            "char_embed_size": 6,
            "char_hidden_size": 6,
            "dropout": 0.0,
            **model_options,
        },
        "train": {"batch_size": 16, "lr": 0.01},
    }
    task, model = make_run(root, "tagger", config, train_steps=15)
    return task, model, load(export_run(task, model, root / "export"))


def test_tags_equal_eager_on_other_shapes(tagger):
    task, model, runtime = tagger
    sentences = [s.words for s in task.read_sentences(f"{EWT}/dev.conllu")[:37]]
    sentences[0] = ["Supercalifragilisticexpialidocious-ly"]  # one word, longer than max_word_chars
    sentences[1] = []
    long_sentence = [w for s in sentences[2:] for w in s][:60]
    sentences.append(long_sentence)
    eager = task.tag(model, sentences, CPU)
    assert [t.tags for t in runtime.tag(sentences, batch_size=7)] == eager
    assert runtime.tag(["a b c"])[0].tokens == ["a", "b", "c"]
    # emissions within 1e-4 of eager
    batch = task.make_batch(sentences[2:9])
    with torch.no_grad():
        want = model(batch.words, batch.lengths, batch.chars, batch.char_lengths, batch.word_types)
    (got,) = runtime.session.run(None, runtime._feed(sentences[2:9]))
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)


def test_a_token_budget_batches_alike_in_both_runtimes_and_changes_no_tag(tagger, monkeypatch):
    task, model, runtime = tagger
    sentences = [s.words for s in task.read_sentences(f"{EWT}/dev.conllu")[:40]]
    lengths = sorted(len(s) for s in sentences)
    budget = 3 * lengths[-1]  # at most 3 of the longest sentences, more of the short ones
    expected = [len(b) for b in sorted_batches(lengths, 16, max_tokens=budget)]
    assert len(expected) > 3 and max(expected) > 3  # the budget binds, and not everywhere
    assert runtime.batch_tokens == task.config.decode.batch_tokens  # from the manifest
    monkeypatch.setattr(task.config.decode, "batch_tokens", 0)
    unbatched = task.tag(model, sentences, CPU, batch_size=len(sentences))
    monkeypatch.setattr(task.config.decode, "batch_tokens", budget)
    sizes: list[int] = []
    assert task.tag(model, sentences, CPU, batch_size=16, progress=sizes.append) == unbatched
    assert sizes == expected

    class CountingSession:
        def __init__(self, session):
            self.session, self.rows = session, []

        def run(self, names, feed):
            self.rows.append(len(feed["words"]))
            return self.session.run(names, feed)

    counting = CountingSession(runtime.session)
    monkeypatch.setattr(runtime, "session", counting)
    monkeypatch.setattr(runtime, "batch_tokens", budget)
    assert [t.tags for t in runtime.tag(sentences, batch_size=16)] == unbatched
    assert counting.rows == expected


def test_numpy_viterbi_equals_the_crf():
    torch.manual_seed(0)
    crf = LinearChainCRF(5)
    crf.start_transitions.data.normal_()
    crf.end_transitions.data.normal_()
    emissions = torch.randn(6, 9, 5)
    lengths = torch.tensor([9, 1, 4, 9, 2, 7])
    params = {
        "transitions": crf.transitions.detach().numpy(),
        "start": crf.start_transitions.detach().numpy(),
        "end": crf.end_transitions.detach().numpy(),
    }
    want = crf.viterbi(emissions, lengths)
    got = viterbi(emissions.numpy(), lengths.numpy(), params)
    for row, n in enumerate(lengths.tolist()):
        assert got[row, :n].tolist() == want[row, :n].tolist()


@pytest.fixture(scope="module", params=["lstm", "gru"])
def language_model(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    config = {
        "data": {"train": "data/timemachine/train.txt", "valid": "", "max_examples": 300},
        "model": {"embed_size": 8, "hidden_size": 12, "num_layers": 2, "cell": request.param},
        "train": {"batch_size": 8, "bptt": 16, "lr": 0.01},
    }
    task, model = make_run(root, "lm", config, train_steps=30)
    return task, model, load(export_run(task, model, root / "export"))


def test_lm_greedy_generation_and_perplexity_equal_eager(language_model, tmp_path):
    task, model, runtime = language_model
    eager = task.generate(model, "the time traveller", CPU, length=60, greedy=True)[0]
    assert runtime.generate("the time traveller", length=60, temperature=0) == eager
    assert runtime.generate("x", length=0, temperature=0) == "x"
    ids = task.read_ids("data/timemachine/valid.txt")
    nll, count = stream_nll(model, ids, CPU)
    onnx_nll, onnx_count = runtime.nll(ids.tolist())
    assert onnx_count == count
    assert onnx_nll / count == pytest.approx(nll / count, abs=1e-4)
    text = "the time machine is a story"
    # A text is scored as a file holding it is read (cleaned, its line ended).
    (tmp_path / "story.txt").write_text(text, encoding="utf-8")
    ids = task.read_ids(str(tmp_path / "story.txt"))
    expected = math.exp(stream_nll(model, ids, CPU)[0] / (len(ids) - 1))
    assert runtime.perplexity(text) == pytest.approx(expected, rel=1e-4)


def test_lm_sampling_is_seeded_and_top_k_limits_the_choice(language_model):
    _, _, runtime = language_model
    first = runtime.generate("the ", length=50, temperature=1.0, seed=3)
    assert runtime.generate("the ", length=50, temperature=1.0, seed=3) == first
    assert runtime.generate("the ", length=50, temperature=1.0, seed=4) != first
    # with top_k = 1 sampling is greedy search
    assert runtime.generate("the ", length=30, top_k=1, seed=5) == runtime.generate(
        "the ", length=30, temperature=0
    )
    # so is a temperature so small that log p / T overflows: the limit of T → 0
    greedy = runtime.generate("the ", length=30, temperature=0)
    for temperature in (1e-300, 5e-324):
        assert runtime.generate("the ", length=30, temperature=temperature, seed=5) == greedy


def test_cli_tag_and_evaluate_on_an_export_equal_the_run(tagger, monkeypatch, capsys):
    import io
    import sys

    from rnnlab.cli import main

    task, _, runtime = tagger
    dev = f"{EWT}/dev.conllu"
    text = "is it too late now to say sorry\n\nThe quick brown fox .\n"
    blocks = Path(dev).read_text(encoding="utf-8").split("\n\n")
    conllu = "\n\n".join(blocks[:5]) + "\n\n"
    outputs = []
    for target in (task.run_dir, runtime.folder):
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
        assert main(["tag", str(target)]) == 0
        monkeypatch.setattr(sys, "stdin", io.StringIO(conllu))
        assert main(["tag", str(target), "--format", "conllu"]) == 0
        assert main(["evaluate", str(target), "--data", dev, "--json", "--per-tag"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert '"accuracy"' in outputs[0] and "/" in outputs[0]


def test_cli_generate_and_evaluate_on_an_export_equal_the_run(language_model, capsys):
    from rnnlab.cli import main

    task, _, runtime = language_model
    outputs = []
    for target in (task.run_dir, runtime.folder):
        assert main(["generate", str(target), "--prefix", "the time", "--length", "30"]) == 0
        assert main(["evaluate", str(target), "--data", "data/timemachine/valid.txt"]) == 0
        outputs.append(capsys.readouterr().out.splitlines())
    run, exported = outputs
    assert exported[0] == run[0]  # greedy generation
    metrics = [dict(line.split("\t") for line in out[1:]) for out in outputs]
    assert metrics[1].keys() == metrics[0].keys()
    assert float(metrics[1]["loss"]) == pytest.approx(float(metrics[0]["loss"]), abs=1e-4)
    assert metrics[1]["tokens"] == metrics[0]["tokens"]
