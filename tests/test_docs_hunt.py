"""What the documentation promises a user who copies from it, checked against what rnnlab does.

The references are independent of rnnlab's own output:

- the documents themselves (README.md, docs/*.md, the comments at the top of configs/*/*.yaml, the
  user-facing commands of benchmarks/README.md, the Makefile's recipes), read by a small extractor
  here: fenced ``bash``/``python`` blocks, ``rnnlab …`` command lines, backticked config keys, the
  allowed values and defaults the README's tables and prose give;
- argparse through the real entry point (``rnnlab.cli.main`` in process, the ``rnnlab`` console
  script and ``python -m rnnlab`` as subprocesses);
- the strict typed config dataclasses (``rnnlab.rundir.load_task_config``): every documented key and
  value must be accepted for its task;
- file formats and tools outside rnnlab: the safetensors header layout, PNG and pickle magic bytes,
  sha256 from hashlib, CoNLL-U columns, word2vec text, sacreBLEU's own signature, the d2l BLEU
  formula, the UD UPOS tag set.

Three tiny runs (one per task, a few steps on the bundled data/ folder) serve every run test.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import gzip
import hashlib
import io
import json
import math
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import typing
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from rnnlab.cli import main
from rnnlab.cli.parser import build_parser
from rnnlab.config import read_yaml
from rnnlab.rundir import load_task_config, task_class
from tests.cli_runner import call_main, run_cli
from tests.textbook_reference import textbook_bleu

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
CONFIGS = sorted(p for p in (REPO / "configs").glob("*/*.yaml") if p.parent.name != "spaces")
SPACES = sorted((REPO / "configs" / "spaces").glob("*.yaml"))
BENCH_README = REPO / "benchmarks" / "README.md"
MAKEFILE = REPO / "Makefile"
TASKS = ("seq2seq", "lm", "tagger")
EWT = REPO / "data" / "ud-ewt-sample"
UPOS = {  # Universal Dependencies v2: the 17 universal POS tags
    *("ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON"),
    *("PROPN", "PUNCT", "SCONJ", "SYM", "VERB", "X"),
}
KEY = r"(?:data|model|train|decode)\.[a-z_]+"
FILE_SUFFIX = r"(?:txt|tsv|conllu|en|gz|yaml|json|py|md|safetensors)\b"  # train.txt is a file


# --------------------------------------------------------------------------------------------------
# The extractor: commands, snippets and keys as the documents give them


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def fenced_blocks(path: Path, langs: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line of the opening fence, body) of every fenced block whose language is in ``langs``."""
    blocks, lines = [], path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if m:
            j = i + 1
            while not lines[j].strip().startswith("```"):
                j += 1
            if m.group(1) in langs:
                blocks.append((i + 1, "\n".join(lines[i + 1 : j])))
            i = j
        i += 1
    return blocks


def joined_lines(text: str, first_line: int) -> list[tuple[int, str]]:
    """Shell lines with backslash continuations joined, each with its first line number."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for k, line in enumerate(text.splitlines()):
        if not pending:
            start = first_line + k
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    return out


def rnnlab_argvs(line: str) -> list[list[str]]:
    """The argument lists of every ``rnnlab`` (or ``-m rnnlab``) invocation on a shell line."""
    if not re.search(r"(^\s*|[|;&]\s*|\bdo\s+|-m\s+)rnnlab\s", line):
        return []
    line = re.sub(r"\[(--[^\]]*)\]", r"\1", line)  # [--quantize int8]: an optional part, kept
    line = re.sub(r"\$\{?(\w+)\}?", "1", line)  # $seed of a for loop
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    lex.commenters = "#"
    tokens = list(lex)
    segments: list[list[str]] = [[]]
    skip_next = False
    for tok in tokens:
        if skip_next:
            skip_next = False
        elif tok in ("|", ";", "&", "&&", "||"):
            segments.append([])
        elif tok in ("<", ">", ">>"):
            skip_next = True
        else:
            segments[-1].append(tok)
    found = []
    for seg in segments:
        while seg and seg[0] in ("do", "then", "time"):
            seg = seg[1:]
        if seg and seg[0] == "rnnlab":
            found.append(seg[1:])
        elif (
            "-m" in seg and seg.index("-m") + 1 < len(seg) and seg[seg.index("-m") + 1] == "rnnlab"
        ):
            found.append(seg[seg.index("-m") + 2 :])
    return found


def config_comment(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the comment lines of a config file, ``#`` removed."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("#"):
            out.append((n, line[1:]))
    return out


def config_comment_commands(path: Path) -> list[tuple[int, str]]:
    """Commands in a config's comments: indented ``rnnlab …`` lines (continued with ``\\``) and
    ``(rnnlab …)`` in parentheses, which may run over two lines."""
    comment = config_comment(path)
    found: list[tuple[int, str]] = []
    flat = " ".join(text.strip() for _, text in comment)
    for m in re.finditer(r"\((rnnlab [^)]*)\)", flat):
        if " --" in m.group(1):  # a command, not prose such as "(rnnlab tag and evaluate …)"
            found.append((comment[0][0], m.group(1)))
    pending, start = "", 0
    for n, text in comment:
        body = text.strip()
        if pending:
            pending += " " + body
        elif body.startswith("rnnlab ") and not text.startswith(" ("):
            pending, start = body, n
        else:
            continue
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        found.append((start, pending))
        pending = ""
    return found


def makefile_commands() -> list[tuple[int, str]]:
    lines = MAKEFILE.read_text(encoding="utf-8").splitlines()
    text = "\n".join(lines)
    out = []
    for n, line in joined_lines(text, 1):
        if "$(BIN)/rnnlab" in line:
            out.append((n, line.replace("$(BIN)/rnnlab", "rnnlab").strip()))
    return out


def doc_commands() -> list[tuple[str, list[str]]]:
    """(``FILE:LINE``, argv) of every rnnlab command the documents give in full."""
    found: list[tuple[str, list[str]]] = []
    for path in [README, *DOCS, BENCH_README]:
        for first, body in fenced_blocks(path, ("bash", "sh", "")):
            for n, line in joined_lines(body, first + 1):
                for argv in rnnlab_argvs(line):
                    found.append((f"{rel(path)}:{n}", argv))
    for path in [*CONFIGS, *SPACES]:
        for n, line in config_comment_commands(path):
            for argv in rnnlab_argvs(line):
                found.append((f"{rel(path)}:{n}", argv))
    for n, line in makefile_commands():
        for argv in rnnlab_argvs(line):
            found.append((f"Makefile:{n}", argv))
    return found


DOC_COMMANDS = doc_commands()


def option(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def sets(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]


def parse(argv: list[str]) -> Any:
    """argparse's reading of ``rnnlab ARGV``; a refusal fails the test with argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"argparse refused rnnlab {shlex.join(argv)} ({exc.code}): {err.getvalue()}")


