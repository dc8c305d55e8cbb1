"""Several trained taggers tagging as one: a product of experts over whole tag sequences.

Each member scores a tag sequence y of a sentence x with s_m(y) = Σₜ e_m[t, yₜ] + its CRF's
transition, start and end scores (none for a softmax tagger, whose p_m(y | x) = Πₜ softmax(e_m[t])
is a CRF with zero transitions). The ensemble tags x with

    argmax_y Σ_m log p_m(y | x) = argmax_y Σ_m s_m(y),

the sequence most probable under the geometric mean of the members' distributions: each log Z_m
does not depend on y and drops out. So one Viterbi pass over the members' mean emissions with their
mean transition scores finds it exactly. Averaging per-token probabilities instead could pick a
sequence that no member's transitions allow.

Members are independent runs (another seed, another width, another vocabulary) of one tag set.
Each encodes the sentences with its own vocabularies, so only the tags must agree. A tag set is
ordered by training frequency, so two members trained on different samples may list the same tags
in another order: each member's scores are put in the first member's order by tag name. Accuracy on
unseen words is reported against the first member's training words.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnlab.errors import RnnlabError
from rnnlab.inference.inputs import settings
from rnnlab.inference.loading import directory_kind, load_as
from rnnlab.inference.results import TaggedSentence
from rnnlab.inference.tagger import Tagger, tag_sentences
from rnnlab.models.crf import LinearChainCRF
from rnnlab.models.tagger import RNNTagger
from rnnlab.nn.masking import length_mask
from rnnlab.tasks.tagger import tag_in_batches


def mean_crf(
    members: Sequence[RNNTagger], orders: Sequence[Tensor] | None = None
) -> LinearChainCRF | None:
    """A CRF whose scores are the mean of the members' (zero for a member without a CRF);
    ``None`` when no member has one, and the ensemble decodes by per-token argmax. ``orders``
    (one per member) lists, for each tag of the ensemble, the member's id of that tag."""
    crfs = [m.crf for m in members]
    present = [
        (crf, orders[i] if orders is not None else None)
        for i, crf in enumerate(crfs)
        if crf is not None
    ]
    if not present:
        return None
    first = present[0][0]
    mean = LinearChainCRF(first.num_tags).to(first.transitions.device)
    with torch.no_grad():
        for name in ("transitions", "start_transitions", "end_transitions"):
            total = torch.zeros_like(getattr(first, name), dtype=torch.float32)
            for crf, order in present:
                scores = getattr(crf, name).float()
                if order is not None:  # rows (and columns) in the ensemble's tag order
                    index = order.to(scores.device)
                    scores = scores[index][:, index] if scores.dim() == 2 else scores[index]
                total += scores
            getattr(mean, name).copy_(total / len(crfs))
    return mean.eval()


@torch.no_grad()
def decode_mean(emissions: Sequence[Tensor], crf: LinearChainCRF | None, lengths: Tensor) -> Tensor:
    """argmax_y of the members' mean score: ``emissions`` one (B, T, K) per member, ``crf`` from
    ``mean_crf``, ``lengths`` (B,) → tag ids (B, T), 0 at padded positions."""
    mean = torch.stack(list(emissions)).mean(dim=0)  # (B, T, K)
    if crf is not None:
        return crf.viterbi(mean, lengths)
    return mean.argmax(dim=2).masked_fill(~length_mask(lengths, mean.size(1)), 0)


