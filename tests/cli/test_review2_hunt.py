"""Console output through ``ConsoleReporter.output``, bars as context managers, ``notice()``
through the reporter, the same-language config check, old run directories and exports, and the
server's trailing-slash 404.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import shutil
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest
import yaml

from rnnlab.cli.console import ConsoleReporter, notice
from rnnlab.config import load_config
from rnnlab.errors import RnnlabError
from rnnlab.tasks import TASKS
from tests.cli_runner import call_main
from tests.terminal import FakeTerminal, screen

REPO = Path(__file__).resolve().parents[2]
EWT_DEV = REPO / "data" / "ud-ewt-sample" / "dev.conllu"
SYMBOLS = ["a", "b", "c", "d", "e", "f", "g", "h"]


# -- helpers ----------------------------------------------------------------------------------


def cli(monkeypatch, *argv: object, stdin: bytes = b"", stderr=None, stdout=None):
    """``rnnlab ARGV`` in this process; returns (code, stdout text, stderr text)."""
    out = stdout if stdout is not None else io.StringIO()
    err = stderr if stderr is not None else io.StringIO()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setattr("sys.stderr", err)
    try:
        code = call_main(*argv)
    finally:
        monkeypatch.undo()
    return code, out.getvalue(), err.getvalue()


def symbol_lines(n: int, seed: int = 0) -> list[str]:
    import random

    rng = random.Random(seed)
    return [" ".join(rng.choice(SYMBOLS) for _ in range(rng.randint(2, 5))) for _ in range(n)]


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", COLUMNS="100", LINES="24")
    src = str(REPO / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def translate_one(run: Path, line: str) -> str:
    """``rnnlab translate RUN`` of one line, in this process: the reference for a subprocess."""
    with pytest.MonkeyPatch.context() as patch:
        code, out, err = cli(patch, "translate", run, stdin=f"{line}\n".encode())
    assert (code, err) == (0, "")
    return out


def run_into_closed_pipe(argv: list[str], stdin: bytes, *, stderr_on_pty: bool):
    """``rnnlab ARGV | head -1``: the first stdout line, then the reader goes away.

    Returns (exit status, first line, what stderr showed)."""
    master = slave = None
    if stderr_on_pty:
        master, slave = pty.openpty()
        # 24 rows of 100 columns: a new pty is 0 × 0, where tqdm draws an empty bar.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
        stderr = slave
    else:
        stderr = subprocess.PIPE
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=_env(),
    )
    if slave is not None:
        os.close(slave)
    seen = bytearray()

    def feed() -> None:
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except (BrokenPipeError, ValueError):
            pass

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            seen.extend(chunk)

    threads = [threading.Thread(target=feed, daemon=True)]
    if master is not None:
        threads.append(threading.Thread(target=read_terminal, daemon=True))
    for thread in threads:
        thread.start()
    first = proc.stdout.readline()
    proc.stdout.close()  # head -1 exits
    err = b"" if master is not None else proc.stderr.read()
    code = proc.wait(timeout=120)
    for thread in threads:
        thread.join(timeout=10)
    if master is not None:
        os.close(master)
        err = bytes(seen)
    return code, first.decode(), err.decode("utf-8", "replace")


# -- configs ----------------------------------------------------------------------------------


CONFIGS = sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name in TASKS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_config_still_loads(path: Path):
    config = load_config(TASKS[path.parent.name].config_class, path)
    assert config.task == path.parent.name


def test_the_demo_config_and_the_seq2seq_defaults_load_with_two_languages():
    cls = TASKS["seq2seq"].config_class
    demo = load_config(cls, REPO / "configs" / "seq2seq" / "fra-eng.yaml")  # `make demo`
    default = load_config(cls)
    for config in (demo, default):
        assert config.data.src_lang != config.data.tgt_lang
        assert len(set(config.data.tsv_langs)) == len(config.data.tsv_langs)


@pytest.fixture(scope="module")
def old_autoencoder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seq2seq run trained before ``src_lang == tgt_lang`` was refused: a sequence autoencoder
    over aligned files, ``PREFIX.en`` on both sides (the check is switched off while it trains,
    as the code before the change had none)."""
    from rnnlab.tasks import seq2seq_config

    root = tmp_path_factory.mktemp("autoencoder")
    (root / "corpus.en").write_text("\n".join(symbol_lines(200)) + "\n", encoding="utf-8")

    settings = {
        "data.train": root / "corpus",
        "data.valid": "",
        "data.format": "aligned",
        "data.src_lang": "en",
        "data.tgt_lang": "en",
        "data.min_freq": 1,
        "model.embed_size": 8,
        "model.hidden_size": 8,
        "model.num_layers": 1,
        "train.max_steps": 2,
        "train.num_threads": 1,
        "train.device": "cpu",
    }
    args = [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(seq2seq_config.Seq2SeqConfig, "check_new_run", lambda self: None)
        assert call_main("train", "seq2seq", "--out", root / "run", *args) == 0
    return root


def test_a_run_saved_before_the_same_language_check_still_evaluates_and_resumes(
    monkeypatch, old_autoencoder_run: Path
):
    run = old_autoencoder_run / "run"
    code, out, err = cli(monkeypatch, "evaluate", run, "--data", old_autoencoder_run / "corpus")
    assert (code, err) == (0, ""), err
    assert "bleu" in out
    code, out, err = cli(monkeypatch, "translate", run, stdin=b"a b c\n")
    assert code == 0, err
    assert len(out.splitlines()) == 1
    code, _, err = cli(monkeypatch, "train", "--resume", run, "--set", "train.max_steps=3")
    assert code == 0, err


def test_a_seq2seq_run_saved_without_tsv_langs_resumes_with_the_default(tmp_path: Path):
    from rnnlab.config import from_dict, to_dict
    from rnnlab.rundir import read_run_config, refuse_vocabulary_changes

    run = tmp_path / "run"
    run.mkdir()
    data = to_dict(from_dict(TASKS["seq2seq"].config_class, {"task": "seq2seq"}))
    del data["data"]["tsv_langs"]  # a config.yaml written before the key existed
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    refuse_vocabulary_changes(run, read_run_config(run))
    refuse_vocabulary_changes(run, read_run_config(run, ["data.tsv_langs=[en, fr]"]))
    with pytest.raises(RnnlabError, match="tsv_langs"):
        refuse_vocabulary_changes(run, read_run_config(run, ["data.tsv_langs=[fr, en]"]))


def test_run_curves_names_an_unreadable_metrics_log_in_one_line(tmp_path: Path):
    from rnnlab.config import from_dict, to_dict
    from rnnlab.rundir import run_curves

    run = tmp_path / "run"
    run.mkdir()
    data = to_dict(from_dict(TASKS["lm"].config_class, {"task": "lm"}))
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    (run / "metrics.jsonl").mkdir()  # a directory where the log should be
    with pytest.raises(RnnlabError) as caught:
        run_curves(run)
    assert "metrics.jsonl" in str(caught.value) and "\n" not in str(caught.value)


# -- console: pipes, terminals, notices ------------------------------------------------------


def test_translate_into_a_closed_pipe_exits_quietly(translator_run: Path):
    lines = symbol_lines(12000, seed=3)  # three blocks of 4,096: the pipe closes after the first
    code, first, err = run_into_closed_pipe(
        ["translate", str(translator_run)],
        "".join(f"{s}\n" for s in lines).encode(),
        stderr_on_pty=False,
    )
    assert first == translate_one(translator_run, lines[0])
    assert (code, err) == (0, "")


def test_translate_into_a_closed_pipe_with_a_bar_on_the_terminal_exits_quietly(
    translator_run: Path,
):
    lines = symbol_lines(12000, seed=4)
    code, first, err = run_into_closed_pipe(
        ["translate", str(translator_run)],
        "".join(f"{s}\n" for s in lines).encode(),
        stderr_on_pty=True,
    )
    assert first == translate_one(translator_run, lines[0])
    assert code == 0
    assert "translating" in err  # the bar was on the terminal
    assert screen(err) == []  # and nothing is left there: no bar, no traceback


def test_translations_on_a_pipe_are_the_same_with_a_bar_on_the_terminal(
    monkeypatch, translator_run: Path
):
    lines = symbol_lines(300, seed=5)
    stdin = "".join(f"{s}\n" for s in [*lines[:150], "", *lines[150:]]).encode()
    plain = cli(monkeypatch, "translate", translator_run, "--n-best", "2", stdin=stdin)
    terminal = FakeTerminal()
    barred = cli(
        monkeypatch, "translate", translator_run, "--n-best", "2", stdin=stdin, stderr=terminal
    )
    assert plain[0] == barred[0] == 0
    assert plain[2] == ""
    assert barred[1] == plain[1]  # stdout byte for byte
    assert "\r" not in barred[1] and "translating" not in barred[1]
    assert "translating" in barred[2] and screen(barred[2]) == []  # bar cleared at the end


def test_conllu_output_keeps_every_input_byte_but_the_tag_column(monkeypatch, tagger_run: Path):
    from rnnlab.inference import Tagger, load_as

    source = EWT_DEV.read_text(encoding="utf-8")
    code, out, err = cli(
        monkeypatch, "tag", tagger_run, "--format", "conllu", stdin=source.encode()
    )
    assert (code, err) == (0, "")
    tagger = load_as(Tagger, tagger_run, command="tag", device="cpu")
    column = {"upos": 3, "xpos": 4}[tagger.tag_column]
    sentences: list[list[str]] = [[]]
    for line in source.splitlines():
        if not line:
            sentences.append([])
        elif not line.startswith("#"):
            fields = line.split("\t")
            if fields[0].isdigit():
                sentences[-1].append(fields[1])
    tags = iter(t for r in tagger.tag([s for s in sentences if s]) for t in r.tags)
    expected = []
    for line in source.splitlines(keepends=True):
        fields = line.rstrip("\n").split("\t")
        if len(fields) == 10 and fields[0].isdigit():
            fields[column] = next(tags)
            line = "\t".join(fields) + "\n"
        expected.append(line)
    assert out == "".join(expected)
    # On a terminal (stdout and stderr on one screen) the same lines, none glued to the bar.
    terminal = FakeTerminal()
    code, _, _ = cli(
        monkeypatch,
        "tag",
        tagger_run,
        "--format",
        "conllu",
        stdin=source.encode(),
        stdout=terminal,
        stderr=terminal,
    )
    assert code == 0
    assert screen(terminal.getvalue()) == [line for line in out.splitlines() if line]


def test_evaluating_a_tagger_draws_no_decoding_bar(monkeypatch, tagger_run: Path):
    terminal = FakeTerminal()
    code, out, err = cli(monkeypatch, "evaluate", tagger_run, "--data", EWT_DEV, stderr=terminal)
    assert code == 0
    assert out.startswith("accuracy\t")
    assert "decoding" not in err


def test_notice_before_any_bar_is_one_stderr_line(capsys):
    notice("line 3 was cut")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "rnnlab: notice: line 3 was cut\n"


def test_notice_on_a_terminal_with_a_live_bar_is_a_line_of_its_own(monkeypatch):
    terminal = FakeTerminal()
    monkeypatch.setattr("sys.stderr", terminal)
    notice("before any bar")
    with ConsoleReporter().progress(0, "translating") as bar:
        bar.update(7)
        notice("during the bar")
        bar.update(3)
    monkeypatch.undo()
    assert screen(terminal.getvalue()) == [
        "rnnlab: notice: before any bar",
        "rnnlab: notice: during the bar",
    ]


def test_an_attention_plot_message_goes_to_stderr_after_the_translations(
    monkeypatch, translator_run: Path, tmp_path: Path
):
    plot = tmp_path / "attention.png"
    code, out, err = cli(
        monkeypatch,
        "translate",
        translator_run,
        "--attention-plot",
        plot,
        stdin=b"a b c\nd e\n",
    )
    assert code == 0
    plain = cli(monkeypatch, "translate", translator_run, stdin=b"a b c\nd e\n")
    assert out == plain[1] and len(out.splitlines()) == 2
    assert err == f"attention plot written to {plot}\n"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- exports ----------------------------------------------------------------------------------


def test_an_export_whose_manifest_predates_the_new_fields_translates_the_same(
    translator_run: Path, tmp_path: Path
):
    from rnnlab.export.loading import open_export
    from rnnlab.export.onnx import export_run
    from rnnlab.rundir import open_run

    run = open_run(translator_run, device="cpu")
    new = export_run(run.task, run.model, tmp_path / "new")
    old = tmp_path / "old"
    shutil.copytree(new, old)
    manifest_path = old / "rnnlab-export.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    for key in ("num_steps",):
        manifest["tokenizer"].pop(key, None)
    for key in ("batch_tokens", "beam_stop"):
        manifest["decode"].pop(key, None)
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")  # not covered by sha256
    sources = symbol_lines(20, seed=9)
    got_new = [t.line() for t in open_export(new).translate(sources)]
    got_old = [t.line() for t in open_export(old).translate(sources)]
    assert got_old == got_new
    assert (
        sum(g == " ".join(reversed(s.split())) for g, s in zip(got_new, sources, strict=True)) >= 15
    )
