"""The student's own answers: batched greedy generation with left padding (the same answers as one post at a time),
their label read by the teacher's answer parser, and the scores of the generated label beside label scoring."""

from __future__ import annotations

import pytest
from rationale_fixtures import CLASS_NAMES, rationale_dataset, sft_args, tiny_llama, tiny_tokenizer

from distil_trainers.metrics import classification_metrics
from distil_trainers.trainers.rationale import RationaleSFTTrainer
from distil_trainers.trainers.rationale.evaluation import answer_metrics, parse_generated_answer


@pytest.mark.parametrize("chat", [True, False], ids=["chat-template", "plain-text"])
def test_batched_generation_with_left_padding_equals_one_post_at_a_time(tmp_path, chat):
    tok = tiny_tokenizer(chat=chat)
    model = tiny_llama(tok, seed=3)
    trainer = RationaleSFTTrainer(
        model, args=sft_args(tmp_path), train_dataset=rationale_dataset(), processing_class=tok
    )
    texts = rationale_dataset()["text"][:]  # prompts of different lengths
    calls = []
    generate = model.generate

    def recording(*args, **kwargs):
        calls.append((kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()))
        return generate(*args, **kwargs)

    model.generate = recording
    batched = trainer.generate_answers(texts, max_new_tokens=8, batch_size=5, show_progress=False)
    assert [ids.shape[0] for ids, _ in calls] == [5, 3]  # two batched calls
    ids, mask = calls[0]
    lengths = mask.sum(-1)
    assert lengths.min() < lengths.max()  # padded ...
    assert bool((mask[:, -1] == 1).all()) and bool((ids[mask == 0] == tok.pad_token_id).all())  # ... on the left
    calls.clear()
    single = [trainer.generate_answers([t], max_new_tokens=8, batch_size=1, show_progress=False)[0] for t in texts]
    assert len(calls) == len(texts)
    assert [a["output"] for a in batched] == [a["output"] for a in single]
    assert any(a["output"] for a in batched) and [a["text"] for a in batched] == texts
    assert trainer.explain(texts[:2], max_new_tokens=8) == batched[:2]


def test_generated_answers_are_read_by_the_teachers_parser():
    assert parse_generated_answer("it insults one person .\nLabel: offensive", CLASS_NAMES) == (
        "it insults one person .",
        1,
    )
    assert parse_generated_answer("It targets a group.\n**Label:** Hate.", CLASS_NAMES)[1] == 0
    assert parse_generated_answer("Explanation: friendly.\nAnswer: neither", CLASS_NAMES)[1] == 2
    assert parse_generated_answer("offensive", CLASS_NAMES)[1] == 1  # a bare label on the last line
    assert parse_generated_answer("no label here", CLASS_NAMES)[1] == -1
    assert parse_generated_answer("", CLASS_NAMES) == ("", -1)
    assert parse_generated_answer("x\nLabel: not-hate", ["hate", "not-hate"])[1] == 1  # the longest name first
    assert parse_generated_answer("mild.\nVerdict: hate", CLASS_NAMES, answer_prefix="Verdict: ") == ("mild.", 0)


def test_answer_metrics_score_the_generated_label_and_its_agreement_with_label_scoring():
    gold = [0, 1, 2, 2, 1, 2]
    generated = [0, 1, -1, 2, 2, 2]  # one answer without a label, one wrong
    scored = [0, 1, 2, 1, 2, 2]
    metrics = answer_metrics(gold, generated, scored, CLASS_NAMES)
    assert metrics["generated_posts"] == 6 and metrics["generated_unparsed"] == 1
    expected = classification_metrics(gold, generated, label_names=CLASS_NAMES)
    assert metrics["generated_f1_macro"] == pytest.approx(expected["f1_macro"])
    assert metrics["generated_accuracy"] == pytest.approx(4 / 6)
    assert metrics["generated_scoring_f1_macro"] == pytest.approx(
        classification_metrics(gold, scored, label_names=CLASS_NAMES)["f1_macro"]
    )
    assert metrics["agreement"] == pytest.approx(4 / 6)  # posts 0, 1, 4, 5
    with pytest.raises(ValueError, match="as many"):
        answer_metrics(gold, generated[:3], scored, CLASS_NAMES)


def test_evaluate_keeps_the_label_scoring_predictions(tmp_path):
    tok = tiny_tokenizer()
    trainer = RationaleSFTTrainer(
        tiny_llama(tok), args=sft_args(tmp_path, max_scoring_samples=5), train_dataset=rationale_dataset(),
        processing_class=tok,
    )  # fmt: skip
    trainer.evaluate(rationale_dataset())
    predictions = trainer.last_label_predictions
    assert len(predictions) == 5
    assert predictions == trainer.predict_labels(rationale_dataset()["text"][:5], show_progress=False).tolist()
