"""Training options against independent references: schedules, losses, clipping, batching, the
tagger's and the language model's options, and resuming under each of them.

Runs are tiny (a few steps of models of a few hundred parameters). References are written here by
hand: a plain Adam loop with ``torch.nn.utils.clip_grad_norm_`` and ``F.cross_entropy``, the
schedule formulas, and ``tests.cli.test_lifecycle_hunt.assert_resume_equals_uninterrupted`` for
resuming.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from rnnlab.cli import EXIT_INTERRUPTED
from rnnlab.tasks.lm import LanguageModelTask
from rnnlab.tasks.lm_config import LMConfig
from rnnlab.tasks.seq2seq import Seq2SeqTask
from rnnlab.tasks.tagger import TaggerTask
from rnnlab.training.trainer import Trainer
from tests.cli.test_lifecycle_hunt import (
    assert_resume_equals_uninterrupted,
    ctrl_c,
    on_call,
    records,
    rnnlab,
    sets,
    trainer_state,
)
from tests.conftest import DATA, PANGRAM, SAMPLE, _make_task, reverse_pairs, write_tsv

CPU = {"train.num_threads": 1, "train.device": "cpu"}


def with_overrides(settings: dict[str, object], overrides: dict[str, object]) -> dict[str, object]:
    """``settings`` with ``overrides`` given as keyword names (``train__lr`` → ``train.lr``)."""
    return {**settings, **{key.replace("__", "."): value for key, value in overrides.items()}}


def lm_settings(text: Path, **overrides: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "data.train": text,
        "data.valid": text,
        "data.clean": "none",
        "model.hidden_size": 8,
        "model.embed_size": 4,
        "train.batch_size": 3,
        "train.bptt": 16,
        "train.epochs": 1,
        "train.log_every": 1,
        **CPU,
    }
    return with_overrides(settings, overrides)


def seq2seq_settings(root: Path, **overrides: object) -> dict[str, object]:
    train = root / "train.tsv"
    if not train.exists():
        write_tsv(train, reverse_pairs(120, seed=1, max_len=6))
        write_tsv(root / "valid.tsv", reverse_pairs(20, seed=2, max_len=6))
    settings: dict[str, object] = {
        "data.train": train,
        "data.valid": root / "valid.tsv",
        "data.tsv_langs": "[en, fr]",
        "data.preprocess": "none",
        "data.min_freq": 1,
        "model.embed_size": 8,
        "model.hidden_size": 8,
        "model.num_layers": 1,
        "train.batch_size": 16,
        "train.epochs": 1,
        "train.log_every": 1,
        "decode.max_len": 8,
        **CPU,
    }
    return with_overrides(settings, overrides)


def tagger_settings(**overrides: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "data.train": SAMPLE / "train.conllu",
        "data.valid": SAMPLE / "dev.conllu",
        "data.max_examples": 48,
        "data.min_freq": 1,
        "model.embed_size": 8,
        "model.hidden_size": 8,
        "model.char_embed_size": 4,
        "model.char_hidden_size": 4,
        "train.batch_size": 8,
        "train.epochs": 1,
        "train.log_every": 1,
        **CPU,
    }
    return with_overrides(settings, overrides)


@pytest.fixture
def pangram(tmp_path: Path) -> Path:
    path = tmp_path / "pangram.txt"
    path.write_text(PANGRAM * 8, encoding="utf-8")  # 352 characters
    return path


def train(task: str, out: Path, settings: dict[str, object]) -> list[dict[str, Any]]:
    assert rnnlab("train", task, "--out", out, *sets(settings)) == 0
    return records(out)


# ---------------------------------------------------------------------------------------------------
# The learning-rate schedule over a run whose epochs differ in length


def test_linear_schedule_anneals_over_the_steps_the_run_takes(pangram: Path, tmp_path: Path):
    # 352 characters, 3 streams of bptt 16: the epoch offsets (seed 42) give epochs of 7 then 8
    # batches, 15 steps in all. A linear schedule runs step s (1-based) at lr · (1 − (s − 1) / 15).
    run = tmp_path / "run"
    logged = train(
        "lm",
        run,
        lm_settings(pangram, train__epochs=2, train__lr=0.01, train__lr_schedule="linear"),
    )
    steps = [r for r in logged if "lr" in r]
    total = len(steps)
    assert total == 15
    expected = [0.01 * (1 - (s - 1) / total) for s in range(1, total + 1)]
    assert [r["lr"] for r in steps] == pytest.approx(expected, rel=1e-9)


def test_plateau_decay_and_early_stopping_follow_the_validations(pangram: Path, tmp_path: Path):
    # Validation every step; the learning rate and the stop follow ReduceLROnPlateau's rule
    # (decay once more than lr_patience validations in a row did not improve) and patience.
    run = tmp_path / "run"
    settings = lm_settings(
        pangram,
        train__epochs=3,
        train__lr=1.0,  # large enough that validations get worse
        train__valid_every=1,
        train__lr_decay=0.5,
        train__lr_patience=0,
        train__patience=2,
        train__clip_norm=0,
    )
    logged = train("lm", run, settings)
    lrs = {r["step"]: r["lr"] for r in logged if "lr" in r}
    valid = [(r["step"], r["valid_ppl"]) for r in logged if "valid_ppl" in r]
    best, bad, lr_bad, lr, stop_step = None, 0, 0, 1.0, None
    expected_lr = {}
    for step, ppl in valid:
        expected_lr[step] = lr  # the rate step `step` ran with, before its validation
        if best is None or ppl < best:
            best, bad, lr_bad = ppl, 0, 0
        else:
            bad, lr_bad = bad + 1, lr_bad + 1
            if lr_bad > 0:
                lr, lr_bad = lr * 0.5, 0
            if bad >= 2:
                stop_step = step
                break
    assert lrs == pytest.approx(expected_lr, rel=1e-12)
    assert stop_step is not None and max(lrs) == stop_step  # the run stopped early, there
    assert trainer_state(run)["early_stopped"]
    assert trainer_state(run)["lr_scale"] == pytest.approx(lr)
    assert min(lrs.values()) < 1.0  # the decay happened: the check is not empty


# ---------------------------------------------------------------------------------------------------
# Losses and clipping against a hand-written loop


def _assert_same_adam_weights(model, reference, *, lr: float) -> None:
    """The trainer's weights against the hand loop's, to within 1% of one Adam step.

    Adam divides each gradient element by the root of its running square, so an element whose
    gradient is near zero moves by up to ``lr`` on whatever its last bits say; the kernels' summation
    order (AVX2 against AVX512) changes those bits. On an Intel Xeon a handful of such elements ended
    1.1e-4 apart after five steps at lr 0.02 while the losses agreed to 1e-5.
    """
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-4, atol=0.01 * lr)


def _hand_adam_steps(model, batches, loss_of, *, lr: float, clip: float, lrs=None):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses, carry = [], None
    for i, batch in enumerate(batches):
        if lrs is not None:
            for group in optimizer.param_groups:
                group["lr"] = lrs[i]
        model.train()
        loss, carry = loss_of(model, batch, carry)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_language_model_steps_equal_a_hand_loop_with_carried_state(pangram: Path, tmp_path: Path):
    """Truncated BPTT with the state carried (and reset each epoch), cosine with warm-up, clipping:
    the trainer's losses, learning rates and weights equal a plain loop's."""
    config = LMConfig()
    config.data.train, config.data.valid, config.data.clean = str(pangram), "", "none"
    config.model.hidden_size, config.model.embed_size, config.model.cell = 8, 4, "lstm"
    train_cfg = config.train
    train_cfg.batch_size, train_cfg.bptt, train_cfg.epochs = 3, 7, 2
    train_cfg.lr, train_cfg.clip_norm, train_cfg.log_every = 0.05, 0.5, 1
    train_cfg.lr_schedule, train_cfg.warmup_steps, train_cfg.device = "cosine", 3, "cpu"
    run = tmp_path / "run"
    run.mkdir()
    task = LanguageModelTask(config, run)
    task.prepare_training()
    torch.manual_seed(0)
    model = task.build_model()
    initial = copy.deepcopy(model.state_dict())
    Trainer(task=task, model=model, config=train_cfg, run_dir=run, device=torch.device("cpu")).fit()
    logged = [r for r in records(run) if "lr" in r]

    batches = [(e, b) for e in range(2) for b in task.train_batches(e)]
    assert len(task.train_batches(0)) == len(task.train_batches(1)) == 17
    planned = len(batches)
    lrs = [
        0.05 * min(1.0, (s + 1) / 3) * 0.5 * (1 + math.cos(math.pi * s / planned))
        for s in range(planned)
    ]

    def loss_of(reference, item, carry):
        epoch, batch = item
        if carry is not None and carry[0] != epoch:
            carry = None  # a new epoch starts from the zero state
        features, state = reference(batch.inputs, None if carry is None else carry[1])
        loss = F.cross_entropy(reference.output(features).flatten(0, 1), batch.targets.flatten())
        return loss, (epoch, tuple(s.detach() for s in state))

    reference = task.build_model()
    reference.load_state_dict(initial)
    losses = _hand_adam_steps(reference, batches, loss_of, lr=0.05, clip=0.5, lrs=lrs)
    assert [r["lr"] for r in logged] == pytest.approx(lrs, rel=1e-9, abs=1e-15)
    assert [r["train_loss"] for r in logged] == pytest.approx(losses, rel=1e-5)
    _assert_same_adam_weights(model, reference, lr=0.05)


@pytest.mark.parametrize("attention", ["none", "bahdanau"])
def test_translator_steps_equal_smoothed_cross_entropy_over_non_pad_tokens(
    tmp_path: Path, attention: str
):
    """The per-token mean of label-smoothed cross-entropy over the non-pad targets, then global-norm
    clipping: a hand loop on the same batches ends with the trainer's weights."""
    from rnnlab.tasks.seq2seq_config import Seq2SeqConfig

    settings = seq2seq_settings(tmp_path)
    config = Seq2SeqConfig()
    config.data.train, config.data.valid = str(settings["data.train"]), ""
    config.data.tsv_langs, config.data.preprocess, config.data.min_freq = ["en", "fr"], "none", 1
    config.model.embed_size = config.model.hidden_size = 8
    config.model.num_layers, config.model.dropout, config.model.attention = 1, 0.0, attention
    train_cfg = config.train
    train_cfg.batch_size, train_cfg.max_steps, train_cfg.lr = 16, 5, 0.02
    train_cfg.label_smoothing, train_cfg.clip_norm, train_cfg.log_every = 0.2, 0.3, 1
    train_cfg.device = "cpu"
    run = tmp_path / "run"
    run.mkdir()
    task = Seq2SeqTask(config, run)
    task.prepare_training()
    torch.manual_seed(0)
    model = task.build_model()
    initial = copy.deepcopy(model.state_dict())
    Trainer(task=task, model=model, config=train_cfg, run_dir=run, device=torch.device("cpu")).fit()
    logged = [r["train_loss"] for r in records(run) if "train_loss" in r]

    pad = task.tgt_vocab.pad_id
    batches = task.train_batches(0)[:5]
    assert any(bool((b.tgt_out == pad).any()) for b in batches)  # padding is there to ignore

    def loss_of(reference, batch, carry):
        logits = reference.project(reference(batch.src, batch.src_lengths, batch.tgt_in))
        loss = F.cross_entropy(
            logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=pad, label_smoothing=0.2
        )
        return loss, None

    reference = task.build_model()
    reference.load_state_dict(initial)
    losses = _hand_adam_steps(reference, batches, loss_of, lr=0.02, clip=0.3)
    assert logged == pytest.approx(losses, rel=1e-5)
    _assert_same_adam_weights(model, reference, lr=0.02)


