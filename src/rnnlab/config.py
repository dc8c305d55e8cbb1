"""Typed configuration: dataclasses, strict YAML loading and dotted ``key=value`` overrides.

A config is a tree of dataclasses. Loading is strict so that a typo never silently falls back to a
default: an unknown key is an error that names the closest valid key, and a value of the wrong type is
an error that names the key and the expected type. The resolved config is saved in every run directory,
so evaluation and decoding need nothing but the run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml

from rnnlab.atomic import atomic_write_text
from rnnlab.errors import ConfigError
from rnnlab.training.lr_schedule import ScheduleKind

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

C = TypeVar("C", bound="DataclassInstance")


def require_at_least(key: str, value: int, least: int) -> None:
    """A ``ConfigError`` naming ``key`` unless ``value >= least``: a count that cannot be used."""
    if value < least:
        raise ConfigError(f"{key}: {value!r} is less than {least}")


@dataclasses.dataclass
class DataConfig:
    """Where the data is and how it becomes token ids; shared by every task."""

    VOCABULARY_FIELDS: ClassVar[tuple[str, ...]] = ("min_freq",)
    """Keys that shaped the saved vocabularies (with those of subclasses and mixins, see
    ``vocabulary_fields``): a resumed run keeps its vocabularies, so it cannot change them."""

    train: str = ""
    """Training data file (or file prefix for aligned parallel files)."""
    valid: str = ""
    """Validation data; empty to skip validation. Not inherited: naming data.train alone means none."""
    min_freq: int = 2
    """Tokens seen fewer times in training map to <unk>."""
    max_len: int = 50
    """Longer sequences are truncated to this many tokens (0 = no limit)."""
    max_examples: int = 0
    """Use only the first N training examples (0 = all)."""

    def __post_init__(self) -> None:
        if not self.train.strip():
            raise ConfigError("data.train: empty; name the training data file")
        for key in ("min_freq", "max_len", "max_examples"):
            require_at_least(f"data.{key}", getattr(self, key), 0)


@dataclasses.dataclass
class ModelConfig:
    """Sizes and recurrent cell; shared by every task."""

    cell: Literal["rnn", "gru", "lstm", "peephole_lstm", "coupled_lstm"] = "gru"
    """Recurrent cell type."""
    rnn_impl: Literal["fused", "scratch"] = "fused"
    """fused = torch.nn kernels; scratch = rnnlab.nn readable implementations."""
    embed_size: int = 32
    """Token embedding size."""
    hidden_size: int = 32
    """Recurrent hidden size."""
    num_layers: int = 2
    """Number of stacked recurrent layers."""
    dropout: float = 0.1
    """Dropout between recurrent layers and on embeddings/outputs."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout: {self.dropout!r} is outside [0, 1)")
        for key in ("embed_size", "hidden_size", "num_layers"):
            require_at_least(f"model.{key}", getattr(self, key), 1)


