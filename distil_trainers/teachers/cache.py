"""Teacher-output cache: run the teacher once over a dataset, then distil without it.

A classifier teacher's logits are stored in full; a causal-LM teacher's output is stored as the top-k
log-probabilities of every completion token plus the log of the remaining probability mass (the approach of
DistillKit's offline mode and of sparse-logit KD). Everything is keyed by the dataset's ``id`` column, never by
position, step or rank, so shuffling, gradient accumulation and data parallelism read the right rows.

On disk a cache is a directory with two files, never a pickle:

- ``teacher_outputs.safetensors``: the tensors (``logits`` ``(N, C)``; or ``topk_logprobs`` ``(T, k)``,
  ``topk_indices`` ``(T, k)``, ``rest_logprob`` ``(T,)`` and ``offsets`` ``(N + 1,)`` for the top-k kind);
- ``teacher_outputs.json``: the example ids (row ``i`` of the tensors belongs to ``ids[i]``), the kind, the
  fingerprint, the settings it was built with and a hash of every example's content (format version 3, below).

A multi-task teacher (a :class:`~distil_trainers.models.MultiTaskModel`, or a
:class:`~distil_trainers.models.routed.TaskRoutedTeacher` of single-task teachers) has heads of different widths: its
cache holds, per example, the logits of the head of that example's task (its ``task_ids`` column), in a ``logits``
tensor ``(N, C_max)`` padded with NaN beyond the task's width, plus ``task_ids`` ``(N,)``, the task of every row; the
JSON's ``meta["tasks"]`` records ``{task: num_labels}`` in the teacher's task order (format version 2; single-task
caches keep format version 1).

The fingerprint hashes the teacher (config and every weight) and the dataset columns the teacher reads (ids, token
columns and the task column): :func:`precompute_teacher_outputs` reuses a cache whose fingerprint matches and rebuilds
it otherwise.

A wrong cache is never used, since nothing downstream would notice it:

- NaN or inf in the teacher's outputs (a float16 teacher overflowing, NaN weights) would turn every student weight into
  NaN at the first optimizer step while the logged loss still looks normal. Building, loading, constructing and
  attaching a cache each refuse them with one error naming the examples (:func:`check_finite_logits`). A classifier's
  logits must be finite, ``-inf`` included (the logit-matching losses, e.g. Annealing-KD's MSE, cannot use it; a
  multi-task cache's NaN padding beyond each row's head is not checked). Top-k caches may hold ``-inf``
  log-probabilities (a token the teacher rules out, the rest mass when ``k`` covers the vocabulary): only NaN and
  ``+inf`` are refused there.
- Ids are only names: a cache built on other texts that reuse the same ids would silently distil each example towards
  another example's teacher output. The JSON therefore also stores, per example, a short hash of its content
  (``content_hashes``: the raw ``text``, with ``text_pair``, when the dataset has it, and the input ids the teacher
  read), and :meth:`TeacherOutputs.attach` compares them with the dataset's rows.

Format version 3 (every cache written now) added ``content_hashes``. Caches of versions 1 (single-task and top-k) and
2 (multi-task: the ``task_ids`` tensor and ``meta["tasks"]``) still load, with a warning that their examples cannot be
checked; rebuilding one (``rebuild=True``) adds the hashes.

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
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data.multitask import TASK_COLUMN
from ..data.processing import TEACHER_PREFIX, TOKENIZER_COLUMNS, MultiTokenizerCollator
from .locks import one_writer

logger = logging.getLogger(__name__)

ID_COLUMN = "id"
# Integer column added to a dataset by the trainers: the cache row of each example, looked up by id. It carries the
# teacher prefix, so `split_inputs` hands it to the teacher side as `cache_row`.
CACHE_ROW_COLUMN = TEACHER_PREFIX + "cache_row"
CACHE_ROW_KEY = "cache_row"
TENSORS_FILE = "teacher_outputs.safetensors"
META_FILE = "teacher_outputs.json"
KINDS = ("logits", "topk")
# Every cache is written in version 3 (per-example content hashes). Versions 1 (single-task and top-k caches) and 2
# (multi-task caches: the `task_ids` tensor and meta["tasks"]) hold no hashes: they load, but cannot be checked.
FORMAT_VERSION = 3
UNVERIFIABLE_FORMAT_VERSIONS = (1, 2)
SUPPORTED_FORMAT_VERSIONS = (*UNVERIFIABLE_FORMAT_VERSIONS, FORMAT_VERSION)
# The raw text columns hashed per example when a dataset has them (`text_pair` only next to `text`).
CONTENT_TEXT_COLUMNS = ("text", "text_pair")
CONTENT_HASH_CHARS = 16  # hex characters of sha256 kept per example and column group: 64 bits
SHOWN_IDS = 5  # ids named in an error; the rest are counted


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
        # flattened first: a 0-dim tensor (BatchNorm's `num_batches_tracked`, a `logit_scale`) cannot be viewed as bytes
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
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
# Checks: finite teacher outputs, the examples a cache was built on
# --------------------------------------------------------------------------------------------------------------------

TEACHER_FAULT_ADVICE = (
    "A teacher gives such values when its activations overflow (typically a float16 teacher: load it in float32 or "
    "bfloat16) or when its weights hold NaN. Distilling from them would turn every student weight into NaN while the "
    "logged loss looks normal: fix the teacher (or drop these examples) and build any teacher-output cache made with "
    "it again (precompute_teacher_outputs(..., rebuild=True), or delete its folder)."
)
BUILD_ADVICE = (
    "The teacher produced them: typically its activations overflow in float16 (load it in float32 or bfloat16), the "
    "cache's dtype=torch.float16 cannot hold its logits (beyond ±65504), or its weights hold NaN. Distilling from "
    "them would turn every student weight into NaN while the logged loss looks normal, so no cache was written: fix "
    "the teacher (or drop these examples) and build the cache again."
)
LOADED_ADVICE = (
    "The file was damaged, or written by a teacher that produced such values (e.g. a float16 teacher overflowing). "
    "Distilling from them would turn every student weight into NaN while the logged loss looks normal: delete the "
    "folder and build the cache again (precompute_teacher_outputs(..., rebuild=True))."
)


def _listed(rows: Sequence[int], ids: Sequence[Any] | None) -> str:
    """``"3 example(s) (ids ['a', 'b', 'c'])"``: a few ids and a count, so that the message stays one line."""
    shown = [str(ids[r]) for r in rows[:SHOWN_IDS]] if ids is not None else list(rows[:SHOWN_IDS])
    more = f" and {len(rows) - SHOWN_IDS} more" if len(rows) > SHOWN_IDS else ""
    return f"{len(rows)} example(s) ({'ids' if ids is not None else 'rows'} {shown}{more})"


def _nonfinite_rows(values: Tensor, valid: Tensor | None = None, allow_neg_inf: bool = False) -> list[int]:
    """Indices along the first dimension of ``values`` whose entries hold NaN or ±inf (only NaN and ``+inf`` with
    ``allow_neg_inf``, for log-probabilities, where ``-inf`` is a probability of 0). ``valid`` (a boolean mask
    broadcastable to ``values``) restricts the check to the entries that mean something, e.g. not the NaN padding
    beyond a multi-task row's head width."""
    values = values.detach()
    if values.dim() == 0:
        values = values.reshape(1)
    if not values.is_floating_point():
        return []
    bad = (torch.isnan(values) | (values == float("inf"))) if allow_neg_inf else ~torch.isfinite(values)
    if valid is not None:
        bad &= valid.to(bad.device)
    return bad.reshape(bad.shape[0], -1).any(-1).nonzero().flatten().tolist()


