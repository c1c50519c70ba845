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

    **Several processes** (``num_replicas`` > 1, ``rank``): the sampler shards itself, so the data loader must not be
    sharded again (``TaskAwareTrainer`` prepares it that way). Every optimizer step has one task on every process:
    each task's shuffled examples are cut into global batches of ``batch_size × num_replicas`` and process ``rank``
    takes its ``batch_size`` slice of each; all processes draw the same order of global batches (same seed and epoch).
    Without ``drop_last`` a task's last global batch is filled by repeating examples from the start of that task's
    shuffled order (:attr:`padded` counts them per task), so every example is served once per epoch and every process
    gets a full batch of the same task; with ``drop_last`` a task's incomplete last global batch is dropped.
    """

    def __init__(
        self,
        task_ids: Sequence[int],
        batch_size: int,
        sampling: str = "proportional",
        temperature: float = 1.0,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}.")
        task_ids = np.asarray(task_ids, dtype=np.int64)
        self.tasks = sorted(int(t) for t in np.unique(task_ids))
        self.indices = {t: np.flatnonzero(task_ids == t) for t in self.tasks}
        self.batch_size = batch_size
        self.sampling = sampling
        self.temperature = temperature
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        global_batch = batch_size * num_replicas
        if drop_last:
            small = [t for t in self.tasks if len(self.indices[t]) < global_batch]
            if small:
                size = f"{batch_size}" if num_replicas == 1 else f"{batch_size} x {num_replicas} processes"
                raise ValueError(f"Tasks {small} have fewer examples than one batch ({size}) with drop_last=True.")
        # examples repeated per epoch to fill each task's last global batch (several processes, no drop_last)
        self.padded = {
            t: 0 if drop_last or num_replicas == 1 else -len(self.indices[t]) % global_batch for t in self.tasks
        }
        self.probabilities = task_probabilities([len(self.indices[t]) for t in self.tasks], sampling, temperature)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _num_batches(self, n: int) -> int:
        """Batches per process (= optimizer steps without accumulation) of a task of ``n`` examples."""
        size = self.batch_size * self.num_replicas
        return n // size if self.drop_last else math.ceil(n / size)

    def __len__(self) -> int:
        return sum(self._num_batches(len(idx)) for idx in self.indices.values())

    def _chunks(self, rng: np.random.Generator, task: int) -> list[list[int]]:
        """This process's batches of one shuffled pass over ``task``: its slice of every global batch."""
        order = rng.permutation(self.indices[task])
        if self.padded[task]:
            order = np.concatenate([order, np.resize(order, self.padded[task])])  # repeat from the start
        size = self.batch_size * self.num_replicas
        chunks = [order[i : i + size] for i in range(0, len(order), size)]
        if self.drop_last and chunks and len(chunks[-1]) < size:
            chunks.pop()
        start = self.rank * self.batch_size
        return [chunk[start : start + self.batch_size].tolist() for chunk in chunks]

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
