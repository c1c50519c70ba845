"""Teacher rationales for rationale distillation: prompts, teacher backends, resumable generation and its report, and
the teacher settings the rationale recipe and pipeline share (:class:`TeacherArguments`).

Usage::

    from distil_trainers.data import load_dataset_by_name
    from distil_trainers.teachers.rationales import LlamaCppBackend, default_prompt, generate_rationales, packaged_smollm2_gguf

    test = load_dataset_by_name("davidson", max_samples_per_split={"test": 50})["test"]
    names = test.features["label"].names
    backend = LlamaCppBackend(packaged_smollm2_gguf(), n_ctx=2048)
    rationales = generate_rationales(test, backend, default_prompt(names), "runs/rationales/davidson_test.jsonl")
    print(teacher_report(rationales, names))
"""

from typing import TYPE_CHECKING

from ..._lazy import attach

_EXPORTS = {
    "arguments": ["TeacherArguments"],
    "backends": [
        "GenerationResult",
        "LlamaCppBackend",
        "OpenAIEndpointBackend",
        "TeacherBackend",
        "TeacherBackendError",
        "TransformersBackend",
        "packaged_smollm2_gguf",
    ],
    "generation": [
        "RATIONALE_FEATURES",
        "CacheMismatchError",
        "RationaleCache",
        "cache_fingerprint",
        "drop_failed_rows",
        "generate_rationales",
        "teacher_report",
    ],
    "prompts": [
        "DEFAULT_TASK_DESCRIPTION",
        "FewShotExample",
        "ParsedOutput",
        "RationalePrompt",
        "default_prompt",
        "normalize_label_text",
        "parse_teacher_output",
    ],
}
__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .arguments import TeacherArguments
    from .backends import (
        GenerationResult,
        LlamaCppBackend,
        OpenAIEndpointBackend,
        TeacherBackend,
        TeacherBackendError,
        TransformersBackend,
        packaged_smollm2_gguf,
    )
    from .generation import (
        RATIONALE_FEATURES,
        CacheMismatchError,
        RationaleCache,
        cache_fingerprint,
        drop_failed_rows,
        generate_rationales,
        teacher_report,
    )
    from .prompts import (
        DEFAULT_TASK_DESCRIPTION,
        FewShotExample,
        ParsedOutput,
        RationalePrompt,
        default_prompt,
        normalize_label_text,
        parse_teacher_output,
    )
