"""Tuning spaces, studies and their reports; variable-length batching and data limits.

References are independent of the code under test: Optuna's own API (distributions, ``best_trial``),
brute force over random lengths and batch sizes (every example exactly once per epoch), the
textbook's sequential partitioning written out here, ``torch.nn.utils.rnn`` packing, and small
examples worked out by hand.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.config import from_dict
from rnnlab.data.batching import bucket_batches, pad_batch, sorted_batches
from rnnlab.data.lm_stream import random_batches, sequential_batches
from rnnlab.errors import ConfigError
from rnnlab.nn.by_lengths import final_states_by_lengths, reverse_within_lengths, run_by_lengths
from rnnlab.nn.masking import length_mask, masked_softmax, sequence_mask
from rnnlab.plotting import RunCurves, plot_learning_curves
from rnnlab.tasks.lm_config import LMConfig
from rnnlab.tasks.tagger_config import TaggerConfig
from rnnlab.tuning.report import format_table, plot_history, trial_rows
from rnnlab.tuning.space import load_space
from rnnlab.tuning.study import load_study, plan_study
from tests.cli_runner import assert_user_error, run_cli

REPO = Path(__file__).resolve().parents[2]
TM = REPO / "data" / "timemachine"
optuna.logging.set_verbosity(optuna.logging.ERROR)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def sampled(specs, trials: int = 40, seed: int = 0) -> tuple[list[dict], optuna.Study]:
    """Values a random sampler draws from ``specs``, and the study (for its distributions)."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    drawn = []
    for _ in range(trials):
        trial = study.ask()
        drawn.append({s.key: s.suggest(trial) for s in specs})
        study.tell(trial, 0.0)
    return drawn, study


# ---------------------------------------------------------------------------------------------------
# Search spaces


