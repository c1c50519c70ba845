# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Breazu and Virlan's (2025) comparison of distillation methods, and born-again self-distillation (Matei's cross-lingual emotion study).

A paper pipeline (multi-stage, resumable, with reports): ``recipes/feature_kd.py`` distils one student with
feature matching; this module runs the whole comparison.

1. Load the task(s) named by ``dataset_name`` (Davidson; SST-2 + Davidson for the multi-task config, one shared encoder
   with a head per task): registered datasets, or your own csv / tsv / json / jsonl / parquet files, folders of split
   files, ``save_to_disk`` folders or Hub ids (``text_column``, ``label_column``; string labels become class names; a
   missing validation split is carved from train; without a test split the report uses the validation split).
2. Fine-tune the teacher (all-MiniLM-L6-v2, 6 layers) or load ``teacher_model`` (the data's classes are then mapped to
   its ``id2label`` by name).
3. Train a student (``student_layers`` of the teacher's encoder, 3 of 6 by default) with each of ``methods``:

   - ``baseline``: the labels only (cross-entropy), no teacher;
   - ``annealing``: teacher annealing (BAM, λ 0 → 1), ``AnnealingTrainer(annealing="bam")``;
   - ``ffn``: "distillation on the feedforward network": MSE between the output logits plus KL on the hidden layers
     (MKD-BERT: KL on the softmax-normalised embedding-layer outputs and on the hidden states of every student layer
     against its uniformly mapped teacher layer, KL on the token-similarity matrices of the last layer);
   - ``ffn_cls``: the same plus KL on the [CLS] vectors of every mapped layer.

4. With ``born_again_generations`` = G > 0: generation 0 is the fine-tuned teacher; generation g + 1 has the SAME
   architecture (a fresh copy of ``teacher_base``) and is distilled from generation g with ``born_again_method``.
5. Evaluate everything on the test split and write one table (accuracy and macro-F1 per task) to
   ``<output_dir>/results.md`` and ``results.json``.

Every stage is kept in ``<output_dir>/<stage>/`` with a ``stage.json`` fingerprint of its settings and data and, once
done, a ``training_complete.json``: a rerun with the same settings reuses finished stages, a stage whose settings changed
starts afresh, and an interrupted one resumes from its last checkpoint.

Usage:

    # Davidson, subsampled (= make quickstart-feature-kd): teacher + four students; 41 min measured on a 2-core CPU
    # shared with other jobs, about 15 min estimated on an idle one
    accelerate launch --num_processes 1 --num_cpu_threads_per_process 2 -m distil_trainers.papers.feature_kd_pipeline \\
        --config recipes/configs/feature_kd_pipeline_quickstart.yaml

    # multi-task (SST-2 sentiment + Davidson hate speech), MultiTaskModel teacher and students
    accelerate launch -m distil_trainers.papers.feature_kd_pipeline \\
        --config recipes/configs/feature_kd_pipeline_multitask.yaml

    # your own data: a folder with train.csv, dev.csv (or none: carved from train) and test.csv, columns text,label
    accelerate launch -m distil_trainers.papers.feature_kd_pipeline \\
        --config recipes/configs/feature_kd_pipeline_quickstart.yaml \\
        --dataset_name path/to/my_data --text_column text --label_column label --output_dir runs/feature_kd_my_data

    # add two born-again generations (6-layer students distilled from the previous generation)
    accelerate launch -m distil_trainers.papers.feature_kd_pipeline \\
        --config recipes/configs/feature_kd_pipeline_quickstart.yaml \\
        --born_again_generations 2 --born_again_method annealing
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
from trl import TrlParser

from distil_trainers import AnnealingArguments, AnnealingTrainer
from distil_trainers.cards import card_context, datasets_of, hub_id_of, rows_to_card_metrics
from distil_trainers.features import FeatureMatch, model_dimensions, parse_feature_matches, uniform_matches
from distil_trainers.hub import push_recipe_models, split_push_argument
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
    start_stage,
    teacher_label_names,
    tokenize_suite,
    train_or_resume,
    training_fingerprint,
)
from distil_trainers.trainers.base import TaskAwareTrainer

