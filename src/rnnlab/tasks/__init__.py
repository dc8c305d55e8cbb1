"""Tasks wire data, model, loss and metric together; the registry is a literal dict."""

from rnnlab.tasks.base import Batch, LossOutput, Task
from rnnlab.tasks.lm import LanguageModelTask
from rnnlab.tasks.seq2seq import Seq2SeqTask
from rnnlab.tasks.seq2seq_config import Seq2SeqConfig
from rnnlab.tasks.tagger import TaggerTask

TASKS: dict[str, type[Task]] = {
    "seq2seq": Seq2SeqTask,
    "lm": LanguageModelTask,
    "tagger": TaggerTask,
}

__all__ = [
    "TASKS",
    "Batch",
    "LanguageModelTask",
    "LossOutput",
    "Seq2SeqConfig",
    "Seq2SeqTask",
    "TaggerTask",
    "Task",
]