def check_finite_logits(
    logits: Tensor,
    ids: Sequence[Any] | None = None,
    what: str = "teacher logits",
    *,
    valid: Tensor | None = None,
    allow_neg_inf: bool = False,
    advice: str | None = None,
) -> None:
    """Raise one ``ValueError`` naming the examples whose ``logits`` hold NaN or inf.

    One such value is enough to ruin a distillation run: it flows through the KL term into every student weight at the
    first optimizer step, and nothing fails. The check runs wherever teacher outputs enter a run (building, loading,
    constructing and attaching a cache; a live teacher's batch), so that the error names the examples and the cause.

    Args:
        logits: ``(N, ...)``; row ``i`` (first dimension) belongs to example ``ids[i]``.
        ids: the examples' ids, named in the error (without them, row positions are).
        what: what ``logits`` are, for the message (``"The {what} hold NaN or inf for ..."``).
        valid: boolean mask broadcastable to ``logits``: only these entries are checked.
        allow_neg_inf: accept ``-inf`` (log-probabilities); NaN and ``+inf`` are still refused.
        advice: the cause and the fix, appended to the message (default: a teacher overflowing in float16 or holding
            NaN weights, and what to do).
    """
    _refuse_nonfinite(_nonfinite_rows(logits, valid, allow_neg_inf), ids, what, allow_neg_inf, advice)


