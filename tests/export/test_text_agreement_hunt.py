"""Text → ids → text in rnnlab and in the standalone export runtime, on awkward Unicode.

``rnnlab/export/runtime.py`` re-implements ``rnnlab.data``'s text handling with numpy only; these
tests hold the two against each other and against references that share no code with either:

* the d2l book's ``preprocess_nmt`` written out below as printed (the ``textbook`` mode; ``punct`` is
  the same function without its ``lower()``), its words split on whitespace;
* sentencepiece's own ``SentencePieceProcessor.encode`` / ``decode`` on the run's model file;
* vocabulary look-ups done here from the run's JSON files (markers spelled in text are unknown);
* end to end, ``rnnlab translate RUN`` / ``rnnlab tag RUN`` / ``rnnlab generate RUN`` against
  ``python EXPORT/runtime.py EXPORT`` in a subprocess, on the same awkward lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")
pytest.importorskip("hypothesis")
spm = pytest.importorskip("sentencepiece")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rnnlab.data import lm_corpus  # noqa: E402
from rnnlab.data.tokenizers import WordTokenizer  # noqa: E402
from rnnlab.errors import RnnlabError  # noqa: E402
from rnnlab.export import runtime as rt  # noqa: E402
from rnnlab.export.onnx import export_run  # noqa: E402
from tests.cli_runner import run_cli  # noqa: E402
from tests.export.runs import make_run  # noqa: E402

# ---------------------------------------------------------------------------------------------------
# Awkward text

AWKWARD = [
    "e\u0301",  # e + combining acute
    "\u00a0",  # no-break space
    "\u202f",  # narrow no-break space
    "\u2009",  # thin space
    "\u3000",  # ideographic space
    "\u200b",  # zero-width space (not whitespace to Python)
    "\u200d",  # zero-width joiner
    "\u200f",  # right-to-left mark
    "\ufeff",  # zero-width no-break space / BOM
    "שלום",
    "مرحبا",
    "❤\ufe0f",
    "👍🏽",
    "👩\u200d💻",
    "，",  # full-width comma
    "！",  # full-width exclamation mark
    "。",
    "\t",
    "\r",
    "\x00",
    "\x1c",  # a separator str.split() splits at
    "\x85",
    "\u2028",
    "ß",
    "İ",
    "Σ",
    "ΑΣ",
    "ﬁ",
    "Ǆ",
    " ",
    ",",
    ".",
    "!",
    "?",
    "...",
    "<eos>",
    "<pad>",
    "<unk>",
    "<bos>",
    "Go",
    "x" * 40,
]
WORDS = [
    "go",
    "Go",
    "hi",
    "ÉTÉ",
    "straße",
    "İstanbul",
    "ΟΔΟΣ",
    "ﬁn",
    "cafe\u0301",
    "a\u200db",
    "שלום",
    "👍🏽",
    "❤\ufe0f",
    "全角",
    "！",
    "x",
    "y",
]


def awkward_text(*, newlines: bool = False, max_size: int = 30) -> st.SearchStrategy[str]:
    pieces = st.one_of(
        st.sampled_from(AWKWARD),
        st.sampled_from(WORDS),
        st.characters(blacklist_categories=("Cs",)),
    )
    text = st.lists(pieces, max_size=max_size).map("".join)
    return text if newlines else text.map(lambda s: s.replace("\n", " "))


FUZZ = settings(
    max_examples=35,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Lines for the command-line comparisons: each is one input line (no "\n").
LINES = [
    "Go.",
    "",
    "   ",
    "\t\u3000\u00a0",
    "ÉTÉ, straße! İstanbul?",
    "\u200b",
    "\u200d\u200f",
    "שלום 👍🏽 ❤\ufe0f",
    "ΟΔΟΣ ΑΣ. Σ",
    "x" * 300,
    "a\x00b \x1c c\x85d\u2028e",
    "\ufeffhi",
    "hi\r",
    "\r",
    "<eos> <pad> <bos> <unk>",
    "cafe\u0301 ﬁn 全角！。，",
    "go go go go go go go go go go go go go go",
]


# ---------------------------------------------------------------------------------------------------
# The d2l book's code, as printed (chapter "Machine Translation and the Dataset")


def d2l_preprocess_nmt(text: str, *, lower: bool = True) -> str:
    """``preprocess_nmt``; ``lower=False`` leaves out its ``.lower()`` (rnnlab's ``punct`` mode)."""

    def no_space(char, prev_char):
        return char in set(",.!?") and prev_char != " "

    # Replace non-breaking space with space, and convert uppercase letters to
    # lowercase ones
    text = text.replace("\u202f", " ").replace("\xa0", " ")
    if lower:
        text = text.lower()
    # Insert space between words and punctuation marks
    out = [
        " " + char if i > 0 and no_space(char, text[i - 1]) else char for i, char in enumerate(text)
    ]
    return "".join(out)


def readme_punct_split(text: str) -> str:
    """d2l's rule as rnnlab documents it: a space before ``, . ! ?`` that follows a non-space (d2l
    tests ``prev_char != " "``, so it also splits after a tab or U+0085; whitespace either way,
    the same words, but sentencepiece keeps U+0085 as a character)."""
    text = text.replace("\u202f", " ").replace("\xa0", " ")
    out = [
        " " + c if i > 0 and c in ",.!?" and not text[i - 1].isspace() else c
        for i, c in enumerate(text)
    ]
    return "".join(out)


def reference_words(text: str, mode: str) -> list[str]:
    if mode == "none":
        return text.split()
    return d2l_preprocess_nmt(text, lower=mode == "textbook").split()


def reference_detokenize(tokens: list[str], mode: str) -> str:
    """README: words joined by spaces, ``, . ! ?`` re-attached to the word before them."""
    out = ""
    for i, token in enumerate(tokens):
        glued = mode != "none" and i > 0 and token[:1] in ",.!?"
        out += token if glued or i == 0 else " " + token
    return out


def markers_unknown(itos: list[str]) -> dict[str, int]:
    """token → id for text, ``<pad> <bos> <eos>`` spelled in text being unknown words."""
    return {t: i for i, t in enumerate(itos) if t not in ("<pad>", "<bos>", "<eos>")}


def vocab_tokens(path: Path) -> list[str]:
    return json.loads(path.read_text(encoding="utf-8"))["tokens"]


# ---------------------------------------------------------------------------------------------------
# Tiny runs, trained once per module, and their exports


def _pairs(n: int, seed: int) -> list[str]:
    import random

    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 5))]
        if rng.random() < 0.5:
            words[-1] += rng.choice(",.!?")
        sep = rng.choice([" ", " ", "\u00a0", "  "])
        lines.append(sep.join(words) + "\t" + " ".join(reversed(words)))
    return lines


