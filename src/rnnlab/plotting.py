"""Pictures of training and of model internals: learning curves, and the attention heatmap of one
translation.

matplotlib is imported lazily with the non-interactive Agg backend, so plotting works without a
display and costs nothing to code that never plots. Every text drawn is literal: sentences, tokens
and run names are what people typed, not TeX (matplotlib reads anything between two ``$`` as math,
and refuses ``$^$`` at ``savefig``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import Tensor

from rnnlab.atomic import reported_as

DPI = 100


@contextmanager
def _literal_text() -> Iterator[Any]:
    """``matplotlib.pyplot`` with the Agg backend, drawing every text as typed (no mathtext)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with matplotlib.rc_context({"text.parse_math": False}):
        yield plt


def attention_figure_size(num_src: int, num_out: int) -> tuple[float, float]:
    """Figure size in inches: about a third of an inch per token, with room for the labels."""
    return max(6.0, 2.0 + 0.35 * num_src), max(4.5, 1.5 + 0.35 * num_out)


def plot_attention(
    weights: Tensor,
    src_tokens: Sequence[str],
    out_tokens: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Save a heatmap of ``weights`` (T_out, S): output tokens down, source tokens across.

    The PNG is ``attention_figure_size(S, T_out)`` inches at ``DPI`` pixels per inch.
    """
    num_out, num_src = weights.shape
    if (num_out, num_src) != (len(out_tokens), len(src_tokens)):
        raise ValueError(
            f"weights are {num_out}×{num_src} but there are {len(out_tokens)} output and "
            f"{len(src_tokens)} source tokens"
        )
    with _literal_text() as plt:
        return _draw_attention(plt, weights, src_tokens, out_tokens, Path(path), title)


def _draw_attention(
    plt: Any,
    weights: Tensor,
    src_tokens: Sequence[str],
    out_tokens: Sequence[str],
    path: Path,
    title: str,
) -> Path:
    num_out, num_src = weights.shape
    fig, ax = plt.subplots(figsize=attention_figure_size(num_src, num_out), dpi=DPI)
    try:
        image = ax.imshow(weights.detach().cpu().float().numpy(), cmap="Greys", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(num_src), labels=list(src_tokens), rotation=60, ha="right")
        ax.set_yticks(range(num_out), labels=list(out_tokens))
        ax.set_xlabel("source")
        ax.set_ylabel("output")
        if title:
            ax.set_title(title)
        fig.colorbar(image, ax=ax, fraction=0.04)
        fig.tight_layout()
        with reported_as(path, ValueError):  # a missing folder, a directory, an empty name
            fig.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------
# Learning curves

CURVES_SIZE = (15.0, 4.5)
"""Learning-curve figure size in inches: three panels side by side (1500 × 450 pixels)."""


@dataclass
class RunCurves:
    """What one run contributes to a learning-curve plot."""

    label: str
    records: list[dict[str, Any]]
    """The run's ``metrics.jsonl`` records, in order."""
    metric: str
    """The primary validation metric, e.g. ``valid_bleu``."""


def _series(records: list[dict[str, Any]], key: str, x: str) -> tuple[list[float], list[float]]:
    # null is a value that was not finite (a diverged loss): a gap in the line
    points = [
        (r[x], math.nan if r[key] is None else r[key]) for r in records if key in r and x in r
    ]
    return [p[0] for p in points], [p[1] for p in points]


def plot_learning_curves(
    runs: Sequence[RunCurves], path: str | Path, *, x: Literal["step", "minutes"] = "step"
) -> Path:
    """Save losses, the primary validation metric and the learning rate of ``runs``, overlaid.

    Panels: training loss (solid) with validation loss (dashed) when the task logs it; the primary
    metric at each validation; the learning rate. Each run has one colour and one legend entry. The
    PNG is ``CURVES_SIZE`` inches at ``DPI``; it is written beside and renamed into place, so a run
    being plotted while another process reads the file never shows a torn image.
    """
    with _literal_text() as plt:
        return _draw_learning_curves(plt, runs, Path(path), x)


def _draw_learning_curves(
    plt: Any, runs: Sequence[RunCurves], path: Path, x: Literal["step", "minutes"]
) -> Path:
    fig, (loss_ax, metric_ax, lr_ax) = plt.subplots(1, 3, figsize=CURVES_SIZE, dpi=DPI)
    try:
        for index, run in enumerate(runs):
            color = f"C{index % 10}"
            xs, ys = _series(run.records, "train_loss", x)
            loss_ax.plot(xs, ys, color=color, label=run.label)
            xs, ys = _series(run.records, "valid_loss", x)
            if xs:
                loss_ax.plot(xs, ys, color=color, linestyle="--", marker=".")
            xs, ys = _series(run.records, run.metric, x)
            metric_ax.plot(xs, ys, color=color, marker="o", label=run.label)
            xs, ys = _series(run.records, "lr", x)
            lr_ax.plot(xs, ys, color=color, label=run.label)
        metrics = sorted({run.metric for run in runs})
        for ax, title in (
            (loss_ax, "loss (solid: training, dashed: validation)"),
            (metric_ax, ", ".join(metrics) or "validation metric"),
            (lr_ax, "learning rate"),
        ):
            ax.set_title(title)
            ax.set_xlabel("training minutes" if x == "minutes" else "step")
            ax.grid(alpha=0.3)
        if runs:
            loss_ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with reported_as(path, ValueError):  # a missing folder, a directory, an empty name
                fig.savefig(partial, format="png", dpi=DPI)
                partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
    finally:
        plt.close(fig)
    return path
