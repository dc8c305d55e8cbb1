"""rnnlab: recurrent sequence models — language models, taggers and encoder-decoder translators."""

from rnnlab.nn.masking import sequence_mask

__version__ = "0.1.0"

__all__ = ["sequence_mask", "__version__"]
