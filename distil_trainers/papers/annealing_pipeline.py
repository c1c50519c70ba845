# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Distil a fine-tuned teacher into a smaller student with teacher annealing (or Annealing-KD / Hinton KD).

A paper pipeline (multi-stage, resumable, with reports): ``recipes/annealing.py`` distils one student from a
given teacher; this module runs the whole comparison.

1. Load the task dataset(s) named by ``dataset_name``: registered datasets (from the data directory,
   ``DISTIL_TRAINERS_DATA_DIR``, default ``../shared/data``, or the Hub), your own csv / tsv / json / jsonl / parquet
   files or folders of split files, ``save_to_disk`` folders or Hub ids (``text_column``, ``label_column``; string
   labels become class names; a missing validation split is carved from train, a missing test split means the report
   uses the validation split). Several datasets train one shared encoder with a head per task.
2. Fine-tune the teacher from ``teacher_base`` (or load ``teacher_model``, an already fine-tuned classifier: the data's
   classes are then mapped to its ``id2label`` by name). A finished teacher in ``<output_dir>/teacher`` is reused; an
   interrupted one resumes from its last checkpoint.
3. Build the student from ``student_base`` keeping ``student_layers`` of its encoder, distil it with
   ``AnnealingTrainer`` and report the student's test metrics next to the teacher's (``<output_dir>/results.json`` and
   ``results.md``).

Usage:

    # quickstart on CPU (Davidson hate/offensive/neither, subsampled; a few minutes)
    accelerate launch -m distil_trainers.papers.annealing_pipeline \\
        --config recipes/configs/annealing_pipeline_quickstart.yaml

    # multi-task: SST-2 sentiment + Davidson hate speech, one encoder and two heads
    accelerate launch -m distil_trainers.papers.annealing_pipeline \\
        --config recipes/configs/annealing_pipeline_multitask.yaml

    # your own data: a csv with the columns text,label (labels may be strings such as hate / none)
    accelerate launch -m distil_trainers.papers.annealing_pipeline \\
        --config recipes/configs/annealing_pipeline_quickstart.yaml \\
        --dataset_name my.csv --text_column text --label_column label --output_dir runs/my_data

    # any option can be overridden on the command line
    accelerate launch -m distil_trainers.papers.annealing_pipeline \\
        --config recipes/configs/annealing_pipeline_quickstart.yaml \\
        --annealing jafari --output_dir runs/jafari

    # push the student with its model card once the report is written (needs the network and a token)
    accelerate launch -m distil_trainers.papers.annealing_pipeline \\
        --config recipes/configs/annealing_pipeline_quickstart.yaml \\
        --push_to_hub true --hub_model_id <user>/minilm3-bam-davidson
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoTokenizer, set_seed
from trl import TrlParser

from distil_trainers import AnnealingArguments, AnnealingTrainer
from distil_trainers.cards import card_context, datasets_of, hub_id_of, rows_to_card_metrics
from distil_trainers.hub import push_recipe_models, split_push_argument
from distil_trainers.metrics import build_compute_metrics
from distil_trainers.models import resolve_model_name_or_path
from distil_trainers.papers.workflow import (
    TeacherDataArguments,
    build_classifier,
    count_parameters,
    data_fingerprint,
    describe_report_splits,
    evaluate_model,
    finetune_teacher,
    fingerprint,
    finish_stage,
    load_tasks,
    main_process_only,
    report_split_name,
    results_table,
    stage_arguments,
    start_stage,
    teacher_label_names,
    tokenize_suite,
    train_or_resume,
    training_fingerprint,
)

logger = logging.getLogger(__name__)


DEFAULT_DATASETS = ["davidson"]


@dataclass
class RecipeArguments(TeacherDataArguments):
    dataset_name: list[str] = field(
        default_factory=lambda: list(DEFAULT_DATASETS),
        metadata={"help": "One dataset per task (several = multi-task): a registered name "
                          "(distil_trainers.data.list_datasets()), a csv / tsv / json / jsonl / parquet file, a "
                          "folder of split files, a save_to_disk folder or a Hub id."},
    )
    tasks: list[str] | None = field(
        default=None, metadata={"help": "Deprecated (removed in the next release): use --dataset_name."}
    )
    deprecated_flags = ("tasks",)
    student_base: str | None = field(default=None, metadata={"help": "Encoder the student is cut from (default: "
                                                                      "teacher_base)."})
    student_layers: list[int] = field(
        default_factory=lambda: [0, 2, 4], metadata={"help": "Encoder layers of student_base the student keeps."}
    )

    def __post_init__(self):
        if self.tasks is not None:
            self.take_deprecated("tasks", self.tasks, DEFAULT_DATASETS)
        super().__post_init__()


