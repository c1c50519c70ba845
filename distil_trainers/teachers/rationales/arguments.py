"""The teacher's settings of a rationale-distillation script, as one dataclass the recipe
(``recipes/rationale_distill.py``) and the paper pipeline (``distil_trainers.papers.rationale_pipeline``) share:
which teacher and how to reach it (:meth:`TeacherArguments.build_backend`), the prompt with its task description and
demonstrations from the YAML config (:meth:`TeacherArguments.prompt`), the generation settings
(:meth:`TeacherArguments.generation_kwargs`), ``--retry_failed``, and the balanced-binary data option
(:meth:`TeacherArguments.balance`).

In a YAML config::

    teacher_backend: openai
    teacher_base_url: http://localhost:8000/v1
    teacher_model: meta-llama/Llama-3.3-70B-Instruct
    teacher_concurrency: 32          # requests in flight
    teacher_sampling: {seed: 0}      # more request fields that change the answers (recorded in the cache header)
    teacher_task_description: Decide whether a post is hate speech ...
    teacher_few_shot:
      - {text: "...", label: hate, rationale: "..."}
      - {text: "...", label: not-hate, rationale: "..."}
    balance_binary: train

or, for a teacher loaded in this process (4-bit, spread over two GPUs and the CPU)::

    teacher_backend: transformers
    teacher_model: meta-llama/Llama-3.3-70B-Instruct
    teacher_load_in_4bit: true
    teacher_device_map: auto
    teacher_max_memory: {"0": 20GiB, "1": 20GiB, cpu: 60GiB}
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from .prompts import FewShotExample, RationalePrompt, default_prompt, normalize_label_text

logger = logging.getLogger(__name__)

__all__ = ["BACKENDS", "BALANCE_BINARY", "TeacherArguments"]

BACKENDS = ("llamacpp", "transformers", "openai")
BALANCE_BINARY = ("none", "train", "all")
DTYPES = ("auto", "bfloat16", "float16", "float32")


def _yaml(value: Any) -> Any:
    """A mapping / list given on the command line as a YAML or JSON string, parsed; anything else as it is."""
    if not isinstance(value, str):
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as error:
        raise ValueError(f"{value!r} is not valid YAML / JSON: {error}") from None


@dataclass
class TeacherArguments:
    """The teacher of rationale distillation: backend, generation, prompt, retries of failures, balanced data.

    A script's arguments dataclass inherits it (``class ScriptArguments(TeacherArguments, DatasetArguments)``); its
    ``__post_init__`` calls the next class's, then checks every teacher setting: a bad ``teacher_device_map`` or a
    malformed demonstration fails when the arguments are parsed, before any data or model is loaded.
    """

    teacher_backend: str = field(
        default="llamacpp", metadata={"help": "Teacher backend.", "choices": list(BACKENDS)}
    )
    teacher_model: str | None = field(
        default=None,
        metadata={"help": "llamacpp: a GGUF path (default: the packaged SmolLM2-135M-Instruct); transformers: a Hub "
                          "id or path; openai: the served model name (default: the first the server lists)."},
    )
    teacher_base_url: str | None = field(
        default=None, metadata={"help": "openai backend: the endpoint, e.g. http://localhost:8000/v1 (vLLM)."}
    )
    teacher_concurrency: int = field(
        default=8,
        metadata={"help": "openai backend: requests in flight at once (a server that batches them, such as vLLM, "
                          "answers several at the speed of one; 16-64 for a 70B on vLLM)."},
    )
    teacher_timeout: float = field(default=300.0, metadata={"help": "openai backend: seconds per request."})
    teacher_max_retries: int = field(
        default=3,
        metadata={"help": "openai backend: retries after a connection error, a timeout, HTTP 408/429/5xx (other HTTP "
                          "errors fail the post at once)."},
    )
    teacher_sampling: dict | str | None = field(
        default=None,
        metadata={"help": "openai backend: more request fields that change the answers, e.g. {top_p: 0.9, seed: 0} "
                          "(YAML mapping, or JSON on the command line); part of the cache fingerprint."},
    )
    teacher_temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0 = greedy)."})
    teacher_load_in_4bit: bool = field(default=False, metadata={"help": "transformers backend: load in 4-bit (nf4)."})
    teacher_dtype: str | None = field(
        default=None,
        metadata={"help": "transformers backend: dtype of the weights (auto, bfloat16, float16, float32; default: the "
                          "checkpoint's) or, in 4-bit, of the computation (default bfloat16)."},
    )
    teacher_device_map: dict | str | None = field(
        default=None,
        metadata={"help": "transformers backend: from_pretrained's device_map: auto / balanced / sequential, a device "
                          "(0, cpu, cuda:1) or {module: device}. A 4-bit teacher without one goes wholly onto the "
                          "current GPU."},
    )
    teacher_max_memory: dict | str | None = field(
        default=None,
        metadata={"help": "transformers backend: from_pretrained's max_memory, e.g. {\"0\": 20GiB, \"1\": 20GiB, cpu: "
                          "60GiB} (device_map defaults to auto with it)."},
    )
    teacher_max_new_tokens: int = field(default=256, metadata={"help": "Tokens the teacher may write per post."})
    teacher_batch_size: int = field(
        default=8, metadata={"help": "Posts per generate call of a batching backend (transformers)."}
    )
    teacher_n_ctx: int = field(default=2048, metadata={"help": "llamacpp backend: context length."})
    teacher_task_description: str | None = field(
        default=None,
        metadata={"help": "What the task is and what the classes mean: the start of the teacher's instructions "
                          "(default: hate / offensive / neither moderation)."},
    )
    teacher_few_shot: list[dict] | str | None = field(
        default=None,
        metadata={"help": "The prompt's demonstrations, a list of {text, label, rationale} (label: a class name); [] "
                          "for none. Default: the built-in three, one per kind of post."},
    )
    teacher_label_synonyms: dict | str | None = field(
        default=None,
        metadata={"help": "More spellings the parser accepts for a class: {class name: [synonym, ...]}."},
    )
    retry_failed: bool = field(
        default=False,
        metadata={"help": "Ask the teacher again for the posts whose request failed or whose answer was cut at "
                          "teacher_max_new_tokens (recorded in the cache); the others are reused."},
    )
    balance_binary: str = field(
        default="none",
        metadata={"help": "Binary data (MetaHate-style): 'train' keeps as many posts of each class in the train split "
                          "(seeded, at most max_train_samples in all) before the teacher sees them; 'all' balances "
                          "the evaluation posts too (at most max_eval_samples); 'none' keeps the natural mix.",
                  "choices": list(BALANCE_BINARY)},
    )

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        if self.teacher_backend not in BACKENDS:
            raise ValueError(f"teacher_backend must be one of {BACKENDS}, got {self.teacher_backend!r}.")
        if self.teacher_backend == "openai" and not self.teacher_base_url:
            raise ValueError("teacher_backend='openai' needs teacher_base_url (e.g. http://localhost:8000/v1).")
        for name in ("teacher_concurrency", "teacher_max_new_tokens", "teacher_batch_size", "teacher_n_ctx"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.teacher_max_retries < 0 or self.teacher_timeout <= 0 or self.teacher_temperature < 0:
            raise ValueError("teacher_max_retries must be >= 0, teacher_timeout > 0 and teacher_temperature >= 0.")
        if self.teacher_dtype in ("", "none", "None"):
            self.teacher_dtype = None
        if self.teacher_dtype is not None and self.teacher_dtype not in DTYPES:
            raise ValueError(f"teacher_dtype must be one of {DTYPES}, got {self.teacher_dtype!r}.")
        if isinstance(self.balance_binary, bool):  # `balance_binary: true` in YAML
            self.balance_binary = "train" if self.balance_binary else "none"
        if self.balance_binary not in BALANCE_BINARY:
            raise ValueError(f"balance_binary must be one of {BALANCE_BINARY}, got {self.balance_binary!r}.")
        self.teacher_sampling = self._mapping("teacher_sampling")
        from .backends.endpoint_backend import _RESERVED_BODY

        reserved = sorted(_RESERVED_BODY & set(self.teacher_sampling or {}))
        if reserved:
            raise ValueError(
                f"teacher_sampling must not set {reserved}: use teacher_model, teacher_max_new_tokens and "
                "teacher_temperature."
            )
        self.teacher_label_synonyms = self._mapping("teacher_label_synonyms")
        self._check_placement()
        self._check_few_shot()

    def _mapping(self, name: str) -> dict | None:
        value = _yaml(getattr(self, name))
        if value is not None and not isinstance(value, Mapping):
            raise ValueError(f"{name} must be a mapping (YAML, or JSON on the command line), got {value!r}.")
        return dict(value) if value is not None else None

    def _check_placement(self) -> None:
        from .backends import check_device_map, check_max_memory

        placement = (self.teacher_device_map, self.teacher_max_memory, self.teacher_load_in_4bit, self.teacher_dtype)
        if self.teacher_backend != "transformers" and any(placement):
            warnings.warn(
                "teacher_device_map, teacher_max_memory, teacher_load_in_4bit and teacher_dtype apply to the "
                f"transformers backend (a teacher loaded in this process); teacher_backend={self.teacher_backend!r} "
                "ignores them.",
                UserWarning,
                stacklevel=3,
            )
        try:
            self.teacher_device_map = check_device_map(_yaml(self.teacher_device_map))
            self.teacher_max_memory = check_max_memory(_yaml(self.teacher_max_memory))
        except ValueError as error:
            raise ValueError(f"teacher_{error}") from None

    def _check_few_shot(self) -> None:
        demos = _yaml(self.teacher_few_shot)
        if demos is None:
            self.teacher_few_shot = None
            return
        if not isinstance(demos, Sequence) or isinstance(demos, str):
            raise ValueError(f"teacher_few_shot must be a list of {{text, label, rationale}}, got {demos!r}.")
        problems, out = [], []
        for i, demo in enumerate(demos):
            if not isinstance(demo, Mapping):
                problems.append(f"item {i} is not a mapping: {demo!r}")
                continue
            demo = dict(demo)
            if "explanation" in demo and "rationale" not in demo:
                demo["rationale"] = demo.pop("explanation")
            missing = [k for k in ("text", "label", "rationale") if not str(demo.get(k) or "").strip()]
            extra = sorted(set(demo) - {"text", "label", "rationale"})
            if missing or extra:
                detail = (f" (missing: {missing})" if missing else "") + (f" (unknown keys: {extra})" if extra else "")
                problems.append(f"item {i} needs non-empty text, label and rationale{detail}")
                continue
            out.append({k: str(demo[k]) for k in ("text", "label", "rationale")})
        if problems:
            raise ValueError("teacher_few_shot: " + "; ".join(problems) + ".")
        self.teacher_few_shot = out

    # -- the prompt ---------------------------------------------------------------------------------------------------

    def prompt(self, label_names: Sequence[str]) -> RationalePrompt:
        """The teacher's prompt for these classes: :func:`~distil_trainers.teachers.rationales.default_prompt` with
        ``teacher_task_description``, ``teacher_few_shot`` and ``teacher_label_synonyms`` when given.

        A demonstration label may differ from its class name in case and punctuation (``Not Hate`` for
        ``not-hate``); one that names no class raises a single ``ValueError`` listing every such demonstration, before
        anything is generated.
        """
        names = [str(n) for n in label_names]
        by_norm = {normalize_label_text(n): n for n in names}
        kwargs: dict[str, Any] = {}
        if self.teacher_few_shot is not None:
            unknown = [f"item {i} ({d['label']!r})" for i, d in enumerate(self.teacher_few_shot)
                       if normalize_label_text(d["label"]) not in by_norm]
            if unknown:
                raise ValueError(
                    f"teacher_few_shot: the labels of {', '.join(unknown)} are not among the class names {names} of "
                    "the data."
                )
            kwargs["few_shot"] = [
                FewShotExample(d["text"], by_norm[normalize_label_text(d["label"])], d["rationale"])
                for d in self.teacher_few_shot
            ]
        if self.teacher_label_synonyms:
            unknown = [k for k in self.teacher_label_synonyms if normalize_label_text(k) not in by_norm]
            if unknown:
                raise ValueError(f"teacher_label_synonyms: {unknown} are not among the class names {names}.")
            kwargs["label_synonyms"] = {
                by_norm[normalize_label_text(k)]: [v] if isinstance(v, str) else list(v)
                for k, v in self.teacher_label_synonyms.items()
            }
        return default_prompt(names, self.teacher_task_description, **kwargs)

    # -- the backend --------------------------------------------------------------------------------------------------

    def build_backend(self):
        """The teacher backend these arguments describe (a transformers teacher is loaded here)."""
        from . import backends

        if self.teacher_backend == "llamacpp":
            return backends.LlamaCppBackend(
                self.teacher_model or backends.packaged_smollm2_gguf(), n_ctx=self.teacher_n_ctx
            )
        if self.teacher_backend == "transformers":
            if not self.teacher_model:
                raise ValueError("teacher_backend='transformers' needs teacher_model (a Hub id or a local path).")
            dtype = self.teacher_dtype
            return backends.TransformersBackend(
                self.teacher_model,
                load_in_4bit=self.teacher_load_in_4bit,
                bnb_4bit_compute_dtype=dtype if self.teacher_load_in_4bit and dtype not in (None, "auto") else None,
                dtype=None if self.teacher_load_in_4bit else dtype,
                device_map=self.teacher_device_map,
                max_memory=self.teacher_max_memory,
            )
        return backends.OpenAIEndpointBackend(
            self.teacher_base_url,
            self.teacher_model,
            timeout=self.teacher_timeout,
            max_retries=self.teacher_max_retries,
            concurrency=self.teacher_concurrency,
            extra_body=self.teacher_sampling,
        )

    def generation_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`~distil_trainers.teachers.rationales.generate_rationales` these arguments
        set."""
        return {
            "batch_size": self.teacher_batch_size,
            "max_new_tokens": self.teacher_max_new_tokens,
            "temperature": self.teacher_temperature,
            "retry_failed": self.retry_failed,
        }

    # -- balanced binary data -----------------------------------------------------------------------------------------

    def _balanced_splits(self, splits: Sequence[str]) -> list[str]:
        if self.balance_binary == "none":
            return []
        return [s for s in splits if s == "train"] if self.balance_binary == "train" else list(splits)

    def loading_arguments(self):
        """These arguments for loading the data: with ``balance_binary``, without the subsample limits of the splits
        that :meth:`balance` will cut (``max_train_samples``, and ``max_eval_samples`` for ``'all'``), so that the
        balanced subsample is drawn from the whole split. Without it, the arguments themselves."""
        if self.balance_binary == "none":
            return self
        unlimited = copy.copy(self)
        unlimited.max_train_samples = None
        if self.balance_binary == "all":
            unlimited.max_eval_samples = None
        return unlimited

    def balance(self, posts, seed: int):
        """``posts`` (a ``DatasetDict``) with the splits ``balance_binary`` names cut to class-balanced subsamples
        (:func:`~distil_trainers.data.balance.balanced_binary_subsample`, seeded; at most ``max_train_samples`` posts
        for ``train``, ``max_eval_samples`` for the others); the counts are printed. Load the posts with
        :meth:`loading_arguments` first."""
        names = self._balanced_splits(list(posts))
        if not names:
            return posts
        from ...data.balance import balanced_binary_subsample

        out = type(posts)(dict(posts))
        for split in names:
            limit = getattr(self, "max_train_samples" if split == "train" else "max_eval_samples", None)
            before = out[split]
            out[split] = balanced_binary_subsample(before, max_samples=limit, seed=seed, name=split)
            labels = before["label"][:]
            counts = ", ".join(f"class {c}: {sum(1 for y in labels if y == c)}" for c in (0, 1))
            print(f"[data] {split}: class-balanced subsample (seed {seed}) of {len(before)} posts ({counts}): "
                  f"{len(out[split]) // 2} of each class")
        return out
