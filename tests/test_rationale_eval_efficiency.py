"""Efficiency measured absolutely: a fresh process loads the model and runs the measured call, and its own peak memory
is reported (not the caller's, not a growth above some level); a failure or a crash of that process, or an
unreachable server, is a row that says so."""

from __future__ import annotations

import os
import time

import pytest
import torch

from distil_trainers.papers.efficiency import (
    EfficiencyRow,
    _rss_bytes,
    efficiency_table,
    measure_in_fresh_process,
    served_row,
)

MIB = 2**20
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU figures (peak RSS) are checked here")


class _Weights(torch.nn.Module):
    def __init__(self, mib: int):
        super().__init__()
        self.register_buffer("weights", torch.ones(mib * MIB // 4))


def load_weights(mib: int, working_mib: int):
    """A "model" of ``mib`` MiB whose prediction allocates ``working_mib`` MiB for a moment (run in the new
    process)."""
    model = _Weights(mib)

    def predict(batch):
        block = torch.ones(working_mib * MIB // 4)
        time.sleep(0.02)
        return float(block[0])

    return predict, {"model": model}


def load_failing():
    raise ValueError("no weights here")


def load_crashing():
    os._exit(3)  # what the out-of-memory killer leaves: no report at all


def test_a_fresh_process_reports_its_own_absolute_peak(tmp_path):
    ballast = torch.ones(384 * MIB // 4)  # held by the caller: must not show in the figures
    caller = _rss_bytes()
    small = measure_in_fresh_process("small", load_weights, ["a", "b"], load_args=(16, 16))
    big = measure_in_fresh_process("big", load_weights, ["a", "b"], load_args=(144, 16))
    assert small.error is None and big.error is None
    assert small.peak_memory_method == big.peak_memory_method == "fresh_process_peak_rss"
    assert small.weight_bytes == 16 * MIB and big.weight_bytes == 144 * MIB and small.num_examples == 2
    # absolute: the runtime (interpreter, torch) plus the weights plus the working memory
    runtime = small.peak_memory_start_bytes
    assert runtime > 50 * MIB
    assert small.peak_memory_bytes >= runtime + 16 * MIB + 16 * MIB - 4 * MIB
    # the difference is the difference of the weights; the caller's memory is in neither
    assert 100 * MIB <= big.peak_memory_bytes - small.peak_memory_bytes <= 160 * MIB  # 128 MiB, give or take
    assert small.peak_memory_bytes < caller - 256 * MIB
    assert small.latency_ms_per_example >= 20 and small.examples_per_second > 0
    del ballast


def test_a_failed_or_crashed_measurement_is_a_row_that_says_so():
    failed = measure_in_fresh_process("broken", load_failing, ["a"])
    assert failed.error == "ValueError: no weights here" and failed.peak_memory_bytes is None
    crashed = measure_in_fresh_process("killed", load_crashing, ["a"])
    assert "exited with code 3" in crashed.error and crashed.latency_ms_per_example is None
    table = efficiency_table([failed, crashed])
    assert "| broken (not measured) | - | - | - | - | - | 1 |" in table
    assert "- broken: not measured: ValueError: no weights here" in table
    assert EfficiencyRow.from_dict(crashed.to_dict()) == crashed


def test_a_served_model_has_no_local_memory_figure():
    def unreachable(batch):
        raise ConnectionError("http://127.0.0.1:9/v1 refused the connection")

    row = served_row("teacher (openai)", unreachable, ["a", "b"], where="http://127.0.0.1:9/v1")
    assert row.error == "ConnectionError: http://127.0.0.1:9/v1 refused the connection"
    assert row.peak_memory_bytes is None and row.note == "http://127.0.0.1:9/v1"
    ok = served_row("teacher (openai)", lambda batch: time.sleep(0.01), ["a", "b"], where="http://gpu:8000/v1")
    assert ok.error is None and ok.peak_memory_method == "served" and ok.peak_memory_bytes is None
    assert "served by http://gpu:8000/v1" in ok.note and ok.latency_ms_per_example >= 10
    assert "- teacher (openai): served by http://gpu:8000/v1" in efficiency_table([ok])
