"""Hub pushes without the network: the upload plan (repositories, files, commit message) recorded by a fake HfApi,
one repository per student for mutual learning, and one clear error after a complete local save when offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import random_classification_dataset, tiny_classifier
from datasets import Dataset
from huggingface_hub import metadata_load

from distil_trainers import AnnealingArguments, AnnealingTrainer, MutualLearningArguments, MutualLearningTrainer
from distil_trainers.hub import (
    EXCLUDED_PATTERNS,
    HubPushError,
    execute_plan,
    plan_folder,
    plan_upload,
    student_folder,
    student_repo_id,
)


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records create_repo / create_commit calls, never touches the network."""

    def __init__(self, fail_on: str | None = None):
        self.calls = []
        self.fail_on = fail_on

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        self.calls.append(("create_repo", repo_id, {"private": private, "exist_ok": exist_ok}))
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def create_commit(self, repo_id, operations, commit_message, token=None, revision=None, **kwargs):
        if repo_id == self.fail_on:
            raise ConnectionError("connection refused")
        files = sorted(op.path_in_repo for op in operations)
        for op in operations:
            assert Path(op.path_or_fileobj).is_file()
        self.calls.append(
            ("create_commit", repo_id, {"files": files, "message": commit_message, "revision": revision})
        )
        return f"commit:{repo_id}"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def annealing_trainer(tmp_path, student_seed=1, **overrides):
    args = dict(
        output_dir=str(tmp_path / "bam-student"),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="epoch",
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


def test_trainer_push_plan_single_student(tmp_path):
    trainer = annealing_trainer(tmp_path, hub_model_id="me/bam-student")
    trainer.train()
    api = RecordingApi()
    plan = trainer.push_to_hub(commit_message="Distilled with teacher annealing", api=api, datasets=["davidson"])
    out = tmp_path / "bam-student"
    expected_files = ["README.md", "config.json", "model.safetensors"]
    assert api.calls == [
        ("create_repo", "me/bam-student", {"private": None, "exist_ok": True}),  # args.hub_private_repo
        (
            "create_commit",
            "me/bam-student",
            {"files": expected_files, "message": "Distilled with teacher annealing", "revision": None},
        ),
    ]
    assert plan.repo_ids == ["me/bam-student"] and plan.uploads[0].files == expected_files
    assert (out / "checkpoint-2").is_dir() and (out / "training_args.bin").is_file()  # on disk, not uploaded
    meta = metadata_load(out / "README.md")
    assert meta["datasets"] == ["tdavidson/hate_speech_offensive"] and "teacher-annealing" in meta["tags"]
    assert "Clark, Kevin" in (out / "README.md").read_text()


def test_push_to_hub_argument_does_not_touch_the_network_before_training(tmp_path, monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("no repository may be created while the trainer is built or trains")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)
    trainer = annealing_trainer(tmp_path, push_to_hub=True, hub_model_id="me/x", hub_strategy="end")
    assert trainer.hub_model_id == "me/x"
    trainer.train()  # saves a checkpoint per epoch; hub_strategy="end": no intermediate push
    assert (tmp_path / "bam-student" / "checkpoint-2").is_dir()
    assert not (tmp_path / "bam-student" / "README.md").exists()  # no checkpoint push planned either
    assert trainer.hub_pusher.plans == [] and trainer.hub_pusher.failures == []


def test_offline_push_fails_once_after_a_complete_local_save(tmp_path):
    trainer = annealing_trainer(tmp_path, hub_model_id="me/bam-student", save_strategy="no")
    trainer.train()
    with pytest.raises(HubPushError) as error:
        trainer.push_to_hub()  # HF_HUB_OFFLINE=1 (conftest): the real HfApi refuses at once
    out = tmp_path / "bam-student"
    message = str(error.value)
    assert "me/bam-student" in message and f"The local save is complete: {out}" in message
    assert "nothing was lost" in message
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    reloaded = type(trainer.model).from_pretrained(out)
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)


def test_closed_endpoint_gives_the_same_clear_error(tmp_path):
    from huggingface_hub import HfApi

    folder = tmp_path / "m"
    tiny_classifier(0).save_pretrained(folder)
    plan = plan_upload({None: folder}, "me/m")
    with pytest.raises(HubPushError, match=r"failed at me/m .*local save is complete"):
        execute_plan(plan, api=HfApi(endpoint="http://127.0.0.1:9", token="hf_not_a_token"))


