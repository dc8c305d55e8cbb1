"""The ``rnnlab`` command: parse arguments, load config, call the library, show results.

Errors a user can cause are printed as one line (``rnnlab: error: …``) with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from rnnlab.errors import RnnlabError
from rnnlab.memory import keep_freed_memory

EXIT_USER_ERROR = 2
EXIT_TERMINATED = 128 + signal.SIGTERM


# ---------------------------------------------------------------------------------------------------
# Reporting to a person


class ConsoleReporter:
    """tqdm bars on a terminal; plain log lines (no carriage returns) when output is a file or CI."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())

    def record(self, record: dict[str, Any]) -> None:
        if self.interactive and "valid_loss" not in record and "train_loss" in record:
            return  # the bar's postfix already shows the training loss
        parts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()]
        self.message(" ".join(parts))

    def message(self, text: str) -> None:
        if self.interactive:
            from tqdm import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def progress(self, total: int, desc: str, initial: int = 0) -> Any:
        """A bar over ``total`` items; ``total`` 0 counts items of unknown number (a stream)."""
        from tqdm import tqdm

        return tqdm(
            total=total or None,
            desc=desc,
            initial=initial,
            file=self.stream,
            disable=not self.interactive,
            leave=False,
            dynamic_ncols=True,
        )


# ---------------------------------------------------------------------------------------------------
# Commands


def _set_threads(config: Any) -> None:
    import torch

    if config.train.num_threads > 0:
        torch.set_num_threads(config.train.num_threads)


@contextmanager
def _stop_on_sigterm() -> Iterator[Callable[[], bool]]:
    """SIGTERM — what Slurm, Kubernetes and torchrun send before killing — asks for a clean stop.

    The handler only sets a flag; the trainer polls it after each step, so every rank stops after
    the same step and the checkpoint holds a whole step, never half of one.
    """
    requested = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGTERM, previous)


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
    from rnnlab.training.distributed import init_from_env, launched_by_torchrun, shutdown

    if args.nproc > 1 and not launched_by_torchrun():
        return _relaunch_with_torchrun(args.argv, args.nproc)
    from rnnlab.training.run_lock import RunLocked
    from rnnlab.training.trainer import TrainingStopped

    config_device = _peek_device(args)
    distributed = init_from_env(config_device)
    try:
        with ExitStack() as cleanup:
            should_stop = cleanup.enter_context(_stop_on_sigterm())
            try:
                return _train(args, distributed, cleanup, should_stop)
            except RunLocked:
                if distributed.is_main:
                    raise
                return EXIT_USER_ERROR  # rank 0 names the holder; one line is enough
            except TrainingStopped:
                if distributed.is_main:
                    print("rnnlab: terminated", file=sys.stderr)
                # Under torchrun an orderly stop is a success, or torchrun reports a failed job.
                return 0 if distributed.enabled else EXIT_TERMINATED
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
    import torch

    from rnnlab.config import apply_overrides, read_yaml

    data: dict[str, Any] = {}
    if args.resume:
        data = read_yaml(Path(args.resume) / "config.yaml")
    elif args.config:
        data = read_yaml(args.config)
    data = apply_overrides(data, list(args.set))
    name = str((data.get("train") or {}).get("device", "auto"))
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name).type


