"""Fidelity to the d2l RNN and seq2seq chapters (``/work/shared/TEXTBOOK.md``).

Every reference here is the textbook's own algorithm written out in plain Python (or ``torch.nn``),
independently of rnnlab's code.
"""

from __future__ import annotations

import collections
import copy
import gzip
import math
import random
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import rnnlab.nn
from rnnlab.config import from_dict, load_config
from rnnlab.data.lm_corpus import read_corpus
from rnnlab.data.lm_stream import random_batches, sequential_batches
from rnnlab.data.parallel import SentencePair
from rnnlab.data.text import preprocess_textbook
from rnnlab.data.tokenizers import WordTokenizer
from rnnlab.data.vocab import Vocab
from rnnlab.decoding.greedy import greedy_search
from rnnlab.metrics.bleu import d2l_bleu
from rnnlab.metrics.perplexity import perplexity
from rnnlab.nn.masking import sequence_mask
from rnnlab.tasks.lm import LanguageModelTask, stream_nll
from rnnlab.tasks.lm_config import LMConfig
from rnnlab.tasks.seq2seq import Seq2SeqTask
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig
from rnnlab.training.losses import MaskedSoftmaxCELoss
from rnnlab.training.trainer import Trainer
from tests.textbook_reference import textbook_bleu

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
FRA_TXT = ROOT.parent / "shared" / "data" / "tatoeba-fra-eng" / "fra.txt.gz"
TEXTBOOK_CONFIG = ROOT / "configs" / "seq2seq" / "fra-eng-textbook.yaml"
CPU = torch.device("cpu")


# -- the textbook's algorithms, written out -------------------------------------------------------


def d2l_preprocess_nmt(text: str) -> str:
    """d2l ``preprocess_nmt``: nbsp → space, lower-case, a space before , . ! ? after a non-space."""

    def no_space(char: str, prev_char: str) -> bool:
        return char in set(",.!?") and prev_char != " "

    text = text.replace("\u202f", " ").replace("\xa0", " ").lower()
    out = [
        " " + char if i > 0 and no_space(char, text[i - 1]) else char for i, char in enumerate(text)
    ]
    return "".join(out)


def d2l_tokenize_nmt(text: str, num_examples: int | None = None):
    """d2l ``tokenize_nmt``: lines, tab-separated sides, tokens split on single spaces."""
    source, target = [], []
    for i, line in enumerate(text.split("\n")):
        if num_examples and i > num_examples:
            break
        parts = line.split("\t")
        if len(parts) == 2:
            source.append(parts[0].split(" "))
            target.append(parts[1].split(" "))
    return source, target


class D2LVocab:
    """d2l ``Vocab``: ``<unk>`` then reserved tokens, then by falling frequency (stable), min_freq."""

    def __init__(self, tokens, min_freq: int = 0, reserved_tokens=()):
        counter = collections.Counter(tok for line in tokens for tok in line)
        self.token_freqs = sorted(counter.items(), key=lambda x: x[1], reverse=True)
        self.idx_to_token = ["<unk>", *reserved_tokens]
        self.token_to_idx = {tok: i for i, tok in enumerate(self.idx_to_token)}
        for token, freq in self.token_freqs:
            if freq < min_freq:
                break
            if token not in self.token_to_idx:
                self.idx_to_token.append(token)
                self.token_to_idx[token] = len(self.idx_to_token) - 1

    def __getitem__(self, tokens):
        return [self.token_to_idx.get(tok, 0) for tok in tokens]


def d2l_truncate_pad(line, num_steps, padding_token):
    if len(line) > num_steps:
        return line[:num_steps]
    return line + [padding_token] * (num_steps - len(line))


def d2l_build_array_nmt(lines, vocab: D2LVocab, num_steps: int):
    lines = [vocab[line] + [vocab.token_to_idx["<eos>"]] for line in lines]
    pad = vocab.token_to_idx["<pad>"]
    array = torch.tensor([d2l_truncate_pad(line, num_steps, pad) for line in lines])
    valid_len = (array != pad).sum(1)
    return array, valid_len


def d2l_seq_data_iter_sequential(corpus, batch_size, num_steps, offset):
    """d2l ``seq_data_iter_sequential`` with its random offset given."""
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    xs = torch.tensor(corpus[offset : offset + num_tokens]).reshape(batch_size, -1)
    ys = torch.tensor(corpus[offset + 1 : offset + 1 + num_tokens]).reshape(batch_size, -1)
    num_batches = xs.shape[1] // num_steps
    return [
        (xs[:, i : i + num_steps], ys[:, i : i + num_steps])
        for i in range(0, num_steps * num_batches, num_steps)
    ]


