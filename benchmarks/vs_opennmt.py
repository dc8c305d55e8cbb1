"""rnnlab against OpenNMT-py on a matched Multi30k De→En attention model: training, decoding, BLEU.

Both systems read the same sentencepiece pieces (the rnnlab run's own model, so both see identical
source and target tokens), train a bidirectional-GRU encoder with additive (Bahdanau, OpenNMT's
``global_attention: mlp``) attention, embeddings 256, batches of 64 sentences, Adam, gradient norm 1,
label smoothing 0.1, pairs over 50 pieces dropped, and decode with GNMT length penalty α = 0.6 and
at most 60 pieces. OpenNMT-py's RNN decoder must be as wide as its encoder's output (512) and feeds
the previous attentional vector back (``input_feed``); rnnlab's recipe decoder is 256 wide. The two
models therefore differ in work per token, which the report counts (multiply-adds of the products
every implementation must do, forward pass) so that throughput can be compared per multiply-add too.

OpenNMT-py 3.5.1 pins torch < 2.3; it runs unchanged on the torch of this repository, so it is
installed beside it in its own environment, without its dependency pins:

    python -m venv ../onmt && ../onmt/bin/pip install torch==2.13.0 configargparse pyyaml sacrebleu \
        six "pyonmttok>=1.37,<2" rapidfuzz pyahocorasick spacy fasttext-wheel "ctranslate2>=4,<5" \
        tensorboard flask waitress
    ../onmt/bin/pip install --no-deps OpenNMT-py==3.5.1

    python benchmarks/vs_opennmt.py --run runs/m30k15 --onmt-bin ../onmt/bin prepare
    python benchmarks/vs_opennmt.py --run runs/m30k15 --onmt-bin ../onmt/bin train --minutes 15 --threads 2
    python benchmarks/vs_opennmt.py --run runs/m30k15 --onmt-bin ../onmt/bin throughput --threads 1
    python benchmarks/vs_opennmt.py --run runs/m30k15 --onmt-bin ../onmt/bin decode --threads 1

``train`` gives OpenNMT-py a wall-clock budget (its trainer has none: the last checkpoint saved
within the budget is kept); ``throughput`` alternates short training windows of both systems and
reports medians of their target tokens/s; ``decode`` alternates rounds of greedy and beam-5
translation of the validation set (model loading excluded on both sides) and scores BLEU on the
test set. Results go to ``benchmarks/results/vs_opennmt-*.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

import rnnlab  # noqa: E402
from rnnlab.inference import Translator  # noqa: E402
from rnnlab.metrics.bleu import corpus_bleu  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "multi30k"
RECIPE = ROOT / "configs" / "seq2seq" / "multi30k-de-en-attention.yaml"
SPLITS = ("train", "val", "test_2016_flickr")
MAX_PIECES = 50
MAX_OUTPUT = 60
ALPHA = 0.6

ONMT_CONFIG = """\
save_data: {work}/onmt
src_vocab: {work}/onmt/vocab.src
tgt_vocab: {work}/onmt/vocab.tgt
overwrite: true
data:
  corpus_1:
    path_src: {work}/train.de.sp
    path_tgt: {work}/train.en.sp
    transforms: [filtertoolong]
  valid:
    path_src: {work}/val.de.sp
    path_tgt: {work}/val.en.sp
src_seq_length: {max_pieces}
tgt_seq_length: {max_pieces}
encoder_type: brnn
decoder_type: rnn
rnn_type: GRU
word_vec_size: 256
hidden_size: 512
layers: 1
global_attention: mlp
input_feed: 1
dropout: [0.2]
batch_size: 64
batch_type: sents
optim: adam
learning_rate: 0.002
max_grad_norm: 1.0
label_smoothing: 0.1
param_init: 0.1
train_steps: 1000000
valid_steps: 1000000
save_model: {work}/onmt/model
save_checkpoint_steps: 250
report_every: 50
seed: 42
num_workers: 0
"""


def load_translator(run: str, threads: int = 0) -> Translator:
    """The run's translator, decoding in float32 (as OpenNMT-py does on a CPU)."""
    translator = rnnlab.load(run, threads=threads, overrides=["decode.precision=fp32"])
    if not isinstance(translator, Translator):
        raise SystemExit(f"{run} is not a translation run")
    return translator