logger = logging.getLogger(__name__)

METHODS = ("baseline", "annealing", "ffn", "ffn_cls")
LABELS = {
    "baseline": "student, no KD",
    "annealing": "student, teacher annealing",
    "ffn": "student, FFN distillation",
    "ffn_cls": "student, FFN + CLS distillation",
}


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
    student_layers: list[int] = field(
        default_factory=lambda: [0, 2, 4], metadata={"help": "Encoder layers of teacher_base the students keep."}
    )
    methods: list[str] = field(
        default_factory=lambda: list(METHODS),
        metadata={"help": f"Student training methods to compare, among {METHODS}."},
    )
    ffn_matches: list[dict] | str | None = field(
        default=None,
        metadata={"help": "Feature matches of the 'ffn' method (JSON on the command line). Default: KL on the "
                          "embedding outputs, KL on each student layer's hidden states against its uniformly mapped "
                          "teacher layer, KL on the token-similarity matrices of the last layers."},
    )
    cls_matches: list[dict] | str | None = field(
        default=None,
        metadata={"help": "Matches 'ffn_cls' adds to ffn_matches. Default: KL on the [CLS] vectors of every mapped "
                          "layer."},
    )
    ffn_output_loss: str = field(
        default="mse",
        metadata={"help": "AnnealingTrainer method for the outputs of the ffn methods: 'mse' (logit MSE, as in Breazu "
                          "and Virlan 2025), or 'bam' / 'kd' / 'jafari'.", "choices": ["mse", "bam", "kd", "jafari"]},
    )
    born_again_generations: int = field(
        default=0,
        metadata={"help": "Born-again self-distillation: number of generations g = 1..G trained after the teacher "
                          "(generation 0), each with the teacher's architecture, distilled from the previous one."},
    )
    born_again_method: str = field(
        default="annealing",
        metadata={"help": "Method of the born-again generations: annealing, ffn or ffn_cls.",
                  "choices": ["annealing", "ffn", "ffn_cls"]},
    )

    def __post_init__(self):
        if self.tasks is not None:
            self.take_deprecated("tasks", self.tasks, DEFAULT_DATASETS)
        super().__post_init__()
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"Unknown methods {unknown}; choose among {METHODS}.")
        if self.born_again_generations < 0:
            raise ValueError(f"born_again_generations must be >= 0, got {self.born_again_generations}.")
        # validate the match lists now, before any training
        self.ffn_matches = [m.to_dict() for m in parse_feature_matches(self.ffn_matches)] or None
        self.cls_matches = [m.to_dict() for m in parse_feature_matches(self.cls_matches)] or None


def default_ffn_matches(num_student_layers: int, num_teacher_layers: int) -> list[FeatureMatch]:
    """MKD-BERT as Breazu and Virlan (2025) describes it: KL on the embedding-layer outputs, KL on the hidden states of every student
    layer against its uniformly mapped teacher layer, and KL on the token-similarity matrices of the last layers."""
    return [
        FeatureMatch(feature="embeddings", loss="kl"),
        *uniform_matches(num_student_layers, num_teacher_layers, feature="hidden", loss="kl"),
        FeatureMatch(num_student_layers, num_teacher_layers, feature="hidden", loss="similarity_kl"),
    ]


def default_cls_matches(num_student_layers: int, num_teacher_layers: int) -> list[FeatureMatch]:
    return uniform_matches(num_student_layers, num_teacher_layers, feature="cls", loss="kl")


def stage_settings(recipe: RecipeArguments, born_again: bool) -> dict:
    """The recipe settings a student stage depends on (not which other stages are run)."""
    settings = recipe.settings()
    for name in ("methods", "born_again_generations") + (() if born_again else ("born_again_method",)):
        settings.pop(name)
    return settings


