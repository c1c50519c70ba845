"""Evaluation reports: the metrics of trained models (students, teachers, ensembles) on a dataset split, written as
JSON and Markdown, with the mean ± standard deviation over several seeds.

* :func:`predict_logits` - the logits of a classifier on a tokenised split, and its inference throughput;
* :func:`model_result` / :func:`ensemble_result` - one model's (or an ensemble's) entry of a report: accuracy, macro
  precision/recall/F1, weighted F1, per-class F1, confusion matrix, parameters, samples/s;
* :func:`aggregate_seeds` / :func:`format_mean_std` - mean and *sample* standard deviation (``ddof=1``) of each metric
  over runs with different seeds, printed as ``"88.70 ± 0.35"``;
* :func:`build_report`, :func:`report_markdown`, :func:`write_report` - the report itself.

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

from .metrics import classification_metrics, per_class_keys

__all__ = [
    "REPORT_METRICS",
    "ModelResult",
    "aggregate_seeds",
    "build_report",
    "ensemble_result",
    "format_mean_std",
    "model_result",
    "predict_logits",
    "report_markdown",
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
    """

    name: str
    role: str
    metrics: dict[str, Any]
    params: int | None = None
    samples_per_second: float | None = None
    num_examples: int = 0
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """Every scalar of this result (metrics, params, samples/s) as ``{name: value}``."""
        out = {k: float(v) for k, v in self.metrics.items() if isinstance(v, (int, float))}
        for key in ("params", "samples_per_second"):
            value = getattr(self, key)
            if value is not None:
                out[key] = float(value)
        return out


def predict_logits(
    model,
    dataset,
    tokenizer=None,
    batch_size: int = 64,
    data_collator=None,
    device: str | None = None,
    desc: str | None = None,
) -> tuple[np.ndarray, float]:
    """Logits ``(N, num_labels)`` of ``model`` on a tokenised ``dataset`` (``input_ids``, ``attention_mask``, …),
    and the seconds the forward passes took (tokenisation excluded; collation and device copies included).

    The model runs in eval mode under ``torch.inference_mode`` in batches of ``batch_size`` padded by ``data_collator``
    (default: :class:`~transformers.DataCollatorWithPadding` with ``tokenizer``)."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding

    from .data.multitask import TASK_COLUMN
    from .data.processing import TOKENIZER_COLUMNS

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
        for batch in tqdm(loader, desc=desc or "Predicting", leave=False):
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
) -> ModelResult:
    """A report entry from a model's logits (or class ids) on a labelled split. ``samples_per_second`` is
    ``len(labels) / seconds`` when the prediction time is given."""
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
    )


def ensemble_result(
    name: str,
    labels: Sequence[int],
    member_logits: Sequence[np.ndarray],
    label_names: Sequence[str],
    params: int | None = None,
    seconds: float | None = None,
    seed: int | None = None,
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
    return model_result(name, labels, mean, label_names, role="ensemble", params=params, seconds=seconds, seed=seed)


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
    dataset: str,
    split: str,
    label_names: Sequence[str],
    notes: str | None = None,
) -> dict[str, Any]:
    """The report as a JSON-serialisable dict: ``runs`` (every model of every seed with all its numbers, the
    confusion matrix included) and ``summary`` (per model, in first-seen order: :func:`aggregate_seeds` of its runs,
    the seeds, and the confusion matrix summed over the seeds)."""
    names: list[str] = []
    for r in results:
        if r.name not in names:
            names.append(r.name)
    summary = {}
    for name in names:
        runs = [r for r in results if r.name == name]
        confusion = np.sum([np.asarray(r.metrics["confusion_matrix"]) for r in runs], axis=0).tolist()
        summary[name] = {
            "role": runs[0].role,
            "seeds": [r.seed for r in runs],
            "num_examples": runs[0].num_examples,
            "metrics": aggregate_seeds([r.scalars() for r in runs]),
            "confusion_matrix": confusion,
        }
    return {
        "dataset": dataset,
        "split": split,
        "label_names": list(label_names),
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


def report_markdown(report: Mapping[str, Any], per_class: bool = True, confusion: bool = True) -> str:
    """The report as Markdown: a table with one row per model (metrics in %, "mean ± std" over seeds when there are
    several), then each model's confusion matrix (rows = true class, columns = predicted; summed over seeds)."""
    label_names = report["label_names"]
    class_keys = [f"f1_{k}" for k in per_class_keys(label_names, len(label_names))] if per_class else []
    columns = [*REPORT_METRICS, *class_keys, "params", "samples_per_second"]
    titles = [*REPORT_METRICS, *[f"F1 {n}" for n in label_names][: len(class_keys)], "params", "samples/s"]
    seeds = {len(entry["seeds"]) for entry in report["summary"].values()}
    n_seeds = max(seeds) if seeds else 0
    lines = [f"## Evaluation on {report['dataset']}, {report['split']} split", ""]
    if n_seeds > 1:
        lines.append(f"Mean ± sample standard deviation (ddof=1) over {n_seeds} seeds; metrics in %.")
    else:
        lines.append("One run; metrics in %.")
    if report.get("notes"):
        lines += ["", str(report["notes"])]
    lines += ["", "| model | role | " + " | ".join(titles) + " |", "|" + "---|" * (2 + len(titles))]
    for name, entry in report["summary"].items():
        cells = [_cell(entry["metrics"].get(c), c) for c in columns]
        lines.append(f"| {name} | {entry['role']} | " + " | ".join(cells) + " |")
    if confusion:
        for name, entry in report["summary"].items():
            matrix = entry["confusion_matrix"]
            what = "summed over seeds" if len(entry["seeds"]) > 1 else f"{entry['num_examples']} examples"
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


