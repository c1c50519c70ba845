"""Rationale distillation, student side ("Distilling step-by-step", Hsieh et al. 2023; Piot et al.'s 70B -> 8B hate
speech distillation).

A teacher LLM wrote a label and an explanation for every post (``distil_trainers.teachers.rationales``: columns ``id``,
``text``, ``label``, ``teacher_label``, ``rationale``, ``teacher_agrees``, ``parsed``, ``raw_output``). Every post
gives the student TWO training views that differ by their task instruction:

* label view: "answer with the label" -> completion = the label word;
* rationale view: "explain, then answer" -> completion = the rationale and a final ``Label: <label>`` line.

The loss is ``alpha * L_label + (1 - alpha) * L_rationale`` where each term is the token-level cross-entropy over the
COMPLETION tokens of its view, normalised by the number of completion tokens of that view in the whole optimizer step
(all gradient-accumulation micro-batches, all processes), so that batch 4 gives the same gradients as batch 2 x 2
accumulation steps. ``alpha = 1`` is the label-only ablation (rationale views are not built at all).

With a teacher LLM that shares the student's tokenizer, :class:`RationaleSFTTrainer` also distils token by token from a
cache of the teacher's top-k next-token log-probabilities (``teacher_outputs=``, built over :func:`training_views` with
``distil_trainers.teachers.cache.precompute_topk_logprobs``): with ``w = teacher_kd_weight`` the loss becomes
``(1 - w) * [alpha * L_label + (1 - alpha) * L_rationale] + w * [alpha * KD_label + (1 - alpha) * KD_rationale]``,
``KD_view`` being ``T^2 * KL(teacher || student)`` summed over that view's completion tokens and divided by the same
token counts as the cross-entropy.

At evaluation the student classifies by scoring: for every post, the log-likelihood of each candidate label word as the
completion of the label-view prompt (one batched forward per post's candidate set, no free generation); the argmax is
the prediction, reported as ``eval_accuracy``, ``eval_f1_macro``, ``eval_f1_<class>`` ... The student's own answer
("explanation + Label: X") is generated in left-padded batches by ``generate_answers`` and read with the teacher's
answer parser, to be scored beside label scoring (``evaluation.answer_metrics``).

With gold labels, a post whose teacher chose another label trains its label view only by default
(``rationales_when_teacher_agrees``), so no rationale arguing for one label ends with another; with ``max_length`` a
long rationale is cut inside its text so that its ``Label: X`` line always survives.

Two trainers share this: :class:`RationaleSFTTrainer` (a ``trl.SFTTrainer`` for decoder-only students, with QLoRA via
``quantization_config`` + ``peft_config``) and :class:`RationaleSeq2SeqTrainer` (a ``Seq2SeqTrainer`` for T5-style
encoder-decoder students, task prefixes ``[label]`` / ``[rationale]`` as in Distilling step-by-step).

Modules: ``config`` (the arguments), ``views`` (the views and their tokens), ``loss`` (the per-view loss, pure),
``evaluation`` (label scoring, the student's own answers), ``teacher_kd`` (the top-k teacher cache), ``common`` (what both trainers share),
``trainer`` (:class:`RationaleSFTTrainer`) and ``seq2seq`` (:class:`RationaleSeq2SeqTrainer`).
"""

from .config import LABEL_SOURCES, UNPARSED_ROWS, RationaleArguments, RationaleSeq2SeqConfig, RationaleSFTConfig
from .evaluation import parse_student_output
from .loss import LABEL_VIEW, RATIONALE_VIEW, VIEW_NAMES, rationale_multitask_loss
from .seq2seq import RationaleSeq2SeqTrainer
from .trainer import RationaleSFTTrainer, disable_avx512_bf16_repacking
from .views import (
    POST_ID_COLUMN,
    REQUIRED_COLUMNS,
    VIEW_COLUMN,
    build_rationale_views,
    rationale_completion,
    training_views,
    view_prompt,
    view_row_id,
)

__all__ = [
    "LABEL_VIEW",
    "POST_ID_COLUMN",
    "RATIONALE_VIEW",
    "VIEW_COLUMN",
    "RationaleSFTConfig",
    "RationaleSFTTrainer",
    "RationaleSeq2SeqConfig",
    "RationaleSeq2SeqTrainer",
    "build_rationale_views",
    "disable_avx512_bf16_repacking",
    "parse_student_output",
    "rationale_multitask_loss",
    "training_views",
    "view_row_id",
]