# -- data -----------------------------------------------------------------------------------------
def prepare(run: str, work: Path) -> dict[str, Any]:
    """Write every split as the run's sentencepiece pieces, and OpenNMT-py's config and vocabularies."""
    task = load_translator(run).task
    work.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        for lang, tokenizer in (("de", task.src_tokenizer), ("en", task.tgt_tokenizer)):
            with (
                gzip.open(DATA / f"{split}.{lang}.gz", "rt", encoding="utf-8") as source,
                open(work / f"{split}.{lang}.sp", "w", encoding="utf-8") as out,
            ):
                n = 0
                for line in source:
                    out.write(" ".join(tokenizer.encode(line.strip())) + "\n")
                    n += 1
            counts[f"{split}.{lang}"] = n
    config = work / "onmt.yaml"
    config.write_text(ONMT_CONFIG.format(work=work, max_pieces=MAX_PIECES), encoding="utf-8")
    (work / "onmt").mkdir(exist_ok=True)
    return counts


def onmt(bin_dir: Path, tool: str, *args: str, threads: int, **kwargs: Any) -> Any:
    """Start one of OpenNMT-py's commands with ``threads`` intra-op threads, output merged."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONWARNINGS"] = "ignore"
    # OpenNMT-py pickles its checkpoints (options included), which torch >= 2.6 refuses by default;
    # the only checkpoints read here are the ones its own trainer wrote into the work folder.
    env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **kwargs}
    return subprocess.Popen([str(bin_dir / tool), *args], env=env, **options)


def build_vocab(bin_dir: Path, work: Path) -> None:
    proc = onmt(
        bin_dir,
        "onmt_build_vocab",
        "-config",
        str(work / "onmt.yaml"),
        "-n_sample",
        "-1",
        threads=1,
    )
    output, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"onmt_build_vocab failed:\n{output[-2000:]}")


# -- counting -------------------------------------------------------------------------------------
def mean_pieces(work: Path, split: str) -> tuple[float, float]:
    """Source and target pieces per sentence, each plus its end-of-sentence token, over the pairs
    both systems train on (neither side over ``MAX_PIECES``)."""
    with (
        open(work / f"{split}.de.sp", encoding="utf-8") as de,
        open(work / f"{split}.en.sp", encoding="utf-8") as en,
    ):
        lengths = [(len(s.split()), len(t.split())) for s, t in zip(de, en, strict=True)]
    kept = [(s, t) for s, t in lengths if s <= MAX_PIECES and t <= MAX_PIECES]
    return statistics.fmean(s for s, _ in kept) + 1, statistics.fmean(t for _, t in kept) + 1


def macs_per_sentence(system: str, *, src: float, tgt: float, vocab: int) -> float:
    """Forward multiply-adds per sentence of the products any implementation must compute.

    Source positions are projected once for attention (OpenNMT-py recomputes that projection at
    every target step; the repetition is not credited). Per target step the energies and the
    context cost ``src`` × width each.
    """
    bi_gru_256 = 2 * 3 * 256 * (256 + 256)  # per source token, both systems
    if system == "rnnlab":  # decoder GRU 256 fed [embedding; context 512], deep output, tied
        per_src = bi_gru_256 + 512 * 256  # keys
        per_tgt = (
            256 * 256  # query
            + 3 * 256 * (256 + 512 + 256)  # GRU input (embedding, context) and recurrent products
            + src * (256 + 512)  # energies, context
            + (256 + 512 + 256) * 256  # deep output [state; context; embedding] → 256
            + 256 * vocab  # vocabulary (tied to the target embeddings)
        )
    else:  # OpenNMT-py: bi-GRU 2×256, input-feeding GRU 512, mlp attention, linear_out, generator
        per_src = bi_gru_256 + 512 * 512  # linear_context
        per_tgt = (
            3 * 512 * (256 + 512 + 512)  # GRU input (embedding, input feed) and recurrent products
            + 512 * 512  # linear_query
            + src * (512 + 512)  # energies, context
            + 1024 * 512  # linear_out [context; state] → 512
            + 512 * vocab  # generator
        )
    return src * per_src + tgt * per_tgt


def model_sizes(run: str, work: Path) -> dict[str, Any]:
    vocab = load_translator(run).task.tgt_vocab
    assert vocab is not None
    rnnlab_vocab = len(vocab)
    with open(work / "onmt" / "vocab.tgt", encoding="utf-8") as handle:
        onmt_vocab = -(-(sum(1 for _ in handle) + 4) // 8) * 8  # 4 specials, padded to 8
    src, tgt = mean_pieces(work, "train")
    rnnlab_macs = macs_per_sentence("rnnlab", src=src, tgt=tgt, vocab=rnnlab_vocab)
    onmt_macs = macs_per_sentence("opennmt", src=src, tgt=tgt, vocab=onmt_vocab)
    return {
        "source_tokens_per_sentence": round(src, 2),
        "target_tokens_per_sentence": round(tgt, 2),
        "rnnlab_target_vocab": rnnlab_vocab,
        "opennmt_target_vocab": onmt_vocab,
        "rnnlab_macs_per_target_token": round(rnnlab_macs / tgt),
        "opennmt_macs_per_target_token": round(onmt_macs / tgt),
        "opennmt / rnnlab work per token": round(onmt_macs / rnnlab_macs, 3),
    }


# -- training ----------------------------------------------------------------------------------
REPORT = re.compile(r"Step (\d+)/\s*\d+;.*?(\d+)/\s*(\d+) tok/s;\s+(\d+) sec")


def train_opennmt(bin_dir: Path, work: Path, minutes: float, threads: int) -> dict[str, Any]:
    """Train until ``minutes`` of wall clock have passed; keep the last checkpoint saved in time."""
    for old in (work / "onmt").glob("model_step_*.pt"):
        old.unlink()
    log_path = work / "onmt" / "train.log"
    with open(log_path, "w", encoding="utf-8") as log:
        proc = onmt(
            bin_dir,
            "onmt_train",
            "-config",
            str(work / "onmt.yaml"),
            threads=threads,
            start_new_session=True,
            stdout=log,
        )
        try:
            proc.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    log_text = log_path.read_text(encoding="utf-8")
    reports = [[int(m[1]), int(m[3]), int(m[4])] for m in REPORT.finditer(log_text)]
    checkpoints = sorted(
        (work / "onmt").glob("model_step_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1])
    )
    if not checkpoints:
        raise SystemExit(f"OpenNMT-py saved no checkpoint within the budget:\n{log_text[-2000:]}")
    last = checkpoints[-1]
    last.replace(work / "onmt" / "budget.pt")
    return {
        "minutes": minutes,
        "threads": threads,
        "checkpoint_step": int(last.stem.rsplit("_", 1)[1]),
        "reports": reports[-3:],
        "median_target_tokens_per_sec": statistics.median(r[1] for r in reports[1:] or reports),
    }


def onmt_window(bin_dir: Path, work: Path, steps: int, threads: int) -> float:
    """Median target tokens/s of OpenNMT-py's reports over a run of ``steps`` (the first skipped)."""
    proc = onmt(
        bin_dir,
        "onmt_train",
        "-config",
        str(work / "onmt.yaml"),
        "-train_steps",
        str(steps),
        "-report_every",
        "25",
        "-save_model",
        str(work / "onmt" / "window"),
        "-save_checkpoint_steps",
        "1000000",
        threads=threads,
    )
    output, _ = proc.communicate()
    rates = [int(m[3]) for m in REPORT.finditer(output)]
    if proc.returncode != 0 or len(rates) < 2:
        raise SystemExit(f"onmt_train failed:\n{output[-2000:]}")
    for leftover in (work / "onmt").glob("window_step_*.pt"):
        leftover.unlink()
    return statistics.median(rates[1:])


