"""What ties a teacher-output cache to its teacher and to its examples: fingerprints (of the teacher's weights and of
the dataset columns it reads), example ids, and a short hash of every example's content."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch import nn

from ...data.multitask import TASK_COLUMN
from ...data.processing import TEACHER_PREFIX, TOKENIZER_COLUMNS

ID_COLUMN = "id"
# The raw text columns hashed per example when a dataset has them (`text_pair` only next to `text`).
CONTENT_TEXT_COLUMNS = ("text", "text_pair")
CONTENT_HASH_CHARS = 16  # hex characters of sha256 kept per example and column group: 64 bits


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