def method_arguments(recipe: RecipeArguments, args: AnnealingArguments, method: str, output_dir: Path,
                     student_layers: int, teacher_layers: int) -> AnnealingArguments:
    """The training arguments of one method: the shared hyperparameters of ``args`` plus the method's loss."""
    changes: dict = {"output_dir": str(output_dir), "feature_matches": None}
    if method == "annealing":
        changes["annealing"] = "bam"
    elif method in ("ffn", "ffn_cls"):
        ffn = parse_feature_matches(recipe.ffn_matches) or default_ffn_matches(student_layers, teacher_layers)
        if method == "ffn_cls":
            ffn += parse_feature_matches(recipe.cls_matches) or default_cls_matches(student_layers, teacher_layers)
        changes.update(annealing=recipe.ffn_output_loss, feature_matches=[m.to_dict() for m in ffn])
    return dataclasses.replace(args, **changes)


def train_stage(stage_dir: Path, key: str, build_trainer, tokenizer, args, info: dict):
    """Train (or resume, or reuse) one model; returns it and its training time. A finished stage is reused only if it
    was run with the same settings and data (``key``); ``build_trainer`` is only called when training is needed."""
    if start_stage(args, stage_dir, key):
        print(f"[{stage_dir.name}] reusing the finished model in {stage_dir}")
        info = json.loads((stage_dir / "training_complete.json").read_text())
        return AutoModelForSequenceClassification.from_pretrained(stage_dir), info.get("train_seconds")
    start = time.time()
    trainer = build_trainer()
    train_or_resume(trainer, stage_dir)
    seconds = time.time() - start
    finish_stage(trainer, stage_dir, {**info, "train_seconds": seconds}, tokenizer=tokenizer)
    return trainer.model, seconds


