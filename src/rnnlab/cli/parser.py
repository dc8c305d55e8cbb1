"""The arguments of every ``rnnlab`` command, each bound to the function that runs it."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from rnnlab.cli.console import EXIT_USER_ERROR
from rnnlab.cli.inference_commands import (
    cmd_evaluate,
    cmd_export,
    cmd_generate,
    cmd_serve,
    cmd_tag,
    cmd_translate,
)
from rnnlab.cli.training_commands import (
    cmd_embeddings_train,
    cmd_plot,
    cmd_train,
    cmd_tune,
)


class OneLineParser(argparse.ArgumentParser):
    """argparse, with its errors on one line like every other user error (``--help`` shows usage)."""

    def error(self, message: str) -> NoReturn:
        print(f"rnnlab: error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def parse_command_line(
    parser: argparse.ArgumentParser, argv: list[str] | None
) -> argparse.Namespace:
    """``parser.parse_args``, with arguments no command takes reported by the command they were
    given to (``rnnlab translate: unrecognized arguments: …``, and its ``--help``), not by ``rnnlab``.
    """
    args, extras = parser.parse_known_args(argv)
    if extras:
        _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def _command_parser(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> argparse.ArgumentParser:
    """The innermost subcommand's parser that ``args`` went through (``rnnlab embeddings train``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _command_parser(chosen, args)
    return parser


def count(text: str) -> int:
    """A flag that counts something: a whole number of 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="rnnlab",
        description="Recurrent sequence models: train, evaluate, translate, generate, tag.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model (seq2seq|lm|tagger) into a run directory")
    train.add_argument("task", nargs="?", help="task to train: seq2seq|lm|tagger")
    train.add_argument("--config", help="YAML config (default: the task's built-in defaults)")
    train.add_argument("--out", help="run directory to create")
    train.add_argument("--resume", metavar="RUN", help="continue training a run directory")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run directory (kept until the new run has read its data)",
    )
    train.add_argument(
        "--nproc",
        type=count,
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
        "--beam", type=count, default=None, help="beam size for translation metrics"
    )
    evaluate.add_argument(
        "--per-tag", action="store_true", help="add per-tag precision/recall/F1 (tagger runs)"
    )
    evaluate.add_argument("--device", default="auto")
    evaluate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    evaluate.set_defaults(func=cmd_evaluate)

    translate = sub.add_parser("translate", help="translate stdin to stdout, one line per line")
    translate.add_argument("run", help="a run directory, or a folder written by rnnlab export")
    translate.add_argument("--batch-size", type=count, default=None)
    translate.add_argument("--beam", type=count, default=None, help="beam size (1 = greedy)")
    translate.add_argument(
        "--n-best", type=count, default=1, help="print K hypotheses, tab-separated"
    )
    translate.add_argument("--max-len", type=count, default=None, help="maximum output tokens")
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
    tag.add_argument("--batch-size", type=count, default=None)
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
