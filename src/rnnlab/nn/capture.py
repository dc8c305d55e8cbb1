"""Whether the code running now is being captured into a graph rather than run eagerly."""

from __future__ import annotations

import torch


def capturing_graph() -> bool:
    """True while TorchScript traces, the ONNX exporter exports or ``torch.compile`` compiles.

    Eager-only shortcuts (products written with ``out=``, custom autograd functions) step aside then:
    a captured graph must hold for every input, and the plain operators are what exporters know.
    """
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling()


__all__ = ["capturing_graph"]
