"""Exports of model variants the other export tests leave out, read through ``rnnlab.load``, and
pretrained-vector files as rnnlab writes and reads them.

Each run trains a handful of steps: the checks compare an export with its own run directory, which
needs no model that has learnt anything.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

import rnnlab  # noqa: E402
from rnnlab.cli import main  # noqa: E402
from rnnlab.errors import RnnlabError  # noqa: E402
from rnnlab.export.onnx import export_run  # noqa: E402
from rnnlab.export.runtime import OnnxLanguageModel  # noqa: E402
from rnnlab.metrics.perplexity import perplexity  # noqa: E402
from tests.export.runs import make_run, reverse_lines, seq2seq_config  # noqa: E402

EWT = Path(__file__).resolve().parents[2] / "data" / "ud-ewt-sample"
LM_TEXT = "the quick brown fox jumps over the lazy dog\nthe dog sleeps . the fox runs !\n" * 20


# ---------------------------------------------------------------------------------------------------
# Fixtures: one tiny run per task, in variants the grids of the other tests do not build.


@pytest.fixture(scope="module")
def translator(tmp_path_factory):
    """Tied output weights, Luong general attention, a bidirectional GRU encoder, a short
    ``data.max_len`` (4) so that longer inputs are truncated."""
    root = tmp_path_factory.mktemp("tied")
    (root / "train.tsv").write_text("\n".join(reverse_lines(60, 0)) + "\n", encoding="utf-8")
    config = seq2seq_config(
        root / "train.tsv",
        max_len=4,
        cell="gru",
        attention="luong_general",
        bidirectional_encoder=True,
        tie_weights=True,
        embed_size=12,
    )
    task, _ = make_run(root, "seq2seq", config, train_steps=5)
    assert main(["export", str(task.run_dir), "--out", str(root / "export")]) == 0
    return task.run_dir, root / "export"


@pytest.fixture(scope="module")
def language_model(tmp_path_factory):
    """A word-level LSTM with an adaptive softmax whose second tail cluster projects to
    16 // 16 = 1 dimension, the least allowed; exported in float32 and int8."""
    root = tmp_path_factory.mktemp("adaptive")
    (root / "text.txt").write_text(LM_TEXT, encoding="utf-8")
    config = {
        "data": {
            "train": str(root / "text.txt"),
            "valid": "",
            "clean": "none",
            "tokenizer": "word",
        },
        "model": {
            "embed_size": 8,
            "hidden_size": 16,
            "cell": "lstm",
            "softmax": "adaptive",
            "cutoffs": [4, 8],
        },
        "train": {"batch_size": 4, "bptt": 8, "lr": 0.01},
    }
    task, model = make_run(root, "lm", config, train_steps=5)
    fp32 = export_run(task, model, root / "fp32")
    int8 = export_run(task, model, root / "int8", quantize="int8")
    return task.run_dir, fp32, int8


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    """A unidirectional GRU tagger with a CRF, character CNN, lower-cased words and words cut to
    4 characters; exported in float32 and int8."""
    root = tmp_path_factory.mktemp("tagger")
    config = {
        "data": {
            "train": str(EWT / "train.conllu"),
            "valid": "",
            "max_examples": 100,
            "lowercase": True,
            "max_word_chars": 4,
        },
        "model": {
            "embed_size": 8,
            "hidden_size": 12,
            "char_embed_size": 6,
            "char_hidden_size": 6,
            "dropout": 0.0,
            "bidirectional": False,
            "crf": True,
            "char_encoder": "cnn",
            "cell": "gru",
        },
        "train": {"batch_size": 16, "lr": 0.01},
    }
    task, model = make_run(root, "tagger", config, train_steps=5)
    fp32 = export_run(task, model, root / "fp32")
    int8 = export_run(task, model, root / "int8", quantize="int8")
    return task, fp32, int8


# ---------------------------------------------------------------------------------------------------
# Translators

LINES = [
    "a b c",
    "",
    "   ",
    "zzz qqq a",  # unknown words
    "a b c d e f g h a b c d e f g h",  # longer than data.max_len (4)
    "h",
    "a  b\tc",
    "é ü 中",
]


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"beam": 3, "n_best": 3},
        {"beam": 4, "n_best": 2, "length_penalty": 1.0},
        {"length_penalty": 2.0},
        {"max_len": 2},
        {"beam": 2, "max_len": 1},
    ],
    ids=["greedy", "beam3-nbest3", "beam4-lp1", "greedy-lp2", "maxlen2", "beam2-maxlen1"],
)
def test_tied_translator_export_answers_like_its_run(translator, options):
    run_dir, folder = translator
    eager, exported = rnnlab.load(run_dir), rnnlab.load(folder)
    want, got = eager.translate(LINES, **options), exported.translate(LINES, **options)
    for line, a, b in zip(LINES, want, got, strict=True):
        assert (b.text, b.tokens) == (a.text, a.tokens), line
        assert [text for text, _ in b.n_best] == [text for text, _ in a.n_best], line
        assert b.score == pytest.approx(a.score, abs=1e-4), line
        np.testing.assert_allclose([s for _, s in b.n_best], [s for _, s in a.n_best], atol=1e-4)
    if "max_len" in options:
        assert all(len(t.tokens) <= options["max_len"] for t in got)


