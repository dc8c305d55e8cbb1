"""User mistakes on the command line: one line ``rnnlab: error: …`` on stderr, exit status 2.

Every test feeds ``rnnlab.cli.main`` (in this process, stdin monkeypatched) a mistake a person
makes: a run directory that is missing, a file, empty, of another task or without its weights or
vocabularies; ``--set`` overrides that are malformed or out of range; zero or negative counts;
``--data`` files that are empty, binary, of another format or a directory; malformed CoNLL-U or
non-UTF-8 bytes on stdin; output paths in missing folders or on top of a folder or a file; malformed
search spaces and studies; training options that cannot work. Each asserts the exit status and that
stderr is exactly one line starting with ``rnnlab: error:`` (naming the file and line where there is
one), and where it matters that nothing already written was lost.

The runs are the session's tiny runs (``tests/conftest.py``); tests that damage or resume a run work
on a copy. Mistakes the commands do not handle yet are ``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli_runner import Cli, Result, assert_user_error, run_cli

REPO = Path(__file__).resolve().parents[2]
EWT_TRAIN = REPO / "data" / "ud-ewt-sample" / "train.conllu"
CONLLU_OK = "1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_\n2\tdog\tdog\tNOUN\t_\t_\t0\troot\t_\t_\n\n"

HAS_EXPORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxscript", "onnxruntime"))
needs_export = pytest.mark.skipif(not HAS_EXPORT, reason="needs the export extra")


@pytest.fixture
def rnnlab(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``rnnlab ARGV`` in this process (``tests.cli_runner.run_cli``)."""

    def run(*argv: object, stdin: str | bytes = "") -> Result:
        return run_cli(monkeypatch, capsys, *argv, stdin=stdin)

    return run


def copy_run(run: Path, to: Path, *, without: tuple[str, ...] = ()) -> Path:
    """A copy of a session run that a test may damage or resume."""
    shutil.copytree(run, to, ignore=shutil.ignore_patterns(".lock", *without))
    return to


def sets(**settings: object) -> list[str]:
    """``--set KEY=VALUE`` arguments, one pair per setting."""
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def tiny_lm_args(text: Path, **overrides: object) -> list[str]:
    """``--set`` arguments for a language model that trains one step on ``text`` in a moment."""
    settings: dict[str, object] = {
        "data.train": text,
        "data.clean": "none",
        "model.hidden_size": 8,
        "model.embed_size": 8,
        "train.batch_size": 2,
        "train.bptt": 8,
        "train.max_steps": 1,
        "train.num_threads": 1,
        "train.device": "cpu",
    }
    settings.update(overrides)
    return sets(**{k.replace("__", "."): v for k, v in settings.items()})


# ---------------------------------------------------------------------------------------------------
# Run directories that are not runs


def _run_commands(run: str) -> dict[str, list[str]]:
    return {
        "translate": ["translate", run],
        "evaluate": ["evaluate", run, "--data", "unused.tsv"],
        "tag": ["tag", run],
        "generate": ["generate", run, "--prefix", "a"],
        "plot": ["plot", run, "--out", f"{run}.png"],
        "serve": ["serve", run, "--port", "0"],
        "export": ["export", run, "--out", f"{run}-export"],
    }


@pytest.mark.parametrize("command", list(_run_commands("x")))
@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("missing", "no such run directory"),
        ("a_file", "no such run directory"),
        ("empty", "not an rnnlab run directory (no config.yaml)"),
    ],
)
def test_a_run_that_is_no_run(rnnlab: Cli, tmp_path: Path, command: str, shape: str, expected: str):
    run = tmp_path / shape
    if shape == "a_file":
        run.write_text("not a run\n", encoding="utf-8")
    elif shape == "empty":
        run.mkdir()
    if command == "export" and not HAS_EXPORT:
        pytest.skip("needs the export extra")
    assert_user_error(rnnlab(*_run_commands(str(run))[command]), f"{run}: {expected}")


@pytest.mark.parametrize("shape", ["missing", "a_file", "empty"])
def test_resume_of_a_run_that_is_no_run_names_its_config(rnnlab: Cli, tmp_path: Path, shape: str):
    run = tmp_path / shape
    if shape == "a_file":
        run.write_text("not a run\n", encoding="utf-8")
    elif shape == "empty":
        run.mkdir()
    assert_user_error(rnnlab("train", "--resume", run), f"{run / 'config.yaml'}:")


