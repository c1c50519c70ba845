"""The Hub token never leaves the machine: no ``training_args.bin`` on disk holds it, no byte handed to the upload
holds it (checkpoint pushes of every ``hub_strategy`` and the final push), and a checkpoint saved without it still
resumes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from conftest import random_classification_dataset, tiny_classifier
from datasets import Dataset

from distil_trainers import AnnealingArguments, AnnealingTrainer, MutualLearningArguments, MutualLearningTrainer
from distil_trainers.hub import HubPushError, execute_plan, plan_upload

SECRET = "hf_secret_token_123"


class BytesRecordingApi:
    """Stands in for huggingface_hub.HfApi: keeps every byte each commit would upload (``path_or_fileobj`` read from
    disk at commit time), never touches the network."""

    def __init__(self):
        self.uploaded: list[tuple[str, str, bytes]] = []  # (repo_id, path_in_repo, content)
        self.commits: list[tuple[str, str]] = []  # (repo_id, commit message)
        self.tokens: list = []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        self.tokens.append(token)
        return type("RepoUrl", (), {"repo_id": repo_id})()

    def create_commit(self, repo_id, operations, commit_message, token=None, revision=None, **kwargs):
        self.tokens.append(token)
        for op in operations:
            source = op.path_or_fileobj
            if isinstance(source, (str, Path)):
                content = Path(source).read_bytes()
            elif isinstance(source, bytes):
                content = source
            else:
                content = source.read()
            self.uploaded.append((repo_id, op.path_in_repo, content))
        self.commits.append((repo_id, commit_message))
        return f"commit:{repo_id}"

    def paths(self) -> set[str]:
        return {path for _, path, _ in self.uploaded}


def assert_nothing_uploaded_holds_the_token(api: BytesRecordingApi) -> None:
    assert api.uploaded, "nothing was uploaded"
    leaks = [(repo, path) for repo, path, content in api.uploaded if SECRET.encode() in content]
    assert leaks == []
    assert SECRET in api.tokens  # the token was still used to authenticate


def assert_no_training_args_on_disk_holds_the_token(folder: Path) -> list[Path]:
    saved = sorted(folder.rglob("training_args.bin"))
    assert saved, f"no training_args.bin below {folder}"
    for path in saved:
        assert SECRET.encode() not in path.read_bytes(), path
        args = torch.load(path, weights_only=False)
        assert args.hub_token is None and args.push_to_hub and args.hub_model_id
    return saved


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def annealing_trainer(output_dir, student_seed=1, **overrides):
    args = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        num_train_epochs=1,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="steps",
        save_steps=1,
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id="me/bam",
        hub_token=SECRET,
        hub_always_push=True,
    )
    args.update(overrides)
    return AnnealingTrainer(
        model=tiny_classifier(student_seed),
        teacher_model=tiny_classifier(0),
        args=AnnealingArguments(**args),
        train_dataset=random_classification_dataset(n=16),
    )


def mutual_trainer(output_dir, **overrides):
    g = torch.Generator().manual_seed(0)
    data = {}
    for name in ("a", "b", "teacher"):
        data[f"{name}_input_ids"] = torch.randint(1, 99, (8, 6), generator=g).tolist()
        data[f"{name}_attention_mask"] = [[1] * 6] * 8
    data["labels"] = [row[0] % 3 for row in data["a_input_ids"]]
    args = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        num_train_epochs=1,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        save_strategy="steps",
        save_steps=1,
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id="me/ddml",
        hub_token=SECRET,
        hub_always_push=True,
    )
    args.update(overrides)
    return MutualLearningTrainer(
        students={"a": tiny_classifier(1), "b": tiny_classifier(2, layers=1)},
        teacher_model=tiny_classifier(0),
        args=MutualLearningArguments(**args),
        train_dataset=Dataset.from_dict(data),
        data_collator=lambda rows: {k: torch.tensor([r[k] for r in rows]) for k in rows[0]},
    )


@pytest.mark.parametrize("strategy", ["checkpoint", "all_checkpoints", "every_save"])
def test_annealing_pushes_never_carry_the_token(tmp_path, strategy):
    api = BytesRecordingApi()
    out = tmp_path / "bam-student"
    trainer = annealing_trainer(out, hub_strategy=strategy)
    trainer.hub_api = api
    trainer.train()  # 16 examples, batch 8: checkpoints at steps 1 and 2, each pushed
    assert trainer.hub_pusher.failures == []
    trainer.push_to_hub()
    assert trainer.args.hub_token == SECRET  # only what is written is scrubbed
    assert ("me/bam", "End of training") in api.commits
    if strategy == "checkpoint":
        assert "last-checkpoint/training_args.bin" in api.paths()
    elif strategy == "all_checkpoints":
        assert {"checkpoint-1/training_args.bin", "checkpoint-2/training_args.bin"} <= api.paths()
    else:
        assert not any(p.endswith("training_args.bin") for p in api.paths())
    assert_nothing_uploaded_holds_the_token(api)
    saved = assert_no_training_args_on_disk_holds_the_token(out)
    assert {p.parent.name for p in saved} == {"bam-student", "checkpoint-1", "checkpoint-2"}

    # the scrubbed checkpoint resumes; the token of the resumed run is kept out of its files too
    resumed = annealing_trainer(tmp_path / "resumed", student_seed=7, num_train_epochs=2, hub_strategy=strategy)
    again = BytesRecordingApi()
    resumed.hub_api = again
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert resumed.state.global_step == 4 and resumed.hub_pusher.failures == []
    first = [h for h in trainer.state.log_history if "loss" in h]
    assert [h for h in resumed.state.log_history if "loss" in h][:2] == first
    assert_nothing_uploaded_holds_the_token(again)
    assert_no_training_args_on_disk_holds_the_token(tmp_path / "resumed")


def test_mutual_learning_pushes_never_carry_the_token(tmp_path):
    api = BytesRecordingApi()
    out = tmp_path / "ddml"
    trainer = mutual_trainer(out, hub_strategy="checkpoint")
    trainer.hub_api = api
    trainer.train()  # 8 examples, batch 4: checkpoints at steps 1 and 2
    assert trainer.hub_pusher.failures == []
    trainer.push_to_hub()
    assert trainer.args.hub_token == SECRET
    assert "last-checkpoint/training_args.bin" in api.paths()
    assert {repo for repo, _ in api.commits} == {"me/ddml", "me/ddml-a", "me/ddml-b"}
    assert_nothing_uploaded_holds_the_token(api)
    saved = assert_no_training_args_on_disk_holds_the_token(out)
    assert {p.parent.name for p in saved} == {"ddml", "checkpoint-1", "checkpoint-2"}

    resumed = mutual_trainer(tmp_path / "resumed", num_train_epochs=2, hub_strategy="all_checkpoints")
    again = BytesRecordingApi()
    resumed.hub_api = again
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert resumed.state.global_step == 4 and resumed.hub_pusher.failures == []
    first = [h for h in trainer.state.log_history if "loss" in h]
    assert [h for h in resumed.state.log_history if "loss" in h][:2] == first
    assert_nothing_uploaded_holds_the_token(again)
    assert_no_training_args_on_disk_holds_the_token(tmp_path / "resumed")


def test_rationale_trainer_checkpoints_do_not_hold_the_token(tmp_path):
    from rationale_fixtures import rationale_dataset, sft_args, tiny_llama, tiny_tokenizer

    from distil_trainers import RationaleSFTTrainer

    tok = tiny_tokenizer()
    out = tmp_path / "rationale-student"
    args = sft_args(tmp_path, output_dir=str(out), max_steps=1, save_strategy="steps", save_steps=1,
                    push_to_hub=True, hub_model_id="me/rationale", hub_token=SECRET, hub_strategy="checkpoint",
                    pad_token="<pad>", eos_token="</s>")  # fmt: skip
    trainer = RationaleSFTTrainer(tiny_llama(tok, seed=1), args=args, train_dataset=rationale_dataset(),
                                  processing_class=tok)  # fmt: skip
    api = BytesRecordingApi()
    trainer.hub_api = api
    trainer.train()
    trainer.push_to_hub()
    assert trainer.hub_pusher.failures == [] and "last-checkpoint/training_args.bin" in api.paths()
    assert_nothing_uploaded_holds_the_token(api)
    for path in assert_no_training_args_on_disk_holds_the_token(out):
        saved = torch.load(path, weights_only=False)
        assert (saved.pad_token, saved.eos_token) == ("<pad>", "</s>")  # tokenizer tokens, no secrets


def test_args_without_secrets_is_a_scrubbed_copy():
    from distil_trainers.hub import args_without_secrets

    args = AnnealingArguments(
        output_dir="out", report_to="none", hub_token=SECRET, learning_rate=3e-4,
        model_init_kwargs={"token": SECRET, "revision": "main"},
    )  # fmt: skip
    clean = args_without_secrets(args)
    assert clean is not args and clean.hub_token is None and clean.learning_rate == 3e-4
    assert clean.model_init_kwargs == {"revision": "main"}
    assert SECRET.encode() not in pickle_bytes(clean)
    assert args.hub_token == SECRET and args.model_init_kwargs["token"] == SECRET  # the run's own args untouched


def pickle_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_an_upload_holding_the_token_is_refused_before_anything_is_pushed(tmp_path):
    folder = tmp_path / "m"
    tiny_classifier(0).save_pretrained(folder)
    (folder / "notes.txt").write_text(f"pushed with {SECRET}\n")
    plan = plan_upload({None: folder}, "me/m")
    api = BytesRecordingApi()
    with pytest.raises(HubPushError, match=r"notes\.txt.*holds the Hugging Face Hub token") as error:
        execute_plan(plan, token=SECRET, api=api)
    assert SECRET not in str(error.value) and error.value.repo_id == "me/m"
    assert api.uploaded == [] and api.commits == [] and api.tokens == []  # not even a repository was created
    (folder / "notes.txt").write_text("pushed without it\n")
    execute_plan(plan, token=SECRET, api=api)
    assert "notes.txt" in api.paths()


def test_a_checkpoint_push_holding_the_token_is_refused_and_training_goes_on(tmp_path, monkeypatch, caplog):
    import logging

    import distil_trainers.hub as hub

    monkeypatch.setattr(hub, "args_without_secrets", lambda args: args)  # as Trainer writes training_args.bin
    api = BytesRecordingApi()
    out = tmp_path / "bam-student"
    trainer = annealing_trainer(out, hub_strategy="checkpoint")
    trainer.hub_api = api
    with caplog.at_level(logging.INFO, logger="distil_trainers.hub"):
        trainer.train()
    assert trainer.state.global_step == 2 and len(trainer.hub_pusher.failures) == 2
    assert api.uploaded == [] and api.commits == []  # not even the students of those checkpoints
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == hub.__name__]
    assert len(warnings) == 1 and SECRET not in warnings[0]
    assert f"{out / 'checkpoint-1' / 'training_args.bin'} holds the Hugging Face Hub token" in warnings[0]
