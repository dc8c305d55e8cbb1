"""Tagger ensembles (``rnnlab tag`` / ``rnnlab evaluate`` with several runs, ``load_ensemble``)
checked against independent references:

- a run against itself: an ensemble of one run, of the same run twice, and of a run with a copy of
  it whose tag set is listed in another order (its output rows, biases and CRF scores permuted to
  match, so it is the same model) must tag exactly as the run alone;
- brute force over every tag path of short sentences: the ensemble's tags maximise
  Σ_m log p_m(y | x), each member's log-probability computed from its own emissions and CRF over its
  own tag ids, matched to the ensemble's tags by name (members whose tag sets are listed in other
  orders, with other cells, directions, depths, character encoders and vocabularies);
- the evaluation figures (accuracy, OOV accuracy against the first member's training words, per-tag
  precision, recall and F1) recounted by hand from the tags ``rnnlab tag`` prints and the gold
  CoNLL-U file;
- invariances: the order of the members, the batch size, relative and absolute paths;
- user errors (another tag column, another tag set, a missing or half-written run): exit status 2,
  one ``rnnlab: error:`` line, no traceback.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rnnlab.inference import Tagger, load_as
from rnnlab.inference.ensemble import load_ensemble
from tests.cli_runner import assert_user_error, run_cli
from tests.tiny_runs import EWT_SAMPLE, train_tagger

DEV = EWT_SAMPLE / "dev.conllu"
TRAIN = EWT_SAMPLE / "train.conllu"

SHORT = [
    ["Go", "home", "."],
    ["I", "lost", "it"],
    ["Thanks", "!"],
    ["Nice"],
    ["The", "zyxwv", "ran"],
]


# -- data and runs ----------------------------------------------------------------------------


def _conllu_blocks(path: Path) -> list[list[list[str]]]:
    """Sentences of a CoNLL-U file as lists of token rows (10 columns), multiword and empty nodes
    left out."""
    sentences: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if current:
                sentences.append(current)
            current = []
            continue
        if line.startswith("#"):
            continue
        cols = line.split("\t")
        if "-" in cols[0] or "." in cols[0]:
            continue
        current.append(cols)
    if current:
        sentences.append(current)
    return sentences


def _write_conllu(path: Path, sentences: list[list[list[str]]]) -> Path:
    lines = []
    for rows in sentences:
        lines.extend("\t".join(r) for r in rows)
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def train_sentences() -> list[list[list[str]]]:
    return _conllu_blocks(TRAIN)[:200]


@pytest.fixture(scope="module")
def crf_run(tmp_path_factory) -> Path:
    return train_tagger(tmp_path_factory.mktemp("ens_crf"), seed=7, **{"model.crf": "true"})


@pytest.fixture(scope="module")
def other_order_run(tmp_path_factory, train_sentences) -> Path:
    """Another architecture trained on the same 200 sentences plus repeats of those holding the
    rarer tags: the same tag set, listed in another frequency order."""
    root = tmp_path_factory.mktemp("ens_other")
    counts = Counter(r[3] for s in train_sentences for r in s)
    rare = {tag for tag, _ in counts.most_common()[-5:]}
    extra = [s for s in train_sentences if any(r[3] in rare for r in s)] * 6
    data = _write_conllu(root / "train.conllu", train_sentences + extra)
    run = train_tagger(
        root,
        seed=3,
        **{
            "data.train": data,
            "data.max_examples": 0,
            "data.lowercase": "true",
            "data.min_freq": 1,
            "model.crf": "true",
            "model.cell": "gru",
            "model.bidirectional": "false",
            "model.num_layers": 2,
            "model.char_encoder": "cnn",
            "model.hidden_size": 24,
        },
    )
    ours = _tags(run)
    assert sorted(ours) == sorted(set(counts)), "the same tag set"
    assert ours != sorted(counts, key=lambda t: (-counts[t], t)), "listed in another order"
    return run


@pytest.fixture(scope="module")
def xpos_run(tmp_path_factory) -> Path:
    return train_tagger(
        tmp_path_factory.mktemp("ens_xpos"), **{"data.tag_column": "xpos", "train.max_steps": 5}
    )


@pytest.fixture(scope="module")
def fewer_tags_run(tmp_path_factory, train_sentences) -> Path:
    root = tmp_path_factory.mktemp("ens_fewer")
    kept = [s for s in train_sentences if not any(r[3] == "INTJ" for r in s)]
    data = _write_conllu(root / "train.conllu", kept)
    return train_tagger(root, **{"data.train": data, "data.max_examples": 0, "train.max_steps": 5})


def _tags(run: Path) -> list[str]:
    return json.loads((run / "tags.json").read_text(encoding="utf-8"))["tags"]


def _permuted_copy(run: Path, dst: Path) -> Path:
    """``run`` with its tag list reversed and its weights permuted to match: the same model."""
    shutil.copytree(run, dst)
    tags = _tags(run)
    new = list(reversed(tags))
    index = torch.tensor([tags.index(t) for t in new])  # new id → old id
    (dst / "tags.json").write_text(json.dumps({"tags": new}), encoding="utf-8")
    for weights in dst.rglob("model.safetensors"):
        with safe_open(str(weights), "pt") as f:
            metadata = dict(f.metadata())
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        for name in (
            "output.weight",
            "output.bias",
            "crf.start_transitions",
            "crf.end_transitions",
        ):
            if name in state:
                state[name] = state[name][index].contiguous()
        if "crf.transitions" in state:
            state["crf.transitions"] = state["crf.transitions"][index][:, index].contiguous()
        meta = json.loads(metadata["rnnlab"])
        meta["tags"] = hashlib.sha1("\n".join(new).encode("utf-8")).hexdigest()[:16]
        metadata["rnnlab"] = json.dumps(meta)
        save_file(state, str(weights), metadata=metadata)
    return dst


@pytest.fixture(scope="module")
def permuted_soft(tagger_run, tmp_path_factory) -> Path:
    return _permuted_copy(tagger_run, tmp_path_factory.mktemp("ens_perm_soft") / "pos")


@pytest.fixture(scope="module")
def permuted_crf(crf_run, tmp_path_factory) -> Path:
    return _permuted_copy(crf_run, tmp_path_factory.mktemp("ens_perm_crf") / "pos")


def _dev_words() -> list[list[str]]:
    return [[r[1] for r in s] for s in _conllu_blocks(DEV)]


def _single_tags(run: Path, sentences: list[list[str]]) -> list[list[str]]:
    tagger = load_as(Tagger, run, command="tag", device="cpu")
    return [t.tags for t in tagger.tag(sentences)]


def _ensemble_tags(runs: list[Path], sentences: list[list[str]]) -> list[list[str]]:
    return [t.tags for t in load_ensemble(runs, device="cpu").tag(sentences)]


# -- a run against itself ---------------------------------------------------------------------


@pytest.mark.parametrize("which", ["softmax", "crf"])
def test_an_ensemble_of_one_run_tags_as_the_run(which, tagger_run, crf_run):
    run = tagger_run if which == "softmax" else crf_run
    words = _dev_words()
    assert _ensemble_tags([run], words) == _single_tags(run, words)


@pytest.mark.parametrize("which", ["softmax", "crf"])
def test_a_permuted_copy_is_the_same_model(which, tagger_run, crf_run, permuted_soft, permuted_crf):
    """The reference the next test leans on: the copy alone tags as the original."""
    run, copy = (tagger_run, permuted_soft) if which == "softmax" else (crf_run, permuted_crf)
    assert _tags(copy) != _tags(run)
    words = _dev_words()
    assert _single_tags(copy, words) == _single_tags(run, words)


@pytest.mark.parametrize("which", ["softmax", "crf"])
@pytest.mark.parametrize("copy_first", [False, True])
def test_a_run_with_its_permuted_copy_tags_as_the_run(
    which, copy_first, tagger_run, crf_run, permuted_soft, permuted_crf
):
    run, copy = (tagger_run, permuted_soft) if which == "softmax" else (crf_run, permuted_crf)
    words = _dev_words()
    runs = [copy, run] if copy_first else [run, copy]
    assert _ensemble_tags(runs, words) == _single_tags(run, words)


def test_a_crf_run_with_a_softmax_copy_of_its_emissions_is_still_the_product(crf_run, tmp_path):
    """A CRF run and the same weights without the CRF (a softmax tagger): the ensemble's tags are
    argmax of log p_crf + log p_softmax, by brute force."""
    soft = tmp_path / "soft"
    shutil.copytree(crf_run, soft)
    config = (soft / "config.yaml").read_text(encoding="utf-8")
    assert "crf: true" in config
    (soft / "config.yaml").write_text(config.replace("crf: true", "crf: false"), encoding="utf-8")
    for weights in soft.rglob("model.safetensors"):
        with safe_open(str(weights), "pt") as f:
            metadata = dict(f.metadata())
            state = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("crf.")}  # noqa: SIM118
        save_file(state, str(weights), metadata=metadata)
    _check_brute_force([soft, crf_run])
    _check_brute_force([crf_run, soft])


# -- brute force ------------------------------------------------------------------------------


@torch.no_grad()
def _member_log_p(
    member: Tagger, sentence: list[str], paths_by_name: list[list[str]]
) -> torch.Tensor:
    """log p(y | x) under one member for every path (tag names), from its own emissions and CRF."""
    stoi = {t: i for i, t in enumerate(member.task.tagset.itos)}
    paths = torch.tensor([[stoi[t] for t in p] for p in paths_by_name])
    emissions, _ = member.task.emissions(member.model, [sentence], member.device)
    e = emissions[0].double()  # (n, K)
    n = len(sentence)
    crf = member.model.crf
    if crf is None:
        logp = e.log_softmax(1)
        return logp[torch.arange(n), paths].sum(1)
    trans = crf.transitions.double()
    start = crf.start_transitions.double()
    end = crf.end_transitions.double()
    score = start[paths[:, 0]] + end[paths[:, -1]] + e[torch.arange(n), paths].sum(1)
    if n > 1:
        score = score + trans[paths[:, :-1], paths[:, 1:]].sum(1)
    every = torch.tensor(list(itertools.product(range(len(stoi)), repeat=n)))
    total = start[every[:, 0]] + end[every[:, -1]] + e[torch.arange(n), every].sum(1)
    if n > 1:
        total = total + trans[every[:, :-1], every[:, 1:]].sum(1)
    return score - torch.logsumexp(total, 0)


def _check_brute_force(runs: list[Path]) -> None:
    ensemble = load_ensemble(runs, device="cpu")
    names = list(ensemble.members[0].task.tagset.itos)
    got = [t.tags for t in ensemble.tag(SHORT)]
    for sentence, tags in zip(SHORT, got, strict=True):
        paths = [list(p) for p in itertools.product(names, repeat=len(sentence))]
        total = sum(_member_log_p(m, sentence, paths) for m in ensemble.members)
        best = int(total.argmax())
        assert total[best] - total[paths.index(tags)] < 1e-6, (sentence, tags, paths[best])


def test_members_with_tag_sets_in_other_orders_by_brute_force(tagger_run, other_order_run):
    assert _tags(tagger_run) != _tags(other_order_run)
    _check_brute_force([tagger_run, other_order_run])
    _check_brute_force([other_order_run, tagger_run])


def test_three_members_of_mixed_kinds_by_brute_force(tagger_run, crf_run, other_order_run):
    _check_brute_force([crf_run, other_order_run, tagger_run])


def test_the_order_of_the_members_does_not_change_the_tags(tagger_run, crf_run, other_order_run):
    words = _dev_words()
    first = _ensemble_tags([tagger_run, crf_run, other_order_run], words)
    assert first == _ensemble_tags([other_order_run, tagger_run, crf_run], words)
    assert first == _ensemble_tags([crf_run, other_order_run, tagger_run], words)


# -- the command line -------------------------------------------------------------------------


def _dev_text() -> str:
    return "".join(" ".join(words) + "\n" for words in _dev_words())


def _tag_cli(monkeypatch, capsys, *args: object, stdin: str | None = None) -> str:
    result = run_cli(
        monkeypatch, capsys, "tag", *args, stdin=_dev_text() if stdin is None else stdin
    )
    assert result.code == 0, result.err
    return result.out


def test_tag_output_does_not_depend_on_the_batch_size(monkeypatch, capsys, tagger_run, crf_run):
    default = _tag_cli(monkeypatch, capsys, tagger_run, crf_run)
    assert default.count("\n") == len(_dev_words())
    assert _tag_cli(monkeypatch, capsys, tagger_run, crf_run, "--batch-size", 1) == default
    assert _tag_cli(monkeypatch, capsys, tagger_run, crf_run, "--batch-size", 7) == default
    tokens = _tag_cli(monkeypatch, capsys, tagger_run, crf_run, "--set", "decode.batch_tokens=20")
    assert tokens == default


def test_tag_of_a_run_given_twice_and_by_a_relative_path(monkeypatch, capsys, crf_run):
    single = _tag_cli(monkeypatch, capsys, crf_run)
    monkeypatch.chdir(crf_run.parent)
    assert _tag_cli(monkeypatch, capsys, crf_run, crf_run.name) == single
    assert _tag_cli(monkeypatch, capsys, f"./{crf_run.name}", crf_run.name, crf_run) == single


def test_tag_conllu_fills_the_column_with_the_text_tags(
    monkeypatch, capsys, tagger_run, other_order_run
):
    text = _tag_cli(monkeypatch, capsys, tagger_run, other_order_run)
    expected = [[pair.rsplit("/", 1)[1] for pair in line.split()] for line in text.splitlines()]
    conllu = DEV.read_text(encoding="utf-8")
    out = _tag_cli(
        monkeypatch, capsys, tagger_run, other_order_run, "--format", "conllu", stdin=conllu
    )
    got = [
        [
            line.split("\t")[3]
            for line in block.splitlines()
            if line and not line.startswith("#") and line.split("\t")[0].isdigit()
        ]
        for block in out.split("\n\n")
        if block.strip()
    ]
    assert got == expected


def test_evaluate_json_recounts_from_the_tags_printed(
    monkeypatch, capsys, tagger_run, other_order_run, crf_run
):
    runs = [other_order_run, tagger_run, crf_run]
    text = _tag_cli(monkeypatch, capsys, *runs)
    predicted = [[pair.rsplit("/", 1)[1] for pair in line.split()] for line in text.splitlines()]
    gold_rows = _conllu_blocks(DEV)
    gold = [[r[3] for r in s] for s in gold_rows]
    words = [[r[1] for r in s] for s in gold_rows]
    seen = {w.lower() for w in json.loads((other_order_run / "train_words.json").read_text())}
    result = run_cli(monkeypatch, capsys, "evaluate", *runs, "--data", DEV, "--json", "--per-tag")
    assert result.code == 0, result.err
    got = json.loads(result.out)

    pairs = [
        (g, p, w.lower() not in seen)
        for gs, ps, ws in zip(gold, predicted, words, strict=True)
        for g, p, w in zip(gs, ps, ws, strict=True)
    ]
    assert got["tokens"] == len(pairs)
    assert got["sentences"] == len(gold)
    assert got["accuracy"] == pytest.approx(sum(g == p for g, p, _ in pairs) / len(pairs))
    oov = [(g, p) for g, p, unseen in pairs if unseen]
    assert got["oov_tokens"] == len(oov)
    assert got["oov_accuracy"] == pytest.approx(sum(g == p for g, p in oov) / len(oov))
    for tag, row in got["per_tag"].items():
        tp = sum(g == p == tag for g, p, _ in pairs)
        npred = sum(p == tag for _, p, _ in pairs)
        ngold = sum(g == tag for g, _, _ in pairs)
        assert row["support"] == ngold
        assert row["precision"] == pytest.approx(tp / npred if npred else 0.0)
        assert row["recall"] == pytest.approx(tp / ngold if ngold else 0.0)
    assert set(got["per_tag"]) == {g for g, _, _ in pairs} | {p for _, p, _ in pairs}


def test_evaluate_of_a_run_with_its_permuted_copy_equals_the_run(
    monkeypatch, capsys, crf_run, permuted_crf
):
    def evaluate(*runs: Path) -> dict:
        result = run_cli(
            monkeypatch, capsys, "evaluate", *runs, "--data", DEV, "--json", "--per-tag"
        )
        assert result.code == 0, result.err
        return json.loads(result.out)

    single = evaluate(crf_run)
    assert evaluate(permuted_crf, crf_run) == single
    assert evaluate(crf_run, permuted_crf, crf_run) == single


# -- user errors ------------------------------------------------------------------------------


def _assert_clean_error(result, *fragments: str) -> None:
    assert "Traceback" not in result.err
    assert_user_error(result, *fragments)


@pytest.mark.parametrize("command", ["tag", "evaluate"])
def test_another_tag_column_is_a_one_line_error(monkeypatch, capsys, command, tagger_run, xpos_run):
    extra = ["--data", DEV] if command == "evaluate" else []
    result = run_cli(monkeypatch, capsys, command, tagger_run, xpos_run, *extra, stdin="a b\n")
    _assert_clean_error(result, str(xpos_run))
    assert result.out == ""


@pytest.mark.parametrize("fewer_first", [False, True])
def test_another_tag_set_is_a_one_line_error(
    monkeypatch, capsys, fewer_first, tagger_run, fewer_tags_run
):
    assert set(_tags(fewer_tags_run)) < set(_tags(tagger_run))
    runs = [fewer_tags_run, tagger_run] if fewer_first else [tagger_run, fewer_tags_run]
    result = run_cli(monkeypatch, capsys, "evaluate", *runs, "--data", DEV)
    _assert_clean_error(result, str(runs[1]), "tag set")


def test_a_missing_run_is_a_one_line_error(monkeypatch, capsys, tagger_run, tmp_path):
    missing = tmp_path / "nope"
    result = run_cli(monkeypatch, capsys, "tag", tagger_run, missing, stdin="Go home .\n")
    _assert_clean_error(result, str(missing))
    assert result.out == ""


@pytest.mark.parametrize("damage", ["no weights", "no tag set", "torn weights"])
def test_a_half_written_run_is_a_one_line_error(monkeypatch, capsys, damage, crf_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(crf_run, broken)
    if damage == "no weights":
        for name in ("best", "last"):
            shutil.rmtree(broken / name, ignore_errors=True)
    elif damage == "no tag set":
        (broken / "tags.json").unlink()
    else:
        for weights in broken.rglob("model.safetensors"):
            data = weights.read_bytes()
            weights.write_bytes(data[: len(data) // 2])
    result = run_cli(monkeypatch, capsys, "evaluate", crf_run, broken, "--data", DEV)
    _assert_clean_error(result, str(broken))


def test_a_run_whose_trainer_holds_the_lock_still_tags(monkeypatch, capsys, crf_run, tmp_path):
    locked = tmp_path / "locked"
    shutil.copytree(crf_run, locked)
    (locked / ".lock").write_text(f"{os.getpid()} localhost\n", encoding="utf-8")
    assert _tag_cli(monkeypatch, capsys, crf_run, locked) == _tag_cli(monkeypatch, capsys, crf_run)


def test_an_xpos_ensemble_fills_the_xpos_column(monkeypatch, capsys, xpos_run):
    conllu = DEV.read_text(encoding="utf-8")
    single = _tag_cli(monkeypatch, capsys, xpos_run, "--format", "conllu", stdin=conllu)
    pair = _tag_cli(monkeypatch, capsys, xpos_run, xpos_run, "--format", "conllu", stdin=conllu)
    assert pair == single
    tags = set(_tags(xpos_run))
    rows = [r.split("\t") for r in pair.splitlines() if r and not r.startswith("#")]
    rows = [r for r in rows if r[0].isdigit()]
    assert rows and all(r[4] in tags for r in rows)
    gold = [r for s in _conllu_blocks(DEV) for r in s]
    assert [r[3] for r in rows] == [r[3] for r in gold]  # UPOS kept as it was


def test_load_ensemble_of_one_path_string(crf_run):
    """``rnnlab.load`` takes one path; ``load_ensemble`` given one path (a string or a ``Path``)
    loads that run alone, not runs named after the string's characters."""
    for path in (str(crf_run), crf_run):
        ensemble = load_ensemble(path, device="cpu")
        assert len(ensemble.members) == 1


def test_load_ensemble_of_no_runs_is_a_user_error():
    from rnnlab.errors import RnnlabError

    with pytest.raises(RnnlabError, match="at least one"):
        load_ensemble([], device="cpu")
