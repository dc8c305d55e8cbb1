"""The scratch layers' time loops compile on first use, and a failed compile is said once."""

from __future__ import annotations

import subprocess
import sys
import warnings

import torch

from rnnlab.nn.schedule import CompiledLoop

COUNT_COMPILES = """
import torch
calls = []
original = torch.jit.script
torch.jit.script = lambda fn, *a, **k: (calls.append(fn.__name__), original(fn, *a, **k))[1]
import rnnlab.nn
print("after import:", len(calls))
rnnlab.nn.GRU(3, 4)(torch.randn(2, 5, 3))
print("after a GRU:", len(calls))
"""


def test_import_compiles_nothing_and_first_use_compiles_what_it_runs():
    result = subprocess.run(
        [sys.executable, "-c", COUNT_COMPILES], capture_output=True, text=True, check=True
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "after import: 0"
    compiled = int(lines[1].split(": ")[1])
    assert 1 <= compiled < 10  # the GRU's forward loop, not every loop of the package


def double_then_add(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return x * 2 + y


def test_a_failed_compile_warns_once_and_runs_the_python_loop(monkeypatch):
    def refuse(fn):
        raise RuntimeError("unsupported construct\nmore detail")

    monkeypatch.setattr(torch.jit, "script", refuse)
    loop = CompiledLoop(double_then_add)
    x, y = torch.randn(3), torch.randn(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = loop(x, y)
        second = loop(x, y)
    assert torch.equal(first, x * 2 + y) and torch.equal(second, first)
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert "double_then_add" in messages[0] and "unsupported construct" in messages[0]
    assert "\n" not in messages[0]
