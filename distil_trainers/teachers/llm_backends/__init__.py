"""Causal-LM backends that score text continuations: the log-probability of every token of a candidate answer after a
prompt, the one primitive behind :class:`~distil_trainers.teachers.LLMClassifier`.

One small interface, :class:`LogprobBackend`:

* ``continuation_logprobs(prompts, continuations)`` returns, for every prompt and every continuation, the list of
  ``log p(token | everything before it)`` of the continuation's tokens (``scoring == "tokens"``);
* ``render_chat(messages)`` renders chat messages with the model's chat template (``None`` without one);
* ``identity()`` (and ``describe()``) says which model scores (recorded in caches and their fingerprints).

Backends:

* :class:`TransformersLogprobBackend`: a ``transformers`` causal LM (a Hub id or local directory, a ``.gguf`` file
  dequantised by transformers, or a model object; optional 4-bit loading through bitsandbytes). Batched, padded on
  the left. By default the prompts are run once and the candidates continue from their key/value cache
  (``share_prefix=True``); ``share_prefix=False`` runs one full forward per prompt + candidate. Both give the same
  numbers up to float rounding.
* :class:`LlamaCppLogprobBackend`: a GGUF file run by llama-cpp-python with ``logits_all=True``. The prompt is
  evaluated once (and the part it shares with the previous prompt, e.g. a few-shot prefix, is kept), then each
  candidate is evaluated after it.
* :class:`OpenAILogprobBackend`: a server with an OpenAI-compatible API. ``mode="echo"`` sends ``prompt +
  continuation`` to ``/v1/completions`` with ``echo=True, logprobs=k, max_tokens=1`` and reads the echoed prompt
  tokens' log-probabilities (exact; vLLM supports it). ``mode="chat"`` asks ``/v1/chat/completions`` for one token with
  ``logprobs=True, top_logprobs=k`` and returns the top-``k`` first answer tokens (``scoring == "first_token"``): an
  approximation, see :class:`OpenAILogprobBackend` for what it can and cannot measure and which servers support what.

Token boundary. A candidate is scored as it is tokenised after the prompt: ``prompt + continuation`` is tokenised
whole, and the scored tokens are those after the longest common token prefix of ``tokenize(prompt)`` and
``tokenize(prompt + continuation)``. With BPE tokenizers a word's leading space belongs to the word's token
(``" hate"`` is one token, ``"hate"`` may be two), so the continuation carries its separator: after ``"Label:"`` the
candidate is ``" hate"``. If the tokenizer merges the end of the prompt with the start of the candidate, the merged
token is scored too (its log-probability then covers the end of the prompt as well); this is counted in
``boundary_merges`` and logged once, and a prompt ending in punctuation or a newline avoids it.

BOS. Prompts are tokenised with special tokens parsed (a chat template writes them as text); the tokenizer's own
prefix (a BOS token, when the model uses one) is added unless the text already starts with it, the same rule for
every local backend.

Example::

    backend = LlamaCppLogprobBackend(packaged_smollm2_gguf(), n_ctx=2048)
    prompt = backend.render_chat([{"role": "user", "content": "Post: you are an idiot"}]) + "Label:"
    [[hate, offensive]] = backend.continuation_logprobs([prompt], [" hate", " offensive"])
    # hate == [log p(" hate" | prompt)]; a word of several tokens gives one value per token

The code is in one module per backend, beside their interface: :mod:`.base` (:class:`LogprobBackend`, the token
boundary rule, :func:`render_chat_template`), :mod:`.transformers_backend`, :mod:`.llamacpp_backend`,
:mod:`.openai_backend`, and :mod:`.conversions` (:func:`as_logprob_backend`).
"""

from .base import LogprobBackend, Messages, render_chat_template
from .conversions import as_logprob_backend
from .llamacpp_backend import LlamaCppLogprobBackend
from .openai_backend import OpenAILogprobBackend
from .transformers_backend import TransformersLogprobBackend

__all__ = [
    "LlamaCppLogprobBackend",
    "LogprobBackend",
    "OpenAILogprobBackend",
    "TransformersLogprobBackend",
    "as_logprob_backend",
    "render_chat_template",
]
