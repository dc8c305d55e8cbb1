"""Training and decoding on CUDA (``pytest -m gpu``; skipped where no GPU is present)."""

from __future__ import annotations

import random

import pytest
import torch
from safetensors.torch import load_file

from rnnlab.config import from_dict
from rnnlab.inference import Translator
from rnnlab.tasks.seq2seq import Seq2SeqTask
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig
from rnnlab.training.trainer import Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _task(tmp_path, cell: str) -> Seq2SeqTask:
    rng = random.Random(0)
    lines = []
    for _ in range(256):
        words = [rng.choice("abcdefgh") for _ in range(rng.randint(1, 6))]
        lines.append(" ".join(words) + "\t" + " ".join(reversed(words)))
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = from_dict(
        Seq2SeqConfig,
        {
            "task": "seq2seq",
            "data": {
                "train": str(tmp_path / "train.tsv"),
                "valid": "",
                "min_freq": 1,
                "preprocess": "none",
            },
            "model": {"cell": cell, "embed_size": 16, "hidden_size": 32, "dropout": 0.0},
            "train": {
                "epochs": 50,
                "max_steps": 40,
                "batch_size": 32,
                "lr": 0.01,
                "device": "cuda",
            },
        },
    )
    task = Seq2SeqTask(config, tmp_path)
    task.prepare_training()
    return task


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_training_and_greedy_decoding_on_cuda_match_cpu(tmp_path, cell):
    task = _task(tmp_path, cell)
    torch.manual_seed(0)
    model = task.build_model()
    cuda = torch.device("cuda")
    state = Trainer(
        task=task, model=model, config=task.config.train, run_dir=tmp_path, device=cuda
    ).fit()
    assert state.step == 40
    assert next(model.parameters()).is_cuda
    sentences = ["a b c", "h g f e", "d"]
    on_gpu = Translator(task=task, model=model, device=cuda).translate(sentences)
    cpu_model = model.to("cpu")
    on_cpu = Translator(task=task, model=cpu_model, device=torch.device("cpu")).translate(sentences)
    assert [t.text for t in on_gpu] == [t.text for t in on_cpu]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_fused_layers_stay_in_float32_under_bf16_autocast(cell):
    """cuDNN's autocast wrapper casts a recurrent kernel to float16 whatever dtype autocast names;
    rnnlab's layers keep it in float32 instead, as bfloat16 autocast has no loss scaling."""
    from rnnlab.nn.factory import make_rnn

    torch.manual_seed(0)
    cuda = torch.device("cuda")
    ours = make_rnn(cell, input_size=8, hidden_size=16, bidirectional=True).to(cuda)
    plain = getattr(torch.nn, cell.upper())(8, 16, bidirectional=True, batch_first=True).to(cuda)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(4, 7, 8, device=cuda)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert plain(x)[0].dtype == torch.float16  # torch.nn's own layer: float16, not bfloat16
        out, _ = ours(x.to(torch.bfloat16))
    assert out.dtype == torch.float32
    out.sum().backward()
    plain(x.to(torch.bfloat16).float())[0].sum().backward()
    for got, want in zip(ours.parameters(), plain.parameters(), strict=True):
        assert got.grad is not None and got.grad.dtype == torch.float32
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-2, atol=1e-3)


def test_a_checkpoint_keeps_the_random_state_of_the_runs_own_gpu(tmp_path):
    task = _task(tmp_path, "gru")
    torch.manual_seed(0)
    model = task.build_model()
    cuda = torch.device("cuda")
    config = task.config.train
    Trainer(task=task, model=model, config=config, run_dir=tmp_path, device=cuda).fit()
    saved = load_file(tmp_path / "last" / "trainer_state.safetensors")
    assert {k for k in saved if k.startswith("rng.cuda")} == {"rng.cuda"}
    assert torch.equal(saved["rng.cuda"], torch.cuda.get_rng_state(cuda))
