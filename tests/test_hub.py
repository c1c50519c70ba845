"""Hub pushes without the network: HfApi.create_repo / upload_folder (what Trainer pushes with) replaced by a fake
that keeps every upload in a local folder. Trainer's own push_to_hub and hub_strategy for one model, this library's
card, one repository per mutual-learning student, and one clear error after a complete local save when offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import random_classification_dataset, tiny_classifier
from datasets import Dataset
from hub_fixtures import FakeHub
from huggingface_hub import metadata_load

from distil_trainers import AnnealingArguments, AnnealingTrainer, MutualLearningArguments, MutualLearningTrainer
from distil_trainers.hub import HubPushError, push_saved_models, student_folder, student_repo_id


@pytest.fixture
def hub(tmp_path, monkeypatch):
    return FakeHub(tmp_path / "hub").install(monkeypatch)


def annealing_trainer(tmp_path, student_seed=1, **overrides):
    args = dict(
        output_dir=str(tmp_path / "bam-student"),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    args.update(overrides)
    return AnnealingTrainer(
        model=tiny_classifier(student_seed),
        teacher_model=tiny_classifier(0),
        args=AnnealingArguments(**args),
        train_dataset=random_classification_dataset(n=16),
    )


def mutual_trainer(tmp_path, **overrides):
    g = torch.Generator().manual_seed(0)
    data = {}
    for name in ("a", "b", "teacher"):
        data[f"{name}_input_ids"] = torch.randint(1, 99, (8, 6), generator=g).tolist()
        data[f"{name}_attention_mask"] = [[1] * 6] * 8
    data["labels"] = [row[0] % 3 for row in data["a_input_ids"]]
    args = dict(
        output_dir=str(tmp_path / "ddml"),
        per_device_train_batch_size=4,
        num_train_epochs=1,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    args.update(overrides)
    return MutualLearningTrainer(
        students={"a": tiny_classifier(1), "b": tiny_classifier(2, layers=1)},
        teacher_model=tiny_classifier(0),
        args=MutualLearningArguments(**args),
        train_dataset=Dataset.from_dict(data),
        data_collator=lambda rows: {k: torch.tensor([r[k] for r in rows]) for k in rows[0]},
    )


def sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# ---- one model: Trainer's push_to_hub, this library's card ----------------------------------------------------------


def test_push_to_hub_uploads_the_output_dir_with_this_librarys_card(tmp_path, hub):
    trainer = annealing_trainer(tmp_path, hub_model_id="me/bam-student", save_strategy="epoch")
    trainer.train()
    trainer.push_to_hub(commit_message="Distilled with teacher annealing", datasets=["davidson"])
    out = tmp_path / "bam-student"
    assert hub.repos == [("me/bam-student", None)]  # created on the first push (args.hub_private_repo)
    ((repo, where, files, message),) = hub.summary()
    assert (repo, where, message) == ("me/bam-student", "", "Distilled with teacher annealing")
    assert {"README.md", "config.json", "model.safetensors", "training_args.bin"} <= set(files)
    assert not any(f.startswith("checkpoint-") for f in files) and (out / "checkpoint-2").is_dir()
    meta = metadata_load(out / "README.md")
    assert meta["model_name"] == "bam-student" and meta["datasets"] == ["tdavidson/hate_speech_offensive"]
    assert "teacher-annealing" in meta["tags"] and "distil-trainers" in meta["tags"]
    card = hub.uploads[0][5]["README.md"].decode()
    assert "Clark, Kevin" in card and "`AnnealingTrainer`" in card  # the method's citation, the trainer class
    assert "## Hyper-parameters" in card and "This model is a fine-tuned version" not in card  # not Trainer's card


def test_card_carries_the_trainer_classs_name_tags_and_paper(tmp_path, hub):
    class CitedTrainer(AnnealingTrainer):
        _tag_names = ["distil-trainers", "cited-method"]
        _name = "Cited"
        _paper = {"title": "A Cited Paper", "id": "2501.00001",
                  "citation": "@article{cited2025,\n  title = {A Cited Paper},\n  year = {2025}\n}"}  # fmt: skip

    args = AnnealingArguments(output_dir=str(tmp_path / "cited"), report_to="none", use_cpu=True, max_steps=1,
                              save_strategy="no", hub_model_id="me/cited")  # fmt: skip
    trainer = CitedTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), args=args,
                           train_dataset=random_classification_dataset(n=8))  # fmt: skip
    trainer.train()
    trainer.push_to_hub()
    card = (tmp_path / "cited" / "README.md").read_text()
    assert "cited-method" in metadata_load(tmp_path / "cited" / "README.md")["tags"]
    assert "`CitedTrainer` (Cited)" in card
    assert card.index("Clark, Kevin") < card.index("@article{cited2025")  # the method's paper (BAM), the trainer's


def test_repository_is_created_when_the_trainer_is_built_and_a_failure_says_nothing_was_trained(
    tmp_path, hub, monkeypatch
):
    annealing_trainer(tmp_path, push_to_hub=True, hub_model_id="me/x", hub_strategy="end")
    assert hub.repos == [("me/x", None)] and hub.uploads == []
    monkeypatch.undo()  # the real HfApi, offline (conftest): fails before training, as Trainer does
    with pytest.raises(HubPushError, match="repository me/y failed .*nothing was trained or saved"):
        annealing_trainer(tmp_path / "offline", push_to_hub=True, hub_model_id="me/y")


def test_hub_strategy_end_pushes_nothing_while_training(tmp_path, hub):
    trainer = annealing_trainer(tmp_path, push_to_hub=True, hub_model_id="me/x", hub_strategy="end",
                                save_strategy="steps", save_steps=1)  # fmt: skip
    trainer.train()
    assert hub.uploads == [] and (tmp_path / "bam-student" / "checkpoint-2").is_dir()
    trainer.push_to_hub()
    assert [u[:2] for u in hub.summary()] == [("me/x", "")]


def test_every_save_pushes_each_checkpoints_model_and_card(tmp_path, hub):
    trainer = annealing_trainer(tmp_path, push_to_hub=True, hub_model_id="me/bam", hub_strategy="every_save",
                                hub_always_push=True, save_strategy="steps", save_steps=1,
                                learning_rate=1e-2)  # fmt: skip
    trainer.hub_card_kwargs = {"datasets": ["davidson"]}
    trainer.train()  # 16 examples, batch 8: checkpoints at steps 1 and 2
    out = tmp_path / "bam-student"
    assert [(repo, where, message) for repo, where, _, message in hub.summary()] == [
        ("me/bam", "", "Training in progress, step 1"),
        ("me/bam", "", "Training in progress, step 2"),
    ]
    for step, (*_, files, _, _, contents) in zip((1, 2), hub.uploads):
        assert {"README.md", "config.json", "model.safetensors"} <= set(files)
        assert not any("checkpoint-" in f for f in files)
        # the model pushed at step N is the one of checkpoint-N (Trainer copies it to output_dir first)
        assert sha256(contents["model.safetensors"]) == sha256((out / f"checkpoint-{step}" / "model.safetensors")
                                                               .read_bytes())  # fmt: skip
        meta = metadata_load(out / "README.md")
        assert "Clark, Kevin" in contents["README.md"].decode()
    assert meta["model_name"] == "bam" and meta["datasets"] == ["tdavidson/hate_speech_offensive"]


@pytest.mark.parametrize("strategy", ["checkpoint", "all_checkpoints"])
def test_checkpoint_strategies_also_push_the_checkpoint_folder(tmp_path, hub, strategy):
    trainer = annealing_trainer(tmp_path, push_to_hub=True, hub_model_id="me/bam", hub_strategy=strategy,
                                hub_always_push=True, save_strategy="epoch", num_train_epochs=2)  # fmt: skip
    trainer.train()  # checkpoints at steps 2 (epoch 1) and 4 (epoch 2)
    uploads = hub.summary()
    assert len(uploads) == 4
    for epoch, step, model, checkpoint in zip((1, 2), (2, 4), uploads[0::2], uploads[1::2]):
        assert model[:2] == ("me/bam", "") and model[3] == f"Training in progress, epoch {epoch}"
        assert checkpoint[0] == "me/bam" and checkpoint[3] == f"Training in progress, epoch {epoch}, checkpoint"
        assert checkpoint[1] == ("last-checkpoint" if strategy == "checkpoint" else f"checkpoint-{step}")
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin",
                "rng_state.pth", "config.json"} <= set(checkpoint[2])  # everything Trainer needs to resume


def test_training_resumes_from_the_pushed_last_checkpoint(tmp_path, hub):
    trainer = annealing_trainer(tmp_path, push_to_hub=True, hub_model_id="me/bam", hub_strategy="checkpoint",
                                hub_always_push=True, save_strategy="epoch")  # fmt: skip
    trainer.train()
    pushed = tmp_path / "hub" / "me" / "bam" / "last-checkpoint"
    assert json.loads((pushed / "trainer_state.json").read_text())["global_step"] == 2
    resumed = annealing_trainer(tmp_path / "elsewhere", student_seed=7, num_train_epochs=2)
    resumed.train(resume_from_checkpoint=str(pushed))
    assert resumed.state.global_step == 4
    first = [h for h in trainer.state.log_history if "loss" in h]
    again = [h for h in resumed.state.log_history if "loss" in h]
    assert [h["step"] for h in again] == [1, 2, 3, 4] and again[:2] == first


def test_offline_push_fails_once_after_a_complete_local_save(tmp_path):
    trainer = annealing_trainer(tmp_path, hub_model_id="me/bam-student")
    trainer.train()
    with pytest.raises(HubPushError) as error:
        trainer.push_to_hub(datasets=["davidson"])  # HF_HUB_OFFLINE=1 (conftest): the real HfApi refuses at once
    out = tmp_path / "bam-student"
    message = str(error.value)
    assert "failed at me/bam-student" in message and f"The local save is complete: {out}" in message
    assert "nothing was lost" in message and error.value.repo_id == "me/bam-student"
    assert (out / "model.safetensors").is_file()
    assert metadata_load(out / "README.md")["datasets"] == ["tdavidson/hate_speech_offensive"]
    reloaded = type(trainer.model).from_pretrained(out)
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)


def test_failed_upload_after_the_repository_exists_gives_the_same_error(tmp_path, monkeypatch):
    FakeHub(tmp_path / "hub", fail_on={"me/bam"}).install(monkeypatch)
    trainer = annealing_trainer(tmp_path, push_to_hub=True, hub_model_id="me/bam", hub_strategy="end")
    trainer.train()
    with pytest.raises(HubPushError, match=r"failed at me/bam \(ConnectionError: connection refused\).*local save"):
        trainer.push_to_hub()
    assert (tmp_path / "bam-student" / "README.md").is_file()


# ---- several students: one repository each --------------------------------------------------------------------------


def test_mutual_learning_pushes_one_repository_per_student(tmp_path, hub):
    trainer = mutual_trainer(tmp_path, hub_model_id="me/ddml-davidson")
    trainer.train()
    repos = trainer.push_to_hub(datasets=["davidson"])
    assert repos == {"a": "me/ddml-davidson-a", "b": "me/ddml-davidson-b"}
    assert [r for r, _ in hub.repos] == ["me/ddml-davidson-a", "me/ddml-davidson-b"]  # not the run's
    for name, (repo, where, files, message) in zip("ab", hub.summary()):
        assert (repo, where, message) == (f"me/ddml-davidson-{name}", "", "End of training")
        assert {"README.md", "config.json", "model.safetensors"} <= set(files)
        folder = student_folder(tmp_path / "ddml", name)
        card = (folder / "README.md").read_text()
        assert f"me/ddml-davidson-{'b' if name == 'a' else 'a'}" in card  # the peer's repository
        assert "10.3390/e27040417" in card and "`MutualLearningTrainer`" in card
        meta = metadata_load(folder / "README.md")
        assert meta["model_name"] == f"ddml-davidson-{name}"
        assert meta["datasets"] == ["tdavidson/hate_speech_offensive"]


def test_partial_failure_names_what_was_pushed(tmp_path, monkeypatch):
    FakeHub(tmp_path / "hub", fail_on={"me/ddml-b"}).install(monkeypatch)
    trainer = mutual_trainer(tmp_path, hub_model_id="me/ddml")
    trainer.train()
    with pytest.raises(HubPushError, match="Already pushed: me/ddml-a.*local save is complete"):
        trainer.push_to_hub()


def test_mutual_learning_offline(tmp_path):
    trainer = mutual_trainer(tmp_path, hub_model_id="me/ddml")
    trainer.train()
    with pytest.raises(HubPushError, match=f"failed at me/ddml-a .*The local save is complete: {tmp_path / 'ddml'}"):
        trainer.push_to_hub()
    assert (tmp_path / "ddml" / "b" / "model.safetensors").is_file()
    assert (tmp_path / "ddml" / "b" / "README.md").is_file()


def test_mutual_learning_pushes_every_student_at_every_save(tmp_path, hub, monkeypatch):
    monkeypatch.setattr(MutualLearningTrainer, "hub_student_pattern", "org/{student}-hate")  # before it is built
    trainer = mutual_trainer(tmp_path, push_to_hub=True, hub_model_id="me/ddml", hub_strategy="checkpoint",
                             hub_always_push=True, save_strategy="steps", save_steps=1)  # fmt: skip
    trainer.train()  # 8 examples, batch 4: checkpoints at steps 1 and 2
    # created when the trainer is built: each student's, and the run's for the checkpoints
    assert sorted(r for r, _ in hub.repos) == ["me/ddml", "org/a-hate", "org/b-hate"]
    out = tmp_path / "ddml"
    uploads = hub.uploads
    assert len(uploads) == 6
    for step, group in zip((1, 2), (uploads[:3], uploads[3:])):
        message = f"Training in progress, step {step}"
        for name, (repo, where, files, msg, _, contents) in zip("ab", group[:2]):
            assert (repo, where, msg) == (f"org/{name}-hate", "", message)
            assert {"README.md", "config.json", "model.safetensors"} <= set(files)
            checkpoint_weights = (out / f"checkpoint-{step}" / name / "model.safetensors").read_bytes()
            assert sha256(contents["model.safetensors"]) == sha256(checkpoint_weights)
        repo, where, files, msg, _, _ = group[2]  # the run's checkpoint: every student and the shared state
        assert (repo, where, msg) == ("me/ddml", "last-checkpoint", message + ", checkpoint")
        assert {"a/model.safetensors", "b/model.safetensors", "students.json", "optimizer.pt"} <= set(files)
    assert "org/b-hate" in (out / "a" / "README.md").read_text()  # the card names its peer's repository


# ---- saved folders: `distil-trainers push` --------------------------------------------------------------------------


def test_student_repository_names():
    assert student_repo_id("{repo_id}-{student}", "me/ddml", "xlmr") == "me/ddml-xlmr"
    assert student_repo_id("org/{student}-hate", "me/ddml", "mbert") == "org/mbert-hate"
    with pytest.raises(ValueError, match="only use"):
        student_repo_id("{repo}-{student}", "me/ddml", "a")
    with pytest.raises(ValueError, match="invalid repository id"):
        student_repo_id("{repo_id}/{student}", "me/ddml", "a")
    with pytest.raises(FileNotFoundError, match="No saved student 'a'"):
        student_folder(Path("/nonexistent-student-folder"), "a")


def test_push_saved_models_refuses_a_folder_without_weights_and_one_repo_for_two(tmp_path, hub):
    from distil_trainers.cards import CardContext

    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="No model weights"):
        push_saved_models({None: tmp_path / "empty"}, {None: CardContext("x", "bam")}, "me/x")
    for name in ("a", "b"):
        tiny_classifier(0).save_pretrained(tmp_path / name)
    cards = {n: CardContext(n, "ddml") for n in "ab"}
    with pytest.raises(ValueError, match="same repository"):
        push_saved_models({"a": tmp_path / "a", "b": tmp_path / "b"}, cards, "me/x", student_pattern="{repo_id}")
    assert hub.uploads == []


def test_push_command_dry_run_upload_and_offline(tmp_path, capsys, monkeypatch):
    from distil_trainers.papers.cli import main

    run = tmp_path / "ddml"
    for seed, name in enumerate("ab"):
        tiny_classifier(seed).save_pretrained(run / name)
    (run / "students.json").write_text(json.dumps({"students": ["a", "b"]}))
    (run / "a" / "training_complete.json").write_text("{}")
    assert main(["push", str(run), "--repo_id", "me/ddml", "--dataset", "davidson", "--dry_run"]) == 0
    printed = capsys.readouterr().out
    assert "me/ddml-a <- " in printed and "me/ddml-b <- " in printed and "dry run" in printed
    meta = metadata_load(run / "b" / "README.md")
    assert meta["model_name"] == "ddml-b" and meta["datasets"] == ["tdavidson/hate_speech_offensive"]
    assert "me/ddml-a" in (run / "b" / "README.md").read_text()  # the peer's repository
    assert main(["push", str(run), "--repo_id", "me/ddml"]) == 1  # HF_HUB_OFFLINE=1
    assert f"The local save is complete: {run}" in capsys.readouterr().err
    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    assert main(["push", str(run), "--repo_id", "me/ddml", "--private"]) == 0
    assert hub.repos == [("me/ddml-a", True), ("me/ddml-b", True)]
    assert [(repo, sorted(files)) for repo, _, files, _ in hub.summary()] == [
        ("me/ddml-a", ["README.md", "config.json", "model.safetensors"]),  # not the recipe's training_complete.json
        ("me/ddml-b", ["README.md", "config.json", "model.safetensors"]),
    ]


def test_recipe_helpers(tmp_path, capsys, hub, monkeypatch):
    from distil_trainers.cards import CardContext
    from distil_trainers.hub import push_recipe_models, split_push_argument

    args = AnnealingArguments(output_dir=str(tmp_path), push_to_hub=True, hub_model_id="me/run", report_to="none")
    stripped, push = split_push_argument(args)
    assert push and not stripped.push_to_hub and stripped.hub_model_id == "me/run"
    assert split_push_argument(stripped) == (stripped, False)
    tiny_classifier(0).save_pretrained(tmp_path / "student")
    card = CardContext(model_name="ignored", method="bam")
    assert push_recipe_models(stripped, {None: tmp_path / "student"}, {None: card}) == {None: "me/run"}
    assert hub.summary()[-1][:3] == ("me/run", "", ["README.md", "config.json", "model.safetensors"])
    assert metadata_load(tmp_path / "student" / "README.md")["model_name"] == "run"  # named after its repository
    monkeypatch.undo()  # the real, offline HfApi: one message, status 1, the files stay
    with pytest.raises(SystemExit) as stop:
        push_recipe_models(stripped, {None: tmp_path / "student"}, {None: card})
    assert stop.value.code == 1
    assert "The local save is complete" in capsys.readouterr().err


# ---- rationale trainers (a TRL SFTTrainer underneath): the same Hub path --------------------------------------------


def rationale_trainer(tmp_path, **overrides):
    from rationale_fixtures import rationale_dataset, sft_args, tiny_llama, tiny_tokenizer

    from distil_trainers import RationaleSFTTrainer

    tok = tiny_tokenizer()
    args = sft_args(tmp_path, output_dir=str(tmp_path / "rationale-student"), max_steps=2, **overrides)
    return RationaleSFTTrainer(tiny_llama(tok, seed=1), args=args, train_dataset=rationale_dataset(),
                               processing_class=tok)  # fmt: skip


def test_rationale_trainer_pushes_its_student_with_this_librarys_card(tmp_path, hub):
    trainer = rationale_trainer(tmp_path, push_to_hub=True, hub_model_id="me/rationale-student", hub_strategy="end",
                                alpha=0.3)  # fmt: skip
    trainer.train()
    trainer.push_to_hub(datasets=["davidson"])
    ((repo, where, files, message),) = hub.summary()
    assert (repo, where, message) == ("me/rationale-student", "", "End of training")
    assert {"README.md", "config.json", "model.safetensors"} <= set(files)
    card = tmp_path / "rationale-student" / "README.md"
    meta = metadata_load(card)
    assert "rationale-distillation" in meta["tags"] and meta["datasets"] == ["tdavidson/hate_speech_offensive"]
    text = card.read_text()
    assert "Distilling step-by-step" in text and "alpha" in text and "0.3" in text  # not TRL's generic card


def test_rationale_trainer_offline_push_fails_once_after_the_local_save(tmp_path):
    trainer = rationale_trainer(tmp_path, hub_model_id="me/rationale-student")
    trainer.train()
    with pytest.raises(HubPushError, match="The local save is complete"):
        trainer.push_to_hub()
    assert (tmp_path / "rationale-student" / "model.safetensors").is_file()
