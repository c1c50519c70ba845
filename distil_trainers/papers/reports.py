"""Evaluation reports: the metrics of trained models (students, teachers, ensembles) on a dataset split, written as
JSON and Markdown, with the mean ± standard deviation over several seeds.

* :func:`predict_logits` - the logits of a classifier on a tokenised split, and its inference throughput;
* :func:`model_result` / :func:`ensemble_result` - one model's (or an ensemble's) entry of a report: accuracy, macro
  precision/recall/F1, weighted F1, per-class F1, confusion matrix, parameters, samples/s;
* :func:`aggregate_seeds` / :func:`format_mean_std` - mean and *sample* standard deviation (``ddof=1``) of each metric
  over runs with different seeds, printed as ``"88.70 ± 0.35"``;
* :func:`build_report`, :func:`report_markdown`, :func:`write_report` - the report itself;
* :func:`find_saved_models`, :func:`evaluate_run_dirs` - every model saved in finished run directories, evaluated. A
  multi-task model (:class:`~distil_trainers.models.MultiTaskModel`) gives one entry per (model, task): each head is
  scored on the registered dataset named like its task, as the recipes name their tasks.

Example::

    logits, seconds = predict_logits(model, test_set, tokenizer)
    results = [model_result("student", test_set["label"], logits, label_names, params=count_parameters(model),
                            seconds=seconds, seed=42)]
    write_report(build_report(results, dataset="davidson", split="test", label_names=label_names), "runs/x/report")
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..metrics import classification_metrics, per_class_keys

__all__ = [
    "REPORT_METRICS",
    "ModelResult",
    "aggregate_seeds",
    "build_report",
    "ensemble_result",
    "entry_label_names",
    "format_mean_std",
    "model_result",
    "predict_logits",
    "report_markdown",
    "summary_key",
    "write_report",
]

# The quality metrics of the report tables, in this order (per-class F1 columns follow).
REPORT_METRICS = ("accuracy", "precision_macro", "recall_macro", "f1_macro")
# Numbers that are not percentages: printed as they are.
_PLAIN = {"params", "samples_per_second", "num_examples"}


@dataclass
class ModelResult:
    """One evaluated model (or ensemble) of one run.

    Attributes:
        name: the model's label in the report (e.g. ``"teacher"``, ``"ddml/minilm3"``, ``"ensemble"``); runs with
            different seeds share it.
        role: ``teacher``, ``student``, ``baseline`` or ``ensemble``.
        metrics: :func:`~distil_trainers.metrics.classification_metrics` with the confusion matrix.
        params: number of parameters (an ensemble: the sum over its members).
        samples_per_second: inference throughput measured while predicting (``None`` if not measured).
        num_examples: evaluated examples.
        seed: the seed of the run this model comes from.
        task: the head of a multi-task model this entry scores (its task = the registered dataset it is evaluated
            on); ``None`` for a single-task classifier.
    """

    name: str
    role: str
    metrics: dict[str, Any]
    params: int | None = None
    samples_per_second: float | None = None
    num_examples: int = 0
    seed: int | None = None
    task: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The entry's key in a report's summary: ``name``, or ``"name [task]"`` for a head of a multi-task model."""
        return summary_key(self.name, self.task)

    def scalars(self) -> dict[str, float]:
        """Every scalar of this result (metrics, params, samples/s) as ``{name: value}``."""
        out = {k: float(v) for k, v in self.metrics.items() if isinstance(v, (int, float))}
        for key in ("params", "samples_per_second"):
            value = getattr(self, key)
            if value is not None:
                out[key] = float(value)
        return out


def summary_key(name: str, task: str | None = None) -> str:
    """``name``, or ``"name [task]"``: how a report's summary names a model (one entry per model and task)."""
    return name if task is None else f"{name} [{task}]"


