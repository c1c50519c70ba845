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
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .rationales.backends import OpenAIEndpointBackend, TeacherBackendError

logger = logging.getLogger(__name__)

__all__ = [
    "LlamaCppLogprobBackend",
    "LogprobBackend",
    "OpenAILogprobBackend",
    "TransformersLogprobBackend",
    "as_logprob_backend",
    "render_chat_template",
]

Messages = list[dict[str, str]]


# ---------------------------------------------------------------------------------------------------------------------
# chat templates
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# the interface
# ---------------------------------------------------------------------------------------------------------------------


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


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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
            n = _common_prefix(prompt_ids, full)
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


# ---------------------------------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------------------------------


class TransformersLogprobBackend(_TokenLevelBackend):
    """A ``transformers`` causal LM that scores continuations, batched with LEFT padding.

    Positions are computed from the attention mask (``cumsum - 1``), so left padding changes nothing, also for models
    with absolute position embeddings.

    Args:
        model: a Hub id or local directory, a path to a ``.gguf`` file (dequantised by transformers; needs the
            ``gguf`` package), or a loaded ``PreTrainedModel``.
        tokenizer: its tokenizer (or name/path); default: loaded from ``model``. A chat template is optional.
        share_prefix: run each prompt once and the candidates from its key/value cache (default); False runs one
            forward over every prompt + candidate (more compute, no cache).
        load_in_4bit: load in 4-bit NF4 with double quantisation through bitsandbytes (needs ``bitsandbytes``; meant
            for a large teacher on a GPU); ``bnb_4bit_compute_dtype`` defaults to bfloat16.
        dtype, device, device_map, model_kwargs: as for ``from_pretrained``.
        chat_template_kwargs: extra ``apply_chat_template`` arguments (e.g. ``{"enable_thinking": False}``).
        model_id: the name recorded in caches (default: the model's name or path).
        fingerprint_weights: hash every weight into :meth:`identity` (once; about a second per 100M parameters).
            False identifies the model by ``model_id`` and its config only.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        share_prefix: bool = True,
        load_in_4bit: bool = False,
        bnb_4bit_compute_dtype: Any = None,
        dtype: Any = None,
        device: Any = None,
        device_map: Any = None,
        model_kwargs: dict[str, Any] | None = None,
        chat_template_kwargs: dict[str, Any] | None = None,
        model_id: str | None = None,
        fingerprint_weights: bool = True,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_kwargs = dict(model_kwargs or {})
        tok_kwargs: dict[str, Any] = {}
        if isinstance(model, (str, os.PathLike)):
            name = str(model)
            load_from = name
            if name.endswith(".gguf"):
                if importlib.util.find_spec("gguf") is None:
                    raise ImportError("loading a .gguf file with transformers needs the `gguf` package: pip install gguf")
                if not os.path.isfile(name):
                    raise FileNotFoundError(f"GGUF file not found: {name}")
                load_from = str(Path(name).parent)
                model_kwargs["gguf_file"] = tok_kwargs["gguf_file"] = Path(name).name
            if load_in_4bit:
                if importlib.util.find_spec("bitsandbytes") is None:
                    raise ImportError("load_in_4bit=True needs bitsandbytes: pip install 'distil-trainers[quantization]'")
                from .rationales.backends import nf4_quantization_config

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
            else:
                tok_kwargs = {}
            self.model_id = model_id or name
        else:
            if load_in_4bit:
                raise ValueError("load_in_4bit applies when loading by name; quantise the model object yourself")
            if tokenizer is None:
                raise ValueError("a model object needs its tokenizer: TransformersLogprobBackend(model, tokenizer)")
            self.model = model
            if device is not None:
                self.model.to(device)
            self.model_id = model_id or getattr(model.config, "name_or_path", "") or type(model).__name__
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), **tok_kwargs)
        self.tokenizer = tokenizer
        self.model.eval()
        self.device = torch.device(device) if device is not None else next(self.model.parameters()).device
        self.share_prefix = share_prefix
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.fingerprint_weights = fingerprint_weights
        self._identity: dict[str, Any] | None = None
        self.pad_token_id = next(
            (t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None), 0
        )
        self._special_prefix = self._tokenizer_prefix()
        self.boundary_merges = 0
        # the key/value cache argument is `cache` in recent transformers releases, `past_key_values` before
        forward_params = inspect.signature(self.model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_params else "past_key_values"

    def _tokenizer_prefix(self) -> list[int]:
        """The ids the tokenizer puts before a text (e.g. ``[bos]``), found by tokenising a probe with and without
        special tokens."""
        probe = "a"
        with_specials = list(self.tokenizer(probe, add_special_tokens=True)["input_ids"])
        plain = list(self.tokenizer(probe, add_special_tokens=False)["input_ids"])
        for start in range(len(with_specials) - len(plain) + 1):
            if with_specials[start : start + len(plain)] == plain:
                return with_specials[:start]
        return []

    def encode(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        prefix = self._special_prefix
        if prefix and ids[: len(prefix)] != prefix:
            ids = prefix + ids
        return ids

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str | None:
        if getattr(self.tokenizer, "chat_template", None) is None:
            return None
        return self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=True, **self.chat_template_kwargs
        )

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            config = self.model.config.to_json_string(use_diff=False) if hasattr(self.model, "config") else ""
            ident: dict[str, Any] = {
                "backend": "transformers",
                "model": self.model_id,
                "config_sha256": hashlib.sha256(config.encode()).hexdigest()[:16],
                "dtype": str(getattr(self.model, "dtype", "")),
                "quantization": type(getattr(self.model.config, "quantization_config", None)).__name__
                if getattr(self.model.config, "quantization_config", None) is not None
                else None,
            }
            if self.fingerprint_weights:
                from .cache import model_fingerprint

                try:
                    ident["weights_sha256"] = model_fingerprint(self.model)[:32]
                except (TypeError, AttributeError, RuntimeError) as exc:  # exotic quantised state dicts
                    logger.warning("Could not hash the weights of %s (%s); identified by name and config.",
                                   self.model_id, exc)
            ident["tokenizer_sha256"] = _tokenizer_hash(self.tokenizer)
            self._identity = ident
        return dict(self._identity)

    # -- scoring ------------------------------------------------------------------------------------------------------

    def continuation_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[list[float]]]:
        import torch

        if not prompts:
            return []
        if not continuations:
            return [[] for _ in prompts]
        plans = [self.plan(p, continuations) for p in prompts]
        with torch.no_grad():
            if self.share_prefix:
                return self._score_shared(plans)
            return self._score_full(plans)

    def _left_pad(self, rows: Sequence[Sequence[int]]):
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
                mask[i, width - len(row) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _score_shared(self, plans: list[_Plan]) -> list[list[list[float]]]:
        """Prompts once (left padded, logits of the last position only), then all candidates of all prompts in one
        forward from the repeated key/value cache (right padded: later padding cannot affect earlier tokens)."""
        import torch

        n_cand = len(plans[0].segments)
        ids, mask, positions = self._left_pad([p.prefix for p in plans])
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1
        )
        cache = _returned_cache(out)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # (B, V): predicts each candidate's 1st token
        longest = max(len(s) for p in plans for s in p.segments)
        seg_logp = None
        if longest > 1:
            if cache is None:
                raise RuntimeError(f"{type(self.model).__name__} returned no key/value cache; use share_prefix=False")
            cache.batch_repeat_interleave(n_cand)
            rows = [s[:-1] for p in plans for s in p.segments]  # the last token predicts nothing we need
            width = longest - 1
            seg_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
            seg_mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, row in enumerate(rows):
                if row:
                    seg_ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
                    seg_mask[r, : len(row)] = 1
            prefix_len = torch.tensor([len(p.prefix) for p in plans]).repeat_interleave(n_cand)
            seg_pos = prefix_len[:, None] + torch.arange(width)[None, :]
            attention = torch.cat([mask.repeat_interleave(n_cand, 0), seg_mask.to(self.device)], dim=1)
            seg_out = self.model(
                input_ids=seg_ids.to(self.device),
                attention_mask=attention,
                position_ids=seg_pos.to(self.device),
                use_cache=True,
                **{self._cache_kwarg: cache},
            )
            seg_logp = seg_out.logits  # (B*K, width, V); log_softmax taken on the rows read below
        results: list[list[list[float]]] = []
        for b, plan in enumerate(plans):
            per_cand = []
            for c, (seg, start) in enumerate(zip(plan.segments, plan.starts)):
                values = []
                for j in range(start, len(seg)):
                    if j == 0:
                        values.append(float(first[b, seg[0]]))
                    else:
                        row = torch.log_softmax(seg_logp[b * n_cand + c, j - 1].float(), dim=-1)
                        values.append(float(row[seg[j]]))
                per_cand.append(values)
            results.append(per_cand)
        return results

    def _score_full(self, plans: list[_Plan]) -> list[list[list[float]]]:
        """One left-padded forward over every prompt + candidate; only the trailing positions' logits are kept."""
        import torch

        rows, scored = [], []
        for plan in plans:
            for seg, start in zip(plan.segments, plan.starts):
                rows.append(plan.prefix + seg)
                scored.append(len(seg) - start)
        keep = max(scored) + 1
        ids, mask, positions = self._left_pad(rows)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
        results: list[list[list[float]]] = []
        r = 0
        for plan in plans:
            per_cand = []
            for seg, start in zip(plan.segments, plan.starts):
                s = len(seg) - start
                targets = seg[start:]
                # token t of the scored part sits s - t positions before the row's end; its logits one further back
                picked = logits[r, keep - 1 - s : keep - 1].float()
                logp = torch.log_softmax(picked, dim=-1)
                per_cand.append([float(logp[t, tok]) for t, tok in enumerate(targets)])
                r += 1
            results.append(per_cand)
        return results


