"""``rnnlab.load(EXPORT_DIR)`` gives the interface of a run directory, with the run's answers."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

import rnnlab  # noqa: E402
from rnnlab.errors import RnnlabError  # noqa: E402
from rnnlab.export.onnx import export_run  # noqa: E402
from rnnlab.inference import LanguageModel, Tagger, Translator, load_as  # noqa: E402
from rnnlab.rundir import open_run  # noqa: E402

LINES = ["a b c d", "", "h g", "e f g h a b c"]


@pytest.fixture(scope="module")
def exported_translator(translator_run, tmp_path_factory):
    run = open_run(translator_run, device="cpu")
    return export_run(run.task, run.model, tmp_path_factory.mktemp("export") / "reverse")


def test_an_exported_translator_answers_like_its_run(translator_run, exported_translator):
    eager, exported = rnnlab.load(translator_run), rnnlab.load(exported_translator)
    assert isinstance(exported, Translator)
    assert exported.has_attention == eager.has_attention
    assert exported.describe()["tgt_vocab_size"] == eager.describe()["tgt_vocab_size"]
    for beam, n_best in [(1, 1), (3, 2)]:
        ours = exported.translate(LINES, beam=beam, n_best=n_best)
        theirs = eager.translate(LINES, beam=beam, n_best=n_best)
        assert [t.text for t in ours] == [t.text for t in theirs]
        assert [[text for text, _ in t.n_best] for t in ours] == [
            [text for text, _ in t.n_best] for t in theirs
        ]
        for a, b in zip(ours, theirs, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-4)
    if eager.has_attention:
        [a] = exported.translate(["a b c"], attention=True)
        [b] = eager.translate(["a b c"], attention=True)
        assert a.attention is not None and b.attention is not None
        assert a.attention.out_tokens == b.attention.out_tokens
        assert a.attention.weights.shape == b.attention.weights.shape


def test_a_command_for_another_task_is_refused_on_an_export(exported_translator):
    assert isinstance(load_as(Translator, exported_translator, command="translate"), Translator)
    for cls, command in [(Tagger, "tag"), (LanguageModel, "generate")]:
        with pytest.raises(RnnlabError, match=f"{command} needs a {cls.task_name} model"):
            load_as(cls, exported_translator, command=command)


def test_runtime_errors_are_rnnlab_errors(exported_translator):
    with pytest.raises(RnnlabError, match="beam must be 1 or more"):
        rnnlab.load(exported_translator).translate(["a"], beam=0)


def test_export_on_a_full_disk_keeps_the_previous_export(
    translator_run, exported_translator, tmp_path, monkeypatch, capsys
):
    import errno
    import os
    import shutil
    from pathlib import Path

    from rnnlab.cli import main
    from rnnlab.export import onnx as onnx_export

    previous = tmp_path / "export"
    shutil.copytree(exported_translator, previous)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}

    def disk_fills_up(src, dst):
        Path(dst).write_bytes(Path(src).read_bytes()[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

    monkeypatch.setattr(onnx_export.shutil, "copyfile", disk_fills_up)
    assert main(["export", str(translator_run), "--out", str(previous)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"rnnlab: error: {previous}: cannot write (no space left on device); "
        "the previous version is kept"
    ]
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
    monkeypatch.undo()
    assert [t.text for t in rnnlab.load(previous).translate(LINES)] == [
        t.text for t in rnnlab.load(exported_translator).translate(LINES)
    ]
