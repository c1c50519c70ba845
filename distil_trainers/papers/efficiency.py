"""Efficiency of teachers and students on the same inputs: parameters, weight memory, peak memory while predicting,
latency per example and throughput, as rows and a Markdown table.

* Parameters of 4-bit (bitsandbytes) layers are counted as the weights they stand for, not as their packed bytes.
* Weight memory is the bytes the weights take where they live: parameters and buffers at their storage size, 4-bit
  layers as their packed uint8 storage plus their quantization state (absmax, code, nested state).
* Peak memory is absolute, what the run needed in all, never the growth above the level at entry:

  - :func:`measure_in_fresh_process` (what the paper pipelines use): a new Python process (``spawn``) loads the model
    and runs the measured call; on a GPU its ``torch.cuda.max_memory_allocated`` summed over the visible GPUs (the
    weights plus the prediction's working memory, method ``"fresh_process_cuda_max_allocated"``), on CPU its peak
    resident set size (``VmHWM`` of ``/proc/self/status``: interpreter, libraries, weights and working memory, method
    ``"fresh_process_peak_rss"``). Every model is then measured the same way, whatever the parent process holds.
    ``VmHWM`` rather than ``getrusage(RUSAGE_SELF).ru_maxrss``: on Linux the latter carries the parent's peak over
    into a child started by fork + exec (a 400 MiB parent gives a fresh child an ``ru_maxrss`` of 400 MiB), ``VmHWM``
    is the new process's own.
  - :func:`measure` / :class:`PeakMemory` (in this process): on CUDA, ``max_memory_allocated`` after
    ``reset_peak_memory_stats``, summed over the visible GPUs (the weights already there included, method
    ``"cuda_max_allocated"``); on CPU, the largest resident set size of the process sampled every 5 ms (method
    ``"rss_peak"``), which includes whatever else the process holds. The level at entry is kept too
    (``peak_memory_start_bytes``).

  Both include the allocator's caching and any library's own buffers (llama.cpp's KV cache, for instance), which the
  torch profiler would not see; GPU memory that torch does not allocate (a CUDA build of llama.cpp) is not seen, and
  such a model's row gives its process's peak RSS instead. A model served elsewhere (an OpenAI-compatible endpoint)
  has no local memory figure: its row says so (``peak_memory_bytes`` None, method ``"served"``).
* Latency is wall time per example (batches of ``batch_size``; the first ``warmup`` batches are not timed) and
  throughput its inverse, examples per second.
* A row that could not be measured (an unreachable server, a process that ran out of memory) keeps its name and
  says why in ``error``; :func:`efficiency_table` prints it with the reason under the table.

Works for a transformers model (:func:`forward_predictor`, or any callable using it) and for anything else given as
a callable ``predict(texts) -> anything`` (e.g. a llama.cpp teacher), with ``parameters`` / ``weight_bytes`` /
``weights_path`` given by hand.

Example::

    rows = [
        measure("teacher (llama.cpp)", teacher_fn, texts, weights_path=gguf_path),
        measure("student", lambda b: trainer.predict_labels(b, show_progress=False), texts, model=trainer.model),
        # loads the model in a new process (load_student: a module-level function returning (predict, info))
        measure_in_fresh_process("student", load_student, texts, load_args=(path,)),
    ]
    print(efficiency_table(rows))
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
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
    "measure_in_fresh_process",
    "peak_rss_bytes",
    "served_row",
    "unmeasured_row",
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


def _status_bytes(key: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None where there is no such file."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB (never decreases)


def peak_rss_bytes() -> int:
    """The peak resident set size of this process since it started (``VmHWM``; without ``/proc``,
    ``getrusage(RUSAGE_SELF).ru_maxrss``, which on Linux may include the parent's peak in a forked child)."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    import resource
    import sys

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _cuda_devices() -> range:
    return range(torch.cuda.device_count()) if torch.cuda.is_available() else range(0)


def _cuda_reset_peaks() -> None:
    for device in _cuda_devices():
        torch.cuda.reset_peak_memory_stats(device)


def _cuda_max_allocated() -> int:
    """``max_memory_allocated`` summed over the visible GPUs (a model spread by a device map counts whole)."""
    for device in _cuda_devices():
        torch.cuda.synchronize(device)
    return sum(torch.cuda.max_memory_allocated(device) for device in _cuda_devices())


def _cuda_allocated() -> int:
    return sum(torch.cuda.memory_allocated(device) for device in _cuda_devices())


class PeakMemory:
    """Context manager measuring the absolute peak memory of this process during the block: ``.peak_bytes``,
    ``.start_bytes`` (the level at entry), ``.growth_bytes`` (peak minus start) and ``.method`` (see the module
    docstring)."""

    def __init__(self, interval: float = 0.005, device: str | torch.device | None = None):
        self.interval = interval
        self.cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        self.method = "cuda_max_allocated" if self.cuda else "rss_peak"
        self.peak_bytes = 0
        self.start_bytes = 0

    @property
    def growth_bytes(self) -> int:
        return max(0, self.peak_bytes - self.start_bytes)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            for device in _cuda_devices():
                torch.cuda.synchronize(device)
            self.start_bytes = _cuda_allocated()
            _cuda_reset_peaks()
        else:
            self.start_bytes = self._peak = _rss_bytes()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            self.peak_bytes = _cuda_max_allocated()
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, _rss_bytes())


