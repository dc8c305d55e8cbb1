"""A recurrent sequence tagger: BiLSTM over word (+ character) representations, with a softmax or a
linear-chain CRF output layer.

References: Huang, Xu & Yu 2015, "Bidirectional LSTM-CRF Models for Sequence Tagging"; Plank, Søgaard
& Goldberg 2016, "Multilingual Part-of-Speech Tagging with Bidirectional LSTM Models and Auxiliary
Loss" (word + character BiLSTM representations, the POS recipe followed here); Lample et al. 2016,
"Neural Architectures for Named Entity Recognition" (character BiLSTM + CRF output layer).

::

    words (B, T) ──embedding──► (B, T, E) ─┐
                                           ├─ concat ─ dropout ─ BiRNN by lengths ─ dropout ─ linear ─► emissions (B, T, K)
    chars of the batch's distinct words    │
      (U, C) ─char encoder─► (U, Ec) ─index by word_types (B, T)─► (B, T, Ec)

Each sentence stops at its own length (``rnnlab.nn.by_lengths``), so neither direction ever reads
padding: the backward pass of a short sentence starts at its own last word. The recurrent layers
start from zeros, not a random state, so a sentence gets the same tags in every batch. The loss reads
only positions ``t < lengths[b]``; padded positions may hold any id.

``trainable_embed_size`` > 0 gives each word two parts: its row of ``embedding`` (pretrained vectors,
kept fixed by the task) and a trainable row that only words seen in training own (``known_words``);
words known only from the vector file share ``<unk>``'s trainable row, as Stanza's tagger does (Qi et
al. 2020). With one fine-tuned table, the training words' vectors drift while the words only the
vector file knows stay where the file put them, out of step with what the tagger learnt; a fixed
pretrained part keeps every word in one space, and the trainable part still adapts the training words.

``auxiliary`` adds linear layers that read the same recurrent outputs and are trained to predict
other labels of each token: its frequency bin in the training data (Plank et al.'s auxiliary loss,
meant to help rare words) or the tags of a second column (multi-task learning, e.g. XPOS beside
UPOS). They shape the shared layers during training; tagging never reads them.

``lm_classes`` > 0 adds a language-modelling objective (Rei 2017, "Semi-supervised Multitask Learning
for Sequence Labeling"): the first recurrent layer's forward states predict the next word and its
backward states the previous one, each through a small tanh layer and a softmax over ``lm_classes``
word classes. It must read the *first* layer: in a stack of bidirectional layers the second layer's
forward state at t already holds the first layer's backward state at t, which has read word t + 1.
So with this objective the stack is built as two modules, the first layer (``rnn``) and the rest
(``upper_rnn``), with the same per-token dropout between them as the fused stack applies::

    inputs ─ dropout ─ rnn (layer 1) ─ dropout ─┬─ upper_rnn (layers 2…) ─ dropout ─ output
                                                 └─ forward half → next word, backward half → previous word
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.models.char_encoder import CharCNNEncoder, CharRNNEncoder
from rnnlab.models.crf import LinearChainCRF
from rnnlab.nn.by_lengths import run_by_lengths
from rnnlab.nn.cross_entropy import summed_cross_entropy
from rnnlab.nn.dropout import Dropout, SequenceDropout
from rnnlab.nn.factory import make_rnn
from rnnlab.nn.masking import length_mask
from rnnlab.nn.precision import full_precision


class RNNTagger(nn.Module):
    """Emission scores per token, and the loss and decoding of the configured output layer."""

    def __init__(
        self,
        *,
        vocab_size: int,
        num_tags: int,
        embed_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        cell: str = "lstm",
        rnn_impl: str = "fused",
        bidirectional: bool = True,
        char_encoder: CharRNNEncoder | CharCNNEncoder | None = None,
        crf: bool = False,
        word_dropout: float = 0.0,
        variational_dropout: bool = False,
        trainable_embed_size: int = 0,
        known_words: Tensor | None = None,
        auxiliary: dict[str, int] | None = None,
        lm_classes: int = 0,
        lm_hidden_size: int = 50,
        padding_idx: int = 0,
        unk_idx: int = 1,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=padding_idx)
        self.trainable_embedding: nn.Embedding | None = None
        if trainable_embed_size > 0:
            if known_words is None or known_words.shape != (vocab_size,):
                raise ValueError("trainable_embed_size needs known_words, a (vocab_size,) mask")
            # Rows only for <pad>, <unk> and the training words: a vector file of a large
            # vocabulary adds words to the vocabulary but no trainable rows, nor optimizer state.
            owners = known_words.clone()
            owners[[padding_idx, unk_idx]] = True
            compact = torch.cumsum(owners, 0) - 1  # (V,) row among the owners
            self.trainable_unk_row = int(compact[unk_idx])
            self.trainable_embedding = nn.Embedding(
                int(owners.sum()), trainable_embed_size, padding_idx=int(compact[padding_idx])
            )
            # From zero: training starts from the pretrained part alone, and a rare word's row
            # stays small instead of keeping random noise its few occurrences never train away.
            nn.init.zeros_(self.trainable_embedding.weight)
            rows = torch.where(owners, compact, self.trainable_unk_row)
            self.register_buffer("trainable_rows", rows)  # (V,) word id → its trainable row
        self.char_encoder = char_encoder
        input_size = embed_size + trainable_embed_size
        input_size += char_encoder.output_size if char_encoder is not None else 0
        # Around the recurrent layers: a mask per token, or one per sentence (variational).
        self.dropout = SequenceDropout(dropout) if variational_dropout else Dropout(dropout)
        directions = 2 if bidirectional else 1
        features = hidden_size * directions
        # The language-modelling objective reads the first layer alone: the stack in two parts.
        lower_layers = 1 if lm_classes > 0 else num_layers
        self.rnn = make_rnn(
            cell,
            rnn_impl,
            input_size=input_size,
            hidden_size=hidden_size,
            num_layers=lower_layers,
            dropout=dropout,
            bidirectional=bidirectional,
        )
        self.upper_rnn: nn.Module | None = None
        if num_layers > lower_layers:
            self.upper_rnn = make_rnn(
                cell,
                rnn_impl,
                input_size=features,
                hidden_size=hidden_size,
                num_layers=num_layers - lower_layers,
                dropout=dropout,
                bidirectional=bidirectional,
            )
        self.between_layers = Dropout(dropout)  # as the fused stack drops between its layers
        self.lm_heads = nn.ModuleList(
            nn.Sequential(
                nn.Linear(hidden_size, lm_hidden_size),
                nn.Tanh(),
                nn.Linear(lm_hidden_size, lm_classes),
            )
            for _ in range(directions if lm_classes > 0 else 0)
        )
        self.output = nn.Linear(features, num_tags)
        self.crf = LinearChainCRF(num_tags) if crf else None
        # Auxiliary outputs, each a softmax over its own classes, trained beside the tags.
        self.auxiliary = nn.ModuleDict(
            {name: nn.Linear(features, size) for name, size in (auxiliary or {}).items()}
        )
        self.word_dropout = word_dropout
        self.unk_idx = unk_idx

    def embed(
        self,
        words: Tensor,
        chars: Tensor | None = None,
        char_lengths: Tensor | None = None,
        word_types: Tensor | None = None,
    ) -> Tensor:
        """Token representations before the recurrent layers: (B, T, E [+ Et] [+ Ec])."""
        embedded = self.word_vectors(words)  # (B, T, E [+ Et])
        if self.char_encoder is None:
            return embedded
        if chars is None or char_lengths is None or word_types is None:
            raise ValueError("this tagger reads characters: pass chars, char_lengths, word_types")
        char_vectors = self.char_encoder(chars, char_lengths)  # (U, Ec)
        return torch.cat([embedded, char_vectors[word_types]], dim=2)  # (B, T, E [+ Et] + Ec)

    def word_vectors(self, words: Tensor) -> Tensor:
        """The word-embedding part of ``embed``: (B, T) ids → (B, T, E [+ Et])."""
        if self.trainable_embedding is None:
            return self.embedding(self._word_dropout(words, self.unk_idx))  # (B, T, E)
        rows: Tensor = self.get_buffer("trainable_rows")[words]  # (B, T)
        # Independent draws: a token may lose its trainable row (as a word only the vector file
        # knows), its pretrained row (as a training word without a vector), or both.
        pretrained = self.embedding(self._word_dropout(words, self.unk_idx))  # (B, T, E)
        trainable = self.trainable_embedding(
            self._word_dropout(rows, self.trainable_unk_row)
        )  # (B, T, Et)
        return torch.cat([pretrained, trainable], dim=2)

    def _word_dropout(self, ids: Tensor, unk: int) -> Tensor:
        """In training, replace a fraction ``word_dropout`` of the ``ids`` by ``unk``.

        So ``<unk>``'s embedding is learnt in real contexts and the tagger learns to lean on the
        characters of words it has no embedding for.
        """
        if not self.training or self.word_dropout == 0:
            return ids
        dropped = torch.rand(ids.shape, device=ids.device) < self.word_dropout
        return ids.masked_fill(dropped, unk)

    def forward(
        self,
        words: Tensor,
        lengths: Tensor,
        chars: Tensor | None = None,
        char_lengths: Tensor | None = None,
        word_types: Tensor | None = None,
    ) -> Tensor:
        """Emission scores (B, T, K) for ``words`` (B, T) with ``lengths`` (B,), all ≥ 1.

        ``chars`` (U, C) and ``char_lengths`` (U,) spell the U distinct words of the batch;
        ``word_types`` (B, T) gives each token's row in ``chars``. Rows at padded positions are 0.
        """
        return self.output(self.features(words, lengths, chars, char_lengths, word_types))

    def features(
        self,
        words: Tensor,
        lengths: Tensor,
        chars: Tensor | None = None,
        char_lengths: Tensor | None = None,
        word_types: Tensor | None = None,
    ) -> Tensor:
        """The recurrent layers' outputs (B, T, D·H) after dropout, which every output layer reads."""
        return self.encode(self.embed(words, chars, char_lengths, word_types), lengths)

    def encode(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """``features`` from token representations ``inputs`` (B, T, F) made by ``embed``.

        Separate from ``embed`` so that training can perturb the representations (adversarial
        training) and read the recurrent layers' outputs for the perturbed ones.
        """
        return self.encode_layers(inputs, lengths)[0]

    def encode_layers(self, inputs: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """``encode``'s features, and the first layer's outputs after dropout (B, T, D·H), which the
        language-modelling objective reads (the features themselves for a one-layer stack)."""
        lower, _ = run_by_lengths(self.rnn, self.dropout(inputs), lengths)  # (B, T, D·H)
        if self.upper_rnn is None:
            features = self.dropout(lower)
            return features, features
        lower = self.between_layers(lower)
        outputs, _ = run_by_lengths(self.upper_rnn, lower, lengths)
        return self.dropout(outputs), lower

    def lm_loss_sum(self, lower: Tensor, targets: Tensor, lengths: Tensor) -> Tensor:
        """Summed cross-entropy of the language-modelling objective: a scalar.

        ``lower`` (B, T, D·H) from ``encode_layers``; ``targets`` (B, T) each token's word class,
        any at padding. The forward state at t predicts the class of word t + 1, the backward state
        at t + 1 that of word t, for every pair of valid positions (a sentence of n words: n − 1
        predictions each way).
        """
        if not self.lm_heads:
            raise ValueError("this tagger has no language-modelling objective (lm_classes 0)")
        half = lower.size(-1) // len(self.lm_heads)
        pairs = length_mask(lengths.to(lower.device), lower.size(1))[:, 1:]  # (B, T − 1)
        lower = full_precision(lower)
        # In float32 even under bfloat16 autocast: the (N, classes) logits are the largest arrays
        # of the step, and casting them and their gradient cost more than the products saved.
        with torch.autocast(lower.device.type, enabled=False):
            forward = self.lm_heads[0](lower[:, :-1, :half][pairs])  # (N, classes)
            loss = summed_cross_entropy(forward, targets[:, 1:][pairs])
            if len(self.lm_heads) == 2:
                backward = self.lm_heads[1](lower[:, 1:, half:][pairs])
                loss = loss + summed_cross_entropy(backward, targets[:, :-1][pairs])
        return loss

    def auxiliary_loss_sum(
        self, name: str, features: Tensor, targets: Tensor, lengths: Tensor
    ) -> Tensor:
        """Summed cross-entropy of auxiliary output ``name`` over the valid tokens: a scalar.

        ``features`` (B, T, D·H) from ``features``; ``targets`` (B, T) class ids, any at padding.
        """
        mask = length_mask(lengths.to(features.device), features.size(1))  # (B, T)
        logits = self.auxiliary[name](features[mask]).float()  # (N, classes)
        return F.cross_entropy(logits, targets[mask], reduction="sum")

    def loss_sum(
        self, emissions: Tensor, tags: Tensor, lengths: Tensor, *, label_smoothing: float = 0.0
    ) -> Tensor:
        """Summed loss over the valid tokens (softmax, optionally label-smoothed) or sentences
        (CRF, whose loss is a sequence's negative log-likelihood: no smoothing) of a batch."""
        if self.crf is not None:
            return self.crf.nll(emissions, tags, lengths).sum()
        # The mask comes from the lengths, never from tag ids: every tag id is a real tag.
        mask = length_mask(lengths.to(emissions.device), emissions.size(1))  # (B, T)
        logits = emissions[mask]  # (N, K), N = Σ lengths
        return F.cross_entropy(logits, tags[mask], reduction="sum", label_smoothing=label_smoothing)

    @torch.no_grad()
    def decode(self, emissions: Tensor, lengths: Tensor) -> Tensor:
        """Best tags (B, T): Viterbi with a CRF, else the per-token argmax; 0 at padded positions."""
        if self.crf is not None:
            return self.crf.viterbi(emissions, lengths)
        mask = length_mask(lengths.to(emissions.device), emissions.size(1))  # (B, T)
        return emissions.argmax(dim=2).masked_fill(~mask, 0)
