"""The ``rnnlab`` command: parse arguments, load config, call the library, show results.

Errors a user can cause are printed as one line (``rnnlab: error: …``) with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rnnlab.errors import RnnlabError

EXIT_USER_ERROR = 2


# ---------------------------------------------------------------------------------------------------
# Reporting to a person


class ConsoleReporter:
    """tqdm bars on a terminal; plain log lines (no carriage returns) when output is a file or CI."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())

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
        from tqdm import tqdm

        return tqdm(
            total=total,
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


def _relaunch_with_torchrun(argv: list[str], nproc: int) -> int:
    """``rnnlab train --nproc N …`` is ``torchrun --standalone --nproc_per_node N -m rnnlab train …``."""
    import subprocess

    kept: list[str] = []
    skip = False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            kept.append(item)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(nproc), "-m", "rnnlab", *kept]
    return subprocess.call(command)


def cmd_train(args: argparse.Namespace) -> int:
    from rnnlab.training.distributed import init_from_env, launched_by_torchrun, shutdown

    if args.nproc > 1 and not launched_by_torchrun():
        return _relaunch_with_torchrun(args.argv, args.nproc)
    config_device = _peek_device(args)
    distributed = init_from_env(config_device)
    try:
        return _train(args, distributed)
    finally:
        shutdown(distributed)


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


def _train(args: argparse.Namespace, distributed: Any) -> int:
    import atexit
    import shutil
    import tempfile

    import torch

    from rnnlab.config import load_config
    from rnnlab.nn.describe import describe
    from rnnlab.rundir import create_run_dir, read_run_config, task_class
    from rnnlab.training.trainer import Trainer, resolve_device

    reporter = ConsoleReporter()
    if args.resume:
        # Every rank reads the run directory (on several machines: a shared filesystem).
        run_dir = Path(args.resume)
        config = read_run_config(run_dir, args.set)
        task = task_class(config.task)(config, run_dir)
        task.prepare_resume()
    elif not distributed.is_main:
        # Other ranks build the same vocabularies from the same data, in a private directory:
        # only rank 0 writes the run directory.
        config = load_config(task_class(args.task).config_class, args.config, args.set)
        run_dir = Path(tempfile.mkdtemp(prefix=f"rnnlab-rank{distributed.rank}-"))
        atexit.register(shutil.rmtree, run_dir, ignore_errors=True)
        task = task_class(config.task)(config, run_dir)
        task.prepare_training()
    else:
        if not args.task or not args.out:
            raise RnnlabError("train needs a TASK and --out RUN (or --resume RUN)")
        config = load_config(task_class(args.task).config_class, args.config, args.set)
        if config.task != args.task:
            raise RnnlabError(
                f"{args.config}: config is for task {config.task!r}, not {args.task!r}"
            )
        run_dir = Path(args.out)
        create_run_dir(run_dir, config, overwrite=args.overwrite)
        task = task_class(config.task)(config, run_dir)
        task.prepare_training()
    _set_threads(config)
    torch.manual_seed(config.seed)
    model = task.build_model()
    device = resolve_device(config.train.device)
    if distributed.enabled and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank)
    if distributed.is_main:
        reporter.message(describe(model))
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
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_metrics(metrics)
    return 0


def _print_metrics(metrics: dict[str, Any]) -> None:
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
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        _print_metrics(metrics)
    return 0


