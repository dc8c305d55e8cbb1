"""A study: Optuna trials, each an ordinary run directory, pruned on the task's validation metric.

::

    STUDY/
      study.db        Optuna's SQLite storage: running the same command again continues the study
      trial-000/      a run directory like any other (evaluate it, resume it, plot it)
      trial-001/ …
      best.yaml       the best trial's complete config
      history.png     metric per trial and best so far
      importance.png  parameter importances (once two trials have completed)

The sampler is TPE, seeded by the config's ``seed`` and the number of trials already in the study
(so a continued study does not repeat the first call's random start-up trials). The median pruner is
fed the task's primary validation metric at every validation, through the trainer's
``on_validation`` hook, which stops a pruned run cleanly (checkpoint saved). A trial whose config is
rejected, whose weights or validation metric stop being finite, or that raises any other error is
recorded as failed and the study goes on; Ctrl-C or SIGTERM marks the running trial as interrupted
(not counted towards ``--trials``) and leaves the study to be continued.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rnnlab.atomic import reported_as
from rnnlab.config import apply_overrides, from_dict, named_data_only, read_yaml
from rnnlab.errors import ConfigError, RnnlabError
from rnnlab.rundir import create_run_dir, task_class
from rnnlab.training.reporting import Reporter, SilentReporter
from rnnlab.tuning.space import ParamSpec, load_space, set_dotted

STUDY_NAME = "rnnlab"
DB_FILE = "study.db"


class TrialFailed(RnnlabError):
    """A trial that cannot give a metric (a non-finite loss or metric, no validation)."""


@dataclass
class StudyPlan:
    """Everything a study needs, checked before the first trial."""

    base: dict[str, Any]
    """The config file plus ``--set`` overrides, as nested dicts."""
    config_class: type
    task_name: str
    space: list[ParamSpec]
    seed: int


def plan_study(config_path: str | Path, space_path: str | Path, overrides: list[str]) -> StudyPlan:
    """Load the base config and the search space; every error surfaces here, before any trial."""
    base = apply_overrides(read_yaml(config_path), list(overrides))
    named_data_only(base)
    task_name = str(base.get("task", ""))
    cls = task_class(task_name).config_class
    try:
        config = from_dict(cls, base)
        config.check_new_run()
    except ConfigError as exc:
        raise ConfigError(f"{config_path}: {exc}") from None
    if not getattr(getattr(config, "data", None), "valid", ""):
        raise ConfigError(f"{config_path}: tuning needs validation data (data.valid)")
    space = load_space(space_path, cls)
    return StudyPlan(base, cls, task_name, space, config.seed)


def _storage_url(out: Path) -> str:
    return f"sqlite:///{(out / DB_FILE).resolve()}"


def load_study(out: Path, *, direction: Any = None, sampler: Any = None, pruner: Any = None) -> Any:
    """The study in ``out``: loaded as it is, or (with ``direction``) created or continued."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError  # Optuna's storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported by the study
    if direction is None and not (out / DB_FILE).is_file():
        raise RnnlabError(f"{out}: no study here (no {DB_FILE})")
    try:
        if direction is None:
            return optuna.load_study(study_name=STUDY_NAME, storage=_storage_url(out))
        study = optuna.create_study(
            study_name=STUDY_NAME,
            storage=_storage_url(out),
            direction=direction,
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )
    except (KeyError, ValueError, RuntimeError, SQLAlchemyError) as exc:  # no study, not SQLite
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise RnnlabError(f"{out / DB_FILE}: not an rnnlab study ({reason})") from None
    if study.direction.name.lower() != direction:
        raise RnnlabError(f"{out}: this study was created to {study.direction.name.lower()}")
    return study


def counted_trials(study: Any) -> int:
    """Trials that ended (completed, pruned or failed), not those interrupted (Ctrl-C, SIGTERM)."""
    from optuna.trial import TrialState

    done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in study.trials if t.state in done and not t.user_attrs.get("interrupted"))


def _never() -> bool:
    return False


