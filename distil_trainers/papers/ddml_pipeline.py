# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Deep distill-mutual learning (DDML): a frozen teacher and K >= 2 students of different architectures and tokenizers.

A paper pipeline (multi-stage, resumable, with reports): ``recipes/ddml.py`` trains the students of one DDML
run; this module runs the whole comparison.

1. Load the dataset named by ``dataset_name``: a registered one (``DISTIL_TRAINERS_DATA_DIR``, default
   ``../shared/data``; the Hub otherwise), your own csv / tsv / json / jsonl / parquet file or folder of split files
   (``text_column``, ``label_column``; string labels become class names), a ``save_to_disk`` folder or a Hub id. A
   missing validation split is carved from train; without a test split the report uses the validation split.
2. Fine-tune the teacher from ``teacher_base`` (or load ``teacher_model``: the data's classes are then mapped to its
   ``id2label`` by name). A finished teacher is reused.
3. Build every student from its spec (a pretrained model, some layers of one, or a from-scratch model with its own
   vocabulary learnt from the training texts), train them together with ``MutualLearningTrainer``.
4. Train each student alone on the labels for the same number of steps with its own learning rate (the baseline).
5. Report teacher, every DDML student, the students' ensemble and every student trained alone: accuracy, macro P/R/F1,
   parameters and inference samples/s, in ``<output_dir>/results.{json,md}``.

Every stage keeps its result (``<output_dir>/teacher``, ``ddml/<name>``, ``alone/<name>``) and is skipped when rerun;
an interrupted stage resumes from its last checkpoint.

Usage:

    # quickstart on CPU: MiniLM-L6 teacher, a 3-layer MiniLM and a small DistilBERT with its own WordPiece vocabulary
    accelerate launch --num_processes 1 -m distil_trainers.papers.ddml_pipeline \\
        --config recipes/configs/ddml_pipeline_quickstart.yaml

    # your own data: a csv with the columns text,label (string labels such as hate / none are fine)
    accelerate launch --num_processes 1 -m distil_trainers.papers.ddml_pipeline \\
        --config recipes/configs/ddml_pipeline_quickstart.yaml \\
        --dataset_name my.csv --text_column text --label_column label --output_dir runs/ddml_my_data

    # two CPU processes over gloo (`--cpu --num_processes 2` would silently run one process)
    torchrun --nproc_per_node 2 -m distil_trainers.papers.ddml_pipeline \\
        --config recipes/configs/ddml_pipeline_quickstart.yaml --use_cpu true

    # push each DDML student with its model card (<user>/ddml-davidson-minilm3, ...-wpbert) after the report
    accelerate launch --num_processes 1 -m distil_trainers.papers.ddml_pipeline \\
        --config recipes/configs/ddml_pipeline_quickstart.yaml \\
        --push_to_hub true --hub_model_id <user>/ddml-davidson

    # the paper's setting on GPUs: xlm-roberta-large teacher, mBERT and XLM-R base students
    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml -m distil_trainers.papers.ddml_pipeline \\
        --config recipes/configs/ddml_pipeline_paper.yaml
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
from trl import TrlParser

