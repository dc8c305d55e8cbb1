"""What a study leaves behind: ``best.yaml``, a table of trials, history and importance plots."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

from rnnlab.plotting import DPI

BEST_FILE = "best.yaml"


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, metric, parameters, minutes, run directory."""
    rows = []
    for t in study.trials:
        minutes = None
        if t.datetime_start is not None and t.datetime_complete is not None:
            minutes = (t.datetime_complete - t.datetime_start).total_seconds() / 60.0
        state = "interrupted" if t.user_attrs.get("interrupted") else t.state.name.lower()
        metric = t.value
        if metric is None and t.intermediate_values:
            metric = t.intermediate_values[
                max(t.intermediate_values)
            ]  # where a pruned trial stopped
        rows.append(
            {
                "number": t.number,
                "state": state,
                "metric": metric,
                "params": dict(t.params),
                "minutes": minutes,
                "run_dir": t.user_attrs.get("run_dir", ""),
                "error": t.user_attrs.get("error", ""),
            }
        )
    return rows


def format_table(study: Any, metric: str) -> str:
    """The trials as an aligned text table (``rnnlab tune --report``)."""
    rows = trial_rows(study)
    header = ["trial", "state", metric, "minutes", "parameters"]
    lines = [header]
    for r in rows:
        params = " ".join(f"{k}={_short(v)}" for k, v in r["params"].items())
        if r["error"]:
            params += f"  [{r['error']}]"
        lines.append(
            [
                str(r["number"]),
                r["state"],
                "" if r["metric"] is None else f"{r['metric']:.4f}",
                "" if r["minutes"] is None else f"{r['minutes']:.2f}",
                params,
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(4)]
    text = [
        "  ".join(cell.ljust(w) for cell, w in zip(line[:4], widths, strict=True)) + "  " + line[4]
        for line in lines
    ]
    best = _best(study)
    if best is not None:
        text.append(f"best: trial {best.number} {metric}={best.value:.4f} ({BEST_FILE})")
    return "\n".join(line.rstrip() for line in text)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _best(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:  # no completed trial yet
        return None


def write_outputs(study: Any, out: Path, *, metric: str) -> None:
    """``best.yaml`` (the best trial's complete config), ``history.png`` and ``importance.png``."""
    best = _best(study)
    if best is not None:
        source = out / best.user_attrs.get("run_dir", "") / "config.yaml"
        if source.is_file():
            shutil.copyfile(source, out / BEST_FILE)
    plot_history(study, out / "history.png", metric=metric)
    plot_importance(study, out / "importance.png")


def plot_history(study: Any, path: Path, *, metric: str) -> Path:
    """Each trial's metric (completed: filled, pruned: hollow, where it stopped) and the best so far."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = trial_rows(study)
    higher = study.direction.name == "MAXIMIZE"
    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=DPI)
    try:
        done = [(r["number"], r["metric"]) for r in rows if r["state"] == "complete"]
        pruned = [
            (r["number"], r["metric"])
            for r in rows
            if r["state"] == "pruned" and r["metric"] is not None
        ]
        if done:
            ax.plot(*zip(*done, strict=True), "o", color="C0", label="completed")
            best, best_line = None, []
            for number, value in done:
                if best is None or (value > best if higher else value < best):
                    best = value
                best_line.append((number, best))
            ax.step(*zip(*best_line, strict=True), where="post", color="C3", label="best so far")
        if pruned:
            ax.plot(*zip(*pruned, strict=True), "o", mfc="none", color="C7", label="pruned")
        ax.set_xlabel("trial")
        ax.set_ylabel(metric)
        ax.set_title("optimisation history")
        ax.grid(alpha=0.3)
        if done or pruned:
            ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path


def varied_params(study: Any) -> list[str]:
    """Parameters that took at least two values among the completed trials: the only ones whose
    importance the trials can show."""
    from optuna.trial import TrialState

    values: dict[str, set[str]] = {}
    for trial in study.trials:
        if trial.state == TrialState.COMPLETE:
            for name, value in trial.params.items():
                values.setdefault(name, set()).add(repr(value))
    return sorted(name for name, seen in values.items() if len(seen) > 1)


def plot_importance(study: Any, path: Path) -> Path | None:
    """Optuna's PED-ANOVA parameter importances as bars, over the parameters that varied; needs two
    completed trials that differ (an evaluator given one trial still returns numbers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna

    importances: dict[str, float] = {}
    params = varied_params(study)
    if params:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                importances = optuna.importance.get_param_importances(
                    study,
                    evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
                    params=params,
                )
        except (ValueError, RuntimeError, ImportError, ZeroDivisionError):
            importances = {}
    fig, ax = plt.subplots(figsize=(7.0, 4.5), dpi=DPI)
    try:
        if importances:
            names = list(importances)[::-1]
            ax.barh(names, [importances[n] for n in names], color="C0")
            ax.set_xlabel("importance (PED-ANOVA, normalised to sum to 1)")
        else:
            ax.text(
                0.5,
                0.5,
                "needs two completed trials with different parameters",
                ha="center",
                va="center",
                transform=ax.transAxes,
            )
            ax.set_axis_off()
        ax.set_title("parameter importance")
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return path
