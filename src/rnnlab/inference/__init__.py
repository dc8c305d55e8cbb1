"""The inference API: a trained run as a ``Translator``, ``Tagger`` or ``LanguageModel``.

``rnnlab.load(path)`` picks the class from the run's task. The command line (``rnnlab translate``,
``tag``, ``generate``) and the HTTP server (``rnnlab serve``) both call these classes, so batching,
blank-line handling and output formatting exist once.
"""

from rnnlab.inference.ensemble import TaggerEnsemble, load_ensemble
from rnnlab.inference.language_model import LanguageModel
from rnnlab.inference.loading import InferenceModel, load, load_as
from rnnlab.inference.results import AttentionMatrix, TaggedSentence, Translation
from rnnlab.inference.tagger import Tagger
from rnnlab.inference.translator import Translator

__all__ = [
    "AttentionMatrix",
    "InferenceModel",
    "LanguageModel",
    "TaggedSentence",
    "Tagger",
    "TaggerEnsemble",
    "Translation",
    "Translator",
    "load",
    "load_as",
    "load_ensemble",
]