def _train(
    args: argparse.Namespace,
    distributed: Any,
    cleanup: ExitStack,
    should_stop: Callable[[], bool],
) -> int:
    import atexit
    import shutil
    import tempfile

    import torch

    from rnnlab.atomic import reported_as
    from rnnlab.nn.describe import describe
    from rnnlab.rundir import create_run_dir, load_task_config, read_run_config, task_class
    from rnnlab.training.run_lock import RunLock, RunLocked
    from rnnlab.training.trainer import Trainer, resolve_device

    reporter = ConsoleReporter()

    def lock(run_dir: Path | None) -> None:
        """Only rank 0 writes the run directory, so only rank 0 holds its lock; every rank calls
        this, so that all of them stop (silently but rank 0) when another trainer holds it."""
        refused: RunLocked | None = None
        if distributed.is_main:
            assert run_dir is not None
            try:
                held = cleanup.enter_context(RunLock.acquire(run_dir))
            except RunLocked as exc:
                refused = exc
            else:
                if held.notice:
                    reporter.message(held.notice)
        message = distributed.broadcast(str(refused) if refused else None)
        if refused is not None:
            raise refused
        if message is not None:
            raise RunLocked(message)

    if args.resume:
        # Every rank reads the run directory (on several machines: a shared filesystem).
        run_dir = Path(args.resume)
        config = read_run_config(run_dir, args.set)
        lock(run_dir)
        task = task_class(config.task)(config, run_dir)
        task.prepare_resume()
    elif not distributed.is_main:
        # Other ranks build the same vocabularies from the same data, in a private directory:
        # only rank 0 writes the run directory.
        config = load_task_config(args.task, args.config, args.set)
        lock(None)
        run_dir = Path(tempfile.mkdtemp(prefix=f"rnnlab-rank{distributed.rank}-"))
        atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
        task = task_class(config.task)(config, run_dir)
        task.prepare_training()
    else:
        if not args.task or not args.out:
            raise RnnlabError("train needs a TASK and --out RUN (or --resume RUN)")
        config = load_task_config(args.task, args.config, args.set)
        run_dir = Path(args.out)
        with reported_as(run_dir):
            run_dir.mkdir(parents=True, exist_ok=True)
        lock(run_dir)  # before --overwrite may clear the directory
        create_run_dir(run_dir, config, overwrite=args.overwrite)
        task = task_class(config.task)(config, run_dir)
        if reporter.interactive:  # a person waits: vocabularies, subwords and ids take a while
            reporter.message(f"preparing the training data from {config.data.train}")
        task.prepare_training()
        for note in task.setup_notes():
            reporter.message(note)
    _set_threads(config)
    torch.manual_seed(config.seed)
    model = task.build_model()
    device = resolve_device(config.train.device)
    if distributed.enabled and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank)
    _check_precision_kernels(config, model, device)
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
    trainer = Trainer(
        task=task,
        model=model,
        config=config.train,
        run_dir=run_dir,
        device=device,
        reporter=reporter,
        distributed=distributed,
        should_stop=should_stop,
    )
    if args.resume:
        trainer.load_checkpoint()
        reporter.message(f"resuming {run_dir} at step {trainer.state.step}")
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
        reporter.message("test: " + _format_metrics(metrics))
    return 0


def _format_metrics(metrics: dict[str, Any]) -> str:
    return " ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rnnlab.export.loading import is_export_dir
    from rnnlab.rundir import open_run

    if len(args.runs) > 1:
        return _evaluate_ensemble(args)
    args.run = args.runs[0]
    if is_export_dir(args.run):
        return _evaluate_exported(args)
    run = open_run(args.run, device=args.device, overrides=args.set)
    _set_threads(run.task.config)
    extra: dict[str, Any] = {}
    if getattr(args, "beam", None):
        extra["beam_size"] = args.beam
    if run.task.name == "seq2seq":
        extra["progress"] = ConsoleReporter().progress(0, "decoding").update
    if getattr(args, "per_tag", False):
        if run.task.name != "tagger":
            raise RnnlabError(
                f"{args.run}: --per-tag needs a tagger run, this is a {run.task.name} run"
            )
        extra["per_tag"] = True
    metrics = run.task.evaluate(run.model, args.data, run.device, **extra)
    _print_metrics(metrics, as_json=args.json)
    return 0


def _evaluate_ensemble(args: argparse.Namespace) -> int:
    from rnnlab.inference.ensemble import load_ensemble

    if args.beam:
        raise RnnlabError("evaluate: --beam does not apply to an ensemble of taggers")
    ensemble = load_ensemble(args.runs, command="evaluate", device=args.device, overrides=args.set)
    metrics = ensemble.evaluate(args.data, per_tag=args.per_tag)
    _print_metrics(metrics, as_json=args.json)
    return 0


