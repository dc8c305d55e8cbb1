"""``rnnlab train`` (in one process, or several through torchrun), ``tune``, ``embeddings train`` and
``plot``: the commands that make runs, studies, vectors and figures."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rnnlab.cli.console import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USER_ERROR,
    ConsoleReporter,
    format_metrics,
)
from rnnlab.errors import RnnlabError


class StopSignals:
    """SIGTERM, and Ctrl-C while training, ask for a clean stop after the current step.

    SIGTERM is what Slurm, Kubernetes and torchrun send before killing. The handlers only record
    the signal; the trainer polls ``requested`` after each step, so every rank stops after the
    same step and the checkpoint holds a whole step, never half of one. A second Ctrl-C raises
    ``KeyboardInterrupt`` at once (the latest checkpoint is kept, nothing half done is saved),
    except in a process that torchrun started: torchrun passes the terminal's Ctrl-C on to its
    workers, which have it already, so a worker counts every SIGINT as the first one (torchrun
    kills workers that do not stop in time). Ctrl-C is caught only around training
    (``catching(SIGINT)``): while the data is read it interrupts as usual.
    """

    def __init__(self, notify: Callable[[str], None] | None = None) -> None:
        self.received: int | None = None
        self.notify = notify
        self.second_ctrl_c_quits = True

    def requested(self) -> bool:
        return self.received is not None

    def _handle(self, signum: int, frame: object) -> None:
        if signum == signal.SIGINT and self.received is not None and self.second_ctrl_c_quits:
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signum
            if signum == signal.SIGINT and self.notify is not None:
                again = " (press Ctrl-C again to quit at once)" if self.second_ctrl_c_quits else ""
                self.notify(f"stopping after this step{again}")

    @contextmanager
    def catching(self, signum: int) -> Iterator[None]:
        previous = signal.signal(signum, self._handle)
        try:
            yield
        finally:
            signal.signal(signum, previous)


def _relaunch_with_torchrun(argv: list[str], nproc: int) -> int:
    """``rnnlab train --nproc N …`` is ``torchrun --standalone --nproc_per_node N -m rnnlab train …``.

    torchrun runs in this process. On SIGTERM (or Ctrl-C) it passes the signal to its workers and
    waits for them; they stop after the same step and rank 0 saves a checkpoint. A worker's user
    error has already been reported in one line by that worker; its exit status is returned.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    kept: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            kept.append(item)
    try:
        torchrun(["--standalone", "--nproc_per_node", str(nproc), "-m", "rnnlab", *kept])
    except SignalException as exc:
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        _, first = exc.get_first_failure()
        return first.exitcode if first.exitcode > 0 else 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from rnnlab.training.distributed import (
        check_processes_fit,
        init_from_env,
        launched_by_torchrun,
        shutdown,
    )

    if args.resume and (args.out or args.config):
        raise RnnlabError(
            "train --resume RUN continues RUN with its own config, in its own directory; "
            "leave out --config and --out (--set still applies)"
        )
    if args.nproc > 1 and not launched_by_torchrun():
        check_processes_fit(_peek_device(args), args.nproc)
        return _relaunch_with_torchrun(args.argv, args.nproc)
    from rnnlab.training.distributed import FailedElsewhere
    from rnnlab.training.trainer import TrainingStopped

    config_device = _peek_device(args)
    distributed = init_from_env(config_device)
    stops = StopSignals()
    stops.second_ctrl_c_quits = not distributed.enabled
    try:
        with ExitStack() as cleanup:
            cleanup.enter_context(stops.catching(signal.SIGTERM))
            try:
                return _train(args, distributed, cleanup, stops)
            except FailedElsewhere:
                return EXIT_USER_ERROR  # rank 0 reports the error; one line is enough
            except TrainingStopped:
                interrupted = stops.received == signal.SIGINT
                if distributed.is_main:
                    print(
                        f"rnnlab: {'interrupted' if interrupted else 'terminated'}", file=sys.stderr
                    )
                # Under torchrun an orderly stop is a success, or torchrun reports a failed job.
                if distributed.enabled:
                    return 0
                return EXIT_INTERRUPTED if interrupted else EXIT_TERMINATED
    finally:
        shutdown(distributed)


def _precision_settings(config: Any) -> Iterator[tuple[str, str]]:
    """(key, value) of ``train.precision`` and ``decode.precision``, where the config has them."""
    for section in ("train", "decode"):
        precision = getattr(getattr(config, section, None), "precision", None)
        if precision is not None:
            yield f"{section}.precision", precision


