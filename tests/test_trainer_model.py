"""The one model a distillation trainer hands to Trainer: the student and its extra trainable modules (feature
projections, the language discriminator) in one DistillationModel, served by Trainer's own optimizer, clipping,
zero_grad and checkpoints; and the one constructor path of the trainers (a step fixed once serves them all)."""

from __future__ import annotations

import pytest
import torch
from conftest import random_classification_dataset, small_run_args, tiny_bert_config, tiny_classifier, train_logs
from datasets import Dataset
from safetensors.torch import load_file
from transformers import BertForSequenceClassification, default_data_collator

from distil_trainers import AnnealingArguments, AnnealingTrainer, MutualLearningArguments, MutualLearningTrainer
from distil_trainers.features import PROJECTIONS_NAME
from distil_trainers.models.discriminator import LANGUAGE_COLUMN
from distil_trainers.teachers.cache import precompute_teacher_outputs
from distil_trainers.trainers.adversarial import DISCRIMINATOR_NAME, AdversarialArguments, AdversarialTrainer
from distil_trainers.trainers.wrapper import DistillationModel

HIDDEN_MATCH = {"student_layer": 1, "teacher_layer": 2, "feature": "hidden", "loss": "mse"}
CLS_MATCH = {"student_layer": 1, "teacher_layer": 2, "feature": "cls", "loss": "mse"}


def narrow_student(seed: int = 1) -> BertForSequenceClassification:
    """Hidden 16 against the tiny teacher's 32: vector matches need a projection."""
    torch.manual_seed(seed)
    config = tiny_bert_config(layers=1)
    config.hidden_size, config.intermediate_size = 16, 20
    return BertForSequenceClassification(config)


def language_dataset(n: int = 24, seed: int = 0) -> Dataset:
    ds = random_classification_dataset(n=n, num_labels=3, seed=seed)
    return ds.add_column(LANGUAGE_COLUMN, [i % 2 for i in range(n)])


def test_the_student_and_its_projections_are_one_model_for_trainer(tmp_path):
    args = small_run_args(AnnealingArguments, tmp_path, feature_matches=[HIDDEN_MATCH], max_grad_norm=1e-3,
                          logging_steps=1, max_steps=2)
    student = narrow_student()
    trainer = AnnealingTrainer(model=student, teacher_model=tiny_classifier(0), args=args,
                               train_dataset=random_classification_dataset(n=16))
    assert isinstance(trainer.model, DistillationModel) and trainer.student is student
    assert trainer.model.config is student.config  # what the student has, the model gives
    assert trainer.hub_students() == {"": student}
    projections = dict(trainer.feature_distiller.named_parameters())
    wrapped = dict(trainer.model.named_parameters())
    assert all(wrapped[f"extras.features.{name}"] is p for name, p in projections.items())
    trainer.train()
    # Trainer's clipping covers the projections: the logged norm is over the student and the projections together
    assert all(log["grad_norm"] > 0 for log in train_logs(trainer))
    assert all(p.grad is None for p in trainer.model.parameters())  # Trainer's zero_grad clears them all
    # save_model: the student alone, loadable with from_pretrained
    trainer.save_model(str(tmp_path / "student"))
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path / "student")
    for key, value in student.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)
    assert not (tmp_path / "student" / PROJECTIONS_NAME).exists()


def test_without_trainable_extra_modules_the_model_is_the_student(tmp_path):
    args = small_run_args(AnnealingArguments, tmp_path, feature_matches=[{**HIDDEN_MATCH, "loss": "similarity_kl"}])
    student = narrow_student()
    trainer = AnnealingTrainer(model=student, teacher_model=tiny_classifier(0), args=args,
                               train_dataset=random_classification_dataset(n=8))
    assert trainer.model is student and trainer.student is student and trainer.distillation_model is None
    trainer.train()
    assert "loss_feature/hidden_similarity_kl_s1_t2" in train_logs(trainer)[0]


def test_discriminator_resume_reproduces_the_uninterrupted_run(tmp_path):
    def run(out, resume=None, **overrides):
        args = small_run_args(AdversarialArguments, tmp_path, output_dir=str(tmp_path / out), max_steps=6,
                              save_strategy="steps", save_steps=3, logging_steps=1, adversarial_weight=0.5,
                              discriminator_learning_rate=0.05, **overrides)
        trainer = AdversarialTrainer(model=tiny_classifier(1), args=args, train_dataset=language_dataset())
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run("full")
    groups = {id(p): g for g in full.optimizer.param_groups for p in g["params"]}
    assert all(groups[id(p)]["initial_lr"] == 0.05 for p in full.discriminator.parameters())
    assert all(groups[id(p)]["initial_lr"] != 0.05 for p in full.student.parameters())
    run("src")
    checkpoint = tmp_path / "src" / "checkpoint-3"
    assert (checkpoint / DISCRIMINATOR_NAME).exists()
    assert not any(k.startswith(("extras.", "student.", "net.")) for k in load_file(str(checkpoint / "model.safetensors")))
    again = run("src", resume=str(checkpoint))
    full_losses = [h["loss"] for h in train_logs(full)][3:]
    again_losses = [h["loss"] for h in train_logs(again)][-3:]
    assert again_losses == pytest.approx(full_losses, abs=1e-6)
    for a, b in zip(full.model.parameters(), again.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_a_previous_trainers_model_trains_on_as_its_student(tmp_path):
    args = small_run_args(AdversarialArguments, tmp_path, max_steps=1, adversarial_weight=0.5)
    first = AdversarialTrainer(model=tiny_classifier(1), args=args, train_dataset=language_dataset())
    second = AdversarialTrainer(model=first.model, args=args, train_dataset=language_dataset())
    assert second.student is first.student and second.discriminator is not first.discriminator


def test_mutual_learning_refuses_feature_matches_with_a_cache_clearly(tmp_path):
    """DDML + teacher_outputs + feature matches: the one constructor's check, where a copy of it once missed it
    ("Cannot read the number of layers ... from a NoneType")."""
    base = random_classification_dataset(n=8, seed=1)
    train = base.add_column("id", [f"tr{i}" for i in range(8)])
    cache = precompute_teacher_outputs(tiny_classifier(0, layers=3), train)
    args = small_run_args(MutualLearningArguments, tmp_path, feature_matches=[CLS_MATCH])
    with pytest.raises(ValueError, match="feature_matches need the live teacher's hidden states; drop teacher_outputs"):
        MutualLearningTrainer(students={"a": tiny_classifier(1), "b": tiny_classifier(2, layers=1)}, args=args,
                              train_dataset=train, teacher_outputs=cache, data_collator=default_data_collator)


@pytest.mark.parametrize("trainer_cls", [AnnealingTrainer, MutualLearningTrainer, AdversarialTrainer])
def test_every_trainer_names_its_method_for_the_hub(trainer_cls):
    assert trainer_cls._tag_names[0] == "distil-trainers" and trainer_cls._name
    assert set(trainer_cls._paper) == {"title", "id", "citation"} and trainer_cls._paper["citation"].startswith("@")