@pytest.mark.parametrize("command", ["tag", "evaluate", "export"])
def test_a_run_without_weights_or_vocabularies(
    rnnlab: Cli, tagger_run: Path, tmp_path: Path, command: str
):
    if command == "export" and not HAS_EXPORT:
        pytest.skip("needs the export extra")
    no_weights = copy_run(tagger_run, tmp_path / "no_weights", without=("best", "last"))
    no_vocab = copy_run(tagger_run, tmp_path / "no_vocab", without=("vocab.words.json",))
    no_config = copy_run(tagger_run, tmp_path / "no_config", without=("config.yaml",))
    data = tmp_path / "dev.txt"
    data.write_text("a/DET b/NOUN\n", encoding="utf-8")
    argv = {
        "tag": lambda run: ["tag", run],
        "evaluate": lambda run: ["evaluate", run, "--data", data],
        "export": lambda run: ["export", run, "--out", tmp_path / "export"],
    }[command]
    assert_user_error(rnnlab(*argv(no_weights)), f"{no_weights}: no checkpoint found")
    assert_user_error(rnnlab(*argv(no_vocab)), f"{no_vocab / 'vocab.words.json'}: vocabulary")
    assert_user_error(rnnlab(*argv(no_config)), f"{no_config}: not an rnnlab run directory")
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("config.yaml", b"task: [\n", "config.yaml:2: invalid YAML"),
        ("config.yaml", b"\x80\x04\x95 a pickle", "config.yaml: not UTF-8 text"),
        ("config.yaml", b"- a list\n", "config.yaml: expected a mapping"),
        ("config.yaml", b"", "config.yaml: unknown task ''"),
        ("vocab.words.json", b"{bad", "vocab.words.json: not a valid vocabulary file"),
        ("vocab.chars.json", b"\x80\x04\x95", "vocab.chars.json: not a valid vocabulary file"),
        ("tags.json", b'{"itos": 5}', "tags.json: not a valid tag set file"),
    ],
)
def test_a_damaged_run_file(
    rnnlab: Cli, tagger_run: Path, tmp_path: Path, name: str, content: bytes, fragment: str
):
    run = copy_run(tagger_run, tmp_path / "run")
    (run / name).write_bytes(content)
    assert_user_error(rnnlab("tag", run, stdin="a b\n"), fragment)


def test_runs_of_other_tasks_in_one_ensemble_are_named(
    rnnlab: Cli, tagger_run: Path, translator_run: Path, lm_run: Path, tmp_path: Path
):
    data = tmp_path / "dev.txt"
    data.write_text("a/DET b/NOUN\n", encoding="utf-8")
    for runs in ([tagger_run, translator_run], [translator_run, tagger_run]):
        assert_user_error(
            rnnlab("evaluate", *runs, "--data", data),
            f"{translator_run}: evaluate needs a tagger run, this is a seq2seq run",
        )
    assert_user_error(
        rnnlab("tag", tagger_run, lm_run, stdin="a b\n"),
        f"{lm_run}: tag needs a tagger run, this is a lm run",
    )
    assert_user_error(
        rnnlab("evaluate", tagger_run, tagger_run, "--data", data, "--beam", "2"),
        "--beam does not apply to an ensemble",
    )


def test_per_tag_of_a_language_model(rnnlab: Cli, lm_run: Path, pangram_file: Path):
    assert_user_error(
        rnnlab("evaluate", lm_run, "--data", pangram_file, "--per-tag"),
        f"{lm_run}: --per-tag needs a tagger run, this is a lm run",
    )


