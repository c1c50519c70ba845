"""Teacher-output cache: run the teacher once over a dataset, then distil without it.

A classifier teacher's logits are stored in full; a causal-LM teacher's output is stored as the top-k
log-probabilities of every completion token plus the log of the remaining probability mass (the approach of
DistillKit's offline mode and of sparse-logit KD). Everything is keyed by the dataset's ``id`` column, never by
position, step or rank, so shuffling, gradient accumulation and data parallelism read the right rows.

On disk a cache is a directory with two files, never a pickle:

- ``teacher_outputs.safetensors``: the tensors (``logits`` ``(N, C)``; or ``topk_logprobs`` ``(T, k)``,
  ``topk_indices`` ``(T, k)``, ``rest_logprob`` ``(T,)`` and ``offsets`` ``(N + 1,)`` for the top-k kind);
- ``teacher_outputs.json``: the example ids (row ``i`` of the tensors belongs to ``ids[i]``), the kind, the
  fingerprint and the settings it was built with.

A multi-task teacher (a :class:`~distil_trainers.models.MultiTaskModel`, or a
:class:`~distil_trainers.models.routed.TaskRoutedTeacher` of single-task teachers) has heads of different widths: its
cache holds, per example, the logits of the head of that example's task (its ``task_ids`` column), in a ``logits``
tensor ``(N, C_max)`` padded with NaN beyond the task's width, plus ``task_ids`` ``(N,)``, the task of every row; the
JSON's ``meta["tasks"]`` records ``{task: num_labels}`` in the teacher's task order (format version 2; single-task
caches keep format version 1).

The fingerprint hashes the teacher (config and every weight) and the dataset columns the teacher reads (ids, token
columns and the task column): :func:`precompute_teacher_outputs` reuses a cache whose fingerprint matches and rebuilds
it otherwise.

Example::

    cache = precompute_teacher_outputs(teacher, tokenized["train"], "runs/teacher_cache", tokenizer=tokenizer)
    trainer = AnnealingTrainer(model=student, teacher_outputs=cache, args=args, train_dataset=tokenized["train"], ...)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from .data.multitask import TASK_COLUMN
from .data.processing import TEACHER_PREFIX, TOKENIZER_COLUMNS, MultiTokenizerCollator

logger = logging.getLogger(__name__)

ID_COLUMN = "id"
# Integer column added to a dataset by the trainers: the cache row of each example, looked up by id. It carries the
# teacher prefix, so `split_inputs` hands it to the teacher side as `cache_row`.
CACHE_ROW_COLUMN = TEACHER_PREFIX + "cache_row"
CACHE_ROW_KEY = "cache_row"
TENSORS_FILE = "teacher_outputs.safetensors"
META_FILE = "teacher_outputs.json"
KINDS = ("logits", "topk")
FORMAT_VERSION = 1  # single-task classifier caches and top-k caches
MULTITASK_FORMAT_VERSION = 2  # multi-task classifier caches: adds the `task_ids` tensor and meta["tasks"]
SUPPORTED_FORMAT_VERSIONS = (FORMAT_VERSION, MULTITASK_FORMAT_VERSION)


# --------------------------------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------------------------------


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's config and of every parameter and buffer (names, dtypes, shapes and bytes)."""
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        to_json = getattr(config, "to_json_string", None)
        if to_json is not None:
            text = to_json(use_diff=False)
        else:
            text = json.dumps(vars(config), sort_keys=True, default=str)
        h.update(text.encode())
    h.update(type(model).__name__.encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dataset_fingerprint(dataset: datasets.Dataset, columns: Sequence[str]) -> str:
    """sha256 of the given columns' values, rows taken in ``id`` order when there is an ``id`` column (the cache is
    keyed by id, so a shuffled copy of the same examples hashes the same)."""
    order = None
    if ID_COLUMN in dataset.column_names:
        ids = [str(i) for i in dataset[ID_COLUMN][:]]
        order = sorted(range(len(ids)), key=ids.__getitem__)
    h = hashlib.sha256()
    for column in columns:
        values = dataset[column][:]
        if order is not None:
            values = [values[i] for i in order]
        h.update(column.encode())
        h.update(json.dumps(values, default=str).encode())
    return h.hexdigest()


def _teacher_columns(dataset: datasets.Dataset) -> tuple[str, list[str]]:
    """The prefix of the teacher's token columns (``teacher_`` when the dataset has them, else ``""``) and the
    columns the teacher reads."""
    names = dataset.column_names
    prefix = TEACHER_PREFIX if f"{TEACHER_PREFIX}input_ids" in names else ""
    if f"{prefix}input_ids" not in names:
        raise ValueError(f"The dataset has no `input_ids` (nor `teacher_input_ids`) column; columns: {names}.")
    columns = [prefix + c for c in TOKENIZER_COLUMNS if prefix + c in names]
    if TASK_COLUMN in names:
        columns.append(TASK_COLUMN)
    return prefix, columns


def teacher_tasks(teacher: nn.Module) -> dict[str, int] | None:
    """``{task: num_labels}`` of a multi-task teacher (``config.tasks``, in task-id order), ``None`` otherwise."""
    tasks = getattr(getattr(teacher, "config", None), "tasks", None)
    return {str(name): int(n) for name, n in tasks.items()} if tasks else None


def _check_ids(dataset: datasets.Dataset, what: str) -> list[str]:
    if ID_COLUMN not in dataset.column_names:
        raise ValueError(
            f"The {what} has no `{ID_COLUMN}` column. The teacher-output cache is keyed by example id: add one "
            "(e.g. `dataset.add_column('id', [str(i) for i in range(len(dataset))])` before any shuffling)."
        )
    ids = [str(i) for i in dataset[ID_COLUMN][:]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"The {what} has duplicate values in its `{ID_COLUMN}` column; ids must be unique.")
    return ids


# --------------------------------------------------------------------------------------------------------------------
# The cache object
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class TeacherOutputs:
    """Precomputed teacher outputs, one entry per example id.

    Attributes:
        ids: example ids; row ``i`` of the tensors belongs to ``ids[i]``.
        kind: ``"logits"`` (classifier logits, ``tensors["logits"]`` of shape ``(N, C)``) or ``"topk"`` (causal LM,
            see :func:`precompute_topk_logprobs`). A multi-task classifier cache also holds ``tensors["task_ids"]``
            ``(N,)`` (each row's task) and ``meta["tasks"]`` (``{task: num_labels}``); its ``logits`` are
            ``(N, C_max)``, NaN beyond each row's task width.
        tensors: the stored tensors.
        fingerprint: hash of the teacher and of the dataset columns it read.
        meta: settings the cache was built with (``num_labels`` or ``tasks``, ``k``, ``temperature``…).
    """

    ids: list[str]
    kind: str
    tensors: dict[str, Tensor]
    fingerprint: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}.")
        self._row_of = {i: r for r, i in enumerate(self.ids)}
        if len(self._row_of) != len(self.ids):
            raise ValueError("TeacherOutputs ids must be unique.")
        if "task_ids" in self.tensors:
            self._check_multitask()

    def _check_multitask(self) -> None:
        tasks = self.tasks
        if self.kind != "logits" or not tasks:
            raise ValueError("A `task_ids` tensor needs a classifier ('logits') cache with meta['tasks'].")
        logits, task_ids = self.tensors["logits"], self.tensors["task_ids"]
        if task_ids.shape != (len(self.ids),) or logits.shape[0] != len(self.ids):
            raise ValueError(
                f"A multi-task cache of {len(self.ids)} ids needs logits (N, C) and task_ids (N,), got "
                f"{tuple(logits.shape)} and {tuple(task_ids.shape)}."
            )
        if logits.shape[-1] < max(tasks.values()):
            raise ValueError(f"The cached logits have {logits.shape[-1]} columns, fewer than the widest head {tasks}.")
        if task_ids.numel() and not (0 <= int(task_ids.min()) and int(task_ids.max()) < len(tasks)):
            raise ValueError(f"The cached task ids must lie in [0, {len(tasks)}) for tasks {list(tasks)}.")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def tasks(self) -> dict[str, int] | None:
        """``{task: num_labels}`` of a multi-task teacher's cache, in task-id order; ``None`` for a single-task one."""
        tasks = self.meta.get("tasks")
        if not tasks:
            return None
        order = self.meta.get("task_order") or list(tasks)
        return {str(name): int(tasks[name]) for name in order}

    @property
    def is_multitask(self) -> bool:
        return "task_ids" in self.tensors

    @property
    def num_labels(self) -> int:
        if self.kind != "logits":
            raise ValueError("num_labels is defined for classifier caches only.")
        if self.is_multitask:
            tasks = self.tasks
            if len(tasks) == 1:
                return next(iter(tasks.values()))
            raise ValueError(
                f"This cache holds a multi-task teacher's logits; its heads' widths are in .tasks: {tasks}."
            )
        return int(self.tensors["logits"].shape[-1])

    def rows(self, ids: Sequence[Any], what: str = "dataset") -> list[int]:
        """Cache rows of ``ids``; raises naming the ids the cache does not hold."""
        out, missing = [], []
        for i in ids:
            row = self._row_of.get(str(i))
            if row is None:
                missing.append(str(i))
            out.append(row)
        if missing:
            raise ValueError(
                f"The teacher-output cache has no entry for {len(missing)} example(s) of the {what} (ids "
                f"{missing[:5]}{'…' if len(missing) > 5 else ''}). Precompute it over every dataset the trainer "
                "reads (train and eval), e.g. precompute_teacher_outputs(teacher, {'train': train, 'eval': eval}, ...)."
            )
        return out

    def logits_at(self, rows: Tensor, task_ids: Tensor | int | str | None = None) -> Tensor:
        """Classifier logits of the given cache rows, ``(len(rows), C)``.

        For a multi-task cache the rows must form a single-task batch (as
        :class:`~distil_trainers.data.multitask.MultiTaskBatchSampler` yields): ``task_ids`` is the batch's task (the
        ``task_ids`` column of the batch, a task index or a task name; without it, the rows' cached task) and the
        result is ``(len(rows), C_t)``, the logits of that task's head. A batch mixing tasks, or a row cached under
        another task than the batch's, is an error. ``task_ids`` is ignored by a single-task cache."""
        if self.kind != "logits":
            raise ValueError("logits_at needs a classifier ('logits') cache; this one holds top-k log-probabilities.")
        rows = torch.as_tensor(rows).detach().long().cpu().reshape(-1)
        logits = self.tensors["logits"].index_select(0, rows)
        if not self.is_multitask:
            return logits
        names = list(self.tasks)
        cached = self.tensors["task_ids"].index_select(0, rows).long()
        if task_ids is None:
            batch_tasks = cached.unique().tolist()
        elif isinstance(task_ids, str):
            if task_ids not in names:
                raise ValueError(f"Unknown task {task_ids!r}; the cache holds tasks {names}.")
            batch_tasks = [names.index(task_ids)]
        else:
            batch_tasks = torch.as_tensor(task_ids).detach().long().cpu().reshape(-1).unique().tolist()
        if len(batch_tasks) != 1:
            raise ValueError(
                f"A batch must hold one task to read a multi-task teacher's cached logits, got task ids {batch_tasks} "
                f"(tasks {names}). Train with MultiTaskBatchSampler (the trainers use it for datasets with a "
                "`task_ids` column) and evaluate one task at a time."
            )
        task = int(batch_tasks[0])
        if not 0 <= task < len(names):
            raise ValueError(f"Task id {task} is out of range for the cached tasks {names}.")
        wrong = (cached != task).nonzero().flatten().tolist()
        if wrong:
            ids = [self.ids[int(rows[i])] for i in wrong]
            found = sorted({names[int(cached[i])] for i in wrong})
            raise ValueError(
                f"The batch is of task {names[task]!r} but the teacher-output cache holds example(s) {ids[:5]}"
                f"{'…' if len(ids) > 5 else ''} under task(s) {found}. Was the `task_ids` column changed after the "
                "cache was built? Rebuild it with precompute_teacher_outputs."
            )
        return logits[:, : self.tasks[names[task]]].contiguous()

    def topk_at(self, rows: Sequence[int]) -> list[dict[str, Tensor]]:
        """Per row, ``{"topk_logprobs": (T_i, k), "topk_indices": (T_i, k), "rest_logprob": (T_i,)}``."""
        if self.kind != "topk":
            raise ValueError("topk_at needs a top-k ('topk') cache.")
        offsets = self.tensors["offsets"]
        out = []
        for r in rows:
            a, b = int(offsets[int(r)]), int(offsets[int(r) + 1])
            out.append({k: self.tensors[k][a:b] for k in ("topk_logprobs", "topk_indices", "rest_logprob")})
        return out

    def attach(self, dataset: Any, what: str = "dataset") -> Any:
        """``dataset`` with the :data:`CACHE_ROW_COLUMN` column (its examples' cache rows, looked up by id).
        Non-``datasets.Dataset`` objects and ``None`` pass through unchanged."""
        if not isinstance(dataset, datasets.Dataset):
            return dataset
        rows = self.rows(_check_ids(dataset, what), what)
        if self.is_multitask and TASK_COLUMN in dataset.column_names:
            self._check_tasks(rows, dataset[TASK_COLUMN][:], what)
        if CACHE_ROW_COLUMN in dataset.column_names:
            dataset = dataset.remove_columns(CACHE_ROW_COLUMN)
        return dataset.add_column(CACHE_ROW_COLUMN, rows)

    def _check_tasks(self, rows: list[int], task_ids: Sequence[int], what: str) -> None:
        """Raise unless every example's task (the dataset's ``task_ids``) is the task its logits were cached for."""
        names = list(self.tasks)
        cached = self.tensors["task_ids"][torch.as_tensor(rows, dtype=torch.long)].tolist()
        wrong = [i for i, (c, t) in enumerate(zip(cached, task_ids)) if int(c) != int(t)]
        if wrong:
            i = wrong[0]
            seen = names[int(task_ids[i])] if 0 <= int(task_ids[i]) < len(names) else f"task id {int(task_ids[i])}"
            raise ValueError(
                f"{len(wrong)} example(s) of the {what} have another task than the teacher-output cache holds for "
                f"them: e.g. example {self.ids[rows[i]]!r} is of {seen!r} in the {what} but its cached logits are "
                f"those of the {names[int(cached[i])]!r} head. Rebuild the cache over these datasets."
            )

    # ---- disk ----------------------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(directory / TENSORS_FILE))
        version = MULTITASK_FORMAT_VERSION if self.is_multitask else FORMAT_VERSION
        meta = {"format_version": version, "kind": self.kind, "fingerprint": self.fingerprint,
                "meta": self.meta, "ids": self.ids}
        tmp = directory / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta))
        tmp.replace(directory / META_FILE)  # written last: a directory with this file holds a complete cache

    @classmethod
    def load(cls, directory: str | os.PathLike) -> TeacherOutputs:
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"No teacher-output cache in {directory} (missing {META_FILE}).")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") not in SUPPORTED_FORMAT_VERSIONS:
            raise ValueError(
                f"{meta_path} has format version {meta.get('format_version')}, expected one of "
                f"{SUPPORTED_FORMAT_VERSIONS}."
            )
        tensors = load_file(str(directory / TENSORS_FILE))
        return cls(ids=meta["ids"], kind=meta["kind"], tensors=tensors, fingerprint=meta["fingerprint"],
                   meta=meta["meta"])

    @staticmethod
    def stored_fingerprint(directory: str | os.PathLike) -> str | None:
        path = Path(directory) / META_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text()).get("fingerprint")
        except (OSError, json.JSONDecodeError):
            return None


