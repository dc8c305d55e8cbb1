"""JSON that every parser reads: Python's ``json.dumps`` writes a nan or an infinity as the bare
words ``NaN`` and ``Infinity``, which are not JSON. A diverged run's loss or perplexity is exactly
such a value, so everything rnnlab writes as JSON goes through here and says ``null`` instead."""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_null(value: Any) -> Any:
    """``value`` with every float that is not finite replaced by None, in nested dicts and lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_null(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_null(item) for item in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps`` of ``value`` with non-finite floats as null (``allow_nan=False`` checks it)."""
    return json.dumps(finite_or_null(value), allow_nan=False, **options)