def d2l_random_pieces(corpus, num_steps, offset):
    """The (X, Y) pieces d2l ``seq_data_iter_random`` shuffles, before shuffling."""
    corpus = corpus[offset:]
    num_subseqs = (len(corpus) - 1) // num_steps
    starts = range(0, num_subseqs * num_steps, num_steps)
    return [
        (tuple(corpus[j : j + num_steps]), tuple(corpus[j + 1 : j + 1 + num_steps])) for j in starts
    ]


# -- helpers --------------------------------------------------------------------------------------


def _seq2seq_task(tmp_path: Path, lines: list[str], **data: object) -> Seq2SeqTask:
    train = tmp_path / "train.tsv"
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = from_dict(
        Seq2SeqConfig,
        {
            "task": "seq2seq",
            "data": {"train": str(train), "valid": "", "min_freq": 1, **data},
            "model": {"embed_size": 8, "hidden_size": 8, "num_layers": 2, "dropout": 0.0},
        },
    )
    run = tmp_path / "run"
    run.mkdir()
    task = Seq2SeqTask(config, run)
    task.prepare_training()
    return task


def _lm_task(tmp_path: Path, text: str, **train: object) -> LanguageModelTask:
    path = tmp_path / "lm.txt"
    path.write_text(text, encoding="utf-8")
    config = from_dict(
        LMConfig,
        {
            "task": "lm",
            "data": {"train": str(path), "valid": "", "tokenizer": "char", "clean": "timemachine"},
            "model": {"embed_size": 6, "hidden_size": 7, "num_layers": 2, "dropout": 0.0},
            "train": {"batch_size": 3, "bptt": 5, **train},
        },
    )
    run = tmp_path / "run"
    run.mkdir()
    task = LanguageModelTask(config, run)
    task.prepare_training()
    return task


def _fra_lines(limit: int) -> list[str]:
    with gzip.open(DATA / "fra-eng" / "train.tsv.gz", "rt", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(limit)]


# -- Time Machine: cleaning, character tokens, vocabulary ----------------------------------------


def test_char_corpus_is_the_textbook_cleaning_of_the_whole_text():
    path = DATA / "timemachine" / "train.txt"
    text = path.read_text(encoding="utf-8")
    expected = list(re.sub("[^A-Za-z]+", " ", text).lower())
    assert read_corpus(path, level="char", clean="timemachine") == expected


def test_char_corpus_of_awkward_line_breaks_equals_whole_text_cleaning(tmp_path):
    text = "***\nThe Time--\n\n  Machine!\r\n...\nby H. G. Wells\n1895"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    got = "".join(read_corpus(path, level="char", clean="timemachine"))
    # The file's last line has no line end; rnnlab reads one there (a line end is a non-letter).
    assert got == re.sub("[^A-Za-z]+", " ", text + "\n").lower()


def test_word_corpus_words_are_the_textbook_cleaned_words_of_each_line():
    path = DATA / "timemachine" / "train.txt"
    lines = path.read_text(encoding="utf-8").split("\n")
    expected = [w for line in lines for w in re.sub("[^A-Za-z]+", " ", line).lower().split()]
    got = read_corpus(path, level="word", clean="timemachine")
    assert [w for w in got if w != "<eos>"] == expected
    assert got.count("<eos>") == sum(1 for line in lines if re.search("[A-Za-z]", line))


def test_char_vocabulary_is_specials_then_textbook_frequency_order():
    tokens = read_corpus(DATA / "timemachine" / "train.txt", level="char", clean="timemachine")
    vocab = Vocab.build([tokens])
    d2l = D2LVocab([tokens])
    assert vocab.itos[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    # 26 letters and the space; no two characters of the book are tied, so the orders agree.
    assert vocab.itos[4:] == d2l.idx_to_token[1:] and len(vocab) == 4 + 27
    assert vocab.itos[4:8] == [" ", "e", "t", "a"]


def test_vocabulary_min_freq_keeps_the_textbook_token_set_in_frequency_order():
    rng = random.Random(3)
    corpus = [[rng.choice("abcdefghij") for _ in range(rng.randint(0, 9))] for _ in range(40)]
    for min_freq in (1, 2, 5, 12):
        vocab = Vocab.build(corpus, min_freq=min_freq)
        d2l = D2LVocab(corpus, min_freq=min_freq, reserved_tokens=["<pad>", "<bos>", "<eos>"])
        assert set(vocab.itos) == set(d2l.idx_to_token)
        counts = collections.Counter(t for line in corpus for t in line)
        kept = [counts[t] for t in vocab.itos[4:]]
        assert kept == sorted(kept, reverse=True)
        assert [vocab.stoi[t] for t in ("<pad>", "<unk>", "<bos>", "<eos>")] == [0, 1, 2, 3]


# -- machine-translation preprocessing -------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Go.",
        "Va !",
        "Cours\u202f!",
        "Hi,\xa0there!",
        "What?!",
        "Oh... no, OK.",
        "?x",
        "J'ai perdu.",
        "Il est 5,5 h.",
        "ÉTÉ, Ça VA?",
        "  double  space.",
        "\u202f!",
    ],
)
def test_preprocess_equals_preprocess_nmt_where_only_spaces_separate(text):
    assert preprocess_textbook(text) == d2l_preprocess_nmt(text)


