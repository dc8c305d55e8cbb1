"""``rnnlab.serve.models``: model names, the registry's loading and queues, and ``run_batch``.

References: the README's serving section for names ("a model's name is its directory's name, or
``NAME=PATH``") with ``pathlib`` for a directory's name; the inference API called directly
(``translate``, ``tag``, ``generate`` of the loaded models) for what a batch must return, since the
README promises "a request's answer is the one it would get alone"; the module's docstrings for
loading ("a failure is kept as a one-line message"); and prometheus_client's parser for the batch
sizes the queues report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import rnnlab
from rnnlab.errors import RnnlabError
from rnnlab.inference import LanguageModel, Tagger, Translator
from rnnlab.serve.metrics import ServeMetrics
from rnnlab.serve.models import ModelRegistry, ModelSpec, ServedModel, parse_model_spec, run_batch
from rnnlab.serve.requests import DecodeSettings, GenerateRequest
from rnnlab.serve.settings import ServeSettings


@pytest.fixture(scope="module")
def translator(translator_run: Path) -> Translator:
    model = rnnlab.load(translator_run, device="cpu")
    assert isinstance(model, Translator)
    return model


@pytest.fixture(scope="module")
def tagger(tagger_run: Path) -> Tagger:
    model = rnnlab.load(tagger_run, device="cpu")
    assert isinstance(model, Tagger)
    return model


@pytest.fixture(scope="module")
def language_model(lm_run: Path) -> LanguageModel:
    model = rnnlab.load(lm_run, device="cpu")
    assert isinstance(model, LanguageModel)
    return model


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["runs/fra", "runs/fra/", "/srv/models/pos", "tm", "runs/été", "../up/one"]
)
def test_a_path_alone_is_named_after_its_directory(text: str) -> None:
    assert parse_model_spec(text) == ModelSpec(name=Path(text).name, path=Path(text))


@pytest.mark.parametrize(
    "text,name,path",
    [
        ("tm=runs/timemachine", "tm", "runs/timemachine"),
        ("fra=runs/fra/", "fra", "runs/fra"),
        ("é=runs/x", "é", "runs/x"),
        # Only the first '=' separates the name: a path may contain '=' after a name.
        ("lr=runs/lr=0.01", "lr", "runs/lr=0.01"),
        # An empty name is parsed as given; `rnnlab serve` refuses it (test_lifecycle.py).
        ("=runs/x", "", "runs/x"),
    ],
)
def test_name_equals_path(text: str, name: str, path: str) -> None:
    assert parse_model_spec(text) == ModelSpec(name=name, path=Path(path))


def test_a_name_with_a_slash_is_refused_or_reachable(
    start_server: Any, translator_run: Path
) -> None:
    try:
        server = start_server(f"a/b={translator_run}")
    except AssertionError as exc:  # the server exited at once: fine if it says why
        assert "a/b" in str(exc)
        return
    try:
        listed = [m["name"] for m in httpx.get(f"{server.url}/v1/models").json()["models"]]
        assert listed == ["a/b"]
        response = httpx.post(f"{server.url}/v1/models/a%2Fb/translate", json={"text": ["a b"]})
        assert response.status_code == 200, response.text
    finally:
        server.stop()


# --- loading -------------------------------------------------------------------------------------


def registry_of(specs: list[ModelSpec], loader: Any, **settings: Any) -> ModelRegistry:
    return ModelRegistry(
        specs, settings=ServeSettings(**settings), metrics=ServeMetrics(), loader=loader
    )


def test_load_all_loads_every_model_in_order_and_is_then_ready(tmp_path: Path) -> None:
    specs = [ModelSpec("b", tmp_path / "b"), ModelSpec("a", tmp_path / "a")]
    loaded: list[Path] = []

    def loader(path: Path) -> Any:
        loaded.append(path)
        return f"model at {path.name}"

    registry = registry_of(specs, loader)
    assert not registry.ready and list(registry.models) == ["b", "a"]
    registry.load_all()
    assert loaded == [tmp_path / "b", tmp_path / "a"]
    assert registry.ready and registry.failure is None
    assert [m.model for m in registry.models.values()] == ["model at b", "model at a"]
    # Queues need the event loop: they come later, from start_queues.
    assert all(m.queue is None for m in registry.models.values())


def test_a_failed_load_is_kept_and_the_registry_is_not_ready(tmp_path: Path) -> None:
    def loader(path: Path) -> Any:
        if path.name == "broken":
            raise RnnlabError(f"{path}: weights do not fit the configured model")
        return "model"

    specs = [ModelSpec("fine", tmp_path / "fine"), ModelSpec("broken", tmp_path / "broken")]
    registry = registry_of(specs, loader)
    with pytest.raises(RnnlabError):
        registry.load_all()
    assert not registry.ready
    assert registry.failure == f"{tmp_path / 'broken'}: weights do not fit the configured model"


@pytest.mark.parametrize(
    "error",
    [
        # PyTorch's state-dict errors are multi-line, for example.
        RuntimeError("Error(s) in loading state_dict:\n\tsize mismatch for embed.weight"),
        KeyError(),
    ],
    ids=["multi-line", "no-message"],
)
def test_a_failure_is_kept_as_a_one_line_message(tmp_path: Path, error: Exception) -> None:
    def loader(path: Path) -> Any:
        raise error

    registry = registry_of([ModelSpec("m", tmp_path)], loader)
    with pytest.raises(type(error)):
        registry.load_all()
    assert registry.failure and "\n" not in registry.failure


# --- run_batch: a batch gives what each request would get alone ---------------------------------


def test_run_batch_translates_with_the_batch_key_settings(translator: Translator) -> None:
    lines = ["a b c d", "", "h g f", "e"]
    key = DecodeSettings(beam=3, n_best=2, attention=True)
    got = run_batch(translator, key, lines)
    want = translator.translate(lines, beam=3, n_best=2, attention=True)
    assert [t.text for t in got] == [t.text for t in want]
    assert [[text for text, _ in t.n_best] for t in got] == [
        [text for text, _ in t.n_best] for t in want
    ]
    for got_one, want_one in zip(got, want, strict=True):
        if want_one.attention is None:
            assert got_one.attention is None
        else:
            assert got_one.attention is not None
            assert got_one.attention.src_tokens == want_one.attention.src_tokens


def test_run_batch_tags(tagger: Tagger) -> None:
    words = [["The", "dog", "barked", "."], [], ["Is", "it", "late", "?"]]
    got = run_batch(tagger, ("tag",), words)
    want = tagger.tag(words)
    assert [(s.tokens, s.tags) for s in got] == [(s.tokens, s.tags) for s in want]


def test_run_batch_keeps_each_generation_error_in_its_own_slot(
    language_model: LanguageModel,
) -> None:
    requests = [
        GenerateRequest(prefix="the", length=8, temperature=0.0),
        GenerateRequest(prefix="XYZ", length=3),  # characters the model never saw
        GenerateRequest(prefix="t", length=12, temperature=1.0, top_k=3, seed=5),
    ]
    got = run_batch(language_model, ("generate", 0), requests)
    assert len(got) == 3
    assert got[0] == language_model.generate("the", length=8, temperature=0)
    assert isinstance(got[1], RnnlabError) and "never seen" in str(got[1])
    assert got[2] == language_model.generate("t", length=12, temperature=1.0, top_k=3, seed=5)


def test_every_generation_gets_a_batch_key_of_its_own(tmp_path: Path) -> None:
    served = ServedModel("tm", tmp_path)
    keys = [served.generation_key() for _ in range(50)]
    assert len(set(keys)) == len(keys)


# --- queues --------------------------------------------------------------------------------------


def batch_sizes(metrics: ServeMetrics, model: str) -> dict[str, float]:
    """The model's batch-size histogram samples: count, sum and each bucket by its ``le``."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        if family.name != "rnnlab_batch_sentences":
            continue
        for sample in family.samples:
            if sample.labels.get("model") != model:
                continue
            suffix = sample.name.removeprefix("rnnlab_batch_sentences_")
            found[f"le={sample.labels['le']}" if suffix == "bucket" else suffix] = sample.value
    return found


