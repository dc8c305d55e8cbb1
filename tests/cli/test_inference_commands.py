"""``rnnlab translate|tag|generate`` print exactly what they printed before they used the inference API.

The expected output is rebuilt here from the task-level primitives the commands used to call directly
(``translate_ids`` + ``detokenize``, ``TaggerTask.tag``, ``LanguageModelTask.generate``) with the old
formatting rules, so a change in blank-line handling, n-best layout or sampling settings fails.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from rnnlab.cli import EXIT_USER_ERROR
from rnnlab.data.conllu_io import parse_conllu
from rnnlab.rundir import open_run
from tests.cli_runner import call_main

REPO = Path(__file__).resolve().parents[2]


def run_cli(monkeypatch, capsys, argv: list[str], stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = call_main(*argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def old_translate(run_dir: Path, lines: list[str], *, beam: int | None, n_best: int) -> str:
    run = open_run(run_dir)
    task = run.task
    keep = [i for i, s in enumerate(lines) if s.strip()]
    decoded = task.translate_ids(
        run.model, [task.encode_source(lines[i]) for i in keep], run.device,
        beam_size=beam, n_best=n_best,
    )  # fmt: skip
    out: list[list[str]] = [[""] for _ in lines]
    for i, hyps in zip(keep, decoded, strict=True):
        out[i] = [task.detokenize(h) for h in hyps]
    return "".join(("\t".join(h) if n_best > 1 else h[0]) + "\n" for h in out)


@pytest.mark.parametrize(
    "flags,beam,n_best",
    [([], None, 1), (["--beam", "3"], 3, 1), (["--n-best", "2"], None, 2),
     (["--beam", "4", "--n-best", "3"], 4, 3)],
)  # fmt: skip
def test_translate_output_unchanged(translator_run, monkeypatch, capsys, flags, beam, n_best):
    lines = ["a b c d", "", "h g f", "  ", "c", "e e a b h g"]
    code, out, _ = run_cli(
        monkeypatch, capsys, ["translate", str(translator_run), *flags], "\n".join(lines) + "\n"
    )
    assert code == 0
    assert out == old_translate(translator_run, lines, beam=beam, n_best=n_best)


def test_tag_output_unchanged(tagger_run, monkeypatch, capsys):
    lines = ["The dog ate the apple .", "", "is it too late now to say sorry"]
    run = open_run(tagger_run)
    words = [line.split() for line in lines]
    tags = run.task.tag(run.model, words, run.device)
    expected = "".join(
        " ".join(f"{w}/{t}" for w, t in zip(ws, ts, strict=True)) + "\n"
        for ws, ts in zip(words, tags, strict=True)
    )
    code, out, _ = run_cli(monkeypatch, capsys, ["tag", str(tagger_run)], "\n".join(lines) + "\n")
    assert code == 0 and out == expected


def test_tag_conllu_output_unchanged(tagger_run, monkeypatch, capsys):
    text = (REPO / "data/ud-ewt-sample/dev.conllu").read_text(encoding="utf-8")
    sentences = list(parse_conllu(enumerate(io.StringIO(text), start=1), "<stdin>"))[:20]
    text = "".join("".join(f"{line}\n" for line in s.lines) + "\n" for s in sentences)
    run = open_run(tagger_run)
    tags = run.task.tag(run.model, [s.words for s in sentences], run.device)
    expected = "".join(s.with_tags("upos", t) for s, t in zip(sentences, tags, strict=True))
    code, out, _ = run_cli(
        monkeypatch, capsys, ["tag", str(tagger_run), "--format", "conllu"], text
    )
    assert code == 0 and out == expected


@pytest.mark.parametrize(
    "flags,greedy,temperature,top_k,seed",
    [([], True, 1.0, 0, 0), (["--temperature", "0.7", "--seed", "5"], False, 0.7, 0, 5),
     (["--top-k", "3"], False, 1.0, 3, 0)],
)  # fmt: skip
def test_generate_output_unchanged(
    lm_run, monkeypatch, capsys, flags, greedy, temperature, top_k, seed
):
    run = open_run(lm_run)
    [expected] = run.task.generate(
        run.model, "the q", run.device, length=40, greedy=greedy,
        temperature=temperature, top_k=top_k, seed=seed,
    )  # fmt: skip
    code, out, _ = run_cli(
        monkeypatch,
        capsys,
        ["generate", str(lm_run), "--prefix", "the q", "--length", "40", *flags],
    )
    assert code == 0 and out == expected + "\n"


def test_wrong_kind_of_run_is_a_one_line_error(tagger_run, lm_run, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, ["translate", str(tagger_run)], "a\n")
    assert code == EXIT_USER_ERROR and out == ""
    assert (
        err == f"rnnlab: error: {tagger_run}: translate needs a seq2seq run, this is a tagger run\n"
    )
    code, _, err = run_cli(monkeypatch, capsys, ["tag", str(lm_run)], "a\n")
    assert err == f"rnnlab: error: {lm_run}: tag needs a tagger run, this is a lm run\n"
    code, _, err = run_cli(
        monkeypatch, capsys, ["generate", str(tagger_run), "--prefix", "a", "--length", "3"]
    )
    assert err == f"rnnlab: error: {tagger_run}: generate needs a lm run, this is a tagger run\n"