def _seq2seq(root: Path, **data: object) -> tuple[object, Path]:
    (root / "train.tsv").write_text("\n".join(_pairs(200, 0)) + "\n", encoding="utf-8")
    config = {
        "data": {"train": str(root / "train.tsv"), "valid": "", "min_freq": 1, **data},
        "model": {"embed_size": 8, "hidden_size": 12, "num_layers": 1, "attention": "bahdanau"},
        "train": {"batch_size": 32, "lr": 0.01},
        "decode": {"max_len": 8, "batch_size": 16},
    }
    task, model = make_run(root, "seq2seq", config, train_steps=3)
    folder = export_run(task, model, root / "export")
    return task, folder, rt.load(folder)


@pytest.fixture(scope="module")
def word_translator(tmp_path_factory):
    """Words, the textbook preprocessing, sources cut to 5 words."""
    return _seq2seq(tmp_path_factory.mktemp("words"), preprocess="textbook", max_len=5)


@pytest.fixture(scope="module")
def spm_translator(tmp_path_factory):
    """Sentencepiece pieces over the ``punct`` preprocessing (case kept)."""
    return _seq2seq(
        tmp_path_factory.mktemp("spm"),
        preprocess="punct",
        max_len=0,
        tokenizer="sentencepiece",
        spm_vocab_size=120,
    )


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    """Lower-cased words, words spelled by at most 5 characters (first and last halves)."""
    import random

    root = tmp_path_factory.mktemp("tagger")
    rng = random.Random(1)
    tags = {w: f"T{i % 3}" for i, w in enumerate(WORDS)}
    lines = []
    for _ in range(150):
        words = [rng.choice(WORDS) for _ in range(rng.randint(1, 6))]
        lines.append(" ".join(f"{w}/{tags[w]}" for w in words))
    (root / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "data": {
            "train": str(root / "train.txt"),
            "valid": "",
            "format": "word_tag",
            "lowercase": True,
            "max_word_chars": 5,
        },
        "model": {
            "embed_size": 8,
            "hidden_size": 12,
            "char_embed_size": 6,
            "char_hidden_size": 6,
            "char_encoder": "rnn",
            "crf": True,
        },
        "train": {"batch_size": 16, "lr": 0.01},
    }
    task, model = make_run(root, "tagger", config, train_steps=3)
    folder = export_run(task, model, root / "export")
    return task, folder, rt.load(folder)


