"""The inference surface as a user meets it: odd stdin, run directories against their exports, and
the references the README names (sacreBLEU, a brute-force perplexity, the file readers).

Defects still open are ``xfail(strict=True)`` with the source function at fault in the reason.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnlab
from rnnlab.cli import EXIT_USER_ERROR
from rnnlab.data.lm_corpus import read_corpus
from rnnlab.rundir import open_run
from tests.cli_runner import run_cli as cli

REPO = Path(__file__).resolve().parents[2]
DEV = REPO / "data" / "ud-ewt-sample" / "dev.conllu"
CONLLU = "# text = The dog\n1\tThe\t_\t_\t_\t_\t_\t_\t_\t_\n2\tdog\t_\t_\t_\t_\t_\t_\t_\t_\n\n"
BOM = "\ufeff"

HAS_EXPORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_export = pytest.mark.skipif(not HAS_EXPORT, reason="needs the export extra")


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = err.splitlines()
    assert code == EXIT_USER_ERROR, (code, err)
    assert len(lines) == 1 and lines[0].startswith("rnnlab: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def exported_translator(translator_run: Path, tmp_path_factory) -> Path:
    from rnnlab.export.onnx import export_run

    run = open_run(translator_run, device="cpu")
    return export_run(run.task, run.model, tmp_path_factory.mktemp("hunt") / "reverse")


# ---------------------------------------------------------------------------------------------------
# stdin: a byte-order mark, bytes that are not UTF-8


def test_tag_conllu_from_stdin_with_a_byte_order_mark(tagger_run, monkeypatch, capsys):
    code, want, _ = cli(monkeypatch, capsys, "tag", tagger_run, "--format", "conllu", stdin=CONLLU)
    assert code == 0 and want
    code, out, err = cli(
        monkeypatch, capsys, "tag", tagger_run, "--format", "conllu", stdin=BOM + CONLLU
    )
    assert (code, err) == (0, "")
    assert out == want


@pytest.mark.parametrize("command", ["translate", "tag"])
def test_a_byte_order_mark_on_stdin_changes_nothing(
    translator_run, tagger_run, monkeypatch, capsys, command
):
    run = translator_run if command == "translate" else tagger_run
    text = "a b c\nd e\n" if command == "translate" else "The dog barks .\nis it\n"
    code, want, _ = cli(monkeypatch, capsys, command, run, stdin=text)
    assert code == 0
    code, out, _ = cli(monkeypatch, capsys, command, run, stdin=BOM + text)
    assert code == 0 and out == want


def test_non_utf8_stdin_names_the_line_that_holds_the_bad_byte(tagger_run, monkeypatch, capsys):
    stream = io.TextIOWrapper(io.BytesIO(b"a b\nc d\n\xff e\n"), encoding="utf-8")
    code, _, err = cli(monkeypatch, capsys, "tag", tagger_run, stdin=stream)
    assert_one_line_error(code, err, "<stdin>:3: not UTF-8 text")


def test_non_utf8_stdin_is_refused_whatever_the_locale(translator_run, monkeypatch, capsys):
    # What sys.stdin is under LANG=C.UTF-8 (Docker images, CI): bad bytes become surrogates.
    stream = io.TextIOWrapper(
        io.BytesIO(b"a b\n\xff e\n"), encoding="utf-8", errors="surrogateescape"
    )
    code, _, err = cli(monkeypatch, capsys, "translate", translator_run, stdin=stream)
    assert_one_line_error(code, err, "<stdin>:2: not UTF-8 text")


# ---------------------------------------------------------------------------------------------------
# Odd lines stay aligned, and a run and its export agree (passing coverage)

ODD_LINES = [
    "a b c",
    "",
    "   ",
    "\t",
    "d e\r",  # a CRLF line end as a str
    "\U0001f600 a",
    "e\u0301 b",
    "a\x00b c",
    "f\tg h",
    "\x0c",
    "\u200b",
    "\xa0",
    "a\x85b",
    "\u2028",
    "zz yy",
]


def test_tag_keeps_odd_lines_aligned_in_a_run_and_its_export(
    tagger_run, exported_tagger, monkeypatch, capsys
):
    stdin = "\n".join(ODD_LINES) + "\n"
    code, from_run, _ = cli(monkeypatch, capsys, "tag", tagger_run, stdin=stdin)
    assert code == 0
    code, from_export, _ = cli(monkeypatch, capsys, "tag", exported_tagger, stdin=stdin)
    assert code == 0
    assert from_run == from_export
    lines = from_run.split("\n")
    assert len(lines) == len(ODD_LINES) + 1 and lines[-1] == ""
    for line, text in zip(lines, ODD_LINES, strict=False):
        assert [pair.rsplit("/", 1)[0] for pair in line.split(" ") if line] == text.split()


def test_evaluate_bleu_equals_sacrebleu_on_a_bom_crlf_cased_file(
    translator_run, tmp_path, monkeypatch, capsys
):
    sacrebleu = pytest.importorskip("sacrebleu")
    from rnnlab.data.text import detokenize, normalize

    pairs = [
        ("a b c d", "D C B A."),
        ("e f g", "g f e !"),
        ("h a b c d", "D C B A H"),
        ("b b c", "c b b,"),
        ("g h a e", "E A H G ?"),
    ]
    data = tmp_path / "test.tsv"
    data.write_bytes((BOM + "".join(f"{s}\t{t}\tnote\r\n" for s, t in pairs)).encode("utf-8"))
    hyps = [t.text for t in rnnlab.load(translator_run).translate([s for s, _ in pairs])]
    refs = [detokenize(normalize(t, "textbook").split()) for _, t in pairs]
    assert refs[0] == "d c b a."  # lower-cased and re-attached like the model's output
    code, out, _ = cli(monkeypatch, capsys, "evaluate", translator_run, "--data", data, "--json")
    assert code == 0
    metrics = json.loads(out)
    assert metrics["sentences"] == len(pairs)
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    assert metrics["bleu"] > 0


# ---------------------------------------------------------------------------------------------------
# Evaluating an export: the run directory's rules


@needs_export
def test_evaluate_an_exported_tagger_on_a_file_without_sentences(
    tagger_run, exported_tagger, tmp_path, monkeypatch, capsys
):
    data = tmp_path / "comments.conllu"
    data.write_text("# just a comment\n\n", encoding="utf-8")
    code, _, err = cli(monkeypatch, capsys, "evaluate", tagger_run, "--data", data)
    assert_one_line_error(code, err, "no tagged sentences to score")
    code, out, err = cli(monkeypatch, capsys, "evaluate", exported_tagger, "--data", data)
    assert_one_line_error(code, err, "no tagged sentences to score")


@needs_export
def test_evaluate_refuses_set_on_an_export(exported_tagger, monkeypatch, capsys):
    code, _, err = cli(
        monkeypatch, capsys, "tag", exported_tagger, "--set", "decode.batch_size=1", stdin="a\n"
    )
    assert_one_line_error(code, err, "--set does not apply to an exported model")
    code, _, err = cli(
        monkeypatch,
        capsys,
        "evaluate",
        exported_tagger,
        "--data",
        DEV,
        "--set",
        "no_such.key=1",
    )
    assert_one_line_error(code, err, "--set does not apply to an exported model")


# ---------------------------------------------------------------------------------------------------
# Translation scores and n-best lists


@needs_export
def test_an_exported_greedy_score_has_the_length_penalty_of_its_run(
    translator_run, exported_translator
):
    lines = ["a b c", "d", "h g f e"]
    eager, exported = rnnlab.load(translator_run), rnnlab.load(exported_translator)
    for alpha in (0.0, 1.0):
        want = [t.score for t in eager.translate(lines, length_penalty=alpha)]
        got = [t.score for t in exported.translate(lines, length_penalty=alpha)]
        assert got == pytest.approx(want, abs=1e-5), alpha


def test_n_best_texts_are_distinct(translator_run):
    translation = rnnlab.load(translator_run).translate(["d"], beam=20, n_best=20)[0]
    texts = [text for text, _ in translation.n_best]
    assert len(texts) == 20 and len(set(texts)) == len(texts), texts


@needs_export
def test_an_exports_n_best_equals_its_runs(translator_run, exported_translator):
    eager, exported = rnnlab.load(translator_run), rnnlab.load(exported_translator)
    want = eager.translate(["d", "a b c"], beam=20, n_best=20)
    got = exported.translate(["d", "a b c"], beam=20, n_best=20)
    for w, g in zip(want, got, strict=True):
        assert [text for text, _ in g.n_best] == [text for text, _ in w.n_best]
        assert [s for _, s in g.n_best] == pytest.approx([s for _, s in w.n_best], abs=1e-4)


# ---------------------------------------------------------------------------------------------------
# Language models: a text scored like a file holding it; generation's seeds


@pytest.mark.parametrize("text", ["the quick\x0cbrown fox\n", "the lazy\u2028dog\n", "a\rb\n"])
def test_perplexity_of_a_text_equals_evaluate_of_a_file_holding_it(lm_run, tmp_path, text):
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    run = open_run(lm_run, device="cpu")
    want = run.task.evaluate(run.model, str(path), run.device)["perplexity"]
    assert rnnlab.load(lm_run).perplexity(text) == pytest.approx(want, rel=1e-6)


def test_evaluate_perplexity_is_exp_of_the_mean_stepwise_nll(lm_run, tmp_path):
    text = "the quick brown fox\r\nZEBRA 42 over the lazy dog\n\nthe end"
    path = tmp_path / "text.txt"
    path.write_bytes((BOM + text).encode("utf-8"))
    run = open_run(lm_run, device="cpu")
    vocab = run.task.vocab
    assert vocab is not None
    ids = vocab.encode(read_corpus(path, level="char", clean="none"))
    assert len(ids) == len(text.replace("\r\n", "\n")) + 1  # the last line gets its "\n"
    model, state, nll = run.model.eval(), None, 0.0
    state = model.start(1)
    with torch.no_grad():
        for current, following in zip(ids[:-1], ids[1:], strict=True):
            log_probs, state = model.step(torch.tensor([current]), state)
            nll -= float(log_probs[0, following])
    metrics = run.task.evaluate(run.model, str(path), run.device)
    assert metrics["tokens"] == len(ids) - 1
    assert metrics["perplexity"] == pytest.approx(math.exp(nll / (len(ids) - 1)), rel=1e-5)
    assert rnnlab.load(lm_run).perplexity(text) == pytest.approx(metrics["perplexity"], rel=1e-6)


def test_generate_with_an_out_of_range_seed_is_a_one_line_error(lm_run, monkeypatch, capsys):
    for seed in (2**64, -1):
        code, _, err = cli(
            monkeypatch,
            capsys,
            "generate",
            lm_run,
            "--prefix",
            "the",
            "--temperature",
            "0.5",
            "--seed",
            str(seed),
        )
        assert_one_line_error(code, err, "seed")


@pytest.fixture(scope="module")
def exported_lm(lm_run: Path, tmp_path_factory) -> Path:
    from rnnlab.export.onnx import export_run

    run = open_run(lm_run, device="cpu")
    return export_run(run.task, run.model, tmp_path_factory.mktemp("hunt") / "lm")


@needs_export
@pytest.mark.parametrize("text", ["the quick brown fox", "the lazy dog\r\nthe end\n"])
def test_an_exported_lm_scores_a_text_like_its_run(lm_run, exported_lm, tmp_path, text):
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    run = open_run(lm_run, device="cpu")
    from_file = run.task.evaluate(run.model, str(path), run.device)["perplexity"]
    assert rnnlab.load(lm_run).perplexity(text) == pytest.approx(from_file, rel=1e-6)
    assert rnnlab.load(exported_lm).perplexity(text) == pytest.approx(from_file, rel=1e-4)


@needs_export
def test_generate_from_an_export_takes_the_seeds_its_run_takes(
    lm_run, exported_lm, monkeypatch, capsys
):
    argv = ["--prefix", "the", "--length", "5", "--seed", "-1"]
    code, want, _ = cli(monkeypatch, capsys, "generate", lm_run, *argv)
    assert code in (0, EXIT_USER_ERROR)
    got = cli(monkeypatch, capsys, "generate", exported_lm, *argv)
    assert got[:2] == (code, want)


# ---------------------------------------------------------------------------------------------------
# An exported tagger whose vocabulary was extended from word vectors


@pytest.fixture(scope="module")
def vector_tagger(tmp_path_factory) -> tuple:
    """A tagger trained with ``data.extend_vocab_from_embeddings`` and its export."""
    from rnnlab.export.onnx import export_run
    from tests.export.runs import make_run

    root = tmp_path_factory.mktemp("vectors")
    rng = np.random.default_rng(0)
    words = ["the", "dog", "york", "####"]
    vectors = root / "vectors.txt"
    vectors.write_text(
        "".join(
            w + " " + " ".join(f"{x:.3f}" for x in rng.standard_normal(8)) + "\n" for w in words
        ),
        encoding="utf-8",
    )
    config = {
        "data": {
            "train": str(REPO / "data/ud-ewt-sample/train.conllu"),
            "valid": "",
            "max_examples": 50,
            "extend_vocab_from_embeddings": True,
        },
        "model": {
            "embed_size": 8,
            "hidden_size": 8,
            "char_embed_size": 4,
            "char_hidden_size": 4,
            "dropout": 0.0,
            "pretrained_embeddings": str(vectors),
        },
        "train": {"batch_size": 8},
    }
    task, model = make_run(root, "tagger", config, train_steps=2)
    return task, model.eval(), export_run(task, model, root / "export")


@needs_export
def test_an_export_reads_words_like_its_run_with_a_vocabulary_from_vectors(vector_tagger):
    task, model, folder = vector_tagger
    runtime = rnnlab.load(folder).runtime

    def emissions(words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        batch = task.make_batch([words])
        with torch.no_grad():
            want = model(
                batch.words, batch.lengths, batch.chars, batch.char_lengths, batch.word_types
            )
        (got,) = runtime.session.run(None, runtime._feed([words]))
        return got, want.numpy()

    # Words spelled as the vector file spells them agree ...
    np.testing.assert_allclose(*emissions(["the", "dog", "####", "york"]), atol=1e-4)
    # ... and so must the forms the run finds through lookup_id.
    np.testing.assert_allclose(*emissions(["THE", "Dog", "1984", "York"]), atol=1e-4)
