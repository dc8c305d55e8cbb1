"""Pictures of model internals; for now the attention heatmap of one translation.

matplotlib is imported lazily with the non-interactive Agg backend, so plotting works without a
display and costs nothing to code that never plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor

DPI = 100


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_out, num_src = weights.shape
    if (num_out, num_src) != (len(out_tokens), len(src_tokens)):
        raise ValueError(
            f"weights are {num_out}×{num_src} but there are {len(out_tokens)} output and "
            f"{len(src_tokens)} source tokens"
        )
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
        path = Path(path)
        fig.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path