def subparsers() -> dict[str, Any]:
    parser = build_parser()
    [action] = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    subs = dict(action.choices)
    [emb] = [a for a in subs["embeddings"]._actions if a.__class__.__name__ == "_SubParsersAction"]
    subs["embeddings train"] = emb.choices["train"]
    return subs


def schema(cls: type, prefix: str = "") -> dict[str, Any]:
    """Every dotted key of a config dataclass, with its annotation."""
    out: dict[str, Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            out.update(schema(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


SCHEMAS = {t: schema(task_class(t).config_class) for t in TASKS}


def default(task: str, key: str) -> Any:
    node: Any = task_class(task).config_class()
    for part in key.split("."):
        node = getattr(node, part)
    return node


def literal_values(task: str, key: str) -> set[str]:
    return {str(v) for v in get_args(SCHEMAS[task][key])}


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


# --------------------------------------------------------------------------------------------------
# Commands in the documents: argparse, the config schema, the files they name


def test_extractor_finds_every_subcommand() -> None:
    used = {argv[0] for _, argv in DOC_COMMANDS if argv}
    assert len(DOC_COMMANDS) >= 40, DOC_COMMANDS
    assert set(subparsers()) - {"embeddings train"} <= used


@pytest.mark.parametrize(
    ("where", "argv"), DOC_COMMANDS, ids=[f"{w}:{a[0]}" for w, a in DOC_COMMANDS]
)
def test_documented_command_parses(where: str, argv: list[str]) -> None:
    args = parse(argv)
    assert args.command == argv[0]


TRAIN_COMMANDS = [
    (w, a) for w, a in DOC_COMMANDS if a[0] == "train" and "--resume" not in a and len(a) > 1
]


@pytest.mark.parametrize(("where", "argv"), TRAIN_COMMANDS, ids=[w for w, _ in TRAIN_COMMANDS])
def test_documented_train_command_config_loads(
    where: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The task, its --config and every --set of the command make a valid config for that task."""
    monkeypatch.chdir(REPO)
    args = parse(argv)
    config = load_task_config(args.task, args.config, args.set)
    assert config.task == args.task
    for item in args.set:  # each override took effect
        key, value = item.split("=", 1)
        node = config
        for part in key.split("."):
            node = getattr(node, part)
        assert node == yaml.safe_load(value) or node == value, (item, node)


TUNE_COMMANDS = [(w, a) for w, a in DOC_COMMANDS if a[0] == "tune" and "--space" in a]


@pytest.mark.parametrize(("where", "argv"), TUNE_COMMANDS, ids=[w for w, _ in TUNE_COMMANDS])
def test_documented_tune_command_plans(
    where: str, argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rnnlab.tuning.study import plan_study

    monkeypatch.chdir(REPO)
    args = parse(argv)
    plan = plan_study(args.config, args.space, args.set)
    assert plan.task_name == read_yaml(REPO / args.config)["task"]
    assert {p.key for p in plan.space} == set(read_yaml(REPO / args.space))


def test_documented_config_and_space_files_exist() -> None:
    named = {(w, option(a, f)) for w, a in DOC_COMMANDS for f in ("--config", "--space")}
    named = {(w, p) for w, p in named if p}
    assert named
    for where, path in named:
        assert (REPO / path).is_file(), f"{where}: {path}"


def test_repository_paths_the_readme_names_exist() -> None:
    text = README.read_text(encoding="utf-8") + "".join(p.read_text() for p in DOCS)
    text = re.sub(r"\.\./shared/\S+", "", text)  # corpora not bundled, said so
    paths = set(re.findall(r"\b((?:configs|data|benchmarks|scripts|docs)/[\w./{},-]*\w)", text))
    expanded = set()
    for p in paths:
        m = re.match(r"(.*)\{(.*)\}(.*)", p)
        expanded |= {m.group(1) + x + m.group(3) for x in m.group(2).split(",")} if m else {p}
    expanded -= {"benchmarks/results"}  # an output folder: "write JSON to benchmarks/results/"
    assert len(expanded) > 20
    missing = sorted(p for p in expanded if not (REPO / p).exists())
    assert not missing


def test_inline_flags_exist_for_their_subcommand() -> None:
    """Flags in backticked ``rnnlab SUB …`` fragments of the prose are options of SUB, and every
    backticked ``--flag`` of the README is an option of some command."""
    subs = subparsers()
    options = {name: set(p._option_string_actions) for name, p in subs.items()}
    text = README.read_text(encoding="utf-8") + BENCH_README.read_text(encoding="utf-8")
    checked = 0
    for fragment in re.findall(r"`(rnnlab [a-z]+[^`]*)`", text.replace("\n", " ")):
        words = fragment.split()
        sub = "embeddings train" if words[1:3] == ["embeddings", "train"] else words[1]
        if sub not in subs:  # `rnnlab translate|tag|generate|evaluate DIR`
            continue
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", fragment):
            assert flag in options[sub], (fragment, flag)
            checked += 1
    assert checked >= 5
    every = set().union(*options.values())
    readme_flags = set(re.findall(r"`(--[a-z][a-z-]*)", README.read_text(encoding="utf-8")))
    assert len(readme_flags) >= 10
    assert sorted(readme_flags - every) == []


def test_every_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ["", *subparsers()]:
        argv = [*name.split(), "--help"]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        out = capsys.readouterr().out
        assert exc.value.code == 0, name
        assert out.startswith(f"usage: rnnlab {name}".rstrip()), out[:80]


def test_console_script_and_module_entry_points() -> None:
    """``rnnlab --help`` (the console script) and ``python -m rnnlab`` (what torchrun runs)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = Path(sys.executable).with_name("rnnlab")
    commands = {
        "usage: rnnlab [-h]": [str(script), "--help"],
        "usage: rnnlab train": [sys.executable, "-m", "rnnlab", "train", "--help"],
    }
    for usage, cmd in commands.items():
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd="/")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(usage), done.stdout[:200]
        for name in subparsers() if usage.endswith("[-h]") else ["--resume", "--nproc", "--set"]:
            assert name.split()[0] in done.stdout


def test_nproc_relaunch_is_the_documented_torchrun_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/distributed.md: ``rnnlab train … --nproc 4`` "is the same as" its torchrun line."""
    import torch.distributed.run

    first, body = fenced_blocks(REPO / "docs" / "distributed.md", ("bash",))[0]
    lines = joined_lines(body, first)
    ours = next(line for _, line in lines if "--nproc" in line)
    theirs = next(line for _, line in lines if line.startswith("torchrun"))
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    seen: list[list[str]] = []
    monkeypatch.setattr(torch.distributed.run, "main", lambda argv: seen.append(list(argv)))
    assert main(shlex.split(ours)[1:]) == 0
    assert seen == [shlex.split(theirs)[1:]]


# --------------------------------------------------------------------------------------------------
# Config keys and values the documents name


def test_every_config_loads_as_its_task() -> None:
    from rnnlab.tuning.space import load_space

    for path in CONFIGS:
        task = read_yaml(path)["task"]
        config = load_task_config(task, path)
        assert type(config) is task_class(task).config_class
    for path in SPACES:  # lm-…, seq2seq-…, tagger-…
        assert load_space(path, task_class(path.stem.split("-")[0]).config_class)


def test_backticked_keys_exist_in_some_task() -> None:
    text = README.read_text(encoding="utf-8") + "".join(p.read_text() for p in DOCS)
    keys = set(re.findall(rf"`({KEY})`", text))
    assert len(keys) > 60
    every = set().union(*SCHEMAS.values())
    assert sorted(keys - every) == []


def test_config_comment_keys_and_values_load() -> None:
    """``key`` and ``key: value`` and ``--set key=value`` in a config's comments: the key exists for
    that config's task and the value is accepted there."""
    checked = 0
    for path in [*CONFIGS, *SPACES]:
        text = " ".join(t for _, t in config_comment(path))
        spaces = path.parent.name == "spaces"
        task = path.stem.split("-")[0] if spaces else read_yaml(path)["task"]
        base = None if spaces else path
        prose_key = rf"(?<![\w/.-])(?!\w+\.{FILE_SUFFIX})({KEY})(?![\w/.])(?::\s*([\w.]+))?"
        for key, value in re.findall(prose_key, text):
            assert key in SCHEMAS[task], (rel(path), key)
            if value:
                load_task_config(task, base, [f"{key}={value}"])
            checked += 1
        for key, value in re.findall(rf"--set[ =]({KEY})=([^\s,)]+)", text):
            assert key in SCHEMAS[task], (rel(path), key)
            load_task_config(task, base, [f"{key}={value}"])
            checked += 1
    assert checked > 15


def readme_task_parts() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    para = section(text, "Task sections add their own keys:", "A config file's keys are checked")
    lm_at = para.index("lm `data.tokenizer`")
    tagger_at = para.index("tagger `data.tag_column`")
    return {"seq2seq": para[:lm_at], "lm": para[lm_at:tagger_at], "tagger": para[tagger_at:]}


@pytest.mark.parametrize("task", TASKS)
def test_task_section_keys_exist_for_that_task(task: str) -> None:
    part = readme_task_parts()[task]
    keys = set(re.findall(rf"`({KEY})`", part))
    assert len(keys) >= 8
    assert sorted(k for k in keys if k not in SCHEMAS[task]) == []


def documented_values() -> list[tuple[str, str, set[str]]]:
    """(task, key, values) where the README lists a key's values: ``key`` (`a`/`b`/`c` …) or
    ``key`` (`a`: …; `b`: …; `c`)."""
    found = []
    for task, part in readme_task_parts().items():
        flat = part.replace("\n", " ")
        for m in re.finditer(rf"`({KEY})` \(((?:`\w+`/)+`\w+`)", flat):
            found.append((task, m.group(1), set(re.findall(r"`(\w+)`", m.group(2)))))
        for m in re.finditer(rf"`({KEY})` \(`(\w+)`: [^;]*; `(\w+)`: [^;)]*(?:; `(\w+)`)?\)", flat):
            found.append((task, m.group(1), {v for v in m.groups()[1:] if v}))
        for m in re.finditer(rf"`({KEY})` \(`(\w+)`, or `(\w+)`:", flat):
            found.append((task, m.group(1), {m.group(2), m.group(3)}))
    text = README.read_text(encoding="utf-8")
    bullets = section(text, "- `model.cell`:", "Variable-length batches").replace("\n", " ")
    cell, impl = bullets.split("- `model.rnn_impl`:")
    table = section(text, "| `train.precision` |", "\n| `train.ema_decay`")
    schedule = re.search(
        r"`train\.lr_schedule`, `train\.warmup_steps` \| `(\w+)`.*?\| `(\w+)`/`(\w+)`:", text
    )
    found.append(("lm", "train.lr_schedule", set(schedule.groups())))  # type: ignore[union-attr]
    sampling = re.search(r"`train\.scheduled_sampling: ([\w|]+)`", text)
    kinds = set(sampling.group(1).split("|"))  # type: ignore[union-attr]
    found.append(("seq2seq", "train.scheduled_sampling", kinds))
    for task in TASKS:
        found.append((task, "model.cell", set(re.findall(r"`([a-z_]+)`", cell.split(";")[0]))))
        found.append(
            (task, "model.rnn_impl", {"fused", "scratch"} & set(re.findall(r"`(\w+)`", impl)))
        )
        found.append((task, "train.precision", set(re.findall(r"`(fp32|bf16|auto)`", table))))
    return found


DOCUMENTED_VALUES = documented_values()


def test_documented_value_lists_were_found() -> None:
    keys = {(t, k) for t, k, _ in DOCUMENTED_VALUES}
    expected = {
        ("seq2seq", "data.preprocess"),
        ("seq2seq", "data.tokenizer"),
        ("seq2seq", "decode.beam_stop"),
        ("seq2seq", "decode.precision"),
        ("lm", "data.tokenizer"),
        ("lm", "data.batching"),
        ("lm", "model.softmax"),
        ("tagger", "model.cell"),
        ("lm", "train.precision"),
        ("lm", "train.lr_schedule"),
        ("seq2seq", "train.scheduled_sampling"),
    }
    assert expected <= keys


@pytest.mark.parametrize(
    ("task", "key", "values"),
    DOCUMENTED_VALUES,
    ids=[f"{t}:{k}" for t, k, _ in DOCUMENTED_VALUES],
)
def test_documented_values_are_exactly_the_accepted_ones(
    task: str, key: str, values: set[str]
) -> None:
    assert literal_values(task, key) == values
    for value in values:
        extra = []  # a schedule comes "with `train.ss_k`", in its documented range
        if key == "train.scheduled_sampling" and value != "none":
            extra = [f"train.ss_k={0.5 if value == 'exponential' else 10}"]
        config = load_task_config(task, None, [f"{key}={value}", *extra])
        node: Any = config
        for part in key.split("."):
            node = getattr(node, part)
        assert node == value


def test_readme_numeric_defaults_in_prose() -> None:
    """Defaults the README's prose gives: cutoffs, lm_vocab_size, decode batches of each task."""
    text = README.read_text(encoding="utf-8").replace("\n", " ")
    assert "`model.cutoffs`, default `[2000, 6000]`" in text
    assert default("lm", "model.cutoffs") == [2000, 6000]
    assert "default 7,500" in text and default("tagger", "model.lm_vocab_size") == 7500
    assert "256 sentences and 4,096 words by default" in text
    assert (default("tagger", "decode.batch_size"), default("tagger", "decode.batch_tokens")) == (
        256,
        4096,
    )
    assert "`decode.batch_size` (512)" in text and "`decode.batch_tokens` (8,192)" in text
    assert (default("seq2seq", "decode.batch_size"), default("seq2seq", "decode.batch_tokens")) == (
        512,
        8192,
    )


def shared_table(task: str) -> list[tuple[str, Any]]:
    """(key, documented default for ``task``) from the README's table of keys shared by every task:
    a cell reads ``A, B (lm: C, D; tagger: E, F)``, the parenthesis naming the tasks that differ."""
    text = README.read_text(encoding="utf-8")
    table = section(text, "### Config keys shared by every task", "Task sections add")
    rows = []
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        keys = re.findall(r"`([\w.]+)`", cells[0])
        cell = cells[1]
        per_task = re.search(r"\((.*)\)$", cell)
        if per_task:
            cell = cell[: per_task.start()].strip()
            for part in per_task.group(1).split(";"):
                name, _, values = part.partition(":")
                if name.strip() == task:
                    cell = values
        defaults = [d.strip().strip("`") for d in cell.split(",")]
        if len(keys) != len(defaults):
            continue  # "bundled data"
        rows += [(k, yaml.safe_load(d)) for k, d in zip(keys, defaults, strict=True)]
    return rows


@pytest.mark.parametrize("task", ["seq2seq", "lm", "tagger"])
def test_shared_table_defaults_hold_for_every_task(task: str) -> None:
    rows = shared_table(task)
    assert len(rows) >= 25
    wrong = {k: (d, default(task, k)) for k, d in rows if default(task, k) != d}
    assert wrong == {}


def test_scheduled_sampling_k_ranges_as_documented() -> None:
    """ "exponential `max(min, k^step)` (0 < k < 1), inverse sigmoid … (k ≥ 1)"."""
    from rnnlab.errors import ConfigError

    text = README.read_text(encoding="utf-8").replace("\n", " ")
    assert "(0 < k < 1)" in text and "(k ≥ 1)" in text
    ok = {"exponential": [0.5, 0.999], "inverse_sigmoid": [1, 50], "linear": [1, 1000]}
    bad = {"exponential": [0, 1, 1.5], "inverse_sigmoid": [0.5], "linear": [0]}
    for kind, ks in ok.items():
        for k in ks:
            load_task_config(
                "seq2seq", None, [f"train.scheduled_sampling={kind}", f"train.ss_k={k}"]
            )
    for kind, ks in bad.items():
        for k in ks:
            with pytest.raises(ConfigError, match=r"train\.ss_k"):
                load_task_config(
                    "seq2seq", None, [f"train.scheduled_sampling={kind}", f"train.ss_k={k}"]
                )


def test_embeddings_table_keys_exist_for_the_tasks_named() -> None:
    text = README.read_text(encoding="utf-8")
    table = section(text, "| key | tasks | meaning |", "\n\n")
    rows = 0
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        keys = re.findall(rf"`({KEY})", cells[0])
        tasks = TASKS if cells[1] == "all" else [t.strip() for t in cells[1].split(",")]
        for task in tasks:
            have = [k for k in keys if k in SCHEMAS[task]]
            # "all": each task has the key or its per-side forms named in parentheses
            assert have if cells[1] == "all" else have == keys, (line, task)
        rows += 1
    assert rows == 5
    emb = subparsers()["embeddings train"]._option_string_actions
    assert set(emb["--algorithm"].choices) == set(
        re.search(r"`--algorithm (\w+)\|(\w+)`", text).groups()  # type: ignore[union-attr]
    )


def test_search_space_errors_as_documented(tmp_path: Path) -> None:
    """ "a key the task never reads (a language model's `data.max_len`), a field its type does not
    read, or a `high` that `low` plus whole steps does not reach is an error"."""
    from rnnlab.errors import ConfigError
    from rnnlab.tuning.space import load_space

    cls = task_class("lm").config_class
    for body in (
        "data.max_len: {type: int, low: 10, high: 20}\n",
        "train.lr: {type: float, low: 0.001, high: 0.01, choices: [1, 2]}\n",
        "model.hidden_size: {type: int, low: 128, high: 500, step: 64}\n",
    ):
        space = tmp_path / "space.yaml"
        space.write_text(body, encoding="utf-8")
        with pytest.raises(ConfigError):
            load_space(space, cls)
    space.write_text("model.hidden_size: {type: int, low: 128, high: 512, step: 64}\n")
    assert load_space(space, cls)


def test_exit_statuses_match_readme() -> None:
    from rnnlab.cli.console import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USER_ERROR

    text = README.read_text(encoding="utf-8").replace("\n", " ")
    assert "exits with status 143 (`rnnlab: terminated`)" in text and EXIT_TERMINATED == 143
    assert "(status 130, `rnnlab: interrupted`)" in text and EXIT_INTERRUPTED == 130
    assert "and exit status 2" in text and EXIT_USER_ERROR == 2


def test_override_rules_the_readme_states(tmp_path: Path) -> None:
    from rnnlab.errors import ConfigError

    assert load_task_config("seq2seq", None, ["data.src_lang=no"]).data.src_lang == "no"
    assert load_task_config("seq2seq", None, ['data.src_lang="no"']).data.src_lang == "no"
    with pytest.raises(ConfigError, match=r"train\.max_minutes"):
        load_task_config("seq2seq", None, ["train.max_minute=3"])
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        load_task_config("lm", None, ["train.epochs=ten"])
    twice = tmp_path / "twice.yaml"
    twice.write_text("task: lm\ntrain:\n  lr: 0.1\n  lr: 0.2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twice\.yaml:4"):
        load_task_config("lm", twice)
    for task in TASKS:  # naming data.train alone: no validation, never the bundled split
        assert load_task_config(task, None, ["data.train=x.txt"]).data.valid == ""
        assert load_task_config(task, None).data.valid  # the bundled one otherwise


def test_search_space_bounds_make_valid_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every low, high and choice of a shipped space is a value its recipe accepts."""
    monkeypatch.chdir(REPO)
    for _, argv in TUNE_COMMANDS:
        config, space = option(argv, "--config"), option(argv, "--space")
        task = read_yaml(REPO / config)["task"]
        for key, spec in read_yaml(REPO / space).items():
            values = spec.get("choices") or [spec["low"], spec["high"]]
            for value in values:
                load_task_config(task, config, [*sets(argv), f"{key}={value}"])


def test_makefile_targets_the_readme_names() -> None:
    text = MAKEFILE.read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z]+):", text, flags=re.M))
    readme = README.read_text(encoding="utf-8")
    named = set(re.findall(r"(?:^|`)make ([a-z]+)", readme, flags=re.M))
    assert named == {"demo", "test", "lint", "bench"}
    assert named <= targets
    lint = section(text, "lint:", "bench:")
    assert "ruff check" in lint and "ruff format --check" in lint and "mypy" in lint
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")  # no tomllib on 3.10
    mypy = section(pyproject, "[tool.mypy]", "\n[")
    assert re.search(r'^files = \["src/rnnlab"\]$', mypy, flags=re.M)  # "mypy over src/"
    assert re.search(r'^\s*"slow: ', section(pyproject, "markers", "]"), flags=re.M)
    extras = set(
        re.findall(r"^(\w+) = ", section(pyproject, "[project.optional-dependencies]", "\n["), re.M)
    )
    assert set(re.findall(r"rnnlab\[(\w+)\]", readme)) <= extras
    assert (REPO / ".ci" / "run").is_file() and "make test" in (REPO / ".ci/run").read_text()


def test_readme_dotted_names_resolve() -> None:
    """``rnnlab.x.y`` names the README points to exist (functions, constants, classes)."""
    import importlib

    names = set(re.findall(r"`(rnnlab(?:\.\w+)+)", README.read_text(encoding="utf-8")))
    assert len(names) >= 8
    for name in sorted(names):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj: Any = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
            break
        else:
            pytest.fail(name)
    from rnnlab.data.limits import MAX_LINE_CHARS

    assert MAX_LINE_CHARS == 10_000


def test_serve_flag_defaults_match_readme() -> None:
    text = README.read_text(encoding="utf-8").replace("\n", " ")
    documented = dict(re.findall(r"`(--max-[a-z-]+)` \(([\d,]+(?: MiB)?)\)", text))
    assert len(documented) == 6, documented
    serve = subparsers()["serve"]
    for flag, value in documented.items():
        number = int(value.split()[0].replace(",", "")) * (2**20 if "MiB" in value else 1)
        assert serve._option_string_actions[flag].default == number, flag


# --------------------------------------------------------------------------------------------------
# Three tiny runs, trained with the README's commands on the bundled data


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[None]:
    """``contextlib.chdir`` (Python 3.11) for 3.10."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("docs-runs")
    fra = REPO / "data" / "fra-eng"
    for split in ("valid", "test"):
        lines = (fra / f"{split}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        (root / f"{split}.tsv").write_text("".join(lines[:40]), encoding="utf-8")
    common = ["--set", "train.num_threads=1", "--set", "train.device=cpu"]
    commands = {
        "fra": [
            "seq2seq", "--config", "configs/seq2seq/fra-eng.yaml",
            "--set", "train.max_steps=4", "--set", "data.max_examples=300",
            "--set", f"data.valid={root / 'valid.tsv'}", "--set", "data.spm_vocab_size=200",
            "--set", "model.embed_size=16", "--set", "model.hidden_size=16",
            "--set", "train.batch_size=32", "--set", "train.log_every=2",
            "--set", "train.valid_every=4", "--set", "decode.beam_size=2",
            "--set", "train.scheduled_sampling=linear", "--set", "train.ss_k=8",
        ],
        "pos": [
            "tagger", "--config", "configs/tagger/ud-ewt-sample.yaml",
            "--set", "train.max_steps=6", "--set", "data.max_examples=100",
            "--set", "train.valid_every=6", "--set", "train.log_every=3",
            "--set", "model.embed_size=16", "--set", "model.hidden_size=16",
            "--set", "model.char_embed_size=8", "--set", "model.char_hidden_size=8",
        ],
        "tm": [
            "lm", "--config", "configs/lm/timemachine-char.yaml",
            "--set", "train.max_steps=3", "--set", "train.epochs=1",
            "--set", "data.max_examples=200", "--set", "train.log_every=1",
            "--set", "train.valid_every=3",
            "--set", "model.embed_size=16", "--set", "model.hidden_size=16",
        ],
    }  # fmt: skip
    out: dict[str, Any] = {"root": root}
    with chdir(REPO):
        for name, argv in commands.items():
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
                code = call_main("train", argv[0], "--out", root / name, *argv[1:], *common)
            assert code == 0, err.getvalue()
            out[name] = root / name
            out[f"{name}.log"] = err.getvalue()
    return out


RUN_FILES = {
    "fra": ["vocab.src.json", "vocab.tgt.json", "spm.src.model", "spm.tgt.model"],
    "tm": ["vocab.json"],
    "pos": [],
}


@pytest.mark.parametrize("name", ["fra", "tm", "pos"])
def test_run_directory_holds_what_the_readme_lists(runs: dict[str, Any], name: str) -> None:
    run: Path = runs[name]
    for file in [
        "config.yaml",
        "best/model.safetensors",
        "last/model.safetensors",
        "last/trainer_state.safetensors",
        "metrics.jsonl",
        "curves.png",
        *RUN_FILES[name],
    ]:
        assert (run / file).is_file(), file
    if name == "pos":  # "vocabularies of words, characters and tags"
        jsons = [p.name for p in run.glob("*.json")]
        for part in ("word", "char", "tag"):
            assert any(part in j for j in jsons), jsons
    assert not (run / ".lock").exists()  # held "while it runs"
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for path in run.rglob("*"):  # "Nothing in a run directory is a pickle"
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix == ".safetensors":  # 8-byte length, then a JSON header
            json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
        else:
            assert not (data[:1] == b"\x80" and 2 <= data[1] <= 5), path  # pickle protocol 2-5
            assert data[:2] != b"PK", path  # torch.save's zip
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all("minutes" in r for r in records)  # "with training minutes"
    data = (run / "last" / "trainer_state.safetensors").read_bytes()
    header = json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])
    trainer = json.loads(header["__metadata__"]["trainer"])  # "step counters (JSON in the header)"
    assert trainer["trainer"]["step"] == max(r["step"] for r in records)
    assert any("exp_avg_sq" in k for k in header)  # Adam moments
    saved = yaml.safe_load((run / "config.yaml").read_text())
    with chdir(REPO):
        assert load_task_config(saved["task"], run / "config.yaml")


def test_training_prints_the_precision_it_chose(runs: dict[str, Any]) -> None:
    """README: ``auto`` … "(the shipped recipes use `auto`; training prints what it chose)"."""
    assert read_yaml(REPO / "configs/seq2seq/fra-eng.yaml")["train"]["precision"] == "auto"
    assert re.search(r"train\.precision: auto → (fp32|bf16)", runs["fra.log"])


def test_scheduled_sampling_epsilon_logged_as_documented(runs: dict[str, Any]) -> None:
    """ε is logged as ``teacher_forcing``; linear: max(min, 1 − step/k) (k = 8, min = 0)."""
    train = [
        json.loads(line)
        for line in (runs["fra"] / "metrics.jsonl").read_text().splitlines()
        if "train_loss" in line
    ]
    assert train
    for record in train:
        candidates = {max(0.0, 1 - s / 8) for s in (record["step"] - 1, record["step"])}
        assert any(math.isclose(record["teacher_forcing"], c) for c in candidates), record


def test_seq2seq_evaluate_json_has_the_documented_keys(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sacrebleu

    test = runs["root"] / "test.tsv"
    result = run_cli(monkeypatch, capsys, "evaluate", runs["fra"], "--data", test, "--json")
    assert result.code == 0, result.err
    metrics = json.loads(result.out)
    assert {"bleu", "bleu_lowercase", "d2l_bleu", "loss", "perplexity"} <= set(metrics)
    assert math.isclose(metrics["perplexity"], math.exp(metrics["loss"]), rel_tol=1e-9)
    assert metrics["sentences"] == len(test.read_text().splitlines())
    # "sacreBLEU with its default settings; evaluate prints sacreBLEU's signature"
    for key, lowercase in (("signature", False), ("signature_lowercase", True)):
        bleu = sacrebleu.BLEU(lowercase=lowercase)
        bleu.corpus_score(["a b"], [["a b"]])  # one reference per sentence, as evaluate's
        assert metrics[key] == str(bleu.get_signature())


def test_lm_evaluate_json_and_python_perplexity_agree(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import rnnlab

    text = "the time traveller smiled"
    some = runs["root"] / "some.txt"
    some.write_text(text + "\n", encoding="utf-8")
    result = run_cli(monkeypatch, capsys, "evaluate", runs["tm"], "--data", some, "--json")
    assert result.code == 0, result.err
    metrics = json.loads(result.out)
    assert {"perplexity", "loss", "tokens"} <= set(metrics)
    assert math.isclose(metrics["perplexity"], math.exp(metrics["loss"]), rel_tol=1e-9)
    assert math.isclose(rnnlab.load(runs["tm"]).perplexity(text), metrics["perplexity"])


def read_conllu(text: str) -> list[list[list[str]]]:
    """Sentences of word lines (integer ids: no ranges, no empty nodes) as lists of columns."""
    sentences, current = [], []
    for line in text.splitlines():
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
        elif not line.startswith("#"):
            cols = line.split("\t")
            if cols[0].isdigit():
                current.append(cols)
    if current:
        sentences.append(current)
    return sentences


@pytest.fixture(scope="module")
def tagged_dev(runs: dict[str, Any]) -> str:
    """``rnnlab tag runs/pos --format conllu < dev.conllu`` (README), once."""
    out = io.StringIO()
    stdin = io.StringIO((EWT / "dev.conllu").read_text(encoding="utf-8"))
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(io.StringIO()),
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setattr("sys.stdin", stdin)
        assert call_main("tag", runs["pos"], "--format", "conllu") == 0
    return out.getvalue()


def test_tag_conllu_fills_only_the_upos_column(tagged_dev: str) -> None:
    gold_text = (EWT / "dev.conllu").read_text(encoding="utf-8")
    gold_lines, out_lines = gold_text.splitlines(), tagged_dev.splitlines()
    assert len(out_lines) == len(gold_lines)
    for g, o in zip(gold_lines, out_lines, strict=True):
        gc, oc = g.split("\t"), o.split("\t")
        if len(gc) == 10 and gc[0].isdigit():
            assert oc[:3] + oc[4:] == gc[:3] + gc[4:]
            assert oc[3] in UPOS
        else:
            assert o == g  # comments, multiword ranges, blank lines kept


def test_tagger_evaluate_agrees_with_its_own_tagging(
    runs: dict[str, Any],
    tagged_dev: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``evaluate --json --per-tag``: token accuracy and per-tag P/R/F1, recomputed here from the
    gold file and ``tag --format conllu``'s output."""
    dev = EWT / "dev.conllu"
    result = run_cli(
        monkeypatch, capsys, "evaluate", runs["pos"], "--data", dev, "--json", "--per-tag"
    )
    assert result.code == 0, result.err
    metrics = json.loads(result.out)
    assert {"accuracy", "oov_accuracy", "tokens", "per_tag"} <= set(metrics)
    gold = [c[3] for s in read_conllu(dev.read_text()) for c in s]
    pred = [c[3] for s in read_conllu(tagged_dev) for c in s]
    assert metrics["tokens"] == len(gold) and metrics["sentences"] == len(
        read_conllu(dev.read_text())
    )
    assert math.isclose(metrics["accuracy"], sum(map(str.__eq__, gold, pred)) / len(gold))
    for tag, row in metrics["per_tag"].items():
        tp = sum(g == p == tag for g, p in zip(gold, pred, strict=True))
        n_pred, n_gold = pred.count(tag), gold.count(tag)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        assert {k: row[k] for k in ("precision", "recall", "f1")} == pytest.approx(
            {"precision": precision, "recall": recall, "f1": f1}
        ), tag


def test_tagger_ensemble_of_one_run_twice_is_that_run(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """argmax_y Σ_m log p_m(y|x) over two identical members is the member's own argmax."""
    pos, dev = runs["pos"], EWT / "dev.conllu"
    one = json.loads(run_cli(monkeypatch, capsys, "evaluate", pos, "--data", dev, "--json").out)
    two = json.loads(
        run_cli(monkeypatch, capsys, "evaluate", pos, pos, "--data", dev, "--json").out
    )
    assert two["accuracy"] == one["accuracy"] and two["tokens"] == one["tokens"]
    line = "is it too late now to say sorry\n"
    single = run_cli(monkeypatch, capsys, "tag", pos, stdin=line)
    pair = run_cli(monkeypatch, capsys, "tag", pos, pos, stdin=line)
    assert single.code == pair.code == 0
    assert pair.out == single.out
    words = single.out.split()
    assert [w.rsplit("/", 1)[0] for w in words] == line.split()  # word/TAG
    assert {w.rsplit("/", 1)[1] for w in words} <= UPOS


def test_translate_commands_as_documented(
    runs: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    fra = runs["fra"]
    one = run_cli(monkeypatch, capsys, "translate", fra, stdin="he is calm .\n")
    assert one.code == 0 and len(one.out.splitlines()) == 1
    three = run_cli(monkeypatch, capsys, "translate", fra, stdin="he is calm .\n\ni lost .\n")
    lines = three.out.split("\n")[:-1]
    assert len(lines) == 3 and lines[1] == ""  # one output line per input line, order kept
    nbest = run_cli(
        monkeypatch, capsys, "translate", fra, "--beam", 5, "--n-best", 3, stdin="go .\n"
    )
    assert nbest.code == 0 and len(nbest.out.rstrip("\n").split("\t")) == 3  # K, tab-separated
    png = tmp_path / "att.png"
    plot = run_cli(monkeypatch, capsys, "translate", fra, "--attention-plot", png, stdin="go .\n")
    assert plot.code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_generate_as_documented(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import rnnlab

    tm, prefix = runs["tm"], "time traveller"
    argv = ["generate", tm, "--prefix", prefix, "--length", 100]
    sampled = run_cli(monkeypatch, capsys, *argv, "--temperature", 0.8, "--top-k", 20, "--seed", 1)
    assert sampled.code == 0
    text = sampled.out.rstrip("\n")
    assert text.startswith(prefix) and len(text) == len(prefix) + 100  # 100 characters
    assert run_cli(monkeypatch, capsys, *argv[:4], "--length", 0).out == prefix + "\n"
    greedy = run_cli(monkeypatch, capsys, *argv).out.rstrip("\n")  # greedy unless sampling flags
    assert greedy == rnnlab.load(tm).generate(prefix, length=100, temperature=0)


def test_resume_command_as_documented(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``rnnlab train --resume RUN --set train.max_steps=0``: continues from the checkpoint to the
    run's other limits, and the override is kept in RUN/config.yaml."""
    copy = runs["root"] / "tm-resumed"
    shutil.copytree(runs["tm"], copy)
    before = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    monkeypatch.chdir(REPO)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert call_main("train", "--resume", copy, "--set", "train.max_steps=0") == 0, err
    after = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    assert after[: len(before)] == before
    assert max(r["step"] for r in after) > max(r["step"] for r in before)
    assert max(r["epoch"] for r in after) == pytest.approx(1.0)  # train.epochs=1 ends it
    assert yaml.safe_load((copy / "config.yaml").read_text())["train"]["max_steps"] == 0


def test_plot_command_as_documented(
    runs: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    png = tmp_path / "curves.png"
    result = run_cli(
        monkeypatch, capsys, "plot", runs["tm"], runs["pos"], "--out", png, "--x", "minutes"
    )
    assert result.code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_serve_refusals_are_one_line_errors(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "A path that is not a run, a model name that is not letters, digits, `.`, `_` and `-`, a
    port … outside 0–65535 is a one-line error with exit status 2"."""
    pytest.importorskip("fastapi")
    for argv in (
        [runs["root"] / "no-such-run"],
        [f"bad name={runs['pos']}"],
        [runs["pos"], "--port", 70000],
    ):
        result = run_cli(monkeypatch, capsys, "serve", *argv)
        assert result.code == 2, result
        assert len(result.err.splitlines()) == 1 and result.err.startswith("rnnlab: error: ")


def test_line_limit_notice_as_documented(
    runs: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    readme = README.read_text(encoding="utf-8").replace("\n", " ")
    template = re.search(r"\(`(rnnlab: notice: <stdin>:2: line of [^`]*)`\)", readme).group(1)
    expected = template.replace("1,000,000", "10,050")
    result = run_cli(monkeypatch, capsys, "tag", runs["pos"], stdin="is it\n" + "a " * 5025 + "\n")
    assert result.code == 0
    assert expected in result.err.splitlines()


def test_data_error_message_as_documented(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    readme = README.read_text(encoding="utf-8").replace("\n", " ")
    expected = re.search(r"\(`(rnnlab: error: data\.tsv:12: [^`]*)`\)", readme).group(1)
    (tmp_path / "data.tsv").write_text("go .\tva !\n" * 11 + "oops\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = run_cli(
        monkeypatch, capsys, "train", "seq2seq", "--out", "r", "--set", "data.train=data.tsv"
    )
    assert result.code == 2
    assert result.err.splitlines() == [expected]


def test_embeddings_train_as_documented(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``rnnlab embeddings train corpus.txt more.txt.gz train.conllu --out vectors.txt --dim 100
    --lowercase``: word2vec text of every lower-cased word seen twice (gensim's default min-count 2
    (the command's --min-count default), plain text by whitespace, CoNLL-U by its FORM column."""
    pytest.importorskip("gensim")
    monkeypatch.chdir(tmp_path)
    tm = (REPO / "data/timemachine/train.txt").read_text(encoding="utf-8")
    Path("corpus.txt").write_text(tm[:20000], encoding="utf-8")
    with gzip.open("more.txt.gz", "wt", encoding="utf-8") as f:
        f.write((REPO / "data/timemachine/valid.txt").read_text(encoding="utf-8")[:5000])
    conllu = "\n".join((EWT / "train.conllu").read_text(encoding="utf-8").splitlines()[:300]) + "\n"
    Path("train.conllu").write_text(conllu, encoding="utf-8")
    [(_, argv)] = [
        (w, a) for w, a in DOC_COMMANDS if a[:2] == ["embeddings", "train"] and "corpus.txt" in a
    ]
    result = run_cli(monkeypatch, capsys, *argv)
    assert result.code == 0, result.err
    counts: Counter[str] = Counter()
    with gzip.open("more.txt.gz", "rt", encoding="utf-8") as f:
        more = f.read()
    for text in (Path("corpus.txt").read_text(encoding="utf-8"), more):
        counts.update(text.lower().split())
    counts.update(c[1].lower() for s in read_conllu(conllu) for c in s)
    lines = Path("vectors.txt").read_text(encoding="utf-8").splitlines()
    n, dim = map(int, lines[0].split())
    assert dim == int(option(argv, "--dim")) and n == len(lines) - 1
    assert {line.split(" ")[0] for line in lines[1:]} == {w for w, c in counts.items() if c >= 2}
    assert all(len(line.split(" ")) == dim + 1 for line in lines[1:])


# --------------------------------------------------------------------------------------------------
# README's Python snippets, run as written


def python_blocks() -> list[tuple[int, str]]:
    return fenced_blocks(README, ("python",))


def run_snippet(code: str, namespace: dict[str, Any]) -> Any:
    """Execute ``code`` as written; the value of its last line if that is an expression."""
    tree = ast.parse(code)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<README>", "exec"), namespace)
    return eval(compile(last, "<README>", "eval"), namespace) if last else None


def test_readme_describe_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    [(_, code)] = [(n, b) for n, b in python_blocks() if "describe" in b]
    capsys.readouterr()
    run_snippet(code, {})
    out = capsys.readouterr().out
    reference = torch.nn.LSTM(4, 8, num_layers=2, bidirectional=True)
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    for name, p in reference.named_parameters():
        assert name in rows, name
        assert "".join(rows[name][:-1]).replace(" ", "") == str(tuple(p.shape)).replace(" ", "")
        assert int(rows[name][-1].replace(",", "")) == p.numel()
    total = sum(p.numel() for p in reference.parameters())
    assert int(rows["total"][-1].replace(",", "")) == total


@pytest.fixture(scope="module")
def exported(runs: dict[str, Any]) -> Path:
    """``rnnlab export runs/fra --format onnx --out exported/fra`` (README), once."""
    pytest.importorskip("onnxruntime")
    out = runs["root"] / "exported" / "fra"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert call_main("export", runs["fra"], "--format", "onnx", "--out", out) == 0
    return out


def test_export_folder_as_documented(runs: dict[str, Any], exported: Path) -> None:
    import rnnlab

    for name in ["rnnlab-export.json", "start.onnx", "step.onnx", "config.yaml", "runtime.py"]:
        assert (exported / name).is_file(), name
    assert list(exported.glob("vocab.*.json")) and list(exported.glob("spm.*.model"))
    manifest = json.loads((exported / "rnnlab-export.json").read_text())
    assert manifest["task"] == "seq2seq" and manifest["rnnlab_version"] == rnnlab.__version__
    assert isinstance(manifest["opset"], int)
    run_config = (runs["fra"] / "config.yaml").read_bytes()
    assert manifest["config_sha256"] == hashlib.sha256(run_config).hexdigest()
    files = {p.name for p in exported.iterdir()} - {"rnnlab-export.json"}
    assert set(manifest["files"]) == files  # "sha256 … of every file"
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((exported / name).read_bytes()).hexdigest() == digest, name
    # "rnnlab.load(DIR) accept[s] an export exactly like a run directory"
    [result] = rnnlab.load(exported).translate(["he is calm ."])
    assert isinstance(result.text, str)


def test_readme_runtime_snippet_and_script_without_torch(exported: Path, tmp_path: Path) -> None:
    """The export folder's runtime, run as the README shows, in a process where importing torch
    or rnnlab fails ("without rnnlab or PyTorch")."""
    [(_, code)] = [(n, b) for n, b in python_blocks() if "import runtime" in b]
    (tmp_path / "exported").mkdir()
    shutil.copytree(exported, tmp_path / "exported" / "fra")
    block = "import sys\nfor m in ('torch', 'rnnlab'):\n    sys.modules[m] = None\n"
    tree = ast.parse(code)
    last = ast.unparse(tree.body.pop()) if isinstance(tree.body[-1], ast.Expr) else "None"
    probe = (
        f"{block}{ast.unparse(tree)}\nresult = {last}\nimport json\n"
        "fields = ['text', 'tokens', 'score', 'n_best', 'attention']\n"
        "print(json.dumps([type(result).__name__, len(result), len(result[0].n_best),"
        " [f for f in fields if hasattr(result[0], f)]]))\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    kind, n, n_best, fields = json.loads(done.stdout)
    assert (kind, n, n_best) == ("list", 1, 2)  # one sentence, n_best=2
    assert fields == ["text", "tokens", "score", "n_best", "attention"]
    script = f"{block}import runpy\nsys.argv = ['runtime.py', 'exported/fra']\n"
    script += "runpy.run_path('exported/fra/runtime.py', run_name='__main__')\n"
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        input="he is calm .\ni lost .\n",
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 2
    # "checks every file's sha256 first": a changed vocabulary is refused
    vocab = next((tmp_path / "exported" / "fra").glob("vocab.tgt.json"))
    vocab.write_text(vocab.read_text() + " ")
    broken = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert broken.returncode != 0 and "sha256" in broken.stderr.lower()


def test_evaluate_takes_an_export_like_a_run(
    runs: dict[str, Any],
    exported: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    test = runs["root"] / "test.tsv"
    result = run_cli(monkeypatch, capsys, "evaluate", exported, "--data", test, "--json")
    assert result.code == 0, result.err
    assert {"bleu", "bleu_lowercase", "d2l_bleu", "loss", "perplexity"} <= set(
        json.loads(result.out)
    )
    piped = run_cli(monkeypatch, capsys, "translate", exported, "--beam", 5, stdin="he is calm .\n")
    assert piped.code == 0 and len(piped.out.splitlines()) == 1


@pytest.fixture
def readme_runs(runs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory whose runs/ holds the names the README's snippets use."""
    (tmp_path / "runs").mkdir()
    for name, target in {
        "fra": "fra",
        "att": "fra",  # the fra-eng recipe has Bahdanau attention
        "pos": "pos",
        "pos-seed7": "pos",
        "tm": "tm",
    }.items():
        (tmp_path / "runs" / name).symlink_to(runs[target], target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_python_api_snippet(readme_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [(_, code)] = [(n, b) for n, b in python_blocks() if 'rnnlab.load("runs/fra")' in b]
    namespace: dict[str, Any] = {}
    capsys.readouterr()
    ppl = run_snippet(code, namespace)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3  # one line per input sentence
    assert printed[1].split() == ["0.0", "[]"]  # "an empty line gives an empty translation"
    t = namespace["t"]
    weights = t.attention.weights
    assert tuple(weights.shape) == (len(t.attention.out_tokens), len(t.attention.src_tokens))
    assert isinstance(ppl, float) and ppl > 1.0
    lm = namespace["lm"]
    greedy = lm.generate("time traveller", length=20, temperature=0, seed=1)
    assert greedy == lm.generate("time traveller", length=20, temperature=0, seed=2)
    import rnnlab

    tagger = rnnlab.load("runs/pos")
    text_tags = tagger.tag(["is it too late now"])[0].tags
    assert tagger.tag([["is", "it", "too", "late", "now"]])[0].tags == text_tags  # "or lists"
    assert len(text_tags) == 5 and set(text_tags) <= UPOS


def metrics_snippet() -> str:
    [(_, code)] = [(n, b) for n, b in python_blocks() if "corpus_bleu" in b]
    return code


def test_readme_metrics_snippet_values() -> None:
    """Each line of the metrics snippet that is complete gives what its reference gives."""
    import sacrebleu
    import torch

    import rnnlab

    namespace: dict[str, Any] = {"rnnlab": rnnlab, "torch": torch}
    expressions = [node for node in ast.parse(metrics_snippet()).body if isinstance(node, ast.Expr)]
    bleu, d2l, mask, loss = (
        eval(compile(ast.Expression(node.value), "README.md", "eval"), namespace)
        for node in expressions
    )
    assert bleu == pytest.approx(
        sacrebleu.corpus_bleu(["il est calme ."], [["il est calme ."]]).score
    )
    assert d2l == pytest.approx(textbook_bleu("A B B C D", "A B C D E F", k=2))
    assert mask.tolist() == [[1, 0, 0], [4, 5, 0]]
    # Uniform logits over 10 classes: each valid token costs ln 10, averaged over the 4 steps.
    expected = [math.log(10) * valid / 4 for valid in (4, 2, 0)]
    assert loss.tolist() == pytest.approx(expected, abs=1e-6)


def test_readme_metrics_snippet_runs_as_written() -> None:
    import torch

    import rnnlab

    run_snippet(metrics_snippet(), {"rnnlab": rnnlab, "torch": torch})
