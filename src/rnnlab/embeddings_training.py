"""``rnnlab embeddings train``: word vectors from a user's own unlabeled text, with gensim.

For languages or domains with no downloadable vectors: word2vec (Mikolov et al. 2013, skip-gram) or
fastText (Bojanowski et al. 2017, skip-gram over character n-grams) trained by gensim, written as
word2vec text (header ``N D``), which ``model.pretrained_embeddings`` reads.

Inputs are plain text, one sentence per line, split on whitespace; CoNLL-U files (named ``*.conllu``
or ``*.conllu.gz``) give their FORM column, so a treebank's training split can join the corpus.
``split_punct`` splits ``, . ! ?`` off the words of plain-text inputs (the ``punct`` preprocessing),
so raw captions or subtitles share tokens with a tokenised treebank ("dog ." rather than "dog."). The
corpus is streamed from the files once per gensim pass, never held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rnnlab.atomic import reported_as
from rnnlab.data.conllu_io import read_conllu
from rnnlab.data.io import read_lines
from rnnlab.data.text import Preprocess, normalize
from rnnlab.errors import RnnlabError

Algorithm = Literal["word2vec", "fasttext"]


class TextCorpus:
    """Re-iterable token lists of ``paths`` (gensim reads a corpus once per epoch)."""

    def __init__(
        self, paths: Sequence[str | Path], *, lowercase: bool = False, split_punct: bool = False
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.lowercase = lowercase
        self.split_punct = split_punct

    def __iter__(self) -> Iterator[list[str]]:
        for path in self.paths:
            if path.name.endswith((".conllu", ".conllu.gz")):
                # A FORM may hold spaces ("New  York"), which no word2vec text line can: such a
                # word gets no vector rather than a file that readers split in the wrong place.
                sentences = ([w for w in s.words if len(w.split()) == 1] for s in read_conllu(path))
            else:
                mode: Preprocess = "punct" if self.split_punct else "none"
                sentences = (normalize(text, mode).split() for _, text in read_lines(path))
            for words in sentences:
                if words:
                    yield [w.lower() for w in words] if self.lowercase else words


@dataclass
class TrainedVectors:
    path: Path
    words: int
    dim: int
    sentences: int
    tokens: int


def train_vectors(
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    algorithm: Algorithm = "word2vec",
    dim: int = 100,
    epochs: int = 5,
    min_count: int = 2,
    lowercase: bool = False,
    split_punct: bool = False,
    window: int = 5,
    seed: int = 1,
    workers: int = 1,
) -> TrainedVectors:
    """Train skip-gram vectors on ``inputs`` and write them to ``out`` as word2vec text.

    With one worker gensim is deterministic for a given seed (and ``PYTHONHASHSEED``).
    """
    if not inputs:
        raise RnnlabError("embeddings train needs at least one input file")
    checked = [(dim, "--dim"), (epochs, "--epochs"), (min_count, "--min-count")]
    # gensim's worker thread dies on a window below 1 and its trainer then waits for it forever.
    checked += [(window, "--window"), (workers, "--workers")]
    for value, name in checked:
        if value < 1:
            raise RnnlabError(f"{name} must be at least 1, got {value}")
    out = Path(out)
    if any(out.resolve() == Path(path).resolve() for path in inputs):
        raise RnnlabError(f"{out}: is also an input; --out would overwrite the corpus")
    if out.is_dir():
        raise RnnlabError(f"{out}: is a directory; --out names the vectors file to write")
    with reported_as(out):  # before training: a parent that cannot be made fails in a second
        out.parent.mkdir(parents=True, exist_ok=True)
    try:
        from gensim.models import FastText, Word2Vec
    except ImportError:
        raise RnnlabError(
            "embeddings train needs gensim: pip install 'rnnlab[embeddings]'"
        ) from None
    corpus = TextCorpus(inputs, lowercase=lowercase, split_punct=split_punct)
    sentences = tokens = 0
    for words in corpus:  # also checks every file before gensim starts
        sentences += 1
        tokens += len(words)
    if not sentences:
        raise RnnlabError(f"no text in {', '.join(str(p) for p in inputs)}")
    options = dict(
        vector_size=dim,
        window=window,
        min_count=min_count,
        sg=1,
        seed=seed,
        workers=workers,
    )
    model = (FastText if algorithm == "fasttext" else Word2Vec)(**options)
    model.build_vocab(corpus_iterable=corpus)
    if not len(model.wv):
        raise RnnlabError(f"no word occurs --min-count {min_count} times in the input")
    model.train(corpus_iterable=corpus, total_examples=sentences, epochs=epochs)
    partial = out.with_name(f".partial.{out.name}")  # same suffix: gensim gzips a .gz name
    try:
        with reported_as(out):
            model.wv.save_word2vec_format(str(partial), binary=False)
            partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    return TrainedVectors(out, len(model.wv), dim, sentences, tokens)
