"""The teacher-output container: tensors keyed by example id, saved as safetensors + JSON, attached to a dataset
after checking that it holds the examples the cache was built on."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ...data.multitask import TASK_COLUMN
from ...data.processing import TEACHER_PREFIX
from .checks import LOADED_ADVICE, TEACHER_FAULT_ADVICE, _check_finite_outputs, _listed
from .fingerprints import _check_ids, content_groups, example_hashes

logger = logging.getLogger(__name__)

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
