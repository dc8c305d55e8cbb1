"""Keep the seq2seq tests on one intra-op thread: the machine they run on is small and shared."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)
