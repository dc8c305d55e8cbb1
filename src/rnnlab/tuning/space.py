"""Search spaces: ``SPACE.yaml`` maps dotted config keys to distributions, checked before any trial.

::

    train.lr:          {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    model.hidden_size: {type: int, low: 64, high: 256, step: 64}
    model.cell:        {type: categorical, choices: [gru, lstm]}

Every key must name a field of the task's config schema (an unknown key names the closest valid
one), a float range a float field, an int range an int field, and every categorical choice must be a
valid value of its field — so a typo fails at once, not after hours of trials.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, get_type_hints

from rnnlab.config import coerce_value, read_yaml
from rnnlab.errors import ConfigError

ParamType = Literal["float", "int", "categorical"]
SPEC_KEYS = {"type", "low", "high", "log", "step", "choices"}
TYPE_KEYS: dict[str, set[str]] = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
"""The fields each type reads: any other would be ignored, so it is refused."""


@dataclass
class ParamSpec:
    """One searched config key and its distribution."""

    key: str
    type: ParamType
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna ``trial`` picks for this key."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        assert self.low is not None and self.high is not None
        if self.type == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)


def schema_fields(config_class: type, *, with_inert: bool = True) -> dict[str, Any]:
    """Every dotted leaf key of a config schema with its annotated type; ``with_inert=False``
    leaves out the inherited fields a section says its task never reads (``INERT_FIELDS``)."""
    found: dict[str, Any] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = get_type_hints(cls)
        never_read = () if with_inert else getattr(cls, "INERT_FIELDS", ())
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")  # type: ignore[arg-type]
            elif f.name not in never_read:
                found[f"{prefix}{f.name}"] = tp

    walk(config_class, "")
    return found


def _number(value: Any, where: str) -> float:
    if isinstance(value, str):
        try:
            return float(value)  # YAML 1.1 reads 1e-4 as a string
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return float(value)


def _parse(key: str, raw: Any, field_type: Any, where: str) -> ParamSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping like {{type: float, low: …, high: …}}")
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        name = sorted(unknown)[0]
        close = difflib.get_close_matches(str(name), sorted(SPEC_KEYS), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"{where}: unknown field {name!r}{hint}")
    kind = raw.get("type")
    if kind not in TYPE_KEYS:
        raise ConfigError(f"{where}: type must be float, int or categorical, got {kind!r}")
    foreign = sorted(set(raw) - TYPE_KEYS[kind])
    if foreign:
        raise ConfigError(f"{where}: a {kind} takes no {foreign[0]!r}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: a categorical needs a non-empty list of choices")
        try:
            checked = [coerce_value(c, field_type, key) for c in choices]
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return ParamSpec(key, "categorical", choices=checked)
    if "low" not in raw or "high" not in raw:
        raise ConfigError(f"{where}: a {kind} range needs low and high")
    low, high = _number(raw["low"], f"{where}.low"), _number(raw["high"], f"{where}.high")
    step = _number(raw["step"], f"{where}.step") if raw.get("step") is not None else None
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, got {log!r}")
    if not all(math.isfinite(v) for v in (low, high)):
        raise ConfigError(f"{where}: low and high must be finite numbers")
    if step is not None and not step > 0:
        raise ConfigError(f"{where}.step: must be above 0, got {step:g}")
    if low > high:
        raise ConfigError(f"{where}: low {low:g} is above high {high:g}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0")
    if log and step is not None and not (kind == "int" and step == 1):
        raise ConfigError(f"{where}: Optuna cannot combine log and a step (other than 1 for int)")
    expected = {"float": float, "int": int}[kind]
    if field_type is not expected:
        raise ConfigError(f"{where}: {key} is not a {kind} setting (its values are {field_type})")
    if kind == "int" and any(not float(v).is_integer() for v in (low, high, step or 1)):
        raise ConfigError(f"{where}: an int range needs whole numbers")
    if step is not None:
        _check_steps_reach_high(low, high, step, where)
    return ParamSpec(key, kind, low=low, high=high, log=log, step=step)


def _check_steps_reach_high(low: float, high: float, step: float, where: str) -> None:
    """Optuna searches low, low + step, … and quietly lowers a ``high`` that is not on that grid;
    refuse it instead, naming the highest value on it. Decimal arithmetic, so that 0.1 + 2 × 0.2
    reaches 0.5 as written."""
    low_d, high_d, step_d = (Decimal(repr(v)) for v in (low, high, step))
    steps = (high_d - low_d) // step_d
    if low_d + steps * step_d != high_d:
        top = low_d + steps * step_d
        raise ConfigError(
            f"{where}: high {high:g} is not low plus a whole number of steps of {step:g}; "
            f"the highest value searched would be {float(top):g}"
        )


def load_space(path: str | Path, config_class: type) -> list[ParamSpec]:
    """Read and check ``SPACE.yaml`` against ``config_class``; errors name the file and key."""
    data = read_yaml(path)
    if not data:
        raise ConfigError(f"{path}: the search space is empty")
    fields = schema_fields(config_class, with_inert=False)
    inert = schema_fields(config_class).keys() - fields.keys()
    specs = []
    for key, raw in data.items():
        key = str(key)
        if key in inert:
            raise ConfigError(f"{path}: {key} has no effect on this task's training")
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{path}: unknown config key {key}{hint}")
        if key in ("task", "seed"):
            raise ConfigError(f"{path}: {key} cannot be searched")
        specs.append(_parse(key, raw, fields[key], f"{path}: {key}"))
    return specs


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, creating sections as needed."""
    *sections, leaf = key.split(".")
    node = data
    for part in sections:
        node = node.setdefault(part, {})
    node[leaf] = value