def test_tokens_of_real_pairs_equal_tokenize_nmt_up_to_thin_spaces():
    """On Tatoeba, rnnlab's words are d2l's, except that d2l keeps a thin space (U+2009) glued to
    the word before ``!``/``?`` (``"recule\u2009"``) where rnnlab splits it off as whitespace."""
    lines = _fra_lines(30000)
    src, tgt = d2l_tokenize_nmt(d2l_preprocess_nmt("\n".join(lines)))
    tokenizer = WordTokenizer("textbook")
    thin = 0
    for line, src_tokens, tgt_tokens in zip(lines, src, tgt, strict=True):
        en, fr = line.split("\t")
        assert tokenizer.encode(en) == src_tokens
        expected = [t.strip() for t in tgt_tokens if t.strip()]
        thin += expected != tgt_tokens
        assert tokenizer.encode(fr) == expected
    assert 0 < thin < 100


def test_textbook_600_pairs_give_the_textbook_vocabulary_sizes(tmp_path):
    if not FRA_TXT.is_file():
        pytest.skip("the shared Tatoeba fra.txt is not here")
    with gzip.open(FRA_TXT, "rt", encoding="utf-8") as f:
        raw = [next(f).rstrip("\n") for _ in range(600)]
    src, tgt = d2l_tokenize_nmt(d2l_preprocess_nmt("\n".join(raw)), 600)
    reserved = ["<pad>", "<bos>", "<eos>"]
    d2l_src, d2l_tgt = D2LVocab(src, 2, reserved), D2LVocab(tgt, 2, reserved)
    task = _seq2seq_task(tmp_path, raw, min_freq=2, num_steps=10)
    assert len(task.src_vocab) == len(d2l_src.idx_to_token) == 184
    assert len(task.tgt_vocab) == len(d2l_tgt.idx_to_token) == 201
    assert set(task.src_vocab.itos) == set(d2l_src.idx_to_token)
    differ = set(task.tgt_vocab.itos) ^ set(d2l_tgt.idx_to_token)
    assert {t.strip() for t in differ} <= {"recule"}  # the thin space of "Recule\u2009!"


# -- fixed-length batches (the textbook's num_steps mode) -----------------------------------------

PAIRS = [
    "Go.\tVa !",
    "I lost.\tJ'ai perdu.",
    "He's calm.\tIl est calme.",
    "I'm home.\tJe suis chez moi.",
    "I'm home, I'm calm, I lost the key of the house.\tJe suis chez moi, je suis calme, moi.",
    "Go home.\tRentre chez toi.",
]


def test_fixed_length_batch_equals_build_array_nmt(tmp_path):
    num_steps = 6
    task = _seq2seq_task(tmp_path, PAIRS * 2, num_steps=num_steps)
    src, tgt = d2l_tokenize_nmt(d2l_preprocess_nmt("\n".join(PAIRS)))
    reserved = ["<pad>", "<bos>", "<eos>"]
    src_vocab, tgt_vocab = D2LVocab(src, 1, reserved), D2LVocab(tgt, 1, reserved)
    src_array, src_valid = d2l_build_array_nmt(src, src_vocab, num_steps)
    tgt_array, tgt_valid = d2l_build_array_nmt(tgt, tgt_vocab, num_steps)
    n = len(PAIRS)
    batch = task.make_batch(list(task.train_data.src)[:n], list(task.train_data.tgt)[:n])

    def words(ids, itos):
        return [[itos[i] for i in row] for row in ids.tolist()]

    assert words(batch.src, task.src_vocab.itos) == words(src_array, src_vocab.idx_to_token)
    assert words(batch.tgt_out, task.tgt_vocab.itos) == words(tgt_array, tgt_vocab.idx_to_token)
    assert batch.src_lengths.tolist() == src_valid.tolist()
    assert batch.tgt_lengths.tolist() == tgt_valid.tolist()
    # Teacher forcing: <bos> then Y without its last token; equal wherever the loss reads it.
    bos = torch.full((n, 1), tgt_vocab.token_to_idx["<bos>"])
    dec_input = words(torch.cat([bos, tgt_array[:, :-1]], 1), tgt_vocab.idx_to_token)
    got = words(batch.tgt_in, task.tgt_vocab.itos)
    for row, (mine, theirs) in enumerate(zip(got, dec_input, strict=True)):
        length = int(tgt_valid[row])
        assert mine[:length] == theirs[:length]
    assert batch.src.shape == batch.tgt_in.shape == (n, num_steps)