@dataclass
class EfficiencyRow:
    """One measured model. ``peak_memory_bytes`` is None when there is no local figure (a served model, a failed
    measurement); ``error`` says why a row could not be measured, ``note`` anything else the reader must know."""

    name: str
    parameters: int | None
    weight_bytes: int | None
    peak_memory_bytes: int | None
    peak_memory_method: str
    latency_ms_per_example: float | None
    examples_per_second: float | None
    num_examples: int
    batch_size: int
    peak_memory_start_bytes: int | None = None
    error: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> EfficiencyRow:
        """A row from :meth:`to_dict` (unknown keys ignored, missing optional ones left at their defaults)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def unmeasured_row(name: str, error: str, num_examples: int = 0, batch_size: int = 1, **known: Any) -> EfficiencyRow:
    """The row of a model that could not be measured: every figure None, ``error`` saying why."""
    values = dict(
        name=name,
        parameters=None,
        weight_bytes=None,
        peak_memory_bytes=None,
        peak_memory_method="not measured",
        latency_ms_per_example=None,
        examples_per_second=None,
        num_examples=num_examples,
        batch_size=batch_size,
        error=error,
    )
    values.update(known)
    return EfficiencyRow(**values)


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
    # memory is watched from before the warm-up: the allocator keeps what the first batch took, so a peak measured
    # after it would miss the working memory
    with PeakMemory(device=_device_of(model)) as memory:
        elapsed = _timed_pass(name, predict, texts, batch_size, warmup, show_progress)
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
        peak_memory_start_bytes=memory.start_bytes,
    )


def _timed_pass(name: str, predict: Callable, texts: list[str], batch_size: int, warmup: int, show_progress: bool):
    """Seconds of one pass of ``predict`` over ``texts`` in batches, after ``warmup`` untimed batches (the first
    ones, timed again in the pass)."""
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    for batch in batches[:warmup]:
        predict(batch)
    start = time.perf_counter()
    for batch in tqdm(batches, desc=f"Timing {name}", disable=not show_progress):
        predict(batch)
    return time.perf_counter() - start


def _device_of(model: nn.Module | None) -> torch.device | None:
    """The device of ``model``'s first parameter (None without a model or parameters: any device)."""
    if model is None:
        return None
    param = next(iter(model.parameters()), None)
    return None if param is None else param.device


def served_row(
    name: str,
    predict: Callable[[list[str]], Any],
    texts: Sequence[str],
    *,
    where: str,
    batch_size: int = 1,
    warmup: int = 1,
    show_progress: bool = True,
) -> EfficiencyRow:
    """Latency and throughput of a model served elsewhere (``predict`` calls its server): no parameters, weights or
    memory figure can be read from here, and the row says so (method ``"served"``); a failing server gives a row
    with the error instead of an exception."""
    texts = list(texts)
    try:
        elapsed = _timed_pass(name, predict, texts, batch_size, warmup, show_progress)
    except Exception as error:  # noqa: BLE001 - the row says what happened; the other rows are kept
        return unmeasured_row(name, f"{type(error).__name__}: {error}", len(texts), batch_size, note=where)
    return EfficiencyRow(
        name=name,
        parameters=None,
        weight_bytes=None,
        peak_memory_bytes=None,
        peak_memory_method="served",
        latency_ms_per_example=1000 * elapsed / len(texts),
        examples_per_second=len(texts) / elapsed if elapsed > 0 else float("inf"),
        num_examples=len(texts),
        batch_size=batch_size,
        note=f"served by {where}: its memory is the server's, not measured here",
    )


# --------------------------------------------------------------------------------------------------------------------
# In a fresh process
# --------------------------------------------------------------------------------------------------------------------

# What makes a child process believe it is one rank of a distributed run (it must run alone)
_DISTRIBUTED_ENV = (
    "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
    "TORCHELASTIC_RUN_ID", "ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP",
)  # fmt: skip