# --------------------------------------------------------------------------------------------------------------------
# Building caches
# --------------------------------------------------------------------------------------------------------------------


def _as_dataset_list(dataset: datasets.Dataset | Mapping[str, datasets.Dataset]) -> list[tuple[str, datasets.Dataset]]:
    if isinstance(dataset, datasets.Dataset):
        return [("dataset", dataset)]
    if isinstance(dataset, Mapping) and all(isinstance(d, datasets.Dataset) for d in dataset.values()) and dataset:
        return list(dataset.items())
    raise TypeError("dataset must be a datasets.Dataset or a non-empty {name: Dataset} mapping.")


def _fingerprint(
    teacher_fp: str,
    parts: list[tuple[str, datasets.Dataset]],
    settings: dict[str, Any],
    extra_columns: Sequence[str] = (),
) -> str:
    h = hashlib.sha256()
    h.update(teacher_fp.encode())
    h.update(json.dumps(settings, sort_keys=True).encode())
    for _, ds in parts:
        _, columns = _teacher_columns(ds)
        columns += [c for c in extra_columns if c in ds.column_names]
        h.update(dataset_fingerprint(ds, [ID_COLUMN, *columns]).encode())
    return h.hexdigest()[:32]


def _batches(ds: datasets.Dataset, columns: list[str], batch_size: int):
    """Index batches over ``ds`` ordered by length (little padding), with the rows' features."""
    lengths = [len(x) for x in ds[columns[0]][:]]
    order = sorted(range(len(ds)), key=lengths.__getitem__)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx, ds.select(idx).select_columns(columns)


