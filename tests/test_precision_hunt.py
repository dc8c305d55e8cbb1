"""bf16 autocast across the three tasks: saved state, losses, gradients, decoding and commands.

References: the same weights evaluated without autocast (plain float32 autograd), ATen's own
record of the dtypes its softmax and loss kernels receive (``TorchDispatchMode``, below autocast),
bfloat16's 8-bit mantissa for tolerances (a rounding costs at most 2^-8 relative), the README's
words for ``train.precision``/``decode.precision`` and the notices training prints, and greedy search
as the definition of beam search with one beam.
"""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

import rnnlab
from rnnlab.data.batching import pad_batch
from rnnlab.decoding.beam import beam_search_hypotheses
from rnnlab.decoding.greedy import greedy_hypotheses
from rnnlab.nn.precision import autocast, bf16_pays, native_bf16
from rnnlab.rundir import open_run
from tests.cli_runner import call_main
from tests.conftest import PANGRAM, reverse_pairs, write_tsv

EWT = Path(__file__).resolve().parents[1] / "data" / "ud-ewt-sample"
REDUCTIONS = ("softmax", "nll_loss", "logsumexp", "cross_entropy")


def _sets(settings: dict[str, object]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def _cli(monkeypatch, capsys, *argv: object, stdin: str = "") -> tuple[object, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    capsys.readouterr()
    try:
        code: object = call_main(*argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


BASE = {
    "train.max_steps": 2,
    "train.num_threads": 1,
    "train.device": "cpu",
    "train.precision": "bf16",
    "model.dropout": 0,
}


def _configs(data: Path) -> dict[str, tuple[str, dict[str, object]]]:
    seq2seq = {
        **BASE,
        "data.train": data / "train.tsv",
        "data.tsv_langs": "[en, fr]",
        "data.min_freq": 1,
        "model.embed_size": 8,
        "model.hidden_size": 16,
        "model.num_layers": 1,
        "model.attention": "bahdanau",
        "model.bidirectional_encoder": "true",
        "train.batch_size": 16,
        "decode.precision": "bf16",
    }
    lm = {
        **BASE,
        "data.train": data / "text.txt",
        "data.clean": "none",
        "model.hidden_size": 32,
        "model.embed_size": 8,
        "model.softmax": "adaptive",
        "model.cutoffs": "[5, 15]",
        "train.batch_size": 4,
        "train.bptt": 8,
    }
    tagger = {
        **BASE,
        "data.train": EWT / "train.conllu",
        "data.max_examples": 40,
        "model.hidden_size": 8,
        "model.embed_size": 8,
        "model.cell": "gru",
        "model.crf": "true",
        "model.char_encoder": "rnn",
        "model.adversarial_epsilon": 0.5,
        "model.lm_weight": 0.5,
    }
    return {"seq2seq": ("seq2seq", seq2seq), "lm": ("lm", lm), "tagger": ("tagger", tagger)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One bf16-trained run per task (two steps: enough to have gradients and Adam state)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bf16_runs")
    write_tsv(root / "train.tsv", reverse_pairs(300, seed=1, max_len=6))
    (root / "text.txt").write_text(PANGRAM * 5, encoding="utf-8")
    out = {}
    for name, (task, settings) in _configs(root).items():
        assert call_main("train", task, "--out", root / name, *_sets(settings)) == 0
        out[name] = root / name
    out["data"] = root
    return out


def _float_tensors(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(path).items() if v.is_floating_point()}


@pytest.mark.parametrize("name", ["seq2seq", "lm", "tagger"])
def test_bf16_runs_save_float32_weights_and_adam_state(runs, name):
    run = runs[name]
    for which in ("last", "best"):
        weights = _float_tensors(run / which / "model.safetensors")
        assert weights, which
        assert {str(t.dtype) for t in weights.values()} == {"torch.float32"}, which
    state = _float_tensors(run / "last" / "trainer_state.safetensors")
    moments = {k: v for k, v in state.items() if k.startswith("optim") and "exp_avg" in k}
    assert moments, sorted(state)
    assert all(t.dtype == torch.float32 for t in state.values()), {
        k: t.dtype for k, t in state.items()
    }
    # Two Adam steps moved the moments off zero: they were written from real float32 gradients.
    assert any(float(t.abs().sum()) > 0 for t in moments.values())


class _ReductionSpy(TorchDispatchMode):
    """Records the ATen softmax/loss kernels that received a bfloat16 tensor (after autocast)."""

    def __init__(self) -> None:
        super().__init__()
        self.bf16_calls: list[str] = []
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if any(r in name for r in REDUCTIONS):
            self.calls += 1
            if any(isinstance(a, torch.Tensor) and a.dtype == torch.bfloat16 for a in args):
                self.bf16_calls.append(name)
        return func(*args, **(kwargs or {}))


def _loss_and_gradients(run, batch, precision: str):
    model = run.model
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)
    spy = _ReductionSpy()
    with spy, autocast("cpu", precision):
        out = run.task.batch_loss(model, batch)
    out.loss_sum.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    return out.loss_sum.detach(), grads, spy


@pytest.mark.parametrize("name", ["seq2seq", "lm", "tagger"])
def test_bf16_loss_is_float32_and_tracks_the_fp32_loss_of_the_same_weights(runs, name):
    run = open_run(runs[name], which="last")
    run.task.read_training_data()
    batch = run.task.train_batches(0)[0]
    ref_loss, ref_grads, _ = _loss_and_gradients(run, batch, "fp32")
    loss, grads, spy = _loss_and_gradients(run, batch, "bf16")
    assert loss.dtype == torch.float32
    assert spy.calls > 0 and spy.bf16_calls == []
    # Products rounded to 8 bits of mantissa (≤ 0.4% each) and reduced in float32: the summed
    # loss stays within 1% of float32's.
    assert abs(loss.item() - ref_loss.item()) <= 0.01 * abs(ref_loss.item())
    assert grads.keys() == ref_grads.keys()
    assert all(g.dtype == torch.float32 for g in grads.values())
    assert all(p.dtype == torch.float32 for p in run.model.parameters())
    flat = torch.cat([grads[k].flatten() for k in sorted(grads)])
    ref_flat = torch.cat([ref_grads[k].flatten() for k in sorted(ref_grads)])
    assert torch.isfinite(flat).all()
    assert (flat - ref_flat).norm() <= 0.05 * ref_flat.norm()


def _sources(n: int) -> list[str]:
    return [src for src, _ in reverse_pairs(n, seed=5, max_len=6)]


def test_bf16_decoding_gives_valid_hypotheses_and_runs_softmaxes_in_float32(runs):
    translator = rnnlab.load(runs["seq2seq"])
    assert translator.task.config.decode.precision == "bf16"
    vocab = translator.task.tgt_vocab
    lines = _sources(24)
    spy = _ReductionSpy()
    with spy:
        greedy = translator.translate(lines)
        beam = translator.translate(lines, beam=4, n_best=3)
    assert spy.calls > 0 and spy.bf16_calls == []
    never = set(vocab.never_emitted)
    for result in greedy:
        assert isinstance(result.score, float) and math.isfinite(result.score)
        assert all(token in vocab.itos for token in result.tokens)
    for result in beam:
        scores = [score for _, score in result.n_best]
        assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
        assert scores == sorted(scores, reverse=True)
        assert result.score == scores[0]
    sources = [translator.task.encode_source(line) for line in lines]
    hyps = translator.task.translate_hypotheses(translator.model, sources, translator.device)
    for sentence in hyps:
        assert all(0 <= t < len(vocab) and t not in never for t in sentence[0].tokens)


def test_bf16_beam_search_with_one_beam_is_greedy_search(runs):
    run = open_run(runs["seq2seq"])
    task, model = run.task, run.model
    vocab = task.tgt_vocab
    sources = [task.encode_source(line) for line in _sources(16)]
    src, lengths = pad_batch(sources, task.src_vocab.pad_id)
    search = dict(
        batch_size=len(sources),
        bos_id=vocab.bos_id,
        eos_id=vocab.eos_id,
        max_len=12,
        device="cpu",
        banned=vocab.never_emitted,
    )
    with torch.no_grad(), autocast("cpu", "bf16"):
        greedy = greedy_hypotheses(model, model.start(src, lengths), **search)
        beam = beam_search_hypotheses(model, model.start(src, lengths), beam_size=1, **search)
    for g, (b,) in zip(greedy, beam, strict=True):
        assert g.tokens == b.tokens
        assert math.isfinite(g.score) and g.score == pytest.approx(b.score, abs=1e-4)


def test_commands_on_bf16_trained_runs(runs, monkeypatch, capsys):
    data = runs["data"]
    code, out, _ = _cli(monkeypatch, capsys, "translate", runs["seq2seq"], stdin="a b c\nd e\n")
    assert code == 0 and len(out.splitlines()) == 2
    code, out, _ = _cli(
        monkeypatch, capsys, "translate", runs["seq2seq"], "--beam", 3, stdin="a b c\n"
    )
    assert code == 0 and len(out.splitlines()) == 1
    code, out, _ = _cli(
        monkeypatch, capsys, "evaluate", runs["seq2seq"], "--data", data / "train.tsv", "--json"
    )
    assert code == 0 and '"perplexity"' in out
    code, out, _ = _cli(monkeypatch, capsys, "tag", runs["tagger"], stdin="the dog runs\n")
    assert code == 0 and out.count("/") == 3
    code, out, _ = _cli(
        monkeypatch, capsys, "generate", runs["lm"], "--prefix", "the", "--length", 5
    )
    assert code == 0 and out.startswith("the")
    code, out, _ = _cli(
        monkeypatch, capsys, "evaluate", runs["lm"], "--data", data / "text.txt", "--json"
    )
    assert code == 0 and '"perplexity"' in out


def test_a_bf16_checkpoint_resumes_in_fp32_and_back(runs, tmp_path, monkeypatch, capsys):
    run = tmp_path / "lm"
    shutil.copytree(runs["lm"], run)
    for precision, steps in (("fp32", 3), ("bf16", 4)):
        code, _, err = _cli(
            monkeypatch,
            capsys,
            "train",
            "--resume",
            run,
            *_sets({"train.precision": precision, "train.max_steps": steps}),
        )
        assert code == 0, err
        assert f"done: {steps} steps" in err
        state = _float_tensors(run / "last" / "trainer_state.safetensors")
        assert all(t.dtype == torch.float32 for t in state.values())
    assert "precision: bf16" in (run / "config.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("task", ["lm", "tagger"])
def test_training_says_what_auto_chose(runs, task, tmp_path, monkeypatch, capsys):
    _, settings = _configs(runs["data"])[task]
    settings = {**settings, "train.precision": "auto", "train.max_steps": 1}
    code, _, err = _cli(
        monkeypatch, capsys, "train", task, "--out", tmp_path / task, *_sets(settings)
    )
    assert code == 0, err
    chosen = "bf16" if bf16_pays("cpu") else "fp32"
    assert f"train.precision: auto → {chosen}" in err


@pytest.mark.skipif(native_bf16("cpu"), reason="this CPU has a bfloat16 LSTM kernel")
def test_bf16_on_a_fused_lstm_run_is_a_user_error_on_resume_and_decode(
    runs, tmp_path, monkeypatch, capsys
):
    _, settings = _configs(runs["data"])["seq2seq"]
    settings = {**settings, "train.precision": "fp32", "decode.precision": "fp32"}
    settings["model.cell"] = "lstm"
    out = tmp_path / "lstm"
    code, _, err = _cli(monkeypatch, capsys, "train", "seq2seq", "--out", out, *_sets(settings))
    assert code == 0, err
    attempts = [
        ("train", "--resume", out, *_sets({"train.precision": "bf16", "train.max_steps": 3})),
        ("translate", out, "--set", "decode.precision=bf16"),
    ]
    for argv in attempts:
        code, _, err = _cli(monkeypatch, capsys, *argv, stdin="a b\n")
        assert code == 2, err
        lines = err.strip().splitlines()
        assert lines[-1].startswith("rnnlab: error: ") and "bf16 needs a CPU" in lines[-1]