LM_TEXT = "The Time-Machine! ÉTÉ straße\r\nİstanbul, ΟΔΟΣ 👍🏽 x.\n\nthe end\n" * 10


def _lm(root: Path, tokenizer: str, clean: str, *, export: bool = True) -> tuple:
    (root / "text.txt").write_text(LM_TEXT, encoding="utf-8")
    config = {
        "data": {
            "train": str(root / "text.txt"),
            "valid": "",
            "tokenizer": tokenizer,
            "clean": clean,
        },
        "model": {"embed_size": 8, "hidden_size": 16},
        "train": {"batch_size": 4, "bptt": 8, "lr": 0.01},
    }
    task, model = make_run(root, "lm", config, train_steps=3)
    if export:
        folder = export_run(task, model, root / "export")
        return task, folder, rt.load(folder)
    # Only the runtime's text handling is used: its vocabulary and tokenizer fields, no graphs.
    runtime = object.__new__(rt.OnnxLanguageModel)
    runtime.itos = vocab_tokens(task.run_dir / "vocab.json")
    runtime.stoi = {t: i for i, t in enumerate(runtime.itos)}
    runtime.level, runtime.clean = tokenizer, clean
    return task, None, runtime


@pytest.fixture(scope="module")
def char_lm(tmp_path_factory):
    return _lm(tmp_path_factory.mktemp("char"), "char", "none")


@pytest.fixture(scope="module")
def word_lm(tmp_path_factory):
    return _lm(tmp_path_factory.mktemp("word"), "word", "timemachine", export=False)


