"""The models a server holds: named, loaded in the background, each with its batching queue.

``GET /readyz`` answers 503 until every model is loaded; loading runs on a thread so the server
already answers ``/healthz`` (and says it is not ready) while large models load.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnlab.inference import InferenceModel, LanguageModel, Tagger, Translator
from rnnlab.serve.batching import BatchQueue
from rnnlab.serve.metrics import ServeMetrics
from rnnlab.serve.requests import DecodeSettings, GenerateRequest
from rnnlab.serve.settings import ServeSettings

Loader = Callable[[Path], InferenceModel]


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""A model's name is a segment of its URLs (``/v1/models/NAME/translate``), so it takes no ``/``,
spaces or characters a client would have to escape."""


@dataclass
class ModelSpec:
    name: str
    path: Path


def parse_model_spec(text: str) -> ModelSpec:
    """``NAME=PATH``, or ``PATH`` named after its directory."""
    name, sep, path = text.partition("=")
    if not sep:
        path = text
        name = Path(text.rstrip("/")).name
    return ModelSpec(name=name, path=Path(path))


def run_batch(model: InferenceModel, key: Hashable, payloads: list[Any]) -> list[Any]:
    """Decode one batch on the model thread; the key carries the shared decoding settings."""
    if isinstance(key, DecodeSettings):
        assert isinstance(model, Translator)
        return list(
            model.translate(
                payloads,
                beam=key.beam,
                n_best=key.n_best,
                attention=key.attention,
                max_len=key.max_len,
                length_penalty=key.length_penalty,
            )
        )
    if isinstance(model, Tagger):
        return list(model.tag(payloads))
    assert isinstance(model, LanguageModel)
    results: list[Any] = []
    for request in payloads:
        assert isinstance(request, GenerateRequest)
        try:
            results.append(
                model.generate(
                    request.prefix,
                    length=request.length,
                    temperature=request.temperature,
                    top_k=request.top_k,
                    seed=request.seed,
                )
            )
        except Exception as exc:  # one request's mistake (an unseen character) is its own
            results.append(exc)
    return results


@dataclass
class ServedModel:
    name: str
    path: Path
    model: InferenceModel | None = None
    queue: BatchQueue | None = None
    _generations: itertools.count = field(default_factory=itertools.count)

    def generation_key(self) -> Hashable:
        """A key of its own: generations differ in prefix, length and seed, so each runs alone."""
        return ("generate", next(self._generations))


class ModelRegistry:
    """Named models and their queues; ``ready`` once every model is loaded."""

    def __init__(
        self,
        specs: list[ModelSpec],
        *,
        settings: ServeSettings,
        metrics: ServeMetrics,
        loader: Loader,
    ) -> None:
        self.models = {spec.name: ServedModel(spec.name, spec.path) for spec in specs}
        self.settings = settings
        self.metrics = metrics
        self.loader = loader
        self.ready = False
        self.failure: str | None = None

    def load_all(self) -> None:
        """Load every model (on a background thread); a failure is kept as a one-line message."""
        try:
            for served in self.models.values():
                served.model = self.loader(served.path)
        except Exception as exc:
            self.failure = " ".join(str(exc).split()) or type(exc).__name__
            raise
        self.ready = True

    def start_queues(self) -> None:
        """Give each loaded model its queue and worker (inside the event loop)."""
        settings = self.settings
        for served in self.models.values():
            model = served.model
            assert model is not None
            queue = BatchQueue(
                run_batch=functools.partial(run_batch, model),
                max_batch=settings.max_batch_sentences,
                max_wait_s=settings.max_wait_ms / 1000.0,
                max_queue=settings.max_queue,
                on_batch=self.metrics.batch_size.labels(served.name).observe,
                on_depth=self.metrics.queue_depth.labels(served.name).set,
                thread_name=f"rnnlab-{served.name}",
            )
            queue.start()
            served.queue = queue

    async def stop_queues(self) -> None:
        for served in self.models.values():
            if served.queue is not None:
                await served.queue.stop()
