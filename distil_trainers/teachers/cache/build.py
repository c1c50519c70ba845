"""Building a teacher-output cache: run the teacher once over one dataset or several, reuse the cache while its
fingerprint matches, one writer at a time."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from ...data.multitask import TASK_COLUMN
from ...data.processing import MultiTokenizerCollator
from ..locks import one_writer
from .checks import BUILD_ADVICE, _check_finite_outputs
from .fingerprints import (
    ID_COLUMN,
    _check_ids,
    _dataset_content_hashes,
    _teacher_columns,
    dataset_fingerprint,
    model_fingerprint,
    teacher_tasks,
)
from .outputs import TeacherOutputs

logger = logging.getLogger(__name__)


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
