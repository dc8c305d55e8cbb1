"""rnnlab: recurrent sequence models — language models, taggers and encoder-decoder translators.

``rnnlab.load(run_dir)`` opens a trained run as a ``Translator``, ``Tagger`` or ``LanguageModel``.
The names most users need are re-exported here; everything else lives in the subpackages
(``rnnlab.data``, ``rnnlab.nn``, ``rnnlab.models``, ``rnnlab.decoding``, ``rnnlab.training``,
``rnnlab.metrics``, ``rnnlab.tasks``).
"""

from rnnlab.inference import (
    LanguageModel,
    TaggedSentence,
    Tagger,
    Translation,
    Translator,
    load,
)
from rnnlab.metrics.bleu import corpus_bleu, d2l_bleu
from rnnlab.nn.masking import masked_softmax, sequence_mask
from rnnlab.training.losses import MaskedSoftmaxCELoss

__version__ = "0.1.0"

__all__ = [
    "LanguageModel",
    "MaskedSoftmaxCELoss",
    "TaggedSentence",
    "Tagger",
    "Translation",
    "Translator",
    "__version__",
    "corpus_bleu",
    "d2l_bleu",
    "load",
    "masked_softmax",
    "sequence_mask",
]