def test_space_types_bounds_and_steps_are_what_is_written(tmp_path: Path):
    specs = load_space(
        write(
            tmp_path / "space.yaml",
            "train.lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n"
            "model.hidden_size: {type: int, low: 16, high: 64, step: 16}\n"
            "model.dropout: {type: categorical, choices: [0, 0.5]}\n"
            "train.bptt: {type: int, low: 8, high: 8}\n",
        ),
        LMConfig,
    )
    drawn, study = sampled(specs)
    dists = study.trials[0].distributions
    assert dists["train.lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["model.hidden_size"] == optuna.distributions.IntDistribution(16, 64, step=16)
    for values in drawn:
        assert isinstance(values["train.lr"], float) and 1e-4 <= values["train.lr"] <= 1e-2
        assert type(values["model.hidden_size"]) is int
        assert values["model.hidden_size"] in (16, 32, 48, 64)
        # A float key's integer choice becomes a float, as the config would read it.
        assert values["model.dropout"] in (0.0, 0.5) and type(values["model.dropout"]) is float
        assert values["train.bptt"] == 8 and type(values["train.bptt"]) is int
    # Every drawn configuration is a valid config of the task.
    for values in drawn[:5]:
        data: dict = {"task": "lm"}
        for key, value in values.items():
            section, leaf = key.split(".")
            data.setdefault(section, {})[leaf] = value
        assert from_dict(LMConfig, data).train.bptt == 8


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train.bptt: {type: categorical, choices: [16, 16.5]}\n", "expected an integer"),
        ("train.bptt: {type: float, low: 8, high: 16}\n", "not a float setting"),
        ("train.lr: {type: int, low: 1, high: 2}\n", "not a int setting"),
        ("model.hidden_size: {type: int, low: 16, high: 64, step: 0.5}\n", "whole numbers"),
        ("model.tie_weights: {type: categorical, choices: [false, 1]}\n", "expected true or false"),
        ("model.cell: {type: categorical, choices: []}\n", "non-empty list"),
        ("train: {type: float, low: 0.1, high: 1}\n", "unknown config key train"),
        ("task: {type: categorical, choices: [lm]}\n", "task cannot be searched"),
    ],
)
def test_bad_spaces_are_rejected_naming_file_and_key(tmp_path: Path, text: str, needle: str):
    path = write(tmp_path / "space.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_space(path, LMConfig)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_space_errors_reach_the_user_as_one_line_with_exit_2(tmp_path, monkeypatch, capsys):
    config = write(tmp_path / "lm.yaml", yaml.safe_dump(_lm_config()))
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 0.001\n  high: [\n")
    out = tmp_path / "study"
    result = run_cli(
        monkeypatch, capsys, "tune", "--config", config, "--space", space, "--trials", 1,
        "--out", out,
    )  # fmt: skip
    assert_user_error(result, f"{space}:2:")
    assert not out.exists()


@pytest.mark.parametrize(
    "text",
    [
        "train.lr: {type: float, low: 0.001, high: 0.1, choices: [0.01]}\n",
        "model.cell: {type: categorical, choices: [gru, lstm], log: true}\n",
        "train.bptt: {type: categorical, choices: [16, 32], low: 8, high: 64, step: 8}\n",
    ],
)
def test_fields_foreign_to_the_type_are_rejected(tmp_path: Path, text: str):
    with pytest.raises(
        ConfigError, match=r"space.yaml: \S+: a \w+ takes no '(choices|log|high|low|step)'"
    ):
        load_space(write(tmp_path / "space.yaml", text), LMConfig)


@pytest.mark.parametrize(
    ("text", "key", "high", "top"),
    [
        (
            "model.hidden_size: {type: int, low: 16, high: 50, step: 16}\n",
            "model.hidden_size",
            50,
            48,
        ),
        (
            "model.dropout: {type: float, low: 0.0, high: 0.5, step: 0.2}\n",
            "model.dropout",
            0.5,
            0.4,
        ),
    ],
)
def test_a_range_not_divisible_by_step_is_refused(tmp_path, text, key, high, top):
    """Optuna would lower ``high`` to the grid with only a warning; the space names the value."""
    path = write(tmp_path / "space.yaml", text)
    with pytest.raises(ConfigError, match=f"{key}: high {high:g} .* would be {top:g}$"):
        load_space(path, LMConfig)


@pytest.mark.parametrize(
    ("text", "key", "high"),
    [
        ("model.hidden_size: {type: int, low: 16, high: 48, step: 16}\n", "model.hidden_size", 48),
        ("model.dropout: {type: float, low: 0.1, high: 0.5, step: 0.2}\n", "model.dropout", 0.5),
        ("train.lr: {type: float, low: 0.3, high: 0.9, step: 0.1}\n", "train.lr", 0.9),
    ],
)
def test_a_range_on_the_step_grid_is_searched_to_its_high(tmp_path, text, key, high):
    """Decimal steps: 0.1 + 2 × 0.2 is 0.5 and 0.3 + 6 × 0.1 is 0.9, as written."""
    specs = load_space(write(tmp_path / "space.yaml", text), LMConfig)
    _, study = sampled(specs, trials=1)
    assert study.trials[0].distributions[key].high == high


def test_an_int_log_range_with_step_one_is_accepted(tmp_path: Path):
    path = write(
        tmp_path / "space.yaml",
        "model.hidden_size: {type: int, low: 16, high: 512, log: true, step: 1}\n",
    )
    specs = load_space(path, LMConfig)
    _, study = sampled(specs, trials=1)
    assert study.trials[0].distributions["model.hidden_size"] == (
        optuna.distributions.IntDistribution(16, 512, log=True, step=1)
    )


@pytest.mark.parametrize(
    "text",
    [
        "data.max_len: {type: int, low: 10, high: 100}\n",
        "train.bucket: {type: categorical, choices: [true, false]}\n",
    ],
)
def test_a_key_the_task_ignores_cannot_be_searched(tmp_path: Path, text: str):
    path = write(tmp_path / "space.yaml", text)
    with pytest.raises(ConfigError, match="has no effect on this task's training"):
        load_space(path, LMConfig)


def test_shipped_spaces_search_only_declared_distributions():
    """Every shipped space's keys become Optuna distributions with exactly the written bounds."""
    for path in sorted((REPO / "configs" / "spaces").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        task = path.name.split("-")[0]
        from rnnlab.tasks import TASKS

        specs = load_space(path, TASKS[task].config_class)
        _, study = sampled(specs, trials=3)
        for key, dist in study.trials[0].distributions.items():
            written = raw[key]
            if written["type"] == "categorical":
                assert list(dist.choices) == written["choices"], (path, key)
            else:
                assert (dist.low, dist.high) == (written["low"], written["high"]), (path, key)
                assert dist.log == written.get("log", False), (path, key)


# ---------------------------------------------------------------------------------------------------
# Planning and running a study


def _lm_config(**data: object) -> dict:
    return {
        "task": "lm",
        "seed": 3,
        "data": {
            "train": str(TM / "train.txt"),
            "valid": str(TM / "valid.txt"),
            "max_examples": 120,
            **data,
        },
        "model": {"embed_size": 8, "hidden_size": 8},
        "train": {
            "epochs": 1,
            "max_steps": 6,
            "valid_every": 3,
            "batch_size": 8,
            "bptt": 16,
            "num_threads": 1,
            "device": "cpu",
        },
    }


def test_tuning_never_falls_back_to_the_bundled_validation_split(tmp_path: Path):
    own = write(tmp_path / "own.txt", "a tiny corpus of my own\n" * 50)
    config = _lm_config()
    config["data"] = {"train": str(own)}
    path = write(tmp_path / "lm.yaml", yaml.safe_dump(config))
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 0.001, high: 0.01}\n")
    with pytest.raises(ConfigError, match="needs validation data"):
        plan = plan_study(path, space, [])
        # What the trials would be validated on:
        pytest.fail(f"planned with data.valid={from_dict(LMConfig, plan.base).data.valid}")


def test_tuning_without_any_validation_data_is_refused(tmp_path: Path):
    config = _lm_config()
    config["data"]["valid"] = ""
    path = write(tmp_path / "lm.yaml", yaml.safe_dump(config))
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 0.001, high: 0.01}\n")
    with pytest.raises(ConfigError, match="needs validation data"):
        plan_study(path, space, [])


def test_a_study_of_a_minimised_metric_cannot_continue_as_a_maximised_one(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "study"
    out.mkdir()
    optuna.create_study(
        study_name="rnnlab", storage=f"sqlite:///{out / 'study.db'}", direction="minimize"
    )
    config = {
        "task": "tagger",
        "data": {"train": str(REPO / "data/ud-ewt-sample/train.conllu"), "valid": str(REPO / "data/ud-ewt-sample/dev.conllu")},
    }  # fmt: skip
    path = write(tmp_path / "tagger.yaml", yaml.safe_dump(config))
    space = write(tmp_path / "space.yaml", "train.lr: {type: float, low: 0.001, high: 0.01}\n")
    result = run_cli(
        monkeypatch, capsys, "tune", "--config", path, "--space", space, "--trials", 1,
        "--out", out,
    )  # fmt: skip
    assert_user_error(result, "created to minimize")
    assert not (out / "trial-000").exists()


def test_a_tiny_study_reports_the_best_validation_perplexity(tmp_path, monkeypatch, capsys):
    """End to end on a language model: the best trial is the one with the lowest validation
    perplexity in the trials' own metrics.jsonl, and the table and best.yaml agree with Optuna."""
    config = write(tmp_path / "lm.yaml", yaml.safe_dump(_lm_config()))
    space = write(
        tmp_path / "space.yaml",
        "train.lr: {type: float, low: 1.0e-3, high: 0.05, log: true}\n"
        "model.hidden_size: {type: int, low: 8, high: 16, step: 8}\n",
    )
    out = tmp_path / "study"
    result = run_cli(
        monkeypatch, capsys, "tune", "--config", config, "--space", space, "--trials", 3,
        "--out", out, "--startup-trials", 3,
    )  # fmt: skip
    assert result.code == 0, result
    study = load_study(out)
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert len(study.trials) == 3
    best_ppl = {}
    for trial in study.trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE
        records = [
            json.loads(line)
            for line in (out / trial.user_attrs["run_dir"] / "metrics.jsonl")
            .read_text()
            .splitlines()
        ]
        ppl = [r["valid_ppl"] for r in records if "valid_ppl" in r]
        assert ppl and trial.value == pytest.approx(min(ppl))
        best_ppl[trial.number] = min(ppl)
        # The trial's config holds the values Optuna records for it.
        saved = yaml.safe_load((out / trial.user_attrs["run_dir"] / "config.yaml").read_text())
        assert saved["train"]["lr"] == pytest.approx(trial.params["train.lr"])
        assert saved["model"]["hidden_size"] == trial.params["model.hidden_size"]
        # Tuning never reads a test split, only data.valid.
        assert saved["data"]["valid"] == str(TM / "valid.txt")
    winner = min(best_ppl, key=best_ppl.__getitem__)
    assert study.best_trial.number == winner
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best == yaml.safe_load((out / f"trial-{winner:03d}" / "config.yaml").read_text())
    table = result.out.splitlines()
    assert table[-1].startswith(f"best: trial {winner} valid_ppl={best_ppl[winner]:.4f}")
    # A second call with the same --trials runs nothing more.
    again = run_cli(
        monkeypatch, capsys, "tune", "--config", config, "--space", space, "--trials", 3,
        "--out", out,
    )  # fmt: skip
    assert again.code == 0 and len(load_study(out).trials) == 3


# ---------------------------------------------------------------------------------------------------
# Reports and plots


def _trial(number, state, value=None, intermediate=None, params=None):
    dists = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}
    return optuna.trial.create_trial(
        state=state,
        value=value,
        params=params if params is not None else {"x": number / 10},
        distributions=dists,
        intermediate_values=intermediate or {},
        user_attrs={"run_dir": f"trial-{number:03d}"},
    )


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_report_best_line_and_rows_follow_optunas_best_trial(direction):
    study = optuna.create_study(direction=direction)
    TS = optuna.trial.TrialState
    # A pruned trial whose last intermediate value beats every completed one must not be best.
    great = 99.0 if direction == "maximize" else -99.0
    study.add_trial(_trial(0, TS.COMPLETE, 0.3))
    study.add_trial(_trial(1, TS.PRUNED, intermediate={1: great, 2: great}))
    study.add_trial(_trial(2, TS.COMPLETE, 0.7))
    study.add_trial(_trial(3, TS.FAIL, intermediate={1: great}))
    study.add_trial(_trial(4, TS.COMPLETE, 0.5))
    expected = 2 if direction == "maximize" else 0
    assert study.best_trial.number == expected
    table = format_table(study, "valid_bleu").splitlines()
    value = study.best_trial.value
    assert table[-1] == f"best: trial {expected} valid_bleu={value:.4f} (best.yaml)"
    rows = trial_rows(study)
    assert [r["metric"] for r in rows] == [0.3, great, 0.7, great, 0.5]
    assert [r["state"] for r in rows] == ["complete", "pruned", "complete", "fail", "complete"]


def test_history_plot_draws_best_so_far_in_the_studys_direction(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = {}
    step = matplotlib.axes.Axes.step

    def spy(self, x, y, *args, **kwargs):
        drawn["best"] = (list(x), list(y))
        return step(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "step", spy)
    study = optuna.create_study(direction="maximize")
    for number, value in enumerate([0.2, 0.5, 0.4, 0.9, 0.1]):
        study.add_trial(_trial(number, optuna.trial.TrialState.COMPLETE, value))
    plot_history(study, tmp_path / "history.png", metric="valid_accuracy")
    assert drawn["best"] == ([0, 1, 2, 3, 4], [0.2, 0.5, 0.5, 0.9, 0.9])
    assert (tmp_path / "history.png").stat().st_size > 0


@pytest.mark.parametrize(
    "states",
    [[], ["fail"], ["pruned_no_values"], ["complete"]],
    ids=["empty", "only-failed", "pruned-without-values", "one-point"],
)
def test_history_plot_writes_a_png_for_degenerate_studies(tmp_path, png_size, states):
    study = optuna.create_study()
    TS = optuna.trial.TrialState
    for number, state in enumerate(states):
        if state == "complete":
            study.add_trial(_trial(number, TS.COMPLETE, 1.5))
        elif state == "fail":
            study.add_trial(_trial(number, TS.FAIL))
        else:
            study.add_trial(_trial(number, TS.PRUNED))
    path = plot_history(study, tmp_path / "history.png", metric="valid_ppl")
    assert png_size(path) == (700, 450)


def test_learning_curves_survive_one_point_nan_and_inf(tmp_path, png_size):
    records = [
        {"step": 1, "minutes": 0.01, "train_loss": float("nan"), "lr": 0.1},
        {"step": 1, "minutes": 0.01, "valid_loss": float("inf"), "valid_ppl": float("nan")},
    ]
    for x in ("step", "minutes"):
        path = plot_learning_curves(
            [RunCurves("a", records, "valid_ppl"), RunCurves("b", records[:1], "valid_ppl")],
            tmp_path / f"curves-{x}.png",
            x=x,  # type: ignore[arg-type]
        )
        assert png_size(path) == (1500, 450)
    assert not list(tmp_path.glob(".*.tmp"))


def test_plot_of_a_run_without_records_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    run.mkdir()
    write(
        run / "config.yaml",
        yaml.safe_dump({"task": "lm", "data": {"train": str(TM / "train.txt")}}),
    )
    result = run_cli(monkeypatch, capsys, "plot", run, "--out", tmp_path / "c.png")
    assert_user_error(result, "no training records")
    assert not (tmp_path / "c.png").exists()


# ---------------------------------------------------------------------------------------------------
# Length-bucketed batches


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=0, max_value=60), max_size=400),
    batch_size=st.integers(min_value=1, max_value=70),
    shuffle=st.booleans(),
    bucket=st.booleans(),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_bucket_batches_use_every_example_exactly_once(lengths, batch_size, shuffle, bucket, seed):
    batches = bucket_batches(lengths, batch_size, shuffle=shuffle, bucket=bucket, seed=seed)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert batches == bucket_batches(lengths, batch_size, shuffle=shuffle, bucket=bucket, seed=seed)
    if not shuffle:
        if bucket:  # one sorted pass over the whole set
            assert [lengths[i] for i in flat] == sorted(lengths)
        else:
            assert flat == list(range(len(lengths)))
    # Only the last batch of a chunk may be short: at most one per chunk.
    chunk = batch_size * 50 if (shuffle and bucket) else max(len(lengths), 1)
    short = sum(1 for b in batches if len(b) < batch_size)
    assert short <= max(1, math.ceil(len(lengths) / chunk))