def _fresh_process_worker(conn, name, load, load_args, load_kwargs, texts, batch_size, warmup) -> None:
    """In the new process: load, measure, send the row's fields (or ``{"error": ...}``) through ``conn``."""
    for key in _DISTRIBUTED_ENV:
        os.environ.pop(key, None)
    try:
        cuda = torch.cuda.is_available()
        if cuda:
            _cuda_reset_peaks()
        runtime_bytes = _status_bytes("VmRSS") or _rss_bytes()  # interpreter and libraries, before the model
        predict, info = load(*load_args, **load_kwargs)
        info = dict(info or {})
        row = measure(
            name,
            predict,
            texts,
            batch_size=batch_size,
            warmup=warmup,
            model=info.get("model"),
            parameters=info.get("parameters"),
            weight_bytes=info.get("weight_bytes"),
            weights_path=info.get("weights_path"),
            show_progress=False,
        )
        values = row.to_dict()
        if cuda and _cuda_max_allocated() > 0:  # the model lives on the GPU(s)
            values.update(
                peak_memory_bytes=_cuda_max_allocated(),
                peak_memory_method="fresh_process_cuda_max_allocated",
                peak_memory_start_bytes=0,
            )
        else:
            values.update(
                peak_memory_bytes=max(peak_rss_bytes(), row.peak_memory_bytes or 0),
                peak_memory_method="fresh_process_peak_rss",
                peak_memory_start_bytes=runtime_bytes,
            )
        if info.get("note"):
            values["note"] = info["note"]
        conn.send(values)
    except BaseException as error:  # noqa: BLE001 - reported to the parent as the row's error
        conn.send({"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})
    finally:
        conn.close()


def measure_in_fresh_process(
    name: str,
    load: Callable[..., tuple[Callable[[list[str]], Any], Mapping[str, Any] | None]],
    texts: Sequence[str],
    *,
    load_args: Sequence[Any] = (),
    load_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 1,
    warmup: int = 1,
    timeout: float | None = None,
) -> EfficiencyRow:
    """Measure ``predict`` in a new Python process that loads the model itself, so that the peak memory is what this
    model needs in all (weights, working memory, runtime), whatever the calling process holds.

    Args:
        load: a module-level function (it is pickled by name), called in the new process as
            ``load(*load_args, **load_kwargs)``; returns ``(predict, info)`` where ``info`` may give ``model`` (read
            for parameters and weight memory), ``parameters``, ``weight_bytes``, ``weights_path`` and a ``note``.
        timeout: seconds before the process is stopped and the row reports it (None: no limit).

    Returns:
        The row: on a GPU (torch used CUDA in the new process) ``peak_memory_bytes`` is its
        ``torch.cuda.max_memory_allocated`` (weights + prediction); otherwise its peak resident set size, with
        ``peak_memory_start_bytes`` the resident set of the interpreter and libraries before the model was loaded.
        A failure (an exception in the new process, a crash such as the out-of-memory killer's, the timeout) gives a
        row with ``error`` instead of raising.
    """
    texts = list(texts)
    if not texts:
        raise ValueError("measure_in_fresh_process needs at least one text.")
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_fresh_process_worker,
        args=(sender, name, load, tuple(load_args), dict(load_kwargs or {}), texts, batch_size, warmup),
        name=f"measure {name}",
    )
    process.start()
    sender.close()
    deadline = None if timeout is None else time.monotonic() + timeout
    values = None
    try:
        while True:
            if receiver.poll(1.0):
                values = receiver.recv()
                break
            if not process.is_alive():
                if receiver.poll(0.5):
                    values = receiver.recv()
                break
            if deadline is not None and time.monotonic() > deadline:
                process.terminate()
                values = {"error": f"not finished after {timeout:.0f} s: stopped"}
                break
    except EOFError:
        values = None
    finally:
        process.join(timeout=60)
        if process.is_alive():
            process.kill()
            process.join()
        receiver.close()
    if values is None:
        code = process.exitcode
        why = " (killed: out of memory?)" if code is not None and code < 0 else ""
        values = {"error": f"the measuring process exited with code {code}{why} before reporting"}
    if values.get("error") is not None:
        return unmeasured_row(name, values["error"], len(texts), batch_size)
    return EfficiencyRow.from_dict(values)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f}"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def efficiency_table(rows: Sequence[EfficiencyRow]) -> str:
    """A Markdown table of :func:`measure` rows (memory in MiB, parameters in millions); rows with an ``error`` or a
    ``note`` are explained under the table. A fresh process's peak RSS is followed by its runtime's share (the
    resident set of the interpreter and libraries before the model was loaded)."""
    methods = sorted({row.peak_memory_method for row in rows if row.error is None})
    header = (
        "| model | params | weights (MiB) | peak memory (MiB, "
        + ", ".join(methods)
        + ") | latency (ms / example) | examples / s | batch |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    notes = []
    for row in rows:
        params = "-" if row.parameters is None else f"{row.parameters / 1e6:.1f}M"
        name = row.name
        if row.error is not None:
            name += " (not measured)"
            notes.append(f"- {row.name}: not measured: {row.error}" + (f" ({row.note})" if row.note else ""))
        elif row.note:
            notes.append(f"- {row.name}: {row.note}")
        peak = _mib(row.peak_memory_bytes)
        if row.peak_memory_method == "fresh_process_peak_rss" and row.peak_memory_start_bytes:
            peak += f" (runtime {_mib(row.peak_memory_start_bytes)})"
        lines.append(
            f"| {name} | {params} | {_mib(row.weight_bytes)} | {peak} | "
            f"{_number(row.latency_ms_per_example, 1)} | {_number(row.examples_per_second, 2)} | {row.batch_size} |"
        )
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)