@pytest.fixture
def registry(
    translator: Translator,
    tagger: Tagger,
    language_model: LanguageModel,
    translator_run: Path,
    tagger_run: Path,
    lm_run: Path,
) -> Iterator[ModelRegistry]:
    models = {translator_run: translator, tagger_run: tagger, lm_run: language_model}
    registry = registry_of(
        [
            ModelSpec("reverse", translator_run),
            ModelSpec("pos", tagger_run),
            ModelSpec("tm", lm_run),
        ],
        models.__getitem__,
        max_batch_sentences=5,
        max_wait_ms=30,
        max_queue=50,
    )
    registry.load_all()
    yield registry


def test_start_queues_gives_each_model_a_queue_with_the_settings(registry: ModelRegistry) -> None:
    async def check() -> None:
        registry.start_queues()
        try:
            for served in registry.models.values():
                assert served.queue is not None
                assert served.queue.max_batch == 5
                assert served.queue.max_wait_s == pytest.approx(0.030)
                assert served.queue.max_queue == 50
        finally:
            await registry.stop_queues()

    asyncio.run(check())


def test_queued_requests_are_batched_and_answered_as_alone(
    registry: ModelRegistry, translator: Translator, tagger: Tagger, language_model: LanguageModel
) -> None:
    first, second = ["a b", "c d e", "h"], ["g f", "", "b b a", "e d c b"]
    words = [["The", "dog"], ["Is", "it", "late", "?"]]
    generation = GenerateRequest(prefix="the q", length=6, temperature=0.0)

    async def submit_all() -> list[Any]:
        registry.start_queues()
        try:
            reverse, pos, tm = (
                registry.models["reverse"],
                registry.models["pos"],
                registry.models["tm"],
            )
            assert reverse.queue and pos.queue and tm.queue
            key = DecodeSettings()
            # Both translate requests are queued before the worker looks: 7 sentences of one key
            # make a full batch of 5, then the other 2.
            return await asyncio.gather(
                reverse.queue.submit(key, first),
                reverse.queue.submit(key, second),
                pos.queue.submit(("tag",), words),
                tm.queue.submit(tm.generation_key(), [generation]),
            )
        finally:
            await registry.stop_queues()

    translated_first, translated_second, tagged, [generated] = asyncio.run(submit_all())
    assert [t.text for t in translated_first] == [t.text for t in translator.translate(first)]
    assert [t.text for t in translated_second] == [t.text for t in translator.translate(second)]
    assert [s.tags for s in tagged] == [s.tags for s in tagger.tag(words)]
    assert generated == language_model.generate("the q", length=6, temperature=0)

    sizes = batch_sizes(registry.metrics, "reverse")
    assert (sizes["count"], sizes["sum"]) == (2, 7)
    assert (sizes["le=4.0"], sizes["le=8.0"]) == (1, 2)  # one batch of 2, one of 5
    assert batch_sizes(registry.metrics, "pos")["sum"] == 2
    assert batch_sizes(registry.metrics, "tm")["sum"] == 1
