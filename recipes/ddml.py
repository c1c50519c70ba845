# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Deep distill-mutual learning (DDML, Liu et al. 2025): K >= 2 students of different architectures and tokenizers learn
from the labels, from a frozen fine-tuned teacher and from each other, with ``MutualLearningTrainer``.

Usage:

    # first a teacher (runs/finetune_quickstart), then the quickstart on CPU: a 3-layer MiniLM and a small DistilBERT
    # with its own WordPiece vocabulary, on Davidson (subsampled, a few minutes)
    accelerate launch recipes/finetune.py --config recipes/configs/finetune_quickstart.yaml
    accelerate launch recipes/ddml.py --config recipes/configs/ddml_quickstart.yaml

    # your own data: a csv with a text and a label column (string labels are mapped to the teacher's classes by name)
    accelerate launch recipes/ddml.py --config recipes/configs/ddml_quickstart.yaml \\
        --dataset_name my.csv --text_column text --label_column label --teacher_model runs/my_teacher

    # two CPU processes over gloo (`--cpu --num_processes 2` would silently run one process)
    torchrun --nproc_per_node 2 recipes/ddml.py --config recipes/configs/ddml_quickstart.yaml --use_cpu true

    # push every student with its card: <user>/ddml-davidson-minilm3, <user>/ddml-davidson-wpbert
    accelerate launch recipes/ddml.py --config recipes/configs/ddml_quickstart.yaml \\
        --push_to_hub true --hub_model_id <user>/ddml-davidson

The paper's comparison (teacher fine-tuning, every student also trained alone, the report) is
``accelerate launch -m distil_trainers.papers.ddml_pipeline --config recipes/configs/ddml_pipeline_quickstart.yaml``.
"""

import hashlib
import json
from dataclasses import dataclass, field

import yaml
from transformers import AutoConfig
from trl import TrlParser

from distil_trainers import MutualLearningArguments, MutualLearningTrainer
from distil_trainers.data import DatasetArguments, model_label_names
from distil_trainers.metrics import build_compute_metrics
from distil_trainers.models import resolve_model_name_or_path
from distil_trainers.models.students import build_student

MAKE_A_TEACHER = "accelerate launch recipes/finetune.py --config recipes/configs/finetune_quickstart.yaml"


@dataclass
class ScriptArguments(DatasetArguments):
    dataset_name: list[str] = field(
        default_factory=lambda: ["davidson"],
        metadata={"help": "The dataset: a registered name, a csv / tsv / json / jsonl / parquet file, a folder of "
                          "split files, a save_to_disk folder or a Hub id."},
    )
    teacher_model: str = field(
        default="runs/finetune_quickstart",
        metadata={"help": f"The fine-tuned teacher (path or Hub id); make one with `{MAKE_A_TEACHER}`."},
    )
    students: dict | str | None = field(  # "| None": the command line then takes a JSON / YAML string
        default=None,
        metadata={"help": "{name: spec} (YAML mapping or JSON), at least 2: {base: id} | {base: id, layers: [...]} | "
                          "{architecture: bert|distilbert|roberta, tokenizer_from: id, vocab_size, hidden_size, "
                          "num_layers, num_heads} (a from-scratch model with a vocabulary learnt from the texts)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample the validation and test splits."})

    def __post_init__(self):
        super().__post_init__()
        if len(self.dataset_name) != 1:
            raise ValueError(f"ddml.py trains on one dataset, got {self.dataset_name}.")
        if isinstance(self.students, str):
            self.students = yaml.safe_load(self.students)
        if not isinstance(self.students, dict) or len(self.students) < 2:
            raise ValueError(f"students must map at least 2 names to specs, got {self.students!r}.")


def teacher_config(teacher: str):
    try:
        return AutoConfig.from_pretrained(resolve_model_name_or_path(teacher))
    except (OSError, ValueError):
        raise SystemExit(f"No teacher at {teacher!r}: make one with `{MAKE_A_TEACHER}` "
                         "(or pass --teacher_model <fine-tuned classifier path or Hub id>).") from None


def main(script_args: ScriptArguments, training_args: MutualLearningArguments) -> dict:
    teacher = resolve_model_name_or_path(script_args.teacher_model)
    config = teacher_config(teacher)

    # ---- data: the --dataset_name / --text_column / --label_column ... flags ----
    dataset = script_args.load_dataset(  # the data's classes mapped to the teacher's, by name
        seed=training_args.seed, label_names=model_label_names(config.id2label)
    )
    names = dataset["train"].features["label"].names

    # ---- students, each with its own tokenizer (a new vocabulary is learnt from the training texts) ----
    texts = dataset["train"]["text"][:]
    students, tokenizers = {}, {}
    # several processes: the main one learns and saves each new vocabulary, then the others load it
    with training_args.main_process_first(local=training_args.save_on_each_node, desc="student tokenizers"):
        for name, student_spec in script_args.students.items():
            key = hashlib.sha256(json.dumps([student_spec, texts]).encode()).hexdigest()[:12]  # these texts' vocabulary
            tokenizer_dir = f"{training_args.output_dir}/tokenizers/{name}-{key}"
            students[name], tokenizers[name] = build_student(student_spec, names, texts, tokenizer_dir=tokenizer_dir)

    # ---- train together (the trainer tokenises the raw texts once per model), evaluate, save ----
    trainer = MutualLearningTrainer(
        students=students,
        teacher_model=teacher,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        processing_classes=tokenizers,
        compute_metrics=build_compute_metrics(label_names=names),
    )
    trainer.train()
    metrics = {}
    if "test" in dataset:  # test_<student>_<metric>, test_ensemble_<metric>, test_teacher_<metric>
        metrics = trainer.evaluate(dataset["test"], metric_key_prefix="test")
        trainer.log_metrics("test", metrics)
        trainer.save_metrics("test", metrics)
    trainer.save_model(training_args.output_dir)  # <output_dir>/<student>/, one loadable model per student
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name[0])
    return metrics


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, MutualLearningArguments))
    script_args, training_args = parser.parse_args_and_config()
    main(script_args, training_args)
