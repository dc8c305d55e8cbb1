"""What a study leaves behind (``rnnlab.tuning.report``): the trial rows, the ``--report`` table,
``best.yaml`` and the history and importance plots.

Studies are tiny in-memory Optuna studies whose trials are written by hand (values, states, times,
intermediate values), so nothing is trained. References: tables and best-so-far curves worked out by
hand, Optuna's own ``best_trial`` and ``get_param_importances``, and the data drawn on the figures.
"""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import optuna
import pytest
from matplotlib.figure import Figure
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from rnnlab.tuning import report
from rnnlab.tuning.report import (
    BEST_FILE,
    format_table,
    plot_history,
    plot_importance,
    trial_rows,
    write_outputs,
)

matplotlib.use("Agg")
optuna.logging.set_verbosity(optuna.logging.WARNING)

START = datetime.datetime(2024, 5, 1, 12, 0, 0)
DISTRIBUTIONS = {"lr": FloatDistribution(1e-5, 1.0, log=True), "layers": IntDistribution(1, 4)}


def frozen(
    number: int,
    state: TrialState,
    *,
    value: float | None = None,
    params: dict[str, Any],
    seconds: float = 60.0,
    intermediate: dict[int, float] | None = None,
    attrs: dict[str, Any] | None = None,
) -> FrozenTrial:
    """A finished trial as Optuna stores it, lasting ``seconds``, with run_dir ``trial-NNN``."""
    return FrozenTrial(
        number=number,
        state=state,
        value=value,
        datetime_start=START,
        datetime_complete=START + datetime.timedelta(seconds=seconds),
        params=params,
        distributions={name: DISTRIBUTIONS[name] for name in params},
        user_attrs={"run_dir": f"trial-{number:03d}", **(attrs or {})},
        system_attrs={},
        intermediate_values=intermediate or {},
        trial_id=number,
    )


def study_of(trials: list[FrozenTrial], direction: str = "minimize") -> optuna.Study:
    study = optuna.create_study(direction=direction)
    for trial in trials:
        study.add_trial(trial)
    return study


def five_trials(direction: str = "minimize") -> optuna.Study:
    """Two completed trials, one pruned, one failed, one interrupted by Ctrl-C."""
    return study_of(
        [
            frozen(
                0,
                TrialState.COMPLETE,
                value=0.5,
                params={"lr": 0.001234567, "layers": 2},
                seconds=90,
            ),
            frozen(
                1,
                TrialState.PRUNED,
                params={"lr": 0.1, "layers": 1},
                seconds=15,
                # Given out of order: the pruned trial stopped at step 3, not at the last key given.
                intermediate={1: 0.9, 3: 0.7, 2: 0.8},
            ),
            frozen(
                2,
                TrialState.FAIL,
                params={"lr": 0.01, "layers": 3},
                seconds=3,
                attrs={"error": "tie_weights needs embed_size == hidden_size"},
            ),
            frozen(
                3,
                TrialState.FAIL,
                params={"lr": 0.02, "layers": 2},
                seconds=120,
                attrs={"interrupted": True},
            ),
            frozen(
                4,
                TrialState.COMPLETE,
                value=0.25,
                params={"lr": 0.0005, "layers": 4},
                seconds=600,
            ),
        ],
        direction,
    )


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[Figure]:
    """Every figure the report closes, kept so that what was drawn on it can be read back."""
    figures: list[Figure] = []
    close = plt.close

    def keep_and_close(fig: Any = None) -> None:
        if isinstance(fig, Figure):
            figures.append(fig)
        close(fig)

    monkeypatch.setattr(plt, "close", keep_and_close)
    return figures


def test_trial_rows_by_hand() -> None:
    rows = trial_rows(five_trials())
    assert [row["number"] for row in rows] == [0, 1, 2, 3, 4]
    assert [row["state"] for row in rows] == [
        "complete",
        "pruned",
        "fail",
        "interrupted",
        "complete",
    ]
    # A pruned trial's metric is where it stopped (its last step); a failed one has none.
    assert [row["metric"] for row in rows] == [0.5, 0.7, None, None, 0.25]
    assert [row["minutes"] for row in rows] == pytest.approx([1.5, 0.25, 0.05, 2.0, 10.0])
    assert rows[0]["params"] == {"lr": 0.001234567, "layers": 2}
    assert [row["run_dir"] for row in rows] == [f"trial-00{i}" for i in range(5)]
    error = "tie_weights needs embed_size == hidden_size"
    assert [row["error"] for row in rows] == ["", "", error, "", ""]


