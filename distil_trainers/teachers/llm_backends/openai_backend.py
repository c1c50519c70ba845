"""A server with an OpenAI-compatible API: echoed prompt log-probabilities (exact) or the top first answer tokens
(an approximation)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..rationales.backends import OpenAIEndpointBackend, TeacherBackendError
from .base import LogprobBackend, Messages, render_chat_template


class OpenAILogprobBackend(OpenAIEndpointBackend, LogprobBackend):
    """Log-probabilities from a server with an OpenAI-compatible API (retries and concurrency as
    :class:`~distil_trainers.teachers.rationales.OpenAIEndpointBackend`).

    ``mode="echo"`` (exact, ``scoring == "tokens"``): ``POST /v1/completions`` with ``prompt = prompt + continuation``,
    ``echo=True``, ``logprobs=logprobs``, ``max_tokens=1`` (``max_tokens=0`` means "no limit" to some servers, so one
    token is generated and ignored) and ``temperature=0``. The scored tokens are the last echoed tokens before the
    generated one whose texts cover the continuation, so the token boundary follows the server's own tokenizer (a
    token merged across the boundary is scored too, as in the local backends; label words are matched by their text,
    so a word split inside a multi-byte character may not be found). The prompt is sent as text: a chat template is applied only when given (``chat_template``, e.g. the model's
    ``tokenizer.chat_template``, rendered here with :func:`render_chat_template`).

    ``mode="chat"`` (approximate, ``scoring == "first_token"``): ``POST /v1/chat/completions`` with the messages,
    ``max_tokens=1``, ``logprobs=True``, ``top_logprobs=k``; the server applies its chat template, and only the
    ``k`` most likely first answer tokens are returned (OpenAI caps ``k`` at 20). The classifier then gives each class
    the probability of the top-``k`` tokens that begin one of its label words; a class none of whose words starts a
    top-``k`` token gets a floor (at most the ``k``-th probability), and classes whose words start with the same token
    cannot be told apart. See :class:`~distil_trainers.teachers.LLMClassifier`.

    Which servers support what (llama-cpp-python 0.3.36 tested here; vLLM as documented):

    * vLLM: both modes (echo returns the prompt tokens' log-probabilities).
    * llama-cpp-python's server (``python -m llama_cpp.server``; on AMX CPUs start it with
      ``python -m distil_trainers.teachers.llamacpp``): ``mode="chat"`` works. Its echoed log-probabilities are
      right only for models that add a BOS token; for the others (e.g. SmolLM2) every echoed value is shifted by one
      token. That response also lacks the generated token, which this backend detects: it raises a
      :class:`~distil_trainers.teachers.rationales.TeacherBackendError` instead of returning wrong numbers. (Its
      ``text_offset`` values leave out special tokens, which is why they are not used here.)
    * llama.cpp's C++ ``llama-server`` and OpenAI's hosted chat models do not echo prompt log-probabilities as far as
      their documentation goes; use ``mode="chat"`` where ``top_logprobs`` is supported. For any other server, a
      response that cannot be read raises :class:`~distil_trainers.teachers.rationales.TeacherBackendError` saying so.

    Args:
        base_url: the API root including ``/v1``.
        model: the served model name; default: the first one listed by ``GET /v1/models``.
        mode: ``"echo"`` or ``"chat"``.
        logprobs: ``logprobs`` of the echo request (top alternatives per token; only the echoed tokens' own
            log-probabilities are read).
        top_logprobs: ``k`` of the chat mode.
        chat_template, bos_token, eos_token: the model's chat template for the echo mode (rendered client-side).
        **kwargs: :class:`~distil_trainers.teachers.rationales.OpenAIEndpointBackend` arguments (``api_key``, ``timeout``,
            ``max_retries``, ``backoff``, ``concurrency``, ``extra_body``).
    """

    MODES = ("echo", "chat")

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        *,
        mode: str = "echo",
        logprobs: int = 1,
        top_logprobs: int = 20,
        chat_template: str | None = None,
        bos_token: str = "",
        eos_token: str = "",
        **kwargs: Any,
    ) -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if top_logprobs < 1 or logprobs < 0:
            raise ValueError("need top_logprobs >= 1 and logprobs >= 0")
        super().__init__(base_url, model, **kwargs)
        self.mode = mode
        self.scoring = "tokens" if mode == "echo" else "first_token"
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.chat_template = chat_template
        self.bos_token, self.eos_token = bos_token, eos_token

    def identity(self) -> dict[str, Any]:
        ident = {"backend": "openai-endpoint", "model": self.model_id, "mode": self.mode}
        if self.mode == "chat":
            ident["top_logprobs"] = self.top_logprobs
        elif self.chat_template:
            ident["chat_template_sha256"] = hashlib.sha256(self.chat_template.encode()).hexdigest()[:16]
        return ident

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str | None:
        if not self.chat_template:
            return None
        return render_chat_template(self.chat_template, messages, bos_token=self.bos_token, eos_token=self.eos_token)

    def _map(self, fn, items: list) -> list:
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(items))) as pool:
            return list(pool.map(fn, items))

    # -- echo ---------------------------------------------------------------------------------------------------------

    def _echo_one(self, pair: tuple[str, str]) -> list[float]:
        prompt, continuation = pair
        full = prompt + continuation
        body = {
            "model": self.model,
            "prompt": full,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": self.logprobs,
            **self.extra_body,
        }
        data = self._request("POST", "/completions", body)
        try:
            choice = data["choices"][0]
            info = choice["logprobs"]
            tokens = [str(t) for t in info["tokens"]]
            token_logprobs = list(info["token_logprobs"])
            text = choice.get("text") or ""
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise TeacherBackendError(
                f"the server returned no echoed log-probabilities (tokens, token_logprobs): {str(data)[:300]}. "
                "Does it support echo=True with logprobs on /v1/completions? Otherwise use mode='chat'."
            ) from exc
        return _echoed_continuation(prompt, continuation, text, tokens, token_logprobs)

    def continuation_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[list[float]]]:
        if self.mode != "echo":
            raise NotImplementedError("continuation_logprobs needs mode='echo'")
        pairs = [(p, c) for p in prompts for c in continuations]
        flat = self._map(self._echo_one, pairs)
        k = len(continuations)
        return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]

    # -- chat ---------------------------------------------------------------------------------------------------------

    def _chat_one(self, messages: Messages, k: int) -> list[tuple[str, float]]:
        body = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": k,
            **self.extra_body,
        }
        data = self._request("POST", "/chat/completions", body)
        try:
            first = data["choices"][0]["logprobs"]["content"][0]
            top = [(str(t["token"]), float(t["logprob"])) for t in first["top_logprobs"]]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise TeacherBackendError(
                f"the server returned no top_logprobs for the first answer token: {str(data)[:300]}. Does it support "
                "logprobs/top_logprobs on /v1/chat/completions?"
            ) from exc
        if not top:
            raise TeacherBackendError("the server returned an empty top_logprobs list")
        return top

    def first_token_top_logprobs(self, messages_batch: Sequence[Messages], k: int | None = None):
        if self.mode != "chat":
            raise NotImplementedError("first_token_top_logprobs needs mode='chat'")
        k = int(k or self.top_logprobs)
        return self._map(lambda m: self._chat_one(m, k), list(messages_batch))


def _echoed_continuation(
    prompt: str, continuation: str, text: str, tokens: list[str], values: list[float | None]
) -> list[float]:
    """The log-probabilities of the continuation's tokens in an echoed completion of ``prompt + continuation``.

    The generated tokens (the text after ``prompt + continuation``, and tokens without text such as an end of
    sequence) are dropped from the end, then tokens are taken backwards until their texts cover the continuation. Character offsets are not used: llama-cpp-python computes them
    on a text without the special tokens, so they do not index the prompt of a chat template."""
    full = prompt + continuation
    if len(tokens) != len(values) or not tokens:
        raise TeacherBackendError(f"inconsistent echoed log-probabilities: {len(tokens)} tokens, {len(values)} values")
    if not text.startswith(full):
        raise TeacherBackendError("the server did not echo the prompt (echo=True unsupported?)")
    generated = text[len(full) :]
    if not "".join(tokens).endswith(continuation + generated):
        raise TeacherBackendError(
            f"the echoed tokens do not end with the continuation {continuation!r} followed by the generated text "
            f"{generated!r}: the server's echoed log-probabilities are misaligned (llama-cpp-python's server leaves "
            "out the generated token and shifts every value by one token for models without a BOS token). Use "
            "mode='chat', or a server whose echo is exact (vLLM)."
        )
    end, covered = len(tokens), 0
    while covered < len(generated) and end > 0:
        end -= 1
        covered += len(tokens[end])
    while end > 0 and tokens[end - 1] == "":  # a generated token without text (end of sequence)
        end -= 1
    start, covered = end, 0
    while covered < len(continuation) and start > 0:
        start -= 1
        covered += len(tokens[start])
    scored = values[start:end]
    if not scored or any(v is None for v in scored):
        raise TeacherBackendError(
            f"no log-probability for the tokens of the continuation {continuation!r} (the first token of a text has "
            "none): the prompt must not be empty"
        )
    return [float(v) for v in scored]
