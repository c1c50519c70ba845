"""Plots: valid, non-trivial PNGs with the panels the logged keys call for."""

from __future__ import annotations

import json

import matplotlib.image
import numpy as np
import pytest

from distil_trainers.papers.plots import (
    curve_series,
    load_log_history,
    plot_comparison,
    plot_confusion_matrix,
    plot_training_curves,
)
from distil_trainers.papers.reports import build_report, model_result

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path, min_bytes=5000):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes
    pixels = matplotlib.image.imread(path)
    assert pixels[..., :3].std() > 0.05  # not a blank image
    return pixels


def annealing_history(steps=12):
    history = []
    for step in range(1, steps + 1):
        lam = step / steps
        history.append(
            {
                "loss": 1.1 - 0.05 * step,
                "loss_ta": 1.1 - 0.05 * step,
                "lambda": lam,
                "grad_norm": 1.0,
                "learning_rate": 1e-4,
                "epoch": step / 4,
                "step": step,
            }
        )
        if step % 4 == 0:
            history.append({"eval_loss": 1.0, "eval_f1_macro": 0.5, "epoch": step / 4, "step": step})
    history.append({"train_runtime": 10.0, "train_loss": 0.8, "epoch": 3.0, "step": steps})
    return history


def ddml_history(steps=6):
    history = []
    for step in range(1, steps + 1):
        entry = {"loss": 4.4 - 0.1 * step, "step": step, "epoch": step / 3}
        for name in ("minilm3", "wpbert"):
            entry.update(
                {
                    f"{name}/loss": 2.2,
                    f"{name}/loss_hard": 1.1,
                    f"{name}/loss_soft": 1.1,
                    f"{name}/loss_mutual": 0.001 * step,
                }
            )
        history.append(entry)
    return history


def test_curve_series_keeps_components_and_drops_bookkeeping():
    series = curve_series(annealing_history())
    assert set(series) == {"loss", "loss_ta", "lambda"}
    steps, values = series["lambda"]
    assert steps == list(range(1, 13)) and values[-1] == 1.0


def test_training_curves_annealing_has_loss_and_schedule_panels(tmp_path):
    path = plot_training_curves(annealing_history(), tmp_path / "curves.png", title="bam")
    pixels = check_png(path)
    assert pixels.shape[0] == round(2 * 3.2 * 110)  # two panels: loss components, schedule (λ)


def test_training_curves_put_the_reversal_factor_in_the_schedule_panel(tmp_path):
    history = [
        {"loss": 1.0 - 0.02 * step, "loss_ce": 0.9, "loss_adversarial": 0.7, "reversal_scale": step / 10, "step": step}
        for step in range(1, 11)
    ]
    pixels = check_png(plot_training_curves(history, tmp_path / "adversarial.png"))
    assert pixels.shape[0] == round(2 * 3.2 * 110)  # loss components, schedule (the reversal factor)


def test_training_curves_ddml_has_a_panel_per_student(tmp_path):
    pixels = check_png(plot_training_curves(ddml_history(), tmp_path / "ddml.png"))
    assert pixels.shape[0] == round(3 * 3.2 * 110)  # total loss, minilm3, wpbert; no schedule


def test_training_curves_without_losses_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no training losses"):
        plot_training_curves([{"eval_loss": 1.0, "step": 1}], tmp_path / "x.png")


def test_load_log_history_prefers_recipe_file_then_newest_checkpoint(tmp_path):
    for step in (5, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
        state = {"log_history": [{"loss": 1.0, "step": step}]}
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps(state))
    assert load_log_history(tmp_path) == [{"loss": 1.0, "step": 10}]
    (tmp_path / "log_history.json").write_text(json.dumps([{"loss": 2.0, "step": 3}]))
    assert load_log_history(tmp_path) == [{"loss": 2.0, "step": 3}]
    with pytest.raises(FileNotFoundError, match="log_history.json"):
        load_log_history(tmp_path / "missing")


@pytest.fixture
def saved_figures(monkeypatch):
    """The figures the plot functions save, to check what they draw (not only that a PNG came out)."""
    import distil_trainers.papers.plots as plots

    figures = []
    original = plots._save

    def keep(fig, path):
        figures.append(fig)
        return original(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_confusion_matrix_png(tmp_path, saved_figures):
    matrix = [[50, 3, 1], [4, 40, 6], [0, 2, 30]]
    check_png(plot_confusion_matrix(matrix, ["hate", "offensive", "neither"], tmp_path / "cm.png"))
    ax = saved_figures[-1].axes[0]
    # colours: each row normalised by its true-class count; cells: the counts, row by row
    shares = np.asarray(matrix, dtype=float) / np.asarray(matrix).sum(1, keepdims=True)
    np.testing.assert_allclose(ax.images[0].get_array(), shares)
    assert [t.get_text() for t in ax.texts] == [str(v) for row in matrix for v in row]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["hate", "offensive", "neither"]
    with pytest.raises(ValueError, match="does not fit"):
        plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "bad.png")


def test_comparison_bar_chart_from_a_report(tmp_path, saved_figures):
    labels = ["a", "b"]
    truth = [0, 1, 0, 1]
    results = [
        model_result("teacher", truth, np.array([[1, 0], [0, 1], [1, 0], [0, 1]]), labels, role="teacher", seed=1),
        model_result("student", truth, np.array([[1, 0], [1, 0], [1, 0], [0, 1]]), labels, seed=1),
        model_result("student", truth, np.array([[1, 0], [0, 1], [1, 0], [0, 1]]), labels, seed=2),
        model_result("alone", truth, np.array([[0, 1], [0, 1], [1, 0], [0, 1]]), labels, role="baseline", seed=1),
    ]
    summary = build_report(results, "toy", "test", labels)["summary"]
    check_png(plot_comparison(summary, tmp_path / "bars.png", metric="accuracy"))
    ax = saved_figures[-1].axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    # teacher 4/4, student mean of 3/4 and 4/4, baseline 3/4 (in %), one bar each
    assert heights == pytest.approx([100.0, 87.5, 75.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["teacher", "student", "alone"]
    assert [t.get_text() for t in ax.texts] == ["100.0", "87.5", "75.0"]
    with pytest.raises(ValueError, match="no_such_metric"):
        plot_comparison(summary, tmp_path / "none.png", metric="no_such_metric")