def main(recipe: RecipeArguments, args: AnnealingArguments) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args, push = split_push_argument(args)  # with --push_to_hub the student is pushed once, after the report
    set_seed(args.seed)
    output_dir = Path(args.output_dir)
    teacher_base = resolve_model_name_or_path(recipe.teacher_base)
    student_base = resolve_model_name_or_path(recipe.student_base or recipe.teacher_base)

    specs = recipe.task_specs()
    teacher_path = resolve_model_name_or_path(recipe.teacher_model) if recipe.teacher_model is not None else None
    suite = load_tasks(
        specs, recipe.data_dir, args.seed, recipe.max_train_samples, recipe.max_eval_samples,
        validation_size=recipe.validation_size,
        label_names=teacher_label_names(teacher_path, [spec.task_name for spec in specs]),  # the teacher's class ids
    )
    for task in suite.tasks:
        sizes = {split: len(ds) for split, ds in task.splits.items()}
        note = " (subsampled)" if recipe.max_train_samples or recipe.max_eval_samples else ""
        missing = "" if task.has_test else "; no test split: the report uses the validation split"
        print(f"[data] {task.name}: {sizes}{note}; classes {task.label_names}{missing}")

    tokenizer = AutoTokenizer.from_pretrained(teacher_path or teacher_base)
    student_tokenizer = AutoTokenizer.from_pretrained(student_base)
    tokenizers = {"": student_tokenizer}
    if student_tokenizer.get_vocab() != tokenizer.get_vocab():
        tokenizers["teacher_"] = tokenizer
    student_suite = tokenize_suite(suite, tokenizers, args.max_length)
    teacher_suite = tokenize_suite(suite, {"": tokenizer}, args.max_length)

    # ---- teacher ----
    if recipe.teacher_model is not None:
        from distil_trainers.trainers.base import load_classifier

        teacher = load_classifier(teacher_path, "teacher")
    else:
        teacher_args = stage_arguments(
            args, output_dir / "teacher", num_train_epochs=recipe.teacher_epochs,
            learning_rate=recipe.teacher_learning_rate,
        )
        teacher = finetune_teacher(teacher_suite, teacher_base, tokenizer, output_dir / "teacher", teacher_args)

    # ---- student (its checkpoints and final weights in <output_dir>/student) ----
    student_dir = output_dir / "student"
    student_args = dataclasses.replace(args, output_dir=str(student_dir))
    key = fingerprint("student", recipe.settings(), training_fingerprint(args), data_fingerprint(suite))
    complete = start_stage(args, student_dir, key)
    train_dataset = student_suite.train_dataset()
    eval_dataset = student_suite.eval_datasets("validation")
    if complete:
        print(f"[student] reusing the finished student in {student_dir}")
        from transformers import AutoModelForSequenceClassification

        student = AutoModelForSequenceClassification.from_pretrained(student_dir)
    else:
        student = build_classifier(student_base, suite, layers=recipe.student_layers)
        trainer = AnnealingTrainer(
            model=student,
            teacher_model=teacher,
            args=student_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=student_tokenizer,
            teacher_processing_class=tokenizer,
            compute_metrics=build_compute_metrics(label_names=None if suite.is_multitask else suite.tasks[0].label_names),
        )
        train_or_resume(trainer, student_dir)
        finish_stage(trainer, student_dir, {"method": args.annealing, "tasks": suite.label_spec()},
                     tokenizer=student_tokenizer)
        student = trainer.model

    # ---- report (on the test split; the validation split of a dataset without one) ----
    report_splits = suite.report_splits()
    rows = []
    for role, model, tok, eval_suite in (
        ("teacher", teacher, tokenizer, teacher_suite),
        ("student", student, student_tokenizer, student_suite),
    ):
        metrics = evaluate_model(model, eval_suite, report_splits, tok, batch_size=args.per_device_eval_batch_size,
                                 output_dir=str(output_dir / "eval"))
        for task, values in metrics.items():
            rows.append({"model": role, "params": count_parameters(model), "task": task, **values})
    table = results_table(rows, metrics=("accuracy", "precision_macro", "recall_macro", "f1_macro"))
    header = (f"Method: {args.annealing}; {describe_report_splits(report_splits)}"
              + (" (subsampled)" if recipe.max_eval_samples else ""))
    with main_process_only(args) as writer:
        if writer:
            print("\n" + header + "\n\n" + table + "\n")
            (output_dir / "results.md").write_text(header + "\n\n" + table + "\n")
            (output_dir / "results.json").write_text(
                json.dumps({"method": args.annealing, "splits": report_splits, "rows": rows}, indent=2)
            )
    if push:
        teacher_label = recipe.teacher_model or f"{recipe.teacher_base} fine-tuned on {', '.join(suite.names)}"
        card = card_context(student, args, teacher=teacher_label, datasets=datasets_of(suite),
                            base_model=hub_id_of(recipe.student_base or recipe.teacher_base),
                            metrics=rows_to_card_metrics(rows, "student", split=report_split_name(report_splits),
                                                         compare=("teacher",)))
        push_recipe_models(args, {None: student_dir}, {None: card})
    return {"rows": rows}


if __name__ == "__main__":
    parser = TrlParser((RecipeArguments, AnnealingArguments))
    recipe_args, training_args = parser.parse_args_and_config()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(recipe_args, training_args)