def _precision_notices(config: Any, device: Any) -> list[str]:
    """What the precision settings mean on ``device``, where worth a line."""
    from rnnlab.nn.precision import precision_notice

    notes = (precision_notice(key, value, device) for key, value in _precision_settings(config))
    return [note for note in notes if note is not None]


def _check_precision_kernels(config: Any, model: Any, device: Any) -> None:
    """A config error, before training, for a precision whose kernels this device lacks."""
    from rnnlab.nn.precision import check_bf16_kernels

    for key, value in _precision_settings(config):
        check_bf16_kernels(model, key, value, device)


def _peek_device(args: argparse.Namespace) -> str:
    """The device type a run will use, needed to pick the process-group backend before anything."""
    from rnnlab.config import apply_overrides, read_yaml
    from rnnlab.training.trainer import resolve_device

    data: dict[str, Any] = {}
    if args.resume:
        data = read_yaml(Path(args.resume) / "config.yaml")
    elif args.config:
        data = read_yaml(args.config)
    data = apply_overrides(data, list(args.set))
    train = data.get("train")
    # A malformed train section is reported when the whole config is read, after this peek.
    name = train.get("device", "auto") if isinstance(train, dict) else "auto"
    return resolve_device(str(name)).type


def _train(
    args: argparse.Namespace,
    distributed: Any,
    cleanup: ExitStack,
    stops: StopSignals,
) -> int:
    import atexit
    import shutil
    import tempfile

    import torch

    from rnnlab.atomic import reported_as
    from rnnlab.nn.describe import describe
    from rnnlab.nn.precision import native_bf16
    from rnnlab.rundir import (
        ReplacedRun,
        create_run_dir,
        load_task_config,
        read_run_config,
        refuse_new_run_problems,
        refuse_vocabulary_changes,
        task_class,
    )
    from rnnlab.training.distributed import agree_on_bf16_speedup
    from rnnlab.training.run_lock import RunLock
    from rnnlab.training.trainer import Trainer, resolve_device, set_threads

    reporter = ConsoleReporter()
    stops.notify = reporter.message if distributed.is_main else None
    replaced: ReplacedRun | None = None

    # Setup runs in phases that every rank completes (``agreement``): a user error on any rank
    # stops all of them at the phase's end, rank 0 reporting it in one line, before the next
    # collective (the lock's, DDP's) could hang or fail with a traceback.
    with distributed.agreement():
        if args.resume:
            # Every rank reads the run directory (on several machines: a shared filesystem).
            run_dir = Path(args.resume)
            config = read_run_config(run_dir, args.set)
            if args.task and args.task != config.task:
                raise RnnlabError(f"{run_dir}: a {config.task} run, not {args.task}")
            refuse_vocabulary_changes(run_dir, config)
            if args.set:
                refuse_new_run_problems(run_dir, config)
        elif not distributed.is_main:
            config = load_task_config(args.task, args.config, args.set)
        else:
            if not args.task or not args.out:
                raise RnnlabError("train needs a TASK and --out RUN (or --resume RUN)")
            config = load_task_config(args.task, args.config, args.set)
            run_dir = Path(args.out)
            with reported_as(run_dir):
                run_dir.mkdir(parents=True, exist_ok=True)
    # Only rank 0 writes the run directory, so only rank 0 holds its lock, taken before
    # --overwrite may clear the directory.
    with distributed.agreement():
        if distributed.is_main:
            held = cleanup.enter_context(RunLock.acquire(run_dir))
            if held.notice:
                reporter.message(held.notice)
    with distributed.agreement():
        if args.resume:
            task = task_class(config.task)(config, run_dir)
            task.prepare_resume()
        elif not distributed.is_main:
            # Other ranks build the same vocabularies from the same data, in a private
            # directory: only rank 0 writes the run directory.
            run_dir = Path(tempfile.mkdtemp(prefix=f"rnnlab-rank{distributed.rank}-"))
            atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
            task = task_class(config.task)(config, run_dir)
            task.prepare_training()
        else:
            # An overwritten run comes back if the new one fails before training (a typo in a
            # path).
            replaced = cleanup.enter_context(
                create_run_dir(run_dir, config, overwrite=args.overwrite)
            )
            task = task_class(config.task)(config, run_dir)
            if reporter.interactive:  # a person waits: vocabularies, subwords and ids take a while
                reporter.message(f"preparing the training data from {config.data.train}")
            task.prepare_training()
            for note in task.setup_notes():
                reporter.message(note)
        set_threads(config.train.num_threads)
        torch.manual_seed(config.seed)
        model = task.new_model()
        device = resolve_device(config.train.device)
        if distributed.enabled and device.type == "cuda":
            device = torch.device("cuda", distributed.local_rank)
        _check_precision_kernels(config, model, device)
    if distributed.enabled and device.type == "cpu" and native_bf16("cpu"):
        agree_on_bf16_speedup()  # at the run's thread count, before a rank uses or reports it
    trainer = Trainer(
        task=task,
        model=model,
        config=config.train,
        run_dir=run_dir,
        device=device,
        reporter=reporter,
        distributed=distributed,
        should_stop=stops.requested,
    )
    if args.resume:  # first, so that a broken checkpoint is the only line a person sees
        with distributed.agreement():
            trainer.load_checkpoint()
            if args.set and distributed.is_main:
                # The run goes on under the overrides, so its config says so: a later plain
                # --resume (a requeued job) continues with them, and evaluation reads them too.
                from rnnlab.config import save_config
                from rnnlab.rundir import CONFIG_FILE

                with reported_as(run_dir / CONFIG_FILE):
                    save_config(config, run_dir / CONFIG_FILE)
    if distributed.is_main:
        reporter.message(describe(model))
        for note in _precision_notices(config, device):
            reporter.message(note)
        if not task.has_validation():
            reporter.message(
                "no data.valid: training without validation; best/ will be the last checkpoint"
            )
        if distributed.enabled:
            reporter.message(f"{distributed.world_size} processes, global batch split across them")
        if args.resume:
            reporter.message(f"resuming {run_dir} at step {trainer.state.step}")
    if replaced is not None:
        replaced.discard()  # the new run has its data and model: the old one goes for good
    with stops.catching(signal.SIGINT):
        state = trainer.fit()
    if not distributed.is_main:
        return 0
    best = state.best_metric
    reporter.message(
        f"done: {state.step} steps, "
        + (f"best {task.primary_metric}={best:.4g}" if best is not None else "no validation yet")
        + f"; run directory {run_dir}"
    )
    test_path = getattr(config.data, "test", "")
    if test_path:
        from rnnlab.rundir import open_run

        run = open_run(run_dir, device=str(device))
        metrics = run.task.evaluate(run.model, test_path, run.device)
        reporter.message("test: " + format_metrics(metrics))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from rnnlab.plotting import plot_learning_curves
    from rnnlab.rundir import run_curves

    if Path(args.out).suffix.lower() != ".png":
        raise RnnlabError(f"--out {args.out!r}: the figure is a PNG; name a .png file")
    curves = [run_curves(Path(run), x=args.x) for run in args.runs]
    print(plot_learning_curves(curves, args.out, x=args.x))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from rnnlab.tuning.report import format_table
    from rnnlab.tuning.study import load_study, run_study

    out = Path(args.out)
    if args.report:
        study = load_study(out)
        print(format_table(study, study.user_attrs.get("metric", "metric")))
        return 0
    missing = [
        flag
        for flag, value in (
            ("--config", args.config),
            ("--space", args.space),
            ("--trials", args.trials),
        )
        if value is None
    ]
    if missing:
        raise RnnlabError(f"tune needs {', '.join(missing)} (or --report to show a study)")
    reporter = ConsoleReporter()
    stops = StopSignals(reporter.message)
    with stops.catching(signal.SIGTERM):
        study = run_study(
            config_path=args.config,
            space_path=args.space,
            trials=args.trials,
            out=out,
            overrides=args.set,
            timeout_minutes=args.timeout_minutes,
            startup_trials=args.startup_trials,
            reporter=reporter,
            should_stop=stops.requested,
        )
    print(format_table(study, study.user_attrs.get("metric", "metric")))
    if stops.requested():  # the trial under way was stopped and marked interrupted
        print("rnnlab: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    return 0


def cmd_embeddings_train(args: argparse.Namespace) -> int:
    from rnnlab.embeddings_training import train_vectors

    trained = train_vectors(
        args.inputs,
        args.out,
        algorithm=args.algorithm,
        dim=args.dim,
        epochs=args.epochs,
        min_count=args.min_count,
        lowercase=args.lowercase,
        split_punct=args.split_punct,
        window=args.window,
        seed=args.seed,
        workers=args.workers,
    )
    print(
        f"{trained.path}: {trained.words} words × {trained.dim} from {trained.sentences} "
        f"sentences ({trained.tokens} tokens)"
    )
    return 0