def test_trial_rows_of_a_trial_that_never_started() -> None:
    study = study_of([])
    study.enqueue_trial({"layers": 1})  # waiting: no start time, no value, no attributes
    [row] = trial_rows(study)
    assert row["state"] == "waiting"
    assert row["minutes"] is None and row["metric"] is None
    assert row["run_dir"] == "" and row["error"] == ""


def test_format_table_by_hand() -> None:
    # Columns start at 0, 7, 20, 31 and 40: each is as wide as its widest cell, two spaces apart.
    expected = [
        "trial  state        valid_ppl  minutes  parameters",
        "0      complete     0.5000     1.50     lr=0.001235 layers=2",
        "1      pruned       0.7000     0.25     lr=0.1 layers=1",
        "2      fail                    0.05     lr=0.01 layers=3  "
        "[tie_weights needs embed_size == hidden_size]",
        "3      interrupted             2.00     lr=0.02 layers=2",
        "4      complete     0.2500     10.00    lr=0.0005 layers=4",
        "best: trial 4 valid_ppl=0.2500 (best.yaml)",
    ]
    assert format_table(five_trials(), "valid_ppl").split("\n") == expected


def test_format_table_names_the_best_trial_the_way_optuna_does() -> None:
    for direction, best_number in (("minimize", 4), ("maximize", 0)):
        study = five_trials(direction)
        assert study.best_trial.number == best_number  # the reference
        last = format_table(study, "valid_bleu").split("\n")[-1]
        value = study.best_trial.value
        assert last == f"best: trial {best_number} valid_bleu={value:.4f} ({BEST_FILE})"


def test_format_table_of_an_empty_study_is_the_header_alone() -> None:
    assert format_table(study_of([]), "valid_ppl") == "trial  state  valid_ppl  minutes  parameters"


def test_format_table_without_a_completed_trial_has_no_best_line() -> None:
    study = study_of([frozen(0, TrialState.FAIL, params={"layers": 2}, seconds=30)])
    assert format_table(study, "m").split("\n") == [
        "trial  state  m  minutes  parameters",
        "0      fail      0.50     layers=2",
    ]


def line_data(figure: Figure, label: str) -> tuple[list[float], list[float]]:
    [axes] = figure.axes
    [line] = [line for line in axes.get_lines() if line.get_label() == label]
    return [float(x) for x in line.get_xdata()], [float(y) for y in line.get_ydata()]


@pytest.mark.parametrize(
    "direction,best_so_far",
    # Completed values by trial number: 0 → 0.5, 4 → 0.25, 5 → 0.4, 6 → 0.6.
    [("minimize", [0.5, 0.25, 0.25, 0.25]), ("maximize", [0.5, 0.5, 0.5, 0.6])],
)
def test_history_plot_draws_completed_pruned_and_best_so_far(
    tmp_path: Path,
    drawn: list[Figure],
    png_size: Callable[[Path], tuple[int, int]],
    direction: str,
    best_so_far: list[float],
) -> None:
    study = five_trials(direction)
    for number, value in ((5, 0.4), (6, 0.6)):
        study.add_trial(
            frozen(number, TrialState.COMPLETE, value=value, params={"layers": 1}, seconds=1)
        )
    # A pruned trial that never reported a value has no point to draw.
    study.add_trial(frozen(7, TrialState.PRUNED, params={"layers": 1}))

    path = plot_history(study, tmp_path / "history.png", metric="valid_ppl")
    assert path == tmp_path / "history.png"
    assert png_size(path) == (700, 450)
    [figure] = drawn
    assert line_data(figure, "completed") == ([0, 4, 5, 6], [0.5, 0.25, 0.4, 0.6])
    assert line_data(figure, "best so far") == ([0, 4, 5, 6], best_so_far)
    # Failed and interrupted trials are not drawn; the pruned one is, where it stopped.
    assert line_data(figure, "pruned") == ([1], [0.7])
    assert figure.axes[0].get_ylabel() == "valid_ppl"


def test_history_plot_of_an_empty_study_is_still_written(
    tmp_path: Path, drawn: list[Figure], png_size: Callable[[Path], tuple[int, int]]
) -> None:
    path = plot_history(study_of([]), tmp_path / "history.png", metric="m")
    assert png_size(path) == (700, 450)
    [figure] = drawn
    assert len(figure.axes[0].get_lines()) == 0 and figure.axes[0].get_legend() is None


