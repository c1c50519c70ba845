"""PNG plots of runs and reports, drawn with matplotlib on its Agg canvas (``matplotlib.figure.Figure``: no display
and no change to pyplot's global backend).

* :func:`load_log_history` - the Trainer's log history of a finished stage directory (``log_history.json`` written by
  the recipes, else ``trainer_state.json`` there or in its newest checkpoint);
* :func:`plot_training_curves` - every logged loss component, λ (and the other schedule values) over the optimizer
  steps, one panel per student for mutual learning;
* :func:`plot_confusion_matrix` - a confusion matrix as counts and row-normalised colours;
* :func:`plot_comparison` - a bar chart of one metric for teacher / students / baselines / ensembles (error bars = the
  sample standard deviation over seeds when there are several).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

__all__ = [
    "SCHEDULE_KEYS",
    "curve_series",
    "load_log_history",
    "plot_comparison",
    "plot_confusion_matrix",
    "plot_training_curves",
]

# Values the trainers log besides losses that follow the training schedule (AnnealingTrainer: λ for bam; the
# annealing factor Φ and the phase for Annealing-KD; AdversarialTrainer: the gradient-reversal factor).
SCHEDULE_KEYS = ("lambda", "annealing_factor", "phase", "reversal_scale")
# Trainer bookkeeping that is not a curve worth drawing.
_SKIP = {"epoch", "step", "grad_norm", "learning_rate", "total_flos"}

_ROLE_COLOURS = {"teacher": "#4c4c4c", "student": "#1f77b4", "baseline": "#ff7f0e", "ensemble": "#2ca02c"}


def load_log_history(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """The log history of a training stage: ``log_history.json`` in ``directory`` (as the recipes write it), else the
    ``log_history`` of ``trainer_state.json`` in it or in its newest ``checkpoint-N``."""
    directory = Path(directory)
    if (directory / "log_history.json").is_file():
        return json.loads((directory / "log_history.json").read_text())
    candidates = [directory / "trainer_state.json"]
    checkpoints = sorted(directory.glob("checkpoint-*"), key=lambda p: int(re.sub(r"\D", "", p.name) or 0))
    candidates += [c / "trainer_state.json" for c in reversed(checkpoints)]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())["log_history"]
    raise FileNotFoundError(
        f"No log history in {directory}: expected log_history.json, trainer_state.json or checkpoint-*/"
        "trainer_state.json (the recipes write log_history.json beside every trained student)."
    )


def curve_series(log_history: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """``{key: (steps, values)}`` of every numeric key of the *training* log entries (those with ``loss``): loss
    components and schedule values, without Trainer's bookkeeping (epoch, grad_norm, learning rate)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    for entry in log_history:
        if "loss" not in entry or "step" not in entry:
            continue
        for key, value in entry.items():
            if key in _SKIP or key.startswith(("train_", "eval_")) or not isinstance(value, (int, float)):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(int(entry["step"]))
            values.append(float(value))
    return series


def _group(key: str) -> tuple[str, str]:
    """(panel, label): ``"mbert/loss_hard"`` -> ("mbert", "loss_hard"); ``"loss_feature/x"`` stays in the main panel."""
    head, sep, tail = key.partition("/")
    if sep and not head.startswith("loss"):
        return head, tail
    return "", key


