"""Teacher rationales under two processes (torchrun, gloo): one process asks the teacher, the other waits on the
cache's lock and reads the finished cache; the cache holds every post once and both processes return the same
answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_ddp import free_port

WORKER = Path(__file__).resolve().parent / "rationale_ddp_worker.py"


def test_two_processes_ask_the_teacher_once_per_post(tmp_path):
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
