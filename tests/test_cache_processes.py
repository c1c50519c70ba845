"""Several processes (torchrun ranks, two runs sharing a folder) building the same teacher-output cache: one builds and
saves it, the others wait under the file lock and load it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = """
import logging, sys, time
sys.path.insert(0, {tests!r})
from conftest import random_classification_dataset, tiny_classifier
from distil_trainers.teachers.cache import precompute_teacher_outputs

logging.basicConfig(level=logging.INFO)
teacher = tiny_classifier(0)
forward = teacher.forward


def slow_forward(*args, **kwargs):  # a build long enough for the two processes to overlap
    time.sleep(0.25)
    return forward(*args, **kwargs)


teacher.forward = slow_forward
data = random_classification_dataset(n=64).add_column("id", [f"ex{{i}}" for i in range(64)])
precompute_teacher_outputs(teacher, data, {cache!r}, batch_size=4)
"""


def test_two_processes_build_one_cache_and_both_read_it_whole(tmp_path):
    cache = tmp_path / "cache"
    code = SCRIPT.format(tests=str(Path(__file__).parent), cache=str(cache))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    logs = [err for _, err in outputs]
    # exactly one process ran the teacher; the other found the finished cache (never a half-written one)
    assert sum("is up to date; reusing it" in log for log in logs) == 1, logs
    assert sorted(p.name for p in cache.iterdir()) == ["teacher_outputs.json", "teacher_outputs.safetensors"]
    from distil_trainers.teachers.cache import TeacherOutputs

    assert len(TeacherOutputs.load(cache).ids) == 64


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    # a caller holding a cache's lock (a recipe around a builder that locks it too) must not wait on itself
    import signal

    from distil_trainers.teachers.locks import one_writer

    signal.alarm(20)  # a deadlock fails the test instead of hanging the suite
    try:
        with one_writer(tmp_path / "cache"), one_writer(tmp_path / "cache" / ".." / "cache"):
            entered = True
    finally:
        signal.alarm(0)
    assert entered
