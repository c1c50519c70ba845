"""Run by tests/test_ddp.py, once as a single process and once under `torchrun --nproc_per_node 2`: a few
MutualLearningTrainer / AnnealingTrainer steps on tiny models, then the final weights and the log history are saved
(by the main process) to the output directory given on the command line. Kind ``annealing_cached`` trains without
the teacher, on the teacher-output cache given as the fourth argument."""

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


def annealing_data():
    data = random_classification_dataset(n=32, masked=5)
    return data.add_column("id", [f"ex{i}" for i in range(len(data))])


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
    elif kind == "multitask":  # two tasks of unequal sizes, one task per optimizer step on every process
        from distil_trainers.data import concatenate_tasks
        from distil_trainers.models import MultiTaskConfig, MultiTaskModel

        def model(seed):
            torch.manual_seed(seed)
            config = MultiTaskConfig(encoder=tiny_bert_config(layers=1).to_dict(), tasks={"sentiment": 2, "hate": 3},
                                     classifier_dropout=0.0)  # no dropout: the same forward in 1 and 2 processes
            return MultiTaskModel(config)

        data = concatenate_tasks({"sentiment": random_classification_dataset(n=16, num_labels=2, seed=3),
                                  "hate": random_classification_dataset(n=8, num_labels=3, seed=4)})
        trainer = AnnealingTrainer(model=model(1), teacher_model=model(0), train_dataset=data,
                                   args=AnnealingArguments(annealing="bam", **{**common, "max_steps": 6}))
    else:
        teacher = dict(teacher_outputs=cache) if kind == "annealing_cached" else dict(teacher_model=tiny_classifier(0))
        trainer = AnnealingTrainer(
            model=tiny_classifier(1), args=AnnealingArguments(annealing="bam", **common),
            train_dataset=annealing_data(), **teacher,
        )
    trainer.train()
    if trainer.args.process_index == 0:
        weights = {k: v.detach().contiguous() for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()}
        save_file(weights, os.path.join(out, "final.safetensors"))
        with open(os.path.join(out, "log.json"), "w") as f:
            json.dump({"world_size": trainer.args.world_size, "logs": trainer.state.log_history,
                       "tasks": getattr(trainer, "seen_tasks", None)}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:])