def test_bucketed_batches_hold_similar_lengths():
    rng = random.Random(5)
    lengths = [rng.randint(1, 50) for _ in range(3000)]
    batches = bucket_batches(lengths, 32, seed=1)
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert sum(spread) / len(spread) <= 2
    unbucketed = bucket_batches(lengths, 32, seed=1, bucket=False)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    assert padded < sum(len(b) * max(lengths[i] for i in b) for b in unbucketed)


@settings(max_examples=150, deadline=None)
@given(
    lengths=st.lists(st.integers(min_value=1, max_value=40), max_size=300),
    batch_size=st.integers(min_value=1, max_value=50),
    max_tokens=st.integers(min_value=0, max_value=400),
)
def test_sorted_batches_keep_the_token_limit_and_every_item(lengths, batch_size, max_tokens):
    batches = sorted_batches(lengths, batch_size, max_tokens=max_tokens)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    for b in batches:
        assert 1 <= len(b) <= batch_size
        padded = len(b) * max(lengths[i] for i in b)
        if max_tokens > 0 and len(b) > 1:
            assert padded <= max_tokens
    # Greedy: each batch but the last could not have taken the next item.
    for b, nxt in zip(batches, batches[1:], strict=False):
        first_next = lengths[nxt[0]]
        assert len(b) == batch_size or (max_tokens > 0 and (len(b) + 1) * first_next > max_tokens)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(min_value=1, max_value=99), max_size=12), max_size=10))
