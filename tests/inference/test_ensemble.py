"""Taggers tagging as one ensemble: the product of experts against brute force, and user errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from rnnlab.cli import EXIT_USER_ERROR, main
from rnnlab.data.tagset import TagSet
from rnnlab.errors import RnnlabError
from rnnlab.export.loading import MANIFEST
from rnnlab.inference import Tagger, load_as
from rnnlab.inference.ensemble import TaggerEnsemble, decode_mean, load_ensemble, mean_crf
from rnnlab.models.crf import LinearChainCRF
from rnnlab.models.tagger import RNNTagger

REPO = Path(__file__).resolve().parents[2]
DEV = REPO / "data" / "ud-ewt-sample" / "dev.conllu"


@torch.no_grad()
def _log_p(
    emissions: torch.Tensor, crf: LinearChainCRF | None, paths: torch.Tensor
) -> torch.Tensor:
    """log p(y | x) of every row of ``paths`` (N, n) for one sentence's emissions (n, K)."""
    n = paths.size(1)
    batch = emissions.unsqueeze(0).expand(paths.size(0), n, -1)
    if crf is None:  # a softmax tagger: independent tokens
        return batch.log_softmax(2).gather(2, paths.unsqueeze(2)).squeeze(2).sum(1)
    lengths = torch.full((paths.size(0),), n)
    return -crf.nll(batch, paths, lengths)


def _all_paths(num_tags: int, length: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product(range(num_tags), repeat=length)))


@pytest.mark.parametrize("kinds", [("crf", "crf"), ("crf", "softmax", "crf"), ("softmax",) * 2])
def test_decoding_maximises_the_product_of_the_members_probabilities(kinds):
    torch.manual_seed(0)
    num_tags, steps = 4, 5
    lengths = torch.tensor([5, 3, 1, 4])
    crfs = [LinearChainCRF(num_tags) if kind == "crf" else None for kind in kinds]
    for crf in crfs:
        if crf is not None:  # scores far from zero, so the members disagree
            for p in crf.parameters():
                torch.nn.init.normal_(p, std=2.0)
    emissions = [torch.randn(len(lengths), steps, num_tags) * 2 for _ in kinds]
    members = [_member(crf) for crf in crfs]
    got = decode_mean(emissions, mean_crf(members), lengths)
    for row, n in enumerate(lengths.tolist()):
        paths = _all_paths(num_tags, n)
        total = sum(_log_p(e[row, :n], crf, paths) for e, crf in zip(emissions, crfs, strict=True))
        best = paths[total.argmax()]
        assert got[row, :n].tolist() == best.tolist()
        assert got[row, n:].eq(0).all()


def _member(crf: LinearChainCRF | None) -> RNNTagger:
    """A tagger whose only part ``mean_crf`` reads is its CRF."""
    model = RNNTagger.__new__(RNNTagger)
    torch.nn.Module.__init__(model)
    model.crf = crf
    return model


@pytest.fixture(scope="module")
def second_tagger_run(tmp_path_factory) -> Path:
    """The tiny tagger of ``tagger_run`` (a softmax output) trained from another seed and with a
    CRF: another model over the same tag set."""
    from tests.tiny_runs import train_tagger

    return train_tagger(tmp_path_factory.mktemp("tagger_run_crf"), seed=7, **{"model.crf": "true"})


SHORT = [["Go", "home", "."], ["I", "lost"], ["Thanks", "!", "!"], ["Nice"]]


def test_two_real_members_tag_by_brute_force(tagger_run: Path, second_tagger_run: Path):
    """A softmax tagger and a CRF tagger: the ensemble's tags maximise Σ log p over all tag paths."""
    ensemble = load_ensemble([tagger_run, second_tagger_run], device="cpu")
    members = ensemble.members
    assert [m.model.crf is not None for m in members] == [False, True]
    num_tags = len(members[0].task.tagset.itos)
    got = ensemble.tag_ids(SHORT)
    for sentence, tags in zip(SHORT, got, strict=True):
        paths = _all_paths(num_tags, len(sentence))
        total = torch.zeros(len(paths))
        for member in members:
            emissions, _ = member.task.emissions(member.model, [sentence], member.device)
            total += _log_p(emissions[0], member.model.crf, paths)
        assert tags == paths[total.argmax()].tolist()