def rnnlab_window(steps: int, threads: int, precision: str) -> float:
    """Median target tokens/s of rnnlab's logged windows over ``steps`` of the recipe (first skipped)."""
    with tempfile.TemporaryDirectory() as out:
        overrides = [
            f"train.max_steps={steps}",
            "train.log_every=25",
            "train.valid_every=1000000",
            f"train.num_threads={threads}",
            f"train.precision={precision}",
        ]
        command = [sys.executable, "-m", "rnnlab", "train", "seq2seq", "--config", str(RECIPE)]
        command += ["--out", out, *(arg for o in overrides for arg in ("--set", o))]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"rnnlab train failed:\n{done.stderr[-2000:]}")
        with open(Path(out) / "metrics.jsonl", encoding="utf-8") as handle:
            rates = [r["tokens_per_sec"] for r in map(json.loads, handle) if "tokens_per_sec" in r]
    return statistics.median(rates[1:])


def throughput(
    bin_dir: Path, work: Path, *, steps: int, rounds: int, threads: int
) -> dict[str, Any]:
    systems = {
        "opennmt-py fp32": lambda: onmt_window(bin_dir, work, steps, threads),
        "rnnlab fp32": lambda: rnnlab_window(steps, threads, "fp32"),
        "rnnlab auto": lambda: rnnlab_window(steps, threads, "auto"),
    }
    rates: dict[str, list[float]] = {name: [] for name in systems}
    for _ in range(rounds):
        for name, window in systems.items():
            rates[name].append(window())
    medians = {name: statistics.median(r) for name, r in rates.items()}
    base = medians["opennmt-py fp32"]
    return {
        "steps_per_window": steps,
        "rounds": rounds,
        "target_tokens_per_sec": {name: round(v) for name, v in medians.items()},
        "windows": {name: [round(v) for v in r] for name, r in rates.items()},
        "ratio_to_opennmt": {name: round(v / base, 3) for name, v in medians.items()},
    }


