"""Building blocks the recipes share: loading task datasets, fine-tuning (or reusing) a teacher, evaluating models
and writing the results table; resumable stages (:func:`start_stage`, :func:`finish_stage`) whose folders, markers
and results are written by the main process alone under several processes (:func:`main_process_only`). No loss math
lives here."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from accelerate import PartialState
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from ..data.arguments import DatasetArguments, TaskDataSpec, unique_task_names
from ..data.labels import model_label_names
from ..data.multitask import concatenate_tasks
from ..data.processing import MultiTokenizerCollator, tokenize_for_models
from ..metrics import build_compute_metrics
from ..models import MultiTaskModel, make_student
from ..trainers.base import TaskAwareTrainer

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "training_complete.json"


@dataclass
class TeacherDataArguments(DatasetArguments):
    """Recipe arguments every recipe shares: where the data comes from
    (:class:`~distil_trainers.data.DatasetArguments`: ``--dataset_name`` and how to read it), how much of it, and the
    teacher (an existing fine-tuned one, or a pretrained encoder to fine-tune first). Recipes subclass it with their
    own fields (and their own default ``dataset_name``)."""

    teacher_model: str | None = field(
        default=None, metadata={"help": "An already fine-tuned teacher (path or Hub id). If unset, one is fine-tuned."}
    )
    teacher_base: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Pretrained encoder the teacher is fine-tuned from (the packaged copy is used if installed)."},
    )
    teacher_epochs: float = field(default=2.0, metadata={"help": "Epochs of teacher fine-tuning."})
    teacher_learning_rate: float = field(default=5e-5, metadata={"help": "Learning rate of teacher fine-tuning."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample each task's train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample validation and test splits."})


@dataclass
class TaskData:
    """One task's raw splits and class names."""

    name: str
    splits: datasets.DatasetDict
    label_names: list[str]
    source: TaskDataSpec | None = None  # where the data came from (None: a registered dataset, or built in code)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def has_test(self) -> bool:
        return "test" in self.splits


@dataclass
class TaskSuite:
    """The tasks of a run, tokenised for the student (and the teacher if it tokenizes differently)."""

    tasks: list[TaskData]
    tokenized: dict[str, datasets.DatasetDict] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def is_multitask(self) -> bool:
        return len(self.tasks) > 1

    def label_spec(self) -> dict[str, int]:
        return {t.name: t.num_labels for t in self.tasks}

    def train_dataset(self, split: str = "train") -> datasets.Dataset:
        if not self.is_multitask:
            return self.tokenized[self.names[0]][split]
        return concatenate_tasks({name: ds[split] for name, ds in self.tokenized.items()}, self.names)

    def eval_datasets(self, split: str | Mapping[str, str]) -> datasets.Dataset | dict[str, datasets.Dataset]:
        """One dataset (single task) or ``{task: dataset}`` with a ``task_ids`` column (multi-task); ``split`` is one
        split for every task or ``{task: split}`` (e.g. :meth:`report_splits`)."""
        splits = split if isinstance(split, Mapping) else dict.fromkeys(self.names, split)
        if not self.is_multitask:
            return self.tokenized[self.names[0]][splits[self.names[0]]]
        out = {}
        for task_id, name in enumerate(self.names):
            ds = self.tokenized[name][splits[name]]
            out[name] = ds.add_column("task_ids", [task_id] * len(ds))
        return out

    def report_splits(self, preferred: str = "test") -> dict[str, str]:
        """``{task: split}`` the report evaluates on: ``preferred`` where the task has it, else its validation split
        (a dataset without a test split)."""
        return {t.name: preferred if preferred in t.splits else "validation" for t in self.tasks}


