"""Any supported object (a backend, a teacher-rationale backend, a model) as a :class:`LogprobBackend`."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from ..rationales.backends import OpenAIEndpointBackend
from .base import LogprobBackend
from .llamacpp_backend import LlamaCppLogprobBackend
from .openai_backend import OpenAILogprobBackend
from .transformers_backend import TransformersLogprobBackend


def as_logprob_backend(obj: Any, **kwargs: Any) -> LogprobBackend:
    """A :class:`LogprobBackend` from ``obj``: itself when it is one; from a generation backend of
    :mod:`distil_trainers.teachers.rationales` (same model: a ``TransformersBackend``'s model and tokenizer, a
    ``LlamaCppBackend``'s GGUF file loaded again with ``logits_all=True``, an ``OpenAIEndpointBackend``'s server);
    a ``.gguf`` path loads with llama.cpp; any other string loads with transformers. ``kwargs`` go to the new
    backend's constructor."""
    from ..rationales.backends import LlamaCppBackend, TransformersBackend

    if isinstance(obj, LogprobBackend):
        return obj
    if isinstance(obj, TransformersBackend):
        return TransformersLogprobBackend(
            obj.model, obj.tokenizer, model_id=obj.model_id,
            chat_template_kwargs=kwargs.pop("chat_template_kwargs", obj.chat_template_kwargs), **kwargs,
        )
    if isinstance(obj, LlamaCppBackend):
        n_ctx = obj.llm.n_ctx() if obj.llm is not None else 4096
        return LlamaCppLogprobBackend(obj.model_path, **{"n_ctx": n_ctx, **kwargs})
    if isinstance(obj, OpenAIEndpointBackend):
        return OpenAILogprobBackend(
            obj.base_url, obj.model, api_key=obj.api_key, timeout=obj.timeout, max_retries=obj.max_retries,
            backoff=obj.backoff, concurrency=obj.concurrency, extra_body=obj.extra_body, **kwargs,
        )
    if isinstance(obj, (str, os.PathLike)):
        if str(obj).endswith(".gguf") and importlib.util.find_spec("llama_cpp") is not None:
            return LlamaCppLogprobBackend(obj, **kwargs)
        return TransformersLogprobBackend(obj, **kwargs)
    raise TypeError(
        f"cannot score with a {type(obj).__name__}: pass a LogprobBackend (TransformersLogprobBackend, "
        "LlamaCppLogprobBackend, OpenAILogprobBackend), a rationales backend, or a model name/path"
    )