def _collate(rows: datasets.Dataset | list[dict[str, Any]], prefix: str, collator) -> dict[str, Tensor]:
    features = rows if isinstance(rows, list) else [dict(r) for r in rows]
    batch = collator(features)
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in batch.items()}


def _make_collator(tokenizer, data_collator, prefix: str):
    if data_collator is not None:
        return data_collator
    if tokenizer is not None:
        return MultiTokenizerCollator({prefix: tokenizer})
    from transformers import default_data_collator

    return default_data_collator


def _build_or_load(cache_dir, fingerprint: str, rebuild: bool, build) -> TeacherOutputs:
    if cache_dir is not None and not rebuild and TeacherOutputs.stored_fingerprint(cache_dir) == fingerprint:
        logger.info("Teacher-output cache in %s is up to date; reusing it.", cache_dir)
        return TeacherOutputs.load(cache_dir)
    if cache_dir is not None and TeacherOutputs.stored_fingerprint(cache_dir) is not None:
        logger.info("Teacher or data changed since the cache in %s was built: rebuilding it.", cache_dir)
    start = time.perf_counter()
    cache = build()
    cache.meta["build_seconds"] = round(time.perf_counter() - start, 3)
    if cache_dir is not None:
        cache.save(cache_dir)
    return cache


@torch.no_grad()
def precompute_teacher_outputs(
    teacher: nn.Module,
    dataset: datasets.Dataset | Mapping[str, datasets.Dataset],
    cache_dir: str | os.PathLike | None = None,
    *,
    tokenizer=None,
    data_collator=None,
    batch_size: int = 64,
    rebuild: bool = False,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> TeacherOutputs:
    """Run a classifier teacher once over ``dataset`` (or several, e.g. ``{"train": ..., "validation": ...}``) and
    return its logits keyed by the ``id`` column.

    The teacher reads ``teacher_input_ids``/``teacher_attention_mask`` when the dataset has them, else
    ``input_ids``/``attention_mask``. With ``cache_dir`` the result is saved there and reused as long as the
    fingerprint (teacher weights and config, the columns the teacher reads) matches; otherwise it is rebuilt
    (``rebuild=True`` forces it). Batches are formed by length, padded with ``tokenizer`` (or ``data_collator``;
    without either, rows must have equal lengths).

    A multi-task teacher (``config.tasks``: a :class:`~distil_trainers.models.MultiTaskModel` or a
    :class:`~distil_trainers.models.routed.TaskRoutedTeacher`) is run on single-task batches, each example with the
    head of its task (the dataset's ``task_ids`` column, indices into the teacher's task order; a one-task teacher
    needs no such column); the cache then holds per-task widths (see :class:`TeacherOutputs`) and the ``task_ids``
    column is part of the fingerprint.
    """
    parts = _as_dataset_list(dataset)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    ids_all: list[str] = []
    for name, ds in parts:
        ids_all += _check_ids(ds, name)
    if len(set(ids_all)) != len(ids_all):
        raise ValueError("The datasets share example ids; a cache over several datasets needs ids unique across them.")
    tasks = teacher_tasks(teacher)
    if tasks is not None:
        return _precompute_multitask(teacher, tasks, parts, ids_all, cache_dir, tokenizer=tokenizer,
                                     data_collator=data_collator, batch_size=batch_size, rebuild=rebuild,
                                     device=device, dtype=dtype)
    teacher_fp = model_fingerprint(teacher)
    fp = _fingerprint(teacher_fp, parts, {"kind": "logits", "dtype": str(dtype)})

    def build() -> TeacherOutputs:
        was_training = teacher.training
        teacher.eval()
        dev = torch.device(device) if device is not None else next(teacher.parameters()).device
        chunks: list[Tensor] = []
        total = sum(len(ds) for _, ds in parts)
        with tqdm(total=total, desc="Teacher outputs", unit="ex") as bar:
            for _, ds in parts:
                prefix, columns = _teacher_columns(ds)
                collator = _make_collator(tokenizer, data_collator, prefix)
                out = torch.empty(0)
                for idx, rows in _batches(ds, columns, batch_size):
                    batch = {k: v.to(dev) for k, v in _collate(rows, prefix, collator).items()}
                    logits = teacher(**batch).logits.to("cpu", dtype)
                    if out.numel() == 0:
                        out = torch.empty(len(ds), logits.shape[-1], dtype=dtype)
                    out[torch.as_tensor(idx)] = logits
                    bar.update(len(idx))
                chunks.append(out)
        teacher.train(was_training)
        return TeacherOutputs(ids=ids_all, kind="logits", tensors={"logits": torch.cat(chunks)}, fingerprint=fp,
                              meta={"num_labels": int(chunks[0].shape[-1]), "teacher": type(teacher).__name__,
                                    "teacher_fingerprint": teacher_fp})

    return _build_or_load(cache_dir, fp, rebuild, build)


def _dataset_tasks(ds: datasets.Dataset, tasks: dict[str, int], name: str) -> list[int]:
    """The task index of every row of ``ds`` (its ``task_ids`` column; all 0 for a one-task teacher without it)."""
    names = list(tasks)
    if TASK_COLUMN not in ds.column_names:
        if len(names) == 1:
            return [0] * len(ds)
        raise ValueError(
            f"The {name} has no `{TASK_COLUMN}` column but the teacher has several tasks {names}: build it with "
            "distil_trainers.data.concatenate_tasks (or add the column) so that each example is run through the head "
            "of its task."
        )
    values = [int(t) for t in ds[TASK_COLUMN][:]]
    bad = sorted({t for t in values if not 0 <= t < len(names)})
    if bad:
        raise ValueError(f"The {name} has task ids {bad} out of range for the teacher's tasks {names}.")
    return values


def _precompute_multitask(
    teacher: nn.Module,
    tasks: dict[str, int],
    parts: list[tuple[str, datasets.Dataset]],
    ids_all: list[str],
    cache_dir,
    *,
    tokenizer,
    data_collator,
    batch_size: int,
    rebuild: bool,
    device,
    dtype: torch.dtype,
) -> TeacherOutputs:
    """:func:`precompute_teacher_outputs` for a multi-task teacher: single-task batches, per-task widths."""
    names = list(tasks)
    part_tasks = [_dataset_tasks(ds, tasks, name) for name, ds in parts]
    teacher_fp = model_fingerprint(teacher)
    settings = {"kind": "logits", "dtype": str(dtype), "tasks": [[n, c] for n, c in tasks.items()]}
    fp = _fingerprint(teacher_fp, parts, settings)
    width = max(tasks.values())

    def build() -> TeacherOutputs:
        was_training = teacher.training
        teacher.eval()
        dev = torch.device(device) if device is not None else next(teacher.parameters()).device
        logit_chunks: list[Tensor] = []
        task_chunks: list[Tensor] = []
        total = sum(len(ds) for _, ds in parts)
        with tqdm(total=total, desc="Teacher outputs", unit="ex") as bar:
            for (_, ds), row_tasks in zip(parts, part_tasks):
                prefix, columns = _teacher_columns(ds)
                columns = [c for c in columns if c != TASK_COLUMN]  # the task of a batch is set below
                collator = _make_collator(tokenizer, data_collator, prefix)
                out = torch.full((len(ds), width), float("nan"), dtype=dtype)
                row_tasks_t = torch.tensor(row_tasks, dtype=torch.int64)
                for task in sorted(set(row_tasks)):
                    members = (row_tasks_t == task).nonzero().flatten()
                    subset = ds.select(members.tolist())
                    for idx, rows in _batches(subset, columns, batch_size):
                        batch = {k: v.to(dev) for k, v in _collate(rows, prefix, collator).items()}
                        batch[TASK_COLUMN] = torch.full((len(idx),), task, dtype=torch.long, device=dev)
                        logits = teacher(**batch).logits.to("cpu", dtype)
                        if logits.shape[-1] != tasks[names[task]]:
                            raise ValueError(
                                f"The teacher's {names[task]!r} head gave {logits.shape[-1]} logits but its config "
                                f"says {tasks[names[task]]} classes."
                            )
                        out[members[torch.as_tensor(idx)], : logits.shape[-1]] = logits
                        bar.update(len(idx))
                logit_chunks.append(out)
                task_chunks.append(row_tasks_t)
        teacher.train(was_training)
        return TeacherOutputs(
            ids=ids_all, kind="logits",
            tensors={"logits": torch.cat(logit_chunks), "task_ids": torch.cat(task_chunks)}, fingerprint=fp,
            meta={"tasks": dict(tasks), "task_order": names, "teacher": type(teacher).__name__,
                  "teacher_fingerprint": teacher_fp},
        )

    return _build_or_load(cache_dir, fp, rebuild, build)


@torch.no_grad()
def precompute_topk_logprobs(
    teacher: nn.Module,
    dataset: datasets.Dataset | Mapping[str, datasets.Dataset],
    cache_dir: str | os.PathLike | None = None,
    *,
    k: int = 50,
    temperature: float = 1.0,
    tokenizer=None,
    data_collator=None,
    batch_size: int = 8,
    rebuild: bool = False,
    device: str | torch.device | None = None,
) -> TeacherOutputs:
    """Run a causal-LM teacher once and keep, for every completion token, the top-``k`` log-probabilities of the
    next-token distribution ``log_softmax(logits / temperature)``, their token ids and the log of the remaining mass
    ``log(1 - sum(top-k probabilities))`` (computed from the full distribution, so nothing of the tail is lost).

    Completion tokens are the positions with ``labels != -100`` (a ``labels`` column, one value per token, ragged
    rows welcome: it is aligned with each row's tokens whatever the padding side; without one, every non-padded
    token). The entry of position ``t`` is the distribution the teacher predicts *for* token ``t`` (from the logits
    at ``t - 1``); a sequence's first token has none. Per example the entries are stored in position order;
    ``offsets[i]:offsets[i + 1]`` are example ``i``'s. Consume them with :func:`topk_kl_loss`. The fingerprint
    covers the ``labels`` column too; ``meta["vocab_size"]`` records the teacher's logit width."""
    parts = _as_dataset_list(dataset)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    ids_all: list[str] = []
    for name, ds in parts:
        ids_all += _check_ids(ds, name)
    if len(set(ids_all)) != len(ids_all):
        raise ValueError("The datasets share example ids; a cache over several datasets needs ids unique across them.")
    teacher_fp = model_fingerprint(teacher)
    fp = _fingerprint(teacher_fp, parts, {"kind": "topk", "k": k, "temperature": temperature}, ["labels"])

    def build() -> TeacherOutputs:
        was_training = teacher.training
        teacher.eval()
        dev = torch.device(device) if device is not None else next(teacher.parameters()).device
        per_example: list[tuple[Tensor, Tensor, Tensor]] = []
        vocab_size = None
        total = sum(len(ds) for _, ds in parts)
        with tqdm(total=total, desc="Teacher top-k log-probs", unit="ex") as bar:
            for _, ds in parts:
                prefix, columns = _teacher_columns(ds)
                has_labels = "labels" in ds.column_names
                collator = _make_collator(tokenizer, data_collator, prefix)
                slot: list[Any] = [None] * len(ds)
                for idx, rows in _batches(ds, [*columns, "labels"] if has_labels else columns, batch_size):
                    # the labels stay out of the collator (ragged rows, any padding side) and are aligned below
                    features = [dict(r) for r in rows]
                    labels = [f.pop("labels") for f in features] if has_labels else None
                    batch = {k_: v.to(dev) for k_, v in _collate(features, prefix, collator).items()}
                    logits = teacher(**batch).logits.float()
                    vocab_size = int(logits.shape[-1])
                    attention = batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()
                    for j, i in enumerate(idx):
                        real = attention[j].nonzero().squeeze(-1)  # the row's token positions, in order
                        targets = real
                        if labels is not None:
                            row_labels = torch.as_tensor(labels[j], device=real.device)
                            if row_labels.shape[0] != real.shape[0]:
                                raise ValueError(
                                    f"Example {ids_all[len(per_example) + i]!r} has {row_labels.shape[0]} labels "
                                    f"but {real.shape[0]} tokens."
                                )
                            targets = real[row_labels != -100]
                        if real.numel():
                            targets = targets[targets > real[0]]  # a row's first token is predicted by nothing
                        slot[i] = topk_entries(logits[j, targets - 1], k, temperature)  # logits at t - 1
                    bar.update(len(idx))
                per_example += slot
        teacher.train(was_training)
        lengths = torch.tensor([0] + [e[0].shape[0] for e in per_example])
        tensors = {
            "topk_logprobs": torch.cat([e[0] for e in per_example]),
            "topk_indices": torch.cat([e[1] for e in per_example]),
            "rest_logprob": torch.cat([e[2] for e in per_example]),
            "offsets": torch.cumsum(lengths, 0),
        }
        return TeacherOutputs(ids=ids_all, kind="topk", tensors=tensors, fingerprint=fp,
                              meta={"k": k, "temperature": temperature, "vocab_size": vocab_size,
                                    "teacher": type(teacher).__name__, "teacher_fingerprint": teacher_fp})

    return _build_or_load(cache_dir, fp, rebuild, build)


def topk_entries(logits: Tensor, k: int, temperature: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``k`` log-probabilities ``(T, k)``, their indices ``(T, k)`` and the log of the remaining mass ``(T,)``
    of ``log_softmax(logits / temperature)`` for logits ``(T, V)``."""
    log_p = F.log_softmax(logits.double() / temperature, dim=-1)
    k = min(k, log_p.shape[-1])
    values, indices = log_p.topk(k, dim=-1)
    rest = log_p.scatter(-1, indices, float("-inf")).logsumexp(-1)
    return values.float(), indices.to(torch.int64), rest.float()


# --------------------------------------------------------------------------------------------------------------------
# The loss that consumes a top-k cache
# --------------------------------------------------------------------------------------------------------------------


def topk_kl_loss(
    student_logits: Tensor,
    topk_logprobs: Tensor,
    topk_indices: Tensor,
    rest_logprob: Tensor,
    temperature: float = 1.0,
    mask: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """``T^2 * KL(p_t || p_s)`` over the ``k + 1`` outcomes "one of the teacher's top-k tokens" and "any other token".

    ``p_t`` is the cached teacher distribution (top-k log-probabilities and the log of the remaining mass);
    ``p_s`` is ``softmax(student_logits / T)`` gathered at the same token ids, with the student's mass on all other
    tokens as the last outcome. When the top-k set covers the vocabulary this equals the full KL; otherwise it is the
    KL of the coarse-grained distributions, a lower bound of the full KL whose gap shrinks with ``k`` (the tail's
    shape is not stored). Per item (token), reduced with ``reduce_per_item``.

    Args:
        student_logits: ``(..., V)``.
        topk_logprobs: ``(..., k)`` teacher log-probabilities; ``topk_indices``: ``(..., k)`` token ids;
            ``rest_logprob``: ``(...)`` log of the teacher's remaining mass.
        temperature: the temperature the cache was built with (the student is softened by the same).
        mask, num_items_in_batch: as in :func:`distil_trainers.losses.kd_kl_loss`.
    """
    from .losses import reduce_per_item

    per_item = topk_kl_per_item(student_logits, topk_logprobs, topk_indices, rest_logprob, temperature)
    return reduce_per_item(per_item, mask, num_items_in_batch)


def topk_kl_per_item(
    student_logits: Tensor,
    topk_logprobs: Tensor,
    topk_indices: Tensor,
    rest_logprob: Tensor,
    temperature: float = 1.0,
) -> Tensor:
    """The unreduced :func:`topk_kl_loss`: ``T^2 * KL(p_t || p_s)`` per item, shape ``student_logits.shape[:-1]``."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    if topk_logprobs.shape != topk_indices.shape or topk_logprobs.shape[:-1] != student_logits.shape[:-1]:
        raise ValueError(
            f"shape mismatch: student_logits {tuple(student_logits.shape)}, topk_logprobs "
            f"{tuple(topk_logprobs.shape)}, topk_indices {tuple(topk_indices.shape)}."
        )
    if rest_logprob.shape != student_logits.shape[:-1]:
        raise ValueError(f"rest_logprob must have shape {tuple(student_logits.shape[:-1])}, got {tuple(rest_logprob.shape)}.")
    z = student_logits.float() / temperature
    log_norm = z.logsumexp(-1)
    idx = topk_indices.long().to(z.device)
    s_top = z.gather(-1, idx) - log_norm[..., None]
    # a finite fill keeps the gradient finite when the top-k set covers the whole vocabulary
    s_rest = z.scatter(-1, idx, torch.finfo(z.dtype).min).logsumexp(-1) - log_norm
    t_top = topk_logprobs.to(z.device, z.dtype)
    t_rest = rest_logprob.to(z.device, z.dtype)
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    top_terms = torch.where(t_top > float("-inf"), t_top.exp() * (t_top - s_top), zero).sum(-1)
    rest_terms = torch.where(t_rest > float("-inf"), t_rest.exp() * (t_rest - s_rest), zero)
    return (top_terms + rest_terms) * (temperature * temperature)


def resolve_teacher_outputs(
    teacher_outputs: TeacherOutputs | str | os.PathLike, teacher: nn.Module | None = None, kind: str = "logits"
) -> TeacherOutputs:
    """A cache of the given ``kind`` (``"logits"``: classifier; ``"topk"``: causal LM) from a :class:`TeacherOutputs`
    or a cache directory. When the teacher model is given too, the cache must have been built from these very weights
    (else it is stale and an error says so)."""
    cache = teacher_outputs if isinstance(teacher_outputs, TeacherOutputs) else TeacherOutputs.load(teacher_outputs)
    if cache.kind != kind:
        if kind == "logits":
            raise ValueError(
                "The classifier trainers need a 'logits' teacher-output cache (precompute_teacher_outputs)."
            )
        raise ValueError(
            f"Token-level distillation needs a '{kind}' teacher-output cache (precompute_topk_logprobs); this one "
            f"holds {cache.kind!r} outputs."
        )
    stored = cache.meta.get("teacher_fingerprint")
    if teacher is not None and stored is not None and stored != model_fingerprint(teacher):
        raise ValueError(
            "The teacher-output cache was built from different teacher weights than the teacher_model given. "
            "Rebuild it with precompute_teacher_outputs(teacher, ...), or pass only teacher_outputs."
        )
    return cache


__all__ = [
    "resolve_teacher_outputs",
    "CACHE_ROW_COLUMN",
    "TeacherOutputs",
    "dataset_fingerprint",
    "model_fingerprint",
    "precompute_teacher_outputs",
    "precompute_topk_logprobs",
    "teacher_tasks",
    "topk_entries",
    "topk_kl_loss",
    "topk_kl_per_item",
]
