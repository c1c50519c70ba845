"""Mixing several tasks into one training stream.

Each task keeps its own dataset; :func:`concatenate_tasks` stacks them with a ``task_ids`` column and
:class:`MultiTaskBatchSampler` yields batches that each hold a single task, choosing the task of every batch either in
proportion to the tasks' sizes or by temperature sampling (p_t ∝ n_t^(1/T), T = 1 is proportional, large T tends to
uniform), as in multi-task BERT training (Clark et al. 2019; Liu et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from datasets import Dataset, Value, concatenate_datasets
from torch.utils.data import Sampler

TASK_COLUMN = "task_ids"
SAMPLING_MODES = ("proportional", "temperature")


def concatenate_tasks(datasets: Mapping[str, Dataset], task_names: Sequence[str] | None = None) -> Dataset:
    """Stack per-task datasets into one, adding a ``task_ids`` column (the index of the task in ``task_names``,
    default: the mapping's order, which must match ``MultiTaskConfig.tasks``). Label columns are cast to plain int64
    because the tasks' ``ClassLabel`` features differ."""
    task_names = list(task_names) if task_names is not None else list(datasets)
    missing = [name for name in datasets if name not in task_names]
    if missing:
        raise ValueError(f"Datasets given for tasks {missing} that are not in task_names {task_names}.")
    parts = []
    for name, ds in datasets.items():
        task_id = task_names.index(name)
        for column in ("label", "labels"):
            if column in ds.column_names:
                ds = ds.cast_column(column, Value("int64"))
        parts.append(ds.add_column(TASK_COLUMN, [task_id] * len(ds)))
    columns = [set(p.column_names) for p in parts]
    if any(c != columns[0] for c in columns):
        common = set.intersection(*columns)
        parts = [p.select_columns([c for c in p.column_names if c in common]) for p in parts]
    return concatenate_datasets(parts)


def task_probabilities(sizes: Sequence[int], sampling: str = "proportional", temperature: float = 1.0) -> np.ndarray:
    """Probability of drawing each task: n_t / Σn (proportional) or n_t^(1/T) / Σ n^(1/T) (temperature)."""
    if sampling not in SAMPLING_MODES:
        raise ValueError(f"Unknown task sampling {sampling!r}; choose one of {SAMPLING_MODES}.")
    if temperature <= 0:
        raise ValueError(f"Sampling temperature must be > 0, got {temperature}.")
    sizes = np.asarray(sizes, dtype=np.float64)
    weights = sizes if sampling == "proportional" else sizes ** (1.0 / temperature)
    return weights / weights.sum()


class MultiTaskBatchSampler(Sampler[list[int]]):
    """Batches of a single task each, reshuffled every epoch (seeded, so a resumed run sees the same batches).

    With ``sampling="proportional"`` one epoch is every example once, the batches of all tasks shuffled together (each
    task then appears in proportion to its size). With ``sampling="temperature"`` an epoch has the same number of
    batches, but the task of each batch is drawn from ``task_probabilities(..., "temperature", T)``; a task whose
    examples run out starts a new shuffled pass over them.
    """

    def __init__(
        self,
        task_ids: Sequence[int],
        batch_size: int,
        sampling: str = "proportional",
        temperature: float = 1.0,
        seed: int = 0,
        drop_last: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        task_ids = np.asarray(task_ids, dtype=np.int64)
        self.tasks = sorted(int(t) for t in np.unique(task_ids))
        self.indices = {t: np.flatnonzero(task_ids == t) for t in self.tasks}
        self.batch_size = batch_size
        self.sampling = sampling
        self.temperature = temperature
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        if drop_last:
            small = [t for t in self.tasks if len(self.indices[t]) < batch_size]
            if small:
                raise ValueError(f"Tasks {small} have fewer examples than one batch ({batch_size}) with drop_last=True.")
        self.probabilities = task_probabilities([len(self.indices[t]) for t in self.tasks], sampling, temperature)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_batches(self, n: int) -> int:
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __len__(self) -> int:
        return sum(self._num_batches(len(idx)) for idx in self.indices.values())

    def _chunks(self, rng: np.random.Generator, task: int) -> list[list[int]]:
        order = rng.permutation(self.indices[task])
        chunks = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.drop_last and chunks and len(chunks[-1]) < self.batch_size:
            chunks.pop()
        return chunks

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.sampling == "proportional":
            batches = [b for t in self.tasks for b in self._chunks(rng, t)]
            for i in rng.permutation(len(batches)):
                yield batches[i]
            return
        queues = {t: [] for t in self.tasks}
        for _ in range(len(self)):
            task = self.tasks[int(rng.choice(len(self.tasks), p=self.probabilities))]
            if not queues[task]:
                queues[task] = self._chunks(rng, task)
            yield queues[task].pop()
