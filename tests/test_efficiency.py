"""distil_trainers.papers.efficiency: parameter and weight-memory counts (fp32, bf16, 4-bit), peak memory, latency."""

from __future__ import annotations

import time

import pytest
import torch
from rationale_fixtures import tiny_llama, tiny_tokenizer
from transformers import AutoModelForCausalLM

from distil_trainers.papers.efficiency import (
    PeakMemory,
    count_parameters,
    efficiency_table,
    forward_predictor,
    measure,
    weight_memory_bytes,
)


def _buffer_bytes(model) -> int:
    return sum(b.numel() * b.element_size() for b in model.buffers())


def test_parameters_and_weight_bytes_fp32_and_bf16():
    model = tiny_llama(tiny_tokenizer())
    n = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == n
    assert weight_memory_bytes(model) == 4 * n + _buffer_bytes(model)
    half = model.to(torch.bfloat16)
    assert count_parameters(half) == n
    assert weight_memory_bytes(half) == 2 * n + _buffer_bytes(half)


def test_four_bit_weights_count_as_packed_storage_plus_state(tmp_path):
    bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes cannot be imported; pip install bitsandbytes")
    from transformers import BitsAndBytesConfig

    tok = tiny_tokenizer()
    full = tiny_llama(tok)
    full.save_pretrained(tmp_path)
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
    quantized = AutoModelForCausalLM.from_pretrained(tmp_path, quantization_config=config, dtype=torch.float32)
    assert count_parameters(quantized) == count_parameters(full)
    shapes = [(m.out_features, m.in_features) for m in quantized.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(shapes) == 14
    linear_values = sum(o * i for o, i in shapes)
    # everything else (embeddings, norms, lm_head, buffers) stays fp32
    other_bytes = weight_memory_bytes(full) - 4 * linear_values
    four_bit_bytes = weight_memory_bytes(quantized) - other_bytes
    # per layer, by the layout of nf4 with double quantization: two values per byte; one uint8 absmax per block of 64
    # values; the absmax quantized in blocks of 256 (one fp32 scale each) with a 256-entry fp32 code and an fp32
    # offset; the 16-entry fp32 nf4 code
    expected = 0
    for o, i in shapes:
        blocks = o * i // 64
        expected += o * i // 2 + blocks + 4 * -(-blocks // 256) + 256 * 4 + 4 + 16 * 4
    assert four_bit_bytes == expected


def test_peak_memory_sees_a_temporary_allocation():
    with PeakMemory() as memory:
        block = torch.ones(64 * 2**20 // 4)  # 64 MiB
        time.sleep(0.05)
        del block
    assert memory.method in {"rss_peak", "cuda_max_allocated"}
    assert memory.peak_bytes >= 48 * 2**20
    assert memory.growth_bytes >= 48 * 2**20 and memory.peak_bytes >= memory.start_bytes + memory.growth_bytes - 1


def test_peak_memory_is_absolute_not_the_growth_above_the_loaded_model():
    """A model loaded before the run is part of the peak (the former figure, growth above the level at entry, was
    about 0 MiB here)."""
    model = torch.nn.Linear(2048, 4096)  # 32 MiB of weights, loaded before measuring
    row = measure("loaded", lambda batch: None, ["a", "b"], model=model, show_progress=False)
    assert row.weight_bytes >= 32 * 2**20
    assert row.peak_memory_bytes >= row.weight_bytes
    assert row.peak_memory_start_bytes is not None and row.peak_memory_bytes >= row.peak_memory_start_bytes


def test_measure_a_callable_and_a_model():
    calls = []

    def slow(batch):
        calls.append(len(batch))
        time.sleep(0.02)

    row = measure(
        "sleepy", slow, ["a"] * 6, batch_size=2, warmup=1, parameters=7, weight_bytes=100, show_progress=False
    )
    assert calls == [2, 2, 2, 2]  # one warm-up batch, then the three timed ones
    assert 10 <= row.latency_ms_per_example <= 100  # 20 ms per batch of 2 on an idle machine
    assert row.examples_per_second == pytest.approx(1000 / row.latency_ms_per_example)
    assert row.parameters == 7 and row.weight_bytes == 100 and row.num_examples == 6

    tok = tiny_tokenizer()
    model = tiny_llama(tok)
    student = measure(
        "tiny", forward_predictor(model, tok), ["good morning all", "hello"], model=model, show_progress=False
    )
    assert student.parameters == count_parameters(model) and student.weight_bytes == weight_memory_bytes(model)
    table = efficiency_table([row, student])
    lines = table.splitlines()
    assert len(lines) == 4 and lines[2].startswith("| sleepy | 0.0M | 0.0 |") and "| tiny |" in lines[3]


def test_weights_path_gives_weight_bytes(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"x" * 12345)
    row = measure("file", lambda batch: None, ["a"], weights_path=path, show_progress=False)
    assert row.weight_bytes == 12345 and row.parameters is None
    assert "| file | - |" in efficiency_table([row])


def test_peak_memory_includes_the_warm_up_allocation():
    """The allocator keeps what the first (warm-up) batch took; the peak must still show the working memory."""
    kept = []

    def grow(batch):
        if not kept:
            kept.append(torch.ones(48 * 2**20 // 4))  # 48 MiB, allocated once and kept

    row = measure("grow", grow, ["a", "b"], warmup=1, show_progress=False)
    assert row.peak_memory_bytes >= 32 * 2**20
