"""Cross-lingual pieces: gradual stage proportions, gradient reversal, the language discriminator in a trainer."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from conftest import random_classification_dataset, tiny_classifier
from datasets import ClassLabel, Dataset
from safetensors.torch import load_file
from torch import nn

from distil_trainers.models.discriminator import LANGUAGE_COLUMN, LanguageDiscriminator, grad_reverse
from distil_trainers.papers.crosslingual import (
    GradualMixSchedule,
    build_gradual_stages,
    map_label_names,
    stage_sizes_note,
    with_language,
)
from distil_trainers.trainers.adversarial import DISCRIMINATOR_NAME, AdversarialArguments, AdversarialTrainer

# ---- gradual fine-tuning -------------------------------------------------------------------------------------------


def _labelled(n: int, prefix: str, names=("a", "b")) -> Dataset:
    ds = Dataset.from_dict({"id": [f"{prefix}{i}" for i in range(n)], "label": [i % len(names) for i in range(n)]})
    return ds.cast_column("label", ClassLabel(names=list(names)))


def test_schedule_source_counts_follow_the_shares():
    schedule = GradualMixSchedule((0.75, 0.5, 0.2, 0.0))
    # share p of the mix with all 100 target examples: p / (1 - p) * 100 source examples
    assert schedule.source_counts(num_source=1000, num_target=100) == [300, 100, 25, 0]
    assert schedule.num_stages == 4


@pytest.mark.parametrize(
    "shares, match",
    [((0.5, 0.6, 0.0), "must not increase"), ((0.5, 0.25), "target-only"), ((1.0, 0.0), r"\[0, 1\)"), ((), "one")],
)
def test_schedule_rejects_bad_shares(shares, match):
    with pytest.raises(ValueError, match=match):
        GradualMixSchedule(shares)


def test_schedule_refuses_a_too_small_source_set():
    with pytest.raises(ValueError, match="Stage 1 .* needs 300 source examples .* has 120"):
        GradualMixSchedule((0.75, 0.0)).source_counts(num_source=120, num_target=100)


def test_stages_hold_all_target_data_and_nested_source_samples():
    source, target = _labelled(400, "s"), _labelled(100, "t", names=("x", "y"))
    stages = build_gradual_stages(source, target, [0.6, 0.5, 0.0], seed=3)
    notes = stage_sizes_note(stages)
    assert [(n["source"], n["target"]) for n in notes] == [(150, 100), (100, 100), (0, 100)]
    assert [round(n["source_share"], 3) for n in notes] == [0.6, 0.5, 0.0]
    for stage in stages:
        ids = stage["id"][:]
        assert sorted(i for i in ids if i.startswith("t")) == sorted(target["id"][:])
        languages = dict(zip(ids, stage[LANGUAGE_COLUMN][:]))
        assert all(languages[i] == (0 if i.startswith("s") else 1) for i in ids)
    first = {i for i in stages[0]["id"][:] if i.startswith("s")}
    second = {i for i in stages[1]["id"][:] if i.startswith("s")}
    assert second < first  # nested: no new source examples later
    # seeded: the same seed gives the same sample, another seed another one
    again = build_gradual_stages(source, target, [0.6, 0.5, 0.0], seed=3)
    other = build_gradual_stages(source, target, [0.6, 0.5, 0.0], seed=4)
    assert stages[0]["id"][:] == again[0]["id"][:]
    assert stages[0]["id"][:] != other[0]["id"][:]


def test_map_label_names_by_name_and_drops():
    ds = _labelled(8, "e", names=("anger", "joy", "optimism", "sadness"))
    mapped = map_label_names(
        ds,
        {"anger": "anger", "joy": "joy", "optimism": "joy", "sadness": None},
        ["anger", "fear", "joy", "sadness", "neutral"],
    )
    assert mapped.features["label"].names == ["anger", "fear", "joy", "sadness", "neutral"]
    # source labels 0,1,2,3,0,1,2,3 -> anger, joy, joy, (dropped), ...
    assert mapped["label"][:] == [0, 2, 2, 0, 2, 2]
    with pytest.raises(ValueError, match="does not say where"):
        map_label_names(ds, {"anger": "anger"}, ["anger"])
    with pytest.raises(ValueError, match="not target classes"):
        map_label_names(ds, {"anger": "rage", "joy": None, "optimism": None, "sadness": None}, ["anger"])


# ---- gradient reversal ---------------------------------------------------------------------------------------------


def test_gradient_reversal_flips_the_encoder_gradient_and_keeps_the_discriminators():
    torch.manual_seed(0)
    encoder = nn.Linear(6, 8)
    discriminator = LanguageDiscriminator(8, intermediate_size=5, dropout=0.0, reversal_scale=0.7)
    x = torch.randn(10, 6)
    languages = torch.tensor([0, 1] * 5)

    def grads(reverse: bool):
        encoder.zero_grad()
        discriminator.zero_grad()
        features = encoder(x)
        if reverse:
            loss = discriminator(features, languages).loss
        else:  # the same computation without the reversal layer
            logits = discriminator.net(features)
            loss = nn.functional.cross_entropy(logits, languages)
        loss.backward()
        return ([p.grad.clone() for p in encoder.parameters()], [p.grad.clone() for p in discriminator.parameters()])

    enc_rev, disc_rev = grads(True)
    enc_plain, disc_plain = grads(False)
    for reversed_grad, plain in zip(enc_rev, enc_plain):
        assert plain.abs().sum() > 0
        torch.testing.assert_close(reversed_grad, -0.7 * plain)
    for reversed_grad, plain in zip(disc_rev, disc_plain):
        torch.testing.assert_close(reversed_grad, plain)


def test_grad_reverse_is_identity_forward():
    x = torch.randn(3, 4, requires_grad=True)
    torch.testing.assert_close(grad_reverse(x, 2.0), x)
    grad_reverse(x, 2.0).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, -2.0))


def test_discriminator_loss_normalisation_and_accuracy():
    disc = LanguageDiscriminator(4, intermediate_size=3, dropout=0.0)
    features = torch.randn(6, 4)
    languages = torch.tensor([0, 1, -100, 1, 0, 0])
    out = disc(features, languages)
    logits = out.logits
    expected = nn.functional.cross_entropy(logits[languages != -100], languages[languages != -100])
    torch.testing.assert_close(out.loss, expected)
    accuracy = (logits.argmax(-1) == languages)[languages != -100].float().mean()
    torch.testing.assert_close(out.accuracy, accuracy)
    assert int(out.count) == 5
    halved = disc(features, languages, num_items_in_batch=10)
    torch.testing.assert_close(halved.loss, expected * 5 / 10)
    with pytest.raises(ValueError, match="Language ids"):
        disc(features, torch.tensor([0, 1, 2, 0, 0, 0]))


# ---- the trainer ---------------------------------------------------------------------------------------------------


def _language_dataset(n=32, seed=0):
    ds = random_classification_dataset(n=n, num_labels=3, seed=seed)
    return ds.add_column(LANGUAGE_COLUMN, [i % 2 for i in range(n)])


@pytest.mark.parametrize("with_teacher", [False, True])
def test_trainer_logs_discriminator_and_keeps_it_out_of_the_model(tmp_path, with_teacher):
    model = tiny_classifier(seed=1)
    teacher = tiny_classifier(seed=2) if with_teacher else None
    args = AdversarialArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=4,
        logging_steps=2,
        report_to="none",
        save_strategy="steps",
        save_steps=4,
        learning_rate=1e-3,
        adversarial_weight=0.5,
        use_cpu=True,
    )
    trainer = AdversarialTrainer(model=model, teacher_model=teacher, args=args, train_dataset=_language_dataset())
    before = {n: p.detach().clone() for n, p in trainer.discriminator.named_parameters()}
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert logs and all("loss_adversarial" in e and "discriminator_accuracy" in e for e in logs)
    assert all(("lambda" in e) == with_teacher and ("loss_ce" in e) != with_teacher for e in logs)
    assert all(0.0 <= e["discriminator_accuracy"] <= 1.0 for e in logs)
    # the discriminator was trained (its own optimizer group), and is not part of the model
    assert any(not torch.equal(before[n], p) for n, p in trainer.discriminator.named_parameters())
    assert not any("net." in n for n in trainer.student.state_dict())
    trainer.save_model(str(tmp_path / "final"))
    assert not os.path.exists(tmp_path / "final" / DISCRIMINATOR_NAME)
    weights = load_file(str(tmp_path / "final" / "model.safetensors"))
    assert not any(k.startswith("net.") for k in weights)
    checkpoint = tmp_path / "checkpoint-4"
    saved = load_file(str(checkpoint / DISCRIMINATOR_NAME))
    for name, value in trainer.discriminator.state_dict().items():
        torch.testing.assert_close(saved[name], value)


def test_total_loss_is_ce_plus_weighted_discriminator_loss(tmp_path):
    model = tiny_classifier(seed=1)
    args = AdversarialArguments(
        output_dir=str(tmp_path), report_to="none", adversarial_weight=0.3, discriminator_dropout=0.0, use_cpu=True
    )
    trainer = AdversarialTrainer(model=model, args=args, train_dataset=_language_dataset())
    batch = trainer.data_collator([_language_dataset()[i] for i in range(6)])
    model.eval()
    loss = trainer.compute_loss(model, batch)
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        ce = nn.functional.cross_entropy(out.logits, batch["labels"])
        disc = trainer.discriminator(out.hidden_states[-1][:, 0], batch[LANGUAGE_COLUMN]).loss
    torch.testing.assert_close(loss.detach(), ce + 0.3 * disc)


@pytest.mark.parametrize("schedule", ["dann", "linear", "constant"])
def test_reversal_factor_follows_its_schedule_step_by_step(tmp_path, schedule):
    args = AdversarialArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=6, logging_steps=1, report_to="none",
        save_strategy="no", learning_rate=1e-3, adversarial_weight=0.5, reversal_scale=0.8,
        reversal_schedule=schedule, reversal_gamma=4.0, use_cpu=True,
    )  # fmt: skip
    trainer = AdversarialTrainer(model=tiny_classifier(seed=1), args=args, train_dataset=_language_dataset())
    seen = []
    reversal = trainer.discriminator.net[0].register_forward_pre_hook(
        lambda module, inputs: seen.append(trainer.discriminator.reversal_scale)
    )
    trainer.train()
    reversal.remove()
    # the loss of optimizer step k (0-based) is computed at progress k / max_steps
    expected = {
        "dann": [0.8 * math.tanh(4.0 * (k / 6) / 2) for k in range(6)],
        "linear": [0.8 * k / 6 for k in range(6)],
        "constant": [0.8] * 6,
    }[schedule]
    assert seen == pytest.approx(expected)
    logged = [e["reversal_scale"] for e in trainer.state.log_history if "reversal_scale" in e]
    assert logged == pytest.approx(expected)


def test_reversal_ramp_scales_the_encoder_gradient(tmp_path):
    reference = LanguageDiscriminator(32, dropout=0.0).state_dict()
    grads = {}
    for scale in (1.0, 0.25):
        args = AdversarialArguments(
            output_dir=str(tmp_path), report_to="none", adversarial_weight=1.0, discriminator_dropout=0.0,
            reversal_schedule="dann", reversal_scale=scale, use_cpu=True,
        )  # fmt: skip
        model = tiny_classifier(seed=1)
        trainer = AdversarialTrainer(model=model, args=args, train_dataset=_language_dataset())
        trainer.discriminator.load_state_dict(reference)
        trainer.state.global_step, trainer.state.max_steps = 1, 10
        batch = trainer.data_collator([_language_dataset()[i] for i in range(6)])
        model.train()
        trainer.compute_loss(model, batch)  # the factor of this step: scale * tanh(10 * 0.1 / 2)
        assert trainer.discriminator.reversal_scale == pytest.approx(scale * math.tanh(0.5))
        outputs = model(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")},
                        output_hidden_states=True)  # fmt: skip
        adversarial = trainer.discriminator(outputs.hidden_states[-1][:, 0], batch[LANGUAGE_COLUMN]).loss
        grads[scale] = torch.autograd.grad(adversarial, model.bert.embeddings.word_embeddings.weight)[0]
    torch.testing.assert_close(grads[0.25], 0.25 * grads[1.0])
    assert grads[1.0].abs().sum() > 0


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="reversal_schedule"):
        AdversarialArguments(output_dir="x", reversal_schedule="step")
    with pytest.raises(ValueError, match="reversal_gamma"):
        AdversarialArguments(output_dir="x", reversal_schedule="dann", reversal_gamma=0.0)
    with pytest.raises(ValueError, match="adversarial_weight"):
        AdversarialArguments(output_dir="x", adversarial_weight=-1.0)
    with pytest.raises(ValueError, match="num_languages"):
        AdversarialArguments(output_dir="x", num_languages=1)


def test_with_language_replaces_the_column():
    ds = with_language(with_language(_labelled(4, "a"), 0), 1)
    assert ds[LANGUAGE_COLUMN][:] == [1, 1, 1, 1]
    assert np.all(np.asarray(ds[LANGUAGE_COLUMN][:]) == 1)
    json.dumps(stage_sizes_note([ds]))


# ---- MTKD: single-task teachers routed per task, and the adversary on a multi-task model ----------------------------


def _two_task_data():
    from distil_trainers.data import concatenate_tasks

    a = random_classification_dataset(n=16, num_labels=2, seed=3)
    b = random_classification_dataset(n=16, num_labels=3, seed=4)
    return concatenate_tasks({"sentiment": a, "hate": b}, ["sentiment", "hate"])


def _tiny_multitask(seed=0):
    from conftest import tiny_bert_config

    from distil_trainers import MultiTaskConfig, MultiTaskModel

    torch.manual_seed(seed)
    return MultiTaskModel(MultiTaskConfig(encoder=tiny_bert_config().to_dict(), tasks={"sentiment": 2, "hate": 3}))


def test_routed_teacher_answers_with_the_batch_tasks_teacher():
    from distil_trainers.models.routed import TaskRoutedTeacher

    sentiment, hate = tiny_classifier(seed=5, num_labels=2), tiny_classifier(seed=6, num_labels=3)
    routed = TaskRoutedTeacher({"sentiment": sentiment, "hate": hate})
    assert routed.config.tasks == {"sentiment": 2, "hate": 3}
    ids = torch.randint(1, 99, (4, 8))
    torch.testing.assert_close(
        routed(input_ids=ids, task_ids=torch.ones(4, dtype=torch.long)).logits, hate(input_ids=ids).logits
    )
    torch.testing.assert_close(
        routed(input_ids=ids, task_ids=torch.zeros(4, dtype=torch.long)).logits, sentiment(input_ids=ids).logits
    )
    with pytest.raises(ValueError, match="one task"):
        routed(input_ids=ids, task_ids=torch.tensor([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="single-task"):
        TaskRoutedTeacher({"both": _tiny_multitask()})


def test_annealing_from_routed_single_task_teachers_into_a_multitask_student(tmp_path):
    from distil_trainers import AnnealingArguments, AnnealingTrainer
    from distil_trainers.models.routed import TaskRoutedTeacher

    routed = TaskRoutedTeacher(
        {"sentiment": tiny_classifier(seed=5, num_labels=2), "hate": tiny_classifier(seed=6, num_labels=3)}
    )
    args = AnnealingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=4,
        logging_steps=2,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
    )
    trainer = AnnealingTrainer(
        model=_tiny_multitask(), teacher_model=routed, args=args, train_dataset=_two_task_data()
    )
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    assert logs and all("loss_ta" in e and "lambda" in e for e in logs)
    with pytest.raises(ValueError, match="Label spaces differ"):
        AnnealingTrainer(
            model=_tiny_multitask(),
            args=args,
            train_dataset=_two_task_data(),
            teacher_model=TaskRoutedTeacher(
                {"sentiment": tiny_classifier(num_labels=2), "hate": tiny_classifier(num_labels=4)}
            ),
        )


def test_adversary_on_a_multitask_model(tmp_path):
    data = _two_task_data()
    data = data.add_column(LANGUAGE_COLUMN, [i % 2 for i in range(len(data))])
    args = AdversarialArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        max_steps=3,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
    )
    trainer = AdversarialTrainer(model=_tiny_multitask(), args=args, train_dataset=data)
    trainer.train()
    assert all("loss_adversarial" in e for e in trainer.state.log_history if "loss" in e)