class TaggerEnsemble:
    """Taggers over one tag set that tag as one (see the module docstring); ``Tagger``'s interface."""

    task_name = "tagger"

    def __init__(self, members: Sequence[Tagger], names: Sequence[str] | None = None) -> None:
        if not members:
            raise RnnlabError("an ensemble needs at least one tagger")
        names = list(names) if names is not None else [f"member {i}" for i in range(len(members))]
        first = members[0]
        for member, name in zip(members[1:], names[1:], strict=True):
            if member.tag_column != first.tag_column:
                raise RnnlabError(
                    f"{name}: tags the {member.tag_column} column, {names[0]} the "
                    f"{first.tag_column} column: an ensemble needs one tag column"
                )
            if set(_tags(member)) != set(_tags(first)):
                raise RnnlabError(
                    f"{name}: its tag set differs from that of {names[0]}: an ensemble needs one "
                    "tag set (train the members on the same data)"
                )
        self.members = list(members)
        self.task = first.task
        self.device = first.device
        self.batch_size = first.batch_size
        """Sentences tagged together."""
        models = [_model(m) for m in self.members]
        for model in models:
            model.eval()
        ours = _tags(first)
        self.orders = [
            torch.tensor([_tags(m).index(tag) for tag in ours], device=self.device)
            for m in self.members
        ]
        """For each member, its id of each of the ensemble's (the first member's) tags."""
        self.crf = mean_crf(models, self.orders)

    @property
    def tag_column(self) -> str:
        """The CoNLL-U column the members fill."""
        return self.members[0].tag_column

    def describe(self) -> dict[str, Any]:
        """The first member's facts, with the number of members."""
        return {**self.members[0].describe(), "ensemble_size": len(self.members)}

    @torch.no_grad()
    def decode(self, sentences: list[list[str]]) -> Tensor:
        """Tag ids (B, T) of non-empty sentences: Viterbi over the members' mean scores."""
        scores = [
            member.task.emissions(member.model, sentences, member.device)[0].to(self.device)[
                ..., order
            ]
            for member, order in zip(self.members, self.orders, strict=True)
        ]
        lengths = torch.tensor([len(s) for s in sentences], device=self.device)
        return decode_mean(scores, self.crf, lengths)

    def tag_ids(
        self, sentences: list[list[str]], *, progress: Callable[[int], None] | None = None
    ) -> list[list[int]]:
        """Tag ids per sentence, in input order; an empty sentence gets none."""
        tokens = self.task.config.decode.batch_tokens
        return tag_in_batches(
            sentences, self.decode, self.batch_size, batch_tokens=tokens, progress=progress
        )

    def tag(
        self,
        sentences: list[str] | list[list[str]],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> list[TaggedSentence]:
        """Tags per sentence, in order. A string is split on whitespace; an empty sentence gets no tags."""
        tagset = self.task.tagset
        assert tagset is not None
        return tag_sentences(
            sentences,
            lambda words: [tagset.decode(t) for t in self.tag_ids(words, progress=progress)],
        )

    def evaluate(self, path: str, *, per_tag: bool = False) -> dict[str, Any]:
        """Accuracy, unseen-word accuracy (the first member's training words) and, with
        ``per_tag``, per-tag scores of the ensemble's tags against the gold tags of ``path``."""
        data = self.task.encode_tagged(self.task.read_scored_sentences(path))
        tags = [t.tags for t in self.tag(data.words)]
        return self.task.score_tags(data, tags).summary(per_tag=per_tag)


def _model(member: Tagger) -> RNNTagger:
    if not isinstance(member.model, RNNTagger):
        raise RnnlabError("an ensemble member must be a trained tagger run")
    return member.model


def _tags(member: Tagger) -> list[str]:
    tagset = member.task.tagset
    assert tagset is not None
    return list(tagset.itos)


def load_ensemble(
    paths: str | Path | Sequence[str | Path],
    *,
    command: str = "ensemble",
    device: str = "auto",
    threads: int = 0,
    overrides: list[str] | None = None,
) -> TaggerEnsemble:
    """The tagger runs at ``paths`` as one ``TaggerEnsemble``; a one-line error naming the run
    for an export folder, a run of another task, or another tag set.

    One path (a string or ``Path``, as ``rnnlab.load`` takes) is an ensemble of that run alone, not
    a sequence of one-character paths.
    """
    paths = [paths] if isinstance(paths, (str, bytes, Path)) else list(paths)  # a generator: once
    overrides = settings(overrides)
    members: list[Tagger] = []
    for path in paths:
        if directory_kind(Path(path)) == "export":
            raise RnnlabError(f"{path}: an ensemble reads run directories, not an exported model")
        members.append(
            load_as(
                Tagger, path, command=command, device=device, threads=threads, overrides=overrides
            )
        )
    return TaggerEnsemble(members, names=[str(p) for p in paths])