def test_tied_translator_attention_equals_the_run_for_truncated_and_unknown_input(translator):
    run_dir, folder = translator
    eager, exported = rnnlab.load(run_dir), rnnlab.load(folder)
    want = eager.translate(LINES, attention=True, beam=2)
    got = exported.translate(LINES, attention=True, beam=2)
    for line, a, b in zip(LINES, want, got, strict=True):
        assert (a.attention is None) == (b.attention is None) == (not line.strip())
        if a.attention is None:
            continue
        assert b.attention.src_tokens == a.attention.src_tokens
        assert b.attention.out_tokens == a.attention.out_tokens
        np.testing.assert_allclose(
            b.attention.weights.numpy(), a.attention.weights.numpy(), atol=1e-4
        )
    truncated = got[LINES.index("a b c d e f g h a b c d e f g h")].attention
    assert truncated.src_tokens == ["a", "b", "c", "d", "<eos>"]  # data.max_len tokens, then <eos>
    assert got[LINES.index("zzz qqq a")].attention.src_tokens[:2] == ["<unk>", "<unk>"]


def test_exporting_again_over_an_export_replaces_it_whole(translator, tmp_path, capsys):
    run_dir, folder = translator
    out = tmp_path / "again"
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    (out / "stale.txt").write_text("left from before", encoding="utf-8")
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert [t.text for t in rnnlab.load(out).translate(LINES)] == [
        t.text for t in rnnlab.load(folder).translate(LINES)
    ]
    # A folder that is not an export is never overwritten.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine", encoding="utf-8")
    capsys.readouterr()
    assert main(["export", str(run_dir), "--out", str(other)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not an rnnlab export folder" in err
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]


def test_a_translator_export_with_an_emptied_graph_is_a_one_line_error(translator, tmp_path):
    import shutil

    _, folder = translator
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "step.onnx").write_bytes(b"")
    with pytest.raises(RnnlabError) as info:
        rnnlab.load(copy)
    assert "\n" not in str(info.value) and "step.onnx" in str(info.value)


# ---------------------------------------------------------------------------------------------------
# Language models

TEXTS = [
    "the dog",
    "the fox runs !\n\nthe dog",
    "xyz unknownword the",
    "\ufeffthe dog\r\n",
    LM_TEXT * 3,  # longer than one scoring chunk of the runtime
]


def test_adaptive_softmax_lm_export_scores_and_generates_like_its_run(language_model):
    run_dir, fp32, _ = language_model
    eager, exported = rnnlab.load(run_dir), rnnlab.load(fp32)
    for text in TEXTS:
        assert exported.perplexity(text) == pytest.approx(eager.perplexity(text), rel=1e-4)
    for prefix in ["the", "the dog", "", "  the  "]:
        for length in (0, 7):
            want = eager.generate(prefix, length=length, temperature=0)
            assert exported.generate(prefix, length=length, temperature=0) == want
    for call in (lambda m: m.generate("The", length=3), lambda m: m.perplexity("\n\n")):
        for model in (eager, exported):
            with pytest.raises(RnnlabError):
                call(model)


def test_an_adaptive_softmax_cluster_projected_to_nothing_is_a_config_error(tmp_path):
    from rnnlab.errors import ConfigError

    (tmp_path / "text.txt").write_text(LM_TEXT, encoding="utf-8")
    config = {
        "data": {"train": str(tmp_path / "text.txt"), "valid": "", "tokenizer": "word"},
        "model": {"hidden_size": 15, "softmax": "adaptive", "cutoffs": [4, 8]},
    }
    with pytest.raises(ConfigError, match="hidden_size of at least 16"):
        make_run(tmp_path, "lm", config, train_steps=1)


def test_an_int8_adaptive_softmax_lm_scores_close_to_float(language_model):
    _, fp32, int8 = language_model
    text = "the quick brown fox jumps over the lazy dog\nthe dog\n"
    want = rnnlab.load(fp32).perplexity(text)
    got = rnnlab.load(int8).perplexity(text)
    assert math.isfinite(got) and got == pytest.approx(want, rel=0.2)


