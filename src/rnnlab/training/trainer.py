"""The task-agnostic training loop: optimise, log, validate, checkpoint, resume exactly.

The trainer asks the task for batches and a summed loss, divides by the number of valid tokens,
back-propagates, clips by global norm and steps Adam. Validation (every ``train.valid_every`` steps or
at each epoch end) selects the best checkpoint, drives an optional plateau learning-rate decay and
early stopping.

With ``train.ema_decay`` the run also keeps a moving average of the weights
(``rnnlab.training.weight_average``); validation reads it and ``best/`` saves it.

Exact resume: a checkpoint holds the weights, Adam's moments, the step/epoch/batch position, the
RNG states, the running log window, the weight average and any carried state (truncated BPTT).
Batches of an epoch are a pure function of (seed, epoch), so a resumed run skips the batches already
seen and continues with the very same ones an uninterrupted run would use.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnlab import strict_json
from rnnlab.atomic import append_text, atomic_write_text
from rnnlab.config import TrainConfig, from_dict
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.nn.precision import autocast
from rnnlab.tasks.base import Task
from rnnlab.training import checkpoint as ckpt
from rnnlab.training.distributed import SINGLE, DistributedContext, wrap_loss
from rnnlab.training.lr_schedule import LrSchedule, run_progress
from rnnlab.training.reporting import Reporter, SilentReporter
from rnnlab.training.weight_average import WeightAverage


@dataclass
class TrainerState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    bad_validations: int = 0
    lr_bad_validations: int = 0
    window_loss: float = 0.0
    window_tokens: int = 0
    train_seconds: float = 0.0
    early_stopped: bool = False
    lr_scale: float = 1.0
    """Product of the plateau decays so far (``train.lr_decay``)."""


class TrainingStopped(Exception):
    """Training stopped on request (``should_stop`` turned true, e.g. after SIGTERM).

    Raised after a checkpoint of the last finished step has been written, so ``--resume`` continues
    exactly where the run stopped.
    """

    def __init__(self, step: int) -> None:
        self.step = step
        super().__init__(f"stopped on request; checkpoint saved at step {step}")


def _never() -> bool:
    return False


def set_threads(num_threads: int) -> None:
    """PyTorch's intra-op threads for this process (``train.num_threads``); 0 keeps its default."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def resolve_device(name: str, setting: str = "train.device") -> torch.device:
    """``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a name torch does
    not know, or CUDA where there is none, is the user's error rather than torch's traceback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"{setting}: unknown device {name!r}; expected auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{setting}: {name!r}, but this machine has no CUDA device")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{setting}: {name!r}, but this machine has {count} CUDA device(s)")
    elif device.type != "cpu":
        raise ConfigError(f"{setting}: {name!r}; rnnlab runs on cpu or cuda")
    return device


def make_adam(model: nn.Module, *, lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam with the fused kernel where PyTorch has one for the device (CPU and CUDA since 2.4).

    The default for-loop Adam makes about ten passes over every parameter per step; the fused
    kernel makes one. The saved state is the same, so checkpoints resume with either.
    """
    params = list(model.parameters())
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line, truncated to the checkpoint on resume.

    Appends that fail (a full disk) leave no partial line and raise ``WriteFailed`` naming the file;
    a line torn by a kill in an older run is dropped on resume rather than stopping it. Strict
    JSON: a loss that diverged to nan or inf is written as null.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        append_text(self.path, strict_json.dumps(record) + "\n")

    def truncate_after(self, step: int) -> None:
        """Drop records written after the checkpoint a run resumes from."""
        if not self.path.exists():
            return
        kept = [
            strict_json.dumps(r)
            for r in self.read()
            if not isinstance(r.get("step"), int) or r["step"] <= step
        ]
        atomic_write_text(self.path, "".join(f"{line}\n" for line in kept))

    def read(self) -> list[dict[str, Any]]:
        """The records that parse as JSON objects, in order."""
        if not self.path.exists():
            return []
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:  # a directory, no permission
            raise RnnlabError(f"{self.path}: cannot read it ({exc.strerror})") from None
        records = []
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


def _is_better(value: float, best: float | None, higher: bool) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value > best if higher else value < best


