# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Feature-level distillation (MKD-BERT as Breazu and Virlan 2025 use it): the student's output logits match the
teacher's (MSE, ``--annealing mse``, or any AnnealingTrainer method) and its hidden features match the teacher's:
KL on the embedding-layer outputs, on the hidden states of every student layer against its uniformly mapped teacher
layer, on the last layers' token-similarity matrices, and with ``--cls_matches true`` on the [CLS] vectors.
``--feature_matches '[{...}]'`` replaces these defaults. The student reads the teacher's tokens (cut from the same
encoder).

Usage:

    # first a teacher (runs/finetune_quickstart), then the quickstart: 3 of its 6 layers, Davidson, a few minutes
    accelerate launch recipes/finetune.py --config recipes/configs/finetune_quickstart.yaml
    accelerate launch recipes/feature_kd.py --config recipes/configs/feature_kd_quickstart.yaml

    # your own data: a csv with a text and a label column (string labels are mapped to the teacher's classes by name)
    accelerate launch recipes/feature_kd.py --config recipes/configs/feature_kd_quickstart.yaml \\
        --dataset_name my.csv --text_column text --label_column label --teacher_model runs/my_teacher

    # FFN distillation without the [CLS] matches, teacher annealing on the outputs
    accelerate launch recipes/feature_kd.py --config recipes/configs/feature_kd_quickstart.yaml \\
        --cls_matches false --annealing bam --output_dir runs/feature_kd_ffn_bam

    # push the student (with its card) to the Hub
    accelerate launch recipes/feature_kd.py --config recipes/configs/feature_kd_quickstart.yaml \\
        --push_to_hub true --hub_model_id <user>/minilm3-ffn-davidson

The paper's comparison (baseline, annealing, FFN, FFN + CLS, born-again generations, the report) is
``accelerate launch -m distil_trainers.papers.feature_kd_pipeline --config
recipes/configs/feature_kd_pipeline_quickstart.yaml``.
"""

import dataclasses
from dataclasses import dataclass, field

from transformers import AutoConfig, AutoTokenizer
from trl import TrlParser

from distil_trainers import AnnealingArguments, AnnealingTrainer, FeatureMatch, make_student, uniform_matches
from distil_trainers.data import DatasetArguments, model_label_names
from distil_trainers.metrics import build_compute_metrics
from distil_trainers.models import resolve_model_name_or_path

MAKE_A_TEACHER = "accelerate launch recipes/finetune.py --config recipes/configs/finetune_quickstart.yaml"


@dataclass
class ScriptArguments(DatasetArguments):
    dataset_name: list[str] = field(
        default_factory=lambda: ["davidson"],
        metadata={"help": "The dataset: a registered name, a csv / tsv / json / jsonl / parquet file, a folder of "
                          "split files, a save_to_disk folder or a Hub id."},
    )
    model_name_or_path: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "The encoder the student is cut from (it must share the teacher's tokenizer)."},
    )
    teacher_model: str = field(
        default="runs/finetune_quickstart",
        metadata={"help": f"The fine-tuned teacher (path or Hub id); make one with `{MAKE_A_TEACHER}`."},
    )
    student_layers: list[int] = field(
        default_factory=lambda: [0, 2, 4], metadata={"help": "Encoder layers of model_name_or_path the student keeps."}
    )
    cls_matches: bool = field(default=True, metadata={"help": "Default matches: also KL on the [CLS] vectors."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample the validation and test splits."})

    def __post_init__(self):
        super().__post_init__()
        if len(self.dataset_name) != 1:
            raise ValueError(f"feature_kd.py trains on one dataset, got {self.dataset_name} (several tasks: "
                             "python -m distil_trainers.papers.feature_kd_pipeline).")


def teacher_config(teacher: str):
    try:
        return AutoConfig.from_pretrained(resolve_model_name_or_path(teacher))
    except (OSError, ValueError):
        raise SystemExit(f"No teacher at {teacher!r}: make one with `{MAKE_A_TEACHER}` "
                         "(or pass --teacher_model <fine-tuned classifier path or Hub id>).") from None


def default_matches(student_layers: int, teacher_layers: int, cls: bool) -> list[dict]:
    """MKD-BERT: embeddings, uniformly mapped hidden states, last-layer token similarities (and [CLS] vectors)."""
    matches = [FeatureMatch(feature="embeddings", loss="kl"),
               *uniform_matches(student_layers, teacher_layers, feature="hidden", loss="kl"),
               FeatureMatch(student_layers, teacher_layers, feature="hidden", loss="similarity_kl")]
    if cls:
        matches += uniform_matches(student_layers, teacher_layers, feature="cls", loss="kl")
    return [m.to_dict() for m in matches]


def main(script_args: ScriptArguments, training_args: AnnealingArguments) -> dict:
    teacher = resolve_model_name_or_path(script_args.teacher_model)
    config = teacher_config(teacher)
    if not training_args.feature_matches:
        matches = default_matches(len(script_args.student_layers), config.num_hidden_layers, script_args.cls_matches)
        training_args = dataclasses.replace(training_args, feature_matches=matches)

    # ---- data: the --dataset_name / --text_column / --label_column ... flags ----
    dataset = script_args.load_dataset(  # the data's classes mapped to the teacher's, by name
        seed=training_args.seed, label_names=model_label_names(config.id2label)
    )
    names = dataset["train"].features["label"].names

    # ---- student: some layers of the encoder ----
    base = resolve_model_name_or_path(script_args.model_name_or_path)
    student = make_student(base, script_args.student_layers, num_labels=len(names), id2label=dict(enumerate(names)),
                           label2id={n: i for i, n in enumerate(names)})

    # ---- distil, evaluate, save ----
    trainer = AnnealingTrainer(
        model=student,
        teacher_model=teacher,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        processing_class=AutoTokenizer.from_pretrained(base),
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
    parser = TrlParser((ScriptArguments, AnnealingArguments))
    script_args, training_args = parser.parse_args_and_config()
    main(script_args, training_args)
