# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
HASOC 2019 hate / offensive content identification (Saseendran et al. 2021): classical baselines, a distilled
transformer student and the hierarchical model, on subtask A (HOF / NOT) and subtask B (NONE / HATE / OFFN / PRFN), in
one table.

1. Baselines (``baselines``): TF-IDF + logistic regression, linear SVM, kNN, random forest, their majority vote
   (``mode``) and the majority class, each scored with ``cv_folds``-fold stratified cross-validation on the whole
   training split, then refitted on it and scored on the official test split. ``hierarchical_baseline`` adds the
   hierarchical model built from two logistic regressions (A, then B on the HOF posts).
2. Transformers (``run_transformers``): for each subtask a teacher is fine-tuned from ``teacher_base`` (on
   ``max_train_samples`` examples) and a student keeping ``student_layers`` of it is distilled with
   ``AnnealingTrainer`` (teacher annealing by default).
3. The hierarchical model (the proposed model of Saseendran et al.): the subtask-A student decides HOF / NOT, posts
   judged NOT are NONE, and a subtask-B student distilled on the HOF posts only (HATE / OFFN / PRFN) labels the rest;
   with ``profanity`` (``better_profanity`` or a word-list file) a lexicon step first labels PRFN the HOF posts that
   contain a listed word, and the B student is then trained on HATE / OFFN only, as in the paper.
4. One table (``<output_dir>/results.md`` and ``results.json``): accuracy, macro P/R/F1 on the test split for every
   model and subtask, the baselines' cross-validated macro-F1, and the paper's reported numbers beside them. The paper
   reports HASOC 2021 English test results; these runs use HASOC 2019 data, so the columns are not the same test.

Every transformer stage is kept in ``<output_dir>/<stage>/`` with a fingerprint of its settings and data: a rerun
reuses finished stages, an interrupted one resumes from its last checkpoint.

Usage (a paper pipeline: the distillation of each subtask's student is ``recipes/annealing.py``'s method):

    # English, quick: full-train baselines with 10-fold CV, transformers on a 1,500-post subsample
    accelerate launch --num_processes 1 --num_cpu_threads_per_process 2 -m distil_trainers.papers.hasoc_pipeline \\
        --config recipes/configs/hasoc_en_quick.yaml

    # German or Hindi: the same pipeline, another language (no profanity step: the word list is English)
    accelerate launch --num_processes 1 --num_cpu_threads_per_process 2 -m distil_trainers.papers.hasoc_pipeline \\
        --config recipes/configs/hasoc_de_quick.yaml

    # baselines only (seconds to minutes, no transformer)
    python -m distil_trainers.papers.hasoc_pipeline --config recipes/configs/hasoc_en_quick.yaml \\
        --run_transformers false
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import ClassLabel
from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
from trl import TrlParser

from distil_trainers import AnnealingArguments, AnnealingTrainer
from distil_trainers.cards import card_context, datasets_of, hub_id_of, rows_to_card_metrics
from distil_trainers.data import load_dataset_by_name
from distil_trainers.data.registry import HASOC_LANGUAGES
from distil_trainers.hub import push_recipe_models, split_push_argument
from distil_trainers.metrics import build_compute_metrics, classification_metrics
from distil_trainers.models import resolve_model_name_or_path
from distil_trainers.papers.baselines import BASELINES, make_baseline, run_baselines
from distil_trainers.papers.hierarchical import (
    BetterProfanityDetector,
    HierarchicalClassifier,
    LexiconProfanityDetector,
    sklearn_predictor,
    transformer_predictor,
)
from distil_trainers.papers.workflow import (
    TaskData,
    TaskSuite,
    build_classifier,
    count_parameters,
    data_fingerprint,
    evaluate_model,
    finetune_teacher,
    fingerprint,
    finish_stage,
    main_process_only,
    stage_arguments,
    start_stage,
    tokenize_suite,
    train_or_resume,
    training_fingerprint,
)

logger = logging.getLogger(__name__)

