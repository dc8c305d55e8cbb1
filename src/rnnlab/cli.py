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

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
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


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from rnnlab.config import load_config
    from rnnlab.nn.describe import describe
    from rnnlab.rundir import create_run_dir, read_run_config, task_class
    from rnnlab.training.trainer import Trainer, resolve_device

    reporter = ConsoleReporter()
    if args.resume:
        run_dir = Path(args.resume)
        config = read_run_config(run_dir, args.set)
        task = task_class(config.task)(config, run_dir)
        task.prepare_resume()
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
    reporter.message(describe(model))
    device = resolve_device(config.train.device)
    trainer = Trainer(
        task=task,
        model=model,
        config=config.train,
        run_dir=run_dir,
        device=device,
        reporter=reporter,
    )
    if args.resume:
        trainer.load_checkpoint()
        reporter.message(f"resuming {run_dir} at step {trainer.state.step}")
    state = trainer.fit()
    best = state.best_metric
    reporter.message(
        f"done: {state.step} steps, best {task.primary_metric}="
        + (f"{best:.4g}" if best is not None else "n/a")
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
    from rnnlab.rundir import open_run

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
        for key, value in _flatten(metrics):
            print(f"{key}\t{value:.4f}" if isinstance(value, float) else f"{key}\t{value}")
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


def cmd_translate(args: argparse.Namespace) -> int:
    from rnnlab.rundir import open_run

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
    from rnnlab.rundir import open_run

    if args.length < 0:
        raise RnnlabError(f"--length must be 0 or more, got {args.length}")
    if args.temperature is not None and args.temperature <= 0:
        raise RnnlabError(f"--temperature must be positive, got {args.temperature}")
    if args.top_k is not None and args.top_k < 0:
        raise RnnlabError(f"--top-k must be 0 (no limit) or more, got {args.top_k}")
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
    from rnnlab.rundir import open_run

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
    translate.add_argument("run")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