def test_an_exported_perplexity_that_overflows_is_inf_as_the_runs(language_model, monkeypatch):
    run_dir, fp32, _ = language_model
    huge = (2000.0, 1)  # a mean NLL whose exponential is beyond a float
    assert perplexity(*huge) == math.inf  # what a run directory reports
    monkeypatch.setattr(OnnxLanguageModel, "nll", lambda self, ids: huge)
    assert rnnlab.load(fp32).perplexity("the dog") == math.inf


# ---------------------------------------------------------------------------------------------------
# Taggers

SENTENCES = [
    "The cat sat on the mat .",
    "",
    "Supercalifragilisticexpialidocious",
    "ÉTÉ 2024 中文 naïve",
    "a " * 70,
    ["", "the", "THE"],
]


def test_unidirectional_crf_cnn_tagger_export_tags_like_its_run(tagger):
    task, fp32, int8 = tagger
    eager, exported = rnnlab.load(task.run_dir), rnnlab.load(fp32)
    assert exported.tag(SENTENCES) == eager.tag(SENTENCES)
    quantized = rnnlab.load(int8).tag(SENTENCES)
    assert [t.tokens for t in quantized] == [t.tokens for t in eager.tag(SENTENCES)]
    assert all(tag in task.tagset.itos for t in quantized for tag in t.tags)
    assert [len(t.tags) for t in quantized] == [len(t.tokens) for t in quantized]


@pytest.mark.parametrize("which", ["translator", "tagger", "language_model"])
def test_an_export_describes_itself_as_its_run_does(request, which):
    """What ``GET /v1/models`` shows: an export adds its folder to the run's facts."""
    fixture = request.getfixturevalue(which)
    run_dir = fixture[0].run_dir if which == "tagger" else fixture[0]
    want = rnnlab.load(run_dir).describe()
    got = rnnlab.load(fixture[1]).describe()
    assert {key: got.get(key) for key in want} == want
    assert got["format"] == "onnx"


# ---------------------------------------------------------------------------------------------------
# Pretrained vectors


def test_vectors_trained_by_rnnlab_read_as_gensim_reads_them_unicode_and_wide(tmp_path):
    pytest.importorskip("gensim")
    from gensim.models import KeyedVectors

    from rnnlab.data.embeddings import inspect_vectors, iter_vectors
    from rnnlab.embeddings_training import train_vectors

    text = tmp_path / "a.txt"
    text.write_text(
        "naïve café 中文 Ωmega\u00a0x word\u2009y ü\n" * 5 + "the cat sat\n" * 3, "utf-8"
    )
    for dim in (4, 400):  # 400: a text line of more than 4 kB
        out = train_vectors([text], tmp_path / f"v{dim}.txt", dim=dim, epochs=1, min_count=1)
        assert inspect_vectors(out.path).format == "word2vec_text"
        reference = KeyedVectors.load_word2vec_format(str(out.path), binary=False)
        read = dict(iter_vectors(out.path))
        assert list(read) == reference.index_to_key
        assert {"naïve", "中文", "Ωmega", "ü"} <= set(read)
        for word, vector in read.items():
            np.testing.assert_array_equal(vector, reference[word])


def test_a_wanted_word_with_spaces_is_read(tmp_path):
    from rnnlab.data.embeddings import iter_vectors

    path = tmp_path / "v.txt"
    path.write_text("a 1 2\nnew york 3 4\n", encoding="utf-8")
    assert [word for word, _ in iter_vectors(path)] == ["a", "new york"]
    read = dict(iter_vectors(path, lambda word: word == "new york"))
    np.testing.assert_array_equal(read["new york"], [3.0, 4.0])


def test_only_conllu_names_are_read_as_treebanks(tmp_path):
    from rnnlab.embeddings_training import TextCorpus

    plain = tmp_path / "notes.conllu.txt"
    plain.write_text("hello world\n", encoding="utf-8")
    assert list(TextCorpus([plain])) == [["hello", "world"]]


def test_a_min_count_that_leaves_no_word_is_a_one_line_error(tmp_path):
    pytest.importorskip("gensim")
    from rnnlab.embeddings_training import train_vectors

    text = tmp_path / "a.txt"
    text.write_text("one two three\n", encoding="utf-8")
    with pytest.raises(RnnlabError) as info:
        train_vectors([text], tmp_path / "v.txt", dim=4, epochs=1, min_count=2)
    assert str(info.value) == "no word occurs --min-count 2 times in the input"
    assert not (tmp_path / "v.txt").exists()