def describe_report_splits(splits: Mapping[str, str]) -> str:
    """How a report names the splits of :meth:`TaskSuite.report_splits`: ``"test split"``, or which tasks are reported
    on their validation split because they have no test split."""
    fallback = [task for task, split in splits.items() if split != "test"]
    if not fallback:
        return "test split"
    if len(fallback) == len(splits):
        return f"validation split (no test split in {', '.join(fallback)})"
    return f"test split (validation split for {', '.join(fallback)}, which has no test split)"


def report_split_name(splits: Mapping[str, str]) -> str:
    """The one split name of :meth:`TaskSuite.report_splits` (``"test"`` when the tasks differ), e.g. for cards."""
    names = set(splits.values())
    return names.pop() if len(names) == 1 else "test"


def load_tasks(
    specs: Sequence[str | TaskDataSpec],
    data_dir: str | None = None,
    seed: int = 42,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    *,
    validation_size: float = 0.1,
    label_names: Sequence[str] | Mapping[str, Sequence[str] | None] | None = None,
) -> TaskSuite:
    """Load the tasks' data (:func:`~distil_trainers.data.load_text_classification`), optionally subsampled (seeded,
    stratified): ``max_train_samples`` per train split, ``max_eval_samples`` per validation and test split.

    ``specs``: :class:`~distil_trainers.data.TaskDataSpec` (e.g. from
    :meth:`~distil_trainers.data.DatasetArguments.task_specs`) or plain names / paths. Task names: a registered name
    stays itself, a file gives its stem, a folder its name (made unique). A task without a validation split gets one
    carved from train (``validation_size``); one without a test split is kept (see :meth:`TaskSuite.report_splits`).
    ``label_names``: the classes of an already fine-tuned model (``{task: names}``, or the names for a single task,
    e.g. from :func:`teacher_label_names`): that task's labels are mapped to the model's ids by class name.
    """
    specs = [s if isinstance(s, TaskDataSpec) else TaskDataSpec(str(s)) for s in specs]
    names = unique_task_names([spec.name(data_dir) for spec in specs])
    if label_names is not None and not isinstance(label_names, Mapping):
        if len(specs) != 1:
            raise ValueError("label_names for several tasks must be a mapping {task: class names}.")
        label_names = {names[0]: label_names}
    label_names = dict(label_names or {})
    limits: dict[str, int] = {}
    if max_train_samples is not None:
        limits["train"] = max_train_samples
    if max_eval_samples is not None:
        limits["validation"] = limits["test"] = max_eval_samples
    tasks = []
    for spec, name in zip(specs, names):
        splits = spec.load(
            data_dir=data_dir, seed=seed, validation_size=validation_size, label_names=label_names.get(name),
            max_samples_per_split=limits or None,
        )
        tasks.append(
            TaskData(
                name=name, splits=splits, label_names=list(splits["train"].features["label"].names),
                source=None if spec.is_registered else spec,
            )
        )
    return TaskSuite(tasks=tasks)


def teacher_label_names(
    model_name_or_path: str | os.PathLike | None, task_names: Sequence[str]
) -> dict[str, list[str]]:
    """``{task: class names}`` of an already fine-tuned model (its ``config.id2label``; a multi-task model of this
    library: the ``task_label_names`` of the suite's tasks), for :func:`load_tasks` to map the data to the model's
    class ids. Empty when the model does not name its classes (``LABEL_0``…)."""
    if model_name_or_path is None:
        return {}
    config = AutoConfig.from_pretrained(str(model_name_or_path))
    if getattr(config, "tasks", None):
        per_task = getattr(config, "task_label_names", None) or {}
        return {task: list(per_task[task]) for task in task_names if per_task.get(task)}
    names = model_label_names(getattr(config, "id2label", None))
    if names is None or len(task_names) != 1:
        return {}
    return {task_names[0]: names}


