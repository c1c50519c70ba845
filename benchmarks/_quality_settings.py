"""The settings of the full-data benchmark (``benchmarks/quality.py``): the job file, the command line's datasets
and variants, and the data each dataset's stages read."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

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

METHODS = ("alone", "kd", "bam", "ffn", "ddml", "kd_c0", "teacher")
# "teacher" among the methods: the teacher fine-tuned again with a variant's class weights, the reference row of that
# variant's students (they all distil the unweighted teacher and its cache, so that the variants differ in their own
# label term alone); it runs in the variants whose one change is class weights, after their students
TEACHER = "teacher"
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
    "teacher": "teacher fine-tuned with the variant's class weights",
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
