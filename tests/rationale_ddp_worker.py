"""Run by tests/test_rationales_ddp.py under `torchrun --nproc_per_node 2`: both processes call generate_rationales on
the same posts and the same cache file; each writes how many prompts it sent to the teacher and what it got back. Then
both do the same with a transformers teacher named by path (``<out>/llm``) and write whether they loaded its weights."""

from __future__ import annotations

import json
import os
import sys

import datasets
import torch.distributed as dist

from distil_trainers.teachers.rationales import (
    GenerationResult,
    TeacherBackend,
    TransformersBackend,
    default_prompt,
    generate_rationales,
)

NAMES = ["hate", "offensive", "neither"]


class CountingBackend(TeacherBackend):
    model_id = "counting-teacher"

    def __init__(self):
        self.prompts = 0

    def generate(self, messages_batch, max_new_tokens=256, temperature=0.0):
        self.prompts += len(messages_batch)
        return [GenerationResult(f"Explanation: {len(m[-1]['content'])} characters.\nLabel: "
                                 f"{NAMES[len(m[-1]['content']) % 3]}", 4) for m in messages_batch]


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    posts = datasets.Dataset.from_dict({"id": [f"p{i}" for i in range(7)], "text": [f"post number {i} " * (i + 1)
                                        for i in range(7)], "label": [i % 3 for i in range(7)]})  # fmt: skip
    backend = CountingBackend()
    result = generate_rationales(posts, backend, default_prompt(NAMES), os.path.join(out, "teacher.jsonl"),
                                 batch_size=3, show_progress=False)
    llm = TransformersBackend(os.path.join(out, "llm"))
    answers = generate_rationales(posts, llm, default_prompt(NAMES), os.path.join(out, "llm.jsonl"), batch_size=4,
                                  max_new_tokens=4, show_progress=False)
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"prompts": backend.prompts, "rows": result.to_dict(), "llm_loaded": llm.loaded,
                   "llm_answers": answers["raw_output"][:]}, f)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