def _print_metrics(metrics: dict[str, Any], *, as_json: bool) -> None:
    """One JSON document, or one ``key<TAB>value`` line per (flattened) metric."""
    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    for key, value in _flatten(metrics):
        print(f"{key}\t{value:.4f}" if isinstance(value, float) else f"{key}\t{value}")


def _evaluate_exported(args: argparse.Namespace) -> int:
    from rnnlab.export.evaluation import evaluate_export
    from rnnlab.export.loading import open_export

    model = open_export(args.run)
    progress = ConsoleReporter().progress(0, "decoding").update
    metrics = evaluate_export(
        model, args.data, beam_size=args.beam, per_tag=args.per_tag, progress=progress
    )
    _print_metrics(metrics, as_json=args.json)
    return 0


def _flatten(metrics: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested metrics (per-tag tables) as dotted keys, one value per output line."""
    for key, value in metrics.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _notice(text: str) -> None:
    print(f"rnnlab: notice: {text}", file=sys.stderr, flush=True)


def _stdin_lines() -> Iterator[tuple[int, str]]:
    """Numbered lines of stdin, each cut to the input line limit (with a notice when it is)."""
    from rnnlab.data.limits import read_limited_lines

    for number, line in enumerate(read_limited_lines(sys.stdin), start=1):
        if line.cut:
            _notice(line.notice(f"<stdin>:{number}"))
        yield number, line.text


def _stdin_blocks(size: int) -> Iterator[list[str]]:
    """Lines of stdin in blocks, so output streams while a long input is still being read."""
    block: list[str] = []
    for _, line in _stdin_lines():
        block.append(line)
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block


def cmd_export(args: argparse.Namespace) -> int:
    from rnnlab.export.onnx import export_run, require_export_extra
    from rnnlab.rundir import open_run

    require_export_extra()
    run = open_run(args.run, which=args.which, device="cpu", overrides=args.set)
    out = Path(args.out) if args.out else Path(args.run) / "export" / args.format
    export_run(run.task, run.model, out, quantize=args.quantize)
    print(out)
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from rnnlab.inference import Translator, load_as

    translator = load_as(
        Translator, args.run, command="translate", device=args.device, overrides=args.set
    )
    if args.batch_size:
        translator.batch_size = args.batch_size
    if args.attention_plot and not translator.has_attention:
        raise RnnlabError(
            f"{args.run}: --attention-plot needs a model with attention "
            f"(this model has model.attention: {translator.attention_kind})"
        )
    beam = max(args.beam or translator.default_beam, args.n_best)
    plotted = False
    bar = ConsoleReporter().progress(0, "translating")
    for block in _stdin_blocks(max(translator.batch_size, 1) * 8):
        translations = translator.translate(
            block, beam=beam, n_best=args.n_best, max_len=args.max_len, progress=bar.update
        )
        for translation in translations:
            print(translation.line())
        sys.stdout.flush()
        first = next((line for line in block if line.strip()), None)
        if args.attention_plot and first is not None and not plotted:
            _plot_attention(args, translator, first, beam)
            plotted = True
    bar.close()
    if args.attention_plot and not plotted:
        raise RnnlabError("--attention-plot: no input sentence to plot")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Print the prefix and its continuation; greedy unless --temperature or --top-k is given."""
    from rnnlab.data.limits import cut_line
    from rnnlab.inference import LanguageModel, load_as

    if args.length < 0:
        raise RnnlabError(f"--length must be 0 or more, got {args.length}")
    if args.temperature is not None and args.temperature <= 0:
        raise RnnlabError(f"--temperature must be positive, got {args.temperature}")
    if args.top_k is not None and args.top_k < 0:
        raise RnnlabError(f"--top-k must be 0 (no limit) or more, got {args.top_k}")
    prefix = cut_line(args.prefix)
    if prefix.cut:
        _notice(prefix.notice("--prefix"))
    model = load_as(
        LanguageModel, args.run, command="generate", device=args.device, overrides=args.set
    )
    sampled = args.temperature is not None or args.top_k is not None
    text = model.generate(
        prefix.text,
        length=args.length,
        temperature=(args.temperature or 1.0) if sampled else 0.0,
        top_k=args.top_k or 0,
        seed=args.seed,
    )
    print(text)
    return 0


def _stdin_conllu_blocks(size: int) -> Iterator[list[Any]]:
    """CoNLL-U sentences from stdin in blocks of ``size``, streamed like ``_stdin_blocks``."""
    from rnnlab.data.conllu_io import parse_conllu

    block: list[Any] = []
    for sentence in parse_conllu(_stdin_lines(), "<stdin>"):
        block.append(sentence)
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block


def cmd_tag(args: argparse.Namespace) -> int:
    from rnnlab.inference import Tagger, load_as
    from rnnlab.inference.ensemble import TaggerEnsemble, load_ensemble

    tagger: Tagger | TaggerEnsemble
    if len(args.runs) > 1:
        tagger = load_ensemble(args.runs, command="tag", device=args.device, overrides=args.set)
    else:
        tagger = load_as(
            Tagger, args.runs[0], command="tag", device=args.device, overrides=args.set
        )
    if args.batch_size:
        tagger.batch_size = args.batch_size
    block_size = max(tagger.batch_size, 1) * 8
    bar = ConsoleReporter().progress(0, "tagging")
    if args.format == "conllu":
        column = tagger.tag_column
        for sentences in _stdin_conllu_blocks(block_size):
            tagged = tagger.tag([s.words for s in sentences], progress=bar.update)
            for sentence, result in zip(sentences, tagged, strict=True):
                sys.stdout.write(sentence.with_tags(column, result.tags))
            sys.stdout.flush()
    else:
        for block in _stdin_blocks(block_size):
            for result in tagger.tag(block, progress=bar.update):
                print(result.line())
            sys.stdout.flush()
    bar.close()
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from rnnlab.plotting import plot_learning_curves
    from rnnlab.rundir import run_curves

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
    study = run_study(
        config_path=args.config,
        space_path=args.space,
        trials=args.trials,
        out=out,
        overrides=args.set,
        timeout_minutes=args.timeout_minutes,
        startup_trials=args.startup_trials,
        reporter=ConsoleReporter(),
    )
    print(format_table(study, study.user_attrs.get("metric", "metric")))
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


def _plot_attention(args: argparse.Namespace, translator: Any, sentence: str, beam: int) -> None:
    """Heatmap of the first input sentence's attention, decoded as it was translated."""
    from rnnlab.plotting import plot_attention

    [translation] = translator.translate(
        [sentence], beam=beam, n_best=1, max_len=args.max_len, attention=True
    )
    matrix = translation.attention
    path = plot_attention(
        matrix.weights, matrix.src_tokens, matrix.out_tokens, args.attention_plot, title=sentence
    )
    print(f"attention plot written to {path}", file=sys.stderr)


def cmd_serve(args: argparse.Namespace) -> int:
    """Check every model path and the port first (one-line errors), then serve until a signal."""
    try:
        from rnnlab.serve.models import parse_model_spec
        from rnnlab.serve.server import bind, serve
        from rnnlab.serve.settings import ServeSettings
    except ImportError as exc:
        raise RnnlabError(
            f"serve needs the serve extra (pip install 'rnnlab[serve]'): {exc}"
        ) from None
    from rnnlab.inference import load
    from rnnlab.inference.loading import directory_kind
    from rnnlab.rundir import read_run_config

    specs = [parse_model_spec(text) for text in args.models]
    names = [spec.name for spec in specs]
    for spec in specs:
        if not spec.name or names.count(spec.name) > 1:
            raise RnnlabError(
                f"{spec.path}: model name {spec.name!r} is empty or used twice (use NAME=PATH)"
            )
        if directory_kind(spec.path) == "run":
            read_run_config(spec.path)
    try:
        settings = ServeSettings(
            max_batch_sentences=args.max_batch_sentences,
            max_wait_ms=args.max_wait_ms,
            max_request_bytes=args.max_request_bytes,
            max_sentences=args.max_sentences,
            max_chars=args.max_chars,
            max_queue=args.max_queue,
        )
    except ValueError as exc:
        raise RnnlabError(str(exc).replace("max_", "--max-").replace("_", "-")) from None
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    print(
        f"rnnlab: serving {', '.join(names)} on http://{host}:{port}", file=sys.stderr, flush=True
    )
    failure = serve(
        specs,
        sock,
        settings=settings,
        loader=lambda path: load(path, device=args.device, threads=args.threads),
    )
    if failure is not None:
        raise RnnlabError(failure)
    return 0


# ---------------------------------------------------------------------------------------------------
# Argument parsing


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnlab",
        description="Recurrent sequence models: train, evaluate, translate, generate, tag.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (seq2seq|lm|tagger) into a run directory")
    train.add_argument("task", nargs="?", help="task to train: seq2seq|lm|tagger")
    train.add_argument("--config", help="YAML config (default: the task's built-in defaults)")
    train.add_argument("--out", help="run directory to create")
    train.add_argument("--resume", metavar="RUN", help="continue training a run directory")
    train.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="data-parallel processes on this machine (re-launches through torchrun)",
    )
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value"
    )
    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="score a trained run on a data file")
    evaluate.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="a run directory or exported model; several tagger runs are scored as one ensemble",
    )
    evaluate.add_argument("--data", required=True, help="data file in the task's format")
    evaluate.add_argument("--json", action="store_true", help="print metrics as JSON")
    evaluate.add_argument(
        "--beam", type=int, default=None, help="beam size for translation metrics"
    )
    evaluate.add_argument(
        "--per-tag", action="store_true", help="add per-tag precision/recall/F1 (tagger runs)"
    )
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    evaluate.set_defaults(func=cmd_evaluate)

    translate = sub.add_parser("translate", help="translate stdin to stdout, one line per line")
    translate.add_argument("run", help="a run directory, or a folder written by rnnlab export")
    translate.add_argument("--batch-size", type=int, default=None)
    translate.add_argument("--beam", type=int, default=None, help="beam size (1 = greedy)")
    translate.add_argument(
        "--n-best", type=int, default=1, help="print K hypotheses, tab-separated"
    )
    translate.add_argument("--max-len", type=int, default=None, help="maximum output tokens")
    translate.add_argument(
        "--attention-plot",
        metavar="PNG",
        help="save a heatmap of the first input sentence's attention (attention models only)",
    )
    translate.add_argument("--device", default="auto")
    translate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    translate.set_defaults(func=cmd_translate)

    generate = sub.add_parser(
        "generate",
        help="continue a text with a language model (greedy unless --temperature/--top-k)",
    )
    generate.add_argument("run")
    generate.add_argument(
        "--prefix", required=True, help="text to continue (cleaned like training)"
    )
    generate.add_argument(
        "--length", type=int, default=100, help="tokens to generate (0 = print the prefix only)"
    )
    generate.add_argument(
        "--temperature", type=float, default=None, help="sample at this temperature (> 0)"
    )
    generate.add_argument(
        "--top-k", type=int, default=None, help="sample among the K most probable tokens (0 = all)"
    )
    generate.add_argument("--seed", type=int, default=0, help="seed for sampling")
    generate.add_argument("--device", default="auto")
    generate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    generate.set_defaults(func=cmd_generate)

    tag = sub.add_parser("tag", help="tag stdin to stdout (word/TAG lines, or CoNLL-U)")
    tag.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="a run directory or exported model; several tagger runs tag as one ensemble",
    )
    tag.add_argument(
        "--format",
        choices=["text", "conllu"],
        default="text",
        help="text: a whitespace-tokenised sentence per line; conllu: fill the run's tag column",
    )
    tag.add_argument("--batch-size", type=int, default=None)
    tag.add_argument("--device", default="auto")
    tag.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    tag.set_defaults(func=cmd_tag)

    serve = sub.add_parser(
        "serve", help="serve models over HTTP (JSON API, web page, metrics) with dynamic batching"
    )
    serve.add_argument("models", nargs="+", metavar="[NAME=]RUN", help="run directories to serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080, help="0 = any free port")
    serve.add_argument(
        "--max-batch-sentences", type=int, default=64, help="sentences per batch (1 = no batching)"
    )
    serve.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="longest wait for a batch to fill"
    )
    serve.add_argument("--max-request-bytes", type=int, default=1_048_576)
    serve.add_argument("--max-sentences", type=int, default=256, help="per request")
    serve.add_argument("--max-chars", type=int, default=1000, help="per sentence or prefix")
    serve.add_argument("--max-queue", type=int, default=1024, help="sentences waiting per model")
    serve.add_argument("--threads", type=int, default=0, help="PyTorch threads (0 = default)")
    serve.add_argument("--device", default="auto")
    serve.set_defaults(func=cmd_serve)

    export = sub.add_parser(
        "export", help="export a trained model to ONNX, for inference without PyTorch"
    )
    export.add_argument("run")
    export.add_argument("--format", choices=["onnx"], default="onnx")
    export.add_argument("--out", help="output folder (default RUN/export/FORMAT)")
    export.add_argument("--which", choices=["best", "last"], default="best")
    export.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="int8: ONNX Runtime dynamic quantisation of the weight matrices",
    )
    export.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    export.set_defaults(func=cmd_export)

    tune = sub.add_parser(
        "tune", help="hyperparameter search with Optuna; every trial is a run directory"
    )
    tune.add_argument("--config", help="base YAML config (its task is the task tuned)")
    tune.add_argument("--space", help="SPACE.yaml: dotted config keys → distributions")
    tune.add_argument("--trials", type=int, help="trials the study should hold when done")
    tune.add_argument("--out", required=True, metavar="STUDY", help="study directory")
    tune.add_argument(
        "--timeout-minutes", type=float, default=0.0, help="stop starting trials after"
    )
    tune.add_argument(
        "--startup-trials",
        type=int,
        default=5,
        help="trials that run to the end before the median pruner may stop one",
    )
    tune.add_argument("--report", action="store_true", help="print the study's trials and exit")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    tune.set_defaults(func=cmd_tune)

    plot = sub.add_parser("plot", help="learning curves of one or more runs in one PNG")
    plot.add_argument("runs", nargs="+", metavar="RUN", help="run directories to overlay")
    plot.add_argument("--out", required=True, help="PNG file to write")
    plot.add_argument("--x", choices=["step", "minutes"], default="step", help="horizontal axis")
    plot.set_defaults(func=cmd_plot)

    embeddings = sub.add_parser("embeddings", help="word vectors for model.pretrained_embeddings")
    embeddings_sub = embeddings.add_subparsers(dest="embeddings_command", required=True)
    emb_train = embeddings_sub.add_parser(
        "train", help="train word2vec or fastText vectors on unlabeled text (gensim)"
    )
    emb_train.add_argument("inputs", nargs="+", metavar="INPUT", help="text or CoNLL-U files")
    emb_train.add_argument("--out", required=True, help="vectors file (word2vec text)")
    emb_train.add_argument("--algorithm", choices=["word2vec", "fasttext"], default="word2vec")
    emb_train.add_argument("--dim", type=int, default=100)
    emb_train.add_argument("--epochs", type=int, default=5)
    emb_train.add_argument("--min-count", type=int, default=2)
    emb_train.add_argument("--lowercase", action="store_true")
    emb_train.add_argument(
        "--split-punct",
        action="store_true",
        help="split , . ! ? off words of plain-text inputs, as treebanks are tokenised",
    )
    emb_train.add_argument("--window", type=int, default=5)
    emb_train.add_argument("--seed", type=int, default=1)
    emb_train.add_argument(
        "--workers", type=int, default=1, help="gensim threads (1: reproducible)"
    )
    emb_train.set_defaults(func=cmd_embeddings_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    keep_freed_memory()
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return int(args.func(args) or 0)
    except RnnlabError as exc:
        print(f"rnnlab: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("rnnlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
