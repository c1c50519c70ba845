"""Arguments of rationale distillation: the fields both trainers share (:class:`RationaleArguments`), on top of TRL's
``SFTConfig`` (:class:`RationaleSFTConfig`) or of ``Seq2SeqTrainingArguments`` (:class:`RationaleSeq2SeqConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import Seq2SeqTrainingArguments
from trl import SFTConfig

__all__ = ["LABEL_SOURCES", "UNPARSED_ROWS", "RationaleArguments", "RationaleSFTConfig", "RationaleSeq2SeqConfig"]

LABEL_SOURCES = ("gold", "teacher")
UNPARSED_ROWS = ("drop_rationale", "drop")


@dataclass
class RationaleArguments:
    """The rationale-distillation fields shared by :class:`RationaleSFTConfig` and :class:`RationaleSeq2SeqConfig`."""

    alpha: float = field(
        default=0.5,
        metadata={
            "help": "Weight of the label view: loss = alpha * L_label + (1 - alpha) * L_rationale. 1 = label-only "
            "ablation (no rationale views are built)."
        },
    )
    label_source: str = field(
        default="gold",
        metadata={
            "help": "Which label the student is trained on (label view and final line of the rationale view): 'gold' "
            "(the dataset's label, with the teacher's rationale) or 'teacher' (the teacher's parsed label; rows whose "
            "label the teacher did not give are dropped).",
            "choices": list(LABEL_SOURCES),
        },
    )
    unparsed_rows: str = field(
        default="drop_rationale",
        metadata={
            "help": "Rows whose teacher output could not be parsed (parsed=False or an empty rationale): "
            "'drop_rationale' keeps their label view and drops their rationale view; 'drop' drops both views.",
            "choices": list(UNPARSED_ROWS),
        },
    )
    rationales_when_teacher_agrees: bool | None = field(
        default=None,
        metadata={
            "help": "Build the rationale view only for rows where the teacher's label equals the gold label "
            "(teacher_agrees); the other rows keep their label view. Default (None): True with label_source='gold', "
            "so that no rationale view argues for one label and ends with 'Label: <another>'; False with "
            "label_source='teacher' (rationale and label are then both the teacher's, consistent by construction). "
            "Set False with label_source='gold' to train every rationale with the gold label (the former default)."
        },
    )
    class_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "The label words, in label-id order (what the student writes as its answer). Default: the names of "
            "the `label` ClassLabel of the training set."
        },
    )
    task_description: str = field(
        default="Classify the following social-media post.",
        metadata={"help": "First line of every prompt (both views)."},
    )
    label_instruction: str = field(
        default="Answer with the label only, one of: {labels}.",
        metadata={"help": "Instruction of the label view; '{labels}' is replaced by the class names."},
    )
    rationale_instruction: str = field(
        default="Explain your reasoning briefly, then give the label on a last line 'Label: <label>', where <label> "
        "is one of: {labels}.",
        metadata={"help": "Instruction of the rationale view; '{labels}' is replaced by the class names."},
    )
    answer_prefix: str = field(
        default="Label: ",
        metadata={"help": "Prefix of the final answer line of rationale-view completions."},
    )
    label_scoring: bool = field(
        default=True,
        metadata={
            "help": "At evaluation, classify every evaluation post by the log-likelihood of each label word and report "
            "accuracy, macro P/R/F1 and per-class F1 (eval_accuracy, eval_f1_macro, ...)."
        },
    )
    max_scoring_samples: int | None = field(
        default=None,
        metadata={"help": "Score at most this many evaluation posts (the first ones); None = all."},
    )
    teacher_kd_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight w of token-level distillation from a top-k teacher cache (RationaleSFTTrainer's "
            "`teacher_outputs`): loss = (1 - w) * view loss + w * KD, where KD = alpha * KD_label + (1 - alpha) * "
            "KD_rationale and KD_view is T^2 * KL(teacher || student) per completion token of that view. 0 = off "
            "(the loss is exactly the view loss)."
        },
    )
    teacher_kd_temperature: float = field(
        default=1.0,
        metadata={
            "help": "Temperature T of the distillation term; must equal the temperature the top-k cache was built "
            "with (precompute_topk_logprobs(temperature=...))."
        },
    )

    @property
    def rationales_only_when_teacher_agrees(self) -> bool:
        """Whether rationale views are built only for rows where the teacher agrees with the gold label:
        ``rationales_when_teacher_agrees``, or when it is None (the default), ``label_source == "gold"``.

        Why that default: with gold labels, a row where the teacher chose another label has a rationale arguing for
        the teacher's label; followed by ``Label: <gold>`` it teaches the student that an explanation and its
        conclusion need not match, which is what the rationale view is meant to prevent. Such a row still trains the
        label view. With ``label_source="teacher"`` rationale and label are both the teacher's, so nothing is
        dropped."""
        if self.rationales_when_teacher_agrees is None:
            return self.label_source == "gold"
        return bool(self.rationales_when_teacher_agrees)

    def _check_rationale_arguments(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}.")
        if self.label_source not in LABEL_SOURCES:
            raise ValueError(f"label_source must be one of {LABEL_SOURCES}, got {self.label_source!r}.")
        if self.unparsed_rows not in UNPARSED_ROWS:
            raise ValueError(f"unparsed_rows must be one of {UNPARSED_ROWS}, got {self.unparsed_rows!r}.")
        if self.class_names is not None:
            names = [str(n).strip() for n in self.class_names]
            if len(names) < 2 or any(not n for n in names) or len(set(names)) != len(names):
                raise ValueError(f"class_names must be >= 2 distinct non-empty words, got {self.class_names}.")
        if self.max_scoring_samples is not None and self.max_scoring_samples < 1:
            raise ValueError(f"max_scoring_samples must be >= 1 or None, got {self.max_scoring_samples}.")
        if not 0.0 <= self.teacher_kd_weight <= 1.0:
            raise ValueError(f"teacher_kd_weight must be in [0, 1], got {self.teacher_kd_weight}.")
        if not self.teacher_kd_temperature > 0:
            raise ValueError(f"teacher_kd_temperature must be > 0, got {self.teacher_kd_temperature}.")


@dataclass
class RationaleSFTConfig(RationaleArguments, SFTConfig):
    """[`~trl.SFTConfig`] plus the rationale-distillation fields (``alpha``, ``label_source``, ``unparsed_rows``...).

    Packing and padding-free batches are refused: every row must stay one view. ``completion_only_loss`` is always
    on (the prompt is never a target). ``chat_template_path`` is refused: the views are tokenised with the
    tokenizer's own chat template, before ``SFTTrainer`` could replace it."""

    def __post_init__(self):
        self._check_rationale_arguments()
        if self.packing or self.padding_free:
            raise ValueError("RationaleSFTConfig does not support packing / padding_free: each row must be one view.")
        if self.completion_only_loss is False:
            raise ValueError(
                "Rationale distillation trains on completion tokens only; leave completion_only_loss unset."
            )
        if self.assistant_only_loss:
            raise ValueError("assistant_only_loss does not apply: the views are prompt-completion pairs.")
        if self.chat_template_path is not None:
            raise ValueError(
                "chat_template_path does not apply: the views are tokenised with the tokenizer's own chat template. "
                "Set `tokenizer.chat_template` (or use trl.clone_chat_template on the model and tokenizer) before "
                "building the views and the trainer."
            )
        self.completion_only_loss = True
        super().__post_init__()


@dataclass
class RationaleSeq2SeqConfig(RationaleArguments, Seq2SeqTrainingArguments):
    """[`~transformers.Seq2SeqTrainingArguments`] plus the rationale-distillation fields, for encoder-decoder
    students (T5 family)."""

    label_prefix: str = field(default="[label]", metadata={"help": "Input prefix of the label view."})
    rationale_prefix: str = field(default="[rationale]", metadata={"help": "Input prefix of the rationale view."})
    max_source_length: int = field(default=256, metadata={"help": "Encoder inputs are truncated to this many tokens."})
    max_target_length: int = field(default=256, metadata={"help": "Targets are truncated to this many tokens."})

    def __post_init__(self):
        self._check_rationale_arguments()
        if self.max_source_length < 1 or self.max_target_length < 1:
            raise ValueError("max_source_length and max_target_length must be >= 1.")
        super().__post_init__()