def tokenize_suite(
    suite: TaskSuite, tokenizers: Mapping[str, PreTrainedTokenizerBase], max_length: int = 128
) -> TaskSuite:
    """A copy of ``suite`` tokenised with ``tokenizers`` (``{"": student_tok, "teacher_": teacher_tok}``; see
    :func:`~distil_trainers.data.processing.tokenize_for_models`); a ``text_pair`` column is tokenised as the pair's
    second text. The raw splits are shared."""
    tokenized = {}
    for task in suite.tasks:
        pair = "text_pair" if "text_pair" in next(iter(task.splits.values())).column_names else None
        tokenized[task.name] = tokenize_for_models(
            task.splits, tokenizers, max_length=max_length, text_pair_column=pair, desc=f"Tokenizing {task.name}"
        )
    return TaskSuite(tasks=suite.tasks, tokenized=tokenized)


def build_classifier(base: str, suite: TaskSuite, layers: Sequence[int] | None = None) -> PreTrainedModel:
    """A classifier for the suite's task(s) on top of the pretrained encoder ``base``: a sequence classifier for one
    task, a :class:`MultiTaskModel` for several; ``layers`` keeps only those encoder layers (a smaller student)."""
    if suite.is_multitask:
        model = MultiTaskModel.from_encoder(
            base, tasks=suite.label_spec(), task_label_names={t.name: t.label_names for t in suite.tasks}
        )
        return make_student(model, layers) if layers is not None else model
    task = suite.tasks[0]
    kwargs = {
        "num_labels": task.num_labels,
        "id2label": dict(enumerate(task.label_names)),
        "label2id": {n: i for i, n in enumerate(task.label_names)},
    }
    if layers is not None:
        return make_student(base, layers, **kwargs)
    return AutoModelForSequenceClassification.from_pretrained(base, **kwargs)


STAGE_FILE = "stage.json"


def fingerprint(*parts: Any) -> str:
    """A stable hash of the settings and data a stage's result depends on."""
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def data_fingerprint(suite: TaskSuite) -> dict[str, str]:
    """Per task and split: a hash of the example ids (what the stage trained and was evaluated on); for data that is
    not a registered dataset (a user's file, which may be edited) also of the texts and labels."""
    out = {}
    for task in suite.tasks:
        for split, ds in task.splits.items():
            parts = [list(ds["id"][:])]
            if task.source is not None:
                parts += [list(ds[c][:]) for c in ds.column_names if c in ("text", "text_pair", "label")]
                parts.append(task.label_names)
            out[f"{task.name}/{split}"] = fingerprint(*parts)
    return out


# TrainingArguments that do not change what a stage produces.
_NOT_RESULT_AFFECTING = {
    "output_dir", "logging_dir", "run_name", "report_to", "disable_tqdm", "logging_steps", "logging_strategy",
    "save_total_limit", "push_to_hub", "hub_model_id", "hub_token", "per_device_eval_batch_size",
}


def training_fingerprint(args: TrainingArguments) -> dict[str, Any]:
    return {k: v for k, v in args.to_dict().items() if k not in _NOT_RESULT_AFFECTING}


def prepare_stage(directory: str | os.PathLike, key: str) -> bool:
    """True when ``directory`` holds the finished result of a stage run with settings ``key``. Otherwise it is made
    ready to (re)start: an interrupted run with the same settings is kept (to resume from its last checkpoint), while
    results of other settings are removed so they can never be mistaken for this run's.

    One process's view: under several processes use :func:`start_stage`, which runs this on the main process only."""
    directory = Path(directory)
    stage = directory / STAGE_FILE
    if stage.exists() and json.loads(stage.read_text()).get("fingerprint") != key:
        logger.warning("%s holds a run with other settings; starting this stage afresh", directory)
        shutil.rmtree(directory)
    if is_complete(directory, key):
        return True
    directory.mkdir(parents=True, exist_ok=True)
    stage.write_text(json.dumps({"fingerprint": key}))
    return False


def is_complete(directory: str | os.PathLike, key: str | None = None) -> bool:
    """Whether ``directory`` holds a finished stage (with ``key``: one run with the settings ``key``). Reads only."""
    directory = Path(directory)
    if not (directory / COMPLETE_MARKER).exists():
        return False
    if key is None:
        return True
    stage = directory / STAGE_FILE
    return stage.exists() and json.loads(stage.read_text()).get("fingerprint") == key


