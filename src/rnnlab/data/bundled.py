"""The small corpora shipped inside the package, so the built-in defaults work from any directory.

``rnnlab train seq2seq --out runs/x`` with no ``--config`` trains on the bundled Tatoeba pairs, whether
it runs from the repository root, from elsewhere, or from a ``pip install``-ed package. In a checkout,
``data/`` at the repository root is a link to this folder, so the shipped configs and the README's
``data/...`` paths name the same files.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"


def bundled_path(relative: str) -> str:
    """Absolute path of a bundled file, e.g. ``bundled_path("fra-eng/valid.tsv")``."""
    return str(BUNDLED_DIR / relative)