def plot_training_curves(
    log_history: Sequence[Mapping[str, Any]], path: str | os.PathLike, title: str | None = None
) -> Path:
    """Draw every loss component and schedule value over the optimizer steps and save a PNG at ``path``.

    Panels: the losses (``loss``, ``loss_ta``, ``loss_ce``, ``loss_kd``, ``loss_mse``, ``loss_feature``…), one panel
    of losses per student for mutual learning (``<name>/loss_hard`` …), and the schedule (λ, the annealing factor,
    the phase) when logged. Raises ``ValueError`` if the history has no training losses."""
    series = curve_series(log_history)
    if not series:
        raise ValueError("The log history holds no training losses (was logging_steps larger than the run?).")
    panels: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    schedule = {}
    for key, data in series.items():
        panel, label = _group(key)
        if label in SCHEDULE_KEYS:
            schedule[key] = data
        else:
            panels.setdefault(panel, {})[label] = data
    ordered = sorted(panels, key=lambda p: (p != "", p))
    n = len(ordered) + (1 if schedule else 0)
    fig = _figure((8, 3.2 * n))
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)
    axes = axes[:, 0]
    for ax, panel in zip(axes, ordered):
        for label, (steps, values) in sorted(panels[panel].items(), key=lambda kv: (kv[0] != "loss", kv[0])):
            ax.plot(
                steps,
                values,
                marker="o" if len(steps) < 30 else None,
                markersize=3,
                linewidth=2.2 if label == "loss" else 1.4,
                label=label,
            )
        ax.set_ylabel("loss")
        if panel:
            ax.set_title(f"student {panel}")
        else:
            ax.set_title(
                "loss (sum over the students)"
                if len(ordered) > 1 and set(panels[""]) == {"loss"}
                else "loss components"
                if len(panels[""]) > 1
                else "training loss"
            )
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    if schedule:
        ax = axes[-1]
        for key, (steps, values) in schedule.items():
            ax.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=key)
        ax.set_ylabel("value")
        ax.set_title("schedule")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[-1].set_xlabel("optimizer step")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion_matrix(
    matrix: Sequence[Sequence[int]], label_names: Sequence[str], path: str | os.PathLike, title: str | None = None
) -> Path:
    """A confusion matrix (rows = true class, columns = predicted): colours are row-normalised (recall per class),
    cells print the counts. Saves a PNG at ``path``."""
    counts = np.asarray(matrix, dtype=float)
    if counts.shape != (len(label_names), len(label_names)):
        raise ValueError(f"A {counts.shape} confusion matrix does not fit {len(label_names)} class names.")
    rows = counts.sum(1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    size = 1.2 + 0.9 * len(label_names)
    fig = _figure((size + 1.2, size))
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(range(len(label_names)), labels=list(label_names), rotation=30, ha="right")
    ax.set_yticks(range(len(label_names)), labels=list(label_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(
                j,
                i,
                f"{int(counts[i, j])}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.6 else "black",
                fontsize=9,
            )
    ax.set_title(title or "confusion matrix")
    fig.tight_layout()
    return _save(fig, path)


def plot_comparison(
    summary: Mapping[str, Mapping[str, Any]],
    path: str | os.PathLike,
    metric: str = "f1_macro",
    title: str | None = None,
) -> Path:
    """A bar chart of ``metric`` (in %) for every model of a report's ``summary`` (see
    :func:`~distil_trainers.papers.reports.build_report`), coloured by role (teacher / student / baseline / ensemble), with
    the sample standard deviation over seeds as error bars. Saves a PNG at ``path``."""
    names, means, stds, colours = [], [], [], []
    for name, entry in summary.items():
        stats = entry["metrics"].get(metric)
        if stats is None:
            continue
        names.append(name)
        means.append(100 * stats["mean"])
        stds.append(100 * stats["std"] if stats.get("std") is not None else 0.0)
        colours.append(_ROLE_COLOURS.get(entry.get("role", ""), "#9467bd"))
    if not names:
        raise ValueError(f"No model of the summary has the metric {metric!r}.")
    fig = _figure((max(5.0, 1.1 * len(names) + 2), 4.2))
    ax = fig.subplots()
    x = np.arange(len(names))
    bars = ax.bar(x, means, yerr=stds if any(stds) else None, capsize=4, color=colours)
    for bar, mean in zip(bars, means):
        ax.annotate(
            f"{mean:.1f}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.set_xticks(x, labels=names, rotation=25, ha="right")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, min(100.0, max(m + s for m, s in zip(means, stds)) * 1.12 + 1))
    roles = []
    for entry in summary.values():
        role = entry.get("role", "")
        if role not in roles:
            roles.append(role)
    handles = [Rectangle((0, 0), 1, 1, color=_ROLE_COLOURS.get(r, "#9467bd")) for r in roles]
    ax.legend(handles, roles, fontsize=8)
    ax.set_title(title or f"{metric} by model")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _figure(size: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    return path