class Trainer:
    """Runs ``task`` on ``model`` according to ``config``; writes everything under ``run_dir``."""

    def __init__(
        self,
        *,
        task: Task,
        model: nn.Module,
        config: TrainConfig,
        run_dir: Path,
        device: torch.device,
        reporter: Reporter | None = None,
        distributed: DistributedContext = SINGLE,
        should_stop: Callable[[], bool] = _never,
        on_validation: Callable[[int, dict[str, float]], bool] | None = None,
    ) -> None:
        """``should_stop`` is polled after every step: when it turns true (on any rank), every rank
        stops after the same step, a checkpoint is saved and ``fit`` raises ``TrainingStopped``."""
        self.task = task
        self.should_stop = should_stop
        self.model = model.to(device)
        self.config = config
        self.run_dir = Path(run_dir)
        self.device = device
        self.distributed = distributed
        # Only rank 0 speaks; the others train silently (see rnnlab.training.distributed).
        self.reporter = (reporter or SilentReporter()) if distributed.is_main else SilentReporter()
        self.loss_fn = wrap_loss(task, self.model, distributed, device)
        self.on_validation = on_validation
        """Called with (step, validation metrics) after each validation; True stops the run."""
        self.step_stats: dict[str, float] = {}
        self.optimizer = make_adam(self.model, lr=config.lr, weight_decay=config.weight_decay)
        self.average = WeightAverage(self.model, config.ema_decay) if config.ema_decay else None
        self.schedule = LrSchedule(config.lr_schedule, config.warmup_steps)
        self.planned_steps = config.max_steps
        self.state = TrainerState()
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        self.carry: Any = None
        self.has_rows = True
        """Whether this rank's shard of the last batch had rows of its own (see ``shard``)."""
        self.validated_step: int | None = None
        self.epoch_position = 0.0
        """Epochs trained, with the share of the current one (as validation records give it)."""
        self.validated_stop = False
        self.saved_step: int | None = None
        """The step of the latest checkpoint in ``last/`` (written or resumed from)."""

    @property
    def kept_model(self) -> nn.Module:
        """What validation reads and ``best/`` saves: the weight average if there is one."""
        return self.average.model if self.average is not None else self.model

    # -- checkpoints ----------------------------------------------------------------------------
    def _trainer_tensors(self, carry: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            # The run's own GPU only: a run resumes with other GPUs visible, or fewer of them.
            tensors["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        optim_json = ckpt.flatten_state(self.optimizer.state_dict(), "optim", tensors)
        carry_json = ckpt.flatten_state(carry, "carry", tensors) if carry is not None else None
        if self.average is not None:
            tensors.update(self.average.state_tensors())
        meta = {
            "trainer": asdict(self.state),
            "optimizer": optim_json,
            "carry": carry_json,
            "python_random": random.getstate(),
        }
        return meta, tensors

    def save_checkpoint(self) -> None:
        """Every rank calls this at the same step: the carried state is gathered from all of
        them (each holds its shard's rows), then rank 0 writes."""
        carry = self.carry
        if carry is not None:
            carry = self.distributed.gather_state(carry, self.has_rows)
        if not self.distributed.is_main:
            return
        meta, tensors = self._trainer_tensors(carry)
        model_meta = {**self.task.model_meta(), "step": self.state.step}
        ckpt.save_last(self.run_dir, self.model, model_meta, meta, tensors)
        self.saved_step = self.state.step
        self.write_curves()

    def write_curves(self) -> None:
        """``curves.png``: the run's learning curves so far (see ``rnnlab.plotting``)."""
        from rnnlab.plotting import RunCurves, plot_learning_curves

        curves = RunCurves(self.run_dir.name, self.metrics.read(), self.task.primary_metric)
        plot_learning_curves([curves], self.run_dir / "curves.png")

    def load_checkpoint(self) -> None:
        """Restore everything ``save_checkpoint`` wrote, for ``--resume``.

        A checkpoint that does not fit (edited, from another model or version, damaged) is a
        one-line ``RnnlabError`` naming it, whatever part of it is wrong.
        """
        found = ckpt.load_last(self.run_dir)
        try:
            self._restore(found)
        except (
            ConfigError,
            KeyError,
            IndexError,
            TypeError,
            ValueError,
            OverflowError,
            RuntimeError,
        ) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise RnnlabError(
                f"{found.directory}: checkpoint does not fit this run ({reason[:300]})"
            ) from None
        if self.distributed.is_main:
            self.metrics.truncate_after(self.state.step)
        self.saved_step = self.state.step

    def _apply_config_to_optimizer(self) -> None:
        """A learning rate or weight decay changed with ``--resume --set`` takes effect.

        Adam's saved parameter groups carry the old ones. The learning rate in a group already
        includes the plateau decays so far (``lr_scale``), so it is kept where the config's rate
        gives the same value; replacing it by a product computed again could differ in its last
        bit and a resumed run would no longer equal an uninterrupted one.
        """
        lr = self.config.lr * self.state.lr_scale
        for group in self.optimizer.param_groups:
            if not math.isclose(group["lr"], lr, rel_tol=1e-9, abs_tol=0.0):
                group["lr"] = lr
            group["weight_decay"] = self.config.weight_decay

    def _restore(self, found: ckpt.Checkpoint) -> None:
        self.model.load_state_dict(found.model_state)
        meta, tensors = found.trainer_meta, found.trainer_tensors
        self.state = from_dict(TrainerState, meta["trainer"], prefix="trainer.")
        optim_state = ckpt.unflatten_state(meta["optimizer"], tensors)
        self.optimizer.load_state_dict(ckpt.optimizer_state_from_json(optim_state))
        self._apply_config_to_optimizer()
        if meta.get("carry") is not None:
            carry = ckpt.unflatten_state(meta["carry"], tensors)
            self.carry = self.distributed.local_state(_to_tuple(carry, self.device))
        torch.set_rng_state(tensors["rng.torch"])
        if self.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], self.device)
        version, internal, gauss = meta["python_random"]
        random.setstate((version, tuple(internal), gauss))
        if self.average is not None:
            self.average.load_state_tensors(tensors, self.model)

    # -- the loop -------------------------------------------------------------------------------
    def _record(self, record: dict[str, Any]) -> None:
        if not self.distributed.is_main:
            return
        record = {**record, "minutes": round(self.state.train_seconds / 60.0, 4)}
        self.metrics.append(record)
        self.reporter.record(record)

    def _planned_steps(self) -> int:
        """Steps the whole run takes, which an annealed learning rate spreads its fall over.

        The sum of every epoch's batches, since epochs may differ in length (a language model's
        streams start at another offset each epoch), capped by ``max_steps``. Only a schedule
        reads it, so a constant rate does not build every epoch's batches to count them.
        """
        cfg = self.config
        if cfg.lr_schedule == "constant":
            return cfg.max_steps
        by_epochs = sum(len(self.task.train_batches(epoch)) for epoch in range(cfg.epochs))
        return min(cfg.max_steps, by_epochs) if cfg.max_steps else by_epochs

    def _set_scheduled_lr(self) -> None:
        """The learning rate of the step about to run (scheduled runs only; a constant one keeps
        Adam's own, which the plateau decay lowers in place)."""
        progress = run_progress(
            step=self.state.step,
            planned_steps=self.planned_steps,
            train_seconds=self.state.train_seconds,
            max_minutes=self.config.max_minutes,
        )
        lr = self.config.lr * self.state.lr_scale * self.schedule.factor(self.state.step, progress)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _train_step(self, batch: Any) -> int:
        """One optimizer step on a global batch; returns its number of valid tokens."""
        self.model.train()
        if self.schedule.varies:
            self._set_scheduled_lr()
        dist = self.distributed
        local, has_rows = dist.shard(batch)
        self.has_rows = has_rows
        self.step_stats = self.task.begin_step(self.state.step)
        with autocast(self.device, self.config.precision):
            out = self.loss_fn(local.to(self.device), self.carry)
        self.carry = out.carry
        loss_sum, num_tokens = out.loss_sum, out.num_tokens
        if dist.enabled:
            if not has_rows:
                loss_sum, num_tokens = loss_sum * 0.0, 0
            totals = torch.tensor(
                [float(loss_sum.detach()), float(num_tokens)], dtype=torch.float64
            )
            global_loss, global_tokens = dist.all_reduce_sum(totals.to(self.device)).tolist()
            num_tokens = int(global_tokens)
            # DDP averages gradients over ranks; × world_size turns that into the global sum.
            loss = loss_sum * (dist.world_size / max(num_tokens, 1))
        else:
            global_loss = float(loss_sum.detach())
            loss = loss_sum / max(num_tokens, 1)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.clip_norm > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_norm)
        self.optimizer.step()
        if self.average is not None:
            self.average.update(self.model)
        self.state.step += 1
        self.state.window_loss += global_loss
        self.state.window_tokens += num_tokens
        return num_tokens

    def _stop_flags(self) -> tuple[bool, bool]:
        """(out of time, stop requested), agreed by every rank."""
        over = (
            self.config.max_minutes > 0 and self.state.train_seconds >= self.config.max_minutes * 60
        )
        requested = self.should_stop()
        if self.distributed.enabled:
            # Ranks' clocks and signals differ; all must stop at the same step or the next
            # all-reduce hangs, and a time-keyed lr_schedule must give every rank the same rate.
            flags = torch.tensor(
                [float(over), float(requested), self.state.train_seconds],
                dtype=torch.float64,
                device=self.device,
            )
            agreed = self.distributed.all_reduce_max(flags).tolist()
            over, requested = agreed[0] > 0, agreed[1] > 0
            self.state.train_seconds = agreed[2]
        return over, requested

    def _validate_and_checkpoint(self, epoch: float) -> bool:
        """Validate, keep the best weights, adjust the schedule; True when training should stop.

        In a distributed run rank 0 does all of it while the others wait, then shares its decisions.
        A step is validated once, even where two reasons meet (its ``valid_every``, the end of an
        epoch, the end of the time budget): a second validation of the same weights would count
        as one more without improvement, for the patience and the plateau decay.
        """
        if self.validated_step == self.state.step:
            return self.validated_stop
        self.validated_step = self.state.step
        dist = self.distributed
        stop = self._validate_on_main(epoch) if dist.is_main else False
        if dist.enabled:
            dist.barrier()
            stop, lr, self.state.lr_scale = dist.broadcast(
                (stop, self.optimizer.param_groups[0]["lr"], self.state.lr_scale)
            )
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.save_checkpoint()  # every rank: the carried state is gathered from all of them
        self.validated_stop = stop
        return stop

    def _validate_on_main(self, epoch: float) -> bool:
        metrics: dict[str, float] = {}
        if self.task.has_validation():
            metrics = self.task.validate(self.kept_model, self.device)
            self._record({"step": self.state.step, "epoch": round(epoch, 4), **metrics})
        primary = metrics.get(self.task.primary_metric)
        stop = False
        if primary is None or _is_better(
            primary, self.state.best_metric, self.task.higher_is_better
        ):
            ckpt.save_model(
                self.run_dir / "best",
                self.kept_model,
                {**self.task.model_meta(), "step": self.state.step, **metrics},
            )
            if primary is not None:  # only once best/ holds it
                self.state.best_metric = primary
            self.state.bad_validations = self.state.lr_bad_validations = 0
        else:
            self.state.bad_validations += 1
            self.state.lr_bad_validations += 1
            if (
                self.config.lr_decay < 1.0
                and self.state.lr_bad_validations > self.config.lr_patience
            ):
                self.state.lr_scale *= self.config.lr_decay
                for group in self.optimizer.param_groups:
                    group["lr"] *= self.config.lr_decay
                self.state.lr_bad_validations = 0
                self.reporter.message(
                    f"learning rate decayed to {self.optimizer.param_groups[0]['lr']:.3g}"
                )
            if self.config.patience > 0 and self.state.bad_validations >= self.config.patience:
                self.reporter.message(
                    f"early stop: no {self.task.primary_metric} improvement in "
                    f"{self.state.bad_validations} validations"
                )
                self.state.early_stopped = stop = True
        if self.on_validation is not None and self.on_validation(self.state.step, metrics):
            stop = True
        return stop

    def ensure_validated(self) -> None:
        """Validate the current weights unless their step was validated (or nothing trained).

        For callers that need a metric from every run: a step budget (``max_steps``) ends a run
        wherever it falls, without a validation, so that a run cut there and resumed equals one
        that was not cut.
        """
        if self.state.step > 0 and self.validated_step != self.state.step:
            self._validate_and_checkpoint(self.epoch_position)

    def finished(self) -> bool:
        """Whether a resumed run has already reached one of its ends, under the current config.

        A scheduler that requeues ``--resume`` after the run ended must not train it further;
        raising ``max_steps``, ``max_minutes``, ``epochs`` or ``patience`` with ``--set`` makes it
        continue.
        """
        cfg, state = self.config, self.state
        return (
            state.epoch >= cfg.epochs
            or 0 < cfg.max_steps <= state.step
            or 0 < cfg.max_minutes * 60 <= state.train_seconds
            or (state.early_stopped and 0 < cfg.patience <= state.bad_validations)
        )

    def fit(self) -> TrainerState:
        """Train until ``epochs``, ``max_steps``, ``max_minutes`` or early stopping; returns the
        final trainer state.

        A ``KeyboardInterrupt`` (in the command line, a second Ctrl-C: the first one asks for a
        stop after the step, through ``should_stop``) may land inside a step, with the weights of
        one step and the RNG and carried state of the next, so nothing is saved then: ``last/``
        keeps the latest whole step.
        """
        if self.finished():
            return self.state
        self.state.early_stopped = False
        cfg = self.config
        window_seconds, window_tokens_seen = 0.0, 0
        stop = False
        self.planned_steps = self._planned_steps()
        try:
            while not stop and self.state.epoch < cfg.epochs:
                batches = self.task.train_batches(self.state.epoch)
                bar = self.reporter.progress(
                    len(batches),
                    f"epoch {self.state.epoch + 1}/{cfg.epochs}",
                    self.state.batch_in_epoch,
                )
                for index in range(self.state.batch_in_epoch, len(batches)):
                    started = time.perf_counter()
                    window_tokens_seen += self._train_step(batches[index])
                    elapsed = time.perf_counter() - started
                    window_seconds += elapsed
                    self.state.train_seconds += elapsed
                    self.state.batch_in_epoch = index + 1
                    bar.update(1)
                    epoch_pos = self.state.epoch + self.state.batch_in_epoch / len(batches)
                    self.epoch_position = epoch_pos
                    if cfg.log_every > 0 and self.state.step % cfg.log_every == 0:
                        train_loss = self.state.window_loss / max(self.state.window_tokens, 1)
                        self._record(
                            {
                                "step": self.state.step,
                                "epoch": round(epoch_pos, 4),
                                "train_loss": train_loss,
                                "tokens_per_sec": window_tokens_seen / max(window_seconds, 1e-9),
                                "lr": self.optimizer.param_groups[0]["lr"],
                                **self.step_stats,
                            }
                        )
                        bar.set_postfix_str(f"loss {train_loss:.3f}")
                        self.state.window_loss, self.state.window_tokens = 0.0, 0
                        window_seconds, window_tokens_seen = 0.0, 0
                    if cfg.valid_every > 0 and self.state.step % cfg.valid_every == 0:
                        stop = self._validate_and_checkpoint(epoch_pos)
                    if cfg.max_steps > 0 and self.state.step >= cfg.max_steps:
                        stop = True
                    out_of_time, requested = self._stop_flags()
                    if out_of_time:
                        # A time budget ends the run for good: validate so best/ reflects it.
                        self._validate_and_checkpoint(epoch_pos)
                        stop = True
                    if requested and not stop:
                        bar.close()
                        self.save_checkpoint()
                        self.reporter.message(
                            f"stop requested; checkpoint saved at step {self.state.step}"
                        )
                        raise TrainingStopped(self.state.step)
                    if stop:
                        break
                bar.close()
                if self.state.batch_in_epoch >= len(batches):
                    self.state.epoch += 1
                    self.state.batch_in_epoch = 0
                    self.carry = None
                    if cfg.valid_every == 0:
                        stop = self._validate_and_checkpoint(float(self.state.epoch)) or stop
            if self.distributed.is_main and not (self.run_dir / "best").exists():
                ckpt.save_model(
                    self.run_dir / "best",
                    self.kept_model,
                    {**self.task.model_meta(), "step": self.state.step},
                )
            self.save_checkpoint()
        except KeyboardInterrupt:
            kept = (
                f"the checkpoint of step {self.saved_step} is kept"
                if self.saved_step is not None
                else "no checkpoint had been saved yet"
            )
            self.reporter.message(f"interrupted at step {self.state.step}; {kept}")
            raise
        return self.state


def _to_tuple(carry: Any, device: torch.device) -> Any:
    """JSON round trips turn tuples into lists; recurrent states are tuples (h, c)."""
    if isinstance(carry, list):
        return tuple(_to_tuple(c, device) for c in carry)
    if isinstance(carry, torch.Tensor):
        return carry.to(device)
    return carry