def mark_complete(directory: str | os.PathLike, info: Mapping[str, Any]) -> None:
    Path(directory, COMPLETE_MARKER).write_text(json.dumps(dict(info), indent=2, default=str))


@contextlib.contextmanager
def main_process_only(args: TrainingArguments) -> Iterator[bool]:
    """The one way the pipelines write shared files (stage folders, markers, results, cards) under several processes
    (``torchrun`` / ``accelerate launch``)::

        with main_process_only(args) as writer:
            if writer:
                (out / "results.md").write_text(table)

    ``writer`` is true on the process that saves the run's models (``args.should_save``: the main process; with
    ``save_on_each_node``, each node's main process), so the files are written once, beside the models. Every
    process waits at the end of the block until the writer has finished, so afterwards all of them see what it wrote.
    With one process this is just the block. A writer that raises does not wait: the launcher stops the others."""
    yield args.should_save
    _wait_for_everyone()


def _wait_for_everyone() -> None:
    PartialState().wait_for_everyone()  # a no-op in a single process


def start_stage(args: TrainingArguments, directory: str | os.PathLike, key: str) -> bool:
    """:func:`prepare_stage` under any number of processes; True when the stage is finished (reuse it), False when it
    must be trained (it is then ready: a fresh folder, or an interrupted run of the same settings to resume).

    The main process alone decides and prepares the folder (removing a run of other settings) while the others wait;
    then every process reads the decision from the folder, and none goes on before all have read it, so every process
    takes the same branch (a stage trained by some processes and skipped by others would hang the run)."""
    with main_process_only(args) as writer:
        if writer:
            prepare_stage(directory, key)
    complete = is_complete(directory, key)
    _wait_for_everyone()  # the folder changes again only once every process has read it
    return complete


