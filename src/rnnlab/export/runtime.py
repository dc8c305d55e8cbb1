"""Run an exported rnnlab model with numpy and ONNX Runtime only (and sentencepiece where used).

``rnnlab export`` copies this file into every export folder, so the folder alone translates, tags,
generates and scores, without rnnlab or PyTorch installed::

    python EXPORT/runtime.py EXPORT < input.txt        # translate (seq2seq) or tag (tagger)
    python EXPORT/runtime.py EXPORT --prefix "the"     # generate (lm)

It is one file on purpose (a folder should carry one runtime, not a package); its sections follow
the pipeline: the manifest and its checks, text ↔ ids (re-implementing ``rnnlab.data``; tests keep
the two in agreement), then one class per task with the interface of ``rnnlab.inference``:

* ``OnnxTranslator.translate(lines, *, beam, n_best, length_penalty, max_len, attention)``: batched
  greedy search and batched beam search (GNMT length penalty, n-best, max length); a finished
  sentence leaves the batch, exactly as ``rnnlab.decoding.greedy`` and ``rnnlab.decoding.beam``;
* ``OnnxTagger.tag(sentences)``: emissions from ONNX, then the argmax or the CRF's Viterbi path;
* ``OnnxLanguageModel.generate(prefix, *, length, temperature, top_k, seed)`` and ``perplexity``.

Decoder states are lists of arrays whose batch axis the manifest gives; states that a step only
passes through (the attention memory, its keys, the source lengths) are marked ``static``: the step
graph reads them but does not copy them out again.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort  # type: ignore[import-untyped]

MANIFEST = "rnnlab-export.json"
FORMAT = "rnnlab-onnx"
FORMAT_VERSION = 2
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"


def text_table(itos: list[str]) -> dict[str, int]:
    """``rnnlab.data.vocab.text_table``: token → id for text, a spelled ``<pad> <bos> <eos>`` unknown
    (the runtime needs no torch, so it does not import the library's vocabularies)."""
    return {tok: i for i, tok in enumerate(itos) if tok not in (PAD, BOS, EOS)}


class ExportError(ValueError):
    """A problem with an export folder or with what was asked of it; one line, no traceback."""


# ---------------------------------------------------------------------------------------------------
# The folder


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest, after checking every listed file against its sha256."""
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        raise ExportError(f"{folder}: not an rnnlab export folder (no {MANIFEST})") from None
    except OSError as exc:  # a directory, no permission
        raise ExportError(f"{path}: cannot read the manifest ({exc.strerror})") from None
    except (ValueError, RecursionError) as exc:
        raise ExportError(f"{path}: not a valid manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ExportError(f"{path}: not a valid manifest (expected a JSON object)")
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path}: export format {manifest.get('format')!r} v{manifest.get('format_version')!r} "
            f"is not {FORMAT} v{FORMAT_VERSION}; export the run again"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(name, str) and isinstance(digest, str) for name, digest in files.items()
    ):
        raise ExportError(f"{path}: not a valid manifest (files must map file names to sha256)")
    for name, expected in files.items():
        if not name or name in (".", "..") or Path(name).name != name:
            raise ExportError(f"{path}: {name!r} must name a file inside the export folder")
        file = folder / name
        if not file.is_file():
            raise ExportError(f"{file}: missing from the export folder")
        if sha256_of(file) != expected:
            raise ExportError(
                f"{file}: modified since export (sha256 does not match the manifest); "
                "export the run again"
            )
    graphs = manifest.get("graphs")
    if not isinstance(graphs, dict) or not all(
        isinstance(file, str) and file in files for file in graphs.values()
    ):
        # Only files checked against their sha256 above are loaded, and none outside the folder.
        raise ExportError(f"{path}: not a valid manifest (graphs must name files it lists)")
    return manifest


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class ExportedModel:
    """What every task's runtime holds: its folder, the checked manifest, one session per graph."""

    task_name = ""

    def __init__(
        self, folder: str | Path, *, num_threads: int = 0, manifest: dict | None = None
    ) -> None:
        self.folder = Path(folder)
        self.manifest = manifest if manifest is not None else read_manifest(self.folder)
        self.sessions = {}
        for name, file in self.manifest["graphs"].items():
            try:
                self.sessions[name] = _session(self.folder / file, num_threads)
            except Exception as exc:  # noqa: BLE001 - onnxruntime's errors share no base class
                reason = " ".join(str(exc).split())[:300] or type(exc).__name__
                raise ExportError(
                    f"{self.folder / file}: not a loadable ONNX graph ({reason})"
                ) from None


def _json_list(folder: Path, name: str, key: str) -> list[str]:
    """The list of strings under ``key`` in the JSON file ``name`` (a vocabulary, the tags)."""
    path = folder / name
    try:
        values = json.loads(path.read_text(encoding="utf-8"))[key]
    except FileNotFoundError:
        raise ExportError(f"{path}: missing from the export folder") from None
    except OSError as exc:
        raise ExportError(f"{path}: cannot read it ({exc.strerror})") from None
    except (ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ExportError(f"{path}: not a valid {key} file ({exc})") from None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ExportError(f"{path}: {key!r} must be a list of strings")
    return values


def _special_ids(
    folder: Path, manifest: dict[str, Any], names: tuple[str, ...], size: int
) -> list[int]:
    """The manifest's special token ids ``names``, each an index into vocabularies of ``size`` tokens.

    The manifest is the one file no sha256 covers, so an edited id would otherwise open fine and
    fail at the first call inside numpy or ONNX Runtime.
    """
    specials = manifest.get("specials")
    ids: list[int] = []
    for name in names:
        value = specials.get(name) if isinstance(specials, dict) else None
        if type(value) is not int or not 0 <= value < size:
            raise ExportError(
                f"{folder / MANIFEST}: not a valid manifest (specials.{name} must be a token id "
                f"below {size}, got {value!r})"
            )
        ids.append(value)
    return ids


def _graph_width(session: ort.InferenceSession) -> int | None:
    """The last dimension of a graph's first output, where the graph fixes it."""
    width = session.get_outputs()[0].shape[-1]
    return width if isinstance(width, int) else None


# ---------------------------------------------------------------------------------------------------
# Text ↔ tokens (rnnlab.data.text, rnnlab.data.tokenizers, rnnlab.data.lm_corpus)

_NBSP = str.maketrans({"\u202f": " ", "\xa0": " "})
_BEFORE_PUNCT = re.compile(r"(?<=\S)(?=[,.!?])")
_DETOK_PUNCT = re.compile(r" ([,.!?])")
_NON_LETTERS = re.compile(r"[^A-Za-z]+")
_DIGIT = re.compile(r"\d")  # as rnnlab.data.embeddings


def normalize(text: str, mode: str) -> str:
    if mode in ("textbook", "punct"):
        text = text.translate(_NBSP)
        if mode == "textbook":
            text = text.lower()
        return _BEFORE_PUNCT.sub(" ", text)
    return text


def detokenize(tokens: list[str], mode: str) -> str:
    joined = " ".join(tokens)
    return _DETOK_PUNCT.sub(r"\1", joined) if mode != "none" else joined


class WordTokenizer:
    def __init__(self, preprocess: str) -> None:
        self.preprocess = preprocess

    def encode(self, text: str) -> list[str]:
        return normalize(text, self.preprocess).split()

    def decode(self, tokens: list[str]) -> str:
        return detokenize(tokens, self.preprocess)


class SentencePieceTokenizer:
    def __init__(self, path: Path, preprocess: str) -> None:
        import sentencepiece as spm

        try:
            self.processor = spm.SentencePieceProcessor(model_file=str(path))
        except (RuntimeError, OSError) as exc:  # an empty or damaged file: "could not parse"
            reason = " ".join(str(exc).split())[:200]
            raise ExportError(f"{path}: not a valid sentencepiece model ({reason})") from None
        self.preprocess = preprocess

    def encode(self, text: str) -> list[str]:
        return self.processor.encode(normalize(text, self.preprocess), out_type=str)

    def decode(self, tokens: list[str]) -> str:
        text = self.processor.decode_pieces(list(tokens))
        return detokenize(text.split(), self.preprocess) if self.preprocess != "none" else text


def clean_text(text: str, clean: str) -> str:
    return _NON_LETTERS.sub(" ", text).lower() if clean == "timemachine" else text


MAX_LINE_CHARS = 10_000
"""Characters of one input line given to a model; longer ones are cut, with a notice on stderr
(``rnnlab.data.limits``: the same limit, so a run and its export read the same words)."""


def cut_input_lines(text: str) -> list[str]:
    """stdin's lines as ``rnnlab`` reads them: ``text_lines``, each cut to ``MAX_LINE_CHARS``
    characters, counting a first line's byte order mark as rnnlab does (it cuts, then drops it)."""
    bom = int(text.startswith("\ufeff"))
    lines = text_lines(text)
    for number, line in enumerate(lines, start=1):
        extra = bom if number == 1 else 0
        if len(line) + extra > MAX_LINE_CHARS:
            print(
                f"runtime: notice: <stdin>:{number}: line of {len(line) + extra:,} characters cut "
                f"to the first {MAX_LINE_CHARS:,} (the input line limit)",
                file=sys.stderr,
            )
            lines[number - 1] = line[: MAX_LINE_CHARS - extra]
    return lines


def text_lines(text: str) -> list[str]:
    """A text's lines as a file's are read: split at "\n" only, a trailing "\r" and a leading
    byte order mark dropped, no empty line after a final line end (``rnnlab.data.lm_corpus``)."""
    pieces = text.split("\n")
    if pieces[-1] == "":
        pieces.pop()
    if pieces:
        pieces[0] = pieces[0].removeprefix("\ufeff")
    return [piece.rstrip("\r\n") for piece in pieces]


def corpus_tokens(text: str, *, level: str, clean: str) -> list[str]:
    """A text as a language model reads a file: characters with each line's "\n", or words with
    ``<eos>`` per line (``rnnlab.data.lm_corpus._line_tokens``)."""
    tokens: list[str] = []
    for number, line in enumerate(text_lines(text), start=1):
        if level == "char":
            chars = clean_text(line + "\n", clean)
            if clean == "timemachine" and number > 1 and chars.startswith(" "):
                chars = chars[1:]  # the previous line's cleaned text ended in this run's space
            tokens += chars
        else:
            words = clean_text(line, clean).split()
            if words:
                tokens += [*words, EOS]
    return tokens


def tokens_text(tokens: list[str], *, level: str) -> str:
    if level == "char":
        return "".join(tokens)
    pieces: list[str] = []
    for token in tokens:
        if token == EOS:
            pieces.append("\n")
            continue
        if pieces and pieces[-1] != "\n":
            pieces.append(" ")
        pieces.append(token)
    return "".join(pieces)


def _pad(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    out = np.full((len(rows), int(lengths.max())), pad, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, lengths


BEAM_SCORES_BYTES = 16 << 20
"""As ``rnnlab.decoding.beam.BEAM_SCORES_BYTES``."""


def _beam_batch_size(batch_size: int, beam_size: int, vocab_size: int, *, attention: bool) -> int:
    """``rnnlab.decoding.beam.beam_batch_size``: sentences decoded together by beam search."""
    if attention:
        batch_size //= beam_size
    return max(1, min(batch_size, BEAM_SCORES_BYTES // (4 * beam_size * vocab_size)))


def _length_sorted(lengths: list[int], batch_size: int, max_tokens: int = 0) -> list[list[int]]:
    """Batches of indices, shortest first, of at most ``batch_size`` and, with ``max_tokens`` > 0,
    at most ``max_tokens`` padded tokens (``rnnlab.data.batching.sorted_batches``)."""
    batches: list[list[int]] = []
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        full = len(batch) >= max(batch_size, 1)
        if batch and (full or 0 < max_tokens < (len(batch) + 1) * lengths[i]):
            batches.append(batch)
            batch = []
        batch.append(i)
    return batches + [batch] if batch else batches


# ---------------------------------------------------------------------------------------------------
# Results (the fields of rnnlab.inference's results)


@dataclass
class AttentionMatrix:
    src_tokens: list[str]
    out_tokens: list[str]
    """The output tokens, ending in ``<eos>`` unless the search was cut at ``max_len``."""
    weights: np.ndarray
    """(T_out, S); each row sums to 1."""


@dataclass
class Translation:
    text: str
    tokens: list[str]
    score: float
    n_best: list[tuple[str, float]] = field(default_factory=list)
    attention: AttentionMatrix | None = None

    def line(self) -> str:
        if len(self.n_best) > 1:
            return "\t".join(text for text, _ in self.n_best)
        return self.text


@dataclass
class TaggedSentence:
    tokens: list[str]
    tags: list[str]

    def line(self) -> str:
        return " ".join(f"{w}/{t}" for w, t in zip(self.tokens, self.tags, strict=True))


@dataclass(frozen=True)
class Hypothesis:
    tokens: list[int]
    """Output ids without ``<bos>``/``<eos>``."""
    log_prob: float
    score: float
    """``log_prob`` over the length penalty: what hypotheses are ranked by."""


MAX_LENGTH_PENALTY = 10.0  # as rnnlab.decoding.hypothesis


def length_penalty(length: int, alpha: float) -> float:
    """GNMT's lp(|Y|) = ((5 + |Y|) / 6)^α."""
    return ((5.0 + length) / 6.0) ** alpha


# ---------------------------------------------------------------------------------------------------
# Translation


class OnnxTranslator(ExportedModel):
    """The encoder and decoder-step graphs of a translator, its vocabularies and tokenizers."""

    task_name = "seq2seq"

    def __init__(
        self, folder: str | Path, *, num_threads: int = 0, manifest: dict | None = None
    ) -> None:
        super().__init__(folder, num_threads=num_threads, manifest=manifest)
        m = self.manifest
        self.start, self.step = self.sessions["start"], self.sessions["step"]
        self.state = m["state"]
        self.static = [bool(s.get("static")) for s in self.state]
        self.moving_outputs = [s["output"] for s in self.state if not s.get("static")]
        self.has_attention = bool(m["attention"])
        self.src_itos = _json_list(self.folder, m["vocab"]["src"], "tokens")
        self.tgt_itos = _json_list(self.folder, m["vocab"]["tgt"], "tokens")
        self.src_stoi = text_table(self.src_itos)  # as Vocab.encode_text
        self.vocab_size = len(self.tgt_itos)
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = _special_ids(
            self.folder,
            m,
            ("pad", "unk", "bos", "eos"),
            min(len(self.src_itos), len(self.tgt_itos)),
        )
        if _graph_width(self.step) not in (None, self.vocab_size):
            raise ExportError(
                f"{self.folder / m['vocab']['tgt']}: {self.vocab_size} tokens, but the step graph "
                f"scores {_graph_width(self.step)}; export the run again"
            )
        tokenizer = m["tokenizer"]
        self.preprocess = tokenizer["preprocess"]
        self.max_src_len = tokenizer["max_len"]
        self.max_src_ids = int(tokenizer.get("num_steps", 0))
        """The textbook's fixed length (``data.num_steps``): source ids, ``<eos>`` included, are cut
        to it as in training; 0 = not cut."""
        if tokenizer["kind"] == "sentencepiece":
            self.src_tokenizer: Any = SentencePieceTokenizer(
                self.folder / tokenizer["spm_src"], self.preprocess
            )
            self.tgt_tokenizer: Any = SentencePieceTokenizer(
                self.folder / tokenizer["spm_tgt"], self.preprocess
            )
        else:
            self.src_tokenizer = self.tgt_tokenizer = WordTokenizer(self.preprocess)
        decode = m["decode"]
        self.decode_max_len = decode["max_len"]
        self.default_beam = decode["beam_size"]
        self.default_length_penalty = decode["length_penalty"]
        self.batch_size = decode["batch_size"]
        self.batch_tokens = decode.get("batch_tokens", 0)  # exports before the key: no cap
        self.beam_stop = decode.get("beam_stop", "exact")  # exports before the key: exact

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.task_name,
            "attention": self.has_attention,
            "src_vocab_size": len(self.src_itos),
            "tgt_vocab_size": len(self.tgt_itos),
            "quantize": self.manifest.get("quantize"),
        }

    # -- text ↔ ids --------------------------------------------------------------------------------
    def encode_source(self, text: str) -> list[int]:
        tokens = self.src_tokenizer.encode(text)
        if self.max_src_len > 0:
            tokens = tokens[: self.max_src_len]
        ids = [self.src_stoi.get(tok, self.unk_id) for tok in tokens] + [self.eos_id]
        return ids[: self.max_src_ids] if self.max_src_ids > 0 else ids

    def target_tokens(self, ids: list[int]) -> list[str]:
        skip = {self.pad_id, self.bos_id, self.eos_id}
        return [self.tgt_itos[i] for i in ids if i not in skip]

    def detokenize(self, ids: list[int]) -> str:
        return self.tgt_tokenizer.decode(self.target_tokens(ids))

    # -- graphs ------------------------------------------------------------------------------------
    def _start(self, sources: list[list[int]]) -> list[np.ndarray]:
        src, lengths = _pad(sources, self.pad_id)
        return self.start.run(None, {"src": src, "src_lengths": lengths})

    def _step(
        self, tokens: np.ndarray, state: list[np.ndarray], *, top: int = 0, attention: bool = False
    ) -> tuple[list[np.ndarray], np.ndarray | None, list[np.ndarray]]:
        """tokens (B,) → scores, attention (B, S) or None, the next state.

        Scores are ``[log_probs (B, V)]``, or with ``top`` = k > 0 the k best of each row,
        ``[top_log_probs (B, k), top_tokens (B, k)]``: the session then copies out only those.
        """
        feed = {"tokens": tokens, "k": np.array([max(top, 1)], dtype=np.int64)}
        feed.update({spec["input"]: value for spec, value in zip(self.state, state, strict=True)})
        names = ["top_log_probs", "top_tokens"] if top else ["log_probs"]
        names += ["attention"] if attention else []
        outputs = self.step.run(names + self.moving_outputs, feed)
        scores, rest = outputs[: 2 if top else 1], outputs[2 if top else 1 :]
        weights = None
        if attention:
            weights, rest = rest[0], rest[1:]
        moving = iter(rest)
        next_state = [
            value if static else next(moving)
            for value, static in zip(state, self.static, strict=True)
        ]
        return scores, weights, next_state

    def _select(
        self, state: list[np.ndarray], rows: np.ndarray, *, within_blocks: bool = False
    ) -> list[np.ndarray]:
        """Keep batch rows ``rows``; static tensors are the same for every beam of a sentence, so a
        reordering within each sentence's block of beams leaves them as they are."""
        return [
            value if within_blocks and static else np.take(value, rows, axis=spec["batch_axis"])
            for spec, value, static in zip(self.state, state, self.static, strict=True)
        ]

    # -- search ------------------------------------------------------------------------------------
    @property
    def banned(self) -> tuple[int, ...]:
        """Tokens a search never emits, as ``rnnlab.decoding.banned``: ``<pad>`` and ``<bos>``."""
        return tuple(sorted({self.pad_id, self.bos_id}))

    def _ban(self, top_scores: np.ndarray, top_tokens: np.ndarray) -> np.ndarray:
        """The step graph's top scores with those of banned tokens at −inf (the order stays)."""
        return np.where(np.isin(top_tokens, self.banned), np.float32(-np.inf), top_scores)

    def greedy_batch(
        self, sources: list[list[int]], max_len: int, alpha: float = 0.0
    ) -> list[Hypothesis]:
        """Greedy search over one batch (``rnnlab.decoding.greedy``), finished sentences leave.

        Scores are divided by the length penalty of ``alpha``, as ``greedy_hypotheses`` does, so
        ``score`` means what beam search ranks by.
        """
        state = self._start(sources)
        outputs: list[list[int]] = [[] for _ in sources]
        ended = [False] * len(sources)
        totals = [0.0] * len(sources)
        active = np.arange(len(sources))  # original row of each live sentence
        tokens = np.full(len(sources), self.bos_id, dtype=np.int64)
        for _ in range(max_len):
            if active.size == 0:
                break
            (best, best_tokens), _, state = self._step(tokens, state, top=1 + len(self.banned))
            best = self._ban(best, best_tokens)
            first = best.argmax(axis=1)[:, None]  # the best token that is not banned
            tokens = np.take_along_axis(best_tokens, first, 1)[:, 0].astype(np.int64)
            picked = np.take_along_axis(best, first, 1)[:, 0]
            for row, token, value in zip(
                active.tolist(), tokens.tolist(), picked.tolist(), strict=True
            ):
                totals[row] += value
                if token != self.eos_id:
                    outputs[row].append(token)
                else:
                    ended[row] = True
            finished = tokens == self.eos_id
            if finished.any():
                keep = np.flatnonzero(~finished)
                active, tokens = active[keep], tokens[keep]
                state = self._select(state, keep)
        return [
            Hypothesis(out, total, total / length_penalty(len(out) + did_end, alpha))
            for out, did_end, total in zip(outputs, ended, totals, strict=True)
        ]

    def beam_batch(
        self, sources: list[list[int]], *, beam_size: int, n_best: int, max_len: int, alpha: float
    ) -> list[list[Hypothesis]]:
        """Batched beam search, rule for rule ``rnnlab.decoding.beam.beam_search_hypotheses``."""
        k, batch = beam_size, len(sources)
        finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
        nth_best = np.full(batch, -np.inf)  # each sentence's n_best-th finished score
        state = self._select(self._start(sources), np.repeat(np.arange(batch), k))
        active = np.arange(batch)
        tokens = np.full(batch * k, self.bos_id, dtype=np.int64)
        history = np.empty((batch * k, 0), dtype=np.int64)
        scores = np.full((batch, k), -np.inf, dtype=np.float32)
        scores[:, 0] = 0.0
        for t in range(max_len):
            # A sentence's 2K best candidates over K·V are among the 2K best tokens of each of
            # its K rows that are not banned, so the step graph's TopK hands over (B_a·K, 2K + the
            # banned ones), not (B_a·K, V).
            width = min(2 * k + len(self.banned), self.vocab_size)
            (row_best, row_tokens), _, state = self._step(tokens, state, top=width)
            row_best = self._ban(row_best, row_tokens)
            cand = (scores[:, :, None] + row_best.reshape(-1, k, width)).reshape(-1, k * width)
            num_cand = min(2 * k, k * width)
            order = np.argsort(-cand, axis=1, kind="stable")[:, :num_cand]  # (B_a, 2K)
            cand_scores = np.take_along_axis(cand, order, 1)
            cand_beam = order // width
            cand_token = np.take_along_axis(row_tokens.reshape(-1, k * width), order, 1)
            is_eos = cand_token == self.eos_id

            ended = np.argwhere(is_eos[:, :k] & np.isfinite(cand_scores[:, :k]))
            for block, rank in ended.tolist():
                sentence = int(active[block])
                row = block * k + int(cand_beam[block, rank])
                raw = float(cand_scores[block, rank])
                finished[sentence].append(
                    Hypothesis(history[row].tolist(), raw, raw / length_penalty(t + 1, alpha))
                )
                if len(finished[sentence]) >= n_best:
                    nth_best[sentence] = sorted(h.score for h in finished[sentence])[-n_best]

            live = np.where(is_eos, np.float32(-np.inf), cand_scores)
            pick = np.argsort(-live, axis=1, kind="stable")[:, :k]
            scores = np.take_along_axis(live, pick, 1)
            beam = np.take_along_axis(cand_beam, pick, 1)
            picked_tokens = np.take_along_axis(cand_token, pick, 1)
            rows = (np.arange(active.size)[:, None] * k + beam).reshape(-1)
            history = np.concatenate([history[rows], picked_tokens.reshape(-1, 1)], axis=1)
            tokens = picked_tokens.reshape(-1).astype(np.int64)
            state = self._select(state, rows, within_blocks=True)

            if t == max_len - 1:
                break
            bound_len = max_len if self.beam_stop == "exact" else t + 2
            # float64, as the finished scores: a float32 quotient can round below them.
            best_live = scores[:, 0].astype(np.float64) / length_penalty(bound_len, alpha)
            done = (best_live < nth_best[active]) | ~np.isfinite(best_live)
            if done.any():
                keep_blocks = np.flatnonzero(~done)
                keep_rows = (keep_blocks[:, None] * k + np.arange(k)).reshape(-1)
                active, scores = active[keep_blocks], scores[keep_blocks]
                history, tokens = history[keep_rows], tokens[keep_rows]
                if active.size == 0:
                    break
                state = self._select(state, keep_rows)

        for block, sentence in enumerate(active.tolist()):
            for j in range(k):
                raw = float(scores[block, j])
                if raw != -np.inf:
                    finished[sentence].append(
                        Hypothesis(
                            history[block * k + j].tolist(),
                            raw,
                            raw / length_penalty(history.shape[1], alpha),
                        )
                    )
        return [sorted(hyps, key=lambda h: -h.score)[:n_best] for hyps in finished]

    def translate_ids(
        self,
        sources: list[list[int]],
        *,
        beam: int = 1,
        n_best: int = 1,
        length_penalty: float | None = None,
        max_len: int | None = None,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[list[Hypothesis]]:
        """Hypotheses (best first) per encoded source, decoded in length-sorted batches."""
        max_len = max_len or self.decode_max_len
        alpha = self.default_length_penalty if length_penalty is None else length_penalty
        results: list[list[Hypothesis]] = [[] for _ in sources]
        beam = max(beam, n_best)
        size = batch_size or self.batch_size
        if beam > 1:  # as in Seq2SeqTask.translate_hypotheses
            size = _beam_batch_size(size, beam, len(self.tgt_itos), attention=self.has_attention)
        for ids in _length_sorted([len(s) for s in sources], size, self.batch_tokens):
            batch = [sources[i] for i in ids]
            if beam > 1:
                hyps = self.beam_batch(
                    batch, beam_size=beam, n_best=n_best, max_len=max_len, alpha=alpha
                )
            else:
                hyps = [[h] for h in self.greedy_batch(batch, max_len, alpha)]
            for i, found in zip(ids, hyps, strict=True):
                results[i] = found
            if progress is not None:
                progress(len(ids))
        return results

    def attention_of(
        self, src: list[int], hyp: list[int], *, ended: bool = True
    ) -> AttentionMatrix:
        """Where each output token of ``hyp`` attended, read under teacher forcing, and where
        ``<eos>`` did if the search ``ended`` with it."""
        state = self._start([src])
        rows = []
        for token in [self.bos_id, *hyp][: len(hyp) + ended]:
            _, weights, state = self._step(np.array([token], dtype=np.int64), state, attention=True)
            assert weights is not None
            rows.append(weights[0])
        return AttentionMatrix(
            src_tokens=[self.src_itos[i] for i in src],
            out_tokens=[self.tgt_itos[i] for i in hyp] + [EOS] * ended,
            weights=np.stack(rows),
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
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[Translation]:
        """One ``Translation`` per line, in order; an empty line gives an empty translation."""
        if beam < 1:
            raise ExportError(f"beam must be 1 or more, got {beam}")
        if not 1 <= n_best <= max(beam, 1):
            raise ExportError(f"n_best must be between 1 and the beam size {beam}, got {n_best}")
        if max_len is not None and max_len < 1:
            raise ExportError(f"max_len must be 1 or more, got {max_len}")
        if length_penalty is not None and not 0.0 <= length_penalty <= MAX_LENGTH_PENALTY:
            raise ExportError(
                f"length_penalty must be between 0 and {MAX_LENGTH_PENALTY:g}, got {length_penalty}"
            )
        if attention and not self.has_attention:
            raise ExportError("this model has no attention (model.attention: none)")
        keep = [i for i, line in enumerate(lines) if line.strip()]
        sources = [self.encode_source(lines[i]) for i in keep]
        decoded = self.translate_ids(
            sources,
            beam=beam,
            n_best=n_best,
            length_penalty=length_penalty,
            max_len=max_len,
            batch_size=batch_size,
            progress=progress,
        )
        out = [Translation(text="", tokens=[], score=0.0) for _ in lines]
        limit = max_len or self.decode_max_len
        for i, src, hyps in zip(keep, sources, decoded, strict=True):
            best = hyps[0]
            # Every step adds one token, <eos> included: only a search cut at the limit
            # leaves max_len tokens (rnnlab.decoding.hypothesis.ended).
            ended = len(best.tokens) < limit
            out[i] = Translation(
                text=self.detokenize(best.tokens),
                tokens=self.target_tokens(best.tokens),
                score=best.score,
                n_best=[(self.detokenize(h.tokens), h.score) for h in hyps],
                attention=self.attention_of(src, best.tokens, ended=ended) if attention else None,
            )
        return out

    def teacher_forced_nll(
        self, sources: list[list[int]], targets: list[list[int]], batch_size: int | None = None
    ) -> tuple[float, int]:
        """Summed NLL of each target (ending in ``<eos>``) given its source, and the token count."""
        total, count = 0.0, 0
        for ids in _length_sorted([len(s) for s in sources], batch_size or self.batch_size):
            state = self._start([sources[i] for i in ids])
            tgt, lengths = _pad([targets[i] for i in ids], self.pad_id)
            tokens = np.full(len(ids), self.bos_id, dtype=np.int64)
            for t in range(tgt.shape[1]):
                (log_probs,), _, state = self._step(tokens, state)
                valid = lengths > t
                picked = log_probs[np.arange(len(ids)), tgt[:, t]]
                total -= float(picked[valid].astype(np.float64).sum())
                count += int(valid.sum())
                tokens = tgt[:, t]
        return total, count


# ---------------------------------------------------------------------------------------------------
# Tagging


def viterbi(emissions: np.ndarray, lengths: np.ndarray, crf: dict[str, np.ndarray]) -> np.ndarray:
    """Best tag paths (B, T) under a linear-chain CRF (``rnnlab.models.crf.LinearChainCRF``)."""
    batch, steps, num_tags = emissions.shape
    transitions, start, end = crf["transitions"], crf["start"], crf["end"]
    identity = np.broadcast_to(np.arange(num_tags), (batch, num_tags))
    delta = start + emissions[:, 0]  # (B, K)
    pointers = []
    for t in range(1, steps):
        scores = delta[:, :, None] + transitions  # (B, K, K)
        best_prev = scores.argmax(axis=1)  # (B, K)
        best = np.take_along_axis(scores, best_prev[:, None, :], 1)[:, 0]
        active = (t < lengths)[:, None]
        delta = np.where(active, best + emissions[:, t], delta)
        pointers.append(np.where(active, best_prev, identity))
    last = (delta + end).argmax(axis=1)
    path = [last]
    for back in reversed(pointers):
        last = np.take_along_axis(back, last[:, None], 1)[:, 0]
        path.append(last)
    return np.stack(path[::-1], axis=1)


class OnnxTagger(ExportedModel):
    """The emission graph of a tagger, its vocabularies and (with a CRF) its transition scores."""

    task_name = "tagger"

    def __init__(
        self, folder: str | Path, *, num_threads: int = 0, manifest: dict | None = None
    ) -> None:
        super().__init__(folder, num_threads=num_threads, manifest=manifest)
        m = self.manifest
        self.session = self.sessions["tagger"]
        self.inputs: list[str] = m["inputs"]
        words = _json_list(self.folder, m["vocab"]["words"], "tokens")
        chars = _json_list(self.folder, m["vocab"]["chars"], "tokens")
        self.word_stoi = text_table(words)  # as Vocab.encode_text
        self.word_vocab_size = len(words)
        self.char_stoi = {tok: i for i, tok in enumerate(chars)}
        self.tags = _json_list(self.folder, m["vocab"]["tags"], "tags")
        spelled = [words, chars] if "chars" in self.inputs else [words]
        self.pad_id, self.unk_id = _special_ids(
            self.folder, m, ("pad", "unk"), min(len(vocab) for vocab in spelled)
        )
        self.lowercase = bool(m["tokenizer"]["lowercase"])
        self.vector_lookup = bool(m["tokenizer"].get("vector_lookup", False))  # older: exact only
        self.max_word_chars = int(m["tokenizer"]["max_word_chars"])
        self.crf = (
            {k: np.asarray(v, dtype=np.float32) for k, v in m["crf"].items()} if m["crf"] else None
        )
        self._check_tag_count(m["vocab"]["tags"])
        self.batch_size = m["decode"]["batch_size"]
        self.batch_tokens = m["decode"].get("batch_tokens", 0)  # exports before the key: no cap

    def _check_tag_count(self, tags_file: str) -> None:
        """The tag list, the graph's scores and the CRF's transitions must count the same tags."""
        width = _graph_width(self.session)
        counts = set() if width is None else {width}
        if self.crf is not None:
            transitions = self.crf["transitions"]
            if transitions.ndim != 2:
                raise ExportError(
                    f"{self.folder / MANIFEST}: not a valid manifest "
                    "(crf.transitions must be a matrix)"
                )
            counts |= {*transitions.shape, self.crf["start"].size, self.crf["end"].size}
        wrong = counts - {len(self.tags)}
        if wrong or not self.tags:
            scores = " or ".join(str(n) for n in sorted(wrong)) or "at least 1"
            raise ExportError(
                f"{self.folder / tags_file}: {len(self.tags)} tags, but the model scores {scores}; "
                "export the run again"
            )

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.task_name,
            "word_vocab_size": self.word_vocab_size,
            "tags": list(self.tags),
            "crf": self.crf is not None,
        }

    def _word_id(self, word: str) -> int:
        """As ``TaggerTask.encode_words``: with a vocabulary extended from word vectors, an
        unknown word is also looked up lower-cased and digit-normalised
        (``rnnlab.data.embeddings.lookup_keys``)."""
        if not self.vector_lookup:
            return self.word_stoi.get(word, self.unk_id)
        lower = word.lower()
        for key in (word, lower, _DIGIT.sub("#", lower), _DIGIT.sub("0", lower)):
            found = self.word_stoi.get(key)
            if found is not None:
                return found
        return self.unk_id

    def _spell(self, word: str) -> list[int]:
        limit = self.max_word_chars
        if 0 < limit < len(word):
            word = word[: limit // 2] + word[len(word) - (limit - limit // 2) :]
        return [self.char_stoi.get(ch, self.unk_id) for ch in word] or [self.unk_id]

    def _feed(self, sentences: list[list[str]]) -> dict[str, np.ndarray]:
        """The graph inputs of a batch, as ``rnnlab.tasks.tagger.TaggerTask.make_batch`` builds them."""
        words, lengths = _pad(
            [[self._word_id(w.lower() if self.lowercase else w) for w in s] for s in sentences],
            self.pad_id,
        )
        feed = {"words": words, "lengths": lengths}
        if "chars" in self.inputs:
            rows: dict[str, int] = {}
            types = [[rows.setdefault(w, len(rows)) for w in s] for s in sentences]
            feed["word_types"] = _pad(types, 0)[0]
            feed["chars"], feed["char_lengths"] = _pad([self._spell(w) for w in rows], self.pad_id)
        return feed

    def tag_ids(self, sentences: list[list[str]], batch_size: int | None = None) -> list[list[int]]:
        results: list[list[int]] = [[] for _ in sentences]
        keep = [i for i, s in enumerate(sentences) if s]
        lengths = [len(sentences[i]) for i in keep]
        for ids in _length_sorted(lengths, batch_size or self.batch_size, self.batch_tokens):
            rows = [keep[j] for j in ids]
            feed = self._feed([sentences[i] for i in rows])
            (emissions,) = self.session.run(None, feed)
            if self.crf is not None:
                best = viterbi(emissions, feed["lengths"], self.crf)
            else:
                best = emissions.argmax(axis=2)
            for row, i in enumerate(rows):
                results[i] = best[row, : len(sentences[i])].tolist()
        return results

    def tag(
        self,
        sentences: list[str] | list[list[str]],
        *,
        batch_size: int | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> list[TaggedSentence]:
        """Tags per sentence, in order; a string is split on whitespace."""
        words = [s.split() if isinstance(s, str) else list(s) for s in sentences]
        tag_ids = self.tag_ids(words, batch_size)
        if progress is not None:
            progress(len(words))
        return [
            TaggedSentence(tokens=w, tags=[self.tags[i] for i in ids])
            for w, ids in zip(words, tag_ids, strict=True)
        ]


# ---------------------------------------------------------------------------------------------------
# Language model

SCORE_CHUNK = 256
"""Tokens per scoring call; the state is carried between calls, so this only trades memory."""


class OnnxLanguageModel(ExportedModel):
    """The step and scoring graphs of a language model and its vocabulary."""

    task_name = "lm"

    def __init__(
        self, folder: str | Path, *, num_threads: int = 0, manifest: dict | None = None
    ) -> None:
        super().__init__(folder, num_threads=num_threads, manifest=manifest)
        m = self.manifest
        self.step, self.score = self.sessions["step"], self.sessions["score"]
        self.state = m["state"]
        self.itos = _json_list(self.folder, m["vocab"]["tokens"], "tokens")
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}
        self.level = m["tokenizer"]["level"]
        self.clean = m["tokenizer"]["clean"]
        # Exports made before the list was recorded: what LanguageModelTask.never_generated
        # gives at the default data.min_freq of 1.
        never = m.get(
            "never_generated", [PAD, BOS, EOS, UNK] if self.level == "char" else [PAD, BOS]
        )
        self.never_generated = [self.stoi[token] for token in never if token in self.stoi]
        """Ids generation never emits (``LanguageModelTask.never_generated``; exports made before
        it was recorded ban ``<pad>`` and ``<bos>``)."""

    def describe(self) -> dict[str, Any]:
        return {"task": self.task_name, "tokenizer": self.level, "vocab_size": len(self.itos)}

    def _zeros(self, batch: int) -> list[np.ndarray]:
        shapes = [list(s["shape"]) for s in self.state]
        for shape, spec in zip(shapes, self.state, strict=True):
            shape[spec["batch_axis"]] = batch
        return [np.zeros(shape, dtype=np.float32) for shape in shapes]

    def _run(
        self, session: ort.InferenceSession, tokens: np.ndarray, state: list[np.ndarray]
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        feed = {"tokens": tokens}
        feed.update({spec["input"]: value for spec, value in zip(self.state, state, strict=True)})
        log_probs, *next_state = session.run(None, feed)
        return log_probs, next_state

    def encode(self, tokens: list[str]) -> list[int]:
        unk = self.stoi[UNK]
        return [self.stoi.get(tok, unk) for tok in tokens]

    def nll(self, ids: list[int]) -> tuple[float, int]:
        """Summed NLL (nats) of ``ids[1:]`` read as one stream, and the count (``stream_nll``)."""
        total, state = 0.0, self._zeros(1)
        stream = np.asarray(ids, dtype=np.int64)
        for start in range(0, stream.size - 1, SCORE_CHUNK):
            targets = stream[start + 1 : start + 1 + SCORE_CHUNK]
            inputs = stream[start : start + targets.size]
            log_probs, state = self._run(self.score, inputs[None, :], state)  # (1, T, V)
            total -= float(log_probs[0, np.arange(targets.size), targets].astype(np.float64).sum())
        return total, max(stream.size - 1, 0)

    def perplexity(self, text: str) -> float:
        """exp of the mean NLL per token of ``text``, read like a file by ``rnnlab evaluate``."""
        ids = self.encode(corpus_tokens(text, level=self.level, clean=self.clean))
        if len(ids) < 2:
            raise ExportError("text too short to score (a language model needs at least 2 tokens)")
        total, count = self.nll(ids)
        try:
            return math.exp(total / count)
        except OverflowError:  # as rnnlab.metrics.perplexity
            return math.inf

    def prefix_tokens(self, prefix: str) -> list[str]:
        tokens = (
            list(clean_text(prefix, self.clean))
            if self.level == "char"
            else clean_text(prefix, self.clean).split()
        )
        unknown = sorted({t for t in tokens if t not in self.stoi})
        if unknown:
            kind = "characters" if self.level == "char" else "words"
            shown = ", ".join(repr(t) for t in unknown[:10])
            raise ExportError(f"prefix has {kind} never seen in training: {shown}")
        if self.level == "char" and not tokens:
            raise ExportError("prefix is empty; a character-level model needs text to continue")
        return tokens

    def generate(
        self,
        prefix: str,
        *,
        length: int,
        temperature: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
    ) -> str:
        """The (cleaned) prefix and ``length`` more tokens; ``temperature=0`` is greedy search.

        Sampling draws from numpy's generator seeded by ``seed``: reproducible, but not the same
        draws as PyTorch's generator (greedy search gives the same text as the eager model).
        """
        if length < 0:
            raise ExportError(f"length must be 0 or more, got {length}")
        if not temperature >= 0:  # also refuses nan
            raise ExportError(f"temperature must be 0 (greedy) or more, got {temperature}")
        if top_k < 0:
            raise ExportError(f"top-k must be 0 (no limit) or more, got {top_k}")
        tokens = self.prefix_tokens(prefix)
        ids = self.encode(([EOS] if self.level == "word" else []) + tokens)
        state = self._zeros(1)
        if len(ids) > 1:
            _, state = self._run(self.score, np.asarray([ids[:-1]], dtype=np.int64), state)
        rng = np.random.default_rng(seed)
        token = np.asarray([ids[-1]], dtype=np.int64)
        generated: list[int] = []
        never = self.never_generated
        for _ in range(length):
            log_probs, state = self._run(self.step, token, state)
            row = log_probs[0].astype(np.float64)
            row[never] = -np.inf  # as rnnlab.decoding.banned
            if temperature == 0:
                choice = int(row.argmax())
            else:
                # As rnnlab.decoding.sampling: the top k first, then 1/T from the maximum (a tiny
                # T is greedy, a huge one uniform over the top k).
                below_max = row - row.max()
                if 0 < top_k < below_max.size:
                    kth = np.partition(below_max, -top_k)[-top_k]
                    below_max = np.where(below_max < kth, -np.inf, below_max)
                with np.errstate(over="ignore", invalid="ignore"):
                    scaled = np.where(np.isneginf(below_max), -np.inf, below_max / temperature)
                logits = np.where(below_max == 0, 0.0, scaled)
                probs = np.exp(logits - logits.max())
                choice = int(rng.choice(logits.size, p=probs / probs.sum()))
            generated.append(choice)
            token = np.asarray([choice], dtype=np.int64)
        return tokens_text(tokens + [self.itos[i] for i in generated], level=self.level)


# ---------------------------------------------------------------------------------------------------
# Loading and the command line

RUNTIMES: dict[str, type] = {
    "seq2seq": OnnxTranslator,
    "tagger": OnnxTagger,
    "lm": OnnxLanguageModel,
}


def load(folder: str | Path, *, num_threads: int = 0) -> Any:
    """The runtime object of an export folder: a translator, tagger or language model."""
    manifest = read_manifest(folder)
    try:
        return RUNTIMES[manifest["task"]](folder, num_threads=num_threads, manifest=manifest)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        if isinstance(exc, ExportError):
            raise
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ExportError(
            f"{Path(folder) / MANIFEST}: not a valid manifest ({type(exc).__name__}: {reason})"
        ) from None


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print(
            "usage: python runtime.py EXPORT_DIR [--prefix TEXT --length N] < input",
            file=sys.stderr,
        )
        return 2
    try:
        model = load(argv[0])
        if isinstance(model, OnnxLanguageModel):
            options = dict(zip(argv[1::2], argv[2::2], strict=False))
            prefix = options.get("--prefix", "")
            if len(prefix) > MAX_LINE_CHARS:
                print(
                    f"runtime: notice: --prefix: line of {len(prefix):,} characters cut to the first "
                    f"{MAX_LINE_CHARS:,} (the input line limit)",
                    file=sys.stderr,
                )
            print(
                model.generate(
                    prefix[:MAX_LINE_CHARS],
                    length=int(options.get("--length", 100)),
                    temperature=0,
                )
            )
            return 0
        try:  # bytes, as rnnlab reads them: strict UTF-8 in any locale, lines split at "\n" only
            lines = cut_input_lines(sys.stdin.buffer.read().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ExportError(
                f"<stdin>: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        results = model.translate(lines) if isinstance(model, OnnxTranslator) else model.tag(lines)
        for result in results:
            print(result.line())
    except ExportError as exc:
        print(f"runtime: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
