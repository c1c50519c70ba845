"""Two CPU processes over gloo (torchrun) against one process with the same effective batch: the same final weights
and the same logged losses (not scaled by the world size)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(tmp_path: Path, kind: str, processes: int) -> tuple[dict, dict]:
    out = tmp_path / f"{kind}_{processes}"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    if processes == 1:
        cmd = [sys.executable, str(WORKER), kind, str(out), "4"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(WORKER), kind, str(out), "2"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return load_file(str(out / "final.safetensors")), json.loads((out / "log.json").read_text())


@pytest.mark.parametrize("kind", ["ddml", "annealing"])
def test_two_processes_match_one(tmp_path, kind):
    single_weights, single_log = run(tmp_path, kind, 1)
    ddp_weights, ddp_log = run(tmp_path, kind, 2)
    assert single_log["world_size"] == 1 and ddp_log["world_size"] == 2
    for name, value in single_weights.items():
        assert (ddp_weights[name] - value).abs().max() < 1e-5, name

    def losses(log):
        return [{k: v for k, v in h.items() if "loss" in k} for h in log["logs"] if "loss" in h]

    single, ddp = losses(single_log), losses(ddp_log)
    assert len(single) == len(ddp) == 4
    for a, b in zip(single, ddp):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), key
