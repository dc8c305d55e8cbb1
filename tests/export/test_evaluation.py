"""``evaluate_export``: the metrics of an export equal its run's, and equal counts made by hand.

The session's three tiny runs (a reverse-the-symbols translator, an EWT tagger, a pangram language
model) are exported once each. The references do not go through ``evaluate_export``: BLEU is
sacreBLEU's on the run's own translations, the loss is a teacher-forced sum over the eager model's
steps, tagging accuracy and out-of-vocabulary counts are counted from a CoNLL-U file read here, and
perplexity is the exponent of the eager model's mean next-character loss. Every metric is also
compared with ``task.evaluate`` on the run directory. Requests that do not fit the task are one-line
errors.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sacrebleu
import torch

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

import rnnlab  # noqa: E402
from rnnlab.errors import RnnlabError  # noqa: E402
from rnnlab.export.evaluation import evaluate_export  # noqa: E402
from rnnlab.export.loading import open_export  # noqa: E402
from rnnlab.export.onnx import export_run  # noqa: E402
from rnnlab.rundir import TrainedRun, open_run  # noqa: E402
from tests.conftest import reverse_pairs, write_tsv  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DEV = REPO / "data" / "ud-ewt-sample" / "dev.conllu"


def exported(run_dir: Path, root: Path) -> tuple[TrainedRun, Any]:
    """The run opened for PyTorch, and its export opened by the runtime."""
    run = open_run(run_dir, device="cpu")
    return run, open_export(export_run(run.task, run.model, root / "export"))


@pytest.fixture(scope="module")
def translator(translator_run: Path, tmp_path_factory: pytest.TempPathFactory):
    return exported(translator_run, tmp_path_factory.mktemp("translator"))


@pytest.fixture(scope="module")
def tagger(tagger_run: Path, tmp_path_factory: pytest.TempPathFactory):
    return exported(tagger_run, tmp_path_factory.mktemp("tagger"))


@pytest.fixture(scope="module")
def language_model(lm_run: Path, tmp_path_factory: pytest.TempPathFactory):
    return exported(lm_run, tmp_path_factory.mktemp("lm"))


def assert_same_metrics(got: dict[str, Any], want: dict[str, Any], *, inexact: set[str]) -> None:
    """Equal keys and values; the ``inexact`` ones (sums of float32 log-probabilities computed by
    two runtimes) within 1e-4."""
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key in inexact:
            assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-4), key
        else:
            assert got[key] == value, key


# ---------------------------------------------------------------------------------------------------
# seq2seq


def teacher_forced_nll(run: TrainedRun, pairs: list[tuple[str, str]]) -> tuple[float, int]:
    """−Σ log p(target + <eos> | source), one eager step at a time, and the tokens scored."""
    task, model = run.task, run.model
    total, count = 0.0, 0
    with torch.no_grad():
        for source, target in pairs:
            src = task.encode_source(source)
            state = model.start(torch.tensor([src]), torch.tensor([len(src)]))
            ids = [*task.tgt_vocab.encode(target.split()), task.tgt_vocab.eos_id]
            previous = task.tgt_vocab.bos_id
            for token in ids:
                log_probs, state = model.step(torch.tensor([previous]), state)
                total -= float(log_probs[0, token])
                previous = token
            count += len(ids)
    return total, count


@pytest.mark.parametrize("beam", [None, 3])
def test_translation_metrics_equal_the_run_and_sacrebleu(translator, tmp_path, beam):
    run, model = translator
    pairs = reverse_pairs(30, seed=11, max_len=6)
    data = str(write_tsv(tmp_path / "test.tsv", pairs))
    seen: list[int] = []
    got = evaluate_export(model, data, beam_size=beam, progress=seen.append)
    assert sum(seen) == len(pairs)  # every sentence decoded once

    # BLEU: sacreBLEU's defaults on the PyTorch model's translations.
    decode = run.task.config.decode
    eager = rnnlab.load(run.task.run_dir, device="cpu")
    hypotheses = [
        t.text for t in eager.translate([s for s, _ in pairs], beam=beam or decode.beam_size)
    ]
    references = [t for _, t in pairs]
    assert got["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hypotheses, [references]).score)
    lowercase = sacrebleu.corpus_bleu(hypotheses, [references], lowercase=True).score
    assert got["bleu_lowercase"] == pytest.approx(lowercase)
    assert got["bleu"] > 20  # a trained model: equal scores are not two zeros

    # Loss: the references' teacher-forced NLL per token.
    nll, count = teacher_forced_nll(run, pairs)
    assert got["tokens"] == count == sum(len(t.split()) + 1 for t in references)
    assert got["loss"] == pytest.approx(nll / count, abs=1e-4)
    assert got["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    assert got["sentences"] == len(pairs)

    want = run.task.evaluate(run.model, data, run.device, **({"beam_size": beam} if beam else {}))
    assert_same_metrics(got, want, inexact={"loss", "perplexity"})


# ---------------------------------------------------------------------------------------------------
# tagger


def read_conllu(path: Path, column: int = 3) -> list[list[tuple[str, str]]]:
    """(form, tag) per word of each sentence; multiword-token ranges and empty nodes skipped."""
    sentences, words = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if words:
                sentences.append(words)
            words = []
        elif not line.startswith("#"):
            fields = line.split("\t")
            if fields[0].isdigit():
                words.append((fields[1], fields[column]))
    return sentences + ([words] if words else [])


@pytest.mark.parametrize("per_tag", [False, True])
def test_tagging_metrics_equal_the_run_and_hand_counts(tagger, tmp_path, per_tag):
    run, model = tagger
    blocks = DEV.read_text(encoding="utf-8").split("\n\n")[:25]
    data = tmp_path / "dev.conllu"
    data.write_text("\n\n".join(blocks) + "\n\n", encoding="utf-8")
    got = evaluate_export(model, str(data), per_tag=per_tag)

    sentences = read_conllu(data)
    predicted = rnnlab.load(run.task.run_dir, device="cpu").tag(
        [[w for w, _ in s] for s in sentences]
    )
    train_words = set(json.loads((model.folder / "train_words.json").read_text(encoding="utf-8")))
    pairs = [
        (word, gold, tag)
        for sentence, tagged in zip(sentences, predicted, strict=True)
        for (word, gold), tag in zip(sentence, tagged.tags, strict=True)
    ]
    unseen = [(gold, tag) for word, gold, tag in pairs if word not in train_words]
    assert got["sentences"] == len(sentences) == 25
    assert got["tokens"] == len(pairs)
    assert got["accuracy"] == pytest.approx(sum(g == t for _, g, t in pairs) / len(pairs))
    assert got["oov_tokens"] == len(unseen) > 0
    assert got["oov_accuracy"] == pytest.approx(sum(g == t for g, t in unseen) / len(unseen))
    assert 0.2 < got["accuracy"] < 1.0  # trained, and still making mistakes to count
    if per_tag:
        supports = Counter(gold for _, gold, _ in pairs)
        assert {tag: row["support"] for tag, row in got["per_tag"].items() if row["support"]} == (
            dict(supports)
        )
    assert_same_metrics(
        got, run.task.evaluate(run.model, str(data), run.device, per_tag=per_tag), inexact=set()
    )


# ---------------------------------------------------------------------------------------------------
# language model


def test_perplexity_equals_the_run_and_the_eager_model(language_model, tmp_path):
    run, model = language_model
    # '!' and capitals never occur in the pangram: they are read as <unk> and counted.
    text = "the lazy dog jumps!\nThe quick brown fox\n"
    data = tmp_path / "text.txt"
    data.write_text(text, encoding="utf-8")
    got = evaluate_export(model, str(data))

    vocab = json.loads((model.folder / "vocab.json").read_text(encoding="utf-8"))["tokens"]
    ids = [vocab.index(ch) if ch in vocab else vocab.index("<unk>") for ch in text]
    nll = 0.0
    with torch.no_grad():
        state = run.model.start(1)
        for current, following in zip(ids, ids[1:], strict=False):
            log_probs, state = run.model.step(torch.tensor([current]), state)
            nll -= float(log_probs[0, following])
    count = len(text) - 1
    assert got["tokens"] == count
    assert got["oov_tokens"] == sum(ch not in vocab for ch in text[1:]) == 2
    assert got["loss"] == pytest.approx(nll / count, abs=1e-4)
    assert got["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    assert got["vocab_size"] == len(vocab) and got["tokenizer"] == "char"
    assert_same_metrics(
        got, run.task.evaluate(run.model, str(data), run.device), inexact={"loss", "perplexity"}
    )


def test_the_shortest_text_scores_one_prediction_as_the_run_does(language_model, tmp_path):
    """One character: read as the character and its line's end, so one next-token prediction."""
    run, model = language_model
    data = tmp_path / "one.txt"
    data.write_text("t", encoding="utf-8")
    got = evaluate_export(model, str(data))
    vocab = json.loads((model.folder / "vocab.json").read_text(encoding="utf-8"))["tokens"]
    with torch.no_grad():
        log_probs, _ = run.model.step(torch.tensor([vocab.index("t")]), run.model.start(1))
    assert got["tokens"] == 1 and got["oov_tokens"] == 0
    assert got["loss"] == pytest.approx(-float(log_probs[0, vocab.index("\n")]), abs=1e-4)
    assert_same_metrics(
        got, run.task.evaluate(run.model, str(data), run.device), inexact={"loss", "perplexity"}
    )


