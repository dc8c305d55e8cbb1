"""What a task gives the trainer: data as batches, a loss, and validation metrics.

The trainer never branches on the task. A task owns its data pipeline, its vocabularies (saved in the
run directory) and its model construction; the trainer owns the optimisation loop, checkpoints and
logging.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import Tensor, nn

from rnnlab.config import RunConfig
from rnnlab.errors import ConfigError

B = TypeVar("B", bound="Batch")


@dataclass
class Batch:
    """Base for task batches: a dataclass of tensors (and plain values) movable to a device."""

    def to(self: B, device: torch.device) -> B:
        """The batch on ``device``: every tensor field, and every tensor in a dict field."""
        return type(self)(**{f.name: _moved(getattr(self, f.name), device) for f in fields(self)})


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, dict):
        return {key: _moved(item, device) for key, item in value.items()}
    return value


@dataclass
class LossOutput:
    loss_sum: Tensor
    """Summed loss over the batch's valid tokens (a scalar with grad)."""
    num_tokens: int
    """Number of valid target tokens, the denominator for the per-token mean."""
    carry: Any = None
    """State carried to the next batch (truncated BPTT); None for independent batches."""


class Task(ABC):
    """One trainable task; subclasses are listed literally in ``rnnlab.tasks.TASKS``."""

    name: ClassVar[str]
    config_class: ClassVar[type[RunConfig]]
    primary_metric: ClassVar[str]
    """Validation metric that selects the best checkpoint, e.g. ``valid_bleu``."""
    higher_is_better: ClassVar[bool]

    def __init__(self, config: Any, run_dir: Path) -> None:
        self.config = config
        self.run_dir = Path(run_dir)

    # -- setting up -----------------------------------------------------------------------------
    @abstractmethod
    def prepare_training(self) -> None:
        """Read training (and validation) data, build vocabularies and save them to the run dir."""

    @abstractmethod
    def load_artifacts(self) -> None:
        """Load vocabularies (and any other files) saved by ``prepare_training`` from the run dir."""

    def prepare_resume(self) -> None:
        """Read data again for a resumed run, reusing the saved vocabularies."""
        self.load_artifacts()
        self.read_training_data()

    @abstractmethod
    def read_training_data(self) -> None:
        """Read and encode training/validation data with the loaded vocabularies."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """A freshly initialised model sized for the loaded vocabularies."""

    def new_model(self) -> nn.Module:
        """``build_model``, with a model too large for memory (a size mistyped, most often) a
        ``ConfigError`` rather than the allocator's traceback."""
        try:
            return self.build_model()
        except RuntimeError as exc:  # torch.OutOfMemoryError on CUDA, the CPU allocator's error
            if not isinstance(exc, torch.OutOfMemoryError) and "allocate" not in str(exc):
                raise
            sizes = ", ".join(
                f"model.{key}={getattr(self.config.model, key)}"
                for key in ("embed_size", "hidden_size", "num_layers")
            )
            raise ConfigError(f"the model does not fit in memory ({sizes})") from None

    def setup_notes(self) -> list[str]:
        """Lines worth showing a person once training data is prepared (e.g. embedding coverage)."""
        return []

    def model_meta(self) -> dict[str, Any]:
        """Facts stored with the weights and checked on load (vocabulary sizes and fingerprints)."""
        return {"task": self.name}

    # -- training -------------------------------------------------------------------------------
    @abstractmethod
    def train_batches(self, epoch: int) -> Sequence[Batch]:
        """All training batches of ``epoch``, deterministic given the run seed and the epoch."""

    def begin_step(self, step: int) -> dict[str, float]:
        """Called before training step ``step`` (0-based); returns values to log with it.

        A task whose training changes with the step (scheduled sampling's ε) sets it here; the value
        is a pure function of the step, so a resumed run continues the same schedule.
        """
        return {}

    @abstractmethod
    def batch_loss(self, model: nn.Module, batch: Any, carry: Any) -> LossOutput:
        """Summed loss over valid tokens of one batch."""

    @abstractmethod
    def validate(self, model: nn.Module, device: torch.device) -> dict[str, float]:
        """Validation metrics with ``valid_`` prefixes; must include ``primary_metric``."""

    def has_validation(self) -> bool:
        return bool(getattr(self.config.data, "valid", ""))

    # -- evaluation -----------------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, model: nn.Module, path: str, device: torch.device) -> dict[str, Any]:
        """Metrics of a trained model on a data file."""
