"""Slow: distil_trainers.papers.ddml_pipeline (formerly recipes/ddml.py) end to end on a small real slice of Davidson, with a tiny BERT (random weights, MiniLM's
tokenizer) standing in for MiniLM: the table's rows, the baselines trained alone with the same steps and the same
per-student learning rates as in DDML, and reuse of finished stages on a rerun."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import load_script, real_data_marks, tiny_minilm_base

from distil_trainers import MutualLearningArguments

pytestmark = real_data_marks()


def test_ddml_recipe_baselines_train_with_each_students_learning_rate(tmp_path, capsys):
    recipe = load_script("distil_trainers.papers.ddml_pipeline")
    base = tiny_minilm_base(tmp_path / "base", layers=2, seed=0)
    students = {
        "small": {"base": base, "layers": [0]},
        "scratch": {"architecture": "distilbert", "tokenizer_from": base, "vocab_size": 400, "hidden_size": 32,
                    "num_layers": 1, "num_heads": 2},
    }
    recipe_args = recipe.DDMLRecipeArguments(
        dataset_name=["davidson"], teacher_base=base, teacher_epochs=1, teacher_learning_rate=1e-3, students=students,
        max_train_samples=64, max_eval_samples=32,
    )
    lrs = {"small": 2e-3, "scratch": 7e-3}
    args = MutualLearningArguments(
        output_dir=str(tmp_path / "run"), num_train_epochs=1, learning_rate=1e-4, student_learning_rates=lrs,
        per_device_train_batch_size=16, per_device_eval_batch_size=32, max_length=24, eval_strategy="no",
        save_strategy="epoch", save_total_limit=1, logging_steps=1, report_to="none", seed=0, disable_tqdm=True,
        use_cpu=True,
    )
    result = recipe.main(recipe_args, args)
    models = [row["model"] for row in result["rows"]]
    assert models == ["teacher", "small (DDML)", "scratch (DDML)", "ensemble (DDML)", "small (alone)",
                      "scratch (alone)"]
    assert all(0.0 <= row["f1_macro"] <= 1.0 and row["task"] == "davidson" for row in result["rows"])

    run = tmp_path / "run"
    ddml_steps = json.loads((run / "ddml" / "training_complete.json").read_text())["steps"]
    assert ddml_steps == 4  # 64 examples, batch 16, one epoch
    for name, lr in lrs.items():
        stage_args = torch.load(run / "alone" / name / "training_args.bin", weights_only=False)
        assert stage_args.learning_rate == pytest.approx(lr)  # not the run's learning_rate (1e-4)
        assert stage_args.max_steps == ddml_steps
        state = json.loads(next((run / "alone" / name).glob("checkpoint-*/trainer_state.json")).read_text())
        assert state["global_step"] == ddml_steps
        # the linear schedule starts from the student's own rate: the first logged rate is below it, never above
        logged = [h["learning_rate"] for h in state["log_history"] if "learning_rate" in h]
        assert logged and max(logged) <= lr and max(logged) > lr / 2
    table = (run / "results.md").read_text()
    assert "scratch (alone)" in table and "c=1.0" in table

    # a rerun reuses every finished stage and reports the same table
    capsys.readouterr()
    again = recipe.main(recipe_args, args)
    assert "[ddml] reusing the finished students" in capsys.readouterr().out
    assert [r["f1_macro"] for r in again["rows"]] == pytest.approx([r["f1_macro"] for r in result["rows"]])
