"""Argument types at the public Python API: what ``rnnlab.load``, ``Translator.translate``,
``Tagger.tag``, ``LanguageModel.generate`` / ``perplexity`` (an export folder's refusal of
overrides included) and ``rnnlab.inference.load_ensemble`` do with plausible but wrong, or unusual, arguments.

Checked: one ``str`` or ``bytes`` where a list is expected, tuples and generators instead of lists,
empty lists, ``pathlib.Path`` against ``str`` paths, lists holding a non-string, pre-tokenised
sentences (which the README allows for ``tag``), ``overrides`` given as one string or holding a
non-string, numbers given as strings or floats (``beam``, ``n_best``, ``max_len``, ``length``,
``top_k``, ``seed``, ``threads``), out-of-range numbers and device strings. Each call either works
as documented or fails with a ``TypeError``, ``ValueError`` or ``RnnlabError`` that names the
argument; it never returns one result per character, nor fails inside PyTorch or NumPy.

References: README.md ("Python API": an empty line gives an empty translation, ``tag`` takes
lines or lists of tokens, ``temperature=0`` is greedy, ``load_ensemble`` takes a list of runs),
``rnnlab.inference.inputs.require_list_of_texts`` (the one-string rule), the docstrings of
``rnnlab.inference.loading.load`` and ``rnnlab.inference.ensemble.load_ensemble``, and the
``rnnlab generate --seed`` rule (0 to 2^63 - 1) in ``rnnlab.cli.inference_commands``.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import rnnlab
from rnnlab.errors import RnnlabError
from rnnlab.inference import load_ensemble

CLEAR = (TypeError, ValueError, RnnlabError)
"""What a caller's mistake may raise."""

SENTENCES = ["is it too late now", "the dog barks"]


@pytest.fixture(scope="module")
def translator(translator_run: Path) -> rnnlab.Translator:
    return rnnlab.load(translator_run, device="cpu")


@pytest.fixture(scope="module")
def tagger(tagger_run: Path) -> rnnlab.Tagger:
    return rnnlab.load(tagger_run, device="cpu")


@pytest.fixture(scope="module")
def lm(lm_run: Path) -> rnnlab.LanguageModel:
    return rnnlab.load(lm_run, device="cpu")


def texts(translations: list) -> list[str]:
    return [t.text for t in translations]


def tagged(sentences: list) -> list[tuple[list[str], list[str]]]:
    return [(s.tokens, s.tags) for s in sentences]


# ---------------------------------------------------------------------------------------------------
# Translator.translate: the lines


def test_translate_refuses_bytes_like_one_string(translator):
    with pytest.raises(TypeError, match="list of lines"):
        translator.translate(b"a b c")


def test_translate_takes_a_tuple_like_a_list(translator):
    lines = ["a b c", "d e"]
    assert texts(translator.translate(tuple(lines))) == texts(translator.translate(lines))


def test_translate_an_empty_list_gives_no_translations(translator):
    assert translator.translate([]) == []
    assert translator.translate([], beam=2, n_best=2) == []


def test_an_empty_line_gives_an_empty_translation_with_n_best(translator):
    out = translator.translate(["a b c", "", "   ", "d e"], beam=2, n_best=2)
    assert len(out) == 4
    for empty in (out[1], out[2]):
        assert (empty.text, empty.tokens, empty.n_best) == ("", [], [])
    assert out[0].text and len(out[0].n_best) == 2
    assert out[3].text and len(out[3].n_best) == 2


def test_translate_takes_a_generator_as_tag_does(translator):
    lines = ["a b c", "d e"]
    try:
        got = translator.translate(line for line in lines)
    except TypeError as error:
        assert "translate" in str(error), error
    else:
        assert texts(got) == texts(translator.translate(lines))


@pytest.mark.parametrize("item", [None, 3, ["a", "b"], b"a b"], ids=repr)
def test_translate_refuses_a_line_that_is_not_a_string(translator, item):
    with pytest.raises(TypeError, match="translate"):
        translator.translate(["a b", item])