def test_fixed_length_mode_truncates_the_source_when_translating(tmp_path):
    num_steps = 4
    task = _seq2seq_task(tmp_path, PAIRS * 2, num_steps=num_steps)
    torch.manual_seed(0)
    model = task.build_model()
    seen: list[tuple[list[int], int]] = []
    start = model.start

    def recording_start(src, src_lengths):
        seen.extend(zip(src.tolist(), src_lengths.tolist(), strict=True))
        return start(src, src_lengths)

    model.start = recording_start  # type: ignore[method-assign]
    text = PAIRS[4].split("\t")[0]
    vocab = task.src_vocab
    whole = vocab.encode(task.src_tokenizer.encode(text)) + [vocab.eos_id]  # with <eos>
    assert len(whole) > num_steps
    training_batch = task.make_batch([task.train_data.src[4]], [task.train_data.tgt[4]])
    assert training_batch.src.tolist() == [whole[:num_steps]]
    task.translate_ids(model, [task.encode_source(text)], CPU)
    ((row, length),) = seen
    assert length <= num_steps and row[:length] == whole[:num_steps][:length]


# -- masking and the loss --------------------------------------------------------------------------


def test_sequence_mask_sets_positions_from_valid_len_on():
    x = torch.arange(24).view(2, 3, 4)
    got = sequence_mask(x, torch.tensor([1, 2]), value=-1)
    expected = x.clone()
    expected[0, 1:] = -1
    expected[1, 2:] = -1
    assert torch.equal(got, expected)
    assert torch.equal(x, torch.arange(24).view(2, 3, 4))


def test_masked_softmax_ce_is_per_sequence_mean_over_all_steps():
    torch.manual_seed(1)
    pred, label = torch.randn(3, 5, 7), torch.randint(0, 7, (3, 5))
    valid_len = torch.tensor([5, 2, 0])
    got = MaskedSoftmaxCELoss()(pred, label, valid_len)
    for b in range(3):
        total = 0.0
        for t in range(int(valid_len[b])):
            logits = pred[b, t].tolist()
            log_z = math.log(sum(math.exp(v) for v in logits))
            total += log_z - logits[int(label[b, t])]
        assert float(got[b]) == pytest.approx(total / 5, rel=1e-5)  # padding in the denominator
    ones = MaskedSoftmaxCELoss()(
        torch.ones(3, 4, 10), torch.ones(3, 4, dtype=torch.long), torch.tensor([4, 2, 0])
    )
    assert ones.tolist() == pytest.approx([2.3026, 1.1513, 0.0], abs=1e-4)


def test_seq2seq_loss_is_the_cross_entropy_of_valid_target_tokens_only(tmp_path):
    task = _seq2seq_task(tmp_path, PAIRS * 2, num_steps=7)
    torch.manual_seed(2)
    model = task.build_model().eval()
    n = len(PAIRS)
    batch = task.make_batch(list(task.train_data.src)[:n], list(task.train_data.tgt)[:n])
    out = task.batch_loss(model, batch)
    with torch.no_grad():
        logits = model.project(model(batch.src, batch.src_lengths, batch.tgt_in))  # (B, T, V)
    expected, count = 0.0, 0
    for b in range(n):
        for t in range(int(batch.tgt_lengths[b])):
            expected += float(F.cross_entropy(logits[b, t : t + 1], batch.tgt_out[b, t : t + 1]))
            count += 1
    assert out.num_tokens == count == int(batch.tgt_lengths.sum())
    assert float(out.loss_sum.detach()) == pytest.approx(expected, rel=1e-5)
    # Whatever stands in the padded positions of the targets, the loss is the same.
    scrambled = batch.tgt_out.clone()
    pad_positions = scrambled == task.tgt_vocab.pad_id
    assert bool(pad_positions.any())
    scrambled[pad_positions] = 5
    batch.tgt_out = scrambled
    assert float(task.batch_loss(model, batch).loss_sum.detach()) == pytest.approx(
        expected, rel=1e-5
    )


# -- the encoder-decoder ---------------------------------------------------------------------------


