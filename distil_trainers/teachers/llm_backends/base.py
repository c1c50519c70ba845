"""What every log-probability backend implements (:class:`LogprobBackend`), the token-level scoring plan the local
backends share (the token boundary rule), and chat templates rendered without a tokenizer."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..._sequences import common_prefix_length

logger = logging.getLogger(__name__)


Messages = list[dict[str, str]]


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, str]],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    **kwargs: Any,
) -> str:
    """Render a Jinja chat template as ``transformers`` does (sandboxed, ``trim_blocks``, ``lstrip_blocks``, the
    ``loopcontrols`` extension, ``raise_exception`` and ``strftime_now``).

    Args:
        template: the template text (a tokenizer's ``chat_template``; a GGUF file's ``tokenizer.chat_template``).
        messages: ``[{"role": ..., "content": ...}, ...]``.
        add_generation_prompt: end with the header of an assistant turn.
        bos_token, eos_token: the special tokens' text, for templates that write them.
        **kwargs: more template variables.
    """
    from datetime import datetime

    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template).render(
        messages=[dict(m) for m in messages],
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
        **kwargs,
    )


class LogprobBackend(ABC):
    """Scores continuations of prompts with a causal LM.

    Attributes:
        model_id: the model's name or path (recorded in caches and model cards).
        scoring: ``"tokens"`` (exact per-token log-probabilities of any continuation, :meth:`continuation_logprobs`)
            or ``"first_token"`` (only the top-``k`` first answer tokens of a chat completion,
            :meth:`first_token_top_logprobs`).
    """

    model_id: str = "unknown"
    scoring: str = "tokens"

    def continuation_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[list[float]]]:
        """``out[i][c]``: the log-probabilities of the tokens of ``continuations[c]`` after ``prompts[i]`` (see the
        module docstring for the token boundary), natural log."""
        raise NotImplementedError(f"{type(self).__name__} does not score continuations token by token")

    def first_token_top_logprobs(self, messages_batch: Sequence[Messages], k: int) -> list[list[tuple[str, float]]]:
        """Per conversation, the top-``k`` ``(token text, log-probability)`` of the first answer token."""
        raise NotImplementedError(f"{type(self).__name__} has no first-token mode")

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str | None:
        """The prompt text of ``messages`` with the model's chat template and the assistant header; ``None`` when
        the model has no chat template."""
        return None

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What identifies the scores: backend kind, model, and a hash of the weights where the backend can tell.
        Part of the cache fingerprint."""

    def describe(self) -> dict[str, Any]:
        """:meth:`identity` (for caches and model cards)."""
        return self.identity()


@dataclass
class _Plan:
    """One prompt's tokens: the shared prefix, each candidate's tokens after it, and the index (in the candidate's
    tokens) of its first scored token."""

    prefix: list[int]
    segments: list[list[int]]
    starts: list[int]


class _TokenLevelBackend(LogprobBackend):
    """Shared tokenisation plan of the local backends (they see token ids)."""

    boundary_merges: int = 0

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special tokens parsed, the tokenizer's prefix added unless already there)."""

    def plan(self, prompt: str, continuations: Sequence[str]) -> _Plan:
        """Tokenise ``prompt`` and every ``prompt + continuation``; the scored tokens of a continuation start after
        the longest common token prefix with the prompt alone."""
        prompt_ids = self.encode(prompt)
        fulls = [self.encode(prompt + c) for c in continuations]
        cuts = []
        for cont, full in zip(continuations, fulls):
            n = common_prefix_length(prompt_ids, full)
            if n >= len(full):
                raise ValueError(f"The continuation {cont!r} adds no token after the prompt (empty label word?).")
            if n == 0:
                raise ValueError(
                    "The first token of the prompt + continuation differs from the prompt's: there is no context to "
                    "score it from. Give the prompt some text (or a BOS token) before the answer."
                )
            if n < len(prompt_ids):
                self.boundary_merges = getattr(self, "boundary_merges", 0) + 1
                if self.boundary_merges == 1:
                    logger.warning(
                        "The tokenizer merges the end of the prompt with the continuation %r: the merged token is "
                        "scored too. End the prompt (answer prefix) with punctuation or a newline and start the label "
                        "words with their separator (e.g. ' hate') to avoid it. Counted in boundary_merges.",
                        cont,
                    )
            cuts.append(n)
        shared = min(cuts)
        return _Plan(prompt_ids[:shared], [f[shared:] for f in fulls], [n - shared for n in cuts])
