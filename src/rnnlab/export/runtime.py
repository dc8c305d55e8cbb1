"""Translate with an exported rnnlab model using only ONNX Runtime, numpy and the standard library.

This file must stay importable without PyTorch or the rest of rnnlab: ``rnnlab export`` copies it into
every export folder, so that folder alone translates::

    python EXPORT/runtime.py EXPORT < sentences.txt

The tokenizer below re-implements ``rnnlab.data.text`` (the textbook normalisation and its inverse);
a test keeps the two in agreement. Greedy search drops finished sentences from the batch, like
``rnnlab.decoding.greedy``, using the batch axis of each state tensor recorded in the manifest.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

MANIFEST = "rnnlab-export.json"

_NBSP = str.maketrans({"\u202f": " ", "\xa0": " "})
_SPACE_BEFORE_PUNCT = re.compile(r"(?<=\S)([,.!?])")
_DETOK_PUNCT = re.compile(r" ([,.!?])")


def normalize(text: str, mode: str) -> str:
    if mode in ("textbook", "punct"):
        text = text.translate(_NBSP)
        if mode == "textbook":
            text = text.lower()
        return _SPACE_BEFORE_PUNCT.sub(r" \1", text)
    return text


def detokenize(tokens: list[str], mode: str) -> str:
    joined = " ".join(tokens)
    return _DETOK_PUNCT.sub(r"\1", joined) if mode != "none" else joined


class OnnxTranslator:
    """The exported encoder and decoder step, the vocabularies and the tokenizer of one model."""

    def __init__(self, folder: str | Path, *, num_threads: int = 0) -> None:
        self.folder = Path(folder)
        manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
        self.manifest = manifest
        options = ort.SessionOptions()
        if num_threads > 0:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        self.start = ort.InferenceSession(
            str(self.folder / manifest["start"]), options, providers=providers
        )
        self.step = ort.InferenceSession(
            str(self.folder / manifest["step"]), options, providers=providers
        )
        self.state = manifest["state"]
        self.src_itos: list[str] = manifest["src_vocab"]
        self.tgt_itos: list[str] = manifest["tgt_vocab"]
        self.src_stoi = {tok: i for i, tok in enumerate(self.src_itos)}
        specials = manifest["specials"]
        self.pad_id, self.unk_id = specials["pad"], specials["unk"]
        self.bos_id, self.eos_id = specials["bos"], specials["eos"]
        self.preprocess = manifest["tokenizer"]["preprocess"]
        self.max_src_len = manifest["tokenizer"]["max_len"]
        self.decode_max_len = manifest["decode"]["max_len"]
        self.batch_size = manifest["decode"]["batch_size"]

    # -- text ↔ ids --------------------------------------------------------------------------------
    def encode_source(self, text: str) -> list[int]:
        tokens = normalize(text, self.preprocess).split()
        if self.max_src_len > 0:
            tokens = tokens[: self.max_src_len]
        return [self.src_stoi.get(tok, self.unk_id) for tok in tokens] + [self.eos_id]

    def detokenize(self, ids: list[int]) -> str:
        skip = {self.pad_id, self.bos_id, self.eos_id}
        return detokenize([self.tgt_itos[i] for i in ids if i not in skip], self.preprocess)

    # -- search --------------------------------------------------------------------------------------
    def greedy_batch(self, sources: list[list[int]], max_len: int) -> list[list[int]]:
        """Greedy search over one batch; token ids without ``<bos>``/``<eos>``."""
        lengths = np.array([len(s) for s in sources], dtype=np.int64)
        src = np.full((len(sources), int(lengths.max())), self.pad_id, dtype=np.int64)
        for row, ids in enumerate(sources):
            src[row, : len(ids)] = ids
        state = self.start.run(None, {"src": src, "src_lengths": lengths})
        outputs: list[list[int]] = [[] for _ in sources]
        active = np.arange(len(sources))  # original row of each live sentence
        tokens = np.full(len(sources), self.bos_id, dtype=np.int64)
        for _ in range(max_len):
            if active.size == 0:
                break
            feed = {"tokens": tokens}
            feed.update(
                {spec["input"]: value for spec, value in zip(self.state, state, strict=True)}
            )
            log_probs, *state = self.step.run(None, feed)
            tokens = log_probs.argmax(axis=-1).astype(np.int64)
            finished = tokens == self.eos_id
            for row, token in zip(active.tolist(), tokens.tolist(), strict=True):
                if token != self.eos_id:
                    outputs[row].append(token)
            if finished.any():
                keep = np.flatnonzero(~finished)
                active, tokens = active[keep], tokens[keep]
                state = [
                    np.take(value, keep, axis=spec["batch_axis"])
                    for spec, value in zip(self.state, state, strict=True)
                ]
        return outputs

    def translate_ids(
        self, sources: list[list[int]], *, max_len: int | None = None, batch_size: int | None = None
    ) -> list[list[int]]:
        """Length-sorted batches, results in input order."""
        max_len = max_len or self.decode_max_len
        batch_size = batch_size or self.batch_size
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        results: list[list[int]] = [[] for _ in sources]
        for start in range(0, len(order), batch_size):
            ids = order[start : start + batch_size]
            for i, hyp in zip(
                ids, self.greedy_batch([sources[i] for i in ids], max_len), strict=True
            ):
                results[i] = hyp
        return results

    def translate(self, sentences: list[str], **kwargs: int) -> list[str]:
        """Raw sentences in, detokenized translations out; an empty line translates to ''."""
        keep = [i for i, s in enumerate(sentences) if s.strip()]
        decoded = self.translate_ids([self.encode_source(sentences[i]) for i in keep], **kwargs)
        out = [""] * len(sentences)
        for i, ids in zip(keep, decoded, strict=True):
            out[i] = self.detokenize(ids)
        return out


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python runtime.py EXPORT_DIR < sentences.txt", file=sys.stderr)
        return 2
    translator = OnnxTranslator(argv[0])
    lines = [line.rstrip("\r\n") for line in sys.stdin]
    for text in translator.translate(lines):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
