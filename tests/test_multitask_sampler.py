"""Tests of the multi-task data helpers: concatenate_tasks, task_probabilities and MultiTaskBatchSampler."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Value

from distil_trainers.data.multitask import MultiTaskBatchSampler, concatenate_tasks, task_probabilities


def make_task_ids(*sizes: int, interleave: bool = False) -> list[int]:
    """Task ids for tasks of the given sizes; interleaved so that indices of a task are not contiguous."""
    ids = [t for t, n in enumerate(sizes) for _ in range(n)]
    if interleave:
        ids = list(np.random.default_rng(123).permutation(ids))
    return ids


def batch_tasks(batches, task_ids) -> list[int]:
    tasks = []
    for batch in batches:
        assert batch, "empty batch"
        ids = {task_ids[i] for i in batch}
        assert len(ids) == 1, f"batch {batch} mixes tasks {ids}"
        tasks.append(ids.pop())
    return tasks


# --- task_probabilities ----------------------------------------------------------------------------------------------


def test_task_probabilities_proportional():
    np.testing.assert_allclose(task_probabilities([30, 10, 60]), [0.3, 0.1, 0.6], rtol=0, atol=1e-12)
    # the temperature is ignored in proportional mode
    np.testing.assert_allclose(task_probabilities([30, 10, 60], "proportional", 5.0), [0.3, 0.1, 0.6], atol=1e-12)


def test_task_probabilities_temperature_by_hand():
    np.testing.assert_allclose(task_probabilities([900, 100], "temperature", 2.0), [0.75, 0.25], atol=1e-12)
    # T = 3: cube roots 4 and 2 -> 2/3, 1/3
    np.testing.assert_allclose(task_probabilities([64, 8], "temperature", 3.0), [2 / 3, 1 / 3], atol=1e-12)
    # T = 1 is proportional
    np.testing.assert_allclose(task_probabilities([900, 100], "temperature", 1.0), [0.9, 0.1], atol=1e-12)
    # T = 0.5 sharpens: squares 4 and 1
    np.testing.assert_allclose(task_probabilities([2, 1], "temperature", 0.5), [0.8, 0.2], atol=1e-12)


def test_task_probabilities_large_temperature_tends_to_uniform():
    p = task_probabilities([1000, 10, 100], "temperature", 1e6)
    np.testing.assert_allclose(p, [1 / 3] * 3, atol=1e-4)
    assert math.isclose(p.sum(), 1.0)


def test_task_probabilities_errors():
    with pytest.raises(ValueError, match="Unknown task sampling 'uniform'"):
        task_probabilities([1, 2], "uniform")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        task_probabilities([1, 2], "temperature", 0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        task_probabilities([1, 2], "temperature", -1.0)


# --- MultiTaskBatchSampler: proportional ----------------------------------------------------------------------------


@pytest.mark.parametrize("sampling", ["proportional", "temperature"])
def test_every_batch_is_single_task(sampling):
    task_ids = make_task_ids(23, 7, 41, interleave=True)
    sampler = MultiTaskBatchSampler(task_ids, batch_size=4, sampling=sampling, temperature=2.0, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        batch_tasks(batches, task_ids)
        assert all(1 <= len(b) <= 4 for b in batches)


def test_proportional_epoch_covers_every_index_once():
    task_ids = make_task_ids(23, 7, 41, interleave=True)
    sampler = MultiTaskBatchSampler(task_ids, batch_size=4, seed=5)
    batches = list(sampler)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(task_ids)))
    # ceil(23/4) + ceil(7/4) + ceil(41/4) = 6 + 2 + 11
    assert len(sampler) == 19
    assert len(batches) == len(sampler)
    # per task: all batches full except at most one
    per_task = Counter(t for t, b in zip(batch_tasks(batches, task_ids), batches) if len(b) < 4)
    assert all(v <= 1 for v in per_task.values())
    assert sum(task_ids[i] == 1 for i in flat) == 7


def test_proportional_task_counts_match_sizes():
    task_ids = make_task_ids(40, 8, 20)
    sampler = MultiTaskBatchSampler(task_ids, batch_size=4)
    assert Counter(batch_tasks(list(sampler), task_ids)) == {0: 10, 1: 2, 2: 5}


def test_proportional_batches_of_tasks_are_mixed():
    # the tasks' batches are shuffled together, not emitted one task after another
    task_ids = make_task_ids(40, 40)
    tasks = batch_tasks(list(MultiTaskBatchSampler(task_ids, batch_size=4, seed=0)), task_ids)
    switches = sum(a != b for a, b in zip(tasks, tasks[1:]))
    assert switches > 2


def test_same_seed_and_epoch_give_same_batches():
    task_ids = make_task_ids(30, 12, interleave=True)
    a = MultiTaskBatchSampler(task_ids, batch_size=4, seed=7)
    b = MultiTaskBatchSampler(task_ids, batch_size=4, seed=7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating twice in the same epoch repeats it


def test_set_epoch_and_seed_change_the_order():
    task_ids = make_task_ids(30, 12, interleave=True)
    sampler = MultiTaskBatchSampler(task_ids, batch_size=4, seed=7)
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch0 != epoch1
    assert sorted(i for b in epoch1 for i in b) == list(range(42))
    sampler.set_epoch(0)
    assert list(sampler) == epoch0
    assert list(MultiTaskBatchSampler(task_ids, batch_size=4, seed=8)) != epoch0


def test_batch_size_one_and_larger_than_tasks():
    task_ids = make_task_ids(3, 2)
    assert len(list(MultiTaskBatchSampler(task_ids, batch_size=1))) == 5
    batches = list(MultiTaskBatchSampler(task_ids, batch_size=10))
    assert sorted(map(sorted, batches)) == [[0, 1, 2], [3, 4]]


def test_invalid_batch_size():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        MultiTaskBatchSampler([0, 1], batch_size=0)


def test_invalid_sampling_mode():
    with pytest.raises(ValueError, match="Unknown task sampling"):
        MultiTaskBatchSampler([0, 1], batch_size=1, sampling="round_robin")


def test_non_contiguous_task_ids():
    # task ids need not be 0..k-1 and indices refer to positions in task_ids
    task_ids = [5, 2, 5, 2, 5, 5]
    batches = list(MultiTaskBatchSampler(task_ids, batch_size=2, seed=0))
    assert Counter(batch_tasks(batches, task_ids)) == {5: 2, 2: 1}
    assert sorted(i for b in batches for i in b) == list(range(6))


# --- drop_last ------------------------------------------------------------------------------------------------------


def test_drop_last_drops_each_tasks_partial_batch():
    task_ids = make_task_ids(10, 7, interleave=True)
    sampler = MultiTaskBatchSampler(task_ids, batch_size=3, drop_last=True, seed=2)
    batches = list(sampler)
    assert len(sampler) == 3 + 2
    assert len(batches) == len(sampler)
    assert all(len(b) == 3 for b in batches)
    assert Counter(batch_tasks(batches, task_ids)) == {0: 3, 1: 2}
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == len(flat) == 15


def test_without_drop_last_the_partial_batches_are_kept():
    task_ids = make_task_ids(10, 7)
    sampler = MultiTaskBatchSampler(task_ids, batch_size=3)
    assert len(sampler) == 4 + 3
    assert sorted(len(b) for b in sampler) == [1, 1, 3, 3, 3, 3, 3]


def test_drop_last_temperature_batches_are_full():
    task_ids = make_task_ids(10, 7)
    sampler = MultiTaskBatchSampler(task_ids, batch_size=3, sampling="temperature", temperature=2.0, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5
    assert all(len(b) == 3 for b in batches)


def test_drop_last_errors_when_a_task_is_smaller_than_a_batch():
    task_ids = make_task_ids(10, 2, 5)
    with pytest.raises(ValueError, match=r"Tasks \[1\] have fewer examples than one batch \(4\)"):
        MultiTaskBatchSampler(task_ids, batch_size=4, drop_last=True)
    # exactly one batch is fine, and without drop_last small tasks are fine
    assert len(MultiTaskBatchSampler(make_task_ids(10, 4), batch_size=4, drop_last=True)) == 3
    assert len(MultiTaskBatchSampler(task_ids, batch_size=4)) == 3 + 1 + 2


# --- temperature sampling -------------------------------------------------------------------------------------------


def task_frequencies(sampler, task_ids, epochs: int) -> np.ndarray:
    counts = Counter()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        counts.update(batch_tasks(list(sampler), task_ids))
    total = sum(counts.values())
    return np.array([counts[t] / total for t in sorted(set(task_ids))])


def test_temperature_frequencies_approach_task_probabilities():
    task_ids = make_task_ids(900, 100)
    sampler = MultiTaskBatchSampler(task_ids, batch_size=10, sampling="temperature", temperature=2.0, seed=0)
    assert len(sampler) == 100
    np.testing.assert_allclose(sampler.probabilities, [0.75, 0.25], atol=1e-12)
    freq = task_frequencies(sampler, task_ids, epochs=60)  # 6000 draws, sd of the frequency ~0.006
    np.testing.assert_allclose(freq, [0.75, 0.25], atol=0.03)
    # clearly not proportional (0.9 / 0.1)
    assert freq[1] > 0.18


def test_temperature_one_is_about_proportional():
    task_ids = make_task_ids(900, 100)
    sampler = MultiTaskBatchSampler(task_ids, batch_size=10, sampling="temperature", temperature=1.0, seed=0)
    np.testing.assert_allclose(sampler.probabilities, [0.9, 0.1], atol=1e-12)
    freq = task_frequencies(sampler, task_ids, epochs=60)
    np.testing.assert_allclose(freq, [0.9, 0.1], atol=0.03)


def test_temperature_epoch_has_the_proportional_number_of_batches_and_recycles_small_tasks():
    task_ids = make_task_ids(900, 100)
    sampler = MultiTaskBatchSampler(task_ids, batch_size=10, sampling="temperature", temperature=2.0, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 100
    small = [b for b, t in zip(batches, batch_tasks(batches, task_ids)) if t == 1]
    # ~25 batches of the 10-batch task: its examples are reused (a new pass), each pass covering every example
    assert len(small) > 10
    first_pass = [i for b in small[:10] for i in b]
    assert sorted(first_pass) == list(range(900, 1000))


def test_temperature_is_deterministic_per_seed_and_epoch():
    task_ids = make_task_ids(50, 20, interleave=True)
    make = lambda seed: MultiTaskBatchSampler(task_ids, 4, sampling="temperature", temperature=3.0, seed=seed)  # noqa: E731
    a, b = make(1), make(1)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    assert list(make(2)) != list(b)


# --- concatenate_tasks ----------------------------------------------------------------------------------------------


def class_label_dataset(texts, labels, names) -> Dataset:
    features = Features({"text": Value("string"), "label": ClassLabel(names=names)})
    return Dataset.from_dict({"text": texts, "label": labels}, features=features)


def test_concatenate_tasks_adds_task_ids_in_the_given_order():
    a = class_label_dataset(["a1", "a2", "a3"], [0, 1, 2], ["x", "y", "z"])
    b = class_label_dataset(["b1", "b2"], [1, 0], ["no", "yes"])
    merged = concatenate_tasks({"a": a, "b": b}, task_names=["b", "a"])
    assert merged["text"] == ["a1", "a2", "a3", "b1", "b2"]
    assert merged["task_ids"] == [1, 1, 1, 0, 0]
    assert merged["label"] == [0, 1, 2, 1, 0]
    assert merged.features["label"] == Value("int64")


def test_concatenate_tasks_default_order_is_the_mappings():
    a = Dataset.from_dict({"text": ["a"], "label": [0]})
    b = Dataset.from_dict({"text": ["b", "c"], "label": [1, 1]})
    merged = concatenate_tasks({"b": b, "a": a})
    assert merged["text"] == ["b", "c", "a"]
    assert merged["task_ids"] == [0, 0, 1]


def test_concatenate_tasks_casts_class_labels_to_int64():
    a = class_label_dataset(["a"], [1], ["x", "y"])
    b = class_label_dataset(["b"], [2], ["p", "q", "r"])
    merged = concatenate_tasks({"a": a, "b": b})
    assert merged.features["label"] == Value("int64")
    assert merged.features["task_ids"].dtype == "int64"
    assert merged["label"] == [1, 2]
    # a "labels" column is cast as well
    c = class_label_dataset(["c"], [0], ["x", "y"]).rename_column("label", "labels")
    d = class_label_dataset(["d"], [1], ["u", "v", "w"]).rename_column("label", "labels")
    merged = concatenate_tasks({"c": c, "d": d})
    assert merged.features["labels"] == Value("int64")
    assert merged["labels"] == [0, 1]


def test_concatenate_tasks_errors_on_a_task_not_in_task_names():
    a = Dataset.from_dict({"text": ["a"], "label": [0]})
    b = Dataset.from_dict({"text": ["b"], "label": [0]})
    with pytest.raises(ValueError, match=r"\['b'\].*not in task_names \['a', 'c'\]"):
        concatenate_tasks({"a": a, "b": b}, task_names=["a", "c"])


def test_concatenate_tasks_keeps_only_common_columns():
    a = Dataset.from_dict({"text": ["a"], "label": [0], "id": ["a-0"]})
    b = Dataset.from_dict({"text": ["b"], "label": [1], "source": ["web"]})
    merged = concatenate_tasks({"a": a, "b": b})
    assert set(merged.column_names) == {"text", "label", "task_ids"}


def test_concatenate_then_sample():
    a = class_label_dataset([f"a{i}" for i in range(9)], [i % 3 for i in range(9)], ["x", "y", "z"])
    b = class_label_dataset([f"b{i}" for i in range(5)], [i % 2 for i in range(5)], ["no", "yes"])
    merged = concatenate_tasks({"a": a, "b": b})
    sampler = MultiTaskBatchSampler(merged["task_ids"], batch_size=2, seed=0)
    for batch in sampler:
        texts = merged.select(batch)["text"]
        assert len({t[0] for t in texts}) == 1


# ---- several processes: the sampler shards itself -----------------------------------------------------------------


def shards(task_ids, processes, **kwargs):
    return [list(MultiTaskBatchSampler(task_ids, num_replicas=processes, rank=r, **kwargs)) for r in range(processes)]


@pytest.mark.parametrize("sampling", ["proportional", "temperature"])
def test_every_step_has_one_task_on_every_process_and_full_batches(sampling):
    task_ids = make_task_ids(70, 45)  # the sizes that lost examples and mixed tasks under accelerate's own sharding
    per_rank = shards(task_ids, 2, batch_size=32, sampling=sampling, temperature=2.0, seed=3)
    assert len(per_rank[0]) == len(per_rank[1]) == len(MultiTaskBatchSampler(task_ids, 32, num_replicas=2, rank=0))
    for step in zip(*per_rank):
        tasks = {task_ids[i] for batch in step for i in batch}
        assert len(tasks) == 1, tasks  # one task per optimizer step, the same on both processes
        assert [len(batch) for batch in step] == [32, 32]


def test_one_epoch_serves_every_example_and_pads_by_repetition_within_the_task():
    task_ids = make_task_ids(70, 45)
    sampler = MultiTaskBatchSampler(task_ids, batch_size=32, num_replicas=2, rank=0, seed=3)
    served = Counter(i for rank in shards(task_ids, 2, batch_size=32, seed=3) for batch in rank for i in batch)
    assert set(served) == set(range(115))  # every example at least once
    # 70 -> 2 global batches of 64 (58 repeats), 45 -> 1 (19 repeats): the repeats are counted, per task
    assert sampler.padded == {0: 58, 1: 19}
    assert sum(served.values()) == 115 + 58 + 19
    for task, n_repeats in sampler.padded.items():
        extra = sum(c - 1 for i, c in served.items() if task_ids[i] == task)
        assert extra == n_repeats


def test_drop_last_across_processes_drops_incomplete_global_batches():
    task_ids = make_task_ids(70, 45)
    per_rank = shards(task_ids, 2, batch_size=16, drop_last=True, seed=0)
    served = [i for rank in per_rank for batch in rank for i in batch]
    assert len(served) == len(set(served)) == 64 + 32  # 70 -> 2 x 32, 45 -> 1 x 32, nothing repeated
    with pytest.raises(ValueError, match=r"fewer examples than one batch \(32 x 2 processes\)"):
        MultiTaskBatchSampler(make_task_ids(70, 45), batch_size=32, drop_last=True, num_replicas=2, rank=1)


def test_one_process_is_unchanged_by_the_sharding_arguments():
    task_ids = make_task_ids(10, 7, 3)
    assert list(MultiTaskBatchSampler(task_ids, 4, seed=2)) == list(MultiTaskBatchSampler(task_ids, 4, seed=2,
                                                                                           num_replicas=1, rank=0))
    with pytest.raises(ValueError, match="rank must be in"):
        MultiTaskBatchSampler(task_ids, 4, num_replicas=2, rank=2)