def predict_logits(
    model,
    dataset,
    tokenizer=None,
    batch_size: int = 64,
    data_collator=None,
    device: str | None = None,
    desc: str | None = None,
    show_progress: bool = True,
) -> tuple[np.ndarray, float]:
    """Logits ``(N, num_labels)`` of ``model`` on a tokenised ``dataset`` (``input_ids``, ``attention_mask``, …),
    and the seconds the forward passes took (tokenisation excluded; collation and device copies included).

    The model runs in eval mode under ``torch.inference_mode`` in batches of ``batch_size`` padded by ``data_collator``
    (default: :class:`~transformers.DataCollatorWithPadding` with ``tokenizer``); a progress bar (``desc``) unless
    ``show_progress=False``."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding

    from ..data.multitask import TASK_COLUMN
    from ..data.processing import TOKENIZER_COLUMNS

    keep = [c for c in dataset.column_names if c in TOKENIZER_COLUMNS or c == TASK_COLUMN]
    if "input_ids" not in keep:
        raise ValueError(f"The dataset has no input_ids column (columns: {dataset.column_names}); tokenise it first.")
    if data_collator is None:
        if tokenizer is None:
            raise ValueError("predict_logits needs a tokenizer (or a data_collator) to pad the batches.")
        data_collator = DataCollatorWithPadding(tokenizer)
    loader = DataLoader(dataset.select_columns(keep), batch_size=batch_size, collate_fn=data_collator)
    if device is None:
        device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chunks = []
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc or "Predicting", leave=False, disable=not show_progress):
            batch = {k: v.to(device) for k, v in batch.items() if k in keep}
            chunks.append(model(**batch).logits.float().cpu())
    seconds = time.perf_counter() - start
    model.train(was_training)
    return torch.cat(chunks).numpy(), seconds


def _labels(values: Any) -> np.ndarray:
    return np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.int64).reshape(-1)


def model_result(
    name: str,
    labels: Sequence[int],
    logits: np.ndarray,
    label_names: Sequence[str],
    role: str = "student",
    params: int | None = None,
    seconds: float | None = None,
    seed: int | None = None,
    task: str | None = None,
) -> ModelResult:
    """A report entry from a model's logits (or class ids) on a labelled split. ``samples_per_second`` is
    ``len(labels) / seconds`` when the prediction time is given; ``task`` names the head of a multi-task model."""
    labels = _labels(labels)
    logits = np.asarray(logits)
    predicted = logits.argmax(-1) if logits.ndim == 2 else logits.astype(np.int64)
    if predicted.shape[0] != labels.shape[0]:
        raise ValueError(f"{name}: {predicted.shape[0]} predictions for {labels.shape[0]} labels.")
    metrics = classification_metrics(labels, predicted, label_names=label_names, include_confusion=True)
    speed = labels.size / seconds if seconds else None
    return ModelResult(
        name=name,
        role=role,
        metrics=metrics,
        params=params,
        samples_per_second=speed,
        num_examples=int(labels.size),
        seed=seed,
        task=task,
    )


def ensemble_result(
    name: str,
    labels: Sequence[int],
    member_logits: Sequence[np.ndarray],
    label_names: Sequence[str],
    params: int | None = None,
    seconds: float | None = None,
    seed: int | None = None,
    task: str | None = None,
) -> ModelResult:
    """A report entry for the ensemble of several models: the argmax of their averaged softmax probabilities (as
    :class:`~distil_trainers.MutualLearningTrainer` evaluates its students' ensemble). ``seconds`` is the time all
    members took together."""
    if len(member_logits) < 2:
        raise ValueError(f"An ensemble needs at least 2 members, got {len(member_logits)}.")
    probabilities = []
    for logits in member_logits:
        z = np.asarray(logits, dtype=np.float64)
        z = np.exp(z - z.max(-1, keepdims=True))
        probabilities.append(z / z.sum(-1, keepdims=True))
    mean = np.mean(probabilities, axis=0)
    return model_result(
        name, labels, mean, label_names, role="ensemble", params=params, seconds=seconds, seed=seed, task=task
    )


# --------------------------------------------------------------------------------------------------------------------
# Several seeds
# --------------------------------------------------------------------------------------------------------------------


def aggregate_seeds(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and sample standard deviation of every scalar over runs (one metric dict per seed).

    The standard deviation is the *sample* one (``ddof=1``: divided by n − 1), the usual "± std" of papers that
    report n runs; with a single run it is ``None``. A key missing from some runs is aggregated over the runs that
    have it (``n`` says how many). Non-scalar entries (the confusion matrix) are left out.

    Returns ``{key: {"mean": float, "std": float | None, "n": int, "values": [...]}}``.
    """
    if not runs:
        raise ValueError("aggregate_seeds needs at least one run.")
    keys: list[str] = []
    for run in runs:
        keys += [
            k for k, v in run.items() if k not in keys and isinstance(v, (int, float)) and not isinstance(v, bool)
        ]
    out = {}
    for key in keys:
        values = [float(run[key]) for run in runs if isinstance(run.get(key), (int, float))]
        std = float(np.std(values, ddof=1)) if len(values) > 1 else None
        out[key] = {"mean": float(np.mean(values)), "std": std, "n": len(values), "values": values}
    return out


def format_mean_std(mean: float | None, std: float | None = None, scale: float = 100.0, digits: int = 2) -> str:
    """``"88.70 ± 0.35"``: ``mean`` and ``std`` multiplied by ``scale`` (100 for fractions shown as percentages, 1
    for counts) with ``digits`` decimals; only the mean when ``std`` is ``None`` (a single run); ``"-"`` for none."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    text = f"{scale * mean:.{digits}f}"
    if std is not None:
        text += f" ± {scale * std:.{digits}f}"
    return text


# --------------------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------------------


def build_report(
    results: Sequence[ModelResult],
    dataset: str | None,
    split: str,
    label_names: Sequence[str] | None,
    notes: str | None = None,
    task_label_names: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The report as a JSON-serialisable dict: ``runs`` (every model of every seed with all its numbers, the
    confusion matrix included) and ``summary`` (per model, or per (model, task) for the heads of multi-task models,
    in first-seen order, keyed by :func:`summary_key`: :func:`aggregate_seeds` of its runs, the seeds, its class names
    and the confusion matrix summed over the seeds).

    ``dataset`` / ``label_names`` are those of the single-task models (``None`` if there are none);
    ``task_label_names`` gives the class names of every task the multi-task entries were scored on."""
    task_label_names = {t: list(n) for t, n in (task_label_names or {}).items()}
    keys: list[str] = []
    for r in results:
        if r.task is not None and r.task not in task_label_names:
            raise ValueError(f"{r.name}: no class names for its task {r.task!r} (task_label_names).")
        if r.task is None and label_names is None:
            raise ValueError(f"{r.name}: a single-task result needs the dataset's label_names.")
        if r.key not in keys:
            keys.append(r.key)
    summary = {}
    for key in keys:
        runs = [r for r in results if r.key == key]
        first = runs[0]
        confusion = np.sum([np.asarray(r.metrics["confusion_matrix"]) for r in runs], axis=0).tolist()
        summary[key] = {
            "model": first.name,
            "task": first.task,
            "role": first.role,
            "seeds": [r.seed for r in runs],
            "num_examples": first.num_examples,
            "label_names": list(task_label_names[first.task] if first.task is not None else label_names),
            "metrics": aggregate_seeds([r.scalars() for r in runs]),
            "confusion_matrix": confusion,
        }
    used = {r.task for r in results if r.task is not None}
    return {
        "dataset": dataset,
        "split": split,
        "label_names": list(label_names) if label_names is not None else None,
        "tasks": {t: {"dataset": t, "label_names": names} for t, names in task_label_names.items() if t in used},
        "std": "sample standard deviation over seeds (ddof=1)",
        "notes": notes,
        "runs": [asdict(r) for r in results],
        "summary": summary,
    }


def _cell(stats: Mapping[str, Any] | None, key: str) -> str:
    if stats is None:
        return "-"
    if key == "params":
        return format_mean_std(stats["mean"], None, scale=1e-6, digits=1) + "M"
    if key in _PLAIN:
        return format_mean_std(stats["mean"], stats["std"], scale=1.0, digits=1)
    return format_mean_std(stats["mean"], stats["std"])


def entry_label_names(report: Mapping[str, Any], entry: Mapping[str, Any]) -> list[str]:
    """The class names of one summary entry: its task's (multi-task heads), else the report's dataset's."""
    return list(entry.get("label_names") or report["label_names"])


def report_markdown(report: Mapping[str, Any], per_class: bool = True, confusion: bool = True) -> str:
    """The report as Markdown: a table with one row per model (metrics in %, "mean ± std" over seeds when there are
    several), then each model's confusion matrix (rows = true class, columns = predicted; summed over seeds).

    With multi-task models the table has a ``task`` column and one row per (model, task); the per-class F1 columns
    are those of every task (``-`` where a row's task has no such class) and each head has its own confusion
    matrix."""
    summary = report["summary"]
    with_tasks = any(entry.get("task") for entry in summary.values())
    class_columns: dict[str, str] = {}  # f1 key -> title, in first-seen order
    if per_class:
        for entry in summary.values():
            names = entry_label_names(report, entry)
            for key, label in zip(per_class_keys(names, len(names)), names):
                class_columns.setdefault(f"f1_{key}", f"F1 {label}")
    columns = [*REPORT_METRICS, *class_columns, "params", "samples_per_second"]
    titles = [*REPORT_METRICS, *class_columns.values(), "params", "samples/s"]
    seeds = {len(entry["seeds"]) for entry in summary.values()}
    n_seeds = max(seeds) if seeds else 0
    if with_tasks:
        where = [report["dataset"]] if report.get("dataset") and any(not e.get("task") for e in summary.values()) else []
        where += [t for t in report.get("tasks", {}) if t not in where]
        lines = [f"## Evaluation on {', '.join(where)} (each task on its own dataset), {report['split']} split", ""]
    else:
        lines = [f"## Evaluation on {report['dataset']}, {report['split']} split", ""]
    if n_seeds > 1:
        lines.append(f"Mean ± sample standard deviation (ddof=1) over {n_seeds} seeds; metrics in %.")
    else:
        lines.append("One run; metrics in %.")
    if report.get("notes"):
        lines += ["", str(report["notes"])]
    lead = ["model", "task", "role"] if with_tasks else ["model", "role"]
    lines += ["", "| " + " | ".join([*lead, *titles]) + " |", "|" + "---|" * (len(lead) + len(titles))]
    for key, entry in summary.items():
        cells = [_cell(entry["metrics"].get(c), c) for c in columns]
        name = entry.get("model", key)
        first = [name, entry.get("task") or str(report["dataset"]), entry["role"]] if with_tasks else [name, entry["role"]]
        lines.append("| " + " | ".join([*first, *cells]) + " |")
    if confusion:
        for key, entry in summary.items():
            label_names = entry_label_names(report, entry)
            matrix = entry["confusion_matrix"]
            what = "summed over seeds" if len(entry["seeds"]) > 1 else f"{entry['num_examples']} examples"
            name = entry.get("model", key) + (f" on {entry['task']}" if entry.get("task") else "")
            lines += ["", f"Confusion matrix of {name} ({what}; rows = true class, columns = predicted):", ""]
            lines.append("| true \\ predicted | " + " | ".join(label_names) + " |")
            lines.append("|" + "---|" * (1 + len(label_names)))
            for label, row in zip(label_names, matrix):
                lines.append(f"| {label} | " + " | ".join(str(int(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], path: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<path>.json`` and ``<path>.md`` (parent folders created); returns both paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = path.with_suffix(".json"), path.with_suffix(".md")
    json_path.write_text(json.dumps(report, indent=2, default=float) + "\n")
    md_path.write_text(report_markdown(report))
    return json_path, md_path


# --------------------------------------------------------------------------------------------------------------------
# Finished run directories
# --------------------------------------------------------------------------------------------------------------------

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass
class SavedModel:
    """A model saved in a run directory: ``name`` is its path relative to the run (``student``, ``ddml/minilm3``)."""

    name: str
    role: str
    path: Path


@dataclass
class SavedEnsemble:
    """The students of a mutual-learning run (a folder with ``students.json``), evaluated together."""

    name: str
    members: list[str]


def _in_checkpoint(relative: Path) -> bool:
    """Whether a path below a run directory lies inside a ``checkpoint-*`` folder (training state, not a result)."""
    return any(part.startswith("checkpoint-") for part in relative.parts)


def find_saved_models(run_dir: str | os.PathLike) -> tuple[list[SavedModel], list[SavedEnsemble]]:
    """Every saved model below ``run_dir`` (a folder with ``config.json`` and weights, outside ``checkpoint-*``), with
    its role: ``teacher`` (a folder named ``teacher`` or ``teacher_<task>``), ``baseline`` (below ``alone/`` or
    ``baseline*``), else ``student``; and the ensembles of mutual-learning runs (folders with ``students.json``)."""
    run_dir = Path(run_dir)
    models = []
    for config in sorted(run_dir.rglob("config.json")):
        folder = config.parent
        relative = folder.relative_to(run_dir)
        if _in_checkpoint(relative):
            continue
        if not any((folder / w).is_file() for w in WEIGHT_FILES):
            continue
        name = relative.as_posix() if relative.parts else run_dir.name
        if relative.parts and (relative.parts[-1] == "teacher" or relative.parts[-1].startswith("teacher_")):
            role = "teacher"
        elif relative.parts and (relative.parts[0] == "alone" or relative.parts[0].startswith("baseline")):
            role = "baseline"
        else:
            role = "student"
        models.append(SavedModel(name=name, role=role, path=folder))
    ensembles = []
    for listing in sorted(run_dir.rglob("students.json")):
        relative = listing.parent.relative_to(run_dir)
        if _in_checkpoint(relative):
            continue
        names = json.loads(listing.read_text())["students"]
        members = []
        for student in names:
            for candidate in (f"student_{student}", student):
                path = (relative / candidate).as_posix()
                if any(m.name == path for m in models):
                    members.append(path)
                    break
        if len(members) >= 2:
            prefix = relative.as_posix()
            ensembles.append(
                SavedEnsemble(name=f"{prefix}/ensemble" if relative.parts else "ensemble", members=members)
            )
    if not models:
        adapters = sorted(
            c.parent.relative_to(run_dir).as_posix()
            for c in run_dir.rglob("adapter_config.json")
            if not _in_checkpoint(c.parent.relative_to(run_dir))
        )
        if adapters:
            raise FileNotFoundError(
                f"{run_dir} holds LoRA adapters of generative students ({', '.join(adapters)}), not classifiers: "
                "score them by label scoring with `python -m distil_trainers.papers.rationale_pipeline --stage "
                f"evaluate --output_dir {run_dir}` (same config), which writes results.json and their model cards."
            )
        raise FileNotFoundError(f"No saved model (config.json + weights) below {run_dir}.")
    return models, ensembles


def model_tasks(model: Any) -> dict[str, int] | None:
    """``{task: num_classes}`` of a multi-task model (:class:`~distil_trainers.models.MultiTaskModel`, in the order
    of its task ids), ``None`` for a single-task classifier."""
    tasks = getattr(getattr(model, "config", None), "tasks", None)
    return dict(tasks) if tasks else None


def evaluate_run_dirs(
    run_dirs: Sequence[str | os.PathLike],
    dataset: str | None = None,
    split: str = "test",
    seeds: Sequence[int | None] | None = None,
    data_dir: str | None = None,
    data_seed: int | None = None,
    max_samples: int | None = None,
    max_length: int = 128,
    batch_size: int = 64,
    tasks: Sequence[str] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate every saved model (and mutual-learning ensemble) of one or more finished runs on ``split`` of the
    registered ``dataset``. Runs are taken as repetitions with different seeds (``seeds``, in order): models with
    the same path relative to their run are aggregated as "mean ± std".

    A multi-task model (:class:`~distil_trainers.models.MultiTaskModel`, as the multi-task annealing and feature-KD
    recipes save) is evaluated head by head: each of ``tasks`` (default: all its heads) on ``split`` of the
    registered dataset of that name (the recipes name their tasks after the datasets), giving one entry per (model,
    task). ``dataset`` is then needed only for the single-task models. A requested task that is not one of a
    model's heads is an error.

    The split is made (and subsampled to ``max_samples``) with ``data_seed``; by default with each run's own seed
    (as the recipes split and subsample their data with their ``seed``, so a run is scored on its own held-out
    examples), or 42 without ``seeds``. Returns ``(report, details)`` where ``details`` maps each run to its models
    (``SavedModel`` lists) for the plots and cards."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ..data import load_dataset_by_name
    from ..data.multitask import TASK_COLUMN

    seeds = list(seeds) if seeds is not None else [None] * len(run_dirs)
    if len(seeds) != len(run_dirs):
        raise ValueError(f"{len(seeds)} seeds for {len(run_dirs)} run directories.")
    tasks = list(tasks) if tasks else None
    limits = {split: max_samples} if max_samples else None
    loaded: dict[tuple[str, int], Any] = {}

    def split_for(name: str, seed: int) -> Any:
        if (name, seed) not in loaded:
            splits = load_dataset_by_name(name, data_dir=data_dir, seed=seed, max_samples_per_split=limits)
            if split not in splits:
                raise ValueError(f"{name} has no {split!r} split; it has {list(splits)}.")
            loaded[name, seed] = splits[split]
        return loaded[name, seed]

    run_data_seeds = [data_seed if data_seed is not None else (s if s is not None else 42) for s in seeds]
    label_names: list[str] | None = None
    task_label_names: dict[str, list[str]] = {}
    results: list[ModelResult] = []
    details: dict[str, Any] = {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for run_dir, seed, run_data_seed in zip(run_dirs, seeds, run_data_seeds):
        models, ensembles = find_saved_models(run_dir)
        details[str(run_dir)] = {"models": models, "ensembles": ensembles}
        outputs: dict[tuple[str, str | None], tuple[np.ndarray, float, int]] = {}
        for saved in models:
            model = AutoModelForSequenceClassification.from_pretrained(saved.path).to(device)
            heads = model_tasks(model)
            if heads is None:
                if dataset is None:
                    raise ValueError(
                        f"{saved.path} is a single-task classifier: give the registered dataset to evaluate it on "
                        "(--dataset)."
                    )
                jobs: list[tuple[str | None, str, int]] = [(None, dataset, int(model.config.num_labels))]
            else:
                wanted = tasks or list(heads)
                missing = [t for t in wanted if t not in heads]
                if missing:
                    raise ValueError(
                        f"{saved.path} is a multi-task model with the heads {list(heads)}; it has no head for the "
                        f"requested task(s) {missing}. Ask for some of {list(heads)} (--tasks)."
                    )
                jobs = [(t, t, heads[t]) for t in wanted]
            tokenizer = AutoTokenizer.from_pretrained(saved.path)
            params = sum(p.numel() for p in model.parameters())
            for task, name, num_classes in jobs:
                data = split_for(name, run_data_seed)
                names = list(data.features["label"].names)
                if num_classes != len(names) and task is None:
                    raise ValueError(
                        f"{saved.path} predicts {num_classes} classes but {name} has {len(names)} ({names}); "
                        "evaluate it on the dataset it was trained for."
                    )
                if num_classes != len(names):
                    raise ValueError(
                        f"{saved.path}: its head for the task {task!r} predicts {num_classes} classes but the dataset "
                        f"{name} has {len(names)} ({names}); a head is evaluated on the registered dataset named "
                        "like its task, as the recipes name them."
                    )
                if task is None:
                    label_names = names
                else:
                    task_label_names[task] = names
                encoded = data.map(
                    lambda b, tok=tokenizer: tok(b["text"], truncation=True, max_length=max_length),
                    batched=True,
                    desc=f"Tokenizing {name} for {saved.name}",
                )
                if task is not None:  # the head to use: every row of every batch carries the task's id
                    encoded = encoded.add_column(TASK_COLUMN, [model.config.task_id(task)] * len(encoded))
                desc = saved.name if task is None else f"{saved.name} [{task}]"
                logits, seconds = predict_logits(model, encoded, tokenizer, batch_size=batch_size, desc=desc)
                labels = np.asarray(data["label"][:], dtype=np.int64)
                outputs[saved.name, task] = (logits, seconds, params)
                results.append(
                    model_result(
                        saved.name,
                        labels,
                        logits,
                        names,
                        role=saved.role,
                        params=params,
                        seconds=seconds,
                        seed=seed,
                        task=task,
                    )
                )
            del model
        for ensemble in ensembles:
            first = [key[1] for key in outputs if key[0] == ensemble.members[0]]
            for task in first:
                if not all((m, task) in outputs for m in ensemble.members):
                    continue
                members = [outputs[m, task] for m in ensemble.members]
                data = split_for(task if task is not None else dataset, run_data_seed)
                results.append(
                    ensemble_result(
                        ensemble.name,
                        np.asarray(data["label"][:], dtype=np.int64),
                        [m[0] for m in members],
                        task_label_names[task] if task is not None else label_names,
                        params=sum(m[2] for m in members),
                        seconds=sum(m[1] for m in members),
                        seed=seed,
                        task=task,
                    )
                )
    sizes: dict[str, list[int]] = {}
    for (name, _), data in loaded.items():
        sizes.setdefault(name, [])
        if len(data) not in sizes[name]:
            sizes[name].append(len(data))
    counts = {name: "/".join(map(str, sorted(n))) for name, n in sizes.items()}
    if len(counts) == 1:
        notes = f"{next(iter(counts.values()))} examples per run"
    else:
        notes = "examples per run: " + ", ".join(f"{name} {n}" for name, n in counts.items())
    if max_samples:
        notes += f" (at most {max_samples}, subsampled)"
    per_run = data_seed is None and seeds[0] is not None
    notes += "; split and subsample seeded with " + ("each run's seed" if per_run else str(run_data_seeds[0]))
    report = build_report(
        results,
        dataset=dataset if label_names is not None else None,
        split=split,
        label_names=label_names,
        notes=notes,
        task_label_names=task_label_names,
    )
    report["run_dirs"] = [str(r) for r in run_dirs]
    return report, details