def find_saved_models(run_dir: str | os.PathLike) -> tuple[list[SavedModel], list[SavedEnsemble]]:
    """Every saved model below ``run_dir`` (a folder with ``config.json`` and weights, outside ``checkpoint-*``), with
    its role: ``teacher`` (a folder named ``teacher``), ``baseline`` (below ``alone/`` or ``baseline*``), else
    ``student``; and the ensembles of mutual-learning runs (folders with ``students.json``)."""
    run_dir = Path(run_dir)
    models = []
    for config in sorted(run_dir.rglob("config.json")):
        folder = config.parent
        relative = folder.relative_to(run_dir)
        if any(part.startswith("checkpoint-") for part in relative.parts):
            continue
        if not any((folder / w).is_file() for w in WEIGHT_FILES):
            continue
        name = relative.as_posix() if relative.parts else run_dir.name
        if relative.parts and relative.parts[-1] == "teacher":
            role = "teacher"
        elif relative.parts and (relative.parts[0] == "alone" or relative.parts[0].startswith("baseline")):
            role = "baseline"
        else:
            role = "student"
        models.append(SavedModel(name=name, role=role, path=folder))
    ensembles = []
    for listing in sorted(run_dir.rglob("students.json")):
        relative = listing.parent.relative_to(run_dir)
        if any(part.startswith("checkpoint-") for part in relative.parts):
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
        raise FileNotFoundError(f"No saved model (config.json + weights) below {run_dir}.")
    return models, ensembles


def evaluate_run_dirs(
    run_dirs: Sequence[str | os.PathLike],
    dataset: str,
    split: str = "test",
    seeds: Sequence[int | None] | None = None,
    data_dir: str | None = None,
    data_seed: int | None = None,
    max_samples: int | None = None,
    max_length: int = 128,
    batch_size: int = 64,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Evaluate every saved model (and mutual-learning ensemble) of one or more finished runs on ``split`` of the
    registered ``dataset``. Runs are taken as repetitions with different seeds (``seeds``, in order): models with
    the same path relative to their run are aggregated as "mean ± std".

    The split is made (and subsampled to ``max_samples``) with ``data_seed``; by default with each run's own seed
    (as the recipes split and subsample their data with their ``seed``, so a run is scored on its own held-out
    examples), or 42 without ``seeds``. Returns ``(report, details)`` where ``details`` maps each run to its models
    (``SavedModel`` lists) for the plots and cards."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .data import load_dataset_by_name

    seeds = list(seeds) if seeds is not None else [None] * len(run_dirs)
    if len(seeds) != len(run_dirs):
        raise ValueError(f"{len(seeds)} seeds for {len(run_dirs)} run directories.")
    limits = {split: max_samples} if max_samples else None
    loaded: dict[int, Any] = {}

    def split_for(seed: int) -> Any:
        if seed not in loaded:
            splits = load_dataset_by_name(dataset, data_dir=data_dir, seed=seed, max_samples_per_split=limits)
            if split not in splits:
                raise ValueError(f"{dataset} has no {split!r} split; it has {list(splits)}.")
            loaded[seed] = splits[split]
        return loaded[seed]

    run_data_seeds = [data_seed if data_seed is not None else (s if s is not None else 42) for s in seeds]
    label_names = list(split_for(run_data_seeds[0]).features["label"].names)
    results: list[ModelResult] = []
    details: dict[str, Any] = {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for run_dir, seed, run_data_seed in zip(run_dirs, seeds, run_data_seeds):
        data = split_for(run_data_seed)
        labels = np.asarray(data["label"][:], dtype=np.int64)
        models, ensembles = find_saved_models(run_dir)
        details[str(run_dir)] = {"models": models, "ensembles": ensembles}
        outputs: dict[str, tuple[np.ndarray, float, int]] = {}
        for saved in models:
            model = AutoModelForSequenceClassification.from_pretrained(saved.path).to(device)
            if model.config.num_labels != len(label_names):
                raise ValueError(
                    f"{saved.path} predicts {model.config.num_labels} classes but {dataset} has {len(label_names)} "
                    f"({label_names}); evaluate it on the dataset it was trained for."
                )
            tokenizer = AutoTokenizer.from_pretrained(saved.path)
            encoded = data.map(
                lambda b, tok=tokenizer: tok(b["text"], truncation=True, max_length=max_length),
                batched=True,
                desc=f"Tokenizing for {saved.name}",
            )
            logits, seconds = predict_logits(model, encoded, tokenizer, batch_size=batch_size, desc=saved.name)
            params = sum(p.numel() for p in model.parameters())
            outputs[saved.name] = (logits, seconds, params)
            results.append(
                model_result(
                    saved.name, labels, logits, label_names, role=saved.role, params=params, seconds=seconds, seed=seed
                )
            )
            del model
        for ensemble in ensembles:
            members = [outputs[m] for m in ensemble.members]
            results.append(
                ensemble_result(
                    ensemble.name,
                    labels,
                    [m[0] for m in members],
                    label_names,
                    params=sum(m[2] for m in members),
                    seconds=sum(m[1] for m in members),
                    seed=seed,
                )
            )
    sizes = sorted({len(d) for d in loaded.values()})
    notes = f"{'/'.join(map(str, sizes))} examples per run" + (
        f" (at most {max_samples}, subsampled)" if max_samples else ""
    )
    per_run = data_seed is None and seeds[0] is not None
    notes += "; split and subsample seeded with " + ("each run's seed" if per_run else str(run_data_seeds[0]))
    report = build_report(results, dataset=dataset, split=split, label_names=label_names, notes=notes)
    report["run_dirs"] = [str(r) for r in run_dirs]
    return report, details