def test_pad_batch_places_tokens_where_the_mask_says(sequences):
    ids, lengths = pad_batch(sequences, pad_id=0)
    assert lengths.tolist() == [len(s) for s in sequences]
    width = max((len(s) for s in sequences), default=0)
    assert tuple(ids.shape) == (len(sequences), width)
    mask = length_mask(lengths, width)
    for row, seq in enumerate(sequences):
        assert ids[row, : len(seq)].tolist() == seq
        assert ids[row, len(seq) :].eq(0).all()
        assert mask[row].tolist() == [t < len(seq) for t in range(width)]


def test_masks_and_masked_softmax_by_hand():
    lengths = torch.tensor([2, 0, 3])
    assert length_mask(lengths).tolist() == [
        [True, True, False],
        [False, False, False],
        [True, True, True],
    ]
    x = torch.arange(1.0, 10.0).view(3, 3)
    assert sequence_mask(x, lengths, value=-1).tolist() == [
        [1.0, 2.0, -1.0],
        [-1.0, -1.0, -1.0],
        [7.0, 8.0, 9.0],
    ]
    weights = masked_softmax(torch.zeros(3, 2, 3), lengths)
    assert torch.allclose(weights[0], torch.tensor([[0.5, 0.5, 0.0]] * 2))
    assert torch.equal(weights[1], torch.zeros(2, 3))  # no valid key: zeros, not NaN
    assert torch.allclose(weights[2], torch.full((2, 3), 1 / 3))


