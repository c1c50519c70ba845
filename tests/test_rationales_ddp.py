"""Rationale distillation under two processes (torchrun, gloo). Teacher rationales: one process asks the teacher, the
other waits on the cache's lock and reads the finished cache; the cache holds every post once and both processes
return the same answers; a transformers teacher named by path is loaded by the process that asks it only. RationaleSFTTrainer: two processes give the weights and the logged per-view losses of one
process at the same global batch, and train on every view row once per epoch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rationale_fixtures import tiny_llama, tiny_tokenizer
from test_ddp import assert_each_example_once, assert_same_global_batches, assert_same_run, free_port, run, seen_rows

WORKER = Path(__file__).resolve().parent / "rationale_ddp_worker.py"
SFT_WORKER = Path(__file__).resolve().parent / "rationale_sft_ddp_worker.py"


def test_two_processes_ask_the_teacher_once_per_post(tmp_path):
    tokenizer = tiny_tokenizer()
    tiny_llama(tokenizer).save_pretrained(tmp_path / "llm")
    tokenizer.save_pretrained(tmp_path / "llm")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(WORKER), str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert sorted(r["prompts"] for r in ranks) == [0, 7]  # one process asked for all 7, the other for none
    assert ranks[0]["rows"] == ranks[1]["rows"] and len(ranks[0]["rows"]["id"]) == 7
    lines = (tmp_path / "teacher.jsonl").read_text().splitlines()
    ids = [json.loads(line)["id"] for line in lines[1:]]  # the first line is the cache's header
    assert sorted(ids) == sorted(f"p{i}" for i in range(7))  # every post once: no second writer
    assert sorted(r["llm_loaded"] for r in ranks) == [False, True]  # one copy of the LLM's weights, not one per rank
    assert ranks[0]["llm_answers"] == ranks[1]["llm_answers"]


@pytest.mark.slow
def test_sft_two_processes_match_one_at_the_same_global_batch(tmp_path):
    """A tiny Llama on 24 view rows (13 label views of a few tokens, 11 longer rationale views), two micro-batches of 4
    (one process) or of 2 per process (two) per optimizer step, three steps: the loss is alpha times the mean over the
    step's label-view completion tokens plus (1 - alpha) times the mean over its rationale-view tokens, whichever
    process and micro-batch holds them."""
    from rationale_sft_ddp_worker import ALPHA, posts

    single_weights, single_log = run(tmp_path, "rationale_sft", 1, worker=SFT_WORKER)
    ddp_weights, ddp_log = run(tmp_path, "rationale_sft", 2, worker=SFT_WORKER)
    assert_same_run(single_weights, single_log, ddp_weights, ddp_log, steps=3, also=("grad_norm",), atol=2e-5)
    logs = [h for h in single_log["logs"] if "loss" in h]
    for h in logs:  # the logged per-view losses are means over their own tokens: so must the trained loss be
        assert h["loss"] == pytest.approx(ALPHA * h["loss_label"] + (1 - ALPHA) * h["loss_rationale"], rel=1e-5)
    assert logs[-1]["loss"] < logs[0]["loss"]

    data = posts()
    rationales = [i for i, r, ok in zip(data["id"][:], data["rationale"][:], data["parsed"][:]) if ok and r.strip()]
    rows = [f"{i}:label" for i in data["id"][:]] + [f"{i}:rationale" for i in rationales]
    assert len(rows) == 24
    single, ddp = seen_rows(tmp_path, "rationale_sft", 1), seen_rows(tmp_path, "rationale_sft", 2)
    assert_each_example_once(single, rows)
    assert_each_example_once(ddp, rows)
    assert_same_global_batches(single, ddp)
    # views are unevenly spread: in some step the two processes hold different numbers of rationale views
    per_step = [[sum(i.endswith(":rationale") for b in batches[2 * k : 2 * k + 2] for i in b) for batches in ddp]
                for k in range(3)]
    assert any(r0 != r1 for r0, r1 in per_step)