# ---------------------------------------------------------------------------------------------------
# --set overrides


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("decode.beam_size", ("override 'decode.beam_size' is not of the form key=value",)),
        ("decode.beam_sise=2", ("config.yaml: unknown config key decode.beam_sise",)),
        ("decode.beam_size=two", ("config.yaml: decode.beam_size: expected an integer", "'two'")),
        ("decode.beam_size=[1", ("decode.beam_size: expected an integer",)),
        ("decode.beam_size.x=1", ("override decode.beam_size.x: beam_size is not a section",)),
        ("decode=5", ("config.yaml: decode: expected a mapping, got 5",)),
        ("task=bogus", ("config.yaml: unknown task 'bogus'",)),
        ("task=lm", ("config.yaml: unknown config key",)),
        ("decode.batch_size=0", ("decode.batch_size: 0 is less than 1",)),
        ("decode.length_penalty=nan", ("decode.length_penalty: must be between 0 and 10",)),
        ("model.hidden_size=7", ("model.safetensors: weights do not fit the configured model",)),
    ],
)
def test_wrong_set_overrides_of_a_run(
    rnnlab: Cli, translator_run: Path, override: str, fragments: tuple[str, ...]
):
    result = rnnlab("translate", translator_run, "--set", override, stdin="a b\n")
    assert_user_error(result, *fragments)
    assert result.out == ""


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train.batch_size=0", "train.batch_size: 0 is less than 1"),
        ("train.device=mps", "'mps'; rnnlab runs on cpu or cuda"),
        ("model.dropout=1", "model.dropout: 1.0 is outside [0, 1)"),
        ("train.epochs=many", "train.epochs: expected an integer"),
        ("train.bogus=1", "unknown config key train.bogus"),
    ],
)
def test_wrong_set_overrides_when_training(
    rnnlab: Cli, tmp_path: Path, pangram_file: Path, override: str, fragment: str
):
    result = rnnlab(
        "train", "lm", "--out", tmp_path / "run", *tiny_lm_args(pangram_file), "--set", override
    )
    assert_user_error(result, fragment)


@pytest.mark.parametrize("override", ["train.device=bogus", "train.device=cuda:x", "train=5"])
def test_a_bad_device_or_section_before_training(
    rnnlab: Cli, tmp_path: Path, pangram_file: Path, override: str
):
    result = rnnlab(
        "train", "lm", "--out", tmp_path / "run", *tiny_lm_args(pangram_file), "--set", override
    )
    assert_user_error(result, override.split("=")[0])


@pytest.mark.parametrize(
    "override",
    [
        "train.lr=-1",
        "train.weight_decay=-1",
        "train.label_smoothing=2",
        "train.bptt=0",
        "model.embed_size=-1",
    ],
)
def test_training_settings_torch_refuses(
    rnnlab: Cli, tmp_path: Path, pangram_file: Path, override: str
):
    result = rnnlab(
        "train", "lm", "--out", tmp_path / "run", *tiny_lm_args(pangram_file), "--set", override
    )
    assert_user_error(result, override.split("=")[0])


@pytest.mark.parametrize("task", ["tagger", "seq2seq"])
@pytest.mark.parametrize("override", ["model.hidden_size=0", "model.num_layers=0"])
def test_zero_sizes_of_a_tagger_or_translator(
    rnnlab: Cli, tmp_path: Path, task: str, override: str
):
    if task == "tagger":
        data = sets(**{"data.train": EWT_TRAIN, "data.max_examples": 20})
    else:
        tsv = tmp_path / "pairs.tsv"
        tsv.write_text("a b\tb a\nc d e\te d c\n" * 4, encoding="utf-8")
        data = sets(**{"data.train": tsv, "data.min_freq": 1})
    small = sets(**{"model.hidden_size": 8, "model.embed_size": 8, "train.max_steps": 1})
    result = rnnlab("train", task, "--out", tmp_path / "run", *data, *small, "--set", override)
    assert_user_error(result, override.split("=")[0])


@pytest.mark.parametrize(
    "override", ["decode.max_len=0", "decode.max_len=-5", "decode.beam_size=-1"]
)
def test_decode_settings_out_of_range(rnnlab: Cli, translator_run: Path, override: str):
    result = rnnlab("translate", translator_run, "--set", override, stdin="a b c\n")
    assert_user_error(result, override.split("=")[0])


# ---------------------------------------------------------------------------------------------------
# Counts that are zero or negative


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--n-best", "0"], "argument --n-best: must be 1 or more, got 0"),
        (["--n-best", "-1"], "argument --n-best: must be 1 or more, got -1"),
        (["--max-len", "0"], "argument --max-len: must be 1 or more, got 0"),
        (["--max-len", "-3"], "argument --max-len: must be 1 or more, got -3"),
        (["--device", "bogus"], "unknown device 'bogus'"),
        (["--device", "mps"], "'mps'; rnnlab runs on cpu or cuda"),
    ],
)
def test_translate_flags(rnnlab: Cli, translator_run: Path, flags: list[str], fragment: str):
    result = rnnlab("translate", translator_run, *flags, stdin="a b c\n")
    assert_user_error(result, fragment)
    assert result.out == ""