from distil_trainers import MutualLearningArguments, MutualLearningTrainer
from distil_trainers.cards import (
    PeerInfo,
    card_context,
    datasets_of,
    describe_student_spec,
    hub_id_of,
    rows_to_card_metrics,
)
from distil_trainers.hub import push_recipe_models, split_push_argument, student_folder
from distil_trainers.metrics import build_compute_metrics
from distil_trainers.models import resolve_model_name_or_path
from distil_trainers.models.students import build_student
from distil_trainers.papers.workflow import (
    TeacherDataArguments,
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
from distil_trainers.trainers.base import TaskAwareTrainer, load_classifier

logger = logging.getLogger(__name__)

QUICKSTART_STUDENTS = {
    "minilm3": {"base": "sentence-transformers/all-MiniLM-L6-v2", "layers": [0, 2, 4]},
    "wpbert": {"architecture": "distilbert", "tokenizer_from": "sentence-transformers/all-MiniLM-L6-v2",
               "vocab_size": 8000, "hidden_size": 256, "num_layers": 2, "num_heads": 4},
}


DEFAULT_DATASETS = ["davidson"]


@dataclass
class DDMLRecipeArguments(TeacherDataArguments):
    dataset_name: list[str] = field(
        default_factory=lambda: list(DEFAULT_DATASETS),
        metadata={"help": "The dataset (one): a registered name (distil_trainers.data.list_datasets()), a csv / tsv / "
                          "json / jsonl / parquet file, a folder of split files, a save_to_disk folder or a Hub id."},
    )
    dataset: str | None = field(
        default=None, metadata={"help": "Deprecated (removed in the next release): use --dataset_name."}
    )
    deprecated_flags = ("dataset",)
    teacher_learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of teacher fine-tuning."})
    students: dict | str | None = field(  # "| None": the command line then takes the JSON / YAML string
        default_factory=lambda: dict(QUICKSTART_STUDENTS),
        metadata={"help": "{name: spec} (YAML mapping or JSON): spec {base: id} | {base: id, layers: [...]} | "
                          "{architecture: bert|distilbert|roberta, tokenizer_from: id, vocab_size, hidden_size, "
                          "num_layers, num_heads}."},
    )
    run_baselines: bool = field(default=True, metadata={"help": "Also train every student alone (same steps)."})
    hub_student_pattern: str = field(
        default="{repo_id}-{student}",
        metadata={"help": "With --push_to_hub: the repository of each student, from hub_model_id and its name."},
    )

    def __post_init__(self):
        if self.dataset is not None:
            self.take_deprecated("dataset", self.dataset, DEFAULT_DATASETS)
        super().__post_init__()
        if len(self.dataset_name) != 1:
            raise ValueError(f"DDML trains on one dataset; dataset_name names {len(self.dataset_name)}: "
                             f"{self.dataset_name}.")
        if isinstance(self.students, str):
            self.students = yaml.safe_load(self.students)
        if not isinstance(self.students, dict) or len(self.students) < 2:
            raise ValueError(f"students must map at least 2 names to specs, got {self.students!r}.")


def _stage_args(args: MutualLearningArguments, output_dir: Path, **overrides) -> MutualLearningArguments:
    """Copy of the run's arguments for a sub-stage (teacher fine-tuning, a baseline), with its own output dir."""
    return dataclasses.replace(
        args, output_dir=str(output_dir), eval_strategy="no", load_best_model_at_end=False, push_to_hub=False,
        **overrides,
    )


def student_learning_rate(args: MutualLearningArguments, name: str) -> float:
    """The learning rate student ``name`` trains with in DDML (``student_learning_rates``, else ``learning_rate``):
    its baseline alone trains with the same one, so that the comparison only changes the loss."""
    return float((args.student_learning_rates or {}).get(name, args.learning_rate))


def main(recipe: DDMLRecipeArguments, args: MutualLearningArguments) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    args, push = split_push_argument(args)  # with --push_to_hub the students are pushed once, after the report
    set_seed(args.seed)
    out = Path(args.output_dir)
    teacher_source = resolve_model_name_or_path(recipe.teacher_model or recipe.teacher_base)
    specs = recipe.task_specs()
    suite = load_tasks(
        specs, recipe.data_dir, args.seed, recipe.max_train_samples, recipe.max_eval_samples,
        validation_size=recipe.validation_size,
        # an already fine-tuned teacher: the data's class ids are mapped to its id2label
        label_names=teacher_label_names(teacher_source if recipe.teacher_model else None, [specs[0].task_name]),
    )
    task = suite.tasks[0]
    report_split = suite.report_splits()[task.name]  # "test", or "validation" for data without a test split
    note = " (subsampled)" if recipe.max_train_samples or recipe.max_eval_samples else ""
    if args.process_index == 0:
        missing = "" if task.has_test else "; no test split: the report uses the validation split"
        print(f"[data] {task.name}: { {s: len(d) for s, d in task.splits.items()} }{note}; classes {task.label_names}"
              f"{missing}")

    # ---- teacher -------------------------------------------------------------------------------------------------
    teacher_tokenizer = AutoTokenizer.from_pretrained(teacher_source)
    teacher_suite = tokenize_suite(suite, {"": teacher_tokenizer}, args.max_length)
    if recipe.teacher_model is not None:
        teacher = load_classifier(teacher_source, "teacher")
    else:
        teacher_args = _stage_args(args, out / "teacher", num_train_epochs=recipe.teacher_epochs,
                                   learning_rate=recipe.teacher_learning_rate, save_strategy="epoch", save_total_limit=1)
        teacher = finetune_teacher(teacher_suite, teacher_source, teacher_tokenizer, out / "teacher", teacher_args)

    # ---- students, built from their specs (the same initial weights for DDML and the baselines) -------------------
    texts = task.splits["train"]["text"][:]

    def fresh_students():
        set_seed(args.seed)
        built = {}
        # the main process learns (and saves) any new vocabulary first; the others then load the same one
        with args.main_process_first(local=args.save_on_each_node, desc="student tokenizers"):
            for name, spec in recipe.students.items():
                # a vocabulary learnt from the texts belongs to these texts: keyed by the spec and the training ids
                vocab_key = fingerprint(spec, data_fingerprint(suite)[f"{task.name}/train"])
                tokenizer_dir = out / "tokenizers" / f"{name}-{vocab_key}"
                built[name] = build_student(spec, task.label_names, texts, tokenizer_dir=tokenizer_dir)
        return built

    students = fresh_students()
    tokenizers = {name: tok for name, (_, tok) in students.items()}
    compute_metrics = build_compute_metrics(label_names=task.label_names)

    # ---- DDML (checkpoints and the final students in <output_dir>/ddml) -------------------------------------------
    ddml_dir = out / "ddml"
    run_key = fingerprint(recipe.settings(), training_fingerprint(args), data_fingerprint(suite))
    complete = start_stage(args, ddml_dir, fingerprint("ddml", run_key))
    if complete:  # the finished students, saved one folder each
        print(f"[ddml] reusing the finished students in {ddml_dir}")
        students = {name: (AutoModelForSequenceClassification.from_pretrained(student_folder(ddml_dir, name)), tok)
                    for name, (_, tok) in students.items()}
    trainer = MutualLearningTrainer(
        students={name: model for name, (model, _) in students.items()},
        teacher_model=teacher,
        args=dataclasses.replace(args, output_dir=str(ddml_dir)),
        train_dataset=task.splits["train"],
        eval_dataset=task.splits["validation"],
        processing_classes={**tokenizers, "teacher": teacher_tokenizer},
        compute_metrics=compute_metrics,
    )
    if not complete:
        train_or_resume(trainer, ddml_dir)
        finish_stage(trainer, ddml_dir, {"students": list(students), "steps": trainer.state.global_step})
    ddml_steps = json.loads((ddml_dir / "training_complete.json").read_text())["steps"]
    ensemble_metrics = trainer.evaluate(trainer.tokenize_dataset(task.splits[report_split]), metric_key_prefix="test")

    # ---- each student alone (baseline: same optimizer steps, same learning rate as in DDML) ---------------------
    alone = {}
    if recipe.run_baselines:
        for name, (model, tok) in fresh_students().items():
            stage = out / "alone" / name
            learning_rate = student_learning_rate(args, name)
            if start_stage(args, stage, fingerprint("alone", name, learning_rate, run_key)):
                alone[name] = AutoModelForSequenceClassification.from_pretrained(stage)
                continue
            student_suite = tokenize_suite(suite, {"": tok}, args.max_length)
            baseline = TaskAwareTrainer(
                model=model,
                args=_stage_args(args, stage, max_steps=ddml_steps, learning_rate=learning_rate,
                                 save_strategy="steps", save_steps=max(1, ddml_steps // 2), save_total_limit=1),
                train_dataset=student_suite.train_dataset(),
                processing_class=tok,
            )
            train_or_resume(baseline, stage)
            finish_stage(baseline, stage, {"student": name}, log_history=False)
            alone[name] = baseline.model

    # ---- report (every process evaluates its shard; the main process writes) -----------------------------------
    rows = []

    def add(label, model, tok, params=None):
        metrics = evaluate_model(model, tokenize_suite(suite, {"": tok}, args.max_length), report_split, tok,
                                 batch_size=args.per_device_eval_batch_size, output_dir=str(out / "eval"))[task.name]
        rows.append({"model": label, "params": params or count_parameters(model), "task": task.name, **metrics})
        return metrics

    add("teacher", teacher, teacher_tokenizer)
    speeds = []
    for name in students:
        metrics = add(f"{name} (DDML)", trainer.group.students[name], tokenizers[name])
        speeds.append(metrics["samples_per_second"])
    rows.append({
        "model": "ensemble (DDML)", "task": task.name,
        "params": sum(count_parameters(m) for m in trainer.group.students.values()),
        # the ensemble runs every student: its throughput is the harmonic combination of theirs
        "samples_per_second": 1.0 / sum(1.0 / s for s in speeds),
        **{k[len("test_ensemble_"):]: v for k, v in ensemble_metrics.items() if k.startswith("test_ensemble_")},
    })
    for name, model in alone.items():
        add(f"{name} (alone)", model, tokenizers[name])

    columns = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
    table = results_table(rows, metrics=columns, extra=("samples_per_second",))
    header = (f"DDML on {task.name}, {describe_report_splits({task.name: report_split})}{note}; "
              f"a={args.hard_weight}, b={args.soft_weight}, "
              f"c={args.mutual_weight}, T={args.temperature}, KL direction {args.kl_direction}")
    with main_process_only(args) as writer:
        if writer:
            print("\n" + header + "\n\n" + table + "\n")
            (out / "results.md").write_text(header + "\n\n" + table + "\n")
            (out / "results.json").write_text(json.dumps({"config": header, "split": report_split, "rows": rows},
                                                         indent=2))
    if push:
        teacher_label = recipe.teacher_model or f"{recipe.teacher_base} fine-tuned on {', '.join(suite.names)}"
        cards = {name: card_context(
            trainer.group.students[name], args, student=name, teacher=teacher_label, datasets=datasets_of(suite),
            peers=[PeerInfo(p, base_model=hub_id_of(recipe.students[p].get("base"))) for p in students if p != name],
            base_model=hub_id_of(recipe.students[name].get("base")),
            student_description=describe_student_spec(recipe.students[name]),
            metrics=rows_to_card_metrics(rows, f"{name} (DDML)", split=report_split_name({task.name: report_split}),
                                         compare=("teacher", "ensemble (DDML)", f"{name} (alone)")),
        ) for name in students}
        push_recipe_models(args, {n: student_folder(ddml_dir, n) for n in students}, cards, recipe.hub_student_pattern)
    return {"rows": rows}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = TrlParser((DDMLRecipeArguments, MutualLearningArguments))
    recipe_args, training_args = parser.parse_args_and_config()
    main(recipe_args, training_args)