# ---------------------------------------------------------------------------------------------------
# Translator.translate: the numbers


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"beam": 0}, "beam"),
        ({"beam": -2}, "beam"),
        ({"beam": 2, "n_best": 0}, "n_best"),
        ({"beam": 2, "n_best": 3}, "n_best"),
        ({"max_len": 0}, "max_len"),
        ({"max_len": -1}, "max_len"),
        ({"length_penalty": -1.0}, "length_penalty"),
        ({"length_penalty": math.nan}, "length_penalty"),
    ],
    ids=str,
)
def test_translate_refuses_an_out_of_range_option_by_name(translator, options, name):
    with pytest.raises(RnnlabError, match=name):
        translator.translate(["a b c"], **options)


def test_translate_with_max_len_one_stops_after_one_token(translator):
    (out,) = translator.translate(["a b c"], max_len=1)
    assert len(out.tokens) <= 1


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"beam": 2.0}, "beam"),
        ({"beam": 2, "n_best": 2.0}, "n_best"),
        ({"max_len": 5.0}, "max_len"),
        ({"beam": "2"}, "beam"),
        ({"beam": 3, "n_best": "3"}, "n_best"),
        ({"max_len": "5"}, "max_len"),
        ({"length_penalty": "0.5"}, "length_penalty"),
    ],
    ids=str,
)
def test_translate_takes_or_names_a_number_of_the_wrong_type(translator, options, name):
    integral = {k: int(float(v)) if k != "length_penalty" else float(v) for k, v in options.items()}
    try:
        got = translator.translate(["a b c"], **options)
    except CLEAR as error:
        assert name in str(error), error
    else:
        want = translator.translate(["a b c"], **integral)
        assert [t.n_best for t in got] == [t.n_best for t in want]


# ---------------------------------------------------------------------------------------------------
# Tagger.tag and an ensemble


@pytest.fixture(params=["run", "ensemble"])
def any_tagger(request, tagger_run):
    if request.param == "ensemble":
        return load_ensemble([tagger_run, tagger_run], device="cpu")
    return rnnlab.load(tagger_run, device="cpu")


@pytest.mark.parametrize("value", ["is it", b"is it"], ids=repr)
def test_tag_refuses_one_string_or_bytes(any_tagger, value):
    with pytest.raises(TypeError, match="list of lines"):
        any_tagger.tag(value)


def test_tag_takes_lists_of_tokens_as_the_readme_says(any_tagger):
    from_lines = tagged(any_tagger.tag(SENTENCES))
    from_tokens = tagged(any_tagger.tag([s.split() for s in SENTENCES]))
    from_tuples = tagged(any_tagger.tag([tuple(s.split()) for s in SENTENCES]))
    assert from_tokens == from_lines == from_tuples
    assert [tokens for tokens, _ in from_lines] == [s.split() for s in SENTENCES]
    assert all(len(tags) == len(tokens) for tokens, tags in from_lines)


def test_tag_takes_a_tuple_and_a_generator_like_a_list(any_tagger):
    want = tagged(any_tagger.tag(SENTENCES))
    assert tagged(any_tagger.tag(tuple(SENTENCES))) == want
    assert tagged(any_tagger.tag(s for s in SENTENCES)) == want


def test_tag_an_empty_list_and_empty_sentences(any_tagger):
    assert any_tagger.tag([]) == []
    out = tagged(any_tagger.tag(["", [], "is it"]))
    assert out[:2] == [([], []), ([], [])]
    assert out[2][0] == ["is", "it"] and len(out[2][1]) == 2


@pytest.mark.parametrize(
    "sentences", [["is it", None], ["is it", 3], [b"is it"], [["is", 3]], [["is", None]]], ids=repr
)
def test_tag_refuses_a_sentence_that_is_not_text(tagger, sentences):
    with pytest.raises(TypeError, match="tag"):
        tagger.tag(sentences)