def test_softmax_tagger_applies_label_smoothing(tmp_path: Path):
    task = _make_task(tmp_path, DATA / "toy.txt")
    task.config.train.label_smoothing = 0.2
    torch.manual_seed(0)
    model = task.build_model()
    model.train()
    batch = task.train_batches(0)[0]
    out = task.batch_loss(model, batch)
    emissions = model(batch.words, batch.lengths, batch.chars, batch.char_lengths, batch.word_types)
    mask = torch.arange(batch.words.size(1)) < batch.lengths[:, None]
    reference = F.cross_entropy(
        emissions[mask], batch.tags[mask], label_smoothing=0.2, reduction="sum"
    )
    torch.testing.assert_close(out.loss_sum, reference)


# ---------------------------------------------------------------------------------------------------
# Resuming under each option equals an uninterrupted run


TASK_CLASSES = {"lm": LanguageModelTask, "seq2seq": Seq2SeqTask, "tagger": TaggerTask}


def assert_interrupted_run_resumes_exactly(
    task: str, settings: dict[str, object], root: Path, monkeypatch: pytest.MonkeyPatch, at: int
) -> None:
    """Ctrl-C as step ``at`` begins; ``--resume`` then ends as the uninterrupted run did."""
    whole = root / "whole"
    assert rnnlab("train", task, "--out", whole, *sets(settings)) == 0
    run = root / "run"
    cls = TASK_CLASSES[task]
    monkeypatch.setattr(cls, "begin_step", on_call(at, ctrl_c, cls.begin_step))
    assert rnnlab("train", task, "--out", run, *sets(settings)) == EXIT_INTERRUPTED
    monkeypatch.undo()
    assert trainer_state(run)["step"] == at
    assert trainer_state(whole)["step"] > at
    assert_resume_equals_uninterrupted(run, whole)