def test_mutual_learning_pushes_one_repository_per_student(tmp_path):
    trainer = mutual_trainer(tmp_path, hub_model_id="me/ddml-davidson")
    trainer.train()
    api = RecordingApi()
    plan = trainer.push_to_hub(api=api, student_pattern="{repo_id}-{student}")
    assert plan.repo_ids == ["me/ddml-davidson-a", "me/ddml-davidson-b"]
    commits = [c for c in api.calls if c[0] == "create_commit"]
    assert [c[1] for c in commits] == plan.repo_ids
    for name, (_, _, info) in zip("ab", commits):
        assert info["files"] == ["README.md", "config.json", "model.safetensors"]
        assert info["message"] == "End of training"
        card = (student_folder(tmp_path / "ddml", name) / "README.md").read_text()
        other = "b" if name == "a" else "a"
        assert f"me/ddml-davidson-{other}" in card  # the peer's repository
        assert "10.3390/e27040417" in card
        assert (
            metadata_load(student_folder(tmp_path / "ddml", name) / "README.md")["model_name"]
            == f"ddml-davidson-{name}"
        )


def test_partial_failure_names_what_was_pushed(tmp_path):
    trainer = mutual_trainer(tmp_path, hub_model_id="me/ddml")
    trainer.train()
    with pytest.raises(HubPushError, match="Already pushed: me/ddml-a.*local save is complete"):
        trainer.push_to_hub(api=RecordingApi(fail_on="me/ddml-b"))