@pytest.mark.parametrize("beam", ["0", "-1"])
def test_evaluate_beam_below_one(rnnlab: Cli, translator_run: Path, tmp_path: Path, beam: str):
    tsv = tmp_path / "test.tsv"
    tsv.write_text("a b\tb a\n", encoding="utf-8")
    result = rnnlab("evaluate", translator_run, "--data", tsv, "--beam", beam)
    assert_user_error(result, f"argument --beam: must be 1 or more, got {beam}")
    assert result.out == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["translate", "{translator}", "--beam", "0"],
        ["translate", "{translator}", "--beam", "-1"],
        ["translate", "{translator}", "--batch-size", "0"],
        ["translate", "{translator}", "--batch-size", "-1"],
        ["tag", "{tagger}", "--batch-size", "-1"],
    ],
)
def test_zero_or_negative_counts_are_refused(
    rnnlab: Cli, translator_run: Path, tagger_run: Path, argv: list[str]
):
    names = {"translator": translator_run, "tagger": tagger_run}
    result = rnnlab(*(a.format(**names) for a in argv), stdin="a b c\n")
    assert_user_error(result, argv[-2])


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--temperature", "-1"], "--temperature must be positive"),
        (["--top-k", "-1"], "--top-k must be 0 (no limit) or more"),
        (["--prefix", "the \x00€"], "prefix has characters never seen in training"),
    ],
)
def test_generate_flags(rnnlab: Cli, lm_run: Path, flags: list[str], fragment: str):
    result = rnnlab("generate", lm_run, "--prefix", "the", "--length", "3", *flags)
    assert_user_error(result, fragment)


def test_generate_with_a_nan_temperature(rnnlab: Cli, lm_run: Path):
    result = rnnlab("generate", lm_run, "--prefix", "the", "--length", "3", "--temperature", "nan")
    assert_user_error(result, "--temperature")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--port", "-1"], "--port -1: a TCP port is between 0 and 65535"),
        (["--port", "70000"], "--port 70000: a TCP port is between 0 and 65535"),
        (["--max-chars", "0"], "--max-chars must be 1 or more"),
        (["--max-wait-ms", "-1"], "--max-wait-ms must be between 0 and 60000"),
        (["--max-request-bytes", "0"], "--max-request-bytes must be 1 or more"),
    ],
)
def test_serve_flags_before_any_server_starts(
    rnnlab: Cli, translator_run: Path, flags: list[str], fragment: str
):
    assert_user_error(rnnlab("serve", translator_run, "--port", "0", *flags), fragment)


def test_serve_model_name_that_cannot_be_a_url(rnnlab: Cli, translator_run: Path):
    assert_user_error(
        rnnlab("serve", f"my model={translator_run}", "--port", "0"),
        "model name 'my model' is part of its URLs",
    )


def test_train_with_no_processes(rnnlab: Cli, tmp_path: Path, pangram_file: Path):
    result = rnnlab(
        "train", "lm", "--out", tmp_path / "run", "--nproc", "0", *tiny_lm_args(pangram_file)
    )
    assert_user_error(result, "--nproc")


def test_train_with_negative_epochs(rnnlab: Cli, tmp_path: Path, pangram_file: Path):
    args = tiny_lm_args(pangram_file, train__epochs=-1, train__max_steps=0)
    assert_user_error(rnnlab("train", "lm", "--out", tmp_path / "run", *args), "train.epochs")


@pytest.mark.parametrize("argv", [["translate", "RUN", "--batch-size", "x"], ["evaluate", "RUN"]])
def test_argument_errors_are_one_line(rnnlab: Cli, argv: list[str]):
    result = rnnlab(*argv)
    assert_user_error(result)


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["translate", "RUN", "--input", "x.txt"], "rnnlab translate"),
        (["embeddings", "train", "a.txt", "--out", "v.txt", "--bogus"], "rnnlab embeddings train"),
        (["evaluate", "RUN", "--data", "d.txt", "--bogus"], "rnnlab evaluate"),
    ],
)
def test_an_unknown_flag_is_named_by_its_command(rnnlab: Cli, argv: list[str], command: str):
    unknown = next(a for a in argv if a.startswith("--") and a not in ("--out", "--data"))
    line = assert_user_error(rnnlab(*argv))
    assert line.startswith(f"rnnlab: error: {command}: unrecognized arguments: {unknown}"), line
    assert line.endswith(f"(see {command} --help)"), line