def finish_stage(
    trainer: Trainer,
    directory: str | os.PathLike,
    info: Mapping[str, Any],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    log_history: bool = True,
) -> None:
    """The end of a stage started with :func:`start_stage` and trained by ``trainer``: the model saved in
    ``directory`` (called on every process: under FSDP or DeepSpeed saving gathers the shards, and ``Trainer`` writes
    from the main process only), then, from the main process only, ``tokenizer``, the log history
    (``log_history.json``) and the completion marker holding ``info``; the other processes wait for them."""
    trainer.save_model(str(directory))
    with main_process_only(trainer.args) as writer:
        if writer:
            if tokenizer is not None:
                tokenizer.save_pretrained(str(directory))
            if log_history:
                Path(directory, "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
            mark_complete(directory, info)


def train_or_resume(trainer: Trainer, output_dir: str | os.PathLike) -> None:
    """``trainer.train()``, resuming from the newest checkpoint in ``output_dir`` if an earlier run was interrupted."""
    last = get_last_checkpoint(str(output_dir)) if os.path.isdir(output_dir) else None
    if last is not None:
        logger.warning("Resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)


# what a sub-stage (a teacher fine-tuning, a baseline) takes over from the run's own arguments
STAGE_FIELDS = (
    "per_device_train_batch_size", "warmup_steps", "weight_decay", "seed", "logging_steps", "report_to", "use_cpu",
    "bf16",
)


def stage_arguments(args: TrainingArguments, output_dir: str | os.PathLike, **overrides: Any) -> TrainingArguments:
    """Arguments of the same class as ``args`` for a sub-stage trained in ``output_dir``: the run's batch size, warm-up,
    weight decay, seed, logging and device settings (:data:`STAGE_FIELDS`), one checkpoint per epoch with only the
    last one kept, and ``overrides`` (e.g. ``num_train_epochs``, ``learning_rate``). Every other field takes its
    default."""
    values = {name: getattr(args, name) for name in STAGE_FIELDS}
    values.update(output_dir=str(output_dir), save_strategy="epoch", save_total_limit=1)
    values.update(overrides)
    return type(args)(**values)


def finetune_teacher(
    suite: TaskSuite,
    base: str,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: str | os.PathLike,
    args: TrainingArguments,
) -> PreTrainedModel:
    """Fine-tune ``base`` on the suite with a plain Trainer, or load the result of an earlier complete run with the
    same base, data and hyper-parameters from ``output_dir``. An interrupted run resumes from its last checkpoint.
    ``class_weights`` in ``args`` (the distillation arguments) weigh the teacher's cross-entropy too."""
    output_dir = Path(output_dir)
    parts = ["teacher", base, suite.label_spec(), data_fingerprint(suite), args.num_train_epochs, args.max_steps,
             args.learning_rate, args.per_device_train_batch_size, args.seed, len(tokenizer)]
    if getattr(args, "class_weights", None) is not None:  # only then: earlier teachers keep their stage key
        parts.append({"class_weights": args.class_weights})
    key = fingerprint(*parts)
    if start_stage(args, output_dir, key):
        logger.warning("Reusing the fine-tuned teacher in %s", output_dir)
        return AutoModelForSequenceClassification.from_pretrained(output_dir)
    model = build_classifier(base, suite)
    trainer = TaskAwareTrainer(
        model=model,
        args=args,
        train_dataset=suite.train_dataset(),
        data_collator=MultiTokenizerCollator({"": tokenizer}),
        processing_class=tokenizer,
    )
    train_or_resume(trainer, output_dir)
    finish_stage(trainer, output_dir, {"base": base, "tasks": suite.label_spec()}, log_history=False)
    return trainer.model


def evaluate_model(
    model: PreTrainedModel,
    suite: TaskSuite,
    split: str | Mapping[str, str],
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int = 64,
    output_dir: str = "eval_tmp",
) -> dict[str, dict[str, float]]:
    """Metrics (accuracy, macro P/R/F1, per-class F1) of ``model`` on ``split`` of every task (one split, or
    ``{task: split}`` as :meth:`TaskSuite.report_splits` gives): ``{task: metrics}``."""
    args = TrainingArguments(
        output_dir=output_dir, per_device_eval_batch_size=batch_size, report_to="none", use_cpu=not _has_cuda()
    )
    results = {}
    eval_sets = suite.eval_datasets(split)
    if not isinstance(eval_sets, dict):
        eval_sets = {suite.names[0]: eval_sets}
    for task in suite.tasks:
        trainer = TaskAwareTrainer(
            model=model,
            args=args,
            data_collator=MultiTokenizerCollator({"": tokenizer}),
            compute_metrics=build_compute_metrics(label_names=task.label_names),
        )
        task_split = split[task.name] if isinstance(split, Mapping) else split
        metrics = trainer.evaluate(eval_sets[task.name], metric_key_prefix=task_split)
        prefix = f"{task_split}_"
        results[task.name] = {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
    return results


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def results_table(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = ("accuracy", "f1_macro"),
    extra: Sequence[str] = (),
) -> str:
    """A Markdown table: one row per (model, task) with its parameter count, the chosen metrics (as percentages) and
    ``extra`` columns printed as they are (e.g. ``samples_per_second``)."""
    header = "| model | params | task | " + " | ".join([*metrics, *extra]) + " |"
    lines = [header, "|" + "---|" * (3 + len(metrics) + len(extra))]
    for row in rows:
        values = [f"{100 * row[m]:.2f}" if isinstance(row.get(m), float) else "-" for m in metrics]
        values += [f"{row[m]:.1f}" if isinstance(row.get(m), (int, float)) else "-" for m in extra]
        lines.append(f"| {row['model']} | {row['params'] / 1e6:.1f}M | {row['task']} | {' | '.join(values)} |")
    return "\n".join(lines)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