@dataclasses.dataclass
class TrainConfig:
    """The optimisation loop; shared by every task."""

    epochs: int = 10
    """Passes over the training data."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = no limit)."""
    max_minutes: float = 0.0
    """Stop after this much training wall-clock time, validation excluded (0 = no limit)."""
    batch_size: int = 64
    """Sentences (or streams, for language models) per batch."""
    lr: float = 0.005
    """Adam learning rate."""
    weight_decay: float = 0.0
    """Adam weight decay."""
    clip_norm: float = 1.0
    """Clip gradients to this global L2 norm (0 = no clipping)."""
    bucket: bool = True
    """Group sentences of similar length into batches so little compute goes to padding."""
    log_every: int = 50
    """Write a training record to metrics.jsonl every N steps."""
    valid_every: int = 0
    """Validate (and checkpoint) every N steps; 0 = at the end of every epoch."""
    patience: int = 0
    """Stop after this many validations without improvement (0 = never stop early)."""
    lr_decay: float = 1.0
    """Multiply the learning rate by this factor when validation stops improving (1 = constant)."""
    lr_patience: int = 0
    """Validations without improvement before the learning rate decays."""
    lr_schedule: ScheduleKind = "constant"
    """Anneal the learning rate to 0 over the run: linear or cosine in the fraction of the run done,
    the larger of steps done / planned steps (max_steps, else epochs) and training minutes /
    max_minutes, so a run with a time budget ends annealed whichever limit comes first."""
    warmup_steps: int = 0
    """Raise the learning rate linearly from 0 over the first N steps."""
    label_smoothing: float = 0.0
    """Label smoothing for the cross-entropy (0 = none)."""
    device: str = "auto"
    """auto (CUDA when present), cpu, or cuda[:N]."""
    num_threads: int = 0
    """Intra-op CPU threads (0 = PyTorch's default)."""
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    """bf16: bfloat16 autocast for the forward pass, float32 weights and optimizer state. auto: bf16
    where the device runs bfloat16 natively (CUDA; CPUs with AVX512-BF16 or AMX) and, on a CPU, a
    timed product runs it at least 1.25× as fast as float32 (``rnnlab.nn.precision.bf16_pays``),
    else fp32."""
    ema_decay: float = 0.0
    """Keep an exponential moving average of the weights with this decay per step (e.g. 0.999;
    0 = off). Validation reads the average and best/ holds it; last/ keeps the raw weights too."""

    def __post_init__(self) -> None:
        # Checked when the config is read, before any data is: a decay of 1 would never move.
        require_at_least("train.batch_size", self.batch_size, 1)
        require_at_least("train.epochs", self.epochs, 1)
        for key in ("max_steps", "warmup_steps", "valid_every", "patience", "lr_patience"):
            require_at_least(f"train.{key}", getattr(self, key), 0)
        require_at_least("train.log_every", self.log_every, 0)
        for key in ("lr", "weight_decay", "clip_norm", "max_minutes"):
            if not getattr(self, key) >= 0:  # also refuses nan
                raise ConfigError(f"train.{key}: {getattr(self, key)!r} is negative")
        for key in ("lr", "weight_decay"):  # one step at an infinite rate leaves nan weights
            if not math.isfinite(getattr(self, key)):
                raise ConfigError(f"train.{key}: {getattr(self, key)!r} is not a finite number")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"train.lr_decay: {self.lr_decay!r} is not in (0, 1]; 1 turns it off")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"train.label_smoothing: {self.label_smoothing!r} is outside [0, 1)")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(
                f"train.ema_decay: {self.ema_decay!r} is not in [0, 1); 0 turns it off"
            )


@dataclasses.dataclass
class PretrainedEmbeddingFields:
    """Model keys of tasks with one word embedding (tagger, language model); mixed into their model
    config after ``ModelConfig`` so the keys come last."""

    pretrained_embeddings: str = ""
    """Initialise word embeddings from this GloVe / word2vec / fastText file (text or binary, .gz ok)."""
    freeze_embeddings: bool = False
    """Keep the rows that got a pretrained vector fixed while training."""


@dataclasses.dataclass
class VocabFromEmbeddingsFields:
    """Data keys of tasks whose vocabulary may grow from the embedding file (tagger, language model)."""

    VOCABULARY_FIELDS: ClassVar[tuple[str, ...]] = (
        "extend_vocab_from_embeddings",
        "max_vocab_from_embeddings",
    )

    extend_vocab_from_embeddings: bool = False
    """Words of model.pretrained_embeddings missing from the training data join the vocabulary."""
    max_vocab_from_embeddings: int = 100000
    """At most this many words join from the embedding file, in file order (0 = no limit)."""


@dataclasses.dataclass
class RunConfig:
    """Fields every task's config has; task configs subclass this with their own sections."""

    task: str = ""
    """Task name: seq2seq, lm or tagger."""
    seed: int = 42
    """Seed for initialisation, shuffling and dropout."""

    def __post_init__(self) -> None:
        if not 0 <= self.seed < 2**63:  # what torch.manual_seed and NumPy both take
            raise ConfigError(f"seed: {self.seed!r} is not between 0 and 2**63 - 1")

    def check_new_run(self) -> None:
        """Checks of a config about to start training from scratch (``rnnlab train``, each tuning
        trial) that a saved run's config does not get: a run saved before such a check existed
        still evaluates, translates and resumes. A ``ConfigError`` names the key."""


# ---------------------------------------------------------------------------------------------------
# Loading


def _type_name(tp: Any) -> str:
    """A type as a config's reader would say it: ``'a' | 'b' or a list of 'a' | 'b'``."""
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple):
        (item_tp, *_) = get_args(tp) or (Any,)
        return f"a list of {_type_name(item_tp)}"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only where no information is lost."""
    if isinstance(value, OverrideText):
        value = value.resolve(tp)
    origin = get_origin(tp)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not one of {_type_name(tp)}")
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} is not {_type_name(tp)}")
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected null, got {value!r}")
        return None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string; a number is what was meant.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return from_dict(tp, value, prefix=f"{key}.")
    return value


def coerce_value(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` as a config loader would (search spaces)."""
    return _coerce(value, tp, key)


