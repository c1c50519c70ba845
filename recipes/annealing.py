# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Distil a fine-tuned teacher into a smaller student with teacher annealing (BAM), Annealing-KD or Hinton KD
(``--annealing bam | jafari | kd``), with ``AnnealingTrainer``.

Usage:

    # first a teacher (runs/finetune_quickstart), then the quickstart: 3 of its 6 layers, Davidson, a few minutes
    accelerate launch recipes/finetune.py --config recipes/configs/finetune_quickstart.yaml
    accelerate launch recipes/annealing.py --config recipes/configs/annealing_quickstart.yaml

    # your own data: a csv with a text and a label column (string labels are fine; they are mapped to the
    # teacher's classes by name)
    accelerate launch recipes/annealing.py --config recipes/configs/annealing_quickstart.yaml \\
        --dataset_name my.csv --text_column text --label_column label --teacher_model runs/my_teacher

    # Annealing-KD (Jafari et al. 2021) instead of BAM
    accelerate launch recipes/annealing.py --config recipes/configs/annealing_quickstart.yaml \\
        --annealing jafari --output_dir runs/annealing_jafari

    # push the student (with its card) to the Hub
    accelerate launch recipes/annealing.py --config recipes/configs/annealing_quickstart.yaml \\
        --push_to_hub true --hub_model_id <user>/minilm3-bam-davidson

The whole comparison of the papers (teacher fine-tuning, baselines, reports) is
``python -m distil_trainers.papers.annealing_pipeline --config recipes/configs/annealing_pipeline_quickstart.yaml``.
"""

from dataclasses import dataclass, field

from transformers import AutoConfig, AutoTokenizer
from trl import TrlParser

from distil_trainers import AnnealingArguments, AnnealingTrainer
from distil_trainers.data import DatasetArguments, model_label_names
from distil_trainers.metrics import build_compute_metrics
from distil_trainers.models import make_student, resolve_model_name_or_path

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
        metadata={"help": "The student, or the encoder it is cut from with student_layers (Hub id or path)."},
    )
    teacher_model: str = field(
        default="runs/finetune_quickstart",
        metadata={"help": f"The fine-tuned teacher (path or Hub id); make one with `{MAKE_A_TEACHER}`."},
    )
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "Encoder layers of model_name_or_path the student keeps (e.g. 0 2 4)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample the validation and test splits."})

    def __post_init__(self):
        super().__post_init__()
        if len(self.dataset_name) != 1:
            raise ValueError(f"annealing.py trains on one dataset, got {self.dataset_name} (several tasks: "
                             "python -m distil_trainers.papers.annealing_pipeline).")


def teacher_config(teacher: str):
    try:
        return AutoConfig.from_pretrained(resolve_model_name_or_path(teacher))
    except (OSError, ValueError):
        raise SystemExit(f"No teacher at {teacher!r}: make one with `{MAKE_A_TEACHER}` "
                         "(or pass --teacher_model <fine-tuned classifier path or Hub id>).") from None


def main(script_args: ScriptArguments, training_args: AnnealingArguments) -> dict:
    teacher = resolve_model_name_or_path(script_args.teacher_model)
    config = teacher_config(teacher)

    # ---- data: the --dataset_name / --text_column / --label_column ... flags ----
    dataset = script_args.load_dataset(  # the data's classes mapped to the teacher's, by name
        seed=training_args.seed, label_names=model_label_names(config.id2label)
    )
    names = dataset["train"].features["label"].names

    # ---- student: a pretrained model, or some layers of one ----
    student = resolve_model_name_or_path(script_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(student)
    if script_args.student_layers:
        student = make_student(student, script_args.student_layers, num_labels=len(names),
                               id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})

    # ---- distil (the trainer tokenises the raw texts for each model), evaluate, save ----
    trainer = AnnealingTrainer(
        model=student,
        teacher_model=teacher,
        args=training_args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["validation"],
        processing_class=tokenizer,
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
