"""AnnealingTrainer on tiny random models: schedules over real runs, label-space checks, saving, gradient accumulation,
resuming, multi-task batches and per-model tokenizer columns."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import random_classification_dataset, small_run_args, tiny_bert_config, tiny_classifier, train_logs
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

from distil_trainers import AnnealingArguments, AnnealingTrainer, MultiTaskConfig, MultiTaskModel
from distil_trainers.data.multitask import concatenate_tasks


def make_args(tmp_path, **overrides) -> AnnealingArguments:
    return small_run_args(AnnealingArguments, tmp_path, **overrides)


# ---- schedules over a real run ------------------------------------------------------------------------------------


def test_bam_lambda_rises_linearly_per_optimizer_step(tmp_path):
    ds = random_classification_dataset(n=32)
    args = make_args(tmp_path, annealing="bam", gradient_accumulation_steps=2)  # 32 / (4*2) = 4 optimizer steps
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=args, train_dataset=ds)
    trainer.train()
    logs = train_logs(trainer)
    assert [h["step"] for h in logs] == [1, 2, 3, 4]
    # λ is read from global_step / max_steps before the update, constant within an accumulated step.
    assert [h["lambda"] for h in logs] == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert all("loss_ta" in h for h in logs)


def test_cosine_and_step_schedules_in_a_run(tmp_path):
    ds = random_classification_dataset(n=16)
    args = make_args(tmp_path, annealing="bam", lambda_schedule="cosine")
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=args, train_dataset=ds)
    trainer.train()
    expected = [(1 - math.cos(math.pi * s / 4)) / 2 for s in range(4)]
    assert [h["lambda"] for h in train_logs(trainer)] == pytest.approx(expected)

    args = make_args(tmp_path, annealing="bam", lambda_schedule="step", lambda_milestones=[0.5], lambda_values=[0.2, 0.9])
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=args, train_dataset=ds)
    trainer.train()
    assert [h["lambda"] for h in train_logs(trainer)] == pytest.approx([0.2, 0.2, 0.9, 0.9])


def test_jafari_phases_and_annealing_factor(tmp_path):
    ds = random_classification_dataset(n=32)  # 8 steps
    args = make_args(tmp_path, annealing="jafari", phase1_fraction=0.5, max_temperature=2)
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=args, train_dataset=ds)
    trainer.train()
    logs = train_logs(trainer)
    assert [h["phase"] for h in logs] == [1, 1, 1, 1, 2, 2, 2, 2]
    # phase-1 progress q = step / 4 for steps 0..3; Φ = 1 - (τ - 1)/τmax with τ = 2 - floor(2q): 0.5, 0.5, 1, 1
    assert [h["annealing_factor"] for h in logs[:4]] == pytest.approx([0.5, 0.5, 1.0, 1.0])
    assert all("loss_mse" in h for h in logs[:4]) and all("loss_ce" in h for h in logs[4:])


def test_hinton_kd_logs_both_terms_and_weights_them(tmp_path):
    ds = random_classification_dataset(n=8)
    args = make_args(tmp_path, annealing="kd", alpha=0.3, beta=0.7, temperature=2.0, learning_rate=0.0)
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=args, train_dataset=ds)
    trainer.train()
    for h in train_logs(trainer):
        assert h["loss"] == pytest.approx(0.3 * h["loss_ce"] + 0.7 * h["loss_kd"], rel=1e-4)
        assert h["loss_kd"] > 0


# ---- the teacher ---------------------------------------------------------------------------------------------------


def test_teacher_is_frozen_and_unchanged(tmp_path):
    teacher = tiny_classifier(0)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer = AnnealingTrainer(
        model=tiny_classifier(1), teacher_model=teacher, args=make_args(tmp_path), train_dataset=random_classification_dataset()
    )
    trainer.train()
    assert not trainer.teacher.training
    assert not any(p.requires_grad for p in trainer.teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in trainer.teacher.state_dict().items())
    assert not any(p is q for p in trainer.model.parameters() for q in trainer.teacher.parameters())


def test_teacher_from_local_path(tmp_path):
    teacher = tiny_classifier(0)
    teacher.save_pretrained(tmp_path / "teacher")
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=str(tmp_path / "teacher"), args=make_args(tmp_path))
    for a, b in zip(trainer.teacher.parameters(), teacher.parameters()):
        assert torch.equal(a, b)


def test_save_model_writes_the_student_only(tmp_path):
    student, teacher = tiny_classifier(1, layers=1), tiny_classifier(0, layers=3)
    trainer = AnnealingTrainer(
        model=student, teacher_model=teacher, args=make_args(tmp_path), train_dataset=random_classification_dataset()
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "saved"))
    weights = load_file(str(tmp_path / "saved" / "model.safetensors"))
    assert set(weights) == set(trainer.model.state_dict())
    assert not any("layer.2." in k or "teacher" in k for k in weights)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    x = torch.randint(1, 99, (2, 8))
    trainer.model.eval()
    assert torch.equal(reloaded(input_ids=x).logits, trainer.model(input_ids=x).logits)


# ---- errors before training ----------------------------------------------------------------------------------------


def test_label_space_mismatch_is_reported_at_construction(tmp_path):
    with pytest.raises(ValueError, match=r"Label spaces differ.*teacher predicts \{'default': 3\}.*student predicts \{'default': 2\}"):
        AnnealingTrainer(model=tiny_classifier(1, num_labels=2), teacher_model=tiny_classifier(0), args=make_args(tmp_path))


def test_class_name_mismatch_is_reported(tmp_path):
    teacher = tiny_classifier(0, id2label={0: "hate", 1: "offensive", 2: "neither"})
    student = tiny_classifier(1, id2label={0: "neither", 1: "offensive", 2: "hate"})
    with pytest.raises(ValueError, match="name their classes differently"):
        AnnealingTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path))


def test_dataset_labels_outside_the_label_space(tmp_path):
    ds = random_classification_dataset(num_labels=5)
    with pytest.raises(ValueError, match=r"train dataset has labels in \[0, 4\] but the models predict 3"):
        AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=make_args(tmp_path), train_dataset=ds)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"annealing": "fitnets"}, "annealing must be one of"),
        ({"lambda_start": -0.1}, "lambda_start must be in"),
        ({"temperature": 0.0}, "temperature must be > 0"),
        ({"phase1_fraction": 1.0}, "phase1_fraction"),
        ({"alpha": 0.0, "beta": 0.0}, "not both 0"),
        ({"lambda_schedule": "step"}, "lambda_milestones"),
        ({"task_sampling": "round_robin"}, "task_sampling must be one of"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_args(tmp_path, **kwargs)


# ---- gradient accumulation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("annealing", ["bam", "jafari", "kd"])
def test_batch_8_equals_4_x_2_accumulation(tmp_path, annealing):
    """One SGD step (lr 1, no clipping) on 8 examples, 3 of them unlabelled: the update is minus the gradient, so
    equal weights afterwards mean equal gradients."""
    ds = random_classification_dataset(n=8, masked=3)
    results = []
    for bs, ga in ((8, 1), (4, 2)):
        args = make_args(
            tmp_path, annealing=annealing, temperature=2.0, per_device_train_batch_size=bs, gradient_accumulation_steps=ga,
            optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", max_grad_norm=0.0, weight_decay=0.0,
            lambda_schedule="constant", lambda_value=0.4, max_steps=1,
        )
        student = tiny_classifier(1)
        start = {k: v.clone() for k, v in student.state_dict().items()}
        trainer = AnnealingTrainer(model=student, teacher_model=tiny_classifier(0), args=args, train_dataset=ds)
        trainer.train()
        grads = {k: start[k] - v for k, v in trainer.model.state_dict().items()}
        results.append((train_logs(trainer)[0]["loss"], grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, abs=1e-5)
    assert any(g.abs().max() > 1e-4 for g in grads_a.values())  # something was learnt
    for k in grads_a:
        torch.testing.assert_close(grads_a[k], grads_b[k], atol=1e-5, rtol=0)


# ---- resume --------------------------------------------------------------------------------------------------------


def test_resume_mid_run_reaches_the_same_weights(tmp_path):
    ds = random_classification_dataset(n=24, seed=3)
    common = dict(annealing="bam", max_steps=6, save_strategy="steps", save_steps=3, per_device_train_batch_size=4)

    def run(out, resume=None, teacher_seed=0):
        args = make_args(tmp_path, output_dir=str(tmp_path / out), **common)
        trainer = AnnealingTrainer(
            model=tiny_classifier(1, dropout=0.1), teacher_model=tiny_classifier(teacher_seed), args=args, train_dataset=ds
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    resumed = run("resumed_src")
    # Pretend the run died after the checkpoint at step 3: a fresh trainer resumes from it.
    again = run("resumed_src", resume=str(tmp_path / "resumed_src" / "checkpoint-3"))
    assert again.state.global_step == 6
    for (k, a), b in zip(full.model.state_dict().items(), again.model.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)
    assert [h["lambda"] for h in train_logs(again)][-3:] == pytest.approx([3 / 6, 4 / 6, 5 / 6])
    assert resumed.state.global_step == 6
    # the checkpoint holds the student only
    ckpt = load_file(str(tmp_path / "resumed_src" / "checkpoint-3" / "model.safetensors"))
    assert set(ckpt) == set(full.model.state_dict())


# ---- different tokenizers ------------------------------------------------------------------------------------------


def test_teacher_reads_its_own_input_columns(tmp_path):
    """The teacher's vocabulary (40) is smaller than the student's ids (up to 98): feeding it the student's input_ids
    would fail, so a run proves it gets teacher_input_ids; and its logits are what the loss used."""
    ds = random_classification_dataset(n=8, teacher_vocab_size=40)
    teacher = tiny_classifier(0, vocab_size=40)
    args = make_args(tmp_path, annealing="bam", lambda_schedule="constant", lambda_value=0.0, learning_rate=0.0)
    trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=teacher, args=args, train_dataset=ds, eval_dataset=ds)
    metrics = trainer.evaluate()
    batch = ds.with_format("torch")[:]
    with torch.no_grad():
        p_t = teacher.eval()(input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"]).logits.softmax(-1)
        log_p_s = trainer.model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.log_softmax(-1)
    expected = float(-(p_t * log_p_s).sum(-1).mean())
    assert metrics["eval_loss_ta"] == pytest.approx(expected, rel=1e-5)


# ---- multi-task ----------------------------------------------------------------------------------------------------


def tiny_multitask(seed: int, layers: int = 2) -> MultiTaskModel:
    torch.manual_seed(seed)
    config = MultiTaskConfig(encoder=tiny_bert_config(layers=layers).to_dict(), tasks={"sentiment": 2, "hate": 3})
    return MultiTaskModel(config)


def test_multitask_distillation_single_task_batches_and_per_task_metrics(tmp_path):
    from distil_trainers.metrics import build_compute_metrics

    sentiment = random_classification_dataset(n=12, num_labels=2, seed=1)
    hate = random_classification_dataset(n=20, num_labels=3, seed=2)
    train = concatenate_tasks({"sentiment": sentiment, "hate": hate})
    evals = {
        "sentiment": sentiment.add_column("task_ids", [0] * len(sentiment)),
        "hate": hate.add_column("task_ids", [1] * len(hate)),
    }
    args = make_args(tmp_path, annealing="bam", num_train_epochs=2)
    trainer = AnnealingTrainer(
        model=tiny_multitask(1, layers=1), teacher_model=tiny_multitask(0), args=args, train_dataset=train,
        eval_dataset=evals, compute_metrics=build_compute_metrics(),
    )
    seen = []
    original = trainer.compute_loss

    def spy(model, inputs, *a, **k):
        seen.append(torch.unique(inputs["task_ids"]).tolist())
        return original(model, inputs, *a, **k)

    trainer.compute_loss = spy
    trainer.train()
    train_batches = seen[: trainer.state.global_step]
    assert all(len(ids) == 1 for ids in train_batches)
    assert {ids[0] for ids in train_batches} == {0, 1}
    metrics = trainer.evaluate()
    for task in ("sentiment", "hate"):
        assert f"eval_{task}_f1_macro" in metrics and f"eval_{task}_loss_ta" in metrics
    # the hate head has 3 classes: a per-class F1 for class 2 only exists for that task
    assert "eval_hate_f1_2" in metrics and "eval_sentiment_f1_2" not in metrics


def test_multitask_label_space_mismatch(tmp_path):
    torch.manual_seed(0)
    other = MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config().to_dict(), tasks={"sentiment": 10, "hate": 3}))
    with pytest.raises(ValueError, match="Label spaces differ"):
        AnnealingTrainer(model=tiny_multitask(1), teacher_model=other, args=make_args(tmp_path))


def test_log_history_is_json_serialisable(tmp_path):
    trainer = AnnealingTrainer(
        model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=make_args(tmp_path),
        train_dataset=random_classification_dataset(n=8),
    )
    trainer.train()
    json.dumps(trainer.state.log_history)