def _run_trial(
    trial: Any,
    plan: StudyPlan,
    out: Path,
    reporter: Reporter,
    should_stop: Callable[[], bool] = _never,
) -> float:
    """Train one configuration in ``out/trial-NNN``; the best validation metric, or an exception.

    A trial that a step budget (``train.max_steps``) ends between two validations is validated
    once at its end: it has a metric like any other.
    """
    import optuna

    from rnnlab.nn.precision import check_bf16_kernels
    from rnnlab.training.trainer import Trainer, resolve_device, set_threads

    run_dir = out / f"trial-{trial.number:03d}"
    trial.set_user_attr("run_dir", run_dir.name)
    data = copy.deepcopy(plan.base)  # trial values must not leak into the base
    for spec in plan.space:
        set_dotted(data, spec.key, spec.suggest(trial))
    config: Any = from_dict(plan.config_class, data)
    config.check_new_run()  # the trial's own values may break it where the base config did not
    if run_dir.exists():
        shutil.rmtree(run_dir)
    create_run_dir(run_dir, config)
    task = task_class(plan.task_name)(config, run_dir)
    task.prepare_training()
    set_threads(config.train.num_threads)
    torch.manual_seed(config.seed)
    model = task.new_model()
    device = resolve_device(config.train.device)
    check_bf16_kernels(model, "train.precision", config.train.precision, device)
    decode = getattr(config, "decode", None)
    if decode is not None and hasattr(decode, "precision"):  # validation decodes under it
        check_bf16_kernels(model, "decode.precision", decode.precision, device)
    pruned = False

    def on_validation(step: int, metrics: dict[str, float]) -> bool:
        nonlocal pruned
        value = metrics.get(task.primary_metric)
        if value is None or not all(math.isfinite(v) for v in metrics.values()):
            raise TrialFailed(f"{run_dir.name}: validation metrics are not finite at step {step}")
        if any(not torch.isfinite(p).all() for p in model.parameters()):
            raise TrialFailed(f"{run_dir.name}: weights are not finite at step {step} (NaN loss)")
        trial.report(value, step)
        pruned = trial.should_prune()
        return pruned

    trainer = Trainer(
        task=task,
        model=model,
        config=config.train,
        run_dir=run_dir,
        device=device,
        reporter=SilentReporter(),
        should_stop=should_stop,
        on_validation=on_validation,
    )
    state = trainer.fit()
    if not pruned:
        trainer.ensure_validated()
    if pruned:
        raise optuna.TrialPruned(f"pruned at step {state.step}")
    if state.best_metric is None or not math.isfinite(state.best_metric):
        raise TrialFailed(f"{run_dir.name}: no finite {task.primary_metric}")
    return state.best_metric


def run_study(
    *,
    config_path: str | Path,
    space_path: str | Path,
    trials: int,
    out: str | Path,
    overrides: list[str] | None = None,
    timeout_minutes: float = 0.0,
    startup_trials: int = 5,
    reporter: Reporter | None = None,
    should_stop: Callable[[], bool] = _never,
) -> Any:
    """Run (or continue) the study in ``out`` until it holds ``trials`` ended trials.

    Returns the Optuna study. ``best.yaml``, ``history.png`` and ``importance.png`` are written at
    the end, also when Ctrl-C ends the study early. ``should_stop`` (SIGTERM, in the command
    line) stops the running trial after its current step, marks it interrupted and ends the study.
    """
    import optuna

    from rnnlab.training.trainer import TrainingStopped

    reporter = reporter or SilentReporter()
    if trials < 1:
        raise RnnlabError(f"--trials must be at least 1, got {trials}")
    if startup_trials < 0:
        raise RnnlabError(f"--startup-trials must be 0 or more, got {startup_trials}")
    plan = plan_study(config_path, space_path, list(overrides or []))
    out = Path(out)
    with reported_as(out):
        out.mkdir(parents=True, exist_ok=True)
    task = task_class(plan.task_name)
    direction = "maximize" if task.higher_is_better else "minimize"
    existing = load_study(out, direction=direction)
    seed = plan.seed + len(existing.trials)
    study = load_study(
        out,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=0),
    )
    study.set_user_attr("metric", task.primary_metric)
    remaining = trials - counted_trials(study)

    def objective(trial: Any) -> float:
        started = time.monotonic()
        try:
            value = _run_trial(trial, plan, out, reporter, should_stop)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        except TrainingStopped:
            trial.set_user_attr("interrupted", True)
            reporter.message(f"trial {trial.number}: stopped on request ({_minutes(started)})")
            study.stop()  # after this trial, which Optuna records as failed
            raise
        except optuna.TrialPruned:
            reporter.message(f"trial {trial.number}: pruned ({_minutes(started)})")
            raise
        except Exception as exc:  # recorded as failed; the study goes on
            trial.set_user_attr(
                "error", str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            )
            reporter.message(f"trial {trial.number}: failed: {trial.user_attrs['error']}")
            raise
        reporter.message(
            f"trial {trial.number}: {task.primary_metric}={value:.4g} ({_minutes(started)}) "
            f"{trial.params}"
        )
        return value

    try:
        if remaining > 0:
            study.optimize(
                objective,
                n_trials=remaining,
                timeout=timeout_minutes * 60 if timeout_minutes > 0 else None,
                catch=(Exception,),
            )
    finally:
        from rnnlab.tuning.report import write_outputs

        write_outputs(study, out, metric=task.primary_metric)
    return study


def _minutes(started: float) -> str:
    return f"{(time.monotonic() - started) / 60:.2f} min"
