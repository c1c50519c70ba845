"""The rationale package itself: its public names, the views tokenised by our own code exactly as TRL's SFTTrainer
tokenises prompt-completion data (checked through TRL's public API, so a change in TRL shows up here by name), no use
of TRL's private dataset preparation, the refused arguments, and the trainers' model-card attributes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trl
from packaging.version import Version
from rationale_fixtures import CLASS_NAMES, rationale_dataset, sft_args, tiny_llama, tiny_tokenizer
from trl import SFTConfig, SFTTrainer

import distil_trainers.trainers.rationale as rationale
from distil_trainers.trainers.rationale import (
    RationaleSeq2SeqTrainer,
    RationaleSFTTrainer,
    build_rationale_views,
    training_views,
)
from distil_trainers.trainers.rationale.views import tokenize_views

# What `distil_trainers.trainers.rationale` exported as a single module, and must keep exporting
PUBLIC_NAMES = {
    "LABEL_SOURCES",
    "LABEL_VIEW",
    "POST_ID_COLUMN",
    "RATIONALE_VIEW",
    "REQUIRED_COLUMNS",
    "UNPARSED_ROWS",
    "VIEW_COLUMN",
    "VIEW_NAMES",
    "RationaleArguments",
    "RationaleSFTConfig",
    "RationaleSFTTrainer",
    "RationaleSeq2SeqConfig",
    "RationaleSeq2SeqTrainer",
    "build_rationale_views",
    "disable_avx512_bf16_repacking",
    "parse_student_output",
    "rationale_completion",
    "rationale_multitask_loss",
    "training_views",
    "view_prompt",
    "view_row_id",
}
ALL = {
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
}


def test_the_package_exports_the_names_of_the_former_module():
    assert set(rationale.__all__) == ALL
    missing = [name for name in PUBLIC_NAMES if not hasattr(rationale, name)]
    assert not missing, f"distil_trainers.trainers.rationale no longer exports {missing}"
    from distil_trainers import trainers

    for name in trainers._EXPORTS["rationale"]:  # the lazy names of distil_trainers.trainers
        assert getattr(trainers, name) is getattr(rationale, name)


def test_no_module_reaches_into_trls_private_dataset_preparation():
    package = Path(rationale.__file__).parent
    private = re.compile(r"(?<!skip)_prepare_dataset|SFTTrainer\.__new__|trl\.data_utils|from trl\.trainer")
    for path in sorted(package.glob("*.py")):
        found = private.findall(path.read_text())
        assert not found, f"{path.name} uses TRL's private {found}"


@pytest.mark.skipif(
    Version(trl.__version__) < Version("1.9.0"),
    reason="before TRL 1.9 SFTTrainer's prepared rows differ (labels built by its collator before 1.7, rows cut by it "
    "before 1.8, fully masked rows kept before 1.9); the student trains on tokenize_views' rows whatever the TRL",
)
@pytest.mark.parametrize("chat", [True, False], ids=["chat-template", "plain-text"])
# keep_start truncation differs from TRL's on purpose: a rationale view is cut inside its rationale so that the
# `Label: X` line survives (tests/test_rationale_trainer.py), where TRL cuts the label off
@pytest.mark.parametrize(
    "cut", [{}, {"max_length": 45, "truncation_mode": "keep_end"}], ids=["full", "end"]
)
def test_views_are_tokenised_as_trls_sft_trainer_tokenises_prompt_completion_rows(tmp_path, chat, cut):
    """Our tokenize_views against a plain trl.SFTTrainer given the same untokenised views (public API only). If this
    fails after a TRL upgrade, TRL changed how it tokenises prompt-completion data: the student still trains on what
    tokenize_views gives (and training_views gives the same rows), but no longer on what SFTTrainer would give."""
    tok = tiny_tokenizer(chat=chat)
    args = sft_args(tmp_path, **cut)
    views = build_rationale_views(rationale_dataset(), args, CLASS_NAMES, conversational=chat)
    ours = tokenize_views(views, args, tok)
    reference = SFTTrainer(
        model=tiny_llama(tok),
        args=SFTConfig(
            output_dir=str(tmp_path / "sft"),
            report_to="none",
            use_cpu=True,
            bf16=False,
            max_length=args.max_length,
            truncation_mode=args.truncation_mode,
        ),
        train_dataset=views,
        processing_class=tok,
    ).train_dataset
    for column in ("id", "view", "input_ids", "labels"):
        assert ours[column][:] == reference[column][:], (
            f"trl {trl.__version__}: SFTTrainer's prepared `{column}` of prompt-completion rows differs from "
            "distil_trainers.trainers.rationale.views.tokenize_views; see that function's docstring and update it "
            "(and the pinned TRL range) if TRL's new tokenisation is the one to follow."
        )
    assert ours.column_names == reference.column_names


def test_the_trainer_trains_on_the_rows_training_views_gives(tmp_path):
    tok = tiny_tokenizer()
    args = sft_args(tmp_path, max_length=45)
    trainer = RationaleSFTTrainer(tiny_llama(tok), args=args, train_dataset=rationale_dataset(), processing_class=tok)
    views = training_views(rationale_dataset(), args, tok)
    assert trainer.train_dataset["input_ids"][:] == views["input_ids"][:]
    assert trainer.train_dataset["labels"][:] == views["labels"][:]


def test_arguments_that_cannot_apply_are_refused(tmp_path):
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="chat_template_path does not apply"):
        sft_args(tmp_path, chat_template_path=str(tmp_path / "template.jinja"))
    with pytest.raises(ValueError, match="No view keeps a completion token within max_length=20"):
        RationaleSFTTrainer(
            tiny_llama(tok), args=sft_args(tmp_path, max_length=20), train_dataset=rationale_dataset(),
            processing_class=tok,
        )  # fmt: skip
    with pytest.raises(ValueError, match="eos_token '<nope>' is not in the vocabulary"):
        training_views(rationale_dataset(), sft_args(tmp_path, eos_token="<nope>"), tok)


def test_trainers_name_their_method_and_papers(tmp_path):
    for cls, paper_id in ((RationaleSFTTrainer, "2412.13698"), (RationaleSeq2SeqTrainer, "2305.02301")):
        assert {"distil-trainers", "rationale-distillation"} <= set(cls._tag_names)
        assert cls._name == "Rationale distillation"
        assert cls._paper["id"] == paper_id and cls._paper["title"]
        assert "2412.13698" in cls._paper["citation"] and "Distilling Step-by-Step" in cls._paper["citation"]
    assert {"trl", "sft"} <= set(RationaleSFTTrainer._tag_names)
    tok = tiny_tokenizer()
    trainer = RationaleSFTTrainer(
        tiny_llama(tok), args=sft_args(tmp_path), train_dataset=rationale_dataset(), processing_class=tok
    )
    assert "rationale-distillation" in trainer.model.model_tags  # SFTTrainer tags the model with _tag_names