# -- decoding ------------------------------------------------------------------------------------
TOTAL_TIME = re.compile(r"Total translation time \(s\): ([0-9.]+)")


def onmt_translate(
    bin_dir: Path, work: Path, split: str, *, beam: int, batch: int, threads: int
) -> tuple[float, list[str]]:
    """OpenNMT-py's own timing of the translation (model loading excluded) and its output pieces."""
    output = work / "onmt" / f"{split}.beam{beam}.out"
    proc = onmt(
        bin_dir, "onmt_translate", "-model", str(work / "onmt" / "budget.pt"),
        "-src", str(work / f"{split}.de.sp"), "-output", str(output), "-beam_size", str(beam),
        "-batch_size", str(batch), "-batch_type", "sents", "-max_length", str(MAX_OUTPUT),
        "-length_penalty", "wu", "-alpha", str(ALPHA), "-report_time", threads=threads,
    )  # fmt: skip
    log, _ = proc.communicate()
    match = TOTAL_TIME.search(log)
    if proc.returncode != 0 or match is None:
        raise SystemExit(f"onmt_translate failed:\n{log[-2000:]}")
    return float(match[1]), output.read_text(encoding="utf-8").splitlines()


def sources_and_references(translator: Translator, split: str) -> tuple[list[str], list[str]]:
    """A split's source lines, and its targets normalised as ``rnnlab evaluate`` scores them."""
    task = translator.task
    pairs = list(task.read_pairs(str(DATA / split)))
    return [pair.src for pair in pairs], task.encode_pairs(pairs).references