# ---------------------------------------------------------------------------------------------------
# --data files


@pytest.mark.parametrize(
    ("run_name", "name", "content", "fragment"),
    [
        ("translator_run", "test.tsv", b"", "test.tsv: no sentence pairs found"),
        ("translator_run", "test.tsv", b"a\tb\n\x00\xff binary\n", "test.tsv:2: not UTF-8 text"),
        ("translator_run", "test.tsv", b"a b\n", "test.tsv:1: expected at least 2 tab-separated"),
        ("translator_run", "test.tsv", b"\n\n\n", "test.tsv: no sentence pairs found"),
        ("translator_run", "test.tsv.gz", b"not gzip", "test.tsv.gz: cannot read"),
        ("translator_run", "test", None, "test: no such file, nor aligned files"),
        ("tagger_run", "dev.txt", b"the/DET \xff\xfe/NOUN\n", "dev.txt:1: not UTF-8 text"),
        ("tagger_run", "dev.txt", b"hello/NN world\n", "dev.txt:1: token 'world' is not of the"),
        ("tagger_run", "dev.conllu", CONLLU_OK.encode() + b"1\tA\n", "dev.conllu:4: expected 10"),
        ("tagger_run", "dev", None, "dev: is a directory, expected a text file"),
        ("lm_run", "test.txt", b"", "test.txt: no text to model"),
        ("lm_run", "test.txt", b" \n\n", "test.txt: no text to model"),
        ("lm_run", "test.txt", b"the\n\xff\n", "test.txt:2: not UTF-8 text"),
        ("lm_run", "test", None, "test: is a directory, expected a text file"),
    ],
)
def test_evaluation_data_in_a_wrong_format(
    rnnlab: Cli,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    run_name: str,
    name: str,
    content: bytes | None,
    fragment: str,
):
    run = request.getfixturevalue(run_name)
    data = tmp_path / name
    if content is None:
        data.mkdir()
    else:
        data.write_bytes(content)
    result = rnnlab("evaluate", run, "--data", data)
    assert_user_error(result, f"{tmp_path}/{fragment}")
    assert result.out == ""


@pytest.mark.parametrize("members", [1, 2])
@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n\n"])
def test_evaluation_data_without_a_tagged_sentence(
    rnnlab: Cli, tagger_run: Path, tmp_path: Path, members: int, content: str
):
    data = tmp_path / "empty.conllu"
    data.write_text(content, encoding="utf-8")
    result = rnnlab("evaluate", *[tagger_run] * members, "--data", data)
    assert_user_error(result, str(data))


# ---------------------------------------------------------------------------------------------------
# stdin


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("1\tA\ta\n\n", "<stdin>:4: expected 10 tab-separated CoNLL-U columns, found 3"),
        (
            "1\tA\ta\tDET\t_\t_\t2\tdet\t_\t_\n3\tb\tb\tNOUN\t_\t_\t0\troot\t_\t_\n\n",
            "<stdin>:5: word ID 3 out of sequence (expected 2)",
        ),
        ("0\tA\ta\tDET\t_\t_\t0\tdet\t_\t_\n\n", "<stdin>:4: word ID 0 out of sequence"),
        ("1\t\ta\tDET\t_\t_\t2\tdet\t_\t_\n\n", "<stdin>:4: empty FORM column"),
        ("1\tA\ta\tDET\t_\t_\t0\troot\t_\t_\n# c\n\n", "<stdin>:5: comment line inside a sentence"),
        ("1\tA\ta\tDET\t_\t_\tX\tdet\t_\t_\n\n", "<stdin>:4: bad HEAD column"),
        ("2-1\tA\t_\t_\t_\t_\t_\t_\t_\t_\n\n", "<stdin>:4: bad ID column"),
        ("the dog barks\n", "<stdin>:4: expected 10 tab-separated CoNLL-U columns, found 1"),
    ],
)
def test_malformed_conllu_on_stdin_names_the_line(
    rnnlab: Cli, tagger_run: Path, extra: str, fragment: str
):
    result = rnnlab("tag", tagger_run, "--format", "conllu", stdin=CONLLU_OK + extra)
    assert_user_error(result, fragment)


