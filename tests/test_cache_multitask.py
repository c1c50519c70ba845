"""Teacher-output cache of multi-task teachers (a MultiTaskModel, a TaskRoutedTeacher of single-task teachers): the
cached multi-task runs give the live teacher's losses and weights, each example keeps the logits of its task's head
(heads of different widths), mismatched heads, missing ids and mixed-task rows are clear errors, and single-task caches
keep their layout."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import random_classification_dataset, small_run_args, tiny_bert_config, tiny_classifier, train_logs
from safetensors import safe_open
from safetensors.torch import save_file

from distil_trainers import AnnealingArguments, AnnealingTrainer, MultiTaskConfig, MultiTaskModel
from distil_trainers.data.multitask import TASK_COLUMN, concatenate_tasks
from distil_trainers.models.discriminator import LANGUAGE_COLUMN
from distil_trainers.models.routed import TaskRoutedTeacher
from distil_trainers.teachers.cache import (
    CACHE_ROW_COLUMN,
    FORMAT_VERSION,
    META_FILE,
    TENSORS_FILE,
    TeacherOutputs,
    precompute_teacher_outputs,
)
from distil_trainers.trainers.adversarial import AdversarialArguments, AdversarialTrainer

TASKS = {"sentiment": 2, "hate": 3}


def tiny_multitask(seed: int, layers: int = 2, tasks: dict[str, int] | None = None) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config(layers=layers).to_dict(), tasks=tasks or TASKS))


def routed_teacher() -> TaskRoutedTeacher:
    return TaskRoutedTeacher({"sentiment": tiny_classifier(5, num_labels=2), "hate": tiny_classifier(6, layers=3)})


def task_data(n_sentiment: int, n_hate: int, seed: int, prefix: str):
    """Both tasks in one dataset (a `task_ids` column) with unique ids, and each task alone (for evaluation)."""
    sentiment = random_classification_dataset(n=n_sentiment, num_labels=2, seed=seed)
    hate = random_classification_dataset(n=n_hate, num_labels=3, seed=seed + 1)
    mixed = concatenate_tasks({"sentiment": sentiment, "hate": hate})
    mixed = mixed.add_column("id", [f"{prefix}{i}" for i in range(len(mixed))])
    per_task = {
        "sentiment": mixed.filter(lambda r: r[TASK_COLUMN] == 0),
        "hate": mixed.filter(lambda r: r[TASK_COLUMN] == 1),
    }
    return mixed, per_task


def make_args(tmp_path, cls=AnnealingArguments, **overrides):
    defaults = dict(num_train_epochs=2, temperature=2.0, eval_strategy="steps", eval_steps=2,
                    gradient_accumulation_steps=2)
    return small_run_args(cls, tmp_path, **{**defaults, **overrides})


def losses_of(trainer) -> list[float]:
    return [h["loss"] for h in train_logs(trainer)]


def assert_same_run(live, cached, live_eval, cached_eval):
    assert cached.teacher is None
    assert len(losses_of(live)) >= 2
    assert losses_of(cached) == pytest.approx(losses_of(live), abs=1e-6, rel=0)
    loss_keys = [k for k in live_eval if k.endswith("_loss")]
    assert sorted(loss_keys) == ["eval_hate_loss", "eval_sentiment_loss"]
    for key in loss_keys:
        assert cached_eval[key] == pytest.approx(live_eval[key], abs=1e-6, rel=0), key
    for (name, p_live), p_cached in zip(live.model.named_parameters(), cached.model.parameters()):
        torch.testing.assert_close(p_cached, p_live, atol=1e-6, rtol=0, msg=name)


# ---- cached == live ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("annealing", ["bam", "kd"])
def test_multitask_annealing_cached_equals_live(tmp_path, annealing):
    train, _ = task_data(12, 16, seed=1, prefix="tr")
    _, evals = task_data(4, 6, seed=3, prefix="ev")
    teacher = tiny_multitask(0)

    live = AnnealingTrainer(model=tiny_multitask(1, layers=1), teacher_model=teacher,
                            args=make_args(tmp_path, annealing=annealing), train_dataset=train, eval_dataset=evals)
    seen = []
    original = live.compute_loss

    def spy(model, inputs, *a, **k):
        seen.append(torch.unique(inputs[TASK_COLUMN]).tolist())
        return original(model, inputs, *a, **k)

    live.compute_loss = spy
    live.train()
    assert all(len(t) == 1 for t in seen) and {t[0] for t in seen} == {0, 1}  # single-task batches, both tasks
    live_eval = live.evaluate()

    # The cache is built over a shuffled copy: rows are matched by id, not by position.
    cache = precompute_teacher_outputs(teacher, {"train": train.shuffle(seed=3), **evals}, batch_size=5)
    assert cache.tasks == TASKS and cache.is_multitask
    cached = AnnealingTrainer(model=tiny_multitask(1, layers=1), teacher_outputs=cache,
                              args=make_args(tmp_path, annealing=annealing), train_dataset=train, eval_dataset=evals)
    cached.train()
    assert_same_run(live, cached, live_eval, cached.evaluate())


def test_routed_teacher_cache_equals_live(tmp_path):
    train, _ = task_data(12, 12, seed=5, prefix="tr")
    _, evals = task_data(4, 4, seed=7, prefix="ev")
    teacher = routed_teacher()
    args = dict(annealing="bam", num_train_epochs=1)

    live = AnnealingTrainer(model=tiny_multitask(1, layers=1), teacher_model=teacher, args=make_args(tmp_path, **args),
                            train_dataset=train, eval_dataset=evals)
    live.train()
    live_eval = live.evaluate()

    cache = precompute_teacher_outputs(teacher, {"train": train.shuffle(seed=1), **evals}, tmp_path / "cache")
    assert cache.meta["teacher"] == "TaskRoutedTeacher" and cache.tasks == TASKS
    # the hate teacher's logits, through the cache, for every hate example
    hate = train.filter(lambda r: r[TASK_COLUMN] == 1)
    with torch.no_grad():
        expected = teacher.teachers["hate"](input_ids=torch.tensor(hate["input_ids"][:])).logits
    torch.testing.assert_close(cache.logits_at(torch.tensor(cache.rows(hate["id"][:])), 1), expected, atol=1e-6,
                               rtol=0)

    cached = AnnealingTrainer(model=tiny_multitask(1, layers=1), teacher_outputs=str(tmp_path / "cache"),
                              args=make_args(tmp_path, **args), train_dataset=train, eval_dataset=evals)
    cached.train()
    assert_same_run(live, cached, live_eval, cached.evaluate())


def test_adversarial_multitask_cached_equals_live(tmp_path):
    train, _ = task_data(8, 8, seed=9, prefix="tr")
    train = train.add_column(LANGUAGE_COLUMN, [i % 2 for i in range(len(train))])
    _, evals = task_data(4, 4, seed=11, prefix="ev")
    teacher = tiny_multitask(0)
    args = dict(annealing="bam", num_train_epochs=1, adversarial_weight=0.1)

    live = AdversarialTrainer(model=tiny_multitask(1, layers=1), teacher_model=teacher,
                              args=make_args(tmp_path, AdversarialArguments, **args), train_dataset=train,
                              eval_dataset=evals)
    live.train()
    cache = precompute_teacher_outputs(teacher, {"train": train, **evals})
    cached = AdversarialTrainer(model=tiny_multitask(1, layers=1), teacher_outputs=cache,
                                args=make_args(tmp_path, AdversarialArguments, **args), train_dataset=train,
                                eval_dataset=evals)
    cached.train()
    assert all("loss_ta" in h and "loss_adversarial" in h for h in train_logs(cached))
    assert_same_run(live, cached, live.evaluate(), cached.evaluate())


# ---- what is stored ------------------------------------------------------------------------------------------------


def test_multitask_cache_on_disk_reuse_and_rebuild(tmp_path):
    data, _ = task_data(5, 6, seed=13, prefix="x")
    teacher = tiny_multitask(0).eval()  # no dropout in the reference forward below
    directory = tmp_path / "cache"
    built = precompute_teacher_outputs(teacher, data, directory, batch_size=4)

    assert sorted(p.name for p in directory.iterdir()) == sorted([TENSORS_FILE, META_FILE])
    # no pickle: a plain safetensors file (u64 header length, JSON header, raw bytes) and a JSON file
    raw = (directory / TENSORS_FILE).read_bytes()
    header_length = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_length])
    assert len(raw) == 8 + header_length + max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    meta = json.loads((directory / META_FILE).read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["kind"] == "logits" and meta["ids"] == data["id"][:]
    assert meta["meta"]["tasks"] == TASKS and meta["meta"]["task_order"] == ["sentiment", "hate"]
    with safe_open(str(directory / TENSORS_FILE), framework="pt") as f:
        assert sorted(f.keys()) == ["logits", "task_ids"]
        logits, task_ids = f.get_tensor("logits"), f.get_tensor("task_ids")
    assert logits.shape == (11, 3) and task_ids.tolist() == data[TASK_COLUMN][:]
    assert torch.isnan(logits[:5, 2]).all() and torch.isfinite(logits[:5, :2]).all()  # sentiment rows: 2 columns
    assert torch.isfinite(logits[5:]).all()

    # every row holds the logits of its own task's head
    for task, name in enumerate(TASKS):
        members = [i for i, t in enumerate(data[TASK_COLUMN][:]) if t == task]
        with torch.no_grad():
            expected = teacher(input_ids=torch.tensor(data.select(members)["input_ids"][:]), task_ids=name).logits
        torch.testing.assert_close(built.logits_at(torch.tensor(members), task), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(built.logits_at(torch.tensor(members), name), expected, atol=1e-6, rtol=0)

    loaded = TeacherOutputs.load(directory)
    assert loaded.tasks == TASKS and loaded.fingerprint == built.fingerprint
    torch.testing.assert_close(loaded.tensors["logits"], built.tensors["logits"], equal_nan=True)

    stamp = (directory / TENSORS_FILE).stat().st_mtime_ns
    again = precompute_teacher_outputs(teacher, data.shuffle(seed=2), directory)
    assert again.fingerprint == built.fingerprint
    assert (directory / TENSORS_FILE).stat().st_mtime_ns == stamp  # reused, not rebuilt

    # the task column is fingerprinted: another task for an example rebuilds the cache
    tasks = data[TASK_COLUMN][:]
    tasks[0] = 1
    relabelled = data.remove_columns(TASK_COLUMN).add_column(TASK_COLUMN, tasks)
    rebuilt = precompute_teacher_outputs(teacher, relabelled, directory)
    assert rebuilt.fingerprint != built.fingerprint
    assert rebuilt.tensors["task_ids"][0] == 1 and torch.isfinite(rebuilt.tensors["logits"][0]).all()

    # a one-task multi-task teacher needs no task column
    single = tiny_multitask(0, tasks={"hate": 3})
    only_hate = random_classification_dataset(n=4).add_column("id", [f"h{i}" for i in range(4)])
    cache = precompute_teacher_outputs(single, only_hate)
    assert cache.tasks == {"hate": 3} and cache.tensors["task_ids"].tolist() == [0] * 4 and cache.num_labels == 3


def test_routed_teacher_fingerprint_covers_every_teacher(tmp_path):
    data, _ = task_data(3, 3, seed=15, prefix="x")
    teacher = routed_teacher()
    first = precompute_teacher_outputs(teacher, data, tmp_path / "cache")
    with torch.no_grad():
        teacher.teachers["hate"].classifier.bias += 1.0
    changed = precompute_teacher_outputs(teacher, data, tmp_path / "cache")
    assert changed.fingerprint != first.fingerprint
    torch.testing.assert_close(changed.tensors["logits"][3:], first.tensors["logits"][3:] + 1.0, atol=1e-5, rtol=0)
    torch.testing.assert_close(changed.tensors["logits"][:3], first.tensors["logits"][:3], equal_nan=True)


# ---- errors --------------------------------------------------------------------------------------------------------


def test_head_width_and_task_mismatches_are_errors_before_training(tmp_path):
    data, _ = task_data(4, 4, seed=17, prefix="x")
    cache = precompute_teacher_outputs(tiny_multitask(0), data)
    args = make_args(tmp_path, eval_strategy="no")

    def trainer(student):
        return AnnealingTrainer(model=student, teacher_outputs=cache, args=args, train_dataset=data)

    with pytest.raises(ValueError, match=r"Task 'hate': the cached teacher logits have 3 classes but the students' "
                                         r"'hate' head predicts 4"):
        trainer(tiny_multitask(1, tasks={"sentiment": 2, "hate": 4}))
    with pytest.raises(ValueError, match="task 'irony' but the teacher-output cache holds no logits for it"):
        trainer(tiny_multitask(1, tasks={"sentiment": 2, "irony": 3}))
    with pytest.raises(ValueError, match=r"holds tasks \['hate'\] that the students do not have"):
        trainer(tiny_multitask(1, tasks={"sentiment": 2}))
    with pytest.raises(ValueError, match="task order"):
        trainer(tiny_multitask(1, tasks={"hate": 3, "sentiment": 2}))
    with pytest.raises(ValueError, match="students are single-task classifiers"):
        AnnealingTrainer(model=tiny_classifier(1), teacher_outputs=cache, args=args)
    single_task = precompute_teacher_outputs(tiny_classifier(0), data.remove_columns(TASK_COLUMN))
    with pytest.raises(ValueError, match="single-task teacher's logits but the students are multi-task"):
        AnnealingTrainer(model=tiny_multitask(1), teacher_outputs=single_task, args=args)


def test_missing_ids_and_tasks_that_changed_are_errors_before_training(tmp_path):
    data, _ = task_data(4, 4, seed=19, prefix="x")
    cache = precompute_teacher_outputs(tiny_multitask(0), data)
    args = make_args(tmp_path, eval_strategy="no")
    _, others = task_data(2, 2, seed=21, prefix="other")
    with pytest.raises(ValueError, match="no entry for 2 example"):
        AnnealingTrainer(model=tiny_multitask(1), teacher_outputs=cache, args=args, train_dataset=data,
                         eval_dataset=others)
    tasks = data[TASK_COLUMN][:]
    tasks[0], tasks[-1] = 1, 0
    swapped = data.remove_columns(TASK_COLUMN).add_column(TASK_COLUMN, tasks)
    with pytest.raises(ValueError, match=r"2 example\(s\) of the train dataset have another task .* 'x0' is of "
                                         r"'hate'"):
        AnnealingTrainer(model=tiny_multitask(1), teacher_outputs=cache, args=args, train_dataset=swapped)
    with pytest.raises(ValueError, match="no `task_ids` column but the teacher has several tasks"):
        precompute_teacher_outputs(tiny_multitask(0), data.remove_columns(TASK_COLUMN))
    bad = data.remove_columns(TASK_COLUMN).add_column(TASK_COLUMN, [0] * 7 + [2])
    with pytest.raises(ValueError, match=r"task ids \[2\] out of range"):
        precompute_teacher_outputs(tiny_multitask(0), bad)


def test_mixed_task_rows_are_errors(tmp_path):
    data, _ = task_data(3, 3, seed=23, prefix="x")
    cache = precompute_teacher_outputs(tiny_multitask(0), data)
    sentiment_rows, hate_rows = torch.tensor(cache.rows(["x0", "x1"])), torch.tensor(cache.rows(["x3", "x4"]))
    mixed = torch.cat([sentiment_rows, hate_rows])
    with pytest.raises(ValueError, match=r"must hold one task .* got task ids \[0, 1\]"):
        cache.logits_at(mixed)  # the rows' own tasks differ
    with pytest.raises(ValueError, match=r"must hold one task .* got task ids \[0, 1\]"):
        cache.logits_at(mixed, torch.tensor([0, 0, 1, 1]))  # the batch mixes tasks
    with pytest.raises(ValueError, match=r"task 'sentiment' but .* \['x3', 'x4'\] under task\(s\) \['hate'\]"):
        cache.logits_at(mixed, torch.zeros(4, dtype=torch.long))  # rows cached under another task
    assert cache.logits_at(hate_rows).shape == (2, 3) and cache.logits_at(sentiment_rows).shape == (2, 2)
    with pytest.raises(ValueError, match="multi-task teacher's logits"):
        _ = cache.num_labels


def test_trainer_reads_the_batch_tasks_head_and_refuses_rows_of_another_task(tmp_path):
    data, _ = task_data(3, 3, seed=25, prefix="x")
    cache = precompute_teacher_outputs(tiny_multitask(0), data)
    trainer = AnnealingTrainer(model=tiny_multitask(1), teacher_outputs=cache,
                               args=make_args(tmp_path, eval_strategy="no"), train_dataset=data)
    rows = torch.tensor(trainer.train_dataset[CACHE_ROW_COLUMN][:])
    hate = trainer.cached_teacher_logits({"cache_row": rows[3:], TASK_COLUMN: torch.ones(3, dtype=torch.long)})
    torch.testing.assert_close(hate, cache.tensors["logits"][3:])
    with pytest.raises(ValueError, match="batch is of task 'hate'"):
        trainer.cached_teacher_logits({"cache_row": rows[:3], TASK_COLUMN: torch.ones(3, dtype=torch.long)})


# ---- single-task caches keep their layout ---------------------------------------------------------------------------


def test_single_task_caches_keep_their_layout_and_format_version_1_still_loads(tmp_path):
    ds = random_classification_dataset(n=8).add_column("id", [f"s{i}" for i in range(8)])
    teacher = tiny_classifier(0)
    built = precompute_teacher_outputs(teacher, ds, tmp_path / "new")
    meta = json.loads((tmp_path / "new" / META_FILE).read_text())
    assert meta["format_version"] == FORMAT_VERSION and meta["meta"]["num_labels"] == 3 and "tasks" not in meta["meta"]
    with safe_open(str(tmp_path / "new" / TENSORS_FILE), framework="pt") as f:
        assert list(f.keys()) == ["logits"]
    assert not built.is_multitask and built.tasks is None and built.num_labels == 3

    # a cache directory as written before multi-task caches existed (format version 1, logits only)
    old = tmp_path / "old"
    old.mkdir()
    save_file({"logits": built.tensors["logits"].contiguous()}, str(old / TENSORS_FILE))
    (old / META_FILE).write_text(json.dumps({
        "format_version": 1, "kind": "logits", "fingerprint": built.fingerprint,
        "meta": {"num_labels": 3, "teacher": "BertForSequenceClassification",
                 "teacher_fingerprint": built.meta["teacher_fingerprint"], "build_seconds": 0.1},
        "ids": ds["id"][:],
    }))
    loaded = TeacherOutputs.load(old)
    assert loaded.num_labels == 3 and not loaded.is_multitask
    rows = torch.tensor(loaded.rows(ds["id"][:]))
    torch.testing.assert_close(loaded.logits_at(rows), built.tensors["logits"])
    torch.testing.assert_close(loaded.logits_at(rows, torch.zeros(8)), built.tensors["logits"])  # task ignored
    # reused as is by precompute (same fingerprint) and accepted by a trainer next to the live teacher
    stamp = (old / TENSORS_FILE).stat().st_mtime_ns
    precompute_teacher_outputs(teacher, ds, old)
    assert (old / TENSORS_FILE).stat().st_mtime_ns == stamp
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=teacher, teacher_outputs=str(old),
                               args=make_args(tmp_path, eval_strategy="no", num_train_epochs=1), train_dataset=ds)
    trainer.train()
    assert len(losses_of(trainer)) == 1


def test_mutual_learning_of_multitask_students_cached_equals_live(tmp_path):
    from transformers import default_data_collator

    from distil_trainers import MutualLearningArguments, MutualLearningTrainer

    train, _ = task_data(8, 8, seed=27, prefix="tr")
    for prefix in ("a_", "b_", "teacher_"):
        for column in ("input_ids", "attention_mask"):
            train = train.add_column(prefix + column, train[column][:])
    train = train.remove_columns(["input_ids", "attention_mask"])
    teacher = tiny_multitask(0)

    def run(**teacher_kwargs):
        args = small_run_args(MutualLearningArguments, tmp_path, temperature=2.0)
        trainer = MutualLearningTrainer(
            students={"a": tiny_multitask(1, layers=1), "b": tiny_multitask(2, layers=1)}, args=args,
            train_dataset=train, data_collator=default_data_collator, **teacher_kwargs,
        )
        trainer.train()
        return trainer

    live = run(teacher_model=teacher)
    cached = run(teacher_outputs=precompute_teacher_outputs(teacher, train.shuffle(seed=2)))
    assert cached.teacher is None and len(losses_of(live)) == 4
    assert losses_of(cached) == pytest.approx(losses_of(live), abs=1e-6, rel=0)
