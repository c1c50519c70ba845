"""Teachers that are not fine-tuned classifiers: a causal LLM read as a zero- or few-shot classifier.

:class:`LLMClassifier` turns a causal LM's next-token probabilities of each class's label words into class
log-probabilities; :func:`precompute_llm_teacher_outputs` stores them as a teacher-output cache that
``AnnealingTrainer(teacher_outputs=...)`` and ``MutualLearningTrainer(teacher_outputs=...)`` distil into a small
encoder. The method, the formulas and the token-boundary rule are in :mod:`distil_trainers.teachers.llm_classifier`,
the backends (transformers, llama.cpp, OpenAI-compatible servers) in :mod:`distil_trainers.teachers.llm_backends`,
the prompts in :mod:`distil_trainers.teachers.llm_prompts`, calibration in
:mod:`distil_trainers.teachers.calibration`.

Usage::

    from distil_trainers.teachers.rationales import packaged_smollm2_gguf
    from distil_trainers.teachers import LlamaCppLogprobBackend, precompute_llm_teacher_outputs

    backend = LlamaCppLogprobBackend(packaged_smollm2_gguf(), n_ctx=2048)
    cache = precompute_llm_teacher_outputs(backend, {"train": train, "validation": validation},
                                           "runs/llm_teacher", task="davidson", calibration="contextual")
    print(cache.meta["llm"]["prompt_text"])
"""

from typing import TYPE_CHECKING

from .._lazy import attach

_EXPORTS = {
    "calibration": [
        "DEFAULT_CONTENT_FREE_INPUTS",
        "apply_temperature",
        "content_free_distribution",
        "contextual_calibration",
        "fit_temperature",
        "temperature_nll",
    ],
    "llm_backends": [
        "LlamaCppLogprobBackend",
        "LogprobBackend",
        "OpenAILogprobBackend",
        "TransformersLogprobBackend",
        "as_logprob_backend",
        "render_chat_template",
    ],
    "llm_classifier": [
        "LLMCalibration",
        "LLMClassifier",
        "first_token_class_scores",
        "llm_cache_fingerprint",
        "precompute_llm_teacher_outputs",
    ],
    "llm_prompts": [
        "CLASSIFIER_PROMPT_FILE",
        "TASK_PROMPTS",
        "ClassifierPrompt",
        "Demonstration",
        "SavedClassifierPrompt",
        "default_classifier_prompt",
        "default_label_words",
        "resolve_label_words",
    ],
}
__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .calibration import (
        DEFAULT_CONTENT_FREE_INPUTS,
        apply_temperature,
        content_free_distribution,
        contextual_calibration,
        fit_temperature,
        temperature_nll,
    )
    from .llm_backends import (
        LlamaCppLogprobBackend,
        LogprobBackend,
        OpenAILogprobBackend,
        TransformersLogprobBackend,
        as_logprob_backend,
        render_chat_template,
    )
    from .llm_classifier import (
        LLMCalibration,
        LLMClassifier,
        first_token_class_scores,
        llm_cache_fingerprint,
        precompute_llm_teacher_outputs,
    )
    from .llm_prompts import (
        CLASSIFIER_PROMPT_FILE,
        TASK_PROMPTS,
        ClassifierPrompt,
        Demonstration,
        SavedClassifierPrompt,
        default_classifier_prompt,
        default_label_words,
        resolve_label_words,
    )
