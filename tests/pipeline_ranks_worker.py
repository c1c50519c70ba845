"""Run by tests/test_pipeline_ranks.py under `torchrun --nproc_per_node 2`: the LLM-to-classifier pipeline
(``distil_trainers.papers.llm_to_classifier_pipeline``) three times in the same processes: a first run, a rerun with
the same settings, and a rerun with one more optimizer step. Every process records what it does to the run's folder in
``events_rank<r>.jsonl`` (one JSON object a line: the phase, the kind of event, the path relative to the run's folder
and the process): each file opened for writing, each folder removed, each model, tokenizer and teacher-output cache
saved, and each ``Trainer.train`` call.

Usage: pipeline_ranks_worker.py <events dir> <run dir> <llm dir> <student base dir> <csv> <max_steps of the first run>
"""

from __future__ import annotations

import builtins
import functools
import io
import json
import os
import shutil
import sys
from pathlib import Path

import torch

RANK = int(os.environ.get("RANK", "0"))
PHASE = {"name": "setup"}


def recorder(events_dir: Path, run_dir: Path):
    """``record(kind, path)``: one line in this process's events file when ``path`` lies inside ``run_dir``."""
    log_path = events_dir / f"events_rank{RANK}.jsonl"
    original_open = io.open
    root = str(run_dir.resolve())

    def record(kind: str, path) -> None:
        try:
            resolved = str(Path(os.fspath(path)).resolve())
        except TypeError:  # a file descriptor
            return
        if resolved != root and not resolved.startswith(root + os.sep):
            return
        with original_open(log_path, "a") as log:
            log.write(json.dumps({"phase": PHASE["name"], "kind": kind, "path": os.path.relpath(resolved, root),
                                  "rank": RANK}) + "\n")

    return record


def install(record) -> None:
    """Record writes, removals, saves and trainings (wrapping the functions every code path goes through)."""
    from transformers import PreTrainedModel, Trainer
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from distil_trainers.teachers.cache import TeacherOutputs

    original_open = io.open

    @functools.wraps(original_open)
    def recording_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            record("write", file)
        return original_open(file, mode, *args, **kwargs)

    io.open = builtins.open = recording_open  # pathlib's write_text opens through io.open

    original_rmtree = shutil.rmtree

    @functools.wraps(original_rmtree)
    def recording_rmtree(path, *args, **kwargs):
        record("rmtree", path)
        return original_rmtree(path, *args, **kwargs)

    shutil.rmtree = recording_rmtree

    def wrap(cls, name: str, kind: str, where) -> None:
        original = getattr(cls, name)

        @functools.wraps(original)
        def recording(self, *args, **kwargs):
            record(kind, where(self, *args, **kwargs))
            return original(self, *args, **kwargs)

        setattr(cls, name, recording)

    wrap(PreTrainedModel, "save_pretrained", "save_model", lambda self, directory, *a, **k: directory)
    # the base class's: every tokenizer's save_pretrained ends there (its files also show as writes)
    wrap(PreTrainedTokenizerBase, "save_pretrained", "save_tokenizer", lambda self, directory, *a, **k: directory)
    wrap(TeacherOutputs, "save", "save_cache", lambda self, directory, *a, **k: directory)
    wrap(Trainer, "train", "train", lambda self, *a, **k: self.args.output_dir)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def main(events_dir: str, run_dir: str, llm: str, student: str, csv: str, max_steps: str) -> None:
    torch.set_num_threads(1)
    events_dir, run_dir = Path(events_dir), Path(run_dir)
    install(recorder(events_dir, run_dir))
    from distil_trainers import AnnealingArguments
    from distil_trainers.papers import llm_to_classifier_pipeline as pipeline

    recipe = pipeline.LLMToClassifierArguments(
        dataset_name=[csv], text_column="post", label_column="class", teacher_backend="transformers",
        teacher_model=llm, teacher_batch_size=8, calibration="none", run_baselines=False, efficiency_samples=0,
        student_base=student, student_layers=[0, 1],
    )
    steps = int(max_steps)
    for phase, phase_steps in (("first", steps), ("again", steps), ("changed", steps + 1)):
        PHASE["name"] = phase
        args = AnnealingArguments(
            output_dir=str(run_dir), max_steps=phase_steps, per_device_train_batch_size=4,
            per_device_eval_batch_size=16, learning_rate=1e-3, max_length=32, use_cpu=True, report_to="none",
            save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0, annealing="kd", alpha=0.0,
        )  # the soft labels alone
        pipeline.main(recipe, args)
        barrier()  # the test tells the phases apart; within a phase the pipeline is on its own
    PHASE["name"] = "done"


if __name__ == "__main__":
    main(*sys.argv[1:])