# Saseendran et al. (2021), tables 8 and 9: HASOC 2021 English test results (accuracy, macro-F1, macro-precision,
# macro-recall). They are shown beside the rows of PAPER_LANGUAGE only.
PAPER_LANGUAGE = "en"
PAPER_REPORTED = {
    ("a", "student"): (77.67, 74.91, 77.30, 74.91),  # DistilBERT
    ("a", "random_forest"): (47.77, 47.54, 52.86, 52.61),
    ("a", "svm"): (52.06, 49.96, 50.04, 50.05),
    ("a", "logreg"): (50.66, 48.13, 48.18, 48.14),
    ("b", "student"): (65.10, 57.65, 59.90, 57.65),  # DistilBERT
    ("b", "hierarchical"): (59.95, 53.04, 54.98, 53.91),  # the proposed model (with the profanity step)
    ("b", "mode"): (30.44, 24.25, 25.57, 24.83),  # "ML overall mode"
    ("b", "knn"): (32.86, 18.58, 18.58, 23.19),
}
MODEL_LABELS = {
    "majority": "majority class",
    "logreg": "TF-IDF + logistic regression",
    "svm": "TF-IDF + linear SVM",
    "knn": "TF-IDF + kNN",
    "random_forest": "TF-IDF + random forest",
    "mode": "TF-IDF majority vote (LR, SVM, kNN, RF)",
}


@dataclass
class RecipeArguments:
    language: str = field(
        default="en", metadata={"help": "HASOC 2019 language: en, de or hi.", "choices": list(HASOC_LANGUAGES)}
    )
    data_dir: str | None = field(
        default=None, metadata={"help": "Data directory (default: DISTIL_TRAINERS_DATA_DIR or ../shared/data)."}
    )
    subtasks: list[str] = field(default_factory=lambda: ["a", "b"], metadata={"help": "Subtasks to run: a and/or b."})
    baselines: list[str] = field(
        default_factory=lambda: list(BASELINES), metadata={"help": f"Classical baselines to run, from {BASELINES}."}
    )
    cv_folds: int = field(
        default=10, metadata={"help": "Folds of the stratified cross-validation on train (0 = none)."}
    )
    class_weight: str | None = field(
        default=None, metadata={"help": "'balanced' re-weights classes in logreg / svm / random_forest."}
    )
    n_estimators: int = field(default=200, metadata={"help": "Trees of the random forest."})
    hierarchical_baseline: bool = field(
        default=True, metadata={"help": "Also run the hierarchical model built from two logistic regressions."}
    )
    run_transformers: bool = field(default=True, metadata={"help": "Fine-tune the teachers and distil the students."})
    hierarchical: bool = field(
        default=True, metadata={"help": "Run the hierarchical transformer model (needs subtask a among subtasks)."}
    )
    profanity: str | None = field(
        default="better_profanity",
        metadata={
            "help": "Profanity step of the hierarchical models: 'better_profanity', a word-list file (one word "
            "per line, '*' = any suffix), or none. Both variants (with and without) are reported."
        },
    )
    teacher_base: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Encoder the teachers are fine-tuned from (the packaged copy is used if installed)."},
    )
    teacher_epochs: float = field(default=2.0, metadata={"help": "Epochs of teacher fine-tuning."})
    teacher_learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate of teacher fine-tuning."})
    student_layers: list[int] = field(
        default_factory=lambda: [0, 2, 4], metadata={"help": "Encoder layers of the teacher the students keep."}
    )
    lexicon_b_two_class: bool = field(
        default=True,
        metadata={
            "help": "With the profanity step, train the transformer B model on HATE / OFFN only, as in the paper "
            "(one more teacher and student); false reuses the HATE / OFFN / PRFN student."
        },
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Subsample the train split for the transformers (baselines use all of it)."}
    )

    def __post_init__(self):
        if self.language not in HASOC_LANGUAGES:
            raise ValueError(f"language must be one of {list(HASOC_LANGUAGES)}, got {self.language!r}.")
        bad = [s for s in self.subtasks if s not in ("a", "b")]
        if bad or not self.subtasks:
            raise ValueError(f"subtasks must be a non-empty subset of ['a', 'b'], got {self.subtasks}.")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"Unknown baselines {unknown}; choose from {BASELINES}.")
        if self.profanity in ("", "none", "None"):
            self.profanity = None
        if self.profanity not in (None, "better_profanity") and not os.path.isfile(self.profanity):
            raise ValueError(
                f"profanity must be 'better_profanity', a word-list file or none; {self.profanity!r} is not a file."
            )
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ValueError(f"cv_folds must be 0 (no cross-validation) or >= 2, got {self.cv_folds}.")


