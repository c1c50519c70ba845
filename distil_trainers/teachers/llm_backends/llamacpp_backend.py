"""A GGUF model scored by llama-cpp-python, the evaluated prompt prefix reused between candidates."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..._sequences import common_prefix_length
from ..rationales.backends import TeacherBackendError
from .base import _TokenLevelBackend, render_chat_template


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
        from ..llamacpp import no_weight_repacking, repacking_is_safe

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
        done = min(common_prefix_length(evaluated, tokens), len(tokens) - 1)
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
