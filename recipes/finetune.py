# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Plain fine-tuning of a text classifier: the teacher the other recipes distil, and the no-distillation baseline.

Usage:

    # the quickstart teacher: all-MiniLM-L6-v2 fine-tuned on Davidson (subsampled, a few minutes on CPU), saved in
    # runs/finetune_quickstart, where the quickstarts of annealing.py, ddml.py and feature_kd.py look for it
    accelerate launch recipes/finetune.py --config recipes/configs/finetune_quickstart.yaml

    # the no-distillation baseline: the 3-layer student (layers 0, 2, 4) trained on the labels alone
    accelerate launch recipes/finetune.py --config recipes/configs/finetune_quickstart.yaml \\
        --layers 0 2 4 --output_dir runs/finetune_minilm3

    # your own data: a csv with a text and a label column (string labels such as hate / none become the classes)
    accelerate launch recipes/finetune.py --config recipes/configs/finetune_quickstart.yaml \\
        --dataset_name my.csv --text_column text --label_column label --output_dir runs/my_teacher

    # push the model (with its card) to the Hub
    accelerate launch recipes/finetune.py --config recipes/configs/finetune_quickstart.yaml \\
        --push_to_hub true --hub_model_id <user>/minilm-davidson
"""

import json
from dataclasses import dataclass, field

from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    TrainingArguments,
)
from trl import TrlParser

from distil_trainers.data import DatasetArguments
from distil_trainers.metrics import build_compute_metrics
from distil_trainers.models import make_student, resolve_model_name_or_path
from distil_trainers.trainers import TaskAwareTrainer


@dataclass
class ScriptArguments(DatasetArguments):
    dataset_name: list[str] = field(
        default_factory=lambda: ["davidson"],
        metadata={"help": "The dataset: a registered name, a csv / tsv / json / jsonl / parquet file, a folder of "
                          "split files, a save_to_disk folder or a Hub id."},
    )
    model_name_or_path: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "Pretrained model (Hub id or path; the packaged MiniLM copy is used when installed)."},
    )
    layers: list[int] | None = field(
        default=None, metadata={"help": "Keep only these encoder layers of the model (e.g. 0 2 4); default: all."}
    )
    max_length: int = field(default=128, metadata={"help": "Truncation length of the texts (tokens)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample the validation and test splits."})
    class_weights: str | None = field(
        default=None, metadata={"help": "Class weights of the cross-entropy: 'balanced' or a JSON list, one per class."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.class_weights not in (None, "balanced"):
            self.class_weights = json.loads(self.class_weights)
        if len(self.dataset_name) != 1:
            raise ValueError(f"finetune.py trains on one dataset, got {self.dataset_name}.")


def main(script_args: ScriptArguments, training_args: TrainingArguments) -> dict:
    # ---- data: the --dataset_name / --text_column / --label_column ... flags ----
    dataset = script_args.load_dataset(seed=training_args.seed)
    names = dataset["train"].features["label"].names

    # ---- model and tokenizer ----
    base = resolve_model_name_or_path(script_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(base)
    labels = {"num_labels": len(names), "id2label": dict(enumerate(names)),
              "label2id": {n: i for i, n in enumerate(names)}}
    if script_args.layers:
        model = make_student(base, script_args.layers, **labels)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(base, **labels)

    def tokenize(batch):
        pair = batch["text_pair"] if "text_pair" in batch else None
        return tokenizer(batch["text"], pair, truncation=True, max_length=script_args.max_length)

    dataset = dataset.map(tokenize, batched=True)

    # ---- train, evaluate, save ----
    trainer = TaskAwareTrainer(  # Trainer, plus class_weights on the cross-entropy
        model=model,
        class_weights=script_args.class_weights,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=build_compute_metrics(label_names=names),
    )
    trainer.train()
    metrics = {}
    if "test" in dataset:
        metrics = trainer.evaluate(dataset["test"], metric_key_prefix="test")
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
    trainer.save_model(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name[0])
    return metrics


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, TrainingArguments))
    script_args, training_args = parser.parse_args_and_config()
    main(script_args, training_args)