def _refuse_nonfinite(
    bad: Sequence[int], ids: Sequence[Any] | None, what: str, allow_neg_inf: bool, advice: str | None
) -> None:
    if bad:
        kinds = "NaN or +inf" if allow_neg_inf else "NaN or inf"
        raise ValueError(f"The {what} hold {kinds} for {_listed(bad, ids)}. {advice or TEACHER_FAULT_ADVICE}")


def _check_finite_outputs(
    ids: Sequence[str],
    kind: str,
    tensors: Mapping[str, Tensor],
    tasks: Mapping[str, int] | None,
    what: str,
    advice: str,
) -> None:
    """:func:`check_finite_logits` over a cache's tensors, per example: a classifier cache's logits (of a multi-task
    cache, only the columns of each row's head: the rest is NaN padding), a top-k cache's log-probabilities and rest
    mass (NaN and ``+inf`` only), each bad token mapped to its example through ``offsets``."""
    if kind == "topk":
        bad_tokens = _nonfinite_rows(tensors["topk_logprobs"], allow_neg_inf=True)
        bad_tokens += _nonfinite_rows(tensors["rest_logprob"], allow_neg_inf=True)
        if bad_tokens:
            offsets = tensors["offsets"].long()
            rows = torch.searchsorted(offsets, torch.tensor(bad_tokens, dtype=torch.long), right=True) - 1
            _refuse_nonfinite(rows.clamp(0, len(ids) - 1).unique().tolist(), ids, what, True, advice)
        return
    logits, valid = tensors["logits"], None
    if "task_ids" in tensors and tasks:
        widths = torch.tensor(list(tasks.values()), dtype=torch.long)
        valid = torch.arange(logits.shape[-1]) < widths[tensors["task_ids"].long()].unsqueeze(-1)
    check_finite_logits(logits, ids, what, valid=valid, advice=advice)


def _column_bytes(dataset: datasets.Dataset, column: str) -> list[bytes]:
    """Every row's value of ``column`` as bytes, read through Arrow in one pass (no per-row dataset access).

    Integer sequences (token ids) become little-endian int64 bytes whatever their stored width or list type, so an
    int32 and an int64 copy of the same ids agree; strings become UTF-8; anything else its JSON."""
    array = dataset.with_format("arrow")[column]
    if isinstance(array, pa.Table):
        array = array.column(0)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return [b"" if v is None else v.encode() for v in array.to_pylist()]
    is_list = pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
    if is_list and pa.types.is_integer(kind.value_type):
        lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False)
        flat = pc.list_flatten(array).to_numpy(zero_copy_only=False).astype("<i8", copy=False)
        raw = flat.tobytes()
        ends = lengths.cumsum().tolist()
        starts = [0, *ends[:-1]]
        return [raw[8 * a : 8 * b] for a, b in zip(starts, ends)]
    return [json.dumps(v, default=str).encode() for v in array.to_pylist()]


def content_groups(columns: Sequence[str]) -> list[tuple[str, ...]]:
    """The column groups hashed per example of a dataset with these columns: its raw text (``text``, with
    ``text_pair`` when present) and the input ids its teacher reads (``teacher_input_ids``, else ``input_ids``, the
    rule of the cache builders). The same rule at build time and at attach time is what makes the hashes
    comparable: a student's ``input_ids`` are never compared with the ``teacher_input_ids`` a cache was built on."""
    groups: list[tuple[str, ...]] = []
    if CONTENT_TEXT_COLUMNS[0] in columns:
        groups.append(tuple(c for c in CONTENT_TEXT_COLUMNS if c in columns))
    prefix = TEACHER_PREFIX if f"{TEACHER_PREFIX}input_ids" in columns else ""
    if f"{prefix}input_ids" in columns:
        groups.append((f"{prefix}input_ids",))
    return groups


