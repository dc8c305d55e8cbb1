"""Defect hunt over combinations of model options (seq2seq, tagger, language model).

A fixed covering selection of option combinations (cell × rnn_impl × direction × layers × attention
× input feeding × tying × vocabulary for seq2seq; cell × direction × layers × CRF × character
encoder × auxiliary columns × dropouts for the tagger; cell × layers × tying × softmax × tokenizer
for the language model) is trained for a few steps on tiny data and checked against references
that do not come from the code path under test:

* ONNX Runtime running the exported folder (``rnnlab export``) gives the same translations, tags
  and perplexities as the PyTorch run;
* the inference API (``rnnlab.load``) agrees with the ``translate``/``tag``/``generate``/
  ``evaluate --json`` commands on the same run;
* ``evaluate``'s perplexity equals exp(mean NLL) of a hand loop over the model's ``step`` with
  ``torch.nn.functional.log_softmax``; tagger accuracy equals a hand count over a hand-parsed
  CoNLL-U file;
* ``train --resume RUN --set train.max_steps=N`` gives the weights of one uninterrupted N-step run;
* combinations the config must refuse exit with status 2 and one ``rnnlab: error:`` line.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import rnnlab
from tests.cli_runner import assert_user_error, call_main, run_cli
from tests.conftest import reverse_pairs, write_tsv

REPO = Path(__file__).resolve().parents[1]
EWT = REPO / "data" / "ud-ewt-sample"
TIMEMACHINE = REPO / "data" / "timemachine"
FRA_ENG = REPO / "data" / "fra-eng"

pytest.importorskip("onnxruntime")

COMMON = {"train.num_threads": 1, "train.device": "cpu", "train.log_every": 1}


def _sets(settings: dict[str, object]) -> list[str]:
    return [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]


def _b(value: bool) -> str:
    return "true" if value else "false"


# ---------------------------------------------------------------------------------------------------
# Data and run cache (trained once per module)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("data")
    lm_lines = (TIMEMACHINE / "train.txt").read_text(encoding="utf-8").splitlines(True)
    valid_lines = (TIMEMACHINE / "valid.txt").read_text(encoding="utf-8").splitlines(True)
    (root / "lm_train.txt").write_text("".join(lm_lines[:150]), encoding="utf-8")
    (root / "lm_valid.txt").write_text("".join(valid_lines[:12]), encoding="utf-8")
    blocks = (EWT / "dev.conllu").read_text(encoding="utf-8").split("\n\n")[:20]
    (root / "dev.conllu").write_text("\n\n".join(blocks).strip() + "\n\n", encoding="utf-8")
    with gzip.open(FRA_ENG / "train.tsv.gz", "rt", encoding="utf-8") as f:
        fra = [next(f) for _ in range(300)]
    (root / "fra.tsv").write_text("".join(fra), encoding="utf-8")
    return {
        "s2s_train": write_tsv(root / "train.tsv", reverse_pairs(120, seed=1, max_len=6)),
        "s2s_test": write_tsv(root / "test.tsv", reverse_pairs(12, seed=3, max_len=6)),
        "fra": root / "fra.tsv",
        "lm_train": root / "lm_train.txt",
        "lm_valid": root / "lm_valid.txt",
        "dev": root / "dev.conllu",
        "root": root,
    }


class Runs:
    """Tiny runs trained on first use, keyed by a name."""

    def __init__(self, root: Path, data: dict[str, Path]) -> None:
        self.root, self.data, self.cache = root, data, {}

    def base(self, task: str) -> dict[str, object]:
        d = self.data
        if task == "seq2seq":
            return {
                "data.train": d["s2s_train"],
                "data.min_freq": 1,
                "model.embed_size": 12,
                "model.hidden_size": 12,
                "train.batch_size": 16,
                "decode.max_len": 8,
            }
        if task == "lm":
            return {
                "data.train": d["lm_train"],
                "model.embed_size": 16,
                "model.hidden_size": 16,
                "train.batch_size": 4,
                "train.bptt": 8,
            }
        return {
            "data.train": EWT / "train.conllu",
            "data.max_examples": 40,
            "model.embed_size": 8,
            "model.hidden_size": 8,
            "model.char_embed_size": 8,
            "model.char_hidden_size": 8,
            "train.batch_size": 8,
        }

    def train(self, name: str, task: str, settings: dict[str, object], steps: int = 3) -> Path:
        if name not in self.cache:
            out = self.root / name
            full = {**self.base(task), **COMMON, **settings, "train.max_steps": steps}
            code = call_main("train", task, "--out", out, *_sets(full))
            assert code == 0, f"{name}: training {settings} failed"
            self.cache[name] = out
        return self.cache[name]

    def export(self, name: str) -> Path:
        key = name + "@onnx"
        if key not in self.cache:
            out = self.root / (name + "-onnx")
            assert call_main("export", self.cache[name], "--out", out) == 0
            self.cache[key] = out
        return self.cache[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, data: dict[str, Path]) -> Runs:
    return Runs(tmp_path_factory.mktemp("runs"), data)


# ---------------------------------------------------------------------------------------------------
# seq2seq: a covering selection of cell × impl × bidirectional × layers × attention × feed × tie

S2S = {
    "gru-fused-uni-1-none": ("gru", "fused", False, 1, "none", True, False),
    "lstm-scratch-bi-2-bahdanau-tie": ("lstm", "scratch", True, 2, "bahdanau", True, True),
    "peephole-uni-2-dot-nofeed": ("peephole_lstm", "scratch", False, 2, "luong_dot", False, False),
    "coupled-bi-1-general-feed-tie": (
        "coupled_lstm",
        "fused",
        True,
        1,
        "luong_general",
        True,
        True,
    ),
    "rnn-scratch-bi-2-none-tie": ("rnn", "scratch", True, 2, "none", True, True),
    "rnn-fused-uni-1-general-nofeed": ("rnn", "fused", False, 1, "luong_general", False, False),
    "gru-scratch-bi-1-general-nofeed": ("gru", "scratch", True, 1, "luong_general", False, False),
    "lstm-fused-uni-1-dot-feed": ("lstm", "fused", False, 1, "luong_dot", True, False),
    "gru-fused-bi-2-bahdanau": ("gru", "fused", True, 2, "bahdanau", True, False),
    "coupled-uni-2-bahdanau": ("coupled_lstm", "scratch", False, 2, "bahdanau", True, False),
}
S2S_EXPORTED = [
    "lstm-scratch-bi-2-bahdanau-tie",
    "peephole-uni-2-dot-nofeed",
    "coupled-bi-1-general-feed-tie",
    "gru-scratch-bi-1-general-nofeed",
]
LINES = ["a b c", "d e", "f", "b a d c e", "", "c c"]


def s2s_run(runs: Runs, name: str) -> Path:
    cell, impl, bi, layers, attention, feed, tie = S2S[name]
    settings = {
        "model.cell": cell,
        "model.rnn_impl": impl,
        "model.bidirectional_encoder": _b(bi),
        "model.num_layers": layers,
        "model.attention": attention,
        "model.input_feed": _b(feed),
        "model.tie_weights": _b(tie),
        "model.dropout": 0.2,
    }
    return runs.train(name, "seq2seq", settings)


@pytest.mark.parametrize("name", S2S_EXPORTED)
def test_seq2seq_export_translates_as_pytorch(runs: Runs, name: str) -> None:
    run = s2s_run(runs, name)
    torch_model, onnx_model = rnnlab.load(run), rnnlab.load(runs.export(name))
    for beam in (1, 3):
        ours = torch_model.translate(LINES, beam=beam, n_best=min(beam, 2))
        theirs = onnx_model.translate(LINES, beam=beam, n_best=min(beam, 2))
        assert [t.text for t in ours] == [t.text for t in theirs]
        assert [[h for h, _ in t.n_best] for t in ours] == [
            [h for h, _ in t.n_best] for t in theirs
        ]
        for a, b in zip(ours, theirs, strict=True):
            assert a.score == pytest.approx(b.score, abs=1e-3)


def _hand_seq2seq_nll(translator: Any, path: Path) -> tuple[float, int]:
    """Σ −log_softmax(step logits)[y] over each reference (with <eos>), one sentence at a time."""
    task, model = translator.task, translator.model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for line in path.read_text(encoding="utf-8").splitlines():
            src_text, tgt_text = line.split("\t")[:2]
            src = torch.tensor([task.encode_source(src_text)])
            tgt_tokens = task.tgt_tokenizer.encode(tgt_text)
            tgt = task.tgt_vocab.encode_text(tgt_tokens) + [task.tgt_vocab.eos_id]
            state = model.start(src, torch.tensor([src.size(1)]))
            token = torch.tensor([task.tgt_vocab.bos_id])
            for y in tgt:
                logits, state = model.step(token, state, normalize=False)
                total -= float(F.log_softmax(logits.double(), dim=-1)[0, y])
                count += 1
                token = torch.tensor([y])
    return total, count


@pytest.mark.parametrize("name", list(S2S))
def test_seq2seq_evaluate_perplexity_matches_hand_loop(
    runs: Runs,
    data: dict[str, Path],
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = s2s_run(runs, name)
    result = run_cli(monkeypatch, capsys, "evaluate", run, "--data", data["s2s_test"], "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    nll, count = _hand_seq2seq_nll(rnnlab.load(run), data["s2s_test"])
    assert report["tokens"] == count
    assert report["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)


@pytest.mark.parametrize("name", list(S2S)[::2])
def test_seq2seq_cli_translate_matches_api(
    runs: Runs, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = s2s_run(runs, name)
    stdin = "".join(f"{line}\n" for line in LINES)
    result = run_cli(
        monkeypatch, capsys, "translate", run, "--beam", "2", "--n-best", "2", stdin=stdin
    )
    assert result.code == 0, result.err
    api = rnnlab.load(run).translate(LINES, beam=2, n_best=2)
    expected = ["\t".join(h for h, _ in t.n_best) if len(t.n_best) > 1 else t.text for t in api]
    assert result.out.split("\n")[:-1] == expected


def test_seq2seq_sentencepiece_export_translates_as_pytorch(
    runs: Runs, data: dict[str, Path]
) -> None:
    settings = {
        "data.train": data["fra"],
        "data.min_freq": 1,
        "data.tokenizer": "sentencepiece",
        "data.spm_vocab_size": 80,
        "data.spm_joint": "true",
        "data.spm_model_type": "bpe",
        "model.cell": "gru",
        "model.rnn_impl": "scratch",
        "model.attention": "bahdanau",
        "model.bidirectional_encoder": "true",
    }
    runs.train("spm", "seq2seq", settings, steps=2)
    lines = ["Go now.", "I'm calm!", "He is a very tall man, isn't he?"]
    ours = rnnlab.load(runs.cache["spm"]).translate(lines, beam=2)
    theirs = rnnlab.load(runs.export("spm")).translate(lines, beam=2)
    assert [t.text for t in ours] == [t.text for t in theirs]


# ---------------------------------------------------------------------------------------------------
# language models: cell × impl × layers × tie × softmax × tokenizer × dropout kind

LM = {
    "gru-fused-1-tie-full-char": dict(
        cell="gru", impl="fused", L=1, tie=True, sm="full", tok="char"
    ),
    "peephole-1-adaptive-char": dict(
        cell="peephole_lstm", impl="fused", L=1, tie=False, sm="adaptive", tok="char", cut="[10]"
    ),
    "coupled-2-tie-full-word": dict(
        cell="coupled_lstm", impl="scratch", L=2, tie=True, sm="full", tok="word", vd=True
    ),
    "rnn-2-full-char-vd": dict(
        cell="rnn", impl="fused", L=2, tie=False, sm="full", tok="char", vd=True
    ),
    "rnn-scratch-1-adaptive-word": dict(
        cell="rnn", impl="scratch", L=1, tie=False, sm="adaptive", tok="word", cut="[30, 100]"
    ),
    "lstm-2-tie-full-word-random": dict(
        cell="lstm", impl="fused", L=2, tie=True, sm="full", tok="word", batching="random"
    ),
}
LM_EXPORTED = ["peephole-1-adaptive-char", "coupled-2-tie-full-word"]


def lm_run(runs: Runs, name: str) -> Path:
    c = LM[name]
    settings: dict[str, object] = {
        "model.cell": c["cell"],
        "model.rnn_impl": c["impl"],
        "model.num_layers": c["L"],
        "model.tie_weights": _b(c["tie"]),
        "model.softmax": c["sm"],
        "data.tokenizer": c["tok"],
        "model.variational_dropout": _b(c.get("vd", False)),
        "model.dropout": 0.2,
        "data.batching": c.get("batching", "sequential"),
    }
    if "cut" in c:
        settings["model.cutoffs"] = c["cut"]
    return runs.train(name, "lm", settings)


def _evaluate_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: object
) -> dict[str, Any]:
    result = run_cli(monkeypatch, capsys, "evaluate", *args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


@pytest.mark.parametrize("name", list(LM))
def test_lm_evaluate_perplexity_matches_hand_step_loop(
    runs: Runs,
    data: dict[str, Path],
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = lm_run(runs, name)
    report = _evaluate_json(monkeypatch, capsys, run, "--data", data["lm_valid"])
    lm = rnnlab.load(run)
    model, task = lm.model.eval(), lm.task
    ids = task.read_ids(str(data["lm_valid"]))
    total = 0.0
    with torch.no_grad():
        state = model.start(1)
        for t in range(ids.numel() - 1):
            features, state = model(ids[t : t + 1].view(1, 1), state)
            if model.adaptive is None:
                log_probs = F.log_softmax(model.project(features[0, 0]).double(), dim=-1)
            else:  # no logits: the adaptive softmax's own distribution, checked to sum to 1
                log_probs = model.log_probs(features[0, 0]).double()
                assert float(log_probs.exp().sum()) == pytest.approx(1.0, abs=1e-5)
            total -= float(log_probs[ids[t + 1]])
    count = ids.numel() - 1
    assert report["tokens"] == count
    assert report["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-4)


@pytest.mark.parametrize("name", LM_EXPORTED)
def test_lm_export_scores_and_generates_as_pytorch(
    runs: Runs,
    data: dict[str, Path],
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = lm_run(runs, name)
    exported = runs.export(name)
    ours = _evaluate_json(monkeypatch, capsys, run, "--data", data["lm_valid"])
    theirs = _evaluate_json(monkeypatch, capsys, exported, "--data", data["lm_valid"])
    assert ours["tokens"] == theirs["tokens"]
    assert ours["perplexity"] == pytest.approx(theirs["perplexity"], rel=1e-4)
    a, b = rnnlab.load(run), rnnlab.load(exported)
    assert a.generate("the time", length=15, temperature=0) == b.generate(
        "the time", length=15, temperature=0
    )


@pytest.mark.parametrize("name", list(LM)[1::2])
def test_lm_cli_generate_matches_api(
    runs: Runs, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = lm_run(runs, name)
    args = ("--prefix", "the time", "--length", "12", "--temperature", "0.8", "--top-k", "5")
    result = run_cli(monkeypatch, capsys, "generate", run, *args, "--seed", "3")
    assert result.code == 0, result.err
    api = rnnlab.load(run).generate("the time", length=12, temperature=0.8, top_k=5, seed=3)
    assert result.out.rstrip("\n") == api


# ---------------------------------------------------------------------------------------------------
# taggers: cell × impl × direction × layers × CRF × char encoder × aux columns × dropouts

TAGGERS = {
    "lstm-bi-1-crf-charrnn-xpos-vd": dict(
        cell="lstm", impl="fused", bi=True, L=1, crf=True, ch="rnn", aux="xpos", wd=0.1, vd=True
    ),
    "gru-uni-2-cnn": dict(cell="gru", impl="scratch", bi=False, L=2, crf=False, ch="cnn"),
    "peephole-bi-2-crf-nochar-2aux": dict(
        cell="peephole_lstm",
        impl="scratch",
        bi=True,
        L=2,
        crf=True,
        ch="none",
        aux="[xpos, deprel]",
        wd=0.3,
    ),
    "coupled-uni-1-charrnn-feats-vd": dict(
        cell="coupled_lstm", impl="fused", bi=False, L=1, crf=False, ch="rnn", aux="feats", vd=True
    ),
    "rnn-bi-2-charrnn-deprel-lm": dict(
        cell="rnn", impl="fused", bi=True, L=2, crf=False, ch="rnn", aux="deprel", wd=0.2, lm=0.5
    ),
    "gru-bi-1-crf-cnn-lm-freq": dict(
        cell="gru", impl="fused", bi=True, L=1, crf=True, ch="cnn", lm=0.5, freq=0.5
    ),
}
TAGGERS_EXPORTED = ["lstm-bi-1-crf-charrnn-xpos-vd", "rnn-bi-2-charrnn-deprel-lm"]


def tagger_run(runs: Runs, name: str) -> Path:
    c = TAGGERS[name]
    settings = {
        "model.cell": c["cell"],
        "model.rnn_impl": c["impl"],
        "model.bidirectional": _b(c["bi"]),
        "model.num_layers": c["L"],
        "model.crf": _b(c["crf"]),
        "model.char_encoder": c["ch"],
        "data.aux_tag_column": c.get("aux", ""),
        "model.word_dropout": c.get("wd", 0.0),
        "model.variational_dropout": _b(c.get("vd", False)),
        "model.lm_weight": c.get("lm", 0.0),
        "model.lm_vocab_size": 40,
        "model.freq_bin_weight": c.get("freq", 0.0),
    }
    return runs.train(name, "tagger", settings)


def _read_conllu(path: Path) -> tuple[list[list[str]], list[list[str]]]:
    """Words and UPOS tags per sentence, skipping comments, ranges and empty nodes."""
    words, tags = [], []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        ws, ts = [], []
        for line in block.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            cols = line.split("\t")
            if "-" in cols[0] or "." in cols[0]:
                continue
            ws.append(cols[1])
            ts.append(cols[3])
        if ws:
            words.append(ws)
            tags.append(ts)
    return words, tags


@pytest.mark.parametrize("name", list(TAGGERS))
def test_tagger_evaluate_accuracy_matches_hand_count_and_cli_tag(
    runs: Runs,
    data: dict[str, Path],
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    run = tagger_run(runs, name)
    report = _evaluate_json(monkeypatch, capsys, run, "--data", data["dev"])
    words, gold = _read_conllu(data["dev"])
    tagger = rnnlab.load(run)
    predicted = [s.tags for s in tagger.tag(words)]
    right = sum(
        g == p for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True)
    )
    total = sum(len(g) for g in gold)
    assert report["accuracy"] == pytest.approx(right / total, abs=1e-12)
    stdin = "".join(" ".join(ws) + "\n" for ws in words[:6])
    result = run_cli(monkeypatch, capsys, "tag", run, stdin=stdin)
    assert result.code == 0, result.err
    expected = [
        " ".join(f"{w}/{t}" for w, t in zip(ws, ts, strict=True))
        for ws, ts in zip(words, predicted, strict=True)
    ]
    assert result.out.splitlines() == expected[:6]


@pytest.mark.parametrize("name", TAGGERS_EXPORTED)
def test_tagger_export_tags_as_pytorch(runs: Runs, data: dict[str, Path], name: str) -> None:
    run = tagger_run(runs, name)
    words, _ = _read_conllu(data["dev"])
    sentences = [*words, ["Zyzzyva", "quuxes", "!"], ["I"]]
    ours = [s.tags for s in rnnlab.load(run).tag(sentences)]
    theirs = [s.tags for s in rnnlab.load(runs.export(name)).tag(sentences)]
    assert ours == theirs


def test_tagger_ensemble_of_crf_and_softmax_members_is_exact_product_of_experts(
    runs: Runs,
) -> None:
    """Brute force over every tag sequence of a 3-word sentence: argmax_y Σ_m log p_m(y | x)."""
    from rnnlab.inference.ensemble import load_ensemble

    paths = [
        tagger_run(runs, "lstm-bi-1-crf-charrnn-xpos-vd"),
        tagger_run(runs, "gru-uni-2-cnn"),
    ]
    sentence = ["the", "dog", "runs"]
    ensemble = load_ensemble(paths)
    members = [rnnlab.load(p) for p in paths]
    tags = list(members[0].task.tagset.itos)
    k = len(tags)
    scores = torch.zeros((k,) * len(sentence), dtype=torch.float64)
    for member in members:
        emissions, _ = member.task.emissions(member.model, [sentence], torch.device("cpu"))
        order = [member.task.tagset.itos.index(t) for t in tags]
        log_p = F.log_softmax(emissions[0].double()[:, order], dim=-1)  # (T, K)
        crf = member.model.crf
        grid = torch.zeros_like(scores)
        for t in range(len(sentence)):
            shape = [1] * len(sentence)
            shape[t] = k
            grid = grid + (emissions[0].double()[t, order] if crf else log_p[t]).view(shape)
        if crf is not None:
            trans = crf.transitions.double()[order][:, order]
            grid = grid + crf.start_transitions.double()[order].view(k, 1, 1)
            grid = grid + crf.end_transitions.double()[order].view(1, 1, k)
            grid = grid + trans.view(k, k, 1) + trans.view(1, k, k)
            grid = grid - torch.logsumexp(grid.flatten(), 0)
        scores += grid
    best = torch.unravel_index(scores.argmax(), scores.shape)
    assert ensemble.tag([sentence])[0].tags == [tags[int(i)] for i in best]


# ---------------------------------------------------------------------------------------------------
# --resume continues a run as one uninterrupted run

RESUME = {
    "s2s-lstm-bi-2-bahdanau-dropout": (
        "seq2seq",
        {
            "model.cell": "lstm",
            "model.attention": "bahdanau",
            "model.bidirectional_encoder": "true",
            "model.num_layers": 2,
            "model.dropout": 0.3,
            "model.embed_dropout": 0.2,
        },
    ),
    "s2s-gru-luong-nofeed-scheduled": (
        "seq2seq",
        {
            "model.attention": "luong_general",
            "model.input_feed": "false",
            "train.scheduled_sampling": "linear",
            "train.ss_k": 4,
        },
    ),
    "lm-lstm-2-variational-ema": (
        "lm",
        {
            "model.cell": "lstm",
            "model.num_layers": 2,
            "model.dropout": 0.3,
            "model.variational_dropout": "true",
            "train.ema_decay": 0.9,
        },
    ),
    "tagger-crf-worddropout-adversarial": (
        "tagger",
        {
            "model.crf": "true",
            "model.word_dropout": 0.2,
            "model.variational_dropout": "true",
            "model.adversarial_epsilon": 0.1,
        },
    ),
}


@pytest.mark.parametrize("name", list(RESUME))
def test_resume_gives_the_weights_of_an_uninterrupted_run(
    runs: Runs, tmp_path: Path, name: str
) -> None:
    task, settings = RESUME[name]
    full = {**runs.base(task), **COMMON, **settings}
    assert (
        call_main(
            "train", task, "--out", tmp_path / "a", *_sets(full), "--set", "train.max_steps=5"
        )
        == 0
    )
    assert (
        call_main(
            "train", task, "--out", tmp_path / "b", *_sets(full), "--set", "train.max_steps=2"
        )
        == 0
    )
    assert call_main("train", "--resume", tmp_path / "b", "--set", "train.max_steps=5") == 0
    a = load_file(tmp_path / "a" / "last" / "model.safetensors")
    b = load_file(tmp_path / "b" / "last" / "model.safetensors")
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


# ---------------------------------------------------------------------------------------------------
# refusals: one line, exit status 2

REFUSED = {
    "lm-tie-adaptive": (
        "lm",
        {"model.tie_weights": "true", "model.softmax": "adaptive", "model.cutoffs": "[10]"},
        "tie_weights",
    ),
    "lm-tie-one-hot": ("lm", {"model.tie_weights": "true", "model.one_hot": "true"}, "one_hot"),
    "lm-cutoffs-beyond-vocab": (
        "lm",
        {"model.softmax": "adaptive", "model.cutoffs": "[5000]"},
        "cutoffs",
    ),
    "s2s-luong-dot-bidirectional": (
        "seq2seq",
        {"model.attention": "luong_dot", "model.bidirectional_encoder": "true"},
        "luong_dot",
    ),
    "s2s-tie-sizes": (
        "seq2seq",
        {"model.tie_weights": "true", "model.embed_size": 8},
        "tie_weights",
    ),
    "tagger-even-kernel": (
        "tagger",
        {"model.char_encoder": "cnn", "model.char_kernel_size": 4},
        "char_kernel_size",
    ),
    "tagger-aux-is-tag-column": ("tagger", {"data.aux_tag_column": "upos"}, "aux_tag_column"),
    "tagger-crf-label-smoothing": (
        "tagger",
        {"model.crf": "true", "train.label_smoothing": 0.1},
        "label_smoothing",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_combinations_are_one_line_errors(
    runs: Runs,
    tmp_path: Path,
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    task, settings, fragment = REFUSED[name]
    full = {**runs.base(task), **COMMON, **settings, "train.max_steps": 1}
    result = run_cli(monkeypatch, capsys, "train", task, "--out", tmp_path / "r", *_sets(full))
    assert_user_error(result, fragment)