def runtime_cli(folder: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    """``python EXPORT/runtime.py EXPORT ARGS`` in a fresh interpreter, as a user without rnnlab."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, str(folder / "runtime.py"), str(folder), *args],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------------------------------------------
# Words: the two tokenizers, d2l's preprocessing


@pytest.mark.parametrize("mode", ["textbook", "punct", "none"])
@FUZZ
@given(text=awkward_text())
def test_word_tokens_are_d2l_words_in_both_implementations(mode, text):
    expected = reference_words(text, mode)
    assert WordTokenizer(mode).encode(text) == expected
    assert rt.WordTokenizer(mode).encode(text) == expected


@pytest.mark.parametrize("mode", ["textbook", "punct", "none"])
@FUZZ
@given(tokens=st.lists(awkward_text(max_size=4).map(lambda s: "".join(s.split()) or "w")))
def test_word_detokenisation_is_the_readmes_in_both_implementations(mode, tokens):
    expected = reference_detokenize(tokens, mode)
    assert WordTokenizer(mode).decode(tokens) == expected
    assert rt.WordTokenizer(mode).decode(tokens) == expected


@pytest.mark.parametrize("mode", ["textbook", "punct", "none"])
@FUZZ
@given(text=awkward_text())
def test_detokenised_words_read_back_as_the_same_words(mode, text):
    for tokenizer in (WordTokenizer(mode), rt.WordTokenizer(mode)):
        tokens = tokenizer.encode(text)
        assert tokenizer.encode(tokenizer.decode(tokens)) == tokens


# ---------------------------------------------------------------------------------------------------
# Translators: the ids a model is fed, the text of the ids it emits


@FUZZ
@given(text=awkward_text())
def test_word_source_ids_agree_with_d2l_words_looked_up(word_translator, text):
    task, _, runtime = word_translator
    table = markers_unknown(vocab_tokens(task.run_dir / "vocab.src.json"))
    expected = [table.get(w, 1) for w in reference_words(text, "textbook")[:5]] + [3]
    assert task.encode_source(text) == expected
    assert runtime.encode_source(text) == expected


@FUZZ
@given(data=st.data())
def test_word_target_ids_detokenise_alike(word_translator, data):
    task, _, runtime = word_translator
    itos = vocab_tokens(task.run_dir / "vocab.tgt.json")
    ids = data.draw(st.lists(st.integers(0, len(itos) - 1), max_size=12))
    expected = reference_detokenize([itos[i] for i in ids if i not in (0, 2, 3)], "textbook")
    assert task.detokenize(ids) == expected
    assert runtime.detokenize(ids) == expected


@FUZZ
@given(text=awkward_text())
def test_subword_pieces_and_ids_are_sentencepieces_own(spm_translator, text):
    task, folder, runtime = spm_translator
    processor = spm.SentencePieceProcessor(model_file=str(folder / "spm.src.model"))
    pieces = processor.encode(readme_punct_split(text), out_type=str)
    assert task.src_tokenizer.encode(text) == pieces
    assert runtime.src_tokenizer.encode(text) == pieces
    table = markers_unknown(vocab_tokens(task.run_dir / "vocab.src.json"))
    expected = [table.get(p, 1) for p in pieces] + [3]
    assert task.encode_source(text) == expected
    assert runtime.encode_source(text) == expected


@FUZZ
@given(data=st.data())
def test_subword_ids_decode_as_sentencepiece_decodes_them(spm_translator, data):
    task, folder, runtime = spm_translator
    processor = spm.SentencePieceProcessor(model_file=str(folder / "spm.tgt.model"))
    itos = vocab_tokens(task.run_dir / "vocab.tgt.json")
    ids = data.draw(st.lists(st.integers(0, len(itos) - 1), max_size=12))
    pieces = [itos[i] for i in ids if i not in (0, 2, 3)]
    expected = reference_detokenize(processor.decode(pieces).split(), "punct")
    assert task.detokenize(ids) == expected
    assert runtime.detokenize(ids) == expected


# ---------------------------------------------------------------------------------------------------
# Tagger: the word ids and spellings a batch holds


def _spelled(word: str, limit: int) -> str:
    return (
        word
        if len(word) <= limit
        else word[: limit // 2] + word[len(word) - (limit - limit // 2) :]
    )


@FUZZ
@given(text=awkward_text())
def test_tagger_batches_agree_with_lookups_done_here(tagger, text):
    task, _, runtime = tagger
    words = text.split()
    if not words:
        return
    word_table = markers_unknown(vocab_tokens(task.run_dir / "vocab.words.json"))
    chars = vocab_tokens(task.run_dir / "vocab.chars.json")
    char_table = {c: i for i, c in enumerate(chars)}
    batch = task.make_batch([words])
    feed = runtime._feed([words])
    expected_words = [word_table.get(w.lower(), 1) for w in words]
    assert batch.words[0].tolist() == expected_words
    assert feed["words"][0].tolist() == expected_words
    types = list(dict.fromkeys(words))
    assert batch.word_types[0].tolist() == [types.index(w) for w in words]
    assert feed["word_types"][0].tolist() == [types.index(w) for w in words]
    for row, word in enumerate(types):
        spelled = [char_table.get(c, 1) for c in _spelled(word, 5)] or [1]
        assert batch.chars[row, : batch.char_lengths[row]].tolist() == spelled
        assert feed["chars"][row, : feed["char_lengths"][row]].tolist() == spelled


# ---------------------------------------------------------------------------------------------------
# Language models: corpus tokens and prefixes


@pytest.mark.parametrize(
    "level,clean",
    [("char", "none"), ("char", "timemachine"), ("word", "none"), ("word", "timemachine")],
)
@FUZZ
@given(text=awkward_text(newlines=True))
def test_lm_corpus_tokens_agree_with_a_file_read_by_lines(level, clean, text, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    expected = [
        t
        for line in lm_corpus._line_tokens(_file_lines(path), level=level, clean=clean)
        for t in line
    ]
    assert lm_corpus.corpus_tokens(text, level=level, clean=clean) == expected
    assert rt.corpus_tokens(text, level=level, clean=clean) == expected


def _file_lines(path: Path):
    """The lines of a file as bytes split at b"\\n", a final "\\r" and a leading BOM dropped."""
    raw = path.read_bytes().split(b"\n")
    if raw[-1] == b"":
        raw.pop()
    for number, line in enumerate(raw, start=1):
        text = line.decode("utf-8")
        if number == 1:
            text = text.removeprefix("\ufeff")
        yield number, text.rstrip("\r\n")


@pytest.mark.parametrize("which", ["char_lm", "word_lm"])
@FUZZ
@given(text=awkward_text(newlines=True, max_size=6))
def test_lm_prefixes_read_alike(which, text, request):
    task, _, runtime = request.getfixturevalue(which)
    try:
        expected = task.prefix_tokens(text)
    except RnnlabError:
        with pytest.raises(rt.ExportError):
            runtime.prefix_tokens(text)
        return
    assert runtime.prefix_tokens(text) == expected
    assert runtime.encode(expected) == task.vocab.encode(expected)


# ---------------------------------------------------------------------------------------------------
# End to end: the rnnlab command on the run against the export's own runtime.py


def _same_lines(rnnlab_out: str, runtime: subprocess.CompletedProcess, lines: list[str]) -> None:
    assert runtime.returncode == 0, runtime.stderr.decode("utf-8", "replace")
    ours = rnnlab_out.split("\n")
    theirs = runtime.stdout.decode("utf-8").split("\n")
    assert ours[-1] == theirs[-1] == ""
    assert len(ours) - 1 == len(theirs) - 1 == len(lines)
    for line, out in zip(lines, ours, strict=False):
        if not line.strip():
            assert out == ""
    assert ours == theirs


@pytest.mark.parametrize("which", ["word_translator", "spm_translator"])
def test_translate_run_and_runtime_print_the_same_lines(which, request, monkeypatch, capsys):
    task, folder, _ = request.getfixturevalue(which)
    stdin = ("\ufeff" + "\n".join(LINES) + "\n").encode("utf-8")
    result = run_cli(monkeypatch, capsys, "translate", task.run_dir, stdin=stdin)
    assert result.code == 0, result.err
    _same_lines(result.out, runtime_cli(folder, stdin=stdin), LINES)


def test_tag_run_and_runtime_print_the_same_lines(tagger, monkeypatch, capsys):
    task, folder, _ = tagger
    stdin = ("\n".join(LINES) + "\r\n").encode("utf-8")  # a final CRLF: the last line is "…go"
    result = run_cli(monkeypatch, capsys, "tag", task.run_dir, stdin=stdin)
    assert result.code == 0, result.err
    _same_lines(result.out, runtime_cli(folder, stdin=stdin), LINES)
    for line, out in zip(LINES, result.out.split("\n"), strict=False):
        assert [pair.rpartition("/")[0] for pair in out.split(" ") if out] == line.split()


@pytest.mark.parametrize(
    "prefix", ["The", "ÉTÉ straße", "x.\r", "İstanbul, ΟΔΟΣ 👍🏽", "é", "", "the end\n\nThe"]
)
def test_generate_run_and_runtime_print_the_same_text(char_lm, prefix, monkeypatch, capsys):
    task, folder, _ = char_lm
    args = ("--prefix", prefix, "--length", "12")
    result = run_cli(monkeypatch, capsys, "generate", task.run_dir, *args)
    runtime = runtime_cli(folder, *args)
    if result.code != 0:  # a character never seen in training, or no prefix: an error in both
        assert runtime.returncode == result.code == 2
        assert runtime.stdout == b""
        return
    assert runtime.returncode == 0, runtime.stderr.decode("utf-8", "replace")
    assert runtime.stdout.decode("utf-8") == result.out
    assert result.out.startswith(prefix)


def test_a_line_over_the_input_limit_is_tagged_alike(tagger, monkeypatch, capsys):
    task, folder, _ = tagger
    lines = ["go x " * 2500]  # 12,500 characters, 5,000 words
    stdin = ("\n".join(lines) + "\n").encode("utf-8")
    result = run_cli(monkeypatch, capsys, "tag", task.run_dir, stdin=stdin)
    assert result.code == 0, result.err
    runtime = runtime_cli(folder, stdin=stdin)
    # Both tag the first 10,000 characters (2,000 × "go x ") and say so on stderr.
    assert len(result.out.split()) == len(runtime.stdout.split()) == 4000
    for err in (result.err, runtime.stderr.decode("utf-8")):
        assert "<stdin>:1: line of 12,500 characters cut to the first 10,000" in err
    _same_lines(result.out, runtime, lines)


def test_the_runtime_cuts_input_lines_where_rnnlab_does() -> None:
    """Both read stdin to the same limit, a first line's byte order mark counted alike."""
    import io

    from rnnlab.cli.console import StrictUtf8Lines
    from rnnlab.data.limits import MAX_LINE_CHARS, read_limited_lines

    assert rt.MAX_LINE_CHARS == MAX_LINE_CHARS
    for text in (
        "\ufeff" + "a" * MAX_LINE_CHARS + "\nb\n",
        "a" * (MAX_LINE_CHARS + 1) + "\r\n" + "c" * MAX_LINE_CHARS + "\r\n",
        "x" * (MAX_LINE_CHARS - 1) + "\n\ufeff" + "y" * MAX_LINE_CHARS,
    ):
        stream = StrictUtf8Lines(io.BytesIO(text.encode("utf-8")))
        expected = [line.text for line in read_limited_lines(stream)]
        expected[0] = expected[0].removeprefix("\ufeff")  # as rnnlab's stdin_lines does
        assert rt.cut_input_lines(text) == expected