# ---------------------------------------------------------------------------------------------------
# LanguageModel.generate and perplexity


def test_generate_with_temperature_zero_is_greedy_whatever_the_seed(lm):
    first = lm.generate("the", length=8, temperature=0, seed=1)
    assert lm.generate("the", length=8, temperature=0, seed=2) == first
    assert lm.generate("the", length=8, temperature=0) == first
    assert first.startswith("the") and len(first) == len("the") + 8


def test_generate_with_length_zero_returns_the_prefix(lm):
    assert lm.generate("the", length=0, seed=1) == "the"


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"length": -1}, "length"),
        ({"length": 5, "temperature": -1.0}, "temperature"),
        ({"length": 5, "temperature": math.nan}, "temperature"),
        ({"length": 5, "top_k": -1}, "top-k"),
    ],
    ids=str,
)
def test_generate_refuses_an_out_of_range_option_by_name(lm, options, name):
    with pytest.raises(RnnlabError, match=name):
        lm.generate("the", seed=1, **options)


def test_perplexity_refuses_a_text_too_short(lm):
    with pytest.raises(RnnlabError, match="too short"):
        lm.perplexity("")


@pytest.mark.parametrize("prefix", [["the"], b"the"], ids=repr)
def test_generate_takes_or_names_a_prefix_that_is_not_a_string(lm, prefix):
    try:
        got = lm.generate(prefix, length=5, temperature=0)
    except CLEAR as error:
        assert "never seen" not in str(error) and "prefix" in str(error), error
    else:
        assert got == lm.generate("the", length=5, temperature=0)


@pytest.mark.parametrize("text", [["the quick brown fox"], b"the quick brown fox"], ids=repr)
def test_perplexity_names_a_text_that_is_not_a_string(lm, text):
    with pytest.raises(TypeError, match="perplexity|text"):
        lm.perplexity(text)


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"length": 5.0}, "length"),
        ({"length": "5"}, "length"),
        ({"length": 5, "top_k": 2.0}, "top_k|top-k"),
        ({"length": 5, "top_k": "2"}, "top_k|top-k"),
        ({"length": 5, "temperature": "0.5"}, "temperature"),
        ({"length": 5, "seed": "1"}, "seed"),
        ({"length": 5, "seed": 1.5}, "seed"),
    ],
    ids=str,
)
def test_generate_names_a_number_of_the_wrong_type(lm, options, name):
    with pytest.raises(CLEAR, match=name):
        lm.generate("the", **{"seed": 1, **options})


@pytest.mark.parametrize("seed", [-1, 2**64], ids=repr)
def test_generate_refuses_a_seed_out_of_range_by_name(lm, seed):
    with pytest.raises(CLEAR, match="seed"):
        lm.generate("the", length=5, seed=seed)


# ---------------------------------------------------------------------------------------------------
# rnnlab.load: paths, overrides, devices, threads


def test_load_takes_a_str_and_a_path_alike(tagger_run):
    by_str = rnnlab.load(str(tagger_run), device="cpu")
    by_path = rnnlab.load(Path(tagger_run), device="cpu")
    assert by_str.describe() == by_path.describe()
    assert tagged(by_str.tag(SENTENCES)) == tagged(by_path.tag(SENTENCES))


def test_load_refuses_a_missing_directory_in_one_line(tmp_path):
    with pytest.raises(RnnlabError, match="no such run directory"):
        rnnlab.load(tmp_path / "missing", device="cpu")


@pytest.mark.parametrize(
    "overrides",
    [["decode.max_len=3"], ("decode.max_len=3",), (s for s in ["decode.max_len=3"])],
    ids=["list", "tuple", "generator"],
)
def test_load_takes_overrides_as_any_sequence_of_settings(translator_run, overrides):
    model = rnnlab.load(translator_run, device="cpu", overrides=overrides)
    assert model.task.config.decode.max_len == 3


