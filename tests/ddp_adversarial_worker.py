"""Run by tests/test_ddp.py, once as one process and once under `torchrun --nproc_per_node 2`: one epoch of
AdversarialTrainer (Hinton KD: a label term over the gold labels, a teacher term over every row with a label other than
-100, UNLABELLED included; plus the language discriminator over the rows with a language id) on a cross-lingual mix,
two accumulated micro-batches per optimizer step. The main process saves the final student and discriminator weights
and the log history; every process saves the ids of the examples it trained on."""

from __future__ import annotations

import os
import random
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from conftest import random_classification_dataset, tiny_classifier  # noqa: E402
from ddp_worker import record_rows, save_run  # noqa: E402

from distil_trainers.losses import UNLABELLED  # noqa: E402
from distil_trainers.models.discriminator import LANGUAGE_COLUMN  # noqa: E402
from distil_trainers.trainers.adversarial import AdversarialArguments, AdversarialTrainer  # noqa: E402

SOURCE, TARGET = 0, 1
# the label (None: the row's own class) and the language id of each kind of row
KINDS = {
    "source": (None, SOURCE),  # labelled source-language rows
    "target": (UNLABELLED, TARGET),  # unlabelled target-language rows: the teacher's term and the discriminator's
    "no_language": (None, -100),  # labelled rows without a language id: the label and teacher terms only
    "ignored": (-100, TARGET),  # label -100: the discriminator's term only
}
COUNTS = {"source": 14, "target": 10, "no_language": 5, "ignored": 3}
TEMPERATURE, ALPHA, BETA, ADVERSARIAL_WEIGHT = 2.0, 0.5, 0.5, 0.3


def row_kinds() -> list[str]:
    kinds = [kind for kind, count in COUNTS.items() for _ in range(count)]
    random.Random(11).shuffle(kinds)
    return kinds


def language_data():
    """32 rows with ids ``ex<i>``, labels and ``language_ids`` by :func:`row_kinds`."""
    data = random_classification_dataset(n=32, seed=7)
    labels, languages = [], []
    for label, kind in zip(data["labels"], row_kinds()):
        own, language = KINDS[kind]
        labels.append(label if own is None else own)
        languages.append(language)
    data = data.remove_columns("labels").add_column("labels", labels).add_column(LANGUAGE_COLUMN, languages)
    return data.add_column("id", [f"ex{i}" for i in range(len(data))])


def build(out: str, per_device_batch: int) -> AdversarialTrainer:
    args = AdversarialArguments(
        output_dir=out, per_device_train_batch_size=per_device_batch, gradient_accumulation_steps=2,
        num_train_epochs=1, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=0, disable_tqdm=True,
        annealing="kd", alpha=ALPHA, beta=BETA, temperature=TEMPERATURE, adversarial_weight=ADVERSARIAL_WEIGHT,
        discriminator_dropout=0.0, discriminator_hidden_size=16, reversal_schedule="linear",
    )
    teacher = tiny_classifier(0)
    with torch.no_grad():
        teacher.classifier.weight.mul_(60)  # logits of order 1 (not ~0.01): a KD term that weighs in the gradient
    return AdversarialTrainer(model=tiny_classifier(1), teacher_model=teacher, args=args, train_dataset=language_data())


def main(kind: str, out: str, per_device_batch: int) -> None:
    assert kind == "adversarial", kind
    trainer = build(out, per_device_batch)
    seen = record_rows(trainer, trainer.train_dataset)
    trainer.train()
    save_run(trainer, out, seen)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