@pytest.mark.parametrize(
    ("command", "stdin"),
    [
        (["translate", "{translator}"], b"a b\n\xff\xfe c\n"),
        (["tag", "{tagger}"], b"a b\n\xff\xfe c\n"),
        (["tag", "{tagger}", "--format", "conllu"], CONLLU_OK.encode() + b"\n1\t\xff\t_\n"),
    ],
)
def test_binary_on_stdin(
    rnnlab: Cli, translator_run: Path, tagger_run: Path, command: list[str], stdin: bytes
):
    argv = [a.format(translator=translator_run, tagger=tagger_run) for a in command]
    result = rnnlab(*argv, stdin=stdin)
    assert_user_error(result, "<stdin>:")


# ---------------------------------------------------------------------------------------------------
# Output paths


def test_plot_of_a_run_without_usable_metrics(rnnlab: Cli, lm_run: Path, tmp_path: Path):
    out = tmp_path / "curves.png"
    missing = copy_run(lm_run, tmp_path / "missing", without=("metrics.jsonl",))
    assert_user_error(rnnlab("plot", missing, "--out", out), f"{missing}: no training records")
    empty = copy_run(lm_run, tmp_path / "empty", without=("metrics.jsonl",))
    (empty / "metrics.jsonl").write_bytes(b"\xff\xfe[1, 2]\n")
    assert_user_error(rnnlab("plot", empty, "--out", out), f"{empty}: no training records")
    folder = copy_run(lm_run, tmp_path / "folder", without=("metrics.jsonl",))
    (folder / "metrics.jsonl").mkdir()
    assert_user_error(rnnlab("plot", folder, "--out", out), "metrics.jsonl: cannot read it")
    assert_user_error(rnnlab("plot", lm_run, tmp_path / "nope", "--out", out), "nope: no such run")
    assert not out.exists()


@pytest.mark.parametrize("out", ["missing/curves.png", ".", ""])
def test_plot_to_a_path_that_cannot_be_written(rnnlab: Cli, lm_run: Path, tmp_path: Path, out: str):
    (tmp_path / "a_file").write_text("keep\n", encoding="utf-8")
    target = str(tmp_path / out) if out else ""
    assert_user_error(rnnlab("plot", lm_run, "--out", target))
    assert (tmp_path / "a_file").read_text(encoding="utf-8") == "keep\n"


def test_plot_to_a_name_of_another_format(rnnlab: Cli, lm_run: Path, tmp_path: Path):
    assert_user_error(rnnlab("plot", lm_run, "--out", tmp_path / "curves.jpg"), "curves.jpg")


@pytest.mark.parametrize("out", ["missing/attention.png", "."])
def test_attention_plot_to_a_path_that_cannot_be_written(
    rnnlab: Cli, translator_run: Path, tmp_path: Path, out: str
):
    result = rnnlab(
        "translate", translator_run, "--attention-plot", tmp_path / out, stdin="a b c\n"
    )
    assert_user_error(result, str(tmp_path))


@needs_export
def test_export_into_a_folder_that_is_not_an_export(rnnlab: Cli, tagger_run: Path, tmp_path: Path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep\n", encoding="utf-8")
    assert_user_error(
        rnnlab("export", tagger_run, "--out", folder), f"{folder}: exists and is not an rnnlab"
    )
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]
    assert_user_error(
        rnnlab("export", tagger_run, "--out", folder / "keep.txt" / "sub"), "keep.txt/sub"
    )
    assert_user_error(rnnlab("export", tagger_run, "--set", "nokey=1"), "unknown config key nokey")


@needs_export
def test_export_to_a_path_that_is_a_file(rnnlab: Cli, tagger_run: Path, tmp_path: Path):
    target = tmp_path / "model.onnx"
    target.write_text("keep\n", encoding="utf-8")
    assert_user_error(rnnlab("export", tagger_run, "--out", target), str(target))
    assert target.read_text(encoding="utf-8") == "keep\n"