def example_hashes(dataset: datasets.Dataset, columns: Sequence[str]) -> list[str]:
    """Per row, the first :data:`CONTENT_HASH_CHARS` hex characters of the sha256 of its ``columns`` (each value
    length-prefixed, so that column boundaries count)."""
    per_column = [_column_bytes(dataset, c) for c in columns]
    out = []
    for values in zip(*per_column):
        h = hashlib.sha256()
        for value in values:
            h.update(len(value).to_bytes(8, "little"))
            h.update(value)
        out.append(h.hexdigest()[:CONTENT_HASH_CHARS])
    return out


def _dataset_content_hashes(parts: Sequence[tuple[str, datasets.Dataset]]) -> dict[str, list[str | None]]:
    """``{"+".join(group): per-row hashes}`` over the datasets a cache is built from, rows in cache order; ``None``
    where a dataset lacks the group (e.g. a train split with text next to a tokenised-only eval split)."""
    total = sum(len(ds) for _, ds in parts)
    out: dict[str, list[str | None]] = {}
    start = 0
    for _, ds in parts:
        for group in content_groups(ds.column_names):
            column = out.setdefault("+".join(group), [None] * total)
            column[start : start + len(ds)] = example_hashes(ds, group)
        start += len(ds)
    return out


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
        tensors: the stored tensors. They must be finite (NaN or inf are refused here, at :meth:`load` and at
            :meth:`attach`); a top-k cache's log-probabilities may be ``-inf``, a multi-task cache's NaN padding is
            not checked.
        fingerprint: hash of the teacher and of the dataset columns it read.
        meta: settings the cache was built with (``num_labels`` or ``tasks``, ``k``, ``temperature``…).
        content_hashes: ``{column group: per-row hash}`` of the examples the cache was built on, row ``i`` for
            ``ids[i]`` (``None`` where that example's dataset lacked the group): what :meth:`attach` compares with a
            dataset's rows (see :func:`content_groups`). Empty for caches of format versions 1 and 2.
        source: where the outputs were read from (a cache directory), named in errors.
    """

    ids: list[str]
    kind: str
    tensors: dict[str, Tensor]
    fingerprint: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    content_hashes: dict[str, list[str | None]] = field(default_factory=dict)
    source: InitVar[str | None] = None

    def __post_init__(self, source: str | None = None):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}.")
        self._row_of = {i: r for r, i in enumerate(self.ids)}
        if len(self._row_of) != len(self.ids):
            raise ValueError("TeacherOutputs ids must be unique.")
        if "task_ids" in self.tensors:
            self._check_multitask()
        for group, hashes in self.content_hashes.items():
            if len(hashes) != len(self.ids):
                raise ValueError(f"content_hashes[{group!r}] has {len(hashes)} entries for {len(self.ids)} ids.")
        if source is None:
            self._check_finite("teacher outputs", TEACHER_FAULT_ADVICE)
        else:
            self._check_finite(f"teacher outputs stored in {source}", LOADED_ADVICE)

    def _check_finite(self, what: str, advice: str) -> None:
        _check_finite_outputs(self.ids, self.kind, self.tensors, self.tasks, what, advice)

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

    def attach(self, dataset: Any, what: str = "dataset", check_contents: bool = True) -> Any:
        """``dataset`` with the :data:`CACHE_ROW_COLUMN` column (its examples' cache rows, looked up by id).
        Non-``datasets.Dataset`` objects and ``None`` pass through unchanged.

        Before that, the cache must be usable for this dataset, else one ``ValueError`` says why:

        - its outputs are finite (checked again here: tensors can be changed after construction);
        - every id is in the cache, and of a multi-task cache, cached under the dataset's task;
        - each example is the one the cache was built on. Ids are only names, so the per-example content hashes
          stored at build time are compared with this dataset's: every column group both have (see
          :func:`content_groups`) is compared, e.g. the raw text when both have a ``text`` column, the teacher's
          input ids when both have them (a tokenised-only dataset is compared with a cache built on text this way).
          When they share no group the check is skipped with a warning, as for a cache written before hashes were
          stored (format versions 1 and 2; :meth:`load` warns about those).

        The hashes are computed in one Arrow pass over the hashed columns, which keeps this fast on large datasets.
        ``check_contents=False`` skips that comparison, for a dataset whose examples were already compared (the
        trainers check a raw-text dataset's texts before tokenising drops them).
        """
        if not isinstance(dataset, datasets.Dataset):
            return dataset
        self._check_finite("cached teacher outputs", TEACHER_FAULT_ADVICE)
        rows = self.rows(_check_ids(dataset, what), what)
        if check_contents:
            self.check_contents(dataset, what, rows)
        if self.is_multitask and TASK_COLUMN in dataset.column_names:
            self._check_tasks(rows, dataset[TASK_COLUMN][:], what)
        if CACHE_ROW_COLUMN in dataset.column_names:
            dataset = dataset.remove_columns(CACHE_ROW_COLUMN)
        return dataset.add_column(CACHE_ROW_COLUMN, rows)

    def check_contents(self, dataset: datasets.Dataset, what: str = "dataset", rows: list[int] | None = None) -> None:
        """Raise one ``ValueError`` unless every example of ``dataset`` hashes as the example its cache row (``rows``,
        by default looked up by id) was built from; :meth:`attach` runs it, and so should any other code that maps a
        dataset onto the cache. The rule (which columns are compared, when the check is skipped) is :meth:`attach`'s."""
        if rows is None:
            rows = self.rows(_check_ids(dataset, what), what)
        if not self.content_hashes:
            logger.debug("The teacher-output cache holds no content hashes; the %s's examples are not checked.", what)
            return
        groups = [g for g in content_groups(dataset.column_names) if "+".join(g) in self.content_hashes]
        if not groups:
            logger.warning(
                "The %s has none of the columns the teacher-output cache hashed per example (%s; it has %s): whether "
                "its examples are the ones the cache was built on cannot be checked.",
                what, sorted(self.content_hashes), dataset.column_names,
            )
            return
        differ = set()
        for group in groups:
            cached = self.content_hashes["+".join(group)]
            for j, (row, fresh) in enumerate(zip(rows, example_hashes(dataset, group))):
                stored = cached[row]
                if stored is not None and stored != fresh:
                    differ.add(j)
        if differ:
            listed = _listed([rows[j] for j in sorted(differ)], self.ids)
            compared = " and ".join("+".join(g) for g in groups)
            raise ValueError(
                f"{listed} of the {what} differ from the examples the teacher-output cache holds under the same ids "
                f"(compared: {compared}). The cache was built on other texts that reuse these ids, so its outputs "
                "belong to those texts (or the dataset was tokenised differently: another tokenizer or max_length). "
                "Rebuild it over this dataset (precompute_teacher_outputs(..., rebuild=True), or delete the cache "
                "folder)."
            )

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
        tmp = directory / f"{TENSORS_FILE}.{os.getpid()}.tmp"  # never a half-written file under the real name
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, str(tmp))
        tmp.replace(directory / TENSORS_FILE)
        self._save_meta(directory)

    def _save_meta(self, directory: Path) -> None:
        meta = {"format_version": FORMAT_VERSION, "kind": self.kind, "fingerprint": self.fingerprint,
                "meta": self.meta, "ids": self.ids, "content_hashes": self.content_hashes}
        tmp = directory / f"{META_FILE}.{os.getpid()}.tmp"  # one per process: ranks may write the same cache
        tmp.write_text(json.dumps(meta))
        tmp.replace(directory / META_FILE)  # written last: a directory with this file holds a complete cache

    @classmethod
    def load(cls, directory: str | os.PathLike, *, warn_unverifiable: bool = True) -> TeacherOutputs:
        """The cache saved in ``directory``. Its outputs must be finite (a damaged or tampered file is refused);
        a cache of format version 1 or 2 loads with a warning: it holds no content hashes, so :meth:`attach` cannot
        check that a dataset holds the examples it was built on (``warn_unverifiable=False`` is for the builders,
        which give a reused cache the hashes of the datasets at hand)."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"No teacher-output cache in {directory} (missing {META_FILE}).")
        meta = json.loads(meta_path.read_text())
        version = meta.get("format_version")
        if version not in SUPPORTED_FORMAT_VERSIONS:
            raise ValueError(f"{meta_path} has format version {version}, expected one of {SUPPORTED_FORMAT_VERSIONS}.")
        if warn_unverifiable and not meta.get("content_hashes"):
            logger.warning(
                "The teacher-output cache in %s (format version %s) holds no per-example content hashes: attaching "
                "it cannot check that a dataset holds the texts it was built on (ids reused by other texts would go "
                "unnoticed). Rebuild it (precompute_teacher_outputs(..., rebuild=True)) to have that check.",
                directory, version,
            )
        tensors = load_file(str(directory / TENSORS_FILE))
        return cls(ids=meta["ids"], kind=meta["kind"], tensors=tensors, fingerprint=meta["fingerprint"],
                   meta=meta["meta"], content_hashes=meta.get("content_hashes") or {}, source=str(directory))

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


def _build_or_load(
    cache_dir, fingerprint: str, rebuild: bool, build, hashes: dict[str, list[str | None]]
) -> TeacherOutputs:
    """Reuse the cache in ``cache_dir`` when its fingerprint matches, else ``build()`` one (and save it there).

    A reused cache gets ``hashes``, the content hashes of the datasets given now, when it lacks them or holds others:
    a matching fingerprint means the teacher read the very same tokens under the same ids, so the outputs are those
    of these examples (an older cache gains hashes without running the teacher again; a text edit the tokenizer
    ignores is recorded). Only the JSON is rewritten then.

    Several processes building the same ``cache_dir`` (``torchrun`` ranks) take turns under a file lock beside it:
    the first builds and saves, the others then find it up to date and load it."""
    if cache_dir is None:
        return _build_or_load_unlocked(cache_dir, fingerprint, rebuild, build, hashes)
    with one_writer(cache_dir):
        return _build_or_load_unlocked(cache_dir, fingerprint, rebuild, build, hashes)


def _build_or_load_unlocked(cache_dir, fingerprint: str, rebuild: bool, build, hashes) -> TeacherOutputs:
    if cache_dir is not None and not rebuild and TeacherOutputs.stored_fingerprint(cache_dir) == fingerprint:
        logger.info("Teacher-output cache in %s is up to date; reusing it.", cache_dir)
        cache = TeacherOutputs.load(cache_dir, warn_unverifiable=False)
        if cache.content_hashes != hashes:
            cache.content_hashes = hashes
            cache._save_meta(Path(cache_dir))
            logger.info("Recorded the content hashes of the current examples in the cache in %s.", cache_dir)
        return cache
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
    show_progress: bool = True,
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

    Logits holding NaN or inf are refused with one error naming the examples, before anything is written: a cache
    holding them would ruin every run that reads it. Every example's content is hashed into the cache
    (:func:`content_groups`), for :meth:`TeacherOutputs.attach` to check that a dataset holds the examples the
    cache was built on; a reused cache takes the hashes of the datasets given now (same fingerprint, same tokens).
    ``show_progress=False`` hides the progress bar.
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
                                     device=device, dtype=dtype, show_progress=show_progress)
    teacher_fp = model_fingerprint(teacher)
    fp = _fingerprint(teacher_fp, parts, {"kind": "logits", "dtype": str(dtype)})
    hashes = _dataset_content_hashes(parts)

    def build() -> TeacherOutputs:
        was_training = teacher.training
        teacher.eval()
        dev = torch.device(device) if device is not None else next(teacher.parameters()).device
        chunks: list[Tensor] = []
        total = sum(len(ds) for _, ds in parts)
        with tqdm(total=total, desc="Teacher outputs", unit="ex", disable=not show_progress) as bar:
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
        tensors = {"logits": torch.cat(chunks)}
        _check_finite_outputs(ids_all, "logits", tensors, None, "teacher's logits", BUILD_ADVICE)
        return TeacherOutputs(ids=ids_all, kind="logits", tensors=tensors, fingerprint=fp,
                              meta={"num_labels": int(chunks[0].shape[-1]), "teacher": type(teacher).__name__,
                                    "teacher_fingerprint": teacher_fp}, content_hashes=hashes)

    return _build_or_load(cache_dir, fp, rebuild, build, hashes)


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
    show_progress: bool,
) -> TeacherOutputs:
    """:func:`precompute_teacher_outputs` for a multi-task teacher: single-task batches, per-task widths."""
    names = list(tasks)
    part_tasks = [_dataset_tasks(ds, tasks, name) for name, ds in parts]
    teacher_fp = model_fingerprint(teacher)
    settings = {"kind": "logits", "dtype": str(dtype), "tasks": [[n, c] for n, c in tasks.items()]}
    fp = _fingerprint(teacher_fp, parts, settings)
    hashes = _dataset_content_hashes(parts)
    width = max(tasks.values())

    def build() -> TeacherOutputs:
        was_training = teacher.training
        teacher.eval()
        dev = torch.device(device) if device is not None else next(teacher.parameters()).device
        logit_chunks: list[Tensor] = []
        task_chunks: list[Tensor] = []
        total = sum(len(ds) for _, ds in parts)
        with tqdm(total=total, desc="Teacher outputs", unit="ex", disable=not show_progress) as bar:
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
        tensors = {"logits": torch.cat(logit_chunks), "task_ids": torch.cat(task_chunks)}
        _check_finite_outputs(ids_all, "logits", tensors, tasks, "teacher's logits", BUILD_ADVICE)
        return TeacherOutputs(
            ids=ids_all, kind="logits", tensors=tensors, fingerprint=fp,
            meta={"tasks": dict(tasks), "task_order": names, "teacher": type(teacher).__name__,
                  "teacher_fingerprint": teacher_fp},
            content_hashes=hashes,
        )

    return _build_or_load(cache_dir, fp, rebuild, build, hashes)


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
    show_progress: bool = True,
) -> TeacherOutputs:
    """Run a causal-LM teacher once and keep, for every completion token, the top-``k`` log-probabilities of the
    next-token distribution ``log_softmax(logits / temperature)``, their token ids and the log of the remaining mass
    ``log(1 - sum(top-k probabilities))`` (computed from the full distribution, so nothing of the tail is lost).

    Completion tokens are the positions with ``labels != -100`` (a ``labels`` column, one value per token, ragged
    rows welcome: it is aligned with each row's tokens whatever the padding side; without one, every non-padded
    token). The entry of position ``t`` is the distribution the teacher predicts *for* token ``t`` (from the logits
    at ``t - 1``); a sequence's first token has none. Per example the entries are stored in position order;
    ``offsets[i]:offsets[i + 1]`` are example ``i``'s. Consume them with :func:`distil_trainers.losses.topk_kl_loss`. The fingerprint
    covers the ``labels`` column too; ``meta["vocab_size"]`` records the teacher's logit width.

    Entries holding NaN or ``+inf`` (a teacher whose logits overflowed) are refused with one error naming the
    examples; ``-inf`` is a valid log-probability (a token the teacher rules out; the rest mass when ``k`` covers the
    vocabulary). Examples are hashed as in :func:`precompute_teacher_outputs`; ``show_progress=False`` hides the
    progress bar."""
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
    hashes = _dataset_content_hashes(parts)

    def build() -> TeacherOutputs:
        was_training = teacher.training
        teacher.eval()
        dev = torch.device(device) if device is not None else next(teacher.parameters()).device
        per_example: list[tuple[Tensor, Tensor, Tensor]] = []
        vocab_size = None
        total = sum(len(ds) for _, ds in parts)
        with tqdm(total=total, desc="Teacher top-k log-probs", unit="ex", disable=not show_progress) as bar:
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
        _check_finite_outputs(ids_all, "topk", tensors, None, "teacher's top-k log-probabilities", BUILD_ADVICE)
        return TeacherOutputs(ids=ids_all, kind="topk", tensors=tensors, fingerprint=fp,
                              meta={"k": k, "temperature": temperature, "vocab_size": vocab_size,
                                    "teacher": type(teacher).__name__, "teacher_fingerprint": teacher_fp},
                              content_hashes=hashes)

    return _build_or_load(cache_dir, fp, rebuild, build, hashes)


def topk_entries(logits: Tensor, k: int, temperature: float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``k`` log-probabilities ``(T, k)``, their indices ``(T, k)`` and the log of the remaining mass ``(T,)``
    of ``log_softmax(logits / temperature)`` for logits ``(T, V)``."""
    log_p = F.log_softmax(logits.double() / temperature, dim=-1)
    k = min(k, log_p.shape[-1])
    values, indices = log_p.topk(k, dim=-1)
    rest = log_p.scatter(-1, indices, float("-inf")).logsumexp(-1)
    return values.float(), indices.to(torch.int64), rest.float()


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
    "check_finite_logits",
    "content_groups",
    "example_hashes",
    "dataset_fingerprint",
    "model_fingerprint",
    "precompute_teacher_outputs",
    "precompute_topk_logprobs",
    "teacher_tasks",
    "topk_entries",
]
