"""A ``transformers`` causal LM scored in batches, the shared prompt prefix computed once per batch."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import _Plan, _TokenLevelBackend

logger = logging.getLogger(__name__)


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
                from ..rationales.backends import nf4_quantization_config

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
                from ..cache import model_fingerprint

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
