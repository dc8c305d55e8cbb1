"""keep_freed_memory: repeated large allocations stop faulting in fresh pages (counted by the kernel)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# Five 8 MiB tensors allocated, written and freed twenty times: 40 MiB of blocks per round, above
# glibc's default trim threshold, so by default every round maps and zeroes new pages.
ROUNDS = """
import resource, sys, torch
from rnnlab.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def round_():
    blocks = [torch.empty(2 << 20).fill_(1.0) for _ in range(5)]
    return sum(float(b[0]) for b in blocks)
round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    round_()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    applied, kept = page_faults("keep")
    _, default = page_faults("default")
    assert applied
    assert default > 20 * 5 * (8 << 20) // 4096 // 2  # at least half the pages, faulted every round
    assert kept < default // 20


@pytest.mark.parametrize("name", ["MALLOC_TRIM_THRESHOLD_", "RNNLAB_KEEP_FREED_MEMORY"])
def test_a_threshold_set_by_the_user_or_an_opt_out_is_respected(monkeypatch, name):
    from rnnlab.memory import keep_freed_memory

    monkeypatch.setenv(name, "0")
    assert keep_freed_memory() is False