def test_the_members_disagree_somewhere_and_the_ensemble_beats_each_on_the_summed_score(
    tagger_run: Path, second_tagger_run: Path
):
    ensemble = load_ensemble([tagger_run, second_tagger_run], device="cpu")
    sentences = [s.words for s in ensemble.task.read_sentences(str(DEV))]
    own = [m.task.tag_ids(m.model, sentences, m.device) for m in ensemble.members]
    assert own[0] != own[1], "the two seeds should give two different taggers"
    joint = ensemble.tag_ids(sentences)

    def summed_score(sentence: list[str], tags: list[int]) -> float:
        total = 0.0
        for m in ensemble.members:
            emissions, _ = m.task.emissions(m.model, [sentence], m.device)
            total += float(_log_p(emissions[0], m.model.crf, torch.tensor([tags])))
        return total

    for i, sentence in enumerate(sentences[:40]):
        best = summed_score(sentence, joint[i])
        for tags in (own[0][i], own[1][i]):
            assert best >= summed_score(sentence, tags) - 1e-4


def test_identical_members_tag_as_the_single_run(tagger_run: Path):
    single = load_as(Tagger, tagger_run, command="tag", device="cpu")
    ensemble = load_ensemble([tagger_run, tagger_run], device="cpu")
    sentences = ["The cat sat on the mat .", "", "Where is it ?"]
    assert [t.tags for t in ensemble.tag(sentences)] == [t.tags for t in single.tag(sentences)]
    assert ensemble.tag(sentences)[1].tags == []
    assert ensemble.describe()["ensemble_size"] == 2


def test_evaluate_of_several_runs_on_the_command_line(tagger_run, second_tagger_run, capsys):
    def evaluate(*runs: Path) -> dict:
        assert main(["evaluate", *map(str, runs), "--data", str(DEV), "--json", "--per-tag"]) == 0
        return json.loads(capsys.readouterr().out)

    single = evaluate(tagger_run)
    assert evaluate(tagger_run, tagger_run) == single
    pair = evaluate(tagger_run, second_tagger_run)
    assert pair["tokens"] == single["tokens"] and 0.0 < pair["accuracy"] <= 1.0
    assert set(pair["per_tag"]) == set(single["per_tag"])


def test_tag_of_several_runs_on_the_command_line(tagger_run, monkeypatch, capsys):
    import io

    def tag(*runs: Path) -> str:
        monkeypatch.setattr("sys.stdin", io.StringIO("Go home .\n\nThanks !\n"))
        assert main(["tag", *map(str, runs)]) == 0
        return capsys.readouterr().out

    single = tag(tagger_run)
    assert tag(tagger_run, tagger_run) == single
    assert single.count("\n") == 3


def test_a_run_of_another_task_is_a_one_line_error(tagger_run, lm_run, capsys):
    code = main(["evaluate", str(tagger_run), str(lm_run), "--data", str(DEV)])
    message = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR
    assert message == f"rnnlab: error: {lm_run}: evaluate needs a tagger run, this is a lm run"


def test_an_export_folder_is_a_one_line_error(tagger_run, tmp_path, capsys):
    export = tmp_path / "export"
    export.mkdir()
    (export / MANIFEST).write_text("{}", encoding="utf-8")
    code = main(["tag", str(tagger_run), str(export)])
    message = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR
    assert f"{export}: an ensemble reads run directories" in message
    assert "\n" not in message


def test_beam_is_refused_for_an_ensemble(tagger_run, capsys):
    code = main(["evaluate", str(tagger_run), str(tagger_run), "--data", str(DEV), "--beam", "5"])
    assert code == EXIT_USER_ERROR
    assert "--beam does not apply" in capsys.readouterr().err


def test_another_tag_set_is_refused_naming_the_run(tagger_run: Path):
    first = load_as(Tagger, tagger_run, command="tag", device="cpu")
    other = load_as(Tagger, tagger_run, command="tag", device="cpu")
    other.task.tagset = TagSet([*first.task.tagset.itos[1:], "NEVER-SEEN"])
    with pytest.raises(RnnlabError, match=r"^runs/b: its tag set differs from that of runs/a"):
        TaggerEnsemble([first, other], names=["runs/a", "runs/b"])