class TextbookSeq2Seq(nn.Module):
    """The chapter's encoder-decoder from torch.nn parts, one unpadded sentence at a time."""

    def __init__(self, model) -> None:
        super().__init__()
        enc, dec = model.encoder, model.decoder
        layers = enc.rnn.num_layers
        self.src_embedding = nn.Embedding.from_pretrained(enc.embedding.weight.detach().clone())
        self.tgt_embedding = nn.Embedding.from_pretrained(dec.embedding.weight.detach().clone())
        self.encoder = nn.GRU(enc.embedding.embedding_dim, enc.hidden_size, layers)
        self.decoder = nn.GRU(
            dec.embedding.embedding_dim + enc.hidden_size, enc.hidden_size, layers
        )
        self.encoder.load_state_dict(enc.rnn.state_dict())
        self.decoder.load_state_dict(dec.rnn.state_dict())
        self.dense = nn.Linear(enc.hidden_size, dec.output.out_features)
        self.dense.load_state_dict(dec.output.state_dict())

    def encode(self, src: list[int]):
        x = self.src_embedding(torch.tensor(src)).unsqueeze(1)  # (T, 1, E)
        outputs, state = self.encoder(x)
        return outputs, state  # (T, 1, H), (L, 1, H)

    def decode(self, tokens: list[int], state, context):
        x = self.tgt_embedding(torch.tensor(tokens)).unsqueeze(1)  # (T, 1, E)
        x_and_context = torch.cat([x, context.repeat(x.size(0), 1, 1)], 2)
        output, state = self.decoder(x_and_context, state)
        return self.dense(output), state  # (T, 1, V)


def _tiny_seq2seq(seed: int):
    from rnnlab.models.seq2seq import build_seq2seq
    from rnnlab.tasks.seq2seq_config import Seq2SeqModelConfig

    torch.manual_seed(seed)
    cfg = Seq2SeqModelConfig(embed_size=6, hidden_size=5, num_layers=2, dropout=0.0)
    return build_seq2seq(cfg, src_vocab_size=11, tgt_vocab_size=9).eval()


def test_encoder_shapes_are_the_textbooks():
    model = _tiny_seq2seq(0)
    src = torch.randint(4, 11, (4, 7))
    encoded = model.encoder(src, torch.full((4,), 7))
    assert encoded.state.shape == (2, 4, 5)  # (L, N, H)
    assert encoded.outputs.shape == (4, 7, 5)  # batch-first (N, T, H)


def test_teacher_forced_logits_equal_the_textbook_context_decoder():
    model = _tiny_seq2seq(1)
    reference = TextbookSeq2Seq(model)
    sources = [[4, 5, 6, 7, 3], [8, 3], [9, 10, 4, 3]]
    targets_in = [[2, 4, 5, 6], [2, 7, 8, 5], [2, 6, 6, 4]]
    src = torch.tensor([s + [0] * (5 - len(s)) for s in sources])
    lengths = torch.tensor([len(s) for s in sources])
    with torch.no_grad():
        got = model.project(model(src, lengths, torch.tensor(targets_in)))  # (B, T, V)
        for b, (source, tgt_in) in enumerate(zip(sources, targets_in, strict=True)):
            _, state = reference.encode(source)
            expected, _ = reference.decode(tgt_in, state, state[-1])
            torch.testing.assert_close(got[b], expected[:, 0], rtol=1e-5, atol=1e-6)


def test_batched_greedy_search_equals_textbook_predict_seq2seq():
    eos, bos, num_steps = 3, 2, 8
    lengths_seen = set()
    for seed in range(6):
        model = _tiny_seq2seq(10 + seed)
        with torch.no_grad():  # sharper than the initialisation, so that sentences differ
            for parameter in model.parameters():
                parameter.mul_(5.0)
        reference = TextbookSeq2Seq(model)
        gen = torch.Generator().manual_seed(seed)
        sources = [
            torch.randint(4, 11, (int(n),), generator=gen).tolist() + [eos]
            for n in torch.randint(1, 6, (5,), generator=gen)
        ]
        width = max(map(len, sources))
        src = torch.tensor([s + [0] * (width - len(s)) for s in sources])
        lengths = torch.tensor([len(s) for s in sources])
        with torch.no_grad():
            state = model.start(src, lengths)
            got = greedy_search(
                model, state, batch_size=len(sources), bos_id=bos, eos_id=eos, max_len=num_steps
            )
            for source, output in zip(sources, got, strict=True):
                _, dec_state = reference.encode(source)
                context = dec_state[-1]
                dec_x, expected = bos, []
                for _ in range(num_steps):  # predict_seq2seq, one sentence at a time
                    y, dec_state = reference.decode([dec_x], dec_state, context)
                    dec_x = int(y.argmax(2))
                    if dec_x == eos:
                        break
                    expected.append(dec_x)
                assert output == expected
                lengths_seen.add(len(expected))
    assert num_steps in lengths_seen and any(0 < n < num_steps for n in lengths_seen)


