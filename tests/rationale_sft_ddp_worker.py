"""Run by tests/test_rationales_ddp.py, once as one process and once under `torchrun --nproc_per_node 2`: one epoch of
RationaleSFTTrainer (a tiny Llama, plain SGD at a constant learning rate, no dropout) on the label and rationale views
of 13 posts, two accumulated micro-batches per optimizer step. The main process saves the final weights and the log
history; every process saves the ids of the view rows it trained on (``<post id>:label`` / ``<post id>:rationale``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from ddp_worker import record_rows, save_run  # noqa: E402
from rationale_fixtures import POSTS, rationale_dataset, sft_args, tiny_llama, tiny_tokenizer  # noqa: E402

from distil_trainers.trainers.rationale import RationaleSFTTrainer  # noqa: E402
from distil_trainers.trainers.rationale.views import VIEW_COLUMN, view_row_id  # noqa: E402

ALPHA = 0.3  # the label view's weight
# 13 posts, two of them unparsed (label view only): 24 view rows of unequal lengths, three optimizer steps of 8
MORE_POSTS = [
    ("we hate them , stupid people", 0, "it targets a group with an insult .", True),
    ("love this day", 2, "friendly .", True),
    ("you are rude", 1, "rude , no slur .", True),
    ("bad morning", 2, "", False),
    ("idiots , all of them are awful idiots", 1, "an insult , no group targets .", True),
]


def posts():
    return rationale_dataset(posts=POSTS + MORE_POSTS)


def view_rows(trainer) -> dict[str, list]:
    """The input ids and the view-row id of every row the trainer trains on."""
    data = trainer.train_dataset
    return {"input_ids": data["input_ids"][:],
            "row": [view_row_id(i, v) for i, v in zip(data["id"][:], data[VIEW_COLUMN][:])]}  # fmt: skip


def main(kind: str, out: str, per_device_batch: int) -> None:
    assert kind == "rationale_sft", kind
    tokenizer = tiny_tokenizer()
    args = sft_args(
        Path(out), output_dir=out, per_device_train_batch_size=per_device_batch, gradient_accumulation_steps=2,
        num_train_epochs=1, optim="sgd", learning_rate=1.0, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=0.0, alpha=ALPHA, seed=3,
    )  # fmt: skip
    trainer = RationaleSFTTrainer(tiny_llama(tokenizer, seed=1), args=args, train_dataset=posts(),
                                  processing_class=tokenizer)
    seen = record_rows(trainer, view_rows(trainer), id_column="row")
    trainer.train()
    save_run(trainer, out, seen)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
