"""An exponential moving average of the weights (``train.ema_decay``), the model a run keeps.

Late in training, Adam's weights wander around a minimum from batch to batch; their running average
sits nearer its centre and usually validates better than any single step's weights (Polyak &
Juditsky 1992; Marian's ``exponential-smoothing``, OpenNMT-py's ``average_decay``). After each
optimizer step::

    average ← d · average + (1 − d) · weights,    d = min(ema_decay, (1 + n) / (10 + n))

after n updates. The warm-up of d is TensorFlow's ``ExponentialMovingAverage(num_updates=…)``: with a
fixed d of 0.999, a 1,000-step run would still hold 37% of its random initialisation.

The average is ``torch.optim.swa_utils.AveragedModel``: a copy of the model that validation reads and
``best/`` saves, while training goes on with the raw weights; ``last/`` keeps both, so a resumed run
continues the same average.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from rnnlab.errors import ConfigError

PREFIX = "ema."
"""Key prefix of the average's tensors in ``last/trainer_state.safetensors``."""


class WeightAverage:
    """The exponential moving average of ``model``'s parameters, as a model of its own."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"train.ema_decay: {decay!r} is not in (0, 1); 0 turns it off")
        self.decay = decay
        self.averaged = AveragedModel(model, multi_avg_fn=self._blend)
        self.averaged.requires_grad_(False)
        for module in self.averaged.module.modules():
            if isinstance(module, nn.RNNBase):
                # A deep copy's cuDNN weights are no longer one block of memory, and cuDNN would
                # warn and compact them at every call (a no-op on the CPU).
                module.flatten_parameters()

    @property
    def model(self) -> nn.Module:
        """The averaged weights in the model's own class (what validation and ``best/`` use)."""
        return self.averaged.module

    def current_decay(self, updates: int) -> float:
        """d after ``updates`` updates: the warm-up bound, then ``decay``."""
        return min(self.decay, (1 + updates) / (10 + updates))

    def _blend(
        self,
        averaged: list[Tensor] | tuple[Tensor, ...],
        current: list[Tensor] | tuple[Tensor, ...],
        updates: Tensor | int,
    ) -> None:
        weight = 1.0 - self.current_decay(int(updates))
        torch._foreach_lerp_(list(averaged), list(current), weight)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend ``model``'s weights after an optimizer step into the average."""
        self.averaged.update_parameters(model)

    def state_tensors(self) -> dict[str, Tensor]:
        """The average and its update count, keyed for the trainer's checkpoint."""
        return {PREFIX + k: v for k, v in self.averaged.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, Tensor], model: nn.Module) -> None:
        """Restore ``state_tensors``; a checkpoint written without an average starts one from
        ``model``'s weights (a run resumed with ``train.ema_decay`` newly set)."""
        state = {k[len(PREFIX) :]: v for k, v in tensors.items() if k.startswith(PREFIX)}
        if not state:
            self.averaged.module.load_state_dict(model.state_dict())
            self.averaged.n_averaged.fill_(1)
            return
        self.averaged.load_state_dict(state)