def quadratic_study(n: int, *, same_params: bool = False) -> optuna.Study:
    """The metric is lr² alone; layers is noise that alternates between two values."""
    trials = []
    for number in range(n):
        lr = 0.5 if same_params else 0.1 * (number + 1)
        params = {"lr": lr, "layers": 1 if same_params else 1 + number % 2}
        trials.append(frozen(number, TrialState.COMPLETE, value=lr**2, params=params))
    return study_of(trials)


def bars(figure: Figure) -> dict[str, tuple[float, float]]:
    """Bar label → (vertical position, length) of a horizontal bar chart."""
    [axes] = figure.axes
    labels = [tick.get_text() for tick in axes.get_yticklabels()]
    positions = [float(tick) for tick in axes.get_yticks()]
    label_at = dict(zip(positions, labels, strict=True))
    return {
        label_at[patch.get_y() + patch.get_height() / 2]: (
            patch.get_y() + patch.get_height() / 2,
            patch.get_width(),
        )
        for patch in axes.patches
    }


def test_importance_plot_shows_optunas_importances_most_important_on_top(
    tmp_path: Path, drawn: list[Figure], png_size: Callable[[Path], tuple[int, int]]
) -> None:
    study = quadratic_study(6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
        )
    assert reference["lr"] > reference["layers"]  # the metric depends on lr only
    path = plot_importance(study, tmp_path / "importance.png")
    assert path is not None and png_size(path) == (700, 450)
    [figure] = drawn
    shown = bars(figure)
    assert set(shown) == {"lr", "layers"}
    for name, (_, width) in shown.items():
        assert width == pytest.approx(reference[name])
    assert shown["lr"][0] > shown["layers"][0]  # matplotlib's y grows upwards: lr is on top


def text_of(figure: Figure) -> str:
    return " ".join(text.get_text() for text in figure.axes[0].texts)


def test_importance_plot_without_completed_trials_says_why(
    tmp_path: Path, drawn: list[Figure], png_size: Callable[[Path], tuple[int, int]]
) -> None:
    study = study_of([frozen(0, TrialState.FAIL, params={"layers": 2})])
    path = plot_importance(study, tmp_path / "importance.png")
    assert path is not None and png_size(path) == (700, 450)
    [figure] = drawn
    assert len(figure.axes[0].patches) == 0
    assert "needs two completed trials" in text_of(figure)


@pytest.mark.parametrize(
    "study_maker",
    [lambda: quadratic_study(1), lambda: quadratic_study(3, same_params=True)],
    ids=["one-completed-trial", "parameters-never-differ"],
)
def test_importance_plot_needs_two_completed_trials_that_differ(
    tmp_path: Path, drawn: list[Figure], study_maker: Callable[[], optuna.Study]
) -> None:
    plot_importance(study_maker(), tmp_path / "importance.png")
    [figure] = drawn
    assert len(figure.axes[0].patches) == 0
    assert "needs two completed trials" in text_of(figure)


@pytest.fixture
def plotted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The plots ``write_outputs`` asks for, by file name; the plots themselves are tested above."""
    names: list[str] = []

    def record(study: Any, path: Path, **_: Any) -> Path:
        names.append(path.name)
        return path

    monkeypatch.setattr(report, "plot_history", record)
    monkeypatch.setattr(report, "plot_importance", record)
    return names


def test_write_outputs_copies_the_best_trials_config(tmp_path: Path, plotted: list[str]) -> None:
    study = five_trials()
    for number in (0, 4):
        run_dir = tmp_path / f"trial-{number:03d}"
        run_dir.mkdir()
        (run_dir / "config.yaml").write_text(f"trial: {number}\n", encoding="utf-8")
    write_outputs(study, tmp_path, metric="valid_ppl")
    # Trial 4 has the lowest value of a minimised metric.
    assert (tmp_path / BEST_FILE).read_text(encoding="utf-8") == "trial: 4\n"
    assert sorted(plotted) == ["history.png", "importance.png"]


@pytest.mark.parametrize("case", ["best-run-lacks-config", "no-completed-trial"])
def test_write_outputs_without_a_best_config_writes_only_the_plots(
    tmp_path: Path, plotted: list[str], case: str
) -> None:
    if case == "best-run-lacks-config":
        study = five_trials()
        (tmp_path / "trial-000").mkdir()  # a worse trial's config must not stand in for the best
        (tmp_path / "trial-000" / "config.yaml").write_text("trial: 0\n", encoding="utf-8")
    else:
        study = study_of([frozen(0, TrialState.FAIL, params={"layers": 2})])
    write_outputs(study, tmp_path, metric="valid_ppl")
    assert not (tmp_path / BEST_FILE).exists()
    assert sorted(plotted) == ["history.png", "importance.png"]
