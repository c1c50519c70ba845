"""A GGUF file run by llama-cpp-python as teacher, one conversation after the other."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from .base import GenerationResult, Messages, TeacherBackend, TeacherBackendError, _check_batch


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
        from ...llamacpp import no_weight_repacking, repacking_is_safe

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