# ---------------------------------------------------------------------------------------------------
# Running recurrent stacks by lengths


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_run_by_lengths_equals_packing_with_gradients(cell: str):
    torch.manual_seed(0)
    make = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
    rnn = make(5, 7, num_layers=2, bidirectional=True, batch_first=True)
    lengths = torch.tensor([6, 1, 4, 6, 2, 3])
    inputs = torch.randn(6, 6, 5)
    outputs, final = run_by_lengths(rnn, inputs, lengths)  # the padded path (gradients on)
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    ref_out, ref_state = rnn(packed)
    ref_out, _ = pad_packed_sequence(ref_out, batch_first=True, total_length=6)
    ref_final = ref_state[0] if isinstance(ref_state, tuple) else ref_state
    torch.testing.assert_close(outputs, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(final, ref_final, atol=1e-5, rtol=1e-5)
    grouped = final_states_by_lengths(rnn, inputs, lengths, length_groups=2)
    torch.testing.assert_close(grouped, ref_final, atol=1e-5, rtol=1e-5)


def test_reverse_within_lengths_by_hand():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]]).unsqueeze(2)
    got = reverse_within_lengths(x, torch.tensor([3, 2, 4])).squeeze(2)
    assert got.tolist() == [[3, 2, 1, 0], [5, 4, 0, 0], [9, 8, 7, 6]]
    assert torch.equal(reverse_within_lengths(got.unsqueeze(2), torch.tensor([3, 2, 4])), x)


