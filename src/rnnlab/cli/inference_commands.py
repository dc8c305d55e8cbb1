"""The commands on a trained run or an exported model: ``evaluate``, ``translate``, ``generate``,
``tag``, ``export`` and ``serve``. Each loads the model through ``rnnlab.inference`` (or
``rnnlab.rundir``), calls it, and prints what it returns."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from rnnlab.cli.console import (
    ConsoleReporter,
    notice,
    print_metrics,
    stdin_blocks,
    stdin_conllu_blocks,
)
from rnnlab.errors import RnnlabError


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rnnlab.export.loading import is_export_dir
    from rnnlab.rundir import open_run
    from rnnlab.training.trainer import set_threads

    if len(args.runs) > 1:
        return _evaluate_ensemble(args)
    args.run = args.runs[0]
    if is_export_dir(args.run):
        return _evaluate_exported(args)
    run = open_run(args.run, device=args.device, overrides=args.set)
    set_threads(run.task.config.train.num_threads)
    extra: dict[str, Any] = {}
    if getattr(args, "beam", None):
        extra["beam_size"] = args.beam
    if getattr(args, "per_tag", False):
        if run.task.name != "tagger":
            raise RnnlabError(
                f"{args.run}: --per-tag needs a tagger run, this is a {run.task.name} run"
            )
        extra["per_tag"] = True
    decodes = run.task.name == "seq2seq"  # the only task whose evaluation reports progress
    bar: Any = ConsoleReporter().progress(0, "decoding") if decodes else contextlib.nullcontext()
    with bar:
        if decodes:
            extra["progress"] = bar.update
        metrics = run.task.evaluate(run.model, args.data, run.device, **extra)
    print_metrics(metrics, as_json=args.json)
    return 0


def _evaluate_ensemble(args: argparse.Namespace) -> int:
    from rnnlab.inference.ensemble import load_ensemble

    if args.beam:
        raise RnnlabError("evaluate: --beam does not apply to an ensemble of taggers")
    ensemble = load_ensemble(args.runs, command="evaluate", device=args.device, overrides=args.set)
    metrics = ensemble.evaluate(args.data, per_tag=args.per_tag)
    print_metrics(metrics, as_json=args.json)
    return 0


def _evaluate_exported(args: argparse.Namespace) -> int:
    from rnnlab.export.evaluation import evaluate_export
    from rnnlab.export.loading import open_export

    if args.set:  # an export's settings were fixed when it was written
        raise RnnlabError(
            f"{args.run}: --set does not apply to an exported model (got {args.set[0]!r}); "
            "export the run again with the setting, or use the run directory"
        )
    model = open_export(args.run)
    with ConsoleReporter().progress(0, "decoding") as bar:
        metrics = evaluate_export(
            model, args.data, beam_size=args.beam, per_tag=args.per_tag, progress=bar.update
        )
    print_metrics(metrics, as_json=args.json)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rnnlab.export.onnx import export_run, require_export_extra
    from rnnlab.rundir import open_run

    require_export_extra()
    run = open_run(args.run, which=args.which, device="cpu", overrides=args.set, decodes=False)
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
    console = ConsoleReporter()
    with console.progress(0, "translating") as bar:
        for block in stdin_blocks(max(translator.batch_size, 1) * 8):
            translations = translator.translate(
                block, beam=beam, n_best=args.n_best, max_len=args.max_len, progress=bar.update
            )
            console.output("".join(f"{t.line()}\n" for t in translations))
            first = next((line for line in block if line.strip()), None)
            if args.attention_plot and first is not None and not plotted:
                path = _plot_attention(args, translator, first, beam)
                console.message(f"attention plot written to {path}")
                plotted = True
    if args.attention_plot and not plotted:
        raise RnnlabError("--attention-plot: no input sentence to plot")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    """Print the prefix and its continuation; greedy unless --temperature or --top-k is given."""
    from rnnlab.data.limits import cut_line
    from rnnlab.inference import LanguageModel, load_as
    from rnnlab.inference.inputs import SEED_LIMIT

    if args.length < 0:
        raise RnnlabError(f"--length must be 0 or more, got {args.length}")
    if args.temperature is not None and not args.temperature > 0:  # also refuses nan
        raise RnnlabError(f"--temperature must be positive, got {args.temperature}")
    if args.top_k is not None and args.top_k < 0:
        raise RnnlabError(f"--top-k must be 0 (no limit) or more, got {args.top_k}")
    if not 0 <= args.seed < SEED_LIMIT:  # what torch and numpy both take (the server's rule too)
        raise RnnlabError(f"--seed must be between 0 and 2^63 - 1, got {args.seed}")
    prefix = cut_line(args.prefix)
    if prefix.cut:
        notice(prefix.notice("--prefix"))
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
    console = ConsoleReporter()
    with console.progress(0, "tagging") as bar:
        if args.format == "conllu":
            column = tagger.tag_column
            for sentences in stdin_conllu_blocks(block_size):
                tagged = tagger.tag([s.words for s in sentences], progress=bar.update)
                console.output(
                    "".join(
                        s.with_tags(column, r.tags) for s, r in zip(sentences, tagged, strict=True)
                    )
                )
        else:
            for block in stdin_blocks(block_size):
                console.output(
                    "".join(f"{r.line()}\n" for r in tagger.tag(block, progress=bar.update))
                )
    return 0


def _plot_attention(args: argparse.Namespace, translator: Any, sentence: str, beam: int) -> Path:
    """Heatmap of the first input sentence's attention, decoded as it was translated; its path."""
    from rnnlab.plotting import plot_attention

    [translation] = translator.translate(
        [sentence], beam=beam, n_best=1, max_len=args.max_len, attention=True
    )
    matrix = translation.attention
    return plot_attention(
        matrix.weights, matrix.src_tokens, matrix.out_tokens, args.attention_plot, title=sentence
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Check every model path and the port first (one-line errors), then serve until a signal."""
    try:
        from rnnlab.serve.models import MODEL_NAME, parse_model_spec
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
        if not MODEL_NAME.fullmatch(spec.name):
            raise RnnlabError(
                f"{spec.path}: model name {spec.name!r} is part of its URLs: use letters, digits, "
                f"'.', '_' and '-' (NAME=PATH)"
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
    if args.threads < 0:
        raise RnnlabError(f"--threads must be 0 (the default) or more, got {args.threads}")
    if any(directory_kind(spec.path) == "run" for spec in specs):  # an export ignores it
        from rnnlab.training.trainer import resolve_device

        resolve_device(args.device, setting="--device")
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    address = f"[{host}]" if ":" in host else host  # an IPv6 address is bracketed in a URL

    def announce() -> None:
        print(f"rnnlab: serving {', '.join(names)} on http://{address}:{port}", file=sys.stderr)
        sys.stderr.flush()

    failure = serve(
        specs,
        sock,
        settings=settings,
        loader=lambda path: load(path, device=args.device, threads=args.threads),
        announce=announce,
    )
    if failure is not None:
        raise RnnlabError(failure)
    return 0