def test_embeddings_inputs_and_outputs(rnnlab: Cli, tmp_path: Path, pangram_file: Path):
    pytest.importorskip("gensim")
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x00\xff\xfe\n")
    out = tmp_path / "vectors.txt"
    assert_user_error(rnnlab("embeddings", "train", tmp_path / "no.txt", "--out", out), "no.txt")
    assert_user_error(rnnlab("embeddings", "train", empty, "--out", out), f"no text in {empty}")
    assert_user_error(rnnlab("embeddings", "train", binary, "--out", out), f"{binary}:1: not UTF-8")
    assert_user_error(rnnlab("embeddings", "train", tmp_path, "--out", out), "is a directory")
    assert_user_error(
        rnnlab("embeddings", "train", pangram_file, "--out", tmp_path), "--out names the vectors"
    )
    for flag in ("--dim", "--epochs", "--window", "--workers"):
        assert_user_error(
            rnnlab("embeddings", "train", pangram_file, "--out", out, flag, "0"), f"{flag} must"
        )
    assert not out.exists()


def test_embeddings_written_over_their_own_input(rnnlab: Cli, pangram_file: Path):
    pytest.importorskip("gensim")
    corpus = pangram_file.read_text(encoding="utf-8")
    result = rnnlab("embeddings", "train", pangram_file, "--out", pangram_file, "--min-count", "1")
    assert pangram_file.read_text(encoding="utf-8") == corpus
    assert_user_error(result, str(pangram_file))


# ---------------------------------------------------------------------------------------------------
# tune


@pytest.fixture
def study(lm_run: Path, tmp_path: Path) -> Callable[[str], list[str]]:
    """``tune`` arguments for a search space of the given text over the tiny language model."""
    pytest.importorskip("optuna")

    def arguments(space: str) -> list[str]:
        path = tmp_path / "space.yaml"
        path.write_text(space, encoding="utf-8")
        return [
            "tune", "--config", str(lm_run / "config.yaml"), "--space", str(path),
            "--trials", "1", "--out", str(tmp_path / "study"),
            *sets(**{"train.max_steps": 1, "model.hidden_size": 8}),
        ]  # fmt: skip

    return arguments


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ("train.lr: {type: float, low: 0.001\n", "space.yaml:2: invalid YAML"),
        ("- train.lr\n", "space.yaml: expected a mapping"),
        ("train.lrr: {type: float, low: 0.001, high: 0.01}\n", "did you mean train.lr?"),
        ("train.lr: {type: int, low: 1, high: 2}\n", "space.yaml: train.lr: train.lr is not a"),
        ("train.lr: {type: float, low: 0.1, high: 0.01}\n", "low 0.1 is above high 0.01"),
        ("model.cell: {type: categorical, choices: [gru, xyz]}\n", "'xyz' is not one of"),
        ("", "space.yaml: the search space is empty"),
        ("train: {type: float, low: 0.001, high: 0.01}\n", "unknown config key train"),
    ],
)
def test_malformed_search_space_stops_before_any_trial(
    rnnlab: Cli, study: Callable[[str], list[str]], tmp_path: Path, space: str, fragment: str
):
    assert_user_error(rnnlab(*study(space)), fragment)
    assert not (tmp_path / "study").exists()


def test_tune_arguments(rnnlab: Cli, study: Callable[[str], list[str]], tmp_path: Path):
    argv = study("train.lr: {type: float, low: 0.001, high: 0.01}\n")
    assert_user_error(rnnlab(*argv, "--trials", "0"), "--trials must be at least 1, got 0")
    assert_user_error(rnnlab(*argv, "--set", "bogus"), "override 'bogus' is not of the form")
    assert_user_error(rnnlab("tune", "--out", tmp_path), "tune needs --config, --space, --trials")
    assert_user_error(rnnlab("tune", "--report", "--out", tmp_path / "no"), "no study here")
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize(
    "space",
    [
        "train.lr: {type: float, low: 0.001, high: 0.01, step: 0}\n",
        "model.hidden_size: {type: int, low: 8, high: 16, step: 0}\n",
    ],
)
def test_search_space_range_optuna_refuses(
    rnnlab: Cli, study: Callable[[str], list[str]], space: str
):
    assert_user_error(rnnlab(*study(space)), "space.yaml")


