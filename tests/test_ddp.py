"""Two CPU processes over gloo (torchrun) against one process with the same effective batch: the same final weights
and the same logged losses (not scaled by the world size); with the teacher-output cache, two processes reading rows
by id give what one process with the live teacher gives."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_classifier
from ddp_worker import annealing_data
from safetensors.torch import load_file

from distil_trainers.teachers.cache import precompute_teacher_outputs

WORKER = Path(__file__).with_name("ddp_worker.py")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp_path: Path, kind: str, processes: int, *extra: str) -> tuple[dict, dict]:
    out = tmp_path / f"{kind}_{processes}"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if processes == 1:
        cmd = [sys.executable, str(WORKER), kind, str(out), "4", *extra]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(WORKER), kind, str(out), "2", *extra]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return load_file(str(out / "final.safetensors")), json.loads((out / "log.json").read_text())


@pytest.mark.parametrize("kind", ["ddml", "annealing"])
def test_two_processes_match_one(tmp_path, kind):
    single_weights, single_log = run(tmp_path, kind, 1)
    ddp_weights, ddp_log = run(tmp_path, kind, 2)
    assert_same_run(single_weights, single_log, ddp_weights, ddp_log)


def test_two_processes_on_the_cache_match_one_with_the_live_teacher(tmp_path):
    # built over a shuffled copy: each rank's rows are found by id, whatever the sampler hands it
    precompute_teacher_outputs(tiny_classifier(0), annealing_data().shuffle(seed=5), tmp_path / "cache", batch_size=7)
    single_weights, single_log = run(tmp_path, "annealing", 1)
    ddp_weights, ddp_log = run(tmp_path, "annealing_cached", 2, str(tmp_path / "cache"))
    assert_same_run(single_weights, single_log, ddp_weights, ddp_log)


def test_two_processes_match_one_on_two_tasks_of_unequal_sizes(tmp_path):
    # 16 + 8 examples, 4 per optimizer step: six single-task steps, every example once, in one process and in two
    single_weights, single_log = run(tmp_path, "multitask", 1)
    ddp_weights, ddp_log = run(tmp_path, "multitask", 2)
    assert_same_run(single_weights, single_log, ddp_weights, ddp_log, steps=6)


def assert_same_run(single_weights, single_log, ddp_weights, ddp_log, steps: int = 4):
    assert single_log["world_size"] == 1 and ddp_log["world_size"] == 2
    for name, value in single_weights.items():
        assert (ddp_weights[name] - value).abs().max() < 1e-5, name

    def losses(log):
        return [{k: v for k, v in h.items() if "loss" in k} for h in log["logs"] if "loss" in h]

    single, ddp = losses(single_log), losses(ddp_log)
    assert len(single) == len(ddp) == steps
    for a, b in zip(single, ddp):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key
