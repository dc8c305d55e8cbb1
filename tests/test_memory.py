"""keep_freed_memory: freed tensor memory stays in the process, by glibc's own accounting."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
import sys

import pytest

# Five 8 MiB tensors allocated, written and freed three times. glibc's mallinfo2 reports the bytes
# freshly mmapped for the first round's blocks (hblkhd) and, after each round, the free bytes it kept
# in its heap (fordblks). By default it maps such blocks afresh and hands the top of the heap back to
# the kernel beyond its trim threshold, so the next step maps and zeroes fresh pages.
ROUNDS = """
import ctypes, sys, torch
from rnnlab.memory import keep_freed_memory
FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
          "fordblks", "keepcost")
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
before = libc.mallinfo2().hblkhd
blocks = [torch.empty(2 << 20).fill_(1.0) for _ in range(5)]
mapped = libc.mallinfo2().hblkhd - before
kept = []
for _ in range(3):
    del blocks
    kept.append(libc.mallinfo2().fordblks)
    blocks = [torch.empty(2 << 20).fill_(1.0) for _ in range(5)]
print(applied, mapped, *kept)
"""
MIB = 1 << 20


def heap_rounds(mode: str) -> tuple[bool, int, list[int]]:
    """Whether the call applied, bytes mmapped for the first blocks, free heap kept per round."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "RNNLAB_"))}
    out = subprocess.run(
        [sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0] == "True", int(out[1]), [int(x) for x in out[2:]]


def has_mallinfo2() -> bool:
    return platform.libc_ver()[0] == "glibc" and hasattr(ctypes.CDLL(None), "mallinfo2")


@pytest.mark.skipif(not has_mallinfo2(), reason="glibc's mallinfo2 reports the heap")
def test_freed_blocks_stay_in_the_heap_for_the_next_step():
    applied, mapped, kept = heap_rounds("keep")
    _, mapped_by_default, _ = heap_rounds("default")
    assert applied
    assert mapped_by_default >= 40 * MIB  # glibc alone maps every block afresh
    assert mapped < 8 * MIB  # from the heap
    assert min(kept) >= 40 * MIB  # and kept there after each round


@pytest.mark.parametrize("name", ["MALLOC_TRIM_THRESHOLD_", "RNNLAB_KEEP_FREED_MEMORY"])
def test_a_threshold_set_by_the_user_or_an_opt_out_is_respected(monkeypatch, name):
    from rnnlab.memory import keep_freed_memory

    monkeypatch.setenv(name, "0")
    assert keep_freed_memory() is False
