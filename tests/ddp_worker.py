"""Run by tests/test_ddp.py, once as a single process and once under `torchrun --nproc_per_node 2`: a few
MutualLearningTrainer / AnnealingTrainer steps on tiny models, then the final weights and the log history are saved
(by the main process) to the output directory given on the command line, and every process saves the ids of the
examples it trained on (``seen_rank<r>.json``). Kind ``annealing_cached`` trains without the teacher, on the
teacher-output cache given as the fourth argument; ``annealing_epoch`` trains one whole epoch of 32 examples and
``annealing_uneven`` one epoch of 30 (not a multiple of the 4 examples of an optimizer step), both without
``dataloader_drop_last``. Also home of the helpers the other DDP workers share (:func:`record_rows`,
:func:`save_run`)."""

from __future__ import annotations

import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from conftest import random_classification_dataset, tiny_bert_config, tiny_classifier  # noqa: E402

from distil_trainers import (  # noqa: E402
    AnnealingArguments,
    AnnealingTrainer,
    MutualLearningArguments,
    MutualLearningTrainer,
)


def annealing_data(n: int = 32):
    data = random_classification_dataset(n=n, masked=5)
    return data.add_column("id", [f"ex{i}" for i in range(len(data))])


def record_rows(trainer, data, id_column: str = "id") -> list[list[str]]:
    """Make ``trainer`` record, for every training micro-batch its loss reads, the ids of its rows (found by their
    input ids, without padding, among the rows of ``data``: a dataset or a dict of columns). Returns the list it
    fills."""
    ids = list(data[id_column])
    by_tokens = {tuple(tokens): i for tokens, i in zip(data["input_ids"], ids)}
    assert len(by_tokens) == len(set(ids)) == len(ids), "rows with equal input_ids (or ids) cannot be told apart"
    seen: list[list[str]] = []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        if model.training:
            mask = inputs.get("attention_mask")
            rows = inputs["input_ids"] if mask is None else [r[m.bool()] for r, m in zip(inputs["input_ids"], mask)]
            seen.append([by_tokens[tuple(r.tolist())] for r in rows])
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording
    return seen


def save_run(trainer, out: str, seen: list[list[str]] | None = None, weights: dict | None = None) -> None:
    """Every process writes the ids it trained on (``seen_rank<r>.json``, one list per micro-batch); the main process
    the final weights (default: the state dict of the model Trainer trained, unwrapped) and the log history."""
    args = trainer.args
    if seen is not None:
        with open(os.path.join(out, f"seen_rank{args.process_index}.json"), "w") as f:
            json.dump(seen, f)
    if args.process_index == 0:
        if weights is None:
            weights = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        save_file({k: v.detach().contiguous() for k, v in weights.items()}, os.path.join(out, "final.safetensors"))
        with open(os.path.join(out, "log.json"), "w") as f:
            json.dump({"world_size": args.world_size, "logs": trainer.state.log_history,
                       "tasks": getattr(trainer, "seen_tasks", None)}, f)


def main(kind: str, out: str, per_device_batch: int, cache: str | None = None) -> None:
    common = dict(
        output_dir=out, per_device_train_batch_size=per_device_batch, max_steps=4, learning_rate=0.5, optim="sgd",
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0,
        disable_tqdm=True, dataloader_drop_last=True,
    )
    if kind == "ddml":
        data = random_classification_dataset(n=32, masked=0)
        data = data.rename_columns({"input_ids": "a_input_ids", "attention_mask": "a_attention_mask"})
        data = data.add_column("b_input_ids", data["a_input_ids"][:]).add_column("b_attention_mask", data["a_attention_mask"][:])
        data = data.add_column("teacher_input_ids", data["a_input_ids"][:])
        data = data.add_column("teacher_attention_mask", data["a_attention_mask"][:])
        trainer = MutualLearningTrainer(
            students={"a": tiny_classifier(1), "b": tiny_classifier(2, layers=1)}, teacher_model=tiny_classifier(0),
            args=MutualLearningArguments(temperature=2.0, **common), train_dataset=data,
            data_collator=lambda rows: {k: torch.tensor([r[k] for r in rows]) for k in rows[0]},
        )
    elif kind in ("multitask", "multitask_checkpointing"):  # two tasks of unequal sizes, one task per step
        from distil_trainers.data import concatenate_tasks
        from distil_trainers.models import MultiTaskConfig, MultiTaskModel

        def model(seed):
            torch.manual_seed(seed)
            config = MultiTaskConfig(encoder=tiny_bert_config(layers=1).to_dict(), tasks={"sentiment": 2, "hate": 3},
                                     classifier_dropout=0.0)  # no dropout: the same forward in 1 and 2 processes
            return MultiTaskModel(config)

        data = concatenate_tasks({"sentiment": random_classification_dataset(n=16, num_labels=2, seed=3),
                                  "hate": random_classification_dataset(n=8, num_labels=3, seed=4)})
        checkpointing = {"gradient_checkpointing": kind == "multitask_checkpointing"}
        trainer = AnnealingTrainer(model=model(1), teacher_model=model(0), train_dataset=data,
                                   args=AnnealingArguments(annealing="bam", **{**common, "max_steps": 6}, **checkpointing))
    elif kind in ("annealing_epoch", "annealing_uneven"):  # one epoch, every example, no dataloader_drop_last
        epoch = {**common, "max_steps": -1, "num_train_epochs": 1, "dataloader_drop_last": False}
        data = annealing_data(32 if kind == "annealing_epoch" else 30)
        trainer = AnnealingTrainer(model=tiny_classifier(1), teacher_model=tiny_classifier(0), train_dataset=data,
                                   args=AnnealingArguments(annealing="bam", **epoch))
    else:
        teacher = dict(teacher_outputs=cache) if kind == "annealing_cached" else dict(teacher_model=tiny_classifier(0))
        trainer = AnnealingTrainer(
            model=tiny_classifier(1), args=AnnealingArguments(annealing="bam", **common),
            train_dataset=annealing_data(), **teacher,
        )
    columns = trainer.train_dataset.column_names
    seen = record_rows(trainer, trainer.train_dataset) if {"id", "input_ids"} <= set(columns) else None
    trainer.train()
    save_run(trainer, out, seen)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # before exit: gloo's threads must not outlive the group
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:])
