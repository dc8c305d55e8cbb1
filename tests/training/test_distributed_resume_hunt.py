"""Data-parallel training, checkpoints, resume and the run directory's files.

Every run is a tiny character-level GRU language model (sequential batching, so the recurrent state
is carried from batch to batch) trained through ``rnnlab.cli.main`` in this process, or through
``rnnlab train --nproc 2`` (torchrun, gloo on the CPU) in a subprocess. References are independent:
a single-process run of the same global batches, or an uninterrupted run of the same seed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn

import rnnlab.atomic as atomic
import rnnlab.training.checkpoint as ckpt
from rnnlab.errors import RnnlabError
from rnnlab.rundir import read_run_config, task_class
from rnnlab.tasks.lm import LMBatch
from rnnlab.training.distributed import DistributedContext
from rnnlab.training.run_lock import RunLock
from rnnlab.training.trainer import Trainer
from tests.cli_runner import assert_user_error, call_main, run_cli

REPO = Path(__file__).resolve().parents[2]
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "cat"]
TIMINGS = ("tokens_per_sec", "minutes")


# -- helpers --------------------------------------------------------------------------------------


def write_text(path: Path, lines: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(lines)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def lm_sets(train: Path, valid: Path | str = "", **overrides: object) -> list[str]:
    settings: dict[str, object] = {
        "data.train": train,
        "data.valid": valid,
        "data.clean": "none",
        "model.hidden_size": 16,
        "model.embed_size": 8,
        "model.dropout": 0.0,
        "train.batch_size": 4,
        "train.bptt": 16,
        "train.epochs": 2,
        "train.log_every": 1,
        "train.num_threads": 1,
        "train.device": "cpu",
    }
    settings.update({key.replace("__", "."): value for key, value in overrides.items()})
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def rnnlab(*argv: object) -> tuple[int, str]:
    """``rnnlab ARGV`` in this process: (exit status, what it printed on stdout and stderr)."""
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed), contextlib.redirect_stdout(printed):
        code = call_main(*argv)
    return code, printed.getvalue()


def rnnlab_subprocess(*argv: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "rnnlab", *[str(a) for a in argv]],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def records(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in lines]


def train_losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["train_loss"] for r in records(run) if "train_loss" in r}


def assert_same_records(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [(r["step"], sorted(r)) for r in got] == [(r["step"], sorted(r)) for r in expected]
    for a, b in zip(got, expected, strict=True):
        assert a == pytest.approx(b, rel=1e-6, abs=1e-7), (a, b)


def max_weight_difference(a: Path, b: Path, which: str = "last") -> float:
    wa = load_file(str(a / which / "model.safetensors"))
    wb = load_file(str(b / which / "model.safetensors"))
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def copy_run(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    (target / ".lock").unlink(missing_ok=True)
    return target


def strict_json(line: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


# -- single-process runs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hunt")


@pytest.fixture(scope="module")
def small_text(root: Path) -> Path:
    return write_text(root / "small.txt", lines=12, seed=1)


@pytest.fixture(scope="module")
def small_args(small_text: Path) -> list[str]:
    """Two epochs with dropout (the RNG must be restored), validation at each epoch end."""
    return lm_sets(small_text, small_text, model__dropout=0.2, train__lr=0.01)


@pytest.fixture(scope="module")
def whole(root: Path, small_args: list[str]) -> Path:
    run = root / "whole"
    code, printed = rnnlab("train", "lm", "--out", run, *small_args)
    assert code == 0, printed
    return run


@pytest.fixture(scope="module")
def steps_per_epoch(whole: Path) -> int:
    ends = [r["step"] for r in records(whole) if "valid_loss" in r]
    assert len(ends) == 2 and ends[1] == 2 * ends[0]
    return ends[0]


@pytest.fixture(scope="module")
def capped(root: Path, small_args: list[str], steps_per_epoch: int) -> Path:
    """The same run stopped in the middle of its first epoch (a checkpoint to damage)."""
    run = root / "capped"
    steps = steps_per_epoch // 2 + 1
    code, printed = rnnlab(
        "train", "lm", "--out", run, *small_args, "--set", f"train.max_steps={steps}"
    )
    assert code == 0, printed
    return run


def test_resume_mid_epoch_equals_uninterrupted(capped: Path, whole: Path, tmp_path: Path):
    run = copy_run(capped, tmp_path / "run")
    code, printed = rnnlab("train", "--resume", run, "--set", "train.max_steps=0")
    assert code == 0, printed
    assert_same_records(records(run), records(whole))
    assert max_weight_difference(run, whole) <= 1e-6
    assert max_weight_difference(run, whole, "best") <= 1e-6


def test_resume_at_an_epoch_boundary_equals_uninterrupted(
    root: Path, small_args: list[str], steps_per_epoch: int, whole: Path
):
    run = root / "boundary"
    code, printed = rnnlab(
        "train", "lm", "--out", run, *small_args, "--set", f"train.max_steps={steps_per_epoch}"
    )
    assert code == 0, printed
    code, printed = rnnlab("train", "--resume", run, "--set", "train.max_steps=0")
    assert code == 0, printed
    assert_same_records(records(run), records(whole))
    assert max_weight_difference(run, whole) <= 1e-6


def test_resume_from_the_old_checkpoint_left_between_two_renames(
    capped: Path, whole: Path, tmp_path: Path
):
    """A kill between the two renames of a checkpoint swap leaves only ``.last.old``."""
    run = copy_run(capped, tmp_path / "run")
    (run / "last").rename(run / ".last.old")
    code, printed = rnnlab("train", "--resume", run, "--set", "train.max_steps=0")
    assert code == 0, printed
    assert_same_records(records(run), records(whole))
    assert (run / "last" / ckpt.MODEL_FILE).is_file()


def test_resume_drops_a_torn_line_and_keeps_every_whole_record(capped: Path, tmp_path: Path):
    run = copy_run(capped, tmp_path / "run")
    before = records(run)
    with (run / "metrics.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"step": 99, "train_lo')  # a line torn by a kill
    code, printed = rnnlab("train", "--resume", run, "--set", f"train.max_steps={len(before) + 2}")
    assert code == 0, printed
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    after = [strict_json(line) for line in lines]
    kept = [{k: v for k, v in r.items() if k not in TIMINGS} for r in after[: len(before)]]
    assert kept == before
    assert [r["step"] for r in after if "train_loss" in r][-2:] == [
        before[-1]["step"] + 1,
        before[-1]["step"] + 2,
    ]


def test_requeued_resume_of_a_finished_run_changes_nothing(capped: Path, tmp_path: Path):
    run = copy_run(capped, tmp_path / "run")
    state = (run / "last" / ckpt.STATE_FILE).read_bytes()
    metrics = (run / "metrics.jsonl").read_text(encoding="utf-8")
    code, printed = rnnlab("train", "--resume", run)
    assert code == 0, printed
    assert (run / "last" / ckpt.STATE_FILE).read_bytes() == state
    assert (run / "metrics.jsonl").read_text(encoding="utf-8") == metrics


def test_a_lock_left_by_a_dead_trainer_does_not_block_resume(capped: Path, tmp_path: Path):
    run = copy_run(capped, tmp_path / "run")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    (run / ".lock").write_text(f"{dead.stdout.strip()} somehost\n", encoding="utf-8")
    code, printed = rnnlab("train", "--resume", run, "--set", "train.max_steps=0")
    assert code == 0, printed
    assert f"process {dead.stdout.strip()}" in printed
    assert not (run / ".lock").exists()


def test_a_live_lock_refuses_resume_in_one_line(capped: Path, tmp_path: Path, monkeypatch, capsys):
    run = copy_run(capped, tmp_path / "run")
    before = (run / "metrics.jsonl").read_bytes()
    with RunLock.acquire(run):
        result = run_cli(
            monkeypatch, capsys, "train", "--resume", run, "--set", "train.max_steps=0"
        )
    assert_user_error(result, f"pid {os.getpid()}")
    assert (run / "metrics.jsonl").read_bytes() == before


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _state_metadata(run: Path, text: str) -> None:
    path = run / "last" / ckpt.STATE_FILE
    tensors = load_file(str(path))
    save_file(tensors, str(path), metadata={"format_version": "1", "trainer": text})


DAMAGES = {
    "truncated-state": (
        lambda run: _truncate(run / "last" / ckpt.STATE_FILE, 100),
        "trainer_state",
    ),
    "truncated-weights": (
        lambda run: _truncate(run / "last" / ckpt.MODEL_FILE, 200),
        "model.safetensors",
    ),
    "empty-weights": (
        lambda run: _truncate(run / "last" / ckpt.MODEL_FILE, 0),
        "model.safetensors",
    ),
    "missing-state": (
        lambda run: (run / "last" / ckpt.STATE_FILE).unlink(),
        "no resumable checkpoint",
    ),
    "missing-last": (lambda run: shutil.rmtree(run / "last"), "no resumable checkpoint"),
    "state-not-json": (lambda run: _state_metadata(run, "{oops"), "trainer_state"),
    "state-wrong-json": (lambda run: _state_metadata(run, '{"trainer": {"step": "x"}}'), "last"),
    "missing-vocab": (lambda run: (run / "vocab.json").unlink(), "vocab.json"),
    "broken-vocab": (
        lambda run: (run / "vocab.json").write_text("{", encoding="utf-8"),
        "vocab.json",
    ),
    "broken-config": (
        lambda run: (run / "config.yaml").write_text("task: lm\ntrain: [\n", encoding="utf-8"),
        "config.yaml",
    ),
    "missing-config": (lambda run: (run / "config.yaml").unlink(), "config.yaml"),
    "pickle-as-weights": (
        lambda run: torch.save({"w": torch.zeros(2)}, run / "last" / ckpt.MODEL_FILE),
        "model.safetensors",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_run_directory_is_a_one_line_error(
    damage: str, capped: Path, tmp_path: Path, monkeypatch, capsys
):
    run = copy_run(capped, tmp_path / "run")
    action, fragment = DAMAGES[damage]
    action(run)
    result = run_cli(monkeypatch, capsys, "train", "--resume", run, "--set", "train.max_steps=0")
    assert_user_error(result, fragment)


def test_unreadable_metrics_log_is_a_one_line_error(
    capped: Path, tmp_path: Path, monkeypatch, capsys
):
    run = copy_run(capped, tmp_path / "run")
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").mkdir()
    result = run_cli(monkeypatch, capsys, "train", "--resume", run, "--set", "train.max_steps=0")
    assert_user_error(result, "metrics.jsonl")


def test_resume_that_changes_the_tokenizer_is_refused(
    capped: Path, tmp_path: Path, monkeypatch, capsys
):
    run = copy_run(capped, tmp_path / "run")
    result = run_cli(
        monkeypatch,
        capsys,
        "train",
        "--resume",
        run,
        "--set",
        "data.tokenizer=word",
        "--set",
        "train.max_steps=0",
    )
    assert_user_error(result, "data.tokenizer")


def test_metrics_log_stays_strict_json_when_training_diverges(small_text: Path, tmp_path: Path):
    run = tmp_path / "diverged"
    args = lm_sets(small_text, small_text, train__lr=1e38, train__clip_norm=0, train__max_steps=4)
    code, printed = rnnlab("train", "lm", "--out", run, *args, "--set", "train.valid_every=2")
    assert code == 0, printed
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 6
    for line in lines:
        strict_json(line)


# -- checkpoint writes --------------------------------------------------------------------------


def _save(run: Path, model: nn.Module, step: int) -> None:
    ckpt.save_last(run, model, {"step": step}, {"trainer": {"step": step}}, {"x": torch.ones(1)})


def test_a_write_killed_before_the_swap_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch):
    model = nn.Linear(3, 2)
    _save(tmp_path, model, 1)

    def killed(src: Any, dst: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, model, 2)
    monkeypatch.undo()
    assert ckpt.load_last(tmp_path).trainer_meta == {"trainer": {"step": 1}}


def test_a_write_killed_after_a_fallback_to_the_old_checkpoint_keeps_one(
    tmp_path: Path, monkeypatch
):
    model = nn.Linear(3, 2)
    _save(tmp_path, model, 1)
    # A first kill between the two renames of a swap: only .last.old is left (load falls back to it).
    (tmp_path / "last").rename(tmp_path / ".last.old")
    assert ckpt.load_last(tmp_path).trainer_meta == {"trainer": {"step": 1}}
    real_replace = os.replace

    def killed_at_the_swap(src: Any, dst: Any) -> None:
        if Path(src).name == ".last.tmp":
            raise KeyboardInterrupt  # the resumed run is killed while it writes its next checkpoint
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", killed_at_the_swap)
    with pytest.raises(KeyboardInterrupt):
        _save(tmp_path, model, 2)
    monkeypatch.undo()
    assert ckpt.load_last(tmp_path).trainer_meta["trainer"]["step"] in (1, 2)


def test_checkpoint_files_are_safetensors_not_pickles(capped: Path):
    for path in [capped / "last" / ckpt.MODEL_FILE, capped / "last" / ckpt.STATE_FILE]:
        data = path.read_bytes()
        header = int.from_bytes(data[:8], "little")
        assert 8 + header <= len(data) and data[8:9] == b"{", path  # safetensors: JSON header
        json.loads(data[8 : 8 + header])
        load_file(str(path))
    with pytest.raises(RnnlabError):
        ckpt.read_safetensors(capped / "metrics.jsonl")


# -- data-parallel pieces in this process ----------------------------------------------------------


@pytest.mark.parametrize("rows,world", [(7, 2), (9, 3), (2, 3), (4, 4)])
def test_shards_cover_every_row_of_a_global_batch_once(rows: int, world: int):
    inputs = torch.arange(rows * 3).reshape(rows, 3)
    batch = LMBatch(inputs, inputs + 100)
    seen: list[int] = []
    for rank in range(world):
        local, has_rows = DistributedContext(rank=rank, world_size=world).shard(batch)
        assert has_rows == (rank < rows)
        if has_rows:
            seen += [int(x) for x in local.inputs[:, 0] // 3]
            assert torch.equal(local.targets, local.inputs + 100)
    assert sorted(seen) == list(range(rows))


def test_a_rank_other_than_0_does_not_rewrite_the_metrics_log_on_resume(
    capped: Path, tmp_path: Path
):
    run = copy_run(capped, tmp_path / "run")
    metrics = run / "metrics.jsonl"
    before = metrics.stat().st_ino
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        config = read_run_config(run)
        task = task_class(config.task)(config, run)
        task.prepare_resume()
        torch.manual_seed(config.seed)
        trainer = Trainer(
            task=task,
            model=task.new_model(),
            config=config.train,
            run_dir=run,
            device=torch.device("cpu"),
            distributed=DistributedContext(rank=1, world_size=2),
        )
        trainer.load_checkpoint()
    finally:
        dist.destroy_process_group()
    assert trainer.state.step > 0
    assert metrics.stat().st_ino == before, "rank 1 replaced RUN/metrics.jsonl"


# -- two processes (torchrun) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def ddp_text(root: Path) -> Path:
    return write_text(root / "ddp.txt", lines=60, seed=0)


@pytest.fixture(scope="module")
def reference(root: Path, ddp_text: Path) -> Path:
    """One process, 8 steps, no dropout: what a 2-process run of the same global batches gives."""
    run = root / "reference"
    code, printed = rnnlab(
        "train", "lm", "--out", run, *lm_sets(ddp_text), "--set", "train.max_steps=8"
    )
    assert code == 0, printed
    return run


@pytest.fixture(scope="module")
def ddp_half(root: Path, ddp_text: Path) -> Path:
    """Two processes, stopped after 4 of those 8 steps (mid-epoch: the state is carried)."""
    run = root / "ddp-half"
    done = rnnlab_subprocess(
        "train",
        "lm",
        "--out",
        run,
        *lm_sets(ddp_text),
        "--nproc",
        "2",
        "--set",
        "train.max_steps=4",
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return run


@pytest.fixture(scope="module")
def ddp_resumed(root: Path, ddp_half: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """``ddp_half`` resumed to 8 steps in two processes.

    metrics.jsonl is removed first: with it, both ranks rewrite it through the same temporary name
    and one of them often dies (see the metrics-log test above); without it neither rewrites.
    """
    run = copy_run(ddp_half, root / "ddp-resumed")
    (run / "metrics.jsonl").unlink()
    done = rnnlab_subprocess("train", "--resume", run, "--nproc", "2", "--set", "train.max_steps=8")
    return run, done


def test_two_processes_take_the_single_process_steps(ddp_half: Path, reference: Path):
    got, expected = train_losses(ddp_half), train_losses(reference)
    assert sorted(got) == [1, 2, 3, 4]
    for step, loss in got.items():
        assert loss == pytest.approx(expected[step], rel=1e-5)
    assert not any(p.name.startswith("rnnlab-rank") for p in ddp_half.iterdir())
    assert sorted(p.name for p in ddp_half.iterdir() if p.name.startswith(".")) == []


def test_two_process_checkpoint_resumed_in_one_process_equals_uninterrupted(
    ddp_half: Path, reference: Path, tmp_path: Path
):
    run = copy_run(ddp_half, tmp_path / "run")
    code, printed = rnnlab("train", "--resume", run, "--set", "train.max_steps=8")
    assert code == 0, printed
    got, expected = train_losses(run), train_losses(reference)
    assert sorted(got) == sorted(expected)
    for step, loss in got.items():
        assert loss == pytest.approx(expected[step], rel=1e-5), step
    assert max_weight_difference(run, reference) <= 1e-5


def test_two_process_checkpoint_resumed_in_two_processes_equals_uninterrupted(
    ddp_resumed: tuple[Path, subprocess.CompletedProcess[str]], reference: Path
):
    run, done = ddp_resumed
    assert done.returncode == 0, done.stderr[-4000:]
    got, expected = train_losses(run), train_losses(reference)
    assert sorted(got) == [5, 6, 7, 8]
    assert max_weight_difference(run, reference) <= 1e-5
    for step, loss in got.items():
        assert loss == pytest.approx(expected[step], rel=1e-6), step


def test_a_validation_mid_epoch_under_two_processes_saves_every_ranks_state(
    root: Path, ddp_text: Path, tmp_path: Path
):
    """A validation checkpoints while the state is carried: every rank must take part in
    gathering it (rank 0 alone would wait for the others forever). The checkpoint, resumed in
    one process, then continues as an uninterrupted one-process run with the same validations."""
    sets = [*lm_sets(ddp_text, ddp_text), "--set", "train.valid_every=2"]
    ddp = tmp_path / "ddp"
    done = rnnlab_subprocess(
        "train", "lm", "--out", ddp, *sets, "--nproc", "2", "--set", "train.max_steps=2"
    )
    assert done.returncode == 0, done.stderr[-4000:]
    code, printed = rnnlab("train", "--resume", ddp, "--set", "train.max_steps=4")
    assert code == 0, printed
    one = tmp_path / "one"
    code, printed = rnnlab("train", "lm", "--out", one, *sets, "--set", "train.max_steps=4")
    assert code == 0, printed
    assert_same_records(records(ddp), records(one))


def test_a_two_process_resume_announces_itself_once(
    ddp_resumed: tuple[Path, subprocess.CompletedProcess[str]],
):
    _, done = ddp_resumed
    assert done.returncode == 0, done.stderr[-4000:]
    printed = (done.stdout + done.stderr).splitlines()
    assert len([line for line in printed if line.startswith("resuming ")]) == 1, printed


def test_nproc_into_an_occupied_directory_is_one_line_without_traceback(
    tmp_path: Path, ddp_text: Path
):
    run = tmp_path / "occupied"
    run.mkdir()
    (run / "notes.txt").write_text("mine\n", encoding="utf-8")
    done = rnnlab_subprocess("train", "lm", "--out", run, *lm_sets(ddp_text), "--nproc", "2")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("rnnlab: error: ")]
    assert len(errors) == 1 and "not empty" in errors[0], errors
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert (run / "notes.txt").read_text(encoding="utf-8") == "mine\n"