def _flatten(metrics: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested metrics (per-tag tables) as dotted keys, one value per output line."""
    for key, value in metrics.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _stdin_blocks(size: int) -> Iterator[list[str]]:
    """Lines of stdin in blocks, so output streams while a long input is still being read."""
    block: list[str] = []
    for line in sys.stdin:
        block.append(line.rstrip("\r\n"))
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


def _translate_exported(args: argparse.Namespace) -> int:
    """``rnnlab translate EXPORT_DIR``: the same options and output as for a run directory."""
    from rnnlab.export.loading import open_export_as, runtime_call

    translator = open_export_as(args.run, "seq2seq", command="translate")
    size = max(args.batch_size or translator.batch_size, 1)
    plotted = False
    for block in _stdin_blocks(size * 8):
        results = runtime_call(
            translator.translate,
            block,
            beam=args.beam or translator.default_beam,
            n_best=args.n_best,
            max_len=args.max_len,
            batch_size=size,
        )
        for result in results:
            print(result.line())
        sys.stdout.flush()
        keep = [i for i, line in enumerate(block) if line.strip()]
        if args.attention_plot and keep and not plotted:
            from rnnlab.plotting import plot_attention

            first = runtime_call(
                translator.translate, [block[keep[0]]], beam=args.beam or 1, attention=True
            )[0].attention
            import torch

            path = plot_attention(
                torch.from_numpy(first.weights),
                first.src_tokens,
                first.out_tokens,
                args.attention_plot,
                title=block[keep[0]],
            )
            print(f"attention plot written to {path}", file=sys.stderr)
            plotted = True
    if args.attention_plot and not plotted:
        raise RnnlabError("--attention-plot: no input sentence to plot")
    return 0


def cmd_translate(args: argparse.Namespace) -> int:
    from rnnlab.export.loading import is_export_dir
    from rnnlab.rundir import open_run

    if is_export_dir(args.run):
        return _translate_exported(args)
    run = open_run(args.run, device=args.device, overrides=args.set)
    task = run.task
    if task.name != "seq2seq":
        raise RnnlabError(f"{args.run}: translate needs a seq2seq run, this is a {task.name} run")
    _set_threads(task.config)
    if args.batch_size:
        task.config.decode.batch_size = args.batch_size
    if args.attention_plot and not getattr(run.model, "has_attention", False):
        raise RnnlabError(
            f"{args.run}: --attention-plot needs a model with attention "
            f"(this run has model.attention: {task.config.model.attention})"
        )
    plotted = False
    for block in _stdin_blocks(max(args.batch_size or task.config.decode.batch_size, 1) * 8):
        keep = [i for i, s in enumerate(block) if s.strip()]
        sources = [task.encode_source(block[i]) for i in keep]
        decoded = task.translate_ids(
            run.model,
            sources,
            run.device,
            beam_size=args.beam,
            n_best=args.n_best,
            max_len=args.max_len,
        )
        out: list[list[str]] = [[""] for _ in block]
        for i, hyps in zip(keep, decoded, strict=True):
            out[i] = [task.detokenize(h) for h in hyps]
        for hyps in out:
            if args.n_best > 1:
                print("\t".join(hyps))
            else:
                print(hyps[0])
        sys.stdout.flush()
        if args.attention_plot and keep and not plotted:
            _plot_attention(args, run, block[keep[0]])
            plotted = True
    if args.attention_plot and not plotted:
        raise RnnlabError("--attention-plot: no input sentence to plot")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Print the prefix and its continuation; greedy unless --temperature or --top-k is given."""
    from rnnlab.export.loading import is_export_dir
    from rnnlab.rundir import open_run

    if args.length < 0:
        raise RnnlabError(f"--length must be 0 or more, got {args.length}")
    if args.temperature is not None and args.temperature <= 0:
        raise RnnlabError(f"--temperature must be positive, got {args.temperature}")
    if args.top_k is not None and args.top_k < 0:
        raise RnnlabError(f"--top-k must be 0 (no limit) or more, got {args.top_k}")
    if is_export_dir(args.run):
        return _generate_exported(args)
    run = open_run(args.run, device=args.device, overrides=args.set)
    task = run.task
    if task.name != "lm":
        raise RnnlabError(f"{args.run}: generate needs an lm run, this is a {task.name} run")
    _set_threads(task.config)
    texts = task.generate(  # type: ignore[attr-defined]
        run.model,
        args.prefix,
        run.device,
        length=args.length,
        greedy=args.temperature is None and args.top_k is None,
        temperature=args.temperature if args.temperature is not None else 1.0,
        top_k=args.top_k or 0,
        seed=args.seed,
    )
    print(texts[0])
    return 0


def _generate_exported(args: argparse.Namespace) -> int:
    from rnnlab.export.loading import open_export_as, runtime_call

    model = open_export_as(args.run, "lm", command="generate")
    greedy = args.temperature is None and args.top_k is None
    text = runtime_call(
        model.generate,
        args.prefix,
        length=args.length,
        temperature=0.0 if greedy else (args.temperature or 1.0),
        top_k=args.top_k or 0,
        seed=args.seed,
    )
    print(text)
    return 0


def _stdin_conllu_blocks(size: int) -> Iterator[list[Any]]:
    """CoNLL-U sentences from stdin in blocks of ``size``, streamed like ``_stdin_blocks``."""
    from rnnlab.data.conllu_io import parse_conllu

    block: list[Any] = []
    for sentence in parse_conllu(enumerate(sys.stdin, start=1), "<stdin>"):
        block.append(sentence)
        if len(block) >= size:
            yield block
            block = []
    if block:
        yield block


def cmd_tag(args: argparse.Namespace) -> int:
    from rnnlab.export.loading import is_export_dir
    from rnnlab.rundir import open_run

    if is_export_dir(args.run):
        return _tag_exported(args)
    run = open_run(args.run, device=args.device, overrides=args.set)
    task = run.task
    if task.name != "tagger":
        raise RnnlabError(f"{args.run}: tag needs a tagger run, this is a {task.name} run")
    _set_threads(task.config)
    batch_size = max(args.batch_size or task.config.decode.batch_size, 1)
    if args.format == "conllu":
        column = task.config.data.tag_column
        for sentences in _stdin_conllu_blocks(batch_size * 8):
            tags = task.tag(
                run.model, [s.words for s in sentences], run.device, batch_size=batch_size
            )
            for sentence, sentence_tags in zip(sentences, tags, strict=True):
                sys.stdout.write(sentence.with_tags(column, sentence_tags))
            sys.stdout.flush()
        return 0
    for block in _stdin_blocks(batch_size * 8):
        sentences = [line.split() for line in block]
        tags = task.tag(run.model, sentences, run.device, batch_size=batch_size)
        for words, sentence_tags in zip(sentences, tags, strict=True):
            print(" ".join(f"{w}/{t}" for w, t in zip(words, sentence_tags, strict=True)))
        sys.stdout.flush()
    return 0


def _tag_exported(args: argparse.Namespace) -> int:
    from rnnlab.export.loading import open_export_as
    from rnnlab.rundir import read_run_config

    tagger = open_export_as(args.run, "tagger", command="tag")
    batch_size = max(args.batch_size or tagger.batch_size, 1)
    if args.format == "conllu":
        column = read_run_config(Path(args.run)).data.tag_column
        for sentences in _stdin_conllu_blocks(batch_size * 8):
            tagged = tagger.tag([s.words for s in sentences], batch_size=batch_size)
            for sentence, result in zip(sentences, tagged, strict=True):
                sys.stdout.write(sentence.with_tags(column, result.tags))
            sys.stdout.flush()
        return 0
    for block in _stdin_blocks(batch_size * 8):
        for result in tagger.tag([line.split() for line in block], batch_size=batch_size):
            print(result.line())
        sys.stdout.flush()
    return 0


def _plot_attention(args: argparse.Namespace, run: Any, sentence: str) -> None:
    """Heatmap of the first input sentence's attention, decoded as it was translated."""
    from rnnlab.plotting import plot_attention

    matrix = run.task.attention_matrix(
        run.model, sentence, run.device, beam_size=args.beam, max_len=args.max_len
    )
    path = plot_attention(
        matrix.weights, matrix.src_tokens, matrix.out_tokens, args.attention_plot, title=sentence
    )
    print(f"attention plot written to {path}", file=sys.stderr)


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
    evaluate.add_argument("run")
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
    tag.add_argument("run")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
