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


def annealing_trainer(tmp_path, **overrides):
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
        model=tiny_classifier(1),
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
    trainer = annealing_trainer(tmp_path, push_to_hub=True, hub_model_id="me/x")
    assert trainer.hub_model_id == "me/x"
    trainer.train()  # saves a checkpoint per epoch: no intermediate push


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
    from distil_trainers.cli import main

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