# -- BLEU -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "label"),
    [
        ("va !", "va !"),
        ("j'ai perdu .", "j'ai perdu ."),
        ("il est riche .", "il est calme ."),
        ("je suis chez moi moi .", "je suis chez moi ."),
        ("A B B C D", "A B C D E F"),
    ],
)
def test_d2l_bleu_of_the_textbook_examples(pred, label):
    assert d2l_bleu(pred, label, k=2) == pytest.approx(textbook_bleu(pred, label, 2))


def test_evaluate_d2l_bleu_scores_detokenized_text_as_the_textbook_scores_tokens(tmp_path):
    task = _seq2seq_task(tmp_path, PAIRS * 2)
    hyps = ["va!", "j'ai perdu.", "il est riche.", "je suis chez moi moi."]
    refs = ["va !", "j'ai perdu .", "il est calme .", "je suis chez moi ."]
    data = task.encode_pairs([SentencePair("go .", r) for r in refs])
    report = task.translation_report(hyps, data, nll=4.0, count=4)
    expected = [
        textbook_bleu(preprocess_textbook(h), r, 2) for h, r in zip(hyps, refs, strict=True)
    ]
    assert report["d2l_bleu"] == pytest.approx(sum(expected) / len(expected))
    assert report["perplexity"] == pytest.approx(math.e)


# -- language-model minibatches ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "batch_size", "num_steps", "offset"),
    [(100, 4, 5, 0), (100, 4, 5, 4), (35, 2, 5, 3), (64, 3, 7, 6), (50, 1, 10, 9)],
)
def test_sequential_batches_are_the_textbooks_plus_a_shorter_tail(n, batch_size, num_steps, offset):
    corpus = list(range(n))
    theirs = d2l_seq_data_iter_sequential(corpus, batch_size, num_steps, offset)
    mine = sequential_batches(
        torch.tensor(corpus), batch_size=batch_size, bptt=num_steps, offset=offset
    )
    assert len(mine) - len(theirs) in (0, 1)
    for (x, y), (tx, ty) in zip(mine, theirs, strict=False):
        assert torch.equal(x, tx) and torch.equal(y, ty)
    if len(mine) > len(theirs):  # the documented extra: the stream's last, shorter columns
        x, _ = mine[-1]
        assert 0 < x.size(1) < num_steps
        length = (n - offset - 1) // batch_size
        assert len(theirs) * num_steps + x.size(1) == length


