"""A model behind an OpenAI-compatible ``/v1/chat/completions`` endpoint as teacher: retries, and ``concurrency``
requests in flight over a whole run."""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any

from .base import GenerationResult, Messages, TeacherBackend, TeacherBackendError, _check_batch

logger = logging.getLogger(__name__)


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