def _returned_cache(out: Any) -> Any:
    """The key/value cache of a model output (``cache``, or ``past_key_values`` in older transformers releases)."""
    keys = list(out.keys())
    for key in ("cache", "past_key_values"):
        if key in keys:
            return out[key]
    return None


def _tokenizer_hash(tokenizer: Any) -> str:
    """A short hash of a tokenizer's vocabulary and template (its ``tokenizer.json`` when it has one)."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------------------------
# llama.cpp
# ---------------------------------------------------------------------------------------------------------------------


def _file_identity(path: str, chunk: int = 16 << 20) -> dict[str, Any]:
    """Name, size and the sha256 of the first and last ``chunk`` bytes of a (possibly very large) model file: the
    GGUF header (all metadata) and the last tensors. Cheap enough to run at every cache look-up."""
    size = os.path.getsize(path)
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > 2 * chunk:
            f.seek(size - chunk)
            h.update(f.read(chunk))
        elif size > chunk:
            h.update(f.read())
    return {"file": os.path.basename(path), "size": size, "head_tail_sha256": h.hexdigest()[:32]}


class LlamaCppLogprobBackend(_TokenLevelBackend):
    """A GGUF model run by llama-cpp-python that scores continuations (``Llama(..., logits_all=True)``).

    For each prompt the tokens it shares with what is already evaluated are kept (llama.cpp's key/value cache), the
    rest is evaluated, then every candidate is evaluated after the prompt in turn; ``log p`` is the log-softmax of the
    logits row before each scored token.

    llama.cpp's logits depend slightly on how tokens are grouped into ``llama_decode`` calls: a lone token goes
    through other kernels than a batch (up to a few hundredths of a nat apart on SmolLM2). The prompt's logits are
    therefore kept rather than recomputed for its last token alone, and a candidate of several tokens is evaluated
    together with the prompt's last token; the numbers are then those of one evaluation of prompt + candidate
    (checked to rounding against a fresh ``Llama.eval`` of the whole text).

    Args:
        model_path: the ``.gguf`` file (e.g. :func:`~distil_trainers.teachers.rationales.packaged_smollm2_gguf`), or a
            ``llama_cpp.Llama`` created with ``logits_all=True``.
        n_ctx: context length in tokens (prompt + longest candidate).
        n_threads: CPU threads (default: all cores).
        n_batch: tokens per ``llama_decode`` call.
        weight_repacking: let llama.cpp repack the weights (extra buffer types); default: on unless the CPU has AMX,
            where llama-cpp-python 0.3.x crashes with it (see :mod:`distil_trainers.teachers.llamacpp`).
        fast_prefix: evaluate prompts without computing the output layer at every prompt position (only the last
            position's logits are read); False uses llama-cpp-python's public ``eval``/``scores`` only.
        verbose: let llama.cpp print its logs.
        **llama_kwargs: more ``llama_cpp.Llama`` arguments (``n_gpu_layers``...).
    """

    def __init__(
        self,
        model_path: Any,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        weight_repacking: bool | None = None,
        fast_prefix: bool = True,
        verbose: bool = False,
        **llama_kwargs: Any,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ImportError(
                "LlamaCppLogprobBackend needs llama-cpp-python: pip install 'distil-trainers[llamacpp]'"
            ) from exc
        from .llamacpp import no_weight_repacking, repacking_is_safe

        if isinstance(model_path, Llama):
            self.llm = model_path
            if not getattr(self.llm, "_logits_all", False):
                raise ValueError("the llama_cpp.Llama object must be created with logits_all=True")
            self.model_path = self.llm.model_path
        else:
            path = str(model_path)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"GGUF file not found: {path}")
            self.model_path = path
            repack = repacking_is_safe() if weight_repacking is None else weight_repacking
            with no_weight_repacking(not repack):
                self.llm = Llama(
                    model_path=path,
                    n_ctx=n_ctx,
                    n_threads=n_threads or os.cpu_count(),
                    n_batch=n_batch,
                    logits_all=True,
                    verbose=verbose,
                    **llama_kwargs,
                )
        self.model_id = os.path.basename(self.model_path)
        self.fast_prefix = fast_prefix
        self._last_prefix: tuple[list[int], Any] | None = None
        self.boundary_merges = 0
        self._identity: dict[str, Any] | None = None
        self._template = self.llm.metadata.get("tokenizer.chat_template")
        self._bos = self.llm.token_bos()
        self._add_bos = bool(self.llm._model.add_bos_token()) and self._bos >= 0

    def close(self) -> None:
        """Free the llama.cpp model now (instead of at interpreter exit)."""
        if getattr(self, "llm", None) is not None:
            self.llm.close()
            self.llm = None

    def _token_text(self, token: int) -> str:
        if token is None or token < 0:
            return ""
        return self.llm._model.token_get_text(token)

    def encode(self, text: str) -> list[int]:
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if self._add_bos and ids[:1] != [self._bos]:
            ids = [self._bos, *ids]
        return list(ids)

    def render_chat(self, messages: Sequence[Mapping[str, str]]) -> str | None:
        if not self._template:
            return None
        return render_chat_template(
            self._template,
            messages,
            bos_token=self._token_text(self.llm.token_bos()),
            eos_token=self._token_text(self.llm.token_eos()),
        )

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = {"backend": "llama.cpp", "model": self.model_id, **_file_identity(self.model_path)}
        return dict(self._identity)

    def _prefix_logits(self, tokens: list[int]):
        """Make ``tokens`` the evaluated sequence (keeping the already evaluated common prefix, re-evaluating at least
        the last token) and return the logits after it, float64 ``(V,)``.

        Only the last position's logits are needed here, so when llama-cpp-python's internals allow it the prompt is
        evaluated without ``logits_all`` (llama.cpp then skips the output layer for the other positions: about a
        third faster on SmolLM2); the candidates after it are evaluated with ``logits_all``."""
        import numpy as np

        llm = self.llm
        evaluated = llm.input_ids[: llm.n_tokens].tolist()
        cached = self._last_prefix
        if cached is not None and cached[0] == tokens and evaluated[: len(tokens)] == tokens:
            # the same prompt again (e.g. more label words): reuse its logits rather than re-evaluating its last token
            # alone, which llama.cpp computes with other kernels (slightly different numbers) than inside a batch
            llm.n_tokens = len(tokens)
            return cached[1]
        done = min(_common_prefix(evaluated, tokens), len(tokens) - 1)
        llm.n_tokens = done
        ctx = getattr(llm, "_ctx", None)
        if self.fast_prefix and hasattr(llm, "_logits_all") and ctx is not None and hasattr(ctx, "get_logits"):
            llm._logits_all = False
            try:
                llm.eval(tokens[done:])
            finally:
                llm._logits_all = True
            logits = np.ctypeslib.as_array(ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
        else:
            llm.eval(tokens[done:])
            logits = np.asarray(llm.scores[len(tokens) - 1], dtype=np.float64)
        self._last_prefix = (list(tokens), logits)
        return logits

    def continuation_logprobs(self, prompts: Sequence[str], continuations: Sequence[str]) -> list[list[list[float]]]:
        import numpy as np

        if self.llm is None:
            raise TeacherBackendError("this LlamaCppLogprobBackend was closed")
        n_ctx = self.llm.n_ctx()
        results = []
        for prompt in prompts:
            plan = self.plan(prompt, continuations)
            longest = len(plan.prefix) + max((len(s) for s in plan.segments), default=0)
            if longest > n_ctx:
                raise ValueError(
                    f"The prompt and its longest candidate take {longest} tokens, more than n_ctx={n_ctx}: raise n_ctx "
                    "or shorten the prompt (fewer demonstrations, truncated posts)."
                )
            last = self._prefix_logits(plan.prefix)
            base = len(plan.prefix)
            last_norm = _logsumexp(last)
            per_cand = []
            for seg, start in zip(plan.segments, plan.starts):
                if len(seg) > 1:
                    # the prompt's last token is evaluated again with the candidate: llama.cpp computes a lone token
                    # with other kernels than a batch, and a batch is what a full evaluation of prompt + candidate
                    # gives (measured: identical logits this way, up to 0.03 nat apart otherwise)
                    self.llm.n_tokens = base - 1
                    self.llm.eval([plan.prefix[-1], *seg[:-1]])
                values = []
                for j in range(start, len(seg)):
                    if j == 0:
                        values.append(float(last[seg[0]] - last_norm))
                    else:
                        row = np.asarray(self.llm.scores[base + j - 1], dtype=np.float64)
                        values.append(float(row[seg[j]] - _logsumexp(row)))
                per_cand.append(values)
            self.llm.n_tokens = base
            results.append(per_cand)
        return results


def _logsumexp(row) -> float:
    import numpy as np

    top = float(np.max(row))
    return top + float(np.log(np.sum(np.exp(row - top))))


# ---------------------------------------------------------------------------------------------------------------------
# OpenAI-compatible server
# ---------------------------------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------------------------------
# conversions
# ---------------------------------------------------------------------------------------------------------------------


def as_logprob_backend(obj: Any, **kwargs: Any) -> LogprobBackend:
    """A :class:`LogprobBackend` from ``obj``: itself when it is one; from a generation backend of
    :mod:`distil_trainers.teachers.rationales` (same model: a ``TransformersBackend``'s model and tokenizer, a
    ``LlamaCppBackend``'s GGUF file loaded again with ``logits_all=True``, an ``OpenAIEndpointBackend``'s server);
    a ``.gguf`` path loads with llama.cpp; any other string loads with transformers. ``kwargs`` go to the new
    backend's constructor."""
    from .rationales.backends import LlamaCppBackend, TransformersBackend

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