@pytest.mark.parametrize("mistake", ["out_is_a_file", "startup_trials", "empty_db", "garbage_db"])
def test_study_folder_and_pruner_mistakes(
    rnnlab: Cli, study: Callable[[str], list[str]], tmp_path: Path, mistake: str
):
    argv = study("train.lr: {type: float, low: 0.001, high: 0.01}\n")
    out = tmp_path / "study"
    if mistake == "out_is_a_file":
        out.write_text("keep\n", encoding="utf-8")
        result = rnnlab(*argv)
    elif mistake == "startup_trials":
        result = rnnlab(*argv, "--startup-trials", "-1")
        assert_user_error(result, "--startup-trials must be 0 or more, got -1")
        return
    else:
        out.mkdir()
        (out / "study.db").write_bytes(b"" if mistake == "empty_db" else b"not a database\n")
        result = rnnlab("tune", "--report", "--out", out)
    assert_user_error(result, str(out))


# ---------------------------------------------------------------------------------------------------
# train --resume and --out


def test_train_out_and_config_mistakes(rnnlab: Cli, tmp_path: Path, pangram_file: Path):
    args = tiny_lm_args(pangram_file)
    a_file = tmp_path / "a_file"
    a_file.write_text("keep\n", encoding="utf-8")
    assert_user_error(rnnlab("train", "lm", "--out", a_file, *args), f"{a_file}: cannot write")
    assert_user_error(rnnlab("train", "lm", "--out", a_file / "run", *args), "a_file/run")
    assert a_file.read_text(encoding="utf-8") == "keep\n"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("keep\n", encoding="utf-8")
    assert_user_error(
        rnnlab("train", "lm", "--out", mine, "--overwrite", *args),
        f"{mine}: refusing to overwrite a directory that is not an rnnlab run",
    )
    assert (mine / "keep.txt").is_file()
    run = tmp_path / "run"
    assert_user_error(rnnlab("train", "lm", "--out", run, "--config", tmp_path), "Is a directory")
    assert_user_error(rnnlab("train", "lm", "--out", run, "--config", a_file), "a_file: expected")
    assert_user_error(rnnlab("train", "bogus", "--out", run), "unknown task 'bogus'")
    assert_user_error(rnnlab("train", "lm"), "train needs a TASK and --out RUN")
    assert_user_error(
        rnnlab("train", "lm", "--out", run, *tiny_lm_args(tmp_path)), "is a directory"
    )


@pytest.mark.parametrize("damage", ["no_last", "garbage_state", "other_size"])
def test_resume_of_a_run_without_a_usable_checkpoint(
    rnnlab: Cli, lm_run: Path, tmp_path: Path, damage: str
):
    run = copy_run(lm_run, tmp_path / "run")
    overrides: list[str] = []
    if damage == "no_last":
        shutil.rmtree(run / "last")
    elif damage == "garbage_state":
        (run / "last" / "trainer_state.safetensors").write_bytes(b"\x80\x04garbage")
    else:
        overrides = ["--set", "model.hidden_size=8"]
    assert_user_error(rnnlab("train", "--resume", run, *overrides), f"{run}")


def test_resume_with_an_out_folder_too(rnnlab: Cli, lm_run: Path, tmp_path: Path):
    run = copy_run(lm_run, tmp_path / "run")
    result = rnnlab("train", "lm", "--resume", run, "--out", tmp_path / "new")
    assert_user_error(result, "--out")


def test_overwrite_with_missing_data_keeps_the_old_run(rnnlab: Cli, lm_run: Path, tmp_path: Path):
    run = copy_run(lm_run, tmp_path / "run")
    missing = tmp_path / "missing.txt"
    before = {f.relative_to(run): f.read_bytes() for f in run.rglob("*") if f.is_file()}
    result = rnnlab("train", "lm", "--out", run, "--overwrite", *tiny_lm_args(missing))
    assert_user_error(result, f"{missing}: no such file")
    after = {f.relative_to(run): f.read_bytes() for f in run.rglob("*") if f.is_file()}
    assert after.keys() - {Path(".lock")} == before.keys() - {Path(".lock")}
    assert all(after[name] == data for name, data in before.items() if name != Path(".lock"))