# ---------------------------------------------------------------------------------------------------
# Language-model streams against the textbook


def textbook_sequential(corpus: list[int], batch_size: int, num_steps: int, offset: int):
    """d2l's ``seq_data_iter_sequential`` with a given offset (it draws one at random)."""
    num_tokens = ((len(corpus) - offset - 1) // batch_size) * batch_size
    xs = torch.tensor(corpus[offset : offset + num_tokens]).reshape(batch_size, -1)
    ys = torch.tensor(corpus[offset + 1 : offset + 1 + num_tokens]).reshape(batch_size, -1)
    num_batches = xs.shape[1] // num_steps
    for i in range(0, num_steps * num_batches, num_steps):
        yield xs[:, i : i + num_steps], ys[:, i : i + num_steps]


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=400),
    batch_size=st.integers(min_value=1, max_value=9),
    bptt=st.integers(min_value=1, max_value=20),
    data=st.data(),
)
def test_sequential_batches_match_the_textbooks_partitioning(n, batch_size, bptt, data):
    if (n - 1) // batch_size < 1:
        return
    offset = data.draw(st.integers(min_value=0, max_value=bptt - 1))
    if (n - offset - 1) // batch_size < 1:
        offset = 0  # the documented fallback
    corpus = [random.Random(n).randrange(1000) for _ in range(n)]
    ids = torch.tensor(corpus)
    ours = sequential_batches(ids, batch_size=batch_size, bptt=bptt, offset=offset)
    theirs = list(textbook_sequential(corpus, batch_size, bptt, offset))
    # The full-length batches are the textbook's; a shorter last batch keeps the textbook's tail.
    assert len(ours) in (len(theirs), len(theirs) + 1)
    for (x, y), (tx, ty) in zip(ours, theirs, strict=False):
        assert torch.equal(x, tx) and torch.equal(y, ty)
    # Across batch boundaries each stream is contiguous: no token skipped or repeated.
    rows = torch.cat([x for x, _ in ours], dim=1)
    length = (n - offset - 1) // batch_size
    assert torch.equal(rows, ids[offset : offset + batch_size * length].view(batch_size, length))


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(min_value=2, max_value=400),
    batch_size=st.integers(min_value=1, max_value=9),
    bptt=st.integers(min_value=1, max_value=20),
    seed=st.integers(min_value=0, max_value=10_000),
)
def test_random_batches_cover_disjoint_pieces(n, batch_size, bptt, seed):
    if (n - 1) // bptt < 1:
        with pytest.raises(ValueError):
            random_batches(torch.arange(n), batch_size=batch_size, bptt=bptt, seed=seed)
        return
    offset = seed % bptt
    if (n - offset - 1) // bptt < 1:
        offset = 0
    batches = random_batches(
        torch.arange(n), batch_size=batch_size, bptt=bptt, offset=offset, seed=seed
    )
    starts = sorted(int(row[0]) for x, _ in batches for row in x)
    count = (n - offset - 1) // bptt
    assert starts == [offset + k * bptt for k in range(count)]
    assert all(x.size(0) <= batch_size for x, _ in batches)
    assert all(torch.equal(y, x + 1) for x, y in batches)


