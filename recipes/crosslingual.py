# Copyright the distil_trainers authors. Licensed under the Apache License, Version 2.0.
"""
Cross-lingual distillation (Matei's cross-lingual study; ADAN, Chen et al. 2018): one classifier trained on target-
language data plus source-language data whose classes are mapped onto the target's, with a language discriminator
behind a gradient-reversal layer (`AdversarialTrainer`: the encoder learns features the discriminator cannot tell
apart), and optionally a teacher (a classifier of the target classes) distilled with teacher annealing.

`dataset_name` names the target, then the source: registered names, csv / tsv / json / jsonl / parquet files or
folders, `save_to_disk` folders or Hub ids. The student is scored on the target's test split (else validation).

Usage:

    # quickstart on CPU: RED v1 (Romanian emotions) target, TweetEval emotion (English) source, MiniLM-L6
    accelerate launch recipes/crosslingual.py --config recipes/configs/crosslingual_quickstart.yaml

    # with a teacher of the target classes (e.g. a model fine-tuned on the target alone): teacher annealing as well
    accelerate launch recipes/crosslingual.py --config recipes/configs/crosslingual_quickstart.yaml \\
        --teacher_model runs/ro_teacher --annealing bam

    # your own target data (a csv with the columns sentence,emotion; its classes are the target classes)
    accelerate launch recipes/crosslingual.py --config recipes/configs/crosslingual_quickstart.yaml \\
        --dataset_name my_ro.csv tweeteval_emotion --text_column sentence text --label_column emotion label \\
        --source_label_map '{"anger": "anger", "joy": "joy", "optimism": "joy", "sadness": "sadness"}'

    # push the student to the Hub at the end (needs the network and a token)
    accelerate launch recipes/crosslingual.py --config recipes/configs/crosslingual_quickstart.yaml \\
        --push_to_hub true --hub_model_id <user>/minilm-ro-emotions-adversarial

The paper's comparison (target only vs gradual multi-stage fine-tuning vs + discriminator vs born-again multi-task
distillation) is the pipeline `python -m distil_trainers.papers.crosslingual_pipeline --config
recipes/configs/crosslingual_pipeline_quick.yaml`.
"""

import json
from dataclasses import dataclass, field

from datasets import ClassLabel, concatenate_datasets
from transformers import AutoTokenizer, set_seed
from trl import TrlParser

from distil_trainers.data import DatasetArguments
from distil_trainers.metrics import build_compute_metrics
from distil_trainers.models import resolve_model_name_or_path
from distil_trainers.models.discriminator import LANGUAGE_COLUMN
from distil_trainers.trainers.adversarial import AdversarialArguments, AdversarialTrainer


@dataclass
class ScriptArguments(DatasetArguments):
    dataset_name: list[str] = field(
        default_factory=lambda: ["redv1", "tweeteval_emotion"],
        metadata={"help": "The target dataset, then the source dataset."},
    )
    source_label_map: str = field(
        default='{"anger": "anger", "joy": "joy", "optimism": "joy", "sadness": "sadness"}',
        metadata={"help": "JSON: each source class -> a target class (null drops the class's examples)."},
    )
    model_name_or_path: str = field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        metadata={"help": "The student: an encoder (a head over the target classes is added) or a classifier."},
    )
    teacher_model: str | None = field(
        default=None, metadata={"help": "A classifier of the target classes to distil (default: none, labels only)."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Subsample each dataset's train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Subsample the validation / test splits."})

    def __post_init__(self):
        super().__post_init__()
        if len(self.dataset_name) != 2:
            raise ValueError(f"dataset_name needs a target and a source dataset, got {self.dataset_name}.")
        self.label_map = json.loads(self.source_label_map)


def to_target_classes(split, label_map: dict, names: list[str]):
    """The source split relabelled into the target classes by name (classes mapped to null are dropped)."""
    source_names = split.features["label"].names
    unlisted = [n for n in source_names if n not in label_map]
    unknown = sorted({c for c in label_map.values() if c is not None} - set(names))
    if unlisted or unknown:
        raise ValueError(f"source_label_map must send every source class {source_names} to a target class {names} "
                         f"or null: unlisted {unlisted}, not target classes {unknown}.")  # fmt: skip
    new_id = {i: names.index(label_map[n]) for i, n in enumerate(source_names) if label_map[n] is not None}
    split = split.filter(lambda row: row["label"] in new_id)
    features = split.features.copy()
    features["label"] = ClassLabel(names=names)
    return split.map(lambda row: {"label": new_id[row["label"]]}, features=features)


def main(script_args: ScriptArguments, training_args: AdversarialArguments) -> dict:
    set_seed(training_args.seed)
    # ---- data: target and source, the source relabelled into the target classes, one language id per example ----
    target, source = script_args.load_datasets(seed=training_args.seed)
    names = target["train"].features["label"].names
    source_train = to_target_classes(source["train"], script_args.label_map, names)
    train = concatenate_datasets([
        target["train"].add_column(LANGUAGE_COLUMN, [0] * len(target["train"])),
        source_train.add_column(LANGUAGE_COLUMN, [1] * len(source_train)),
    ]).shuffle(seed=training_args.seed)
    test_split = "test" if "test" in target else "validation"

    # ---- model, trainer: cross-entropy (+ teacher annealing with a teacher) + the language discriminator ----
    student = resolve_model_name_or_path(script_args.model_name_or_path)
    teacher = resolve_model_name_or_path(script_args.teacher_model) if script_args.teacher_model else None
    trainer = AdversarialTrainer(
        model=student,
        teacher_model=teacher,
        args=training_args,
        train_dataset=train,
        eval_dataset=target["validation"] if training_args.eval_strategy != "no" else None,
        processing_class=AutoTokenizer.from_pretrained(student),
        compute_metrics=build_compute_metrics(label_names=names),
    )
    trainer.train()
    metrics = trainer.evaluate(target[test_split], metric_key_prefix=test_split)
    trainer.log_metrics(test_split, metrics)
    trainer.save_metrics(test_split, metrics)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json: the log history, for `distil-trainers evaluate` plots
    if training_args.push_to_hub:
        trainer.push_to_hub()
    return metrics


if __name__ == "__main__":
    parser = TrlParser((ScriptArguments, AdversarialArguments))
    script_args, training_args = parser.parse_args_and_config()
    main(script_args, training_args)
