"""Slow: the annealing paper pipeline end to end with the real packaged MiniLM-L6 on a small real slice of Davidson."""

from __future__ import annotations

import importlib
import json

from conftest import MINILM, real_data_marks

from distil_trainers import AnnealingArguments
from distil_trainers.data import load_dataset_by_name
from distil_trainers.metrics import classification_metrics

pytestmark = real_data_marks()


def test_annealing_recipe_student_learns_davidson(tmp_path):
    recipe = importlib.import_module("distil_trainers.papers.annealing_pipeline")
    recipe_args = recipe.RecipeArguments(
        dataset_name=["davidson"], teacher_base=MINILM, teacher_epochs=3, teacher_learning_rate=1e-4,
        student_layers=[0, 2, 4], max_train_samples=1500, max_eval_samples=400,
    )
    args = AnnealingArguments(
        output_dir=str(tmp_path / "run"), annealing="bam", num_train_epochs=3, learning_rate=1e-4, max_length=48,
        per_device_train_batch_size=32, per_device_eval_batch_size=128, warmup_steps=5, eval_strategy="no",
        save_strategy="epoch", save_total_limit=1, logging_steps=10, report_to="none", seed=0, disable_tqdm=True,
        use_cpu=True,
    )
    result = recipe.main(recipe_args, args)
    rows = {row["model"]: row for row in result["rows"]}

    # the majority-class baseline on the same test slice
    test = load_dataset_by_name("davidson", seed=0, max_samples_per_split={"test": 400})["test"]
    labels = test["label"][:]
    majority = max(set(labels), key=labels.count)
    baseline = classification_metrics(labels, [majority] * len(labels), num_labels=3)["f1_macro"]

    assert rows["student"]["f1_macro"] > baseline + 0.15, (rows["student"], baseline)
    assert rows["teacher"]["f1_macro"] > baseline + 0.15, (rows["teacher"], baseline)
    assert rows["student"]["params"] < rows["teacher"]["params"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["rows"] == result["rows"]
    assert (tmp_path / "run" / "student" / "model.safetensors").exists()

    # a second run reuses the finished teacher and student instead of training again
    again = recipe.main(recipe_args, args)
    quality = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "params")
    assert [{k: r[k] for k in quality} for r in again["rows"]] == [{k: r[k] for k in quality} for r in result["rows"]]
    assert not any(key == "" or key.startswith("test_") for row in result["rows"] for key in row)


def test_multitask_recipe_runs_both_heads(tmp_path):
    """The multi-task config's path (SST-2 + Davidson, one encoder, two heads) end to end on a tiny slice."""
    recipe = importlib.import_module("distil_trainers.papers.annealing_pipeline")
    recipe_args = recipe.RecipeArguments(
        dataset_name=["sst2", "davidson"], teacher_base=MINILM, teacher_epochs=1, student_layers=[0, 3],
        max_train_samples=96, max_eval_samples=64,
    )
    args = AnnealingArguments(
        output_dir=str(tmp_path / "mt"), annealing="bam", num_train_epochs=1, per_device_train_batch_size=16,
        max_length=32, per_device_eval_batch_size=64, eval_strategy="epoch", save_strategy="no", report_to="none",
        seed=0, disable_tqdm=True, use_cpu=True, task_sampling="temperature", task_sampling_temperature=2.0,
    )
    result = recipe.main(recipe_args, args)
    seen = {(row["model"], row["task"]) for row in result["rows"]}
    assert seen == {(m, t) for m in ("teacher", "student") for t in ("sst2", "davidson")}
    from distil_trainers import MultiTaskModel

    student = MultiTaskModel.from_pretrained(tmp_path / "mt" / "student")
    assert student.config.task_names == ["sst2", "davidson"]
    assert student.config.encoder.num_hidden_layers == 2
    history = json.loads((tmp_path / "mt" / "student" / "log_history.json").read_text())
    assert any("eval_sst2_f1_macro" in h for h in history) and any("eval_davidson_f1_macro" in h for h in history)
