"""Measuring on a shared, noisy machine: machine facts, paired timing windows, matmul peak, memory.

Absolute speeds on a machine shared with other jobs move by 2× from one minute to the next, so every
figure the suite reports is a ratio between two systems timed in alternating windows of the same
process, and every speed is the median over windows.

Importing this module applies ``rnnlab.memory.keep_freed_memory``, as the ``rnnlab`` command does,
so that the suite measures what a user of the command gets (``machine_info`` says whether it did).
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rnnlab.memory import keep_freed_memory

KEPT_FREED_MEMORY = keep_freed_memory()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, object]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_1m": round(load[0], 2),
        "kept_freed_memory": KEPT_FREED_MEMORY,
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Start a new peak-RSS measurement (Linux: writing 5 to clear_refs resets VmHWM)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def phase_peak_rss_mb() -> float:
    """Peak resident memory since ``reset_peak_rss`` (VmHWM), else since the process started."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Median float32 GFLOP/s of a large ``torch.matmul`` at the current thread count."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.matmul(a, b)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        rates.append(2 * size**3 / (time.perf_counter() - started) / 1e9)
    return statistics.median(rates)


@dataclass
class Windows:
    """Per-window rates of two systems timed alternately; ratios are taken window by window."""

    candidate: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """Median of the paired ratios: robust to load that drifts between windows."""
        return statistics.median(c / b for c, b in zip(self.candidate, self.baseline, strict=True))

    def summary(self) -> dict[str, object]:
        return {
            "candidate_median": statistics.median(self.candidate),
            "baseline_median": statistics.median(self.baseline),
            "ratio": self.ratio,
            "candidate_windows": [round(x, 2) for x in self.candidate],
            "baseline_windows": [round(x, 2) for x in self.baseline],
        }


def paired_windows(
    candidate: Callable[[], tuple[float, float]],
    baseline: Callable[[], tuple[float, float]],
    repeats: int,
) -> Windows:
    """Run ``baseline`` then ``candidate`` ``repeats`` times; each returns (work units, seconds)."""
    windows = Windows()
    for _ in range(repeats):
        work, seconds = baseline()
        windows.baseline.append(work / seconds)
        work, seconds = candidate()
        windows.candidate.append(work / seconds)
    return windows


def timed(fn: Callable[[], float]) -> tuple[float, float]:
    """Call ``fn`` (which returns units of work done); returns (work, seconds)."""
    started = time.perf_counter()
    work = fn()
    return work, time.perf_counter() - started


def timed_at_least(fn: Callable[[], float], seconds: float) -> tuple[float, float]:
    """Call ``fn`` until ``seconds`` have passed; returns (work, seconds) summed over the calls.

    A window of a few milliseconds measures a page fault or a context switch as much as the code:
    fast systems repeat their work until their window is as long as a slow one's.
    """
    work = 0.0
    started = time.perf_counter()
    while True:
        work += fn()
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return work, elapsed
