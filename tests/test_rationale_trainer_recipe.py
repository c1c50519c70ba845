"""Rationale distillation with a tiny Llama: the thin recipe ``recipes/rationale_distill.py`` end to end (a stub
teacher backend writes the rationales of real Davidson posts; LoRA and 4-bit QLoRA students; saved adapter and
metrics), and the paper pipeline
``distil_trainers.papers.rationale_pipeline``: its train and evaluate stages on a hand-made rationale dataset, through
its YAML-free entry point, and the resumability of finished stages."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import datasets
import pytest
import torch
from conftest import RECIPES, load_recipe
from huggingface_hub import metadata_load
from peft import PeftModel
from rationale_fixtures import rationale_dataset, tiny_llama, tiny_tokenizer
from transformers import AutoModelForCausalLM
from trl import ModelConfig, TrlParser

from distil_trainers.data import get_data_dir
from distil_trainers.papers import rationale_pipeline
from distil_trainers.teachers import SavedClassifierPrompt
from distil_trainers.teachers.rationales import GenerationResult, TeacherBackend
from distil_trainers.trainers.rationale import RationaleSFTConfig


class StubTeacher(TeacherBackend):
    """A teacher that answers every post in the prompt's format: an explanation, then a label (always "hate")."""

    model_id = "stub-teacher"

    def __init__(self):
        self.posts = 0

    def generate(self, messages_batch, max_new_tokens=256, temperature=0.0):
        self.posts += len(messages_batch)
        return [GenerationResult("Explanation: it insults a group of people.\nLabel: hate", 9) for _ in messages_batch]