@pytest.mark.parametrize(
    "options",
    [
        {
            "model.cell": "lstm",
            "model.variational_dropout": True,
            "model.dropout": 0.3,
            "model.tie_weights": True,
            "model.embed_size": 8,
            "train.lr_schedule": "cosine",
            "train.warmup_steps": 3,
            "train.ema_decay": 0.9,
            "train.valid_every": 4,
        },
        {
            "data.batching": "random",
            "model.one_hot": True,
            "model.dropout": 0.2,
            "train.label_smoothing": 0.1,
            "train.lr_decay": 0.5,
            "train.lr": 0.5,
            "train.valid_every": 2,
            "train.clip_norm": 0.1,
        },
    ],
    ids=["lstm-variational-tied-cosine-ema", "random-onehot-smoothing-plateau"],
)
def test_language_model_resumes_exactly(
    options: dict[str, object], pangram: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = {**lm_settings(pangram, train__epochs=2), **options}
    assert_interrupted_run_resumes_exactly("lm", settings, tmp_path, monkeypatch, at=5)


def test_translator_with_scheduled_sampling_resumes_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    settings = seq2seq_settings(
        tmp_path,
        model__attention="bahdanau",
        model__dropout=0.2,
        train__scheduled_sampling="inverse_sigmoid",
        train__ss_k=2,
        train__ss_sample="true",
        train__label_smoothing=0.1,
        train__lr_schedule="linear",
        train__warmup_steps=2,
        train__ema_decay=0.8,
        train__valid_every=3,
        train__lr_decay=0.5,
    )
    assert_interrupted_run_resumes_exactly("seq2seq", settings, tmp_path, monkeypatch, at=4)


def test_tagger_with_its_options_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    settings = tagger_settings(
        data__lowercase="true",
        data__max_word_chars=4,
        data__max_len=10,
        data__aux_tag_column="xpos",
        model__crf="true",
        model__char_encoder="cnn",
        model__word_dropout=0.1,
        model__variational_dropout="true",
        model__freq_bin_weight=0.5,
        train__ema_decay=0.9,
        train__valid_every=3,
        train__lr_schedule="cosine",
    )
    assert_interrupted_run_resumes_exactly("tagger", settings, tmp_path, monkeypatch, at=4)


# ---------------------------------------------------------------------------------------------------
# Batches: every example once an epoch, deterministic, max_examples and max_len


def _seq2seq_task(root: Path, **train_options: object) -> Seq2SeqTask:
    from rnnlab.tasks.seq2seq_config import Seq2SeqConfig

    write_tsv(root / "train.tsv", reverse_pairs(300, seed=3, min_len=1, max_len=9))
    config = Seq2SeqConfig()
    config.data.train, config.data.valid = str(root / "train.tsv"), ""
    config.data.tsv_langs, config.data.preprocess, config.data.min_freq = ["en", "fr"], "none", 1
    config.data.max_examples, config.data.max_len = 250, 4
    config.train.batch_size = 7
    for key, value in train_options.items():
        setattr(config.train, key, value)
    task = Seq2SeqTask(config, root)
    task.prepare_training()
    return task


def _rows(ids: torch.Tensor, lengths: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(row[:n].tolist()) for row, n in zip(ids, lengths, strict=True)]


@pytest.mark.parametrize("bucket", [True, False])
def test_translator_batches_hold_every_example_once_truncated(tmp_path: Path, bucket: bool):
    task = _seq2seq_task(tmp_path, bucket=bucket)
    lines = (tmp_path / "train.tsv").read_text(encoding="utf-8").splitlines()[:250]
    src_vocab, tgt_vocab = task.src_vocab, task.tgt_vocab
    expected = sorted(
        (
            tuple(src_vocab.encode(s.split()[:4]) + [src_vocab.eos_id]),
            tuple(tgt_vocab.encode(t.split()[:4]) + [tgt_vocab.eos_id]),
        )
        for s, t in (line.split("\t") for line in lines)
    )
    epochs = [task.train_batches(epoch) for epoch in range(2)]
    for batches in epochs:
        got = []
        for b in batches:
            assert len(b.src) <= 7
            src, tgt = _rows(b.src, b.src_lengths), _rows(b.tgt_out, b.tgt_lengths)
            assert _rows(b.tgt_in, b.tgt_lengths) == [(tgt_vocab.bos_id, *t[:-1]) for t in tgt]
            got += list(zip(src, tgt, strict=True))
        assert sorted(got) == expected
    again = task.train_batches(0)
    assert [_rows(b.src, b.src_lengths) for b in again] == [
        _rows(b.src, b.src_lengths) for b in epochs[0]
    ]
    assert [_rows(b.src, b.src_lengths) for b in epochs[1]] != [
        _rows(b.src, b.src_lengths) for b in epochs[0]
    ]


def test_tagger_batches_hold_every_piece_of_every_sentence_once(tmp_path: Path):
    from rnnlab.data.tagged import read_tagged
    from rnnlab.tasks.tagger_config import TaggerConfig

    config = TaggerConfig()
    config.data.train, config.data.valid = str(SAMPLE / "train.conllu"), ""
    config.data.max_examples, config.data.max_len, config.data.min_freq = 30, 6, 1
    config.train.batch_size = 4
    task = TaggerTask(config, tmp_path)
    task.prepare_training()
    sentences = read_tagged(str(SAMPLE / "train.conllu"), fmt="conllu", tag_column="upos")[:30]
    expected = sorted(
        tuple(task.tagset.encode(s.tags[i : i + 6]))
        for s in sentences
        for i in range(0, len(s.words), 6)
    )
    assert any(len(s.words) > 6 for s in sentences)
    for epoch in range(2):
        got = sorted(
            tuple(row) for b in task.train_batches(epoch) for row in _rows(b.tags, b.lengths)
        )
        assert got == expected


@pytest.mark.parametrize("batching", ["sequential", "random"])
def test_language_model_batches_predict_each_position_once(tmp_path: Path, batching: str):
    from rnnlab.data.lm_stream import epoch_offset

    text = tmp_path / "t.txt"
    text.write_text("".join(f"line {i:02d} {'xyz'[i % 3]}\n" for i in range(40)), encoding="utf-8")
    config = LMConfig()
    config.data.train, config.data.valid, config.data.clean = str(text), "", "none"
    config.data.max_examples, config.data.batching = 25, batching
    config.train.batch_size, config.train.bptt = 3, 5
    task = LanguageModelTask(config, tmp_path)
    task.prepare_training()
    first_lines = "".join(text.read_text(encoding="utf-8").splitlines(keepends=True)[:25])
    ids = torch.tensor(task.vocab.encode(list(first_lines)))
    assert torch.equal(task.train_ids, ids)
    task.train_ids = torch.arange(len(ids))  # each token is its own position in the stream
    for epoch in range(2):
        offset = epoch_offset(config.seed, epoch, 5)
        positions = []
        for b in task.train_batches(epoch):
            assert torch.equal(b.targets, b.inputs + 1)  # each target is the next token
            positions += b.targets.flatten().tolist()
        assert len(positions) == len(set(positions))  # no target twice
        tail = len(ids) - 1 - offset
        assert tail - (3 if batching == "sequential" else 5) < len(positions) <= tail
        assert min(positions) == offset + 1


# ---------------------------------------------------------------------------------------------------
# max_minutes annealing and log_every windows


class _SteppingClock:
    """``time.perf_counter`` of a machine where each training step takes exactly one second."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0  # read before and after each step: one second apart
        return self.now


def test_time_budget_anneals_by_training_seconds(
    pangram: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import rnnlab.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "time", _SteppingClock())
    run = tmp_path / "run"
    settings = lm_settings(
        pangram,
        train__epochs=100,
        train__lr=0.01,
        train__lr_schedule="linear",
        train__max_minutes=10 / 60,  # ten one-second steps
    )
    logged = train("lm", run, settings)
    lrs = [r["lr"] for r in logged if "lr" in r]
    # Step s (1-based) starts after s − 1 seconds: the time budget is the furthest along.
    assert lrs == pytest.approx([0.01 * (1 - (s - 1) / 10) for s in range(1, 11)], rel=1e-9)
    assert [r["step"] for r in logged if "valid_ppl" in r] == [7, 10]  # epoch end, budget end
    assert trainer_state(run)["step"] == 10


def test_logged_train_loss_is_the_token_weighted_mean_of_its_window(pangram: Path, tmp_path: Path):
    every = train("lm", tmp_path / "every", lm_settings(pangram, train__epochs=2))
    windowed = train(
        "lm", tmp_path / "windowed", lm_settings(pangram, train__epochs=2, train__log_every=4)
    )
    config = LMConfig()
    config.data.train = str(pangram)
    config.train.batch_size, config.train.bptt = 3, 16
    task = LanguageModelTask(config, tmp_path)
    task.train_ids = torch.zeros(len(PANGRAM * 8), dtype=torch.long)
    tokens = [b.targets.numel() for e in range(2) for b in task.train_batches(e)]
    assert len(set(tokens)) > 1  # the last batch of an epoch is shorter: weighting matters
    losses = [r["train_loss"] for r in every if "train_loss" in r]
    assert len(losses) == len(tokens)
    got = {r["step"]: r["train_loss"] for r in windowed if "train_loss" in r}
    expected = {}
    for end in range(4, len(tokens) + 1, 4):
        window = range(end - 4, end)
        total = sum(losses[i] * tokens[i] for i in window)
        expected[end] = total / sum(tokens[i] for i in window)
    assert got == pytest.approx(expected, rel=1e-6)
    assert [r["epoch"] for r in windowed if "train_loss" in r] == pytest.approx(
        [r["epoch"] for r in every if "train_loss" in r and r["step"] % 4 == 0]
    )


def test_time_budgeted_run_resumes_exactly(
    pangram: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import rnnlab.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "time", _SteppingClock())
    settings = lm_settings(
        pangram,
        train__epochs=100,
        train__lr_schedule="cosine",
        train__max_minutes=9 / 60,
        train__ema_decay=0.7,
    )
    whole = tmp_path / "whole"
    assert rnnlab("train", "lm", "--out", whole, *sets(settings)) == 0
    run = tmp_path / "run"
    begin_step = LanguageModelTask.begin_step
    monkeypatch.setattr(LanguageModelTask, "begin_step", on_call(4, ctrl_c, begin_step))
    assert rnnlab("train", "lm", "--out", run, *sets(settings)) == EXIT_INTERRUPTED
    monkeypatch.setattr(LanguageModelTask, "begin_step", begin_step)  # the clock stays
    assert trainer_state(run)["step"] == 4 and trainer_state(whole)["step"] == 9
    assert_resume_equals_uninterrupted(run, whole)


# ---------------------------------------------------------------------------------------------------
# Settings that cannot mean anything


@pytest.mark.parametrize("key", ["patience", "lr_patience", "log_every"])
def test_negative_counts_are_config_errors(key: str):
    from rnnlab.config import TrainConfig
    from rnnlab.errors import ConfigError

    with pytest.raises(ConfigError, match=f"train.{key}"):
        TrainConfig(**{key: -1})
