"""RationaleSFTTrainer / RationaleSeq2SeqTrainer: two-view data building, the alpha-weighted loss against a hand
computation, gradient-accumulation equivalence, label scoring, and the seq2seq variant. Tiny models built offline."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from rationale_fixtures import (
    CLASS_NAMES,
    rationale_dataset,
    seq2seq_tokenizer,
    sft_args,
    tiny_llama,
    tiny_t5,
    tiny_tokenizer,
)

from distil_trainers.trainers.rationale import (
    LABEL_VIEW,
    RATIONALE_VIEW,
    RationaleSeq2SeqConfig,
    RationaleSeq2SeqTrainer,
    RationaleSFTTrainer,
    build_rationale_views,
    parse_student_output,
    rationale_multitask_loss,
)
from distil_trainers.trainers.rationale.views import tokenize_views

# --------------------------------------------------------------------------------------------------------------------
# Views
# --------------------------------------------------------------------------------------------------------------------


def test_two_views_per_post_and_unparsed_rows(tmp_path):
    ds = rationale_dataset()  # 8 posts, post 3 unparsed (empty rationale)
    args = sft_args(tmp_path, alpha=0.5)
    views = build_rationale_views(ds, args, CLASS_NAMES, conversational=False)
    label_rows = [r for r in views if r["view"] == LABEL_VIEW]
    rationale_rows = [r for r in views if r["view"] == RATIONALE_VIEW]
    assert len(label_rows) == 8 and len(rationale_rows) == 7
    assert "p3" not in {r["id"] for r in rationale_rows}
    first = next(r for r in rationale_rows if r["id"] == "p0")
    assert first["completion"] == "it contains an insult .\nLabel: offensive"
    assert "explain your reasoning" in first["prompt"].lower() and first["prompt"].endswith(
        "you are all stupid idiots\n"
    )
    assert label_rows[0]["completion"] == "offensive"
    assert "answer with the label only" in label_rows[0]["prompt"].lower()

    dropped = build_rationale_views(ds, sft_args(tmp_path, unparsed_rows="drop"), CLASS_NAMES, conversational=False)
    assert len(dropped) == 14 and "p3" not in set(dropped["id"][:])

    label_only = build_rationale_views(ds, sft_args(tmp_path, alpha=1.0), CLASS_NAMES, conversational=False)
    assert set(label_only["view"][:]) == {LABEL_VIEW} and len(label_only) == 8

    chat = build_rationale_views(ds, args, CLASS_NAMES, conversational=True)
    assert chat[0]["prompt"][0]["role"] == "user" and chat[0]["completion"] == [
        {"role": "assistant", "content": "offensive"}
    ]


def test_label_source_teacher_and_agreement(tmp_path):
    ds = rationale_dataset()
    rows = ds.to_dict()
    rows["teacher_label"][0] = 0  # the teacher says "hate" where the gold label is "offensive"
    rows["teacher_agrees"][0] = False
    ds = ds.from_dict(rows, features=ds.features)
    teacher = build_rationale_views(ds, sft_args(tmp_path, label_source="teacher"), CLASS_NAMES, conversational=False)
    p0 = [r for r in teacher if r["id"] == "p0"]
    assert [r["completion"].splitlines()[-1] for r in p0] == ["hate", "Label: hate"]
    assert "p3" not in set(teacher["id"][:])  # no teacher label: no views at all
    # gold labels, by default: the teacher's rationale for "hate" is not trained with "Label: offensive"
    gold = build_rationale_views(ds, sft_args(tmp_path), CLASS_NAMES, conversational=False)
    assert [r["completion"] for r in gold if r["id"] == "p0"] == ["offensive"]
    agreeing = build_rationale_views(
        ds, sft_args(tmp_path, rationales_when_teacher_agrees=True), CLASS_NAMES, conversational=False
    )
    assert [r["view"] for r in agreeing if r["id"] == "p0"] == [LABEL_VIEW]
    # the former behaviour, when asked for
    every = build_rationale_views(
        ds, sft_args(tmp_path, rationales_when_teacher_agrees=False), CLASS_NAMES, conversational=False
    )
    assert [r["completion"].splitlines()[-1] for r in every if r["id"] == "p0"] == ["offensive", "Label: offensive"]


def test_gold_labels_never_train_a_rationale_that_argues_for_another_label(tmp_path):
    """The default with label_source='gold': every rationale view ends with the label its rationale argues for (the
    teacher's); a disagreeing post trains its label view only. Agreement is read from teacher_label when the data has
    no teacher_agrees column."""
    ds = rationale_dataset()
    rows = ds.to_dict()
    for i in (0, 4):  # the teacher says "hate" for two posts whose gold label is not hate
        rows["teacher_label"][i], rows["teacher_agrees"][i] = 0, False
    ds = ds.from_dict(rows, features=ds.features)
    args = sft_args(tmp_path)
    assert args.rationales_when_teacher_agrees is None and args.rationales_only_when_teacher_agrees
    assert not sft_args(tmp_path, label_source="teacher").rationales_only_when_teacher_agrees
    for data in (ds, ds.remove_columns(["teacher_agrees"])):
        views = build_rationale_views(data, args, CLASS_NAMES, conversational=False)
        table = data.to_dict()
        for row in views:
            if row["view"] == RATIONALE_VIEW:
                i = int(row["id"][1:])
                assert table["teacher_label"][i] == table["label"][i]
                assert row["completion"].endswith(f"Label: {CLASS_NAMES[table['teacher_label'][i]]}")
        assert sorted(r["id"] for r in views if r["view"] == RATIONALE_VIEW) == ["p1", "p2", "p5", "p6", "p7"]
        assert len([r for r in views if r["view"] == LABEL_VIEW]) == 8
    with pytest.raises(ValueError, match="rationales_when_teacher_agrees=False"):
        build_rationale_views(
            ds.remove_columns(["teacher_agrees", "teacher_label"]), args, CLASS_NAMES, conversational=False
        )


LONG_RATIONALE = " ".join(["it contains an insult ."] * 30)


@pytest.mark.parametrize("chat", [True, False], ids=["chat-template", "plain-text"])
def test_keep_start_truncation_cuts_the_rationale_and_keeps_the_label(tmp_path, chat):
    """A rationale view longer than max_length (keep_start) loses the end of its rationale, never its answer line:
    its last tokens are still `label : offensive` and the end of the completion, all of them targets."""
    tok = tiny_tokenizer(chat=chat)
    posts = [("you are all stupid idiots", 1, LONG_RATIONALE, True), ("hello", 2, "greeting .", True)]
    ds = rationale_dataset(posts=posts)
    end = "<|end|>" if chat else "</s>"
    views = build_rationale_views(ds, sft_args(tmp_path), CLASS_NAMES, conversational=chat)
    full = tokenize_views(views, sft_args(tmp_path, max_length=None), tok)
    cut = tokenize_views(views, sft_args(tmp_path, max_length=90), tok)
    rows = {(r["id"], r["view"]): r for r in cut}
    long_full = next(r for r in full if r["id"] == "p0" and r["view"] == RATIONALE_VIEW)
    long_cut = rows[("p0", RATIONALE_VIEW)]
    assert len(long_full["input_ids"]) > 130 and len(long_cut["input_ids"]) == 90 == len(long_cut["labels"])
    assert tok.convert_ids_to_tokens(long_cut["input_ids"][-4:]) == ["label", ":", "offensive", end]
    assert long_cut["labels"][-4:] == long_cut["input_ids"][-4:]  # the answer line is trained on
    # what is kept: the prompt and the first tokens of the rationale, then the answer line
    assert long_cut["input_ids"][:86] == long_full["input_ids"][:86]
    assert long_cut["labels"][:86] == long_full["labels"][:86]
    assert long_cut["input_ids"][86:] == long_full["input_ids"][-4:]
    # rows that fit are not touched
    for key in (("p0", LABEL_VIEW), ("p1", LABEL_VIEW), ("p1", RATIONALE_VIEW)):
        whole = next(r for r in full if (r["id"], r["view"]) == key)
        assert rows[key]["input_ids"] == whole["input_ids"] and rows[key]["labels"] == whole["labels"]
    # keep_end keeps the answer line anyway (it cuts the prompt's start)
    end_cut = tokenize_views(views, sft_args(tmp_path, max_length=90, truncation_mode="keep_end"), tok)
    row = next(r for r in end_cut if r["id"] == "p0" and r["view"] == RATIONALE_VIEW)
    assert tok.convert_ids_to_tokens(row["input_ids"][-4:]) == ["label", ":", "offensive", end]
    # too short for the prompt and the answer line: the rationale view is dropped, never kept without its label
    prompt_length = long_full["labels"].index(next(t for t in long_full["labels"] if t != -100))
    short = tokenize_views(views, sft_args(tmp_path, max_length=prompt_length + 2), tok)
    assert ("p0", RATIONALE_VIEW) not in {(r["id"], r["view"]) for r in short}


def test_seq2seq_targets_keep_their_label_when_cut(tmp_path):
    tok = seq2seq_tokenizer()
    args = RationaleSeq2SeqConfig(
        output_dir=str(tmp_path / "t5"), report_to="none", use_cpu=True, max_target_length=20
    )
    ds = rationale_dataset(posts=[("you are all stupid idiots", 1, LONG_RATIONALE, True)])
    trainer = RationaleSeq2SeqTrainer(tiny_t5(tok), args=args, train_dataset=ds, processing_class=tok)
    row = next(r for r in trainer.train_dataset if r["view"] == RATIONALE_VIEW)
    assert len(row["labels"]) == 20
    assert tok.convert_ids_to_tokens(row["labels"][:4]) == ["it", "contains", "an", "insult"]
    assert tok.convert_ids_to_tokens(row["labels"][-4:]) == ["label", ":", "offensive", "</s>"]


def test_bad_input_is_refused_before_training(tmp_path):
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="alpha"):
        sft_args(tmp_path, alpha=1.5)
    with pytest.raises(ValueError, match="label_source"):
        sft_args(tmp_path, label_source="majority")
    with pytest.raises(ValueError, match="packing"):
        sft_args(tmp_path, packing=True)
    no_rationale = rationale_dataset().remove_columns(["rationale"])
    with pytest.raises(ValueError, match=r"lacks the columns \['rationale'\]"):
        RationaleSFTTrainer(tiny_llama(tok), args=sft_args(tmp_path), train_dataset=no_rationale, processing_class=tok)
    plain = rationale_dataset().cast_column("label", rationale_dataset().features["teacher_label"])
    with pytest.raises(ValueError, match="class names are unknown"):
        RationaleSFTTrainer(tiny_llama(tok), args=sft_args(tmp_path), train_dataset=plain, processing_class=tok)
    with pytest.raises(ValueError, match="has label 2 but there are 2 classes"):
        RationaleSFTTrainer(
            tiny_llama(tok),
            args=sft_args(tmp_path),
            train_dataset=plain,
            processing_class=tok,
            class_names=["hate", "offensive"],
        )


def test_parse_student_output():
    assert parse_student_output("it insults .\nLabel: offensive", CLASS_NAMES) == ("it insults .", 1)
    assert parse_student_output("no label here", CLASS_NAMES) == ("", -1)
    assert parse_student_output("x\nlabel: not-hate", ["not-hate", "hate"]) == ("x", 0)


# --------------------------------------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------------------------------------


def test_alpha_weighted_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)
    labels = torch.tensor(
        [[-100, -100, 3, 4, -100], [-100, 1, 2, 6, 0], [-100, -100, -100, 5, -100]]
    )  # prompt / padding = -100
    view = torch.tensor([LABEL_VIEW, RATIONALE_VIEW, LABEL_VIEW])
    alpha = 0.3
    # by hand: token t is predicted at position t - 1
    per_view = {LABEL_VIEW: [], RATIONALE_VIEW: []}
    for b in range(3):
        for t in range(1, 5):
            if labels[b, t] != -100:
                logp = logits[b, t - 1] - torch.logsumexp(logits[b, t - 1], 0)
                per_view[int(view[b])].append(-logp[labels[b, t]].item())
    expected = alpha * sum(per_view[0]) / len(per_view[0]) + (1 - alpha) * sum(per_view[1]) / len(per_view[1])
    out = rationale_multitask_loss(logits, labels, view, alpha)
    assert out["loss"].item() == pytest.approx(expected, rel=1e-5)
    assert out["count_label"].item() == 3 and out["count_rationale"].item() == 4
    # the denominators of a whole accumulation window
    windowed = rationale_multitask_loss(logits, labels, view, alpha, num_label_tokens=6, num_rationale_tokens=10)
    assert windowed["loss"].item() == pytest.approx(
        alpha * sum(per_view[0]) / 6 + (1 - alpha) * sum(per_view[1]) / 10, rel=1e-5
    )
    # alpha = 1: rationale tokens do not matter at all
    only = rationale_multitask_loss(logits, labels, view, 1.0)
    assert only["loss"].item() == pytest.approx(sum(per_view[0]) / 3, rel=1e-5)
    # seq2seq: no shift
    no_shift = rationale_multitask_loss(logits, labels, torch.tensor([RATIONALE_VIEW] * 3), 0.0, shift=False)
    valid = labels != -100
    assert no_shift["loss"].item() == pytest.approx(F.cross_entropy(logits[valid], labels[valid]).item(), rel=1e-5)


def _one_step(tmp_path, name, batch_size, accumulation):
    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed=1)
    args = sft_args(
        tmp_path / name,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        alpha=0.3,
        seed=3,
    )
    trainer = RationaleSFTTrainer(model, args=args, train_dataset=rationale_dataset(), processing_class=tok)
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer.train()
    update = {k: before[k] - v.detach() for k, v in model.named_parameters()}  # = lr * gradient
    logs = trainer.state.log_history[0]
    return update, logs


def test_gradient_accumulation_equivalence(tmp_path):
    """Batch 4 in one step == batch 2 x 2 accumulation steps: same update and logged losses, although the two
    micro-batches hold different numbers of label / rationale tokens."""
    full, full_logs = _one_step(tmp_path, "full", 4, 1)
    acc, acc_logs = _one_step(tmp_path, "acc", 2, 2)
    for name in full:
        torch.testing.assert_close(acc[name], full[name], rtol=1e-4, atol=1e-6, msg=name)
    assert any(v.abs().max() > 0 for v in full.values())
    assert acc_logs["loss"] == pytest.approx(full_logs["loss"], rel=1e-5)
    assert acc_logs["loss_label"] == pytest.approx(full_logs["loss_label"], rel=1e-5)
    assert acc_logs["loss_rationale"] == pytest.approx(full_logs["loss_rationale"], rel=1e-5)
    assert full_logs["loss"] == pytest.approx(
        0.3 * full_logs["loss_label"] + 0.7 * full_logs["loss_rationale"], rel=1e-5
    )


# --------------------------------------------------------------------------------------------------------------------
# Label scoring
# --------------------------------------------------------------------------------------------------------------------


def _constant_logits_llama(tok, favourite: int):
    """A Llama whose logits are the same vector z at every position: all embeddings equal, every residual branch
    zeroed (o_proj, down_proj = 0), so the final hidden state is the same everywhere. z favours one class word."""
    model = tiny_llama(tok)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.linspace(-1, 1, 32).expand_as(model.model.embed_tokens.weight))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        favourite_id = tok.convert_tokens_to_ids(CLASS_NAMES[favourite])
        model.lm_head.weight[favourite_id] = torch.linspace(-1, 1, 32) * 3
        model.lm_head.weight[tok.convert_tokens_to_ids("hate")] += torch.linspace(-1, 1, 32)  # second best: hate
    return model


@pytest.mark.parametrize("favourite", [1, 2])
def test_label_scoring_picks_the_most_likely_label(tmp_path, favourite):
    tok = tiny_tokenizer()
    model = _constant_logits_llama(tok, favourite)
    trainer = RationaleSFTTrainer(
        model, args=sft_args(tmp_path), train_dataset=rationale_dataset(), processing_class=tok
    )
    texts = ["good morning all", "you are all stupid idiots"]
    predictions, scores = trainer.predict_labels(texts, return_scores=True, show_progress=False)
    assert predictions.tolist() == [favourite, favourite]
    # independent computation: every completion is "<word> <|end|>", each token scored with the same z
    with torch.no_grad():
        hidden = model.model.norm(model.model.embed_tokens.weight[:1])
        logp = torch.log_softmax(model.lm_head(hidden)[0], -1)
    end = tok.convert_tokens_to_ids("<|end|>")
    for c, name in enumerate(CLASS_NAMES):
        expected = (logp[tok.convert_tokens_to_ids(name)] + logp[end]).item()
        assert scores[0, c] == pytest.approx(expected, abs=1e-4)


def test_evaluate_reports_label_scoring_metrics_and_view_losses(tmp_path):
    tok = tiny_tokenizer()
    model = _constant_logits_llama(tok, favourite=2)
    ds = rationale_dataset()
    trainer = RationaleSFTTrainer(
        model, args=sft_args(tmp_path), train_dataset=ds, eval_dataset=ds, processing_class=tok
    )
    metrics = trainer.evaluate()
    # always "neither": 5 of 8 posts are "neither"
    assert metrics["eval_accuracy"] == pytest.approx(5 / 8)
    f1_neither = 2 * (5 / 8) / (1 + 5 / 8)
    assert metrics["eval_f1_neither"] == pytest.approx(f1_neither)
    assert metrics["eval_f1_macro"] == pytest.approx(f1_neither / 3)
    assert {"eval_loss", "eval_loss_label", "eval_loss_rationale"} <= set(metrics)
    assert metrics["eval_loss"] == pytest.approx(
        0.5 * metrics["eval_loss_label"] + 0.5 * metrics["eval_loss_rationale"], rel=0.2
    )  # batch-wise means vs whole-set means: close, not equal


def test_training_learns_labels_and_explain_runs(tmp_path):
    tok = tiny_tokenizer()
    ds = rationale_dataset()
    args = sft_args(
        tmp_path, num_train_epochs=40, per_device_train_batch_size=16, learning_rate=2e-2, alpha=0.7, logging_steps=1
    )
    trainer = RationaleSFTTrainer(tiny_llama(tok), args=args, train_dataset=ds, eval_dataset=ds, processing_class=tok)
    trainer.train()
    losses = [log["loss_label"] for log in trainer.state.log_history if "loss_label" in log]
    assert losses[-1] < 0.5 * losses[0]
    assert trainer.evaluate()["eval_accuracy"] >= 6 / 8  # fits the 8 training posts (5 / 8 = always "neither")
    out = trainer.explain(["you are all stupid idiots"], max_new_tokens=12)
    assert out[0]["text"] == "you are all stupid idiots" and isinstance(out[0]["output"], str)


# --------------------------------------------------------------------------------------------------------------------
# Encoder-decoder students
def test_missing_or_wrong_constructor_arguments_are_named(tmp_path):
    tok, data = tiny_tokenizer(), rationale_dataset()
    with pytest.raises(TypeError, match="RationaleSFTTrainer needs `args`, a RationaleSFTConfig"):
        RationaleSFTTrainer(tiny_llama(tok), args=None, train_dataset=data, processing_class=tok)
    with pytest.raises(ValueError, match="RationaleSFTTrainer builds its own collator"):
        RationaleSFTTrainer(tiny_llama(tok), args=sft_args(tmp_path), train_dataset=data, processing_class=tok,
                            data_collator=lambda rows: rows)
    with pytest.raises(ValueError, match="RationaleSFTTrainer needs the student's tokenizer"):
        RationaleSFTTrainer(tiny_llama(tok), args=sft_args(tmp_path), train_dataset=data)
    with pytest.raises(ValueError, match="RationaleSFTTrainer needs a `train_dataset`"):
        RationaleSFTTrainer(tiny_llama(tok), args=sft_args(tmp_path), processing_class=tok)

    s2s_tok = seq2seq_tokenizer()
    s2s_args = RationaleSeq2SeqConfig(output_dir=str(tmp_path / "t5"), report_to="none", use_cpu=True)
    with pytest.raises(TypeError, match="RationaleSeq2SeqTrainer needs `args`, a RationaleSeq2SeqConfig"):
        RationaleSeq2SeqTrainer(tiny_t5(s2s_tok), args=sft_args(tmp_path), train_dataset=data, processing_class=s2s_tok)
    with pytest.raises(ValueError, match="RationaleSeq2SeqTrainer needs the student's tokenizer"):
        RationaleSeq2SeqTrainer(tiny_t5(s2s_tok), args=s2s_args, train_dataset=data)
    with pytest.raises(ValueError, match="RationaleSeq2SeqTrainer needs a `train_dataset`"):
        RationaleSeq2SeqTrainer(tiny_t5(s2s_tok), args=s2s_args, processing_class=s2s_tok)
    with pytest.raises(ValueError, match="needs an encoder-decoder student"):
        RationaleSeq2SeqTrainer(tiny_llama(tok), args=s2s_args, train_dataset=data, processing_class=tok)


# --------------------------------------------------------------------------------------------------------------------


def test_seq2seq_loss_and_scoring(tmp_path):
    tok = seq2seq_tokenizer()
    model = tiny_t5(tok)
    args = RationaleSeq2SeqConfig(
        output_dir=str(tmp_path / "t5"),
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=16,
        alpha=0.4,
        learning_rate=1e-2,
        num_train_epochs=15,
        logging_steps=5,
        save_strategy="no",
        disable_tqdm=True,
    )
    ds = rationale_dataset()
    trainer = RationaleSeq2SeqTrainer(model, args=args, train_dataset=ds, eval_dataset=ds, processing_class=tok)
    first = trainer.train_dataset[0]
    assert tok.decode(first["input_ids"], skip_special_tokens=True).startswith("[ label ]")
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    view = batch["view"]
    # independent: T5's own mean token loss on label-view rows and on rationale-view rows
    model.eval()
    with torch.no_grad():
        expected = 0.0
        for v, weight in ((LABEL_VIEW, 0.4), (RATIONALE_VIEW, 0.6)):
            rows = view == v
            expected += (
                weight
                * model(
                    input_ids=batch["input_ids"][rows],
                    attention_mask=batch["attention_mask"][rows],
                    labels=batch["labels"][rows],
                ).loss.item()
            )
        got = trainer.compute_loss(model, {k: v.clone() for k, v in batch.items()}).item()
    assert got == pytest.approx(expected, rel=1e-5)
    trainer.train()
    metrics = trainer.evaluate()
    assert metrics["eval_accuracy"] >= 6 / 8 and math.isfinite(metrics["eval_loss_rationale"])
    assert trainer.explain(["hello"], max_new_tokens=8)[0]["text"] == "hello"