@pytest.mark.skipif(get_data_dir() is None, reason="no data directory (set DISTIL_TRAINERS_DATA_DIR)")
def test_thin_recipe_end_to_end_with_a_stub_teacher(tmp_path):
    recipe = load_recipe("rationale_distill")
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(tmp_path / "student_base")
    tok.save_pretrained(tmp_path / "student_base")
    out = tmp_path / "run"
    argv = [
        "--config", str(RECIPES / "configs" / "rationale_quickstart.yaml"), "--student_gguf_file", "none",
        "--model_name_or_path", str(tmp_path / "student_base"), "--dtype", "float32", "--lora_r", "4",
        "--lora_alpha", "8", "--lora_target_modules", "q_proj", "v_proj", "--output_dir", str(out),
        "--max_train_samples", "6", "--max_eval_samples", "3", "--max_steps", "2",
        "--per_device_train_batch_size", "4",
        "--per_device_eval_batch_size", "4", "--max_length", "128", "--use_cpu", "true", "--logging_steps", "1",
        "--save_strategy", "no", "--disable_tqdm", "true",
        # the stub teacher always answers "hate", agreeing with no gold label: keep its rationales anyway
        "--rationales_when_teacher_agrees", "false",
        "--save_merged", "true",
    ]  # fmt: skip
    script_args, training_args, model_args = TrlParser(
        (recipe.ScriptArguments, RationaleSFTConfig, ModelConfig)
    ).parse_args_and_config(argv)
    assert script_args.student_gguf_file is None
    teacher = StubTeacher()
    metrics = recipe.main(script_args, training_args, model_args, teacher=teacher)
    assert teacher.posts == 6 + 3  # the train and test posts, once each
    assert 0.0 <= metrics["test_f1_macro"] <= 1.0 and "test_loss" in metrics and "test_accuracy" in metrics
    # the saved student: a LoRA adapter and the tokenizer; the metrics beside them; the teacher's answers cached
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "tokenizer_config.json").is_file()
    assert json.loads((out / "test_results.json").read_text())["test_f1_macro"] == metrics["test_f1_macro"]
    assert (out / "rationales" / "train.jsonl").is_file() and (out / "rationales" / "test.jsonl").is_file()
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("loss_rationale" in e for e in history)
    # --save_merged: a full model (the adapter merged) answering as the adapter does, with its label prompt
    merged = out / "merged"
    assert not (merged / "adapter_config.json").exists() and (merged / "tokenizer_config.json").is_file()
    full = AutoModelForCausalLM.from_pretrained(merged)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "student_base"), out)
    ids = torch.tensor([tok("you are all stupid idiots")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(full(input_ids=ids).logits, adapted(input_ids=ids).logits, rtol=1e-4, atol=1e-5)
        base = AutoModelForCausalLM.from_pretrained(tmp_path / "student_base")
        assert not torch.allclose(full(input_ids=ids).logits, base(input_ids=ids).logits)  # the training is in it
    for folder in (out, merged):
        assert SavedClassifierPrompt.load(folder).class_names == ["hate", "offensive", "neither"]
    # a rerun does not ask the teacher again (the answers are cached per post)
    again = StubTeacher()
    recipe.main(script_args, training_args, model_args, teacher=again)
    assert again.posts == 0


@pytest.mark.skipif(get_data_dir() is None, reason="no data directory (set DISTIL_TRAINERS_DATA_DIR)")
def test_thin_recipe_paper_config_trains_a_4bit_qlora_student(tmp_path, monkeypatch):
    """The paper's config (8B student in nf4 + LoRA, an OpenAI-endpoint teacher) on CPU: a tiny Llama in its place,
    the stub teacher in the endpoint's; the student the recipe builds is 4-bit and its LoRA adapter is saved."""
    pytest.importorskip("bitsandbytes")
    recipe = load_recipe("rationale_distill")
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(tmp_path / "student_base")
    tok.save_pretrained(tmp_path / "student_base")
    seen = {}

    class Recording(recipe.RationaleSFTTrainer):
        def train(self, *args, **kwargs):
            seen["4bit"] = sum(type(m).__name__ == "Linear4bit" for m in self.model.modules())
            return super().train(*args, **kwargs)

    monkeypatch.setattr(recipe, "RationaleSFTTrainer", Recording)
    out = tmp_path / "run"
    argv = [
        "--config", str(RECIPES / "configs" / "rationale_paper.yaml"), "--use_cpu", "true", "--bf16", "false",
        "--dtype", "float32", "--gradient_checkpointing", "false",
        "--model_name_or_path", str(tmp_path / "student_base"),
        "--output_dir", str(out), "--max_train_samples", "6", "--max_eval_samples", "3", "--max_steps", "2",
        "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
        "--per_device_eval_batch_size", "4",
        "--max_length", "128", "--save_strategy", "no", "--lora_target_modules", "q_proj", "v_proj",
        "--disable_tqdm", "true",
    ]  # fmt: skip
    script_args, training_args, model_args = TrlParser(
        (recipe.ScriptArguments, RationaleSFTConfig, ModelConfig)
    ).parse_args_and_config(argv)
    assert model_args.load_in_4bit and script_args.teacher_backend == "openai"
    metrics = recipe.main(script_args, training_args, model_args, teacher=StubTeacher())
    assert seen["4bit"] > 0 and 0.0 <= metrics["test_f1_macro"] <= 1.0
    assert json.loads((out / "adapter_config.json").read_text())["target_modules"]


@pytest.mark.slow
def test_pipeline_train_and_evaluate_stages(tmp_path, capsys):
    recipe = rationale_pipeline
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(tmp_path / "student_base")
    tok.save_pretrained(tmp_path / "student_base")
    datasets.DatasetDict({"train": rationale_dataset(), "eval": rationale_dataset()}).save_to_disk(
        str(tmp_path / "rationales")
    )
    script = recipe.RationaleScriptArguments(
        stage="all",
        rationale_dir=str(tmp_path / "rationales"),
        efficiency_samples=2,
        explain_samples=1,
        time_teacher=False,
        teacher_max_new_tokens=6,
    )
    args = RationaleSFTConfig(
        output_dir=str(tmp_path / "run"),
        report_to="none",
        use_cpu=True,
        bf16=False,
        num_train_epochs=2,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        gradient_checkpointing=False,
        max_length=256,
        alpha=0.5,
    )
    model_args = ModelConfig(
        model_name_or_path=str(tmp_path / "student_base"),
        use_peft=True,
        lora_r=4,
        lora_alpha=8,
        lora_target_modules=["q_proj", "v_proj"],
        dtype="float32",
    )
    results = recipe.main(script, args, model_args)
    for name in ("student", "student_label_only"):
        assert (tmp_path / "run" / name / "adapter_config.json").exists()
        assert (tmp_path / "run" / name / "training_complete.json").exists()
        assert 0.0 <= results[name]["f1_macro"] <= 1.0 and "loss_label" in results[name]
    assert "loss_rationale" in results["student"] and "loss_rationale" not in results["student_label_only"]
    assert [row["name"] for row in results["efficiency"]] == [
        "student: label scoring",
        "student: explanation (generate)",
    ]
    assert len(results["explanations"]) == 1
    table = (tmp_path / "run" / "results.md").read_text()
    assert "| student, label + rationale |" in table and "| student, label only (alpha = 1) |" in table
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["student"]["f1_macro"] == results["student"]["f1_macro"]

    # each student has this library's card (not TRL's generic one): method, its scores beside the other models'
    for name in ("student", "student_label_only"):
        card = tmp_path / "run" / name / "README.md"
        meta = metadata_load(card)
        assert "rationale-distillation" in meta["tags"] and "base_model" not in meta  # a local base has no Hub id
        assert meta["pipeline_tag"] == "text-generation"
        f1 = meta["model-index"][0]["results"][0]["metrics"]
        assert any(m["type"] == "f1" and m["value"] == pytest.approx(results[name]["f1_macro"], abs=1e-4)
                   for m in f1)  # fmt: skip
        text = card.read_text()
        assert "Distilling step-by-step" in text and "| teacher |" in text

    # a rerun with the same settings reuses both students (no training): same scores
    marker = (tmp_path / "run" / "student" / "training_complete.json").stat().st_mtime
    again = recipe.main(script, args, model_args)
    assert (tmp_path / "run" / "student" / "training_complete.json").stat().st_mtime == marker
    assert again["student"]["f1_macro"] == results["student"]["f1_macro"]

    # --push_to_hub: nothing is pushed while training, the student is pushed once at the end; offline that push fails
    # with one message after results and models are saved
    (tmp_path / "run" / "results.json").unlink()
    push_args = dataclasses.replace(args, push_to_hub=True, hub_model_id="me/rationale-davidson")
    with pytest.raises(SystemExit) as stop:
        recipe.main(script, push_args, model_args)
    assert stop.value.code == 1
    assert (tmp_path / "run" / "results.json").is_file()
    assert (tmp_path / "run" / "student" / "training_complete.json").stat().st_mtime == marker  # not retrained
    captured = capsys.readouterr()
    assert "[hub]" in captured.err and "me/rationale-davidson" in captured.err
    assert "The local save is complete" in captured.err
    assert "# rationale-davidson" in (tmp_path / "run" / "student" / "README.md").read_text()


def test_pipeline_generate_stage_keeps_the_class_names_for_training(tmp_path):
    """The generate stage on real Davidson posts with a tiny Llama teacher (transformers backend): the saved rationales
    carry the dataset's class names, which the train and evaluate stages read."""
    recipe = rationale_pipeline
    tok = tiny_tokenizer()
    tiny_llama(tok).save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    script = recipe.RationaleScriptArguments(
        stage="generate", teacher_backend="transformers", teacher_model=str(tmp_path / "teacher"),
        teacher_max_new_tokens=4, teacher_batch_size=4, max_train_samples=6, max_eval_samples=3,
    )
    args = RationaleSFTConfig(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True, bf16=False)
    directory = recipe.stage_generate(script, args, Path(args.output_dir))
    rationales = recipe.load_rationales(script, Path(args.output_dir))
    assert {split: len(ds) for split, ds in rationales.items()} == {"train": 6, "eval": 3}
    assert rationales["train"].features["label"].names == ["hate", "offensive", "neither"]
    assert json.loads((directory / "teacher_report.json").read_text())["train"]["n"] == 6
    assert recipe.stage_generate(script, args, Path(args.output_dir)) == directory  # finished: reused
