"""Efficiency of teachers and students on the same inputs: parameters, weight memory, peak memory while predicting,
latency per example and throughput, as rows and a Markdown table.

* Parameters of 4-bit (bitsandbytes) layers are counted as the weights they stand for, not as their packed bytes.
* Weight memory is the bytes the weights take where they live: parameters and buffers at their storage size, 4-bit
  layers as their packed uint8 storage plus their quantization state (absmax, code, nested state).
* Peak memory is, on CUDA, ``torch.cuda.max_memory_allocated`` above what was allocated before the run
  (method ``"cuda_max_allocated"``); on CPU, the largest resident set size (RSS, ``/proc/self/statm``) sampled every
  5 ms during the run (warm-up included) minus the RSS just before it (method ``"rss_delta"``). It is what
  predicting costs on top of the loaded weights, for one process; it includes the allocator's caching and any
  library's own buffers (llama.cpp's KV cache, for instance), which the torch profiler would not see.
* Latency is wall time per example (batches of ``batch_size``; the first ``warmup`` batches are not timed) and
  throughput its inverse, examples per second.

Works for a transformers model (:func:`forward_predictor`, or any callable using it) and for anything else given as
a callable ``predict(texts) -> anything`` (e.g. a llama.cpp teacher), with ``parameters`` / ``weight_bytes`` /
``weights_path`` given by hand.

Example::

    rows = [
        measure("teacher (llama.cpp)", teacher_fn, texts, weights_path=gguf_path),
        measure("student", lambda b: trainer.predict_labels(b, show_progress=False), texts, model=trainer.model),
    ]
    print(efficiency_table(rows))
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = [
    "EfficiencyRow",
    "PeakMemory",
    "count_parameters",
    "efficiency_table",
    "forward_predictor",
    "measure",
    "weight_memory_bytes",
]


def _is_4bit_param(param: torch.Tensor) -> bool:
    return type(param).__name__ == "Params4bit" and getattr(param, "quant_state", None) is not None


def _quant_state_bytes(state: Any) -> int:
    total = 0
    for name in ("absmax", "code", "offset"):
        value = getattr(state, name, None)
        if torch.is_tensor(value):
            total += value.numel() * value.element_size()
    nested = getattr(state, "state2", None)
    if nested is not None:
        total += _quant_state_bytes(nested)
    return total


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared ones once); a 4-bit weight counts as the number of values it encodes."""
    total = 0
    for param in model.parameters():
        if _is_4bit_param(param):
            total += int(torch.Size(param.quant_state.shape).numel())
        else:
            total += param.numel()
    return total


def weight_memory_bytes(model: nn.Module) -> int:
    """Bytes of parameters and buffers as stored (shared ones once): 4-bit weights as their packed storage plus their
    quantization state, everything else as ``numel * element_size``."""
    total = 0
    for param in model.parameters():
        total += param.numel() * param.element_size()
        if _is_4bit_param(param):
            total += _quant_state_bytes(param.quant_state)
    for buffer in model.buffers():
        total += buffer.numel() * buffer.element_size()
    return total


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB (never decreases)


class PeakMemory:
    """Context manager measuring peak memory above the level at entry: ``.peak_bytes`` and ``.method`` (see the
    module docstring)."""

    def __init__(self, interval: float = 0.005, device: str | torch.device | None = None):
        self.interval = interval
        self.cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        self.method = "cuda_max_allocated" if self.cuda else "rss_delta"
        self.peak_bytes = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.synchronize()
            self._start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._start = self._peak = _rss_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.peak_bytes = max(0, torch.cuda.max_memory_allocated() - self._start)
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, _rss_bytes())
            self.peak_bytes = max(0, self._peak - self._start)


@dataclass
class EfficiencyRow:
    name: str
    parameters: int | None
    weight_bytes: int | None
    peak_memory_bytes: int
    peak_memory_method: str
    latency_ms_per_example: float
    examples_per_second: float
    num_examples: int
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def forward_predictor(model: nn.Module, tokenizer, max_length: int = 128) -> Callable[[Sequence[str]], torch.Tensor]:
    """``predict(texts)`` = one no-grad forward of ``model`` over the tokenised batch (returns the logits)."""

    @torch.no_grad()
    def predict(texts: Sequence[str]) -> torch.Tensor:
        device = next(model.parameters()).device
        batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        model.eval()
        return model(**{k: v.to(device) for k, v in batch.items()}).logits

    return predict


def measure(
    name: str,
    predict: Callable[[list[str]], Any],
    texts: Sequence[str],
    *,
    batch_size: int = 1,
    warmup: int = 1,
    model: nn.Module | None = None,
    parameters: int | None = None,
    weight_bytes: int | None = None,
    weights_path: str | os.PathLike | None = None,
    show_progress: bool = True,
) -> EfficiencyRow:
    """Run ``predict`` over ``texts`` in batches and measure it.

    Args:
        predict: called with lists of at most ``batch_size`` texts; what it returns is ignored.
        warmup: untimed batches run first (taken from the start of ``texts``, then timed again with the rest).
        model: a torch model: parameters and weight memory are read from it.
        parameters, weight_bytes: given by hand (e.g. for a llama.cpp model); they override what ``model`` says.
        weights_path: a weight file (e.g. a GGUF): its size is the weight memory when ``weight_bytes`` is not given.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("measure needs at least one text.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if model is not None:
        parameters = count_parameters(model) if parameters is None else parameters
        weight_bytes = weight_memory_bytes(model) if weight_bytes is None else weight_bytes
    if weight_bytes is None and weights_path is not None:
        weight_bytes = os.path.getsize(weights_path)
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    # memory is watched from before the warm-up: the allocator keeps what the first batch took, so a peak measured
    # after it would miss the working memory
    with PeakMemory() as memory:
        for batch in batches[:warmup]:
            predict(batch)
        start = time.perf_counter()
        for batch in tqdm(batches, desc=f"Timing {name}", disable=not show_progress):
            predict(batch)
        elapsed = time.perf_counter() - start
    return EfficiencyRow(
        name=name,
        parameters=parameters,
        weight_bytes=weight_bytes,
        peak_memory_bytes=memory.peak_bytes,
        peak_memory_method=memory.method,
        latency_ms_per_example=1000 * elapsed / len(texts),
        examples_per_second=len(texts) / elapsed if elapsed > 0 else float("inf"),
        num_examples=len(texts),
        batch_size=batch_size,
    )


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def efficiency_table(rows: Sequence[EfficiencyRow]) -> str:
    """A Markdown table of :func:`measure` rows (memory in MiB, parameters in millions)."""
    methods = sorted({row.peak_memory_method for row in rows})
    header = (
        "| model | params | weights (MiB) | peak memory (MiB, "
        + ", ".join(methods)
        + ") | latency (ms / example) | examples / s | batch |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in rows:
        params = "-" if row.parameters is None else f"{row.parameters / 1e6:.1f}M"
        lines.append(
            f"| {row.name} | {params} | {_mib(row.weight_bytes)} | {_mib(row.peak_memory_bytes)} | "
            f"{row.latency_ms_per_example:.1f} | {row.examples_per_second:.2f} | {row.batch_size} |"
        )
    return "\n".join(lines)
