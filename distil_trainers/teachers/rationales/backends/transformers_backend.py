"""A ``transformers`` causal LM as teacher: batched generation with left padding, 4-bit NF4 loading, and the checks of
a device map and memory limits made before anything is loaded."""

from __future__ import annotations

import gc
import importlib.util
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import GenerationResult, Messages, TeacherBackend, _check_batch

logger = logging.getLogger(__name__)


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