def from_dict(cls: type[C], data: Any, prefix: str = "") -> C:
    """Build dataclass ``cls`` from a nested dict, strictly (see the module docstring)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {prefix}{close[0]}?" if close else ""
            shown = str(key) if str(key).isprintable() else repr(key)  # a key may hold a newline
            raise ConfigError(f"unknown config key {prefix}{shown}{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The config as plain nested dicts, ready for YAML."""
    return dataclasses.asdict(config)


class OverrideText(str):
    """An override's text as typed, where YAML reads it as something else (``no`` → false,
    ``a #b`` → ``a``, ``2024-01-01`` → a date).

    Which one was meant depends on the key's type, known only when the config is built: a string
    key takes the text as typed (unless it was quoted), any other key what YAML read.
    """

    parsed: Any

    def __new__(cls, text: str, parsed: Any) -> OverrideText:
        value = super().__new__(cls, text)
        value.parsed = parsed
        return value

    def __getnewargs__(self) -> tuple[str, Any]:  # type: ignore[override]
        return (str(self), self.parsed)  # copies and pickles (a tuning study copies its base)

    def resolve(self, tp: Any) -> Any:
        quoted = self[:1] in ("'", '"')
        return str(self) if tp is str and not quoted else self.parsed


def _override_value(raw: str) -> Any:
    """An override's value: YAML's reading, or ``OverrideText`` where that is not the text."""
    text = raw.strip()
    if not text:
        return ""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return parsed if parsed == text else OverrideText(text, parsed)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.field=value`` overrides to a nested dict; values are parsed as YAML scalars
    (see ``OverrideText``)."""
    for item in overrides:
        if not isinstance(item, str):
            raise ConfigError(f"override {item!r} is not a key=value string")
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: {part} is not a section")
            node = child
        node[parts[-1]] = _override_value(raw)
    return data


def _yaml_error(path: Path, text: str, exc: yaml.YAMLError) -> str:
    """One line naming the file and line of a YAML error (PyYAML's own messages span lines)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        line, problem = mark.line + 1, getattr(exc, "problem", None) or exc
    elif isinstance(exc, yaml.reader.ReaderError):
        # A character YAML does not allow (control characters, NUL): located by its position.
        line = text.count("\n", 0, exc.position) + 1
        problem = f"character {exc.character!r} is not allowed"
    else:
        return f"{path}: invalid YAML ({' '.join(str(exc).split())})"
    return f"{path}:{line}: invalid YAML ({' '.join(str(problem).split())})"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader refusing a key written twice in one mapping (it would keep the last,
    and a whole section written twice would silently lose the first's settings)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<``: keys written here override
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: construct_mapping reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is written twice", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line ``ConfigError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except OSError as exc:  # a directory, no permission
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(path, text, exc)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections")
    return data


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None
) -> C:
    """Load ``cls`` from an optional YAML file plus overrides; errors name the file."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    named_data_only(data)
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        if path is not None:
            raise ConfigError(f"{path}: {exc}") from None
        raise


def named_data_only(data: dict[str, Any]) -> None:
    """Training data named without validation data means no validation, never the default's.

    The built-in ``data.valid`` belongs to the built-in training corpus: a German→English model
    retargeted with ``--set data.train=…`` must not be validated, and its best checkpoint chosen, on
    English→French sentences.
    """
    section = data.get("data")
    if isinstance(section, dict) and "train" in section and "valid" not in section:
        section["valid"] = ""


def vocabulary_fields(data_config: type) -> list[str]:
    """Every ``data.`` key that shaped a run's saved vocabularies, gathered over the class and
    its bases (each declares its own ``VOCABULARY_FIELDS``)."""
    found: list[str] = []
    for klass in reversed(data_config.__mro__):
        for name in vars(klass).get("VOCABULARY_FIELDS", ()):
            if name not in found:
                found.append(name)
    return [f"data.{name}" for name in found]


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (keys in schema order)."""
    atomic_write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docs written under each field, for ``rnnlab config --help``-style listings."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
            ):
                docs[node.target.id] = str(nxt.value.value)
    return docs


__all__ = [
    "DataConfig",
    "ModelConfig",
    "PretrainedEmbeddingFields",
    "RunConfig",
    "TrainConfig",
    "VocabFromEmbeddingsFields",
    "apply_overrides",
    "coerce_value",
    "field_docs",
    "from_dict",
    "load_config",
    "named_data_only",
    "read_yaml",
    "require_at_least",
    "save_config",
    "to_dict",
    "vocabulary_fields",
]
