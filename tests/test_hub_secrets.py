"""The Hub token never leaves the machine: no ``training_args.bin`` on disk holds it, no byte handed to
``HfApi.upload_folder`` holds it (checkpoint pushes of every ``hub_strategy`` and the final push), and a checkpoint
saved without it still resumes."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from conftest import random_classification_dataset, tiny_classifier
from datasets import Dataset
from hub_fixtures import FakeHub

from distil_trainers import AnnealingArguments, AnnealingTrainer, MutualLearningArguments, MutualLearningTrainer

SECRET = "hf_secret_token_123"


def assert_nothing_uploaded_holds_the_token(hub: FakeHub) -> None:
    assert hub.uploads, "nothing was uploaded"
    leaks = [(repo, where, f) for repo, where, _, _, _, contents in hub.uploads
             for f, data in contents.items() if SECRET.encode() in data]  # fmt: skip
    assert leaks == []
    assert SECRET in hub.tokens  # the token was still used to authenticate


def uploaded_paths(hub: FakeHub) -> set[str]:
    return {f"{where}/{f}" if where else f for _, where, files, _, _, _ in hub.uploads for f in files}


def assert_no_training_args_on_disk_holds_the_token(folder: Path) -> list[Path]:
    saved = sorted(folder.rglob("training_args.bin"))
    assert saved, f"no training_args.bin below {folder}"
    for path in saved:
        assert SECRET.encode() not in path.read_bytes(), path
        args = torch.load(path, weights_only=False)
        assert args.hub_token is None and args.push_to_hub and args.hub_model_id
    return saved


COMMON = dict(report_to="none", use_cpu=True, save_strategy="steps", save_steps=1, disable_tqdm=True, logging_steps=1,
              push_to_hub=True, hub_token=SECRET, hub_always_push=True, num_train_epochs=1)  # fmt: skip


def annealing_trainer(output_dir, student_seed=1, **overrides):
    args = AnnealingArguments(**{**COMMON, "output_dir": str(output_dir), "per_device_train_batch_size": 8,
                                 "hub_model_id": "me/bam", **overrides})  # fmt: skip
    return AnnealingTrainer(model=tiny_classifier(student_seed), teacher_model=tiny_classifier(0), args=args,
                            train_dataset=random_classification_dataset(n=16))  # fmt: skip


def mutual_trainer(output_dir, **overrides):
    g = torch.Generator().manual_seed(0)
    data = {}
    for name in ("a", "b", "teacher"):
        data[f"{name}_input_ids"] = torch.randint(1, 99, (8, 6), generator=g).tolist()
        data[f"{name}_attention_mask"] = [[1] * 6] * 8
    data["labels"] = [row[0] % 3 for row in data["a_input_ids"]]
    args = MutualLearningArguments(**{**COMMON, "output_dir": str(output_dir), "per_device_train_batch_size": 4,
                                      "hub_model_id": "me/ddml", **overrides})  # fmt: skip
    return MutualLearningTrainer(
        students={"a": tiny_classifier(1), "b": tiny_classifier(2, layers=1)},
        teacher_model=tiny_classifier(0),
        args=args,
        train_dataset=Dataset.from_dict(data),
        data_collator=lambda rows: {k: torch.tensor([r[k] for r in rows]) for k in rows[0]},
    )


@pytest.mark.parametrize("strategy", ["checkpoint", "all_checkpoints", "every_save"])
def test_annealing_pushes_never_carry_the_token(tmp_path, monkeypatch, strategy):
    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    out = tmp_path / "bam-student"
    trainer = annealing_trainer(out, hub_strategy=strategy)
    trainer.train()  # 16 examples, batch 8: checkpoints at steps 1 and 2, each pushed
    trainer.push_to_hub()
    assert trainer.args.hub_token == SECRET  # only what is written is scrubbed
    assert "End of training" in [message for _, _, _, message in hub.summary()]
    paths = uploaded_paths(hub)
    assert "training_args.bin" in paths  # Trainer uploads output_dir's copy, written without the token
    if strategy == "checkpoint":
        assert "last-checkpoint/training_args.bin" in paths
    elif strategy == "all_checkpoints":
        assert {"checkpoint-1/training_args.bin", "checkpoint-2/training_args.bin"} <= paths
    assert_nothing_uploaded_holds_the_token(hub)
    saved = assert_no_training_args_on_disk_holds_the_token(out)
    assert {p.parent.name for p in saved} == {"bam-student", "checkpoint-1", "checkpoint-2"}

    # the scrubbed checkpoint resumes; the token of the resumed run is kept out of its files too
    again = FakeHub(tmp_path / "hub-again").install(monkeypatch)
    resumed = annealing_trainer(tmp_path / "resumed", student_seed=7, num_train_epochs=2, hub_strategy=strategy)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert resumed.state.global_step == 4
    first = [h for h in trainer.state.log_history if "loss" in h]
    assert [h for h in resumed.state.log_history if "loss" in h][:2] == first
    assert_nothing_uploaded_holds_the_token(again)
    assert_no_training_args_on_disk_holds_the_token(tmp_path / "resumed")


def test_mutual_learning_pushes_never_carry_the_token(tmp_path, monkeypatch):
    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    out = tmp_path / "ddml"
    trainer = mutual_trainer(out, hub_strategy="checkpoint")
    trainer.train()  # 8 examples, batch 4: checkpoints at steps 1 and 2
    trainer.push_to_hub()
    assert trainer.args.hub_token == SECRET
    assert "last-checkpoint/training_args.bin" in uploaded_paths(hub)
    assert {repo for repo, _, _, _ in hub.summary()} == {"me/ddml", "me/ddml-a", "me/ddml-b"}
    assert_nothing_uploaded_holds_the_token(hub)
    saved = assert_no_training_args_on_disk_holds_the_token(out)
    assert {p.parent.name for p in saved} == {"ddml", "checkpoint-1", "checkpoint-2"}

    again = FakeHub(tmp_path / "hub-again").install(monkeypatch)
    resumed = mutual_trainer(tmp_path / "resumed", num_train_epochs=2, hub_strategy="all_checkpoints")
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert resumed.state.global_step == 4
    first = [h for h in trainer.state.log_history if "loss" in h]
    assert [h for h in resumed.state.log_history if "loss" in h][:2] == first
    assert_nothing_uploaded_holds_the_token(again)
    assert_no_training_args_on_disk_holds_the_token(tmp_path / "resumed")


def test_rationale_trainer_checkpoints_do_not_hold_the_token(tmp_path, monkeypatch):
    from rationale_fixtures import rationale_dataset, sft_args, tiny_llama, tiny_tokenizer

    from distil_trainers import RationaleSFTTrainer

    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    tok = tiny_tokenizer()
    out = tmp_path / "rationale-student"
    args = sft_args(tmp_path, output_dir=str(out), max_steps=1, save_strategy="steps", save_steps=1,
                    push_to_hub=True, hub_model_id="me/rationale", hub_token=SECRET, hub_strategy="checkpoint",
                    pad_token="<pad>", eos_token="</s>")  # fmt: skip
    trainer = RationaleSFTTrainer(tiny_llama(tok, seed=1), args=args, train_dataset=rationale_dataset(),
                                  processing_class=tok)  # fmt: skip
    trainer.train()
    trainer.push_to_hub()
    assert "last-checkpoint/training_args.bin" in uploaded_paths(hub)
    assert_nothing_uploaded_holds_the_token(hub)
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


def test_args_read_with_the_token_and_pickle_without_it():
    from distil_trainers.hub import _pickled_without_secrets

    args = AnnealingArguments(output_dir="out", report_to="none", hub_token=SECRET, learning_rate=3e-4)
    view = _pickled_without_secrets(args)
    assert view.hub_token == SECRET and isinstance(view, AnnealingArguments)  # what Trainer pushes with
    loaded = torch.load(io.BytesIO(pickle_bytes(view)), weights_only=False)
    assert SECRET.encode() not in pickle_bytes(view)
    assert type(loaded) is AnnealingArguments and loaded.hub_token is None and loaded.learning_rate == 3e-4


def pickle_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()