# ---------------------------------------------------------------------------------------------------
# Data limits: train and valid


def _conllu(sentences: list[list[str]]) -> str:
    blocks = []
    for words in sentences:
        lines = [f"{i}\t{w}\t_\tNOUN\tNN\t_\t0\troot\t_\t_" for i, w in enumerate(words, start=1)]
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks) + "\n"


def test_tagger_limits_cut_training_sentences_only(tmp_path: Path):
    from rnnlab.tasks.tagger import TaggerTask

    rng = random.Random(3)
    train = [[f"w{rng.randrange(30)}" for _ in range(rng.randint(1, 13))] for _ in range(9)]
    valid = [[f"w{rng.randrange(30)}" for _ in range(n)] for n in (12, 1, 7)]
    config = from_dict(
        TaggerConfig,
        {
            "task": "tagger",
            "data": {
                "train": str(write(tmp_path / "train.conllu", _conllu(train))),
                "valid": str(write(tmp_path / "dev.conllu", _conllu(valid))),
                "max_len": 5,
                "max_examples": 6,
                "min_freq": 1,
            },
        },
    )
    task = TaggerTask(config, tmp_path)
    task.prepare_training()
    pieces = task.train_data.words
    assert all(1 <= len(p) <= 5 for p in pieces)
    # The first 6 sentences, cut into pieces of 5 in order: no word dropped or repeated.
    assert [w for p in pieces for w in p] == [w for s in train[:6] for w in s]
    assert len(pieces) == sum(math.ceil(len(s) / 5) for s in train[:6])
    # Validation is scored on whole sentences, never cut.
    assert task.valid_data.words == valid


def test_seq2seq_max_len_truncates_train_and_valid_alike(tmp_path: Path):
    from rnnlab.tasks.seq2seq import Seq2SeqTask
    from rnnlab.tasks.seq2seq_config import Seq2SeqConfig
    from tests.conftest import reverse_pairs, write_tsv

    train = write_tsv(tmp_path / "train.tsv", reverse_pairs(40, seed=1, min_len=1, max_len=9))
    valid_pairs = reverse_pairs(15, seed=2, min_len=1, max_len=9)
    valid = write_tsv(tmp_path / "valid.tsv", valid_pairs)
    config = from_dict(
        Seq2SeqConfig,
        {
            "task": "seq2seq",
            "data": {
                "train": str(train),
                "valid": str(valid),
                "tsv_langs": ["en", "fr"],
                "min_freq": 1,
                "max_len": 4,
                "max_examples": 25,
            },
        },
    )
    task = Seq2SeqTask(config, tmp_path)
    task.prepare_training()
    eos = task.src_vocab.eos_id
    assert len(task.train_data.src) == 25
    for data, pairs in ((task.train_data, None), (task.valid_data, valid_pairs)):
        for i, (src, tgt) in enumerate(zip(data.src, data.tgt, strict=True)):
            assert src[-1] == eos and len(src) <= 5 and len(tgt) <= 5
            if pairs is not None:
                assert len(src) == min(len(pairs[i][0].split()), 4) + 1
    # BLEU references keep the whole target sentence.
    assert task.valid_data.references == [t for _, t in valid_pairs]
    # Every training pair is in exactly one batch of an epoch.
    batches = task.train_batches(0)
    assert sum(b.src.size(0) for b in batches) == 25
    for b in batches:
        assert torch.equal(b.src_lengths, (b.src != task.src_vocab.pad_id).sum(1))
        assert torch.equal(b.tgt_lengths, (b.tgt_out != task.tgt_vocab.pad_id).sum(1))


@settings(max_examples=200, deadline=None)
@given(
    text=st.lists(st.sampled_from(["a", "b", "é", "\n", "\r\n"]), max_size=40).map("".join),
    limit=st.integers(min_value=1, max_value=8),
)
def test_read_limited_lines_cuts_and_counts_like_split_lines(text: str, limit: int):
    import io

    from rnnlab.data.limits import read_limited_lines

    stream = io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8")
    got = [(line.text, line.length, line.cut) for line in read_limited_lines(stream, limit)]
    pieces = text.replace("\r\n", "\n").split("\n")
    if pieces[-1] == "":
        pieces.pop()
    assert got == [(p[:limit], len(p), len(p) > limit) for p in pieces]