def main(recipe: RecipeArguments, args: AnnealingArguments) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args, push = split_push_argument(args)  # with --push_to_hub the students are pushed once, after the report
    started = time.time()
    output_dir = Path(args.output_dir)
    teacher_base = resolve_model_name_or_path(recipe.teacher_base)

    teacher_path = resolve_model_name_or_path(recipe.teacher_model) if recipe.teacher_model is not None else None
    specs = recipe.task_specs()
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

    # Students are cut from the teacher's encoder, so every model reads the same tokens (token-level matches need it).
    tokenizer = AutoTokenizer.from_pretrained(teacher_path or teacher_base)
    data = tokenize_suite(suite, {"": tokenizer}, args.max_length)
    train_dataset, eval_dataset = data.train_dataset(), data.eval_datasets("validation")
    data_key = data_fingerprint(suite)

    # ---- teacher (born-again generation 0) ----
    if recipe.teacher_model is not None:
        teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path)
    else:
        teacher_args = dataclasses.replace(
            args, output_dir=str(output_dir / "teacher"), num_train_epochs=recipe.teacher_epochs,
            learning_rate=recipe.teacher_learning_rate, eval_strategy="no", save_strategy="epoch", save_total_limit=1,
            feature_matches=None,
        )
        set_seed(args.seed)
        teacher = finetune_teacher(data, teacher_base, tokenizer, output_dir / "teacher", teacher_args)
    teacher_layers = model_dimensions(teacher).num_layers

    def distil(student, teacher_model, stage_args):
        return AnnealingTrainer(
            model=student, teacher_model=teacher_model, args=stage_args, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=tokenizer,
        )

    # ---- students: one per method ----
    models = {"teacher": teacher}
    labels = {"teacher": "teacher (fine-tuned, born-again g0)" if recipe.born_again_generations else "teacher"}
    seconds = {}
    for method in recipe.methods:
        stage_dir = output_dir / method
        set_seed(args.seed)
        student = build_classifier(teacher_base, suite, layers=recipe.student_layers)
        stage_args = method_arguments(recipe, args, method, stage_dir, len(recipe.student_layers), teacher_layers)
        if method == "baseline":
            def build(student=student, stage_args=stage_args):
                return TaskAwareTrainer(model=student, args=stage_args, train_dataset=train_dataset,
                                        eval_dataset=eval_dataset, processing_class=tokenizer)
        else:
            def build(student=student, stage_args=stage_args):
                return distil(student, teacher, stage_args)
        info = {"method": method, "annealing": stage_args.annealing, "feature_matches": stage_args.feature_matches}
        key = fingerprint(method, stage_settings(recipe, born_again=False), training_fingerprint(stage_args), data_key)
        models[method], seconds[method] = train_stage(stage_dir, key, build, tokenizer, args, info)
        labels[method] = LABELS[method]

    # ---- born-again generations: same architecture as the teacher, each distilled from the previous one ----
    previous = teacher
    for generation in range(1, recipe.born_again_generations + 1):
        name = f"born_again_g{generation}"
        stage_dir = output_dir / "born_again" / f"g{generation}"
        set_seed(args.seed + generation)
        student = build_classifier(teacher_base, suite)
        stage_args = method_arguments(recipe, args, recipe.born_again_method, stage_dir, teacher_layers, teacher_layers)

        def build(student=student, stage_args=stage_args, previous=previous):
            return distil(student, previous, stage_args)

        info = {"method": recipe.born_again_method, "generation": generation, "teacher": f"generation {generation - 1}"}
        key = fingerprint(name, stage_settings(recipe, born_again=True), training_fingerprint(stage_args), data_key)
        models[name], seconds[name] = train_stage(stage_dir, key, build, tokenizer, args, info)
        labels[name] = f"born-again g{generation} ({recipe.born_again_method} from g{generation - 1})"
        previous = models[name]

    # ---- report (on the test split; the validation split of a dataset without one) ----
    report_splits = suite.report_splits()
    rows = []
    for key, model in models.items():
        metrics = evaluate_model(model, data, report_splits, tokenizer, batch_size=args.per_device_eval_batch_size,
                                 output_dir=str(output_dir / "eval"))
        for task, values in metrics.items():
            rows.append({"model": labels[key], "key": key, "params": count_parameters(model), "task": task, **values,
                         "train_seconds": seconds.get(key)})
    table = results_table(rows, metrics=("accuracy", "f1_macro"))
    wall = time.time() - started
    header = (f"Feature-level distillation vs teacher annealing (Breazu and Virlan, 2025); "
              f"{describe_report_splits(report_splits)}"
              + (" (subsampled)" if recipe.max_eval_samples else "")
              + f"; wall time {wall / 60:.1f} min")
    summary = {"methods": recipe.methods, "born_again_generations": recipe.born_again_generations,
               "born_again_method": recipe.born_again_method, "splits": report_splits, "rows": rows,
               "wall_seconds": wall}
    with main_process_only(args) as writer:
        if writer:
            print("\n" + header + "\n\n" + table + "\n")
            (output_dir / "results.md").write_text(header + "\n\n" + table + "\n")
            (output_dir / "results.json").write_text(json.dumps(summary, indent=2))
    if push:  # one repository per method's student: <hub_model_id>-<method>
        cards = {}
        teacher_label = recipe.teacher_model or f"{recipe.teacher_base} fine-tuned on {', '.join(suite.names)}"
        for method in recipe.methods:
            stage_args = method_arguments(recipe, args, method, output_dir / method, len(recipe.student_layers),
                                          teacher_layers)
            cards[method] = card_context(
                models[method], stage_args, method="finetune" if method == "baseline" else None,
                teacher=None if method == "baseline" else teacher_label,
                datasets=datasets_of(suite), base_model=hub_id_of(recipe.teacher_base),
                metrics=rows_to_card_metrics(rows, labels[method], split=report_split_name(report_splits),
                                             compare=("teacher",)),
            )
        push_recipe_models(args, {m: output_dir / m for m in recipe.methods}, cards)
    return {"rows": rows, "wall_seconds": wall}


if __name__ == "__main__":
    parser = TrlParser((RecipeArguments, AnnealingArguments))
    recipe_args, training_args = parser.parse_args_and_config()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(recipe_args, training_args)