# ---------------------------------------------------------------------------------------------------
# requests that do not fit


def test_options_of_another_task_are_refused(translator, tagger, language_model, tmp_path):
    data = str(tmp_path / "unread.txt")  # the options are refused before any data is read
    with pytest.raises(RnnlabError, match="--per-tag needs a tagger, this is a seq2seq model"):
        evaluate_export(translator[1], data, per_tag=True)
    for _, model in (tagger, language_model):
        with pytest.raises(RnnlabError, match="--beam applies to translators") as caught:
            evaluate_export(model, data, beam_size=4)
        assert str(caught.value).startswith(str(model.folder))
    with pytest.raises(RnnlabError, match="--per-tag needs a tagger, this is a lm model"):
        evaluate_export(language_model[1], data, per_tag=True)


@pytest.mark.parametrize("task", ["translator", "tagger", "language_model"])
def test_a_missing_or_broken_data_file_is_the_runs_error(request, tmp_path, task):
    run, model = request.getfixturevalue(task)
    broken = tmp_path / "broken.txt"
    broken.write_bytes(b"\xff\xfe not utf-8\n")
    for path in (tmp_path / "missing.txt", broken):
        with pytest.raises(RnnlabError) as exported_error:
            evaluate_export(model, str(path))
        with pytest.raises(RnnlabError) as run_error:
            run.task.evaluate(run.model, str(path), run.device)
        message = str(exported_error.value)
        assert message == str(run_error.value)
        assert message.startswith(str(path)) and "\n" not in message
