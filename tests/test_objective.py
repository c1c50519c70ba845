"""The loss accounting: every term a (sum, count), each normalised once by the count of its own kind of item over the
optimizer step; class weights on the label terms; the teacher check deferred to the optimizer step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import random_classification_dataset, small_run_args, tiny_classifier
from datasets import Dataset
from sklearn.utils.class_weight import compute_class_weight

from distil_trainers import (
    AnnealingArguments,
    AnnealingTrainer,
    MutualLearningArguments,
    MutualLearningTrainer,
    losses,
)
from distil_trainers.trainers.objective import LABELLED, ROWS, Objective

# ---- the pure losses in sum form ------------------------------------------------------------------------------------


def test_sum_form_is_the_sum_and_the_count_of_the_valid_items():
    g = torch.Generator().manual_seed(0)
    logits, teacher = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    labels = torch.tensor([0, 2, -100, 1, 1])
    ce = losses.cross_entropy_loss(logits, labels, reduction="sum")
    per_item = F.cross_entropy(logits, labels, ignore_index=-100, reduction="none")
    torch.testing.assert_close(ce.total, per_item.sum())
    assert ce.count.item() == 4
    mask = labels != -100
    kd = losses.kd_kl_loss(logits, teacher, temperature=2.0, mask=mask, reduction="sum")
    torch.testing.assert_close(kd.total / kd.count, losses.kd_kl_loss(logits, teacher, temperature=2.0, mask=mask))
    with pytest.raises(ValueError, match="reduction must be one of"):
        losses.cross_entropy_loss(logits, labels, reduction="none")


def test_class_weighted_cross_entropy_is_torchs_weighted_mean():
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(7, 3, generator=g), torch.tensor([0, 0, 0, 1, 2, -100, 1])
    weights = torch.tensor([0.5, 2.0, 3.0])
    ours = losses.cross_entropy_loss(logits, labels, class_weights=weights)
    torch.testing.assert_close(ours, F.cross_entropy(logits, labels, weight=weights, ignore_index=-100))
    summed = losses.cross_entropy_loss(logits, labels, class_weights=weights, reduction="sum")
    assert summed.count.item() == pytest.approx(3 * 0.5 + 2 * 2.0 + 3.0)


def test_class_weighted_annealing_loss_weighs_each_item_by_its_gold_class():
    g = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    labels, weights, lam = torch.tensor([0, 1, 1, 0]), torch.tensor([1.0, 4.0]), 0.3
    target = lam * F.one_hot(labels, 2).float() + (1 - lam) * teacher.softmax(-1)
    per_item = -(target * student.log_softmax(-1)).sum(-1)
    w = weights[labels]
    expected = (w * per_item).sum() / w.sum()
    ours = losses.teacher_annealing_loss(student, teacher, labels, lam, class_weights=weights)
    torch.testing.assert_close(ours, expected)


# ---- the trainer: one normalisation per term over the accumulated batch ---------------------------------------------


def _kd_trainer(tmp_path, **overrides):
    args = small_run_args(AnnealingArguments, tmp_path, annealing="kd", alpha=0.7, beta=0.3, temperature=2.0,
                          **overrides)
    data = random_classification_dataset(n=12, seed=3)
    return AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=args, train_dataset=data)


def _micro_batches(trainer, labels_per_batch):
    data = trainer.train_dataset
    out, start = [], 0
    for labels in labels_per_batch:
        rows = data.select(range(start, start + len(labels)))
        start += len(labels)
        out.append({"input_ids": torch.tensor(rows["input_ids"]), "attention_mask": torch.tensor(rows["attention_mask"]),
                    "labels": torch.tensor(labels)})
    return out


def test_accumulated_micro_batches_give_the_balanced_weighted_loss_of_the_whole_step(tmp_path):
    trainer = _kd_trainer(tmp_path, class_weights="balanced")
    train_labels = np.array(trainer.train_dataset["labels"][:])
    sklearn = compute_class_weight("balanced", classes=np.arange(3), y=train_labels)
    np.testing.assert_allclose(trainer.class_weight_table[0].numpy(), sklearn)

    batches = _micro_batches(trainer, [[0, 1, -100], [2, 2, 0, -100, 1]])  # uneven, with ignored rows
    trainer.model.train()
    samples, num_items = trainer.get_batch_samples(iter(batches), 2, torch.device("cpu"))
    weights = torch.tensor(sklearn, dtype=torch.float32)
    labels = torch.cat([b["labels"] for b in batches])
    assert trainer._step_counts[ROWS].item() == 6
    assert trainer._step_counts[LABELLED].item() == pytest.approx(weights[labels[labels >= 0]].sum().item())
    total = sum(trainer.compute_loss(trainer.model, b, num_items_in_batch=num_items) for b in samples)

    with torch.no_grad():
        logits = torch.cat([trainer.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                            for b in batches])
        teacher = torch.cat([trainer.teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                             for b in batches])
    ce = F.cross_entropy(logits, labels, weight=weights, ignore_index=-100)
    valid = labels != -100
    kd = 4.0 * F.kl_div(F.log_softmax(logits[valid] / 2, -1), F.softmax(teacher[valid] / 2, -1),
                        reduction="batchmean")
    torch.testing.assert_close(total.detach(), 0.7 * ce + 0.3 * kd, rtol=1e-5, atol=1e-6)
    logged = trainer._flush_metrics("train")
    assert logged["loss_ce"] == pytest.approx(ce.item(), rel=1e-5)
    assert logged["loss_kd"] == pytest.approx(kd.item(), rel=1e-5, abs=1e-6)  # float32 log-probabilities


def test_class_weights_are_checked_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"class_weights for task .* must be 3 finite non-negative numbers"):
        _kd_trainer(tmp_path, class_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="class_weights must be 'balanced'"):
        small_run_args(AnnealingArguments, tmp_path, class_weights="balnced")
    args = small_run_args(AnnealingArguments, tmp_path, class_weights="[1, 2, 0.5]")  # JSON from the command line
    assert args.class_weights == [1, 2, 0.5]


def test_ddml_hard_term_takes_the_class_weights(tmp_path):
    data = random_classification_dataset(n=8, seed=4)
    ids, mask, labels = (torch.tensor(data[c][:]) for c in ("input_ids", "attention_mask", "labels"))
    columns = {f"{p}_{c}": data[c][:] for p in ("a", "b", "teacher") for c in ("input_ids", "attention_mask")}
    data = Dataset.from_dict({**columns, "labels": labels.tolist()})
    args = small_run_args(MutualLearningArguments, tmp_path, class_weights=[1.0, 3.0, 0.5], soft_weight=0.0,
                          mutual_weight=0.0)
    students = {"a": tiny_classifier(1), "b": tiny_classifier(2)}
    trainer = MutualLearningTrainer(students=students, teacher_model=tiny_classifier(0), args=args, train_dataset=data,
                                    data_collator=lambda rows: {k: torch.tensor([r[k] for r in rows]) for k in rows[0]})
    batch = {**{k: torch.tensor(v) for k, v in columns.items()}, "labels": labels}
    trainer.model.eval()
    loss = trainer.compute_loss(trainer.model, batch)
    with torch.no_grad():
        expected = sum(F.cross_entropy(students[n](input_ids=ids, attention_mask=mask).logits, labels,
                                       weight=torch.tensor([1.0, 3.0, 0.5])) for n in ("a", "b"))
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)


def test_each_term_is_divided_by_its_own_kind_of_count():
    objective = Objective({LABELLED: torch.tensor(4.0), ROWS: torch.tensor(10.0)})
    objective.add("ce", losses.LossSum(torch.tensor(2.0), torch.tensor(2.0)), LABELLED, 0.5)
    objective.add("kd", losses.LossSum(torch.tensor(3.0), torch.tensor(5.0)), ROWS, 2.0)
    assert objective.loss().item() == pytest.approx(0.5 * 2 / 4 + 2.0 * 3 / 10)
    outside = Objective()  # evaluation: each term over its own items in the batch
    outside.add("ce", losses.LossSum(torch.tensor(2.0), torch.tensor(2.0)), LABELLED)
    assert outside.loss().item() == pytest.approx(1.0)
    with pytest.raises(KeyError, match="languages"):
        objective.add("adv", losses.LossSum(torch.tensor(1.0), torch.tensor(1.0)), "languages")


def test_non_finite_teacher_logits_are_checked_once_per_optimizer_step(tmp_path):
    trainer = _kd_trainer(tmp_path)
    trainer.model.train()
    trainer._step_counts = {ROWS: torch.tensor(4.0), LABELLED: torch.tensor(4.0)}  # inside a training step
    logits = torch.tensor([[0.0, 1.0, 2.0], [float("nan"), 0.0, 0.0]])
    trainer._check_teacher_logits(logits, torch.tensor([3, 5]))  # deferred: no error, no synchronisation yet
    assert len(trainer._teacher_checks) == 1
    with pytest.raises(FloatingPointError, match=r"non-finite logits.* at step 0 for 1 example\(s\): row 5"):
        trainer.check_teacher_outputs()
    assert trainer._teacher_checks == []
    trainer.model.eval()  # outside a training step the check is immediate
    with pytest.raises(FloatingPointError, match="non-finite logits"):
        trainer._check_teacher_logits(logits, None)


def test_plain_fine_tuning_takes_class_weights_exactly_under_accumulation(tmp_path):
    from distil_trainers.trainers import TaskAwareTrainer

    data = random_classification_dataset(n=12, seed=5)
    model = tiny_classifier(1)
    trainer = TaskAwareTrainer(model=model, args=small_run_args(AnnealingArguments, tmp_path), train_dataset=data,
                               class_weights=[2.0, 1.0, 0.25])
    batches = _micro_batches(trainer, [[0, 1, 2, -100], [2, 2, 0]])
    trainer.model.train()
    samples, num_items = trainer.get_batch_samples(iter(batches), 2, torch.device("cpu"))
    total = sum(trainer.compute_loss(trainer.model, b, num_items_in_batch=num_items) for b in samples)
    with torch.no_grad():
        logits = torch.cat([model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits for b in batches])
    labels = torch.cat([b["labels"] for b in batches])
    expected = F.cross_entropy(logits, labels, weight=torch.tensor([2.0, 1.0, 0.25]), ignore_index=-100)
    torch.testing.assert_close(total.detach(), expected, rtol=1e-5, atol=1e-6)