def decode(
    run: str, bin_dir: Path, work: Path, *, threads: int, rounds: int, beam: int
) -> dict[str, Any]:
    translator = load_translator(run, threads)
    detok = translator.task.tgt_tokenizer.decode
    sources = [pair.src for pair in translator.task.read_pairs(str(DATA / "val"))]
    seconds: dict[str, list[float]] = {}
    for _ in range(rounds):
        for width in (1, beam):
            for batch in (30, 64):  # OpenNMT-py's default batch, and the recipe's
                elapsed, _ = onmt_translate(
                    bin_dir, work, "val", beam=width, batch=batch, threads=threads
                )
                seconds.setdefault(f"opennmt-py beam {width} batch {batch}", []).append(elapsed)
            started = time.perf_counter()
            translator.translate(sources, beam=width, length_penalty=ALPHA, max_len=MAX_OUTPUT)
            seconds.setdefault(f"rnnlab beam {width}", []).append(time.perf_counter() - started)
    per_sec = {name: len(sources) / statistics.median(s) for name, s in seconds.items()}
    ratios = {}
    for width in (1, beam):
        best_onmt = max(per_sec[f"opennmt-py beam {width} batch {b}"] for b in (30, 64))
        ratios[f"rnnlab / best opennmt-py, beam {width}"] = round(
            per_sec[f"rnnlab beam {width}"] / best_onmt, 3
        )
    test_sources, test_refs = sources_and_references(translator, "test_2016_flickr")
    bleu = {}
    for width in (1, beam):
        ours = [
            t.text
            for t in translator.translate(
                test_sources, beam=width, length_penalty=ALPHA, max_len=MAX_OUTPUT
            )
        ]
        _, pieces = onmt_translate(
            bin_dir, work, "test_2016_flickr", beam=width, batch=64, threads=threads
        )
        theirs = [detok(line.split()) for line in pieces]
        for name, hyps in (("rnnlab", ours), ("opennmt-py", theirs)):
            bleu[f"{name} beam {width}"] = {
                "cased": round(corpus_bleu(hyps, test_refs), 2),
                "lowercased": round(corpus_bleu(hyps, test_refs, lowercase=True), 2),
            }
    return {
        "sentences": len(sources),
        "rounds": rounds,
        "sentences_per_sec": {name: round(v, 1) for name, v in per_sec.items()},
        "ratios": ratios,
        "test_2016_flickr_bleu": bleu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--run", required=True, help="an rnnlab run of the Multi30k recipe")
    parser.add_argument("--onmt-bin", required=True, type=Path, help="bin/ of OpenNMT-py's venv")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "vs_opennmt")
    parser.add_argument("--threads", type=int, default=1)
    sub = parser.add_subparsers(dest="phase", required=True)
    sub.add_parser("prepare")
    train = sub.add_parser("train")
    train.add_argument("--minutes", type=float, default=15.0)
    speed = sub.add_parser("throughput")
    speed.add_argument("--steps", type=int, default=150)
    speed.add_argument("--rounds", type=int, default=3)
    dec = sub.add_parser("decode")
    dec.add_argument("--rounds", type=int, default=3)
    dec.add_argument("--beam", type=int, default=5)
    args = parser.parse_args()
    work = args.work.resolve()
    if args.phase == "prepare":
        result: dict[str, Any] = {"lines": prepare(args.run, work)}
        build_vocab(args.onmt_bin, work)
        result["sizes"] = model_sizes(args.run, work)
    elif args.phase == "train":
        result = train_opennmt(args.onmt_bin, work, args.minutes, args.threads)
    elif args.phase == "throughput":
        result = throughput(
            args.onmt_bin, work, steps=args.steps, rounds=args.rounds, threads=args.threads
        )
        result["sizes"] = model_sizes(args.run, work)
        medians = result["target_tokens_per_sec"]
        work_ratio = result["sizes"]["opennmt / rnnlab work per token"]
        result["ratio_to_opennmt_per_multiply_add"] = {  # OpenNMT-py does work_ratio× per token
            name: round(v / medians["opennmt-py fp32"] / work_ratio, 3)
            for name, v in medians.items()
            if name.startswith("rnnlab")
        }
    else:
        result = decode(
            args.run,
            args.onmt_bin,
            work,
            threads=args.threads,
            rounds=args.rounds,
            beam=args.beam,
        )
    result = {"phase": args.phase, "threads": args.threads, **result,
              "machine": harness.machine_info()}  # fmt: skip
    text = json.dumps(result, indent=1)
    print(text)
    results = ROOT / "benchmarks" / "results"
    results.mkdir(exist_ok=True)
    (results / f"vs_opennmt-{args.phase}-t{args.threads}.json").write_text(text + "\n")


if __name__ == "__main__":
    main()
