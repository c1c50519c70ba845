"""Run by tests/test_features.py, once as one process and once under `torchrun --nproc_per_node 2`: a few
AnnealingTrainer steps with feature matches that need projections (the student is narrower than the teacher); the
main process saves the final student and projection weights and the log history to the given directory."""

from __future__ import annotations

import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))
from conftest import random_classification_dataset, tiny_bert_config, tiny_classifier  # noqa: E402
from transformers import BertForSequenceClassification  # noqa: E402

from distil_trainers import AnnealingArguments, AnnealingTrainer  # noqa: E402


def main(out: str, per_device_batch: int) -> None:
    torch.manual_seed(1)
    config = tiny_bert_config(layers=1)
    config.hidden_size, config.intermediate_size = 16, 20
    student = BertForSequenceClassification(config)
    matches = [
        {"student_layer": 1, "teacher_layer": 2, "feature": "hidden", "loss": "mse"},
        {"student_layer": 1, "teacher_layer": 2, "feature": "cls", "loss": "kl"},
        {"student_layer": 1, "teacher_layer": 2, "feature": "hidden", "loss": "similarity_kl"},
    ]
    args = AnnealingArguments(
        output_dir=out, per_device_train_batch_size=per_device_batch, max_steps=4, learning_rate=0.5, optim="sgd",
        lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0,
        disable_tqdm=True, dataloader_drop_last=True, annealing="bam", feature_matches=matches,
    )
    trainer = AnnealingTrainer(model=student, teacher_model=tiny_classifier(0), args=args,
                               train_dataset=random_classification_dataset(n=32, masked=5))
    trainer.train()
    if trainer.args.process_index == 0:
        weights = dict(trainer.student.state_dict())  # the student alone (trainer.model also holds the projections)
        weights.update({f"projections.{k}": v for k, v in trainer.feature_distiller.projections.state_dict().items()})
        save_file({k: v.detach().contiguous() for k, v in weights.items()}, os.path.join(out, "final.safetensors"))
        with open(os.path.join(out, "log.json"), "w") as f:
            json.dump({"world_size": trainer.args.world_size, "logs": trainer.state.log_history}, f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