def test_plan_folder_excludes_training_bookkeeping(tmp_path):
    for name in (
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "log_history.json",
        "stage.json",
        "training_complete.json",
        "training_args.bin",
        "projections.safetensors",
        "_tmp",
        ".hidden",
        "checkpoint-4/model.safetensors",
        "runs/events.out",
        "extra/notes.txt",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    upload = plan_folder(tmp_path, "me/x", "msg")
    assert upload.files == [
        "config.json",
        "extra/notes.txt",
        "log_history.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert "checkpoint-*" in EXCLUDED_PATTERNS
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="No model weights"):
        plan_folder(tmp_path, "me/x")


def test_student_repository_names():
    assert student_repo_id("{repo_id}-{student}", "me/ddml", "xlmr") == "me/ddml-xlmr"
    assert student_repo_id("org/{student}-hate", "me/ddml", "mbert") == "org/mbert-hate"
    with pytest.raises(ValueError, match="only use"):
        student_repo_id("{repo}-{student}", "me/ddml", "a")
    with pytest.raises(ValueError, match="invalid repository id"):
        student_repo_id("{repo_id}/{student}", "me/ddml", "a")
    with pytest.raises(FileNotFoundError, match="No saved student 'a'"):
        student_folder(Path("/nonexistent-student-folder"), "a")


def test_same_repository_for_two_students_is_refused(tmp_path):
    for name in ("a", "b"):
        tiny_classifier(0).save_pretrained(tmp_path / name)
    with pytest.raises(ValueError, match="same repository"):
        plan_upload({"a": tmp_path / "a", "b": tmp_path / "b"}, "me/x", student_pattern="{repo_id}")


def test_plan_is_json_serialisable(tmp_path):
    tiny_classifier(0).save_pretrained(tmp_path / "m")
    plan = plan_upload({None: tmp_path / "m"}, "me/m", "msg")
    assert json.loads(json.dumps(plan.to_dict()))["uploads"][0]["repo_id"] == "me/m"
    assert "me/m <- " in plan.describe()


def test_push_command_dry_run_and_offline(tmp_path, capsys):
    from distil_trainers.papers.cli import main

    run = tmp_path / "ddml"
    for seed, name in enumerate("ab"):
        tiny_classifier(seed).save_pretrained(run / name)
    (run / "students.json").write_text(json.dumps({"students": ["a", "b"]}))
    (run / "a" / "training_complete.json").write_text("{}")
    code = main(["push", str(run), "--repo_id", "me/ddml", "--dataset", "davidson", "--dry_run"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "me/ddml-a <- " in printed and "me/ddml-b <- " in printed
    meta = metadata_load(run / "b" / "README.md")
    assert meta["model_name"] == "ddml-b" and meta["datasets"] == ["tdavidson/hate_speech_offensive"]
    assert "me/ddml-a" in (run / "b" / "README.md").read_text()  # the peer's repository
    code = main(["push", str(run), "--repo_id", "me/ddml"])  # HF_HUB_OFFLINE=1
    assert code == 1
    assert f"The local save is complete: {run}" in capsys.readouterr().err


def test_recipe_helpers(tmp_path, capsys):
    from distil_trainers.cards import CardContext
    from distil_trainers.hub import push_recipe_models, split_push_argument

    args = AnnealingArguments(output_dir=str(tmp_path), push_to_hub=True, hub_model_id="me/run", report_to="none")
    stripped, push = split_push_argument(args)
    assert push and not stripped.push_to_hub and stripped.hub_model_id == "me/run"
    assert split_push_argument(stripped) == (stripped, False)
    tiny_classifier(0).save_pretrained(tmp_path / "student")
    card = CardContext(model_name="ignored", method="bam")
    api = RecordingApi()
    plan = push_recipe_models(stripped, {None: tmp_path / "student"}, {None: card}, api=api)
    assert plan.repo_ids == ["me/run"] and api.calls[-1][2]["files"] == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    assert metadata_load(tmp_path / "student" / "README.md")["model_name"] == "run"  # named after its repository
    with pytest.raises(SystemExit) as stop:  # offline: one message, status 1, the files stay
        push_recipe_models(stripped, {None: tmp_path / "student"}, {None: card})
    assert stop.value.code == 1
    assert "The local save is complete" in capsys.readouterr().err


# ---- hub_strategy: pushes while training ------------------------------------------------------------------------------


def sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class PlanRecorder:
    """Replaces distil_trainers.hub.execute_plan: records every upload of every executed plan (repository, folder in
    the repository, files, commit message) and the hash of each uploaded weights file at the moment of the upload."""

    def __init__(self):
        self.calls = []

    def __call__(self, plan, token=None, private=None, revision=None, api=None):
        uploads = []
        for u in plan.uploads:
            weights = {f: sha256(Path(u.folder) / f) for f in u.files if f.endswith("model.safetensors")}
            uploads.append((u.repo_id, u.path_in_repo, list(u.files), u.commit_message, weights))
        self.calls.append(uploads)
        return []


def test_every_save_pushes_each_checkpoint_student_and_card(tmp_path, monkeypatch):
    import distil_trainers.hub as hub

    recorder = PlanRecorder()
    monkeypatch.setattr(hub, "execute_plan", recorder)
    trainer = annealing_trainer(
        tmp_path, push_to_hub=True, hub_model_id="me/bam", hub_strategy="every_save", hub_always_push=True,
        save_strategy="steps", save_steps=1, learning_rate=1e-2,
    )
    trainer.hub_card_kwargs = {"datasets": ["davidson"]}
    trainer.train()  # 16 examples, batch 8: checkpoints at steps 1 and 2
    out = tmp_path / "bam-student"
    assert len(recorder.calls) == 2
    for step, uploads in zip((1, 2), recorder.calls):
        assert [(repo, where, files, message) for repo, where, files, message, _ in uploads] == [
            ("me/bam", "", ["README.md", "config.json", "model.safetensors"], f"Training in progress, step {step}")
        ]
        # the student pushed at step N is the one of checkpoint-N (copied to output_dir first, as Trainer does)
        assert uploads[0][4]["model.safetensors"] == sha256(out / f"checkpoint-{step}" / "model.safetensors")
    assert sha256(out / "checkpoint-1" / "model.safetensors") != sha256(out / "checkpoint-2" / "model.safetensors")
    meta = metadata_load(out / "README.md")
    assert meta["model_name"] == "bam" and meta["datasets"] == ["tdavidson/hate_speech_offensive"]
    assert trainer.hub_pusher.failures == []


@pytest.mark.parametrize("strategy", ["checkpoint", "all_checkpoints"])
def test_checkpoint_strategies_also_push_the_checkpoint_folder(tmp_path, monkeypatch, strategy):
    import distil_trainers.hub as hub

    recorder = PlanRecorder()
    monkeypatch.setattr(hub, "execute_plan", recorder)
    trainer = annealing_trainer(
        tmp_path, push_to_hub=True, hub_model_id="me/bam", hub_strategy=strategy, hub_always_push=True,
        save_strategy="epoch", num_train_epochs=2,
    )
    trainer.train()  # checkpoints at steps 2 (epoch 1) and 4 (epoch 2)
    assert len(recorder.calls) == 2
    for epoch, step, uploads in zip((1, 2), (2, 4), recorder.calls):
        (repo, where, files, message, _), (c_repo, c_where, c_files, c_message, c_weights) = uploads
        assert (repo, where, message) == ("me/bam", "", f"Training in progress, epoch {epoch}")
        assert files == ["README.md", "config.json", "model.safetensors"]
        assert c_repo == "me/bam" and c_message == f"Training in progress, epoch {epoch}, checkpoint"
        assert c_where == ("last-checkpoint" if strategy == "checkpoint" else f"checkpoint-{step}")
        # everything Trainer needs to resume
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin",
                "rng_state.pth", "config.json"} <= set(c_files)
        checkpoint = tmp_path / "bam-student" / f"checkpoint-{step}"
        assert c_weights["model.safetensors"] == sha256(checkpoint / "model.safetensors")


class FakeHub:
    """A stand-in for HfApi that keeps what is committed in a local folder (<root>/<repo_id>/<path_in_repo>)."""

    def __init__(self, root):
        self.root = Path(root)
        self.commits = []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        (self.root / repo_id).mkdir(parents=True, exist_ok=True)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def create_commit(self, repo_id, operations, commit_message, token=None, revision=None, **kwargs):
        import shutil

        for op in operations:
            target = self.root / repo_id / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(op.path_or_fileobj, target)
        self.commits.append((repo_id, commit_message, sorted(op.path_in_repo for op in operations)))
        return f"commit:{repo_id}"


def test_training_resumes_from_the_pushed_last_checkpoint(tmp_path):
    hub = FakeHub(tmp_path / "hub")
    trainer = annealing_trainer(
        tmp_path, push_to_hub=True, hub_model_id="me/bam", hub_strategy="checkpoint", hub_always_push=True,
        save_strategy="epoch",
    )
    trainer.hub_api = hub
    trainer.train()
    pushed = tmp_path / "hub" / "me" / "bam" / "last-checkpoint"
    assert json.loads((pushed / "trainer_state.json").read_text())["global_step"] == 2
    # another initialisation: only what is loaded from the pushed checkpoint makes the first two steps equal
    resumed = annealing_trainer(tmp_path / "elsewhere", student_seed=7, num_train_epochs=2, save_strategy="no")
    resumed.train(resume_from_checkpoint=str(pushed))
    assert resumed.state.global_step == 4
    first = [h for h in trainer.state.log_history if "loss" in h]
    again = [h for h in resumed.state.log_history if "loss" in h]
    assert [h["step"] for h in again] == [1, 2, 3, 4] and again[:2] == first
    reloaded = type(trainer.model).from_pretrained(tmp_path / "hub" / "me" / "bam")  # the student at the root
    for key, value in trainer.model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[key], value)


def test_mutual_learning_pushes_every_student_at_every_save(tmp_path, monkeypatch):
    import distil_trainers.hub as hub

    recorder = PlanRecorder()
    monkeypatch.setattr(hub, "execute_plan", recorder)
    trainer = mutual_trainer(
        tmp_path, push_to_hub=True, hub_model_id="me/ddml", hub_strategy="checkpoint", hub_always_push=True,
        save_strategy="steps", save_steps=1,
    )
    trainer.hub_student_pattern = "org/{student}-hate"
    trainer.train()  # 8 examples, batch 4: checkpoints at steps 1 and 2
    assert len(recorder.calls) == 2
    out = tmp_path / "ddml"
    for step, uploads in zip((1, 2), recorder.calls):
        message = f"Training in progress, step {step}"
        students = [(repo, where, files, msg) for repo, where, files, msg, _ in uploads[:2]]
        assert students == [
            ("org/a-hate", "", ["README.md", "config.json", "model.safetensors"], message),
            ("org/b-hate", "", ["README.md", "config.json", "model.safetensors"], message),
        ]
        for name, upload in zip("ab", uploads):
            assert upload[4]["model.safetensors"] == sha256(out / f"checkpoint-{step}" / name / "model.safetensors")
        repo, where, files, msg, _ = uploads[2]  # the run's checkpoint: every student and the shared state
        assert (repo, where, msg) == ("me/ddml", "last-checkpoint", message + ", checkpoint")
        assert {"a/model.safetensors", "b/model.safetensors", "students.json", "optimizer.pt"} <= set(files)
    assert "org/b-hate" in (out / "a" / "README.md").read_text()  # the card names its peer's repository


def test_offline_during_training_warns_once_and_training_finishes(tmp_path, caplog):
    import logging

    trainer = annealing_trainer(
        tmp_path, push_to_hub=True, hub_model_id="me/bam", hub_strategy="all_checkpoints", hub_always_push=True,
        save_strategy="steps", save_steps=1,
    )
    with caplog.at_level(logging.INFO, logger="distil_trainers.hub"):
        trainer.train()  # HF_HUB_OFFLINE=1 (conftest): the real HfApi refuses every push
    out = tmp_path / "bam-student"
    assert trainer.state.global_step == 2
    for step in (1, 2):
        assert (out / f"checkpoint-{step}" / "model.safetensors").is_file()
        assert (out / f"checkpoint-{step}" / "optimizer.pt").is_file()
    warnings = [r for r in caplog.records if r.name == "distil_trainers.hub" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    text = warnings[0].getMessage()
    assert "Pushing checkpoint-1 to the Hugging Face Hub failed at me/bam" in text
    assert "Training continues" in text and f"saved in {out / 'checkpoint-1'}" in text
    assert len(trainer.hub_pusher.failures) == 2  # the second failure is logged at INFO level only
    with pytest.raises(HubPushError, match="The local save is complete"):  # the final push still raises
        trainer.push_to_hub()
    assert (out / "model.safetensors").is_file()


def test_a_save_during_a_running_push_is_skipped_unless_hub_always_push(tmp_path, monkeypatch):
    import threading

    from transformers import TrainerCallback

    import distil_trainers.hub as hub

    release, calls = threading.Event(), []

    def slow_upload(plan, **kwargs):
        calls.append(plan.uploads[0].commit_message)
        assert release.wait(timeout=60)
        return []

    class Release(TrainerCallback):
        def on_train_end(self, args, state, control, **kwargs):
            release.set()

    monkeypatch.setattr(hub, "execute_plan", slow_upload)
    trainer = annealing_trainer(
        tmp_path, push_to_hub=True, hub_model_id="me/bam", save_strategy="steps", save_steps=1
    )  # Trainer's default hub_strategy: every_save
    trainer.add_callback(Release())
    trainer.train()
    assert calls == ["Training in progress, step 1"]  # step 2 was saved while step 1 was still being pushed
    assert len(trainer.hub_pusher.plans) == 1 and trainer.hub_pusher.failures == []


# --------------------------------------------------------------------------------------------------------------------
# Rationale trainers (a TRL SFTTrainer underneath): the same Hub path
# --------------------------------------------------------------------------------------------------------------------


def rationale_trainer(tmp_path, **overrides):
    from rationale_fixtures import rationale_dataset, sft_args, tiny_llama, tiny_tokenizer

    from distil_trainers import RationaleSFTTrainer

    tok = tiny_tokenizer()
    args = sft_args(tmp_path, output_dir=str(tmp_path / "rationale-student"), max_steps=2, **overrides)
    return RationaleSFTTrainer(tiny_llama(tok, seed=1), args=args, train_dataset=rationale_dataset(),
                               processing_class=tok)  # fmt: skip


def test_rationale_trainer_pushes_its_student_with_this_librarys_card(tmp_path, monkeypatch):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("no repository may be created while the trainer is built or trains")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", refuse)
    trainer = rationale_trainer(tmp_path, push_to_hub=True, hub_model_id="me/rationale-student", hub_strategy="end",
                                alpha=0.3)  # fmt: skip
    assert trainer.hub_model_id == "me/rationale-student"
    trainer.train()
    api = RecordingApi()
    plan = trainer.push_to_hub(api=api, datasets=["davidson"])
    (create, repo, _), (commit, repo_again, upload) = api.calls
    assert (create, repo, commit, repo_again) == ("create_repo", "me/rationale-student", "create_commit",
                                                  "me/rationale-student")  # fmt: skip
    assert {"README.md", "config.json", "model.safetensors"} <= set(upload["files"])
    assert "training_args.bin" not in upload["files"] and upload["message"] == "End of training"
    assert plan.repo_ids == ["me/rationale-student"]
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