def test_load_names_an_override_without_a_value(translator_run):
    with pytest.raises(RnnlabError, match="decode.max_len"):
        rnnlab.load(translator_run, device="cpu", overrides=["decode.max_len"])


@pytest.mark.parametrize("loader", ["load", "load_ensemble"])
def test_overrides_given_as_one_string_are_not_read_per_character(tagger_run, loader):
    opener = rnnlab.load if loader == "load" else load_ensemble
    try:
        model = opener(tagger_run, device="cpu", overrides="decode.batch_size=3")
    except CLEAR as error:
        assert "'d'" not in str(error) and "override" in str(error), error
    else:
        assert model.batch_size == 3


def test_an_export_refusing_overrides_names_the_whole_setting(tmp_path):
    from rnnlab.export.loading import MANIFEST

    (tmp_path / MANIFEST).write_text("{}", encoding="utf-8")  # refused before it is read
    with pytest.raises(RnnlabError) as caught:
        rnnlab.load(tmp_path, overrides="decode.batch_size=3")
    assert "decode.batch_size=3" in str(caught.value) or "overrides" in str(caught.value)


@pytest.mark.parametrize("item", [3, None], ids=repr)
def test_an_override_that_is_not_a_string_is_named(tagger_run, item):
    with pytest.raises(CLEAR, match="override"):
        rnnlab.load(tagger_run, device="cpu", overrides=[item])


def test_load_device_strings(tagger_run):
    assert rnnlab.load(tagger_run, device="auto").device.type == (
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    assert rnnlab.load(tagger_run, device="cpu").device == torch.device("cpu")
    with pytest.raises(RnnlabError, match="gpu"):
        rnnlab.load(tagger_run, device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_load_on_cuda_without_cuda_is_refused(tagger_run, device):
    with pytest.raises(RnnlabError, match="no CUDA device"):
        rnnlab.load(tagger_run, device=device)
    with pytest.raises(RnnlabError, match="no CUDA device"):
        load_ensemble(tagger_run, device=device)


def test_load_refuses_negative_threads(tagger_run):
    with pytest.raises(RnnlabError, match="threads"):
        rnnlab.load(tagger_run, device="cpu", threads=-1)


@pytest.mark.parametrize("threads", [1.5, "1"], ids=repr)
def test_load_names_threads_of_the_wrong_type(tagger_run, threads):
    try:
        with pytest.raises(CLEAR, match="threads"):
            rnnlab.load(tagger_run, device="cpu", threads=threads)
    finally:
        torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------
# load_ensemble: the paths


@pytest.mark.parametrize("kind", [str, Path])
def test_one_path_is_an_ensemble_of_that_run(tagger_run, kind):
    ensemble = load_ensemble(kind(tagger_run), device="cpu")
    assert len(ensemble.members) == 1
    single = rnnlab.load(tagger_run, device="cpu")
    assert tagged(ensemble.tag(SENTENCES)) == tagged(single.tag(SENTENCES))


def test_an_ensemble_takes_a_tuple_of_paths(tagger_run):
    assert len(load_ensemble((tagger_run, str(tagger_run)), device="cpu").members) == 2


def test_an_ensemble_of_no_paths_is_refused(tagger_run):
    with pytest.raises(RnnlabError, match="at least one"):
        load_ensemble([], device="cpu")


def test_an_ensemble_takes_a_generator_of_paths(tagger_run):
    ensemble = load_ensemble((p for p in [tagger_run, tagger_run]), device="cpu")
    assert len(ensemble.members) == 2


def test_an_ensemble_of_a_bytes_path_is_not_read_per_byte(tagger_run):
    try:
        ensemble = load_ensemble(str(tagger_run).encode(), device="cpu")
    except CLEAR as error:
        assert "not int" not in str(error), error
    else:
        assert len(ensemble.members) == 1
