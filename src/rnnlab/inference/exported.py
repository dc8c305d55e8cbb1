"""Export folders behind the inference interface: ``rnnlab.load(EXPORT_DIR)``.

An export folder is decoded by its ONNX Runtime runtime (``rnnlab.export.runtime``), which needs no
PyTorch and returns its own plain results. These classes give it the interface of ``Translator``,
``Tagger`` and ``LanguageModel`` (they are subclasses, so a server or the CLI cannot tell them
apart), turn the runtime's errors into ``RnnlabError`` and its numpy attention into tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rnnlab.export.loading import open_export, runtime_call
from rnnlab.inference.inputs import string_argument, text_lines, token_sentences
from rnnlab.inference.language_model import LanguageModel, generate_options
from rnnlab.inference.results import TaggedSentence, Translation
from rnnlab.inference.tagger import Tagger
from rnnlab.inference.translator import Translator, translate_options
from rnnlab.rundir import read_run_config
from rnnlab.tasks.seq2seq import AttentionMatrix


def _with_folder(facts: dict[str, Any], folder: Path) -> dict[str, Any]:
    return {**facts, "format": "onnx", "export": str(folder)}


class ExportedTranslator(Translator):
    """An exported translator: the same ``translate`` as a run's, computed by ONNX Runtime."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.batch_size = runtime.batch_size
        self.config = read_run_config(runtime.folder)

    @property
    def has_attention(self) -> bool:
        return bool(self.runtime.has_attention)

    @property
    def default_beam(self) -> int:
        return int(self.runtime.default_beam)

    @property
    def attention_kind(self) -> str:
        return self.config.model.attention

    def describe(self) -> dict[str, Any]:
        config = self.config
        return _with_folder(
            {
                "task": self.task_name,
                "src_lang": config.data.src_lang,
                "tgt_lang": config.data.tgt_lang,
                "src_vocab_size": len(self.runtime.src_itos),
                "tgt_vocab_size": len(self.runtime.tgt_itos),
                "cell": config.model.cell,
                "attention": config.model.attention,
                "has_attention": self.has_attention,
            },
            self.runtime.folder,
        )

    def translate(
        self,
        lines: list[str],
        *,
        beam: int = 1,
        n_best: int = 1,
        length_penalty: float | None = None,
        max_len: int | None = None,
        attention: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> list[Translation]:
        lines = text_lines(lines, "translate")
        beam, n_best, length_penalty, max_len = translate_options(
            beam, n_best, length_penalty, max_len
        )
        results = runtime_call(
            self.runtime.translate,
            lines,
            beam=beam,
            n_best=n_best,
            length_penalty=length_penalty,
            max_len=max_len,
            attention=attention and self.has_attention,
            batch_size=self.batch_size,
            progress=progress,
        )
        return [
            Translation(
                text=r.text,
                tokens=r.tokens,
                score=r.score,
                n_best=list(r.n_best),
                attention=(
                    AttentionMatrix(
                        src_tokens=r.attention.src_tokens,
                        out_tokens=r.attention.out_tokens,
                        weights=torch.from_numpy(r.attention.weights),
                    )
                    if r.attention is not None
                    else None
                ),
            )
            for r in results
        ]


class ExportedTagger(Tagger):
    """An exported tagger (Viterbi decoding of a CRF in numpy)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.batch_size = runtime.batch_size
        self.config = read_run_config(runtime.folder)

    @property
    def tag_column(self) -> str:
        return self.config.data.tag_column

    def describe(self) -> dict[str, Any]:
        facts = {
            **runtime_call(self.runtime.describe),
            "tag_column": self.tag_column,
            "cell": self.config.model.cell,
        }
        return _with_folder(facts, self.runtime.folder)

    def tag(
        self,
        sentences: list[str] | list[list[str]],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> list[TaggedSentence]:
        sentences = token_sentences(sentences, "tag")
        results = runtime_call(
            self.runtime.tag, sentences, batch_size=self.batch_size, progress=progress
        )
        return [TaggedSentence(tokens=r.tokens, tags=r.tags) for r in results]


class ExportedLanguageModel(LanguageModel):
    """An exported language model: generation from the step graph, perplexity from the score graph."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.config = read_run_config(runtime.folder)

    def describe(self) -> dict[str, Any]:
        facts = {**runtime_call(self.runtime.describe), "cell": self.config.model.cell}
        return _with_folder(facts, self.runtime.folder)

    def generate(
        self,
        prefix: str,
        *,
        length: int,
        temperature: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
    ) -> str:
        prefix, length, temperature, top_k, seed = generate_options(
            prefix, length, temperature, top_k, seed
        )
        return runtime_call(
            self.runtime.generate,
            prefix,
            length=length,
            temperature=temperature,
            top_k=top_k,
            seed=seed,
        )

    def perplexity(self, text: str) -> float:
        return float(runtime_call(self.runtime.perplexity, string_argument(text, "text")))


EXPORTED: dict[str, Callable[[Any], Translator | Tagger | LanguageModel]] = {
    "seq2seq": ExportedTranslator,
    "tagger": ExportedTagger,
    "lm": ExportedLanguageModel,
}


def load_export(path: str | Path, *, threads: int = 0) -> Translator | Tagger | LanguageModel:
    """The inference object of an export folder (its manifest and file hashes checked first)."""
    runtime = open_export(path, num_threads=threads)
    return EXPORTED[runtime.task_name](runtime)