def profanity_detector(spec: str | None):
    if spec is None:
        return None
    if spec == "better_profanity":
        return BetterProfanityDetector()
    return LexiconProfanityDetector.from_file(spec)


def load_subtask(recipe: RecipeArguments, seed: int, name: str, **kwargs) -> TaskData:
    dataset = f"hasoc_{recipe.language}_{name[0]}"
    limits = {"train": recipe.max_train_samples} if recipe.max_train_samples else None
    splits = load_dataset_by_name(dataset, data_dir=recipe.data_dir, seed=seed, max_samples_per_split=limits, **kwargs)
    return TaskData(name=name, splits=splits, label_names=list(splits["train"].features["label"].names))


def hof_subset(task: TaskData, keep_names: list[str], name: str) -> TaskData:
    """The HOF-only subtask-B data restricted to the classes ``keep_names`` (relabelled 0..k-1)."""
    names = task.label_names
    keep_ids = [names.index(n) for n in keep_names]
    remap = {old: new for new, old in enumerate(keep_ids)}
    splits = task.splits.filter(lambda row: row["label"] in remap)
    features = splits["train"].features.copy()
    features["label"] = ClassLabel(names=list(keep_names))
    splits = splits.map(lambda row: {"label": remap[row["label"]]}, features=features)
    return TaskData(name=name, splits=splits, label_names=list(keep_names))


def distil(recipe: RecipeArguments, args: AnnealingArguments, task: TaskData, tokenizer, output_dir: Path):
    """Fine-tune (or reuse) the teacher of one task and distil (or reuse) its student; returns both models."""
    teacher_base = resolve_model_name_or_path(recipe.teacher_base)
    suite = tokenize_suite(TaskSuite(tasks=[task]), {"": tokenizer}, args.max_length)
    teacher_args = stage_arguments(
        args,
        output_dir / "teacher",
        num_train_epochs=recipe.teacher_epochs,
        learning_rate=recipe.teacher_learning_rate,
    )
    teacher = finetune_teacher(suite, teacher_base, tokenizer, output_dir / "teacher", teacher_args)

    student_dir = output_dir / "student"
    student_args = dataclasses.replace(args, output_dir=str(student_dir))
    key = fingerprint(
        "student",
        task.name,
        recipe.teacher_base,
        recipe.student_layers,
        args.max_length,
        training_fingerprint(args),
        data_fingerprint(suite),
    )
    if start_stage(args, student_dir, key):
        print(f"[{task.name}] reusing the finished student in {student_dir}")
        return teacher, AutoModelForSequenceClassification.from_pretrained(student_dir), suite
    student = build_classifier(teacher_base, suite, layers=recipe.student_layers)
    trainer = AnnealingTrainer(
        model=student,
        teacher_model=teacher,
        args=student_args,
        train_dataset=suite.train_dataset(),
        eval_dataset=suite.eval_datasets("validation"),
        processing_class=tokenizer,
        compute_metrics=build_compute_metrics(label_names=task.label_names),
    )
    train_or_resume(trainer, student_dir)
    finish_stage(trainer, student_dir, {"task": task.name, "method": args.annealing}, tokenizer=tokenizer,
                 log_history=False)
    return teacher, trainer.model, suite