@pytest.mark.parametrize(
    ("n", "batch_size", "num_steps", "offset"),
    [(100, 4, 5, 0), (100, 3, 5, 4), (37, 2, 6, 5)],
)
def test_random_batches_hold_the_textbooks_pieces(n, batch_size, num_steps, offset):
    corpus = list(range(n))
    theirs = d2l_random_pieces(corpus, num_steps, offset)
    mine = random_batches(
        torch.tensor(corpus), batch_size=batch_size, bptt=num_steps, offset=offset, seed=5
    )
    pieces = [
        (tuple(x.tolist()), tuple(y.tolist()))
        for xb, yb in mine
        for x, y in zip(xb, yb, strict=True)
    ]
    assert sorted(pieces) == sorted(theirs)
    assert len(mine) == -(-len(theirs) // batch_size)  # the textbook drops the last partial batch


def test_sequential_training_carries_the_state_across_batches(tmp_path):
    task = _lm_task(
        tmp_path, "the time traveller for so it will be convenient to speak of him " * 3
    )
    torch.manual_seed(4)
    model = task.build_model().eval()
    batches = task.train_batches(0)
    first = task.batch_loss(model, batches[0])
    second = task.batch_loss(model, batches[1], first.carry)
    inputs = torch.cat([batches[0].inputs, batches[1].inputs], 1)
    targets = torch.cat([batches[0].targets, batches[1].targets], 1)
    with torch.no_grad():
        features, _ = model(inputs, None)
        logits = model.project(features)
    per_token = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    per_token = per_token.view_as(targets)
    width = batches[0].inputs.size(1)
    assert float(first.loss_sum.detach()) == pytest.approx(
        float(per_token[:, :width].sum()), rel=1e-5
    )
    assert float(second.loss_sum.detach()) == pytest.approx(
        float(per_token[:, width:].sum()), rel=1e-5
    )
    assert not first.carry.requires_grad  # detached from the graph


def test_random_sampling_resets_the_state_every_batch(tmp_path):
    text = "the time traveller for so it will be convenient to speak of him " * 3
    task = _lm_task(tmp_path, text)
    task.config.data.batching = "random"
    torch.manual_seed(4)
    model = task.build_model().eval()
    batch = task.train_batches(0)[1]
    fresh = task.batch_loss(model, batch)
    carried = torch.randn(2, batch.inputs.size(0), 7)
    assert fresh.carry is None
    again = task.batch_loss(model, batch, carried).loss_sum
    assert float(again.detach()) == float(fresh.loss_sum.detach())


# -- perplexity -------------------------------------------------------------------------------------


def test_perplexity_of_a_file_is_exp_of_the_mean_cross_entropy(tmp_path):
    task = _lm_task(tmp_path, "a b c " * 200)
    torch.manual_seed(5)
    model = task.build_model().eval()
    ids = task.train_ids
    nll, count = stream_nll(model, ids, CPU, chunk=37)
    with torch.no_grad():
        features, _ = model(ids[:-1].unsqueeze(0), None)
        mean_ce = float(F.cross_entropy(model.project(features)[0], ids[1:]))
    assert count == ids.numel() - 1
    assert perplexity(nll, count) == pytest.approx(math.exp(mean_ce), rel=1e-5)


def test_a_uniform_model_has_the_vocabulary_size_as_perplexity(tmp_path):
    task = _lm_task(tmp_path, "abcabd " * 20)
    model = task.build_model().eval()
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
    nll, count = stream_nll(model, task.train_ids, CPU)
    assert perplexity(nll, count) == pytest.approx(len(task.vocab), rel=1e-6)


# -- gradient clipping ---------------------------------------------------------------------------


def test_a_training_step_clips_the_gradient_to_one_global_norm(tmp_path):
    task = _seq2seq_task(tmp_path, PAIRS * 2, num_steps=7)
    task.config.train.clip_norm = 0.05
    torch.manual_seed(6)
    model = task.build_model()
    reference = copy.deepcopy(model)
    trainer = Trainer(
        task=task, model=model, config=task.config.train, run_dir=tmp_path / "t", device=CPU
    )
    stepped: list[list[torch.Tensor]] = []

    def capture(*args, **kwargs):
        stepped.append([p.grad.clone() for p in model.parameters()])

    trainer.optimizer.step = capture  # type: ignore[method-assign]
    batch = task.train_batches(0)[0]
    trainer._train_step(batch)
    out = task.batch_loss(reference, batch)
    (out.loss_sum / out.num_tokens).backward()  # the mean over non-pad target tokens
    grads = [p.grad for p in reference.parameters()]
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
    assert norm > 0.05
    (clipped,) = stepped
    for got, g in zip(clipped, grads, strict=True):
        torch.testing.assert_close(got, g * (0.05 / norm), rtol=1e-4, atol=1e-8)


# -- scratch recurrent layers against the textbook equations and torch.nn --------------------------


def _textbook_layer(kind: str, params: dict[str, torch.Tensor], xs: torch.Tensor):
    """One layer of the chapter's equations over (T, N, I), from zero state; torch.nn gate order."""
    w_ih, w_hh = params["weight_ih_l0"], params["weight_hh_l0"]
    b_ih, b_hh = params["bias_ih_l0"], params["bias_hh_l0"]
    h = xs.new_zeros(xs.size(1), w_hh.size(1))
    c = torch.zeros_like(h)
    outputs = []
    for x in xs:
        if kind == "rnn":  # H = tanh(X W_xh + H W_hh + b), as one product of concatenations
            w = torch.cat([w_ih, w_hh], 1)
            h = torch.tanh(torch.cat([x, h], 1) @ w.T + b_ih + b_hh)
        elif kind == "lstm":
            i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:
            x_r, x_z, x_n = (x @ w_ih.T + b_ih).chunk(3, 1)
            h_r, h_z, h_n = (h @ w_hh.T + b_hh).chunk(3, 1)
            r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
            h = z * h + (1 - z) * torch.tanh(x_n + r * h_n)
        outputs.append(h)
    return torch.stack(outputs)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_scratch_layers_follow_the_equations_and_torch_nn(kind):
    torch.manual_seed(7)
    scratch_class = {"rnn": rnnlab.nn.RNN, "gru": rnnlab.nn.GRU, "lstm": rnnlab.nn.LSTM}[kind]
    torch_class = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[kind]
    reference = torch_class(4, 8, num_layers=2, batch_first=True)
    scratch = scratch_class(4, 8, num_layers=2, batch_first=True)
    scratch.load_state_dict(reference.state_dict())
    x = torch.randn(3, 6, 4)
    lengths = torch.tensor([6, 2, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    with torch.no_grad():
        (ref_out, ref_state), (out, state) = reference(packed), scratch(packed)
        torch.testing.assert_close(out.data, ref_out.data, rtol=1e-5, atol=1e-6)
        ref_h = ref_state[0] if kind == "lstm" else ref_state
        h = state[0] if kind == "lstm" else state
        torch.testing.assert_close(h, ref_h, rtol=1e-5, atol=1e-6)
        assert h.shape == (2, 3, 8)
        one_layer = scratch_class(4, 8)
        one_layer.load_state_dict(
            {k: v for k, v in reference.state_dict().items() if k.endswith("_l0")}
        )
        xs = x.transpose(0, 1)  # (T, N, I)
        expected = _textbook_layer(kind, dict(one_layer.named_parameters()), xs)
        torch.testing.assert_close(one_layer(xs)[0], expected, rtol=1e-5, atol=1e-6)


# -- the textbook recipe ---------------------------------------------------------------------------


def test_textbook_config_has_the_textbooks_hyperparameters():
    config = load_config(Seq2SeqConfig, TEXTBOOK_CONFIG)
    data, model, train = config.data, config.model, config.train
    assert (data.preprocess, data.tokenizer, data.min_freq) == ("textbook", "word", 2)
    assert (data.num_steps, data.max_examples) == (10, 600)
    assert data.max_len == 0 or data.max_len >= data.num_steps  # never cuts before num_steps
    assert (model.cell, model.embed_size, model.hidden_size, model.num_layers) == ("gru", 32, 32, 2)
    assert model.dropout == 0.1 and model.embed_dropout == 0.0
    assert (model.attention, model.bidirectional_encoder, model.tie_weights) == (
        "none",
        False,
        False,
    )
    assert (train.batch_size, train.lr, train.epochs, train.clip_norm) == (64, 0.005, 300, 1.0)
    assert (train.label_smoothing, train.weight_decay, train.lr_schedule) == (0.0, 0.0, "constant")
    assert train.scheduled_sampling == "none" and train.ema_decay == 0.0
    assert (config.decode.beam_size, config.decode.max_len) == (1, 10)


def test_textbook_config_trains_on_the_books_first_pairs_outside_valid_and_test():
    """What the config's comment says: the first 600 pairs of fra.txt that the split did not
    move to valid or test, which leaves out 38 of the book's first 600."""
    if not FRA_TXT.is_file():
        pytest.skip("the shared Tatoeba fra.txt is not here")
    config = load_config(Seq2SeqConfig, TEXTBOOK_CONFIG)
    train = Path(config.data.train)
    train = train if train.is_absolute() else ROOT / train
    held_out = set()
    for split in ("valid.tsv", "test.tsv"):
        for line in (train.parent / split).read_text(encoding="utf-8").splitlines():
            held_out.add(tuple(line.split("\t")[:2]))
    with gzip.open(FRA_TXT, "rt", encoding="utf-8") as f:
        book = [tuple(next(f).rstrip("\n").split("\t")[:2]) for _ in range(700)]
    kept = [pair for pair in book if pair not in held_out][: config.data.max_examples]
    opener = gzip.open if train.suffix == ".gz" else open
    with opener(train, "rt", encoding="utf-8") as f:
        used = [
            tuple(next(f).rstrip("\n").split("\t")[:2]) for _ in range(config.data.max_examples)
        ]
    assert used == kept
    assert sum(pair in held_out for pair in book[:600]) == 38


def test_greedy_generation_is_the_textbooks_predict_ch8(tmp_path):
    task = _lm_task(
        tmp_path, "the time traveller for so it will be convenient to speak of him " * 3
    )
    torch.manual_seed(2)
    model = task.build_model().eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(8.0)
    prefix, num_preds = "time traveller", 12
    (got,) = task.generate(model, prefix, CPU, length=num_preds, greedy=True)
    vocab = task.vocab
    outputs = vocab.encode(list(prefix))
    with torch.no_grad():
        # Warm-up over the prefix, then feed each prediction back (predict_ch8); rnnlab never
        # emits <pad> or <bos>, which are never training targets.
        _, state = model(torch.tensor([outputs[:-1]]), None)
        for _ in range(num_preds):
            features, state = model(torch.tensor([[outputs[-1]]]), state)
            logits = model.project(features)[0, -1]
            logits[[vocab.pad_id, vocab.bos_id]] = -math.inf
            outputs.append(int(logits.argmax()))
    assert got == "".join(vocab.itos[i] for i in outputs)
    assert len(set(got[len(prefix) :])) > 1


def test_preprocess_equals_preprocess_nmt_on_random_text_without_other_whitespace():
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice("aZ ,.!?\u202f\xa0'İéΣ") for _ in range(rng.randint(0, 12)))
        assert preprocess_textbook(text) == d2l_preprocess_nmt(text)
