"""Translation data paths, BLEU on detokenised text, and what a person sees in a terminal.

References are independent of rnnlab: sacreBLEU called directly on the run's own translations and
the raw reference lines of the data file, sentencepiece's own API on the run's subword models, and
plain Python for file contents and for rendering what a terminal would show (``\\r`` moves the
cursor to the start of the line, ``\\n`` to the next one).

The toy corpus is a word-by-word German→English dictionary "translation". Its letters are chosen
so that a subword model betrays what it learnt from: ``z k n m`` occur only on the German side,
``o g c r`` only on the English side, and ``q x`` only in the validation data.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import re
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
import sacrebleu
import sentencepiece as spm

from rnnlab.cli import main
from rnnlab.rundir import open_run
from tests.cli_runner import Cli, Result, assert_user_error, call_main, run_cli
from tests.terminal import FakeTerminal, screen

GERMAN = ["hund", "katze", "haus", "baum", "kind", "ball", "mann", "bänke"]
ENGLISH = dict(
    zip(GERMAN, ["dog", "cat", "house", "tree", "child", "ball", "guy", "seats"], strict=True)
)
VALID_ONLY = {"quax": "quax"}  # q and x: in no training sentence


class Corpus(NamedTuple):
    root: Path
    tsv_train: Path  # columns: en, de
    tsv_valid: Path
    aligned_train: Path  # PREFIX.de + PREFIX.en
    aligned_valid: Path
    valid_de: list[str]
    valid_en: list[str]


def _pairs(n: int, seed: int, extra: dict[str, str] | None = None) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    vocabulary = {**ENGLISH, **(extra or {})}
    words = list(vocabulary)
    pairs = []
    for _ in range(n):
        chosen = [rng.choice(words) for _ in range(rng.randint(1, 4))]
        mark = rng.choice(".!?")
        german = " ".join(chosen).capitalize() + mark
        english = " ".join(vocabulary[w] for w in chosen).capitalize() + mark
        pairs.append((german, english))
    return pairs


def _write_corpus(root: Path) -> Corpus:
    root.mkdir(parents=True, exist_ok=True)
    train = _pairs(500, 1)
    valid = _pairs(24, 2, VALID_ONLY)
    valid[0] = ("Quax hund.", "Quax dog.")  # the validation-only letters surely occur
    for name, pairs in (("train", train), ("valid", valid)):
        lines = "".join(f"{en}\t{de}\n" for de, en in pairs)
        (root / f"{name}.tsv").write_text(lines, encoding="utf-8")
        (root / f"{name}.de").write_text("".join(f"{de}\n" for de, _ in pairs), encoding="utf-8")
        (root / f"{name}.en").write_text("".join(f"{en}\n" for _, en in pairs), encoding="utf-8")
    return Corpus(
        root,
        root / "train.tsv",
        root / "valid.tsv",
        root / "train",
        root / "valid",
        [de for de, _ in valid],
        [en for _, en in valid],
    )


TINY = {
    "data.src_lang": "de",
    "data.tgt_lang": "en",
    "data.min_freq": 1,
    "model.embed_size": 16,
    "model.hidden_size": 32,
    "model.num_layers": 1,
    "train.epochs": 3,
    "train.batch_size": 32,
    "train.lr": 0.01,
    "train.num_threads": 1,
    "train.device": "cpu",
}


def _sets(settings: dict[str, object]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def _train(out: Path, **settings: object) -> Path:
    code = call_main("train", "seq2seq", "--out", out, *_sets({**TINY, **settings}))
    assert code == 0
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return _write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def word_run(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """de→en read from an en<TAB>de TSV, words, d2l textbook preprocessing."""
    return _train(
        tmp_path_factory.mktemp("word") / "run",
        **{
            "data.train": corpus.tsv_train,
            "data.valid": corpus.tsv_valid,
            "data.tsv_langs": "[en, de]",
            "data.preprocess": "textbook",
        },
    )


@pytest.fixture(scope="module")
def spm_run(corpus: Corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """de→en read from aligned files, separate BPE sentencepiece models, case kept."""
    return _train(
        tmp_path_factory.mktemp("spm") / "run",
        **{
            "data.train": corpus.aligned_train,
            "data.valid": corpus.aligned_valid,
            "data.preprocess": "punct",
            "data.tokenizer": "sentencepiece",
            "data.spm_model_type": "bpe",
            "data.spm_vocab_size": 60,
        },
    )


@pytest.fixture
def rnnlab(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    def run(*argv: object, stdin: str | bytes = "") -> Result:
        return run_cli(monkeypatch, capsys, *argv, stdin=stdin)

    return run


def _lines(text: str) -> list[str]:
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


def _spm_pieces(model: Path) -> set[str]:
    processor = spm.SentencePieceProcessor(model_file=str(model))
    return {
        processor.id_to_piece(i)
        for i in range(processor.get_piece_size())
        if not (processor.is_unknown(i) or processor.is_control(i))  # <unk> spells no text
    }


def _letters(pieces: set[str]) -> set[str]:
    return {ch for piece in pieces for ch in piece}


# ---------------------------------------------------------------------------------------------------
# Data paths: direction, aligned files, sentencepiece sides


def _prepared(corpus: Corpus, out: Path, **data: object):
    from rnnlab.tasks.seq2seq import Seq2SeqTask
    from rnnlab.tasks.seq2seq_config import Seq2SeqConfig

    config = Seq2SeqConfig()
    config.data.src_lang, config.data.tgt_lang, config.data.min_freq = "de", "en", 1
    for key, value in data.items():
        setattr(config.data, key, value)
    out.mkdir(parents=True)
    task = Seq2SeqTask(config, out)
    task.prepare_training()
    return task


def test_a_reversed_tsv_and_aligned_files_give_the_same_data(corpus: Corpus, tmp_path: Path):
    gz = tmp_path / "gz"
    gz.mkdir()
    for lang in ("de", "en"):  # one prefix, both files gzipped
        with gzip.open(gz / f"train.{lang}.gz", "wb") as handle:
            handle.write((corpus.root / f"train.{lang}").read_bytes())
    tsv = _prepared(
        corpus,
        tmp_path / "tsv",
        train=str(corpus.tsv_train),
        valid=str(corpus.tsv_valid),
        tsv_langs=["en", "de"],
        preprocess="none",
    )
    aligned = _prepared(
        corpus,
        tmp_path / "aligned",
        train=str(corpus.aligned_train),
        valid=str(corpus.aligned_valid),
        preprocess="none",
    )
    gzipped = _prepared(
        corpus, tmp_path / "gzipped", train=str(gz / "train"), valid="", preprocess="none"
    )
    german = {
        w for line in (corpus.root / "train.de").read_text().split("\n") for w in line.split()
    }
    for task in (tsv, aligned, gzipped):
        assert set(task.src_vocab.itos[4:]) == german  # the source side is German
        assert "dog" in task.tgt_vocab.itos and "hund" not in task.tgt_vocab.itos
    assert tsv.src_vocab.itos == aligned.src_vocab.itos
    assert tsv.tgt_vocab.itos == aligned.tgt_vocab.itos
    assert tsv.valid_data.references == aligned.valid_data.references == corpus.valid_en


@pytest.mark.parametrize("short_side", ["de", "en"])
def test_aligned_files_of_different_lengths_are_a_user_error(
    rnnlab: Cli, corpus: Corpus, tmp_path: Path, short_side: str
):
    for lang in ("de", "en"):
        lines = (corpus.root / f"train.{lang}").read_text(encoding="utf-8")
        if lang == short_side:
            lines = "".join(lines.splitlines(keepends=True)[:-1])
        (tmp_path / f"train.{lang}").write_text(lines, encoding="utf-8")
    result = rnnlab(
        "train",
        "seq2seq",
        "--out",
        tmp_path / "run",
        *_sets({**TINY, "data.train": tmp_path / "train", "data.valid": ""}),
    )
    assert_user_error(result, "aligned files must match")


def test_an_aligned_prefix_without_its_target_file_is_a_user_error(
    rnnlab: Cli, corpus: Corpus, tmp_path: Path
):
    shutil.copy(corpus.root / "train.de", tmp_path / "train.de")
    result = rnnlab(
        "train",
        "seq2seq",
        "--out",
        tmp_path / "run",
        *_sets({**TINY, "data.train": tmp_path / "train", "data.valid": ""}),
    )
    assert_user_error(result, "train.en")


def test_a_language_missing_from_tsv_langs_is_a_user_error(
    rnnlab: Cli, corpus: Corpus, tmp_path: Path
):
    settings = {**TINY, "data.train": corpus.tsv_train, "data.valid": ""}  # tsv_langs [en, fr]
    result = rnnlab("train", "seq2seq", "--out", tmp_path / "run", *_sets(settings))
    assert_user_error(result, "'de'", "tsv_langs")


def test_the_same_language_on_both_sides_is_a_user_error(
    rnnlab: Cli, corpus: Corpus, tmp_path: Path
):
    # Training fr→en from an en-fr TSV, a person sets data.src_lang=fr and forgets that
    # data.tgt_lang defaults to fr: the model silently learns to copy French.
    settings = {
        **TINY,
        "data.train": corpus.tsv_train,
        "data.valid": "",
        "data.tsv_langs": "[en, de]",
        "data.tgt_lang": "de",
        "train.max_steps": 1,
    }
    result = rnnlab("train", "seq2seq", "--out", tmp_path / "run", *_sets(settings))
    assert_user_error(result, "data.tgt_lang")


def test_validation_and_evaluation_references_are_not_cut_by_max_len(
    corpus: Corpus, tmp_path: Path
):
    task = _prepared(
        corpus,
        tmp_path / "cut",
        train=str(corpus.tsv_train),
        valid=str(corpus.tsv_valid),
        tsv_langs=["en", "de"],
        preprocess="none",
        max_len=1,
    )
    assert task.valid_data.references == corpus.valid_en  # whole sentences, not one word
    assert all(len(ids) == 2 for ids in task.valid_data.tgt)  # the targets themselves are cut


def test_separate_subword_models_learn_their_own_side_of_the_training_data(spm_run: Path):
    src, tgt = (
        _letters(_spm_pieces(spm_run / "spm.src.model")),
        _letters(_spm_pieces(spm_run / "spm.tgt.model")),
    )
    assert set("zknm") <= src and not set("ogcr") & src  # German
    assert set("ogcr") <= tgt and not set("zknm") & tgt  # English
    assert not set("qx") & (src | tgt)  # never the validation data


def test_a_joint_subword_model_learns_both_sides_and_training_prints_nothing_on_stdout(
    corpus: Corpus, tmp_path: Path, capfd: pytest.CaptureFixture[str]
):
    run = tmp_path / "joint"
    capfd.readouterr()
    _train(
        run,
        **{
            "data.train": corpus.tsv_train,
            "data.valid": corpus.tsv_valid,
            "data.tsv_langs": "[en, de]",
            "data.tokenizer": "sentencepiece",
            "data.spm_joint": "true",
            "data.spm_vocab_size": 60,
            "train.epochs": 1,
        },
    )
    out, err = capfd.readouterr()  # file descriptors: sentencepiece's C++ logging included
    assert out == ""
    assert "\r" not in err and "valid_bleu=" in err  # plain lines in a log file
    assert sorted(p.name for p in run.glob("spm*.model")) == ["spm.model"]
    letters = _letters(_spm_pieces(run / "spm.model"))
    assert set("zknmogcr") <= letters and not set("qx") & letters


def test_subword_output_is_detokenised_without_losing_characters(spm_run: Path):
    task = open_run(spm_run, device="cpu").task
    english = spm.SentencePieceProcessor(model_file=str(spm_run / "spm.tgt.model"))
    for text in ["Seats house!", "Tree ball child?", "Dog.", "Guy guy cat."]:
        split = re.sub(r"(?<=\S)([,.!?])", r" \1", text)  # punct: marks split off first
        pieces = english.encode(split, out_type=str)
        assert english.decode_pieces(pieces) == split
        ids = [task.tgt_vocab.stoi[p] for p in pieces]  # every piece was seen in training
        detok = task.detokenize([*ids, task.tgt_vocab.eos_id])
        assert detok == text and "▁" not in detok
    german = spm.SentencePieceProcessor(model_file=str(spm_run / "spm.src.model"))
    pieces = german.encode("Bänke haus .", out_type=str)
    assert german.decode_pieces(pieces) == "Bänke haus ."
    assert task.src_tokenizer.encode("Bänke haus.") == pieces


# ---------------------------------------------------------------------------------------------------
# BLEU: evaluate against sacreBLEU on the run's own translations


def _evaluate(rnnlab: Cli, run: Path, data: Path, *sets: str) -> dict:
    result = rnnlab("evaluate", run, "--data", data, "--json", *sets)
    assert result.code == 0 and result.err == "", result
    return json.loads(result.out)


def _translate(rnnlab: Cli, run: Path, sources: list[str], *sets: str) -> list[str]:
    result = rnnlab("translate", run, *sets, stdin="".join(f"{s}\n" for s in sources))
    assert result.code == 0 and result.err == "", result  # nothing but translations, on stdout
    out = _lines(result.out)
    assert len(out) == len(sources)
    return out


def test_word_run_bleu_is_sacrebleu_on_its_detokenised_translations(
    rnnlab: Cli, word_run: Path, corpus: Corpus
):
    hyps = _translate(rnnlab, word_run, corpus.valid_de)
    assert all(h == h.lower() and " ." not in h and " ?" not in h for h in hyps)
    metrics = _evaluate(rnnlab, word_run, corpus.tsv_valid)
    refs = [r.lower() for r in corpus.valid_en]  # textbook: lower-cased references
    bleu = sacrebleu.BLEU()
    assert metrics["bleu"] == pytest.approx(bleu.corpus_score(hyps, [refs]).score, abs=1e-9)
    assert metrics["bleu"] > 5  # it learnt something: the comparison is not 0 == 0
    assert metrics["sentences"] == len(refs)
    assert metrics["signature"] == str(bleu.get_signature())


def test_subword_run_bleu_is_sacrebleu_on_its_detokenised_translations(
    rnnlab: Cli, spm_run: Path, corpus: Corpus
):
    hyps = _translate(rnnlab, spm_run, corpus.valid_de)
    assert not any("▁" in h or "<unk>" in h for h in hyps)
    metrics = _evaluate(rnnlab, spm_run, corpus.aligned_valid)
    refs = corpus.valid_en  # punct keeps case: the references are the file's lines
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)
    lower = sacrebleu.corpus_bleu(hyps, [refs], lowercase=True).score
    assert metrics["bleu_lowercase"] == pytest.approx(lower, abs=1e-9)


def test_beam_search_bleu_is_sacrebleu_on_the_beam_translations(
    rnnlab: Cli, spm_run: Path, corpus: Corpus
):
    hyps = _translate(rnnlab, spm_run, corpus.valid_de, "--beam", "3")
    result = rnnlab("evaluate", spm_run, "--data", corpus.aligned_valid, "--json", "--beam", "3")
    assert result.code == 0 and result.err == ""
    bleu = sacrebleu.corpus_bleu(hyps, [corpus.valid_en]).score
    assert json.loads(result.out)["bleu"] == pytest.approx(bleu, abs=1e-9)


def test_evaluate_reads_a_tsv_of_the_other_direction_like_the_aligned_files(
    rnnlab: Cli, spm_run: Path, corpus: Corpus
):
    aligned = _evaluate(rnnlab, spm_run, corpus.aligned_valid)
    tsv = _evaluate(rnnlab, spm_run, corpus.tsv_valid, "--set", "data.tsv_langs=[en, de]")
    assert tsv == aligned


def test_evaluate_with_a_smaller_max_len_scores_against_whole_references(
    rnnlab: Cli, word_run: Path, corpus: Corpus
):
    cut = ("--set", "data.max_len=2")
    hyps = _translate(rnnlab, word_run, corpus.valid_de, *cut)
    metrics = _evaluate(rnnlab, word_run, corpus.tsv_valid, *cut)
    refs = [r.lower() for r in corpus.valid_en]
    assert metrics["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score, abs=1e-9)


def test_validation_bleu_in_the_log_is_what_evaluate_gives_for_the_best_weights(
    rnnlab: Cli, word_run: Path, corpus: Corpus
):
    records = [json.loads(line) for line in (word_run / "metrics.jsonl").read_text().splitlines()]
    best = max(r["valid_bleu"] for r in records if "valid_bleu" in r)
    assert _evaluate(rnnlab, word_run, corpus.tsv_valid)["bleu"] == pytest.approx(best, abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# Exit statuses


@pytest.mark.parametrize("name", ["spm.src.model", "spm.tgt.model"])
def test_a_damaged_sentencepiece_model_is_a_user_error(
    rnnlab: Cli, spm_run: Path, tmp_path: Path, name: str
):
    run = tmp_path / "run"
    shutil.copytree(spm_run, run, ignore=shutil.ignore_patterns(".lock"))
    (run / name).write_bytes(b"not a sentencepiece model\n")
    try:
        result = rnnlab("translate", run, stdin="Hund.\n")
    except Exception as exc:  # noqa: BLE001 - what reaches the user is a traceback
        pytest.fail(f"traceback instead of a one-line error: {exc!r}")
    assert_user_error(result, name)


def test_a_missing_sentencepiece_model_is_a_user_error(rnnlab: Cli, spm_run: Path, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(spm_run, run, ignore=shutil.ignore_patterns(".lock", "spm.tgt.model"))
    assert_user_error(rnnlab("translate", run, stdin="Hund.\n"), "spm.tgt.model")


def test_translate_into_a_closed_pipe_exits_quietly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], word_run: Path
):
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"Hund.\nKatze!\n")))
    monkeypatch.setattr("sys.stdout", ClosedPipe())
    capsys.readouterr()
    assert main(["translate", str(word_run)]) == 0
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------------
# What a terminal shows


def _in_terminal(
    monkeypatch: pytest.MonkeyPatch,
    argv: list[object],
    stdin: bytes = b"",
    *,
    stdout_too: bool = True,
) -> tuple[int, str, str]:
    """``rnnlab ARGV`` with stderr on a terminal (and stdout on the same one if ``stdout_too``)."""
    terminal = FakeTerminal()
    stdout = terminal if stdout_too else io.StringIO()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    monkeypatch.setattr("sys.stdout", stdout)
    monkeypatch.setattr("sys.stderr", terminal)
    code = call_main(*argv)
    return code, stdout.getvalue(), terminal.getvalue()


def test_a_bar_on_the_terminal_leaves_piped_translations_untouched(
    monkeypatch: pytest.MonkeyPatch, rnnlab: Cli, word_run: Path, corpus: Corpus
):
    sources = [*corpus.valid_de[:10], "", *corpus.valid_de[10:]]
    expected = _translate(rnnlab, word_run, sources)
    stdin = "".join(f"{s}\n" for s in sources).encode()
    code, out, err = _in_terminal(monkeypatch, ["translate", word_run], stdin, stdout_too=False)
    assert code == 0
    assert _lines(out) == expected  # stdout: the translations, byte for byte
    assert "translating" in err and "\r" in err  # the bar went to the terminal


def test_a_seq2seq_log_file_gets_no_progress_bar(rnnlab: Cli, word_run: Path, corpus: Corpus):
    result = rnnlab("evaluate", word_run, "--data", corpus.tsv_valid)
    assert result.code == 0 and result.err == ""
    keys = [line.split("\t")[0] for line in _lines(result.out)]
    assert keys[:3] == ["bleu", "bleu_lowercase", "d2l_bleu"] and "signature" in keys


def test_translations_on_the_same_terminal_are_not_glued_to_the_bar(
    monkeypatch: pytest.MonkeyPatch, rnnlab: Cli, word_run: Path, corpus: Corpus
):
    expected = _translate(rnnlab, word_run, corpus.valid_de)
    stdin = "".join(f"{s}\n" for s in corpus.valid_de).encode()
    code, _, shown_text = _in_terminal(monkeypatch, ["translate", word_run], stdin)
    assert code == 0
    assert [line for line in screen(shown_text) if "translating" not in line] == expected


def test_metrics_on_the_same_terminal_are_not_glued_to_the_bar(
    monkeypatch: pytest.MonkeyPatch, rnnlab: Cli, word_run: Path, corpus: Corpus
):
    plain = rnnlab("evaluate", word_run, "--data", corpus.tsv_valid)
    code, _, shown_text = _in_terminal(
        monkeypatch, ["evaluate", word_run, "--data", corpus.tsv_valid]
    )
    assert code == 0
    assert [line for line in screen(shown_text) if "decoding" not in line] == _lines(plain.out)


def test_an_error_on_a_terminal_is_a_line_of_its_own(
    monkeypatch: pytest.MonkeyPatch, word_run: Path
):
    code, _, shown_text = _in_terminal(monkeypatch, ["translate", word_run], b"Hund.\n\xff\n")
    assert code == 2
    shown = screen(shown_text)
    assert [line for line in shown if "rnnlab: error:" in line] == [
        "rnnlab: error: <stdin>:2: not UTF-8 text (invalid start byte)"
    ]