def row(
    model: str,
    subtask: str,
    metrics: dict,
    params: int | None = None,
    cv: dict | None = None,
    paper_key: tuple[str, str] | None = None,
    language: str = "en",
) -> dict:
    """A table row; the paper's numbers (HASOC 2021 English) sit beside English rows only."""
    reported = PAPER_REPORTED.get(paper_key) if paper_key and language == PAPER_LANGUAGE else None
    return {
        "model": model,
        "subtask": subtask.upper(),
        "params": params,
        **{k: metrics[k] for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro")},
        "cv_f1_macro": cv.get("f1_macro") if cv else None,
        "cv_f1_macro_std": cv.get("f1_macro_std") if cv else None,
        "paper_accuracy": reported[0] if reported else None,
        "paper_f1_macro": reported[1] if reported else None,
    }


def format_table(rows: list[dict]) -> str:
    def pct(value):
        return "-" if value is None else f"{100 * value:.2f}"

    lines = [
        "| model | subtask | params | accuracy | precision_macro | recall_macro | f1_macro | CV f1_macro (train) "
        "| paper's accuracy | paper's f1_macro |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cv = "-" if r["cv_f1_macro"] is None else f"{100 * r['cv_f1_macro']:.2f} ± {100 * r['cv_f1_macro_std']:.2f}"
        params = "-" if r["params"] is None else f"{r['params'] / 1e6:.1f}M"
        paper = [("-" if r[k] is None else f"{r[k]:.2f}") for k in ("paper_accuracy", "paper_f1_macro")]
        lines.append(
            f"| {r['model']} | {r['subtask']} | {params} | {pct(r['accuracy'])} | {pct(r['precision_macro'])} | "
            f"{pct(r['recall_macro'])} | {pct(r['f1_macro'])} | {cv} | {paper[0]} | {paper[1]} |"
        )
    return "\n".join(lines)


def main(recipe: RecipeArguments, args: AnnealingArguments) -> dict:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # with --push_to_hub the distilled student of each subtask is pushed once, after the report, to
    # <hub_model_id>-subtask-<a|b> (teachers and hierarchical parts are not pushed)
    args, push = split_push_argument(args)
    if push and not recipe.run_transformers:
        raise ValueError("--push_to_hub pushes the distilled students: it needs run_transformers (no student here).")
    set_seed(args.seed)
    start = time.time()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    lang = recipe.language
    full = {s: load_dataset_by_name(f"hasoc_{lang}_{s}", data_dir=recipe.data_dir, seed=args.seed) for s in "ab"}
    hof = load_dataset_by_name(f"hasoc_{lang}_b", data_dir=recipe.data_dir, seed=args.seed, hof_only=True)
    for s, data in full.items():
        print(
            f"[data] hasoc_{lang}_{s}: { ({k: len(v) for k, v in data.items()}) }; "
            f"classes {data['train'].features['label'].names}"
        )
    b_names = full["b"]["train"].features["label"].names
    test_texts = list(full["b"]["test"]["text"][:])
    test_b = np.asarray(full["b"]["test"]["label"][:])
    lexicon = profanity_detector(recipe.profanity)
    rows: list[dict] = []
    cards = {}  # the model card of each subtask's distilled student

    # ---- classical baselines (whole train split, k-fold CV, official test) ----
    kwargs = {"class_weight": recipe.class_weight, "n_estimators": recipe.n_estimators}
    for s in recipe.subtasks:
        results = run_baselines(
            recipe.baselines,
            full[s]["train"],
            full[s]["test"],
            folds=recipe.cv_folds or None,
            seed=args.seed,
            **kwargs,
        )
        for result in results:
            rows.append(
                row(MODEL_LABELS[result.name], s, result.test, cv=result.cv, paper_key=(s, result.name), language=lang)
            )
        print(format_table(rows))

    def hierarchical_rows(label: str, predict_a, hof_data, predict_hof, params=None):
        """Rows for the hierarchical model without and with the profanity step."""
        variants = [("", None, hof_data[0], predict_hof[0])]
        if lexicon is not None:
            variants.append((" + profanity lexicon", lexicon, hof_data[1], predict_hof[1]))
        for suffix, detector, names, predict_b in variants:
            model = HierarchicalClassifier(
                predict_a=predict_a,
                predict_b=predict_b,
                b_label_names=names,
                output_label_names=b_names,
                profanity=detector,
            )
            metrics = classification_metrics(test_b, model.predict(test_texts), label_names=b_names)
            rows.append(
                row(
                    label + suffix,
                    "b",
                    metrics,
                    params=params,
                    paper_key=("b", "hierarchical") if detector is not None else None,
                    language=lang,
                )
            )

    hof_names = list(hof["train"].features["label"].names)
    non_profane = [n for n in hof_names if n != "PRFN"]
    if recipe.hierarchical_baseline:

        def fitted_logreg(train):
            pipeline = make_baseline("logreg", seed=args.seed, class_weight=recipe.class_weight)
            return pipeline.fit(list(train["text"][:]), np.asarray(train["label"][:]))

        hof_task = TaskData("hof", hof, hof_names)
        two = hof_subset(hof_task, non_profane, "hof2")
        predict_a = sklearn_predictor(fitted_logreg(full["a"]["train"]))
        hierarchical_rows(
            "hierarchical (TF-IDF + logistic regression)",
            predict_a,
            (hof_names, non_profane),
            (sklearn_predictor(fitted_logreg(hof["train"])), sklearn_predictor(fitted_logreg(two.splits["train"]))),
        )

    # ---- transformers: teacher -> distilled student per subtask; hierarchical students ----
    if recipe.run_transformers:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_name_or_path(recipe.teacher_base))
        students = {}
        for s in recipe.subtasks:
            task = load_subtask(recipe, args.seed, s)
            teacher, student, suite = distil(recipe, args, task, tokenizer, output_dir / f"subtask_{s}")
            students[s] = student
            card_rows = []
            for role, model in (
                ("teacher (MiniLM-L6, fine-tuned)", teacher),
                ("student (3 layers, distilled)", student),
            ):
                metrics = evaluate_model(
                    model,
                    suite,
                    "test",
                    tokenizer,
                    batch_size=args.per_device_eval_batch_size,
                    output_dir=str(output_dir / "eval"),
                )[task.name]
                card_rows.append({"model": role.split(" ")[0], "task": task.name, **metrics})
                rows.append(
                    row(
                        f"{role}",
                        s,
                        metrics,
                        params=count_parameters(model),
                        paper_key=(s, "student") if role.startswith("student") else None,
                        language=lang,
                    )
                )
            print(format_table(rows))
            cards[s] = card_context(
                student, args, teacher=f"{recipe.teacher_base} fine-tuned on {task.name}", datasets=datasets_of(suite),
                metrics=rows_to_card_metrics(card_rows, "student", compare=("teacher",)),
                base_model=hub_id_of(recipe.teacher_base),
            )  # fmt: skip
        if recipe.hierarchical and "a" in students:
            hof_task = load_subtask(recipe, args.seed, "b_hof", hof_only=True)
            _, hof_student, _ = distil(recipe, args, hof_task, tokenizer, output_dir / "hierarchical_b")
            predict = {
                "a": transformer_predictor(
                    students["a"], tokenizer, args.per_device_eval_batch_size, args.max_length
                )
            }
            predict_hof = [
                transformer_predictor(hof_student, tokenizer, args.per_device_eval_batch_size, args.max_length)
            ]
            names = [hof_names]
            if lexicon is not None and not recipe.lexicon_b_two_class:
                predict_hof.append(predict_hof[0])
                names.append(hof_names)
            elif lexicon is not None:
                two = hof_subset(hof_task, non_profane, "b_hof2")
                _, hof2_student, _ = distil(recipe, args, two, tokenizer, output_dir / "hierarchical_b_no_prfn")
                predict_hof.append(
                    transformer_predictor(hof2_student, tokenizer, args.per_device_eval_batch_size, args.max_length)
                )
                names.append(non_profane)
            else:
                predict_hof.append(None)
                names.append(None)
            params = count_parameters(students["a"]) + count_parameters(hof_student)
            hierarchical_rows("hierarchical (students A -> B on HOF)", predict["a"], names, predict_hof, params)

    wall = (time.time() - start) / 60
    header = (
        f"HASOC 2019 {HASOC_LANGUAGES[lang]}, official test split; baselines on the whole train split "
        f"({recipe.cv_folds}-fold CV), "
        + (
            f"transformers on {recipe.max_train_samples or 'all'} training posts"
            if recipe.run_transformers
            else "no transformers"
        )
        + f"; wall time {wall:.1f} min. Paper columns: its HASOC 2021 English test results (another test set"
        + ("" if lang == PAPER_LANGUAGE else "; none beside the rows of this language")
        + ")."
    )
    table = format_table(rows)
    with main_process_only(args) as writer:
        if writer:
            print("\n" + header + "\n\n" + table + "\n")
            (output_dir / "results.md").write_text(header + "\n\n" + table + "\n")
            (output_dir / "results.json").write_text(
                json.dumps({"recipe": dataclasses.asdict(recipe), "rows": rows, "wall_minutes": wall}, indent=2)
            )
    if push:
        folders = {s: output_dir / f"subtask_{s}" / "student" for s in cards}
        push_recipe_models(args, folders, cards, student_pattern="{repo_id}-subtask-{student}")
    return {"rows": rows}


if __name__ == "__main__":
    parser = TrlParser((RecipeArguments, AnnealingArguments))
    recipe_args, training_args = parser.parse_args_and_config()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(recipe_args, training_args)
